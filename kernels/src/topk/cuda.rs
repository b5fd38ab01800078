//! Launcher of `topk.ptx`. The only code that knows the entry's parameter order.

use super::GPU_MAX_K;
use crate::launch::{CudaSlice, GpuContext, GpuError, LaunchConfig, MAX_BLOCKS_1D};
use crate::registry::{ModuleId, TOPK_F32};

/// Values and positions of the `k` top-ranked elements of each of `rows` rows of `n` elements;
/// row `r` is `x[r * row_stride .. r * row_stride + n]`. `values` and `indices` are contiguous
/// `rows` x `k`. Mirrors `cpu::topk` exactly (same order, ties and NaN rule).
#[allow(clippy::too_many_arguments)]
pub fn topk_f32(
    gpu: &GpuContext,
    x: &CudaSlice<f32>,
    rows: usize,
    n: usize,
    row_stride: usize,
    k: usize,
    values: &mut CudaSlice<f32>,
    indices: &mut CudaSlice<i64>,
) -> Result<(), GpuError> {
    let op = TOPK_F32.name;
    let bad = |msg: String| GpuError::Invalid { op, msg };
    if k > n || k > GPU_MAX_K {
        return Err(bad(format!(
            "k = {k} exceeds the row length {n} or the GPU limit {GPU_MAX_K}"
        )));
    }
    // Positions are 32-bit in the key, and the thread's `i += 256` must not wrap.
    if n > (u32::MAX - 256) as usize {
        return Err(bad(format!(
            "row length {n} does not fit the 32-bit position key"
        )));
    }
    let out = rows.checked_mul(k);
    if out != Some(values.len()) || out != Some(indices.len()) {
        return Err(bad(format!(
            "outputs hold {} values and {} indices, not {rows} x {k}",
            values.len(),
            indices.len()
        )));
    }
    if rows == 0 || k == 0 {
        return Ok(());
    }
    if row_stride < n {
        return Err(bad(format!(
            "row stride {row_stride} is shorter than the row {n}"
        )));
    }
    let need = (rows - 1)
        .checked_mul(row_stride)
        .and_then(|a| a.checked_add(n));
    if need.is_none_or(|need| need > x.len()) {
        return Err(bad(format!(
            "{rows} rows of {n} with stride {row_stride} reach past the input's {} elements",
            x.len()
        )));
    }
    let f = gpu.function(ModuleId::TopK, &TOPK_F32)?;
    let cfg = LaunchConfig {
        grid_dim: ((rows as u64).min(MAX_BLOCKS_1D) as u32, 1, 1),
        block_dim: (256, 1, 1), // the PTX requires exactly 256 (.reqntid)
        shared_mem_bytes: 0,
    };
    let (stride, r, n, k) = (row_stride as u64, rows as u64, n as u64, k as u64);
    let mut l = gpu.launch(&f, &TOPK_F32);
    // topk_f32(x, row_stride, rows, n, k, values, indices), all .u64
    l.arg(x)
        .arg(&stride)
        .arg(&r)
        .arg(&n)
        .arg(&k)
        .arg(&mut *values)
        .arg(&mut *indices);
    // SAFETY: arguments match the .param list; the checks above keep every row inside x and every
    // output slot (rows x k) inside values and indices.
    unsafe { l.launch(cfg) }
}
