//! Launchers of the strided unary and broadcasting binary kernels (`elementwise.ptx`). The only
//! code that knows each entry's parameter order. bf16 buffers are `CudaSlice<u16>` (raw bits).
//!
//! Shapes and strides go to the kernel in a small `i64` device buffer (`[shape.., strides..]`,
//! see `mod.rs`), copied per launch after merging dims that are contiguous in every operand; a
//! cache of these buffers is owed when launch overhead starts to matter.

use super::{BinaryOp, MAX_RANK, UnaryOp};
use crate::launch::{CudaSlice, GpuContext, GpuError, grid_1d};
use crate::registry::{BINARY_BF16, BINARY_F32, EntrySpec, ModuleId, UNARY_BF16, UNARY_F32};

/// A strided view of a device buffer: element strides (0 for broadcast dims, negative allowed)
/// and the element offset of index `(0, .., 0)`.
#[derive(Clone, Copy, Debug)]
pub struct Strides<'a> {
    pub strides: &'a [isize],
    pub offset: usize,
}

fn invalid(op: &'static str, msg: String) -> GpuError {
    GpuError::Invalid { op, msg }
}

/// Number of elements of `shape`, or an error on overflow.
fn numel(op: &'static str, shape: &[usize]) -> Result<usize, GpuError> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| invalid(op, format!("shape {shape:?} overflows usize")))
}

/// Checks that every element of the view lies inside a buffer of `len` elements (non-empty shape).
fn check_view(
    op: &'static str,
    what: &str,
    shape: &[usize],
    v: Strides<'_>,
    len: usize,
) -> Result<(), GpuError> {
    if v.strides.len() != shape.len() {
        return Err(invalid(
            op,
            format!(
                "{what}: {} strides for a rank-{} shape",
                v.strides.len(),
                shape.len()
            ),
        ));
    }
    let mut lo = v.offset as i128;
    let mut hi = v.offset as i128;
    for (&d, &s) in shape.iter().zip(v.strides) {
        let reach = (d as i128 - 1) * s as i128;
        if reach < 0 {
            lo += reach;
        } else {
            hi += reach;
        }
    }
    if lo < 0 || hi >= len as i128 {
        return Err(invalid(
            op,
            format!(
                "{what}: view (shape {shape:?}, strides {:?}, offset {}) reaches [{lo}, {hi}] outside a buffer of {len}",
                v.strides, v.offset
            ),
        ));
    }
    Ok(())
}

