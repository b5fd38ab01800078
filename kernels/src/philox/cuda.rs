//! Launchers of the Philox streams (`philox.ptx`). The only code that knows each entry's
//! parameter order. Same stream layout and results as `cpu.rs`, bit for bit.

use crate::launch::{CudaSlice, GpuContext, GpuError, grid_1d};
use crate::registry::{
    ModuleId, PHILOX_NORMAL_F32, PHILOX_NORMAL_F64, PHILOX_U32, PHILOX_UNIFORM_F32,
};

fn check_range(op: &'static str, offset: u64, n: u64) -> Result<(), GpuError> {
    if offset.checked_add(n).is_none() {
        return Err(GpuError::Invalid {
            op,
            msg: format!("offset {offset} + length {n} overflows u64"),
        });
    }
    Ok(())
}

/// Raw 32-bit words for elements `offset .. offset + out.len()` (mirrors `cpu::fill_u32`).
pub fn fill_u32(
    gpu: &GpuContext,
    seed: u64,
    offset: u64,
    out: &mut CudaSlice<u32>,
) -> Result<(), GpuError> {
    let n = out.len() as u64;
    check_range("philox_u32", offset, n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Philox, &PHILOX_U32)?;
    let cfg = grid_1d(n);
    let mut l = gpu.launch(&f, &PHILOX_U32);
    // philox_u32(out .u64, n .u64, seed .u64, offset .u64)
    l.arg(&mut *out).arg(&n).arg(&seed).arg(&offset);
    // SAFETY: arguments match the .param list above; the kernel writes out[0..n) only.
    unsafe { l.launch(cfg) }
}

/// Uniform f32 in (low, high) for elements `offset .. offset + out.len()` (mirrors
/// `cpu::fill_uniform_f32`).
pub fn fill_uniform_f32(
    gpu: &GpuContext,
    seed: u64,
    offset: u64,
    low: f32,
    high: f32,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let n = out.len() as u64;
    check_range("philox_uniform_f32", offset, n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Philox, &PHILOX_UNIFORM_F32)?;
    let cfg = grid_1d(n);
    let mut l = gpu.launch(&f, &PHILOX_UNIFORM_F32);
    // philox_uniform_f32(out .u64, n .u64, seed .u64, offset .u64, low .f32, high .f32)
    l.arg(&mut *out)
        .arg(&n)
        .arg(&seed)
        .arg(&offset)
        .arg(&low)
        .arg(&high);
    // SAFETY: arguments match the .param list above; the kernel writes out[0..n) only.
    unsafe { l.launch(cfg) }
}

/// Normal(mean, std) rounded once to f32, for elements `offset .. offset + out.len()` (mirrors
/// `cpu::fill_normal_f32`, bit for bit).
pub fn fill_normal_f32(
    gpu: &GpuContext,
    seed: u64,
    offset: u64,
    mean: f32,
    std: f32,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let n = out.len() as u64;
    check_range("philox_normal_f32", offset, n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Philox, &PHILOX_NORMAL_F32)?;
    let cfg = grid_1d(n);
    let mut l = gpu.launch(&f, &PHILOX_NORMAL_F32);
    // philox_normal_f32(out .u64, n .u64, seed .u64, offset .u64, mean .f32, std .f32)
    l.arg(&mut *out)
        .arg(&n)
        .arg(&seed)
        .arg(&offset)
        .arg(&mean)
        .arg(&std);
    // SAFETY: arguments match the .param list above; the kernel writes out[0..n) only.
    unsafe { l.launch(cfg) }
}

/// Normal(mean, std) as f64, for elements `offset .. offset + out.len()` (mirrors
/// `cpu::fill_normal_f64`, bit for bit).
pub fn fill_normal_f64(
    gpu: &GpuContext,
    seed: u64,
    offset: u64,
    mean: f64,
    std: f64,
    out: &mut CudaSlice<f64>,
) -> Result<(), GpuError> {
    let n = out.len() as u64;
    check_range("philox_normal_f64", offset, n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Philox, &PHILOX_NORMAL_F64)?;
    let cfg = grid_1d(n);
    let mut l = gpu.launch(&f, &PHILOX_NORMAL_F64);
    // philox_normal_f64(out .u64, n .u64, seed .u64, offset .u64, mean .f64, std .f64)
    l.arg(&mut *out)
        .arg(&n)
        .arg(&seed)
        .arg(&offset)
        .arg(&mean)
        .arg(&std);
    // SAFETY: arguments match the .param list above; the kernel writes out[0..n) only.
    unsafe { l.launch(cfg) }
}
