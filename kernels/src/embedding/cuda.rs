//! Launchers of `embedding.ptx`. The only code that knows the entries' parameter order.

use super::cpu::group_positions;
use crate::launch::{CudaSlice, GpuContext, GpuError, LaunchConfig, MAX_BLOCKS_1D, grid_1d};
use crate::registry::{
    EMBEDDING_BF16_FWD, EMBEDDING_F32_BWD, EMBEDDING_F32_FWD, EntrySpec, ModuleId,
};

fn invalid(op: &'static str, msg: String) -> GpuError {
    GpuError::Invalid { op, msg }
}

fn check_table(op: &'static str, len: usize, vocab: usize, dim: usize) -> Result<(), GpuError> {
    if vocab.checked_mul(dim) != Some(len) {
        return Err(invalid(
            op,
            format!("table holds {len} values, not {vocab} x {dim}"),
        ));
    }
    Ok(())
}

fn check_rows(
    op: &'static str,
    what: &str,
    len: usize,
    n: usize,
    dim: usize,
) -> Result<(), GpuError> {
    if n.checked_mul(dim) != Some(len) {
        return Err(invalid(
            op,
            format!("{what} holds {len} values, not {n} ids x {dim}"),
        ));
    }
    Ok(())
}

/// Shared by the f32 and bf16 lookups (the element type only changes the entry).
fn lookup<T: cudarc::driver::DeviceRepr>(
    gpu: &GpuContext,
    entry: &'static EntrySpec,
    table: &CudaSlice<T>,
    vocab: usize,
    dim: usize,
    ids: &CudaSlice<i64>,
    out: &mut CudaSlice<T>,
) -> Result<(), GpuError> {
    let op = entry.name;
    check_table(op, table.len(), vocab, dim)?;
    check_rows(op, "output", out.len(), ids.len(), dim)?;
    let total = out.len() as u64;
    if total == 0 {
        return Ok(());
    }
    let mut err = gpu.htod(&[u64::MAX])?;
    let f = gpu.function(ModuleId::Embedding, entry)?;
    let (n, v, d) = (ids.len() as u64, vocab as u64, dim as u64);
    let mut l = gpu.launch(&f, entry);
    // embedding_*_fwd(table, ids, out, n, vocab, dim, err), all .u64
    l.arg(table)
        .arg(ids)
        .arg(&mut *out)
        .arg(&n)
        .arg(&v)
        .arg(&d)
        .arg(&mut err);
    // SAFETY: arguments match the .param list; the kernel reads table rows only for ids it has
    // checked against vocab, reads ids[0..n), writes out[0..n dim) and the one word of err.
    unsafe { l.launch(grid_1d(total)) }?;
    let first_bad = gpu.dtoh(&err)?[0];
    if first_bad != u64::MAX {
        return Err(invalid(
            op,
            format!("ids[{first_bad}] is out of range for vocab {vocab}"),
        ));
    }
    Ok(())
}

/// `out[j] = table[ids[j]]` for an f32 table `vocab` x `dim` (mirrors `cpu::embedding`, exactly).
/// Synchronises once to read the range check back.
pub fn embedding_f32_fwd(
    gpu: &GpuContext,
    table: &CudaSlice<f32>,
    vocab: usize,
    dim: usize,
    ids: &CudaSlice<i64>,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    lookup(gpu, &EMBEDDING_F32_FWD, table, vocab, dim, ids, out)
}

/// The bf16 lookup (raw bits in `u16`), otherwise as [`embedding_f32_fwd`].
pub fn embedding_bf16_fwd(
    gpu: &GpuContext,
    table: &CudaSlice<u16>,
    vocab: usize,
    dim: usize,
    ids: &CudaSlice<i64>,
    out: &mut CudaSlice<u16>,
) -> Result<(), GpuError> {
    lookup(gpu, &EMBEDDING_BF16_FWD, table, vocab, dim, ids, out)
}

/// `dtable[v] += sum_{j : ids[j] = v} dy[j]`, summed in f32 in increasing `j` after the old value
/// (mirrors `cpu::embedding_adjoint` on a zero `dtable`). Copies the ids to the host (one
/// synchronisation); on an out-of-range id returns `GpuError::Invalid` and writes nothing.
pub fn embedding_f32_bwd(
    gpu: &GpuContext,
    ids: &CudaSlice<i64>,
    dy: &CudaSlice<f32>,
    vocab: usize,
    dim: usize,
    dtable: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let op = EMBEDDING_F32_BWD.name;
    check_table(op, dtable.len(), vocab, dim)?;
    check_rows(op, "dy", dy.len(), ids.len(), dim)?;
    if ids.is_empty() {
        return Ok(());
    }
    let host_ids = gpu.dtoh(ids)?;
    let super::cpu::Groups { rows, starts, pos } =
        group_positions(&host_ids, vocab).map_err(|msg| invalid(op, msg))?;
    if dim == 0 {
        return Ok(());
    }
    let d_rows = gpu.htod(&rows)?;
    let d_starts = gpu.htod(&starts)?;
    let d_pos = gpu.htod(&pos)?;
    let (groups, d) = (rows.len() as u64, dim as u64);
    let f = gpu.function(ModuleId::Embedding, &EMBEDDING_F32_BWD)?;
    let cfg = LaunchConfig {
        grid_dim: (groups.min(MAX_BLOCKS_1D) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = gpu.launch(&f, &EMBEDDING_F32_BWD);
    // embedding_f32_bwd(dy, dtable, rows, starts, pos, groups, dim), all .u64
    l.arg(dy)
        .arg(&mut *dtable)
        .arg(&d_rows)
        .arg(&d_starts)
        .arg(&d_pos)
        .arg(&groups)
        .arg(&d);
    // SAFETY: arguments match the .param list; rows < vocab and pos < n were checked on the host,
    // so every dtable row (vocab x dim) and dy row (n x dim) the kernel touches exists; each
    // dtable row belongs to exactly one group, so no two blocks write the same element.
    unsafe { l.launch(cfg) }
}
