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
//! f32 in, f32 out, tables f32. Each output is computed in f64 from the f32 inputs: both products
//! are exact in f64 (24 x 24 bits), so the kernel does exactly the oracle's arithmetic and its
//! result equals the f64 oracle rounded to f32, bit for bit (that is what the GPU test checks).
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

pub use cpu::{rope, rope_backward, rope_tables};

pub use crate::gemm::F64_UNIT_ROUNDOFF;

/// The hand-written PTX of `rope_f32_fwd` and `rope_f32_bwd`, embedded in every build.
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

    #[test]
    fn quarter_turn_by_hand() {
        // One pair (D = 2) turned by 90 degrees: (1, 0) -> (0, 1).
        let y = rope(&[1.0, 0.0], &[0.0], &[1.0], 1, 1, 2);
        assert_eq!(y, vec![0.0, 1.0]);
        assert_eq!(rope_backward(&[0.0, 1.0], &[0.0], &[1.0], 1, 1, 2), vec![1.0, 0.0]);
    }
}
