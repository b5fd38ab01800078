//! The RMS-norm oracle: one plain loop per row, everything in f64.

/// `x` is `rows` x `dim` row-major, `weight` is `[dim]`. Panics when the slices do not fit those
/// sizes (the oracle is test code; the tensor op returns errors instead).
pub fn rms_norm(x: &[f64], weight: &[f64], rows: usize, dim: usize, eps: f64) -> Vec<f64> {
    assert_eq!(x.len(), rows * dim, "rms_norm oracle: x holds {} values, not {rows} x {dim}", x.len());
    assert_eq!(weight.len(), dim, "rms_norm oracle: weight holds {} values, not {dim}", weight.len());
    let mut y = vec![0.0; rows * dim];
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let mut sum_sq = 0.0;
        for &v in row {
            sum_sq += v * v;
        }
        let inv = 1.0 / (sum_sq / dim as f64 + eps).sqrt();
        for i in 0..dim {
            y[r * dim + i] = row[i] * inv * weight[i];
        }
    }
    y
}

/// `1 / sqrt(mean(x^2) + eps)` of one row, in f64 in index order.
fn row_rinv(row: &[f64], eps: f64) -> f64 {
    let mut sum_sq = 0.0;
    for &v in row {
        sum_sq += v * v;
    }
    1.0 / (sum_sq / row.len() as f64 + eps).sqrt()
}

/// The backward of [`rms_norm`] for upstream gradient `dy` (rows x dim): returns `(dx, dweight)`.
/// With `r = 1 / sqrt(mean(x^2) + eps)` and `D = sum_j dy_j w_j x_j` per row:
/// `dx_i = r w_i dy_i - x_i r^3 D / dim`, and `dweight_i = sum_rows dy_i x_i r`. Everything in
/// f64, in index order (rows in increasing order for `dweight`). Panics on size mismatch.
pub fn rms_norm_bwd(
    x: &[f64],
    weight: &[f64],
    dy: &[f64],
    rows: usize,
    dim: usize,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(
        x.len(),
        rows * dim,
        "rms_norm_bwd oracle: x holds {} values, not {rows} x {dim}",
        x.len()
    );
    assert_eq!(
        dy.len(),
        rows * dim,
        "rms_norm_bwd oracle: dy holds {} values, not {rows} x {dim}",
        dy.len()
    );
    assert_eq!(
        weight.len(),
        dim,
        "rms_norm_bwd oracle: weight holds {} values, not {dim}",
        weight.len()
    );
    let mut dx = vec![0.0; rows * dim];
    let mut dw = vec![0.0; dim];
    for r in 0..rows {
        let (xr, dyr) = (&x[r * dim..(r + 1) * dim], &dy[r * dim..(r + 1) * dim]);
        let inv = row_rinv(xr, eps);
        let mut d = 0.0;
        for i in 0..dim {
            d += dyr[i] * weight[i] * xr[i];
        }
        let c = inv * inv * inv * d / dim as f64;
        for i in 0..dim {
            dx[r * dim + i] = inv * weight[i] * dyr[i] - xr[i] * c;
            dw[i] += dyr[i] * xr[i] * inv;
        }
    }
    (dx, dw)
}

/// The scales the backward tolerance is stated in: per element of `dx`,
/// `|r w_i dy_i| + |x_i| r^3 sum_j |dy_j w_j x_j| / dim`; per column of `dweight`,
/// `sum_rows |dy_i x_i r|`.
pub fn rms_norm_bwd_scales(
    x: &[f64],
    weight: &[f64],
    dy: &[f64],
    rows: usize,
    dim: usize,
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut sx = vec![0.0; rows * dim];
    let mut sw = vec![0.0; dim];
    for r in 0..rows {
        let (xr, dyr) = (&x[r * dim..(r + 1) * dim], &dy[r * dim..(r + 1) * dim]);
        let inv = row_rinv(xr, eps);
        let d: f64 = (0..dim).map(|i| (dyr[i] * weight[i] * xr[i]).abs()).sum();
        for i in 0..dim {
            sx[r * dim + i] =
                (inv * weight[i] * dyr[i]).abs() + xr[i].abs() * inv * inv * inv * d / dim as f64;
            sw[i] += (dyr[i] * xr[i] * inv).abs();
        }
    }
    (sx, sw)
}
