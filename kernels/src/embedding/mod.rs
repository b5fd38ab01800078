//! Embedding lookup: rows of a table picked by ids, and its adjoint (scatter the rows back).
//!
//! # The math
//!
//! Table `W` is `V` x `D`, ids `i_0 .. i_{n-1}` in `0..V`: `y[j] = W[i_j]`. The adjoint, used for
//! the gradient of the table, is `dW[v] = sum_{j : i_j = v} dy[j]`, summed in increasing `j`.
//!
//! # Shapes
//!
//! `y` is `n` x `D` row-major (the tensor op reshapes it to `[...ids, D]`).
//!
//! # Precision and tolerance
//!
//! The lookup copies values: a fast path must match the oracle exactly. The adjoint sums in f64 in
//! increasing `j`; a fast path that sums in the same order in the storage precision (f32 for
//! f32/bf16/f16, f64 for f64) and rounds once is within `gamma(m) * sum |dy|` of it, `m` the number of
//! ids that hit the row (Higham 3.5 with `u` of the accumulator).

//!
//! # GPU (`embedding.ptx`, `cuda.rs`)
//!
//! Lookup for f32 and bf16 tables (a copy of the bits, so exact). Ids live on the device; an id
//! outside `0..V` is caught by the kernel (its row is zeroed and the first bad position recorded
//! with an integer atomic minimum), and the launcher reads that one word back and returns
//! `GpuError::Invalid`: a lookup therefore synchronises the stream once. The adjoint (f32) copies
//! the ids to the host, validates them there (nothing is written on error), groups the positions by
//! id with a stable sort, and launches one block per distinct id that adds its rows to the old
//! `dtable` value sequentially in increasing `j`: deterministic, no float atomics, and from a zero
//! `dtable` exactly the f32 sum in the oracle's order. Ids and positions must fit in `u32`.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use cpu::{embedding, embedding_adjoint};

/// The hand-written PTX of `embedding_f32_fwd`, `embedding_bf16_fwd`, `embedding_f32_bwd`.
pub const PTX: &str = include_str!("embedding.ptx");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_adjoint_by_hand() {
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 3 x 2
        assert_eq!(embedding(&w, 3, 2, &[2, 0, 2]), vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
        let dy = [1.0, 1.0, 10.0, 10.0, 100.0, 100.0];
        assert_eq!(embedding_adjoint(&dy, 3, 2, &[2, 0, 2]), vec![10.0, 10.0, 0.0, 0.0, 101.0, 101.0]);
    }
}
