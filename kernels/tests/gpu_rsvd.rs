//! GPU randomized SVD and its pieces (Gram, Cholesky, trsm, CholeskyQR2, Jacobi) against the CPU
//! oracle (`rsvd::cpu`).
//!
//! Tolerances (f32 data; the pieces compute in f64, the GEMMs of the driver in f32):
//! - Gram: within `1e-12 * sum_r |y_ri| |y_rj|` of the f64 oracle (another fixed summation
//!   order), and the same bits on a second run.
//! - Cholesky: `RᵀR = G` within `1e-12 * max|G|`; a non-positive pivot j gives status `j + 1`.
//! - trsm and CholeskyQR2: `|QᵀQ - I| <= 1e-5 * sqrt(m)` entrywise; `QR = Y` entrywise within
//!   `1e-6 (|Q| |R|)` (each q is rounded once to f32: the residual is about `2^-24 |q| r_jj`).
//! - Jacobi on an l x l matrix: singular values within `1e-6 σ_1` of `cpu::svd_exact`, U and V
//!   orthonormal within `1e-5`.
//! - rsvd_f32 vs cpu::rsvd_f32 (same Ω) on matrices with a gap after σ_k: singular values within
//!   `1e-3 σ_1`, U and V orthonormal within `1e-4`, and every principal angle between the GPU's
//!   and the oracle's top-k left (and right) singular subspaces with `cos >= 1 - 1e-4`.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::rsvd::cpu::{self as oracle, QrPath};
use brainstacks_kernels::rsvd::cuda::{
    cholesky_f64, cholesky_qr2_f32, gram_f64, jacobi_svd_f64, rsvd_f32, trsm_f64,
};
use common::gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 24;

/// A small xorshift stream with a Box-Muller normal (proptest picks the seed and the shapes).
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn abs(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs()).collect()
}

/// max |AᵀA - I| of a row-major rows x cols f32 matrix, in f64.
fn orth_err(a: &[f32], rows: usize, cols: usize) -> f64 {
    let w = wide(a);
    let g = oracle::matmul(&oracle::transpose(&w, rows, cols), &w, cols, rows, cols);
    let mut e = 0.0f64;
    for i in 0..cols {
        for j in 0..cols {
            e = e.max((g[i * cols + j] - f64::from(u8::from(i == j))).abs());
        }
    }
    e
}

/// Smallest cosine of the principal angles between the column spaces of two orthonormal
/// rows x k matrices (the smallest singular value of XᵀY).
fn min_cos(x: &[f32], y: &[f32], rows: usize, k: usize) -> f64 {
    let c = oracle::matmul(&oracle::transpose(&wide(x), rows, k), &wide(y), k, rows, k);
    let s = oracle::svd_exact(&c, k, k).s;
    s.iter().copied().fold(f64::INFINITY, f64::min)
}

fn pieces_case(m: usize, l: usize, seed: u64) -> Result<(), TestCaseError> {
    let Some(g) = gpu() else { return Ok(()) };
    let mut rng = Xs(seed | 1);
    let y = rng.f32s(m * l);
    let yd = g.htod(&y).unwrap();
    // Gram: oracle bound, and the same bits twice
    let gd = g.dtoh(&gram_f64(g, &yd, m, l).unwrap()).unwrap();
    let gd2 = g.dtoh(&gram_f64(g, &yd, m, l).unwrap()).unwrap();
    prop_assert!(gd.iter().zip(&gd2).all(|(a, b)| a.to_bits() == b.to_bits()));
    let w = wide(&y);
    let want = oracle::matmul(&oracle::transpose(&w, m, l), &w, l, m, l);
    let wa: Vec<f64> = w.iter().map(|x| x.abs()).collect();
    let bound = oracle::matmul(&oracle::transpose(&wa, m, l), &wa, l, m, l);
    for e in 0..l * l {
        prop_assert!(
            (gd[e] - want[e]).abs() <= 1e-12 * bound[e],
            "gram entry {e}: {} vs {}",
            gd[e],
            want[e]
        );
    }
    // Cholesky of the GPU's G: RᵀR = G
    let mut r = g.alloc_zeros::<f64>(l * l).unwrap();
    let mut st = g.alloc_zeros::<u32>(1).unwrap();
    cholesky_f64(g, &g.htod(&gd).unwrap(), l, f64::INFINITY, &mut r, &mut st).unwrap();
    prop_assert_eq!(g.dtoh(&st).unwrap()[0], 0);
    let rh = g.dtoh(&r).unwrap();
    let rtr = oracle::matmul(&oracle::transpose(&rh, l, l), &rh, l, l, l);
    let gmax = gd.iter().fold(0.0f64, |a, x| a.max(x.abs()));
    for e in 0..l * l {
        prop_assert!((rtr[e] - gd[e]).abs() <= 1e-12 * gmax, "RᵀR entry {e}");
    }
    for i in 0..l {
        for j in 0..i {
            prop_assert_eq!(rh[i * l + j], 0.0);
        }
    }
    // trsm: Q R = Y
    let mut qd = g.alloc_zeros::<f32>(m * l).unwrap();
    trsm_f64(g, &yd, &r, m, l, &mut qd).unwrap();
    let qh = g.dtoh(&qd).unwrap();
    let qr = oracle::matmul(&wide(&qh), &rh, m, l, l);
    let qr_abs = oracle::matmul(&abs(&wide(&qh)), &abs(&rh), m, l, l);
    for e in 0..m * l {
        prop_assert!(
            (qr[e] - w[e]).abs() <= 1e-6 * qr_abs[e] + 1e-30,
            "QR entry {e}: {} vs {}",
            qr[e],
            w[e]
        );
    }
    // CholeskyQR2
    let f = cholesky_qr2_f32(g, &yd, m, l).unwrap();
    let q2 = g.dtoh(&f.q).unwrap();
    prop_assert!(orth_err(&q2, m, l) <= 1e-5 * (m as f64).sqrt());
    if f.path == QrPath::CholeskyQr2 {
        let r2 = g.dtoh(&f.r2).unwrap();
        let r1 = g.dtoh(&f.r1).unwrap();
        let rr = oracle::matmul(&r2, &r1, l, l, l);
        let back = oracle::matmul(&wide(&q2), &rr, m, l, l);
        let rr_abs = oracle::matmul(&abs(&r2), &abs(&r1), l, l, l);
        let back_abs = oracle::matmul(&abs(&wide(&q2)), &rr_abs, m, l, l);
        for e in 0..m * l {
            prop_assert!(
                (back[e] - w[e]).abs() <= 1e-6 * back_abs[e] + 1e-30,
                "Q R2 R1 entry {e}"
            );
        }
    }
    Ok(())
}

