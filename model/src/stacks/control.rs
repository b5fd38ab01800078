//! The state every stacked projection reads at each forward, shared by all of a model's
//! projections through one `Arc`.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use brainstacks_autograd::Var;

/// Which frozen stacks contribute, and how much.
#[derive(Clone, Debug, PartialEq)]
pub enum FrozenSelection {
    /// Every frozen stack with weight 1 (the training-time and "ungated" composition).
    All,
    /// Only the listed domains, each stack of a domain scaled by the domain's weight
    /// (routed inference, prefix configurations). Domains not listed are skipped entirely.
    Domains(BTreeMap<String, f64>),
    /// A different weight vector per batch row (the oracle scores several domain sets of one
    /// example in one forward): `domain -> weight of each row`. Inputs must be `[B, ..., d]` with
    /// `B` the vectors' length. A row with weight 0 gets exactly nothing from that domain.
    PerRow(BTreeMap<String, Vec<f64>>),
}

/// The weight of one domain's stacks in a forward.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainWeight {
    Scalar(f64),
    Rows(Vec<f64>),
}

impl FrozenSelection {
    /// Every stack of these domains at weight 1 (a prefix configuration).
    pub fn only<'a>(domains: impl IntoIterator<Item = &'a str>) -> Self {
        Self::Domains(domains.into_iter().map(|d| (d.to_string(), 1.0)).collect())
    }

    /// The weight of `domain`'s stacks, `None` when they are off.
    pub fn weight(&self, domain: &str) -> Option<DomainWeight> {
        match self {
            Self::All => Some(DomainWeight::Scalar(1.0)),
            Self::Domains(w) => w.get(domain).map(|&v| DomainWeight::Scalar(v)),
            Self::PerRow(w) => w.get(domain).map(|v| DomainWeight::Rows(v.clone())),
        }
    }
}

/// How the active stack's per-module load-balancing losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuxReduction {
    /// Mean over modules (the spec's recommended default).
    Mean,
    /// Sum over modules (the released code's reduction).
    Sum,
    /// Not computed at all (reproduces the released code, where it had no gradient).
    Off,
}

/// Flags that reproduce the released code's behaviour where the spec's default differs.
#[derive(Clone, Debug, PartialEq)]
pub struct StackOptions {
    /// Block the input gradient through frozen stacks (code); default: it flows.
    pub truncate_frozen_grad: bool,
    /// Frozen stacks add gate noise while a later stack trains (code); default: never.
    pub frozen_noise: bool,
    /// Load-balancing loss reduction; `Off` skips computing it.
    pub aux: AuxReduction,
    /// Record the active stack's leakage ||δV||/||δ|| after the projection (costs a pass).
    pub monitor_leakage: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self { truncate_frozen_grad: false, frozen_noise: false, aux: AuxReduction::Mean, monitor_leakage: false }
    }
}

/// What a forward needs to know, copied out of the lock at its start.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// `Some((seed, step))` in training mode.
    pub training: Option<(u64, u64)>,
    pub selection: FrozenSelection,
    pub options: StackOptions,
    pub capture: bool,
}

#[derive(Debug)]
struct State {
    settings: Settings,
    aux: Vec<Var>,
    max_leakage: f64,
}

/// Shared mode of one model's stacked projections. Starts in evaluation mode, all frozen stacks on.
#[derive(Debug)]
pub struct StackControl {
    state: Mutex<State>,
}

impl Default for StackControl {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                settings: Settings { training: None, selection: FrozenSelection::All, options: StackOptions::default(), capture: false },
                aux: Vec::new(),
                max_leakage: 0.0,
            }),
        }
    }
}

impl StackControl {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (plain field writes), so recover.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    /// Training mode for optimizer step `step`: the active stack's gate adds noise keyed by
    /// `(seed, step, module)`, the null-space projection is applied, aux losses are collected.
    pub fn set_training(&self, seed: u64, step: u64) {
        self.lock().settings.training = Some((seed, step));
    }

    /// Evaluation mode: deterministic gates, no projection, no aux losses.
    pub fn set_eval(&self) {
        self.lock().settings.training = None;
    }

    /// `Some((seed, step))` in training mode.
    pub fn training_state(&self) -> Option<(u64, u64)> {
        self.lock().settings.training
    }

    pub fn is_training(&self) -> bool {
        self.lock().settings.training.is_some()
    }

    pub fn set_selection(&self, selection: FrozenSelection) {
        self.lock().settings.selection = selection;
    }

    pub fn selection(&self) -> FrozenSelection {
        self.lock().settings.selection.clone()
    }

    pub fn set_options(&self, options: StackOptions) {
        self.lock().settings.options = options;
    }

    pub fn options(&self) -> StackOptions {
        self.lock().settings.options.clone()
    }

    pub(crate) fn set_capture(&self, on: bool) {
        self.lock().settings.capture = on;
    }

    pub(crate) fn push_aux(&self, loss: Var) {
        self.lock().aux.push(loss);
    }

    /// The load-balancing losses the active stack's modules produced since the last call
    /// (one per module and forward, in module order).
    pub fn take_aux_losses(&self) -> Vec<Var> {
        std::mem::take(&mut self.lock().aux)
    }

    pub(crate) fn record_leakage(&self, leakage: f64) {
        let mut s = self.lock();
        s.max_leakage = s.max_leakage.max(leakage);
    }

    /// The largest leakage recorded since the last call (with `monitor_leakage` on), then 0.
    pub fn take_max_leakage(&self) -> f64 {
        std::mem::take(&mut self.lock().max_leakage)
    }
}
