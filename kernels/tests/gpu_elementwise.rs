//! GPU strided unary and broadcasting binary elementwise kernels against their CPU oracles.
//!
//! Unary: every op, f32 and bf16, on strided views (contiguous, permuted, stepped, reversed,
//! broadcast) with the tolerance of `elementwise::unary_tolerance` (results whose oracle is NaN
//! must be NaN; results that overflow the output dtype must be that infinity). Binary: every op,
//! bit-exact against the f32 reference (bf16: against bf16 of it), NaN compared as NaN.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::elementwise::cpu::{
    View, binary_f64, binary_strided_f64, unary_f64, unary_strided_f64,
};
use brainstacks_kernels::elementwise::cuda::{self as ew, Strides};
use brainstacks_kernels::elementwise::model::accept_f32;
use brainstacks_kernels::elementwise::{BinaryOp, U_BF16, UnaryOp, unary_tolerance};
use common::gpu;
use half::bf16;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 24;

/// A view over a buffer: shape, strides (elements), offset, and the buffer length it needs.
#[derive(Clone, Debug)]
struct Layout {
    shape: Vec<usize>,
    strides: Vec<isize>,
    offset: usize,
    len: usize,
}

/// Row-major contiguous strides of `shape`.
fn contiguous(shape: &[usize]) -> Vec<isize> {
    let mut s = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for d in (0..shape.len()).rev() {
        s[d] = acc;
        acc *= shape[d].max(1) as isize;
    }
    s
}

/// Builds a layout of `shape` over a fresh buffer: `kind` 0 contiguous, 1 stepped (every
/// `step`-th element, with a leading offset), 2 permuted (a transpose of a contiguous buffer),
/// 3 last dim reversed (negative stride), 4 broadcast (stride 0 on every dim whose flag is set).
fn layout(shape: &[usize], kind: u8, step: usize, bcast: &[bool]) -> Layout {
    let r = shape.len();
    let numel: usize = shape.iter().product();
    match kind {
        1 => {
            let mut s = contiguous(shape);
            s.iter_mut().for_each(|v| *v *= step as isize);
            let off = 3;
            Layout {
                shape: shape.to_vec(),
                strides: s,
                offset: off,
                len: off + numel.max(1) * step,
            }
        }
        2 if r >= 2 => {
            // Store the array with its first and last dims swapped, then view it back.
            let mut stored = shape.to_vec();
            stored.swap(0, r - 1);
            let cs = contiguous(&stored);
            let mut s = cs.clone();
            s.swap(0, r - 1);
            Layout {
                shape: shape.to_vec(),
                strides: s,
                offset: 0,
                len: numel.max(1),
            }
        }
        3 if r >= 1 => {
            let mut s = contiguous(shape);
            let last = shape[r - 1];
            s[r - 1] = -1;
            Layout {
                shape: shape.to_vec(),
                strides: s,
                offset: last.saturating_sub(1),
                len: numel.max(1),
            }
        }
        4 => {
            let reduced: Vec<usize> = shape
                .iter()
                .zip(bcast)
                .map(|(&d, &b)| if b { 1 } else { d })
                .collect();
            let mut s = contiguous(&reduced);
            for d in 0..r {
                if bcast[d] {
                    s[d] = 0;
                }
            }
            let n: usize = reduced.iter().product();
            Layout {
                shape: shape.to_vec(),
                strides: s,
                offset: 0,
                len: n.max(1),
            }
        }
        _ => Layout {
            shape: shape.to_vec(),
            strides: contiguous(shape),
            offset: 0,
            len: numel.max(1),
        },
    }
}

