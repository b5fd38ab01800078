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
#[cfg(feature = "cuda")]
pub mod cuda;

pub use cpu::{rms_norm, rms_norm_bwd};

/// The hand-written PTX of the f32 GPU RMS norm, forward and backward (`rms_norm.ptx`), embedded
/// in every build. It accumulates in f64 and rounds each output once, so the forward meets
/// [`tolerance`] with `u = 2^-24`; the backward meets [`bwd_tolerance`].
pub const PTX: &str = include_str!("rms_norm.ptx");

/// Rows per chunk of the first `dweight` stage on the GPU (a fixed number: the summation order
/// depends only on `rows`).
pub const DW_CHUNK_ROWS: usize = 64;

/// Largest allowed `|fast - oracle|` for one backward output (`dx` or `dweight`) whose oracle
/// value is `want` and whose scale (from [`cpu::rms_norm_bwd_scales`]) is `scale`, when the fast
/// path works in f64 over `n` terms (`dim` for `dx`, `rows + dim` for `dweight`) and rounds once
/// to a dtype with unit roundoff `u`. Why: in one f64 computation `r` is off by at most
/// `(dim / 2 + 3) 2^-53` relative (a sum of `dim` squares, a division, a square root, a
/// reciprocal), `r^3` by three times that, the sum `D` by `(dim + 2) 2^-53 sum |dy w x|`, so each
/// `dx` errs by at most `(2.5 dim + 15) 2^-53` times its scale, and each `dweight` (a sum over
/// rows of products with `r`) by `(rows + dim / 2 + 5) 2^-53` times its scale (Higham 3.5). Both
/// the fast path and the oracle make such an error: `6 (n + 8) 2^-53 scale` covers the two. The
/// output rounding adds `u |want|`, and `tiny` covers underflow.
pub fn bwd_tolerance(n: usize, u: f64, want: f64, scale: f64, tiny: f64) -> f64 {
    u * want.abs() + 6.0 * (n as f64 + 8.0) * F64_UNIT_ROUNDOFF * scale + tiny
}

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
    fn backward_by_hand() {
        // One row x = [3, 4], w = [1, 2], dy = [1, 0], eps = 0: ms = 12.5, r = 1/sqrt(12.5),
        // D = 1 * 1 * 3 = 3, dx = [r - 3 r^3 3/2, -4 r^3 3/2], dw = [3 r, 0].
        let r = 1.0 / 12.5f64.sqrt();
        let (dx, dw) = rms_norm_bwd(&[3.0, 4.0], &[1.0, 2.0], &[1.0, 0.0], 1, 2, 0.0);
        assert!((dx[0] - (r - 4.5 * r * r * r)).abs() < 1e-15);
        assert!((dx[1] - (-6.0 * r * r * r)).abs() < 1e-15);
        assert!((dw[0] - 3.0 * r).abs() < 1e-15 && dw[1] == 0.0);
        // Two rows: dweight sums over them.
        let (_, dw2) = rms_norm_bwd(
            &[3.0, 4.0, 3.0, 4.0],
            &[1.0, 2.0],
            &[1.0, 0.0, 1.0, 0.0],
            2,
            2,
            0.0,
        );
        assert!((dw2[0] - 6.0 * r).abs() < 1e-15);
    }

    #[test]
    fn backward_matches_a_finite_difference() {
        // d/dx_k of L = sum_i dy_i y_i, by central differences, against dx.
        let x = [0.3, -1.2, 0.7, 2.0];
        let w = [1.5, -0.5, 0.25, 1.0];
        let dy = [0.2, 0.1, -0.4, 0.3];
        let loss = |x: &[f64]| {
            rms_norm(x, &w, 1, 4, 1e-5)
                .iter()
                .zip(&dy)
                .map(|(a, b)| a * b)
                .sum::<f64>()
        };
        let (dx, _) = rms_norm_bwd(&x, &w, &dy, 1, 4, 1e-5);
        for k in 0..4 {
            let h = 1e-6;
            let (mut xp, mut xm) = (x, x);
            xp[k] += h;
            xm[k] -= h;
            let fd = (loss(&xp) - loss(&xm)) / (2.0 * h);
            assert!((fd - dx[k]).abs() < 1e-8, "k={k}: fd {fd} vs {}", dx[k]);
        }
    }

    #[test]
    fn empty_rows() {
        assert!(rms_norm(&[], &[], 3, 0, 1e-6).is_empty());
        assert!(rms_norm(&[], &[1.0, 1.0], 0, 2, 1e-6).is_empty());
    }
}
