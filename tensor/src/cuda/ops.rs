//! Tensor ops on CUDA tensors: each runs the kernel of `brainstacks-kernels` that mirrors the CPU
//! op, or returns `Error::Device` ("not implemented on CUDA yet"). Outputs are dense tensors on the
//! input's device. The `Tensor` methods call in here after their own argument checks, so shapes
//! and dims arriving here are valid.

use std::sync::Arc;

use brainstacks_kernels::elementwise::cuda::{self as ew, Strides};
use brainstacks_kernels::elementwise::{BinaryOp as KBinary, UnaryOp as KUnary};
use brainstacks_kernels::reduce::{ArgReduceOp, ReduceOp};
use half::bf16;

use super::storage::{CudaBuf, CudaStorage, driver};
use super::{CudaSlice, GpuContext, GpuError, context, gpu_error};
use crate::layout::{Layout, broadcast_shape};
use crate::ops::binary::BinaryOp;
use crate::ops::unary::UnaryOp;
use crate::storage::Storage;
use crate::tensor::PhiloxDist;
use crate::{DType, Device, Error, Result, Rng, Tensor, WithDType};
use brainstacks_kernels::gemm::cuda::GemmBatch;
use brainstacks_kernels::launch::{CudaView, CudaViewMut};

// ---- helpers ------------------------------------------------------------------------------

fn storage_of(t: &Tensor) -> Option<&CudaStorage> {
    match t.storage() {
        Storage::Cuda(c) => Some(c),
        Storage::Cpu(_) => None,
    }
}

/// The CUDA storage of `t`, which must be on `device` (the device of the op's first operand).
pub(super) fn on<'a>(op: &'static str, t: &'a Tensor, device: Device) -> Result<&'a CudaStorage> {
    match storage_of(t) {
        Some(c) if c.device() == device => Ok(c),
        _ => Err(Error::Device {
            op,
            device: t.device(),
            msg: format!("every operand must be on {device} (move it with `to_device`)"),
        }),
    }
}

pub(super) fn first<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a CudaStorage> {
    on(op, t, t.device())
}

fn ordinal(device: &Device) -> usize {
    match device {
        Device::Cuda(n) => *n,
        Device::Cpu => unreachable!("CUDA paths are only entered for CUDA devices"),
    }
}

pub(super) fn wrap(gpu: &Arc<GpuContext>, buf: CudaBuf, shape: &[usize]) -> Tensor {
    Tensor::from_parts(Arc::new(Storage::Cuda(CudaStorage::new(buf, gpu.clone()))), Layout::contiguous(shape))
}

/// Maps a kernel error to the tensor error of `op` on `c`'s device.
pub(super) fn ge<'a>(op: &'static str, c: &'a CudaStorage) -> impl Fn(GpuError) -> Error + 'a {
    move |e| gpu_error(op, c.device(), e)
}

/// The error for a dtype the op supports on the CPU but not (yet) on CUDA, or does not support.
pub(super) fn dtype_error(op: &'static str, dtype: DType, device: Device, float_op: bool) -> Error {
    if float_op && !dtype.is_float() {
        return Error::dtype(op, dtype, "a floating-point dtype is required");
    }
    Error::Device { op, device, msg: format!("dtype {dtype} is not implemented on CUDA yet for this op") }
}

fn isize_strides(l: &Layout) -> Vec<isize> {
    l.strides().iter().map(|&s| s as isize).collect()
}

pub(super) fn f32_of<'a>(op: &'static str, c: &'a CudaStorage) -> Result<&'a CudaSlice<f32>> {
    match c.buf() {
        CudaBuf::F32(v) => Ok(v),
        b => Err(dtype_error(op, b.dtype(), c.device(), false)),
    }
}

pub(super) fn i64_of<'a>(op: &'static str, c: &'a CudaStorage) -> Result<&'a CudaSlice<i64>> {
    match c.buf() {
        CudaBuf::I64(v) => Ok(v),
        b => Err(Error::Device { op, device: c.device(), msg: format!("indices must be i64 on CUDA, not {}", b.dtype()) }),
    }
}

/// `t` as a dense tensor: contiguous from offset 0 in a buffer of exactly its elements (the
/// kernels with no view parameters need that). Copies only when `t` is not already dense.
pub(crate) fn dense(op: &'static str, t: &Tensor) -> Result<Tensor> {
    let c = first(op, t)?;
    match t.layout().contiguous_range() {
        Some((0, b)) if b == c.len() => Ok(t.clone()),
        Some((a, b)) => Ok(wrap(c.gpu(), c.buf().copy_range(c.gpu(), a, b - a).map_err(ge(op, c))?, t.shape())),
        None => gather(op, t),
    }
}

/// A dense copy of a strided view: `x * 1` through the strided binary kernel (exact for every
/// value; a NaN stays a NaN). f32 and bf16 only (there is no integer elementwise kernel yet),
/// except that an empty view of any dtype gives an empty buffer.
fn gather(op: &'static str, t: &Tensor) -> Result<Tensor> {
    let c = first(op, t)?;
    let gpu = c.gpu();
    let (n, shape) = (t.elem_count(), t.shape());
    let strides = isize_strides(t.layout());
    let view = Strides { strides: &strides, offset: t.layout().offset() };
    let zero = vec![0isize; strides.len()];
    let one_view = Strides { strides: &zero, offset: 0 };
    let e = ge(op, c);
    if n == 0 {
        return Ok(wrap(gpu, CudaBuf::zeros(gpu, c.dtype(), 0).map_err(&e)?, shape));
    }
    let buf = match c.buf() {
        CudaBuf::F32(x) => {
            let one = gpu.htod(&[1f32]).map_err(&e)?;
            let mut y = gpu.alloc_zeros::<f32>(n).map_err(&e)?;
            ew::binary_f32(gpu, KBinary::Mul, x, view, &one, one_view, shape, &mut y).map_err(&e)?;
            CudaBuf::F32(y)
        }
        CudaBuf::BF16(x) => {
            let one = gpu.htod(&[bf16::ONE.to_bits()]).map_err(&e)?;
            let mut y = gpu.alloc_zeros::<u16>(n).map_err(&e)?;
            ew::binary_bf16(gpu, KBinary::Mul, x, view, &one, one_view, shape, &mut y).map_err(&e)?;
            CudaBuf::BF16(y)
        }
        b => {
            return Err(Error::Device {
                op,
                device: c.device(),
                msg: format!("copying a strided {} view is not implemented on CUDA yet", b.dtype()),
            });
        }
    };
    Ok(wrap(gpu, buf, shape))
}

