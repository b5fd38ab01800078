//! Launchers of the f32 RMS norm forward and backward (`rms_norm.ptx`). The only code that knows
//! each entry's parameter order.

use super::DW_CHUNK_ROWS;
use crate::launch::{
    BLOCK_1D, CudaSlice, GpuContext, GpuError, LaunchConfig, MAX_BLOCKS_1D, grid_1d,
};
use crate::registry::{
    ModuleId, RMS_NORM_F32_BWD, RMS_NORM_F32_BWD_DW_PARTIAL, RMS_NORM_F32_BWD_DW_REDUCE,
    RMS_NORM_F32_FWD,
};

fn check(op: &'static str, what: &str, len: usize, want: Option<usize>) -> Result<(), GpuError> {
    if Some(len) != want {
        return Err(GpuError::Invalid {
            op,
            msg: format!("{what} holds {len} values, expected {want:?}"),
        });
    }
    Ok(())
}

fn rows_config(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((rows as u64).clamp(1, MAX_BLOCKS_1D) as u32, 1, 1),
        block_dim: (BLOCK_1D, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `y = x / sqrt(mean(x^2) + eps) * w` per row of a rows x dim array (mirrors `cpu::rms_norm`).
pub fn rms_norm_f32_fwd(
    gpu: &GpuContext,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
    rows: usize,
    dim: usize,
    eps: f64,
) -> Result<(), GpuError> {
    let op = "rms_norm_f32_fwd";
    let n = rows.checked_mul(dim);
    check(op, "x", x.len(), n)?;
    check(op, "y", y.len(), n)?;
    check(op, "weight", w.len(), Some(dim))?;
    if rows == 0 || dim == 0 {
        return Ok(());
    }
    let (r, d) = (rows as u64, dim as u64);
    let f = gpu.function(ModuleId::RmsNorm, &RMS_NORM_F32_FWD)?;
    let mut l = gpu.launch(&f, &RMS_NORM_F32_FWD);
    // rms_norm_f32_fwd(x, w, y, rows, dim, eps .f64)
    l.arg(x).arg(w).arg(&mut *y).arg(&r).arg(&d).arg(&eps);
    // SAFETY: arguments match the .param list; x and y hold rows * dim values, w holds dim.
    unsafe { l.launch(rows_config(rows)) }
}

/// The backward of [`rms_norm_f32_fwd`]: writes `dx` (rows x dim) and `dw` (dim), mirroring
/// `cpu::rms_norm_bwd`. `dw` is a two-stage fixed-order reduction over rows (chunks of
/// [`DW_CHUNK_ROWS`], then the chunks in order); scratch buffers are allocated per call.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_f32_bwd(
    gpu: &GpuContext,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
    dw: &mut CudaSlice<f32>,
    rows: usize,
    dim: usize,
    eps: f64,
) -> Result<(), GpuError> {
    let op = "rms_norm_f32_bwd";
    let n = rows.checked_mul(dim);
    check(op, "x", x.len(), n)?;
    check(op, "dy", dy.len(), n)?;
    check(op, "dx", dx.len(), n)?;
    check(op, "weight", w.len(), Some(dim))?;
    check(op, "dweight", dw.len(), Some(dim))?;
    if dim == 0 {
        return Ok(());
    }
    let chunks = rows.div_ceil(DW_CHUNK_ROWS);
    let (r, d, c) = (rows as u64, dim as u64, chunks as u64);
    let mut partial = gpu.alloc_zeros::<f64>(chunks * dim)?;
    if rows > 0 {
        let mut rinv = gpu.alloc_zeros::<f64>(rows)?;
        let f = gpu.function(ModuleId::RmsNorm, &RMS_NORM_F32_BWD)?;
        let mut l = gpu.launch(&f, &RMS_NORM_F32_BWD);
        // rms_norm_f32_bwd(x, w, dy, dx, rinv, rows, dim, eps .f64)
        l.arg(x)
            .arg(w)
            .arg(dy)
            .arg(&mut *dx)
            .arg(&mut rinv)
            .arg(&r)
            .arg(&d)
            .arg(&eps);
        // SAFETY: arguments match the .param list; x, dy, dx hold rows * dim values, w dim, rinv rows.
        unsafe { l.launch(rows_config(rows)) }?;

        let f = gpu.function(ModuleId::RmsNorm, &RMS_NORM_F32_BWD_DW_PARTIAL)?;
        let cfg = LaunchConfig {
            grid_dim: (
                (d.div_ceil(BLOCK_1D as u64)).clamp(1, MAX_BLOCKS_1D) as u32,
                c.clamp(1, 65_535) as u32,
                1,
            ),
            block_dim: (BLOCK_1D, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = gpu.launch(&f, &RMS_NORM_F32_BWD_DW_PARTIAL);
        // rms_norm_f32_bwd_dw_partial(x, dy, rinv, partial, rows, dim)
        l.arg(x)
            .arg(dy)
            .arg(&rinv)
            .arg(&mut partial)
            .arg(&r)
            .arg(&d);
        // SAFETY: arguments match the .param list; partial holds ceil(rows / 64) * dim values.
        unsafe { l.launch(cfg) }?;
    }
    let f = gpu.function(ModuleId::RmsNorm, &RMS_NORM_F32_BWD_DW_REDUCE)?;
    let mut l = gpu.launch(&f, &RMS_NORM_F32_BWD_DW_REDUCE);
    // rms_norm_f32_bwd_dw_reduce(partial, dw, chunks, dim); zero chunks (rows == 0) writes zeros
    l.arg(&partial).arg(&mut *dw).arg(&c).arg(&d);
    // SAFETY: arguments match the .param list; partial holds chunks * dim values, dw dim.
    unsafe { l.launch(grid_1d(d)) }
}
