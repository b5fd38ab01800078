//! One boosting round: train the active stack for up to `steps` optimizer steps, evaluate every
//! `eval_every`, keep the best snapshot (the BestStack rule of spec section 3.1), restore it.

use std::time::Instant;

use brainstacks_autograd::{Gradients, Tape, Var};
use brainstacks_model::llama::LlamaModel;
use brainstacks_model::stacks::StackSet;

use super::batch::{BatchStream, batch_loss};
use super::eval::evaluate;
use super::manifest::RoundStop;
use crate::data::Batch;
use crate::optim::{AdamW, AdamWConfig, GradAccumulator, clip_grad_norm};
use crate::schedule::LrSchedule;
use crate::{Error, Result};

/// The settings of one round (a fresh optimizer and schedule every round).
#[derive(Clone, Debug)]
pub struct RoundSettings {
    pub steps: usize,
    pub warmup: usize,
    pub adamw: AdamWConfig,
    /// Max global gradient norm (0 or less: no clipping).
    pub grad_clip: f64,
    pub grad_accum: usize,
    pub eval_every: usize,
    pub patience: usize,
    pub spike_threshold: f64,
    /// Weight of the combined load-balancing loss (0: not added).
    pub aux_lambda: f64,
    /// Mean (true) or sum (false) of the per-module aux losses.
    pub aux_mean: bool,
    /// Key of the gate noise; micro-batch `i` of step `s` draws with step `s * accum + i`.
    pub noise_seed: u64,
    pub persist_projection: bool,
    /// Steps in a row whose loss or gradient is NaN or infinite (each skipped, no update) that
    /// end the round, with the best snapshot restored (the spike rule).
    pub max_nonfinite_in_a_row: usize,
}

/// How many non-finite steps in a row end a round in a run.
pub const MAX_NONFINITE_IN_A_ROW: usize = 3;

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    pub step: usize,
    pub loss: f64,
    pub aux: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: u64,
    pub seconds: f64,
    /// The loss or the gradient was not finite: the optimizer step was skipped.
    pub skipped: bool,
}

/// What happened at one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct EvalReport {
    pub step: usize,
    pub val: f64,
    pub best: f64,
    pub improved: bool,
}

/// Receives progress (a progress bar, a metrics file).
pub trait RoundObserver {
    fn on_step(&mut self, _report: &StepReport) {}
    fn on_eval(&mut self, _report: &EvalReport) {}
    /// The step's accumulated gradients, before clipping and the non-finite check: a place to
    /// inspect or rewrite them (gradient surgery, fault injection in tests).
    fn on_gradients(&mut self, _step: usize, _grads: &mut Gradients) -> Result<()> {
        Ok(())
    }
}

/// Ignores everything.
pub struct Silent;
impl RoundObserver for Silent {}

/// The round's result; the active stack holds the best snapshot when it returns.
#[derive(Clone, Debug)]
pub struct RoundOutcome {
    pub best_val: f64,
    pub best_step: usize,
    pub steps_run: usize,
    pub stop: RoundStop,
    pub val_history: Vec<(usize, f64)>,
    pub train_loss_last: f64,
    pub tokens: u64,
    pub seconds: f64,
    /// Steps skipped because their loss or gradient was not finite.
    pub skipped_steps: usize,
}

/// The BestStack rule: improve → snapshot and reset the count; rise above best by more than the
/// spike threshold → stop at once; otherwise count, and stop at `patience`.
#[derive(Clone, Debug)]
pub struct BestStack {
    pub best: f64,
    pub best_step: usize,
    bad: usize,
    patience: usize,
    spike: f64,
}

/// The rule's verdict on one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Improved,
    Continue,
    Stop(RoundStop),
}

impl BestStack {
    pub fn new(patience: usize, spike: f64) -> Self {
        Self { best: f64::INFINITY, best_step: 0, bad: 0, patience, spike }
    }

