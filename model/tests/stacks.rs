//! Stacks on a Llama: zero-B no-op, frozen stacks deterministic with input gradients, prefix
//! configurations reproducible bit for bit, canonical summation order, stack files, null space.

use brainstacks_autograd::{Tape, Var, no_grad};
use brainstacks_model::llama::{LlamaConfig, LlamaModel, Proj, RandomInit};
use brainstacks_model::moe_lora::MoeLoraConfig;
use brainstacks_model::stacks::{FrozenSelection, NullSpaceMode, StackId, StackOptions, StackSet};
use brainstacks_tensor::{DType, Device, Rng, Tensor};

type R = Result<(), Box<dyn std::error::Error>>;

fn model(dtype: DType) -> LlamaModel {
    let cfg = LlamaConfig::small(32, 48, 2, 4, 2, 40);
    LlamaModel::random(cfg, &RandomInit { seed: 3, std: 0.2, dtype, nf4: None }).unwrap()
}

fn ids(seed: i64) -> Tensor {
    let v: Vec<i64> = (0..12).map(|i| (i * 7 + seed * 3) % 40).collect();
    Tensor::from_vec(v, &[2, 6], &Device::Cpu).unwrap()
}

fn cfg() -> MoeLoraConfig {
    MoeLoraConfig { experts: 4, top_k: 2, rank: 3, alpha: 3.0 }
}

fn logits(m: &LlamaModel, ids: &Tensor) -> Vec<f32> {
    m.forward(ids, None).unwrap().tensor().to_vec::<f32>().unwrap()
}

/// Gives every B of the active stack random values, as training would.
fn randomize_b(set: &StackSet, seed: u64) {
    let mut rng = Rng::new(seed);
    set.update_active(|params| {
        for p in params.iter_mut().skip(1).step_by(4) {
            let shape = p.shape().to_vec();
            p.replace_value(Tensor::randn(&mut rng, 0.0, 0.3, &shape, p.dtype(), &Device::Cpu).unwrap()).unwrap();
        }
    });
}

#[test]
fn a_zero_b_stack_leaves_logits_bit_identical_in_both_modes() -> R {
    let mut m = model(DType::F32);
    let x = ids(1);
    let before = logits(&m, &x);
    let set = StackSet::attach(&mut m, &Proj::ALL)?;
    assert_eq!(logits(&m, &x), before, "attached but empty");
    set.add_active(&Tape::new(), &cfg(), 42)?;
    // Evaluation runs under no_grad: the same fused attention as the bare model.
    assert_eq!(no_grad(|| logits(&m, &x)), before, "zero-B stack, eval");
    set.control().set_training(7, 3);
    assert_eq!(no_grad(|| logits(&m, &x)), before, "zero-B stack, noisy gates");
    assert_eq!(set.control().take_aux_losses().len(), 14);
    // Recorded for a backward: on f32 CPU tensors the taped attention is the same f32 kernel
    // the untaped forward runs, so even the training forward gives the same bits.
    assert_eq!(logits(&m, &x), before, "zero-B stack, recorded for a backward");
    Ok(())
}

#[test]
fn attaching_twice_is_an_error() {
    let mut m = model(DType::F32);
    let _set = StackSet::attach(&mut m, &Proj::ALL).unwrap();
    let err = StackSet::attach(&mut m, &[Proj::Q]).unwrap_err();
    assert!(err.to_string().contains("already has an adapter"), "{err}");
}

#[test]
fn parameter_count_is_the_spec_formula() -> R {
    let mut m = model(DType::F32);
    let set = StackSet::attach(&mut m, &Proj::ALL)?;
    set.add_active(&Tape::new(), &cfg(), 1)?;
    let c = cfg();
    let expect: usize = set.modules().iter().map(|md| c.param_count(md.d_in, md.d_out)).sum();
    assert_eq!(set.active_param_count(), expect);
    // Layer dims: q 32->32, k/v 32->16, o 32->32, gate/up 32->48, down 48->32; 2 layers.
    let lora = 2 * c.experts * c.rank * ((32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 48) + (48 + 32));
    let routing = 2 * 2 * c.experts * (6 * 32 + 48);
    assert_eq!(expect, lora + routing);
    Ok(())
}