// ---- creation, transfers, casts -----------------------------------------------------------

pub(crate) fn zeros(shape: &[usize], n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let gpu = context("zeros", ordinal(device))?;
    let buf = CudaBuf::zeros(&gpu, dtype, n).map_err(|e| gpu_error("zeros", *device, e))?;
    Ok(wrap(&gpu, buf, shape))
}

/// A host copy of a CUDA tensor's view (dense when the view is contiguous, else a view of the
/// downloaded buffer); `None` for a CPU tensor.
pub(crate) fn host_copy(t: &Tensor, op: &'static str) -> Result<Option<Tensor>> {
    let Some(c) = storage_of(t) else { return Ok(None) };
    let e = ge(op, c);
    Ok(Some(match t.layout().contiguous_range() {
        Some((a, b)) if a == 0 && b == c.len() => Tensor::from_cpu_storage(c.to_cpu(op)?, t.shape())?,
        Some((a, b)) => {
            let part = c.buf().copy_range(c.gpu(), a, b - a).map_err(&e)?;
            Tensor::from_cpu_storage(part.download(c.gpu()).map_err(&e)?, t.shape())?
        }
        None => Tensor::from_parts(Arc::new(Storage::Cpu(c.to_cpu(op)?)), t.layout().clone()),
    }))
}

/// Copies `t` to another device, dense. CUDA to CUDA goes through the host.
pub(crate) fn to_device(t: &Tensor, device: &Device) -> Result<Tensor> {
    const OP: &str = "to_device";
    let host = match host_copy(t, OP)? {
        Some(h) => h.contiguous()?,
        None => t.contiguous()?,
    };
    let Device::Cuda(n) = *device else { return Ok(host) };
    let gpu = context(OP, n)?;
    let src = host.cpu_storage(OP)?;
    let (a, b) = host.layout().contiguous_range().expect("contiguous");
    let owned;
    let src = if a == 0 && b == src.len() {
        src
    } else {
        owned = crate::match_cpu_storage!(src, v => WithDType::into_storage(v[a..b].to_vec()));
        &owned
    };
    let buf = CudaBuf::upload(&gpu, src).map_err(|e| gpu_error(OP, *device, e))?;
    Ok(wrap(&gpu, buf, t.shape()))
}

/// A strided view made dense (the caller handled already-contiguous tensors).
pub(crate) fn contiguous(t: &Tensor) -> Result<Tensor> {
    dense("contiguous", t)
}

/// f32 <-> bf16 through the cast kernels (the caller handled `dtype == t.dtype()`).
pub(crate) fn to_dtype(t: &Tensor, dtype: DType) -> Result<Tensor> {
    const OP: &str = "to_dtype";
    let x = dense(OP, t)?;
    let c = first(OP, &x)?;
    let gpu = c.gpu();
    let e = ge(OP, c);
    let n = x.elem_count();
    let buf = match (c.buf(), dtype) {
        (CudaBuf::F32(v), DType::BF16) => {
            let mut y = gpu.alloc_zeros::<u16>(n).map_err(&e)?;
            brainstacks_kernels::cast::cuda::cast_f32_bf16(gpu, v, &mut y).map_err(&e)?;
            CudaBuf::BF16(y)
        }
        (CudaBuf::BF16(v), DType::F32) => {
            let mut y = gpu.alloc_zeros::<f32>(n).map_err(&e)?;
            brainstacks_kernels::cast::cuda::cast_bf16_f32(gpu, v, &mut y).map_err(&e)?;
            CudaBuf::F32(y)
        }
        (b, _) => {
            return Err(Error::Device {
                op: OP,
                device: c.device(),
                msg: format!("casting {} to {dtype} is not implemented on CUDA yet (f32 <-> bf16 is)", b.dtype()),
            });
        }
    };
    Ok(wrap(gpu, buf, t.shape()))
}

/// Philox draws on the device: the same numbers as the CPU path for the same `rng` state
/// (f32 draws, rounded once for bf16; f64 normal draws). `rng` advances only on success paths.
pub(crate) fn philox_draw(
    op: &'static str,
    rng: &mut Rng,
    shape: &[usize],
    n: usize,
    dtype: DType,
    device: &Device,
    dist: PhiloxDist,
) -> Result<Tensor> {
    use brainstacks_kernels::philox::cuda as ph;
    let gpu = context(op, ordinal(device))?;
    let e = |err| gpu_error(op, *device, err);
    let supported = matches!(
        (dtype, dist),
        (DType::F32 | DType::BF16, _) | (DType::F64, PhiloxDist::Normal { .. })
    );
    if !supported {
        return Err(Error::Device {
            op,
            device: *device,
            msg: format!("{op} of dtype {dtype} is not implemented on CUDA yet (f32 and bf16 are; f64 for randn)"),
        });
    }
    let (seed, offset) = (rng.seed, rng.offset);
    let buf = match (dtype, dist) {
        (DType::F64, PhiloxDist::Normal { mean, std }) => {
            let mut y = gpu.alloc_zeros::<f64>(n).map_err(e)?;
            ph::fill_normal_f64(&gpu, seed, offset, mean, std, &mut y).map_err(e)?;
            CudaBuf::F64(y)
        }
        (_, dist) => {
            let mut y = gpu.alloc_zeros::<f32>(n).map_err(e)?;
            match dist {
                PhiloxDist::Uniform { low, high } => ph::fill_uniform_f32(&gpu, seed, offset, low as f32, high as f32, &mut y),
                PhiloxDist::Normal { mean, std } => ph::fill_normal_f32(&gpu, seed, offset, mean as f32, std as f32, &mut y),
            }
            .map_err(e)?;
            CudaBuf::F32(y)
        }
    };
    rng.advance(n);
    let t = wrap(&gpu, buf, shape);
    if dtype == DType::BF16 { to_dtype(&t, DType::BF16) } else { Ok(t) }
}

