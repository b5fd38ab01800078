//! GPU axis reductions, softmax forward/backward and RMS norm forward/backward against their CPU
//! oracles, with the tolerances their `mod.rs` files state; plus bit-reproducibility (two runs give
//! the same bits) for everything that sums.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::reduce::cuda::{arg_reduce_f32, reduce_f32};
use brainstacks_kernels::reduce::{self, ArgReduceOp, ReduceOp};
use brainstacks_kernels::rms_norm::{self, cpu as rms_cpu, cuda as rms_cuda};
use brainstacks_kernels::softmax::{self, cpu as sm_cpu, cuda as sm_cuda};
use common::gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 24;
const U32: f64 = 1.0 / (1u64 << 24) as f64;
const TINY32: f64 = 1.401298464324817e-45; // 2^-149

/// A deterministic pseudo-random f32 in [-scale, scale) from a seed and an index (splitmix64).
fn rnd(seed: u64, i: usize, scale: f32) -> f32 {
    let mut z = seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
}

/// Axis lengths around the 256-thread block and 1024, small odd ones, and a large odd one.
fn axis() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        prop::sample::select(vec![2usize, 3, 7, 31, 255, 256, 257, 1023, 1024, 1025]),
        1usize..3000,
        Just(100_003),
    ]
}

/// `[outer, size, inner]` with `outer * inner` kept moderate when `size` is large; `inner` below
/// and from 32 on, so both kernels (block tree, and thread per output) are exercised.
fn reduce_shape() -> impl Strategy<Value = (usize, usize, usize)> {
    let inner = prop_oneof![Just(1usize), 1usize..5, Just(31), Just(32), 33usize..300];
    (axis(), 1usize..6, inner).prop_map(|(s, o, i)| {
        if s > 5000 {
            (1, s, i.min(40))
        } else if s * i > 200_000 {
            (o.min(2), s, i.min(64))
        } else {
            (o, s, i)
        }
    })
}

/// Data: random, or drawn from a small set (ties), optionally with a NaN planted.
fn fill(n: usize, seed: u64, ties: bool, nan_at: Option<usize>) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n)
        .map(|i| {
            if ties {
                (rnd(seed, i, 3.0).round()).clamp(-2.0, 2.0)
            } else {
                rnd(seed, i, 100.0)
            }
        })
        .collect();
    if let (Some(k), true) = (nan_at, n > 0) {
        v[k % n] = f32::NAN;
    }
    v
}

