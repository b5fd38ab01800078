//! The cross-entropy oracle: a max, a log-sum-exp and a pick per row, in f64.
//!
//! Targets are `i64`; an ignored target (equal to `ignore_index`) may be any value. Panics on a
//! kept target outside `0..classes` (the tensor op returns an error instead).

fn log_sum_exp(row: &[f64]) -> f64 {
    let mut m = f64::NEG_INFINITY;
    for &v in row {
        if v > m {
            m = v;
        }
    }
    if m == f64::NEG_INFINITY {
        return m;
    }
    let mut s = 0.0;
    for &v in row {
        s += (v - m).exp();
    }
    m + s.ln()
}

fn kept(target: i64, ignore_index: Option<i64>, classes: usize) -> Option<usize> {
    if Some(target) == ignore_index {
        return None;
    }
    assert!(
        (0..classes as i64).contains(&target),
        "cross_entropy oracle: target {target} is out of range for {classes} classes"
    );
    Some(target as usize)
}

/// Mean over kept rows of `lse_n - z[n, t_n]`; 0 when no row is kept.
pub fn cross_entropy(logits: &[f64], targets: &[i64], rows: usize, classes: usize, ignore_index: Option<i64>) -> f64 {
    assert_eq!(logits.len(), rows * classes, "cross_entropy oracle: logits hold {} values, not {rows} x {classes}", logits.len());
    assert_eq!(targets.len(), rows, "cross_entropy oracle: {} targets for {rows} rows", targets.len());
    let mut total = 0.0;
    let mut count = 0usize;
    for n in 0..rows {
        if let Some(t) = kept(targets[n], ignore_index, classes) {
            let row = &logits[n * classes..(n + 1) * classes];
            total += log_sum_exp(row) - row[t];
            count += 1;
        }
    }
    if count == 0 { 0.0 } else { total / count as f64 }
}

/// `(softmax - onehot) / count` on kept rows, 0 on ignored rows; `rows` x `classes` row-major.
pub fn cross_entropy_grad(logits: &[f64], targets: &[i64], rows: usize, classes: usize, ignore_index: Option<i64>) -> Vec<f64> {
    assert_eq!(logits.len(), rows * classes, "cross_entropy oracle: logits hold {} values, not {rows} x {classes}", logits.len());
    assert_eq!(targets.len(), rows, "cross_entropy oracle: {} targets for {rows} rows", targets.len());
    let count = (0..rows).filter(|&n| kept(targets[n], ignore_index, classes).is_some()).count();
    let mut g = vec![0.0; rows * classes];
    for n in 0..rows {
        if let Some(t) = kept(targets[n], ignore_index, classes) {
            let row = &logits[n * classes..(n + 1) * classes];
            let lse = log_sum_exp(row);
            for c in 0..classes {
                let p = (row[c] - lse).exp();
                let onehot = if c == t { 1.0 } else { 0.0 };
                g[n * classes + c] = (p - onehot) / count as f64;
            }
        }
    }
    g
}
