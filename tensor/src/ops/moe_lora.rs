//! MoE-LoRA expert dispatch on tensors: `out_t = sum_j gates[t, j] * scale * B_e A_e x_t` with
//! `e = idx[t, j]` (contract, gradients and summation order: `brainstacks_kernels::moe_lora`).
//!
//! ```
//! use brainstacks_tensor::{DType, Device, Tensor};
//! # fn main() -> brainstacks_tensor::Result<()> {
//! let cpu = Device::Cpu;
//! let x = Tensor::ones(&[3, 8], DType::F32, &cpu)?;                     // T = 3 tokens, d_in = 8
//! let idx = Tensor::from_vec(vec![0i64, 1, 1, 2, 0, 2], &[3, 2], &cpu)?; // top-2 of E = 3
//! let gates = Tensor::full(0.5, &[3, 2], DType::F32, &cpu)?;
//! let a = Tensor::ones(&[3, 4, 8], DType::F32, &cpu)?;                  // E x r x d_in
//! let b = Tensor::zeros(&[3, 5, 4], DType::F32, &cpu)?;                 // E x d_out x r
//! let y = Tensor::moe_lora(&x, &idx, &gates, &a, &b, 4.0)?;             // zero B: an exact no-op
//! assert_eq!(y.to_vec::<f32>()?, vec![0.0; 15]);
//! # Ok(()) }
//! ```

use brainstacks_kernels::moe_lora::cpu::Dims;
use brainstacks_kernels::moe_lora::{ExpertGroups, group_by_expert};

use crate::cpu::moe_lora::{self as fast, MoeDims, MoeFloat};
use crate::cpu::parallel::filled;
use crate::{DType, Device, Error, Result, Tensor};

/// The four gradients of [`Tensor::moe_lora`].
#[derive(Clone, Debug)]
pub struct MoeLoraGrads {
    pub dx: Tensor,
    pub dgates: Tensor,
    pub da: Tensor,
    pub db: Tensor,
}

/// The gradients of [`Tensor::moe_lora`] for its input and gates only: all a frozen stack
/// (constant expert weights) passes back, without the cost of the weight gradients.
#[derive(Clone, Debug)]
pub struct MoeLoraInputGrads {
    pub dx: Tensor,
    pub dgates: Tensor,
}

/// What a forward kept for its backward: the expert activations `X A_allᵀ` of the dense
/// formulation (`None` when the grouped path ran), so the backward need not recompute them.
#[derive(Clone, Debug, Default)]
pub struct MoeLoraSaved {
    mid: Option<Tensor>,
}

struct Checked {
    dims: MoeDims,
    t: usize,
    experts: usize,
    idx: Vec<i64>,
    groups: ExpertGroups,
}

/// Shape, dtype and device-agreement checks shared by every device: the dispatch's dims.
fn check_shapes(op: &'static str, x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor) -> Result<Dims> {
    let (&[t, d_in], &[e, r, a_in], &[eb, d_out, rb]) = (x.shape(), a.shape(), b.shape()) else {
        return Err(Error::invalid(op, x.shape(), "expected x [T, d_in], a [E, r, d_in], b [E, d_out, r]"));
    };
    if a_in != d_in || eb != e || rb != r {
        return Err(Error::shape(op, a.shape(), b.shape(), format!("a must be [E, r, {d_in}] and b [E, d_out, r]")));
    }
    let &[ti, k] = idx.shape() else {
        return Err(Error::invalid(op, idx.shape(), "idx must be [T, k]"));
    };
    if ti != t || gates.shape() != idx.shape() {
        return Err(Error::shape(op, idx.shape(), gates.shape(), format!("idx and gates must both be [{t}, k]")));
    }
    if idx.dtype() != DType::I64 {
        return Err(Error::dtype(op, idx.dtype(), "idx must be i64"));
    }
    for v in [idx, gates, a, b] {
        if v.device() != x.device() {
            return Err(Error::Device {
                op,
                device: v.device(),
                msg: format!("every operand must be on {} (move it with `to_device`)", x.device()),
            });
        }
    }
    for v in [x, gates, a, b] {
        if v.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: v.dtype() });
        }
    }
    if k == 0 || k > e {
        return Err(Error::invalid(op, idx.shape(), format!("k = {k} must be in 1..={e} (the number of experts)")));
    }
    Ok(Dims { t, k, experts: e, d_in, r, d_out })
}

