//! The outer loop (spec section 3.2): domains in curriculum order, a null-space projector before
//! every domain after the first, the inner boosting loop, the prefix record and the forgetting
//! row after each domain; `manifest.json` rewritten after every round, so a stopped run resumes
//! after its last completed round with the same results.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use brainstacks_autograd::{Tape, no_grad};
use brainstacks_model::llama::LlamaModel;
use brainstacks_model::stacks::{AuxReduction, FrozenSelection, StackId, StackSet};
use brainstacks_tensor::{DType, Device, Tensor};
use serde_json::json;

use super::config::{NsData, RunConfig, StopRule};
use super::eval::{evaluate, evaluate_with};
use super::manifest::{DomainRecord, Manifest, RoundRecord, fnv1a_hex};
use super::prepare::{PreparedDomain, attach_stacks, load_model, prepare_domain, run_loss_mask};
use super::round::{EvalReport, MAX_NONFINITE_IN_A_ROW, RoundObserver, RoundSettings, StepReport, train_round};
use crate::data::{MicroBatches, TextEncoder};
use crate::optim::AdamWConfig;
use crate::{Error, Result};

/// The copy of the run config kept in the run directory.
pub const RUN_CONFIG_FILE: &str = "run.json";

/// The JSON-lines log of a run. The one file a run appends to rather than replaces atomically
/// (a log that grows every step); each line is written whole with one `write`, and a resumed run
/// cuts a torn last line (see [`repair_torn_tail`]).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Cuts `path` back to its last newline, so a line torn by a killed writer is dropped and the
/// next append starts a fresh line. A missing file is fine. Only the last byte is read unless the
/// tail is torn (the log grows with every step, and this runs at every start).
fn repair_torn_tail(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let io_err = |what: &str, e: std::io::Error| invalid(format!("{what} {}: {e}", path.display()));
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("opening", e)),
    };
    let len = file.metadata().map_err(|e| io_err("reading the size of", e))?.len();
    let mut last = [0u8];
    if len == 0 || file.seek(SeekFrom::End(-1)).and_then(|_| file.read_exact(&mut last)).is_ok_and(|_| last[0] == b'\n') {
        return Ok(());
    }
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_end(&mut bytes)).map_err(|e| io_err("reading", e))?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    file.set_len(keep as u64).map_err(|e| io_err("truncating the torn last line of", e))?;
    file.sync_all().map_err(|e| io_err("syncing", e))
}

