//! Fast CPU products with NF4 weights: the weight is decoded straight into the GEMM's packed
//! micro-panels (see `gemm::PackB`), a panel at a time, so no full-size dequantized copy exists.
//!
//! The format and the oracle are in `brainstacks_kernels::nf4`. A decoded element is
//! `NF4_CODE[nibble] * absmax[block]`, one f32 multiply, exactly as the oracle's dequantization, so
//! the product differs from "dequantize, then `gemm_f32`" only by nothing at all: the panels hold
//! the same values the dense path would pack.
//!
//! Two orientations of a weight `W` (`[out, in]`, row-major, flattened into blocks):
//! - `y = x · Wᵀ` (forward): B = Wᵀ, each B column is a contiguous run of a W row. With AVX-512
//!   VBMI and 16-aligned shapes, 16 rows x 16 depths are decoded straight into the panel's
//!   layout (`avx512::decode_tile16`); otherwise each lane is decoded into a small lane-major
//!   scratch and transposed into the panel with the dense path's transposition.
//! - `dx = dy · W` (input gradient): B = W, each panel row is a contiguous run of a W row, decoded
//!   in place.

use std::cell::RefCell;
use std::ops::Range;

use brainstacks_kernels::nf4::NF4_CODE;

use super::gemm::{Lanes, PackB};

/// A borrowed NF4 weight `[out, in]` with f32 absmax per `blocksize` elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Nf4Ref<'a> {
    pub packed: &'a [u8],
    pub absmax: &'a [f32],
    pub out_features: usize,
    pub in_features: usize,
    pub blocksize: usize,
}

impl Nf4Ref<'_> {
    fn assert_consistent(&self) {
        let numel = self.out_features.checked_mul(self.in_features).expect("NF4 shape overflows");
        assert!(
            self.packed.len() == numel.div_ceil(2) && self.absmax.len() == numel.div_ceil(self.blocksize),
            "NF4 weight {}x{}: {} packed bytes and {} scales do not fit blocksize {}",
            self.out_features,
            self.in_features,
            self.packed.len(),
            self.absmax.len(),
            self.blocksize
        );
    }

    /// Decodes flat elements `start..start + out.len()` into `out`.
    #[inline]
    pub(crate) fn decode_run(&self, start: usize, out: &mut [f32]) {
        let mut e = start;
        let mut done = 0;
        while done < out.len() {
            // One block at a time: one scale for the whole chunk.
            let block = e / self.blocksize;
            let block_end = ((block + 1) * self.blocksize).min(start + out.len());
            let chunk = &mut out[done..done + (block_end - e)];
            decode_chunk(self.packed, e, self.absmax[block], chunk);
            done += chunk.len();
            e = block_end;
        }
    }
}

