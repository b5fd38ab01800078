//! CPU oracle for NF4: quantize, dequantize and a dequantize-then-multiply GEMM accumulated in
//! `f64`. Plain loops that follow the contract in [`super`] line by line.

use super::{
    NF4_CODE, NF4_ZERO_NIBBLE, Nf4Error, Nf4Quantized, check_blocksize, check_finite, nf4_nibble,
};

/// Scales one element by its block's reciprocal absmax (see the module docs for why the
/// reciprocal, and for the fallback when it overflows).
fn scale(x: f32, absmax: f32, recip: f32) -> f32 {
    if recip.is_finite() {
        x * recip
    } else {
        // absmax is so small that 1/absmax overflowed; divide in f64 so zeros stay zeros.
        (f64::from(x) / f64::from(absmax)) as f32
    }
}

/// Quantizes `weights` (a row-major `[out, in]` matrix flattened, or any flat vector) to NF4 with
/// one absmax per `blocksize` elements, following the module's rule bit for bit.
///
/// Errors: NaN or ±inf anywhere in `weights`, or a block size bitsandbytes does not accept.
pub fn quantize_nf4(weights: &[f32], blocksize: usize) -> Result<Nf4Quantized, Nf4Error> {
    check_blocksize(blocksize)?;
    check_finite(weights)?;
    let numel = weights.len();
    let mut absmax = Vec::with_capacity(numel.div_ceil(blocksize));
    let mut nibbles = Vec::with_capacity(numel + 1);
    for block in weights.chunks(blocksize) {
        let amax = block.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        absmax.push(amax);
        if amax == 0.0 {
            // No scale exists; every element is zero and gets the code of 0.0 (no NaN formed).
            nibbles.extend(std::iter::repeat_n(NF4_ZERO_NIBBLE, block.len()));
            continue;
        }
        let recip = 1.0f32 / amax;
        nibbles.extend(block.iter().map(|&x| nf4_nibble(scale(x, amax, recip))));
    }
    if numel % 2 == 1 {
        // The pad is a zero element, whose code is 0.0 whatever the block's scale.
        nibbles.push(NF4_ZERO_NIBBLE);
    }
    let packed = nibbles
        .chunks_exact(2)
        .map(|p| (p[0] << 4) | p[1])
        .collect();
    Ok(Nf4Quantized::new_unchecked(
        packed, absmax, numel, blocksize,
    ))
}

/// Dequantizes: element `i` is `NF4_CODE[nibble_i] * absmax[i / blocksize]`, one `f32` multiply
/// (bitsandbytes keeps this product in fp32 before any cast to the compute dtype).
pub fn dequantize_nf4(q: &Nf4Quantized) -> Vec<f32> {
    let bs = q.blocksize();
    let absmax = q.absmax();
    let mut out = Vec::with_capacity(q.numel());
    for (byte_idx, &byte) in q.packed().iter().enumerate() {
        for (half, nib) in [(0usize, byte >> 4), (1, byte & 0x0f)] {
            let i = 2 * byte_idx + half;
            if i < q.numel() {
                out.push(NF4_CODE[usize::from(nib)] * absmax[i / bs]);
            }
        }
    }
    out
}

/// Oracle GEMM `y = x W^T`: `x` is `[m, k]` row-major, `W` is the `[n, k]` weight held in `q`
/// (dequantized to `f32` exactly as [`dequantize_nf4`] does), `y` is `[m, n]`. Products and sums
/// are in `f64`, so the only rounding that matters is the `f32` dequantization itself.
///
/// Errors: `x.len() != m * k`, `q.numel() != n * k`, or an overflowing shape product.
pub fn nf4_matmul_f64(
    x: &[f32],
    m: usize,
    k: usize,
    q: &Nf4Quantized,
    n: usize,
) -> Result<Vec<f64>, Nf4Error> {
    let mk = m.checked_mul(k).ok_or(Nf4Error::Overflow)?;
    let nk = n.checked_mul(k).ok_or(Nf4Error::Overflow)?;
    m.checked_mul(n).ok_or(Nf4Error::Overflow)?;
    if x.len() != mk {
        return Err(Nf4Error::ShapeMismatch {
            what: "x",
            expected: mk,
            got: x.len(),
        });
    }
    if q.numel() != nk {
        return Err(Nf4Error::ShapeMismatch {
            what: "weight numel",
            expected: nk,
            got: q.numel(),
        });
    }
    let w = dequantize_nf4(q);
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            y[i * n + j] = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
        }
    }
    Ok(y)
}

