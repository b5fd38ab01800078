//! Top-k along the last dim: the `k` largest values of each row, sorted descending, and their
//! positions.
//!
//! # The order (the contract every implementation must reproduce exactly)
//!
//! Elements are ranked by value, largest first; equal values rank by position, lower first; NaN
//! ranks above every number (among NaNs, lower position first), as in `torch.topk`, so a NaN in
//! the router logits surfaces in the selection instead of being silently skipped. `-0.0` and
//! `0.0` are equal. The result is fully determined by this total order, so a fast path must match
//! the oracle bit for bit: there is no tolerance.
//!
//! # Shapes
//!
//! Input `rows` x `n` row-major, `k <= n`; values and indices are `rows` x `k`.

//!
//! # GPU (`topk.ptx`, `cuda.rs`)
//!
//! f32 values (exactly representable in the f64 oracle, so the order is the same), `1 <= k <= 64`,
//! `n <= 2^32 - 257`; indices are `i64` like the oracle's, values the selected elements' own bits. Rows
//! may be strided (`row_stride >= n` elements, the row itself contiguous). One block per row
//! selects the `k` winners in `k` passes (see the comment block of the PTX for the key order).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use cpu::{rank_cmp, topk};

/// The hand-written PTX of `topk_f32`, embedded in every build.
pub const PTX: &str = include_str!("topk.ptx");

/// Largest `k` the GPU kernel accepts (it makes `k` passes over the row).
pub const GPU_MAX_K: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_and_nan() {
        let (v, i) = topk(&[1.0, 3.0, f64::NAN, 3.0, -1.0], 1, 5, 3);
        assert!(v[0].is_nan());
        assert_eq!(&v[1..], &[3.0, 3.0]);
        assert_eq!(i, vec![2, 1, 3]);
    }

    #[test]
    fn k_zero_and_empty_rows() {
        assert_eq!(topk(&[1.0, 2.0], 1, 2, 0), (vec![], vec![]));
        assert_eq!(topk(&[], 3, 0, 0), (vec![], vec![]));
    }
}
