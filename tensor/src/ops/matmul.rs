//! Batched matrix product with broadcasting batch dims. Operands may be any strided view (a
//! transposed weight is passed to the GEMM as strides, never copied).

use std::mem::MaybeUninit;

use crate::cpu::gemm::{self, MatRef};
use crate::layout::{broadcast_shape, checked_alloc_len};
use crate::{DType, Error, Result, Tensor, WithDType};

/// How a matrix product multiplies f32 operands. Other dtypes ignore it: f64 always computes in
/// f64, bf16 and f16 operands are already narrow.
///
/// ```
/// use brainstacks_tensor::{Device, MatmulPrecision, Tensor};
/// # fn main() -> brainstacks_tensor::Result<()> {
/// // 1 + 2^-10 is not a bf16 value: it rounds to 1 before the product.
/// let a = Tensor::from_vec(vec![1.0f32 + 1.0 / 1024.0], &[1, 1], &Device::Cpu)?;
/// let b = Tensor::from_vec(vec![3.0f32], &[1, 1], &Device::Cpu)?;
/// assert_eq!(a.matmul_with(&b, MatmulPrecision::F32)?.to_vec::<f32>()?, [3.0 + 3.0 / 1024.0]);
/// assert_eq!(a.matmul_with(&b, MatmulPrecision::Bf16)?.to_vec::<f32>()?, [3.0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MatmulPrecision {
    /// Products of the f32 values, summed in f32.
    #[default]
    F32,
    /// Both operands rounded to bf16 (to nearest even) first; the products are exact and summed
    /// in f32, into an f32 result. What bf16 tensor cores and Intel AMX compute, and what
    /// bitsandbytes does with `bnb_4bit_compute_dtype=bfloat16`. On CPUs with AMX
    /// (`cpu::gemm::amx_available`) it runs on the tiles, several times faster than f32 on
    /// large products; elsewhere it costs about what f32 costs. Results differ between machines
    /// with and without AMX within the f32 GEMM tolerance (the tiles order their sums their own
    /// way). CUDA tensors compute such products in f32 for now.
    Bf16,
}

impl Tensor {
    /// `self [..., m, k] x rhs [..., k, n] -> [..., m, n]`; the batch dims broadcast. Both
    /// operands must have rank >= 2 and the same dtype. f32 and f64 compute in their own
    /// precision; bf16 and f16 accumulate in f32 and round the result once.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.matmul_with(rhs, MatmulPrecision::F32)
    }

    /// [`Tensor::matmul`] with f32 operands multiplied at `precision`.
    pub fn matmul_with(&self, rhs: &Tensor, precision: MatmulPrecision) -> Result<Tensor> {
        const OP: &str = "matmul";
        if self.rank() < 2 || rhs.rank() < 2 {
            return Err(Error::shape(OP, self.shape(), rhs.shape(), "both operands need rank >= 2"));
        }
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: self.dtype(), rhs: rhs.dtype() });
        }
        let (ls, rs) = (self.shape(), rhs.shape());
        let (m, k) = (ls[ls.len() - 2], ls[ls.len() - 1]);
        let (k2, n) = (rs[rs.len() - 2], rs[rs.len() - 1]);
        if k != k2 {
            return Err(Error::shape(OP, ls, rs, format!("inner dims differ ({k} vs {k2})")));
        }
        let batch = broadcast_shape(OP, &ls[..ls.len() - 2], &rs[..rs.len() - 2])
            .map_err(|_| Error::shape(OP, ls, rs, "batch dims cannot broadcast"))?;
        let mut lshape = batch.clone();
        lshape.extend([m, k]);
        let mut rshape = batch.clone();
        rshape.extend([k, n]);
        let lhs = self.broadcast_as(&lshape)?;
        let rhs = rhs.broadcast_as(&rshape)?;
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        #[cfg(feature = "cuda")]
        if lhs.device().is_cuda() || rhs.device().is_cuda() {
            return crate::cuda::ops::matmul(&lhs, &rhs, m, n, k, &out_shape);
        }
        match self.dtype() {
            DType::F32 => {
                let product = match precision {
                    MatmulPrecision::F32 => gemm::gemm_f32_uninit,
                    MatmulPrecision::Bf16 => gemm::gemm_f32_as_bf16_uninit,
                };
                let out = batched::<f32, f32>(&lhs, &rhs, m, n, k, product)?;
                Tensor::from_vec(out, &out_shape, &self.device())
            }
            DType::F64 => {
                let out = batched::<f64, f64>(&lhs, &rhs, m, n, k, gemm::gemm_f64_uninit)?;
                Tensor::from_vec(out, &out_shape, &self.device())
            }
            DType::BF16 => {
                let out = batched::<half::bf16, f32>(&lhs, &rhs, m, n, k, gemm::gemm_bf16_uninit)?;
                Tensor::from_vec(out, &out_shape, &self.device())?.to_dtype(DType::BF16)
            }
            DType::F16 => lhs.to_dtype(DType::F32)?.matmul(&rhs.to_dtype(DType::F32)?)?.to_dtype(DType::F16),
            dt => Err(Error::dtype(OP, dt, "matmul needs a floating-point dtype")),
        }
    }
}