/// [`check_shapes`] plus the host grouping of the routing (CPU operands only).
fn check(op: &'static str, x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor) -> Result<Checked> {
    let d = check_shapes(op, x, idx, gates, a, b)?;
    if x.device() != Device::Cpu {
        return Err(Error::Device { op, device: x.device(), msg: "MoE-LoRA dispatch on this device is not available yet".into() });
    }
    let ids = idx.to_vec::<i64>()?;
    let groups = group_by_expert(&ids, d.k, d.experts).map_err(|m| Error::invalid(op, idx.shape(), m))?;
    Ok(Checked { dims: MoeDims { k: d.k, d_in: d.d_in, r: d.r, d_out: d.d_out }, t: d.t, experts: d.experts, idx: ids, groups })
}

/// The elements in row-major order: borrowed when the tensor is contiguous (no copy of a large
/// activation), copied otherwise.
fn contiguous_vec<T: crate::WithDType>(t: &Tensor) -> Result<std::borrow::Cow<'_, [T]>> {
    match t.as_contiguous_slice::<T>() {
        Some(s) => Ok(std::borrow::Cow::Borrowed(s)),
        None => Ok(std::borrow::Cow::Owned(t.to_vec::<T>()?)),
    }
}

impl Tensor {
    /// The dispatch of one MoE-LoRA stack (see the module docs). `x` `[T, d_in]`, `idx` `[T, k]`
    /// (i64, distinct experts per token), `gates` `[T, k]`, `a` `[E, r, d_in]`, `b` `[E, d_out, r]`;
    /// f32 or f64 (bf16 and f16 compute in f32 and round once). Returns `[T, d_out]`.
    ///
    /// On CUDA (feature `cuda`, every operand on one device) it runs the PTX dispatch kernels:
    /// f32, and bf16 computed in f32 and rounded once; `E <= 64`, `r <= 64`; the routing is
    /// grouped on the device (see `cuda::moe_lora`).
    pub fn moe_lora(x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
        Ok(Self::moe_lora_keeping(x, idx, gates, a, b, scale)?.0)
    }

    /// [`Tensor::moe_lora`], also returning what [`Tensor::moe_lora_backward_kept`] can reuse
    /// (the dense path's expert activations, `T x E r` values) instead of recomputing it.
    pub fn moe_lora_keeping(x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<(Tensor, MoeLoraSaved)> {
        const OP: &str = "moe_lora";
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            let d = check_shapes(OP, x, idx, gates, a, b)?;
            // The CUDA backward recomputes what it needs: nothing is kept.
            return Ok((crate::cuda::moe_lora::forward(x, idx, gates, a, b, scale, &d)?, MoeLoraSaved::default()));
        }
        let c = check(OP, x, idx, gates, a, b)?;
        let shape = [c.t, c.dims.d_out];
        match x.dtype() {
            DType::F64 => run_forward::<f64>(x, gates, a, b, scale, &c, &shape),
            DType::F32 => run_forward::<f32>(x, gates, a, b, scale, &c, &shape),
            DType::BF16 | DType::F16 => {
                let f = |v: &Tensor| v.to_dtype(DType::F32);
                let (out, saved) = run_forward::<f32>(&f(x)?, &f(gates)?, &f(a)?, &f(b)?, scale, &c, &shape)?;
                Ok((out.to_dtype(x.dtype())?, saved))
            }
            dt => Err(Error::dtype(OP, dt, "MoE-LoRA takes float inputs")),
        }
    }

    /// Gradients of [`Tensor::moe_lora`] for the output gradient `dy` (`[T, d_out]`).
    pub fn moe_lora_backward(x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64, dy: &Tensor) -> Result<MoeLoraGrads> {
        Self::moe_lora_backward_kept(x, idx, gates, a, b, scale, dy, &MoeLoraSaved::default())
    }

    /// [`Tensor::moe_lora_backward`] reusing what [`Tensor::moe_lora_keeping`] kept for the same
    /// inputs (the same bits as recomputing it).
    pub fn moe_lora_backward_kept(x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64, dy: &Tensor, saved: &MoeLoraSaved) -> Result<MoeLoraGrads> {
        let (dx, dgates, weights) = backward_selected(x, idx, gates, a, b, scale, dy, saved, true)?;
        let (da, db) = weights.expect("weight gradients were asked for");
        Ok(MoeLoraGrads { dx, dgates, da, db })
    }

