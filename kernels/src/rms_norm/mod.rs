//! RMS normalisation over the last dim (Llama's `LlamaRMSNorm`), the oracle and its tolerance.
//!
//! # The math
//!
//! For each row `x` of length `D` and a weight `w` of length `D`:
//! `y_i = x_i * w_i / sqrt(mean_j(x_j^2) + eps)`.
//!
//! # Shapes
//!
//! `x` is `rows` x `D`, row-major; `w` is `[D]`; `y` has the shape of `x`. `D == 0` gives empty rows
//! (nothing to compute), `rows == 0` an empty output.
//!
//! # Precision
//!
//! The oracle ([`cpu::rms_norm`]) takes f64 values and computes everything in f64 in index order.
//! Fast paths accumulate the sum of squares in f64 for every float dtype, compute the output in f64
//! and round once to the storage dtype.
//!
//! # Tolerance
//!
//! A fast result `y` is accepted when `|y - oracle| <= tolerance(D, u, oracle, tiny)` with `u` the
//! unit roundoff of the output dtype (see [`tolerance`]). Why: the final rounding to the output
//! dtype costs at most `u |y|`; the f64 computation before it (a sum of `D` non-negative squares, a
//! division, a square root and two products, in any order) adds at most `(D + 8) u64 |y|`
//! (Higham 3.5; squares are non-negative, so the relative bound holds for the sum itself). We allow
//! twice the sum plus a tiny absolute floor for results that underflow in the output dtype.

pub mod cpu;

pub use cpu::rms_norm;

pub use crate::gemm::F64_UNIT_ROUNDOFF;

/// Largest allowed `|fast - oracle|` for one output whose oracle value is `want`, when the fast path
/// accumulated in f64 over `dim` elements and rounded once to a dtype with unit roundoff `u`.
///
/// `tiny` is half the smallest subnormal of the output dtype (`2^-25` for f16, `2^-134` for
/// bf16, `2^-150` for f32): an output that underflows may lose that much whatever its scale.
pub fn tolerance(dim: usize, u: f64, want: f64, tiny: f64) -> f64 {
    2.0 * (u + (dim as f64 + 8.0) * F64_UNIT_ROUNDOFF) * want.abs() + tiny
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // Row [3, 4]: mean of squares 12.5, so y = x / sqrt(12.5) * w.
        let y = rms_norm(&[3.0, 4.0], &[1.0, 2.0], 1, 2, 0.0);
        let r = 12.5f64.sqrt();
        assert_eq!(y, vec![3.0 / r, 8.0 / r]);
    }

    #[test]
    fn eps_keeps_a_zero_row_finite() {
        assert_eq!(rms_norm(&[0.0; 4], &[1.0; 4], 1, 4, 1e-6), vec![0.0; 4]);
    }

    #[test]
    fn empty_rows() {
        assert!(rms_norm(&[], &[], 3, 0, 1e-6).is_empty());
        assert!(rms_norm(&[], &[1.0, 1.0], 0, 2, 1e-6).is_empty());
    }
}
