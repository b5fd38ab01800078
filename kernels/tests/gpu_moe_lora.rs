//! GPU MoE-LoRA dispatch and noisy top-k gate (forward and backward) against the CPU oracle.
//!
//! The GPU sums in f32 in a different (fixed) order than the f64 oracle, so every output is
//! compared within an f32 accumulation bound: (chain length + 8) * 2^-23 times the same quantity
//! computed by the oracle on the absolute values of the inputs. Outputs start NaN-filled, so an
//! entry the kernels forget to write fails; every case also runs twice and must give the same bits
//! (no atomics anywhere). Without a usable GPU every test prints "skipped: <reason>" and passes,
//! unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::launch::GpuError;
use brainstacks_kernels::moe_lora::cpu::{self as oracle, Dims, GateDims};
use brainstacks_kernels::moe_lora::cuda::{
    DeviceRouting, DispatchGrads, GateOutputs, dispatch_backward_f32, dispatch_forward_f32,
    gate_backward_f32, gate_forward_f32,
};
use brainstacks_kernels::moe_lora::{group_by_expert, noise_seed};
use brainstacks_kernels::philox::cpu as philox;
use brainstacks_kernels::topk::cpu as topk;
use common::gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 32;

/// A small xorshift stream for bulk test data (proptest picks the seed and the shapes).
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// (T, k, E, d_in, r, d_out): no tokens, one, odd counts; k <= E <= 64; r up to 64; odd widths
/// around the 32-column chunk and the 64-output tile.
fn shape() -> impl Strategy<Value = Dims> {
    (1usize..=64, 1usize..=64)
        .prop_flat_map(|(experts, r)| {
            (
                prop_oneof![Just(0usize), Just(1), 1usize..80],
                1usize..=experts.min(8),
                prop_oneof![Just(experts.min(16)), Just(experts.min(2))],
                Just(experts),
                prop_oneof![1usize..140, Just(32), Just(33)],
                Just(r),
                prop_oneof![1usize..140, Just(64), Just(65)],
            )
        })
        .prop_map(|(t, k, k_alt, experts, d_in, r, d_out)| Dims {
            t,
            // mostly small k, sometimes k = min(E, 16): every expert for every token when E <= 16
            // (the cap keeps the f64 oracle quick)
            k: if t % 5 == 4 { k_alt } else { k },
            experts,
            d_in,
            r,
            d_out,
        })
}

fn vals(rng: &mut Xs, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32()).collect()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn abs(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| (x as f64).abs()).collect()
}

fn within(
    what: &str,
    got: &[f32],
    want: &[f64],
    bound: &[f64],
    chain: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}: length", what);
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let tol = (chain + 8) as f64 * f32::EPSILON as f64 * b + 1e-30;
        prop_assert!(
            (g as f64 - w).abs() <= tol,
            "{}[{}]: gpu {} oracle {} tol {}",
            what,
            i,
            g,
            w,
            tol
        );
    }
    Ok(())
}

/// Random routing: every token `k` distinct experts, gates positive and summing to about 1.
fn routing(rng: &mut Xs, d: &Dims) -> (Vec<i64>, Vec<f32>) {
    let mut idx = Vec::with_capacity(d.t * d.k);
    let mut g = Vec::with_capacity(d.t * d.k);
    for _ in 0..d.t {
        let mut pool: Vec<i64> = (0..d.experts as i64).collect();
        for j in 0..d.k {
            let p = j + rng.below(d.experts - j);
            pool.swap(j, p);
        }
        idx.extend_from_slice(&pool[..d.k]);
        let w: Vec<f32> = (0..d.k).map(|_| 0.1 + rng.f32().abs()).collect();
        let sum: f32 = w.iter().sum();
        g.extend(w.iter().map(|v| v / sum));
    }
    (idx, g)
}

