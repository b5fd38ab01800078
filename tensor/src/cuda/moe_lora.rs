//! `Tensor::moe_lora` and `Tensor::moe_lora_backward` on CUDA tensors: the dispatch kernels of
//! `brainstacks_kernels::moe_lora::cuda` (f32 only), with the routing grouped on the device.
//!
//! - f32 runs the kernels directly; bf16 is widened exactly to f32, computed, and rounded once
//!   (as the CPU path computes bf16); f64, f16 and integer dtypes are errors.
//! - The routing table `idx` never leaves the device: `DeviceRouting::from_device` groups it with
//!   the device counting sort. A bad table (an expert outside `0..E`, or one chosen twice for a
//!   token) is still an error, as on the CPU: after every launch is queued, one 4-byte status word
//!   is read back (the only host round trip, and it carries no routing data).
//! - The kernels take `1 <= k <= E <= 64` and `1 <= r <= 64`; a larger `E` or `r` is an error
//!   naming the limit. Shapes with nothing to compute (`r`, `d_in` or `d_out` zero) give zeros
//!   without a dispatch launch (the routing is still checked).
//! - The backward recomputes `mid = A_e x_t` with the forward's gather (the op's signature carries
//!   no forward state), which also runs the forward's combine into a scratch buffer.

use std::sync::Arc;

use brainstacks_kernels::moe_lora::cpu::Dims;
use brainstacks_kernels::moe_lora::cuda::{DeviceRouting, DispatchGrads, dispatch_backward_f32, dispatch_forward_f32};
use brainstacks_kernels::moe_lora::{GPU_MAX_EXPERTS, GPU_MAX_RANK};

use super::ops::{dense, dtype_error, f32_of, first, ge, i64_of, on, to_dtype, wrap};
use super::storage::{CudaBuf, CudaStorage};
use super::{CudaSlice, GpuContext, GpuError, gpu_error};
use crate::ops::moe_lora::MoeLoraGrads;
use crate::{DType, Device, Error, Result, Tensor};

/// `t` as a dense f32 tensor on its device: f32 as is (a strided view copied), bf16 widened.
fn as_f32(op: &'static str, t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::F32 => dense(op, t),
        DType::BF16 => to_dtype(t, DType::F32),
        dt => Err(unsupported_dtype(op, dt, t.device())),
    }
}

fn unsupported_dtype(op: &'static str, dtype: DType, device: Device) -> Error {
    if !dtype.is_float() {
        return dtype_error(op, dtype, device, true);
    }
    Error::Device { op, device, msg: format!("dtype {dtype} is not implemented on CUDA yet for this op (f32 and bf16 are)") }
}

/// The kernels' limits on `E` and `r` (k <= E was checked by the caller).
fn check_limits(op: &'static str, device: Device, d: &Dims) -> Result<()> {
    if d.experts > GPU_MAX_EXPERTS || d.r > GPU_MAX_RANK {
        return Err(Error::Device {
            op,
            device,
            msg: format!(
                "E = {} experts of rank r = {}: the CUDA kernels take at most {GPU_MAX_EXPERTS} experts and rank {GPU_MAX_RANK}",
                d.experts, d.r
            ),
        });
    }
    Ok(())
}

/// The operands on the device of `x`, in the compute dtype, with the routing grouped.
struct Operands {
    x: Tensor,
    gates: Tensor,
    a: Tensor,
    b: Tensor,
    routing: DeviceRouting,
}

impl Operands {
    fn new(op: &'static str, x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, d: &Dims) -> Result<Self> {
        let device = first(op, x)?.device();
        for t in [idx, gates, a, b] {
            on(op, t, device)?;
        }
        if !matches!(x.dtype(), DType::F32 | DType::BF16) {
            return Err(unsupported_dtype(op, x.dtype(), device));
        }
        check_limits(op, device, d)?;
        let (x, gates, a, b) = (as_f32(op, x)?, as_f32(op, gates)?, as_f32(op, a)?, as_f32(op, b)?);
        let id = dense(op, idx)?;
        let ci = first(op, &id)?;
        let routing = DeviceRouting::from_device(ci.gpu(), i64_of(op, ci)?, d.k, d.experts).map_err(ge(op, ci))?;
        Ok(Self { x, gates, a, b, routing })
    }

    fn storage(&self) -> &CudaStorage {
        first("moe_lora", &self.x).expect("built on CUDA")
    }

    /// Reads the device grouping's status word: a bad routing table is `InvalidArgument`, as on
    /// the CPU.
    fn validate(&self, op: &'static str, idx: &Tensor) -> Result<()> {
        let c = self.storage();
        match self.routing.validate(c.gpu()) {
            Ok(()) => Ok(()),
            Err(GpuError::Invalid { msg, .. }) => Err(Error::invalid(op, idx.shape(), msg)),
            Err(e) => Err(gpu_error(op, c.device(), e)),
        }
    }
}