#[test]
fn gram_cholesky_trsm_qr_match_cpu() {
    if gpu().is_none() {
        return;
    }
    let shapes = (1usize..=48).prop_flat_map(|l| (l..l + 300, Just(l), any::<u64>()));
    TestRunner::new(Config::with_cases(CASES))
        .run(&shapes, |(m, l, seed)| pieces_case(m, l, seed))
        .unwrap();
}

#[test]
fn pieces_fixed_shapes() {
    if gpu().is_none() {
        return;
    }
    // l = 1; l = 256 (the largest); two Gram entry tiles (l = 17); many splits (m = 5000)
    for (m, l) in [(1, 1), (7, 1), (300, 17), (5000, 24), (260, 256)] {
        pieces_case(m, l, 99 + m as u64).unwrap();
    }
}

#[test]
fn cholesky_reports_bad_pivots() {
    let Some(g) = gpu() else { return };
    let l = 5;
    // G = I except G[3][3] = -1: pivot 3 fails; NaN at pivot 0
    for (j, val) in [(3usize, -1.0f64), (0, f64::NAN), (2, 0.0)] {
        let mut gm = vec![0.0f64; l * l];
        for i in 0..l {
            gm[i * l + i] = 1.0;
        }
        gm[j * l + j] = val;
        let mut r = g.alloc_zeros::<f64>(l * l).unwrap();
        let mut st = g.alloc_zeros::<u32>(1).unwrap();
        cholesky_f64(g, &g.htod(&gm).unwrap(), l, 1e6, &mut r, &mut st).unwrap();
        assert_eq!(g.dtoh(&st).unwrap()[0], j as u32 + 1, "pivot {j} = {val}");
    }
    // ratio test: diag(1, 1e4) has R_ii ratio 100
    let gm = vec![1.0, 0.0, 0.0, 1e4];
    let mut r = g.alloc_zeros::<f64>(4).unwrap();
    let mut st = g.alloc_zeros::<u32>(1).unwrap();
    cholesky_f64(g, &g.htod(&gm).unwrap(), 2, 50.0, &mut r, &mut st).unwrap();
    assert_eq!(g.dtoh(&st).unwrap()[0], 3);
    cholesky_f64(g, &g.htod(&gm).unwrap(), 2, 100.0, &mut r, &mut st).unwrap();
    assert_eq!(g.dtoh(&st).unwrap()[0], 0);
    // an exactly rank-deficient Y falls back to the CPU and still gives an orthonormal Q
    let (m, l) = (40, 4);
    let mut y = Xs(5).f32s(m * l);
    for i in 0..m {
        y[i * l + 3] = y[i * l + 1];
    }
    let f = cholesky_qr2_f32(g, &g.htod(&y).unwrap(), m, l).unwrap();
    assert_eq!(f.path, QrPath::Householder);
    assert!(orth_err(&g.dtoh(&f.q).unwrap(), m, l) < 1e-5);
}

#[test]
fn bad_shapes_are_errors() {
    let Some(g) = gpu() else { return };
    let y = g.htod(&[1.0f32; 12]).unwrap();
    assert!(gram_f64(g, &y, 4, 4).is_err()); // 16 > 12 elements
    assert!(gram_f64(g, &y, 0, 3).is_err());
    assert!(gram_f64(g, &y, 0, 0).is_err());
    assert!(cholesky_qr2_f32(g, &y, 3, 4).is_err()); // m < l
    let big = g.alloc_zeros::<f32>(257 * 300).unwrap();
    assert!(cholesky_qr2_f32(g, &big, 300, 257).is_err());
}