/// Progress callbacks for a whole run (the CLI draws bars from them).
pub trait RunObserver {
    fn on_domain_start(&mut self, _domain: &str, _index: usize, _of: usize) {}
    fn on_message(&mut self, _text: &str) {}
    fn on_round_start(&mut self, _domain: &str, _round: u32, _steps: usize) {}
    fn on_step(&mut self, _report: &StepReport) {}
    fn on_eval(&mut self, _report: &EvalReport) {}
    fn on_round_end(&mut self, _domain: &str, _record: &RoundRecord) {}
    /// See [`RoundObserver::on_gradients`](super::round::RoundObserver::on_gradients).
    fn on_gradients(&mut self, _step: usize, _grads: &mut brainstacks_autograd::Gradients) -> Result<()> {
        Ok(())
    }
    /// Checked after every round: `true` stops the run there (resumable from the manifest).
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// Prints nothing.
pub struct Quiet;
impl RunObserver for Quiet {}

/// A run: the model, its stacks, the prepared domains and the manifest.
pub struct Run {
    pub config: RunConfig,
    pub model: LlamaModel,
    pub stacks: StackSet,
    pub encoder: Box<dyn TextEncoder>,
    pub domains: Vec<PreparedDomain>,
    pub manifest: Manifest,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid { what: "run".into(), msg: msg.into() }
}

/// The config's fingerprint: every field that changes results (not the output directory).
fn config_fnv(cfg: &RunConfig) -> Result<String> {
    let mut c = cfg.clone();
    c.out_dir = PathBuf::new();
    let text = serde_json::to_string(&c).map_err(|e| invalid(e.to_string()))?;
    Ok(fnv1a_hex(text.as_bytes()))
}

impl Run {
    /// Loads the model and data; when `out_dir/manifest.json` exists, checks that it belongs to
    /// this config and loads every stack it lists (resume).
    pub fn prepare(config: RunConfig) -> Result<Self> {
        config.validate()?;
        let (mut model, encoder) = load_model(&config)?;
        let stacks = attach_stacks(&mut model, &config)?;
        let domains = config.domains.iter().map(|d| prepare_domain(&config, d, encoder.as_ref())).collect::<Result<Vec<_>>>()?;
        std::fs::create_dir_all(&config.out_dir).map_err(|e| invalid(format!("cannot create {}: {e}", config.out_dir.display())))?;
        let fnv = config_fnv(&config)?;
        // The config beside the results (paths already absolute), so tools can open the run
        // directory alone (`brainstacks route --run DIR`).
        let text = serde_json::to_string_pretty(&config).map_err(|e| invalid(e.to_string()))?;
        brainstacks_tensor::io::write_atomic_bytes(&config.out_dir.join(RUN_CONFIG_FILE), text.as_bytes())?;
        // A run killed mid-write leaves temporaries (never torn files) and perhaps a torn last
        // metrics line; both are cleared before anything else is written.
        brainstacks_tensor::io::remove_stale_temporaries(&config.out_dir, 1)?;
        repair_torn_tail(&config.out_dir.join(METRICS_FILE))?;
        let path = config.out_dir.join("manifest.json");
        let manifest = if path.exists() {
            let m = Manifest::load(&path)?;
            if m.config_fnv != fnv {
                return Err(invalid(format!(
                    "{} was written by a different config (fingerprint {} vs {fnv}); use a new out_dir or the original config",
                    path.display(),
                    m.config_fnv
                )));
            }
            for d in &m.domains {
                for r in &d.rounds {
                    if let Some(file) = &r.file {
                        stacks.load_stack(&config.out_dir.join(file))?;
                    }
                }
            }
            m
        } else {
            let per_stack: usize = stacks.modules().iter().map(|md| config.stack_config().param_count(md.d_in, md.d_out)).sum();
            Manifest::new(fnv, config.domains.iter().map(|d| d.name.clone()).collect(), per_stack)
        };
        Ok(Self { config, model, stacks, encoder, domains, manifest })
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.config.out_dir.join("manifest.json")
    }