struct Run {
    out: Vec<f32>,
    dx: Vec<f32>,
    dg: Vec<f32>,
    da: Vec<f32>,
    db: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn run_gpu(
    d: &Dims,
    x: &[f32],
    idx: &[i64],
    g: &[f32],
    a: &[f32],
    b: &[f32],
    s: f32,
    dy: &[f32],
) -> Run {
    let gp = gpu().expect("checked by the caller");
    let routing = DeviceRouting::new(gp, idx, d.k, d.experts).unwrap();
    let (dx_, dg_, da_, db_, ddy) = (
        gp.htod(x).unwrap(),
        gp.htod(g).unwrap(),
        gp.htod(a).unwrap(),
        gp.htod(b).unwrap(),
        gp.htod(dy).unwrap(),
    );
    let nan = |n: usize| gp.htod(&vec![f32::NAN; n]).unwrap();
    let mut mid = nan(d.t * d.k * d.r);
    let mut out = nan(d.t * d.d_out);
    dispatch_forward_f32(
        gp, &routing, &dx_, &dg_, &da_, &db_, s, d, &mut mid, &mut out,
    )
    .unwrap();
    let (mut gx, mut gg, mut ga, mut gb) = (
        nan(d.t * d.d_in),
        nan(d.t * d.k),
        nan(d.experts * d.r * d.d_in),
        nan(d.experts * d.d_out * d.r),
    );
    let grads = DispatchGrads {
        dx: &mut gx,
        dg: &mut gg,
        da: &mut ga,
        db: &mut gb,
    };
    dispatch_backward_f32(
        gp, &routing, &dx_, &dg_, &da_, &db_, s, d, &mid, &ddy, grads,
    )
    .unwrap();
    Run {
        out: gp.dtoh(&out).unwrap(),
        dx: gp.dtoh(&gx).unwrap(),
        dg: gp.dtoh(&gg).unwrap(),
        da: gp.dtoh(&ga).unwrap(),
        db: gp.dtoh(&gb).unwrap(),
    }
}

fn case(d: Dims, seed: u64) -> Result<(), TestCaseError> {
    let mut rng = Xs(seed | 1);
    let x = vals(&mut rng, d.t * d.d_in);
    let a = vals(&mut rng, d.experts * d.r * d.d_in);
    let b = vals(&mut rng, d.experts * d.d_out * d.r);
    let dy = vals(&mut rng, d.t * d.d_out);
    let (idx, g) = routing(&mut rng, &d);
    let s = 16.0f32 / (d.r as f32).sqrt();

    let got = run_gpu(&d, &x, &idx, &g, &a, &b, s, &dy);
    let again = run_gpu(&d, &x, &idx, &g, &a, &b, s, &dy);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (what, p, q) in [
        ("out", &got.out, &again.out),
        ("dx", &got.dx, &again.dx),
        ("dg", &got.dg, &again.dg),
        ("dA", &got.da, &again.da),
        ("dB", &got.db, &again.db),
    ] {
        prop_assert_eq!(bits(p), bits(q), "{} differs between two runs", what);
    }

    let sw = s as f64;
    let want = oracle::forward(&wide(&x), &idx, &wide(&g), &wide(&a), &wide(&b), sw, &d);
    let bound = oracle::forward(&abs(&x), &idx, &abs(&g), &abs(&a), &abs(&b), sw, &d);
    within("out", &got.out, &want, &bound, d.d_in + d.k * d.r)?;
    let (wx, wg, wa, wb) = oracle::backward(
        &wide(&x),
        &idx,
        &wide(&g),
        &wide(&a),
        &wide(&b),
        sw,
        &wide(&dy),
        &d,
    );
    let (bx, bg, ba, bb) = oracle::backward(
        &abs(&x),
        &idx,
        &abs(&g),
        &abs(&a),
        &abs(&b),
        sw,
        &abs(&dy),
        &d,
    );
    within("dx", &got.dx, &wx, &bx, d.d_out + d.k * d.r)?;
    within("dg", &got.dg, &wg, &bg, d.d_out + d.d_in + d.r)?;
    within("dA", &got.da, &wa, &ba, d.d_out + d.t)?;
    within("dB", &got.db, &wb, &bb, d.d_in + d.t)?;
    Ok(())
}

#[test]
fn dispatch_matches_cpu() {
    let Some(_) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&(shape(), any::<u64>()), |(d, seed)| case(d, seed))
        .unwrap();
}

