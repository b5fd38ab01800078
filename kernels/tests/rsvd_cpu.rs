//! CPU oracle tests for thin QR, Jacobi SVD and randomized SVD on matrices with known spectra.

use brainstacks_kernels::philox::cpu::fill_normal_f64;
use brainstacks_kernels::rsvd::cpu::*;

fn gaussian(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
    let mut x = vec![0.0; rows * cols];
    fill_normal_f64(seed, 0, 0.0, 1.0, &mut x);
    x
}

/// Orthonormal m x n (m >= n) from QR of Philox Gaussians.
fn orthonormal(m: usize, n: usize, seed: u64) -> Vec<f64> {
    householder_qr(&gaussian(m, n, seed), m, n)
}

/// max |QᵀQ - I|.
fn orth_err(q: &[f64], m: usize, n: usize) -> f64 {
    let g = matmul(&transpose(q, m, n), q, n, m, n);
    (0..n * n)
        .map(|i| (g[i] - f64::from(u8::from(i % (n + 1) == 0))).abs())
        .fold(0.0, f64::max)
}

/// A = U diag(s) Vᵀ with U m x r, V n x r orthonormal (r = s.len()).
fn build(m: usize, n: usize, s: &[f64], seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let r = s.len();
    let u = orthonormal(m, r, seed);
    let v = orthonormal(n, r, seed + 1);
    let mut us = u.clone();
    for i in 0..m {
        for j in 0..r {
            us[i * r + j] *= s[j];
        }
    }
    (matmul(&us, &transpose(&v, n, r), m, r, n), u, v)
}

/// Spectral norm estimate: 200 power iterations on XᵀX from a Philox start.
fn spectral_norm(x: &[f64], m: usize, n: usize) -> f64 {
    let xt = transpose(x, m, n);
    let mut v = gaussian(n, 1, 99);
    let mut est = 0.0;
    for _ in 0..200 {
        let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= nv);
        let xv = matmul(x, &v, m, n, 1);
        est = xv.iter().map(|a| a * a).sum::<f64>().sqrt();
        v = matmul(&xt, &xv, n, m, 1);
    }
    est
}

fn reconstruct(s: &Svd<f64>, m: usize, n: usize) -> Vec<f64> {
    let k = s.rank;
    let mut us = s.u.clone();
    for i in 0..m {
        for j in 0..k {
            us[i * k + j] *= s.s[j];
        }
    }
    matmul(&us, &transpose(&s.v, n, k), m, k, n)
}

#[test]
fn cholesky_qr2_is_orthonormal_and_spans_a() {
    let (m, n) = (300, 24);
    let a = gaussian(m, n, 7);
    let (q, path) = thin_qr(&a, m, n);
    assert_eq!(path, QrPath::CholeskyQr2);
    let e = orth_err(&q, m, n);
    assert!(e < 1e-14, "orthogonality {e:e}");
    // A - Q QᵀA = 0 up to rounding: Q spans range(A).
    let qta = matmul(&transpose(&q, m, n), &a, n, m, n);
    let res = matmul(&q, &qta, m, n, n);
    let worst = a
        .iter()
        .zip(&res)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-12, "projection residual {worst:e}");
}

#[test]
fn ill_conditioned_input_takes_householder() {
    // Columns scaled from 1 down to 1e-10: cond(A) ~ 1e10, past the 1e6 diagonal-ratio test.
    let (m, n) = (120, 8);
    let mut a = gaussian(m, n, 11);
    for i in 0..m {
        for j in 0..n {
            a[i * n + j] *= 10f64.powf(-(j as f64) * 10.0 / 7.0);
        }
    }
    let (q, path) = thin_qr(&a, m, n);
    assert_eq!(path, QrPath::Householder);
    let e = orth_err(&q, m, n);
    assert!(e < 1e-13, "orthogonality {e:e}");
    // A rank-deficient input (duplicated column) also falls back rather than dividing by zero.
    let mut d = gaussian(m, n, 12);
    for i in 0..m {
        d[i * n + 1] = d[i * n];
    }
    assert_eq!(thin_qr(&d, m, n).1, QrPath::Householder);
    let (qf, pf) = thin_qr_f32(&a.iter().map(|&x| x as f32).collect::<Vec<_>>(), m, n);
    assert_eq!(pf, QrPath::Householder);
    let qf: Vec<f64> = qf.into_iter().map(f64::from).collect();
    assert!(orth_err(&qf, m, n) < 1e-6);
}

