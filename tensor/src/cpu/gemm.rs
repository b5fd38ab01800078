//! Fast CPU GEMM: `C = A·B` or `C += A·B`, for f32, bf16 (widened to f32) and f64, plus f32 with
//! both operands rounded to bf16 ([`gemm_f32_as_bf16`]), which runs on Intel AMX tiles where the
//! CPU has them (the `amx` submodule, its own driver with the same task split) and otherwise
//! through the f32 kernels below.
//!
//! The contract (math, layout, tolerance) is in `brainstacks_kernels::gemm`, whose oracle the tests
//! below check this file against.
//!
//! # Structure (BLIS-style)
//!
//! ```text
//! in parallel, for each task (a rectangle of C, see `plan`):
//!   for each block of NC columns                              (jc)
//!     for each block of KC along k, in increasing order       (pc)
//!       pack B[pc, jc] into NR-column micro-panels            (KC x NC: stays in L2)
//!       for each block of MC rows                             (ic)
//!         pack A[ic, pc] into MR-row micro-panels             (MC x KC)
//!         for each A micro-panel (MR x KC: stays in L1)       (ir)
//!           for each B micro-panel (KC x NR, from L2)         (jr)
//!             micro-kernel: MR x NR tile of C (+)= A_panel · B_panel
//! ```
//!
//! Our micro-kernels keep C rows in vector registers (C is row-major, so a row of the tile is
//! contiguous): each step loads one row of the B micro-panel as vectors and broadcasts MR values of
//! A. In BLIS's terms B is the "vector" operand and A the "broadcast" operand, so, as BLIS does for
//! its broadcast operand, the A micro-panel is the one held in L1 and the packed B block the one
//! held in L2.
//!
//! Products with a single row of A (every projection while decoding one token) skip this loop
//! nest for the `gemv` submodule's: 32 columns of B packed at a time over the whole depth into an
//! L1 panel, the same summation order, so a row gets the same bits alone or inside a product.
//!
//! Packing reads any strides (a transposed operand is just swapped strides) and pads the last
//! micro-panel with zeros, so the micro-kernel always sees full MR x NR tiles; an edge tile is
//! computed into a scratch tile and only its valid part is written back.
//!
//! # Determinism
//!
//! Every entry of C is computed the same way whatever the thread count: for each KC block in
//! increasing order, the micro-kernel sums the block's products in increasing `p` into one
//! accumulator starting at zero (one fused multiply-add per term on the SIMD kernels), then `C` is
//! set to (first block, not accumulating) or incremented by that partial sum. Threads only split
//! the rows and columns of C, never k, so results are bitwise identical for any pool size. The
//! AVX2 and AVX-512 kernels share KC and that order, so they agree bitwise too (a machine
//! without AVX-512 reproduces the same f32 results); only the portable fallback, which does not
//! fuse the multiply-add, rounds differently.
//!
//! # Threads
//!
//! Work runs on the *current* rayon pool (`rayon::current_num_threads`), so a caller picks the
//! thread count with `ThreadPool::install`. C is cut into at most one rectangle per thread and each
//! task packs what it needs itself, so a call forks and joins once. Small products run on the
//! calling thread only.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use bytemuck::{Pod, Zeroable};
use half::bf16;

#[cfg(target_arch = "x86_64")]
mod amx;
mod gemv;

/// A read-only strided matrix view: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
///
/// A row-major `rows` x `cols` matrix has strides `(cols, 1)`; its transpose is the same data with
/// the shape and strides swapped ([`MatRef::t`]), so no copy is ever needed for a transposed operand.
#[derive(Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

// Written by hand: a derive would demand `T: Clone`, but copying a view never copies elements.
impl<T> Clone for MatRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for MatRef<'_, T> {}

impl<'a, T> MatRef<'a, T> {
    /// A contiguous row-major `rows` x `cols` view.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transposed view of the same data.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Panics unless every element `(i, j)` with `i < rows`, `j < cols` indexes inside `data`.
    ///
    /// O(1), so it runs in release too: packing indexes with these strides.
    fn assert_fits(&self, name: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last = (self.rows - 1).checked_mul(self.row_stride).and_then(|r| {
            (self.cols - 1)
                .checked_mul(self.col_stride)
                .and_then(|c| r.checked_add(c))
        });
        assert!(
            matches!(last, Some(last) if last < self.data.len()),
            "gemm: operand {name} ({} x {}, strides {}, {}) does not fit in a slice of length {}",
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
            self.data.len()
        );
    }
}

/// `c` (row-major contiguous, `m` x `n`, length `m * n`) = `a` (`m` x `k`) · `b` (`k` x `n`),
/// overwriting `c` when `accumulate` is false, adding into it when true.
///
/// Accumulates in f32. Panics when `a.cols != b.rows`, `c.len() != a.rows * b.cols`, or an operand's
/// strides reach outside its slice.
pub fn gemm_f32(a: MatRef<'_, f32>, b: MatRef<'_, f32>, c: &mut [f32], accumulate: bool) {
    gemm_with(&f32_kernel(b.cols), a, b, c, accumulate);
}

/// bf16 operands converted to f32 while packing (no full-size converted copy), f32 accumulation and
/// output. Same contract as [`gemm_f32`].
pub fn gemm_bf16(a: MatRef<'_, bf16>, b: MatRef<'_, bf16>, c: &mut [f32], accumulate: bool) {
    gemm_with(&f32_kernel(b.cols), a, b, c, accumulate);
}

/// [`gemm_f32`] with `accumulate = false` into uninitialised memory: every element of `c` is
/// written, so a fresh output buffer needs no zero-fill first.
pub(crate) fn gemm_f32_uninit(a: MatRef<'_, f32>, b: MatRef<'_, f32>, c: &mut [MaybeUninit<f32>]) {
    let direct = reads_a_in_place(&a, b.cols);
    gemm_out(&f32_kernel(b.cols), direct, a, b, Out::Uninit(c));
}

/// [`gemm_bf16`] with `accumulate = false` into uninitialised memory (see [`gemm_f32_uninit`]).
pub(crate) fn gemm_bf16_uninit(a: MatRef<'_, bf16>, b: MatRef<'_, bf16>, c: &mut [MaybeUninit<f32>]) {
    gemm_out(&f32_kernel(b.cols), false, a, b, Out::Uninit(c));
}

/// [`gemm_f64`] with `accumulate = false` into uninitialised memory (see [`gemm_f32_uninit`]).
pub(crate) fn gemm_f64_uninit(a: MatRef<'_, f64>, b: MatRef<'_, f64>, c: &mut [MaybeUninit<f64>]) {
    let direct = reads_a_in_place(&a, b.cols);
    gemm_out(&f64_kernel(), direct, a, b, Out::Uninit(c));
}

/// [`gemm_f32`] with any B operand that packs itself (e.g. NF4 weights decoded while packing).
pub(crate) fn gemm_f32_packed<B: PackB<f32>>(a: MatRef<'_, f32>, b: B, c: &mut [f32], accumulate: bool) {
    gemm_with(&f32_kernel(b.cols()), a, b, c, accumulate);
}

/// [`gemm_bf16`] with any B operand that packs itself into f32 panels.
pub(crate) fn gemm_bf16_packed<B: PackB<f32>>(a: MatRef<'_, bf16>, b: B, c: &mut [f32], accumulate: bool) {
    gemm_with(&f32_kernel(b.cols()), a, b, c, accumulate);
}

/// [`gemm_f64`] with any B operand that packs itself into f64 panels.
pub(crate) fn gemm_f64_packed<B: PackB<f64>>(a: MatRef<'_, f64>, b: B, c: &mut [f64], accumulate: bool) {
    gemm_with(&f64_kernel(), a, b, c, accumulate);
}

/// The name of the f32 micro-kernel this CPU uses for products with `n` columns, e.g.
/// `f32-avx512-12x32` (for benchmark logs).
pub fn f32_kernel_name(n: usize) -> &'static str {
    f32_kernel(n).name
}

/// f64 GEMM (used for gradient checks): same blocking and threading, a simpler micro-kernel.
/// Same contract as [`gemm_f32`], accumulating in f64.
pub fn gemm_f64(a: MatRef<'_, f64>, b: MatRef<'_, f64>, c: &mut [f64], accumulate: bool) {
    gemm_with(&f64_kernel(), a, b, c, accumulate);
}

/// `c` = `a` · `b` (or `+=` when `accumulate`) with both operands rounded to bf16 first (round to
/// nearest even): the products of two bf16 values are exact in f32 and are summed in f32. This is
/// [`MatmulPrecision::Bf16`](crate::MatmulPrecision) on the CPU. Same contract as [`gemm_f32`].
///
/// Runs on AMX tiles where the CPU and the system allow it ([`amx_available`]); elsewhere the
/// operands are rounded while packing for the f32 kernels. Each path is deterministic and
/// independent of the thread count; the two agree within the f32 tolerance, not bit for bit (the
/// tiles order their internal sums their own way), so results differ between machines with and
/// without AMX.
pub fn gemm_f32_as_bf16(a: MatRef<'_, f32>, b: MatRef<'_, f32>, c: &mut [f32], accumulate: bool) {
    gemm_as_bf16(a, b, Out::Init(c, accumulate));
}

/// [`gemm_f32_as_bf16`] into uninitialised memory (see [`gemm_f32_uninit`]).
pub(crate) fn gemm_f32_as_bf16_uninit(a: MatRef<'_, f32>, b: MatRef<'_, f32>, c: &mut [MaybeUninit<f32>]) {
    gemm_as_bf16(a, b, Out::Uninit(c));
}

/// [`gemm_f32_as_bf16`] with any B operand that packs itself into f32 panels (NF4 weights).
pub(crate) fn gemm_f32_as_bf16_packed<B: PackB<f32>>(a: MatRef<'_, f32>, b: B, c: &mut [f32], accumulate: bool) {
    gemm_as_bf16(a, b, Out::Init(c, accumulate));
}

/// Whether [`gemm_f32_as_bf16`] runs on AMX tiles in this process (Intel Sapphire Rapids or later,
/// Linux 5.16 or later, `BRAINSTACKS_NO_AMX` unset).
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return amx::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The kernel [`gemm_f32_as_bf16`] uses for products with `n` columns (for benchmark logs).
pub fn bf16_operands_kernel_name(n: usize) -> &'static str {
    if amx_available() {
        return "bf16-amx-32x32";
    }
    match f32_kernel(n).name {
        "f32-avx512-12x32" => "bf16-rounded-avx512-12x32",
        "f32-avx512-24x16" => "bf16-rounded-avx512-24x16",
        "f32-avx2-6x16" => "bf16-rounded-avx2-6x16",
        _ => "bf16-rounded-portable-4x8",
    }
}

fn gemm_as_bf16<B: PackB<f32>>(a: MatRef<'_, f32>, b: B, out: Out<'_, f32>) {
    #[cfg(target_arch = "x86_64")]
    if amx::available() {
        return amx::gemm(a, b, out);
    }
    gemm_rounded_for_f32_kernels(a, b, out);
}

/// The path of [`gemm_f32_as_bf16`] without AMX: operands rounded while packing for the f32
/// kernels.
fn gemm_rounded_for_f32_kernels<B: PackB<f32>>(a: MatRef<'_, f32>, b: B, out: Out<'_, f32>) {
    let a = MatRef {
        data: bytemuck::cast_slice::<f32, RoundedToBf16>(a.data),
        rows: a.rows,
        cols: a.cols,
        row_stride: a.row_stride,
        col_stride: a.col_stride,
    };
    gemm_out(&f32_kernel(b.cols()), false, a, RoundedPanels(b), out);
}

/// `x` rounded to bf16 (to nearest, ties to even), as bits. NaN stays NaN (made quiet), infinities
/// stay infinite, and values past the largest bf16 round to infinity. Branch-free, so loops over
/// it vectorise.
#[inline(always)]
pub(crate) fn round_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    let is_nan = (bits & 0x7fff_ffff) > 0x7f80_0000;
    (if is_nan { quiet_nan } else { rounded }) as u16
}

/// `x` rounded to bf16 and widened back to f32.
#[inline(always)]
pub(crate) fn round_through_bf16(x: f32) -> f32 {
    f32::from_bits(u32::from(round_to_bf16_bits(x)) << 16)
}

/// An f32 that packing rounds to bf16 (the A operand of the fallback of [`gemm_f32_as_bf16`]).
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(transparent)]
struct RoundedToBf16(f32);

impl Widen<f32> for RoundedToBf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        round_through_bf16(self.0)
    }
}

/// A B operand whose packed panels are rounded to bf16 (the fallback of [`gemm_f32_as_bf16`]).
struct RoundedPanels<B>(B);

