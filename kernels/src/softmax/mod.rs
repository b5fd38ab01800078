//! Softmax and log-softmax along one axis: the oracle and the rule for judging a fast path.
//!
//! # The math
//!
//! For one row `x_0 .. x_{n-1}` with maximum `m`:
//!
//! - `softmax_j = exp(x_j - m) / S`, `S = sum_k exp(x_k - m)`;
//! - `log_softmax_j = (x_j - m) - ln S`.
//!
//! Subtracting `m` changes nothing mathematically but keeps every `exp` argument `<= 0`, so
//! nothing overflows and `S` lies in `[1, n]`. A row containing NaN gives NaN everywhere; a row
//! containing `+inf`, or of only `-inf`, gives NaN too (`inf - inf`), as in PyTorch. An empty row
//! gives an empty result.
//!
//! The tensor op applies this along any dim: the input viewed as `[outer, size, inner]`, every
//! `(o, i)` is a row of `size` values with stride `inner`. The oracle ([`cpu`]) takes contiguous
//! rows; tests move the dim last (transpose + contiguous) before calling it.
//!
//! # Precision
//!
//! The oracle works in f64. The fast path in `brainstacks-tensor` computes `x_j - m` and `exp` in
//! the *compute precision* (f64 for f64 input; f32 for f32, bf16 and f16 input, which widen to
//! f32 exactly), accumulates `S` in f64 in a fixed order, forms `e_j / S` and `ln S` in f64, and
//! rounds once to the output dtype.
//!
//! # Tolerance
//!
//! With `u` the unit roundoff of the compute precision (2^-24 for f32, 2^-53 for f64), `u_out` that
//! of the output dtype (2^-24 f32, 2^-8 bf16, 2^-11 f16, 2^-53 f64), `R = max_k x_k - min_k x_k` the
//! row's range and `tiny` the smallest subnormal of the output dtype, a fast result is accepted
//! when:
//!
//! - softmax: `|y - oracle| <= ((2R + 8) u + u_out) * oracle + tiny` ([`softmax_tolerance`]);
//! - log-softmax: `|y - oracle| <= (|oracle| + 2R + 8) u + u_out * |oracle| + tiny`
//!   ([`log_softmax_tolerance`]).
//!
//! Why: `d_j = x_j - m` is rounded once (relative `u`, at most `R u` absolute, as `|d_j| <= R`);
//! `exp` is faithful (relative `2u`) and turns the absolute error `R u` of its argument into a
//! relative one, so each `e_j` is off by at most `(R + 3) u` relative and so is `S` (a sum of
//! positive terms in f64, whose own rounding is far below `u` unless `u` is f64's, covered by the
//! slack of `+8`). The quotient then errs by the sum, `(2R + 6) u`, plus the division. For
//! log-softmax the errors are absolute: `R u` from `d_j`, `(R + 3) u` from `ln S`, and `u |y|`
//! for the final subtraction. The output rounding adds `u_out` relative; `tiny` covers results
//! that underflow to (sub)normal range where relative bounds do not hold.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use cpu::{log_softmax_rows_f64, row_ranges_f64, softmax_bwd_rows_f64, softmax_rows_f64};

/// The hand-written PTX of the f32 GPU softmax, forward and backward over the last axis
/// (`softmax.ptx`), embedded in every build. The forward computes `x - m` and `exp` in f32,
/// accumulates `S` in f64 and divides in f64: the compute precision of the rule above, so it is
/// judged by [`softmax_tolerance`] with `u = u_out = 2^-24`. The backward is judged by
/// [`softmax_bwd_tolerance`].
pub const PTX: &str = include_str!("softmax.ptx");