    fn metrics(&self, line: serde_json::Value) -> Result<()> {
        let path = self.config.out_dir.join(METRICS_FILE);
        let mut f = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        // One write of the whole line (writeln! may split it), so a kill tears at most this line.
        f.write_all(format!("{line}\n").as_bytes()).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Runs (or resumes) every domain not yet done. Returns the final manifest.
    pub fn run(&mut self, observer: &mut dyn RunObserver) -> Result<&Manifest> {
        for di in 0..self.domains.len() {
            let name = self.domains[di].name.clone();
            if self.manifest.domain(&name).is_some_and(|d| d.done) {
                continue;
            }
            observer.on_domain_start(&name, di, self.domains.len());
            self.run_domain(di, observer)?;
        }
        Ok(&self.manifest)
    }

    fn run_domain(&mut self, di: usize, observer: &mut dyn RunObserver) -> Result<()> {
        let start = Instant::now();
        let name = self.domains[di].name.clone();
        self.stacks.control().set_selection(FrozenSelection::All);
        if self.manifest.domain(&name).is_none() {
            let baseline = evaluate(&self.model, &self.stacks, &self.domains[di].val_batches)?;
            self.manifest.domains.push(DomainRecord {
                name: name.clone(),
                done: false,
                baseline_val: baseline,
                rounds: Vec::new(),
                projector_ranks: Vec::new(),
                stopped: None,
                prefix_val: None,
                prefix_logits_fnv: None,
                seconds: 0.0,
            });
            self.manifest.save(&self.manifest_path())?;
            observer.on_message(&format!("{name}: baseline validation loss {baseline:.4}"));
        }
        let ranks = self.build_null_space(di, observer)?;
        self.manifest.domain_mut(&name).expect("pushed above").projector_ranks = ranks;

        let dcfg = self.config.domains[di].clone();
        let max_rounds = self.config.rounds_for(&dcfg);
        let steps = self.config.steps_for(&dcfg);
        let rec = self.manifest.domain(&name).expect("present").clone();
        let mut prev = rec.rounds.last().map_or(rec.baseline_val, |r| r.best_val);
        // A resumed domain whose last recorded round already met the stop rule trains no more.
        let mut stopped = self.recorded_stop(&rec);
        let first = if stopped.is_some() { max_rounds + 1 } else { rec.rounds.len() + 1 };
        for round in first..=max_rounds {
            let round = round as u32;
            observer.on_round_start(&name, round, steps);
            let record = self.run_round(di, round, steps, observer)?;
            let gain = prev - record.best_val;
            observer.on_round_end(&name, &record);
            let best = record.best_val;
            self.manifest.domain_mut(&name).expect("present").rounds.push(record);
            self.manifest.save(&self.manifest_path())?;
            if observer.should_stop() {
                self.stacks.clear_null_spaces();
                return Err(Error::Interrupted(format!("after {name} round {round}; run again to resume")));
            }
            if self.stop_applies(round, gain) {
                stopped = Some("min_delta".to_string());
                break;
            }
            prev = best;
        }
        self.stacks.clear_null_spaces();

        // The prefix configuration (this domain and earlier ones) and the forgetting row.
        let prefix: Vec<&str> = self.config.domains[..=di].iter().map(|d| d.name.as_str()).collect();
        let (prefix_val, fnv) = self.prefix_record(di, FrozenSelection::only(prefix))?;
        let row = self
            .domains
            .iter()
            .map(|d| evaluate_with(&self.model, &self.stacks, &d.val_batches, FrozenSelection::All))
            .collect::<Result<Vec<f64>>>()?;
        let d = self.manifest.domain_mut(&name).expect("present");
        d.stopped = Some(stopped.unwrap_or_else(|| "max_rounds".into()));
        d.prefix_val = Some(prefix_val);
        d.prefix_logits_fnv = Some(fnv);
        d.seconds += start.elapsed().as_secs_f64();
        d.done = true;
        self.manifest.forgetting.rows.push((name.clone(), row.clone()));
        self.manifest.save(&self.manifest_path())?;
        self.metrics(json!({"event": "domain_done", "domain": name, "forgetting_row": row, "prefix_val": prefix_val}))?;
        Ok(())
    }

    /// Whether round `round`, having gained `gain` over the previous best, ends the domain.
    fn stop_applies(&self, round: u32, gain: f64) -> bool {
        let tested = round > 1 || self.config.stop_rule.0 == StopRule::FromRound1;
        tested && gain < self.config.min_delta
    }

    /// The stop reason already implied by a domain's recorded rounds (a run stopped after the
    /// deciding round but before the domain was marked done).
    fn recorded_stop(&self, rec: &DomainRecord) -> Option<String> {
        let mut prev = rec.baseline_val;
        for r in &rec.rounds {
            if self.stop_applies(r.round, prev - r.best_val) {
                return Some("min_delta".into());
            }
            prev = r.best_val;
        }
        None
    }

    /// Validation loss of domain `di` and the FNV hash of the f32 logits of its first
    /// validation batch, with `selection`.
    pub fn prefix_record(&self, di: usize, selection: FrozenSelection) -> Result<(f64, String)> {
        let d = &self.domains[di];
        let val = evaluate_with(&self.model, &self.stacks, &d.val_batches, selection.clone())?;
        let previous = self.stacks.control().selection();
        self.stacks.control().set_selection(selection);
        self.stacks.control().set_eval();
        let logits = no_grad(|| self.model.forward(&d.val_batches[0].ids, None));
        self.stacks.control().set_selection(previous);
        let bytes: Vec<u8> = logits?.tensor().to_dtype(DType::F32)?.to_vec::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect();
        Ok((val, fnv1a_hex(&bytes)))
    }

    /// Re-evaluates every finished domain's prefix configuration; returns, per domain, whether
    /// its validation loss and logits hash equal the recorded ones bit for bit.
    pub fn verify_prefixes(&self) -> Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        for (di, d) in self.config.domains.iter().enumerate() {
            let Some(rec) = self.manifest.domain(&d.name).filter(|r| r.done) else { continue };
            let prefix: Vec<&str> = self.config.domains[..=di].iter().map(|d| d.name.as_str()).collect();
            let (val, fnv) = self.prefix_record(di, FrozenSelection::only(prefix))?;
            out.push((d.name.clone(), Some(val) == rec.prefix_val && Some(&fnv) == rec.prefix_logits_fnv.as_ref()));
        }
        Ok(out)
    }