    /// The input and gate gradients of [`Tensor::moe_lora_backward_kept`] (the same bits), without
    /// computing the expert-weight gradients: for a frozen stack, whose weights are constants.
    ///
    /// ```
    /// use brainstacks_tensor::{DType, Device, Tensor};
    /// # fn main() -> brainstacks_tensor::Result<()> {
    /// let cpu = Device::Cpu;
    /// let x = Tensor::ones(&[3, 8], DType::F32, &cpu)?;
    /// let idx = Tensor::from_vec(vec![0i64, 1, 1, 2, 0, 2], &[3, 2], &cpu)?;
    /// let gates = Tensor::full(0.5, &[3, 2], DType::F32, &cpu)?;
    /// let (a, b) = (Tensor::ones(&[3, 4, 8], DType::F32, &cpu)?, Tensor::ones(&[3, 5, 4], DType::F32, &cpu)?);
    /// let dy = Tensor::ones(&[3, 5], DType::F32, &cpu)?;
    /// let (_, saved) = Tensor::moe_lora_keeping(&x, &idx, &gates, &a, &b, 1.0)?;
    /// let g = Tensor::moe_lora_input_backward_kept(&x, &idx, &gates, &a, &b, 1.0, &dy, &saved)?;
    /// // dx = sum over the 2 kept experts of 0.5 * A_eᵀ B_eᵀ dy: 0.5 * 2 * (5 * 4) per entry.
    /// assert_eq!(g.dx.to_vec::<f32>()?, vec![20.0; 24]);
    /// # Ok(()) }
    /// ```
    pub fn moe_lora_input_backward_kept(x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64, dy: &Tensor, saved: &MoeLoraSaved) -> Result<MoeLoraInputGrads> {
        let (dx, dgates, _) = backward_selected(x, idx, gates, a, b, scale, dy, saved, false)?;
        Ok(MoeLoraInputGrads { dx, dgates })
    }
}

/// `(dx, dgates, Some((da, db)))`, or `(dx, dgates, None)` when the weight gradients are not wanted.
type SelectedGrads = (Tensor, Tensor, Option<(Tensor, Tensor)>);

/// The CPU or CUDA backward, with the expert-weight gradients only when `weights` is set.
#[allow(clippy::too_many_arguments)]
fn backward_selected(x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64, dy: &Tensor, saved: &MoeLoraSaved, weights: bool) -> Result<SelectedGrads> {
    const OP: &str = "moe_lora_backward";
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        let d = check_shapes(OP, x, idx, gates, a, b)?;
        if dy.shape() != [d.t, d.d_out] {
            return Err(Error::shape(OP, dy.shape(), &[d.t, d.d_out], "dy must match the output"));
        }
        // The device dispatch computes every gradient in one pass; unwanted ones are dropped.
        let g = crate::cuda::moe_lora::backward(x, idx, gates, a, b, scale, dy, &d)?;
        return Ok((g.dx, g.dgates, weights.then_some((g.da, g.db))));
    }
    let c = check(OP, x, idx, gates, a, b)?;
    if dy.shape() != [c.t, c.dims.d_out] {
        return Err(Error::shape(OP, dy.shape(), &[c.t, c.dims.d_out], "dy must match the output"));
    }
    match x.dtype() {
        DType::F64 => run_backward::<f64>(x, gates, a, b, scale, &dy.to_dtype(DType::F64)?, &c, saved, weights),
        DType::F32 | DType::BF16 | DType::F16 => {
            let f = |v: &Tensor| v.to_dtype(DType::F32);
            let (dx, dg, w) = run_backward::<f32>(&f(x)?, &f(gates)?, &f(a)?, &f(b)?, scale, &f(dy)?, &c, saved, weights)?;
            let back = |v: Tensor| v.to_dtype(x.dtype());
            let w = match w {
                Some((da, db)) => Some((back(da)?, back(db)?)),
                None => None,
            };
            Ok((back(dx)?, back(dg)?, w))
        }
        dt => Err(Error::dtype(OP, dt, "MoE-LoRA takes float inputs")),
    }
}

fn run_forward<T: MoeFloat + crate::WithDType>(x: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64, c: &Checked, shape: &[usize]) -> Result<(Tensor, MoeLoraSaved)> {
    let mut out = filled(c.t * c.dims.d_out, T::default());
    let (xv, gv, av, bv) = (contiguous_vec::<T>(x)?, contiguous_vec::<T>(gates)?, contiguous_vec::<T>(a)?, contiguous_vec::<T>(b)?);
    let mut saved = MoeLoraSaved::default();
    if fast::prefer_dense(c.experts, c.dims.k) {
        let mid = fast::forward_dense(&xv, &c.idx, &gv, &av, &bv, scale, c.t, c.experts, &c.dims, &mut out);
        saved.mid = Some(Tensor::from_vec(mid, &[c.t, c.experts * c.dims.r], &Device::Cpu)?);
    } else {
        fast::forward(&xv, &gv, &av, &bv, scale, &c.groups, &c.dims, &mut out);
    }
    Ok((Tensor::from_vec(out, shape, &Device::Cpu)?, saved))
}

