//! Launchers of `rope.ptx` (f32 and bf16). The only code that knows the entries' parameter
//! order. bf16 buffers are `CudaSlice<u16>` holding the raw bits.

use crate::launch::{CudaSlice, GpuContext, GpuError, grid_1d};
use crate::registry::{
    EntrySpec, ModuleId, ROPE_BF16_BWD, ROPE_BF16_FWD, ROPE_F32_BWD, ROPE_F32_FWD,
};

/// Shape and strides of the rotated input: `batch` x `t` x `d` (d even), element `[b, p, i]` at
/// `b * batch_stride + p * pos_stride + i` of the input buffer (head dim contiguous). The output
/// is always contiguous `[batch, t, d]`; the tables are contiguous `[t, d / 2]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RopeShape {
    pub batch: usize,
    pub t: usize,
    pub d: usize,
    pub batch_stride: usize,
    pub pos_stride: usize,
}

impl RopeShape {
    /// A contiguous `[batch, t, d]` input.
    pub fn contiguous(batch: usize, t: usize, d: usize) -> Self {
        Self {
            batch,
            t,
            d,
            batch_stride: t * d,
            pos_stride: d,
        }
    }
}

fn invalid(op: &'static str, msg: String) -> GpuError {
    GpuError::Invalid { op, msg }
}

/// Checks every length and that the last element of the view is inside `x`; returns the number of
/// pairs (0 when there is nothing to do).
fn check(
    op: &'static str,
    s: &RopeShape,
    x_len: usize,
    cos_len: usize,
    sin_len: usize,
    y_len: usize,
) -> Result<u64, GpuError> {
    if !s.d.is_multiple_of(2) {
        return Err(invalid(op, format!("head dim {} is odd", s.d)));
    }
    let half = s.d / 2;
    let table = s.t.checked_mul(half);
    if table != Some(cos_len) || table != Some(sin_len) {
        return Err(invalid(
            op,
            format!(
                "tables hold {cos_len} and {sin_len} values, not {} x {half}",
                s.t
            ),
        ));
    }
    let out = s.batch.checked_mul(s.t).and_then(|r| r.checked_mul(s.d));
    if out != Some(y_len) {
        return Err(invalid(
            op,
            format!(
                "output holds {y_len} values, not {} x {} x {}",
                s.batch, s.t, s.d
            ),
        ));
    }
    if y_len == 0 {
        return Ok(0);
    }
    let last = (s.batch - 1)
        .checked_mul(s.batch_stride)
        .and_then(|a| {
            (s.t - 1)
                .checked_mul(s.pos_stride)
                .and_then(|b| a.checked_add(b))
        })
        .and_then(|a| a.checked_add(s.d - 1));
    match last {
        Some(l) if l < x_len => Ok((y_len / 2) as u64),
        _ => Err(invalid(
            op,
            format!("the view {s:?} reaches past the input's {x_len} elements"),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<T: cudarc::driver::DeviceRepr>(
    gpu: &GpuContext,
    entry: &'static EntrySpec,
    x: &CudaSlice<T>,
    s: RopeShape,
    cos: &CudaSlice<T>,
    sin: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
) -> Result<(), GpuError> {
    let pairs = check(entry.name, &s, x.len(), cos.len(), sin.len(), y.len())?;
    if pairs == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Rope, entry)?;
    let (batch, t, half) = (s.batch as u64, s.t as u64, (s.d / 2) as u64);
    let (sb, st) = (s.batch_stride as u64, s.pos_stride as u64);
    let mut l = gpu.launch(&f, entry);
    // rope_{f32,bf16}_{fwd,bwd}(x, y, cos, sin, batch, t, half, batch_stride, pos_stride), all .u64
    l.arg(x)
        .arg(&mut *y)
        .arg(cos)
        .arg(sin)
        .arg(&batch)
        .arg(&t)
        .arg(&half)
        .arg(&sb)
        .arg(&st);
    // SAFETY: arguments match the .param list; `check` proved every index the kernel forms is
    // inside x (the view), y (batch t d), cos and sin (t half).
    unsafe { l.launch(grid_1d(pairs)) }
}

/// `y = rope(x)` (mirrors `cpu::rope`; equal to the f64 oracle rounded to f32).
pub fn rope_f32_fwd(
    gpu: &GpuContext,
    x: &CudaSlice<f32>,
    shape: RopeShape,
    cos: &CudaSlice<f32>,
    sin: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    run(gpu, &ROPE_F32_FWD, x, shape, cos, sin, y)
}

/// `dx = rope_backward(dy)` (mirrors `cpu::rope_backward`); `shape` describes the `dy` view.
pub fn rope_f32_bwd(
    gpu: &GpuContext,
    dy: &CudaSlice<f32>,
    shape: RopeShape,
    cos: &CudaSlice<f32>,
    sin: &CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    run(gpu, &ROPE_F32_BWD, dy, shape, cos, sin, dx)
}

/// bf16 `y = rope(x)` (raw bits; tables bf16 too, as HF casts them to the activation dtype):
/// the f64 oracle on the bf16 values, rounded once to bf16.
pub fn rope_bf16_fwd(
    gpu: &GpuContext,
    x: &CudaSlice<u16>,
    shape: RopeShape,
    cos: &CudaSlice<u16>,
    sin: &CudaSlice<u16>,
    y: &mut CudaSlice<u16>,
) -> Result<(), GpuError> {
    run(gpu, &ROPE_BF16_FWD, x, shape, cos, sin, y)
}

/// bf16 `dx = rope_backward(dy)`, as [`rope_bf16_fwd`].
pub fn rope_bf16_bwd(
    gpu: &GpuContext,
    dy: &CudaSlice<u16>,
    shape: RopeShape,
    cos: &CudaSlice<u16>,
    sin: &CudaSlice<u16>,
    dx: &mut CudaSlice<u16>,
) -> Result<(), GpuError> {
    run(gpu, &ROPE_BF16_BWD, dy, shape, cos, sin, dx)
}