fn jacobi_case(l: usize, seed: u64) -> Result<(), TestCaseError> {
    let Some(g) = gpu() else { return Ok(()) };
    let mut rng = Xs(seed | 1);
    let a: Vec<f64> = (0..l * l).map(|_| rng.normal()).collect();
    let mut eye = vec![0.0f64; l * l];
    for i in 0..l {
        eye[i * l + i] = 1.0;
    }
    let svd = jacobi_svd_f64(g, &g.htod(&a).unwrap(), &g.htod(&eye).unwrap(), l, 60).unwrap();
    prop_assert!(svd.converged);
    let want = oracle::svd_exact(&a, l, l);
    let s = g.dtoh(&svd.s).unwrap();
    for i in 0..l {
        prop_assert!(
            (f64::from(s[i]) - want.s[i]).abs() <= 1e-6 * want.s[0],
            "sigma {i}: {} vs {}",
            s[i],
            want.s[i]
        );
    }
    prop_assert!(orth_err(&g.dtoh(&svd.u).unwrap(), l, l) <= 1e-5);
    prop_assert!(orth_err(&g.dtoh(&svd.vr).unwrap(), l, l) <= 1e-5);
    Ok(())
}

#[test]
fn jacobi_matches_cpu() {
    if gpu().is_none() {
        return;
    }
    TestRunner::new(Config::with_cases(CASES))
        .run(&(1usize..=80, any::<u64>()), |(l, seed)| {
            jacobi_case(l, seed)
        })
        .unwrap();
    jacobi_case(256, 3).unwrap();
}

/// A (m x n) = U0 diag(σ) V0ᵀ with σ_i = 0.8^i, times 0.05 after the first k (a gap at k).
fn gapped(m: usize, n: usize, k: usize, seed: u64) -> Vec<f32> {
    let r = m.min(n);
    let mut rng = Xs(seed | 1);
    let g1: Vec<f64> = (0..m * r).map(|_| rng.normal()).collect();
    let g2: Vec<f64> = (0..n * r).map(|_| rng.normal()).collect();
    let (u0, _) = oracle::thin_qr(&g1, m, r);
    let (v0, _) = oracle::thin_qr(&g2, n, r);
    let mut us = u0.clone();
    for i in 0..m {
        for j in 0..r {
            let s = 0.8f64.powi(j as i32) * if j < k { 1.0 } else { 0.05 };
            us[i * r + j] *= s;
        }
    }
    oracle::matmul(&us, &oracle::transpose(&v0, n, r), m, r, n)
        .into_iter()
        .map(|x| x as f32)
        .collect()
}

fn rsvd_case(
    m: usize,
    n: usize,
    k: usize,
    p: usize,
    q: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let Some(g) = gpu() else { return Ok(()) };
    let a = gapped(m, n, k, seed);
    let got = rsvd_f32(g, &g.htod(&a).unwrap(), m, n, k, p, q, seed).unwrap();
    let want = oracle::rsvd_f32(&a, m, n, k, p, q, seed);
    let k = want.rank;
    prop_assert_eq!(got.rank, k);
    prop_assert!(got.jacobi_converged);
    let s1 = f64::from(want.s[0]);
    for i in 0..k {
        prop_assert!(
            (f64::from(got.s[i]) - f64::from(want.s[i])).abs() <= 1e-3 * s1,
            "sigma {i}: {} vs {}",
            got.s[i],
            want.s[i]
        );
    }
    let u = g.dtoh(&got.u).unwrap();
    let v = g.dtoh(&got.v).unwrap();
    prop_assert!(orth_err(&u, m, k) <= 1e-4);
    prop_assert!(orth_err(&v, n, k) <= 1e-4);
    let cu = min_cos(&u, &want.u, m, k);
    let cv = min_cos(&v, &want.v, n, k);
    prop_assert!(cu >= 1.0 - 1e-4, "left subspace: min cos {cu}");
    prop_assert!(cv >= 1.0 - 1e-4, "right subspace: min cos {cv}");
    Ok(())
}

#[test]
fn rsvd_matches_cpu() {
    if gpu().is_none() {
        return;
    }
    let shapes = (8usize..120, 8usize..120).prop_flat_map(|(m, n)| {
        (
            Just(m),
            Just(n),
            1usize..=m.min(n).min(12),
            0usize..10,
            0usize..4,
            any::<u64>(),
        )
    });
    TestRunner::new(Config::with_cases(CASES))
        .run(&shapes, |(m, n, k, p, q, seed)| {
            rsvd_case(m, n, k, p, q, seed)
        })
        .unwrap();
}

#[test]
fn rsvd_fixed_shapes() {
    if gpu().is_none() {
        return;
    }
    // wide and tall, l = min(m, n) (p clamps), k = 1, q = 0
    for (m, n, k, p, q) in [
        (300, 90, 16, 8, 2),
        (90, 300, 16, 8, 1),
        (40, 40, 32, 20, 2),
        (64, 200, 1, 0, 0),
    ] {
        rsvd_case(m, n, k, p, q, 7 + m as u64).unwrap();
    }
}
