//! Launchers of the GEMM kernels (`gemm_bf16.ptx`, `gemm_f32.ptx`). The only code that knows each
//! entry's parameter order. bf16 buffers are `CudaSlice<u16>` holding the raw bits.
//!
//! Shapes are checked here and reported as [`GpuError::Invalid`]; every operand is a whole slice
//! read with a leading dimension (row stride, in elements), so row-padded views need no copy.

use crate::launch::{CudaSlice, CudaView, CudaViewMut, GpuContext, GpuError, LaunchConfig};
use crate::registry::{
    EntrySpec, GEMM_BF16_NN_BF16, GEMM_BF16_NN_BF16_WIDE, GEMM_BF16_NN_F32, GEMM_BF16_NN_F32_WIDE,
    GEMM_BF16_NT_BF16, GEMM_BF16_NT_BF16_WIDE, GEMM_BF16_NT_F32, GEMM_BF16_NT_F32_WIDE,
    GEMM_BF16_TN_BF16, GEMM_BF16_TN_BF16_WIDE, GEMM_BF16_TN_F32, GEMM_BF16_TN_F32_WIDE, GEMM_F32,
    ModuleId,
};

/// Rows of C per block of the bf16 kernel (both block shapes).
const BF16_TILE_M: u32 = 128;
/// The automatic choice takes the wide tile once it gives at least this many blocks (two per SM
/// of a 132-SM H100: the narrow tile's extra parallelism no longer matters, while the wide tile
/// reads 25% less from L2 per flop). To be tuned on hardware.
const WIDE_MIN_BLOCKS: u32 = 264;
/// Block tile and threads per block of the f32 kernel (`.maxntid 256`).
const F32_TILE: u32 = 128;
const F32_THREADS: u32 = 256;

/// Which operands of the bf16 GEMM are stored transposed. `C = A·B`, `A` is `m x k`, `B` is
/// `k x n`; the names follow BLAS: the first letter for `A`, the second for `B`, `N` = stored as
/// the logical matrix, `T` = stored as its transpose (both row-major with their leading dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Layout {
    /// `A` as `[m, k]`, `B` given as `Bt [n, k]`: `y = x·W^T` with `W [out, in]`.
    Nt,
    /// `A` as `[m, k]`, `B` as `[k, n]`: `dX = dY·W`.
    Nn,
    /// `A` given as `At [k, m]`, `B` as `[k, n]`: `dW = dY^T·X`.
    Tn,
}

/// Block shape of the bf16 kernel (see `gemm_bf16.ptx`): both run warps of 64 x 64 outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Tile {
    /// 128 x 128 blocks of 128 threads, 64 KiB of shared memory, two blocks per SM.
    Narrow,
    /// 128 x 256 blocks of 256 threads, 96 KiB of shared memory, one block per SM.
    Wide,
}

impl Bf16Tile {
    fn cols(self) -> u32 {
        match self {
            Bf16Tile::Narrow => 128,
            Bf16Tile::Wide => 256,
        }
    }

    /// Threads per block (`.maxntid`): one warp per 64 x 64 of the block tile.
    fn threads(self) -> u32 {
        self.cols()
    }

    /// Dynamic shared memory: 4 stages of a 128 x 32 A tile and a 32 x cols B tile, bf16.
    fn smem_bytes(self) -> u32 {
        4 * (128 * 32 + 32 * self.cols()) * 2
    }

    /// The shape the automatic choice uses for an `m x n` output.
    pub fn auto(m: usize, n: usize) -> Bf16Tile {
        let wide_blocks = m.div_ceil(BF16_TILE_M as usize) * n.div_ceil(256);
        if wide_blocks >= WIDE_MIN_BLOCKS as usize {
            Bf16Tile::Wide
        } else {
            Bf16Tile::Narrow
        }
    }
}

/// Sizes and leading dimensions (row strides, in elements) of one GEMM `C[m, n] = A·B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Row stride of `A` as stored (`[m, k]`, or `[k, m]` for [`Bf16Layout::Tn`]).
    pub lda: usize,
    /// Row stride of `B` as stored (`[n, k]` for [`Bf16Layout::Nt`], else `[k, n]`).
    pub ldb: usize,
    /// Row stride of `C` (`[m, n]`).
    pub ldc: usize,
}

