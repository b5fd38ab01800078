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

pub mod cpu;
