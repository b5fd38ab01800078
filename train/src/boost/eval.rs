//! The one evaluator used everywhere (spec section 10 item 12): token-weighted mean
//! cross-entropy over the counted predictions of a fixed set of batches, in evaluation mode
//! (deterministic gates, no projection) and without recording a tape.

use brainstacks_autograd::no_grad;
use brainstacks_model::llama::LlamaModel;
use brainstacks_model::stacks::{FrozenSelection, StackSet};

use super::batch::batch_loss;
use crate::data::{Batch, LossMeter};
use crate::{Error, Result};

/// Validation loss of `batches` with the stacks' current selection. The control's training
/// mode is restored afterwards.
pub fn evaluate(model: &LlamaModel, stacks: &StackSet, batches: &[Batch]) -> Result<f64> {
    let control = stacks.control();
    let was_training = control.training_state();
    control.set_eval();
    let result = no_grad(|| -> Result<f64> {
        let mut meter = LossMeter::default();
        for b in batches.iter().filter(|b| b.targets > 0) {
            meter.add(batch_loss(model, b)?.tensor().to_scalar_f64()?, b.targets);
        }
        meter.mean().ok_or_else(|| Error::Invalid { what: "evaluate".into(), msg: "no counted token in the validation batches".into() })
    });
    if let Some((seed, step)) = was_training {
        control.set_training(seed, step);
    }
    result
}

/// `evaluate` with a temporary frozen-stack selection, restored afterwards.
pub fn evaluate_with(model: &LlamaModel, stacks: &StackSet, batches: &[Batch], selection: FrozenSelection) -> Result<f64> {
    let previous = stacks.control().selection();
    stacks.control().set_selection(selection);
    let out = evaluate(model, stacks, batches);
    stacks.control().set_selection(previous);
    out
}
