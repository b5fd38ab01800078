//! The micro-kernel interface: one MR x NR tile of C per call, the cache blocking tuned for each
//! kernel, the run-time choice among them, and the portable kernels every CPU can run.

use bytemuck::Pod;

#[cfg(target_arch = "x86_64")]
use super::x86;

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
pub(super) type KernelFn<E> = unsafe fn(kc: usize, a: *const E, lda: usize, b: *const E, c: *mut E, ldc: usize, load_c: bool);

/// Where element `(i, p)` of an A micro-panel is: packed (`a[p * MR + i]`) or in place
/// (`a[i * lda + p]`). A constant, so each kernel compiles once per layout.
#[inline(always)]
pub(super) const fn a_index<const MR: usize, const DIRECT: bool>(i: usize, p: usize, lda: usize) -> usize {
    if DIRECT { i * lda + p } else { p * MR + i }
}

/// A micro-kernel with the tile shape it computes and the cache blocking tuned for it.
#[derive(Clone, Copy)]
pub(super) struct MicroKernel<E> {
    pub(super) name: &'static str,
    /// Rows of the C tile (A values broadcast per step).
    pub(super) mr: usize,
    /// Columns of the C tile (B values loaded as vectors per step).
    pub(super) nr: usize,
    /// Depth of one packed block: the A micro-panel (`mr * kc`) should sit in L1 next to a streamed
    /// B micro-panel.
    pub(super) kc: usize,
    /// Rows of A packed at once: the packed A block is consumed right after packing, one L1
    /// micro-panel at a time, so this mostly bounds the scratch memory.
    pub(super) mc: usize,
    /// Columns of B packed at once: the `kc * nc` block is re-read for every A micro-panel, so it
    /// should stay in L2.
    pub(super) nc: usize,
    /// Whether each step is one fused multiply-add (the SIMD kernels) or a multiply then an add
    /// (the portable ones): the one-row path (`gemv`) must round as the kernel does.
    pub(super) fused: bool,
    pub(super) run: KernelFn<E>,
    /// The same tile reading A in place (see [`KernelFn`]): for products whose A is contiguous
    /// along k and whose B is narrow, where packing A would cost about as much as the product.
    pub(super) run_direct: KernelFn<E>,
}

/// Largest `mr * nr` of any kernel: the size of the stack tile used for edge tiles.
pub(super) const MAX_TILE: usize = 24 * 16;

/// The fastest f32 kernel this CPU supports for products with `n` columns.
pub(super) fn f32_kernel(n: usize) -> MicroKernel<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return if n <= 16 { x86::F32_AVX512_NARROW } else { x86::F32_AVX512 };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return x86::F32_AVX2;
        }
    }
    F32_PORTABLE
}

/// The fastest f64 kernel this CPU supports.
pub(super) fn f64_kernel() -> MicroKernel<f64> {
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
pub(super) fn f32_kernels_available() -> Vec<MicroKernel<f32>> {
    #[cfg(target_arch = "x86_64")]
    let simd = [
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(x86::F32_AVX2),
        is_x86_feature_detected!("avx512f").then_some(x86::F32_AVX512),
        is_x86_feature_detected!("avx512f").then_some(x86::F32_AVX512_NARROW),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let simd: [Option<MicroKernel<f32>>; 0] = [];
    std::iter::once(F32_PORTABLE).chain(simd.into_iter().flatten()).collect()
}

/// Every f64 kernel this CPU can run.
#[cfg(test)]
pub(super) fn f64_kernels_available() -> Vec<MicroKernel<f64>> {
    #[cfg(target_arch = "x86_64")]
    let simd = [(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(x86::F64_AVX2)];
    #[cfg(not(target_arch = "x86_64"))]
    let simd: [Option<MicroKernel<f64>>; 0] = [];
    std::iter::once(F64_PORTABLE).chain(simd.into_iter().flatten()).collect()
}

/// Portable tile shape: 4 x 8 accumulators fit the 16 vector registers of SSE2 or NEON as f32.
const PORTABLE_MR: usize = 4;
const PORTABLE_NR: usize = 8;

/// Portable f32 fallback for CPUs without AVX2+FMA (and for non-x86 targets).
pub(super) const F32_PORTABLE: MicroKernel<f32> = MicroKernel {
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
pub(super) unsafe fn tile_generic<E: Acc, const MR: usize, const NR: usize, const DIRECT: bool>(
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
unsafe fn kernel_portable<E: Acc + std::ops::Mul<Output = E>, const MR: usize, const NR: usize, const DIRECT: bool>(
    kc: usize,
    a: *const E,
    lda: usize,
    b: *const E,
    c: *mut E,
    ldc: usize,
    load_c: bool,
) {
    // SAFETY: forwarded contract.
    unsafe { tile_generic::<E, MR, NR, DIRECT>(kc, a, lda, b, c, ldc, load_c, |x, y, acc| acc + x * y) }
}
