//! GEMM: `C = A·B` (optionally `C += A·B`), the oracle and the rule for judging a fast path.
//!
//! # The math
//!
//! `A` is `m` x `k`, `B` is `k` x `n`, `C` is `m` x `n`:
//! `C[i][j] = sum_{p < k} A[i][p] * B[p][j]`. With `k == 0` the sum is empty and `C` is zero.
//!
//! # Layout
//!
//! Operands are *strided*: element `A[i][p]` lives at `a[i * a_rs + p * a_cs]`, and likewise for `B`.
//! A row-major matrix has `(rs, cs) = (cols, 1)`; its transpose is the same slice read with
//! `(rs, cs) = (1, cols)`, so `A^T·B`, `A·B^T` and views with padded rows need no copy. The output is
//! always row-major and contiguous (`C[i][j]` at `c[i * n + j]`).
//!
//! # Precision
//!
//! The oracle ([`cpu`]) converts every element to f64 and sums in f64, in the order of `p`. Products of
//! two f32 (or bf16) values are exact in f64, so the oracle for f32 inputs is accurate to about 1e-16
//! relative to `|A|·|B|`: it stands in for the exact result. Fast paths accumulate in their own
//! precision (f32 for f32 and bf16 inputs, f64 for f64 inputs), in an order of their choosing.
//!
//! # Tolerance
//!
//! A fast f32 result `c` is accepted when, for every entry,
//! `|c - oracle| <= gamma(k + 2) * S + (k + 2) * 2^-149`, where `S = sum_p |A[i][p]| * |B[p][j]|`
//! (plus `|C0[i][j]|` when the product was added into an existing `C0`) and
//! `gamma(n) = n·u / (1 - n·u)` with the f32 unit roundoff `u = 2^-24`.
//!
//! Why this bound: an inner product of length `n` computed in floating point, in *any* summation order,
//! with or without fused multiply-add, has error at most `gamma(n) * sum |x_p y_p|` (Higham, *Accuracy
//! and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5 and §3.1). Adding into `C0` makes the
//! inner product one term longer (`k + 1`); one more unit covers the oracle's own f64 rounding, which is
//! below `2^-29` of an f32 unit for any `k` we can hold. The absolute term covers underflow: each
//! rounded product can lose at most half the subnormal spacing (`2^-150`), which the relative model
//! does not see. This is the worst-case bound, not the `sqrt(k)` "typical" one, so a correct
//! implementation can never fail it, whatever the data; it still catches indexing, packing and edge
//! bugs, which move an entry by a sizeable fraction of `S`, far above `k·u·S` for the sizes we test.
//!
//! For an f64 fast path the same rule holds with `u = 2^-53` and a factor of two, because the oracle
//! then rounds at the same precision as the path being checked ([`f64_tolerance`]).
//!
//! A bf16 fast path that converts to f32 and accumulates in f32 is checked with [`f32_tolerance`]
//! against the f32 oracle run on the same bf16 values widened to f32 (the widening is exact).
//!
//! # GPU (feature `cuda`, launchers in `cuda.rs`)
//!
//! - `gemm_bf16.ptx`: bf16 operands on the tensor cores (`mma.sync.m16n8k16`), f32 accumulation, f32
//!   or bf16 output (one final rounding, so the check adds `2^-8 |c|` to [`f32_tolerance`]).
//!   Layouts `nt` (`y = x·W^T`), `nn` (`dX = dY·W`), `tn` (`dW = dY^T·X`), each operand row-major
//!   with a leading dimension. Fast-path rules, checked by the launcher: leading dimensions of A and
//!   B multiples of 8 (16-byte rows for `cp.async`), `k % 8 == 0` where an operand is k-contiguous
//!   (`nt`, `nn`); `m`, `n` arbitrary. Anything else goes through `gemm_f32` on widened operands
//!   or a zero-padded copy (zero padding of `k` does not change the product).
//! - `gemm_f32.ptx`: f32 on the SIMT cores, any sizes and any (row, column) strides of A and B.
//!
//! Both are written by the Python scripts beside them (the unrolled parts only). Without a GPU they
//! are still exercised: `layout.rs` replays the bf16 kernel's index math, and `ptx_check.rs` runs
//! the embedded PTX text itself on small shapes through the `ptxsim` interpreter against the
//! oracle.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(test)]
mod layout;
#[cfg(test)]
mod ptx_check;

/// The bf16 tensor-core GEMM (`gemm_bf16.ptx`, written by `gen_gemm_bf16.py`), embedded in every build.
pub const PTX_BF16: &str = include_str!("gemm_bf16.ptx");
/// The f32 SIMT GEMM for any shapes and strides (`gemm_f32.ptx`, written by `gen_gemm_f32.py`).
pub const PTX_F32: &str = include_str!("gemm_f32.ptx");

pub use cpu::{
    gemm_abs_reference_f32, gemm_abs_reference_f64, gemm_reference_f32, gemm_reference_f64,
};

/// Unit roundoff of f32 (round to nearest): `2^-24`.
pub const F32_UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;

/// Unit roundoff of f64 (round to nearest): `2^-53`.
pub const F64_UNIT_ROUNDOFF: f64 = f64::EPSILON / 2.0;

/// Higham's `gamma(n) = n·u / (1 - n·u)`, the relative error bound of an `n`-term inner product.
///
/// Panics when `n·u >= 1`, where the bound no longer exists (far beyond any real `k`).
pub fn gamma(n: usize, u: f64) -> f64 {
    let nu = n as f64 * u;
    assert!(
        nu < 1.0,
        "gamma: n = {n} is too large for unit roundoff {u}"
    );
    nu / (1.0 - nu)
}

