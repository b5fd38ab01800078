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

/// The 64-bit key `topk.ptx` ranks by (larger key = ranks earlier), for an f32 value at position
/// `i`: NaN above everything, `-0.0` as `+0.0`, an order-preserving map of the other bits, and
/// the complemented position below. The tests check that sorting by it reproduces [`rank_cmp`].
pub fn rank_key(v: f32, i: u32) -> u64 {
    let mut b = v.to_bits();
    if b == 0x8000_0000 {
        b = 0;
    }
    let key32 = if v.is_nan() {
        u32::MAX
    } else if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    (key32 as u64) << 32 | (!i) as u64
}

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

    /// The GPU's key order is the oracle's rank order, on values full of ties, signed zeros,
    /// infinities and NaNs with different payloads.
    #[test]
    fn rank_key_orders_like_rank_cmp() {
        let set = [0.0f32, -0.0, 1.0, -1.0, 1e-45, -1e-45, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::from_bits(0xFFC0_1234), 3.5];
        let mut st = 0x1234_5678_9ABC_DEF1u64;
        for _ in 0..200 {
            let n = 1 + (st % 40) as usize;
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    st ^= st << 13;
                    st ^= st >> 7;
                    st ^= st << 17;
                    set[(st % set.len() as u64) as usize]
                })
                .collect();
            let mut by_key: Vec<usize> = (0..n).collect();
            by_key.sort_by_key(|&i| std::cmp::Reverse(rank_key(x[i], i as u32)));
            let mut by_rank: Vec<usize> = (0..n).collect();
            by_rank.sort_by(|&a, &b| rank_cmp((x[a] as f64, a), (x[b] as f64, b)));
            assert_eq!(by_key, by_rank, "{x:?}");
        }
    }

    #[test]
    fn k_zero_and_empty_rows() {
        assert_eq!(topk(&[1.0, 2.0], 1, 2, 0), (vec![], vec![]));
        assert_eq!(topk(&[], 3, 0, 0), (vec![], vec![]));
    }
}
