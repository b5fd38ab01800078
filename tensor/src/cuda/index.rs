//! Indexed copies and adds on CUDA: `index_select`, `cat`, and `scatter_add` and `index_add`,
//! the adjoints of `gather` and `index_select` (the backward of top-k and of the embedding
//! lookup).
//!
//! Both reduce to one shape of work: "add source row `j` into destination row `dst[j]`", which
//! is what the embedding-adjoint kernel does. The destinations are computed on the host from the
//! indices, which the `Tensor` methods have already downloaded and checked. The kernel adds, per
//! destination row, the source rows in increasing `j` after the old value, in f32: the CPU op's
//! order and accumulator, so f32 results are bit-identical to it.

use brainstacks_kernels::embedding::cuda::embedding_f32_bwd;

use super::ops::{dense, f32_of, first, ge, lookup_rows, on, wrap};
use super::storage::CudaBuf;
use crate::{Error, Result, Tensor};

/// A copy of `base` (dense) where row `dst[j]` (rows of `row` elements, `base` viewed as
/// `[elems / row, row]`) gets row `j` of `src` (any layout, `[dst.len(), row]` elements in
/// row-major order) added, for `j = 0, 1, ...`. f32 only; `dst` entries must be in range.
pub(crate) fn add_rows(op: &'static str, base: &Tensor, dst: &[i64], src: &Tensor, row: usize) -> Result<Tensor> {
    let c0 = first(op, base)?;
    on(op, src, c0.device())?;
    let b = dense(op, base)?;
    let cb = first(op, &b)?;
    f32_of(op, cb)?;
    let gpu = cb.gpu();
    let e = ge(op, cb);
    // A fresh buffer: `dense` may hand back `base`'s own storage, which must not change.
    let CudaBuf::F32(mut out) = cb.buf().copy_range(gpu, 0, cb.len()).map_err(&e)? else { unreachable!("checked f32 above") };
    if dst.is_empty() || row == 0 {
        return Ok(wrap(gpu, CudaBuf::F32(out), base.shape()));
    }
    let s = dense(op, src)?;
    let cs = first(op, &s)?;
    let sv = f32_of(op, cs).map_err(|_| Error::DTypeMismatch { op, lhs: base.dtype(), rhs: src.dtype() })?;
    let ids = gpu.htod(dst).map_err(&e)?;
    embedding_f32_bwd(gpu, &ids, sv, cb.len() / row, row, &mut out).map_err(&e)?;
    Ok(wrap(gpu, CudaBuf::F32(out), base.shape()))
}

/// `index_select` along a dim of `x` split as `[outer, size, inner]`: output row `(o, j)` is
/// input row `(o, ids[j])` (rows of `inner` elements), through the embedding-lookup kernel on
/// `x` viewed as a table of `outer * size` rows. f32 and bf16; values are copied exactly.
pub(crate) fn select_rows(
    op: &'static str,
    x: &Tensor,
    ids: &[usize],
    (outer, size, inner): (usize, usize, usize),
    shape: &[usize],
) -> Result<Tensor> {
    let xd = dense(op, x)?;
    let cx = first(op, &xd)?;
    let gpu = cx.gpu();
    let e = ge(op, cx);
    let n = outer * ids.len() * inner;
    if n == 0 {
        return Ok(wrap(gpu, CudaBuf::zeros(gpu, cx.dtype(), 0).map_err(&e)?, shape));
    }
    let rows: Vec<i64> = (0..outer).flat_map(|o| ids.iter().map(move |&v| (o * size + v) as i64)).collect();
    let rows = gpu.htod(&rows).map_err(&e)?;
    lookup_rows(op, cx, outer * size, inner, &rows, shape)
}

/// `cat` of dense copies of `parts` along a dim split as `[outer, size_i, inner]`: every outer
/// row is the parts' blocks of `size_i * inner` elements side by side (one device copy per block,
/// no kernel). Any dtype.
pub(crate) fn cat(op: &'static str, parts: &[&Tensor], outer: usize, blocks: &[usize], shape: &[usize]) -> Result<Tensor> {
    let c0 = first(op, parts[0])?;
    let dense_parts = parts.iter().map(|p| on(op, p, c0.device()).and_then(|_| dense(op, p))).collect::<Result<Vec<_>>>()?;
    let gpu = c0.gpu();
    let e = ge(op, c0);
    let row: usize = blocks.iter().sum();
    let mut out = CudaBuf::zeros(gpu, c0.dtype(), outer * row).map_err(&e)?;
    for o in 0..outer {
        let mut at = o * row;
        for (p, &b) in dense_parts.iter().zip(blocks) {
            out.copy_block_from(gpu, at, first(op, p)?.buf(), o * b, b).map_err(&e)?;
            at += b;
        }
    }
    Ok(wrap(gpu, out, shape))
}
