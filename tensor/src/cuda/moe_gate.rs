//! The fused noisy top-k gate of a MoE-LoRA stack on CUDA tensors (`moe_gate.ptx`): one kernel
//! for `logits = x W_rᵀ + softplus(x W_nᵀ) eps`, the top-k and the softmax over the kept logits,
//! and its backward, in place of the composition of differentiable ops the model uses on the CPU.
//!
//! The noise `eps` is drawn on the device from the Philox normal stream with the key
//! `noise_key` at offset 0, in f32: pass `brainstacks_kernels::moe_lora::noise_seed(seed, step,
//! layer)` and the numbers are the same bits as `GateNoise::sample` (which draws
//! `Tensor::randn(&mut Rng::new(that key), 0, 1, [T, E], f32)`).
//!
//! f32 runs the kernels directly; bf16 operands are widened to f32, and the float outputs rounded
//! back to bf16 once. `1 <= k <= E <= 64`.

use brainstacks_kernels::moe_lora::GPU_MAX_EXPERTS;
use brainstacks_kernels::moe_lora::cpu::GateDims;
use brainstacks_kernels::moe_lora::cuda::{GateOutputs, gate_backward_f32, gate_forward_f32};

use super::ops::{copy_into, dense, dtype_error, f32_of, first, ge, i64_of, on, to_dtype, wrap};
use super::storage::CudaBuf;
use super::{CudaSlice, GpuError};
use crate::{DType, Device, Error, Result, Tensor};

/// What the gate decided for `T` tokens (every tensor on the device of `x`).
#[derive(Clone, Debug)]
pub struct MoeGateForward {
    /// `[T, E]`: the (noisy) logits, in the dtype of `x`.
    pub logits: Tensor,
    /// `[T, E]` f32: `eps * sigmoid(x W_nᵀ)` (zeros without noise), kept for the backward.
    pub nscale: Tensor,
    /// `[T, k]` i64: the kept experts of each token, by decreasing logit (`topk` order).
    pub idx: Tensor,
    /// `[T, k]`: softmax over the kept logits, in the dtype of `x`.
    pub gates: Tensor,
}

/// The gradients of [`moe_gate`], in the dtype of `x`.
#[derive(Clone, Debug)]
pub struct MoeGateGrads {
    pub dx: Tensor,
    pub dw_router: Tensor,
    pub dw_noise: Tensor,
}

/// Checks and the gate's dims: `x` `[T, d_in]`, both weights `[E, d_in]`, one dtype and device.
fn dims(op: &'static str, x: &Tensor, w_router: &Tensor, w_noise: &Tensor, k: usize) -> Result<(GateDims, Device)> {
    let device = first(op, x)?.device();
    on(op, w_router, device)?;
    on(op, w_noise, device)?;
    let (&[t, d_in], &[experts, wi]) = (x.shape(), w_router.shape()) else {
        return Err(Error::shape(op, x.shape(), w_router.shape(), "expected x [T, d_in] and w_router [E, d_in]"));
    };
    if wi != d_in || w_noise.shape() != w_router.shape() {
        return Err(Error::shape(op, w_router.shape(), w_noise.shape(), format!("both weights must be [E, {d_in}]")));
    }
    for w in [w_router, w_noise] {
        if w.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: w.dtype() });
        }
    }
    if !matches!(x.dtype(), DType::F32 | DType::BF16) {
        let dt = x.dtype();
        return Err(if dt.is_float() {
            Error::Device { op, device, msg: format!("dtype {dt} is not implemented on CUDA yet for this op (f32 and bf16 are)") }
        } else {
            dtype_error(op, dt, device, true)
        });
    }
    if k == 0 || k > experts {
        return Err(Error::invalid(op, w_router.shape(), format!("k = {k} must be in 1..={experts} (the number of experts)")));
    }
    if experts > GPU_MAX_EXPERTS {
        return Err(Error::Device { op, device, msg: format!("{experts} experts: the CUDA gate kernels take at most {GPU_MAX_EXPERTS}") });
    }
    Ok((GateDims { t, experts, k, d_in }, device))
}

