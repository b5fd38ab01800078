//! The router pipeline on a finished toy run: the oracle on held-out examples (cached per domain),
//! the three compositions, domains loaded on demand.

use std::path::{Path, PathBuf};

use brainstacks_model::stacks::StackId;
use brainstacks_train::boost::prepare::prepare_domain;
use brainstacks_train::boost::{Quiet, Run, RunConfig};
use brainstacks_train::router::discovery::{cache_path, discover_domain};
use brainstacks_train::router::evaluate::evaluate_modes;
use brainstacks_train::router::oracle::OracleConfig;
use brainstacks_train::router::routed::{Composition, RunModel};

type R = Result<(), Box<dyn std::error::Error>>;

fn write_domain(path: &Path, n: usize, task: fn(usize) -> (String, String)) {
    let lines: Vec<String> =
        (0..n).map(task).map(|(q, a)| serde_json::json!({"instruction": q, "output": a}).to_string()).collect();
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
    write_domain(&dir.join("upper.jsonl"), 60, |i| (format!("up {}", word(i)), word(i).to_uppercase()));
    write_domain(&dir.join("reverse.jsonl"), 60, |i| (format!("rev {}", word(i)), word(i).chars().rev().collect()));
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
    // The ungated loss of the last domain is what the run recorded at its end.
    let recorded = rm.manifest.forgetting.rows.last().unwrap().1.clone();
    assert_eq!(modes.iter().map(|m| m.ungated).collect::<Vec<_>>(), recorded);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