/// Decodes elements `e..e + out.len()` (all in one block, scale `scale`).
#[inline]
fn decode_chunk(packed: &[u8], mut e: usize, scale: f32, out: &mut [f32]) {
    let mut i = 0;
    if e % 2 == 1 && i < out.len() {
        out[i] = NF4_CODE[(packed[e / 2] & 0x0F) as usize] * scale;
        i += 1;
        e += 1;
    }
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        let whole = (out.len() - i) / 16 * 16;
        // SAFETY: AVX-512F/BW checked above; the slices hold the 8 bytes and 16 floats each step uses.
        unsafe { avx512::decode16s(&packed[e / 2..(e + whole) / 2], scale, &mut out[i..i + whole]) };
        i += whole;
        e += whole;
    }
    while i + 1 < out.len() {
        let b = packed[e / 2];
        out[i] = NF4_CODE[(b >> 4) as usize] * scale;
        out[i + 1] = NF4_CODE[(b & 0x0F) as usize] * scale;
        i += 2;
        e += 2;
    }
    if i < out.len() {
        out[i] = NF4_CODE[(packed[e / 2] >> 4) as usize] * scale;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use brainstacks_kernels::nf4::NF4_CODE;

    use super::Nf4Ref;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    /// Whether [`decode_tile16`] can pack these panels: the CPU has AVX-512 VBMI, and every 16
    /// depths of a row start on a byte and share one scale (`in_features` and the first depth
    /// multiples of 16; block sizes are powers of two >= 32), for lane groups of 16.
    pub(super) fn tiles_apply(w: &Nf4Ref<'_>, depth: &Range<usize>, nr: usize) -> bool {
        available()
            && is_x86_feature_detected!("avx512vbmi")
            && w.in_features.is_multiple_of(16)
            && depth.start.is_multiple_of(16)
            && depth.len().is_multiple_of(16)
            && nr.is_multiple_of(16)
            && w.blocksize.is_multiple_of(16)
    }

    /// `BYTE_PICK[b]`: byte `r * 8 + b` of two registers holding 16 rows' 8 packed bytes each
    /// (row r in bytes `8 r .. 8 r + 8`), moved to byte r (`vpermi2b` indices; bytes past 16 unused).
    const BYTE_PICK: [[u8; 64]; 8] = {
        let mut t = [[0u8; 64]; 8];
        let mut b = 0;
        while b < 8 {
            let mut r = 0;
            while r < 16 {
                t[b][r] = (r * 8 + b) as u8;
                r += 1;
            }
            b += 1;
        }
        t
    };

    /// Decodes weight rows `row0 .. row0 + 16` at `depth` straight into lanes `l0 .. l0 + 16` of
    /// a panel (`panel[p * nr + l0 + r] = W[row0 + r, depth.start + p]`). Per 16 depths: the 16
    /// rows' 8 packed bytes go into two registers; for each byte position one `vpermi2b` gathers
    /// that byte of all 16 rows, its two nibbles become two depths' 16 table indices, and one
    /// `vpermps` lookup and one multiply by the rows' scales give each depth's 16 lanes: the
    /// same `NF4_CODE[nibble] * absmax` as the scalar decode, with no lane-major scratch and no
    /// transpose.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VBMI; [`tiles_apply`] must hold; rows
    /// `row0 .. row0 + 16` and `depth` must lie inside the weight, and the panel must hold
    /// `depth.len()` rows of `nr >= l0 + 16` lanes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub(super) unsafe fn decode_tile16(w: &Nf4Ref<'_>, row0: usize, depth: Range<usize>, panel: &mut [f32], nr: usize, l0: usize) {
        debug_assert!(row0 + 16 <= w.out_features && depth.end <= w.in_features && l0 + 16 <= nr);
        let lut = unsafe { _mm512_loadu_ps(NF4_CODE.as_ptr()) };
        let low4 = _mm_set1_epi8(0x0F);
        let first: [usize; 16] = std::array::from_fn(|r| (row0 + r) * w.in_features);
        for (t, p) in depth.clone().step_by(16).enumerate() {
            // Element e = first[r] + p is a multiple of 16: its 16 values are the 8 bytes from
            // e / 2, all under scale e / blocksize.
            let bytes: [i64; 16] = std::array::from_fn(|r| {
                let at = (first[r] + p) / 2;
                i64::from_le_bytes(w.packed[at..at + 8].try_into().expect("8 bytes"))
            });
            let scales: [f32; 16] = std::array::from_fn(|r| w.absmax[(first[r] + p) / w.blocksize]);
            // SAFETY: register work and loads of the local arrays above; the stores write 16
            // floats at rows t * 16 + 2b (+ 1) < depth.len() of the panel, lanes l0 .. l0 + 16.
            unsafe {
                let lo_rows = _mm512_loadu_si512(bytes[..8].as_ptr().cast());
                let hi_rows = _mm512_loadu_si512(bytes[8..].as_ptr().cast());
                let s = _mm512_loadu_ps(scales.as_ptr());
                for (b, pick) in BYTE_PICK.iter().enumerate() {
                    let x = _mm512_castsi512_si128(_mm512_permutex2var_epi8(lo_rows, _mm512_loadu_si512(pick.as_ptr().cast()), hi_rows));
                    // Element 2b is the high nibble, 2b + 1 the low one.
                    let hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16::<4>(x), low4));
                    let lo = _mm512_cvtepu8_epi32(_mm_and_si128(x, low4));
                    let row = (t * 16 + 2 * b) * nr + l0;
                    let dst = &mut panel[row..row + nr + 16];
                    _mm512_storeu_ps(dst.as_mut_ptr(), _mm512_mul_ps(_mm512_permutexvar_ps(hi, lut), s));
                    _mm512_storeu_ps(dst[nr..].as_mut_ptr(), _mm512_mul_ps(_mm512_permutexvar_ps(lo, lut), s));
                }
            }
        }
    }

    /// Decodes `out.len()` (a multiple of 16) elements from `bytes` (`out.len() / 2` bytes, element
    /// 2i in the high nibble of byte i), times `scale`. Per 16 elements: one 8-byte load, nibbles
    /// split and interleaved into byte order, widened to 16 indices, one 16-entry table lookup
    /// (`vpermps`) and one multiply: the same f32 product as the scalar path.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn decode16s(bytes: &[u8], scale: f32, out: &mut [f32]) {
        debug_assert_eq!(out.len() % 16, 0);
        debug_assert_eq!(bytes.len() * 2, out.len());
        let lut = unsafe { _mm512_loadu_ps(NF4_CODE.as_ptr()) };
        let s = _mm512_set1_ps(scale);
        let low4 = _mm_set1_epi8(0x0F);
        for (src, dst) in bytes.chunks_exact(8).zip(out.chunks_exact_mut(16)) {
            // SAFETY: `src` has 8 bytes, `dst` 16 floats.
            unsafe {
                let x = _mm_loadl_epi64(src.as_ptr().cast::<__m128i>());
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), low4);
                let lo = _mm_and_si128(x, low4);
                let idx = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
                let v = _mm512_mul_ps(_mm512_permutexvar_ps(idx, lut), s);
                _mm512_storeu_ps(dst.as_mut_ptr(), v);
            }
        }
    }
}