#[test]
fn reductions_match_oracle() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let case = (
        reduce_shape(),
        any::<u64>(),
        any::<bool>(),
        prop::option::weighted(0.2, any::<usize>()),
    );
    runner
        .run(&case, |((outer, size, inner), seed, ties, nan_at)| {
            let x = fill(outer * size * inner, seed, ties, nan_at);
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let dx = g.htod(&x).unwrap();
            let n_out = outer * inner;
            let abs = reduce::abs_sum_axis_f64(&x64, outer, size, inner);
            for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min] {
                let mut dy = g.alloc_zeros::<f32>(n_out).unwrap();
                reduce_f32(g, op, &dx, outer, size, inner, &mut dy).unwrap();
                let got = g.dtoh(&dy).unwrap();
                let want = match op {
                    ReduceOp::Sum => reduce::sum_axis_f64(&x64, outer, size, inner),
                    ReduceOp::Mean => reduce::mean_axis_f64(&x64, outer, size, inner),
                    ReduceOp::Max => reduce::max_axis_f64(&x64, outer, size, inner),
                    ReduceOp::Min => reduce::min_axis_f64(&x64, outer, size, inner),
                };
                for k in 0..n_out {
                    let (gv, w) = (got[k] as f64, want[k]);
                    let ok = if w.is_nan() {
                        gv.is_nan()
                    } else {
                        match op {
                            ReduceOp::Sum => {
                                (gv - w).abs()
                                    <= reduce::sum_tolerance(size, abs[k], w, U32, TINY32)
                            }
                            ReduceOp::Mean => {
                                let t = reduce::sum_tolerance(
                                    size,
                                    abs[k],
                                    w * size as f64,
                                    U32,
                                    TINY32,
                                ) / size as f64;
                                (gv - w).abs() <= t + U32 * w.abs()
                            }
                            _ => got[k].to_bits() == (w as f32).to_bits(),
                        }
                    };
                    prop_assert!(
                        ok,
                        "{:?} [{}, {}, {}] output {}: gpu {:e}, oracle {:e}",
                        op,
                        outer,
                        size,
                        inner,
                        k,
                        gv,
                        w
                    );
                }
            }
            for op in [ArgReduceOp::ArgMax, ArgReduceOp::ArgMin] {
                let mut di = g.alloc_zeros::<u64>(n_out).unwrap();
                arg_reduce_f32(g, op, &dx, outer, size, inner, &mut di).unwrap();
                let got = g.dtoh(&di).unwrap();
                let want = match op {
                    ArgReduceOp::ArgMax => reduce::argmax_axis(&x64, outer, size, inner),
                    ArgReduceOp::ArgMin => reduce::argmin_axis(&x64, outer, size, inner),
                };
                for k in 0..n_out {
                    prop_assert_eq!(
                        got[k],
                        want[k] as u64,
                        "{:?} [{}, {}, {}] output {}",
                        op,
                        outer,
                        size,
                        inner,
                        k
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn reductions_edge_cases() {
    let Some(g) = gpu() else { return };
    // Empty axis: sum 0, mean NaN, max and argmax are errors; empty outer: nothing to do.
    let dx = g.alloc_zeros::<f32>(0).unwrap();
    let mut dy = g.alloc_zeros::<f32>(6).unwrap();
    reduce_f32(g, ReduceOp::Sum, &dx, 3, 0, 2, &mut dy).unwrap();
    assert_eq!(g.dtoh(&dy).unwrap(), vec![0.0; 6]);
    reduce_f32(g, ReduceOp::Mean, &dx, 3, 0, 2, &mut dy).unwrap();
    assert!(g.dtoh(&dy).unwrap().iter().all(|v| v.is_nan()));
    assert!(reduce_f32(g, ReduceOp::Max, &dx, 3, 0, 2, &mut dy).is_err());
    let mut di = g.alloc_zeros::<u64>(6).unwrap();
    assert!(arg_reduce_f32(g, ArgReduceOp::ArgMax, &dx, 3, 0, 2, &mut di).is_err());
    let mut d0 = g.alloc_zeros::<f32>(0).unwrap();
    reduce_f32(g, ReduceOp::Sum, &dx, 0, 5, 2, &mut d0).unwrap();
    // All -inf: argmax is 0 (the first), max is -inf.
    let x = g.htod(&[f32::NEG_INFINITY; 300]).unwrap();
    let mut di = g.alloc_zeros::<u64>(1).unwrap();
    arg_reduce_f32(g, ArgReduceOp::ArgMax, &x, 1, 300, 1, &mut di).unwrap();
    assert_eq!(g.dtoh(&di).unwrap(), vec![0]);
    // The same through the thread-per-output kernel (inner >= 32).
    let x40 = g.htod(&[f32::NEG_INFINITY; 3 * 40]).unwrap();
    let mut di = g.alloc_zeros::<u64>(40).unwrap();
    arg_reduce_f32(g, ArgReduceOp::ArgMax, &x40, 1, 3, 40, &mut di).unwrap();
    assert_eq!(g.dtoh(&di).unwrap(), vec![0; 40]);
    // Wrong length.
    let mut dy = g.alloc_zeros::<f32>(2).unwrap();
    assert!(reduce_f32(g, ReduceOp::Sum, &x, 1, 299, 1, &mut dy).is_err());
}

#[test]
fn sums_are_bit_reproducible() {
    let Some(g) = gpu() else { return };
    for (outer, size, inner) in [(3, 100_003, 1), (2, 5001, 33)] {
        let x = fill(outer * size * inner, 7, false, None);
        let dx = g.htod(&x).unwrap();
        let mut a = g.alloc_zeros::<f32>(outer * inner).unwrap();
        let mut b = g.alloc_zeros::<f32>(outer * inner).unwrap();
        reduce_f32(g, ReduceOp::Sum, &dx, outer, size, inner, &mut a).unwrap();
        reduce_f32(g, ReduceOp::Sum, &dx, outer, size, inner, &mut b).unwrap();
        assert_eq!(g.dtoh(&a).unwrap(), g.dtoh(&b).unwrap());
    }
}

/// rows x cols for softmax and RMS norm: one long row (large odd), rows around block edges.
fn rows_cols() -> impl Strategy<Value = (usize, usize)> {
    prop_oneof![
        Just((1usize, 100_003usize)),
        (1usize..40, axis().prop_filter("moderate", |c| *c < 5000)),
        (0usize..3, 0usize..3),
    ]
}

#[test]
fn softmax_forward_and_backward_match_oracle() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let case = (
        rows_cols(),
        any::<u64>(),
        prop::sample::select(vec![1.0f32, 20.0, 200.0]),
        prop::option::weighted(0.1, any::<usize>()),
    );
    runner
        .run(&case, |((rows, cols), seed, scale, nan_at)| {
            let n = rows * cols;
            let mut x: Vec<f32> = (0..n).map(|i| rnd(seed, i, scale)).collect();
            if let (Some(k), true) = (nan_at, n > 0) {
                x[k % n] = f32::NAN;
            }
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let dx_ = g.htod(&x).unwrap();
            let mut dy_ = g.alloc_zeros::<f32>(n).unwrap();
            sm_cuda::softmax_f32_fwd(g, &dx_, &mut dy_, rows, cols).unwrap();
            let y = g.dtoh(&dy_).unwrap();
            let want = sm_cpu::softmax_rows_f64(&x64, rows, cols);
            let ranges = sm_cpu::row_ranges_f64(&x64, rows, cols);
            for i in 0..n {
                let (gv, w) = (y[i] as f64, want[i]);
                let ok = if w.is_nan() {
                    gv.is_nan()
                } else {
                    (gv - w).abs()
                        <= softmax::softmax_tolerance(w, ranges[i / cols], U32, U32, TINY32)
                };
                prop_assert!(
                    ok,
                    "fwd {}x{} element {}: gpu {:e}, oracle {:e}",
                    rows,
                    cols,
                    i,
                    gv,
                    w
                );
            }
            // Backward from the GPU's own y (as the tape would) and a random dy.
            let dyv: Vec<f32> = (0..n).map(|i| rnd(seed ^ 0xD1, i, 2.0)).collect();
            let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            let dy64: Vec<f64> = dyv.iter().map(|&v| v as f64).collect();
            let d_dy = g.htod(&dyv).unwrap();
            let mut d_dx = g.alloc_zeros::<f32>(n).unwrap();
            sm_cuda::softmax_f32_bwd(g, &dy_, &d_dy, &mut d_dx, rows, cols).unwrap();
            let got = g.dtoh(&d_dx).unwrap();
            let want = sm_cpu::softmax_bwd_rows_f64(&y64, &dy64, rows, cols);
            let absdot = sm_cpu::abs_dot_rows_f64(&y64, &dy64, rows, cols);
            for i in 0..n {
                let (gv, w) = (got[i] as f64, want[i]);
                let ok = if w.is_nan() {
                    gv.is_nan()
                } else {
                    (gv - w).abs()
                        <= softmax::softmax_bwd_tolerance(
                            w,
                            y64[i],
                            cols,
                            absdot[i / cols],
                            U32,
                            TINY32,
                        )
                };
                prop_assert!(
                    ok,
                    "bwd {}x{} element {}: gpu {:e}, oracle {:e}",
                    rows,
                    cols,
                    i,
                    gv,
                    w
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn rms_norm_forward_and_backward_match_oracle() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    // rows up to 300 so the dweight stage sees several 64-row chunks, including a partial one.
    let case = (
        prop_oneof![
            Just((1usize, 100_003usize)),
            (0usize..300, axis().prop_filter("moderate", |c| *c < 3000))
        ],
        any::<u64>(),
        prop::sample::select(vec![1e-6f64, 1e-5, 0.0]),
    );
    runner
        .run(&case, |((rows, dim), seed, eps)| {
            let n = rows * dim;
            let x: Vec<f32> = (0..n).map(|i| rnd(seed, i, 3.0)).collect();
            let w: Vec<f32> = (0..dim).map(|i| rnd(seed ^ 0x77, i, 2.0)).collect();
            let dy: Vec<f32> = (0..n).map(|i| rnd(seed ^ 0x99, i, 1.0)).collect();
            let f = |v: &[f32]| -> Vec<f64> { v.iter().map(|&a| a as f64).collect() };
            let (x64, w64, dy64) = (f(&x), f(&w), f(&dy));
            let (d_x, d_w, d_dy) = (
                g.htod(&x).unwrap(),
                g.htod(&w).unwrap(),
                g.htod(&dy).unwrap(),
            );
            let mut d_y = g.alloc_zeros::<f32>(n).unwrap();
            rms_cuda::rms_norm_f32_fwd(g, &d_x, &d_w, &mut d_y, rows, dim, eps).unwrap();
            let y = g.dtoh(&d_y).unwrap();
            let want = rms_cpu::rms_norm(&x64, &w64, rows, dim, eps);
            for i in 0..n {
                let t = rms_norm::tolerance(dim, U32, want[i], TINY32 / 2.0);
                prop_assert!(
                    (y[i] as f64 - want[i]).abs() <= t,
                    "fwd {}x{} element {}: gpu {:e}, oracle {:e}",
                    rows,
                    dim,
                    i,
                    y[i],
                    want[i]
                );
            }
            let mut d_dx = g.alloc_zeros::<f32>(n).unwrap();
            let mut d_dw = g.alloc_zeros::<f32>(dim).unwrap();
            rms_cuda::rms_norm_f32_bwd(g, &d_x, &d_w, &d_dy, &mut d_dx, &mut d_dw, rows, dim, eps)
                .unwrap();
            let (gdx, gdw) = (g.dtoh(&d_dx).unwrap(), g.dtoh(&d_dw).unwrap());
            let (wdx, wdw) = rms_cpu::rms_norm_bwd(&x64, &w64, &dy64, rows, dim, eps);
            let (sx, sw) = rms_cpu::rms_norm_bwd_scales(&x64, &w64, &dy64, rows, dim, eps);
            for i in 0..n {
                let t = rms_norm::bwd_tolerance(dim, U32, wdx[i], sx[i], TINY32);
                prop_assert!(
                    (gdx[i] as f64 - wdx[i]).abs() <= t,
                    "dx {}x{} element {}: gpu {:e}, oracle {:e}",
                    rows,
                    dim,
                    i,
                    gdx[i],
                    wdx[i]
                );
            }
            for i in 0..dim {
                let t = rms_norm::bwd_tolerance(rows + dim, U32, wdw[i], sw[i], TINY32);
                prop_assert!(
                    (gdw[i] as f64 - wdw[i]).abs() <= t,
                    "dw {}x{} column {}: gpu {:e}, oracle {:e}",
                    rows,
                    dim,
                    i,
                    gdw[i],
                    wdw[i]
                );
            }
            // Bit-reproducible dweight (fixed two-stage order, no atomics).
            let mut d_dw2 = g.alloc_zeros::<f32>(dim).unwrap();
            let mut d_dx2 = g.alloc_zeros::<f32>(n).unwrap();
            rms_cuda::rms_norm_f32_bwd(
                g, &d_x, &d_w, &d_dy, &mut d_dx2, &mut d_dw2, rows, dim, eps,
            )
            .unwrap();
            prop_assert_eq!(g.dtoh(&d_dw2).unwrap(), gdw);
            Ok(())
        })
        .unwrap();
}

#[test]
fn shape_errors() {
    let Some(g) = gpu() else { return };
    let x = g.htod(&[1.0f32; 6]).unwrap();
    let w = g.htod(&[1.0f32; 2]).unwrap();
    let mut y = g.alloc_zeros::<f32>(6).unwrap();
    assert!(sm_cuda::softmax_f32_fwd(g, &x, &mut y, 4, 2).is_err());
    assert!(rms_cuda::rms_norm_f32_fwd(g, &x, &w, &mut y, 2, 3, 1e-6).is_err());
    // rows = 0: dweight is zero.
    let e = g.alloc_zeros::<f32>(0).unwrap();
    let mut e2 = g.alloc_zeros::<f32>(0).unwrap();
    let mut dw = g.htod(&[5.0f32; 2]).unwrap();
    rms_cuda::rms_norm_f32_bwd(g, &e, &w, &e, &mut e2, &mut dw, 0, 2, 1e-6).unwrap();
    assert_eq!(g.dtoh(&dw).unwrap(), vec![0.0, 0.0]);
}
