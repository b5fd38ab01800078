//! The reduction oracles: plain loops over a `[outer, size, inner]` view, f64 throughout.
//!
//! Element `(o, s, i)` lives at `x[(o * size + s) * inner + i]`; every function reduces the middle
//! axis and returns `outer * inner` results in row-major order of `(o, i)`. Nothing is blocked or
//! threaded: each result is one loop over `s` in increasing order, obvious by reading.

/// Panics with a clear message when `x` does not hold an `[outer, size, inner]` array.
fn check_len(op: &str, len: usize, outer: usize, size: usize, inner: usize) {
    let expected = outer.checked_mul(size).and_then(|v| v.checked_mul(inner));
    assert!(
        expected == Some(len),
        "{op} oracle: a slice of length {len} is not an [{outer}, {size}, {inner}] array"
    );
}

/// Runs `f(o, i, column)` for every output, where `column(s)` reads element `(o, s, i)`.
fn per_output<R>(
    op: &str,
    x: &[f64],
    outer: usize,
    size: usize,
    inner: usize,
    f: impl Fn(&dyn Fn(usize) -> f64) -> R,
) -> Vec<R> {
    check_len(op, x.len(), outer, size, inner);
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let column = |s: usize| x[(o * size + s) * inner + i];
            out.push(f(&column));
        }
    }
    out
}

/// `out[o][i] = sum_s x[o][s][i]`, summed in f64 in increasing `s`; an empty axis sums to 0.
pub fn sum_axis_f64(x: &[f64], outer: usize, size: usize, inner: usize) -> Vec<f64> {
    per_output("sum_axis", x, outer, size, inner, |col| {
        let mut acc = 0.0f64;
        for s in 0..size {
            acc += col(s);
        }
        acc
    })
}

/// `out[o][i] = sum_s |x[o][s][i]|`: the scale the summation tolerance is measured against.
pub fn abs_sum_axis_f64(x: &[f64], outer: usize, size: usize, inner: usize) -> Vec<f64> {
    per_output("abs_sum_axis", x, outer, size, inner, |col| {
        let mut acc = 0.0f64;
        for s in 0..size {
            acc += col(s).abs();
        }
        acc
    })
}

/// `out[o][i] = (sum_s x[o][s][i]) / size`; an empty axis gives NaN (0 / 0), as PyTorch does.
pub fn mean_axis_f64(x: &[f64], outer: usize, size: usize, inner: usize) -> Vec<f64> {
    sum_axis_f64(x, outer, size, inner).into_iter().map(|v| v / size as f64).collect()
}

/// The index and value of the extreme along the axis. `better(a, b)` says `a` beats the current
/// best `b`; a NaN beats everything (so NaN propagates) and on ties the first index is kept.
fn extreme(col: &dyn Fn(usize) -> f64, size: usize, better: fn(f64, f64) -> bool) -> (usize, f64) {
    assert!(size > 0, "reduce oracle: the extreme of an empty axis does not exist");
    let mut best = (0, col(0));
    for s in 1..size {
        let v = col(s);
        if best.1.is_nan() {
            break;
        }
        if v.is_nan() || better(v, best.1) {
            best = (s, v);
        }
    }
    best
}

/// Largest value along the axis; NaN if any element is NaN. Panics on an empty axis.
pub fn max_axis_f64(x: &[f64], outer: usize, size: usize, inner: usize) -> Vec<f64> {
    per_output("max_axis", x, outer, size, inner, |col| extreme(col, size, |a, b| a > b).1)
}

/// Smallest value along the axis; NaN if any element is NaN. Panics on an empty axis.
pub fn min_axis_f64(x: &[f64], outer: usize, size: usize, inner: usize) -> Vec<f64> {
    per_output("min_axis", x, outer, size, inner, |col| extreme(col, size, |a, b| a < b).1)
}

/// Index of the largest value along the axis: the first one on ties, the first NaN if any.
pub fn argmax_axis(x: &[f64], outer: usize, size: usize, inner: usize) -> Vec<usize> {
    per_output("argmax_axis", x, outer, size, inner, |col| extreme(col, size, |a, b| a > b).0)
}

/// Index of the smallest value along the axis: the first one on ties, the first NaN if any.
pub fn argmin_axis(x: &[f64], outer: usize, size: usize, inner: usize) -> Vec<usize> {
    per_output("argmin_axis", x, outer, size, inner, |col| extreme(col, size, |a, b| a < b).0)
}