/// `t` as a dense f32 tensor (f32 as is, bf16 widened).
fn as_f32(op: &'static str, t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F32 => dense(op, t),
        DType::BF16 => to_dtype(t, DType::F32),
        dt => Err(Error::dtype(op, dt, "the gate takes f32 or bf16 on CUDA")),
    }
}

fn f32_buf<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a CudaSlice<f32>> {
    f32_of(op, first(op, t)?)
}

/// `[W_r; W_n]` (`[2E, d_in]` f32) in one new device buffer, as the kernels take it.
fn stacked(op: &'static str, w_router: &Tensor, w_noise: &Tensor) -> Result<Tensor> {
    let (r, n) = (as_f32(op, w_router)?, as_f32(op, w_noise)?);
    let (cr, cn) = (first(op, &r)?, first(op, &n)?);
    let (gpu, e) = (cr.gpu(), ge(op, cr));
    let half = r.elem_count();
    let mut both = CudaBuf::zeros(gpu, DType::F32, 2 * half).map_err(&e)?;
    copy_into(gpu, cr.buf(), &mut both, 0).map_err(&e)?;
    copy_into(gpu, cn.buf(), &mut both, half).map_err(&e)?;
    let mut shape = r.shape().to_vec();
    shape[0] *= 2;
    Ok(wrap(gpu, both, &shape))
}

/// An f32 result in `dtype` (f32 or bf16).
fn back(t: Tensor, dtype: DType) -> Result<Tensor> {
    if dtype == DType::F32 { Ok(t) } else { to_dtype(&t, dtype) }
}

/// The noisy top-k gate on CUDA: `x` `[T, d_in]`, `w_router` and `w_noise` `[E, d_in]` (f32 or
/// bf16, one device). With `noise_key = Some(noise_seed(seed, step, layer))` the logits get
/// `softplus(x W_nᵀ) eps` (training); `None` is the clean (evaluation) gate.
///
/// ```no_run
/// use brainstacks_kernels::moe_lora::noise_seed;
/// use brainstacks_tensor::{DType, Device, Tensor};
/// # fn main() -> brainstacks_tensor::Result<()> {
/// let dev = Device::Cuda(0);
/// let x = Tensor::ones(&[3, 8], DType::F32, &dev)?;
/// let (w_r, w_n) = (Tensor::ones(&[4, 8], DType::F32, &dev)?, Tensor::zeros(&[4, 8], DType::F32, &dev)?);
/// let gate = brainstacks_tensor::cuda::moe_gate(&x, &w_r, &w_n, 2, Some(noise_seed(1, 0, 3)))?;
/// assert_eq!(gate.idx.shape(), &[3, 2]);
/// # Ok(()) }
/// ```
pub fn moe_gate(x: &Tensor, w_router: &Tensor, w_noise: &Tensor, k: usize, noise_key: Option<u64>) -> Result<MoeGateForward> {
    const OP: &str = "moe_gate";
    let (d, _) = dims(OP, x, w_router, w_noise, k)?;
    let (xf, w) = (as_f32(OP, x)?, stacked(OP, w_router, w_noise)?);
    let c = first(OP, &xf)?;
    let (gpu, e) = (c.gpu(), ge(OP, c));
    let alloc = |n: usize| gpu.alloc_zeros::<f32>(n).map_err(&e);
    let (mut logits, mut nscale, mut gates) = (alloc(d.t * d.experts)?, alloc(d.t * d.experts)?, alloc(d.t * d.k)?);
    let mut idx = gpu.alloc_zeros::<i64>(d.t * d.k).map_err(&e)?;
    let out = GateOutputs { logits: &mut logits, nscale: &mut nscale, idx: &mut idx, gates: &mut gates };
    gate_forward_f32(gpu, f32_buf(OP, &xf)?, f32_buf(OP, &w)?, noise_key, &d, out).map_err(&e)?;
    let (te, tk) = ([d.t, d.experts], [d.t, d.k]);
    Ok(MoeGateForward {
        logits: back(wrap(gpu, CudaBuf::F32(logits), &te), x.dtype())?,
        nscale: wrap(gpu, CudaBuf::F32(nscale), &te),
        idx: wrap(gpu, CudaBuf::I64(idx), &tk),
        gates: back(wrap(gpu, CudaBuf::F32(gates), &tk), x.dtype())?,
    })
}