/// The paper's shape at a small token count, and one expert taking every token (several gather
/// tiles and outer chunks of one expert).
#[test]
fn dispatch_fixed_shapes() {
    let Some(_) = gpu() else { return };
    let paper = Dims {
        t: 301,
        k: 2,
        experts: 4,
        d_in: 256,
        r: 16,
        d_out: 96,
    };
    case(paper, 7).unwrap();
    let one = Dims {
        t: 300,
        k: 1,
        experts: 1,
        d_in: 45,
        r: 64,
        d_out: 33,
    };
    case(one, 8).unwrap();
    let all = Dims {
        t: 67,
        k: 64,
        experts: 64,
        d_in: 5,
        r: 3,
        d_out: 7,
    };
    case(all, 9).unwrap();
    // enough slots (34002) for the launcher to keep the largest gather tile (128 tokens)
    let many = Dims {
        t: 17_001,
        k: 2,
        experts: 4,
        d_in: 40,
        r: 16,
        d_out: 24,
    };
    case(many, 10).unwrap();
}

#[test]
fn bad_routing_and_shapes_are_errors() {
    let Some(gp) = gpu() else { return };
    let invalid = |r: Result<DeviceRouting, GpuError>| matches!(r, Err(GpuError::Invalid { .. }));
    assert!(invalid(DeviceRouting::new(gp, &[0, 4], 2, 4))); // expert 4 of 4
    assert!(invalid(DeviceRouting::new(gp, &[1, 1], 2, 4))); // twice
    assert!(invalid(DeviceRouting::new(gp, &[0, 1, 2], 2, 4))); // not [T, k]
    assert!(invalid(DeviceRouting::new(gp, &[0], 2, 1))); // k > E
    assert!(invalid(DeviceRouting::new(gp, &[0], 1, 65))); // E > 64
    let routing = DeviceRouting::new(gp, &[0, 1], 1, 2).unwrap();
    let d = Dims {
        t: 2,
        k: 1,
        experts: 2,
        d_in: 3,
        r: 2,
        d_out: 4,
    };
    let z = |n: usize| gp.alloc_zeros::<f32>(n).unwrap();
    let (x, g, a, b) = (z(6), z(2), z(12), z(16));
    let (mut mid, mut out) = (z(4), z(8));
    dispatch_forward_f32(gp, &routing, &x, &g, &a, &b, 1.0, &d, &mut mid, &mut out).unwrap();
    let short = z(5);
    let e = dispatch_forward_f32(
        gp, &routing, &short, &g, &a, &b, 1.0, &d, &mut mid, &mut out,
    );
    assert!(matches!(e, Err(GpuError::Invalid { .. })));
    let wide_rank = Dims { r: 65, ..d };
    let e = dispatch_forward_f32(
        gp, &routing, &x, &g, &a, &b, 1.0, &wide_rank, &mut mid, &mut out,
    );
    assert!(matches!(e, Err(GpuError::Invalid { .. })));
    let other = Dims { t: 3, ..d };
    let e = dispatch_forward_f32(
        gp, &routing, &x, &g, &a, &b, 1.0, &other, &mut mid, &mut out,
    );
    assert!(matches!(e, Err(GpuError::Invalid { .. })));
}

// ---------------------------------------------------------------- gate

/// (T, E, k, d_in): no tokens, odd counts, E up to 64 (tm = 16), k up to E.
fn gate_shape() -> impl Strategy<Value = GateDims> {
    (1usize..=64)
        .prop_flat_map(|experts| {
            (
                prop_oneof![Just(0usize), Just(1), 1usize..300],
                Just(experts),
                prop_oneof![1usize..=experts.min(4), Just(experts)],
                prop_oneof![1usize..140, Just(32), Just(2048)],
            )
        })
        .prop_map(|(t, experts, k, d_in)| GateDims {
            t,
            experts,
            k,
            d_in,
        })
}

struct GateRun {
    logits: Vec<f32>,
    nscale: Vec<f32>,
    idx: Vec<i64>,
    gates: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
}

