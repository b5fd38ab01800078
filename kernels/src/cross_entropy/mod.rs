//! Cross-entropy of logits against class targets, with an ignore index, and its gradient.
//!
//! # The math
//!
//! Logits `z` are `N` x `C`, targets `t` are `N` class ids. Row `n` is *kept* unless `t_n` equals the
//! ignore index. With `lse_n = log sum_c exp(z_nc)` (computed as `m + log sum exp(z - m)`, `m` the row
//! max, so it never overflows):
//!
//! ```text
//! loss = (1 / K) sum_{n kept} (lse_n - z_{n, t_n})        K = number of kept rows
//! d loss / d z_nc = (softmax(z_n)_c - [c == t_n]) / K     on kept rows, 0 on ignored rows
//! ```
//!
//! When `K == 0` the loss and its gradient are 0. PyTorch returns NaN there (0/0); we return 0 on
//! purpose: a batch whose targets are all masked (padding only, or a prompt-only sample under
//! completion-only loss) carries no signal, and a NaN would poison the optimizer state for the rest
//! of the run.
//!
//! # Precision
//!
//! Everything in f64 ([`cpu`]), rows summed in index order; the fast path does the same per row and
//! sums the row losses in row order, then rounds once.
//!
//! # Tolerance
//!
//! Each row loss is a log-sum-exp of `C` terms minus one logit; in f64 its error is at most about
//! `(C + 4) u64 (|lse| + |z_t|)`. [`tolerance`] bounds the mean of those, plus the final rounding `u`.

//!
//! # GPU (`cross_entropy.ptx`, `cuda.rs`)
//!
//! f32 logits (rows may be strided), i64 targets, f32 loss and gradient. Per-element math in f64
//! (a PTX exp, the `ln` of `philox::math`), sums in a fixed order: deterministic, within
//! [`tolerance`] of the oracle, not bit-identical to it. The forward writes each row's `lse` (f64)
//! and the kept count `K` (u64) on the device; the backward consumes both plus `dloss` (a device
//! f32 scalar), so it makes one pass over each row. Out-of-range kept targets are detected on the
//! device and reported as `GpuError::Invalid` by the launchers after reading one word back (each
//! launcher synchronises the stream once).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use cpu::{cross_entropy, cross_entropy_grad};

/// The hand-written PTX of `cross_entropy_f32_fwd`, `_mean` and `_bwd`, embedded in every build.
pub const PTX: &str = include_str!("cross_entropy.ptx");

pub use crate::gemm::F64_UNIT_ROUNDOFF;

/// Largest allowed `|fast - oracle|` of the loss (or of one gradient entry, with `want` that
/// entry): `scale` is the mean over kept rows of `|lse_n| + |z_{n,t_n}|` (1 for a gradient entry),
/// `classes` is `C`, `u` the unit roundoff of the output dtype.
///
/// `tiny` is half the smallest subnormal of the output dtype (`2^-25` for f16, `2^-134` for
/// bf16, `2^-150` for f32): an output that underflows may lose that much whatever its scale.
pub fn tolerance(classes: usize, u: f64, want: f64, scale: f64, tiny: f64) -> f64 {
    2.0 * (u * want.abs() + (classes as f64 + 8.0) * F64_UNIT_ROUNDOFF * scale) + tiny
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_log_c() {
        let loss = cross_entropy(&[0.0; 8], &[3, 1], 2, 4, None);
        assert!((loss - 4f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn ignored_rows_do_not_count_and_all_ignored_is_zero() {
        let z = [0.0, 0.0, 5.0, -5.0];
        let kept = cross_entropy(&z, &[0, -100], 2, 2, Some(-100));
        assert!((kept - 2f64.ln()).abs() < 1e-15);
        assert_eq!(cross_entropy(&z, &[-100, -100], 2, 2, Some(-100)), 0.0);
        assert_eq!(cross_entropy_grad(&z, &[-100, -100], 2, 2, Some(-100)), vec![0.0; 4]);
    }

    /// A Rust mirror of the f64 `exp` in `cross_entropy.ptx` (same constants, the same fma and
    /// round-to-nearest-even steps). The GPU loss is compared within a tolerance, not bit for bit,
    /// so this test is what pins that routine's accuracy: within 2 ulp of std on `[-708, 0]`.
    fn ptx_exp(x: f64) -> f64 {
        const INV_LN2: f64 = f64::from_bits(0x3FF7_1547_652B_82FE);
        const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEF0_0000);
        const LN2_LO: f64 = f64::from_bits(0x3DD4_73DE_6AF2_78ED);
        if x < -708.0 {
            return 0.0;
        }
        let k = (x * INV_LN2).round_ties_even();
        let r = (-k).mul_add(LN2_LO, (-k).mul_add(LN2_HI, x));
        let fact = |n: u64| (1..=n).product::<u64>() as f64;
        let mut p = 1.0 / fact(13);
        for n in (0..13).rev() {
            p = p.mul_add(r, 1.0 / fact(n));
        }
        p * f64::from_bits(((k as i64 + 1023) as u64) << 52)
    }

    #[test]
    fn ptx_exp_is_within_two_ulp_of_std() {
        let mut st = 0x0DDB_1A5E_5BAD_5EEDu64;
        let mut worst = 0f64;
        for i in 0..300_000 {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            let u = (st >> 11) as f64 * 2f64.powi(-53);
            // Half the draws near 0 (the softmax bulk), half over the whole range.
            let x = if i % 2 == 0 { -u * 40.0 } else { -u * 708.0 };
            let (got, want) = (ptx_exp(x), x.exp());
            let ulp = f64::from_bits(want.to_bits() & 0x7FF0_0000_0000_0000) * f64::EPSILON;
            let e = (got - want).abs() / ulp;
            assert!(e <= 2.0, "exp({x:e}) = {got:e}, std {want:e}: {e} ulp");
            worst = worst.max(e);
        }
        println!("ptx exp: worst {worst} ulp");
        assert_eq!(ptx_exp(0.0), 1.0);
        assert_eq!(ptx_exp(-709.0), 0.0);
        assert_eq!(ptx_exp(f64::NEG_INFINITY), 0.0);
    }

    #[test]
    fn gradient_rows_sum_to_zero() {
        let z = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
        let g = cross_entropy_grad(&z, &[2, 0], 2, 3, None);
        for row in g.chunks(3) {
            assert!(row.iter().sum::<f64>().abs() < 1e-15);
        }
    }
}