// ---- elementwise --------------------------------------------------------------------------

fn kunary(op: UnaryOp) -> KUnary {
    match op {
        UnaryOp::Neg => KUnary::Neg,
        UnaryOp::Exp => KUnary::Exp,
        UnaryOp::Log => KUnary::Log,
        UnaryOp::Sqrt => KUnary::Sqrt,
        UnaryOp::Rsqrt => KUnary::Rsqrt,
        UnaryOp::Tanh => KUnary::Tanh,
        UnaryOp::Silu => KUnary::Silu,
        UnaryOp::Gelu => KUnary::Gelu,
        UnaryOp::Sigmoid => KUnary::Sigmoid,
        UnaryOp::Softplus => KUnary::Softplus,
        UnaryOp::Relu => KUnary::Relu,
        UnaryOp::Abs => KUnary::Abs,
        UnaryOp::Square => KUnary::Square,
        UnaryOp::Recip => KUnary::Recip,
        UnaryOp::Sin => KUnary::Sin,
        UnaryOp::Cos => KUnary::Cos,
    }
}

fn kbinary(op: BinaryOp) -> KBinary {
    match op {
        BinaryOp::Add => KBinary::Add,
        BinaryOp::Sub => KBinary::Sub,
        BinaryOp::Mul => KBinary::Mul,
        BinaryOp::Div => KBinary::Div,
        BinaryOp::Maximum => KBinary::Maximum,
        BinaryOp::Minimum => KBinary::Minimum,
    }
}

/// `Tensor::unary` (and `gelu_derivative`, `op = None`) on f32/bf16, reading any strided view.
pub(crate) fn unary(t: &Tensor, op: Option<UnaryOp>) -> Result<Tensor> {
    let (name, kop) = match op {
        Some(op) => (op.name(), kunary(op)),
        None => ("gelu_derivative", KUnary::GeluDerivative),
    };
    let c = first(name, t)?;
    let gpu = c.gpu();
    let e = ge(name, c);
    let strides = isize_strides(t.layout());
    let view = Strides { strides: &strides, offset: t.layout().offset() };
    let n = t.elem_count();
    let buf = match c.buf() {
        CudaBuf::F32(x) => {
            let mut y = gpu.alloc_zeros::<f32>(n).map_err(&e)?;
            ew::unary_f32(gpu, kop, x, t.shape(), view, &mut y).map_err(&e)?;
            CudaBuf::F32(y)
        }
        CudaBuf::BF16(x) => {
            let mut y = gpu.alloc_zeros::<u16>(n).map_err(&e)?;
            ew::unary_bf16(gpu, kop, x, t.shape(), view, &mut y).map_err(&e)?;
            CudaBuf::BF16(y)
        }
        b => return Err(dtype_error(name, b.dtype(), c.device(), true)),
    };
    Ok(wrap(gpu, buf, t.shape()))
}

/// `Tensor::binary` on f32/bf16 with broadcasting, reading both operands through their strides.
pub(crate) fn binary(lhs: &Tensor, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let name = op.name();
    let dev = if lhs.device().is_cuda() { lhs.device() } else { rhs.device() };
    let (a, b) = (on(name, lhs, dev)?, on(name, rhs, dev)?);
    if lhs.dtype() != rhs.dtype() {
        return Err(Error::DTypeMismatch { op: name, lhs: lhs.dtype(), rhs: rhs.dtype() });
    }
    let shape = broadcast_shape(name, lhs.shape(), rhs.shape())?;
    let (la, lb) = (lhs.layout().broadcast_as(name, &shape)?, rhs.layout().broadcast_as(name, &shape)?);
    let (sa, sb) = (isize_strides(&la), isize_strides(&lb));
    let (va, vb) = (Strides { strides: &sa, offset: la.offset() }, Strides { strides: &sb, offset: lb.offset() });
    let n = la.elem_count();
    let gpu = a.gpu();
    let e = ge(name, a);
    let buf = match (a.buf(), b.buf()) {
        (CudaBuf::F32(x), CudaBuf::F32(z)) => {
            let mut y = gpu.alloc_zeros::<f32>(n).map_err(&e)?;
            ew::binary_f32(gpu, kbinary(op), x, va, z, vb, &shape, &mut y).map_err(&e)?;
            CudaBuf::F32(y)
        }
        (CudaBuf::BF16(x), CudaBuf::BF16(z)) => {
            let mut y = gpu.alloc_zeros::<u16>(n).map_err(&e)?;
            ew::binary_bf16(gpu, kbinary(op), x, va, z, vb, &shape, &mut y).map_err(&e)?;
            CudaBuf::BF16(y)
        }
        (x, _) => return Err(dtype_error(name, x.dtype(), a.device(), false)),
    };
    Ok(wrap(gpu, buf, &shape))
}

/// `x op v` for an f32 tensor, `v` a broadcast one-element buffer.
fn scalar_f32(op: &'static str, t: &Tensor, kop: KBinary, v: f32) -> Result<Tensor> {
    let c = first(op, t)?;
    let x = f32_of(op, c)?;
    let gpu = c.gpu();
    let e = ge(op, c);
    let strides = isize_strides(t.layout());
    let zero = vec![0isize; strides.len()];
    let s = gpu.htod(&[v]).map_err(&e)?;
    let mut y = gpu.alloc_zeros::<f32>(t.elem_count()).map_err(&e)?;
    ew::binary_f32(
        gpu,
        kop,
        x,
        Strides { strides: &strides, offset: t.layout().offset() },
        &s,
        Strides { strides: &zero, offset: 0 },
        t.shape(),
        &mut y,
    )
    .map_err(&e)?;
    Ok(wrap(gpu, CudaBuf::F32(y), t.shape()))
}

