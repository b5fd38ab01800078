//! Fast CPU GEMM: `C = A·B` or `C += A·B`, for f32, bf16 (widened to f32) and f64, plus f32 with
//! both operands rounded to bf16 ([`gemm_f32_as_bf16`]), which runs on Intel AMX tiles where the
//! CPU has them (the `amx` submodule, its own driver with the same task split) and otherwise
//! through the f32 kernels.
//!
//! The contract (math, layout, tolerance) is in `brainstacks_kernels::gemm`, whose oracle the
//! `tests` submodule checks this module against.
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
//!
//! # Where things are
//!
//! - this file: the public entry points and the bf16-operand rounding;
//! - `driver`: the task split and the loop nest above; `scratch`: the per-thread packing buffers;
//! - `pack`: how operands are copied (and widened) into micro-panels (`Widen`, `PackB`);
//! - `kernels`: the micro-kernel interface, the run-time choice and the portable kernels;
//!   `x86`: the AVX2 and AVX-512 kernels, and `x86::lanes` the transposing loads of lanes along
//!   depth (for packing and for the one-row product's fused sums);
//! - `gemv`: the one-row path; `amx`: the bf16-operand driver on AMX tiles;
//! - `tests`: everything above against the oracle of `brainstacks_kernels::gemm`.

use std::mem::MaybeUninit;

use bytemuck::{Pod, Zeroable};
use half::bf16;

#[cfg(target_arch = "x86_64")]
mod amx;
mod driver;
mod gemv;
mod kernels;
mod pack;
mod scratch;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use driver::{CPtr, Out, gemm_out, gemm_with, prepare_out, reads_a_in_place, run_planned};
use kernels::{Acc, MicroKernel, f32_kernel, f64_kernel};
use pack::Widen;
pub(crate) use pack::{Lanes, PackB};
use scratch::with_scratch;

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
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transposed view of the same data.
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride }
    }

    /// Panics unless every element `(i, j)` with `i < rows`, `j < cols` indexes inside `data`.
    ///
    /// O(1), so it runs in release too: packing indexes with these strides.
    fn assert_fits(&self, name: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .and_then(|r| (self.cols - 1).checked_mul(self.col_stride).and_then(|c| r.checked_add(c)));
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

    /// Transposed as plain f32 (the vector path; the default would round and scatter one value at
    /// a time, which was 7% of a training step with bf16 base products), then rounded in place
    /// while the panel is in L1. Rounding commutes with moving, so the bits are the same.
    #[inline(always)]
    fn pack_lanes_along_depth(src: &[Self], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        f32::pack_lanes_along_depth(bytemuck::cast_slice(src), lanes, width, panel);
        for x in panel.iter_mut() {
            *x = round_through_bf16(*x);
        }
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
