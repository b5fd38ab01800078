//! x86-64 micro-kernels, chosen at run time by `is_x86_feature_detected!`.
//!
//! Cache sizes behind the blocking (Sapphire Rapids, typical of recent x86 servers): L1d 48 KiB,
//! L2 2 MiB per core, a large shared L3.

mod lanes;

pub(super) use lanes::{fused_lane_sums_bf16, fused_lane_sums_f32, transpose_lanes_bf16, transpose_lanes_f32};

use std::arch::x86_64::*;

use super::kernels::{MicroKernel, a_index, tile_generic};

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
/// As [`super::kernels::KernelFn`] with `mr = MR`, `nr = 16 * NV`; the CPU must support AVX-512F.
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
            let ai = _mm512_set1_ps(unsafe { *a.add(a_index::<MR, DIRECT>(i, p, lda)) });
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
                let out = if load_c { _mm512_add_ps(_mm512_loadu_ps(ci), sum) } else { sum };
                _mm512_storeu_ps(ci, out);
            }
        }
    }
}

/// # Safety
/// As [`super::kernels::KernelFn`]; the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_f32_avx2<const DIRECT: bool>(kc: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize, load_c: bool) {
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
            let ai = _mm256_set1_ps(unsafe { *a.add(a_index::<MR, DIRECT>(i, p, lda)) });
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
/// As [`super::kernels::KernelFn`]; the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_f64_avx2<const DIRECT: bool>(kc: usize, a: *const f64, lda: usize, b: *const f64, c: *mut f64, ldc: usize, load_c: bool) {
    // SAFETY: forwarded contract; `mul_add` compiles to a single FMA with the fma feature on.
    unsafe { tile_generic::<f64, 4, 8, DIRECT>(kc, a, lda, b, c, ldc, load_c, |x, y, acc| x.mul_add(y, acc)) }
}
