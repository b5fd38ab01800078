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
