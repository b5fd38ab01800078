//! Router inputs (spec section 5.1): the prompt text alone (no template, no special tokens), at
//! most 256 tokens, through the base model with every stack off; per token
//! `h = 0.45 * H_mid + 0.55 * H_last`, `H_mid = hidden_states[L / 2]` of the list whose entry 0 is
//! the embedding output (`L + 1` entries for `L` layers, so entry `(L + 1) / 2`), `H_last` after the
//! final norm. Computed in f32.

use std::collections::BTreeMap;

use brainstacks_autograd::no_grad;
use brainstacks_model::llama::LlamaModel;
use brainstacks_model::stacks::{FrozenSelection, StackSet};
use brainstacks_tensor::{DType, Device, Tensor};

use crate::data::{Example, TextEncoder};
use crate::{Error, Result};

/// Tokens the router sees (spec section 10 item 16: the same length in training and inference).
pub const ROUTER_SEQ_LEN: usize = 256;

/// The text the router reads for an example: its instruction, and its input on the next line.
pub fn router_text(e: &Example) -> String {
    match e.input.as_deref().filter(|s| !s.is_empty()) {
        Some(input) => format!("{}\n{input}", e.instruction),
        None => e.instruction.clone(),
    }
}

/// `[T, hidden]` f32 features of `prompt` (T <= `max_tokens`). Stacks are switched off for the
/// forward and the previous selection is restored.
pub fn router_features(
    model: &LlamaModel,
    stacks: &StackSet,
    encoder: &dyn TextEncoder,
    prompt: &str,
    max_tokens: usize,
) -> Result<Tensor> {
    let mut ids = encoder.encode(prompt)?;
    ids.truncate(max_tokens);
    if ids.is_empty() {
        return Err(Error::Invalid { what: "router".into(), msg: "the prompt has no tokens".into() });
    }
    let t = ids.len();
    let ids = Tensor::from_vec(ids.into_iter().map(i64::from).collect::<Vec<_>>(), &[1, t], &Device::Cpu)?;
    let layers = model.layers.len();
    let control = stacks.control();
    let previous = control.selection();
    control.set_selection(FrozenSelection::Domains(BTreeMap::new()));
    control.set_eval();
    // The list has layers + 1 entries; its middle, len // 2, is ceil(layers / 2).
    let states = no_grad(|| model.hidden_states(&ids, &[layers.div_ceil(2), layers]));
    control.set_selection(previous);
    let states = states?;
    let (mid, last) = (states[0].tensor().to_dtype(DType::F32)?, states[1].tensor().to_dtype(DType::F32)?);
    let h = mid.mul_scalar(0.45)?.add(&last.mul_scalar(0.55)?)?;
    let hidden = h.shape()[2];
    // The meta-router is a small network that trains and runs on the CPU: its inputs come back
    // from the model's device here.
    Ok(h.reshape(&[t, hidden])?.to_device(&Device::Cpu)?)
}