/// Largest allowed `|fast - oracle|` for one entry of an f32-accumulated product with inner size `k`.
///
/// `abs_sum` is `sum_p |A[i][p]| * |B[p][j]|`, plus `|C0[i][j]|` when the product was accumulated into
/// `C0`. See the module documentation for why this bound.
pub fn f32_tolerance(k: usize, abs_sum: f64) -> f64 {
    let subnormal_half_step = f64::from(f32::from_bits(1)) / 2.0;
    gamma(k + 2, F32_UNIT_ROUNDOFF) * abs_sum + (k + 2) as f64 * subnormal_half_step
}

/// Largest allowed `|fast - oracle|` for one entry of an f64-accumulated product with inner size `k`.
///
/// Twice the f32 rule's shape at f64 precision: both the fast path and the oracle round in f64.
pub fn f64_tolerance(k: usize, abs_sum: f64) -> f64 {
    let subnormal_half_step = f64::from_bits(1) / 2.0;
    2.0 * (gamma(k + 2, F64_UNIT_ROUNDOFF) * abs_sum + (k + 2) as f64 * subnormal_half_step)
}

/// Compares a fast f32 result with the oracle under [`f32_tolerance`].
///
/// `got`, `want` and `abs_sum` are row-major `m` x `n` (only their common length matters here).
/// Returns a message naming the first entry out of tolerance.
pub fn check_close_f32(got: &[f32], want: &[f64], abs_sum: &[f64], k: usize) -> Result<(), String> {
    let got: Vec<f64> = got.iter().map(|&x| f64::from(x)).collect();
    check_close(&got, want, abs_sum, |s| f32_tolerance(k, s))
}

/// Compares a fast f64 result with the oracle under [`f64_tolerance`]; see [`check_close_f32`].
pub fn check_close_f64(got: &[f64], want: &[f64], abs_sum: &[f64], k: usize) -> Result<(), String> {
    check_close(got, want, abs_sum, |s| f64_tolerance(k, s))
}

fn check_close(
    got: &[f64],
    want: &[f64],
    abs_sum: &[f64],
    tolerance: impl Fn(f64) -> f64,
) -> Result<(), String> {
    if got.len() != want.len() || got.len() != abs_sum.len() {
        return Err(format!(
            "length mismatch: got {}, want {}, abs_sum {}",
            got.len(),
            want.len(),
            abs_sum.len()
        ));
    }
    for (idx, ((&g, &w), &s)) in got.iter().zip(want).zip(abs_sum).enumerate() {
        let (diff, tol) = ((g - w).abs(), tolerance(s));
        // A NaN anywhere fails too.
        if diff.is_nan() || diff > tol {
            return Err(format!(
                "entry {idx}: got {g:e}, want {w:e}, |diff| {diff:e} > tolerance {tol:e} (|A|.|B| = {s:e})"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_by_hand() {
        // A = [[1, 2, 3], [4, 5, 6]], B = [[7, 8], [9, 10], [11, 12]].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let c = gemm_reference_f64(2, 2, 3, &a, 3, 1, &b, 2, 1);
        assert_eq!(c, vec![58.0, 64.0, 139.0, 154.0]);
    }

    #[test]
    fn strides_read_a_transpose_without_a_copy() {
        // At is A^T stored row-major (3 x 2); reading it with strides (1, 2) gives back A (2 x 3).
        let at = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0];
        let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
        let c = gemm_reference_f32(2, 2, 3, &at, 1, 2, &b, 2, 1);
        assert_eq!(c, vec![58.0, 64.0, 139.0, 154.0]);
    }

    #[test]
    fn empty_inner_dimension_gives_zeros_and_empty_outer_gives_nothing() {
        assert_eq!(
            gemm_reference_f64(2, 3, 0, &[], 0, 1, &[], 3, 1),
            vec![0.0; 6]
        );
        assert!(gemm_reference_f64(0, 3, 4, &[], 4, 1, &[0.0; 12], 3, 1).is_empty());
    }

    #[test]
    fn abs_reference_sums_magnitudes() {
        let a = [1.0f32, -2.0];
        let b = [-3.0f32, -4.0];
        assert_eq!(gemm_reference_f32(1, 1, 2, &a, 2, 1, &b, 1, 1), vec![5.0]);
        assert_eq!(
            gemm_abs_reference_f32(1, 1, 2, &a, 2, 1, &b, 1, 1),
            vec![11.0]
        );
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn operand_too_short_panics_with_a_clear_message() {
        gemm_reference_f64(2, 2, 2, &[0.0; 3], 2, 1, &[0.0; 4], 2, 1);
    }

    #[test]
    fn tolerance_accepts_f32_rounding_and_rejects_a_wrong_term() {
        // A single f32 rounding of the exact value must pass...
        let exact = 1.0 + 3.0 * F32_UNIT_ROUNDOFF;
        let rounded = exact as f32;
        assert!(check_close_f32(&[rounded], &[exact], &[exact], 1).is_ok());
        // ...and losing one product of size comparable to the others must not.
        assert!(check_close_f32(&[0.5], &[1.0], &[1.0], 64).is_err());
        assert!(check_close_f32(&[f32::NAN], &[1.0], &[1.0], 1).is_err());
    }

    #[test]
    fn tolerance_grows_with_k() {
        assert!(f32_tolerance(1000, 1.0) > f32_tolerance(10, 1.0));
        assert!(f64_tolerance(10, 1.0) < f32_tolerance(10, 1.0));
    }
}