    /// Captures the frozen stacks of earlier domains on the configured data and installs the
    /// projectors. Returns their ranks (empty when there is nothing to project against).
    fn build_null_space(&mut self, di: usize, observer: &mut dyn RunObserver) -> Result<Vec<usize>> {
        let ns = self.config.null_space.clone();
        let earlier: Vec<String> = self.config.domains[..di].iter().map(|d| d.name.clone()).collect();
        let has_frozen = self.stacks.frozen_ids().iter().any(|id| earlier.contains(&id.domain));
        if !ns.enabled || !has_frozen {
            return Ok(Vec::new());
        }
        // The sequences to capture: an equal share of every earlier domain's validation subset,
        // or the current domain's.
        let sources: Vec<usize> = match ns.data {
            NsData::Previous => (0..di).collect(),
            NsData::Current => vec![di],
        };
        let share = ns.samples.div_ceil(sources.len()).max(1);
        let mut sequences: Vec<&[u32]> = Vec::new();
        for &s in &sources {
            sequences.extend(self.domains[s].val_examples.iter().take(share).map(|e| &e.ids[..e.len().min(ns.max_tokens)]));
        }
        sequences.truncate(ns.samples);
        let control = self.stacks.control();
        let previous = control.selection();
        // Only earlier domains' stacks (a resumed domain already has rounds of its own).
        control.set_selection(FrozenSelection::only(earlier.iter().map(String::as_str)));
        control.set_eval();
        self.stacks.begin_capture();
        let captured = no_grad(|| -> Result<()> {
            for seq in &sequences {
                let ids = Tensor::from_vec(seq.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), &[1, seq.len()], &Device::Cpu)?;
                self.model.forward(&ids, None)?;
            }
            Ok(())
        });
        self.stacks.end_capture();
        control.set_selection(previous);
        captured?;
        let seed = self.config.seed.wrapping_add(1000 * di as u64);
        let ranks = self.stacks.compute_null_spaces(ns.k, seed, ns.mode, ns.dup_tol)?;
        // Kept beside the domain's stacks (for audits of leakage and subspace overlap).
        let dir = self.config.out_dir.join(&self.domains[di].name);
        std::fs::create_dir_all(&dir).map_err(|e| invalid(format!("{}: {e}", dir.display())))?;
        self.stacks.save_null_spaces(&dir.join("null_space.safetensors"))?;
        let (min, max) = (ranks.iter().min().copied().unwrap_or(0), ranks.iter().max().copied().unwrap_or(0));
        observer.on_message(&format!(
            "{}: null space from {} sequences of {} earlier domain(s): rank {min}..{max} per module",
            self.domains[di].name,
            sequences.len(),
            earlier.len()
        ));
        Ok(ranks)
    }

