//! CPU oracle of the Philox 4x32-10 generator and the streams built on it (layout in `mod.rs`).

use super::math::box_muller;
use super::{PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1};

#[inline]
fn mul_hi_lo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

#[inline]
fn round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mul_hi_lo(PHILOX_M0, c[0]);
    let (hi1, lo1) = mul_hi_lo(PHILOX_M1, c[2]);
    [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0]
}

/// One Philox 4x32-10 block: ten rounds, the key bumped by the Weyl constants between rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        }
        c = round(c, k);
    }
    c
}

/// The four raw words of the block that holds global element index `g` (element is lane `g % 4`).
#[inline]
pub fn block_for(seed: u64, g: u64) -> [u32; 4] {
    let b = g >> 2;
    philox4x32_10([b as u32, (b >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32])
}

/// Uniform in the open interval (0, 1) with 24 random bits, exact in f32.
#[inline]
pub fn u32_to_unit_f32(x: u32) -> f32 {
    ((x >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// Uniform in the open interval (0, 1) with 32 random bits, exact in f64.
#[inline]
pub fn u32_to_unit_f64(x: u32) -> f64 {
    (x as f64 + 0.5) * (1.0 / 4_294_967_296.0)
}

/// The four standard normals of one block (Box-Muller on lane pairs, f64 math with our own
/// `ln`/`sin`/`cos` from [`super::math`], which the GPU kernel reproduces bit for bit).
pub fn normals_of_block(w: [u32; 4]) -> [f64; 4] {
    let (n0, n1) = box_muller(u32_to_unit_f64(w[0]), u32_to_unit_f64(w[1]));
    let (n2, n3) = box_muller(u32_to_unit_f64(w[2]), u32_to_unit_f64(w[3]));
    [n0, n1, n2, n3]
}

/// Calls `f(out_slot, lane_value)` for elements `offset .. offset + out.len()`, computing each
/// Philox block (and whatever `per_block` derives from it, e.g. four normals) once for the up to
/// four elements it holds rather than once per element.
fn fill_by_block<T, V: Copy>(
    seed: u64,
    offset: u64,
    out: &mut [T],
    per_block: impl Fn([u32; 4]) -> [V; 4],
    mut f: impl FnMut(&mut T, V),
) {
    let mut i = 0;
    while i < out.len() {
        let g = offset + i as u64;
        let lanes = per_block(block_for(seed, g));
        // From lane g % 4 to the end of the block or of `out`.
        let first = (g & 3) as usize;
        let take = (4 - first).min(out.len() - i);
        for (o, &v) in out[i..i + take].iter_mut().zip(&lanes[first..first + take]) {
            f(o, v);
        }
        i += take;
    }
}

/// Raw 32-bit words for elements `offset .. offset + out.len()`.
pub fn fill_u32(seed: u64, offset: u64, out: &mut [u32]) {
    fill_by_block(seed, offset, out, |w| w, |o, w| *o = w);
}

/// Uniform f32 in (low, high) for elements `offset .. offset + out.len()`.
pub fn fill_uniform_f32(seed: u64, offset: u64, low: f32, high: f32, out: &mut [f32]) {
    fill_by_block(seed, offset, out, |w| w, |o, w| *o = low + (high - low) * u32_to_unit_f32(w));
}

/// Uniform f64 in (low, high) for elements `offset .. offset + out.len()`.
pub fn fill_uniform_f64(seed: u64, offset: u64, low: f64, high: f64, out: &mut [f64]) {
    fill_by_block(seed, offset, out, |w| w, |o, w| *o = low + (high - low) * u32_to_unit_f64(w));
}

/// Normal(mean, std) as f64 for elements `offset .. offset + out.len()`.
pub fn fill_normal_f64(seed: u64, offset: u64, mean: f64, std: f64, out: &mut [f64]) {
    fill_by_block(seed, offset, out, normals_of_block, |o, n| *o = mean + std * n);
}

/// Normal(mean, std) rounded once to f32, for elements `offset .. offset + out.len()`.
pub fn fill_normal_f32(seed: u64, offset: u64, mean: f32, std: f32, out: &mut [f32]) {
    fill_by_block(seed, offset, out, normals_of_block, |o, n| *o = (mean as f64 + std as f64 * n) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors published with the Random123 library for philox4x32_10.
    #[test]
    fn known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    /// The block-wise fills give, for every element, the lane of its own block: the same values
    /// as computing each element's block alone, for every offset and length around block edges.
    #[test]
    fn block_wise_fills_match_per_element_blocks() {
        for offset in 0..9u64 {
            for len in 0..11usize {
                let mut n32 = vec![0f32; len];
                let mut n64 = vec![0f64; len];
                let mut u = vec![0u32; len];
                let mut uf = vec![0f32; len];
                fill_normal_f32(5, offset, 0.5, 2.0, &mut n32);
                fill_normal_f64(5, offset, 0.5, 2.0, &mut n64);
                fill_u32(5, offset, &mut u);
                fill_uniform_f32(5, offset, -1.0, 3.0, &mut uf);
                for i in 0..len {
                    let g = offset + i as u64;
                    let (w, lane) = (block_for(5, g), (g & 3) as usize);
                    let n = normals_of_block(w)[lane];
                    assert_eq!(n32[i].to_bits(), ((0.5f64 + 2.0 * n) as f32).to_bits());
                    assert_eq!(n64[i].to_bits(), (0.5 + 2.0 * n).to_bits());
                    assert_eq!(u[i], w[lane]);
                    assert_eq!(uf[i].to_bits(), (-1.0 + 4.0 * u32_to_unit_f32(w[lane])).to_bits());
                }
            }
        }
    }

    #[test]
    fn offset_continues_the_stream() {
        let mut whole = vec![0f32; 37];
        fill_normal_f32(7, 0, 0.0, 1.0, &mut whole);
        let mut tail = vec![0f32; 30];
        fill_normal_f32(7, 7, 0.0, 1.0, &mut tail);
        assert_eq!(&whole[7..], &tail[..]);
    }

    #[test]
    fn moments_are_plausible() {
        let n = 1 << 16;
        let mut x = vec![0f64; n];
        fill_normal_f64(123, 0, 0.0, 1.0, &mut x);
        let mean = x.iter().sum::<f64>() / n as f64;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
        // Standard errors: mean 1/sqrt(n) ~ 0.004, variance sqrt(2/n) ~ 0.0055; allow 5 sigma.
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "var {var}");
        let mut u = vec![0f32; n];
        fill_uniform_f32(5, 3, -1.0, 1.0, &mut u);
        assert!(u.iter().all(|v| *v > -1.0 && *v < 1.0));
        let mu = u.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
        assert!(mu.abs() < 0.02, "uniform mean {mu}");
    }
}