/// Runs one GEMM per batch entry, reading every operand through its strides. The output is
/// allocated without a zero-fill: the GEMMs (`C = A·B`) write every element.
fn batched<T: WithDType, O>(
    lhs: &Tensor,
    rhs: &Tensor,
    m: usize,
    n: usize,
    k: usize,
    gemm_fn: fn(MatRef<'_, T>, MatRef<'_, T>, &mut [MaybeUninit<O>]),
) -> Result<Vec<O>> {
    let a = lhs.cpu_slice::<T>("matmul")?;
    let b = rhs.cpu_slice::<T>("matmul")?;
    let rank = lhs.rank();
    let (la, lb) = (lhs.layout(), rhs.layout());
    let batch_shape = &lhs.shape()[..rank - 2];
    let mut out_shape = batch_shape.to_vec();
    out_shape.extend([m, n]);
    // Broadcast (stride-0) operands can describe far more entries than any buffer holds.
    let len = checked_alloc_len("matmul", &out_shape, std::mem::size_of::<O>())?;
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return Ok(out);
    }
    let c = &mut out.spare_capacity_mut()[..len];
    // A broadcast right operand (a weight shared by every batch entry) and a left operand whose
    // batch rows are evenly spaced: one GEMM over all `batch * m` rows, so the weight is packed
    // once instead of once per entry. Each entry of C is computed the same way whatever the row
    // count of a call (threads and blocks split rows, never k), so the bits do not change.
    let shared_rhs = lb.strides()[..rank - 2].iter().zip(batch_shape).all(|(&s, &d)| s == 0 || d == 1);
    if let (true, Some(row_stride)) = (shared_rhs, folded_row_stride(la, m)) {
        let rows = len / n;
        let a_ref = MatRef { data: &a[la.offset()..], rows, cols: k, row_stride, col_stride: la.strides()[rank - 1] };
        let b_ref = MatRef {
            data: &b[lb.offset()..],
            rows: k,
            cols: n,
            row_stride: lb.strides()[rank - 2],
            col_stride: lb.strides()[rank - 1],
        };
        gemm_fn(a_ref, b_ref, c);
        // SAFETY: the GEMM wrote all `rows * n = len` elements.
        unsafe { out.set_len(len) };
        return Ok(out);
    }
    // Offsets of each batch entry: walk the batch dims of both layouts in step.
    let batch_layout = |l: &crate::Layout| {
        crate::Layout::new(batch_shape.to_vec(), l.strides()[..rank - 2].to_vec(), l.offset())
    };
    let (ba, bb) = (batch_layout(la), batch_layout(lb));
    // One entry per batch index: `len / (m * n)` of them, the number of chunks of `c`.
    for ((oa, ob), c) in ba.offsets().zip(bb.offsets()).zip(c.chunks_mut(m * n)) {
        let a_ref = MatRef {
            data: &a[oa..],
            rows: m,
            cols: k,
            row_stride: la.strides()[rank - 2],
            col_stride: la.strides()[rank - 1],
        };
        let b_ref = MatRef {
            data: &b[ob..],
            rows: k,
            cols: n,
            row_stride: lb.strides()[rank - 2],
            col_stride: lb.strides()[rank - 1],
        };
        gemm_fn(a_ref, b_ref, c);
    }
    // SAFETY: the batch offsets and the chunks of `c` have the same count (`len / (m * n)`), so
    // the GEMMs above wrote every element.
    unsafe { out.set_len(len) };
    Ok(out)
}