impl<B: PackB<f32>> PackB<f32> for RoundedPanels<B> {
    fn rows(&self) -> usize {
        self.0.rows()
    }
    fn cols(&self) -> usize {
        self.0.cols()
    }
    fn assert_fits(&self) {
        self.0.assert_fits()
    }
    fn pack(&self, depth: std::ops::Range<usize>, cols: std::ops::Range<usize>, nr: usize, out: &mut [f32]) {
        self.0.pack(depth, cols, nr, out);
        for x in out.iter_mut() {
            *x = round_through_bf16(*x);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Micro-kernels and their blocking
// ---------------------------------------------------------------------------------------------

/// The accumulation types the driver is generic over.
pub(crate) trait Acc: Pod + Send + Sync + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    /// `self * y + acc` rounded once (the micro-kernels' fused multiply-add).
    fn mul_add(self, y: Self, acc: Self) -> Self;
}
impl Acc for f32 {
    #[inline(always)]
    fn mul_add(self, y: f32, acc: f32) -> f32 {
        f32::mul_add(self, y, acc)
    }
}
impl Acc for f64 {
    #[inline(always)]
    fn mul_add(self, y: f64, acc: f64) -> f64 {
        f64::mul_add(self, y, acc)
    }
}

/// Computes one `mr` x `nr` tile: `acc[i][j] = sum_{p < kc} A(i, p) * b[p * nr + j]` (in
/// increasing `p`, one accumulator per entry, starting from zero), then stores
/// `c[i * ldc + j] = acc[i][j]`, or `c[i * ldc + j] += acc[i][j]` when `load_c` is set.
///
/// `A(i, p)` is `a[p * mr + i]` for a packed micro-panel ([`MicroKernel::run`], `lda` unused), or
/// `a[i * lda + p]` for rows read in place from a matrix contiguous along k
/// ([`MicroKernel::run_direct`]). Both read the same values in the same order, so they agree to the
/// bit.
///
/// # Safety
/// `a` must be valid for the `mr` x `kc` reads above, `b` for `kc * nr` reads, and `c` for reads
/// and writes of the `mr` x `nr` tile at row stride `ldc`; the CPU must have the kernel's target
/// features.
type KernelFn<E> = unsafe fn(
    kc: usize,
    a: *const E,
    lda: usize,
    b: *const E,
    c: *mut E,
    ldc: usize,
    load_c: bool,
);

/// Where element `(i, p)` of an A micro-panel is: packed (`a[p * MR + i]`) or in place
/// (`a[i * lda + p]`). A constant, so each kernel compiles once per layout.
#[inline(always)]
const fn a_index<const MR: usize, const DIRECT: bool>(i: usize, p: usize, lda: usize) -> usize {
    if DIRECT { i * lda + p } else { p * MR + i }
}

/// A micro-kernel with the tile shape it computes and the cache blocking tuned for it.
#[derive(Clone, Copy)]
struct MicroKernel<E> {
    name: &'static str,
    /// Rows of the C tile (A values broadcast per step).
    mr: usize,
    /// Columns of the C tile (B values loaded as vectors per step).
    nr: usize,
    /// Depth of one packed block: the A micro-panel (`mr * kc`) should sit in L1 next to a streamed
    /// B micro-panel.
    kc: usize,
    /// Rows of A packed at once: the packed A block is consumed right after packing, one L1
    /// micro-panel at a time, so this mostly bounds the scratch memory.
    mc: usize,
    /// Columns of B packed at once: the `kc * nc` block is re-read for every A micro-panel, so it
    /// should stay in L2.
    nc: usize,
    /// Whether each step is one fused multiply-add (the SIMD kernels) or a multiply then an add
    /// (the portable ones): the one-row path (`gemv`) must round as the kernel does.
    fused: bool,
    run: KernelFn<E>,
    /// The same tile reading A in place (see [`KernelFn`]): for products whose A is contiguous
    /// along k and whose B is narrow, where packing A would cost about as much as the product.
    run_direct: KernelFn<E>,
}

/// Largest `mr * nr` of any kernel: the size of the stack tile used for edge tiles.
const MAX_TILE: usize = 24 * 16;

/// The fastest f32 kernel this CPU supports for products with `n` columns.
fn f32_kernel(n: usize) -> MicroKernel<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return if n <= 16 {
                x86::F32_AVX512_NARROW
            } else {
                x86::F32_AVX512
            };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return x86::F32_AVX2;
        }
    }
    F32_PORTABLE
}

/// The fastest f64 kernel this CPU supports.
fn f64_kernel() -> MicroKernel<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return x86::F64_AVX2;
        }
    }
    F64_PORTABLE
}

