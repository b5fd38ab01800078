//! Gradcheck coverage of every differentiable `Var` op, driven by proptest shapes.
//!
//! Each case compares the tape's gradient with central differences (`crate::gradcheck`). Sizes
//! stay small (every input element is perturbed twice, so a case costs O(n^2)), and inputs are
//! kept away from the kinks of piecewise functions (relu/abs at 0, clamp at its bounds, ties of
//! max/min/topk), where the derivative is undefined and central differences disagree with any
//! one-sided rule. Non-contiguous inputs are exercised by storing an input transposed or padded
//! and taking the view inside the closure, so the op under test sees a strided tensor.

use brainstacks_tensor::{DType, Device, Rng, Tensor};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::{GradcheckOptions, Result, Tape, Var, gradcheck};

type TestResult = std::result::Result<(), TestCaseError>;

// ---- the checker itself ---------------------------------------------------------------------

/// `y = x^2` with a backward that is off by 0.1%: gradcheck must notice, or a passing suite
/// would prove nothing.
struct AlmostSquare;

impl crate::CustomOp for AlmostSquare {
    fn name(&self) -> &str {
        "almost_square"
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(inputs[0].square()?)
    }
    fn backward(&self, inputs: &[&Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.mul(&inputs[0].mul_scalar(2.002)?)?)])
    }
}

#[test]
fn gradcheck_catches_a_slightly_wrong_rule() {
    let op = std::sync::Arc::new(AlmostSquare);
    let err = gradcheck(|v| crate::apply_custom(op.clone(), &[&v[0]]), &[randn(1, &[4])], GradcheckOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("analytic") && msg.contains("numeric"), "{msg}");
}

// ---- input builders --------------------------------------------------------------------------

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::randn(&mut Rng::new(seed), 0.0, 1.0, shape, DType::F64, &Device::Cpu).unwrap()
}

