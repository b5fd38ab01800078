//! The router pipeline on a finished toy run: the oracle on held-out examples (cached per domain),
//! the three compositions, domains loaded on demand.

use std::path::{Path, PathBuf};

use brainstacks_model::stacks::StackId;
use brainstacks_train::boost::prepare::prepare_domain;
use brainstacks_train::boost::{Quiet, Run, RunConfig};
use brainstacks_train::router::discovery::{cache_path, discover_domain};
use brainstacks_train::router::evaluate::evaluate_modes;
use brainstacks_train::router::oracle::OracleConfig;
use brainstacks_train::router::pipeline::{NoProgress, RouterOptions, RunRouter, train_run_router};
use brainstacks_train::router::routed::{Composition, RunModel};
use brainstacks_train::router_train::RouterTrainConfig;

type R = Result<(), Box<dyn std::error::Error>>;

fn write_domain(path: &Path, n: usize, task: fn(usize) -> (String, String)) {
    let lines: Vec<String> = (0..n).map(task).map(|(q, a)| serde_json::json!({"instruction": q, "output": a}).to_string()).collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

fn word(i: usize) -> String {
    (0..4).map(|j| b"abcdefghij"[(i * 7 + j * 3 + i / 5) % 10] as char).collect()
}

/// A finished two-domain toy run.
fn toy_run(tag: &str) -> (PathBuf, RunConfig) {
    let dir = std::env::temp_dir().join(format!("bs-router-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_domain(&dir.join("upper.jsonl"), 60, |i| (format!("make upper case: {}", word(i)), word(i).to_uppercase()));
    write_domain(&dir.join("reverse.jsonl"), 60, |i| (format!("reverse the letters: {}", word(i)), word(i).chars().rev().collect()));
    let cfg: RunConfig = serde_json::from_value(serde_json::json!({
        "out_dir": dir.join("run"), "model": {"toy": [32, 64, 2, 4, 2], "toy_seed": 2},
        "domains": [{"name": "upper", "train": dir.join("upper.jsonl")}, {"name": "reverse", "train": dir.join("reverse.jsonl")}],
        "rank": 4, "alpha": 4.0, "lr": 1e-2, "warmup_steps": 1, "micro_batch": 4, "grad_accum": 1, "seq_len": 256,
        "steps_per_round": 6, "max_rounds": 1, "eval_every": 3, "eval_samples": 4, "val_fraction": 0.2,
        "null_space": {"k": 2, "samples": 4}
    }))
    .unwrap();
    Run::prepare(cfg.clone()).unwrap().run(&mut Quiet).unwrap();
    (dir, cfg)
}

#[test]
fn oracle_compositions_and_lazy_loading_on_a_finished_run() -> R {
    let (dir, cfg) = toy_run("pipeline");
    let rm = RunModel::open(&cfg.out_dir)?;
    assert!(rm.stacks.frozen_ids().is_empty(), "nothing is loaded before it is needed");
    rm.compose(&Composition::Weighted([("reverse".to_string(), 0.7)].into()))?;
    assert_eq!(rm.stacks.frozen_ids(), vec![StackId::new("reverse", 1)]);

    let prepared = cfg.domains.iter().map(|d| prepare_domain(&rm.config, d, rm.encoder.as_ref())).collect::<Result<Vec<_>, _>>()?;
    let oracle = OracleConfig::default();
    let mut calls = 0;
    let found = discover_domain(&rm, &prepared, 0, 3, 256, &oracle, false, |_, _| calls += 1)?;
    assert_eq!((found.discoveries.len(), calls), (3, 3));
    for d in &found.discoveries {
        assert_eq!(d.label, 0);
        assert!(d.best_loss <= d.base_loss && d.target.iter().all(|t| (0.0..=1.0).contains(t)));
        assert!(d.target[0] >= 0.2 - 1e-12, "the label prior alone gives 0.2: {:?}", d.target);
    }
    assert!(cache_path(&rm, "upper").exists());
    // The cache is read back instead of recomputed.
    let again = discover_domain(&rm, &prepared, 0, 3, 256, &oracle, false, |_, _| panic!("recomputed"))?;
    assert_eq!(again, found);
    let share = found.share_excluding_own();
    assert!((0.0..=1.0).contains(&share) && found.mean_gain() >= 0.0);

    let modes = evaluate_modes(&rm, &prepared, None)?;
    assert_eq!(modes.len(), 2);
    for m in &modes {
        assert!(m.base.is_finite() && m.ungated.is_finite() && m.routed.is_none());
        assert_ne!(m.base, m.ungated);
    }
    // The router: trained from the oracle targets and label prompts, saved, loaded, routing.
    let opts = RouterOptions {
        label_samples: 12,
        oracle_samples: 3,
        hidden: 16,
        train: RouterTrainConfig { epochs: 2, batch: 8, lr: 5e-3, ..Default::default() },
        ..Default::default()
    };
    let summary = train_run_router(&cfg.out_dir, &opts, &mut NoProgress)?;
    assert!(summary.train_examples > 0 && summary.val_examples > 0 && summary.report_lines.len() >= 2);
    let router = RunRouter::load(&rm)?;
    let probs = router.probs("reverse the letters: abcd")?;
    assert!(probs.len() == 2 && probs.iter().all(|p| *p > 0.0 && *p < 1.0), "{probs:?}");
    let weights = router.weights("reverse the letters: abcd")?;
    assert!(weights.values().all(|w| *w > router.rule.gate));
    let routed = evaluate_modes(&rm, &prepared, Some(&router))?;
    assert!(routed.iter().all(|m| m.routed.is_some_and(f64::is_finite)));

    // The ungated loss of the last domain is what the run recorded at its end.
    let recorded = rm.manifest.forgetting.rows.last().unwrap().1.clone();
    assert_eq!(modes.iter().map(|m| m.ungated).collect::<Vec<_>>(), recorded);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn weighted_composition_is_independent_of_load_order() -> R {
    let (dir, cfg) = toy_run("order");
    let w: std::collections::BTreeMap<String, f64> = [("upper".to_string(), 0.6), ("reverse".to_string(), 0.3)].into();
    let ids = brainstacks_tensor::Tensor::from_vec(
        (0..20i64).map(|i| 97 + i % 7).collect::<Vec<_>>(),
        &[1, 20],
        &brainstacks_tensor::Device::Cpu,
    )?;
    let logits = |rm: &RunModel| -> Vec<f32> {
        brainstacks_autograd::no_grad(|| rm.model.forward(&ids, None)).unwrap().tensor().to_vec::<f32>().unwrap()
    };
    let a = RunModel::open(&cfg.out_dir)?;
    a.compose(&Composition::Weighted([("reverse".to_string(), 1.0)].into()))?; // reverse loaded first
    a.compose(&Composition::Weighted(w.clone()))?;
    let b = RunModel::open(&cfg.out_dir)?;
    b.compose(&Composition::Weighted(w))?; // upper first (canonical order)
    assert_eq!(logits(&a), logits(&b));
    // All weights 1 is the ungated composition, bit for bit.
    a.compose(&Composition::Weighted([("upper".to_string(), 1.0), ("reverse".to_string(), 1.0)].into()))?;
    let ones = logits(&a);
    a.compose(&Composition::Ungated)?;
    assert_eq!(logits(&a), ones);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