/// Every f32 kernel this CPU can run (the tests check each one, not only the fastest).
#[cfg(test)]
fn f32_kernels_available() -> Vec<MicroKernel<f32>> {
    #[cfg(target_arch = "x86_64")]
    let simd = [
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
            .then_some(x86::F32_AVX2),
        is_x86_feature_detected!("avx512f").then_some(x86::F32_AVX512),
        is_x86_feature_detected!("avx512f").then_some(x86::F32_AVX512_NARROW),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let simd: [Option<MicroKernel<f32>>; 0] = [];
    std::iter::once(F32_PORTABLE)
        .chain(simd.into_iter().flatten())
        .collect()
}

/// Every f64 kernel this CPU can run.
#[cfg(test)]
fn f64_kernels_available() -> Vec<MicroKernel<f64>> {
    #[cfg(target_arch = "x86_64")]
    let simd = [
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
            .then_some(x86::F64_AVX2),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let simd: [Option<MicroKernel<f64>>; 0] = [];
    std::iter::once(F64_PORTABLE)
        .chain(simd.into_iter().flatten())
        .collect()
}

/// Portable tile shape: 4 x 8 accumulators fit the 16 vector registers of SSE2 or NEON as f32.
const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 8;

/// Portable f32 fallback for CPUs without AVX2+FMA (and for non-x86 targets).
const F32_PORTABLE: MicroKernel<f32> = MicroKernel {
    name: "f32-portable-4x8",
    mr: PORTABLE_MR,
    nr: PORTABLE_NR,
    kc: 256,
    mc: 256,
    nc: 1024,
    fused: false,
    run: kernel_portable::<f32, PORTABLE_MR, PORTABLE_NR, false>,
    run_direct: kernel_portable::<f32, PORTABLE_MR, PORTABLE_NR, true>,
};

/// Portable f64 fallback.
const F64_PORTABLE: MicroKernel<f64> = MicroKernel {
    name: "f64-portable-4x8",
    mr: PORTABLE_MR,
    nr: PORTABLE_NR,
    kc: 256,
    mc: 256,
    nc: 512,
    fused: false,
    run: kernel_portable::<f64, PORTABLE_MR, PORTABLE_NR, false>,
    run_direct: kernel_portable::<f64, PORTABLE_MR, PORTABLE_NR, true>,
};

/// The tile loop written once for any element type and tile shape; `fmadd(a, b, acc)` decides
/// whether a step is fused. `MR` and `NR` are constants, so the compiler fully unrolls the tile and
/// keeps the accumulators in registers.
///
/// # Safety
/// As [`KernelFn`], with tile shape `MR` x `NR`.
#[inline(always)]
unsafe fn tile_generic<E: Acc, const MR: usize, const NR: usize, const DIRECT: bool>(
    kc: usize,
    a: *const E,
    lda: usize,
    b: *const E,
    c: *mut E,
    ldc: usize,
    load_c: bool,
    fmadd: impl Fn(E, E, E) -> E,
) {
    let mut acc = [[E::zeroed(); NR]; MR];
    for p in 0..kc {
        // SAFETY: p < kc, so row p of the B panel is inside the kc * NR reads and every A(i, p)
        // inside the A reads the caller guarantees.
        let bp = unsafe { &*b.add(p * NR).cast::<[E; NR]>() };
        for i in 0..MR {
            // SAFETY: as above.
            let ai = unsafe { *a.add(a_index::<MR, DIRECT>(i, p, lda)) };
            for j in 0..NR {
                acc[i][j] = fmadd(ai, bp[j], acc[i][j]);
            }
        }
    }
    for i in 0..MR {
        for j in 0..NR {
            // SAFETY: (i, j) is inside the MR x NR tile the caller guarantees at row stride ldc.
            let dst = unsafe { &mut *c.add(i * ldc + j) };
            *dst = if load_c { *dst + acc[i][j] } else { acc[i][j] };
        }
    }
}

/// Portable kernel: separate multiply and add, because `mul_add` without hardware FMA is a slow
/// library call.
///
/// # Safety
/// As [`KernelFn`].
unsafe fn kernel_portable<
    E: Acc + std::ops::Mul<Output = E>,
    const MR: usize,
    const NR: usize,
    const DIRECT: bool,
>(
    kc: usize,
    a: *const E,
    lda: usize,
    b: *const E,
    c: *mut E,
    ldc: usize,
    load_c: bool,
) {
    // SAFETY: forwarded contract.
    unsafe {
        tile_generic::<E, MR, NR, DIRECT>(kc, a, lda, b, c, ldc, load_c, |x, y, acc| acc + x * y)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! x86-64 micro-kernels, chosen at run time by `is_x86_feature_detected!`.
    //!
    //! Cache sizes behind the blocking (Sapphire Rapids, typical of recent x86 servers): L1d 48 KiB,
    //! L2 2 MiB per core, a large shared L3.

    use std::arch::x86_64::*;

    use half::bf16;

    use super::{Lanes, MicroKernel, Widen, tile_generic};

    /// 12 x 32 tile: 24 zmm accumulators + 2 for the B row + 1 broadcast, out of 32 registers.
    /// Each step issues 24 independent FMAs against 2 vector loads and 12 broadcasts, enough to
    /// keep two FMA ports busy through their 4-cycle latency.
    ///
    /// Blocking: the A micro-panel is 12 x 256 x 4 B = 12 KiB (L1, next to the 128 B B row being
    /// streamed per step); the packed B block is 256 x 1024 x 4 B = 1 MiB, half of L2, leaving
    /// room for the 240 x 256 x 4 B = 240 KiB packed A block and the C tiles.
    pub(super) const F32_AVX512: MicroKernel<f32> = MicroKernel {
        name: "f32-avx512-12x32",
        mr: 12,
        nr: 32,
        kc: 256,
        mc: 240,
        nc: 1024,
        fused: true,
        run: kernel_f32_avx512::<12, 2, false>,
        run_direct: kernel_f32_avx512::<12, 2, true>,
    };

    /// 24 x 16 tile for narrow products (n <= 16, e.g. a rank-16 LoRA projection), where the
    /// 12 x 32 tile would compute half zeros: 24 accumulators, one B vector and 24 broadcasts per
    /// step. Same KC, so an entry gets bitwise the same value from either AVX-512 kernel.
    pub(super) const F32_AVX512_NARROW: MicroKernel<f32> = MicroKernel {
        name: "f32-avx512-24x16",
        mr: 24,
        nr: 16,
        kc: 256,
        mc: 240,
        nc: 1024,
        fused: true,
        run: kernel_f32_avx512::<24, 1, false>,
        run_direct: kernel_f32_avx512::<24, 1, true>,
    };

    const AVX2_MR: usize = 6;
    const AVX2_NR: usize = 16;

    /// 6 x 16 tile: 12 ymm accumulators + 2 for the B row + 1 broadcast, out of 16 registers.
    /// Blocking as for AVX-512: A micro-panel 6 KiB, B block 1 MiB.
    pub(super) const F32_AVX2: MicroKernel<f32> = MicroKernel {
        name: "f32-avx2-6x16",
        mr: AVX2_MR,
        nr: AVX2_NR,
        kc: 256,
        mc: 240,
        nc: 1024,
        fused: true,
        run: kernel_f32_avx2::<false>,
        run_direct: kernel_f32_avx2::<true>,
    };

    /// f64, 4 x 8 tile through the generic loop compiled for AVX2+FMA (the compiler turns each
    /// row of 8 into two ymm FMAs). Speed is secondary for f64; this is simply not slow.
    /// B block 256 x 512 x 8 B = 1 MiB.
    pub(super) const F64_AVX2: MicroKernel<f64> = MicroKernel {
        name: "f64-avx2-4x8",
        mr: 4,
        nr: 8,
        kc: 256,
        mc: 256,
        nc: 512,
        fused: true,
        run: kernel_f64_avx2::<false>,
        run_direct: kernel_f64_avx2::<true>,
    };

    /// The AVX-512 tile loop for an `MR` x `16 * NV` tile: `MR * NV` zmm accumulators.
    ///
    /// # Safety
    /// As [`super::KernelFn`] with `mr = MR`, `nr = 16 * NV`; the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_f32_avx512<const MR: usize, const NV: usize, const DIRECT: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
    ) {
        let nr = 16 * NV;
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        for p in 0..kc {
            // SAFETY: p < kc: row p of the packed B panel is inside the caller's kc * nr reads.
            // Unaligned loads, so no alignment is assumed.
            let bv: [__m512; NV] = unsafe {
                let bp = b.add(p * nr);
                std::array::from_fn(|v| _mm512_loadu_ps(bp.add(16 * v)))
            };
            for i in 0..MR {
                // SAFETY: i < MR, p < kc: A(i, p) is inside the caller's A reads.
                let ai =
                    _mm512_set1_ps(unsafe { *a.add(super::a_index::<MR, DIRECT>(i, p, lda)) });
                for v in 0..NV {
                    acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, &sum) in row.iter().enumerate() {
                // SAFETY: row i, columns 16v..16v + 16 < nr of the tile the caller guarantees at
                // row stride ldc.
                unsafe {
                    let ci = c.add(i * ldc + 16 * v);
                    let out = if load_c {
                        _mm512_add_ps(_mm512_loadu_ps(ci), sum)
                    } else {
                        sum
                    };
                    _mm512_storeu_ps(ci, out);
                }
            }
        }
    }

    /// # Safety
    /// As [`super::KernelFn`]; the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_f32_avx2<const DIRECT: bool>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        load_c: bool,
    ) {
        const MR: usize = AVX2_MR;
        const NR: usize = AVX2_NR;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for p in 0..kc {
            // SAFETY: as in the AVX-512 kernel.
            let (b0, b1) = unsafe {
                let bp = b.add(p * NR);
                (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)))
            };
            for i in 0..MR {
                // SAFETY: i < MR, p < kc: A(i, p) is inside the caller's A reads.
                let ai =
                    _mm256_set1_ps(unsafe { *a.add(super::a_index::<MR, DIRECT>(i, p, lda)) });
                acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row i, columns 0..16 of the tile the caller guarantees at row stride ldc.
            unsafe {
                let ci = c.add(i * ldc);
                let (mut r0, mut r1) = (row[0], row[1]);
                if load_c {
                    r0 = _mm256_add_ps(_mm256_loadu_ps(ci), r0);
                    r1 = _mm256_add_ps(_mm256_loadu_ps(ci.add(8)), r1);
                }
                _mm256_storeu_ps(ci, r0);
                _mm256_storeu_ps(ci.add(8), r1);
            }
        }
    }

    /// # Safety
    /// As [`super::KernelFn`]; the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kernel_f64_avx2<const DIRECT: bool>(
        kc: usize,
        a: *const f64,
        lda: usize,
        b: *const f64,
        c: *mut f64,
        ldc: usize,
        load_c: bool,
    ) {
        // SAFETY: forwarded contract; `mul_add` compiles to a single FMA with the fma feature on.
        unsafe {
            tile_generic::<f64, 4, 8, DIRECT>(kc, a, lda, b, c, ldc, load_c, |x, y, acc| {
                x.mul_add(y, acc)
            })
        }
    }

    /// Whether [`fused_lane_sums_with`] takes these lanes: exactly `gemv::WIDTH` of them, each
    /// contiguous along k, and a depth that is a multiple of 8.
    fn fused_lanes_fit(a: &[f32], lanes: &Lanes) -> bool {
        lanes.valid == super::gemv::WIDTH && lanes.depth_stride == 1 && a.len().is_multiple_of(8)
    }

    /// [`super::Widen::fused_lane_sums`] for f32: `None` unless the CPU has AVX and FMA and the
    /// lanes fit ([`fused_lanes_fit`]).
    pub(super) fn fused_lane_sums_f32(a: &[f32], src: &[f32], lanes: &Lanes) -> Option<[f32; super::gemv::WIDTH]> {
        if !(fused_lanes_fit(a, lanes) && is_x86_feature_detected!("avx") && is_x86_feature_detected!("fma")) {
            return None;
        }
        // SAFETY: AVX and FMA are present (checked just above).
        Some(unsafe { fused_lane_sums_f32_avx(a, src, lanes) })
    }

    /// # Safety
    /// The CPU must have AVX and FMA; the lanes fit ([`fused_lanes_fit`]).
    #[target_feature(enable = "avx,fma")]
    unsafe fn fused_lane_sums_f32_avx(a: &[f32], src: &[f32], lanes: &Lanes) -> [f32; super::gemv::WIDTH] {
        // SAFETY: the caller's contract; `load_transposed_8x8` needs only AVX and is called on 8
        // readable values per row.
        unsafe { fused_lane_sums_with(a, src, lanes, |rows, p| load_transposed_8x8(rows, p)) }
    }

    /// [`super::Widen::fused_lane_sums`] for bf16: `None` unless the CPU has AVX2 and FMA and the
    /// lanes fit ([`fused_lanes_fit`]).
    pub(super) fn fused_lane_sums_bf16(a: &[f32], src: &[bf16], lanes: &Lanes) -> Option<[f32; super::gemv::WIDTH]> {
        if !(fused_lanes_fit(a, lanes) && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return None;
        }
        // SAFETY: AVX2 and FMA are present (checked just above).
        Some(unsafe { fused_lane_sums_bf16_avx2(a, src, lanes) })
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; the lanes fit ([`fused_lanes_fit`]).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fused_lane_sums_bf16_avx2(a: &[f32], src: &[bf16], lanes: &Lanes) -> [f32; super::gemv::WIDTH] {
        // SAFETY: the caller's contract; `load_transposed_bf16_8x8` needs AVX2 and is called on 8
        // readable values per row.
        unsafe { fused_lane_sums_with(a, src, lanes, |rows, p| load_transposed_bf16_8x8(rows, p)) }
    }

    /// The lanes in groups of 8, 8 depths at a time: each block loaded transposed (and widened
    /// to f32) by `load` and multiplied into one accumulator vector per group, depth by depth, so
    /// each lane's sum runs in increasing `p` with one FMA per term, as the panel sums of `gemv`
    /// do.
    ///
    /// Two groups (16 rows of the weight) sweep the block's whole depth together, then the next
    /// two: two independent chains of FMAs hide each other's latency, and reading 16 rows at once
    /// instead of all 32 made the f32 decode benchmark about 5% faster (two alternated pairs: 9.1
    /// to 9.8 ms with 32, 8.3 to 9.0 with 16; one group alone: 10.2 ms, the chain's latency shows).
    ///
    /// Inlined into its callers, which enable FMA and whatever `load` needs.
    ///
    /// # Safety
    /// The CPU must have AVX and FMA; the lanes fit ([`fused_lanes_fit`]); `load(rows, p)` is
    /// sound whenever each `rows[i].add(p)` starts 8 readable values.
    #[inline(always)]
    unsafe fn fused_lane_sums_with<T>(
        a: &[f32],
        src: &[T],
        lanes: &Lanes,
        load: impl Fn(&[*const T; 8], usize) -> [__m256; 8],
    ) -> [f32; super::gemv::WIDTH] {
        const GROUPS: usize = super::gemv::WIDTH / 8;
        const SWEEP: usize = 2;
        // `chunks_exact_mut(SWEEP)` below would silently skip a partial sweep.
        const _: () = assert!(GROUPS.is_multiple_of(SWEEP));
        let kc = a.len();
        // Bounds are checked here, once per lane: each row holds exactly that lane's kc values.
        // `groups[g][i]` is lane 8g + i, the lane of `acc[g]`'s element i.
        let groups: [[*const T; 8]; GROUPS] = std::array::from_fn(|g| {
            std::array::from_fn(|i| {
                let start = lanes.base + (8 * g + i) * lanes.lane_stride;
                src[start..start + kc].as_ptr()
            })
        });
        // SAFETY (every intrinsic below): the caller guarantees AVX and FMA.
        let mut acc = [unsafe { _mm256_setzero_ps() }; GROUPS];
        for (sums, rows) in acc.chunks_exact_mut(SWEEP).zip(groups.chunks_exact(SWEEP)) {
            for p in (0..kc).step_by(8) {
                let depth = &a[p..p + 8];
                for (sum, group) in sums.iter_mut().zip(rows) {
                    // p + 8 <= kc: 8 values inside each row, which `load` may read.
                    let by_depth = load(group, p);
                    for (&x, v) in depth.iter().zip(by_depth) {
                        *sum = unsafe { _mm256_fmadd_ps(_mm256_set1_ps(x), v, *sum) };
                    }
                }
            }
        }
        let mut out = [0f32; super::gemv::WIDTH];
        for (chunk, v) in out.chunks_exact_mut(8).zip(acc) {
            // SAFETY: `chunk` is 8 writable f32 values.
            unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), v) };
        }
        out
    }

    /// [`super::Widen::pack_lanes_along_depth`] for f32.
    pub(super) fn transpose_lanes_f32(src: &[f32], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        if is_x86_feature_detected!("avx") {
            // SAFETY: AVX is present (checked just above).
            return unsafe { transpose_lanes_f32_avx(src, lanes, width, panel) };
        }
        // SAFETY: `transpose_lanes` calls the loader only on 4 readable f32 values; SSE is
        // always present on x86-64.
        transpose_lanes(src, lanes, width, panel, |p| unsafe { _mm_loadu_ps(p) });
    }

    /// [`transpose_lanes_f32`] 8 lanes x 8 depths at a time (see [`transpose_lanes_8x8`]).
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[target_feature(enable = "avx")]
    unsafe fn transpose_lanes_f32_avx(src: &[f32], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        // SAFETY: AVX is enabled; `transpose_lanes_8x8` calls the loader only on 8 readable f32
        // values.
        unsafe { transpose_lanes_8x8(src, lanes, width, panel, |p| _mm256_loadu_ps(p)) }
    }

    /// [`super::Widen::pack_lanes_along_depth`] for bf16: 8 lanes x 8 depths at a time with AVX2
    /// (see [`transpose_lanes_8x8`]), else 4 x 4 with SSE2. Either way a value widens by moving
    /// its 16-bit pattern to the top half of a 32-bit lane (see `Widen::widen` for bf16).
    pub(super) fn transpose_lanes_bf16(src: &[bf16], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            return unsafe { transpose_lanes_bf16_avx2(src, lanes, width, panel) };
        }
        transpose_lanes(src, lanes, width, panel, |p| {
            // SAFETY: `transpose_lanes` calls the loader only on 4 readable bf16 values, which
            // are the 8 bytes this unaligned 64-bit load reads; SSE2 is always present on x86-64.
            unsafe {
                let bits = _mm_loadl_epi64(p.cast::<__m128i>());
                _mm_castsi128_ps(_mm_unpacklo_epi16(_mm_setzero_si128(), bits))
            }
        });
    }

    /// [`transpose_lanes_bf16`] 8 lanes x 8 depths at a time: each 16-byte load of 8 bf16 values
    /// is zero-extended to 32-bit lanes and shifted into their top halves (the exact widening).
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn transpose_lanes_bf16_avx2(src: &[bf16], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        // SAFETY: AVX2 (hence AVX) is enabled; `transpose_lanes_8x8` calls the loader only on 8
        // readable bf16 values, the 16 bytes this unaligned load reads.
        unsafe {
            transpose_lanes_8x8(src, lanes, width, panel, |p| {
                let bits = _mm_loadu_si128(p.cast::<__m128i>());
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(bits)))
            })
        }
    }

    /// Packs lanes that are each contiguous along k into a panel (the panel is the transpose of
    /// the source) 8 lanes x 8 depths at a time: 8 loads (`load8` widening 8 consecutive values
    /// to f32), 24 shuffles and 8 stores per 64 elements, against 16 + 32 + 16 for the 4 x 4 SSE
    /// blocks of [`transpose_lanes`]. Measured on f32, the shuffles rather than the loads bounded
    /// a one-row product packing this way, so a transposed f32 or bf16 weight skips the panel in
    /// `gemv` ([`fused_lane_sums_f32`], [`fused_lane_sums_bf16`]). Leftover depths and lanes go
    /// through the scalar path.
    ///
    /// Inlined into its callers, which enable AVX (the shuffles) and whatever `load8` needs.
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[inline(always)]
    unsafe fn transpose_lanes_8x8<T: Widen<f32>>(
        src: &[T],
        lanes: &Lanes,
        width: usize,
        panel: &mut [f32],
        load8: impl Fn(*const T) -> __m256,
    ) {
        let kc = panel.len() / width;
        let (kc8, lanes8) = (kc - kc % 8, lanes.valid - lanes.valid % 8);
        for l0 in (0..lanes8).step_by(8) {
            // Bounds are checked here, once per lane: each `row` is exactly that lane's kc values.
            let rows: [&[T]; 8] = std::array::from_fn(|i| {
                let start = lanes.base + (l0 + i) * lanes.lane_stride;
                &src[start..start + kc]
            });
            for p in (0..kc8).step_by(8) {
                // p + 8 <= kc8 <= kc: each load reads 8 values inside its `row`.
                let r: [__m256; 8] = std::array::from_fn(|i| load8(rows[i][p..p + 8].as_ptr()));
                // SAFETY: register-only AVX shuffles; the caller guarantees AVX.
                let out = unsafe { transpose_8x8(r) };
                for (d, v) in out.into_iter().enumerate() {
                    // Lanes l0..l0 + 8 <= valid <= width of depth row p + d < kc: inside `panel`.
                    let at = (p + d) * width + l0;
                    let slot = &mut panel[at..at + 8];
                    // SAFETY: `slot` is 8 writable f32 values; the caller guarantees AVX.
                    unsafe { _mm256_storeu_ps(slot.as_mut_ptr(), v) };
                }
            }
            for p in kc8..kc {
                for i in 0..8 {
                    panel[p * width + l0 + i] = rows[i][p].widen();
                }
            }
        }
        super::scatter_lanes(src, lanes, lanes8, width, panel, T::widen);
    }

    /// `out[d][l] = rows[l][p + d]` for 8 lanes and depths: each 256-bit register is loaded as two
    /// halves (lane i in the low half, lane i + 4 in the high one, the insert from memory takes no
    /// shuffle), so only the in-half 4 x 4 transposes remain: 16 shuffles instead of
    /// [`transpose_8x8`]'s 24.
    ///
    /// # Safety
    /// The CPU must have AVX; `rows[l].add(p)` starts 8 readable f32 values for every `l`.
    #[inline(always)]
    unsafe fn load_transposed_8x8(rows: &[*const f32; 8], p: usize) -> [__m256; 8] {
        // SAFETY: the caller's contract.
        unsafe {
            let half = |q: usize, i: usize| {
                let lo = _mm_loadu_ps(rows[i].add(p + 4 * q));
                let hi = _mm_loadu_ps(rows[i + 4].add(p + 4 * q));
                _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(lo), hi)
            };
            let low = transpose_4x4_in_halves([half(0, 0), half(0, 1), half(0, 2), half(0, 3)]);
            let high = transpose_4x4_in_halves([half(1, 0), half(1, 1), half(1, 2), half(1, 3)]);
            [low[0], low[1], low[2], low[3], high[0], high[1], high[2], high[3]]
        }
    }

    /// [`load_transposed_8x8`] for bf16, widened to f32 on the way and with no more shuffles:
    /// each 256-bit register holds 8 values of lane i (low half) and of lane i + 4 (high half),
    /// and each of its 32-bit words a pair of depths, `2j` in the low 16 bits and `2j + 1` in the
    /// high ones. A bf16 is the top half of its f32, so the even depths widen by a shift left and
    /// the odd ones by clearing the low 16 bits (no shuffle either way); each set is then one
    /// in-half 4 x 4 transpose.
    ///
    /// # Safety
    /// The CPU must have AVX2; `rows[l].add(p)` starts 8 readable bf16 values for every `l`.
    #[inline(always)]
    unsafe fn load_transposed_bf16_8x8(rows: &[*const bf16; 8], p: usize) -> [__m256; 8] {
        // SAFETY: the caller's contract.
        unsafe {
            let pair = |i: usize| {
                let lo = _mm_loadu_si128(rows[i].add(p).cast::<__m128i>());
                let hi = _mm_loadu_si128(rows[i + 4].add(p).cast::<__m128i>());
                _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
            };
            let words = [pair(0), pair(1), pair(2), pair(3)];
            let top_halves = _mm256_set1_epi32(0xFFFF_0000_u32 as i32);
            let even = words.map(|w| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w)));
            let odd = words.map(|w| _mm256_castsi256_ps(_mm256_and_si256(w, top_halves)));
            let (e, o) = (transpose_4x4_in_halves(even), transpose_4x4_in_halves(odd));
            [e[0], o[0], e[1], o[1], e[2], o[2], e[3], o[3]]
        }
    }

    /// Within each 128-bit half, 4 vectors of 4 (`v[lane][depth]`) transposed to
    /// `out[depth][lane]`: 8 shuffles.
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[inline(always)]
    unsafe fn transpose_4x4_in_halves(v: [__m256; 4]) -> [__m256; 4] {
        // SAFETY: register-only AVX shuffles; the caller guarantees AVX.
        unsafe {
            let t = [
                _mm256_unpacklo_ps(v[0], v[1]), // v0[0] v1[0] v0[1] v1[1], in each half
                _mm256_unpackhi_ps(v[0], v[1]), // v0[2] v1[2] v0[3] v1[3]
                _mm256_unpacklo_ps(v[2], v[3]),
                _mm256_unpackhi_ps(v[2], v[3]),
            ];
            [
                _mm256_shuffle_ps::<0x44>(t[0], t[2]), // depth 0: v0 v1 v2 v3
                _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            ]
        }
    }

    /// Eight vectors of 8 (`r[lane][depth]`) transposed to `out[depth][lane]`.
    ///
    /// # Safety
    /// The CPU must have AVX.
    #[inline(always)]
    unsafe fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
        // Within each 128-bit half: pairs of lanes interleaved, then quads of lanes gathered per
        // depth; the halves hold depths 0..4 and 4..8, which the last step swaps into place.
        // SAFETY: register-only AVX shuffles; the caller guarantees AVX.
        unsafe {
            let t = [
                _mm256_unpacklo_ps(r[0], r[1]), // r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] ..
                _mm256_unpackhi_ps(r[0], r[1]), // r0[2] r1[2] r0[3] r1[3] | r0[6] ..
                _mm256_unpacklo_ps(r[2], r[3]),
                _mm256_unpackhi_ps(r[2], r[3]),
                _mm256_unpacklo_ps(r[4], r[5]),
                _mm256_unpackhi_ps(r[4], r[5]),
                _mm256_unpacklo_ps(r[6], r[7]),
                _mm256_unpackhi_ps(r[6], r[7]),
            ];
            let q = [
                _mm256_shuffle_ps::<0x44>(t[0], t[2]), // lanes 0..4 at depth 0 | 4
                _mm256_shuffle_ps::<0xEE>(t[0], t[2]), // depth 1 | 5
                _mm256_shuffle_ps::<0x44>(t[1], t[3]), // depth 2 | 6
                _mm256_shuffle_ps::<0xEE>(t[1], t[3]), // depth 3 | 7
                _mm256_shuffle_ps::<0x44>(t[4], t[6]), // lanes 4..8, likewise
                _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
            ];
            [
                _mm256_permute2f128_ps::<0x20>(q[0], q[4]), // depth 0: lanes 0..8
                _mm256_permute2f128_ps::<0x20>(q[1], q[5]),
                _mm256_permute2f128_ps::<0x20>(q[2], q[6]),
                _mm256_permute2f128_ps::<0x20>(q[3], q[7]),
                _mm256_permute2f128_ps::<0x31>(q[0], q[4]), // depth 4
                _mm256_permute2f128_ps::<0x31>(q[1], q[5]),
                _mm256_permute2f128_ps::<0x31>(q[2], q[6]),
                _mm256_permute2f128_ps::<0x31>(q[3], q[7]),
            ]
        }
    }

    /// Packs lanes that are each contiguous along k into a panel (the panel is the transpose of
    /// the source): 4 lanes x 4 depths at a time are loaded as four SSE vectors (one per lane,
    /// `load4` widening 4 consecutive values to f32), transposed in registers and stored as four
    /// vectors (one per depth step, contiguous in the panel). That is 8 memory operations per 16
    /// elements instead of 32. SSE2 is part of the x86-64 baseline, so no feature detection is
    /// needed. Leftover lanes and depths go through the scalar path.
    #[inline(always)]
    fn transpose_lanes<T: Widen<f32>>(
        src: &[T],
        lanes: &Lanes,
        width: usize,
        panel: &mut [f32],
        load4: impl Fn(*const T) -> __m128,
    ) {
        let kc = panel.len() / width;
        let (kc4, lanes4) = (kc - kc % 4, lanes.valid - lanes.valid % 4);
        for l0 in (0..lanes4).step_by(4) {
            // Bounds are checked here, once per lane: each `row` is exactly that lane's kc values.
            let rows: [&[T]; 4] = std::array::from_fn(|i| {
                let start = lanes.base + (l0 + i) * lanes.lane_stride;
                &src[start..start + kc]
            });
            for p in (0..kc4).step_by(4) {
                let dst = &mut panel[p * width..(p + 4) * width];
                // p + 4 <= kc4 <= kc: each load reads 4 values inside its `row`.
                let r: [__m128; 4] = std::array::from_fn(|i| load4(rows[i][p..p + 4].as_ptr()));
                // SAFETY: register-only SSE shuffles; SSE is always present on x86-64.
                let out = unsafe {
                    let t0 = _mm_unpacklo_ps(r[0], r[1]); // r0[0] r1[0] r0[1] r1[1]
                    let t1 = _mm_unpacklo_ps(r[2], r[3]); // r2[0] r3[0] r2[1] r3[1]
                    let t2 = _mm_unpackhi_ps(r[0], r[1]); // r0[2] r1[2] r0[3] r1[3]
                    let t3 = _mm_unpackhi_ps(r[2], r[3]); // r2[2] r3[2] r2[3] r3[3]
                    [
                        _mm_movelh_ps(t0, t1), // depth p:     r0 r1 r2 r3
                        _mm_movehl_ps(t1, t0), // depth p + 1
                        _mm_movelh_ps(t2, t3), // depth p + 2
                        _mm_movehl_ps(t3, t2), // depth p + 3
                    ]
                };
                for (d, v) in out.into_iter().enumerate() {
                    // Lanes l0..l0 + 4 <= valid <= width of depth row d < 4: inside `dst`.
                    let slot = &mut dst[d * width + l0..d * width + l0 + 4];
                    // SAFETY: `slot` is 4 writable f32 values; SSE is always present on x86-64.
                    unsafe { _mm_storeu_ps(slot.as_mut_ptr(), v) };
                }
            }
            for p in kc4..kc {
                for i in 0..4 {
                    panel[p * width + l0 + i] = rows[i][p].widen();
                }
            }
        }
        super::scatter_lanes(src, lanes, lanes4, width, panel, T::widen);
    }
}