thread_local! {
    /// Lane-major decode scratch of the forward orientation (at most `nr * kc` floats).
    static LANES_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The `rows`/`cols`/`assert_fits` part of `PackB`, shared by both orientations and both
/// accumulation types: B is `rows x cols` in terms of the weight's dimensions.
macro_rules! shape_of_b {
    ($rows:ident x $cols:ident) => {
        fn rows(&self) -> usize {
            self.0.$rows
        }
        fn cols(&self) -> usize {
            self.0.$cols
        }
        fn assert_fits(&self) {
            self.0.assert_consistent();
        }
    };
}

/// B = Wᵀ (`in` x `out`): the forward product `y = x · Wᵀ`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Nf4Transposed<'a>(pub Nf4Ref<'a>);

/// B = W (`out` x `in`): the input gradient `dx = dy · W`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Nf4Plain<'a>(pub Nf4Ref<'a>);

impl PackB<f32> for Nf4Transposed<'_> {
    shape_of_b!(in_features x out_features);
    fn pack(&self, depth: Range<usize>, cols: Range<usize>, nr: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx512::tiles_apply(&self.0, &depth, nr) {
            return pack_transposed_tiles(&self.0, depth, cols, nr, out);
        }
        pack_transposed_lanes(&self.0, depth, cols, nr, out);
    }
}

/// [`Nf4Transposed`]'s panels one lane (weight row) at a time: each row's run of depths is
/// decoded into a lane-major scratch, then transposed into the panel.
fn pack_transposed_lanes(w: &Nf4Ref<'_>, depth: Range<usize>, cols: Range<usize>, nr: usize, out: &mut [f32]) {
    let kc = depth.len();
    LANES_SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < nr * kc {
            scratch.resize(nr * kc, 0.0);
        }
        for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
            let c0 = cols.start + q * nr;
            let valid = nr.min(cols.end - c0);
            for l in 0..valid {
                let row = c0 + l;
                w.decode_run(row * w.in_features + depth.start, &mut scratch[l * kc..(l + 1) * kc]);
            }
            let lanes = Lanes { base: 0, valid, lane_stride: kc, depth_stride: 1 };
            lanes.pack::<f32, f32>(&scratch[..nr * kc], nr, panel);
        }
    });
}