#[test]
fn jacobi_recovers_a_known_decomposition() {
    let (m, n) = (40, 12);
    let s: Vec<f64> = (0..n).map(|i| 50.0 / (1.0 + i as f64).powi(2)).collect();
    let (a, u, v) = build(m, n, &s, 21);
    let d = svd_exact(&a, m, n);
    for j in 0..n {
        assert!(
            (d.s[j] - s[j]).abs() < 1e-13 * s[0],
            "s[{j}] {} vs {}",
            d.s[j],
            s[j]
        );
        // Singular vectors match up to sign: |<u_j, û_j>| = 1.
        let du: f64 = (0..m).map(|i| u[i * n + j] * d.u[i * n + j]).sum();
        let dv: f64 = (0..n).map(|i| v[i * n + j] * d.v[i * n + j]).sum();
        assert!(
            (du.abs() - 1.0).abs() < 1e-10 && (dv.abs() - 1.0).abs() < 1e-10,
            "{j}: {du} {dv}"
        );
    }
    assert!(orth_err(&d.u, m, n) < 1e-13 && orth_err(&d.v, n, n) < 1e-13);
    // Wide input goes through Aᵀ and swaps the factors.
    let at = transpose(&a, m, n);
    let w = svd_exact(&at, n, m);
    let rec = reconstruct(&w, n, m);
    let worst = at
        .iter()
        .zip(&rec)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-12, "wide reconstruction {worst:e}");
}

/// Spectrum: 10 signal values 100 * 0.8^i (100 .. 13.4), then a slow noise tail 1 * 0.99^i.
fn spectrum(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            if i < 10 {
                100.0 * 0.8f64.powi(i as i32)
            } else {
                0.99f64.powi(i as i32 - 10)
            }
        })
        .collect()
}

#[test]
fn rsvd_singular_values_and_residual_by_power_iterations() {
    let (m, n, k, p) = (240, 160, 10, 5);
    let s = spectrum(n);
    let (a, _, _) = build(m, n, &s, 31);
    // Bounds on max_i |ŝ_i - s_i| / s_i over the top k; measured 2.2e-2, 1.3e-7, 2.3e-12 for
    // q = 0, 1, 2 (seed 5): each power iteration multiplies the gap ratio's exponent by ~3.
    let bounds = [5e-2, 1e-6, 1e-10];
    // Eckart-Young: the best rank-k Frobenius error is sqrt(sum of the tail s_i^2).
    let best_f = s[k..].iter().map(|x| x * x).sum::<f64>().sqrt();
    for (q, bound) in bounds.iter().enumerate() {
        let r = rsvd(&a, m, n, k, p, q, 5);
        let rel = (0..k)
            .map(|i| (r.s[i] - s[i]).abs() / s[i])
            .fold(0.0, f64::max);
        let diff: Vec<f64> = a
            .iter()
            .zip(reconstruct(&r, m, n))
            .map(|(x, y)| x - y)
            .collect();
        // Power iteration underestimates slightly on this flat tail; Frobenius below has no bias.
        let resid = spectral_norm(&diff, m, n);
        let frob = diff.iter().map(|x| x * x).sum::<f64>().sqrt();
        eprintln!(
            "q={q}: max rel sv err {rel:.3e}, spectral resid / s_k+1 = {:.6}, frob resid / best = {:.6}",
            resid / s[k],
            frob / best_f
        );
        assert!(rel < *bound, "q={q}: rel err {rel:e} >= {bound:e}");
        assert!(orth_err(&r.u, m, k) < 1e-13 && orth_err(&r.v, n, k) < 1e-13);
        if q == 2 {
            assert!(resid <= 1.1 * s[k], "q=2 residual {resid} > 1.1 * {}", s[k]);
            assert!(
                frob <= 1.001 * best_f,
                "q=2 Frobenius residual {frob} vs best {best_f}"
            );
        }
    }
}

#[test]
fn rsvd_is_deterministic_and_f32_tracks_f64() {
    let (m, n) = (90, 130); // wide: exercises the transposed exact SVD of B
    let s = spectrum(m);
    let (a, _, _) = build(m, n, &s, 41);
    let r1 = rsvd(&a, m, n, 8, 4, 2, 3);
    let r2 = rsvd(&a, m, n, 8, 4, 2, 3);
    assert_eq!(
        r1.s.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        r2.s.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(r1.u, r2.u);
    let af: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let rf = rsvd_f32(&af, m, n, 8, 4, 2, 3);
    for i in 0..8 {
        // f32 input rounding perturbs A by ~6e-8 relative: singular values move by ~1e-7 s_0.
        assert!((f64::from(rf.s[i]) - r1.s[i]).abs() < 1e-5 * r1.s[0], "{i}");
    }
    let e = svd_exact_f32(&af, m, n);
    assert!((f64::from(e.s[0]) - s[0]).abs() < 1e-5 * s[0]);
    // k larger than min(m, n) is clamped; empty input gives an empty decomposition.
    assert_eq!(rsvd(&a, m, n, 500, 0, 0, 1).rank, m);
    assert_eq!(rsvd(&[], 0, 5, 3, 2, 1, 1).rank, 0);
}
