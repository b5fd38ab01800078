//! The GEMM oracle: plain triple loops, every product and sum in f64.
//!
//! Nothing here is blocked, packed, vectorised or threaded on purpose: the oracle must be obviously
//! right by reading it, because every fast path (CPU and GPU) is judged against it.

/// Index of element (`i`, `j`) of a strided operand.
fn at(i: usize, j: usize, row_stride: usize, col_stride: usize) -> usize {
    i * row_stride + j * col_stride
}

/// Panics with a clear message when the strided operand cannot hold a `rows` x `cols` matrix.
fn check_fits(
    name: &str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1).checked_mul(row_stride).and_then(|r| {
        (cols - 1)
            .checked_mul(col_stride)
            .and_then(|c| r.checked_add(c))
    });
    assert!(
        matches!(last, Some(last) if last < len),
        "gemm oracle: operand {name} ({rows} x {cols}, strides {row_stride}, {col_stride}) \
         does not fit in a slice of length {len}"
    );
}

/// Shared body of the oracles: `C[i][j] = sum_p f(A[i][p], B[p][j])`, summed in f64 in order of `p`.
fn reference<T: Copy + Into<f64>>(
    m: usize,
    n: usize,
    k: usize,
    a: (&[T], usize, usize),
    b: (&[T], usize, usize),
    term: impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    let (a, a_rs, a_cs) = a;
    let (b, b_rs, b_cs) = b;
    check_fits("a", a.len(), m, k, a_rs, a_cs);
    check_fits("b", b.len(), k, n, b_rs, b_cs);
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f64;
            for p in 0..k {
                let x: f64 = a[at(i, p, a_rs, a_cs)].into();
                let y: f64 = b[at(p, j, b_rs, b_cs)].into();
                sum += term(x, y);
            }
            c[i * n + j] = sum;
        }
    }
    c
}

/// `C = A·B` for f64 operands; returns C row-major (`m` x `n`, length `m * n`).
///
/// `a[i * a_rs + p * a_cs]` is `A[i][p]` (`m` x `k`); `b[p * b_rs + j * b_cs]` is `B[p][j]` (`k` x `n`).
pub fn gemm_reference_f64(
    m: usize,
    n: usize,
    k: usize,
    a: &[f64],
    a_rs: usize,
    a_cs: usize,
    b: &[f64],
    b_rs: usize,
    b_cs: usize,
) -> Vec<f64> {
    reference(m, n, k, (a, a_rs, a_cs), (b, b_rs, b_cs), |x, y| x * y)
}

/// `C = A·B` for f32 operands, each converted exactly to f64 and accumulated in f64.
///
/// Same layout rules as [`gemm_reference_f64`]. A product of two f32 values is exact in f64, so the
/// only rounding is in the f64 sums (relative size about 1e-16, negligible next to an f32 path).
pub fn gemm_reference_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) -> Vec<f64> {
    reference(m, n, k, (a, a_rs, a_cs), (b, b_rs, b_cs), |x, y| x * y)
}

/// `|A|·|B|`: the entry-wise `sum_p |A[i][p]| * |B[p][j]|` that scales the error bound
/// ([`super::f32_tolerance`]). Same layout rules as [`gemm_reference_f64`].
pub fn gemm_abs_reference_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) -> Vec<f64> {
    reference(m, n, k, (a, a_rs, a_cs), (b, b_rs, b_cs), |x, y| {
        (x * y).abs()
    })
}

/// `|A|·|B|` for f64 operands; see [`gemm_abs_reference_f32`].
pub fn gemm_abs_reference_f64(
    m: usize,
    n: usize,
    k: usize,
    a: &[f64],
    a_rs: usize,
    a_cs: usize,
    b: &[f64],
    b_rs: usize,
    b_cs: usize,
) -> Vec<f64> {
    reference(m, n, k, (a, a_rs, a_cs), (b, b_rs, b_cs), |x, y| {
        (x * y).abs()
    })
}
