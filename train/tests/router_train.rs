//! Router training (spec §5.3, §5.5): the grouped split, the loss, the per-epoch cosine rate,
//! model selection, and learning a separable toy problem.

use std::collections::BTreeSet;

use brainstacks_autograd::{Tape, Var};
use brainstacks_model::router::{MetaRouter, MetaRouterConfig};
use brainstacks_tensor::{DType, Device, Rng, Tensor};
use brainstacks_train::Result;
use brainstacks_train::router_train::*;

const D_MODEL: usize = 8;
const DOMAINS: usize = 3;

/// Domain `k`'s direction: +3 on feature `2k` and -3 on `2k + 1`.
fn direction(k: usize) -> Vec<f32> {
    let mut v = vec![0f32; D_MODEL];
    v[2 * k] = 3.0;
    v[2 * k + 1] = -3.0;
    v
}

/// A prompt of `tokens` tokens: `signal` tokens per listed domain carry that domain's direction
/// (plus N(0, 1) noise) and the rest are filler (noise only).
///
/// The filler matters. The router tells domains apart only through *which tokens* each domain's
/// query attends to (fusion and head are shared), so in a prompt whose tokens all look alike every
/// domain's context vector is the same and so is every logit. With filler, domain `k`'s query
/// learns to pick out the direction-`k` tokens when there are some and lands on filler otherwise.
fn prompt(domains: &[usize], signal: usize, tokens: usize, rng: &mut Rng) -> Tensor {
    let mut v = Tensor::randn(rng, 0.0, 1.0, &[tokens, D_MODEL], DType::F32, &Device::Cpu).unwrap().to_vec::<f32>().unwrap();
    for (n, &k) in domains.iter().enumerate() {
        let dir = direction(k);
        for s in 0..signal {
            // Spread the signal tokens: position (n * signal + s) * 2 of the prompt.
            let t = (n * signal + s) * 2;
            for j in 0..D_MODEL {
                v[t * D_MODEL + j] += dir[j];
            }
        }
    }
    Tensor::from_vec(v, &[tokens, D_MODEL], &Device::Cpu).unwrap()
}

fn toy_examples(n_single: usize, n_mixed: usize, seed: u64) -> Vec<RouterExample> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for i in 0..n_single {
        let k = i % DOMAINS;
        let mut target = vec![0.0; DOMAINS];
        target[k] = 1.0;
        out.push(RouterExample { features: prompt(&[k], 2, 5 + i % 4, &mut rng), target, kind: ExampleKind::Single(k) });
    }
    for i in 0..n_mixed {
        let (a, b) = (i % DOMAINS, (i + 1) % DOMAINS);
        let mut target = vec![0.0; DOMAINS];
        target[a] = 1.0;
        target[b] = 1.0;
        out.push(RouterExample { features: prompt(&[a, b], 2, 9 + i % 3, &mut rng), target, kind: ExampleKind::Mixed });
    }
    out
}

fn toy_router(tape: &Tape, seed: u64) -> MetaRouter {
    let mut cfg = MetaRouterConfig::new(D_MODEL, vec!["chat".into(), "code".into(), "math".into()]);
    cfg.hidden = 16;
    MetaRouter::new(tape, cfg, DType::F32, &mut Rng::new(seed)).unwrap()
}

