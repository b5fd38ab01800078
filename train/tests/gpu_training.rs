//! Training on CUDA against the same steps on the CPU, at three levels:
//! - a 4-bit Llama's forward (both base precisions) and a greedy generation with the KV cache;
//! - one MoE-LoRA stack step with every piece the method adds: noisy top-2 gates, the
//!   load-balancing loss, a frozen stack, a null-space projector computed from captured deltas;
//! - the whole demo pipeline, shrunk, on the GPU (`brainstacks demo --device cuda`'s code path),
//!   checked against the same plan on the CPU where the two must agree (before training drifts
//!   apart through different float rounding and discrete expert choices).
//!
//! Without a usable GPU each test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

use brainstacks_autograd::{Tape, Var, no_grad};
use brainstacks_model::llama::{GenerateOptions, LlamaConfig, LlamaModel, Nf4AtLoad, Proj, RandomInit, next_token_cross_entropy};
use brainstacks_model::moe_lora::MoeLoraConfig;
use brainstacks_model::stacks::{NullSpaceMode, StackId, StackSet};
use brainstacks_tensor::{DType, Device, MatmulPrecision, Rng, Tensor};
use brainstacks_train::demo::{DemoOptions, Silent, run_demo};
use brainstacks_train::optim::{AdamW, AdamWConfig};

mod common;

use common::micro_plan;

fn gpu(test: &str) -> Option<Device> {
    let d = Device::Cuda(0);
    match d.check_available("gpu_training") {
        Ok(()) => Some(d),
        Err(e) => {
            assert!(std::env::var("REQUIRE_CUDA").as_deref() != Ok("1"), "REQUIRE_CUDA=1 but the GPU is unusable: {e}");
            println!("{test}: skipped: {e}");
            None
        }
    }
}

const VOCAB: usize = 97;

/// A 2-layer model whose seven projections are all NF4 (every in_features a multiple of 64).
fn model(device: &Device, precision: MatmulPrecision) -> LlamaModel {
    let cfg = LlamaConfig::small(64, 128, 2, 4, 2, VOCAB);
    let init = RandomInit { seed: 11, std: 0.05, dtype: DType::F32, nf4: Some(Nf4AtLoad { blocksize: 64, double_quant: true }) };
    let mut m = LlamaModel::random(cfg, &init).unwrap();
    m.base_matmul = precision;
    let m = m.to_device(device).unwrap();
    assert_eq!(m.device(), *device);
    m
}

fn ids() -> Tensor {
    let v: Vec<i64> = (0..24).map(|i| ((i * 37 + 5) % VOCAB) as i64).collect();
    Tensor::from_vec(v, &[2, 12], &Device::Cpu).unwrap()
}

