//! `Tensor::moe_lora` and `Tensor::moe_lora_backward` on CUDA tensors against the same ops on the
//! CPU: random shapes (no tokens, one, odd counts; 1 <= k <= E <= 64; rank 1..=64), strided and
//! offset views of `x`, f32 and bf16; the zero-B exact no-op; determinism; and the errors of
//! operands the CUDA path does not take. Also the fused noisy top-k gate (`cuda::moe_gate`) against
//! the kernels' f64 oracle, with its noise from the CPU Philox stream of the same key.
//!
//! Without a usable GPU each test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`
//! (then a missing GPU fails), as the other GPU tests do.
//!
//! Tolerance: both sides compute in f32, in different summation orders, and each stays within
//! `(n + 8) * 2^-23 * m` of the exact value, where `n` bounds the length of the chain of sums an
//! output goes through and `m` is the same output computed (in f64) from the absolute values of
//! the inputs. GPU and CPU may therefore differ by twice that. bf16 results may further differ by
//! the final rounding: 2 bf16 ulps of the CPU value.
#![cfg(feature = "cuda")]

use brainstacks_kernels::moe_lora::cpu::{self as oracle, GateDims};
use brainstacks_kernels::moe_lora::noise_seed;
use brainstacks_tensor::cuda::{moe_gate, moe_gate_backward};
use brainstacks_tensor::{DType, Device, Error, Rng, Tensor};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

mod common;

fn gpu() -> Option<Device> {
    common::gpu("gpu_moe_lora")
}

use common::runner;