/// `add_scalar`, `mul_scalar` and `affine` (`steps` applied in order, each rounded to f32, as the
/// CPU path computes): f32 directly; bf16 widened exactly to f32, computed, rounded once.
pub(crate) fn scalar_ops(op: &'static str, t: &Tensor, steps: &[(BinaryOp, f64)]) -> Result<Tensor> {
    let c = first(op, t)?;
    let run = |x: &Tensor| -> Result<Tensor> {
        let mut y = x.clone();
        for &(bop, v) in steps {
            y = scalar_f32(op, &y, kbinary(bop), v as f32)?;
        }
        Ok(y)
    };
    match c.dtype() {
        DType::F32 => run(t),
        DType::BF16 => to_dtype(&run(&to_dtype(t, DType::F32)?)?, DType::BF16),
        dt => Err(dtype_error(op, dt, c.device(), false)),
    }
}

// ---- reductions ---------------------------------------------------------------------------

/// `t` (f32) as a dense `[outer, size, inner]` array reducing `dims` (sorted, distinct): the
/// dims are used in place when they are adjacent, else moved last by a strided copy.
fn as_axis(op: &'static str, t: &Tensor, dims: &[usize]) -> Result<(Tensor, usize, usize, usize)> {
    let shape = t.shape();
    let prod = |r: &[usize]| r.iter().product::<usize>();
    if dims.is_empty() {
        return Ok((dense(op, t)?, prod(shape), 1, 1));
    }
    if dims.windows(2).all(|w| w[1] == w[0] + 1) {
        let (d0, d1) = (dims[0], dims[dims.len() - 1]);
        return Ok((dense(op, t)?, prod(&shape[..d0]), prod(&shape[d0..=d1]), prod(&shape[d1 + 1..])));
    }
    let mut perm: Vec<usize> = (0..shape.len()).filter(|d| !dims.contains(d)).collect();
    let outer = perm.iter().map(|&d| shape[d]).product();
    perm.extend_from_slice(dims);
    let size = dims.iter().map(|&d| shape[d]).product();
    Ok((dense(op, &t.permute(&perm)?)?, outer, size, 1))
}

/// sum / mean / max / min of an f32 tensor over `dims`, shaped `out_shape`.
pub(crate) fn reduce(op: &'static str, t: &Tensor, dims: &[usize], out_shape: &[usize], rop: ReduceOp) -> Result<Tensor> {
    let c = first(op, t)?;
    f32_of(op, c)?;
    let mut dims = dims.to_vec();
    dims.sort_unstable();
    let (x, outer, size, inner) = as_axis(op, t, &dims)?;
    let cx = first(op, &x)?;
    let gpu = cx.gpu();
    let e = ge(op, cx);
    let mut y = gpu.alloc_zeros::<f32>(outer * inner).map_err(&e)?;
    brainstacks_kernels::reduce::cuda::reduce_f32(gpu, rop, f32_of(op, cx)?, outer, size, inner, &mut y).map_err(&e)?;
    Ok(wrap(gpu, CudaBuf::F32(y), out_shape))
}

/// argmax / argmin of an f32 tensor along `dim` (I64 indices), shaped `out_shape`.
pub(crate) fn arg_reduce(op: &'static str, t: &Tensor, dim: usize, out_shape: &[usize], aop: ArgReduceOp) -> Result<Tensor> {
    let c = first(op, t)?;
    f32_of(op, c)?;
    let (x, outer, size, inner) = as_axis(op, t, &[dim])?;
    let cx = first(op, &x)?;
    let gpu = cx.gpu();
    let e = ge(op, cx);
    let n = outer * inner;
    let mut idx = gpu.alloc_zeros::<u64>(n).map_err(&e)?;
    brainstacks_kernels::reduce::cuda::arg_reduce_f32(gpu, aop, f32_of(op, cx)?, outer, size, inner, &mut idx).map_err(&e)?;
    Ok(wrap(gpu, CudaBuf::I64(u64_to_i64(gpu, &idx, n).map_err(&e)?), out_shape))
}

/// Reinterprets indices (all below 2^63) as i64 with one device copy.
fn u64_to_i64(gpu: &GpuContext, idx: &CudaSlice<u64>, n: usize) -> std::result::Result<CudaSlice<i64>, GpuError> {
    if n == 0 {
        return gpu.alloc_zeros::<i64>(0);
    }
    // SAFETY: u64 and i64 have the same size and every bit pattern is valid for both.
    let view = unsafe { idx.transmute::<i64>(n) }.ok_or_else(|| GpuError::Invalid { op: "argmax", msg: "index buffer too short".into() })?;
    driver!(gpu, "copying indices", gpu.stream().clone_dtod(&view))
}

// ---- row ops ------------------------------------------------------------------------------

/// Softmax of an f32 tensor along `dim` (the kernel works on rows; another dim is moved last).
pub(crate) fn softmax(t: &Tensor, dim: usize) -> Result<Tensor> {
    const OP: &str = "softmax";
    let last = t.rank() - 1;
    if dim != last {
        return softmax(&t.transpose(dim, last)?, last)?.transpose(dim, last)?.contiguous();
    }
    let x = dense(OP, t)?;
    let c = first(OP, &x)?;
    let gpu = c.gpu();
    let e = ge(OP, c);
    let cols = t.shape()[last];
    let rows = t.shape()[..last].iter().product();
    let mut y = gpu.alloc_zeros::<f32>(x.elem_count()).map_err(&e)?;
    brainstacks_kernels::softmax::cuda::softmax_f32_fwd(gpu, f32_of(OP, c)?, &mut y, rows, cols).map_err(&e)?;
    Ok(wrap(gpu, CudaBuf::F32(y), t.shape()))
}

/// RMS norm of an f32 tensor over its last dim (`d`), `weight [d]` f32 on the same device.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, d: usize, eps: f64) -> Result<Tensor> {
    const OP: &str = "rms_norm";
    let c0 = first(OP, x)?;
    on(OP, weight, c0.device())?;
    let (xd, wd) = (dense(OP, x)?, dense(OP, weight)?);
    let (cx, cw) = (first(OP, &xd)?, first(OP, &wd)?);
    let gpu = cx.gpu();
    let e = ge(OP, cx);
    let rows = x.shape()[..x.rank() - 1].iter().product();
    let mut y = gpu.alloc_zeros::<f32>(x.elem_count()).map_err(&e)?;
    brainstacks_kernels::rms_norm::cuda::rms_norm_f32_fwd(gpu, f32_of(OP, cx)?, f32_of(OP, cw)?, &mut y, rows, d, eps)
        .map_err(&e)?;
    Ok(wrap(gpu, CudaBuf::F32(y), x.shape()))
}

