//! Batched matmul. `dA = dC B^T`, `dB = A^T dC`, each summed over broadcast batch dims. The
//! transposes are views, so no operand is copied to form them.

use brainstacks_tensor::{MatmulPrecision, Tensor};

use crate::{Result, Var, record};

impl Var {
    /// Batched matrix product `[..., m, k] x [..., k, n]` with broadcasting batch dims (operands
    /// may be strided views, e.g. `w.t()`).
    pub fn matmul(&self, rhs: &Var) -> Result<Var> {
        self.matmul_with(rhs, MatmulPrecision::F32)
    }

    /// [`Var::matmul`] with f32 operands multiplied at `precision`; the two backward products
    /// use the same precision (with [`MatmulPrecision::Bf16`] the incoming gradient is rounded to
    /// bf16 too, as under autocast).
    pub fn matmul_with(&self, rhs: &Var, precision: MatmulPrecision) -> Result<Var> {
        let (a, b) = (self.tensor().clone(), rhs.tensor().clone());
        let out = a.matmul_with(&b, precision)?;
        record("matmul", &[self, rhs], out, move |g, needs| {
            let da = if needs[0] { Some(g.matmul_with(&b.t()?, precision)?.sum_to_shape(a.shape())?) } else { None };
            let db = if needs[1] { Some(weight_grad(&a, g, b.shape(), precision)?) } else { None };
            Ok(vec![da, db])
        })
    }
}

/// `dB = A^T dC` summed to `b_shape`. On CUDA, a 2-D `b` (a weight) under a batched `a` takes one
/// GEMM over the folded batch, `[B*T, k]^T x [B*T, n]`, instead of one GEMM per batch entry, a
/// `[B, k, n]` buffer and its reduction. The CPU keeps the per-entry sums, and so its bits.
fn weight_grad(a: &Tensor, g: &Tensor, b_shape: &[usize], precision: MatmulPrecision) -> brainstacks_tensor::Result<Tensor> {
    let (r, k, n) = (a.rank(), a.shape()[a.rank() - 1], g.shape()[g.rank() - 1]);
    if a.device().is_cuda() && b_shape.len() == 2 && r >= 3 && g.shape()[..r - 2] == a.shape()[..r - 2] {
        let rows: usize = a.shape()[..r - 1].iter().product();
        let (a2, g2) = (a.reshape(&[rows, k])?, g.reshape(&[rows, n])?);
        return a2.t()?.matmul_with(&g2, precision);
    }
    a.t()?.matmul_with(g, precision)?.sum_to_shape(b_shape)
}

#[cfg(test)]
mod tests {
    use brainstacks_tensor::{DType, Device, MatmulPrecision, Rng, Tensor};

    use crate::{Tape, Var};

    fn randn(seed: u64, shape: &[usize]) -> Tensor {
        Tensor::randn(&mut Rng::new(seed), 0.0, 1.0, shape, DType::F32, &Device::Cpu).unwrap()
    }

    /// Every value rounded to bf16 and back.
    fn rounded(t: &Tensor) -> Tensor {
        t.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// Forward and both gradients at bf16 precision are the f32 products of the rounded operands
    /// (the incoming gradient rounded too), and differ from the f32 products by far more than
    /// summation order: the precision reaches the backward.
    #[test]
    fn bf16_precision_rounds_operands_forward_and_backward() {
        let (m, k, n) = (37, 70, 45);
        let (a0, b0, w) = (randn(1, &[m, k]), randn(2, &[k, n]), randn(3, &[m, n]));
        let tape = Tape::new();
        let (a, b) = (tape.param(a0.clone()), tape.param(b0.clone()));
        let y = a.matmul_with(&b, MatmulPrecision::Bf16).unwrap();
        let loss = y.mul(&Var::constant(w.clone())).unwrap().sum_all().unwrap();
        let grads = tape.backward(&loss).unwrap();
        let (da, db) = (grads.get(&a).unwrap(), grads.get(&b).unwrap());

        let want_y = rounded(&a0).matmul(&rounded(&b0)).unwrap();
        let want_da = rounded(&w).matmul(&rounded(&b0).t().unwrap()).unwrap();
        let want_db = rounded(&a0).t().unwrap().matmul(&rounded(&w)).unwrap();
        let exact_da = w.matmul(&b0.t().unwrap()).unwrap();
        // Sums of ~70 products of unit normals: f32 summation noise is ~1e-5, bf16 rounding of
        // the operands ~1e-2.
        assert!(max_abs_diff(y.tensor(), &want_y) < 1e-4);
        assert!(max_abs_diff(da, &want_da) < 1e-4);
        assert!(max_abs_diff(db, &want_db) < 1e-4);
        assert!(max_abs_diff(da, &exact_da) > 1e-3, "the input gradient was computed in f32");
    }
}