/// A small xorshift stream for bulk test data (proptest picks the seed and the shapes).
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    fn val(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.val()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Shapes of one case: `t` tokens, top-`k` of `e` experts, rank `r`.
#[derive(Clone, Copy, Debug)]
struct Shape {
    t: usize,
    k: usize,
    e: usize,
    d_in: usize,
    r: usize,
    d_out: usize,
}

/// No tokens, one, odd counts; E in 1..=64 and k <= E (mostly small, sometimes every expert for
/// E <= 16); r in 1..=64; widths around the kernels' 32-column chunks and 64-output tiles.
fn shapes() -> impl Strategy<Value = Shape> {
    (1usize..=64, 1usize..=64)
        .prop_flat_map(|(e, r)| {
            (
                prop_oneof![Just(0usize), Just(1), (0usize..40).prop_map(|v| 2 * v + 1)],
                1usize..=e.min(8),
                any::<bool>(),
                Just(e),
                prop_oneof![1usize..100, Just(32), Just(33)],
                Just(r),
                prop_oneof![1usize..100, Just(64), Just(65)],
            )
        })
        .prop_map(|(t, k, all, e, d_in, r, d_out)| Shape { t, k: if all && e <= 16 { e } else { k }, e, d_in, r, d_out })
}

/// `k` distinct experts per token.
fn routing(rng: &mut Xs, s: &Shape) -> Vec<i64> {
    let mut idx = Vec::with_capacity(s.t * s.k);
    for _ in 0..s.t {
        let mut row: Vec<i64> = Vec::with_capacity(s.k);
        while row.len() < s.k {
            let c = rng.below(s.e) as i64;
            if !row.contains(&c) {
                row.push(c);
            }
        }
        idx.extend(row);
    }
    idx
}

/// The operands of one case on the CPU (contiguous, `dtype`), plus the output gradient.
struct Case {
    s: Shape,
    x: Vec<f32>,
    idx: Vec<i64>,
    g: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
    scale: f64,
}

impl Case {
    fn new(s: Shape, seed: u64) -> Self {
        let mut rng = Xs(seed | 1);
        let idx = routing(&mut rng, &s);
        Case {
            x: rng.vals(s.t * s.d_in),
            g: rng.vals(s.t * s.k),
            a: rng.vals(s.e * s.r * s.d_in),
            b: rng.vals(s.e * s.d_out * s.r),
            dy: rng.vals(s.t * s.d_out),
            idx,
            scale: 16.0 / (s.r as f64).sqrt(),
            s,
        }
    }
}

fn cpu_tensor(v: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// `x` (`[T, d_in]`) on `device` as a view: mode 0 contiguous, 1 the transpose of a stored
/// transpose (strided), 2 a narrow of wider rows (offset and row gaps).
fn x_view(v: &[f32], t: usize, d_in: usize, dtype: DType, mode: u8, device: &Device) -> Tensor {
    let up = |vals: Vec<f32>, shape: &[usize]| cpu_tensor(&vals, shape, dtype).to_device(device).unwrap();
    match mode {
        1 => {
            let mut stored = vec![0f32; v.len()];
            for i in 0..t {
                for j in 0..d_in {
                    stored[j * t + i] = v[i * d_in + j];
                }
            }
            up(stored, &[d_in, t]).t().unwrap()
        }
        2 => {
            let w = d_in + 3;
            let mut wide = vec![7f32; t * w];
            for i in 0..t {
                wide[i * w + 2..i * w + 2 + d_in].copy_from_slice(&v[i * d_in..(i + 1) * d_in]);
            }
            up(wide, &[t, w]).narrow(1, 2, d_in).unwrap()
        }
        _ => up(v.to_vec(), &[t, d_in]),
    }
}

/// Tensors of a case: `(x, idx, gates, a, b, dy)` on `device` in `dtype`, `x` as view `mode`.
type Operands = (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor);

fn operands(c: &Case, dtype: DType, mode: u8, device: &Device) -> Operands {
    let s = &c.s;
    let on = |v: &[f32], shape: &[usize]| cpu_tensor(v, shape, dtype).to_device(device).unwrap();
    (
        x_view(&c.x, s.t, s.d_in, dtype, mode, device),
        Tensor::from_vec(c.idx.clone(), &[s.t, s.k], &Device::Cpu).unwrap().to_device(device).unwrap(),
        on(&c.g, &[s.t, s.k]),
        on(&c.a, &[s.e, s.r, s.d_in]),
        on(&c.b, &[s.e, s.d_out, s.r]),
        on(&c.dy, &[s.t, s.d_out]),
    )
}

/// The f64 magnitudes `m` of the tolerance: forward and gradients from the absolute values of the
/// operands (as rounded to `dtype`).
fn magnitudes(c: &Case, dtype: DType) -> (Vec<f64>, [Vec<f64>; 4]) {
    let (x, idx, g, a, b, dy) = operands(c, dtype, 0, &Device::Cpu);
    let abs = |t: &Tensor| t.to_dtype(DType::F64).unwrap().abs().unwrap();
    let (x, g, a, b, dy) = (abs(&x), abs(&g), abs(&a), abs(&b), abs(&dy));
    let y = Tensor::moe_lora(&x, &idx, &g, &a, &b, c.scale).unwrap().to_vec_f64().unwrap();
    let gr = Tensor::moe_lora_backward(&x, &idx, &g, &a, &b, c.scale, &dy).unwrap();
    let v = |t: &Tensor| t.to_vec_f64().unwrap();
    (y, [v(&gr.dx), v(&gr.dgates), v(&gr.da), v(&gr.db)])
}

/// GPU result `got` against the CPU result `want` within `2 (chain + 8) 2^-23 m` (+ 2 bf16 ulps).
fn close(what: &str, got: &Tensor, want: &Tensor, m: &[f64], chain: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape(), "{}: shapes", what);
    prop_assert_eq!(got.dtype(), want.dtype(), "{}: dtypes", what);
    prop_assert!(got.device().is_cuda(), "{}: result left the GPU", what);
    let (gv, wv) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    let round = if want.dtype() == DType::BF16 { 2.0 / 256.0 } else { 0.0 };
    for (i, (&g, &w)) in gv.iter().zip(&wv).enumerate() {
        let tol = 2.0 * (chain + 8) as f64 * f32::EPSILON as f64 * m[i] + round * w.abs().max(g.abs());
        prop_assert!(g.is_finite() && (g - w).abs() <= tol, "{}[{}]: gpu {} cpu {} (tol {})", what, i, g, w, tol);
    }
    Ok(())
}

/// One case: forward and all four gradients, GPU against CPU, and the GPU twice (same bits).
fn check_case(dev: &Device, c: &Case, dtype: DType, mode: u8) -> Result<(), TestCaseError> {
    let s = c.s;
    let (gx, gi, gg, ga, gb, gdy) = operands(c, dtype, mode, dev);
    let (cx, ci, cg, ca, cb, cdy) = operands(c, dtype, mode, &Device::Cpu);
    let (my, [mdx, mdg, mda, mdb]) = magnitudes(c, dtype);
    let y = Tensor::moe_lora(&gx, &gi, &gg, &ga, &gb, c.scale).unwrap();
    let want = Tensor::moe_lora(&cx, &ci, &cg, &ca, &cb, c.scale).unwrap();
    // the CPU's dense path sums over every expert's rank: E r, not k r
    let er = s.e * s.r;
    close("out", &y, &want, &my, s.d_in + er)?;
    let again = Tensor::moe_lora(&gx, &gi, &gg, &ga, &gb, c.scale).unwrap();
    prop_assert_eq!(again.to_vec_f64().unwrap(), y.to_vec_f64().unwrap(), "forward not deterministic");

    let got = Tensor::moe_lora_backward(&gx, &gi, &gg, &ga, &gb, c.scale, &gdy).unwrap();
    let want = Tensor::moe_lora_backward(&cx, &ci, &cg, &ca, &cb, c.scale, &cdy).unwrap();
    close("dx", &got.dx, &want.dx, &mdx, s.d_out + er)?;
    close("dgates", &got.dgates, &want.dgates, &mdg, s.d_in + s.d_out + er)?;
    close("da", &got.da, &want.da, &mda, s.t + s.d_out + er)?;
    close("db", &got.db, &want.db, &mdb, s.t + s.d_in + er)?;
    let again = Tensor::moe_lora_backward(&gx, &gi, &gg, &ga, &gb, c.scale, &gdy).unwrap();
    for (p, q) in [(&again.dx, &got.dx), (&again.dgates, &got.dgates), (&again.da, &got.da), (&again.db, &got.db)] {
        prop_assert_eq!(p.to_vec_f64().unwrap(), q.to_vec_f64().unwrap(), "backward not deterministic");
    }
    Ok(())
}

#[test]
fn f32_forward_and_backward_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    runner(48).run(&(shapes(), any::<u64>(), 0u8..3), |(s, seed, mode)| check_case(&dev, &Case::new(s, seed), DType::F32, mode)).unwrap();
}