fn run_gate(
    d: &GateDims,
    x: &[f32],
    w: &[f32],
    key: Option<u64>,
    dgates: &[f32],
    extra: Option<&[f32]>,
) -> GateRun {
    let gp = gpu().expect("checked by the caller");
    let (dx_, dw_) = (gp.htod(x).unwrap(), gp.htod(w).unwrap());
    let nan = |n: usize| gp.htod(&vec![f32::NAN; n]).unwrap();
    let (mut logits, mut nscale, mut gates) =
        (nan(d.t * d.experts), nan(d.t * d.experts), nan(d.t * d.k));
    let mut idx = gp.htod(&vec![-1i64; d.t * d.k]).unwrap();
    let out = GateOutputs {
        logits: &mut logits,
        nscale: &mut nscale,
        idx: &mut idx,
        gates: &mut gates,
    };
    gate_forward_f32(gp, &dx_, &dw_, key, d, out).unwrap();
    let ddg = gp.htod(dgates).unwrap();
    let dex = extra.map(|e| gp.htod(e).unwrap());
    let (mut gx, mut gw) = (nan(d.t * d.d_in), nan(2 * d.experts * d.d_in));
    gate_backward_f32(
        gp,
        &dx_,
        &dw_,
        &idx,
        &gates,
        &nscale,
        &ddg,
        dex.as_ref(),
        d,
        &mut gx,
        &mut gw,
    )
    .unwrap();
    GateRun {
        logits: gp.dtoh(&logits).unwrap(),
        nscale: gp.dtoh(&nscale).unwrap(),
        idx: gp.dtoh(&idx).unwrap(),
        gates: gp.dtoh(&gates).unwrap(),
        dx: gp.dtoh(&gx).unwrap(),
        dw: gp.dtoh(&gw).unwrap(),
    }
}

fn gate_case(d: GateDims, seed: u64, noise: bool, with_extra: bool) -> Result<(), TestCaseError> {
    let mut rng = Xs(seed | 1);
    let (e_n, n) = (d.experts, d.d_in);
    let x = vals(&mut rng, d.t * n);
    let w = vals(&mut rng, 2 * e_n * n);
    let dgates = vals(&mut rng, d.t * d.k);
    let extra = with_extra.then(|| vals(&mut rng, d.t * e_n));
    let key = noise.then(|| noise_seed(seed, 3, 5));
    let got = run_gate(&d, &x, &w, key, &dgates, extra.as_deref());
    let again = run_gate(&d, &x, &w, key, &dgates, extra.as_deref());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    prop_assert_eq!(bits(&got.logits), bits(&again.logits));
    prop_assert_eq!(&got.idx, &again.idx);
    prop_assert_eq!(bits(&got.gates), bits(&again.gates));
    prop_assert_eq!(bits(&got.dx), bits(&again.dx));
    prop_assert_eq!(bits(&got.dw), bits(&again.dw));

    // eps: the CPU Philox stream of the same key (GateNoise::sample draws exactly these)
    let mut eps = vec![0f32; d.t * e_n];
    if let Some(key) = key {
        philox::fill_normal_f32(key, 0, 0.0, 1.0, &mut eps);
    }
    let want = oracle::gate_forward(&wide(&x), &wide(&w), key.map(|_| wide(&eps)).as_deref(), &d);
    let u = f32::EPSILON as f64;
    for t in 0..d.t {
        for e in 0..e_n {
            let dot_abs = |q: usize| {
                (0..n)
                    .map(|p| (w[q * n + p] * x[t * n + p]).abs() as f64)
                    .sum::<f64>()
            };
            let (ca, za, ep) = (dot_abs(e), dot_abs(e_n + e), eps[t * e_n + e].abs() as f64);
            let i = t * e_n + e;
            // dot products in f32; softplus / sigmoid from ex2 / lg2 approximations (a few ulp)
            let tol = (n + 8) as f64 * u * (ca + za * ep) + 16.0 * u * (want.logits[i].abs() + ep);
            prop_assert!(
                (got.logits[i] as f64 - want.logits[i]).abs() <= tol,
                "logit [{}, {}]: gpu {} oracle {} tol {}",
                t,
                e,
                got.logits[i],
                want.logits[i],
                tol
            );
            let tn = 16.0 * u * want.nscale[i].abs() + (n + 8) as f64 * u * za * ep;
            prop_assert!(
                (got.nscale[i] as f64 - want.nscale[i]).abs() <= tn,
                "nscale [{}, {}]: gpu {} oracle {}",
                t,
                e,
                got.nscale[i],
                want.nscale[i]
            );
        }
    }
    // selection: exactly topk of the GPU's own logits; gates: softmax of those (exp's argument
    // v_j - v_0 is rounded, a relative error of |v_j - v_0| u in the gate). A gate below f32's
    // smallest normal may flush to 0 (ex2.approx.ftz): logits 144 apart give exp(-144) = 4e-63,
    // which ptxsim showed the relative bound alone rejects.
    let flush = f32::MIN_POSITIVE as f64;
    let gl = wide(&got.logits);
    let (kept, sel) = topk::topk(&gl, d.t, e_n, d.k);
    prop_assert_eq!(&got.idx, &sel);
    for t in 0..d.t {
        let row = &kept[t * d.k..(t + 1) * d.k];
        let ex: Vec<f64> = row.iter().map(|v| (v - row[0]).exp()).collect();
        let sum: f64 = ex.iter().sum();
        for j in 0..d.k {
            let (g, want) = (got.gates[t * d.k + j] as f64, ex[j] / sum);
            prop_assert!(
                (g - want).abs() <= (d.k as f64 + 16.0 + (row[j] - row[0]).abs()) * 8.0 * u * want + flush,
                "gate [{}, {}]: gpu {} want {}",
                t,
                j,
                g,
                want
            );
        }
    }
    // backward on the GPU's own forward outputs
    let (wx, ww) = oracle::gate_backward(
        &wide(&x),
        &wide(&w),
        &got.idx,
        &wide(&got.gates),
        &wide(&got.nscale),
        &wide(&dgates),
        extra.as_ref().map(|e| wide(e)).as_deref(),
        &d,
    );
    // bounds: |dlogit| <= |extra| + g (|dg| + sum |g dg|), then the same sums over absolute values
    let mut bx = vec![0.0; d.t * n];
    let mut bw = vec![0.0; 2 * e_n * n];
    for t in 0..d.t {
        let g = &got.gates[t * d.k..(t + 1) * d.k];
        let dg = &dgates[t * d.k..(t + 1) * d.k];
        let dot: f64 = g.iter().zip(dg).map(|(a, b)| (a * b).abs() as f64).sum();
        let mut dl: Vec<f64> = (0..e_n)
            .map(|e| extra.as_ref().map_or(0.0, |x| x[t * e_n + e].abs() as f64))
            .collect();
        for j in 0..d.k {
            dl[got.idx[t * d.k + j] as usize] += g[j].abs() as f64 * (dg[j].abs() as f64 + dot);
        }
        for e in 0..e_n {
            let dz = dl[e] * (got.nscale[t * e_n + e].abs() as f64);
            for p in 0..n {
                bx[t * n + p] +=
                    dl[e] * w[e * n + p].abs() as f64 + dz * w[(e_n + e) * n + p].abs() as f64;
                bw[e * n + p] += dl[e] * x[t * n + p].abs() as f64;
                bw[(e_n + e) * n + p] += dz * x[t * n + p].abs() as f64;
            }
        }
    }
    within("gate dx", &got.dx, &wx, &bx, 2 * e_n + d.k)?;
    within("gate dw", &got.dw, &ww, &bw, d.t + d.k)?;
    Ok(())
}

