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

pub mod cpu;

pub use cpu::{embedding, embedding_adjoint};

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