/// `max |g - c|` and `max |c|` over two tensors of one shape (either device).
fn diff(g: &Tensor, c: &Tensor) -> (f64, f64) {
    assert_eq!(g.shape(), c.shape());
    let (gv, cv) = (g.to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
    let d = gv.iter().zip(&cv).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    (d, cv.iter().map(|x| x.abs()).fold(0.0, f64::max))
}

#[test]
fn forward_and_generation_match_the_cpu() {
    let Some(dev) = gpu("forward_and_generation_match_the_cpu") else { return };
    // f32 products agree to f32 rounding; bf16 ones (the NF4 tensor-core kernels against the
    // CPU's bf16 GEMM) to a few bf16 units after two layers.
    for (precision, tol) in [(MatmulPrecision::F32, 1e-4), (MatmulPrecision::Bf16, 3e-2)] {
        let (c, g) = (model(&Device::Cpu, precision), model(&dev, precision));
        let lc = no_grad(|| c.forward(&ids(), None)).unwrap();
        let lg = no_grad(|| g.forward(&ids(), None)).unwrap();
        assert!(lg.tensor().device().is_cuda(), "the logits left the GPU");
        let (d, scale) = diff(lg.tensor(), lc.tensor());
        assert!(d <= tol * (1.0 + scale), "{precision:?}: logits differ by {d} (max |logit| {scale})");
    }
    let (c, g) = (model(&Device::Cpu, MatmulPrecision::F32), model(&dev, MatmulPrecision::F32));
    let opts = GenerateOptions { max_new_tokens: 8, ..GenerateOptions::default() };
    let prompt = [3u32, 14, 15, 92, 65];
    let (tc, tg) = (c.generate(&prompt, &opts, |_| true).unwrap(), g.generate(&prompt, &opts, |_| true).unwrap());
    assert!(!tg.ids.is_empty() && !tc.ids.is_empty());
    // Greedy picks agree unless two logits tie to within the f32 difference (a later pick may
    // then differ, and with it where an end-of-sequence token stops); the first must agree.
    assert_eq!(tg.ids.first(), tc.ids.first());
}

/// Loss and every active-parameter gradient of one stack step on `device`, with a frozen stack
/// and a null-space projector in place (all values host copies).
fn stack_step(device: &Device) -> (f64, Vec<Tensor>) {
    let mut m = model(device, MatmulPrecision::F32);
    let stacks = StackSet::attach(&mut m, &Proj::ALL).unwrap();
    assert_eq!(stacks.device(), *device);
    let cfg = MoeLoraConfig { experts: 4, top_k: 2, rank: 4, alpha: 4.0 };
    // A first stack with non-zero B and noise weights (B starts at zero), frozen.
    let randomize = |stacks: &StackSet, seed: u64| {
        let mut rng = Rng::new(seed);
        stacks.update_active(|ps| {
            for (i, p) in ps.iter_mut().enumerate() {
                if i % 4 == 1 || i % 4 == 3 {
                    let v = Tensor::randn(&mut rng, 0.0, 0.05, p.shape(), p.dtype(), device).unwrap();
                    p.replace_value(v).unwrap();
                }
            }
        });
    };
    let tape = Tape::new();
    stacks.add_active(&tape, &cfg, 1).unwrap();
    randomize(&stacks, 2);
    stacks.freeze_active(StackId::new("first", 1)).unwrap();
    // Its deltas on a few sequences give the projector of the next stack.
    stacks.control().set_eval();
    stacks.begin_capture();
    no_grad(|| m.forward(&ids(), None)).unwrap();
    stacks.end_capture();
    let ranks = stacks.compute_null_spaces(4, 3, NullSpaceMode::PerDomainUnion, 1e-6).unwrap();
    assert!(ranks.iter().all(|&r| r > 0), "ranks {ranks:?}");

    stacks.add_active(&tape, &cfg, 4).unwrap();
    randomize(&stacks, 5);
    stacks.control().set_training(9, 0);
    let loss = next_token_cross_entropy(&m.forward(&ids(), None).unwrap(), &ids()).unwrap();
    let aux = stacks.control().take_aux_losses();
    assert!(!aux.is_empty(), "no load-balancing loss was recorded");
    let mut total: Var = loss.clone();
    for a in &aux {
        total = total.add(&a.mul_scalar(0.01).unwrap()).unwrap();
    }
    let grads = tape.backward(&total).unwrap();
    let params = stacks.active_params();
    let host =
        params.iter().map(|p| grads.get(p).expect("every active parameter gets a gradient").to_device(&Device::Cpu).unwrap()).collect();
    (loss.tensor().to_scalar_f64().unwrap(), host)
}

#[test]
fn a_stack_step_with_frozen_stack_and_projector_matches_the_cpu() {
    let Some(dev) = gpu("a_stack_step_with_frozen_stack_and_projector_matches_the_cpu") else { return };
    let (lc, gc) = stack_step(&Device::Cpu);
    let (lg, gg) = stack_step(&dev);
    assert!((lg - lc).abs() <= 1e-4 * lc.abs(), "loss gpu {lg} cpu {lc}");
    assert_eq!(gg.len(), gc.len());
    for (i, (g, c)) in gg.iter().zip(&gc).enumerate() {
        let (d, scale) = diff(g, c);
        assert!(d <= 1e-3 * scale + 1e-7, "gradient {i} ({:?}): differs by {d} (max |grad| {scale})", c.shape());
    }
}

/// Three AdamW steps of a parameter that takes the fused kernel on the GPU (f32, one contiguous
/// tensor and one transposed view) and the composed tensor ops on the CPU: the same bits.
#[test]
fn adamw_steps_on_the_gpu_equal_the_cpu_bit_for_bit() {
    let Some(dev) = gpu("adamw_steps_on_the_gpu_equal_the_cpu_bit_for_bit") else { return };
    let run = |device: &Device| -> Vec<Vec<u32>> {
        let randn = |seed: u64, shape: &[usize]| Tensor::randn(&mut Rng::new(seed), 0.0, 1.0, shape, DType::F32, &Device::Cpu).unwrap();
        let tape = Tape::new();
        let mut w = tape.param(randn(5, &[7, 33]).to_device(device).unwrap());
        let mut b = tape.param(randn(6, &[33, 5]).t().unwrap().to_device(device).unwrap());
        let mut opt = AdamW::new(AdamWConfig { lr: 0.05, weight_decay: 0.1, ..AdamWConfig::default() });
        for step in 0..3u64 {
            let x = Var::constant(randn(100 + step, &[7, 33]).to_device(device).unwrap());
            let y = Var::constant(randn(200 + step, &[5, 33]).to_device(device).unwrap());
            let loss = w.mul(&x).unwrap().square().unwrap().sum_all().unwrap().add(&b.mul(&y).unwrap().sum_all().unwrap()).unwrap();
            let grads = tape.backward(&loss).unwrap();
            opt.step(&mut [&mut w, &mut b], &grads).unwrap();
        }
        [w.tensor(), b.tensor()].iter().map(|t| t.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()).collect()
    };
    let (c, g) = (run(&Device::Cpu), run(&dev));
    assert_eq!(g, c);
}

/// A linear layer's weight gradient under a batched input: on CUDA one GEMM over the folded batch
/// (autograd's `weight_grad`), on the CPU one product per batch entry and their sum. Equal up to
/// f32 summation order; the input gradient too. The weight enters as a transposed view. (At
/// `MatmulPrecision::Bf16` CUDA still multiplies in f32, see its docs, so only f32 compares.)
#[test]
fn batched_linear_gradients_match_the_cpu() {
    let Some(dev) = gpu("batched_linear_gradients_match_the_cpu") else { return };
    let randn = |seed: u64, shape: &[usize]| Tensor::randn(&mut Rng::new(seed), 0.0, 1.0, shape, DType::F32, &Device::Cpu).unwrap();
    let (x0, w0, c0) = (randn(1, &[3, 17, 40]), randn(2, &[24, 40]), randn(3, &[3, 17, 24]));
    let run = |device: &Device| -> (Vec<f32>, Vec<f32>) {
        let tape = Tape::new();
        let x = tape.param(x0.to_device(device).unwrap());
        let w = tape.param(w0.to_device(device).unwrap());
        let y = x.matmul(&w.t().unwrap()).unwrap();
        let loss = y.mul(&Var::constant(c0.to_device(device).unwrap())).unwrap().sum_all().unwrap();
        let grads = tape.backward(&loss).unwrap();
        (grads.get(&w).unwrap().to_vec::<f32>().unwrap(), grads.get(&x).unwrap().to_vec::<f32>().unwrap())
    };
    let ((cw, cx), (gw, gx)) = (run(&Device::Cpu), run(&dev));
    for (what, c, g) in [("weight", &cw, &gw), ("input", &cx, &gx)] {
        assert_eq!(c.len(), g.len());
        // Sums of 51 (weight) or 24 (input) products of unit normals: f32 order noise ~1e-5.
        let worst = c.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-3, "{what} gradient: max |gpu - cpu| = {worst}");
    }
}

