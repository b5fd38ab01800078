//! The MoE-LoRA stack: gate invariants, noise determinism, the zero-B no-op, the load-balancing
//! and z losses, gradients through gate and experts together, and the parameter count.

use brainstacks_autograd::{GradcheckOptions, Tape, Var, gradcheck};
use brainstacks_model::moe_lora::{GateNoise, MoeLora, MoeLoraConfig, noisy_top_k};
use brainstacks_tensor::{DType, Device, Rng, Tensor};

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::randn(&mut Rng::new(seed), 0.0, 1.0, shape, DType::F64, &Device::Cpu).unwrap()
}

#[test]
fn gates_keep_exactly_k_experts_summing_to_one() {
    for (e, k) in [(4usize, 2usize), (8, 1), (5, 5), (64, 2)] {
        let x = Var::constant(randn(1, &[33, 16]));
        let wr = Var::constant(randn(2, &[e, 16]));
        let wn = Var::constant(randn(3, &[e, 16]));
        for noise in [None, Some(GateNoise { seed: 4, step: 7, layer: 1 }.sample(33, e, DType::F64, &Device::Cpu).unwrap())] {
            let g = noisy_top_k(&x, &wr, &wn, k, noise.as_ref()).unwrap();
            let dense = g.dense_gates().unwrap().to_vec::<f64>().unwrap();
            for row in dense.chunks(e) {
                assert_eq!(row.iter().filter(|v| **v != 0.0).count(), k, "{row:?}");
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
            let f = g.dispatch_fraction().unwrap();
            assert!((f.iter().sum::<f64>() - k as f64).abs() < 1e-12);
        }
    }
}

#[test]
fn noise_is_reproducible_and_independent_per_step_and_layer() {
    let n = GateNoise { seed: 9, step: 3, layer: 2 };
    let a = n.sample(100, 4, DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(a, n.sample(100, 4, DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap());
    assert_ne!(a, GateNoise { step: 4, ..n }.sample(100, 4, DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap());
    assert_ne!(a, GateNoise { layer: 3, ..n }.sample(100, 4, DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap());
    let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / a.len() as f64;
    assert!(mean.abs() < 0.3, "{mean}");
}

#[test]
fn a_fresh_stack_is_an_exact_no_op_and_evaluation_is_deterministic() {
    let tape = Tape::new();
    let stack = MoeLora::new(&tape, 24, 10, &MoeLoraConfig::default(), &mut Rng::new(0), DType::F32).unwrap();
    let x = Var::constant(Tensor::randn(&mut Rng::new(5), 0.0, 1.0, &[3, 4, 24], DType::F32, &Device::Cpu).unwrap());
    let out = stack.forward(&x, Some(GateNoise { seed: 1, step: 0, layer: 0 })).unwrap();
    assert_eq!(out.delta.shape(), &[3, 4, 10]);
    assert!(out.delta.tensor().to_vec::<f32>().unwrap().iter().all(|v| v.to_bits() == 0));
    let e1 = stack.forward(&x, None).unwrap().gate.idx.to_vec::<i64>().unwrap();
    let e2 = stack.forward(&x, None).unwrap().gate.idx.to_vec::<i64>().unwrap();
    assert_eq!(e1, e2);
}

#[test]
fn gradients_through_gate_and_experts_pass_gradcheck() {
    // Inputs: x, A, B, W_r, W_n; the loss mixes the delta with the load-balancing and z losses.
    let (t, d_in, d_out, e, r, k) = (7, 6, 5, 4, 3, 2);
    let eps = randn(11, &[t, e]);
    let inputs = [randn(1, &[t, d_in]), randn(2, &[e, r, d_in]), randn(3, &[e, d_out, r]), randn(4, &[e, d_in]), randn(5, &[e, d_in])];
    gradcheck(
        |v| {
            let wrap = |e: brainstacks_model::Error| brainstacks_autograd::Error::Invalid { op: "gate".into(), msg: e.to_string() };
            let g = noisy_top_k(&v[0], &v[3], &v[4], k, Some(&eps)).map_err(wrap)?;
            let delta = v[0].moe_lora(&g.idx, &g.gates, &v[1], &v[2], 2.0)?;
            let aux = g.load_balance_loss().map_err(wrap)?;
            let z = g.z_loss().map_err(wrap)?;
            delta.tanh()?.sum_all()?.add(&aux.mul_scalar(0.5)?)?.add(&z.mul_scalar(0.1)?)
        },
        &inputs,
        GradcheckOptions::default(),
    )
    .unwrap();
}

#[test]
fn load_balance_loss_is_k_for_uniform_routing() {
    // Zero logits: P(e) = 1/E; with T a multiple of E and routing spread evenly, f(e) = k/E.
    let x = Var::constant(Tensor::zeros(&[8, 3], DType::F64, &Device::Cpu).unwrap());
    let w = Var::constant(Tensor::zeros(&[4, 3], DType::F64, &Device::Cpu).unwrap());
    let g = noisy_top_k(&x, &w, &w, 2, None).unwrap();
    let f = g.dispatch_fraction().unwrap();
    let p_uniform_loss = 4.0 * f.iter().map(|fe| 0.25 * fe).sum::<f64>();
    assert!((g.load_balance_loss().unwrap().tensor().to_scalar_f64().unwrap() - p_uniform_loss).abs() < 1e-12);
    assert!((p_uniform_loss - 2.0).abs() < 1e-12, "sum f = k, so E * sum (1/E) f = k");
    // z-loss of zero logits: logsumexp = ln 4.
    let z = g.z_loss().unwrap().tensor().to_scalar_f64().unwrap();
    assert!((z - 4f64.ln().powi(2)).abs() < 1e-12);
}

#[test]
fn parameter_count_matches_the_spec() {
    // TinyLlama-1.1B: 22 layers, hidden 2048, FFN 5632, kv-dim 256; seven projections per layer.
    let cfg = MoeLoraConfig::default();
    let projections = [(2048, 2048), (2048, 256), (2048, 256), (2048, 2048), (2048, 5632), (2048, 5632), (5632, 2048)];
    let per_layer: usize = projections.iter().map(|&(i, o)| cfg.param_count(i, o)).sum();
    let total = 22 * per_layer;
    assert_eq!(total, 53_616_640); // 50_462_720 LoRA + 3_153_920 routing
    let lora_only: usize = 22 * projections.iter().map(|&(i, o)| cfg.experts * cfg.rank * (i + o)).sum::<usize>();
    assert_eq!(lora_only, 50_462_720); // "50.46M LoRA + 3.15M routing = 53.6M"
    // A single LoRA of rank 4r on the same projections has the LoRA part's count.
    let single: usize = 22 * projections.iter().map(|&(i, o)| 64 * (i + o)).sum::<usize>();
    assert_eq!(single, lora_only);
    // And a built stack has exactly the formula's parameters.
    let tape = Tape::new();
    let s = MoeLora::new(&tape, 48, 20, &cfg, &mut Rng::new(0), DType::F32).unwrap();
    let n: usize = s.params().iter().map(|p| p.tensor().elem_count()).sum();
    assert_eq!(n, cfg.param_count(48, 20));
}
