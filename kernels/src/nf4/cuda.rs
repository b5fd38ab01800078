//! Launchers of the NF4 GPU kernels (`nf4.ptx`). The only code that knows each entry's parameter
//! order. bf16 activations are `CudaSlice<u16>` (raw bits); see the module docs ("GPU kernels")
//! for the math, the shapes and the precision.

use crate::launch::{CudaSlice, GpuContext, GpuError, Launch, LaunchConfig, grid_1d};
use crate::registry::{
    ModuleId, NF4_ABSMAX_DECODE_F32, NF4_DEQUANT_F32, NF4_GEMM_BF16_F32_SKINNY,
    NF4_GEMM_BF16_F32_SKINNY_T, NF4_GEMM_BF16_F32_TC,
};

use super::NF4_GPU_SKINNY_MAX_M;

/// The per-block scales of a weight on the device.
#[derive(Clone, Copy)]
pub enum Nf4Scales<'a> {
    /// One `f32` absmax per 64-element block (`N*K/64` values).
    F32(&'a CudaSlice<f32>),
    /// Double-quantized (bitsandbytes `compress_statistics`): `absmax[b] = map[codes[b]] *
    /// nested[b / 256] + offset` (see [`super::double_quant`]). The skinny forward kernel and
    /// dequantize read this form directly; the tile and transposed kernels decode it into a
    /// temporary `f32` buffer on every call (an allocation plus a small kernel), so a caller that
    /// multiplies by the same frozen weight many times should decode once with
    /// [`nf4_decode_absmax`] and pass [`Nf4Scales::F32`].
    Double {
        codes: &'a CudaSlice<u8>,
        nested: &'a CudaSlice<f32>,
        map: &'a CudaSlice<f32>,
        offset: f32,
    },
}

/// An NF4 weight `W [n, k]` on the device: packed nibbles (`n*k/2` bytes, element `2i` in the high
/// nibble of byte `i`) and its scales. `k % 64 == 0` is required by every kernel.
#[derive(Clone, Copy)]
pub struct Nf4Weight<'a> {
    pub packed: &'a CudaSlice<u8>,
    pub scales: Nf4Scales<'a>,
    pub n: usize,
    pub k: usize,
}

/// Where a product goes: `f32`, or bf16 (raw `u16` bits), the f32 result rounded to nearest even.
pub enum Nf4Out<'a> {
    F32(&'a mut CudaSlice<f32>),
    Bf16(&'a mut CudaSlice<u16>),
}

impl Nf4Out<'_> {
    fn len(&self) -> usize {
        match self {
            Nf4Out::F32(y) => y.len(),
            Nf4Out::Bf16(y) => y.len(),
        }
    }

    /// The kernels' `out_bf16` parameter.
    fn bf16_flag(&self) -> u32 {
        u32::from(matches!(self, Nf4Out::Bf16(_)))
    }
}

/// Pushes the output buffer argument.
fn push_out<'a>(l: &mut Launch<'a>, out: Nf4Out<'a>) {
    match out {
        Nf4Out::F32(y) => {
            l.arg(y);
        }
        Nf4Out::Bf16(y) => {
            l.arg(y);
        }
    }
}

fn invalid(op: &'static str, msg: String) -> GpuError {
    GpuError::Invalid { op, msg }
}

fn to_u32(op: &'static str, what: &str, v: usize) -> Result<u32, GpuError> {
    u32::try_from(v).map_err(|_| invalid(op, format!("{what} = {v} does not fit in 32 bits")))
}