#[allow(clippy::too_many_arguments)]
fn run_backward<T: MoeFloat + crate::WithDType>(x: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64, dy: &Tensor, c: &Checked, saved: &MoeLoraSaved, weights: bool) -> Result<SelectedGrads> {
    // Kept activations of another dtype or shape (not from this forward) are ignored.
    let mid = saved.mid.as_ref().filter(|m| m.shape() == [c.t, c.experts * c.dims.r]).and_then(|m| m.as_contiguous_slice::<T>());
    let (xv, gv, av, bv) = (contiguous_vec::<T>(x)?, contiguous_vec::<T>(gates)?, contiguous_vec::<T>(a)?, contiguous_vec::<T>(b)?);
    let (mut dx, mut dg) = (filled(xv.len(), T::default()), filled(gv.len(), T::default()));
    let mut w = weights.then(|| (filled(av.len(), T::default()), filled(bv.len(), T::default())));
    let w_slices = w.as_mut().map(|(da, db)| (&mut da[..], &mut db[..]));
    let dyv = contiguous_vec::<T>(dy)?;
    if fast::prefer_dense(c.experts, c.dims.k) {
        fast::backward_dense(mid, &xv, &c.idx, &gv, &av, &bv, scale, &dyv, c.t, c.experts, &c.dims, (&mut dx, &mut dg, w_slices));
    } else {
        fast::backward(&xv, &gv, &av, &bv, scale, &dyv, &c.groups, &c.dims, (&mut dx, &mut dg, w_slices));
    }
    let cpu = Device::Cpu;
    let w = match w {
        Some((da, db)) => Some((Tensor::from_vec(da, a.shape(), &cpu)?, Tensor::from_vec(db, b.shape(), &cpu)?)),
        None => None,
    };
    Ok((Tensor::from_vec(dx, x.shape(), &cpu)?, Tensor::from_vec(dg, gates.shape(), &cpu)?, w))
}

#[cfg(test)]
mod kept_tests {
    use super::*;
    use crate::Rng;

    /// Reusing the forward's activations gives exactly the gradients of recomputing them, for
    /// f32, f64 and bf16 on the dense path; activations kept for other inputs' shapes are ignored.
    #[test]
    fn kept_activations_give_the_same_bits() {
        let cpu = Device::Cpu;
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            let (t, d_in, d_out, e, r) = (37, 24, 19, 4, 3);
            let mut rng = Rng::new(5);
            let mut rand = |shape: &[usize]| Tensor::randn(&mut rng, 0.0, 1.0, shape, dtype, &cpu).unwrap();
            let (x, a, b, dy) = (rand(&[t, d_in]), rand(&[e, r, d_in]), rand(&[e, d_out, r]), rand(&[t, d_out]));
            let idx: Vec<i64> = (0..t).flat_map(|i| [(i % e) as i64, ((i + 1 + i / e % (e - 1)) % e) as i64]).collect();
            let idx = Tensor::from_vec(idx, &[t, 2], &cpu).unwrap();
            let gates = Tensor::full(0.25, &[t, 2], dtype, &cpu).unwrap();
            let (out, saved) = Tensor::moe_lora_keeping(&x, &idx, &gates, &a, &b, 2.0).unwrap();
            assert!(saved.mid.is_some());
            assert_eq!(out.to_vec_f64().unwrap(), Tensor::moe_lora(&x, &idx, &gates, &a, &b, 2.0).unwrap().to_vec_f64().unwrap());
            let fresh = Tensor::moe_lora_backward(&x, &idx, &gates, &a, &b, 2.0, &dy).unwrap();
            let kept = Tensor::moe_lora_backward_kept(&x, &idx, &gates, &a, &b, 2.0, &dy, &saved).unwrap();
            let other = MoeLoraSaved { mid: Some(Tensor::zeros(&[t + 1, e * r], DType::F32, &cpu).unwrap()) };
            let ignored = Tensor::moe_lora_backward_kept(&x, &idx, &gates, &a, &b, 2.0, &dy, &other).unwrap();
            for g in [&kept, &ignored] {
                for (p, q) in [(&fresh.dx, &g.dx), (&fresh.dgates, &g.dgates), (&fresh.da, &g.da), (&fresh.db, &g.db)] {
                    assert_eq!(p.to_vec_f64().unwrap(), q.to_vec_f64().unwrap(), "{dtype:?}");
                }
            }
            // Input gradients alone: the same bits, with or without kept activations.
            for s in [&saved, &other, &MoeLoraSaved::default()] {
                let inputs = Tensor::moe_lora_input_backward_kept(&x, &idx, &gates, &a, &b, 2.0, &dy, s).unwrap();
                assert_eq!(fresh.dx.to_vec_f64().unwrap(), inputs.dx.to_vec_f64().unwrap(), "{dtype:?}");
                assert_eq!(fresh.dgates.to_vec_f64().unwrap(), inputs.dgates.to_vec_f64().unwrap(), "{dtype:?}");
            }
        }
    }
}