// ---------------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------------

/// An input element type and how it widens to the accumulation type `E` while packing.
///
/// A trait rather than a closure so that a type can bring a faster way to pack the awkward
/// layout (see [`Widen::pack_lanes_along_depth`]).
pub(crate) trait Widen<E: Acc>: Copy + Sync {
    fn widen(self) -> E;

    /// `src` as accumulation-type elements when no widening is needed (`Self == E`), so that A
    /// can be read in place by [`MicroKernel::run_direct`].
    #[inline(always)]
    fn in_place(_src: &[Self]) -> Option<&[E]> {
        None
    }

    /// Packs a panel whose lanes are each contiguous along k (`lanes.depth_stride == 1`): row-major
    /// A, or a transposed B. The panel is the transpose of the source, so this is the slow case.
    /// The default reads each lane in one sequential pass and scatters it into the panel, which
    /// is small enough to stay in L1.
    #[inline(always)]
    fn pack_lanes_along_depth(src: &[Self], lanes: &Lanes, width: usize, panel: &mut [E]) {
        scatter_lanes(src, lanes, 0, width, panel, Self::widen);
    }

    /// `sums[l] = Σ_p a[p] · lane_l[p]` for [`gemv::WIDTH`] lanes that are each contiguous
    /// along k (`lanes.depth_stride == 1`), one fused multiply-add per term in increasing `p`
    /// from zero: the bits of packing the lanes and summing the panel as [`gemv`] does with a
    /// fused kernel, without the panel. `None` where this type or CPU has no such path (the
    /// caller packs).
    #[inline(always)]
    fn fused_lane_sums(_a: &[E], _src: &[Self], _lanes: &Lanes) -> Option<[E; gemv::WIDTH]> {
        None
    }
}

impl Widen<f32> for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[inline(always)]
    fn in_place(src: &[f32]) -> Option<&[f32]> {
        Some(src)
    }

    #[inline(always)]
    fn pack_lanes_along_depth(src: &[f32], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        x86::transpose_lanes_f32(src, lanes, width, panel);
        #[cfg(not(target_arch = "x86_64"))]
        scatter_lanes(src, lanes, 0, width, panel, |x| x);
    }

    #[inline(always)]
    fn fused_lane_sums(a: &[f32], src: &[f32], lanes: &Lanes) -> Option<[f32; gemv::WIDTH]> {
        #[cfg(target_arch = "x86_64")]
        return x86::fused_lane_sums_f32(a, src, lanes);
        #[cfg(not(target_arch = "x86_64"))]
        None
    }
}

impl Widen<f32> for bf16 {
    /// bf16 is the top half of an f32, so widening is a shift: exact for every value, NaN stays
    /// NaN. (`bf16::to_f32` also quiets signalling NaNs, a branch the packing loop does not need:
    /// the first arithmetic operation quiets them anyway.)
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }

    #[inline(always)]
    fn pack_lanes_along_depth(src: &[bf16], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        x86::transpose_lanes_bf16(src, lanes, width, panel);
        #[cfg(not(target_arch = "x86_64"))]
        scatter_lanes(src, lanes, 0, width, panel, Self::widen);
    }

    #[inline(always)]
    fn fused_lane_sums(a: &[f32], src: &[bf16], lanes: &Lanes) -> Option<[f32; gemv::WIDTH]> {
        #[cfg(target_arch = "x86_64")]
        return x86::fused_lane_sums_bf16(a, src, lanes);
        #[cfg(not(target_arch = "x86_64"))]
        None
    }
}