fn invalid(op: &'static str, msg: String) -> GpuError {
    GpuError::Invalid { op, msg }
}

/// Checks that a row-major `rows x cols` operand with row stride `ld` fits in `len` elements.
fn check_operand(
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
            format!("{what} ({rows} x {cols}): leading dimension {ld} < {cols} columns"),
        ));
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let need = (rows - 1).checked_mul(ld).and_then(|r| r.checked_add(cols));
    match need {
        Some(need) if need <= len => Ok(()),
        _ => Err(invalid(
            op,
            format!(
                "{what} ({rows} x {cols}, leading dimension {ld}) needs more than the {len} elements given"
            ),
        )),
    }
}

/// Every size the kernels take as a 32-bit parameter must stay below 2^31 (they do signed 32-bit
/// edge arithmetic and unsigned 32-bit tile counts).
fn check_u31(op: &'static str, what: &str, v: usize) -> Result<u32, GpuError> {
    u32::try_from(v)
        .ok()
        .filter(|&v| v <= i32::MAX as u32)
        .ok_or_else(|| invalid(op, format!("{what} = {v} does not fit in 31 bits")))
}

/// The shape checks of the bf16 path; returns the 32-bit parameters `(m, n, k, lda, ldb, ldc)`.
fn check_bf16(
    op: &'static str,
    layout: Bf16Layout,
    d: GemmDims,
    a_len: usize,
    b_len: usize,
    c_len: usize,
) -> Result<[u32; 6], GpuError> {
    let (a_rows, a_cols) = match layout {
        Bf16Layout::Nt | Bf16Layout::Nn => (d.m, d.k),
        Bf16Layout::Tn => (d.k, d.m),
    };
    let (b_rows, b_cols) = match layout {
        Bf16Layout::Nt => (d.n, d.k),
        Bf16Layout::Nn | Bf16Layout::Tn => (d.k, d.n),
    };
    check_operand(op, "A", a_len, a_rows, a_cols, d.lda)?;
    check_operand(op, "B", b_len, b_rows, b_cols, d.ldb)?;
    check_operand(op, "C", c_len, d.m, d.n, d.ldc)?;
    // cp.async copies aligned 16-byte chunks: every row must start 16-byte aligned (the slices
    // themselves come from cuMemAlloc, 256-byte aligned), and a k-contiguous operand must not
    // end a row inside a chunk.
    if !d.lda.is_multiple_of(8) || !d.ldb.is_multiple_of(8) {
        return Err(invalid(
            op,
            format!(
                "leading dimensions of A ({}) and B ({}) must be multiples of 8 (16-byte rows); \
                 use gemm_f32 or pad the operands",
                d.lda, d.ldb
            ),
        ));
    }
    if layout != Bf16Layout::Tn && !d.k.is_multiple_of(8) {
        return Err(invalid(
            op,
            format!(
                "k = {} must be a multiple of 8 for layout {layout:?} (k-contiguous operands); \
                 use gemm_f32 or pad k with zeros",
                d.k
            ),
        ));
    }
    let v = [
        check_u31(op, "m", d.m)?,
        check_u31(op, "n", d.n)?,
        check_u31(op, "k", d.k)?,
        check_u31(op, "lda", d.lda)?,
        check_u31(op, "ldb", d.ldb)?,
        check_u31(op, "ldc", d.ldc)?,
    ];
    // Block count of the narrow tile (the larger of the two).
    let blocks = (d.m.div_ceil(BF16_TILE_M as usize)).checked_mul(d.n.div_ceil(128));
    if !matches!(blocks, Some(b) if b <= i32::MAX as usize) {
        return Err(invalid(
            op,
            format!("{} x {} needs too many blocks", d.m, d.n),
        ));
    }
    Ok(v)
}