#[test]
fn gate_matches_cpu() {
    let Some(_) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(gate_shape(), any::<u64>(), any::<bool>(), any::<bool>()),
            |(d, seed, noise, extra)| gate_case(d, seed, noise, extra),
        )
        .unwrap();
}

/// The paper's gate (E = 4, top-2) with noise, and with every router row equal and no noise
/// (all logits tie: the lowest experts must win, in order).
#[test]
fn gate_fixed_shapes_and_ties() {
    let Some(gp) = gpu() else { return };
    gate_case(
        GateDims {
            t: 257,
            experts: 4,
            k: 2,
            d_in: 2048,
        },
        11,
        true,
        true,
    )
    .unwrap();
    let d = GateDims {
        t: 5,
        experts: 6,
        k: 3,
        d_in: 7,
    };
    let x = vec![0.5f32; 35];
    let w = vec![0.25f32; 84];
    let (mut logits, mut nscale, mut gates) = (
        gp.alloc_zeros::<f32>(30).unwrap(),
        gp.alloc_zeros::<f32>(30).unwrap(),
        gp.alloc_zeros::<f32>(15).unwrap(),
    );
    let mut idx = gp.alloc_zeros::<i64>(15).unwrap();
    let out = GateOutputs {
        logits: &mut logits,
        nscale: &mut nscale,
        idx: &mut idx,
        gates: &mut gates,
    };
    gate_forward_f32(
        gp,
        &gp.htod(&x).unwrap(),
        &gp.htod(&w).unwrap(),
        None,
        &d,
        out,
    )
    .unwrap();
    assert_eq!(gp.dtoh(&idx).unwrap(), [0i64, 1, 2].repeat(5));
    assert_eq!(gp.dtoh(&nscale).unwrap(), vec![0f32; 30]);
    for g in gp.dtoh(&gates).unwrap() {
        assert!((g - 1.0 / 3.0).abs() < 1e-6, "{g}");
    }
    // k > E and E > 64 are errors
    let bad = GateDims { k: 7, ..d };
    let out = GateOutputs {
        logits: &mut logits,
        nscale: &mut nscale,
        idx: &mut idx,
        gates: &mut gates,
    };
    let e = gate_forward_f32(
        gp,
        &gp.htod(&x).unwrap(),
        &gp.htod(&w).unwrap(),
        None,
        &bad,
        out,
    );
    assert!(matches!(e, Err(GpuError::Invalid { .. })));
}