    pub fn observe(&mut self, step: usize, val: f64) -> Verdict {
        if val < self.best {
            self.best = val;
            self.best_step = step;
            self.bad = 0;
            Verdict::Improved
        } else if val - self.best > self.spike || !val.is_finite() {
            Verdict::Stop(RoundStop::Spike)
        } else {
            self.bad += 1;
            if self.bad >= self.patience { Verdict::Stop(RoundStop::Patience) } else { Verdict::Continue }
        }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid { what: "train_round".into(), msg: msg.into() }
}

/// Trains the set's active stack (its parameters must be leaves of `tape`). Leaves the control in
/// evaluation mode and the active stack at its best snapshot.
pub fn train_round(
    model: &LlamaModel,
    stacks: &StackSet,
    tape: &Tape,
    data: &mut dyn BatchStream,
    val: &[Batch],
    s: &RoundSettings,
    observer: &mut dyn RoundObserver,
) -> Result<RoundOutcome> {
    if s.steps == 0 || s.grad_accum == 0 || s.eval_every == 0 {
        return Err(invalid("steps, grad_accum and eval_every must be at least 1"));
    }
    let params: Vec<Var> = stacks.active_params();
    if params.is_empty() {
        return Err(invalid("the stack set has no active stack"));
    }
    let param_refs: Vec<&Var> = params.iter().collect();
    let schedule = LrSchedule::linear(s.adamw.lr, s.warmup as u64, s.steps as u64)?;
    let mut opt = AdamW::new(s.adamw);
    let mut rule = BestStack::new(s.patience, s.spike_threshold);
    let mut snapshot = stacks.snapshot_active()?;
    let control = stacks.control();
    let start = Instant::now();
    let (mut tokens, mut history, mut last_loss, mut stop) = (0u64, Vec::new(), f64::NAN, RoundStop::Steps);
    let mut steps_run = 0;
    let (mut skipped_steps, mut nonfinite_in_a_row) = (0usize, 0usize);
    for step in 0..s.steps {
        let t0 = Instant::now();
        let mut acc = GradAccumulator::new();
        let (mut loss_sum, mut aux_sum, mut step_tokens) = (0.0, 0.0, 0u64);
        for micro in 0..s.grad_accum {
            tape.clear();
            control.set_training(s.noise_seed, (step * s.grad_accum + micro) as u64);
            let batch = data.next_batch()?;
            let task = batch_loss(model, &batch)?;
            let aux_losses = control.take_aux_losses();
            let mut total = task.clone();
            if s.aux_lambda > 0.0 && !aux_losses.is_empty() {
                let n = aux_losses.len() as f64;
                let mut aux = aux_losses[0].clone();
                for a in &aux_losses[1..] {
                    aux = aux.add(a)?;
                }
                if s.aux_mean {
                    aux = aux.mul_scalar(1.0 / n)?;
                }
                aux_sum += aux.tensor().to_scalar_f64()?;
                total = total.add(&aux.mul_scalar(s.aux_lambda)?)?;
            }
            loss_sum += task.tensor().to_scalar_f64()?;
            step_tokens += batch.ids.elem_count() as u64;
            let grads = tape.backward(&total)?;
            acc.add(&grads, &param_refs)?;
        }
        tape.clear();
        let mut grads = acc.finish(&param_refs, s.grad_accum as f64)?;
        observer.on_gradients(step + 1, &mut grads)?;
        // The norm is always measured (an infinite bound clips nothing): a NaN or infinite
        // gradient anywhere makes it non-finite, and clip_grad_norm then leaves the gradients as
        // they are.
        let bound = if s.grad_clip > 0.0 { s.grad_clip } else { f64::INFINITY };
        let grad_norm = clip_grad_norm(&mut grads, &param_refs, bound)?;
        let lr = schedule.lr_at(step as u64);
        let skipped = !(loss_sum.is_finite() && aux_sum.is_finite() && grad_norm.is_finite());
        if skipped {
            // One bad batch must not poison the stack: no update, counted, and the round ends
            // once too many come in a row.
            skipped_steps += 1;
            nonfinite_in_a_row += 1;
        } else {
            nonfinite_in_a_row = 0;
            opt.set_lr(lr);
            stacks.update_active(|ps| opt.step(ps, &grads))?;
            if s.persist_projection {
                stacks.project_active_b()?;
            }
        }
        tokens += step_tokens;
        last_loss = loss_sum / s.grad_accum as f64;
        steps_run = step + 1;
        let report = StepReport {
            step: steps_run,
            loss: last_loss,
            aux: aux_sum / s.grad_accum as f64,
            lr,
            grad_norm,
            tokens: step_tokens,
            seconds: t0.elapsed().as_secs_f64(),
            skipped,
        };
        observer.on_step(&report);
        if nonfinite_in_a_row >= s.max_nonfinite_in_a_row.max(1) {
            stop = RoundStop::Spike;
            break;
        }
        if steps_run.is_multiple_of(s.eval_every) || steps_run == s.steps {
            let v = evaluate(model, stacks, val)?;
            history.push((steps_run, v));
            let verdict = rule.observe(steps_run, v);
            if verdict == Verdict::Improved {
                snapshot = stacks.snapshot_active()?;
            }
            observer.on_eval(&EvalReport { step: steps_run, val: v, best: rule.best, improved: verdict == Verdict::Improved });
            if let Verdict::Stop(why) = verdict {
                stop = why;
                break;
            }
        }
    }
    control.set_eval();
    stacks.restore_active(&snapshot)?;
    Ok(RoundOutcome {
        best_val: rule.best,
        best_step: rule.best_step,
        steps_run,
        stop,
        val_history: history,
        train_loss_last: last_loss,
        tokens,
        seconds: start.elapsed().as_secs_f64(),
        skipped_steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_stack_rule_follows_the_spec() {
        let mut r = BestStack::new(2, 0.1);
        assert_eq!(r.observe(50, 2.0), Verdict::Improved);
        assert_eq!(r.observe(100, 2.05), Verdict::Continue);
        assert_eq!(r.observe(150, 1.9), Verdict::Improved);
        assert_eq!(r.observe(200, 1.95), Verdict::Continue);
        assert_eq!(r.observe(250, 1.92), Verdict::Stop(RoundStop::Patience));
        let mut r = BestStack::new(4, 0.1);
        r.observe(50, 2.0);
        assert_eq!(r.observe(100, 2.11), Verdict::Stop(RoundStop::Spike));
        assert_eq!((r.best, r.best_step), (2.0, 50));
        let mut r = BestStack::new(4, 0.1);
        r.observe(1, 2.0);
        assert_eq!(r.observe(2, f64::NAN), Verdict::Stop(RoundStop::Spike));
    }
}
