//! Launchers of the axis reductions (`reduce.ptx`). The only code that knows the entry's
//! parameter order.

use super::{ArgReduceOp, ReduceOp};
use crate::launch::{
    BLOCK_1D, CudaSlice, GpuContext, GpuError, LaunchConfig, MAX_BLOCKS_1D, grid_1d,
};
use crate::registry::{EntrySpec, ModuleId, REDUCE_F32, REDUCE_F32_COLS};

/// From this `inner` on, the thread-per-output kernel (coalesced along `i`) is used; below it,
/// the block-per-output tree. The choice depends on the shape only, so results are reproducible.
pub const COLS_MIN_INNER: usize = 32;

const OP: &str = "reduce_f32";

/// Checks `x` against `[outer, size, inner]` and the output length; returns `outer * inner`.
fn check(x: usize, out: usize, outer: usize, size: usize, inner: usize) -> Result<usize, GpuError> {
    let total = outer.checked_mul(size).and_then(|v| v.checked_mul(inner));
    if total != Some(x) {
        return Err(GpuError::Invalid {
            op: OP,
            msg: format!("x holds {x} values, not an [{outer}, {size}, {inner}] array"),
        });
    }
    let n_out = outer * inner;
    if out != n_out {
        return Err(GpuError::Invalid {
            op: OP,
            msg: format!("output holds {out}, needs {n_out}"),
        });
    }
    Ok(n_out)
}

/// The entry and launch geometry for a shape (see [`COLS_MIN_INNER`]).
fn plan(n_out: usize, inner: usize) -> (&'static EntrySpec, LaunchConfig) {
    if inner >= COLS_MIN_INNER {
        (&REDUCE_F32_COLS, grid_1d(n_out as u64))
    } else {
        let cfg = LaunchConfig {
            grid_dim: ((n_out as u64).clamp(1, MAX_BLOCKS_1D) as u32, 1, 1),
            block_dim: (BLOCK_1D, 1, 1),
            shared_mem_bytes: 0,
        };
        (&REDUCE_F32, cfg)
    }
}

/// `y[o*inner + i] = op(x[o, .., i])` (mirrors `cpu::{sum,mean,max,min}_axis_f64`). Max and min
/// of an empty axis are an error.
pub fn reduce_f32(
    gpu: &GpuContext,
    op: ReduceOp,
    x: &CudaSlice<f32>,
    outer: usize,
    size: usize,
    inner: usize,
    y: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let n_out = check(x.len(), y.len(), outer, size, inner)?;
    if size == 0 && matches!(op, ReduceOp::Max | ReduceOp::Min) {
        return Err(GpuError::Invalid {
            op: OP,
            msg: format!("{op:?} of an empty axis"),
        });
    }
    if n_out == 0 {
        return Ok(());
    }
    let (o, s, i, code) = (outer as u64, size as u64, inner as u64, op as u32);
    let null = 0u64;
    let (entry, cfg) = plan(n_out, inner);
    let f = gpu.function(ModuleId::Reduce, entry)?;
    let mut l = gpu.launch(&f, entry);
    // reduce_f32[_cols](x, y, idx, outer, size, inner, op); idx is unused by ops 0-3
    l.arg(x)
        .arg(&mut *y)
        .arg(&null)
        .arg(&o)
        .arg(&s)
        .arg(&i)
        .arg(&code);
    // SAFETY: arguments match the .param list; x holds outer*size*inner values, y outer*inner.
    unsafe { l.launch(cfg) }
}

/// `idx[o*inner + i]` = the index along the axis of the max (min): first on ties, first NaN if any
/// (mirrors `cpu::{argmax,argmin}_axis`). An empty axis is an error.
pub fn arg_reduce_f32(
    gpu: &GpuContext,
    op: ArgReduceOp,
    x: &CudaSlice<f32>,
    outer: usize,
    size: usize,
    inner: usize,
    idx: &mut CudaSlice<u64>,
) -> Result<(), GpuError> {
    let n_out = check(x.len(), idx.len(), outer, size, inner)?;
    if size == 0 {
        return Err(GpuError::Invalid {
            op: OP,
            msg: format!("{op:?} of an empty axis"),
        });
    }
    if n_out == 0 {
        return Ok(());
    }
    let (o, s, i, code) = (outer as u64, size as u64, inner as u64, op as u32);
    let null = 0u64;
    let (entry, cfg) = plan(n_out, inner);
    let f = gpu.function(ModuleId::Reduce, entry)?;
    let mut l = gpu.launch(&f, entry);
    // reduce_f32[_cols](x, y, idx, outer, size, inner, op); y is unused by ops 4-5
    l.arg(x)
        .arg(&null)
        .arg(&mut *idx)
        .arg(&o)
        .arg(&s)
        .arg(&i)
        .arg(&code);
    // SAFETY: arguments match the .param list; x holds outer*size*inner values, idx outer*inner.
    unsafe { l.launch(cfg) }
}
