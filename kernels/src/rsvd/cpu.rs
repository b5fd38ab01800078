//! CPU oracle for thin QR, one-sided Jacobi SVD and randomized SVD (contract in `mod.rs`).

use crate::philox::cpu::fill_normal_f64;

/// A thin SVD: `u` is rows x r, `s` has r values (descending), `v` is cols x r; row-major.
#[derive(Clone, Debug)]
pub struct Svd<T> {
    pub u: Vec<T>,
    pub s: Vec<T>,
    pub v: Vec<T>,
    pub rank: usize,
}

/// Which algorithm [`thin_qr`] used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QrPath {
    CholeskyQr2,
    Householder,
}

/// C (m x n) = A (m x k) B (k x n).
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let aip = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += aip * b[p * n + j];
            }
        }
    }
    c
}

/// Aᵀ (cols x rows) of A (rows x cols).
pub fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; a.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

/// Upper-triangular R (n x n) with G = RᵀR, or None when a pivot is not positive.
fn cholesky_upper(g: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut r = vec![0.0; n * n];
    for j in 0..n {
        let mut d = g[j * n + j];
        for p in 0..j {
            d -= r[p * n + j] * r[p * n + j];
        }
        if d.is_nan() || d <= 0.0 {
            return None;
        }
        let rjj = d.sqrt();
        r[j * n + j] = rjj;
        for c in j + 1..n {
            let mut v = g[j * n + c];
            for p in 0..j {
                v -= r[p * n + j] * r[p * n + c];
            }
            r[j * n + c] = v / rjj;
        }
    }
    Some(r)
}

/// One CholeskyQR pass: (Q = A R⁻¹, R), or None when the Gram matrix is not positive definite.
fn cholesky_qr_pass(a: &[f64], m: usize, n: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    let at = transpose(a, m, n);
    let g = matmul(&at, a, n, m, n);
    let r = cholesky_upper(&g, n)?;
    // Solve Q R = A row by row (forward substitution on Rᵀ).
    let mut q = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut v = a[i * n + j];
            for p in 0..j {
                v -= q[i * n + p] * r[p * n + j];
            }
            q[i * n + j] = v / r[j * n + j];
        }
    }
    Some((q, r))
}

/// Thin Householder QR: Q (m x n, orthonormal columns), m >= n.
pub fn householder_qr(a: &[f64], m: usize, n: usize) -> Vec<f64> {
    assert!(m >= n, "householder_qr needs m >= n");
    let mut r = a.to_vec();
    let mut vs: Vec<Vec<f64>> = Vec::with_capacity(n);
    for j in 0..n {
        let mut v: Vec<f64> = (j..m).map(|i| r[i * n + j]).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            let alpha = if v[0] >= 0.0 { -norm } else { norm };
            v[0] -= alpha;
            let vn = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            for x in v.iter_mut() {
                *x /= vn;
            }
            for c in j..n {
                let dot: f64 = (j..m).map(|i| v[i - j] * r[i * n + c]).sum();
                for i in j..m {
                    r[i * n + c] -= 2.0 * v[i - j] * dot;
                }
            }
        } else {
            v.iter_mut().for_each(|x| *x = 0.0);
        }
        vs.push(v);
    }
    // Q = H_0 ... H_{n-1} applied to the first n columns of I.
    let mut q = vec![0.0; m * n];
    for j in 0..n {
        q[j * n + j] = 1.0;
    }
    for j in (0..n).rev() {
        let v = &vs[j];
        for c in 0..n {
            let dot: f64 = (j..m).map(|i| v[i - j] * q[i * n + c]).sum();
            for i in j..m {
                q[i * n + c] -= 2.0 * v[i - j] * dot;
            }
        }
    }
    q
}

/// Thin QR of A (m x n, m >= n): Q with orthonormal columns spanning range(A), and the path taken.
pub fn thin_qr(a: &[f64], m: usize, n: usize) -> (Vec<f64>, QrPath) {
    assert!(m >= n, "thin_qr needs m >= n");
    if n == 0 {
        return (Vec::new(), QrPath::CholeskyQr2);
    }
    if let Some((q1, r1)) = cholesky_qr_pass(a, m, n) {
        let d = (0..n).map(|i| r1[i * n + i]);
        let (lo, hi) = d.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        let second = if hi / lo <= 1e6 {
            cholesky_qr_pass(&q1, m, n)
        } else {
            None
        };
        if let Some((q2, _)) = second {
            return (q2, QrPath::CholeskyQr2);
        }
    }
    (householder_qr(a, m, n), QrPath::Householder)
}

