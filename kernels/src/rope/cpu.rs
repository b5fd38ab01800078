//! The RoPE oracle: tables from the formula, the rotation as a plain loop, all in f64.

/// `(cos, sin)`, each `[positions.len(), head_dim / 2]` row-major:
/// `angle(p, i) = p * theta^(-2i / head_dim)`. Panics on an odd `head_dim`.
pub fn rope_tables(positions: &[usize], head_dim: usize, theta: f64) -> (Vec<f64>, Vec<f64>) {
    assert!(head_dim.is_multiple_of(2), "rope oracle: head_dim {head_dim} is odd");
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for i in 0..half {
            let angle = p as f64 * theta.powf(-(2.0 * i as f64) / head_dim as f64);
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Rotates `x` (`batch` x `t` x `d` row-major) with tables `[t, d/2]`. Panics when sizes disagree.
pub fn rope(x: &[f64], cos: &[f64], sin: &[f64], batch: usize, t: usize, d: usize) -> Vec<f64> {
    assert!(d.is_multiple_of(2), "rope oracle: head dim {d} is odd");
    assert_eq!(x.len(), batch * t * d, "rope oracle: x holds {} values, not {batch} x {t} x {d}", x.len());
    let half = d / 2;
    assert_eq!(cos.len(), t * half, "rope oracle: cos holds {} values, not {t} x {half}", cos.len());
    assert_eq!(sin.len(), t * half, "rope oracle: sin holds {} values, not {t} x {half}", sin.len());
    let mut y = vec![0.0; x.len()];
    for b in 0..batch {
        for p in 0..t {
            let base = (b * t + p) * d;
            for i in 0..half {
                let (c, s) = (cos[p * half + i], sin[p * half + i]);
                let (x0, x1) = (x[base + i], x[base + i + half]);
                y[base + i] = x0 * c - x1 * s;
                y[base + i + half] = x1 * c + x0 * s;
            }
        }
    }
    y
}

/// The adjoint of [`rope`]: every pair turned back by `-angle` (the rotation is orthogonal, so its
/// transpose is its inverse): `dx_i = dy_i cos + dy_{i+D/2} sin`, `dx_{i+D/2} = dy_{i+D/2} cos -
/// dy_i sin`. Same shapes and panics as [`rope`].
pub fn rope_backward(dy: &[f64], cos: &[f64], sin: &[f64], batch: usize, t: usize, d: usize) -> Vec<f64> {
    assert!(d.is_multiple_of(2), "rope oracle: head dim {d} is odd");
    assert_eq!(dy.len(), batch * t * d, "rope oracle: dy holds {} values, not {batch} x {t} x {d}", dy.len());
    let half = d / 2;
    assert_eq!(cos.len(), t * half, "rope oracle: cos holds {} values, not {t} x {half}", cos.len());
    assert_eq!(sin.len(), t * half, "rope oracle: sin holds {} values, not {t} x {half}", sin.len());
    let mut dx = vec![0.0; dy.len()];
    for b in 0..batch {
        for p in 0..t {
            let base = (b * t + p) * d;
            for i in 0..half {
                let (c, s) = (cos[p * half + i], sin[p * half + i]);
                let (g0, g1) = (dy[base + i], dy[base + i + half]);
                dx[base + i] = g0 * c + g1 * s;
                dx[base + i + half] = g1 * c - g0 * s;
            }
        }
    }
    dx
}

/// `y` rounded once to the nearest bf16 (ties to even, overflow to infinity; NaN becomes the quiet
/// NaN `0x7FC0`), as raw bits: the oracle's final rounding for bf16 outputs. Picks the nearest of
/// the candidates around `y` by exact distance, so it shares no code path with the GPU's
/// round-to-odd trick.
pub fn round_to_bf16(y: f64) -> u16 {
    if y.is_nan() {
        return 0x7FC0;
    }
    let sign = if y.is_sign_negative() { 0x8000u16 } else { 0 };
    let a = y.abs();
    // 0x7F80 stands for 2^128: the first magnitude past the largest finite bf16.
    let val = |t: u16| {
        if t >= 0x7F80 {
            2f64.powi(128)
        } else {
            f32::from_bits((t as u32) << 16) as f64
        }
    };
    let t = (((a as f32).to_bits() >> 16) as u16).min(0x7F80);
    let mut best = t;
    for c in [t.saturating_sub(1), t, (t + 1).min(0x7F80)] {
        let (dc, db) = ((a - val(c)).abs(), (a - val(best)).abs());
        if dc < db || (dc == db && c % 2 == 0 && best % 2 == 1) {
            best = c;
        }
    }
    sign | best
}
