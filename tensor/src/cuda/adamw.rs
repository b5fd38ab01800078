//! One AdamW step of a CUDA f32 parameter as a single kernel (`brainstacks_kernels::adamw`),
//! instead of the dozen elementwise launches and temporaries the composed tensor ops take.
//!
//! The kernel updates its buffers in place; the parameter's and the moments' tensors may be
//! shared (a tape still holds the parameter), so the step works on dense copies (three
//! device-to-device copies, no kernel) and returns them as new tensors.

use brainstacks_kernels::adamw::AdamWParams;
use brainstacks_kernels::adamw::cuda as adamw_cuda;

use super::ops::{dense, f32_of, first, ge, wrap};
use super::storage::CudaBuf;
use crate::{Result, Tensor};

/// `(p, m, v)` after one step `t` (counted from 1) with gradient `g`; every operand a CUDA f32
/// tensor of the same shape (checked by the caller).
pub(crate) fn adamw_step(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, c: &AdamWParams, t: u64) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "adamw_step";
    // A fresh dense buffer: one device copy of a contiguous view (at any offset); a strided view
    // is gathered by `dense`, which already copies, and then duplicated (rare for parameters).
    let copy = |x: &Tensor| -> Result<CudaBuf> {
        let s = first(OP, x)?;
        match x.layout().contiguous_range() {
            Some((a, b)) => s.buf().copy_range(s.gpu(), a, b - a).map_err(ge(OP, s)),
            None => {
                let d = dense(OP, x)?;
                let s = first(OP, &d)?;
                s.buf().copy_range(s.gpu(), 0, s.len()).map_err(ge(OP, s))
            }
        }
    };
    let (mut bp, mut bm, mut bv) = (copy(p)?, copy(m)?, copy(v)?);
    let gd = dense(OP, g)?;
    let gs = first(OP, &gd)?;
    let gpu = gs.gpu();
    match (&mut bp, &mut bm, &mut bv) {
        (CudaBuf::F32(sp), CudaBuf::F32(sm), CudaBuf::F32(sv)) => {
            adamw_cuda::adamw_step_f32(gpu, c, t, sp, f32_of(OP, gs)?, sm, sv).map_err(ge(OP, gs))?;
        }
        _ => unreachable!("the caller checked that every operand is f32"),
    }
    let shape = p.shape();
    Ok((wrap(gpu, bp, shape), wrap(gpu, bm, shape), wrap(gpu, bv, shape)))
}