/// The f32 device buffer of a dense f32 tensor.
fn f32_buf<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a CudaSlice<f32>> {
    f32_of(op, first(op, t)?)
}

/// Nothing to multiply: `r`, `d_in` or `d_out` is zero, so every output is zero.
fn nothing_to_compute(d: &Dims) -> bool {
    d.r == 0 || d.d_in == 0 || d.d_out == 0
}

fn zeros_f32(gpu: &Arc<GpuContext>, shape: &[usize]) -> std::result::Result<Tensor, GpuError> {
    let n = shape.iter().product();
    Ok(wrap(gpu, CudaBuf::F32(gpu.alloc_zeros::<f32>(n)?), shape))
}

/// A compute-dtype (f32) result back in the dtype of the op's inputs.
fn back(t: Tensor, dtype: DType) -> Result<Tensor> {
    if dtype == DType::F32 { Ok(t) } else { to_dtype(&t, dtype) }
}

/// The forward dispatch on CUDA (see the module docs). The caller checked shapes and dtypes
/// agreeing ([`Tensor::moe_lora`]).
pub(crate) fn forward(x: &Tensor, idx: &Tensor, gates: &Tensor, a: &Tensor, b: &Tensor, scale: f64, d: &Dims) -> Result<Tensor> {
    const OP: &str = "moe_lora";
    let ops = Operands::new(OP, x, idx, gates, a, b, d)?;
    let c = ops.storage();
    let (gpu, e) = (c.gpu(), ge(OP, c));
    let out = if nothing_to_compute(d) {
        zeros_f32(gpu, &[d.t, d.d_out]).map_err(&e)?
    } else {
        let mut mid = gpu.alloc_zeros::<f32>(d.t * d.k * d.r).map_err(&e)?;
        let mut out = gpu.alloc_zeros::<f32>(d.t * d.d_out).map_err(&e)?;
        let f = |t| f32_buf(OP, t);
        dispatch_forward_f32(gpu, &ops.routing, f(&ops.x)?, f(&ops.gates)?, f(&ops.a)?, f(&ops.b)?, scale as f32, d, &mut mid, &mut out)
            .map_err(&e)?;
        wrap(gpu, CudaBuf::F32(out), &[d.t, d.d_out])
    };
    ops.validate(OP, idx)?;
    back(out, x.dtype())
}

/// The four gradients on CUDA for the output gradient `dy` (`[T, d_out]`, f32 or bf16, on the
/// device of `x`; the caller checked its shape).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &Tensor,
    idx: &Tensor,
    gates: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    dy: &Tensor,
    d: &Dims,
) -> Result<MoeLoraGrads> {
    const OP: &str = "moe_lora_backward";
    let ops = Operands::new(OP, x, idx, gates, a, b, d)?;
    let c = ops.storage();
    let (gpu, e) = (c.gpu(), ge(OP, c));
    on(OP, dy, c.device())?;
    let dy = as_f32(OP, dy)?;
    let alloc = |n: usize| gpu.alloc_zeros::<f32>(n).map_err(&e);
    let (mut dx, mut dg) = (alloc(d.t * d.d_in)?, alloc(d.t * d.k)?);
    let (mut da, mut db) = (alloc(d.experts * d.r * d.d_in)?, alloc(d.experts * d.d_out * d.r)?);
    if !nothing_to_compute(d) {
        let f = |t| f32_buf(OP, t);
        let (xv, gv, av, bv) = (f(&ops.x)?, f(&ops.gates)?, f(&ops.a)?, f(&ops.b)?);
        // mid = A_e x_t again (the forward's state is not part of the op); its combine output is
        // scratch.
        let mut mid = alloc(d.t * d.k * d.r)?;
        let mut scratch = alloc(d.t * d.d_out)?;
        dispatch_forward_f32(gpu, &ops.routing, xv, gv, av, bv, scale as f32, d, &mut mid, &mut scratch).map_err(&e)?;
        drop(scratch);
        let grads = DispatchGrads { dx: &mut dx, dg: &mut dg, da: &mut da, db: &mut db };
        dispatch_backward_f32(gpu, &ops.routing, xv, gv, av, bv, scale as f32, d, &mid, f(&dy)?, grads).map_err(&e)?;
    }
    ops.validate(OP, idx)?;
    let dtype = x.dtype();
    let out = |v, shape: &[usize]| back(wrap(gpu, CudaBuf::F32(v), shape), dtype);
    Ok(MoeLoraGrads {
        dx: out(dx, &[d.t, d.d_in])?,
        dgates: out(dg, &[d.t, d.k])?,
        da: out(da, &[d.experts, d.r, d.d_in])?,
        db: out(db, &[d.experts, d.d_out, d.r])?,
    })
}