/// Shapes: empty, one, around the 256-thread block and 1024, a large odd 1-D size, random ranks
/// up to 5 (the launcher merges contiguous dims, so layouts, not ranks, decide the kernel path).
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        Just(vec![0usize]),
        Just(vec![1]),
        Just(vec![]),
        prop::sample::select(vec![255usize, 256, 257, 1023, 1024, 1025, 100_003])
            .prop_map(|n| vec![n]),
        prop::collection::vec(1usize..9, 1..=5),
        (1usize..40, 1usize..40).prop_map(|(a, b)| vec![a, 0, b]),
        (1usize..600, 1usize..5).prop_map(|(a, b)| vec![a, b]),
    ]
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    (
        shape(),
        0u8..5,
        1usize..4,
        prop::collection::vec(any::<bool>(), 5),
    )
        .prop_map(|(s, kind, step, b)| layout(&s, kind, step, &b[..s.len()]))
}

/// f32 inputs: moderate values, wide magnitudes (kept below 2^30 for sin/cos), and specials.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -12.0f32..12.0,
        2 => (any::<bool>(), -40i32..30, 0.0f32..1.0).prop_map(|(s, e, m)| {
            let v = (1.0 + m) * 2f32.powi(e);
            if s { -v } else { v }
        }),
        1 => prop::sample::select(vec![0.0f32, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 88.8, -104.5, 2.1213, -2.1213, 1e-40]),
    ]
}

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &{
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&seed.to_le_bytes());
            s
        }),
    );
    let v = value();
    (0..len)
        .map(|_| v.new_tree(&mut runner).unwrap().current())
        .collect()
}

fn accept_bf16(op: UnaryOp, x: f32, got: u16) -> bool {
    let want = unary_f64(op, x as f64);
    let g = bf16::from_bits(got).to_f32();
    if want.is_nan() {
        return g.is_nan();
    }
    let w16 = bf16::from_f64(want).to_f32();
    if w16.is_infinite() {
        return g == w16;
    }
    let tol = unary_tolerance(op, x as f64, want, U_BF16, 2f64.powi(-133));
    (g as f64 - want).abs() <= tol
}

