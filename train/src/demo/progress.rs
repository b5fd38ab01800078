//! What the demo shows while it runs: a line per phase, a bar with ETA for phases that count
//! steps, the run trainer's per-round bars and the router's phases (plain lines when stderr is
//! not a terminal, e.g. in CI logs).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::pipeline::DemoProgress;
use crate::boost::RunObserver;
use crate::boost::manifest::RoundRecord;
use crate::boost::round::{EvalReport, StepReport};
use crate::router::pipeline::RouterProgress;
use crate::run_cli::PhaseBars;
use crate::train_cli::Progress as RunBars;

/// Progress on stderr.
pub struct TerminalProgress {
    tty: bool,
    bar: Option<ProgressBar>,
    phase: String,
    phase_start: Instant,
    start: Instant,
    runs: RunBars,
    router: PhaseBars,
    /// Plain-line mode prints a step line at most this often.
    every: usize,
}

impl TerminalProgress {
    pub fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            bar: None,
            phase: String::new(),
            phase_start: Instant::now(),
            start: Instant::now(),
            runs: RunBars::new(),
            router: PhaseBars::new(),
            every: 25,
        }
    }

}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl DemoProgress for TerminalProgress {
    fn begin(&mut self, phase: &str, total: Option<usize>) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.phase = phase.to_string();
        self.phase_start = Instant::now();
        eprintln!("[{:>6.1}s] == {phase}", self.start.elapsed().as_secs_f64());
        if let (true, Some(total)) = (self.tty, total) {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} (ETA {eta}) {msg}")
                    .expect("a valid template"),
            );
            bar.set_prefix(phase.to_string());
            self.bar = Some(bar);
        }
    }

    fn tick(&mut self, done: usize, message: &str) {
        match &self.bar {
            Some(b) => {
                b.set_position(done as u64);
                b.set_message(message.to_string());
            }
            None if done == 1 || done.is_multiple_of(self.every) => eprintln!("{} {done}: {message}", self.phase),
            None => {}
        }
    }

    fn end(&mut self, summary: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!("[{:>6.1}s]    {summary} ({:.1} s)", self.start.elapsed().as_secs_f64(), self.phase_start.elapsed().as_secs_f64());
    }
}

impl RunObserver for TerminalProgress {
    fn on_domain_start(&mut self, domain: &str, index: usize, of: usize) {
        self.runs.on_domain_start(domain, index, of);
    }
    fn on_message(&mut self, text: &str) {
        self.runs.on_message(text);
    }
    fn on_round_start(&mut self, domain: &str, round: u32, steps: usize) {
        self.runs.on_round_start(domain, round, steps);
    }
    fn on_step(&mut self, report: &StepReport) {
        self.runs.on_step(report);
    }
    fn on_eval(&mut self, report: &EvalReport) {
        // Every evaluation as a line would flood the demo's output; the round summary has the best.
        let _ = report;
    }
    fn on_round_end(&mut self, domain: &str, record: &RoundRecord) {
        self.runs.on_round_end(domain, record);
    }
}

impl RouterProgress for TerminalProgress {
    fn phase(&mut self, name: &str, total: usize) {
        self.router.phase(name, total);
    }
    fn advance(&mut self, done: usize) {
        self.router.advance(done);
    }
    fn message(&mut self, text: &str) {
        self.router.message(text);
    }
}