// ---------------------------------------------------------------- device grouping

/// `DeviceRouting::from_device` groups exactly like `group_by_expert` (T up to 3000, so a thread
/// of the 128-thread kernel takes many slots), and a dispatch through either routing gives the
/// same bits.
#[test]
fn device_grouping_matches_host() {
    let Some(gp) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&(shape(), any::<u64>(), 0usize..3000), |(d, seed, t)| {
            let d = Dims { t, ..d };
            let mut rng = Xs(seed | 1);
            let (idx, g) = routing(&mut rng, &d);
            let host = DeviceRouting::new(gp, &idx, d.k, d.experts).unwrap();
            let dev =
                DeviceRouting::from_device(gp, &gp.htod(&idx).unwrap(), d.k, d.experts).unwrap();
            dev.validate(gp).unwrap();
            let want = group_by_expert(&idx, d.k, d.experts).unwrap();
            prop_assert_eq!(&dev.groups(gp).unwrap(), &want);
            prop_assert_eq!(&host.groups(gp).unwrap(), &want);
            if t <= 300 {
                let x = vals(&mut rng, d.t * d.d_in);
                let a = vals(&mut rng, d.experts * d.r * d.d_in);
                let b = vals(&mut rng, d.experts * d.d_out * d.r);
                let (dx_, dg_, da_, db_) = (
                    gp.htod(&x).unwrap(),
                    gp.htod(&g).unwrap(),
                    gp.htod(&a).unwrap(),
                    gp.htod(&b).unwrap(),
                );
                let mut outs = Vec::new();
                for r in [&host, &dev] {
                    let mut mid = gp.alloc_zeros::<f32>(d.t * d.k * d.r).unwrap();
                    let mut out = gp.alloc_zeros::<f32>(d.t * d.d_out).unwrap();
                    dispatch_forward_f32(
                        gp, r, &dx_, &dg_, &da_, &db_, 2.0, &d, &mut mid, &mut out,
                    )
                    .unwrap();
                    outs.push(
                        gp.dtoh(&out)
                            .unwrap()
                            .iter()
                            .map(|v| v.to_bits())
                            .collect::<Vec<_>>(),
                    );
                }
                prop_assert_eq!(&outs[0], &outs[1]);
            }
            Ok(())
        })
        .unwrap();
}

/// Bad tables on the device are recorded, not followed out of bounds.
#[test]
fn device_grouping_flags_bad_tables() {
    let Some(gp) = gpu() else { return };
    for bad in [vec![0i64, 4, 1, 2], vec![0, -1, 1, 2], vec![3, 3, 1, 2]] {
        let r = DeviceRouting::from_device(gp, &gp.htod(&bad).unwrap(), 2, 4).unwrap();
        assert!(
            matches!(r.validate(gp), Err(GpuError::Invalid { .. })),
            "{bad:?}"
        );
        // the bad entry is counted under expert 0: still a permutation of the slots
        let g = r.groups(gp).unwrap();
        let mut s = g.slots.clone();
        s.sort();
        assert_eq!(s, vec![0, 1, 2, 3]);
    }
    let ok = DeviceRouting::from_device(gp, &gp.htod(&[1i64, 0]).unwrap(), 2, 4).unwrap();
    ok.validate(gp).unwrap();
    let odd = DeviceRouting::from_device(gp, &gp.htod(&[1i64, 0, 2]).unwrap(), 2, 4);
    assert!(matches!(odd, Err(GpuError::Invalid { .. })));
}
