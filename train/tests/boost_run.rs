//! End-to-end Brainstacks runs on a toy model (byte tokenizer, random base): the inner and outer
//! loops, null space, prefix reproducibility, resume after a stop, and boosting on a task one
//! stack cannot fit.

use std::path::{Path, PathBuf};

use brainstacks_train::Error;
use brainstacks_train::boost::config::{DomainConfig, ModelSource, NullSpaceConfig, RunConfig};
use brainstacks_train::boost::manifest::Manifest;
use brainstacks_train::boost::{Quiet, Run, RunObserver};
use common::{files_under, timeless};

mod common;

type R = Result<(), Box<dyn std::error::Error>>;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bs-boost-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` Alpaca lines of a deterministic toy task.
fn write_domain(path: &Path, n: usize, task: fn(usize) -> (String, String)) {
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let (q, a) = task(i);
            serde_json::json!({"instruction": q, "input": "", "output": a}).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

fn word(i: usize) -> String {
    let letters = b"abcdefghij";
    (0..4).map(|j| letters[(i * 7 + j * 3 + i / 5) % 10] as char).collect()
}

fn upper(i: usize) -> (String, String) {
    (format!("up {}", word(i)), word(i).to_uppercase())
}

fn reverse(i: usize) -> (String, String) {
    (format!("rev {}", word(i)), word(i).chars().rev().collect())
}

fn config(dir: &Path, rounds: usize) -> RunConfig {
    write_domain(&dir.join("upper.jsonl"), 80, upper);
    write_domain(&dir.join("reverse.jsonl"), 80, reverse);
    let mut cfg: RunConfig = serde_json::from_value(serde_json::json!({
        "out_dir": dir.join("run"),
        "model": {"toy": [32, 64, 2, 4, 2], "toy_seed": 1},
        "domains": [
            {"name": "upper", "train": dir.join("upper.jsonl")},
            {"name": "reverse", "train": dir.join("reverse.jsonl")}
        ],
    }))
    .unwrap();
    cfg.rank = 4;
    cfg.alpha = 4.0;
    cfg.lr = 1e-2;
    cfg.warmup_steps = 2;
    cfg.micro_batch = 4;
    cfg.grad_accum = 1;
    cfg.seq_len = 256; // the Alpaca template alone is ~150 bytes
    cfg.steps_per_round = 12;
    cfg.max_rounds = rounds;
    cfg.eval_every = 4;
    cfg.eval_samples = 8;
    cfg.val_fraction = 0.1;
    cfg.null_space = NullSpaceConfig { k: 4, samples: 8, monitor_leakage: true, ..Default::default() };
    cfg
}

#[test]
fn a_two_domain_run_records_everything_and_reproduces_prefixes() -> R {
    let dir = temp_dir("full");
    let mut cfg = config(&dir, 2);
    cfg.grad_accum = 2;
    let mut run = Run::prepare(cfg.clone())?;
    let m = run.run(&mut Quiet)?.clone();
    assert_eq!(m.domains.len(), 2);
    for d in &m.domains {
        assert!(d.done && d.prefix_logits_fnv.is_some(), "{d:?}");
        assert!(!d.rounds.is_empty() && d.rounds.len() <= 2);
        for r in &d.rounds {
            let file = cfg.out_dir.join(r.file.as_ref().expect("kept"));
            assert!(file.exists(), "{}", file.display());
            assert!(r.best_val.is_finite() && r.best_val <= r.val_history[0].1);
        }
        // Training lowers the domain's validation loss below the baseline.
        assert!(d.rounds[0].best_val < d.baseline_val, "{} -> {}", d.baseline_val, d.rounds[0].best_val);
    }
    // The first domain has no projector; the second one has one at every module, and the
    // projected delta stayed orthogonal to it while training.
    assert!(m.domains[0].projector_ranks.is_empty());
    assert_eq!(m.domains[1].projector_ranks.len(), 14);
    assert!(m.domains[1].projector_ranks.iter().all(|&r| r >= 1));
    assert!(cfg.out_dir.join("reverse/null_space.safetensors").exists());
    for r in &m.domains[1].rounds {
        let leak = r.max_leakage.expect("monitored");
        assert!(leak < 1e-5, "leakage {leak}");
    }
    assert_eq!(m.forgetting.rows.len(), 2);
    assert!(m.forgetting.rows.iter().all(|(_, row)| row.len() == 2 && row.iter().all(|v| v.is_finite())));
    // The first domain's prefix configuration (its own stacks only) gives the same bits after the
    // second domain trained.
    assert_eq!(run.verify_prefixes()?, vec![("upper".to_string(), true), ("reverse".to_string(), true)]);
    assert_eq!(Manifest::load(&cfg.out_dir.join("manifest.json"))?, m);
    let metrics = std::fs::read_to_string(cfg.out_dir.join("metrics.jsonl"))?;
    assert!(metrics.lines().any(|l| l.contains("\"event\":\"step\"")));

    // Running again is a no-op resume; a different config in the same directory is refused.
    let mut again = Run::prepare(cfg.clone())?;
    assert_eq!(timeless(again.run(&mut Quiet)?), timeless(&m));
    let mut other = cfg.clone();
    other.lr = 5e-3;
    let err = Run::prepare(other).err().expect("config changed");
    assert!(err.to_string().contains("different config"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Stops the run after `rounds` rounds.
struct StopAfter(usize);
impl RunObserver for StopAfter {
    fn should_stop(&mut self) -> bool {
        self.0 = self.0.saturating_sub(1);
        self.0 == 0
    }
}

#[test]
fn a_stopped_run_resumes_to_the_same_results() -> R {
    let dir = temp_dir("resume");
    // Round 2 always meets the stop rule (gain < 10): a resume must see that in the manifest
    // and not train a third round.
    let mut cfg = config(&dir, 3);
    cfg.min_delta = 10.0;
    let reference = timeless(Run::prepare(cfg.clone())?.run(&mut Quiet)?);
    std::fs::remove_dir_all(&cfg.out_dir)?;
    // Stop after the second round overall: mid-way through (or at the end of) the first domain.
    let err = Run::prepare(cfg.clone())?.run(&mut StopAfter(2)).expect_err("stopped");
    assert!(matches!(err, Error::Interrupted(_)), "{err}");
    let mut resumed = Run::prepare(cfg.clone())?;
    assert!(!resumed.stacks.frozen_ids().is_empty(), "the saved stacks are loaded back");
    let m = timeless(resumed.run(&mut Quiet)?);
    assert_eq!(m, reference);
    assert!(m.domains.iter().all(|d| d.rounds.len() == 2 && d.stopped.as_deref() == Some("min_delta")));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Every file under `dir` with its bytes, but the metrics log (which grows).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .filter(|f| !f.ends_with("metrics.jsonl"))
        .map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap()))
        .collect()
}

#[test]
fn a_failing_write_stops_the_run_naming_the_file_and_keeps_what_was_written() -> R {
    use brainstacks_tensor::io::{WriteFault, inject_write_failure};
    let dir = temp_dir("write-fault");
    let cfg = config(&dir, 1);
    let reference = timeless(Run::prepare(cfg.clone())?.run(&mut Quiet)?);
    let out = &cfg.out_dir;
    let no_temporaries = |files: Vec<PathBuf>| assert!(files.iter().all(|f| !f.to_string_lossy().contains(".tmp.")), "{files:?}");

    // Disk full when the second domain's first stack is saved: the first domain stays complete.
    std::fs::remove_dir_all(out)?;
    let stack = out.join("reverse/stack_1.safetensors");
    let full = inject_write_failure(&stack.to_string_lossy(), WriteFault::DiskFull);
    let err = Run::prepare(cfg.clone())?.run(&mut Quiet).expect_err("the stack write fails").to_string();
    drop(full);
    assert!(err.contains("No space left on device") && err.contains("stack_1.safetensors"), "{err}");
    assert!(!stack.exists());
    no_temporaries(files_under(out));
    let m = Manifest::load(&out.join("manifest.json"))?;
    assert!(m.domains[0].done && m.domains[1].rounds.is_empty(), "{m:?}");
    brainstacks_tensor::io::SafeTensors::open(out.join(m.domains[0].rounds[0].file.as_ref().expect("kept")))?;
    assert_eq!(timeless(Run::prepare(cfg.clone())?.run(&mut Quiet)?), reference, "resumed after the disk-full error");

    // A read-only directory when the manifest is next rewritten: every file keeps its bytes.
    std::fs::remove_dir_all(out)?;
    let err = Run::prepare(cfg.clone())?.run(&mut StopAfter(1)).expect_err("stopped after one round");
    assert!(matches!(err, Error::Interrupted(_)), "{err}");
    let before = snapshot(out);
    let read_only = inject_write_failure(&out.join("manifest.json").to_string_lossy(), WriteFault::ReadOnly);
    let err = Run::prepare(cfg.clone())?.run(&mut Quiet).expect_err("the manifest write fails").to_string();
    drop(read_only);
    assert!(err.contains("Read-only file system") && err.contains("manifest.json"), "{err}");
    // run.json is rewritten by every start, with the same bytes.
    assert_eq!(snapshot(out), before);
    no_temporaries(files_under(out));
    assert_eq!(timeless(Run::prepare(cfg.clone())?.run(&mut Quiet)?), reference, "resumed after the read-only error");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn boosting_lowers_validation_loss_where_one_stack_cannot_fit() -> R {
    let dir = temp_dir("boost");
    let mut cfg = config(&dir, 3);
    cfg.domains.truncate(1);
    // One rank-1 expert per module and few steps: a single round underfits.
    cfg.experts = 1;
    cfg.top_k = 1;
    cfg.rank = 1;
    cfg.alpha = 1.0;
    cfg.steps_per_round = 8;
    cfg.min_delta = -1.0; // never stop early: all three rounds run
    let m = Run::prepare(cfg)?.run(&mut Quiet)?.clone();
    let best: Vec<f64> = m.domains[0].rounds.iter().map(|r| r.best_val).collect();
    assert_eq!(best.len(), 3);
    assert!(best[1] < best[0] - 0.01 && best[2] < best[1], "per-round best validation loss {best:?}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn config_errors_name_the_key() {
    let dir = temp_dir("cfg");
    let path = dir.join("run.json");
    std::fs::write(&path, r#"{"out_dir": "x", "model": {}, "domains": [], "lr": 1e-3}"#).unwrap();
    let err = RunConfig::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("\"domains\" is empty"), "{err}");
    std::fs::write(&path, r#"{"out_dir": "x", "model": {}, "domains": [{"name": "a", "train": "a.jsonl"}], "learning_rate": 1}"#).unwrap();
    let err = RunConfig::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("learning_rate"), "{err}");
    let _ = (
        ModelSource {
            path: None,
            nf4: false,
            dtype: "f32".into(),
            base_matmul: "f32".into(),
            toy: [8, 8, 1, 1, 1],
            toy_seed: 0,
            device: "cpu".into(),
        },
        DomainConfig { name: "a".into(), train: "a".into(), val: None, rounds: None, steps: None },
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rewrites every gradient of the chosen steps (1-based, per round) to NaN or infinity.
struct Poison {
    steps: Vec<usize>,
    skipped_seen: Vec<usize>,
}

impl RunObserver for Poison {
    fn on_gradients(&mut self, step: usize, grads: &mut brainstacks_autograd::Gradients) -> brainstacks_train::Result<()> {
        if self.steps.contains(&step) {
            let value = if step.is_multiple_of(2) { f64::NAN } else { f64::INFINITY };
            for (_, g) in grads.iter_mut() {
                *g = g.mul_scalar(0.0)?.add_scalar(value)?;
            }
        }
        Ok(())
    }
    fn on_step(&mut self, r: &brainstacks_train::boost::round::StepReport) {
        if r.skipped {
            self.skipped_seen.push(r.step);
        }
    }
}

#[test]
fn non_finite_steps_are_skipped_counted_and_end_the_round_when_they_persist() -> R {
    // Two isolated bad steps: skipped (no update), counted, the round runs to its end, and the
    // stack is as good as a clean run's would be allowed to be (finite, recorded).
    let dir = temp_dir("nonfinite");
    let mut cfg = config(&dir, 1);
    cfg.domains.truncate(1);
    let mut run = Run::prepare(cfg.clone())?;
    let mut poison = Poison { steps: vec![3, 6], skipped_seen: Vec::new() };
    let m = run.run(&mut poison)?.clone();
    let r = &m.domains[0].rounds[0];
    assert_eq!(poison.skipped_seen, vec![3, 6]);
    assert_eq!((r.skipped_steps, r.steps_run), (2, 12));
    assert!(r.best_val.is_finite() && r.val_history.iter().all(|(_, v)| v.is_finite()));

    // Three in a row (the limit): the round ends there with the spike rule, and the restored
    // stack is the best one seen before (its loss is the recorded best, which is finite).
    let dir = temp_dir("nonfinite-stop");
    let mut cfg = config(&dir, 1);
    cfg.domains.truncate(1);
    let mut run = Run::prepare(cfg.clone())?;
    let mut poison = Poison { steps: vec![5, 6, 7], skipped_seen: Vec::new() };
    let m = run.run(&mut poison)?.clone();
    let r = &m.domains[0].rounds[0];
    assert_eq!((r.skipped_steps, r.steps_run), (3, 7));
    assert_eq!(r.stop, brainstacks_train::boost::manifest::RoundStop::Spike);
    assert_eq!(r.val_history.len(), 1, "{:?}", r.val_history); // only the step-4 evaluation ran
    let (best_step, best) = r.val_history[0];
    assert_eq!((r.best_step, r.best_val), (best_step, best));
    // The frozen stack on disk is that snapshot: evaluating the run again gives the same loss.
    let (prefix, _) = run.prefix_record(0, brainstacks_model::stacks::FrozenSelection::All)?;
    assert_eq!(prefix, m.domains[0].prefix_val.unwrap());
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl"))?;
    assert_eq!(metrics.matches("\"skipped\":true").count(), 3);
    Ok(())
}