impl Widen<f64> for f64 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }

    #[inline(always)]
    fn in_place(src: &[f64]) -> Option<&[f64]> {
        Some(src)
    }
}

/// The B operand of a product (`k` x `n`), seen only through the packed micro-panels it produces.
///
/// A strided matrix ([`MatRef`]) packs by copying (and widening); a compressed operand (the NF4
/// weights of `cpu::nf4`) decodes straight into the panel, so the full-size matrix never exists.
pub(crate) trait PackB<E>: Sync {
    /// `k`.
    fn rows(&self) -> usize;
    /// `n`.
    fn cols(&self) -> usize;
    /// Panics unless the operand is internally consistent (cheap; runs in release).
    fn assert_fits(&self);
    /// Writes rows `depth` x columns `cols` as NR-column micro-panels: panel `q` holds
    /// `out[q * kc * nr + p * nr + j] = B[depth.start + p][cols.start + q * nr + j]`, zero past
    /// `cols.end`; `out` holds exactly `cols.len().div_ceil(nr)` panels of `kc = depth.len()` rows.
    fn pack(&self, depth: std::ops::Range<usize>, cols: std::ops::Range<usize>, nr: usize, out: &mut [E]);

    /// For [`gemv`] with a fused kernel: the sums of `a` (the row's values at `depth`) times
    /// columns `cols` (exactly [`gemv::WIDTH`] of them) straight from the operand, with the bits
    /// packing them and summing the panel would give; `None` where the operand has no such path
    /// (the caller packs).
    fn fused_row_sums(&self, _a: &[E], _depth: std::ops::Range<usize>, _cols: std::ops::Range<usize>) -> Option<[E; gemv::WIDTH]> {
        None
    }
}

impl<T: Widen<E>, E: Acc> PackB<E> for MatRef<'_, T> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn assert_fits(&self) {
        MatRef::assert_fits(self, "b");
    }
    fn pack(&self, depth: std::ops::Range<usize>, cols: std::ops::Range<usize>, nr: usize, out: &mut [E]) {
        pack_b(*self, (depth.start, depth.len()), (cols.start, cols.len()), nr, out);
    }

    /// Only for a B whose columns are each contiguous along k (a transposed weight, `x · Wᵀ`):
    /// the case where packing is a transpose, which the fused path does in registers.
    fn fused_row_sums(&self, a: &[E], depth: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> Option<[E; gemv::WIDTH]> {
        if self.row_stride != 1 || cols.len() != gemv::WIDTH || a.len() != depth.len() {
            return None;
        }
        let lanes = Lanes {
            base: depth.start + cols.start * self.col_stride,
            valid: gemv::WIDTH,
            lane_stride: self.col_stride,
            depth_stride: 1,
        };
        T::fused_lane_sums(a, self.data, &lanes)
    }
}

/// Packs rows `i0..i0 + rows` x columns `p0..p0 + kc` of `a` into MR-row micro-panels:
/// panel `q` holds `out[q * kc * mr + p * mr + i] = A[i0 + q * mr + i][p0 + p]`, zero past `rows`.
/// `out` holds exactly `rows.div_ceil(mr)` panels.
fn pack_a<T: Widen<E>, E: Acc>(
    a: MatRef<'_, T>,
    (i0, rows): (usize, usize),
    (p0, kc): (usize, usize),
    mr: usize,
    out: &mut [E],
) {
    for (q, panel) in out.chunks_exact_mut(kc * mr).enumerate() {
        let r0 = i0 + q * mr;
        let lanes = Lanes {
            base: r0 * a.row_stride + p0 * a.col_stride,
            valid: mr.min(i0 + rows - r0),
            lane_stride: a.row_stride,
            depth_stride: a.col_stride,
        };
        lanes.pack(a.data, mr, panel);
    }
}

/// Packs rows `p0..p0 + kc` x columns `j0..j0 + cols` of `b` into NR-column micro-panels:
/// panel `q` holds `out[q * kc * nr + p * nr + j] = B[p0 + p][j0 + q * nr + j]`, zero past `cols`.
fn pack_b<T: Widen<E>, E: Acc>(
    b: MatRef<'_, T>,
    (p0, kc): (usize, usize),
    (j0, cols): (usize, usize),
    nr: usize,
    out: &mut [E],
) {
    for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
        let c0 = j0 + q * nr;
        let lanes = Lanes {
            base: p0 * b.row_stride + c0 * b.col_stride,
            valid: nr.min(j0 + cols - c0),
            lane_stride: b.col_stride,
            depth_stride: b.row_stride,
        };
        lanes.pack(b.data, nr, panel);
    }
}

/// The source of one micro-panel: `valid` lanes (rows of A, or columns of B) starting at `base`,
/// `lane_stride` apart, each running along k with `depth_stride`.
pub(crate) struct Lanes {
    pub(crate) base: usize,
    pub(crate) valid: usize,
    pub(crate) lane_stride: usize,
    pub(crate) depth_stride: usize,
}

impl Lanes {
    /// Writes `panel[p * width + l] = src[base + l * lane_stride + p * depth_stride]` (widened)
    /// for every depth `p` (the panel holds `kc * width` elements) and lane `l < valid`, and zero
    /// in the lanes past `valid`.
    ///
    /// When lanes are adjacent in memory (row-major B, or a transposed A) each depth step is one
    /// contiguous copy. When each lane is contiguous along k instead (row-major A, or a transposed
    /// B) the panel is a transpose of the source: see [`Widen::pack_lanes_along_depth`].
    #[inline(always)]
    pub(crate) fn pack<T: Widen<E>, E: Acc>(&self, src: &[T], width: usize, panel: &mut [E]) {
        if self.valid < width {
            for dst in panel.chunks_exact_mut(width) {
                dst[self.valid..].fill(E::zeroed());
            }
        }
        if self.depth_stride == 1 && self.lane_stride != 1 {
            T::pack_lanes_along_depth(src, self, width, panel);
            return;
        }
        for (p, dst) in panel.chunks_exact_mut(width).enumerate() {
            let start = self.base + p * self.depth_stride;
            let dst = &mut dst[..self.valid];
            if self.lane_stride == 1 {
                // A separate loop over a slice, so the compiler vectorises it (a plain copy for
                // f32, a shift per element for bf16).
                for (d, &x) in dst.iter_mut().zip(&src[start..start + self.valid]) {
                    *d = x.widen();
                }
            } else {
                for (l, d) in dst.iter_mut().enumerate() {
                    *d = src[start + l * self.lane_stride].widen();
                }
            }
        }
    }
}

