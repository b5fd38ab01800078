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
//! # Tolerance
//!
//! Each output is a two-term dot product: computed in f64 and rounded once to a dtype with unit
//! roundoff `u`, it is within `u |y| + 4 u64 (|x_i| + |x_{i+D/2}|)` of the oracle run on the same
//! stored values ([`tolerance`] doubles that).

pub mod cpu;

pub use cpu::{rope, rope_tables};

pub use crate::gemm::F64_UNIT_ROUNDOFF;

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
    fn quarter_turn_by_hand() {
        // One pair (D = 2) turned by 90 degrees: (1, 0) -> (0, 1).
        let y = rope(&[1.0, 0.0], &[0.0], &[1.0], 1, 1, 2);
        assert_eq!(y, vec![0.0, 1.0]);
    }
}