#[test]
fn the_demo_pipeline_runs_on_the_gpu() {
    let Some(dev) = gpu("the_demo_pipeline_runs_on_the_gpu") else { return };
    let run = |device: Device| {
        let out = std::env::temp_dir().join(format!("bs-gpu-demo-{}-{device}", std::process::id()).replace(':', "-"));
        let _ = std::fs::remove_dir_all(&out);
        let opts = DemoOptions { out: out.clone(), seed: 3, quick: true, plan: Some(micro_plan(3)), device };
        let r = run_demo(&opts, &mut Silent).unwrap_or_else(|e| panic!("demo on {device}: {e}"));
        std::fs::remove_dir_all(&out).ok();
        r
    };
    let (c, g) = (run(Device::Cpu), run(dev));
    assert_eq!(g.device, dev.to_string());
    // Before the first step both evaluate the same initial weights.
    let (c0, g0) = (c.pretrain.val_curve[0].loss, g.pretrain.val_curve[0].loss);
    assert!((g0 - c0).abs() <= 1e-4 * c0, "initial validation loss gpu {g0} cpu {c0}");
    // Six steps later they may differ by rounding, not by much.
    let (cf, gf) = (c.pretrain.final_val_loss, g.pretrain.final_val_loss);
    assert!((gf - cf).abs() <= 2e-2 * cf, "pretrained validation loss gpu {gf} cpu {cf}");
    assert_eq!(g.modes.len(), c.modes.len());
    for row in &g.modes {
        assert!(row.base.is_finite() && row.ungated.is_finite() && row.routed.is_finite(), "{row:?}");
    }
    for (rg, rc) in g.modes.iter().zip(&c.modes) {
        // The NF4 base is the same model on both devices: its losses must agree closely.
        assert!((rg.base - rc.base).abs() <= 2e-2 * rc.base, "{}: base loss gpu {} cpu {}", rg.domain, rg.base, rc.base);
    }
    println!("demo on {dev}: {:?}", g.timings);
    println!("demo on cpu: {:?}", c.timings);
}
