//! Rotary position embedding in the rotate-half layout of Hugging Face Llama checkpoints.
//!
//! # The math
//!
//! For head dim `D` (even), base `theta` and position `p`, pair `i < D/2` turns by the angle
//! `a(p, i) = p * theta^(-2i/D)`. The pair is `(x_i, x_{i+D/2})` (rotate-half, *not* the interleaved
//! `(x_{2i}, x_{2i+1})` of the original paper):
//!
//! ```text
//! y_i       = x_i cos a - x_{i+D/2} sin a
//! y_{i+D/2} = x_{i+D/2} cos a + x_i sin a
//! ```
//!
//! which is HF's `x * cos + rotate_half(x) * sin` with `cos`/`sin` repeated over both halves.
//!
//! # Shapes
//!
//! Tables `cos`, `sin`: `[T, D/2]`, row `t` for the `t`-th position. Input `x`: `batch` x `T` x `D`
//! row-major (every leading dim folded into `batch`); the output has the same shape.
//!
//! # Precision
//!
//! The tables are computed in f64 ([`cpu::rope_tables`]) and rounded once to the tensor dtype. The
//! rotation is computed in f64 from the stored (possibly rounded) table values and rounded once.
//!
//! # Backward
//!
//! The rotation is orthogonal, so the gradient of `x` is `dy` turned by `-a` ([`rope_backward`]):
//! `dx_i = dy_i cos a + dy_{i+D/2} sin a`, `dx_{i+D/2} = dy_{i+D/2} cos a - dy_i sin a`.
//!
//! # GPU (`rope.ptx`, `cuda.rs`)
//!
//! f32 (input, tables, output all f32) and bf16 (all bf16, raw bits). Each output is computed in
//! f64 from the stored inputs: both products are exact in f64 (24 x 24 bits at most), so the
//! kernel does exactly the oracle's arithmetic and its result equals the f64 oracle rounded once
//! to the output type, bit for bit (that is what the GPU test checks; the bf16 rounding goes
//! through f32 rounded to odd, which makes the double rounding exact).
//! Accepted input views: `x[b, p, i]` at `b * batch_stride + p * pos_stride + i` (the head dim
//! contiguous, any two leading strides, overlapping rows allowed); tables and output contiguous.
//!
//! # Tolerance
//!
//! Each output is a two-term dot product: computed in f64 and rounded once to a dtype with unit
//! roundoff `u`, it is within `u |y| + 4 u64 (|x_i| + |x_{i+D/2}|)` of the oracle run on the same
//! stored values ([`tolerance`] doubles that).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use cpu::{rope, rope_backward, rope_tables, round_to_bf16};

pub use crate::gemm::F64_UNIT_ROUNDOFF;

/// The hand-written PTX of `rope_{f32,bf16}_{fwd,bwd}`, embedded in every build.
pub const PTX: &str = include_str!("rope.ptx");

/// Largest allowed `|fast - oracle|` for one output: `want` is the oracle value, `pair_abs` is
/// `|x_i| + |x_{i+D/2}|` of the pair it came from, `u` the unit roundoff of the output dtype.
///
/// `tiny` is half the smallest subnormal of the output dtype (`2^-25` for f16, `2^-134` for
/// bf16, `2^-150` for f32): an output that underflows may lose that much whatever its scale.
pub fn tolerance(u: f64, want: f64, pair_abs: f64, tiny: f64) -> f64 {
    2.0 * (u * want.abs() + 4.0 * F64_UNIT_ROUNDOFF * pair_abs) + tiny
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity_and_angles_follow_theta() {
        let (cos, sin) = rope_tables(&[0, 2], 4, 100.0);
        // Position 0: every angle is 0. Position 2: angles 2 * 100^0 = 2 and 2 * 100^(-1/2) = 0.2.
        assert_eq!(&cos[..2], &[1.0, 1.0]);
        assert_eq!(&sin[..2], &[0.0, 0.0]);
        assert_eq!(cos[2], 2f64.cos());
        assert!((sin[3] - 0.2f64.sin()).abs() < 1e-15);
    }

    #[test]
    fn backward_is_the_adjoint_and_the_inverse() {
        let (batch, t, d) = (2, 3, 6);
        let (cos, sin) = rope_tables(&[0, 1, 5], d, 10_000.0);
        let x: Vec<f64> = (0..batch * t * d).map(|i| (i as f64 * 0.37).sin()).collect();
        let g: Vec<f64> = (0..batch * t * d).map(|i| (i as f64 * 0.91).cos()).collect();
        // Inverse: backward(forward(x)) == x.
        let back = rope_backward(&rope(&x, &cos, &sin, batch, t, d), &cos, &sin, batch, t, d);
        assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-14));
        // Adjoint: <rope(x), g> == <x, rope_backward(g)>.
        let lhs: f64 = rope(&x, &cos, &sin, batch, t, d).iter().zip(&g).map(|(a, b)| a * b).sum();
        let rhs: f64 = x.iter().zip(rope_backward(&g, &cos, &sin, batch, t, d)).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-13, "{lhs} vs {rhs}");
    }

    /// The bf16 rounding of `rope.ptx`, in Rust: f64 -> f32 toward zero, the last bit set when
    /// inexact (round to odd), then f32 -> bf16 to nearest even.
    fn bf16_via_odd(y: f64) -> u16 {
        if y.is_nan() {
            return 0x7FC0;
        }
        let mut f = y as f32;
        if (f as f64).abs() > y.abs() {
            f = f32::from_bits(f.to_bits() - 1); // one step toward zero: cvt.rz
        }
        let mut b = f.to_bits();
        if f as f64 != y {
            b |= 1;
        }
        (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
    }

    /// The GPU's round-to-odd path agrees with the exact-distance oracle, on the double-rounding
    /// traps (bf16 midpoints nudged by far less than an f32 ulp) and on arbitrary values.
    #[test]
    fn bf16_round_to_odd_is_correct_rounding() {
        let mut st = 0xC0FF_EE00_1234_5677u64;
        let mut next = || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            st
        };
        let check = |y: f64| assert_eq!(bf16_via_odd(y), round_to_bf16(y), "{y:e} ({:#018x})", y.to_bits());
        for _ in 0..200_000 {
            let r = next();
            // A bf16 midpoint (9 significant bits) nudged by a few units of 2^-40 relative.
            let mid = f32::from_bits(((r as u32) & 0xFFFF_0000) | 0x8000) as f64;
            let nudge = mid * ((next() % 7) as f64 - 3.0) * 2f64.powi(-40);
            if mid.is_finite() {
                check(mid);
                check(mid + nudge);
            }
            check(f64::from_bits(next()));
        }
        for y in [0.0, -0.0, 1.0, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, -f64::MAX, 1e-300, 3.3961e38, 3.3962e38] {
            check(y);
        }
        assert_eq!(round_to_bf16(1.0), 0x3F80);
        assert_eq!(round_to_bf16(f64::MAX), 0x7F80);
        assert_eq!(round_to_bf16(f64::NAN), 0x7FC0);
    }

    #[test]
    fn quarter_turn_by_hand() {
        // One pair (D = 2) turned by 90 degrees: (1, 0) -> (0, 1).
        let y = rope(&[1.0, 0.0], &[0.0], &[1.0], 1, 1, 2);
        assert_eq!(y, vec![0.0, 1.0]);
        assert_eq!(rope_backward(&[0.0, 1.0], &[0.0], &[1.0], 1, 1, 2), vec![1.0, 0.0]);
    }
}
