//! Launchers of the f32 <-> bf16 casts (`cast.ptx`). The only code that knows each entry's
//! parameter order. bf16 buffers are `CudaSlice<u16>` holding the raw bits.

use crate::launch::{CudaSlice, GpuContext, GpuError, grid_1d};
use crate::registry::{CAST_BF16_F32, CAST_F32_BF16, ModuleId};

fn check_len(op: &'static str, src: usize, dst: usize) -> Result<(), GpuError> {
    if src != dst {
        return Err(GpuError::Invalid {
            op,
            msg: format!("source has {src} elements, destination {dst}"),
        });
    }
    Ok(())
}

/// `dst[i] = bf16(src[i])` (mirrors `cpu::cast_f32_bf16`).
pub fn cast_f32_bf16(
    gpu: &GpuContext,
    src: &CudaSlice<f32>,
    dst: &mut CudaSlice<u16>,
) -> Result<(), GpuError> {
    check_len("cast_f32_bf16", src.len(), dst.len())?;
    let n = src.len() as u64;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Cast, &CAST_F32_BF16)?;
    let cfg = grid_1d(n);
    let mut l = gpu.launch(&f, &CAST_F32_BF16);
    // cast_f32_bf16(src .u64, dst .u64, n .u64)
    l.arg(src).arg(&mut *dst).arg(&n);
    // SAFETY: arguments match the .param list; both buffers hold n elements.
    unsafe { l.launch(cfg) }
}

/// `dst[i] = f32(src[i])` (mirrors `cpu::cast_bf16_f32`).
pub fn cast_bf16_f32(
    gpu: &GpuContext,
    src: &CudaSlice<u16>,
    dst: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    check_len("cast_bf16_f32", src.len(), dst.len())?;
    let n = src.len() as u64;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Cast, &CAST_BF16_F32)?;
    let cfg = grid_1d(n);
    let mut l = gpu.launch(&f, &CAST_BF16_F32);
    // cast_bf16_f32(src .u64, dst .u64, n .u64)
    l.arg(src).arg(&mut *dst).arg(&n);
    // SAFETY: arguments match the .param list; both buffers hold n elements.
    unsafe { l.launch(cfg) }
}