#[test]
fn split_never_puts_a_group_on_both_sides() -> Result<()> {
    for (n, groups, seed) in [(50, 7, 1u64), (1000, 300, 2), (3000, 2500, 3), (10, 10, 4), (9, 2, 5)] {
        // Group sizes vary: example i belongs to group (i * i) % groups.
        let keys: Vec<String> = (0..n).map(|i| format!("prompt {}", (i * i) % groups)).collect();
        let s = split_grouped(&keys, VAL_FRACTION, MIN_VAL, seed)?;
        let train_groups: BTreeSet<&str> = s.train.iter().map(|&i| keys[i].as_str()).collect();
        let val_groups: BTreeSet<&str> = s.val.iter().map(|&i| keys[i].as_str()).collect();
        assert!(train_groups.is_disjoint(&val_groups), "n {n}: a group is on both sides");
        let mut all: Vec<usize> = s.train.iter().chain(&s.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "every example exactly once");
        assert!(!s.train.is_empty() && !s.val.is_empty());
        // The target size is reached unless only groups too big to move are left.
        let want = ((0.1 * n as f64).ceil() as usize).max(200.min(n / 2));
        if groups >= 10 {
            assert!(s.val.len() >= want, "n {n}: {} validation examples, wanted {want}", s.val.len());
        }
        assert_eq!(split_grouped(&keys, VAL_FRACTION, MIN_VAL, seed)?, s, "same seed, same split");
    }
    // 3000 examples: 10 % = 300 > 200.
    let keys: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
    assert_eq!(split_grouped(&keys, VAL_FRACTION, MIN_VAL, 9)?.val.len(), 300);
    // Another seed, another split.
    assert_ne!(split_grouped(&keys, VAL_FRACTION, MIN_VAL, 9)?, split_grouped(&keys, VAL_FRACTION, MIN_VAL, 10)?);
    assert!(split_grouped(&["only"], VAL_FRACTION, MIN_VAL, 1).is_err());
    assert!(split_grouped(&["a", "b"], 1.5, MIN_VAL, 1).is_err());
    // Group keys are the first 100 characters.
    let long = "é".repeat(150);
    assert_eq!(prompt_group_key(&long).chars().count(), 100);
    assert_eq!(prompt_group_key(&long), prompt_group_key(&format!("{}xyz", "é".repeat(100))));
    Ok(())
}

#[test]
fn loss_matches_its_definition() -> Result<()> {
    let z = [-3.0f64, -0.1, 0.0, 0.4, 2.5, 40.0];
    let y = [0.0f64, 1.0, 0.2, 0.5, 1.0, 0.0];
    let (margin_weight, margin) = (0.05, 0.3);
    let mut bce = 0.0;
    let mut hinge = 0.0;
    for (&z, &y) in z.iter().zip(&y) {
        let s = 1.0 / (1.0 + (-z).exp());
        // -(y ln s + (1 - y) ln(1 - s)), with ln(1 - s) = -z - ln(1 + e^-z) to stay exact at z = 40.
        bce += -(y * s.ln() + (1.0 - y) * (-z - (-z).exp().ln_1p()));
        hinge += (margin - (s - 0.5f64).abs()).max(0.0);
    }
    let want = bce / 6.0 + margin_weight * hinge / 6.0;
    let zt = Var::constant(Tensor::from_vec(z.to_vec(), &[2, 3], &Device::Cpu)?);
    let yt = Tensor::from_vec(y.to_vec(), &[2, 3], &Device::Cpu)?;
    let got = router_loss(&zt, &yt, margin_weight, margin)?.tensor().to_scalar_f64()?;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    assert!(router_loss(&zt, &yt.reshape(&[3, 2])?, 0.05, 0.3).is_err());
    Ok(())
}

#[test]
fn cosine_rate_is_stepped_once_per_epoch() -> Result<()> {
    let cfg = RouterTrainConfig::default();
    assert_eq!(
        (cfg.lr, cfg.weight_decay, cfg.batch, cfg.epochs, cfg.grad_clip, cfg.margin_weight, cfg.margin),
        (8e-4, 0.01, 16, 8, 1.0, 0.05, 0.3)
    );
    for e in 0..8 {
        let want = 8e-4 * 0.5 * (1.0 + (std::f64::consts::PI * e as f64 / 8.0).cos());
        assert!((cfg.lr_at_epoch(e)? - want).abs() < 1e-18, "epoch {e}");
    }
    assert_eq!(cfg.lr_at_epoch(0)?, 8e-4);
    Ok(())
}