/// The row stride of `l` (`[..., m, k]`) seen as one `[batch * m, k]` matrix, when its batch and
/// row dims step through storage evenly (each dim's stride is the next one's stride times its
/// size; size-1 dims are skipped); `None` otherwise.
fn folded_row_stride(l: &crate::Layout, m: usize) -> Option<usize> {
    let rank = l.rank();
    let row_stride = l.strides()[rank - 2];
    let (mut size, mut stride) = (m, row_stride);
    for d in (0..rank - 2).rev() {
        let (sd, st) = (l.shape()[d], l.strides()[d]);
        if sd == 1 {
            continue;
        }
        if st != stride * size {
            return None;
        }
        (size, stride) = (sd, st);
    }
    Some(row_stride)
}


#[cfg(test)]
mod tests {
    use crate::{DType, Device, Rng, Tensor};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// A batched left operand times a shared (broadcast) weight, which takes the folded
        /// single-GEMM path, gives the same bits as one 2-d product per batch entry, for dense
        /// operands, a transposed weight and a narrowed (still evenly spaced) left operand.
        #[test]
        fn folded_batch_matches_per_entry_products(b0 in 1usize..4, b1 in 1usize..3, m in 1usize..40, k in 1usize..50, n in 1usize..40, wt in any::<bool>(), narrow in any::<bool>(), seed in any::<u64>()) {
            let mut rng = Rng::new(seed);
            let rows = if narrow { m + 3 } else { m };
            let x = Tensor::randn(&mut rng, 0.0, 1.0, &[b0, b1, rows, k], DType::F32, &Device::Cpu).unwrap();
            let x = x.narrow(2usize, rows - m, m).unwrap();
            let w = if wt {
                Tensor::randn(&mut rng, 0.0, 1.0, &[n, k], DType::F32, &Device::Cpu).unwrap().t().unwrap()
            } else {
                Tensor::randn(&mut rng, 0.0, 1.0, &[k, n], DType::F32, &Device::Cpu).unwrap()
            };
            let got = x.matmul(&w).unwrap();
            prop_assert_eq!(got.shape(), &[b0, b1, m, n]);
            let got = got.to_vec::<f32>().unwrap();
            let mut want = Vec::new();
            for i in 0..b0 {
                for j in 0..b1 {
                    let xe = x.narrow(0usize, i, 1).unwrap().narrow(1usize, j, 1).unwrap().reshape(&[m, k]).unwrap();
                    want.extend(xe.matmul(&w).unwrap().to_vec::<f32>().unwrap());
                }
            }
            prop_assert_eq!(got, want);
        }

        /// A left operand whose batch rows are not evenly spaced (batch dims permuted) still
        /// matches the f64 product.
        #[test]
        fn unevenly_spaced_batches_match_f64(b0 in 1usize..4, b1 in 2usize..4, m in 2usize..9, k in 1usize..9, n in 1usize..9, seed in any::<u64>()) {
            let mut rng = Rng::new(seed);
            let x = Tensor::randn(&mut rng, 0.0, 1.0, &[b1, b0, m, k], DType::F64, &Device::Cpu).unwrap().transpose(0usize, 1usize).unwrap();
            let w = Tensor::randn(&mut rng, 0.0, 1.0, &[k, n], DType::F64, &Device::Cpu).unwrap();
            let got = x.matmul(&w).unwrap().to_vec::<f64>().unwrap();
            let (xv, wv) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap());
            for r in 0..b0 * b1 * m {
                for c in 0..n {
                    let want: f64 = (0..k).map(|p| xv[r * k + p] * wv[p * n + c]).sum();
                    prop_assert!((got[r * n + c] - want).abs() <= 1e-12 * (1.0 + want.abs()));
                }
            }
        }
    }
}
