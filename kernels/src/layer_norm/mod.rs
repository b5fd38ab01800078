//! Layer normalisation over the last dim (PyTorch's `layer_norm` with an affine weight and bias),
//! the oracle and its tolerance.
//!
//! # The math
//!
//! For each row `x` of length `D`: `mu = mean(x)`, `var = mean((x - mu)^2)` (the *biased* variance,
//! as PyTorch), `y_i = (x_i - mu) / sqrt(var + eps) * w_i + b_i`.
//!
//! # Shapes
//!
//! `x` is `rows` x `D` row-major; `w` and `b` are `[D]`; `y` has the shape of `x`.
//!
//! # Precision
//!
//! The oracle ([`cpu::layer_norm`]) works in f64 with the two-pass variance (mean first, then the
//! squared deviations), which has no cancellation problem. Fast paths do the same in f64 and round
//! once to the storage dtype.
//!
//! # Tolerance
//!
//! `|y - oracle| <= tolerance(D, u, oracle, scale, tiny)`, see [`tolerance`]. The
//! normalised term carries the f64 error of the mean and variance, `O(D u64)` relative to
//! `max|x - mu| / sigma`, which can exceed `|x_i - mu| / sigma` for one element, so the bound uses the
//! row's largest deviation; the final rounding adds `u |y|`.

pub mod cpu;

pub use cpu::layer_norm;

pub use crate::gemm::F64_UNIT_ROUNDOFF;

/// Largest allowed `|fast - oracle|` for one output. `want` is the oracle value, `scale` is
/// `max_j |x_j - mu| / sigma * |w_i| + |b_i|` for the row, `dim` its length and `u` the unit
/// roundoff of the output dtype.
///
/// `tiny` is half the smallest subnormal of the output dtype (`2^-25` for f16, `2^-134` for
/// bf16, `2^-150` for f32): an output that underflows may lose that much whatever its scale.
pub fn tolerance(dim: usize, u: f64, want: f64, scale: f64, tiny: f64) -> f64 {
    2.0 * (u * want.abs() + (2.0 * dim as f64 + 10.0) * F64_UNIT_ROUNDOFF * scale) + tiny
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // Row [1, 3]: mean 2, biased variance 1, so the normalised row is [-1, 1].
        let y = layer_norm(&[1.0, 3.0], &[2.0, 3.0], &[0.5, -0.5], 1, 2, 0.0);
        assert_eq!(y, vec![-1.5, 2.5]);
    }

    #[test]
    fn constant_row_gives_the_bias() {
        let y = layer_norm(&[7.0; 3], &[1.0; 3], &[0.25; 3], 1, 3, 1e-5);
        assert_eq!(y, vec![0.25; 3]);
    }
}
