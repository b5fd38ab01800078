//! Brainstacks stacks on a Llama: every wrapped projection carries the frozen stacks of earlier
//! rounds and domains plus at most one active stack (method spec sections 1, 2 and 4).
//!
//! ```text
//! out = W x + Σ_{frozen j, selected} w_j δ_j(x) + Π(δ_active(x))
//! ```
//!
//! - [`StackSet`] attaches a [`StackedProjection`] to every targeted projection of a
//!   `LlamaModel` and is the trainer's handle on all of them: add a fresh active stack, reach its
//!   parameters, snapshot and restore it, freeze it under a [`StackId`], save and load stack files,
//!   capture frozen-stack deltas and turn them into null-space projectors.
//! - [`StackControl`] is the state every projection reads at each forward: training (noisy
//!   gates, projection on) or evaluation (deterministic, no projection), which frozen domains
//!   are on and with which weight, the parity flags, and the collected auxiliary losses.
//! - [`file`]: the stack file format (safetensors keyed by module path, expert and role).
//!
//! Frozen stacks are always summed in the canonical order (domain position in the run's
//! curriculum, then round), whatever order they were loaded in, so a configuration gives the
//! same bits however it was assembled.
//!
//! ```
//! use brainstacks_autograd::Tape;
//! use brainstacks_model::llama::{LlamaConfig, LlamaModel, Proj, RandomInit};
//! use brainstacks_model::moe_lora::MoeLoraConfig;
//! use brainstacks_model::stacks::{StackId, StackSet};
//! use brainstacks_tensor::{Device, Tensor};
//! # fn main() -> brainstacks_model::Result<()> {
//! let mut model = LlamaModel::random(LlamaConfig::small(32, 64, 1, 4, 2, 40), &RandomInit::default())?;
//! let stacks = StackSet::attach(&mut model, &Proj::ALL)?;
//! let tape = Tape::new();
//! let cfg = MoeLoraConfig { rank: 4, alpha: 4.0, ..Default::default() };
//! stacks.add_active(&tape, &cfg, 42)?;
//! assert_eq!(stacks.active_params().len(), 7 * 4);
//! stacks.control().set_training(7, 0);              // noisy gates, projection on
//! let ids = Tensor::from_vec(vec![1i64, 2, 3, 4], &[1, 4], &Device::Cpu)?;
//! let loss = model.next_token_loss(&ids)?;
//! let aux = stacks.control().take_aux_losses();     // one load-balancing loss per module
//! assert_eq!(aux.len(), 7);
//! stacks.freeze_active(StackId::new("chat", 1))?;   // now a frozen stack, always deterministic
//! # let _ = loss; Ok(()) }
//! ```

mod control;
pub mod file;
mod projection;
mod set;

pub use control::{AuxReduction, DomainWeight, FrozenSelection, StackControl, StackOptions};
pub use projection::StackedProjection;
pub use set::{ActiveSnapshot, NullSpaceMode, StackSet, StackedModule};

use std::fmt;

/// A frozen stack's identity: the domain it was trained on and its boosting round (1-based).
/// Stacks are keyed by this everywhere, never by load order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId {
    pub domain: String,
    pub round: u32,
}

impl StackId {
    pub fn new(domain: impl Into<String>, round: u32) -> Self {
        Self { domain: domain.into(), round }
    }
}

impl fmt::Display for StackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/round{}", self.domain, self.round)
    }
}
