//! Optimizer updates that have a fused kernel on the GPU. The optimizers themselves live in
//! `brainstacks-train`; on the CPU they compose tensor ops, which is what these fused updates
//! reproduce bit for bit.

pub use brainstacks_kernels::adamw::AdamWParams;

use crate::{DType, Result, Tensor};

/// One AdamW step (`brainstacks_kernels::adamw` has the math) for step `t` (counted from 1):
/// returns the new `(param, m, v)`, computed by one kernel, when every operand is a CUDA f32
/// tensor of the same shape on the same device; `None` otherwise (the caller composes the update
/// from tensor ops, which gives the same bits). The inputs are left unchanged.
///
/// ```
/// use brainstacks_tensor::ops::optim::{AdamWParams, adamw_step_fused};
/// use brainstacks_tensor::{Device, Tensor};
/// let p = Tensor::from_vec(vec![1f32, 2.0], &[2], &Device::Cpu).unwrap();
/// let c = AdamWParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
/// // On the CPU there is no fused path: the caller composes the update.
/// assert!(adamw_step_fused(&p, &p, &p, &p, &c, 1).unwrap().is_none());
/// ```
pub fn adamw_step_fused(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    c: &AdamWParams,
    t: u64,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let all = [p, g, m, v];
    let fused =
        p.device().is_cuda() && all.iter().all(|x| x.device() == p.device() && x.dtype() == DType::F32 && x.shape() == p.shape()) && t >= 1;
    if !fused {
        return Ok(None);
    }
    #[cfg(feature = "cuda")]
    {
        crate::cuda::adamw::adamw_step(p, g, m, v, c, t).map(Some)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = c;
        Ok(None)
    }
}