/// Largest allowed `|fast - oracle|` for one softmax-backward output `dx_j = y_j (dy_j - D)`,
/// `D = sum_k dy_k y_k`, when the fast path takes f32 `y`, `dy`, works in f64 in any fixed order
/// and rounds once to a dtype with unit roundoff `u_out`: the output rounding `u_out |oracle|`,
/// plus `|y_j|` times the f64 error of `D` (`(cols + 2) 2^-53 sum_k |dy_k y_k|` for each of the
/// two computations, oracle and fast), plus the f64 rounding of the product, plus `tiny`.
pub fn softmax_bwd_tolerance(
    oracle: f64,
    y: f64,
    cols: usize,
    abs_dot: f64,
    u_out: f64,
    tiny: f64,
) -> f64 {
    let u64_ = f64::EPSILON / 2.0;
    u_out * oracle.abs()
        + 2.0 * y.abs() * (cols as f64 + 2.0) * u64_ * abs_dot
        + 4.0 * u64_ * oracle.abs()
        + tiny
}

/// Largest allowed `|fast - oracle|` for one softmax output; see the module documentation.
pub fn softmax_tolerance(oracle: f64, range: f64, u: f64, u_out: f64, tiny: f64) -> f64 {
    ((2.0 * range + 8.0) * u + u_out) * oracle.abs() + tiny
}

/// Largest allowed `|fast - oracle|` for one log-softmax output; see the module documentation.
pub fn log_softmax_tolerance(oracle: f64, range: f64, u: f64, u_out: f64, tiny: f64) -> f64 {
    (oracle.abs() + 2.0 * range + 8.0) * u + u_out * oracle.abs() + tiny
}

#[cfg(test)]
mod tests {
    use super::cpu::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        // softmax([0, ln 3]) = [1/4, 3/4]; log of that.
        let x = [0.0, 3f64.ln()];
        let y = softmax_rows_f64(&x, 1, 2);
        assert!((y[0] - 0.25).abs() < 1e-16 && (y[1] - 0.75).abs() < 1e-16);
        let l = log_softmax_rows_f64(&x, 1, 2);
        assert!((l[0] - 0.25f64.ln()).abs() < 1e-15 && (l[1] - 0.75f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn backward_by_hand() {
        // y = [1/4, 3/4], dy = [1, 0]: D = 1/4, dx = [1/4 * 3/4, 3/4 * -1/4] = [3/16, -3/16].
        let dx = softmax_bwd_rows_f64(&[0.25, 0.75], &[1.0, 0.0], 1, 2);
        assert_eq!(dx, vec![0.1875, -0.1875]);
        // A constant dy has zero gradient (softmax is shift invariant).
        let dx = softmax_bwd_rows_f64(&[0.25, 0.75], &[2.0, 2.0], 1, 2);
        assert_eq!(dx, vec![0.0, 0.0]);
        assert!(softmax_bwd_rows_f64(&[], &[], 4, 0).is_empty());
    }

    #[test]
    fn large_inputs_do_not_overflow_and_nan_propagates() {
        let y = softmax_rows_f64(&[1000.0, 1000.0, f64::NAN, 1.0], 2, 2);
        assert_eq!(&y[..2], &[0.5, 0.5]);
        assert!(y[2].is_nan() && y[3].is_nan());
        assert!(softmax_rows_f64(&[], 3, 0).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Rows sum to one, and log-softmax is the log of softmax.
        #[test]
        fn rows_sum_to_one(rows in 1usize..5, cols in 1usize..20, seed in any::<u64>()) {
            let x: Vec<f64> = (0..rows * cols)
                .map(|i| ((seed.wrapping_add(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 40.0)
                .collect();
            let y = softmax_rows_f64(&x, rows, cols);
            let l = log_softmax_rows_f64(&x, rows, cols);
            for r in 0..rows {
                let s: f64 = y[r * cols..(r + 1) * cols].iter().sum();
                prop_assert!((s - 1.0).abs() < 1e-14);
            }
            for (a, b) in y.iter().zip(&l) {
                prop_assert!((a.ln() - b).abs() <= 1e-13 * (1.0 + b.abs()));
            }
        }
    }
}