    fn run_round(&mut self, di: usize, round: u32, steps: usize, observer: &mut dyn RunObserver) -> Result<RoundRecord> {
        let c = &self.config;
        let name = self.domains[di].name.clone();
        let seed = c.round_seed(round as usize);
        let tape = Tape::new();
        self.stacks.add_active(&tape, &c.stack_config(), seed)?;
        let mut data = MicroBatches::new(self.domains[di].train_rows.clone(), c.micro_batch, run_loss_mask(c), seed, Device::Cpu)?;
        let settings = RoundSettings {
            steps,
            warmup: c.warmup_steps,
            adamw: AdamWConfig { lr: c.lr, beta1: c.beta1, beta2: c.beta2, eps: 1e-8, weight_decay: c.weight_decay },
            grad_clip: c.grad_clip,
            grad_accum: c.grad_accum,
            eval_every: c.eval_every,
            patience: c.patience,
            spike_threshold: c.spike_threshold,
            aux_lambda: if c.aux == AuxReduction::Off { 0.0 } else { c.aux_lambda },
            aux_mean: c.aux == AuxReduction::Mean,
            noise_seed: seed,
            persist_projection: c.null_space.persist_projection,
            max_nonfinite_in_a_row: MAX_NONFINITE_IN_A_ROW,
        };
        let out_dir = c.out_dir.clone();
        let discard_flat = c.stop_rule.0 == StopRule::FromRound2Discard;
        let min_delta = c.min_delta;
        let prev = {
            let rec = self.manifest.domain(&name).expect("present");
            rec.rounds.last().map_or(rec.baseline_val, |r| r.best_val)
        };
        let mut relay = Relay { observer, metrics: Vec::new(), domain: name.clone(), round };
        self.stacks.take_max_leakage();
        let outcome = train_round(&self.model, &self.stacks, &tape, &mut data, &self.domains[di].val_batches, &settings, &mut relay);
        let leakage = self.stacks.take_max_leakage();
        let lines = std::mem::take(&mut relay.metrics);
        for line in lines {
            self.metrics(line)?;
        }
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.stacks.discard_active();
                return Err(e);
            }
        };
        let keep = !(discard_flat && round > 1 && prev - outcome.best_val < min_delta);
        let file = if keep {
            let id = StackId::new(name.clone(), round);
            self.stacks.freeze_active(id.clone())?;
            let rel = format!("{name}/stack_{round}.safetensors");
            let path = out_dir.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            self.stacks.save_stack(&id, &path)?;
            Some(rel)
        } else {
            self.stacks.discard_active();
            None
        };
        let record = RoundRecord {
            round,
            file,
            best_val: outcome.best_val,
            best_step: outcome.best_step,
            steps_run: outcome.steps_run,
            stop: outcome.stop,
            val_history: outcome.val_history,
            train_loss_last: outcome.train_loss_last,
            tokens: outcome.tokens,
            seconds: outcome.seconds,
            skipped_steps: outcome.skipped_steps,
            max_leakage: (self.config.null_space.monitor_leakage && !self.stacks.null_space_ranks().iter().all(|&r| r == 0))
                .then_some(leakage),
        };
        self.metrics(json!({"event": "round_done", "domain": name, "round": round, "best_val": record.best_val,
            "best_step": record.best_step, "steps_run": record.steps_run, "kept": record.file.is_some()}))?;
        Ok(record)
    }
}

/// Forwards a round's progress to the run observer and queues metrics lines.
struct Relay<'a> {
    observer: &'a mut dyn RunObserver,
    metrics: Vec<serde_json::Value>,
    domain: String,
    round: u32,
}

impl RoundObserver for Relay<'_> {
    fn on_step(&mut self, r: &StepReport) {
        self.observer.on_step(r);
        self.metrics.push(json!({"event": "step", "domain": self.domain, "round": self.round, "step": r.step, "loss": r.loss,
            "aux": r.aux, "lr": r.lr, "grad_norm": r.grad_norm, "skipped": r.skipped,
            "tokens_per_s": r.tokens as f64 / r.seconds.max(1e-9)}));
    }
    fn on_gradients(&mut self, step: usize, grads: &mut brainstacks_autograd::Gradients) -> Result<()> {
        self.observer.on_gradients(step, grads)
    }
    fn on_eval(&mut self, r: &EvalReport) {
        self.observer.on_eval(r);
        self.metrics.push(json!({"event": "eval", "domain": self.domain, "round": self.round, "step": r.step, "val": r.val,
            "best": r.best, "improved": r.improved}));
    }
}

#[cfg(test)]
mod tests {
    use super::repair_torn_tail;

    #[test]
    fn a_torn_last_line_is_cut_and_a_whole_log_is_kept() {
        let dir = std::env::temp_dir().join(format!("bs-torn-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        repair_torn_tail(&path).unwrap(); // missing: nothing to do
        for (before, after) in [("", ""), ("{\"a\":1}\n", "{\"a\":1}\n"), ("{\"a\":1}\n{\"b\"", "{\"a\":1}\n"), ("{\"b\"", "")] {
            std::fs::write(&path, before).unwrap();
            repair_torn_tail(&path).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "from {before:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
