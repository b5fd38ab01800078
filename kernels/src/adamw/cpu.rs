//! The AdamW oracles: the f64 formula, and the f32 operation sequence of `brainstacks-train`.

use super::AdamWParams;

/// The adaptive update `u = (m / bias1) / (sqrt(v / bias2) + eps)` in f64 for step `t`, from the
/// *new* moments.
pub fn update_f64(c: &AdamWParams, t: u64, m: f64, v: f64) -> f64 {
    let t = i32::try_from(t).unwrap_or(i32::MAX);
    let bias1 = 1.0 - c.beta1.powi(t);
    let bias2 = 1.0 - c.beta2.powi(t);
    (m / bias1) / ((v / bias2).sqrt() + c.eps)
}

/// One AdamW step `t` (from 1) in f64, in place: the oracle. Panics on length mismatch.
pub fn adamw_step_f64(
    c: &AdamWParams,
    t: u64,
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
) {
    let n = p.len();
    assert!(
        g.len() == n && m.len() == n && v.len() == n,
        "adamw oracle: lengths differ"
    );
    for i in 0..n {
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
        let u = update_f64(c, t, m[i], v[i]);
        p[i] -= c.lr * (u + c.weight_decay * p[i]);
    }
}

/// One step with the f32 scalars of [`super::step_scalars`], as the train crate's f32 tensor ops
/// round them, one operation at a time (see the module docs). Panics on length mismatch.
pub fn adamw_step_f32(s: &[f32; 9], p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let [b1, c1, b2, c2, ib1, ib2, eps, wd, lr] = *s;
    let n = p.len();
    assert!(
        g.len() == n && m.len() == n && v.len() == n,
        "adamw oracle: lengths differ"
    );
    for i in 0..n {
        let mi = (m[i] * b1 + 0.0) + g[i] * c1;
        let vi = (v[i] * b2 + 0.0) + (g[i] * g[i]) * c2;
        let u = (mi * ib1) / ((vi * ib2).sqrt() + eps);
        p[i] -= (u + p[i] * wd) * lr;
        m[i] = mi;
        v[i] = vi;
    }
}