/// [`Nf4Transposed`]'s panels 16 lanes (weight rows) x 16 depths at a time, decoded straight
/// into the panel's layout (see `avx512::decode_tile16`); lanes past the last whole 16 go
/// through the lane-by-lane decode. The same values as the general path: only the order in
/// which they are written differs.
#[cfg(target_arch = "x86_64")]
fn pack_transposed_tiles(w: &Nf4Ref<'_>, depth: Range<usize>, cols: Range<usize>, nr: usize, out: &mut [f32]) {
    let kc = depth.len();
    let mut lane = Vec::new();
    for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
        let c0 = cols.start + q * nr;
        let valid = nr.min(cols.end - c0);
        let whole = valid / 16 * 16;
        for l0 in (0..whole).step_by(16) {
            // SAFETY: `tiles_apply` checked AVX-512 F/BW/VBMI and the alignment the tiles need;
            // rows c0 + l0 .. + 16 <= cols.end <= out_features, depths inside in_features (the
            // driver asks for rows of B = Wᵀ inside its shape), and lanes l0 .. l0 + 16 <= nr.
            unsafe { avx512::decode_tile16(w, c0 + l0, depth.clone(), panel, nr, l0) };
        }
        if whole < valid {
            lane.resize(kc, 0.0);
            for l in whole..valid {
                w.decode_run((c0 + l) * w.in_features + depth.start, &mut lane);
                for (p, &x) in lane.iter().enumerate() {
                    panel[p * nr + l] = x;
                }
            }
        }
        if valid < nr {
            for row in panel.chunks_exact_mut(nr) {
                row[valid..].fill(0.0);
            }
        }
    }
}

impl PackB<f32> for Nf4Plain<'_> {
    shape_of_b!(out_features x in_features);
    fn pack(&self, depth: Range<usize>, cols: Range<usize>, nr: usize, out: &mut [f32]) {
        let w = &self.0;
        let kc = depth.len();
        for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
            let c0 = cols.start + q * nr;
            let valid = nr.min(cols.end - c0);
            for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
                let row = depth.start + p;
                w.decode_run(row * w.in_features + c0, &mut dst[..valid]);
                dst[valid..].fill(0.0);
            }
        }
    }
}

/// The f64 panels (gradient checks): decoded in f32 exactly as above, then widened.
impl PackB<f64> for Nf4Transposed<'_> {
    shape_of_b!(in_features x out_features);
    fn pack(&self, depth: Range<usize>, cols: Range<usize>, nr: usize, out: &mut [f64]) {
        let w = &self.0;
        let kc = depth.len();
        let mut lane = vec![0f32; kc];
        for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
            let c0 = cols.start + q * nr;
            let valid = nr.min(cols.end - c0);
            panel.fill(0.0);
            for l in 0..valid {
                w.decode_run((c0 + l) * w.in_features + depth.start, &mut lane);
                for (p, &v) in lane.iter().enumerate() {
                    panel[p * nr + l] = f64::from(v);
                }
            }
        }
    }
}

