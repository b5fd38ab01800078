//! GPU cross-entropy (forward, mean, backward) and top-k against their CPU oracles.
//!
//! Top-k is compared exactly (its order is a total order: no tolerance). Cross-entropy runs in
//! f64 with its own exp and a tree-ordered sum, so it is compared within the oracle's
//! `cross_entropy::tolerance` (see each test for the scale used and why).
//! Without a usable GPU every test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::cross_entropy::{self as ce, cpu as ce_cpu, cuda as ce_cuda};
use brainstacks_kernels::topk::{cpu as topk_cpu, cuda as topk_cuda};
use common::gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 24;
const U32: f64 = f32::EPSILON as f64 / 2.0;
const TINY32: f64 = 7.006_492_321_624_085e-46; // 2^-150

/// A small xorshift stream for bulk test data (proptest picks the seed and the shapes).
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------- cross-entropy

/// (rows, classes, row pad): empty, one, odd, around the 256-thread block, a 128k vocab.
fn ce_shape() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        (
            prop_oneof![Just(0usize), Just(1), 1usize..50],
            prop_oneof![
                Just(1usize),
                Just(2),
                1usize..3000,
                Just(255),
                Just(256),
                Just(257)
            ],
            0usize..4
        ),
        (Just(300usize), 1usize..40, 0usize..2),
        Just((3usize, 128_001usize, 7usize)),
    ]
}

/// One forward + backward case against the oracle.
fn ce_case(
    (rows, classes, pad): (usize, usize, usize),
    seed: u64,
    ignore_some: bool,
    dloss: f32,
) -> Result<(), TestCaseError> {
    let g = gpu().expect("checked by the caller");
    let mut rng = Xs(seed | 1);
    let stride = classes + pad;
    let len = if rows == 0 {
        0
    } else {
        (rows - 1) * stride + classes
    };
    // Padding is NaN: reading it would poison the row.
    let mut buf = vec![f32::NAN; len];
    let mut z = Vec::with_capacity(rows * classes);
    for n in 0..rows {
        for c in 0..classes {
            let v = rng.f32(20.0);
            buf[n * stride + c] = v;
            z.push(v as f64);
        }
    }
    let ignore = ignore_some.then_some(-100i64);
    let targets: Vec<i64> = (0..rows)
        .map(|_| {
            if ignore_some && rng.below(4) == 0 {
                -100
            } else {
                rng.below(classes as u64) as i64
            }
        })
        .collect();
    let want = ce_cpu::cross_entropy(&z, &targets, rows, classes, ignore);
    let want_g = ce_cpu::cross_entropy_grad(&z, &targets, rows, classes, ignore);
    let shape = ce_cuda::Logits {
        rows,
        classes,
        row_stride: stride,
    };
    let (dz, dt) = (g.htod(&buf).unwrap(), g.htod(&targets).unwrap());
    let mut loss = g.alloc_zeros::<f32>(1).unwrap();
    let mut kept = g.alloc_zeros::<u64>(1).unwrap();
    let mut lse = g.alloc_zeros::<f64>(rows).unwrap();
    ce_cuda::cross_entropy_f32_fwd(g, &dz, shape, &dt, ignore, &mut loss, &mut kept, &mut lse)
        .unwrap();
    let got = g.dtoh(&loss).unwrap()[0] as f64;
    let k = g.dtoh(&kept).unwrap()[0] as usize;
    let kept_rows: Vec<usize> = (0..rows).filter(|&n| Some(targets[n]) != ignore).collect();
    prop_assert_eq!(k, kept_rows.len());
    // Scale of the loss: mean over kept rows of |lse_n| + |z_{n,t_n}| (mod.rs).
    let lse_of = |n: usize| {
        let row = &z[n * classes..(n + 1) * classes];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    };
    let scale = if k == 0 {
        0.0
    } else {
        kept_rows
            .iter()
            .map(|&n| lse_of(n).abs() + z[n * classes + targets[n] as usize].abs())
            .sum::<f64>()
            / k as f64
    };
    let tol = ce::tolerance(classes, U32, want, scale, TINY32);
    prop_assert!(
        (got - want).abs() <= tol,
        "loss: gpu {} oracle {} tol {}",
        got,
        want,
        tol
    );

    // Backward with dloss: the oracle gradient times dloss. An entry's error follows that of
    // exp(z - lse), i.e. |lse_n| u64 relative, times dloss / K: scale (1 + |lse_n|) |dloss| / K.
    let ddl = g.htod(&[dloss]).unwrap();
    let mut dg = g.alloc_zeros::<f32>(rows * classes).unwrap();
    ce_cuda::cross_entropy_f32_bwd(g, &dz, shape, &dt, ignore, &lse, &kept, &ddl, &mut dg).unwrap();
    let got_g = g.dtoh(&dg).unwrap();
    for n in 0..rows {
        let s = if Some(targets[n]) == ignore {
            0.0
        } else {
            (1.0 + lse_of(n).abs()) * dloss.abs() as f64 / k.max(1) as f64
        };
        for c in 0..classes {
            let i = n * classes + c;
            let w = want_g[i] * dloss as f64;
            let tol = ce::tolerance(classes, U32, w, s, TINY32);
            prop_assert!(
                (got_g[i] as f64 - w).abs() <= tol,
                "grad [{}, {}]: gpu {} oracle {} tol {}",
                n,
                c,
                got_g[i],
                w,
                tol
            );
        }
    }
    Ok(())
}

