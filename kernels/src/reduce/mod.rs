//! Axis reductions (sum, mean, max, min, argmax, argmin): the oracle and the rule for judging a
//! fast path.
//!
//! # The math
//!
//! The input is viewed as `[outer, size, inner]` (any reduction over one dim, or over a run of
//! adjacent dims merged into one, has this form after making the input contiguous). Element
//! `(o, s, i)` is at `x[(o * size + s) * inner + i]`, and every op produces `outer * inner`
//! results, one per `(o, i)`, from the `size` values `x[o][0..size][i]`:
//!
//! - `sum = x[o][0][i] + ... + x[o][size-1][i]`; an empty axis sums to 0.
//! - `mean = sum / size`; an empty axis gives NaN (0 / 0), as in PyTorch.
//! - `max`, `min`: the extreme value; if any value is NaN the result is NaN. An empty axis has no
//!   extreme: the oracle panics and the tensor op returns an error.
//! - `argmax`, `argmin`: the index `s` of the extreme; the first index on ties; the first NaN if
//!   there is one (NaN counts as beating every number, matching the value ops).
//!
//! # Precision
//!
//! The oracle ([`cpu`]) sums in f64 in increasing `s`. Fast paths accumulate floats in f64 too
//! (f32, bf16 and f16 inputs are widened exactly, summed in f64 and rounded once to the output
//! dtype) but may split the axis into fixed blocks and several partial sums, as long as the split
//! depends only on the shape (never on the thread count), so results are bit-reproducible.
//! Integer sums wrap in the integer dtype; wrapping addition is associative, so every order gives
//! the same bits and no tolerance is needed. `max`, `min` and the arg ops are exact.
//!
//! # Tolerance
//!
//! A fast float sum `s` is accepted when `|s - oracle| <= sum_tolerance(size, abs_sum, u_out)`:
//! `2 * gamma(size + 1, 2^-53) * abs_sum + u_out * |oracle| + tiny`, where `abs_sum = sum |x|`
//! ([`cpu::abs_sum_axis_f64`]), `u_out` is the unit roundoff of the output dtype (2^-53 for f64,
//! 2^-24 for f32, 2^-8 for bf16, 2^-11 for f16) and `tiny` is that dtype's smallest subnormal.
//!
//! Why: any summation order of `n` terms in precision `u` errs by at most `gamma(n - 1) * sum |x|`
//! (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4); both the fast
//! path and the oracle make that error, hence the factor two; the final rounding to the output
//! dtype adds at most `u_out` relative, or half a subnormal step near zero. For a mean, divide
//! both sides by `size` (the division itself adds one more `u_out` relative).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

/// The hand-written PTX of the GPU reductions (f32 input, f64 accumulation; see `reduce.ptx`),
/// embedded in every build. Sums and means meet [`sum_tolerance`] (they accumulate in f64, in a
/// fixed 256-way split of the axis when `inner < 32` and in plain increasing order otherwise: an
/// order that depends only on the shape); max, min and the arg ops are exact.
pub const PTX: &str = include_str!("reduce.ptx");

/// The value reductions of the GPU kernel; the discriminant is its op code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReduceOp {
    Sum = 0,
    Mean = 1,
    Max = 2,
    Min = 3,
}

/// The index reductions of the GPU kernel; the discriminant is its op code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ArgReduceOp {
    ArgMax = 4,
    ArgMin = 5,
}

pub use cpu::{abs_sum_axis_f64, argmax_axis, argmin_axis, max_axis_f64, mean_axis_f64, min_axis_f64, sum_axis_f64};

/// Unit roundoff of f64 (round to nearest): `2^-53`.
pub const F64_UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

/// Largest allowed `|fast - oracle|` for a float sum of `n` terms accumulated in f64 and rounded
/// to an output dtype with unit roundoff `u_out` and smallest subnormal `tiny`.
///
/// `abs_sum` is `sum |x|` over the reduced values; `oracle` is the oracle's result. See the module
/// documentation for the derivation.
pub fn sum_tolerance(n: usize, abs_sum: f64, oracle: f64, u_out: f64, tiny: f64) -> f64 {
    let nu = (n + 1) as f64 * F64_UNIT_ROUNDOFF;
    2.0 * nu / (1.0 - nu) * abs_sum + u_out * oracle.abs() + tiny
}

#[cfg(test)]
mod tests {
    use super::cpu::*;
    use super::sum_tolerance;