fn bf16_entry(layout: Bf16Layout, bf16_out: bool, tile: Bf16Tile) -> &'static EntrySpec {
    use Bf16Layout::{Nn, Nt, Tn};
    use Bf16Tile::{Narrow, Wide};
    match (layout, bf16_out, tile) {
        (Nt, false, Narrow) => &GEMM_BF16_NT_F32,
        (Nn, false, Narrow) => &GEMM_BF16_NN_F32,
        (Tn, false, Narrow) => &GEMM_BF16_TN_F32,
        (Nt, true, Narrow) => &GEMM_BF16_NT_BF16,
        (Nn, true, Narrow) => &GEMM_BF16_NN_BF16,
        (Tn, true, Narrow) => &GEMM_BF16_TN_BF16,
        (Nt, false, Wide) => &GEMM_BF16_NT_F32_WIDE,
        (Nn, false, Wide) => &GEMM_BF16_NN_F32_WIDE,
        (Tn, false, Wide) => &GEMM_BF16_TN_F32_WIDE,
        (Nt, true, Wide) => &GEMM_BF16_NT_BF16_WIDE,
        (Nn, true, Wide) => &GEMM_BF16_NN_BF16_WIDE,
        (Tn, true, Wide) => &GEMM_BF16_TN_BF16_WIDE,
    }
}

/// Shared by the two output types: `C` is `&mut CudaSlice<f32>` or `&mut CudaSlice<u16>`.
#[allow(clippy::too_many_arguments)]
fn launch_bf16<C: cudarc::driver::DeviceRepr + Bf16GemmOut>(
    gpu: &GpuContext,
    op: &'static str,
    layout: Bf16Layout,
    d: GemmDims,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    c: &mut CudaSlice<C>,
    tile: Option<Bf16Tile>,
) -> Result<(), GpuError> {
    let [m, n, k, lda, ldb, ldc] = check_bf16(op, layout, d, a.len(), b.len(), c.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let tile = tile.unwrap_or_else(|| Bf16Tile::auto(d.m, d.n));
    let entry = bf16_entry(layout, C::BF16, tile);
    let f = gpu.function(ModuleId::GemmBf16, entry)?;
    gpu.set_max_dynamic_shared(&f, tile.smem_bytes())?;
    let blocks = m.div_ceil(BF16_TILE_M) * n.div_ceil(tile.cols());
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (tile.threads(), 1, 1),
        shared_mem_bytes: tile.smem_bytes(),
    };
    let mut l = gpu.launch(&f, entry);
    // gemm_bf16_<layout>_<out>(a, b, c, m, n, k, lda, ldb, ldc)
    l.arg(a)
        .arg(b)
        .arg(&mut *c)
        .arg(&m)
        .arg(&n)
        .arg(&k)
        .arg(&lda)
        .arg(&ldb)
        .arg(&ldc);
    // SAFETY: the arguments match the .param list; check_bf16 proved every operand fits its slice
    // for these sizes and leading dimensions, and the kernel reads and writes nothing else.
    unsafe { l.launch(cfg) }
}

/// `C = A·B` with bf16 operands on the tensor cores, f32 accumulation, f32 output
/// (`C[i][j]` at `c[i * ldc + j]`). Layout and strides as in [`Bf16Layout`] and [`GemmDims`].
///
/// Fast-path requirements (else [`GpuError::Invalid`]; use [`gemm_f32`] on widened operands or pad):
/// `lda` and `ldb` multiples of 8, and `k` a multiple of 8 for [`Bf16Layout::Nt`] and
/// [`Bf16Layout::Nn`]. `m` and `n` are arbitrary; `k == 0` writes zeros. Mirrors
/// `cpu::gemm_reference_f32` on the widened operands, within `f32_tolerance`.
pub fn gemm_bf16(
    gpu: &GpuContext,
    layout: Bf16Layout,
    d: GemmDims,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    c: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    launch_bf16(gpu, "gemm_bf16", layout, d, a, b, c, None)
}

/// As [`gemm_bf16`], with the f32 result rounded once to bf16 (round to nearest even) on store.
pub fn gemm_bf16_to_bf16(
    gpu: &GpuContext,
    layout: Bf16Layout,
    d: GemmDims,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    c: &mut CudaSlice<u16>,
) -> Result<(), GpuError> {
    launch_bf16(gpu, "gemm_bf16_to_bf16", layout, d, a, b, c, None)
}