/// One-sided Jacobi SVD of A (m x n, m >= n): all n singular triplets, descending.
pub fn jacobi_svd(a: &[f64], m: usize, n: usize) -> Svd<f64> {
    assert!(m >= n, "jacobi_svd needs m >= n");
    // Work on columns: w[j] is column j of A, v[j] column j of V.
    let mut w: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..m).map(|i| a[i * n + j]).collect())
        .collect();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|j| (0..n).map(|i| f64::from(u8::from(i == j))).collect())
        .collect();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f64>();
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha = dot(&w[p], &w[p]);
                let beta = dot(&w[q], &w[q]);
                let gamma = dot(&w[p], &w[q]);
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for cols in [&mut w, &mut v] {
                    let (lo, hi) = cols.split_at_mut(q);
                    for (xp, xq) in lo[p].iter_mut().zip(hi[0].iter_mut()) {
                        let (a, b) = (*xp, *xq);
                        *xp = c * a - s * b;
                        *xq = s * a + c * b;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let sig: Vec<f64> = w.iter().map(|c| dot(c, c).sqrt()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| sig[y].total_cmp(&sig[x]).then(x.cmp(&y)));
    let mut out = Svd {
        u: vec![0.0; m * n],
        s: vec![0.0; n],
        v: vec![0.0; n * n],
        rank: n,
    };
    for (k, &j) in order.iter().enumerate() {
        out.s[k] = sig[j];
        if sig[j] > 1e-300 {
            for i in 0..m {
                out.u[i * n + k] = w[j][i] / sig[j];
            }
        }
        for i in 0..n {
            out.v[i * n + k] = v[j][i];
        }
    }
    out
}

/// Exact thin SVD of A (m x n), r = min(m, n) triplets.
pub fn svd_exact(a: &[f64], m: usize, n: usize) -> Svd<f64> {
    if m >= n {
        jacobi_svd(a, m, n)
    } else {
        let s = jacobi_svd(&transpose(a, m, n), n, m);
        Svd {
            u: s.v,
            s: s.s,
            v: s.u,
            rank: m,
        }
    }
}

/// Keep the first k of r columns of a row-major (rows x r) matrix.
fn first_cols(x: &[f64], rows: usize, r: usize, k: usize) -> Vec<f64> {
    (0..rows)
        .flat_map(|i| x[i * r..i * r + k].iter().copied())
        .collect()
}

/// Randomized SVD: top-k triplets of A (m x n) with oversampling `p` and `q` power iterations.
/// k is clamped to min(m, n); the returned `rank` is that k.
pub fn rsvd(a: &[f64], m: usize, n: usize, k: usize, p: usize, q: usize, seed: u64) -> Svd<f64> {
    assert_eq!(a.len(), m * n);
    let r = m.min(n);
    let k = k.min(r);
    let l = (k + p).min(r);
    if l == 0 {
        return Svd {
            u: Vec::new(),
            s: Vec::new(),
            v: Vec::new(),
            rank: 0,
        };
    }
    let mut omega = vec![0.0; n * l];
    fill_normal_f64(seed, 0, 0.0, 1.0, &mut omega);
    let at = transpose(a, m, n);
    let mut qm = thin_qr(&matmul(a, &omega, m, n, l), m, l).0;
    for _ in 0..q {
        let z = thin_qr(&matmul(&at, &qm, n, m, l), n, l).0;
        qm = thin_qr(&matmul(a, &z, m, n, l), m, l).0;
    }
    let b = matmul(&transpose(&qm, m, l), a, l, m, n); // l x n, l <= n
    let sb = svd_exact(&b, l, n); // u: l x l, v: n x l
    let u = matmul(&qm, &sb.u, m, l, l);
    Svd {
        u: first_cols(&u, m, l, k),
        s: sb.s[..k].to_vec(),
        v: first_cols(&sb.v, n, l, k),
        rank: k,
    }
}

fn narrow(s: Svd<f64>) -> Svd<f32> {
    let f = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect();
    Svd {
        u: f(s.u),
        s: f(s.s),
        v: f(s.v),
        rank: s.rank,
    }
}

fn widen(a: &[f32]) -> Vec<f64> {
    a.iter().map(|&x| f64::from(x)).collect()
}

/// [`rsvd`] on f32 data: computed in f64, each output rounded once to f32.
pub fn rsvd_f32(
    a: &[f32],
    m: usize,
    n: usize,
    k: usize,
    p: usize,
    q: usize,
    seed: u64,
) -> Svd<f32> {
    narrow(rsvd(&widen(a), m, n, k, p, q, seed))
}

/// [`svd_exact`] on f32 data: computed in f64, each output rounded once to f32.
pub fn svd_exact_f32(a: &[f32], m: usize, n: usize) -> Svd<f32> {
    narrow(svd_exact(&widen(a), m, n))
}

/// [`thin_qr`] on f32 data: computed in f64, Q rounded once to f32.
pub fn thin_qr_f32(a: &[f32], m: usize, n: usize) -> (Vec<f32>, QrPath) {
    let (q, path) = thin_qr(&widen(a), m, n);
    (q.into_iter().map(|v| v as f32).collect(), path)
}
