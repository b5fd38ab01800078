//! `brainstacks train --config run.json`: a Brainstacks run with a progress bar per round
//! (loss, tokens/s, ETA), JSON-lines metrics in `out_dir/metrics.jsonl`, and a summary at the end.
//! Stopping it at any point (Ctrl-C, kill) loses at most the round in progress: running the
//! same command again resumes after the last completed round.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::boost::manifest::{Manifest, RoundRecord};
use crate::boost::round::{EvalReport, StepReport};
use crate::boost::{Run, RunConfig, RunObserver};

/// Draws one bar per round on stderr (plain lines when stderr is not a terminal).
pub struct Progress {
    bar: Option<ProgressBar>,
    tty: bool,
    domain: String,
    round: u32,
    tokens_per_s: f64,
}

impl Progress {
    pub fn new() -> Self {
        Self { bar: None, tty: std::io::stderr().is_terminal(), domain: String::new(), round: 0, tokens_per_s: 0.0 }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(b) if self.tty => b.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl RunObserver for Progress {
    fn on_domain_start(&mut self, domain: &str, index: usize, of: usize) {
        self.say(&format!("== domain {}/{of}: {domain}", index + 1));
    }
    fn on_message(&mut self, text: &str) {
        self.say(text);
    }
    fn on_round_start(&mut self, domain: &str, round: u32, steps: usize) {
        self.domain = domain.to_string();
        self.round = round;
        let bar = if self.tty { ProgressBar::new(steps as u64) } else { ProgressBar::hidden() };
        bar.set_draw_target(if self.tty { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} steps (ETA {eta}) {msg}")
                .expect("a valid template"),
        );
        bar.set_prefix(format!("{domain} round {round}"));
        self.bar = Some(bar);
    }
    fn on_step(&mut self, r: &StepReport) {
        let tps = r.tokens as f64 / r.seconds.max(1e-9);
        self.tokens_per_s = if self.tokens_per_s == 0.0 { tps } else { 0.9 * self.tokens_per_s + 0.1 * tps };
        if let Some(b) = &self.bar {
            b.set_position(r.step as u64);
            b.set_message(format!("loss {:.4} aux {:.3} lr {:.2e} {:.0} tok/s", r.loss, r.aux, r.lr, self.tokens_per_s));
        }
        if !self.tty && (r.step == 1 || r.step.is_multiple_of(25)) {
            eprintln!(
                "{} round {} step {}: loss {:.4} lr {:.2e} {:.0} tok/s",
                self.domain, self.round, r.step, r.loss, r.lr, self.tokens_per_s
            );
        }
    }
    fn on_eval(&mut self, r: &EvalReport) {
        let mark = if r.improved { " (best)" } else { "" };
        self.say(&format!("{} round {} step {}: validation {:.4}{mark}", self.domain, self.round, r.step, r.val));
    }
    fn on_round_end(&mut self, domain: &str, rec: &RoundRecord) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let kept = rec.file.as_deref().unwrap_or("discarded");
        self.say(&format!(
            "{domain} round {}: best validation {:.4} at step {} of {} ({:?}), {:.1} s -> {kept}",
            rec.round, rec.best_val, rec.best_step, rec.steps_run, rec.stop, rec.seconds
        ));
    }
}

/// The end-of-run table: per domain its rounds and losses, then the forgetting matrix.
pub fn summary(m: &Manifest) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<12} {:>9} {:>28} {:>9} {:>10} {:>8}\n",
        "domain", "baseline", "best val per round", "prefix", "stopped", "time s"
    ));
    for d in &m.domains {
        let rounds: Vec<String> =
            d.rounds.iter().map(|r| format!("{:.4}{}", r.best_val, if r.file.is_some() { "" } else { "x" })).collect();
        out.push_str(&format!(
            "{:<12} {:>9.4} {:>28} {:>9} {:>10} {:>8.1}\n",
            d.name,
            d.baseline_val,
            rounds.join(" "),
            d.prefix_val.map_or("-".into(), |v| format!("{v:.4}")),
            d.stopped.as_deref().unwrap_or("-"),
            d.seconds
        ));
    }
    if !m.forgetting.rows.is_empty() {
        out.push_str("\nforgetting matrix (validation loss, all stacks on; rows: after domain)\n");
        out.push_str(&format!("{:<12}", "after"));
        for d in &m.forgetting.domains {
            out.push_str(&format!(" {d:>10}"));
        }
        out.push('\n');
        for (after, row) in &m.forgetting.rows {
            out.push_str(&format!("{after:<12}"));
            for v in row {
                out.push_str(&format!(" {v:>10.4}"));
            }
            out.push('\n');
        }
    }
    out
}

/// Runs (or resumes) the run described by `config`.
pub fn train(config: &Path) -> anyhow::Result<Manifest> {
    let cfg = RunConfig::from_file(config)?;
    let start = Instant::now();
    eprintln!("loading the model and {} domain(s) ...", cfg.domains.len());
    let mut run = Run::prepare(cfg)?;
    let done = run.manifest.domains.iter().map(|d| d.rounds.len()).sum::<usize>();
    if done > 0 {
        eprintln!("resuming {}: {done} round(s) already trained", run.config.out_dir.display());
    }
    for d in &run.domains {
        let warn = if d.val_truncated > 0 { format!(" ({} cut to seq_len)", d.val_truncated) } else { String::new() };
        eprintln!(
            "{}: {} training examples -> {} packed rows of {}; {} validation examples{warn}",
            d.name,
            d.train_examples,
            d.train_rows.len(),
            run.config.seq_len,
            d.val_examples.len()
        );
    }
    eprintln!("trainable parameters per stack: {}", run.manifest.trainable_params_per_stack);
    let mut progress = Progress::new();
    let manifest = run.run(&mut progress)?.clone();
    println!("{}", summary(&manifest));
    println!("run directory: {} ({:.1} s)", run.config.out_dir.display(), start.elapsed().as_secs_f64());
    Ok(manifest)
}