/// RoPE of `x [..., T, D]` (f32 or bf16) with tables `[T, D/2]` of the same dtype and device.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    use brainstacks_kernels::rope::cuda::{self as rk, RopeShape};
    const OP: &str = "rope";
    let c0 = first(OP, x)?;
    for table in [cos, sin] {
        on(OP, table, c0.device())?;
        if table.dtype() != x.dtype() {
            return Err(Error::Device {
                op: OP,
                device: c0.device(),
                msg: format!("on CUDA the tables must have the dtype of x ({}), not {}", x.dtype(), table.dtype()),
            });
        }
    }
    let r = x.rank();
    let (t, d) = (x.shape()[r - 2], x.shape()[r - 1]);
    let batch = x.shape()[..r - 2].iter().product();
    let shape = RopeShape::contiguous(batch, t, d);
    let (xd, cd, sd) = (dense(OP, x)?, dense(OP, cos)?, dense(OP, sin)?);
    let (cx, cc, cs) = (first(OP, &xd)?, first(OP, &cd)?, first(OP, &sd)?);
    let gpu = cx.gpu();
    let e = ge(OP, cx);
    let n = x.elem_count();
    let buf = match (cx.buf(), cc.buf(), cs.buf()) {
        (CudaBuf::F32(xv), CudaBuf::F32(cv), CudaBuf::F32(sv)) => {
            let mut y = gpu.alloc_zeros::<f32>(n).map_err(&e)?;
            rk::rope_f32_fwd(gpu, xv, shape, cv, sv, &mut y).map_err(&e)?;
            CudaBuf::F32(y)
        }
        (CudaBuf::BF16(xv), CudaBuf::BF16(cv), CudaBuf::BF16(sv)) => {
            let mut y = gpu.alloc_zeros::<u16>(n).map_err(&e)?;
            rk::rope_bf16_fwd(gpu, xv, shape, cv, sv, &mut y).map_err(&e)?;
            CudaBuf::BF16(y)
        }
        (b, _, _) => return Err(dtype_error(OP, b.dtype(), cx.device(), true)),
    };
    Ok(wrap(gpu, buf, x.shape()))
}

/// Embedding rows of `table [V, D]` (f32 or bf16) for i64 `ids` on the same device.
pub(crate) fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    const OP: &str = "embedding";
    let c0 = first(OP, table)?;
    i64_of(OP, on(OP, ids, c0.device())?)?;
    let (v, d) = (table.shape()[0], table.shape()[1]);
    let (td, id) = (dense(OP, table)?, dense(OP, ids)?);
    let mut shape = ids.shape().to_vec();
    shape.push(d);
    lookup_rows(OP, first(OP, &td)?, v, d, i64_of(OP, first(OP, &id)?)?, &shape)
}

/// Rows `ids` of a dense `table` of `rows` rows of `row` elements (f32 or bf16), through the
/// embedding-lookup kernels (which check every id against `rows`), shaped `shape`.
pub(super) fn lookup_rows(
    op: &'static str,
    table: &CudaStorage,
    rows: usize,
    row: usize,
    ids: &CudaSlice<i64>,
    shape: &[usize],
) -> Result<Tensor> {
    use brainstacks_kernels::embedding::cuda as ek;
    let gpu = table.gpu();
    let e = ge(op, table);
    let n = ids.len() * row;
    let buf = match table.buf() {
        CudaBuf::F32(w) => {
            let mut y = gpu.alloc_zeros::<f32>(n).map_err(&e)?;
            ek::embedding_f32_fwd(gpu, w, rows, row, ids, &mut y).map_err(&e)?;
            CudaBuf::F32(y)
        }
        CudaBuf::BF16(w) => {
            let mut y = gpu.alloc_zeros::<u16>(n).map_err(&e)?;
            ek::embedding_bf16_fwd(gpu, w, rows, row, ids, &mut y).map_err(&e)?;
            CudaBuf::BF16(y)
        }
        b => return Err(dtype_error(op, b.dtype(), table.device(), false)),
    };
    Ok(wrap(gpu, buf, shape))
}

/// Validates cross-entropy operands on CUDA: f32 logits `[N, C]`, i64 targets `[N]`.
fn ce_operands(op: &'static str, logits: &Tensor, targets: &Tensor) -> Result<(Tensor, Tensor, usize, usize)> {
    let c0 = first(op, logits)?;
    on(op, targets, c0.device())?;
    if logits.rank() != 2 || targets.rank() != 1 || targets.shape()[0] != logits.shape()[0] {
        return Err(Error::shape(op, logits.shape(), targets.shape(), "logits must be [N, C] and targets [N]"));
    }
    f32_of(op, c0)?;
    i64_of(op, first(op, targets)?)?;
    Ok((dense(op, logits)?, dense(op, targets)?, logits.shape()[0], logits.shape()[1]))
}

/// Mean cross-entropy (`grad = false`, a rank-0 f32 tensor) or its gradient `[N, C]` (`grad =
/// true`, the backward kernel with `dloss = 1`).
pub(crate) fn cross_entropy(logits: &Tensor, targets: &Tensor, ignore_index: Option<i64>, grad: bool) -> Result<Tensor> {
    use brainstacks_kernels::cross_entropy::cuda::{self as ck, Logits};
    let op = if grad { "cross_entropy_grad" } else { "cross_entropy" };
    let (x, tg, rows, classes) = ce_operands(op, logits, targets)?;
    let (cx, ct) = (first(op, &x)?, first(op, &tg)?);
    let gpu = cx.gpu();
    let e = ge(op, cx);
    let (xv, tv) = (f32_of(op, cx)?, i64_of(op, ct)?);
    let shape = Logits::contiguous(rows, classes);
    let mut loss = gpu.alloc_zeros::<f32>(1).map_err(&e)?;
    let mut kept = gpu.alloc_zeros::<u64>(1).map_err(&e)?;
    let mut lse = gpu.alloc_zeros::<f64>(rows).map_err(&e)?;
    ck::cross_entropy_f32_fwd(gpu, xv, shape, tv, ignore_index, &mut loss, &mut kept, &mut lse).map_err(&e)?;
    if !grad {
        return Ok(wrap(gpu, CudaBuf::F32(loss), &[]));
    }
    let one = gpu.htod(&[1f32]).map_err(&e)?;
    let mut dx = gpu.alloc_zeros::<f32>(rows * classes).map_err(&e)?;
    ck::cross_entropy_f32_bwd(gpu, xv, shape, tv, ignore_index, &lse, &kept, &one, &mut dx).map_err(&e)?;
    Ok(wrap(gpu, CudaBuf::F32(dx), &[rows, classes]))
}

