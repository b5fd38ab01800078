//! The top-k oracle: a full stable sort of each row under the ranking order, then the first `k`.

use std::cmp::Ordering;

/// The ranking order of `(value, position)` pairs: `Less` means `a` ranks before `b` (larger value,
/// NaN above all numbers, then lower position).
pub fn rank_cmp(a: (f64, usize), b: (f64, usize)) -> Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        // Neither is NaN, so the comparison exists; descending.
        (false, false) => b.0.partial_cmp(&a.0).expect("not NaN"),
    };
    by_value.then(a.1.cmp(&b.1))
}

/// Values and positions of the `k` top-ranked elements of every row of `x` (`rows` x `n`).
/// Panics when `k > n` or the slice does not hold `rows` x `n` values.
pub fn topk(x: &[f64], rows: usize, n: usize, k: usize) -> (Vec<f64>, Vec<i64>) {
    assert!(k <= n, "topk oracle: k = {k} exceeds the row length {n}");
    assert_eq!(x.len(), rows * n, "topk oracle: x holds {} values, not {rows} x {n}", x.len());
    let mut values = Vec::with_capacity(rows * k);
    let mut indices = Vec::with_capacity(rows * k);
    for r in 0..rows {
        let mut row: Vec<(f64, usize)> = (0..n).map(|i| (x[r * n + i], i)).collect();
        row.sort_by(|&a, &b| rank_cmp(a, b));
        for &(v, i) in &row[..k] {
            values.push(v);
            indices.push(i as i64);
        }
    }
    (values, indices)
}