#[test]
fn bf16_computes_in_f32_and_matches_the_cpu() {
    let Some(dev) = gpu() else { return };
    runner(16).run(&(shapes(), any::<u64>(), 0u8..3), |(s, seed, mode)| check_case(&dev, &Case::new(s, seed), DType::BF16, mode)).unwrap();
}

#[test]
fn fixed_edge_shapes_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let shapes = [
        Shape { t: 0, k: 2, e: 4, d_in: 8, r: 4, d_out: 6 },     // no tokens
        Shape { t: 1, k: 1, e: 1, d_in: 3, r: 1, d_out: 2 },     // one token, one expert, rank 1
        Shape { t: 37, k: 2, e: 4, d_in: 33, r: 16, d_out: 65 }, // odd sizes, the paper's E and r
        Shape { t: 9, k: 8, e: 8, d_in: 5, r: 64, d_out: 4 },    // k = E, the largest rank
        Shape { t: 51, k: 3, e: 64, d_in: 12, r: 2, d_out: 7 },  // the most experts, most empty
        Shape { t: 301, k: 2, e: 4, d_in: 40, r: 8, d_out: 70 }, // many tokens per expert
        Shape { t: 5, k: 2, e: 3, d_in: 0, r: 4, d_out: 6 },     // nothing to compute: zeros
        Shape { t: 5, k: 2, e: 3, d_in: 6, r: 4, d_out: 0 },
    ];
    for (n, s) in shapes.into_iter().enumerate() {
        for mode in 0..3 {
            check_case(&dev, &Case::new(s, 11 + n as u64), DType::F32, mode).unwrap_or_else(|e| panic!("{s:?} mode {mode}: {e}"));
        }
    }
}