    /// A `[2, 3, 2]` array with known answers worked out by hand.
    #[test]
    fn small_known_values() {
        // o = 0: columns (1, 3, 5) and (2, -4, 6); o = 1: (7, 9, 9) and (f64::NAN, 0, -1).
        let x = [1.0, 2.0, 3.0, -4.0, 5.0, 6.0, 7.0, f64::NAN, 9.0, 0.0, 9.0, -1.0];
        assert_eq!(sum_axis_f64(&x, 2, 3, 2)[..3], [9.0, 4.0, 25.0]);
        assert!(sum_axis_f64(&x, 2, 3, 2)[3].is_nan());
        assert_eq!(mean_axis_f64(&x, 2, 3, 2)[0], 3.0);
        assert_eq!(max_axis_f64(&x, 2, 3, 2)[..3], [5.0, 6.0, 9.0]);
        assert!(max_axis_f64(&x, 2, 3, 2)[3].is_nan());
        assert_eq!(min_axis_f64(&x, 2, 3, 2)[..3], [1.0, -4.0, 7.0]);
        assert_eq!(argmax_axis(&x, 2, 3, 2), vec![2, 2, 1, 0]); // first 9 wins; the NaN wins
        assert_eq!(argmin_axis(&x, 2, 3, 2), vec![0, 1, 0, 0]);
    }

    #[test]
    fn empty_axis_sums_to_zero_and_means_nan() {
        assert_eq!(sum_axis_f64(&[], 3, 0, 2), vec![0.0; 6]);
        assert!(mean_axis_f64(&[], 1, 0, 1)[0].is_nan());
        assert!(sum_axis_f64(&[], 0, 5, 2).is_empty());
    }

    #[test]
    #[should_panic(expected = "not an [2, 2, 2] array")]
    fn wrong_length_panics() {
        sum_axis_f64(&[1.0; 7], 2, 2, 2);
    }

    #[test]
    fn tolerance_grows_with_n_and_scale() {
        let t = |n, s| sum_tolerance(n, s, 0.0, 0.0, 0.0);
        assert!(t(10, 1.0) < t(100, 1.0));
        assert!(t(10, 1.0) < t(10, 2.0));
        assert!(t(1000, 1.0) < 1e-12);
    }
}

/// A CPU model of `reduce.ptx`'s extreme (max/min/argmax/argmin) path: the 256-way strided split,
/// each thread's sequential scan, and the fixed tree with the kernel's combine rule. Tests check it
/// against the oracle, which validates the combine logic (NaN, ties, empty-thread sentinels) here,
/// where no GPU runs.
#[cfg(test)]
mod model {
    /// `(value, index)` of the extreme of one column as the kernel computes it.
    pub fn extreme(col: &[f32], max_like: bool) -> (f32, u64) {
        let sentinel = if max_like { f32::NEG_INFINITY } else { f32::INFINITY };
        let mut part = vec![(sentinel as f64, u64::MAX); 256];
        for (t, slot) in part.iter_mut().enumerate() {
            let (mut bv, mut bi) = (sentinel, u64::MAX);
            let mut s = t;
            while s < col.len() {
                let v = col[s];
                let better = if max_like { v > bv } else { v < bv };
                if (better || v.is_nan() || bi == u64::MAX) && !bv.is_nan() {
                    bv = v;
                    bi = s as u64;
                }
                s += 256;
            }
            *slot = (bv as f64, bi);
        }
        let mut w = 128;
        while w > 0 {
            for t in 0..w {
                let (a, b) = (part[t], part[t + w]);
                let (an, bn) = (a.0.is_nan(), b.0.is_nan());
                let smaller = b.1 < a.1;
                let nan_case = bn && (!an || smaller);
                let strictly = if max_like { b.0 > a.0 } else { b.0 < a.0 };
                let num_case = !(an || bn) && (strictly || (b.0 == a.0 && smaller));
                if nan_case || num_case {
                    part[t] = b;
                }
            }
            w /= 2;
        }
        (part[0].0 as f32, part[0].1)
    }

    #[test]
    fn model_matches_the_oracle() {
        use super::cpu::{argmax_axis, argmin_axis, max_axis_f64, min_axis_f64};
        let mut seed = 0x1234_5678_9ABC_DEF0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for &n in &[1usize, 2, 3, 255, 256, 257, 511, 1000, 1025, 3001] {
            for trial in 0..20 {
                let col: Vec<f32> = (0..n)
                    .map(|_| {
                        let r = next();
                        match (trial % 4, r % 50) {
                            (0, 0) => f32::NAN,
                            (1, _) => f32::NEG_INFINITY,
                            (2, k) => [-0.0f32, 0.0, 1.0, -1.0][(k % 4) as usize],
                            _ => ((r >> 40) % 7) as f32 - 3.0,
                        }
                    })
                    .collect();
                let c64: Vec<f64> = col.iter().map(|&v| v as f64).collect();
                let (v, i) = extreme(&col, true);
                assert_eq!(i as usize, argmax_axis(&c64, 1, n, 1)[0], "argmax n={n} trial={trial}");
                let want = max_axis_f64(&c64, 1, n, 1)[0];
                assert!(v.to_bits() == (want as f32).to_bits() || (v.is_nan() && want.is_nan()));
                let (v, i) = extreme(&col, false);
                assert_eq!(i as usize, argmin_axis(&c64, 1, n, 1)[0], "argmin n={n} trial={trial}");
                let want = min_axis_f64(&c64, 1, n, 1)[0];
                assert!(v.to_bits() == (want as f32).to_bits() || (v.is_nan() && want.is_nan()));
            }
        }
    }
}