/// Top-k along the last dim of an f32 tensor: values and I64 positions, shaped `shape`.
pub(crate) fn topk(x: &Tensor, k: usize, shape: &[usize]) -> Result<(Tensor, Tensor)> {
    const OP: &str = "topk";
    let c0 = first(OP, x)?;
    f32_of(OP, c0)?;
    let n = x.shape()[x.rank() - 1];
    let rows = x.shape()[..x.rank() - 1].iter().product::<usize>();
    let xd = dense(OP, x)?;
    let cx = first(OP, &xd)?;
    let gpu = cx.gpu();
    let e = ge(OP, cx);
    let mut values = gpu.alloc_zeros::<f32>(rows * k).map_err(&e)?;
    let mut indices = gpu.alloc_zeros::<i64>(rows * k).map_err(&e)?;
    brainstacks_kernels::topk::cuda::topk_f32(gpu, f32_of(OP, cx)?, rows, n, n, k, &mut values, &mut indices).map_err(&e)?;
    Ok((wrap(gpu, CudaBuf::F32(values), shape), wrap(gpu, CudaBuf::I64(indices), shape)))
}

// ---- matmul -------------------------------------------------------------------------------

/// Elements `offset ..` of `buf` that a `rows x cols` operand with strides `(rs, cs)` reaches, as
/// a buffer starting at the operand's first element: `buf` itself when `offset` is 0 (the
/// launchers take whole buffers, no offset), else a device copy of the reached range.
fn window<'a>(gpu: &GpuContext, buf: &'a CudaBuf, offset: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> std::result::Result<Window<'a>, GpuError> {
    if offset == 0 {
        return Ok(Window::Whole(buf));
    }
    let reach = if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    Ok(Window::Copy(buf.copy_range(gpu, offset, reach)?))
}

enum Window<'a> {
    Whole(&'a CudaBuf),
    Copy(CudaBuf),
}

impl std::ops::Deref for Window<'_> {
    type Target = CudaBuf;
    fn deref(&self) -> &CudaBuf {
        match self {
            Window::Whole(b) => b,
            Window::Copy(b) => b,
        }
    }
}

/// `lhs [batch.., m, k] x rhs [batch.., k, n]` (already broadcast to the same batch dims) on
/// CUDA: f32 through the strided f32 GEMM; bf16 through the tensor-core GEMM when each operand
/// has unit stride along its rows or columns and the kernel's alignment rules hold (else an
/// error: there is no silent widening).
///
/// Launches: a 2-D `rhs` broadcast over the batch with a `lhs` whose batch folds into its rows
/// runs as one GEMM; otherwise f32 runs the whole batch in one batched launch when its batch
/// dims reduce to at most two strided ones (attention's `[batch, heads, ..]` products, whatever
/// their strides), and one launch per entry only beyond that; bf16 runs one launch per entry.
pub(crate) fn matmul(lhs: &Tensor, rhs: &Tensor, m: usize, n: usize, k: usize, out_shape: &[usize]) -> Result<Tensor> {
    const OP: &str = "matmul";
    let dev = if lhs.device().is_cuda() { lhs.device() } else { rhs.device() };
    let (ca, cb) = (on(OP, lhs, dev)?, on(OP, rhs, dev)?);
    let gpu = ca.gpu();
    let e = ge(OP, ca);
    let dtype = lhs.dtype();
    if !matches!(dtype, DType::F32 | DType::BF16) {
        return Err(dtype_error(OP, dtype, dev, true));
    }
    let r = lhs.rank();
    let batch: usize = out_shape[..r - 2].iter().product();
    // Fold the batch into the rows when rhs does not vary over it and lhs's rows stack evenly.
    let rhs_shared = rhs.strides()[..r - 2].iter().zip(&rhs.shape()[..r - 2]).all(|(&s, &d)| s == 0 || d == 1);
    let folded = if batch > 1 && rhs_shared { lhs.layout().reshape(&[batch * m, k]) } else { None };
    let mut out = CudaBuf::zeros(gpu, dtype, batch * m * n).map_err(&e)?;
    // f32 in one launch: the folded product, or the whole batch when its dims reduce to two
    // strided ones within one launch's limits (65535 entries, 31-bit strides); otherwise the
    // per-entry loop below. (rows, A's offset and strides, batch) of that launch:
    let (a_st, b_st) = (lhs.strides(), rhs.strides());
    let one_launch = match &folded {
        Some(l) => Some((batch * m, l.offset(), (l.strides()[0], l.strides()[1]), GemmBatch::ONE)),
        None => two_batch_dims(&out_shape[..r - 2], &a_st[..r - 2], &b_st[..r - 2], m * n)
            .filter(GemmBatch::fits_one_launch)
            .map(|b| (m, lhs.layout().offset(), (a_st[r - 2], a_st[r - 1]), b)),
    };
    if let (Some((rows, a_off, a_strides, gemm_batch)), CudaBuf::F32(av), CudaBuf::F32(bv), CudaBuf::F32(cv)) =
        (one_launch, ca.buf(), cb.buf(), &mut out)
    {
        let (a, b) = (av.slice(a_off..), bv.slice(rhs.layout().offset()..));
        f32_gemm(gpu, rows, n, k, gemm_batch, &a, a_strides, &b, (b_st[r - 2], b_st[r - 1]), &mut cv.as_view_mut()).map_err(&e)?;
        return Ok(wrap(gpu, out, out_shape));
    }
    let (groups, gm) = if folded.is_some() { (1, batch * m) } else { (batch, m) };
    let entry = |t: &Tensor, b: usize| batch_entry(t.layout(), b);
    for g in 0..groups {
        let (a_off, a_rs, a_cs) = match &folded {
            Some(l) => (l.offset(), l.strides()[0], l.strides()[1]),
            None => entry(lhs, g),
        };
        let (b_off, b_rs, b_cs) = entry(rhs, g);
        match (ca.buf(), cb.buf(), &mut out) {
            (CudaBuf::F32(av), CudaBuf::F32(bv), CudaBuf::F32(cv)) => {
                // One entry at a time (more than two batch dims that do not merge): views, no copies.
                let mut c = cv.slice_mut(g * gm * n..(g + 1) * gm * n);
                let one = GemmBatch::ONE;
                let (a, b) = (av.slice(a_off..), bv.slice(b_off..));
                f32_gemm(gpu, gm, n, k, one, &a, (a_rs, a_cs), &b, (b_rs, b_cs), &mut c).map_err(&e)?;
            }
            (CudaBuf::BF16(_), CudaBuf::BF16(_), CudaBuf::BF16(_)) => {
                let a = window(gpu, ca.buf(), a_off, gm, k, a_rs, a_cs).map_err(&e)?;
                let b = window(gpu, cb.buf(), b_off, k, n, b_rs, b_cs).map_err(&e)?;
                let (CudaBuf::BF16(av), CudaBuf::BF16(bv)) = (&*a, &*b) else { unreachable!("bf16 windows of bf16 buffers") };
                if groups == 1 {
                    let CudaBuf::BF16(cv) = &mut out else { unreachable!("bf16 output") };
                    bf16_gemm(gpu, gm, n, k, av, (a_rs, a_cs), bv, (b_rs, b_cs), cv).map_err(&e)?;
                } else {
                    let mut c = CudaBuf::zeros(gpu, dtype, gm * n).map_err(&e)?;
                    let CudaBuf::BF16(cv) = &mut c else { unreachable!("bf16 zeros") };
                    bf16_gemm(gpu, gm, n, k, av, (a_rs, a_cs), bv, (b_rs, b_cs), cv).map_err(&e)?;
                    copy_into(gpu, &c, &mut out, g * gm * n).map_err(&e)?;
                }
            }
            _ => return Err(Error::DTypeMismatch { op: OP, lhs: lhs.dtype(), rhs: rhs.dtype() }),
        }
    }
    Ok(wrap(gpu, out, out_shape))
}