#[test]
fn frozen_stacks_are_deterministic_and_pass_input_gradients_unless_truncated() -> R {
    let mut m = model(DType::F64);
    let set = StackSet::attach(&mut m, &Proj::ALL)?;
    set.add_active(&Tape::new(), &cfg(), 5)?;
    randomize_b(&set, 9);
    set.freeze_active(StackId::new("a", 1))?;
    let x = ids(2);
    set.control().set_training(11, 0);
    let first = m.forward(&x, None)?.tensor().to_vec::<f64>()?;
    set.control().set_training(11, 1);
    let second = m.forward(&x, None)?.tensor().to_vec::<f64>()?;
    assert_eq!(first, second, "frozen stacks must not add noise during training by default");

    // A second (active) stack: its layer-0 parameters get gradients through layer-1's frozen
    // stack; truncating the frozen branch changes them.
    let tape = Tape::new();
    set.add_active(&tape, &cfg(), 6)?;
    randomize_b(&set, 10);
    let grad_a0 = |set: &StackSet| -> Vec<f64> {
        tape.clear();
        let loss = m.next_token_loss(&x).unwrap();
        let g = tape.backward(&loss).unwrap();
        let p = &set.active_params()[0];
        g.get(p).unwrap().to_vec::<f64>().unwrap()
    };
    let full = grad_a0(&set);
    set.control().set_options(StackOptions { truncate_frozen_grad: true, ..Default::default() });
    let truncated = grad_a0(&set);
    assert_ne!(full, truncated);
    // Frozen parameters never appear in the gradients.
    tape.clear();
    let loss = m.next_token_loss(&x)?;
    assert_eq!(tape.backward(&loss)?.len(), set.active_params().len());
    Ok(())
}

#[test]
fn prefix_configuration_is_bit_identical_after_later_domains() -> R {
    let mut m = model(DType::F32);
    let set = StackSet::attach(&mut m, &Proj::ALL)?;
    set.set_domain_order(&["chat".into(), "code".into()]);
    set.add_active(&Tape::new(), &cfg(), 1)?;
    randomize_b(&set, 1);
    set.freeze_active(StackId::new("chat", 1))?;
    let x = ids(3);
    set.control().set_selection(FrozenSelection::only(["chat"]));
    let recorded = logits(&m, &x);
    for round in 1..=2 {
        set.add_active(&Tape::new(), &cfg(), 10 + round as u64)?;
        randomize_b(&set, 20 + round as u64);
        set.freeze_active(StackId::new("code", round))?;
    }
    set.control().set_selection(FrozenSelection::All);
    assert_ne!(logits(&m, &x), recorded, "the later stacks change the ungated output");
    set.control().set_selection(FrozenSelection::only(["chat"]));
    assert_eq!(logits(&m, &x), recorded);
    Ok(())
}