/// Gradients of [`moe_gate`] from the forward's outputs `fwd`, the gradient `dgates` of the gates
/// (`[T, k]`) and optionally a further gradient `dlogits` of the logits (`[T, E]`, e.g. from the
/// load-balancing loss): `dx` `[T, d_in]`, `dw_router` and `dw_noise` `[E, d_in]`. The selection
/// (`fwd.idx`) is constant, as for `topk` on the tape.
pub fn moe_gate_backward(
    x: &Tensor,
    w_router: &Tensor,
    w_noise: &Tensor,
    fwd: &MoeGateForward,
    dgates: &Tensor,
    dlogits: Option<&Tensor>,
) -> Result<MoeGateGrads> {
    const OP: &str = "moe_gate_backward";
    let k = fwd.idx.shape().get(1).copied().unwrap_or(0);
    let (d, device) = dims(OP, x, w_router, w_noise, k)?;
    let (te, tk) = ([d.t, d.experts], [d.t, d.k]);
    let checks: [(&str, &Tensor, &[usize]); 4] =
        [("idx", &fwd.idx, &tk), ("gates", &fwd.gates, &tk), ("nscale", &fwd.nscale, &te), ("dgates", dgates, &tk)];
    for (name, t, want) in checks.into_iter().chain(dlogits.map(|t| ("dlogits", t, &te[..]))) {
        on(OP, t, device)?;
        if t.shape() != want {
            return Err(Error::shape(OP, t.shape(), want, format!("{name} must be {want:?}")));
        }
    }
    let (xf, w) = (as_f32(OP, x)?, stacked(OP, w_router, w_noise)?);
    let (gf, nf, dgf) = (as_f32(OP, &fwd.gates)?, as_f32(OP, &fwd.nscale)?, as_f32(OP, dgates)?);
    let extra = dlogits.map(|t| as_f32(OP, t)).transpose()?;
    let idx = dense(OP, &fwd.idx)?;
    let c = first(OP, &xf)?;
    let (gpu, e) = (c.gpu(), ge(OP, c));
    let ib = i64_of(OP, first(OP, &idx)?)?;
    let mut dx = gpu.alloc_zeros::<f32>(d.t * d.d_in).map_err(&e)?;
    let mut dw = gpu.alloc_zeros::<f32>(2 * d.experts * d.d_in).map_err(&e)?;
    let extra_buf = match &extra {
        Some(t) => Some(f32_buf(OP, t)?),
        None => None,
    };
    gate_backward_f32(
        gpu,
        f32_buf(OP, &xf)?,
        f32_buf(OP, &w)?,
        ib,
        f32_buf(OP, &gf)?,
        f32_buf(OP, &nf)?,
        f32_buf(OP, &dgf)?,
        extra_buf,
        &d,
        &mut dx,
        &mut dw,
    )
    .map_err(&e)?;
    let half = d.experts * d.d_in;
    let dw = CudaBuf::F32(dw);
    let split = |at: usize| -> std::result::Result<CudaBuf, GpuError> { dw.copy_range(gpu, at, half) };
    let (dw_r, dw_n) = (split(0).map_err(&e)?, split(half).map_err(&e)?);
    let dtype = x.dtype();
    let wshape = [d.experts, d.d_in];
    Ok(MoeGateGrads {
        dx: back(wrap(gpu, CudaBuf::F32(dx), &[d.t, d.d_in]), dtype)?,
        dw_router: back(wrap(gpu, dw_r, &wshape), dtype)?,
        dw_noise: back(wrap(gpu, dw_n, &wshape), dtype)?,
    })
}