/// The f32 GEMM through the batched launcher; `c` is dense (`ldc = n`, entries `m n` apart).
#[allow(clippy::too_many_arguments)]
fn f32_gemm(
    gpu: &GpuContext,
    m: usize,
    n: usize,
    k: usize,
    batch: GemmBatch,
    a: &CudaView<'_, f32>,
    (a_rs, a_cs): (usize, usize),
    b: &CudaView<'_, f32>,
    (b_rs, b_cs): (usize, usize),
    c: &mut CudaViewMut<'_, f32>,
) -> std::result::Result<(), GpuError> {
    use brainstacks_kernels::gemm::cuda::{Strides as GS, gemm_f32_batched};
    gemm_f32_batched(gpu, m, n, k, batch, a, GS { rs: a_rs, cs: a_cs }, b, GS { rs: b_rs, cs: b_cs }, c, n)
}

/// The batch dims `shape` of a matmul, with the operands' strides along them, as at most two
/// strided dims (`outer`, `inner`) of the batched GEMM, for a dense output whose entries are
/// `entry` elements apart; `None` when more than two remain. Dims of size 1 drop out, and a dim
/// merges into the next one when both operands step over it exactly as over the whole next one
/// (stride = next stride x next size, broadcast 0 included), so entry `zo * inner + zi` is the
/// row-major batch entry.
fn two_batch_dims(shape: &[usize], a: &[usize], b: &[usize], entry: usize) -> Option<GemmBatch> {
    // (size, a stride, b stride), outermost first, merged from the innermost outwards.
    let mut dims: Vec<(usize, usize, usize)> = Vec::new();
    for d in (0..shape.len()).rev() {
        if shape[d] == 1 {
            continue;
        }
        match dims.last_mut() {
            Some(last) if a[d] == last.1 * last.0 && b[d] == last.2 * last.0 => last.0 *= shape[d],
            _ => dims.push((shape[d], a[d], b[d])),
        }
    }
    let (outer, inner) = match dims.as_slice() {
        [] => ((1, 0, 0), (1, 0, 0)),
        [i] => ((1, 0, 0), *i),
        [i, o] => (*o, *i),
        _ => return None,
    };
    Some(GemmBatch { outer: outer.0, inner: inner.0, a: (outer.1, inner.1), b: (outer.2, inner.2), c: entry })
}

/// `(offset, row stride, column stride)` of batch entry `b` (row-major over the batch dims) of a
/// `[batch.., rows, cols]` layout.
fn batch_entry(l: &Layout, b: usize) -> (usize, usize, usize) {
    let (sh, st, r) = (l.shape(), l.strides(), l.rank());
    let mut off = l.offset();
    let mut rem = b;
    for d in (0..r - 2).rev() {
        off += (rem % sh[d]) * st[d];
        rem /= sh[d];
    }
    (off, st[r - 2], st[r - 1])
}