/// [`gemm_bf16`] (`c` f32) or [`gemm_bf16_to_bf16`] (`c` u16 holding bf16 bits) with the block
/// shape forced instead of chosen by [`Bf16Tile::auto`]; for tests and tuning.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16_with_tile<C: cudarc::driver::DeviceRepr + Bf16GemmOut>(
    gpu: &GpuContext,
    layout: Bf16Layout,
    d: GemmDims,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    c: &mut CudaSlice<C>,
    tile: Bf16Tile,
) -> Result<(), GpuError> {
    launch_bf16(gpu, "gemm_bf16_with_tile", layout, d, a, b, c, Some(tile))
}

/// The output element types of the bf16 GEMM: `f32`, or `u16` holding bf16 bits.
pub trait Bf16GemmOut {
    /// Whether the kernel rounds its f32 result to bf16 on store.
    const BF16: bool;
}

impl Bf16GemmOut for f32 {
    const BF16: bool = false;
}

impl Bf16GemmOut for u16 {
    const BF16: bool = true;
}

/// Element strides of one f32 operand: `X[i][j]` at `x[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    pub rs: usize,
    pub cs: usize,
}

/// Checks that a strided `rows x cols` operand fits in `len` elements.
fn check_strided(
    op: &'static str,
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    s: Strides,
) -> Result<(), GpuError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (rows - 1)
        .checked_mul(s.rs)
        .and_then(|r| (cols - 1).checked_mul(s.cs).and_then(|c| r.checked_add(c)));
    match last {
        Some(last) if last < len => Ok(()),
        _ => Err(invalid(
            op,
            format!(
                "{what} ({rows} x {cols}, strides {}, {}) does not fit in {len} elements",
                s.rs, s.cs
            ),
        )),
    }
}

/// `C = A·B` in f32 on the SIMT cores, any sizes and strides: `A[i][p]` at
/// `a[i * a.rs + p * a.cs]`, `B[p][j]` at `b[p * b.rs + j * b.cs]`, `C[i][j]` at `c[i * ldc + j]`.
/// Mirrors `cpu::gemm_reference_f32` within `f32_tolerance`; `k == 0` writes zeros.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    gpu: &GpuContext,
    m: usize,
    n: usize,
    k: usize,
    a: &CudaSlice<f32>,
    a_strides: Strides,
    b: &CudaSlice<f32>,
    b_strides: Strides,
    c: &mut CudaSlice<f32>,
    ldc: usize,
) -> Result<(), GpuError> {
    let (a, b) = (a.as_view(), b.as_view());
    gemm_f32_batched(gpu, m, n, k, GemmBatch::ONE, &a, a_strides, &b, b_strides, &mut c.as_view_mut(), ldc)
}

/// The batch of a batched GEMM: entries `z = zo * inner + zi` (`zo < outer`, `zi < inner`),
/// entry `z` reading `A` at element offset `zo * a.0 + zi * a.1`, `B` at `zo * b.0 + zi * b.1`
/// and writing `C` at `z * c`. Two batch dimensions, so that a `[batch, heads, rows, cols]` view
/// with any strides (attention's per-head products) is one launch; a stride of 0 broadcasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmBatch {
    pub outer: usize,
    pub inner: usize,
    pub a: (usize, usize),
    pub b: (usize, usize),
    pub c: usize,
}

impl GemmBatch {
    /// A single product.
    pub const ONE: GemmBatch = GemmBatch { outer: 1, inner: 1, a: (0, 0), b: (0, 0), c: 0 };

    /// The number of products.
    pub fn count(&self) -> usize {
        self.outer * self.inner
    }

    /// Whether [`gemm_f32_batched`] takes this batch in one launch: at most [`MAX_GRID_Z`]
    /// products, and counts and strides below 2^31 (the kernel's parameters are 32-bit). Callers
    /// with larger batches split them or launch per entry.
    pub fn fits_one_launch(&self) -> bool {
        let small = |x: usize| x <= i32::MAX as usize;
        self.count() <= MAX_GRID_Z && [self.inner, self.a.0, self.a.1, self.b.0, self.b.1, self.c].into_iter().all(small)
    }
}

/// The largest grid z (the batch) one launch may have.
pub const MAX_GRID_Z: usize = 65_535;

