//! Randomized SVD (Halko, Martinsson, Tropp, arXiv 0909.4061, Alg. 4.4 + 5.1) and its small dense
//! building blocks; the CPU oracle of the null-space projector (method spec section 4).
//!
//! # Layout and precision
//! Every matrix is a contiguous row-major `Vec`/slice with explicit `(rows, cols)`. All arithmetic
//! is f64 with sums in a fixed index order; the `_f32` entry points widen the input to f64, run the
//! same code and round each output once to f32.
//!
//! # Pieces
//! - [`cpu::thin_qr`]: CholeskyQR2 (G = AᵀA, G = RᵀR, Q = A R⁻¹, twice). It falls back to
//!   Householder QR when the Cholesky of either pass meets a pivot `<= 0`, or when the first pass's
//!   `max_i R_ii / min_i R_ii > 1e6`. That ratio is a lower bound on cond(A); CholeskyQR2 is only
//!   reliable for cond(A) well below eps^-1/2 ~ 6.7e7, so 1e6 keeps two decades of margin.
//! - [`cpu::jacobi_svd`]: one-sided (Hestenes) Jacobi on the columns, pairs `(p, q)`, `p < q` in
//!   row-major order each sweep; a pair is rotated when `|w_p·w_q| > 1e-15 * ||w_p|| ||w_q||`; it
//!   stops after a sweep without rotations (at most 60 sweeps). Singular values sorted descending;
//!   a left vector whose singular value is below `1e-300` is left zero.
//! - [`cpu::svd_exact`]: thin SVD of any m x n via Jacobi (on Aᵀ when m < n), r = min(m, n).
//! - [`cpu::rsvd`]: l = min(k + p, m, n) columns; Ω (n x l) = standard normals from Philox
//!   `fill_normal_f64(seed, 0, ..)` in row-major order; Q = qr(AΩ); q times {Z = qr(AᵀQ); Q = qr(AZ)};
//!   B = QᵀA (l x n); B = U_B S V_Bᵀ by Jacobi; U = Q U_B; keep the top k. Passes over A: 2q + 2.
//!
//! # Tolerance
//! Against an exact decomposition, Jacobi recovers singular values to a few ulps of σ_max times
//! n. The randomized error depends on the spectrum (see tests/rsvd_cpu.rs for the bounds checked).
//!
//! # GPU (`rsvd.ptx`, `cuda.rs`, feature `cuda`)
//!
//! f32 data, `1 <= l <=` [`GPU_MAX_L`]. The GEMMs go through the f32 SIMT GEMM
//! (`gemm::cuda::gemm_f32`); the rest is hand-written PTX that computes in f64 on the f32 data:
//! - Gram `G = YᵀY` in two stages: per row-split partial Grams (f64 fma over each split's rows in
//!   increasing order; the split count depends on the shape only), then a sum over the splits in
//!   increasing order. No atomics: the same bits on every run.
//! - Cholesky of G in one block, the same operations in the same order as [`cpu`]'s, with a status
//!   word (bad pivot, or `max R_ii / min R_ii >` [`GPU_CHOLQR_RATIO_LIMIT`] on the first pass) on
//!   which the host falls back to [`cpu::thin_qr_f32`] (CholeskyQR2 in f64, else Householder), as
//!   the CPU oracle falls back to Householder.
//! - `Q = Y R⁻¹` one thread per row (forward substitution in f64 on the rounded f32 entries).
//! - One-sided Jacobi on `R_B = R2 R1`, the l x l triangular factor of CholeskyQR2 of `Bᵀ = AᵀQ`
//!   (the same rotations as Jacobi on `Bᵀ` itself, since `Bᵀ = Q_B R_B` with orthonormal `Q_B`),
//!   in one block; pairs in round-robin (circle) order, each round's disjoint pairs in parallel:
//!   another fixed order than [`cpu::jacobi_svd`]'s, the same decomposition up to rounding and
//!   the signs of singular vectors. The SVD of B is then `U_B = V_R`, `V = Q_B U_R`.
//!
//! The driver `cuda::rsvd_f32` mirrors [`cpu::rsvd`] step by step (same l, the same Ω: Philox
//! `fill_normal_f64(seed, 0, ..)` rounded to f32, the same power-iteration scheme).
//!
//! # GPU tolerance (tests/gpu_rsvd.rs)
//!
//! f32 data and f32 GEMMs against the f64 oracle on the same f32 input and the same Ω, on
//! matrices with a gap after σ_k: singular values within `1e-3 σ_1`, U and V orthonormal within
//! `1e-4` entrywise, and every principal angle between the GPU's and the oracle's top-k left (and
//! right) singular subspaces with `cos >= 1 - 1e-4`. The pieces' own bounds are in the test.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

/// The embedded PTX of the GPU pieces (`rsvd.ptx`), in every build (the CPU-only lint reads it).
pub const PTX: &str = include_str!("rsvd.ptx");

/// Largest sketch width `l = k + p` the GPU kernels take (one block owns the l x l factors).
pub const GPU_MAX_L: usize = 256;

/// First-pass `max R_ii / min R_ii` above which the GPU CholeskyQR2 falls back to the CPU's
/// [`cpu::thin_qr_f32`] (the same limit as the CPU oracle's).
pub const GPU_CHOLQR_RATIO_LIMIT: f64 = 1e6;

/// Sweep limit of the GPU Jacobi SVD (the CPU oracle's).
pub const GPU_JACOBI_MAX_SWEEPS: u32 = 60;
