//! The layer-norm oracle: a two-pass mean and biased variance per row, everything in f64.

/// `x` is `rows` x `dim` row-major; `weight` and `bias` are `[dim]`. Panics when the slices do
/// not fit those sizes.
pub fn layer_norm(x: &[f64], weight: &[f64], bias: &[f64], rows: usize, dim: usize, eps: f64) -> Vec<f64> {
    assert_eq!(x.len(), rows * dim, "layer_norm oracle: x holds {} values, not {rows} x {dim}", x.len());
    assert_eq!(weight.len(), dim, "layer_norm oracle: weight holds {} values, not {dim}", weight.len());
    assert_eq!(bias.len(), dim, "layer_norm oracle: bias holds {} values, not {dim}", bias.len());
    let mut y = vec![0.0; rows * dim];
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let mut sum = 0.0;
        for &v in row {
            sum += v;
        }
        let mean = sum / dim as f64;
        let mut sq = 0.0;
        for &v in row {
            sq += (v - mean) * (v - mean);
        }
        let inv = 1.0 / (sq / dim as f64 + eps).sqrt();
        for i in 0..dim {
            y[r * dim + i] = (row[i] - mean) * inv * weight[i] + bias[i];
        }
    }
    y
}