fn from_vec(values: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn map(t: &Tensor, f: impl Fn(f64) -> f64) -> Tensor {
    from_vec(t.to_vec_f64().unwrap().into_iter().map(f).collect(), t.shape())
}

/// Standard normal samples pushed at least `margin` away from each of `points` (the kinks).
fn away_from(seed: u64, shape: &[usize], points: &[f64], margin: f64) -> Tensor {
    map(&randn(seed, shape), |mut v| {
        for &p in points {
            if (v - p).abs() < margin {
                v = if v >= p { p + margin } else { p - margin };
            }
        }
        v
    })
}

/// Pairwise distinct values at least 0.1 apart, in random order: a shuffled, centred ramp. Max,
/// min and top-k have a gradient only without ties, and central differences need a gap wider
/// than their step.
fn distinct(seed: u64, shape: &[usize]) -> Tensor {
    let noise = randn(seed, shape).to_vec_f64().unwrap();
    let mut order: Vec<usize> = (0..noise.len()).collect();
    order.sort_by(|&a, &b| noise[a].total_cmp(&noise[b]));
    let mut v = vec![0.0; noise.len()];
    let mid = noise.len() as f64 / 2.0;
    for (rank, &i) in order.iter().enumerate() {
        v[i] = (rank as f64 - mid) * 0.1;
    }
    from_vec(v, shape)
}

/// Uniform integers in `0..hi` as an `I64` tensor.
fn int_ids(seed: u64, shape: &[usize], hi: usize) -> Tensor {
    let u = Tensor::rand_uniform(&mut Rng::new(seed), 0.0, hi as f64, shape, DType::F64, &Device::Cpu).unwrap();
    let v: Vec<i64> = u.to_vec_f64().unwrap().iter().map(|x| (x.floor() as i64).clamp(0, hi as i64 - 1)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A random 0/1 `U8` mask.
fn random_mask(seed: u64, shape: &[usize]) -> Tensor {
    let v: Vec<u8> = randn(seed, shape).to_vec_f64().unwrap().iter().map(|&x| u8::from(x > 0.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// `shape` with dims set to 1 where `ones` says so and the first `drop` dims removed: an operand
/// that broadcasts to `shape`.
fn broadcastable(shape: &[usize], ones: &[bool], drop: usize) -> Vec<usize> {
    shape.iter().zip(ones).skip(drop).map(|(&d, &one)| if one { 1 } else { d }).collect()
}

/// Swaps the last two entries of a shape: the stored shape of an input the closure transposes.
fn swapped(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    let r = s.len();
    if r >= 2 {
        s.swap(r - 2, r - 1);
    }
    s
}

/// Transposes the last two dims when `flag` (and the rank allows), so the op sees a strided view.
fn maybe_t(v: &Var, flag: bool) -> Result<Var> {
    if flag && v.rank() >= 2 { v.t() } else { Ok(v.clone()) }
}

// ---- checking --------------------------------------------------------------------------------

fn check_with(what: &str, opts: GradcheckOptions, f: impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor]) -> TestResult {
    gradcheck(f, inputs, opts).map_err(|e| {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        TestCaseError::fail(format!("{what} with input shapes {shapes:?}: {e}"))
    })
}

fn check(what: &str, f: impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor]) -> TestResult {
    check_with(what, GradcheckOptions::default(), f, inputs)
}

/// The input domain an elementwise function is smooth on.
#[derive(Clone, Copy)]
enum Domain {
    /// Any real number.
    All,
    /// Strictly positive (log, sqrt, ...): `|x| + 0.5`.
    Positive,
    /// Away from 0 (relu, abs, recip): `|x| >= 0.1`.
    NonZero,
}

type UnaryFn = fn(&Var) -> Result<Var>;

const UNARY: &[(&str, UnaryFn, Domain)] = &[
    ("neg", Var::neg, Domain::All),
    ("exp", Var::exp, Domain::All),
    ("log", Var::log, Domain::Positive),
    ("sqrt", Var::sqrt, Domain::Positive),
    ("rsqrt", Var::rsqrt, Domain::Positive),
    ("tanh", Var::tanh, Domain::All),
    ("silu", Var::silu, Domain::All),
    ("gelu", Var::gelu, Domain::All),
    ("sigmoid", Var::sigmoid, Domain::All),
    ("softplus", Var::softplus, Domain::All),
    ("relu", Var::relu, Domain::NonZero),
    ("abs", Var::abs, Domain::NonZero),
    ("square", Var::square, Domain::All),
    ("recip", Var::recip, Domain::NonZero),
    ("sin", Var::sin, Domain::All),
    ("cos", Var::cos, Domain::All),
];

fn input_in(domain: Domain, seed: u64, shape: &[usize]) -> Tensor {
    match domain {
        Domain::All => randn(seed, shape),
        Domain::Positive => map(&randn(seed, shape), |v| v.abs() + 0.5),
        Domain::NonZero => away_from(seed, shape, &[0.0], 0.1),
    }
}

fn small_dim() -> impl Strategy<Value = usize> {
    1usize..4
}

// ---- elementwise -----------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Every unary function, on a contiguous or a transposed input.
    #[test]
    fn unary_fns(r in small_dim(), c in 1usize..6, transposed in any::<bool>(), seed in any::<u64>()) {
        let shape = [r, c];
        for &(name, f, domain) in UNARY {
            let stored = if transposed { swapped(&shape) } else { shape.to_vec() };
            let x = input_in(domain, seed, &stored);
            check(name, |v| f(&maybe_t(&v[0], transposed)?), &[x])?;
        }
    }

    #[test]
    fn powf(n in 1usize..8, e in prop::sample::select(vec![-1.5, -1.0, 0.5, 1.0, 2.0, 2.5, 3.0]), seed in any::<u64>()) {
        let x = input_in(Domain::Positive, seed, &[n]);
        check("powf", |v| v[0].powf(e), &[x])?;
    }

    /// Inputs straddle both bounds, so both the passing and the clamped branches are checked.
    #[test]
    fn clamp(n in 1usize..16, lo in -1.0f64..0.0, width in 0.3f64..1.5, seed in any::<u64>()) {
        let hi = lo + width;
        let x = away_from(seed, &[n], &[lo, hi], 0.05);
        check("clamp", |v| v[0].clamp(lo, hi), &[x])?;
    }

    #[test]
    fn scalar_ops(r in small_dim(), c in small_dim(), a in -2.0f64..2.0, b in -2.0f64..2.0, seed in any::<u64>()) {
        let x = randn(seed, &[r, c]);
        check("add_scalar", |v| v[0].add_scalar(a), std::slice::from_ref(&x))?;
        check("mul_scalar", |v| v[0].mul_scalar(a), std::slice::from_ref(&x))?;
        check("affine", |v| v[0].affine(a, b), &[x])?;
    }

    /// Binary ops with either operand broadcast (dims of size 1 and missing leading dims on
    /// both sides), and optionally a transposed left operand.
    #[test]
    fn binary_broadcasting(
        shape in prop::collection::vec(small_dim(), 3),
        lhs_ones in prop::collection::vec(any::<bool>(), 3),
        rhs_ones in prop::collection::vec(any::<bool>(), 3),
        lhs_drop in 0usize..2,
        rhs_drop in 0usize..3,
        lhs_t in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let ls = broadcastable(&shape, &lhs_ones, lhs_drop);
        let rs = broadcastable(&shape, &rhs_ones, rhs_drop);
        let stored_l = if lhs_t { swapped(&ls) } else { ls.clone() };
        let a = randn(seed, &stored_l);
        let b = randn(seed ^ 0x55, &rs);
        type BinFn = fn(&Var, &Var) -> Result<Var>;
        let ops: [(&str, BinFn); 3] = [("add", Var::add), ("sub", Var::sub), ("mul", Var::mul)];
        for (name, f) in ops {
            check(name, |v| f(&maybe_t(&v[0], lhs_t)?, &v[1]), &[a.clone(), b.clone()])?;
        }
        let denom = away_from(seed ^ 0x55, &rs, &[0.0], 0.3);
        check("div", |v| maybe_t(&v[0], lhs_t)?.div(&v[1]), &[a.clone(), denom])?;
        // maximum/minimum: keep every pair that meets at least 1e-3 apart (no ties).
        let al = if lhs_t { a.t().unwrap() } else { a.clone() };
        let gap = al.sub(&b).unwrap().abs().unwrap().to_vec_f64().unwrap().into_iter().fold(f64::INFINITY, f64::min);
        prop_assume!(gap > 1e-3);
        check("maximum", |v| maybe_t(&v[0], lhs_t)?.maximum(&v[1]), &[a.clone(), b.clone()])?;
        check("minimum", |v| maybe_t(&v[0], lhs_t)?.minimum(&v[1]), &[a, b])?;
    }
}

// ---- matmul and reductions -------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Plain, batched, and batch-broadcast (`[b, 1, m, k] x [c, k, n]`) products, with either
    /// operand stored transposed so the GEMM reads a strided view.
    #[test]
    fn matmul(
        m in small_dim(), k in small_dim(), n in small_dim(), b in 1usize..3, c in 1usize..3,
        mode in 0usize..3, ta in any::<bool>(), tb in any::<bool>(), seed in any::<u64>(),
    ) {
        let (ls, rs): (Vec<usize>, Vec<usize>) = match mode {
            0 => (vec![m, k], vec![k, n]),
            1 => (vec![b, m, k], vec![k, n]),
            _ => (vec![b, 1, m, k], vec![c, k, n]),
        };
        let a = randn(seed, &if ta { swapped(&ls) } else { ls.clone() });
        let bm = randn(seed ^ 7, &if tb { swapped(&rs) } else { rs.clone() });
        check("matmul", |v| maybe_t(&v[0], ta)?.matmul(&maybe_t(&v[1], tb)?), &[a, bm])?;
    }

    /// Sums and means over any subset of dims (empty = all), with and without keepdim, also on
    /// a transposed input and with negative dims.
    #[test]
    fn sum_mean(
        shape in prop::collection::vec(small_dim(), 3),
        dims in prop::sample::subsequence(vec![0usize, 1, 2], 0..=3),
        keepdim in any::<bool>(), transposed in any::<bool>(), seed in any::<u64>(),
    ) {
        let x = randn(seed, &if transposed { swapped(&shape) } else { shape.clone() });
        check("sum", |v| maybe_t(&v[0], transposed)?.sum(&dims, keepdim), std::slice::from_ref(&x))?;
        check("mean", |v| maybe_t(&v[0], transposed)?.mean(&dims, keepdim), std::slice::from_ref(&x))?;
        let neg: Vec<isize> = dims.iter().map(|&d| d as isize - 3).collect();
        check("sum (negative dims)", |v| v[0].sum(&neg, keepdim), std::slice::from_ref(&x))?;
        check("sum_all", |v| v[0].sum_all(), std::slice::from_ref(&x))?;
        check("mean_all", |v| v[0].mean_all(), &[x])?;
    }

    /// Max and min along one dim, on tie-free inputs.
    #[test]
    fn max_min(shape in prop::collection::vec(small_dim(), 3), dim in 0usize..3, keepdim in any::<bool>(), seed in any::<u64>()) {
        let x = distinct(seed, &shape);
        check("max", |v| v[0].max(dim, keepdim), std::slice::from_ref(&x))?;
        check("min", |v| v[0].min(dim as isize - 3, keepdim), &[x])?;
    }
}

// ---- views and joins -------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Every view op, each followed by an elementwise op so the gradient reaches the view through
    /// a non-trivial rule (gradcheck's random projection already makes identity checks count).
    #[test]
    fn views(a in small_dim(), b in small_dim(), c in small_dim(), seed in any::<u64>()) {
        let x = randn(seed, &[a, b, c]);
        let one = || std::slice::from_ref(&x);
        check("reshape", |v| v[0].reshape(&[a * b, c])?.square(), one())?;
        check("reshape (non-contiguous source)", |v| v[0].transpose(0, 2)?.reshape(&[c * b * a])?.sin(), one())?;
        check("transpose", |v| v[0].transpose(0, 2)?.square(), one())?;
        check("t", |v| v[0].t()?.matmul(&v[0]), one())?;
        check("permute", |v| v[0].permute(&[2, 0, 1])?.sin(), one())?;
        check("narrow", |v| v[0].narrow(1, b / 2, b - b / 2)?.square(), one())?;
        check("narrow (negative dim)", |v| v[0].narrow(-1isize, 0, c.div_ceil(2))?.square(), one())?;
        check("unsqueeze", |v| v[0].unsqueeze(1)?.unsqueeze(-1)?.square(), one())?;
        check("squeeze", |v| v[0].unsqueeze(2)?.squeeze(2)?.square(), one())?;
        check("broadcast_as", |v| v[0].broadcast_as(&[2, a, b, c])?.sin(), one())?;
        check("broadcast_as (size-1 dim)", |v| v[0].narrow(1, 0, 1)?.broadcast_as(&[a, 3, c])?.sin(), one())?;
        check("contiguous", |v| v[0].transpose(0, 1)?.contiguous()?.sin(), one())?;
    }

    #[test]
    fn joins(a in small_dim(), b in small_dim(), b2 in small_dim(), dim in 0usize..2, seed in any::<u64>()) {
        let (x, y) = if dim == 0 { (randn(seed, &[a, b]), randn(seed ^ 3, &[b2, b])) } else { (randn(seed, &[a, b]), randn(seed ^ 3, &[a, b2])) };
        check("cat", |v| Var::cat(&[&v[0], &v[1], &v[0]], dim)?.sin(), &[x.clone(), y])?;
        let z = randn(seed ^ 5, &[a, b]);
        check("stack", |v| Var::stack(&[&v[0], &v[1]], dim as isize)?.sin(), &[x.clone(), z.clone()])?;
        check("stack (negative dim)", |v| Var::stack(&[&v[0], &v[1]], -1)?.sin(), &[x.clone(), z])?;
        let size = x.shape()[dim];
        let first = size / 2;
        check("split", |v| {
            let parts = v[0].split(&[first, size - first], dim)?;
            // Weight the parts differently so a mixed-up split shows.
            parts[0].square()?.sum_all()?.add(&parts[1].sin()?.sum_all()?)
        }, &[x])?;
    }
}

/// gradcheck needs f64 end to end, so a cast is checked by its gradient's dtype and values, and
/// a round trip through f32 with a step large enough for f32 rounding.
#[test]
fn to_dtype_casts_the_gradient_back() {
    let tape = Tape::new();
    let x = tape.param(from_vec(vec![0.5, -1.25, 2.0], &[3]));
    let loss = x.to_dtype(DType::F32).unwrap().square().unwrap().sum_all().unwrap();
    assert_eq!(loss.dtype(), DType::F32);
    let grads = tape.backward(&loss).unwrap();
    let g = grads.get(&x).unwrap();
    assert_eq!(g.dtype(), DType::F64);
    assert_eq!(g.to_vec::<f64>().unwrap(), vec![1.0, -2.5, 4.0]);

    let opts = GradcheckOptions { eps: 1e-3, atol: 1e-4, rtol: 1e-3, ..Default::default() };
    gradcheck(|v| v[0].to_dtype(DType::F32)?.sin()?.to_dtype(DType::F64), &[randn(1, &[2, 3])], opts).unwrap();
}

// ---- neural-network ops ----------------------------------------------------------------------

/// Rotation tables for random angles (`[t, half]`). The backward of rope is exact for any
/// tables, but real ones make the check representative.
fn rope_tables(seed: u64, t: usize, half: usize) -> (Tensor, Tensor) {
    let angles = map(&randn(seed, &[t, half]), |a| a * 3.0);
    (angles.cos().unwrap(), angles.sin().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn softmax_log_softmax(shape in prop::collection::vec(small_dim(), 3), dim in 0usize..3, transposed in any::<bool>(), seed in any::<u64>()) {
        let x = map(&randn(seed, &if transposed { swapped(&shape) } else { shape.clone() }), |v| 2.0 * v);
        check("softmax", |v| maybe_t(&v[0], transposed)?.softmax(dim), std::slice::from_ref(&x))?;
        check("log_softmax", |v| maybe_t(&v[0], transposed)?.log_softmax(dim as isize - 3), &[x])?;
    }

    /// Norms over the last dim for inputs of rank 1..=3, with the input padded in its last dim
    /// (a narrowed, non-contiguous view) or not.
    #[test]
    fn norms(lead in prop::collection::vec(small_dim(), 0..3), d in 1usize..7, padded in any::<bool>(), seed in any::<u64>()) {
        let mut shape = lead.clone();
        shape.push(d);
        let mut stored = shape.clone();
        if padded {
            *stored.last_mut().unwrap() += 2;
        }
        let x = map(&randn(seed, &stored), |v| 1.5 * v + 0.3);
        let w = randn(seed ^ 1, &[d]);
        let b = randn(seed ^ 2, &[d]);
        let view = |v: &Var| if padded { v.narrow(-1isize, 1, d) } else { Ok(v.clone()) };
        check("rms_norm", |v| view(&v[0])?.rms_norm(&v[1], 1e-5), &[x.clone(), w.clone()])?;
        check("layer_norm", |v| view(&v[0])?.layer_norm(&v[1], &v[2], 1e-5), &[x, w, b])?;
    }

    /// With Llama's tables (positions 3.., theta 10000) or with tables of random angles.
    #[test]
    fn rope(b in 1usize..3, h in 1usize..3, t in 1usize..4, half in 1usize..4, real in any::<bool>(), transposed in any::<bool>(), seed in any::<u64>()) {
        let (cos, sin) = if real {
            let positions: Vec<usize> = (3..3 + t).collect();
            brainstacks_tensor::ops::rope::rope_tables(&positions, 2 * half, 10_000.0, DType::F64).unwrap()
        } else {
            rope_tables(seed ^ 9, t, half)
        };
        let shape = [b, h, t, 2 * half];
        let x = randn(seed, &if transposed { swapped(&shape) } else { shape.to_vec() });
        check("rope", |v| maybe_t(&v[0], transposed)?.rope(&cos, &sin), &[x])?;
    }

    /// Logits [N, C] against targets, some of them ignored (row 0 never is, so the mean is
    /// defined).
    #[test]
    fn cross_entropy(n in 1usize..6, c in 1usize..6, ignore in any::<bool>(), seed in any::<u64>()) {
        let logits = map(&randn(seed, &[n, c]), |v| 2.0 * v);
        let mut targets = int_ids(seed ^ 4, &[n], c).to_vec::<i64>().unwrap();
        if ignore {
            for (i, t) in targets.iter_mut().enumerate() {
                if i % 2 == 1 {
                    *t = -100;
                }
            }
        }
        let targets = Tensor::from_vec(targets, &[n], &Device::Cpu).unwrap();
        let ignore_index = ignore.then_some(-100);
        check("cross_entropy", |v| v[0].cross_entropy(&targets, ignore_index), &[logits])?;
    }

    /// Grouped-query causal attention: gradients for q, k and v, and the forward against the
    /// fused tensor op.
    #[test]
    fn causal_attention(
        b in 1usize..3, hkv in 1usize..3, rep in 1usize..3, t in 1usize..4, extra in 0usize..3,
        d in 1usize..4, dv in 1usize..4, seed in any::<u64>(),
    ) {
        let (hq, s) = (hkv * rep, t + extra);
        let q = randn(seed, &[b, hq, t, d]);
        let k = randn(seed ^ 1, &[b, hkv, s, d]);
        let v = randn(seed ^ 2, &[b, hkv, s, dv]);
        let scale = 1.0 / (d as f64).sqrt();
        let composed = Var::constant(q.clone()).causal_attention(&Var::constant(k.clone()), &Var::constant(v.clone()), scale).unwrap();
        let fused = q.causal_attention(&k, &v, scale).unwrap();
        prop_assert_eq!(composed.shape(), fused.shape());
        for (x, y) in composed.tensor().to_vec_f64().unwrap().iter().zip(fused.to_vec_f64().unwrap()) {
            prop_assert!((x - y).abs() <= 1e-12, "composed {x} vs fused {y}");
        }
        check("causal_attention", |vs| vs[0].causal_attention(&vs[1], &vs[2], scale), &[q, k, v])?;
    }
}

/// A fully masked position (`-inf` before a softmax, as in attention) gets a zero gradient,
/// never NaN, and the result still gradchecks.
#[test]
fn masked_softmax_gradient_is_zero_at_masked_positions() {
    let mask = Tensor::from_vec(vec![0u8, 1, 1, 0, 0, 1], &[2, 3], &Device::Cpu).unwrap();
    let tape = Tape::new();
    let x = tape.param(randn(3, &[2, 3]));
    let y = x.masked_fill(&mask, f64::NEG_INFINITY).unwrap().softmax(-1isize).unwrap();
    let loss = y.mul(&Var::constant(randn(4, &[2, 3]))).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap().get(&x).unwrap().to_vec_f64().unwrap();
    for (gi, m) in g.iter().zip([0, 1, 1, 0, 0, 1]) {
        assert!(gi.is_finite());
        if m == 1 {
            assert_eq!(*gi, 0.0);
        }
    }
    gradcheck(
        |v| v[0].masked_fill(&mask, f64::NEG_INFINITY)?.softmax(-1isize),
        &[randn(3, &[2, 3])],
        GradcheckOptions::default(),
    )
    .unwrap();
}

/// The norm rules compute bf16/f16 gradients in f32 (see `nn.rs`): they must match the f64
/// gradients to the storage precision, with the dtypes of the inputs.
#[test]
fn norm_gradients_in_low_precision_match_f64() {
    let (x, w, b) = (map(&randn(11, &[3, 64]), |v| 2.0 * v + 0.5), randn(12, &[64]), randn(13, &[64]));
    let seed_g = randn(14, &[3, 64]);
    let grads = |dtype: DType| -> Vec<Vec<f64>> {
        let tape = Tape::new();
        let p = |t: &Tensor| tape.param(t.to_dtype(dtype).unwrap());
        let (xv, wv, bv) = (p(&x), p(&w), p(&b));
        let r = xv.rms_norm(&wv, 1e-5).unwrap();
        let l = xv.layer_norm(&wv, &bv, 1e-5).unwrap();
        let out = r.add(&l).unwrap();
        let g = tape.backward_with(&out, seed_g.to_dtype(dtype).unwrap()).unwrap();
        [&xv, &wv, &bv]
            .iter()
            .map(|v| {
                let gv = g.get(v).unwrap();
                assert_eq!(gv.dtype(), dtype);
                gv.to_vec_f64().unwrap()
            })
            .collect()
    };
    let want = grads(DType::F64);
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 0.05)] {
        for (got, want) in grads(dtype).iter().zip(&want) {
            let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= tol * scale, "{dtype}: got {g}, want {w} (scale {scale})");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// On f32 the attention runs as one fused op: its output and gradients (through strided head
    /// views, as the model passes them) match the composed, gradchecked f64 form.
    #[test]
    fn fused_f32_attention_matches_composed_f64(
        b in 1usize..3, hkv in 1usize..3, rep in 1usize..4, t in 1usize..9, extra in 0usize..3,
        d in 1usize..9, seed in any::<u64>(),
    ) {
        let (hq, s) = (hkv * rep, t + extra);
        // Stored as [B, T, H, D] like a projection's output; the op sees [B, H, T, D] views.
        let base = [randn(seed, &[b, t, hq, d]), randn(seed ^ 1, &[b, s, hkv, d]), randn(seed ^ 2, &[b, s, hkv, d])];
        let dout = randn(seed ^ 3, &[b, hq, t, d]);
        let scale = 1.0 / (d as f64).sqrt();
        let run = |dt: DType| {
            let tape = Tape::new();
            let leaves: Vec<Var> = base.iter().map(|x| tape.param(x.to_dtype(dt).unwrap())).collect();
            let views: Vec<Var> = leaves.iter().map(|x| x.transpose(1usize, 2usize).unwrap()).collect();
            let out = if dt == DType::F32 {
                views[0].causal_attention(&views[1], &views[2], scale).unwrap()
            } else {
                views[0].causal_attention_composed(&views[1], &views[2], scale).unwrap()
            };
            let loss = out.mul(&Var::constant(dout.to_dtype(dt).unwrap())).unwrap().sum_all().unwrap();
            let grads = tape.backward(&loss).unwrap();
            let mut all = vec![out.tensor().to_vec_f64().unwrap()];
            all.extend(leaves.iter().map(|x| grads.get(x).unwrap().to_vec_f64().unwrap()));
            (all, tape.to_string())
        };
        let ((fused, fused_tape), (composed, _)) = (run(DType::F32), run(DType::F64));
        prop_assert!(fused_tape.contains("causal_attention") && !fused_tape.contains("softmax"), "{}", fused_tape);
        for (f, c) in fused.iter().zip(&composed) {
            for (x, y) in f.iter().zip(c) {
                prop_assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "fused {x} vs composed {y}");
            }
        }
    }
}

