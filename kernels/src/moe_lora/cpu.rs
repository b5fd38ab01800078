//! The oracle: per token, per selected expert, plain loops in f64.

/// Shapes of one dispatch: `t` tokens, `k` experts per token out of `experts`, rank `r`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub t: usize,
    pub k: usize,
    pub experts: usize,
    pub d_in: usize,
    pub r: usize,
    pub d_out: usize,
}

/// `A_e x` for one token: `mid[i] = sum_p a[e][i][p] x[p]`.
fn down(a: &[f64], d: &Dims, e: usize, x: &[f64]) -> Vec<f64> {
    (0..d.r)
        .map(|i| {
            let row = &a[(e * d.r + i) * d.d_in..(e * d.r + i + 1) * d.d_in];
            row.iter().zip(x).map(|(w, v)| w * v).sum()
        })
        .collect()
}

/// `B_e mid`: `y[o] = sum_i b[e][o][i] mid[i]`.
fn up(b: &[f64], d: &Dims, e: usize, mid: &[f64]) -> Vec<f64> {
    (0..d.d_out)
        .map(|o| {
            let row = &b[(e * d.d_out + o) * d.r..(e * d.d_out + o + 1) * d.r];
            row.iter().zip(mid).map(|(w, v)| w * v).sum()
        })
        .collect()
}

/// `out[t] = sum_j g[t, j] * scale * B_e A_e x_t` (see the module docs); `x` is `[T, d_in]`, `idx`
/// and `g` are `[T, k]`, `a` is `[E, r, d_in]`, `b` is `[E, d_out, r]`.
pub fn forward(x: &[f64], idx: &[i64], g: &[f64], a: &[f64], b: &[f64], scale: f64, d: &Dims) -> Vec<f64> {
    let mut out = vec![0.0; d.t * d.d_out];
    for t in 0..d.t {
        let xt = &x[t * d.d_in..(t + 1) * d.d_in];
        for j in 0..d.k {
            let e = idx[t * d.k + j] as usize;
            let y = up(b, d, e, &down(a, d, e, xt));
            for (o, v) in y.iter().enumerate() {
                out[t * d.d_out + o] += g[t * d.k + j] * scale * v;
            }
        }
    }
    out
}

/// Gradients `(dx, dg, da, db)` of [`forward`] for the output gradient `dy` (`[T, d_out]`).
pub fn backward(
    x: &[f64],
    idx: &[i64],
    g: &[f64],
    a: &[f64],
    b: &[f64],
    scale: f64,
    dy: &[f64],
    d: &Dims,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dg = vec![0.0; g.len()];
    let mut da = vec![0.0; a.len()];
    let mut db = vec![0.0; b.len()];
    for t in 0..d.t {
        let xt = &x[t * d.d_in..(t + 1) * d.d_in];
        let dyt = &dy[t * d.d_out..(t + 1) * d.d_out];
        for j in 0..d.k {
            let e = idx[t * d.k + j] as usize;
            let gs = g[t * d.k + j] * scale;
            let mid = down(a, d, e, xt);
            let y = up(b, d, e, &mid);
            dg[t * d.k + j] = scale * y.iter().zip(dyt).map(|(u, v)| u * v).sum::<f64>();
            // dmid = gs * B_e^T dy_t
            let mut dmid = vec![0.0; d.r];
            for o in 0..d.d_out {
                for i in 0..d.r {
                    db[(e * d.d_out + o) * d.r + i] += gs * dyt[o] * mid[i];
                    dmid[i] += gs * b[(e * d.d_out + o) * d.r + i] * dyt[o];
                }
            }
            for i in 0..d.r {
                for p in 0..d.d_in {
                    da[(e * d.r + i) * d.d_in + p] += dmid[i] * xt[p];
                    dx[t * d.d_in + p] += a[(e * d.r + i) * d.d_in + p] * dmid[i];
                }
            }
        }
    }
    (dx, dg, da, db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_single_token() {
        // d_in = 2, r = 1, d_out = 2, E = 2, k = 1: A_1 = [1, 2], B_1 = [[3], [4]], x = [1, 1].
        let d = Dims { t: 1, k: 1, experts: 2, d_in: 2, r: 1, d_out: 2 };
        let a = [9.0, 9.0, 1.0, 2.0];
        let b = [9.0, 9.0, 3.0, 4.0];
        let out = forward(&[1.0, 1.0], &[1], &[0.5], &a, &b, 2.0, &d);
        // mid = 3, y = [9, 12], out = 0.5 * 2 * y.
        assert_eq!(out, vec![9.0, 12.0]);
        let (dx, dg, da, db) = backward(&[1.0, 1.0], &[1], &[0.5], &a, &b, 2.0, &[1.0, 0.0], &d);
        assert_eq!(dg, vec![18.0]); // 2 * (9 * 1 + 12 * 0)
        assert_eq!(db, vec![0.0, 0.0, 3.0, 0.0]); // gs * dy * mid = 1 * [1, 0] * 3
        assert_eq!(da, vec![0.0, 0.0, 3.0, 3.0]); // dmid = 1 * 3 * 1 = 3; times x
        assert_eq!(dx, vec![3.0, 6.0]); // A^T dmid
    }
}