/// Drops size-1 dims and merges neighbours that are contiguous with each other in every operand;
/// returns the merged shape and one stride list per operand (rank >= 1). Non-empty shapes only.
fn merge_dims(shape: &[usize], strides: &[&[isize]]) -> (Vec<i64>, Vec<Vec<i64>>) {
    let mut out_shape: Vec<i64> = Vec::new();
    let mut out_strides: Vec<Vec<i64>> = vec![Vec::new(); strides.len()];
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        let size = shape[d] as i64;
        let can_merge = !out_shape.is_empty()
            && strides
                .iter()
                .enumerate()
                .all(|(k, s)| *out_strides[k].last().unwrap() == s[d] as i64 * size);
        if can_merge {
            *out_shape.last_mut().unwrap() *= size;
            for (k, s) in strides.iter().enumerate() {
                *out_strides[k].last_mut().unwrap() = s[d] as i64;
            }
        } else {
            out_shape.push(size);
            for (k, s) in strides.iter().enumerate() {
                out_strides[k].push(s[d] as i64);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        for s in out_strides.iter_mut() {
            s.push(0);
        }
    }
    (out_shape, out_strides)
}

fn unary<T: cudarc::driver::DeviceRepr>(
    gpu: &GpuContext,
    entry: &'static EntrySpec,
    op: UnaryOp,
    x: &CudaSlice<T>,
    shape: &[usize],
    view: Strides<'_>,
    y: &mut CudaSlice<T>,
) -> Result<(), GpuError> {
    let name = entry.name;
    if shape.len() > MAX_RANK {
        return Err(invalid(
            name,
            format!("rank {} exceeds {MAX_RANK}", shape.len()),
        ));
    }
    let n = numel(name, shape)?;
    if y.len() != n {
        return Err(invalid(
            name,
            format!("output holds {}, shape {shape:?} needs {n}", y.len()),
        ));
    }
    if view.strides.len() != shape.len() {
        return Err(invalid(
            name,
            format!("{} strides for rank {}", view.strides.len(), shape.len()),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    check_view(name, "x", shape, view, x.len())?;
    let (mshape, mstrides) = merge_dims(shape, &[view.strides]);
    let rank = mshape.len() as u32;
    let mut dims = mshape;
    dims.extend_from_slice(&mstrides[0]);
    let d_dims = gpu.htod(&dims)?;
    let (n64, off, op_code) = (n as u64, view.offset as u64, op.code());
    let f = gpu.function(ModuleId::Elementwise, entry)?;
    let mut l = gpu.launch(&f, entry);
    // unary_*(x .u64, y .u64, n .u64, offset .u64, dims .u64, rank .u32, op .u32)
    l.arg(x)
        .arg(&mut *y)
        .arg(&n64)
        .arg(&off)
        .arg(&d_dims)
        .arg(&rank)
        .arg(&op_code);
    // SAFETY: arguments match the .param list; the view was checked to stay inside x, y holds n
    // elements, dims holds 2 * rank values.
    // d_dims is freed stream-ordered when dropped (cudarc), after the kernel has read it.
    unsafe { l.launch(grid_1d(n64)) }
}

/// `y = op(x)` over the strided view `(shape, view)` of `x`, `y` contiguous (mirrors
/// `cpu::unary_strided_f64`; tolerance `unary_tolerance`).
pub fn unary_f32(
    gpu: &GpuContext,
    op: UnaryOp,
    x: &CudaSlice<f32>,
    shape: &[usize],
    view: Strides<'_>,
    y: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    unary(gpu, &UNARY_F32, op, x, shape, view, y)
}

/// bf16 form of [`unary_f32`] (computed in f32, rounded once).
pub fn unary_bf16(
    gpu: &GpuContext,
    op: UnaryOp,
    x: &CudaSlice<u16>,
    shape: &[usize],
    view: Strides<'_>,
    y: &mut CudaSlice<u16>,
) -> Result<(), GpuError> {
    unary(gpu, &UNARY_BF16, op, x, shape, view, y)
}

#[allow(clippy::too_many_arguments)]
fn binary<T: cudarc::driver::DeviceRepr>(
    gpu: &GpuContext,
    entry: &'static EntrySpec,
    op: BinaryOp,
    a: &CudaSlice<T>,
    av: Strides<'_>,
    b: &CudaSlice<T>,
    bv: Strides<'_>,
    shape: &[usize],
    y: &mut CudaSlice<T>,
) -> Result<(), GpuError> {
    let name = entry.name;
    if shape.len() > MAX_RANK {
        return Err(invalid(
            name,
            format!("rank {} exceeds {MAX_RANK}", shape.len()),
        ));
    }
    let n = numel(name, shape)?;
    if y.len() != n {
        return Err(invalid(
            name,
            format!("output holds {}, shape {shape:?} needs {n}", y.len()),
        ));
    }
    for (what, v) in [("a", av), ("b", bv)] {
        if v.strides.len() != shape.len() {
            return Err(invalid(
                name,
                format!(
                    "{what}: {} strides for rank {}",
                    v.strides.len(),
                    shape.len()
                ),
            ));
        }
    }
    if n == 0 {
        return Ok(());
    }
    check_view(name, "a", shape, av, a.len())?;
    check_view(name, "b", shape, bv, b.len())?;
    let (mshape, mstrides) = merge_dims(shape, &[av.strides, bv.strides]);
    let rank = mshape.len() as u32;
    let mut dims = mshape;
    dims.extend_from_slice(&mstrides[0]);
    dims.extend_from_slice(&mstrides[1]);
    let d_dims = gpu.htod(&dims)?;
    let (n64, aoff, boff, op_code) = (n as u64, av.offset as u64, bv.offset as u64, op.code());
    let f = gpu.function(ModuleId::Elementwise, entry)?;
    let mut l = gpu.launch(&f, entry);
    // binary_*(a, b, y, n, a_offset, b_offset, dims, rank .u32, op .u32)
    l.arg(a)
        .arg(b)
        .arg(&mut *y)
        .arg(&n64)
        .arg(&aoff)
        .arg(&boff)
        .arg(&d_dims)
        .arg(&rank)
        .arg(&op_code);
    // SAFETY: arguments match the .param list; both views were checked to stay inside their
    // buffers, y holds n elements, dims holds 3 * rank values.
    unsafe { l.launch(grid_1d(n64)) }
}

/// `y = op(a, b)` over the broadcast shape `shape` (each operand a strided view, stride 0 on
/// broadcast dims), `y` contiguous (mirrors `cpu::binary_strided_f64`; exact).
#[allow(clippy::too_many_arguments)]
pub fn binary_f32(
    gpu: &GpuContext,
    op: BinaryOp,
    a: &CudaSlice<f32>,
    av: Strides<'_>,
    b: &CudaSlice<f32>,
    bv: Strides<'_>,
    shape: &[usize],
    y: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    binary(gpu, &BINARY_F32, op, a, av, b, bv, shape, y)
}

/// bf16 form of [`binary_f32`] (computed in f32, rounded once).
#[allow(clippy::too_many_arguments)]
pub fn binary_bf16(
    gpu: &GpuContext,
    op: BinaryOp,
    a: &CudaSlice<u16>,
    av: Strides<'_>,
    b: &CudaSlice<u16>,
    bv: Strides<'_>,
    shape: &[usize],
    y: &mut CudaSlice<u16>,
) -> Result<(), GpuError> {
    binary(gpu, &BINARY_BF16, op, a, av, b, bv, shape, y)
}