/// The portable way to pack lanes `first..lanes.valid` when each is contiguous along k: one
/// sequential pass per lane, scattered into the panel.
#[inline(always)]
fn scatter_lanes<T: Copy, E>(
    src: &[T],
    lanes: &Lanes,
    first: usize,
    width: usize,
    panel: &mut [E],
    widen: impl Fn(T) -> E,
) {
    let kc = panel.len() / width;
    for l in first..lanes.valid {
        let start = lanes.base + l * lanes.lane_stride;
        for (dst, &x) in panel.chunks_exact_mut(width).zip(&src[start..start + kc]) {
            dst[l] = widen(x);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scratch memory
// ---------------------------------------------------------------------------------------------

/// 64 bytes aligned to 64: the unit of packing buffers, so panels start on cache lines.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct CacheLine([u8; 64]);

/// Cache lines needed for `len` elements of `E`.
fn lines_for<E>(len: usize) -> usize {
    (len * size_of::<E>()).div_ceil(size_of::<CacheLine>())
}

thread_local! {
    /// Each thread's packing buffers, kept between calls so a task does not allocate (and fault
    /// in fresh pages) every time. With the default blocking it holds at most one packed A block
    /// (`mc * kc`) and one packed B block (`kc * nc`): about 1.3 MiB for f32.
    static PACK_SCRATCH: RefCell<Vec<CacheLine>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on two cache-line aligned buffers of `a_len` and `b_len` elements of `E`, carved out
/// of this thread's scratch memory.
fn with_scratch<E: Pod, R>(
    a_len: usize,
    b_len: usize,
    f: impl FnOnce(&mut [E], &mut [E]) -> R,
) -> R {
    let (a_lines, b_lines) = (lines_for::<E>(a_len), lines_for::<E>(b_len));
    let split = |buf: &mut [CacheLine]| {
        let (a, b) = buf.split_at_mut(a_lines);
        let a = &mut bytemuck::cast_slice_mut::<CacheLine, E>(a)[..a_len];
        let b = &mut bytemuck::cast_slice_mut::<CacheLine, E>(&mut b[..b_lines])[..b_len];
        f(a, b)
    };
    PACK_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < a_lines + b_lines {
                *buf = vec![CacheLine::zeroed(); a_lines + b_lines];
            }
            split(&mut buf)
        }
        // Only reachable if a task ever ran nested inside another on one thread: use a fresh
        // buffer rather than fail.
        Err(_) => split(&mut vec![CacheLine::zeroed(); a_lines + b_lines]),
    })
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

/// Below this many multiply-adds (128^3, about 25 us on one AVX-512 core) a product runs on the
/// calling thread: waking a pool thread and joining it costs tens of microseconds on a busy or
/// virtualised machine, so smaller products measured slower on two threads than on one.
const PARALLEL_MIN_MACS: usize = 128 * 128 * 128;

/// The base pointer of C, shared by the tasks of one call.
#[derive(Clone, Copy)]
struct CPtr<E>(*mut E);
// SAFETY: the tasks of one call write pairwise disjoint rectangles of C (see `plan`), and the call
// returns only after every task has finished, so sharing the pointer creates no data race.
unsafe impl<E: Send> Send for CPtr<E> {}
// SAFETY: as for Send.
unsafe impl<E: Send> Sync for CPtr<E> {}

impl<E> CPtr<E> {
    /// The address `offset` elements past C's first (arithmetic only: nothing is dereferenced).
    /// A method, so a closure calling it captures the whole `CPtr`, which is `Sync`.
    fn at(self, offset: usize) -> *mut E {
        self.0.wrapping_add(offset)
    }
}

/// How C is cut into tasks: a grid of `row_tasks` x `col_tasks` rectangles, each a whole number
/// of micro-panels (`rows_per_task` rows, `cols_per_task` columns; the last ones may be short).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    row_tasks: usize,
    col_tasks: usize,
    rows_per_task: usize,
    cols_per_task: usize,
}

/// Cuts an `m` x `n` product into at most `threads` tasks, as many as the micro-panels allow.
///
/// Every task runs the whole k loop for its rectangle, packing its own rows of A and its own
/// columns of B, so the tasks never wait for each other (one fork/join per call) and k is never
/// split (determinism). The price is that a row of tasks repacks the same B columns and a column
/// of tasks the same A rows; among grids with the most tasks we pick the one whose tasks are the
/// most square, which minimises that repacking (rows of A + columns of B per task). Ties go to
/// splitting rows: repacking row-major B is a straight copy, repacking A is a gather.
fn plan(m: usize, n: usize, mr: usize, nr: usize, threads: usize) -> Plan {
    let (m_panels, n_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    let mut best: Option<(usize, usize, Plan)> = None;
    for row_tasks in 1..=threads.min(m_panels).max(1) {
        let col_tasks = (threads / row_tasks).clamp(1, n_panels.max(1));
        let rows_per_task = m_panels.div_ceil(row_tasks) * mr;
        let cols_per_task = n_panels.div_ceil(col_tasks) * nr;
        // Recount: rounding panels up can leave a task empty.
        let row_tasks = m.div_ceil(rows_per_task).max(1);
        let col_tasks = n.div_ceil(cols_per_task).max(1);
        let candidate = Plan {
            row_tasks,
            col_tasks,
            rows_per_task,
            cols_per_task,
        };
        let (tasks, perimeter) = (row_tasks * col_tasks, rows_per_task + cols_per_task);
        let better = match best {
            None => true,
            Some((t, p, _)) => tasks > t || (tasks == t && perimeter < p),
        };
        if better {
            best = Some((tasks, perimeter, candidate));
        }
    }
    best.map(|(_, _, plan)| plan)
        .expect("at least one candidate")
}

/// Products with at most this many columns read a row-major A in place rather than pack it.
///
/// Packing a row-major A is a transpose (see [`Widen::pack_lanes_along_depth`]) costing a few
/// cycles per element, amortised over the `n / nr` B micro-panels each A panel meets. For a
/// narrow product (a LoRA down-projection `X Aᵀ` with `n = E r`, a router with `n = E`) that is
/// one or two panels, so packing took about as long as the multiply-adds. Reading A in place
/// costs one scalar broadcast per row and depth step either way; beyond a few B panels the packed
/// A micro-panel's L1 locality pays off again.
const DIRECT_A_MAX_N: usize = 64;

/// Whether [`gemm_with`] reads A in place: A needs no widening, is contiguous along k, and the
/// product is narrow ([`DIRECT_A_MAX_N`]). Either way every entry gets the same bits.
fn reads_a_in_place<T: Widen<E>, E: Acc>(a: &MatRef<'_, T>, n: usize) -> bool {
    n <= DIRECT_A_MAX_N && (a.col_stride == 1 || a.cols == 1) && T::in_place(a.data).is_some()
}

/// The whole product with one micro-kernel; inputs are widened to `E` while packing.
fn gemm_with<T: Widen<E>, E: Acc, B: PackB<E>>(
    kernel: &MicroKernel<E>,
    a: MatRef<'_, T>,
    b: B,
    c: &mut [E],
    accumulate: bool,
) {
    let direct = reads_a_in_place(&a, b.cols());
    gemm_run(kernel, direct, a, b, c, accumulate);
}

/// [`gemm_with`] with the choice of reading A in place made by the caller (`direct`; ignored
/// unless A is contiguous along k and needs no widening).
fn gemm_run<T: Widen<E>, E: Acc, B: PackB<E>>(
    kernel: &MicroKernel<E>,
    direct: bool,
    a: MatRef<'_, T>,
    b: B,
    c: &mut [E],
    accumulate: bool,
) {
    gemm_out(kernel, direct, a, b, Out::Init(c, accumulate));
}

/// Where a product goes: an initialised C, overwritten or (`true`) added to, or uninitialised
/// memory, which is only ever written.
enum Out<'c, E> {
    Init(&'c mut [E], bool),
    Uninit(&'c mut [MaybeUninit<E>]),
}

/// [`gemm_run`] into either kind of [`Out`].
fn gemm_out<T: Widen<E>, E: Acc, B: PackB<E>>(
    kernel: &MicroKernel<E>,
    direct: bool,
    a: MatRef<'_, T>,
    b: B,
    out: Out<'_, E>,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols());
    if gemv::applies(m) {
        return gemv::gemv(kernel, a, b, out);
    }
    let Some((c, accumulate)) = prepare_out(m, k, n, &a, &b, out) else {
        return;
    };
    let c = CPtr(c);
    let a_in_place = if direct && (a.col_stride == 1 || k == 1) {
        T::in_place(a.data)
    } else {
        None
    };
    let job = Job {
        kernel,
        a,
        a_in_place,
        b,
        c,
        ldc: n,
        accumulate,
    };
    run_planned((m, n, k), (kernel.mr, kernel.nr), PARALLEL_MIN_MACS, &|rows, cols| job.task(rows, cols));
}

/// Checks the shapes of `a` (`m` x `k`), `b` (`k` x `n`) and `out`, and handles the products with
/// nothing to multiply (`m`, `n` or `k` zero). Otherwise returns C's first element and whether to
/// add to it.
///
/// Without accumulation no element of C is read before the task computing it has written it, so
/// uninitialised memory is fine behind the raw pointer.
fn prepare_out<T, E: Acc, B: PackB<E>>(
    m: usize,
    k: usize,
    n: usize,
    a: &MatRef<'_, T>,
    b: &B,
    out: Out<'_, E>,
) -> Option<(*mut E, bool)> {
    let c_len = match &out {
        Out::Init(c, _) => c.len(),
        Out::Uninit(c) => c.len(),
    };
    assert!(
        b.rows() == k,
        "gemm: inner dimensions differ: a is {m} x {k}, b is {} x {n}",
        b.rows()
    );
    assert!(
        m.checked_mul(n) == Some(c_len),
        "gemm: c has length {c_len}, expected {m} x {n}",
    );
    a.assert_fits("a");
    b.assert_fits();
    if m == 0 || n == 0 {
        return None;
    }
    if k == 0 {
        match out {
            Out::Init(c, false) => c.fill(E::zeroed()),
            Out::Init(_, true) => {}
            Out::Uninit(c) => c.fill(MaybeUninit::new(E::zeroed())),
        }
        return None;
    }
    Some(match out {
        Out::Init(c, accumulate) => (c.as_mut_ptr(), accumulate),
        Out::Uninit(c) => (c.as_mut_ptr().cast::<E>(), false),
    })
}

/// Cuts an `m` x `n` x `k` product into tasks of whole `mr` x `nr` micro-panels (see [`plan`]:
/// one per pool thread when the product has at least `parallel_min_macs` multiply-adds, enough to
/// be worth waking the pool) and runs
/// `task(rows, cols)` on each rectangle, `rows` and `cols` as `(first, count)`.
fn run_planned(
    (m, n, k): (usize, usize, usize),
    (mr, nr): (usize, usize),
    parallel_min_macs: usize,
    task: &(dyn Fn((usize, usize), (usize, usize)) + Sync),
) {
    let threads = if m.saturating_mul(n).saturating_mul(k) >= parallel_min_macs {
        rayon::current_num_threads()
    } else {
        1
    };
    let plan = plan(m, n, mr, nr, threads);
    let run = |t: usize| {
        let (tr, tc) = (t / plan.col_tasks, t % plan.col_tasks);
        let (r0, c0) = (tr * plan.rows_per_task, tc * plan.cols_per_task);
        task((r0, plan.rows_per_task.min(m - r0)), (c0, plan.cols_per_task.min(n - c0)));
    };
    let tasks = plan.row_tasks * plan.col_tasks;
    if tasks > 1 {
        // The calling thread computes task 0 itself while the pool takes the rest: one wake-up
        // fewer than handing everything to the pool, which matters for products of ~100 us.
        let run = &run;
        rayon::in_place_scope(|scope| {
            for t in 1..tasks {
                scope.spawn(move |_| run(t));
            }
            run(0);
        });
    } else {
        run(0);
    }
}

/// Everything a task needs; shared read-only by all tasks of one call.
struct Job<'k, 'a, T, E, B> {
    kernel: &'k MicroKernel<E>,
    a: MatRef<'a, T>,
    /// `a.data` when A is read in place (contiguous along k, no widening), so only a partial
    /// last row panel is packed.
    a_in_place: Option<&'a [E]>,
    b: B,
    /// C's first element; row-major with row stride `ldc`.
    c: CPtr<E>,
    ldc: usize,
    accumulate: bool,
}

impl<T: Widen<E>, E: Acc, B: PackB<E>> Job<'_, '_, T, E, B> {
    /// Computes the rectangle rows `r0..r0 + rows` x columns `c0..c0 + cols` of C.
    fn task(&self, (r0, rows): (usize, usize), (c0, cols): (usize, usize)) {
        let kn = self.kernel;
        let (mr, nr) = (kn.mr, kn.nr);
        let k = self.a.cols;
        let kc_max = kn.kc.min(k);
        let a_len = if self.a_in_place.is_some() {
            mr * kc_max
        } else {
            kn.mc.min(rows).div_ceil(mr) * mr * kc_max
        };
        let b_len = kn.nc.min(cols).div_ceil(nr) * nr * kc_max;
        with_scratch::<E, _>(a_len, b_len, |a_buf, b_buf| {
            for j0 in (c0..c0 + cols).step_by(kn.nc) {
                let nc = kn.nc.min(c0 + cols - j0);
                for p0 in (0..k).step_by(kn.kc) {
                    let kc = kn.kc.min(k - p0);
                    let b_block = &mut b_buf[..nc.div_ceil(nr) * nr * kc];
                    self.b.pack(p0..p0 + kc, j0..j0 + nc, nr, b_block);
                    // The first KC slice overwrites C unless accumulating; later ones add to it.
                    let load_c = self.accumulate || p0 > 0;
                    for i0 in (r0..r0 + rows).step_by(kn.mc) {
                        let mc = kn.mc.min(r0 + rows - i0);
                        let a_panels = match self.a_in_place {
                            Some(data) => {
                                // Full panels are read in place; a partial last one is packed
                                // (zero-padded) so the kernel never reads past A's rows.
                                let full = mc / mr;
                                let edge = &mut a_buf[..mr * kc];
                                if full * mr < mc {
                                    let rows = (i0 + full * mr, mc - full * mr);
                                    pack_a(self.a, rows, (p0, kc), mr, edge);
                                }
                                APanels::InPlace {
                                    data,
                                    first: i0 * self.a.row_stride + p0,
                                    lda: self.a.row_stride,
                                    edge,
                                }
                            }
                            None => {
                                let a_block = &mut a_buf[..mc.div_ceil(mr) * mr * kc];
                                pack_a(self.a, (i0, mc), (p0, kc), mr, a_block);
                                APanels::Packed(a_block)
                            }
                        };
                        // Address arithmetic only; dereferenced in `tile`.
                        let c_block = self.c.0.wrapping_add(i0 * self.ldc + j0);
                        let blocks = Blocks {
                            kc,
                            load_c,
                            ldc: self.ldc,
                        };
                        blocks.macro_kernel(kn, (a_panels, mc), (b_block, nc), c_block);
                    }
                }
            }
        });
    }
}

/// The A side of one macro-kernel call: `rows` rows from row `i0`, depths `p0..p0 + kc`.
#[derive(Clone, Copy)]
enum APanels<'s, E> {
    /// Packed MR-row micro-panels (see [`pack_a`]).
    Packed(&'s [E]),
    /// Read in place: row `i0 + i`, depth `p0 + p` is `data[first + i * lda + p]`; `edge` is the
    /// packed, zero-padded last panel when `rows` is not a multiple of MR.
    InPlace { data: &'s [E], first: usize, lda: usize, edge: &'s [E] },
}

/// One A micro-panel as a kernel reads it: packed (`kc * mr` values), or `mr` rows read in place
/// (`lda` apart, each `kc` long; the slice runs from the first row's start to the last row's end).
#[derive(Clone, Copy)]
enum APanel<'s, E> {
    Packed(&'s [E]),
    InPlace(&'s [E], usize),
}

/// The shape shared by the tiles of one packed A block x packed B block.
struct Blocks {
    kc: usize,
    load_c: bool,
    ldc: usize,
}

impl Blocks {
    /// Every tile of a packed `rows` x `kc` A block times a packed `kc` x `cols` B block, written
    /// to the C block starting at `c_block`.
    fn macro_kernel<E: Acc>(
        &self,
        kn: &MicroKernel<E>,
        (a_panels, rows): (APanels<'_, E>, usize),
        (b_block, cols): (&[E], usize),
        c_block: *mut E,
    ) {
        let (mr, nr, kc) = (kn.mr, kn.nr, self.kc);
        // The A micro-panel stays in L1 while every B micro-panel of the block streams past it
        // from L2.
        for q in 0..rows.div_ceil(mr) {
            let tile_rows = mr.min(rows - q * mr);
            let a = match a_panels {
                APanels::Packed(block) => APanel::Packed(&block[q * kc * mr..(q + 1) * kc * mr]),
                APanels::InPlace { data, first, lda, .. } if tile_rows == mr => {
                    // From the tile's first element to its last (row mr - 1, depth kc - 1):
                    // inside A, whose extent the caller checked.
                    let start = first + q * mr * lda;
                    APanel::InPlace(&data[start..start + (mr - 1) * lda + kc], lda)
                }
                APanels::InPlace { edge, .. } => APanel::Packed(edge),
            };
            for (jq, b_panel) in b_block.chunks_exact(kc * nr).enumerate() {
                let tile_cols = nr.min(cols - jq * nr);
                let c_tile = c_block.wrapping_add(q * mr * self.ldc + jq * nr);
                self.tile(kn, a, b_panel, c_tile, tile_rows, tile_cols);
            }
        }
    }

    /// One micro-kernel call; a partial tile goes through a scratch tile on the stack.
    fn tile<E: Acc>(
        &self,
        kn: &MicroKernel<E>,
        a: APanel<'_, E>,
        b_panel: &[E],
        c_tile: *mut E,
        rows: usize,
        cols: usize,
    ) {
        assert!(b_panel.len() == self.kc * kn.nr);
        // The A reads a kernel makes: `kc * mr` packed values, or rows `lda` apart whose last
        // element ends the slice (`APanel::InPlace` is cut that way).
        let (run, a_ptr, lda) = match a {
            APanel::Packed(panel) => {
                assert!(panel.len() == self.kc * kn.mr);
                (kn.run, panel.as_ptr(), 0)
            }
            APanel::InPlace(rows_slice, lda) => {
                assert!(rows_slice.len() == (kn.mr - 1) * lda + self.kc);
                (kn.run_direct, rows_slice.as_ptr(), lda)
            }
        };
        if rows == kn.mr && cols == kn.nr {
            // SAFETY: the B panel holds kc * nr elements and A the reads the kernel makes (both
            // asserted above); the full mr x nr tile at c_tile lies inside C (its rows and columns are within m and n)
            // and inside this task's rectangle, which no other task touches (see `CPtr`); the
            // kernel was chosen for features this CPU has.
            unsafe {
                run(
                    self.kc,
                    a_ptr,
                    lda,
                    b_panel.as_ptr(),
                    c_tile,
                    self.ldc,
                    self.load_c,
                )
            };
            return;
        }
        assert!(kn.mr * kn.nr <= MAX_TILE);
        let mut scratch = [E::zeroed(); MAX_TILE];
        // SAFETY: the panels as above; the scratch tile holds mr x nr at row stride nr.
        unsafe {
            run(
                self.kc,
                a_ptr,
                lda,
                b_panel.as_ptr(),
                scratch.as_mut_ptr(),
                kn.nr,
                false,
            )
        };
        for i in 0..rows {
            for j in 0..cols {
                // Raw reads and writes, no reference: C may be uninitialised memory, read only
                // when `load_c` says an earlier store (or the caller) initialised it.
                let dst = c_tile.wrapping_add(i * self.ldc + j);
                let partial = scratch[i * kn.nr + j];
                // The same single addition the kernel does on a full tile, so results do not
                // depend on whether a tile happened to be full.
                // SAFETY: (i, j) with i < rows, j < cols is the valid part of this tile, inside C
                // and inside this task's rectangle.
                unsafe { dst.write(if self.load_c { dst.read() + partial } else { partial }) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod bf16_operands;
    mod one_row;
    use brainstacks_kernels::gemm::{
        check_close_f32, check_close_f64, gemm_abs_reference_f32, gemm_abs_reference_f64,
        gemm_reference_f32, gemm_reference_f64,
    };
    use proptest::prelude::*;

    /// xorshift64*: a few lines of deterministic noise, seeded by proptest.
    struct Noise(u64);
    impl Noise {
        fn new(seed: u64) -> Self {
            Noise(seed | 1)
        }
        /// Uniform in [-1, 1).
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
            bits as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    /// How an operand is laid out in its slice.
    #[derive(Clone, Copy, Debug)]
    enum Layout {
        RowMajor,
        /// Column-major: what a transposed row-major matrix looks like.
        Transposed,
        /// Row-major with 3 unused elements after each row.
        PaddedRows,
        /// Column-major with 3 unused elements after each column.
        PaddedTransposed,
        /// Neither stride is 1: every other element of every other row.
        Strided,
        /// Row stride 0: every row is the same slice (a broadcast view).
        BroadcastRows,
    }

    fn layouts() -> impl Strategy<Value = Layout> {
        prop_oneof![
            Just(Layout::RowMajor),
            Just(Layout::Transposed),
            Just(Layout::PaddedRows),
            Just(Layout::PaddedTransposed),
            Just(Layout::Strided),
            Just(Layout::BroadcastRows),
        ]
    }

    /// An owned operand; the gaps between elements hold noise too, so reading one shows up.
    struct Operand<T> {
        data: Vec<T>,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    }

    impl<T> Operand<T> {
        fn view(&self) -> MatRef<'_, T> {
            MatRef {
                data: &self.data,
                rows: self.rows,
                cols: self.cols,
                row_stride: self.rs,
                col_stride: self.cs,
            }
        }
    }

    fn operand<T>(
        rows: usize,
        cols: usize,
        layout: Layout,
        noise: &mut Noise,
        from: impl Fn(f64) -> T,
    ) -> Operand<T> {
        let (rs, cs) = match layout {
            Layout::RowMajor => (cols, 1),
            Layout::Transposed => (1, rows),
            Layout::PaddedRows => (cols + 3, 1),
            Layout::PaddedTransposed => (1, rows + 3),
            Layout::Strided => (2 * cols + 1, 2),
            Layout::BroadcastRows => (0, 1),
        };
        let len = if rows == 0 || cols == 0 {
            2
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        };
        let data = (0..len).map(|_| from(noise.next())).collect();
        Operand {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The f32 oracle for `c0 + A·B` (or `A·B`) and the matching `|c0| + |A|·|B|`.
    fn oracle_f32(a: &Operand<f32>, b: &Operand<f32>, c0: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let mut want = gemm_reference_f32(m, n, k, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs);
        let mut abs = gemm_abs_reference_f32(m, n, k, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs);
        if let Some(c0) = c0 {
            for ((w, s), &c) in want.iter_mut().zip(&mut abs).zip(c0) {
                *w += f64::from(c);
                *s += f64::from(c).abs();
            }
        }
        (want, abs)
    }

    /// Runs `kernel` on a random product of the given shape and layouts against the oracle.
    fn check_f32_case(
        kernel: &MicroKernel<f32>,
        (m, n, k): (usize, usize, usize),
        (la, lb): (Layout, Layout),
        accumulate: bool,
        seed: u64,
    ) -> Result<(), String> {
        let mut noise = Noise::new(seed);
        let a = operand(m, k, la, &mut noise, |x| x as f32);
        let b = operand(k, n, lb, &mut noise, |x| x as f32);
        let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
        let mut c = if accumulate {
            c0.clone()
        } else {
            vec![f32::NAN; m * n]
        };
        gemm_with(kernel, a.view(), b.view(), &mut c, accumulate);
        let (want, abs) = oracle_f32(&a, &b, accumulate.then_some(&c0[..]));
        check_close_f32(&c, &want, &abs, k).map_err(|e| {
            format!(
                "{}: m={m} n={n} k={k} a={la:?} b={lb:?} accumulate={accumulate}: {e}",
                kernel.name
            )
        })
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Every kernel this CPU has, random shapes and layouts, on a two-thread pool.
        #[test]
        fn f32_matches_oracle(
            m in 0usize..70, n in 0usize..70, k in 0usize..70,
            la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
        ) {
            pool(2).install(|| {
                for kernel in f32_kernels_available() {
                    check_f32_case(&kernel, (m, n, k), (la, lb), accumulate, seed)?;
                }
                Ok::<_, String>(())
            }).map_err(TestCaseError::fail)?;
        }

        /// The public entry point, through whatever kernel it picks.
        #[test]
        fn public_gemm_f32_matches_oracle(
            m in 0usize..70, n in 0usize..70, k in 0usize..70,
            la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
        ) {
            let mut noise = Noise::new(seed);
            let a = operand(m, k, la, &mut noise, |x| x as f32);
            let b = operand(k, n, lb, &mut noise, |x| x as f32);
            let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
            let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
            gemm_f32(a.view(), b.view(), &mut c, accumulate);
            let (want, abs) = oracle_f32(&a, &b, accumulate.then_some(&c0[..]));
            check_close_f32(&c, &want, &abs, k).map_err(TestCaseError::fail)?;
        }

        /// bf16 operands against the f32 oracle on the same (exactly widened) bf16 values.
        #[test]
        fn bf16_matches_oracle_on_the_rounded_values(
            m in 0usize..70, n in 0usize..70, k in 0usize..70,
            la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
        ) {
            let mut noise = Noise::new(seed);
            let a = operand(m, k, la, &mut noise, bf16::from_f64);
            let b = operand(k, n, lb, &mut noise, bf16::from_f64);
            let widen = |o: &Operand<bf16>| Operand {
                data: o.data.iter().map(|x| x.to_f32()).collect(),
                rows: o.rows, cols: o.cols, rs: o.rs, cs: o.cs,
            };
            let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
            let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
            gemm_bf16(a.view(), b.view(), &mut c, accumulate);
            let (want, abs) = oracle_f32(&widen(&a), &widen(&b), accumulate.then_some(&c0[..]));
            check_close_f32(&c, &want, &abs, k).map_err(TestCaseError::fail)?;
        }

        /// Every f64 kernel against the f64 oracle under the f64 tolerance.
        #[test]
        fn f64_matches_oracle(
            m in 0usize..70, n in 0usize..70, k in 0usize..70,
            la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
        ) {
            let mut noise = Noise::new(seed);
            let a = operand(m, k, la, &mut noise, |x| x);
            let b = operand(k, n, lb, &mut noise, |x| x);
            let c0: Vec<f64> = (0..m * n).map(|_| noise.next()).collect();
            let mut want = gemm_reference_f64(m, n, k, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs);
            let mut abs = gemm_abs_reference_f64(m, n, k, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs);
            if accumulate {
                for ((w, s), &c) in want.iter_mut().zip(&mut abs).zip(&c0) {
                    *w += c;
                    *s += c.abs();
                }
            }
            for kernel in f64_kernels_available() {
                let mut c = if accumulate { c0.clone() } else { vec![f64::NAN; m * n] };
                gemm_with(&kernel, a.view(), b.view(), &mut c, accumulate);
                check_close_f64(&c, &want, &abs, k)
                    .map_err(|e| TestCaseError::fail(format!("{}: {e}", kernel.name)))?;
            }
        }
    }

    /// Shapes one below, at and one above each kernel's MR, NR and KC, and two KC blocks deep.
    #[test]
    fn f32_sizes_straddling_each_kernels_tile_and_depth_edges() {
        for kernel in f32_kernels_available() {
            let (mr, nr, kc) = (kernel.mr, kernel.nr, kernel.kc);
            for m in [1, mr - 1, mr, mr + 1, 2 * mr + 1] {
                for n in [1, nr - 1, nr, nr + 1] {
                    for k in [1, kc - 1, kc, kc + 1, 2 * kc + 3] {
                        // Both packing paths for each operand: lanes adjacent in memory, and
                        // lanes contiguous along k (the in-register transpose).
                        let cases = [
                            (false, (Layout::Transposed, Layout::PaddedRows)),
                            (true, (Layout::RowMajor, Layout::PaddedTransposed)),
                        ];
                        for (accumulate, layouts) in cases {
                            let seed = (m * 1_000_003 + n * 1009 + k) as u64;
                            check_f32_case(&kernel, (m, n, k), layouts, accumulate, seed)
                                .unwrap_or_else(|e| panic!("{e}"));
                        }
                    }
                }
            }
        }
    }

    /// Shapes straddling MC (rows packed at once) and NC (columns one task packs).
    #[test]
    fn f32_sizes_straddling_row_and_column_blocks() {
        for kernel in f32_kernels_available() {
            let (mc, nc) = (kernel.mc, kernel.nc);
            for (m, n, k) in [
                (mc - 1, 5, 3),
                (mc + 1, 33, 7),
                (7, nc - 1, 5),
                (13, nc + 1, 9),
            ] {
                for threads in [1, 2] {
                    pool(threads)
                        .install(|| {
                            let layouts = (Layout::RowMajor, Layout::Strided);
                            check_f32_case(&kernel, (m, n, k), layouts, true, 7)
                        })
                        .unwrap_or_else(|e| panic!("{threads} threads: {e}"));
                }
            }
        }
    }

    /// Runs `f` on pools of 1, 2 and 3 threads and asserts the results are bitwise equal.
    fn assert_thread_count_invariant<E: Pod + Send>(f: impl Fn() -> Vec<E> + Sync) {
        let bits = |v: Vec<E>| bytemuck::cast_slice::<E, u8>(&v).to_vec();
        let one = bits(pool(1).install(&f));
        for threads in [2, 3] {
            let many = bits(pool(threads).install(&f));
            assert!(one == many, "{threads} threads differ from 1 thread");
        }
    }

    /// For both values of `accumulate`: `c0 (+)= a · b` with `kernel` has the same bits on 1, 2
    /// and 3 threads, and the threaded result is right against the oracle, not merely
    /// reproducible.
    fn assert_threads_agree_and_match_oracle(kernel: &MicroKernel<f32>, a: &Operand<f32>, b: &Operand<f32>, c0: &[f32], what: &str) {
        for accumulate in [false, true] {
            let run = || {
                let mut c = c0.to_vec();
                gemm_with(kernel, a.view(), b.view(), &mut c, accumulate);
                c
            };
            assert_thread_count_invariant(run);
            let (want, abs) = oracle_f32(a, b, accumulate.then_some(c0));
            check_close_f32(&pool(2).install(run), &want, &abs, a.cols)
                .unwrap_or_else(|e| panic!("{}: {what} accumulate={accumulate}: {e}", kernel.name));
        }
    }

    /// Shapes above `PARALLEL_MIN_MACS` that split by columns, by rows, and both, each crossing
    /// KC blocks and tile edges.
    const INVARIANCE_SHAPES: [(usize, usize, usize); 4] = [
        (203, 301, 600),
        (5, 1100, 500),
        (700, 7, 500),
        (1030, 40, 70),
    ];

    #[test]
    fn f32_result_is_bitwise_independent_of_thread_count() {
        for kernel in f32_kernels_available() {
            for (m, n, k) in INVARIANCE_SHAPES {
                let mut noise = Noise::new(42);
                let a = operand(m, k, Layout::PaddedRows, &mut noise, |x| x as f32);
                let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
                let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
                assert!(m * n * k >= PARALLEL_MIN_MACS);
                assert_threads_agree_and_match_oracle(&kernel, &a, &b, &c0, &format!("{m}x{n}x{k}"));
            }
        }
    }

    /// Every fused-multiply-add kernel computes each entry in the same order, so they agree to
    /// the bit whatever their tile shape.
    #[test]
    fn simd_kernels_agree_bitwise() {
        let fused: Vec<_> = f32_kernels_available()
            .into_iter()
            .filter(|k| k.name != F32_PORTABLE.name)
            .collect();
        for (m, n, k) in [(37, 45, 600), (50, 16, 300), (5, 70, 257)] {
            let mut noise = Noise::new(11);
            let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x as f32);
            let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
            let results: Vec<Vec<u32>> = fused
                .iter()
                .map(|kernel| {
                    let mut c = vec![0.0f32; m * n];
                    gemm_with(kernel, a.view(), b.view(), &mut c, false);
                    c.iter().map(|x| x.to_bits()).collect()
                })
                .collect();
            for (kernel, r) in fused.iter().zip(&results) {
                assert!(
                    *r == results[0],
                    "{} differs from {}",
                    kernel.name,
                    fused[0].name
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Packing lanes that run along k (the transposing pack, in whichever blocks this CPU
        /// takes: 8 x 8 AVX/AVX2, 4 x 4 SSE2, scalar leftovers) puts source lane `l`, depth `p`
        /// at `panel[p * width + l]` and zeros past the valid lanes, for bf16 (widened: the
        /// f32 with the same top 16 bits, for every bit pattern, NaN included) and for f32.
        #[test]
        fn transposing_pack_matches_the_definition(
            valid in 0usize..20, extra_width in 0usize..13, kc in 0usize..40, pad in 0usize..5,
            bits in proptest::collection::vec(any::<u16>(), 20 * 44),
        ) {
            let width = valid + extra_width;
            let lane_stride = kc + pad;
            let src16: Vec<bf16> = bits[..valid * lane_stride + 1].iter().map(|&b| bf16::from_bits(b)).collect();
            let src32: Vec<f32> = src16.iter().map(|x| f32::from_bits(u32::from(x.to_bits()) << 16)).collect();
            let lanes = Lanes { base: 1, valid, lane_stride, depth_stride: 1 };
            // Written out element by element, as bits (NaN payloads must survive too).
            let mut want = vec![0u32; kc * width];
            for p in 0..kc {
                for l in 0..valid {
                    want[p * width + l] = u32::from(src16[1 + l * lane_stride + p].to_bits()) << 16;
                }
            }
            let (mut got16, mut got32) = (vec![f32::NAN; kc * width], vec![f32::NAN; kc * width]);
            if valid > 0 && kc > 0 {
                lanes.pack(&src16, width, &mut got16);
                lanes.pack(&src32, width, &mut got32);
            } else {
                want.clear();
                got16.clear();
                got32.clear();
            }
            let as_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(&as_bits(&got16), &want, "bf16");
            prop_assert_eq!(&as_bits(&got32), &want, "f32");
        }

        /// The fused one-row sums of a transposed bf16 weight (8 x 8 blocks widened and
        /// transposed in registers) equal a plain fused loop over the widened values, lane by
        /// lane and bit for bit, for every bf16 bit pattern but NaN (an FMA may take a NaN's
        /// payload from either operand; NaNs the sums make themselves only have to be NaN).
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn fused_bf16_lane_sums_match_a_plain_fused_loop(
            blocks in 1usize..9, pad in 0usize..5,
            bits in proptest::collection::vec(any::<u16>(), gemv::WIDTH * (64 + 4) + 1),
            xs in proptest::collection::vec(-4.0f32..4.0, 64),
        ) {
            let (kc, lane_stride) = (8 * blocks, 8 * blocks + pad);
            let not_nan = |b: u16| if bf16::from_bits(b).is_nan() { bf16::from_f32(1.5) } else { bf16::from_bits(b) };
            let src: Vec<bf16> = bits.iter().map(|&b| not_nan(b)).collect();
            let lanes = Lanes { base: 1, valid: gemv::WIDTH, lane_stride, depth_stride: 1 };
            let a = &xs[..kc];
            // `None` only on a CPU without AVX2 and FMA: nothing fused to check there.
            if let Some(got) = x86::fused_lane_sums_bf16(a, &src, &lanes) {
                for (l, &sum) in got.iter().enumerate() {
                    let row = &src[1 + l * lane_stride..][..kc];
                    let want = a.iter().zip(row).fold(0f32, |acc, (&x, &w)| x.mul_add(w.widen(), acc));
                    prop_assert!(
                        sum.to_bits() == want.to_bits() || (sum.is_nan() && want.is_nan()),
                        "lane {l}, kc {kc}: fused {sum:e}, plain {want:e}"
                    );
                }
            }
        }

        /// Reading A in place gives every entry the bits packing A gives, with every kernel: the
        /// same values meet in the same order. Shapes cross the row-panel edge (m not a multiple
        /// of MR), several KC blocks (k > 256) and both sides of `DIRECT_A_MAX_N`; padded and
        /// broadcast rows, f32 on a two-thread pool and f64.
        #[test]
        fn reading_a_in_place_matches_packing_bitwise(
            m in 0usize..100, n in 0usize..100, k in prop_oneof![0usize..20, 250usize..530],
            la in prop_oneof![
                Just(Layout::RowMajor), Just(Layout::PaddedRows), Just(Layout::BroadcastRows)
            ],
            lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
        ) {
            let mut noise = Noise::new(seed);
            let a = operand(m, k, la, &mut noise, |x| x as f32);
            let b = operand(k, n, lb, &mut noise, |x| x as f32);
            let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
            for kernel in f32_kernels_available() {
                let run = |direct: bool| {
                    let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
                    pool(2).install(|| {
                        gemm_run(&kernel, direct, a.view(), b.view(), &mut c, accumulate)
                    });
                    c.into_iter().map(f32::to_bits).collect::<Vec<_>>()
                };
                prop_assert!(run(true) == run(false), "{}: m={m} n={n} k={k} a={la:?}", kernel.name);
            }
            let a64 = operand(m, k, la, &mut noise, |x| x);
            let b64 = operand(k, n, lb, &mut noise, |x| x);
            for kernel in f64_kernels_available() {
                let run = |direct: bool| {
                    let mut c = vec![0.5f64; m * n];
                    gemm_run(&kernel, direct, a64.view(), b64.view(), &mut c, accumulate);
                    c.into_iter().map(f64::to_bits).collect::<Vec<_>>()
                };
                prop_assert!(run(true) == run(false), "{}: m={m} n={n} k={k}", kernel.name);
            }
        }
    }

    /// Writing into uninitialised memory gives the bits of overwriting an initialised C, for
    /// every entry point, including k = 0 (zeros) and edge tiles.
    #[test]
    fn uninit_output_matches_overwriting() {
        for (m, n, k) in [(37, 45, 600), (50, 16, 300), (5, 70, 257), (13, 9, 0), (0, 4, 3), (30, 100, 40)] {
            let mut noise = Noise::new(3);
            let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x as f32);
            let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
            let mut want = vec![f32::NAN; m * n];
            gemm_f32(a.view(), b.view(), &mut want, false);
            let mut got = vec![MaybeUninit::<f32>::uninit(); m * n];
            gemm_f32_uninit(a.view(), b.view(), &mut got);
            // SAFETY: the GEMM wrote every element.
            let got: Vec<f32> = got.into_iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());

            let a16 = operand(m, k, Layout::PaddedRows, &mut noise, bf16::from_f64);
            let b16 = operand(k, n, Layout::RowMajor, &mut noise, bf16::from_f64);
            let mut want = vec![f32::NAN; m * n];
            gemm_bf16(a16.view(), b16.view(), &mut want, false);
            let mut got = vec![MaybeUninit::<f32>::uninit(); m * n];
            gemm_bf16_uninit(a16.view(), b16.view(), &mut got);
            // SAFETY: as above.
            let got: Vec<f32> = got.into_iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());

            let a64 = operand(m, k, Layout::Strided, &mut noise, |x| x);
            let b64 = operand(k, n, Layout::PaddedTransposed, &mut noise, |x| x);
            let mut want = vec![f64::NAN; m * n];
            gemm_f64(a64.view(), b64.view(), &mut want, false);
            let mut got = vec![MaybeUninit::<f64>::uninit(); m * n];
            gemm_f64_uninit(a64.view(), b64.view(), &mut got);
            // SAFETY: as above.
            let got: Vec<f64> = got.into_iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn bf16_and_f64_results_are_bitwise_independent_of_thread_count() {
        let (m, n, k) = INVARIANCE_SHAPES[0];
        let mut noise = Noise::new(3);
        let a = operand(m, k, Layout::Strided, &mut noise, bf16::from_f64);
        let b = operand(k, n, Layout::RowMajor, &mut noise, bf16::from_f64);
        assert_thread_count_invariant(|| {
            let mut c = vec![0.0f32; m * n];
            gemm_bf16(a.view(), b.view(), &mut c, false);
            c
        });
        let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x);
        let b = operand(k, n, Layout::PaddedTransposed, &mut noise, |x| x);
        assert_thread_count_invariant(|| {
            let mut c = vec![0.0f64; m * n];
            gemm_f64(a.view(), b.view(), &mut c, false);
            c
        });
    }

    #[test]
    fn empty_inner_dimension_zeroes_or_keeps_c() {
        let a = MatRef::row_major(&[] as &[f32], 2, 0);
        let b = MatRef::row_major(&[] as &[f32], 0, 3);
        let mut c = vec![1.5f32; 6];
        gemm_f32(a, b, &mut c, true);
        assert_eq!(c, vec![1.5; 6]);
        gemm_f32(a, b, &mut c, false);
        assert_eq!(c, vec![0.0; 6]);
    }

    #[test]
    fn empty_outer_dimension_is_a_no_op() {
        let a = MatRef::row_major(&[] as &[f32], 0, 4);
        let b = MatRef::row_major(&[1.0f32; 8], 4, 2);
        let mut c: Vec<f32> = vec![];
        gemm_f32(a, b, &mut c, false);
        assert!(c.is_empty());
    }

    #[test]
    fn transpose_view_multiplies_by_the_transpose() {
        // A = [[1, 2], [3, 4]]; A^T·A = [[10, 14], [14, 20]].
        let data = [1.0f32, 2.0, 3.0, 4.0];
        let a = MatRef::row_major(&data, 2, 2);
        let mut c = [0.0f32; 4];
        gemm_f32(a.t(), a, &mut c, false);
        assert_eq!(c, [10.0, 14.0, 14.0, 20.0]);
    }

    #[test]
    #[should_panic(expected = "inner dimensions differ")]
    fn mismatched_inner_dimensions_panic() {
        let data = [0.0f32; 6];
        let mut c = [0.0f32; 4];
        gemm_f32(
            MatRef::row_major(&data, 2, 3),
            MatRef::row_major(&data, 2, 3),
            &mut c,
            false,
        );
    }

    #[test]
    #[should_panic(expected = "c has length")]
    fn wrong_output_length_panics() {
        let data = [0.0f32; 4];
        let mut c = [0.0f32; 3];
        gemm_f32(
            MatRef::row_major(&data, 2, 2),
            MatRef::row_major(&data, 2, 2),
            &mut c,
            false,
        );
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn strides_reaching_outside_the_slice_panic() {
        let data = [0.0f32; 4];
        let mut c = [0.0f32; 4];
        let a = MatRef {
            data: &data,
            rows: 2,
            cols: 2,
            row_stride: 3,
            col_stride: 1,
        };
        gemm_f32(a, MatRef::row_major(&data, 2, 2), &mut c, false);
    }

    #[test]
    fn plan_prefers_square_tasks() {
        // Few rows, many columns: split the columns.
        let p = plan(120, 1024, 12, 32, 2);
        assert_eq!((p.row_tasks, p.col_tasks, p.cols_per_task), (1, 2, 512));
        // One column panel: split the rows.
        let p = plan(700, 7, 12, 32, 2);
        assert_eq!((p.row_tasks, p.col_tasks, p.rows_per_task), (2, 1, 360));
        // One thread: one task.
        let p = plan(1000, 1000, 12, 32, 1);
        assert_eq!((p.row_tasks, p.col_tasks), (1, 1));
    }

    proptest! {
        /// The task grid covers C exactly, with no empty task and no more tasks than threads.
        #[test]
        fn plan_tiles_c_exactly(
            m in 1usize..3000, n in 1usize..3000, mr in 1usize..16, nr in 1usize..40,
            threads in 1usize..9,
        ) {
            let p = plan(m, n, mr, nr, threads);
            prop_assert!(p.row_tasks * p.col_tasks <= threads);
            prop_assert!(p.rows_per_task.is_multiple_of(mr) && p.cols_per_task.is_multiple_of(nr));
            prop_assert!(p.row_tasks * p.rows_per_task >= m);
            prop_assert!((p.row_tasks - 1) * p.rows_per_task < m);
            prop_assert!(p.col_tasks * p.cols_per_task >= n);
            prop_assert!((p.col_tasks - 1) * p.cols_per_task < n);
        }
    }
}