#[test]
fn unary_f32_matches_oracle_on_strided_views() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let ops = prop::sample::select(UnaryOp::ALL.to_vec());
    runner
        .run(&(layout_strategy(), ops, any::<u64>()), |(l, op, seed)| {
            let x = data(l.len, seed);
            let view = Strides {
                strides: &l.strides,
                offset: l.offset,
            };
            let n: usize = l.shape.iter().product();
            let dx = g.htod(&x).unwrap();
            let mut dy = g.alloc_zeros::<f32>(n).unwrap();
            ew::unary_f32(g, op, &dx, &l.shape, view, &mut dy).unwrap();
            let got = g.dtoh(&dy).unwrap();
            // The oracle's inputs, in output order, through the same strided walk.
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let inputs = unary_strided_f64(UnaryOp::Neg, &x64, &l.shape, &l.strides, l.offset);
            prop_assert_eq!(inputs.len(), n);
            for i in 0..n {
                let xi = -inputs[i] as f32;
                prop_assert!(
                    accept_f32(op, xi, got[i]),
                    "{:?} {:?}: element {}: x {:e}: gpu {:e}, oracle {:e}",
                    op,
                    l,
                    i,
                    xi,
                    got[i],
                    unary_f64(op, xi as f64)
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn unary_bf16_matches_oracle_on_strided_views() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let ops = prop::sample::select(UnaryOp::ALL.to_vec());
    runner
        .run(&(layout_strategy(), ops, any::<u64>()), |(l, op, seed)| {
            let x: Vec<u16> = data(l.len, seed)
                .iter()
                .map(|&v| bf16::from_f32(v).to_bits())
                .collect();
            let view = Strides {
                strides: &l.strides,
                offset: l.offset,
            };
            let n: usize = l.shape.iter().product();
            let dx = g.htod(&x).unwrap();
            let mut dy = g.alloc_zeros::<u16>(n).unwrap();
            ew::unary_bf16(g, op, &dx, &l.shape, view, &mut dy).unwrap();
            let got = g.dtoh(&dy).unwrap();
            let x64: Vec<f64> = x.iter().map(|&b| bf16::from_bits(b).to_f64()).collect();
            let inputs = unary_strided_f64(UnaryOp::Neg, &x64, &l.shape, &l.strides, l.offset);
            for i in 0..n {
                let xi = -inputs[i] as f32;
                prop_assert!(
                    accept_bf16(op, xi, got[i]),
                    "{:?} {:?}: element {}: x {:e}: gpu {:e}, oracle {:e}",
                    op,
                    l,
                    i,
                    xi,
                    bf16::from_bits(got[i]).to_f32(),
                    unary_f64(op, xi as f64)
                );
            }
            Ok(())
        })
        .unwrap();
}

/// A broadcast pair: the output shape and, per operand, which dims are broadcast (stride 0) and
/// the layout kind of the rest.
fn binary_case() -> impl Strategy<Value = (Layout, Layout)> {
    (
        shape(),
        prop::collection::vec(any::<bool>(), 5),
        prop::collection::vec(any::<bool>(), 5),
        0u8..4,
        0u8..4,
        1usize..3,
    )
        .prop_map(|(s, ba, bb, ka, kb, step)| {
            let r = s.len();
            let mk = |b: &[bool], k: u8| {
                if b.iter().take(r).any(|&v| v) {
                    layout(&s, 4, 1, &b[..r])
                } else {
                    layout(&s, k, step, &b[..r])
                }
            };
            (mk(&ba, ka), mk(&bb, kb))
        })
}

fn same_f32(got: f32, want: f32) -> bool {
    (got.is_nan() && want.is_nan()) || got.to_bits() == want.to_bits()
}

#[test]
fn binary_f32_is_exact_with_broadcasting() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let ops = prop::sample::select(BinaryOp::ALL.to_vec());
    runner
        .run(
            &(binary_case(), ops, any::<u64>()),
            |((la, lb), op, seed)| {
                let a = data(la.len, seed);
                let b = data(lb.len, seed ^ 0x5555);
                let shape = la.shape.clone();
                let n: usize = shape.iter().product();
                let (da, db) = (g.htod(&a).unwrap(), g.htod(&b).unwrap());
                let mut dy = g.alloc_zeros::<f32>(n).unwrap();
                ew::binary_f32(
                    g,
                    op,
                    &da,
                    Strides {
                        strides: &la.strides,
                        offset: la.offset,
                    },
                    &db,
                    Strides {
                        strides: &lb.strides,
                        offset: lb.offset,
                    },
                    &shape,
                    &mut dy,
                )
                .unwrap();
                let got = g.dtoh(&dy).unwrap();
                let (a64, b64): (Vec<f64>, Vec<f64>) = (
                    a.iter().map(|&v| v as f64).collect(),
                    b.iter().map(|&v| v as f64).collect(),
                );
                let want = binary_strided_f64(
                    op,
                    View {
                        data: &a64,
                        strides: &la.strides,
                        offset: la.offset,
                    },
                    View {
                        data: &b64,
                        strides: &lb.strides,
                        offset: lb.offset,
                    },
                    &shape,
                );
                for i in 0..n {
                    prop_assert!(
                        same_f32(got[i], want[i] as f32),
                        "{:?} a {:?} b {:?}: element {}: gpu {:e} ({:#010x}), want {:e}",
                        op,
                        la,
                        lb,
                        i,
                        got[i],
                        got[i].to_bits(),
                        want[i] as f32
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn binary_bf16_is_exact_with_broadcasting() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let ops = prop::sample::select(BinaryOp::ALL.to_vec());
    runner
        .run(
            &(binary_case(), ops, any::<u64>()),
            |((la, lb), op, seed)| {
                let to16 = |v: Vec<f32>| -> Vec<u16> {
                    v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect()
                };
                let a = to16(data(la.len, seed));
                let b = to16(data(lb.len, seed ^ 0xAAAA));
                let shape = la.shape.clone();
                let n: usize = shape.iter().product();
                let (da, db) = (g.htod(&a).unwrap(), g.htod(&b).unwrap());
                let mut dy = g.alloc_zeros::<u16>(n).unwrap();
                ew::binary_bf16(
                    g,
                    op,
                    &da,
                    Strides {
                        strides: &la.strides,
                        offset: la.offset,
                    },
                    &db,
                    Strides {
                        strides: &lb.strides,
                        offset: lb.offset,
                    },
                    &shape,
                    &mut dy,
                )
                .unwrap();
                let got = g.dtoh(&dy).unwrap();
                let f = |v: &[u16]| -> Vec<f64> {
                    v.iter().map(|&x| bf16::from_bits(x).to_f64()).collect()
                };
                let (a64, b64) = (f(&a), f(&b));
                let want = binary_strided_f64(
                    op,
                    View {
                        data: &a64,
                        strides: &la.strides,
                        offset: la.offset,
                    },
                    View {
                        data: &b64,
                        strides: &lb.strides,
                        offset: lb.offset,
                    },
                    &shape,
                );
                for i in 0..n {
                    let w = bf16::from_f32(want[i] as f32);
                    let gv = bf16::from_bits(got[i]);
                    prop_assert!(
                        (gv.is_nan() && w.is_nan()) || got[i] == w.to_bits(),
                        "{:?} a {:?} b {:?}: element {}: gpu {:#06x}, want {:#06x}",
                        op,
                        la,
                        lb,
                        i,
                        got[i],
                        w.to_bits()
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn maximum_minimum_nan_and_zero_rules() {
    let Some(g) = gpu() else { return };
    let a = [f32::NAN, 1.0, 0.0, -0.0, 2.0, f32::NEG_INFINITY];
    let b = [1.0, f32::NAN, -0.0, 0.0, 2.0, f32::INFINITY];
    let (da, db) = (g.htod(&a).unwrap(), g.htod(&b).unwrap());
    let v = Strides {
        strides: &[1],
        offset: 0,
    };
    for op in [BinaryOp::Maximum, BinaryOp::Minimum] {
        let mut dy = g.alloc_zeros::<f32>(6).unwrap();
        ew::binary_f32(g, op, &da, v, &db, v, &[6], &mut dy).unwrap();
        let got = g.dtoh(&dy).unwrap();
        for i in 0..6 {
            let want = binary_f64(op, a[i] as f64, b[i] as f64) as f32;
            assert!(
                same_f32(got[i], want),
                "{op:?}({}, {}): gpu {} want {}",
                a[i],
                b[i],
                got[i],
                want
            );
        }
    }
}

#[test]
fn bad_views_are_errors() {
    let Some(g) = gpu() else { return };
    let x = g.htod(&[1.0f32; 6]).unwrap();
    let mut y = g.alloc_zeros::<f32>(6).unwrap();
    // A view reaching past the buffer, a view below its start, a wrong output length, rank 9.
    let e = ew::unary_f32(
        g,
        UnaryOp::Exp,
        &x,
        &[6],
        Strides {
            strides: &[2],
            offset: 0,
        },
        &mut y,
    );
    assert!(e.is_err());
    let e = ew::unary_f32(
        g,
        UnaryOp::Exp,
        &x,
        &[6],
        Strides {
            strides: &[-1],
            offset: 4,
        },
        &mut y,
    );
    assert!(e.is_err());
    let e = ew::unary_f32(
        g,
        UnaryOp::Exp,
        &x,
        &[5],
        Strides {
            strides: &[1],
            offset: 0,
        },
        &mut y,
    );
    assert!(e.is_err());
    let shape9 = [1usize; 9];
    let e = ew::unary_f32(
        g,
        UnaryOp::Exp,
        &x,
        &shape9,
        Strides {
            strides: &[0; 9],
            offset: 0,
        },
        &mut y,
    );
    assert!(e.unwrap_err().to_string().contains("rank"));
}