#[test]
fn causal_attention_rejects_bad_shapes() {
    let c = |s: &[usize]| Var::constant(Tensor::zeros(s, DType::F64, &Device::Cpu).unwrap());
    let msg = c(&[1, 3, 2, 4]).causal_attention(&c(&[1, 2, 2, 4]), &c(&[1, 2, 2, 4]), 1.0).unwrap_err().to_string();
    assert!(msg.contains("causal_attention") && msg.contains("[1, 3, 2, 4]") && msg.contains("multiple"), "{msg}");
    let msg = c(&[1, 2, 3, 4]).causal_attention(&c(&[1, 2, 2, 4]), &c(&[1, 2, 2, 4]), 1.0).unwrap_err().to_string();
    assert!(msg.contains("more queries than keys"), "{msg}");
    assert!(c(&[2, 4]).causal_attention(&c(&[2, 4]), &c(&[2, 4]), 1.0).is_err());
}

// ---- indexing and selection ------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Ids repeat (drawn with replacement), so accumulation into one row is exercised.
    #[test]
    fn embedding(v in 1usize..6, d in 1usize..5, ids_shape in prop::collection::vec(small_dim(), 1..3), seed in any::<u64>()) {
        let table = randn(seed, &[v, d]);
        let ids = int_ids(seed ^ 1, &ids_shape, v);
        check("embedding", |x| x[0].embedding(&ids), &[table])?;
    }

    #[test]
    fn index_select(shape in prop::collection::vec(small_dim(), 3), dim in 0usize..3, n in 1usize..6, seed in any::<u64>()) {
        let x = randn(seed, &shape);
        let ids = int_ids(seed ^ 1, &[n], shape[dim]);
        check("index_select", |v| v[0].index_select(dim, &ids), &[x])?;
    }

    /// Ids repeat (drawn with replacement): two slices of `src` added into one position.
    #[test]
    fn index_add(shape in prop::collection::vec(small_dim(), 3), dim in 0usize..3, n in 1usize..6, seed in any::<u64>()) {
        let x = randn(seed, &shape);
        let ids = int_ids(seed ^ 1, &[n], shape[dim]);
        let mut src_shape = shape.clone();
        src_shape[dim] = n;
        let src = randn(seed ^ 2, &src_shape);
        check("index_add", |v| v[0].index_add(dim, &ids, &v[1]), &[x, src])?;
    }

    /// The index may be smaller than the input in the other dims, and smaller than `src` in
    /// every dim (the unread part of `src` then gets a zero gradient).
    #[test]
    fn gather_scatter_add(
        shape in prop::collection::vec(small_dim(), 2), dim in 0usize..2, len in 1usize..5,
        shrink in prop::collection::vec(0usize..3, 2), grow in prop::collection::vec(0usize..2, 2),
        seed in any::<u64>(),
    ) {
        let x = randn(seed, &shape);
        let index_shape: Vec<usize> = (0..2).map(|e| if e == dim { len } else { (shape[e] - shrink[e].min(shape[e] - 1)).max(1) }).collect();
        let index = int_ids(seed ^ 1, &index_shape, shape[dim]);
        check("gather", |v| v[0].gather(dim, &index), std::slice::from_ref(&x))?;
        let src_shape: Vec<usize> = index_shape.iter().zip(&grow).map(|(i, g)| i + g).collect();
        let src = randn(seed ^ 2, &src_shape);
        check("scatter_add", |v| v[0].scatter_add(dim, &index, &v[1]), &[x, src])?;
    }

    #[test]
    fn topk(lead in small_dim(), n in 1usize..7, k_frac in 0.0f64..1.0, transposed in any::<bool>(), seed in any::<u64>()) {
        let k = 1 + ((n - 1) as f64 * k_frac) as usize;
        let shape = [lead, n];
        let x = distinct(seed, &if transposed { swapped(&shape) } else { shape.to_vec() });
        check("topk", |v| Ok(maybe_t(&v[0], transposed)?.topk(k)?.0), &[x])?;
    }

    /// The mask, the true branch and the false branch each broadcast in some dims.
    #[test]
    fn where_cond_masked_fill(
        shape in prop::collection::vec(small_dim(), 2),
        mask_ones in prop::collection::vec(any::<bool>(), 2),
        t_ones in prop::collection::vec(any::<bool>(), 2),
        f_drop in 0usize..3,
        seed in any::<u64>(),
    ) {
        let mask = random_mask(seed ^ 1, &broadcastable(&shape, &mask_ones, 0));
        let t = randn(seed, &broadcastable(&shape, &t_ones, 0));
        let f = randn(seed ^ 2, &broadcastable(&shape, &[false, false], f_drop));
        check("where_cond", |v| Var::where_cond(&mask, &v[0], &v[1])?.broadcast_as(&shape), &[t, f])?;
        let x = randn(seed ^ 3, &shape);
        check("masked_fill", |v| v[0].masked_fill(&mask, 0.75), &[x])?;
    }
}