/// Checks the weight's shape and buffer lengths; returns `(n, k)` as `u32`.
fn check_weight(op: &'static str, w: &Nf4Weight) -> Result<(u32, u32), GpuError> {
    if !w.k.is_multiple_of(64) {
        return Err(invalid(
            op,
            format!(
                "K = {} is not a multiple of 64 (the GPU kernels need whole 64-element NF4 blocks \
                 in every weight row)",
                w.k
            ),
        ));
    }
    let n = to_u32(op, "N", w.n)?;
    let k = to_u32(op, "K", w.k)?;
    let numel =
        w.n.checked_mul(w.k)
            .ok_or_else(|| invalid(op, format!("N*K = {}*{} overflows", w.n, w.k)))?;
    if w.packed.len() != numel / 2 {
        return Err(invalid(
            op,
            format!(
                "packed has {} bytes, expected N*K/2 = {}",
                w.packed.len(),
                numel / 2
            ),
        ));
    }
    let blocks = numel / 64;
    match w.scales {
        Nf4Scales::F32(a) => {
            if a.len() != blocks {
                return Err(invalid(
                    op,
                    format!("absmax has {} values, expected N*K/64 = {blocks}", a.len()),
                ));
            }
        }
        Nf4Scales::Double {
            codes, nested, map, ..
        } => {
            if codes.len() != blocks {
                return Err(invalid(
                    op,
                    format!(
                        "absmax codes have {} bytes, expected N*K/64 = {blocks}",
                        codes.len()
                    ),
                ));
            }
            check_nested(op, codes.len(), nested.len(), map.len())?;
        }
    }
    Ok((n, k))
}

fn check_nested(op: &'static str, codes: usize, nested: usize, map: usize) -> Result<(), GpuError> {
    if nested != codes.div_ceil(256) {
        return Err(invalid(
            op,
            format!(
                "nested absmax has {nested} values, expected ceil({codes}/256) = {}",
                codes.div_ceil(256)
            ),
        ));
    }
    if map != 256 {
        return Err(invalid(
            op,
            format!("the quantization map has {map} entries, expected 256"),
        ));
    }
    Ok(())
}

/// Checks a row-major activation `[rows, cols]` with row stride `ld` held in `len` elements.
fn check_rows(
    op: &'static str,
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<(), GpuError> {
    if ld < cols {
        return Err(invalid(
            op,
            format!("{what}: row stride {ld} < row length {cols}"),
        ));
    }
    if rows == 0 {
        return Ok(());
    }
    let need = (rows - 1)
        .checked_mul(ld)
        .and_then(|v| v.checked_add(cols))
        .ok_or_else(|| invalid(op, format!("{what}: ({rows}-1)*{ld}+{cols} overflows")))?;
    if len < need {
        return Err(invalid(
            op,
            format!("{what} has {len} elements, needs (rows-1)*stride+cols = {need}"),
        ));
    }
    Ok(())
}

fn check_out(op: &'static str, len: usize, rows: usize, cols: usize) -> Result<(), GpuError> {
    let want = rows
        .checked_mul(cols)
        .ok_or_else(|| invalid(op, format!("output {rows}x{cols} overflows")))?;
    if len != want {
        return Err(invalid(
            op,
            format!("output has {len} elements, expected {rows}x{cols} = {want}"),
        ));
    }
    Ok(())
}

/// Typed scale arguments: `(absmax, codes, nested, map, offset, dq)`, the pointers the chosen
/// form ignores filled with buffers of the right type (the kernel never reads them).
type ScaleArgs<'a> = (
    &'a CudaSlice<f32>,
    &'a CudaSlice<u8>,
    &'a CudaSlice<f32>,
    &'a CudaSlice<f32>,
    f32,
    u32,
);

fn scale_args<'a>(w: &Nf4Weight<'a>) -> ScaleArgs<'a> {
    match w.scales {
        Nf4Scales::F32(a) => (a, w.packed, a, a, 0.0, 0),
        Nf4Scales::Double {
            codes,
            nested,
            map,
            offset,
        } => (nested, codes, nested, map, offset, 1),
    }
}

/// Dequantizes the whole weight to `f32`: `out[i] = NF4_CODE[nibble_i] * absmax[i / 64]`, bit for
/// bit [`super::cpu::dequantize_nf4`] (with double-quantized scales, of the reconstructed absmax).
pub fn nf4_dequantize(
    gpu: &GpuContext,
    w: &Nf4Weight,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    const OP: &str = "nf4_dequantize";
    check_weight(OP, w)?;
    check_out(OP, out.len(), w.n, w.k)?;
    let n_words = (w.n * w.k / 8) as u64;
    if n_words == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Nf4, &NF4_DEQUANT_F32)?;
    let (absmax, codes, nested, map, offset, dq) = scale_args(w);
    let mut l = gpu.launch(&f, &NF4_DEQUANT_F32);
    // nf4_dequant_f32(packed, absmax, q8, nested, map, offset .f32, dq .u32, out, n_words .u64)
    l.arg(w.packed)
        .arg(absmax)
        .arg(codes)
        .arg(nested)
        .arg(map)
        .arg(&offset)
        .arg(&dq);
    l.arg(&mut *out).arg(&n_words);
    // SAFETY: arguments match the .param list; packed holds 4*n_words bytes, out 8*n_words f32,
    // the scales N*K/64 entries (checked above).
    unsafe { l.launch(grid_1d(n_words)) }
}

