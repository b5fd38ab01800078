//! Batched matrix product with broadcasting batch dims. Operands may be any strided view (a
//! transposed weight is passed to the GEMM as strides, never copied).

use crate::cpu::gemm::{self, MatRef};
use crate::layout::{broadcast_shape, checked_alloc_len};
use crate::{DType, Error, Result, Tensor, WithDType};

impl Tensor {
    /// `self [..., m, k] x rhs [..., k, n] -> [..., m, n]`; the batch dims broadcast. Both
    /// operands must have rank >= 2 and the same dtype. f32 and f64 compute in their own
    /// precision; bf16 and f16 accumulate in f32 and round the result once.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
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
                let out = batched::<f32, f32>(&lhs, &rhs, m, n, k, gemm::gemm_f32)?;
                Tensor::from_vec(out, &out_shape, &self.device())
            }
            DType::F64 => {
                let out = batched::<f64, f64>(&lhs, &rhs, m, n, k, gemm::gemm_f64)?;
                Tensor::from_vec(out, &out_shape, &self.device())
            }
            DType::BF16 => {
                let out = batched::<half::bf16, f32>(&lhs, &rhs, m, n, k, gemm::gemm_bf16)?;
                Tensor::from_vec(out, &out_shape, &self.device())?.to_dtype(DType::BF16)
            }
            DType::F16 => lhs.to_dtype(DType::F32)?.matmul(&rhs.to_dtype(DType::F32)?)?.to_dtype(DType::F16),
            dt => Err(Error::dtype(OP, dt, "matmul needs a floating-point dtype")),
        }
    }
}

/// Runs one GEMM per batch entry, reading every operand through its strides.
fn batched<T: WithDType, O: Default + Clone>(
    lhs: &Tensor,
    rhs: &Tensor,
    m: usize,
    n: usize,
    k: usize,
    gemm_fn: fn(MatRef<'_, T>, MatRef<'_, T>, &mut [O], bool),
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
    let mut out = vec![O::default(); len];
    if m * n == 0 {
        return Ok(out);
    }
    // Offsets of each batch entry: walk the batch dims of both layouts in step.
    let batch_layout = |l: &crate::Layout| {
        crate::Layout::new(batch_shape.to_vec(), l.strides()[..rank - 2].to_vec(), l.offset())
    };
    let (ba, bb) = (batch_layout(la), batch_layout(lb));
    for ((oa, ob), c) in ba.offsets().zip(bb.offsets()).zip(out.chunks_mut(m * n)) {
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
        gemm_fn(a_ref, b_ref, c, false);
    }
    Ok(out)
}