#[test]
fn stack_files_round_trip_and_load_order_does_not_change_the_sum() -> R {
    let dir = std::env::temp_dir().join(format!("bs-stacks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let order = vec!["chat".to_string(), "code".to_string()];
    let mut m = model(DType::F32);
    let set = StackSet::attach(&mut m, &Proj::ALL)?;
    set.set_domain_order(&order);
    for (i, id) in [StackId::new("chat", 1), StackId::new("code", 1), StackId::new("code", 2)].into_iter().enumerate() {
        set.add_active(&Tape::new(), &cfg(), i as u64)?;
        randomize_b(&set, 100 + i as u64);
        set.freeze_active(id.clone())?;
        set.save_stack(&id, &dir.join(format!("{}_{}.safetensors", id.domain, id.round)))?;
    }
    let x = ids(4);
    let reference = logits(&m, &x);

    let mut m2 = model(DType::F32);
    let set2 = StackSet::attach(&mut m2, &Proj::ALL)?;
    set2.set_domain_order(&order);
    for name in ["code_2", "chat_1", "code_1"] {
        set2.load_stack(&dir.join(format!("{name}.safetensors")))?;
    }
    assert_eq!(set2.frozen_ids(), set.frozen_ids());
    assert_eq!(logits(&m2, &x), reference);
    let err = set2.load_stack(&dir.join("chat_1.safetensors")).unwrap_err();
    assert!(err.to_string().contains("already loaded"), "{err}");
    assert_eq!(set2.remove_domain("code"), 2);
    set.control().set_selection(FrozenSelection::only(["chat"]));
    assert_eq!(logits(&m2, &x), logits(&m, &x));

    // A model with different widths rejects the file, naming the tensor.
    let mut other = LlamaModel::random(LlamaConfig::small(16, 48, 2, 4, 2, 40), &RandomInit::default())?;
    let set3 = StackSet::attach(&mut other, &Proj::ALL)?;
    let err = set3.load_stack(&dir.join("chat_1.safetensors")).unwrap_err();
    assert!(err.to_string().contains("lora_A"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn null_space_from_captured_deltas_keeps_the_active_stack_out_of_frozen_directions() -> R {
    let mut m = model(DType::F64);
    let set = StackSet::attach(&mut m, &Proj::ALL)?;
    set.set_domain_order(&["a".into(), "b".into()]);
    for (i, d) in ["a", "b"].into_iter().enumerate() {
        set.add_active(&Tape::new(), &cfg(), i as u64)?;
        randomize_b(&set, 50 + i as u64);
        set.freeze_active(StackId::new(d, 1))?;
    }
    set.begin_capture();
    for s in 0..10 {
        let row = ids(s).narrow(0usize, 0, 1)?;
        m.forward(&row, None)?;
    }
    set.end_capture();
    let ranks = set.compute_null_spaces(4, 7, NullSpaceMode::PerDomainUnion, 1e-3)?;
    assert_eq!(ranks.len(), 14);
    // Each domain claims up to 4 directions (k/v outputs have 16 dims, others 32/48).
    assert!(ranks.iter().all(|&r| (5..=8).contains(&r)), "{ranks:?}");

    // Projector files round-trip.
    let file = std::env::temp_dir().join(format!("bs-ns-{}.safetensors", std::process::id()));
    set.save_null_spaces(&file)?;
    set.clear_null_spaces();
    assert!(set.null_space_ranks().iter().all(|&r| r == 0));
    set.load_null_spaces(&file)?;
    assert_eq!(set.null_space_ranks(), ranks);
    std::fs::remove_file(&file)?;

    let tape = Tape::new();
    set.add_active(&tape, &cfg(), 9)?;
    randomize_b(&set, 60);
    set.control().set_options(StackOptions { monitor_leakage: true, ..Default::default() });
    set.control().set_training(1, 0);
    m.forward(&ids(5), None)?;
    let leak = set.take_max_leakage();
    assert!(leak < 1e-5, "training-time leakage {leak}");
    assert!(leak >= 0.0);

    // persist_projection: after projecting B, even the eval-mode (unprojected) delta is orthogonal.
    set.project_active_b()?;
    set.control().set_eval();
    set.control().set_selection(FrozenSelection::Domains(Default::default()));
    let with_active = m.forward(&ids(5), None)?.tensor().to_vec::<f64>()?;
    assert!(with_active.iter().all(|v| v.is_finite()));
    set.control().set_training(1, 0);
    m.forward(&ids(5), None)?;
    assert!(set.take_max_leakage() < 1e-10);
    Ok(())
}

#[test]
fn bf16_compute_trains_f32_master_weights() -> R {
    let mut m = model(DType::BF16);
    let set = StackSet::attach(&mut m, &[Proj::Q, Proj::Down])?;
    let tape = Tape::new();
    set.add_active(&tape, &cfg(), 3)?;
    randomize_b(&set, 4);
    set.control().set_training(0, 0);
    let loss = m.next_token_loss(&ids(6))?;
    assert_eq!(loss.dtype(), DType::BF16);
    let grads = tape.backward(&loss)?;
    for p in set.active_params() {
        assert_eq!(p.dtype(), DType::F32);
        assert_eq!(grads.get(&p).map(Tensor::dtype), Some(DType::F32));
    }
    let _ = Var::constant(Tensor::zeros(&[1], DType::F32, &Device::Cpu)?);
    Ok(())
}

#[test]
fn per_row_weights_equal_the_matching_single_configurations_bit_for_bit() -> R {
    let mut m = model(DType::F32);
    let set = StackSet::attach(&mut m, &Proj::ALL)?;
    set.set_domain_order(&["a".into(), "b".into()]);
    for (i, d) in ["a", "b"].into_iter().enumerate() {
        set.add_active(&Tape::new(), &cfg(), i as u64)?;
        randomize_b(&set, 70 + i as u64);
        set.freeze_active(StackId::new(d, 1))?;
    }
    let one = ids(7).narrow(0usize, 0, 1)?;
    let three = Tensor::cat(&[&one, &one, &one], 0usize)?;
    let weights = [(0.0, 0.0), (1.0, 0.0), (0.5, 0.25)];
    let per_row = std::collections::BTreeMap::from([
        ("a".to_string(), weights.iter().map(|w| w.0).collect::<Vec<_>>()),
        ("b".to_string(), weights.iter().map(|w| w.1).collect::<Vec<_>>()),
    ]);
    set.control().set_selection(FrozenSelection::PerRow(per_row));
    let batched = no_grad(|| logits(&m, &three));
    let row_len = batched.len() / 3;
    for (r, &(wa, wb)) in weights.iter().enumerate() {
        let mut single = std::collections::BTreeMap::new();
        for (d, w) in [("a", wa), ("b", wb)] {
            if w != 0.0 {
                single.insert(d.to_string(), w);
            }
        }
        set.control().set_selection(FrozenSelection::Domains(single));
        assert_eq!(no_grad(|| logits(&m, &one)), batched[r * row_len..(r + 1) * row_len], "row {r}");
    }
    // All weights 1 is the ungated configuration, bit for bit.
    set.control().set_selection(FrozenSelection::only(["a", "b"]));
    let routed = no_grad(|| logits(&m, &one));
    set.control().set_selection(FrozenSelection::All);
    assert_eq!(no_grad(|| logits(&m, &one)), routed);
    Ok(())
}