/// Picks the bf16 GEMM layout from the operands' strides (unit stride along rows = `N`, along
/// columns = `T`); `TT` and non-unit strides are errors.
#[allow(clippy::too_many_arguments)]
fn bf16_gemm(
    gpu: &GpuContext,
    m: usize,
    n: usize,
    k: usize,
    a: &CudaSlice<u16>,
    (a_rs, a_cs): (usize, usize),
    b: &CudaSlice<u16>,
    (b_rs, b_cs): (usize, usize),
    c: &mut CudaSlice<u16>,
) -> std::result::Result<(), GpuError> {
    use brainstacks_kernels::gemm::cuda::{GemmDims, gemm_bf16_to_bf16};
    let Some((layout, lda, ldb)) = bf16_layout(m, n, k, (a_rs, a_cs), (b_rs, b_cs)) else {
        return Err(GpuError::Invalid {
            op: "matmul",
            msg: format!(
                "bf16 matmul on CUDA needs unit stride along the rows or columns of each operand, and not both transposed (A strides ({a_rs}, {a_cs}), B strides ({b_rs}, {b_cs}))"
            ),
        });
    };
    let d = GemmDims { m, n, k, lda, ldb, ldc: n };
    gemm_bf16_to_bf16(gpu, layout, d, a, b, c)
}

/// The bf16 GEMM layout and leading dimensions `(layout, lda, ldb)` for `A [m, k]` with strides
/// `(a_rs, a_cs)` and `B [k, n]` with `(b_rs, b_cs)`: unit stride along the rows of an operand is
/// `N`, along its columns `T`; `None` when no layout fits (both transposed, or no unit stride).
fn bf16_layout(
    m: usize,
    n: usize,
    k: usize,
    (a_rs, a_cs): (usize, usize),
    (b_rs, b_cs): (usize, usize),
) -> Option<(brainstacks_kernels::gemm::cuda::Bf16Layout, usize, usize)> {
    use brainstacks_kernels::gemm::cuda::Bf16Layout;
    // A dim of length <= 1 never steps, so its stride is free: it counts as unit, and as a
    // leading dimension it may be raised to the row length (never lowered: a broadcast operand
    // with stride 0 then fails the launcher's check instead of reading past its buffer).
    let unit = |s: usize, len: usize| s == 1 || len <= 1;
    let ld = |s: usize, steps: usize, cols: usize| if steps <= 1 { s.max(cols) } else { s };
    let mut candidates = Vec::with_capacity(3);
    if unit(a_cs, k) && unit(b_cs, n) {
        candidates.push((Bf16Layout::Nn, ld(a_rs, m, k), ld(b_rs, k, n)));
    }
    if unit(a_cs, k) && unit(b_rs, k) {
        candidates.push((Bf16Layout::Nt, ld(a_rs, m, k), ld(b_cs, n, k)));
    }
    if unit(a_rs, m) && unit(b_cs, n) {
        candidates.push((Bf16Layout::Tn, ld(a_cs, k, m), ld(b_rs, k, n)));
    }
    // Prefer a candidate meeting the kernel's alignment rules; else the first one, whose launch
    // then fails with the launcher's own message.
    let aligned = |&&(l, lda, ldb): &&(Bf16Layout, usize, usize)| {
        lda.is_multiple_of(8) && ldb.is_multiple_of(8) && (l == Bf16Layout::Tn || k.is_multiple_of(8))
    };
    candidates.iter().find(aligned).or(candidates.first()).copied()
}

/// Copies `src` into `dst` at element `at` (same dtype).
pub(super) fn copy_into(gpu: &GpuContext, src: &CudaBuf, dst: &mut CudaBuf, at: usize) -> std::result::Result<(), GpuError> {
    let len = src.len();
    if len == 0 {
        return Ok(());
    }
    macro_rules! copy {
        ($s:expr, $d:expr) => {{
            let mut view = $d.slice_mut(at..at + len);
            driver!(gpu, "copying a GEMM result", gpu.stream().memcpy_dtod($s, &mut view))
        }};
    }
    match (src, dst) {
        (CudaBuf::F32(s), CudaBuf::F32(d)) => copy!(s, d),
        (CudaBuf::BF16(s), CudaBuf::BF16(d)) => copy!(s, d),
        _ => Err(GpuError::Invalid { op: "matmul", msg: "internal: result dtype mismatch".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainstacks_kernels::gemm::cuda::Bf16Layout;

    #[test]
    fn bf16_layout_follows_the_unit_strides() {
        // y = x W^T: x [m, k] row-major, W [n, k] row-major viewed as [k, n] (strides (1, k)).
        assert_eq!(bf16_layout(5, 24, 16, (16, 1), (1, 16)), Some((Bf16Layout::Nt, 16, 16)));
        // Plain [m, k] x [k, n].
        assert_eq!(bf16_layout(5, 24, 16, (16, 1), (24, 1)), Some((Bf16Layout::Nn, 16, 24)));
        // A given transposed: A = At^T with At [k, m] row-major (strides (1, m)).
        assert_eq!(bf16_layout(32, 24, 5, (1, 32), (24, 1)), Some((Bf16Layout::Tn, 32, 24)));
        // Both transposed: no layout.
        assert_eq!(bf16_layout(32, 24, 16, (1, 32), (1, 16)), None);
        // n = 1 with B transposed: Nn would need ldb = 1; the aligned Nt is chosen.
        assert_eq!(bf16_layout(4, 1, 16, (16, 1), (1, 16)), Some((Bf16Layout::Nt, 16, 16)));
        // A broadcast row (stride 0 over m > 1) keeps its 0 and fails in the launcher, not here.
        assert_eq!(bf16_layout(4, 8, 16, (0, 1), (8, 1)), Some((Bf16Layout::Nn, 0, 8)));
        // Unaligned: the first structural fit is returned for the launcher to reject.
        assert_eq!(bf16_layout(4, 9, 12, (12, 1), (9, 1)), Some((Bf16Layout::Nn, 12, 9)));
    }

    #[test]
    fn batch_entries_step_through_the_batch_dims() {
        // [2, 3, 4, 5] contiguous: entry b starts at b * 20.
        let l = Layout::contiguous(&[2, 3, 4, 5]);
        assert_eq!(batch_entry(&l, 0), (0, 5, 1));
        assert_eq!(batch_entry(&l, 4), (80, 5, 1));
        // A broadcast batch dim (stride 0) and an offset.
        let l = Layout::new(vec![2, 3, 4, 5], vec![0, 20, 1, 4], 7);
        assert_eq!(batch_entry(&l, 4), (7 + 20, 1, 4));
        assert_eq!(batch_entry(&l, 5), (7 + 40, 1, 4));
    }
}