#[test]
fn cross_entropy_matches_cpu() {
    let Some(_) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(ce_shape(), any::<u64>(), any::<bool>(), 0.1f32..3.0),
            |(s, seed, ig, dl)| ce_case(s, seed, ig, dl),
        )
        .unwrap();
}

#[test]
fn cross_entropy_all_ignored_is_zero_and_bad_targets_are_errors() {
    let Some(g) = gpu() else { return };
    let z = g.htod(&[0f32, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap(); // 2 x 3
    let shape = ce_cuda::Logits::contiguous(2, 3);
    let mut loss = g.htod(&[7f32]).unwrap();
    let mut kept = g.alloc_zeros::<u64>(1).unwrap();
    let mut lse = g.alloc_zeros::<f64>(2).unwrap();
    let t = g.htod(&[-100i64, -100]).unwrap();
    ce_cuda::cross_entropy_f32_fwd(g, &z, shape, &t, Some(-100), &mut loss, &mut kept, &mut lse)
        .unwrap();
    assert_eq!(g.dtoh(&loss).unwrap(), vec![0f32]);
    assert_eq!(g.dtoh(&kept).unwrap(), vec![0u64]);
    let dl = g.htod(&[1f32]).unwrap();
    let mut dz = g.htod(&[9f32; 6]).unwrap();
    ce_cuda::cross_entropy_f32_bwd(g, &z, shape, &t, Some(-100), &lse, &kept, &dl, &mut dz)
        .unwrap();
    assert_eq!(g.dtoh(&dz).unwrap(), vec![0f32; 6]);
    // No rows at all: loss 0.
    let empty = g.htod::<f32>(&[]).unwrap();
    let no_t = g.htod::<i64>(&[]).unwrap();
    let mut no_lse = g.alloc_zeros::<f64>(0).unwrap();
    ce_cuda::cross_entropy_f32_fwd(
        g,
        &empty,
        ce_cuda::Logits::contiguous(0, 5),
        &no_t,
        None,
        &mut loss,
        &mut kept,
        &mut no_lse,
    )
    .unwrap();
    assert_eq!(g.dtoh(&loss).unwrap(), vec![0f32]);
    // Out-of-range targets (3, -1, and -100 when it is not the ignore index).
    for bad in [3i64, -1, -100] {
        let t = g.htod(&[0i64, bad]).unwrap();
        let e =
            ce_cuda::cross_entropy_f32_fwd(g, &z, shape, &t, None, &mut loss, &mut kept, &mut lse)
                .unwrap_err();
        assert!(e.to_string().contains("targets[1]"), "{e}");
        let e = ce_cuda::cross_entropy_f32_bwd(g, &z, shape, &t, None, &lse, &kept, &dl, &mut dz)
            .unwrap_err();
        assert!(e.to_string().contains("targets[1]"), "{e}");
    }
}

// ---------------------------------------------------------------- top-k

/// (rows, n, k, row pad, tie-heavy): empty, one, odd, around the 256-thread block, large rows.
fn topk_shape() -> impl Strategy<Value = (usize, usize, usize, usize, bool)> {
    let n = prop_oneof![
        Just(1usize),
        1usize..600,
        Just(255),
        Just(256),
        Just(257),
        Just(100_003)
    ];
    (
        prop_oneof![Just(0usize), Just(1), 1usize..20, Just(300)],
        n,
        0usize..=64,
        0usize..5,
        any::<bool>(),
    )
        .prop_map(|(r, n, k, pad, ties)| {
            (
                if n > 50_000 { r.min(3) } else { r },
                n,
                k.min(n),
                pad,
                ties,
            )
        })
}

/// A value: from a tiny set (ties, signed zeros, infinities, NaNs) or uniform.
fn topk_value(rng: &mut Xs, ties: bool) -> f32 {
    if ties {
        const SET: [f32; 9] = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -3.0,
        ];
        let v = SET[rng.below(SET.len() as u64) as usize];
        // A NaN with another payload and sign now and then.
        if v.is_nan() && rng.below(2) == 0 {
            f32::from_bits(0xFFC0_1234)
        } else {
            v
        }
    } else {
        rng.f32(100.0)
    }
}

#[test]
fn topk_f32_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(topk_shape(), any::<u64>()),
            |((rows, n, k, pad, ties), seed)| {
                let mut rng = Xs(seed | 1);
                let stride = n + pad;
                let len = if rows == 0 {
                    0
                } else {
                    (rows - 1) * stride + n
                };
                // Padding holds +inf, which would win every round if it were read.
                let mut buf = vec![f32::INFINITY; len];
                let mut x = Vec::with_capacity(rows * n);
                for r in 0..rows {
                    for i in 0..n {
                        let v = topk_value(&mut rng, ties);
                        buf[r * stride + i] = v;
                        x.push(v as f64);
                    }
                }
                let (want_v, want_i) = topk_cpu::topk(&x, rows, n, k);
                let dx = g.htod(&buf).unwrap();
                let mut dv = g.alloc_zeros::<f32>(rows * k).unwrap();
                let mut di = g.alloc_zeros::<i64>(rows * k).unwrap();
                topk_cuda::topk_f32(g, &dx, rows, n, stride, k, &mut dv, &mut di).unwrap();
                let (got_v, got_i) = (g.dtoh(&dv).unwrap(), g.dtoh(&di).unwrap());
                prop_assert_eq!(
                    &got_i,
                    &want_i,
                    "rows={} n={} k={} stride={}",
                    rows,
                    n,
                    k,
                    stride
                );
                for j in 0..want_v.len() {
                    // The value is the element itself: same bits as the input at that index.
                    let src = buf[(j / k.max(1)) * stride + want_i[j] as usize];
                    prop_assert_eq!(got_v[j].to_bits(), src.to_bits(), "value {}", j);
                    prop_assert!(want_v[j].is_nan() == got_v[j].is_nan());
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn topk_rejects_bad_arguments() {
    let Some(g) = gpu() else { return };
    let x = g.htod(&[0f32; 100]).unwrap();
    let mut v = g.alloc_zeros::<f32>(65).unwrap();
    let mut i = g.alloc_zeros::<i64>(65).unwrap();
    // k > 64, k > n, stride < n, rows past the buffer.
    assert!(topk_cuda::topk_f32(g, &x, 1, 100, 100, 65, &mut v, &mut i).is_err());
    let mut v1 = g.alloc_zeros::<f32>(5).unwrap();
    let mut i1 = g.alloc_zeros::<i64>(5).unwrap();
    assert!(topk_cuda::topk_f32(g, &x, 1, 4, 4, 5, &mut v1, &mut i1).is_err());
    assert!(topk_cuda::topk_f32(g, &x, 1, 10, 9, 5, &mut v1, &mut i1).is_err());
    assert!(topk_cuda::topk_f32(g, &x, 1, 101, 101, 5, &mut v1, &mut i1).is_err());
    topk_cuda::topk_f32(g, &x, 1, 100, 100, 5, &mut v1, &mut i1).unwrap();
}
