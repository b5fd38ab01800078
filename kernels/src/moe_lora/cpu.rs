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

/// Shapes of one gate: `t` tokens of width `d_in`, top `k` of `experts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateDims {
    pub t: usize,
    pub experts: usize,
    pub k: usize,
    pub d_in: usize,
}

/// What the gate decided for every token (see the module docs, "Gate").
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    /// `[T, E]`: `clean + softplus(z) eps` (or `clean` without noise).
    pub logits: Vec<f64>,
    /// `[T, E]`: `d logit / d z = eps sigmoid(z)` (zeros without noise).
    pub nscale: Vec<f64>,
    /// `[T, k]`: the kept experts in `topk` order.
    pub idx: Vec<i64>,
    /// `[T, k]`: softmax over the kept logits.
    pub gates: Vec<f64>,
}

/// `softplus(z) = ln(1 + e^z)`, as the elementwise oracle writes it.
pub fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// The noisy top-k gate: `w` is `[W_r; W_n]` (`[2E, d_in]`, router rows first), `x` `[T, d_in]`,
/// `eps` `[T, E]` (None: no noise). Selection is [`crate::topk::cpu::topk`] on the logits.
pub fn gate_forward(x: &[f64], w: &[f64], eps: Option<&[f64]>, d: &GateDims) -> Gate {
    let (e_n, n) = (d.experts, d.d_in);
    let dot = |q: usize, t: usize| -> f64 { (0..n).map(|p| w[q * n + p] * x[t * n + p]).sum() };
    let mut logits = vec![0.0; d.t * e_n];
    let mut nscale = vec![0.0; d.t * e_n];
    for t in 0..d.t {
        for e in 0..e_n {
            let clean = dot(e, t);
            let (lg, ns) = match eps {
                Some(eps) => {
                    let (z, ep) = (dot(e_n + e, t), eps[t * e_n + e]);
                    (clean + softplus(z) * ep, ep / (1.0 + (-z).exp()))
                }
                None => (clean, 0.0),
            };
            logits[t * e_n + e] = lg;
            nscale[t * e_n + e] = ns;
        }
    }
    let (kept, idx) = crate::topk::cpu::topk(&logits, d.t, e_n, d.k);
    let mut gates = vec![0.0; d.t * d.k];
    for t in 0..d.t {
        let row = &kept[t * d.k..(t + 1) * d.k];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ex: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let sum: f64 = ex.iter().sum();
        for (j, v) in ex.iter().enumerate() {
            gates[t * d.k + j] = v / sum;
        }
    }
    Gate { logits, nscale, idx, gates }
}

/// Gradients `(dx, dw)` of the gate (`dw` `[2E, d_in]` like `w`) for `dgates` (`[T, k]`) and an
/// optional further gradient `extra` of the logits (`[T, E]`, e.g. from the load-balance loss),
/// given the forward's `idx`, `gates` and `nscale`:
/// `dk_j = g_j (dg_j - sum_l g_l dg_l)`, `dlogit = extra + dk scattered to idx`,
/// `dz = dlogit nscale`, `dx_t = sum_e dlogit W_r[e] + dz W_n[e]`, `dW_r[e] = sum_t dlogit x_t`,
/// `dW_n[e] = sum_t dz x_t`.
#[allow(clippy::too_many_arguments)]
pub fn gate_backward(
    x: &[f64],
    w: &[f64],
    idx: &[i64],
    gates: &[f64],
    nscale: &[f64],
    dgates: &[f64],
    extra: Option<&[f64]>,
    d: &GateDims,
) -> (Vec<f64>, Vec<f64>) {
    let (e_n, n, k) = (d.experts, d.d_in, d.k);
    let mut dx = vec![0.0; d.t * n];
    let mut dw = vec![0.0; 2 * e_n * n];
    for t in 0..d.t {
        let mut dl: Vec<f64> = (0..e_n).map(|e| extra.map_or(0.0, |x| x[t * e_n + e])).collect();
        let dot: f64 = (0..k).map(|j| gates[t * k + j] * dgates[t * k + j]).sum();
        for j in 0..k {
            dl[idx[t * k + j] as usize] += gates[t * k + j] * (dgates[t * k + j] - dot);
        }
        for e in 0..e_n {
            let dz = dl[e] * nscale[t * e_n + e];
            for p in 0..n {
                dx[t * n + p] += dl[e] * w[e * n + p] + dz * w[(e_n + e) * n + p];
                dw[e * n + p] += dl[e] * x[t * n + p];
                dw[(e_n + e) * n + p] += dz * x[t * n + p];
            }
        }
    }
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_hand_computed() {
        // d_in = 1, E = 2, k = 2, x = 1, W_r = [1, 2], W_n = 0, eps = [0.5, -0.5]:
        // z = 0, softplus = ln 2, sigmoid = 1/2; logits = [1 + ln2/2, 2 - ln2/2].
        let d = GateDims { t: 1, experts: 2, k: 2, d_in: 1 };
        let w = [1.0, 2.0, 0.0, 0.0];
        let g = gate_forward(&[1.0], &w, Some(&[0.5, -0.5]), &d);
        let l2 = 2f64.ln();
        assert!((g.logits[0] - (1.0 + l2 * 0.5)).abs() < 1e-15);
        assert!((g.logits[1] - (2.0 - l2 * 0.5)).abs() < 1e-15);
        assert_eq!(g.nscale, vec![0.25, -0.25]);
        assert_eq!(g.idx, vec![1, 0]);
        let g0 = 1.0 / (1.0 + (g.logits[0] - g.logits[1]).exp());
        assert!((g.gates[0] - g0).abs() < 1e-15 && (g.gates[1] - (1.0 - g0)).abs() < 1e-15);
        // dgates = [1, 0]: dlogit[1] = g0 (1 - g0) = g0 g1, dlogit[0] = -g0 g1.
        let (dx, dw) = gate_backward(&[1.0], &w, &g.idx, &g.gates, &g.nscale, &[1.0, 0.0], None, &d);
        let p = g.gates[0] * g.gates[1];
        assert!((dx[0] - (-p * 1.0 + p * 2.0)).abs() < 1e-15);
        let want = [-p, p, -p * 0.25, p * -0.25];
        for (a, b) in dw.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{dw:?} vs {want:?}");
        }
        // No noise: logits are the clean ones and nscale is zero.
        let g = gate_forward(&[1.0], &w, None, &GateDims { k: 1, ..d });
        assert_eq!((g.logits, g.nscale, g.idx, g.gates), (vec![1.0, 2.0], vec![0.0, 0.0], vec![1], vec![1.0]));
    }

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