/// [`gemm_f32`] over a batch of products in one launch (grid z): entry `z` of [`GemmBatch`]
/// computes `C_z = A_z·B_z` with the strides of `gemm_f32` inside each entry. The operands are
/// views, so they may start anywhere in a buffer. Every entry is checked to lie inside its view,
/// and the `C` entries must not overlap (each is written by its own blocks, without atomics).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32_batched(
    gpu: &GpuContext,
    m: usize,
    n: usize,
    k: usize,
    batch: GemmBatch,
    a: &CudaView<'_, f32>,
    a_strides: Strides,
    b: &CudaView<'_, f32>,
    b_strides: Strides,
    c: &mut CudaViewMut<'_, f32>,
    ldc: usize,
) -> Result<(), GpuError> {
    const OP: &str = "gemm_f32";
    let count = batch.count();
    if count == 0 {
        return Ok(());
    }
    if count > MAX_GRID_Z {
        return Err(invalid(OP, format!("a batch of {count} products is more than one launch's {MAX_GRID_Z}")));
    }
    let last = |(so, si): (usize, usize)| {
        (batch.outer - 1).checked_mul(so).zip((batch.inner - 1).checked_mul(si)).and_then(|(x, y)| x.checked_add(y))
    };
    let too_far = |what: &str| invalid(OP, format!("the batch's {what} offsets overflow"));
    let (a_last, b_last) = (last(batch.a).ok_or_else(|| too_far("A"))?, last(batch.b).ok_or_else(|| too_far("B"))?);
    let c_last = (count - 1).checked_mul(batch.c).ok_or_else(|| too_far("C"))?;
    // The last entry is the farthest (strides are non-negative): check it against what is left
    // of each view after its offset (nothing left fails any non-empty operand).
    check_strided(OP, "A", a.len().saturating_sub(a_last), m, k, a_strides)?;
    check_strided(OP, "B", b.len().saturating_sub(b_last), k, n, b_strides)?;
    check_operand(OP, "C", c.len().saturating_sub(c_last), m, n, ldc)?;
    if count > 1 && m > 0 && n > 0 && batch.c < (m - 1) * ldc + n {
        return Err(invalid(OP, format!("C entries {} elements apart overlap ({m} x {n}, ldc {ldc})", batch.c)));
    }
    let v = [
        check_u31(OP, "m", m)?,
        check_u31(OP, "n", n)?,
        check_u31(OP, "k", k)?,
        check_u31(OP, "A row stride", a_strides.rs)?,
        check_u31(OP, "A column stride", a_strides.cs)?,
        check_u31(OP, "B row stride", b_strides.rs)?,
        check_u31(OP, "B column stride", b_strides.cs)?,
        check_u31(OP, "ldc", ldc)?,
        check_u31(OP, "inner batch", batch.inner)?,
        check_u31(OP, "A outer batch stride", batch.a.0)?,
        check_u31(OP, "A inner batch stride", batch.a.1)?,
        check_u31(OP, "B outer batch stride", batch.b.0)?,
        check_u31(OP, "B inner batch stride", batch.b.1)?,
        check_u31(OP, "C batch stride", batch.c)?,
    ];
    if m == 0 || n == 0 {
        return Ok(());
    }
    let grid_y = v[0].div_ceil(F32_TILE);
    if grid_y > 65_535 {
        return Err(invalid(
            OP,
            format!("m = {m} needs more than 65535 block rows"),
        ));
    }
    let f = gpu.function(ModuleId::GemmF32, &GEMM_F32)?;
    let cfg = LaunchConfig {
        grid_dim: (v[1].div_ceil(F32_TILE), grid_y, count as u32),
        block_dim: (F32_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = gpu.launch(&f, &GEMM_F32);
    // gemm_f32(a, b, c, m, n, k, a_rs, a_cs, b_rs, b_cs, ldc, nb_inner, a_bso, a_bsi, b_bso,
    // b_bsi, c_bs)
    l.arg(a).arg(b).arg(&mut *c);
    for x in &v {
        l.arg(x);
    }
    // SAFETY: the arguments match the .param list; the checks above proved every element the
    // kernel touches (for the last and so for every batch entry: A and B inside the logical
    // shape, C inside m x n with stride ldc) is in its view, and that C entries do not overlap.
    unsafe { l.launch(cfg) }
}