#[test]
fn zero_b_is_an_exact_no_op_on_the_gpu() {
    let Some(dev) = gpu() else { return };
    runner(16)
        .run(&(shapes(), any::<u64>(), 0u8..3), |(s, seed, mode)| {
            let mut c = Case::new(s, seed);
            c.b.iter_mut().for_each(|v| *v = 0.0);
            let (x, idx, g, a, b, dy) = operands(&c, DType::F32, mode, &dev);
            let y = Tensor::moe_lora(&x, &idx, &g, &a, &b, c.scale).unwrap();
            prop_assert!(y.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0), "zero B: output not zero");
            // Added to a base output, it leaves every bit of the base unchanged.
            let base_vals = Xs(seed | 3).vals(s.t * s.d_out);
            let base = cpu_tensor(&base_vals, &[s.t, s.d_out], DType::F32).to_device(&dev).unwrap();
            let sum = base.add(&y).unwrap().to_vec::<f32>().unwrap();
            prop_assert!(sum.iter().zip(&base_vals).all(|(p, q)| p.to_bits() == q.to_bits()), "base changed");
            // Nothing flows back through a zero B but dB itself.
            let gr = Tensor::moe_lora_backward(&x, &idx, &g, &a, &b, c.scale, &dy).unwrap();
            for (name, t) in [("dx", &gr.dx), ("dgates", &gr.dgates), ("da", &gr.da)] {
                prop_assert!(t.to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0), "zero B: {} not zero", name);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn unsupported_operands_are_clear_errors() {
    let Some(dev) = gpu() else { return };
    let c = Case::new(Shape { t: 3, k: 2, e: 4, d_in: 5, r: 3, d_out: 6 }, 5);
    let (x, idx, g, a, b, dy) = operands(&c, DType::F32, 0, &dev);
    let device_msg = |r: brainstacks_tensor::Result<Tensor>, want: &str| match r {
        Err(Error::Device { msg, .. }) => assert!(msg.contains(want), "{msg}"),
        other => panic!("expected a device error containing {want:?}, got {other:?}"),
    };
    // More experts or a larger rank than the kernels take.
    let big = Case::new(Shape { t: 3, k: 2, e: 65, d_in: 5, r: 3, d_out: 6 }, 6);
    let (bx, bi, bg, ba, bb, _) = operands(&big, DType::F32, 0, &dev);
    device_msg(Tensor::moe_lora(&bx, &bi, &bg, &ba, &bb, 1.0), "at most 64 experts");
    let wide = Case::new(Shape { t: 3, k: 2, e: 4, d_in: 5, r: 65, d_out: 6 }, 7);
    let (wx, wi, wg, wa, wb, _) = operands(&wide, DType::F32, 0, &dev);
    device_msg(Tensor::moe_lora(&wx, &wi, &wg, &wa, &wb, 1.0), "rank 64");
    // f64 has no CUDA kernel.
    let (fx, fi, fg, fa, fb, _) = operands(&c, DType::F32, 0, &Device::Cpu);
    let f64_dev = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_device(&dev).unwrap();
    device_msg(
        Tensor::moe_lora(&f64_dev(&fx), &fi.to_device(&dev).unwrap(), &f64_dev(&fg), &f64_dev(&fa), &f64_dev(&fb), 1.0),
        "not implemented on CUDA yet",
    );
    // Mixed devices.
    device_msg(Tensor::moe_lora(&x, &fi, &g, &a, &b, 1.0), "every operand must be on");
    device_msg(Tensor::moe_lora(&x, &idx, &g, &fa, &b, 1.0), "every operand must be on");
    // Bad routing tables are errors, as on the CPU, forward and backward.
    for bad in [vec![0i64, 4, 1, 2, 3, 0], vec![0, -1, 1, 2, 3, 0], vec![1, 1, 1, 2, 3, 0]] {
        let bi = Tensor::from_vec(bad.clone(), &[3, 2], &Device::Cpu).unwrap().to_device(&dev).unwrap();
        assert!(matches!(Tensor::moe_lora(&x, &bi, &g, &a, &b, 1.0), Err(Error::InvalidArgument { .. })), "{bad:?}");
        let back = Tensor::moe_lora_backward(&x, &bi, &g, &a, &b, 1.0, &dy);
        assert!(matches!(back, Err(Error::InvalidArgument { .. })), "{bad:?}");
    }
    // Shape errors come from the shared checks, before any launch.
    assert!(Tensor::moe_lora_backward(&x, &idx, &g, &a, &b, 1.0, &x).is_err());
}

// ---------------------------------------------------------------- the fused gate

/// `eps` as `GateNoise::sample` draws it: `Tensor::randn` of `Rng::new(key)`, f32, on the CPU.
fn gate_noise(key: u64, t: usize, e: usize) -> Vec<f32> {
    Tensor::randn(&mut Rng::new(key), 0.0, 1.0, &[t, e], DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// One gate case: forward against the f64 oracle (noise from the CPU Philox stream of the same
/// key), the selection and gates against the GPU's own logits, and the backward against the
/// oracle on the GPU's forward outputs. Bounds as the kernels' own gate test writes them, doubled.
fn gate_case(dev: &Device, d: GateDims, seed: u64, noise: bool, with_extra: bool) -> Result<(), TestCaseError> {
    let mut rng = Xs(seed | 1);
    let (e_n, n) = (d.experts, d.d_in);
    let (x, w) = (rng.vals(d.t * n), rng.vals(2 * e_n * n));
    let dgates = rng.vals(d.t * d.k);
    let extra = with_extra.then(|| rng.vals(d.t * e_n));
    let key = noise.then(|| noise_seed(seed, 7, 2));
    let up = |v: &[f32], shape: &[usize]| cpu_tensor(v, shape, DType::F32).to_device(dev).unwrap();
    let (gx, wr, wn) = (up(&x, &[d.t, n]), up(&w[..e_n * n], &[e_n, n]), up(&w[e_n * n..], &[e_n, n]));
    let fwd = moe_gate(&gx, &wr, &wn, d.k, key).unwrap();
    let v32 = |t: &Tensor| t.to_vec::<f32>().unwrap();
    let (logits, nscale, gates, idx) = (v32(&fwd.logits), v32(&fwd.nscale), v32(&fwd.gates), fwd.idx.to_vec::<i64>().unwrap());
    let eps = key.map_or(vec![0f32; d.t * e_n], |k| gate_noise(k, d.t, e_n));
    let want = oracle::gate_forward(&wide(&x), &wide(&w), key.map(|_| wide(&eps)).as_deref(), &d);
    let u = f32::EPSILON as f64;
    for t in 0..d.t {
        for e in 0..e_n {
            let dot_abs = |q: usize| (0..n).map(|p| f64::from((w[q * n + p] * x[t * n + p]).abs())).sum::<f64>();
            let (ca, za, ep) = (dot_abs(e), dot_abs(e_n + e), f64::from(eps[t * e_n + e].abs()));
            let i = t * e_n + e;
            let tol = 2.0 * ((n + 8) as f64 * u * (ca + za * ep) + 16.0 * u * (want.logits[i].abs() + ep));
            prop_assert!((f64::from(logits[i]) - want.logits[i]).abs() <= tol, "logit {}: gpu {} oracle {}", i, logits[i], want.logits[i]);
            let tn = 2.0 * (16.0 * u * want.nscale[i].abs() + (n + 8) as f64 * u * za * ep);
            prop_assert!((f64::from(nscale[i]) - want.nscale[i]).abs() <= tn, "nscale {}: gpu {} oracle {}", i, nscale[i], want.nscale[i]);
        }
    }
    // the selection is exactly topk of the GPU's logits; the gates their softmax
    let (kept, sel) = Tensor::from_vec(logits.clone(), &[d.t, e_n], &Device::Cpu).unwrap().topk(d.k).unwrap();
    prop_assert_eq!(&idx, &sel.to_vec::<i64>().unwrap());
    let kept = kept.to_vec::<f32>().unwrap();
    for t in 0..d.t {
        let row = wide(&kept[t * d.k..(t + 1) * d.k]);
        let ex: Vec<f64> = row.iter().map(|v| (v - row[0]).exp()).collect();
        let sum: f64 = ex.iter().sum();
        for j in 0..d.k {
            let (g, want) = (f64::from(gates[t * d.k + j]), ex[j] / sum);
            // + f32::MIN_POSITIVE: a gate below the smallest normal may flush to 0 (ex2.approx.ftz).
            let tol = 2.0 * (d.k as f64 + 16.0 + (row[j] - row[0]).abs()) * 8.0 * u * want + f64::from(f32::MIN_POSITIVE);
            prop_assert!((g - want).abs() <= tol, "gate [{}, {}]: gpu {} want {}", t, j, g, want);
        }
    }
    // backward on the GPU's own forward outputs
    let extra_t = extra.as_ref().map(|v| up(v, &[d.t, e_n]));
    let grads = moe_gate_backward(&gx, &wr, &wn, &fwd, &up(&dgates, &[d.t, d.k]), extra_t.as_ref()).unwrap();
    let (wx, ww) = oracle::gate_backward(
        &wide(&x),
        &wide(&w),
        &idx,
        &wide(&gates),
        &wide(&nscale),
        &wide(&dgates),
        extra.as_ref().map(|v| wide(v)).as_deref(),
        &d,
    );
    // bounds: |dlogit| <= |extra| + g (|dg| + sum |g dg|), then the same sums over absolute values
    let (mut bx, mut bw) = (vec![0.0; d.t * n], vec![0.0; 2 * e_n * n]);
    for t in 0..d.t {
        let (g, dg) = (&gates[t * d.k..(t + 1) * d.k], &dgates[t * d.k..(t + 1) * d.k]);
        let dot: f64 = g.iter().zip(dg).map(|(a, b)| f64::from((a * b).abs())).sum();
        let mut dl: Vec<f64> = (0..e_n).map(|e| extra.as_ref().map_or(0.0, |v| f64::from(v[t * e_n + e].abs()))).collect();
        for j in 0..d.k {
            dl[idx[t * d.k + j] as usize] += f64::from(g[j].abs()) * (f64::from(dg[j].abs()) + dot);
        }
        for e in 0..e_n {
            let dz = dl[e] * f64::from(nscale[t * e_n + e].abs());
            for p in 0..n {
                bx[t * n + p] += dl[e] * f64::from(w[e * n + p].abs()) + dz * f64::from(w[(e_n + e) * n + p].abs());
                bw[e * n + p] += dl[e] * f64::from(x[t * n + p].abs());
                bw[(e_n + e) * n + p] += dz * f64::from(x[t * n + p].abs());
            }
        }
    }
    let mut dw = v32(&grads.dw_router);
    dw.extend(v32(&grads.dw_noise));
    prop_assert!(grads.dx.device().is_cuda() && grads.dw_router.device().is_cuda(), "gradients left the GPU");
    for (what, got, want, bound, chain) in [("dx", v32(&grads.dx), wx, bx, 2 * e_n + d.k), ("dw", dw, ww, bw, d.t + d.k)] {
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let tol = 2.0 * (chain + 8) as f64 * u * bound[i] + 1e-30;
            prop_assert!((f64::from(g) - w).abs() <= tol, "gate {}[{}]: gpu {} oracle {} tol {}", what, i, g, w, tol);
        }
    }
    Ok(())
}

#[test]
fn fused_gate_matches_the_oracle() {
    let Some(dev) = gpu() else { return };
    let dims = (1usize..=64).prop_flat_map(|e| {
        (
            prop_oneof![Just(0usize), Just(1), (0usize..60).prop_map(|v| 2 * v + 1)],
            Just(e),
            prop_oneof![1usize..=e.min(4), Just(e)],
            1usize..140,
        )
    });
    runner(32)
        .run(&(dims, any::<u64>(), any::<bool>(), any::<bool>()), |((t, experts, k, d_in), seed, noise, extra)| {
            gate_case(&dev, GateDims { t, experts, k, d_in }, seed, noise, extra)
        })
        .unwrap();
}

/// With both weights zero the logits are `softplus(0) eps = ln 2 eps` and `nscale = eps / 2`:
/// the noise is `GateNoise::sample`'s stream (`Tensor::randn` of `Rng::new(noise_seed(..))`).
#[test]
fn fused_gate_noise_is_the_cpu_stream() {
    let Some(dev) = gpu() else { return };
    let (t, e, d_in) = (37, 8, 5);
    let x = Tensor::ones(&[t, d_in], DType::F32, &dev).unwrap();
    let w = Tensor::zeros(&[e, d_in], DType::F32, &dev).unwrap();
    let key = noise_seed(42, 1000, 3);
    let fwd = moe_gate(&x, &w, &w, 2, Some(key)).unwrap();
    let eps = gate_noise(key, t, e);
    let (nscale, logits) = (fwd.nscale.to_vec::<f32>().unwrap(), fwd.logits.to_vec::<f32>().unwrap());
    for i in 0..t * e {
        // sigmoid and softplus come from ex2 / lg2 approximations: 16 f32 ulps, as the kernels'
        // gate test allows (a different noise stream would be off by O(1))
        let ulp = f64::from(eps[i].abs()) * f32::EPSILON as f64;
        assert!((f64::from(nscale[i]) - 0.5 * f64::from(eps[i])).abs() <= 16.0 * ulp, "nscale {i}: {} vs eps {}", nscale[i], eps[i]);
        let want = std::f64::consts::LN_2 * f64::from(eps[i]);
        assert!((f64::from(logits[i]) - want).abs() <= 32.0 * ulp, "logit {i}: {} vs {want}", logits[i]);
    }
    // without noise: the clean gate, zeros here, and nscale zero
    let clean = moe_gate(&x, &w, &w, 2, None).unwrap();
    assert!(clean.logits.to_vec::<f32>().unwrap().iter().chain(&clean.nscale.to_vec::<f32>().unwrap()).all(|&v| v == 0.0));
    // errors: more than 64 experts, k out of range, mixed devices
    let big = Tensor::zeros(&[65, d_in], DType::F32, &dev).unwrap();
    assert!(matches!(moe_gate(&x, &big, &big, 2, None), Err(Error::Device { .. })));
    assert!(moe_gate(&x, &w, &w, 9, None).is_err());
    let cpu_w = Tensor::zeros(&[e, d_in], DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(moe_gate(&x, &cpu_w, &w, 2, None), Err(Error::Device { .. })));
}