/// Decodes double-quantized scales to `f32`: `out[b] = map[codes[b]] * nested[b / 256] + offset`
/// (mul then add, two roundings), bit for bit [`super::double_quant::dequantize_absmax`].
pub fn nf4_decode_absmax(
    gpu: &GpuContext,
    codes: &CudaSlice<u8>,
    nested: &CudaSlice<f32>,
    map: &CudaSlice<f32>,
    offset: f32,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    const OP: &str = "nf4_decode_absmax";
    check_nested(OP, codes.len(), nested.len(), map.len())?;
    check_out(OP, out.len(), codes.len(), 1)?;
    let n = codes.len() as u64;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Nf4, &NF4_ABSMAX_DECODE_F32)?;
    let mut l = gpu.launch(&f, &NF4_ABSMAX_DECODE_F32);
    // nf4_absmax_decode_f32(q8, nested, map, offset .f32, out, n .u64)
    l.arg(codes)
        .arg(nested)
        .arg(map)
        .arg(&offset)
        .arg(&mut *out)
        .arg(&n);
    // SAFETY: arguments match the .param list; lengths checked above.
    unsafe { l.launch(grid_1d(n)) }
}

/// `y = x W^T` through the skinny kernel: `x` bf16 `[m, k]` with row stride `ldx` (a multiple of
/// 8), `m <= 16`, `y` `[m, n]` dense (f32 or bf16). Both scale forms. Public so tests can force
/// this path.
pub fn nf4_matmul_skinny(
    gpu: &GpuContext,
    x: &CudaSlice<u16>,
    m: usize,
    ldx: usize,
    w: &Nf4Weight,
    y: Nf4Out<'_>,
) -> Result<(), GpuError> {
    const OP: &str = "nf4_matmul_skinny";
    let (n, k) = check_weight(OP, w)?;
    if m > NF4_GPU_SKINNY_MAX_M {
        return Err(invalid(
            OP,
            format!("M = {m} > {NF4_GPU_SKINNY_MAX_M} (use nf4_matmul)"),
        ));
    }
    if !ldx.is_multiple_of(8) {
        return Err(invalid(
            OP,
            format!("x row stride {ldx} is not a multiple of 8 (16-byte loads; use nf4_matmul)"),
        ));
    }
    if w.n * w.k / 2 > u32::MAX as usize {
        return Err(invalid(
            OP,
            format!(
                "N*K/2 = {} packed bytes exceed the kernel's 32-bit offsets",
                w.n * w.k / 2
            ),
        ));
    }
    check_rows(OP, "x", x.len(), m, w.k, ldx)?;
    check_out(OP, y.len(), m, w.n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let obf = y.bf16_flag();
    let f = gpu.function(ModuleId::Nf4, &NF4_GEMM_BF16_F32_SKINNY)?;
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(32), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (ldx, m) = (ldx as u64, m as u32);
    let (absmax, codes, nested, map, offset, dq) = scale_args(w);
    let mut l = gpu.launch(&f, &NF4_GEMM_BF16_F32_SKINNY);
    // nf4_gemm_bf16_f32_skinny(x, ldx .u64, y, packed, absmax, q8, nested, map, offset .f32,
    //                          dq .u32, M .u32, N .u32, K .u32, out_bf16 .u32)
    l.arg(x).arg(&ldx);
    push_out(&mut l, y);
    l.arg(w.packed)
        .arg(absmax)
        .arg(codes)
        .arg(nested)
        .arg(map)
        .arg(&offset)
        .arg(&dq);
    l.arg(&m).arg(&n).arg(&k).arg(&obf);
    // SAFETY: arguments match the .param list; x covers (m-1)*ldx+k elements, y m*n, the weight
    // buffers their N*K shapes (checked above); the kernel reads x rows < m and k < K only.
    unsafe { l.launch(cfg) }
}

/// f32 scales for the tensor-core kernel: borrowed, or decoded into a fresh buffer.
fn f32_scales<'a>(
    gpu: &GpuContext,
    s: Nf4Scales<'a>,
    blocks: usize,
    tmp: &'a mut Option<CudaSlice<f32>>,
) -> Result<&'a CudaSlice<f32>, GpuError> {
    match s {
        Nf4Scales::F32(a) => Ok(a),
        Nf4Scales::Double {
            codes,
            nested,
            map,
            offset,
        } => {
            let mut buf = gpu.alloc_zeros::<f32>(blocks)?;
            nf4_decode_absmax(gpu, codes, nested, map, offset, &mut buf)?;
            Ok(tmp.insert(buf))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn launch_tc(
    gpu: &GpuContext,
    op: &'static str,
    a: &CudaSlice<u16>,
    m: usize,
    lda: usize,
    w: &Nf4Weight,
    out: Nf4Out<'_>,
    transposed: bool,
) -> Result<(), GpuError> {
    let (n, k) = check_weight(op, w)?;
    let (red, cols) = if transposed { (w.n, w.k) } else { (w.k, w.n) };
    check_rows(
        op,
        if transposed { "dy" } else { "x" },
        a.len(),
        m,
        red,
        lda,
    )?;
    check_out(op, out.len(), m, cols)?;
    let m32 = to_u32(op, "M", m)?;
    if m == 0 || cols == 0 {
        return Ok(());
    }
    let grid_y = m.div_ceil(128);
    if grid_y > 65_535 {
        return Err(invalid(
            op,
            format!("M = {m} needs {grid_y} > 65535 row tiles"),
        ));
    }
    let mut tmp = None;
    let absmax = f32_scales(gpu, w.scales, w.n * w.k / 64, &mut tmp)?;
    let f = gpu.function(ModuleId::Nf4, &NF4_GEMM_BF16_F32_TC)?;
    let cfg = LaunchConfig {
        grid_dim: (cols.div_ceil(128) as u32, grid_y as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (lda, tr, obf) = (lda as u64, u32::from(transposed), out.bf16_flag());
    let mut l = gpu.launch(&f, &NF4_GEMM_BF16_F32_TC);
    // nf4_gemm_bf16_f32_tc(a, lda .u64, out, packed, absmax, M .u32, N .u32, K .u32,
    //                      transposed .u32, out_bf16 .u32)
    l.arg(a).arg(&lda);
    push_out(&mut l, out);
    l.arg(w.packed)
        .arg(absmax)
        .arg(&m32)
        .arg(&n)
        .arg(&k)
        .arg(&tr)
        .arg(&obf);
    // SAFETY: arguments match the .param list; a covers (m-1)*lda + R elements, out m*C, the
    // weight buffers their N*K shapes (checked above); the kernel predicates every access on
    // m < M, reduction index < R, column < C.
    unsafe { l.launch(cfg) }
}

/// `y = x W^T` through the tensor-core tile kernel, any `m`, any row stride `ldx >= k`. With
/// double-quantized scales the absmax is decoded to a temporary `f32` buffer first (`N*K/64`
/// floats, 1/8 of the packed weight). Public so tests can force this path.
pub fn nf4_matmul_tc(
    gpu: &GpuContext,
    x: &CudaSlice<u16>,
    m: usize,
    ldx: usize,
    w: &Nf4Weight,
    y: Nf4Out<'_>,
) -> Result<(), GpuError> {
    launch_tc(gpu, "nf4_matmul_tc", x, m, ldx, w, y, false)
}

/// `y [m, n] = x [m, k] W^T` (f32 accumulation; f32 or bf16 out), dispatching by `m`: the skinny
/// kernel for `m <= 16` when `ldx % 8 == 0`, the tensor-core tile kernel otherwise.
pub fn nf4_matmul(
    gpu: &GpuContext,
    x: &CudaSlice<u16>,
    m: usize,
    ldx: usize,
    w: &Nf4Weight,
    y: Nf4Out<'_>,
) -> Result<(), GpuError> {
    if m <= NF4_GPU_SKINNY_MAX_M && ldx.is_multiple_of(8) {
        nf4_matmul_skinny(gpu, x, m, ldx, w, y)
    } else {
        launch_tc(gpu, "nf4_matmul", x, m, ldx, w, y, false)
    }
}

/// `dx [m, k] = dy [m, n] W` through the skinny transposed kernel (`m <= 16`, any row stride
/// `lddy >= n`). Double-quantized scales are decoded to a temporary `f32` buffer first. Public so
/// tests can force this path.
pub fn nf4_matmul_transposed_skinny(
    gpu: &GpuContext,
    dy: &CudaSlice<u16>,
    m: usize,
    lddy: usize,
    w: &Nf4Weight,
    dx: Nf4Out<'_>,
) -> Result<(), GpuError> {
    const OP: &str = "nf4_matmul_transposed_skinny";
    let (n, k) = check_weight(OP, w)?;
    if m > NF4_GPU_SKINNY_MAX_M {
        return Err(invalid(
            OP,
            format!("M = {m} > {NF4_GPU_SKINNY_MAX_M} (use nf4_matmul_transposed)"),
        ));
    }
    check_rows(OP, "dy", dy.len(), m, w.n, lddy)?;
    check_out(OP, dx.len(), m, w.k)?;
    if m == 0 || k == 0 {
        return Ok(());
    }
    let mut tmp = None;
    let absmax = f32_scales(gpu, w.scales, w.n * w.k / 64, &mut tmp)?;
    let f = gpu.function(ModuleId::Nf4, &NF4_GEMM_BF16_F32_SKINNY_T)?;
    let cfg = LaunchConfig {
        grid_dim: (k / 64, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (lddy, m, obf) = (lddy as u64, m as u32, dx.bf16_flag());
    let mut l = gpu.launch(&f, &NF4_GEMM_BF16_F32_SKINNY_T);
    // nf4_gemm_bf16_f32_skinny_t(dy, lddy .u64, dx, packed, absmax, M .u32, N .u32, K .u32,
    //                            out_bf16 .u32)
    l.arg(dy).arg(&lddy);
    push_out(&mut l, dx);
    l.arg(w.packed)
        .arg(absmax)
        .arg(&m)
        .arg(&n)
        .arg(&k)
        .arg(&obf);
    // SAFETY: arguments match the .param list; dy covers (m-1)*lddy + n elements, dx m*k, the
    // weight buffers their N*K shapes (checked above); the kernel predicates rows < M, n < N.
    unsafe { l.launch(cfg) }
}

/// `dx [m, k] = dy [m, n] W` through the tile kernel in its transposed mode, any `m`, any row
/// stride `lddy >= n`. Public so tests can force this path.
pub fn nf4_matmul_transposed_tc(
    gpu: &GpuContext,
    dy: &CudaSlice<u16>,
    m: usize,
    lddy: usize,
    w: &Nf4Weight,
    dx: Nf4Out<'_>,
) -> Result<(), GpuError> {
    launch_tc(gpu, "nf4_matmul_transposed_tc", dy, m, lddy, w, dx, true)
}

/// `dx [m, k] = dy [m, n] W` (the backward product through a frozen NF4 base): `dy` bf16 with row
/// stride `lddy >= n`, `dx` dense (f32 or bf16), f32 accumulation. Dispatches by `m`: the skinny transposed
/// kernel for `m <= 16`, the tile kernel otherwise.
pub fn nf4_matmul_transposed(
    gpu: &GpuContext,
    dy: &CudaSlice<u16>,
    m: usize,
    lddy: usize,
    w: &Nf4Weight,
    dx: Nf4Out<'_>,
) -> Result<(), GpuError> {
    if m <= NF4_GPU_SKINNY_MAX_M {
        nf4_matmul_transposed_skinny(gpu, dy, m, lddy, w, dx)
    } else {
        launch_tc(gpu, "nf4_matmul_transposed", dy, m, lddy, w, dx, true)
    }
}
