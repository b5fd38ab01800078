//! `Var::moe_lora` on CUDA tensors: the tape's gradients for `x`, the gates and both expert factor
//! tensors equal the same tape run on the CPU, within the f32 bound of `tensor/tests/gpu_moe_lora.rs`
//! (`2 (chain + 8) 2^-23 m`, `m` the gradient computed in f64 from the absolute values).
//!
//! Without a usable GPU each test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

use brainstacks_autograd::{Tape, Var};
use brainstacks_tensor::{DType, Device, Tensor};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

fn gpu() -> Option<Device> {
    let d = Device::Cuda(0);
    match d.check_available("gpu_moe_lora (autograd)") {
        Ok(()) => Some(d),
        Err(e) => {
            if std::env::var("REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("REQUIRE_CUDA=1 but the GPU is unusable: {e}");
            }
            println!("skipped: {e}");
            None
        }
    }
}

/// Uniform values in [-1, 1) from a xorshift seed.
fn vals(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// `k` distinct experts of `e` per token.
fn routing(seed: u64, t: usize, k: usize, e: usize) -> Vec<i64> {
    let mut s = seed | 1;
    let mut idx = Vec::with_capacity(t * k);
    for _ in 0..t {
        let mut row: Vec<i64> = Vec::new();
        while row.len() < k {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let c = (s % e as u64) as i64;
            if !row.contains(&c) {
                row.push(c);
            }
        }
        idx.extend(row);
    }
    idx
}

struct Case {
    t: usize,
    k: usize,
    e: usize,
    d_in: usize,
    r: usize,
    d_out: usize,
    seed: u64,
    strided_x: bool,
}

/// `(x, idx, gates, a, b, dy)` on `device`; `x` a transpose view when `strided_x`.
fn operands(c: &Case, device: &Device) -> [Tensor; 6] {
    let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_device(device).unwrap();
    let x = if c.strided_x {
        // stored [d_in, T]; its transpose is the [T, d_in] operand
        t(vals(c.seed, c.t * c.d_in), &[c.d_in, c.t]).t().unwrap()
    } else {
        t(vals(c.seed, c.t * c.d_in), &[c.t, c.d_in])
    };
    [
        x,
        Tensor::from_vec(routing(c.seed + 1, c.t, c.k, c.e), &[c.t, c.k], &Device::Cpu).unwrap().to_device(device).unwrap(),
        t(vals(c.seed + 2, c.t * c.k), &[c.t, c.k]),
        t(vals(c.seed + 3, c.e * c.r * c.d_in), &[c.e, c.r, c.d_in]),
        t(vals(c.seed + 4, c.e * c.d_out * c.r), &[c.e, c.d_out, c.r]),
        t(vals(c.seed + 5, c.t * c.d_out), &[c.t, c.d_out]),
    ]
}

/// The tape's gradients for `(x, gates, a, b)` with output gradient `dy`, on `device`.
fn tape_grads(c: &Case, device: &Device, scale: f64) -> Vec<Tensor> {
    let [x, idx, g, a, b, dy] = operands(c, device);
    let tape = Tape::new();
    let vars: Vec<Var> = [x, g, a, b].into_iter().map(|t| tape.param(t)).collect();
    let y = vars[0].moe_lora(&idx, &vars[1], &vars[2], &vars[3], scale).unwrap();
    assert_eq!(y.tensor().device(), *device, "the output stays on its device");
    let grads = tape.backward_with(&y, dy).unwrap();
    vars.iter().map(|v| grads.get(v).expect("every operand gets a gradient").clone()).collect()
}

fn check(dev: &Device, c: &Case) -> Result<(), TestCaseError> {
    let scale = 16.0 / (c.r as f64).sqrt();
    let got = tape_grads(c, dev, scale);
    let want = tape_grads(c, &Device::Cpu, scale);
    // magnitudes: the gradients in f64 from the absolute values
    let [x, idx, g, a, b, dy] = operands(c, &Device::Cpu);
    let abs = |t: &Tensor| t.to_dtype(DType::F64).unwrap().abs().unwrap();
    let m = Tensor::moe_lora_backward(&abs(&x), &idx, &abs(&g), &abs(&a), &abs(&b), scale, &abs(&dy)).unwrap();
    let er = c.e * c.r;
    let chains = [c.d_out + er, c.d_in + c.d_out + er, c.t + c.d_out + er, c.t + c.d_in + er];
    let names = ["dx", "dgates", "da", "db"];
    for (i, mag) in [&m.dx, &m.dgates, &m.da, &m.db].into_iter().enumerate() {
        prop_assert!(got[i].device().is_cuda(), "{}: gradient left the GPU", names[i]);
        prop_assert_eq!(got[i].shape(), want[i].shape(), "{}: shapes", names[i]);
        let (gv, wv, mv) = (got[i].to_vec_f64().unwrap(), want[i].to_vec_f64().unwrap(), mag.to_vec_f64().unwrap());
        for (j, ((&p, &q), &mm)) in gv.iter().zip(&wv).zip(&mv).enumerate() {
            let tol = 2.0 * (chains[i] + 8) as f64 * f32::EPSILON as f64 * mm;
            prop_assert!((p - q).abs() <= tol, "{}[{}]: gpu {} cpu {} (tol {})", names[i], j, p, q, tol);
        }
    }
    Ok(())
}

#[test]
fn tape_gradients_on_the_gpu_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let shapes = (1usize..=64, 1usize..=64).prop_flat_map(|(e, r)| {
        (
            prop_oneof![Just(0usize), Just(1), (0usize..30).prop_map(|v| 2 * v + 1)],
            1usize..=e.min(8),
            Just(e),
            1usize..70,
            Just(r),
            1usize..70,
        )
    });
    TestRunner::new(Config { cases: 24, failure_persistence: None, ..Config::default() })
        .run(&(shapes, any::<u64>(), any::<bool>()), |((t, k, e, d_in, r, d_out), seed, strided_x)| {
            check(&dev, &Case { t, k, e, d_in, r, d_out, seed, strided_x })
        })
        .unwrap();
}