#[test]
fn learns_a_separable_toy_and_keeps_the_best_epoch() -> Result<()> {
    let data = toy_examples(600, 120, 21);
    let keys: Vec<String> = (0..data.len()).map(|i| format!("prompt {}", i / 2)).collect();
    let split = split_grouped(&keys, 0.1, 60, 22)?;
    let train: Vec<RouterExample> = split.train.iter().map(|&i| data[i].clone()).collect();
    let val: Vec<RouterExample> = split.val.iter().map(|&i| data[i].clone()).collect();
    assert!(val.iter().any(|e| e.kind == ExampleKind::Mixed) && val.iter().any(|e| e.kind != ExampleKind::Mixed));

    let tape = Tape::new();
    let mut net = toy_router(&tape, 23);
    let cfg = RouterTrainConfig { lr: 5e-3, epochs: 5, seed: 24, ..RouterTrainConfig::default() };
    let report = train_router(&mut net, &tape, &train, &val, &cfg)?;
    for line in report.lines() {
        println!("{line}");
    }
    assert_eq!(report.epochs.len(), 5);
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    for (e, ep) in report.epochs.iter().enumerate() {
        assert_eq!(ep.epoch, e + 1);
        assert_eq!(ep.lr, cfg.lr_at_epoch(e)?);
        assert!((ep.score - (0.5 * ep.val.single_top1 + 0.35 * ep.val.mixed_set - 0.15 * ep.val.bce)).abs() < 1e-12);
    }
    let best = &report.epochs[report.best_epoch - 1];
    assert!(report.epochs.iter().all(|e| e.score <= best.score));
    assert_eq!(best.score, report.best_score);
    assert_eq!(best.val.single_top1, 1.0, "single-domain top-1 on validation");
    assert_eq!(best.val.mixed_set, 1.0, "mixed top-2 sets on validation");
    assert!(best.val.bce < report.initial.bce, "{} vs initial {}", best.val.bce, report.initial.bce);
    assert!(report.epochs.last().unwrap().train_loss < report.epochs[0].train_loss);

    // The router holds the best epoch's parameters: evaluating it again gives that epoch's numbers.
    let val_refs: Vec<&RouterExample> = val.iter().collect();
    let again = evaluate_router(&net, &val_refs, 7)?;
    assert!((again.bce - best.val.bce).abs() < 1e-6);
    assert_eq!((again.single_top1, again.mixed_set), (best.val.single_top1, best.val.mixed_set));
    // The same seed trains the same router.
    let tape2 = Tape::new();
    let mut net2 = toy_router(&tape2, 23);
    let report2 = train_router(&mut net2, &tape2, &train, &val, &cfg)?;
    assert_eq!(report2, report);
    Ok(())
}

#[test]
fn no_mixed_validation_examples_is_noted_and_counted_as_zero() -> Result<()> {
    let data = toy_examples(40, 0, 31);
    let (train, val) = data.split_at(32);
    let tape = Tape::new();
    let mut net = toy_router(&tape, 32);
    let cfg = RouterTrainConfig { epochs: 1, ..RouterTrainConfig::default() };
    let report = train_router(&mut net, &tape, train, val, &cfg)?;
    assert_eq!(report.epochs[0].val.mixed, 0);
    assert_eq!(report.epochs[0].val.mixed_set, 0.0);
    assert!(report.notes.iter().any(|n| n.contains("no mixed examples")));
    assert!(report.lines()[0].contains("mixed n/a"));
    Ok(())
}

#[test]
fn bad_examples_are_errors() {
    let tape = Tape::new();
    let mut net = toy_router(&tape, 41);
    let good = toy_examples(4, 0, 42);
    let cfg = RouterTrainConfig { epochs: 1, ..RouterTrainConfig::default() };
    let mut wrong_target = good.clone();
    wrong_target[0].target = vec![1.0, 0.0];
    assert!(train_router(&mut net, &tape, &wrong_target, &good, &cfg).is_err());
    let mut out_of_range = good.clone();
    out_of_range[1].target[0] = 1.5;
    assert!(train_router(&mut net, &tape, &out_of_range, &good, &cfg).is_err());
    let mut bad_index = good.clone();
    bad_index[2].kind = ExampleKind::Single(3);
    assert!(train_router(&mut net, &tape, &good, &bad_index, &cfg).is_err());
    let mut wide = good.clone();
    wide[0].features = Tensor::zeros(&[3, D_MODEL + 1], DType::F32, &Device::Cpu).unwrap();
    assert!(train_router(&mut net, &tape, &wide, &good, &cfg).is_err());
    assert!(train_router(&mut net, &tape, &good, &[], &cfg).is_err());
    assert!(train_router(&mut net, &tape, &good, &good, &RouterTrainConfig { batch: 0, ..cfg.clone() }).is_err());
    assert!(train_router(&mut net, &tape, &good, &good, &RouterTrainConfig { grad_clip: 0.0, ..cfg }).is_err());
}
