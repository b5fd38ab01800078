//! Lanes read along depth (a transposed B, a row-major A), transposed 8 x 8 with AVX and AVX2
//! (4 x 4 with SSE, then one by one): for packing panels, and for the one-row product's fused
//! sums, which skip the panel.

use std::arch::x86_64::*;

use half::bf16;

use crate::cpu::gemm::gemv;
use crate::cpu::gemm::pack::{Lanes, Widen, scatter_lanes};

/// Whether [`fused_lane_sums_with`] takes these lanes: exactly `gemv::WIDTH` of them, each
/// contiguous along k, and a depth that is a multiple of 8.
fn fused_lanes_fit(a: &[f32], lanes: &Lanes) -> bool {
    lanes.valid == gemv::WIDTH && lanes.depth_stride == 1 && a.len().is_multiple_of(8)
}

/// [`Widen::fused_lane_sums`] for f32: `None` unless the CPU has AVX and FMA and the
/// lanes fit ([`fused_lanes_fit`]).
pub(in crate::cpu::gemm) fn fused_lane_sums_f32(a: &[f32], src: &[f32], lanes: &Lanes) -> Option<[f32; gemv::WIDTH]> {
    if !(fused_lanes_fit(a, lanes) && is_x86_feature_detected!("avx") && is_x86_feature_detected!("fma")) {
        return None;
    }
    // SAFETY: AVX and FMA are present (checked just above).
    Some(unsafe { fused_lane_sums_f32_avx(a, src, lanes) })
}

/// # Safety
/// The CPU must have AVX and FMA; the lanes fit ([`fused_lanes_fit`]).
#[target_feature(enable = "avx,fma")]
unsafe fn fused_lane_sums_f32_avx(a: &[f32], src: &[f32], lanes: &Lanes) -> [f32; gemv::WIDTH] {
    // SAFETY: the caller's contract; `load_transposed_8x8` needs only AVX and is called on 8
    // readable values per row.
    unsafe { fused_lane_sums_with(a, src, lanes, |rows, p| load_transposed_8x8(rows, p)) }
}

/// [`Widen::fused_lane_sums`] for bf16: `None` unless the CPU has AVX2 and FMA and the
/// lanes fit ([`fused_lanes_fit`]).
pub(in crate::cpu::gemm) fn fused_lane_sums_bf16(a: &[f32], src: &[bf16], lanes: &Lanes) -> Option<[f32; gemv::WIDTH]> {
    if !(fused_lanes_fit(a, lanes) && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return None;
    }
    // SAFETY: AVX2 and FMA are present (checked just above).
    Some(unsafe { fused_lane_sums_bf16_avx2(a, src, lanes) })
}

/// # Safety
/// The CPU must have AVX2 and FMA; the lanes fit ([`fused_lanes_fit`]).
#[target_feature(enable = "avx2,fma")]
unsafe fn fused_lane_sums_bf16_avx2(a: &[f32], src: &[bf16], lanes: &Lanes) -> [f32; gemv::WIDTH] {
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
) -> [f32; gemv::WIDTH] {
    const GROUPS: usize = gemv::WIDTH / 8;
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
    let mut out = [0f32; gemv::WIDTH];
    for (chunk, v) in out.chunks_exact_mut(8).zip(acc) {
        // SAFETY: `chunk` is 8 writable f32 values.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), v) };
    }
    out
}

/// [`Widen::pack_lanes_along_depth`] for f32.
pub(in crate::cpu::gemm) fn transpose_lanes_f32(src: &[f32], lanes: &Lanes, width: usize, panel: &mut [f32]) {
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

/// [`Widen::pack_lanes_along_depth`] for bf16: 8 lanes x 8 depths at a time with AVX2
/// (see [`transpose_lanes_8x8`]), else 4 x 4 with SSE2. Either way a value widens by moving
/// its 16-bit pattern to the top half of a 32-bit lane (see `Widen::widen` for bf16).
pub(in crate::cpu::gemm) fn transpose_lanes_bf16(src: &[bf16], lanes: &Lanes, width: usize, panel: &mut [f32]) {
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
    scatter_lanes(src, lanes, lanes8, width, panel, T::widen);
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
fn transpose_lanes<T: Widen<f32>>(src: &[T], lanes: &Lanes, width: usize, panel: &mut [f32], load4: impl Fn(*const T) -> __m128) {
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
    scatter_lanes(src, lanes, lanes4, width, panel, T::widen);
}