/// Oracle of the backward product through the weight: `dx = dy W`, `dy` `[m, n]` row-major, `W`
/// the `[n, k]` weight in `q` (dequantized as [`dequantize_nf4`]), `dx` `[m, k]`, summed in `f64`
/// over `n` (the transposed use of [`nf4_matmul_f64`]).
///
/// Errors: `dy.len() != m * n`, `q.numel() != n * k`, or an overflowing shape product.
pub fn nf4_matmul_transposed_f64(
    dy: &[f32],
    m: usize,
    n: usize,
    q: &Nf4Quantized,
    k: usize,
) -> Result<Vec<f64>, Nf4Error> {
    let mn = m.checked_mul(n).ok_or(Nf4Error::Overflow)?;
    let nk = n.checked_mul(k).ok_or(Nf4Error::Overflow)?;
    let mk = m.checked_mul(k).ok_or(Nf4Error::Overflow)?;
    if dy.len() != mn {
        return Err(Nf4Error::ShapeMismatch {
            what: "dy",
            expected: mn,
            got: dy.len(),
        });
    }
    if q.numel() != nk {
        return Err(Nf4Error::ShapeMismatch {
            what: "weight numel",
            expected: nk,
            got: q.numel(),
        });
    }
    let w = dequantize_nf4(q);
    let mut dx = vec![0.0f64; mk];
    for i in 0..m {
        for j in 0..n {
            let g = f64::from(dy[i * n + j]);
            for (p, &wv) in w[j * k..(j + 1) * k].iter().enumerate() {
                dx[i * k + p] += g * f64::from(wv);
            }
        }
    }
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::super::{NF4_MAX_HALF_GAP, NF4_MIDPOINTS};
    use super::*;
    use proptest::prelude::*;

    /// bitsandbytes' NF4 table as printed in `functional.py` (f64 decimals of f32 values).
    const BNB_DECIMALS: [f64; 16] = [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ];

    /// The CUDA decision-tree literals (f64 midpoints printed to 16-17 digits, `f` suffix).
    const CUDA_THRESHOLDS: [f64; 15] = [
        -0.8480964004993439,
        -0.6106329262256622,
        -0.4599952697753906,
        -0.33967943489551544,
        -0.23460740596055984,
        -0.13791173323988914,
        -0.045525018125772476,
        0.03979014977812767,
        0.1202552504837513,
        0.2035212516784668,
        0.2920137718319893,
        0.3893125355243683,
        0.5016634166240692,
        0.6427869200706482,
        0.8614784181118011,
    ];

    /// Reference rule without the tree: count of thresholds strictly below the value.
    fn count_rule(s: f32) -> u8 {
        NF4_MIDPOINTS.iter().filter(|&&t| s > t).count() as u8
    }

    fn block_with(absmax: f32, rest: &[f32]) -> Vec<f32> {
        let mut v = vec![0.0f32; 64];
        v[0] = absmax;
        v[1..=rest.len()].copy_from_slice(rest);
        v
    }

    #[test]
    fn codes_and_thresholds_are_bnb_values() {
        for (c, d) in NF4_CODE.iter().zip(BNB_DECIMALS) {
            assert_eq!(f64::from(*c), d, "code literal differs from bitsandbytes");
        }
        for i in 0..15 {
            let mid = ((f64::from(NF4_CODE[i]) + f64::from(NF4_CODE[i + 1])) / 2.0) as f32;
            assert_eq!(NF4_MIDPOINTS[i], mid);
            assert_eq!(NF4_MIDPOINTS[i], CUDA_THRESHOLDS[i] as f32);
            assert!(NF4_CODE[i] < NF4_MIDPOINTS[i] && NF4_MIDPOINTS[i] < NF4_CODE[i + 1]);
        }
        let widest = NF4_CODE
            .windows(2)
            .map(|w| f64::from(w[1]) - f64::from(w[0]))
            .fold(0.0, f64::max);
        assert!((f64::from(NF4_MAX_HALF_GAP) - widest / 2.0).abs() < 1e-7);
        assert_eq!(NF4_CODE[usize::from(NF4_ZERO_NIBBLE)], 0.0);
    }

    #[test]
    fn tree_on_codes_and_nan() {
        for (i, &c) in NF4_CODE.iter().enumerate() {
            assert_eq!(nf4_nibble(c), i as u8);
        }
        assert_eq!(nf4_nibble(f32::NAN), 0);
        assert_eq!(nf4_nibble(2.0), 15);
        assert_eq!(nf4_nibble(-2.0), 0);
    }

    /// A value exactly on a midpoint goes to the lower code; the next f32 up goes to the upper.
    /// Checked with absmax 1 and 4 (power-of-two scales make `x * (1/absmax)` exact).
    #[test]
    fn ties_go_low_at_every_midpoint() {
        for absmax in [1.0f32, 4.0, 0.25] {
            for (i, &t) in NF4_MIDPOINTS.iter().enumerate() {
                let on = t * absmax;
                let above = t.next_up() * absmax;
                let below = t.next_down() * absmax;
                let q = quantize_nf4(&block_with(absmax, &[on, above, below]), 64).unwrap();
                assert_eq!(q.absmax()[0], absmax);
                assert_eq!(q.nibble(1), Some(i as u8), "tie at midpoint {i}");
                assert_eq!(q.nibble(2), Some(i as u8 + 1), "just above midpoint {i}");
                assert_eq!(q.nibble(3), Some(i as u8), "just below midpoint {i}");
            }
        }
    }

    #[test]
    fn extremes_zeros_and_all_zero_blocks() {
        let q = quantize_nf4(&block_with(3.0, &[-3.0, 0.0, -0.0]), 64).unwrap();
        assert_eq!(q.nibble(0), Some(15));
        assert_eq!(q.nibble(1), Some(0));
        assert_eq!(q.nibble(2), Some(7));
        assert_eq!(q.nibble(3), Some(7));
        // Negative extreme alone sets absmax too.
        let q = quantize_nf4(&block_with(-0.5, &[0.5]), 64).unwrap();
        assert_eq!(q.absmax()[0], 0.5);
        assert_eq!((q.nibble(0), q.nibble(1)), (Some(0), Some(15)));

        // One all-zero block between two ordinary ones: 0x77 bytes, absmax 0, exact zeros back.
        let mut w = vec![1.0f32; 64];
        w.extend(std::iter::repeat_n(-0.0f32, 32));
        w.extend(std::iter::repeat_n(0.0f32, 32));
        w.extend(std::iter::repeat_n(-2.0f32, 64));
        let q = quantize_nf4(&w, 64).unwrap();
        assert_eq!(q.absmax(), &[1.0, 0.0, 2.0]);
        assert!(q.packed()[..32].iter().all(|&b| b == 0xff));
        assert!(q.packed()[32..64].iter().all(|&b| b == 0x77));
        assert!(q.packed()[64..].iter().all(|&b| b == 0x00));
        let d = dequantize_nf4(&q);
        assert!(d[64..128].iter().all(|&v| v == 0.0));
        assert!(d.iter().all(|v| v.is_finite()));
    }

    /// Element 2i -> high nibble, 2i+1 -> low nibble; a hand-built block with known codes.
    #[test]
    fn nibble_order_exact_bytes() {
        // codes: 15, 0, 7, 13, 8, 1, 14, 2, then zeros (7)
        let w = block_with(
            1.0,
            &[
                -1.0,
                0.0,
                NF4_CODE[13],
                NF4_CODE[8],
                NF4_CODE[1],
                NF4_CODE[14],
                NF4_CODE[2],
            ],
        );
        let q = quantize_nf4(&w, 64).unwrap();
        assert_eq!(&q.packed()[..5], &[0xf0, 0x7d, 0x81, 0xe2, 0x77]);
        assert_eq!(q.packed().len(), 32);
        // Scaled codes: every code times a power-of-two absmax dequantizes exactly.
        let w: Vec<f32> = (0..64).map(|i| NF4_CODE[i % 16] * 8.0).collect();
        let q = quantize_nf4(&w, 64).unwrap();
        assert_eq!(
            &q.packed()[..8],
            &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]
        );
        assert_eq!(dequantize_nf4(&q), w);
    }

    #[test]
    fn odd_count_and_partial_last_block() {
        let q = quantize_nf4(&[1.0, -1.0, 0.5], 64).unwrap();
        assert_eq!(q.packed(), &[0xf0, 0xc7]); // 0.5 -> code 12 (0.4407), pad 7
        assert_eq!(q.numel(), 3);
        assert_eq!(dequantize_nf4(&q).len(), 3);
        assert_eq!(q.nibble(3), None);

        // 64 + 37 elements: the partial block gets its own absmax from its 37 elements.
        let mut w: Vec<f32> = (0..64).map(|i| i as f32 - 10.0).collect();
        w.extend((0..37).map(|i| (i as f32) * 0.01));
        let q = quantize_nf4(&w, 64).unwrap();
        assert_eq!(q.absmax(), &[53.0, w[100]]);
        assert_eq!(q.packed().len(), 51);
        assert_eq!(q.nibble(100), Some(15));
        assert_eq!(q.packed()[50] & 0x0f, NF4_ZERO_NIBBLE);
        let q = quantize_nf4(&[], 64).unwrap();
        assert!(q.packed().is_empty() && q.absmax().is_empty());
    }

    #[test]
    fn subnormals() {
        let tiny = f32::from_bits(1); // smallest subnormal; 1/tiny overflows to inf
        let q = quantize_nf4(&block_with(tiny, &[-tiny, 0.0]), 64).unwrap();
        assert_eq!(q.absmax()[0], tiny);
        assert_eq!(
            (q.nibble(0), q.nibble(1), q.nibble(2)),
            (Some(15), Some(0), Some(7))
        );
        // A larger subnormal whose reciprocal is finite takes the ordinary path.
        let a = f32::from_bits(0x0040_0000); // 2^-127, 1/a = 2^127 finite
        assert!((1.0 / a).is_finite());
        let q = quantize_nf4(&block_with(a, &[a * 0.5, -a * 0.25, 0.0]), 64).unwrap();
        assert_eq!(q.nibble(1), Some(nf4_nibble(0.5)));
        assert_eq!(q.nibble(2), Some(nf4_nibble(-0.25)));
        assert_eq!(q.nibble(3), Some(7));
        // A subnormal in an ordinary block rounds to zero's code.
        let q = quantize_nf4(&block_with(1.0, &[tiny, -tiny]), 64).unwrap();
        assert_eq!((q.nibble(1), q.nibble(2)), (Some(7), Some(7)));
    }

    #[test]
    fn rejects_non_finite_and_bad_blocksize() {
        assert_eq!(
            quantize_nf4(&[1.0, f32::NAN], 64),
            Err(Nf4Error::NaN { index: 1 })
        );
        assert_eq!(
            quantize_nf4(&[0.0, 1.0, f32::NEG_INFINITY], 64),
            Err(Nf4Error::Infinite {
                index: 2,
                positive: false
            })
        );
        assert_eq!(
            quantize_nf4(&[f32::INFINITY], 64),
            Err(Nf4Error::Infinite {
                index: 0,
                positive: true
            })
        );
        for bs in [0, 1, 16, 48, 8192] {
            assert_eq!(
                quantize_nf4(&[1.0], bs),
                Err(Nf4Error::InvalidBlocksize { blocksize: bs })
            );
        }
        assert!(quantize_nf4(&[1.0], 32).is_ok());
        assert!(quantize_nf4(&[1.0], 4096).is_ok());
    }

    #[test]
    fn from_parts_validates() {
        assert!(Nf4Quantized::from_parts(vec![0x77; 2], vec![1.0], 3, 64).is_ok());
        assert!(Nf4Quantized::from_parts(vec![0x77; 3], vec![1.0], 3, 64).is_err());
        assert!(Nf4Quantized::from_parts(vec![0x77; 2], vec![1.0, 1.0], 3, 64).is_err());
        assert!(Nf4Quantized::from_parts(vec![0x77; 2], vec![f32::NAN], 3, 64).is_err());
        // Reconstructed double-quant scales can be negative; they are used as is.
        assert!(Nf4Quantized::from_parts(vec![0x77; 2], vec![-1.0], 3, 64).is_ok());
        assert!(Nf4Quantized::from_parts(vec![0x77; 2], vec![f32::INFINITY], 3, 64).is_err());
        assert!(Nf4Quantized::from_parts(vec![0x77; 2], vec![1.0], 3, 63).is_err());
        let q = quantize_nf4(&[0.3, -0.7, 0.1], 64).unwrap();
        let (p, a, n, b) = q.clone().into_parts();
        assert_eq!(Nf4Quantized::from_parts(p, a, n, b).unwrap(), q);
    }

    #[test]
    fn matmul_shape_errors() {
        let q = quantize_nf4(&[1.0; 6], 64).unwrap();
        assert!(matches!(
            nf4_matmul_f64(&[1.0; 5], 2, 3, &q, 2),
            Err(Nf4Error::ShapeMismatch { .. })
        ));
        assert!(matches!(
            nf4_matmul_f64(&[1.0; 6], 2, 3, &q, 3),
            Err(Nf4Error::ShapeMismatch { .. })
        ));
        assert_eq!(
            nf4_matmul_f64(&[1.0; 6], 2, 3, &q, 2).unwrap(),
            vec![3.0; 4]
        );
        assert_eq!(
            nf4_matmul_f64(&[], usize::MAX, 2, &q, 2),
            Err(Nf4Error::Overflow)
        );
    }

    fn weights() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(
            prop_oneof![
                4 => -100.0f32..100.0,
                1 => Just(0.0f32),
                1 => -1e-30f32..1e-30,
                1 => prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO,
            ],
            0..300,
        )
    }

    proptest! {
        #[test]
        fn tree_equals_count_rule(bits in any::<u32>()) {
            let s = f32::from_bits(bits);
            prop_assert_eq!(nf4_nibble(s), if s.is_nan() { 0 } else { count_rule(s) });
        }

        #[test]
        fn quantize_follows_rule_and_bound(w in weights(), bs_log in 5u32..8) {
            let bs = 1usize << bs_log;
            let q = quantize_nf4(&w, bs).unwrap();
            prop_assert_eq!(q.packed().len(), w.len().div_ceil(2));
            prop_assert_eq!(q.absmax().len(), w.len().div_ceil(bs));
            let d = dequantize_nf4(&q);
            prop_assert_eq!(d.len(), w.len());
            for (i, (&x, &y)) in w.iter().zip(&d).enumerate() {
                let a = q.absmax()[i / bs];
                // The rule, restated independently of the oracle's loop.
                let want = if a == 0.0 {
                    7
                } else if (1.0f32 / a).is_finite() {
                    count_rule(x * (1.0f32 / a))
                } else {
                    count_rule((f64::from(x) / f64::from(a)) as f32)
                };
                prop_assert_eq!(q.nibble(i), Some(want));
                // Slack: f32 rounding of the scaled value and of the final product, a few ulps of a.
                let bound = (f64::from(NF4_MAX_HALF_GAP) + 4.0 * f64::from(f32::EPSILON)) * f64::from(a) + 1e-45;
                prop_assert!((f64::from(y) - f64::from(x)).abs() <= bound, "i={} x={} y={} a={}", i, x, y, a);
                prop_assert!(y.is_finite());
            }
        }

        #[test]
        fn matmul_matches_dequant_product(m in 1usize..4, n in 1usize..5, k in 1usize..70, seed in any::<u64>()) {
            let mut s = seed;
            let mut next = || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            };
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let q = quantize_nf4(&w, 64).unwrap();
            let wd = dequantize_nf4(&q);
            let y = nf4_matmul_f64(&x, m, k, &q, n).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0.0f64;
                    for p in 0..k {
                        acc += f64::from(x[i * k + p]) * f64::from(wd[j * k + p]);
                    }
                    prop_assert!((y[i * n + j] - acc).abs() <= 1e-12 * (1.0 + acc.abs()));
                }
            }
        }
    }
}
