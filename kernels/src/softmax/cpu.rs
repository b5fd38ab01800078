//! The softmax oracles: plain loops over contiguous rows, f64 throughout.
//!
//! `x` holds `rows` rows of `cols` values each (row `r` is `x[r * cols .. (r + 1) * cols]`); the
//! result has the same layout. Nothing is fused, vectorised or threaded.

/// Panics with a clear message when `x` does not hold `rows` x `cols` values.
fn check_len(op: &str, len: usize, rows: usize, cols: usize) {
    assert!(
        rows.checked_mul(cols) == Some(len),
        "{op} oracle: a slice of length {len} is not a {rows} x {cols} array"
    );
}

/// Per row: the maximum `m` (NaN if any value is NaN) and `sum_j exp(x_j - m)`.
fn row_max_and_sum(row: &[f64]) -> (f64, f64) {
    let mut m = f64::NEG_INFINITY;
    for &v in row {
        if v.is_nan() || m.is_nan() {
            m = f64::NAN;
        } else if v > m {
            m = v;
        }
    }
    let mut sum = 0.0f64;
    for &v in row {
        sum += (v - m).exp();
    }
    (m, sum)
}

/// `y_j = exp(x_j - m) / sum_k exp(x_k - m)` per row, with `m` the row maximum.
pub fn softmax_rows_f64(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    check_len("softmax_rows", x.len(), rows, cols);
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let (m, sum) = row_max_and_sum(row);
        for j in 0..cols {
            out[r * cols + j] = (row[j] - m).exp() / sum;
        }
    }
    out
}

/// `y_j = (x_j - m) - ln(sum_k exp(x_k - m))` per row, with `m` the row maximum.
pub fn log_softmax_rows_f64(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    check_len("log_softmax_rows", x.len(), rows, cols);
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let (m, sum) = row_max_and_sum(row);
        let log_sum = sum.ln();
        for j in 0..cols {
            out[r * cols + j] = (row[j] - m) - log_sum;
        }
    }
    out
}

/// `max_j x_j - min_j x_j` per row: the `R` that the tolerance rule is stated in.
pub fn row_ranges_f64(x: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    check_len("row_ranges", x.len(), rows, cols);
    (0..rows)
        .map(|r| {
            let row = &x[r * cols..(r + 1) * cols];
            let hi = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lo = row.iter().copied().fold(f64::INFINITY, f64::min);
            if cols == 0 { 0.0 } else { hi - lo }
        })
        .collect()
}

/// Softmax backward per row: `dx_j = y_j (dy_j - sum_k dy_k y_k)`, with `y` the forward output.
pub fn softmax_bwd_rows_f64(y: &[f64], dy: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    check_len("softmax_bwd_rows", y.len(), rows, cols);
    check_len("softmax_bwd_rows", dy.len(), rows, cols);
    let mut dx = vec![0.0; y.len()];
    for r in 0..rows {
        let (yr, dyr) = (&y[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let mut dot = 0.0f64;
        for j in 0..cols {
            dot += dyr[j] * yr[j];
        }
        for j in 0..cols {
            dx[r * cols + j] = yr[j] * (dyr[j] - dot);
        }
    }
    dx
}

/// `sum_k |dy_k y_k|` per row: the scale of the backward tolerance.
pub fn abs_dot_rows_f64(y: &[f64], dy: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    check_len("abs_dot_rows", y.len(), rows, cols);
    (0..rows)
        .map(|r| {
            (r * cols..(r + 1) * cols)
                .map(|i| (dy[i] * y[i]).abs())
                .sum()
        })
        .collect()
}
