//! Launchers of the f32 softmax forward and backward over the last axis (`softmax.ptx`). The only
//! code that knows each entry's parameter order.

use crate::launch::{BLOCK_1D, CudaSlice, GpuContext, GpuError, LaunchConfig, MAX_BLOCKS_1D};
use crate::registry::{ModuleId, SOFTMAX_F32_BWD, SOFTMAX_F32_FWD};

fn check(op: &'static str, lens: &[usize], rows: usize, cols: usize) -> Result<(), GpuError> {
    let n = rows.checked_mul(cols);
    if let Some(&bad) = lens.iter().find(|&&l| Some(l) != n) {
        return Err(GpuError::Invalid {
            op,
            msg: format!("a buffer holds {bad} values, not {rows} x {cols}"),
        });
    }
    Ok(())
}

/// One block of 256 per row, grid-stride over rows.
fn rows_config(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((rows as u64).clamp(1, MAX_BLOCKS_1D) as u32, 1, 1),
        block_dim: (BLOCK_1D, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `y = softmax(x)` per row of a rows x cols array (mirrors `cpu::softmax_rows_f64`).
pub fn softmax_f32_fwd(
    gpu: &GpuContext,
    x: &CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
    rows: usize,
    cols: usize,
) -> Result<(), GpuError> {
    check("softmax_f32_fwd", &[x.len(), y.len()], rows, cols)?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let (r, c) = (rows as u64, cols as u64);
    let f = gpu.function(ModuleId::Softmax, &SOFTMAX_F32_FWD)?;
    let mut l = gpu.launch(&f, &SOFTMAX_F32_FWD);
    // softmax_f32_fwd(x, y, rows, cols)
    l.arg(x).arg(&mut *y).arg(&r).arg(&c);
    // SAFETY: arguments match the .param list; both buffers hold rows * cols values.
    unsafe { l.launch(rows_config(rows)) }
}

/// `dx = y (dy - sum(dy y))` per row (mirrors `cpu::softmax_bwd_rows_f64`).
pub fn softmax_f32_bwd(
    gpu: &GpuContext,
    y: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    dx: &mut CudaSlice<f32>,
    rows: usize,
    cols: usize,
) -> Result<(), GpuError> {
    check(
        "softmax_f32_bwd",
        &[y.len(), dy.len(), dx.len()],
        rows,
        cols,
    )?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let (r, c) = (rows as u64, cols as u64);
    let f = gpu.function(ModuleId::Softmax, &SOFTMAX_F32_BWD)?;
    let mut l = gpu.launch(&f, &SOFTMAX_F32_BWD);
    // softmax_f32_bwd(y, dy, dx, rows, cols)
    l.arg(y).arg(dy).arg(&mut *dx).arg(&r).arg(&c);
    // SAFETY: arguments match the .param list; all buffers hold rows * cols values.
    unsafe { l.launch(rows_config(rows)) }
}