impl PackB<f64> for Nf4Plain<'_> {
    shape_of_b!(out_features x in_features);
    fn pack(&self, depth: Range<usize>, cols: Range<usize>, nr: usize, out: &mut [f64]) {
        let w = &self.0;
        let kc = depth.len();
        let mut run = vec![0f32; nr];
        for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
            let c0 = cols.start + q * nr;
            let valid = nr.min(cols.end - c0);
            for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
                w.decode_run((depth.start + p) * w.in_features + c0, &mut run[..valid]);
                for (d, &v) in dst.iter_mut().zip(&run[..valid]) {
                    *d = f64::from(v);
                }
                dst[valid..].fill(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainstacks_kernels::nf4::{dequantize_nf4, quantize_nf4};

    fn weights(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(97));
                ((h >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 3.0
            })
            .collect()
    }

    #[test]
    fn decode_run_equals_the_oracle_dequantization_at_any_start_and_length() {
        for blocksize in [32usize, 64, 128] {
            let w = weights(4 * blocksize + 5, blocksize as u32);
            let q = quantize_nf4(&w, blocksize).unwrap();
            let want = dequantize_nf4(&q);
            let r = Nf4Ref { packed: q.packed(), absmax: q.absmax(), out_features: 1, in_features: w.len(), blocksize };
            for start in [0usize, 1, 2, 15, 16, 17, 63, 64, 65, blocksize - 1] {
                for len in [0usize, 1, 2, 3, 16, 17, 33, 100, w.len() - start] {
                    if start + len > w.len() {
                        continue;
                    }
                    let mut got = vec![f32::NAN; len];
                    r.decode_run(start, &mut got);
                    assert_eq!(got, want[start..start + len], "bs {blocksize} start {start} len {len}");
                }
            }
        }
    }

    /// A one-row product (the decode step, which takes the one-row path) gets, row by row, the
    /// bits of the same rows inside a larger product (the blocked driver), both orientations, with
    /// several KC blocks and a partial last panel.
    #[test]
    fn one_row_products_match_their_rows_in_a_larger_product_bitwise() {
        use super::super::gemm::{MatRef, gemm_f32_packed};
        let (out_f, in_f, m, blocksize) = (37, 600, 5, 64);
        let q = quantize_nf4(&weights(out_f * in_f, 3), blocksize).unwrap();
        let w = Nf4Ref { packed: q.packed(), absmax: q.absmax(), out_features: out_f, in_features: in_f, blocksize };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let check = |k: usize, n: usize, product: &dyn Fn(MatRef<'_, f32>, &mut [f32])| {
            let x = weights(m * k, 7);
            let mut whole = vec![0.0f32; m * n];
            product(MatRef::row_major(&x, m, k), &mut whole);
            for i in 0..m {
                let mut alone = vec![0.0f32; n];
                product(MatRef::row_major(&x[i * k..(i + 1) * k], 1, k), &mut alone);
                assert_eq!(bits(&alone), bits(&whole[i * n..(i + 1) * n]), "row {i}, k {k}, n {n}");
            }
        };
        check(in_f, out_f, &|x, y| gemm_f32_packed(x, Nf4Transposed(w), y, false));
        check(out_f, in_f, &|x, y| gemm_f32_packed(x, Nf4Plain(w), y, false));
    }

    /// The 16 x 16 tile decode writes exactly the panels the lane-by-lane decode writes: partial
    /// lane groups (cols not a multiple of 16), depth windows starting past 0, both panel widths,
    /// several scales per row and scales shared across rows (block size > in_features).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tile_decode_packs_the_same_panels_as_the_lane_decode() {
        let probe = Nf4Ref { packed: &[], absmax: &[], out_features: 0, in_features: 16, blocksize: 32 };
        if !avx512::tiles_apply(&probe, &(0..16), 16) {
            eprintln!("no AVX-512 VBMI on this CPU: the tile decode is not used here, nothing to compare");
            return;
        }
        let mut compared = 0;
        for (out_f, in_f) in [(37usize, 96usize), (16, 512), (70, 1024), (5, 32)] {
            for blocksize in [32usize, 64, 128, 256] {
                let q = quantize_nf4(&weights(out_f * in_f, (in_f + blocksize) as u32), blocksize).unwrap();
                let w = Nf4Ref { packed: q.packed(), absmax: q.absmax(), out_features: out_f, in_features: in_f, blocksize };
                let depths = [0..in_f, 16..in_f - 16, (in_f / 2 / 16 * 16)..in_f];
                let cols = [0..out_f, 3..out_f, (out_f / 3)..out_f.min(out_f / 3 + 21)];
                for depth in depths.iter().filter(|d| !d.is_empty()) {
                    for col in cols.iter().filter(|c| !c.is_empty()) {
                        for nr in [16usize, 32] {
                            assert!(avx512::tiles_apply(&w, depth, nr));
                            let len = col.len().div_ceil(nr) * nr * depth.len();
                            let (mut tiles, mut lanes) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                            pack_transposed_tiles(&w, depth.clone(), col.clone(), nr, &mut tiles);
                            pack_transposed_lanes(&w, depth.clone(), col.clone(), nr, &mut lanes);
                            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            assert!(
                                bits(&tiles) == bits(&lanes),
                                "{out_f}x{in_f} blocksize {blocksize} depth {depth:?} cols {col:?} nr {nr}"
                            );
                            compared += 1;
                        }
                    }
                }
            }
        }
        assert!(compared > 50);
    }
}
