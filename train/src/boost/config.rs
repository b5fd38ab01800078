//! The run config (`run.json`): the base model, the domains in curriculum order, and every
//! hyperparameter of method spec section 8, with the spec's recommended defaults. Unknown keys
//! are an error, so a typo never silently falls back to a default.
//!
//! ```json
//! {
//!   "out_dir": "runs/toy",
//!   "model": {"path": "models/tiny-llama", "nf4": true},
//!   "domains": [
//!     {"name": "chat", "train": "data/chat.jsonl"},
//!     {"name": "code", "train": "data/code.jsonl", "rounds": 2}
//!   ],
//!   "steps_per_round": 200, "lr": 2e-4
//! }
//! ```

use std::path::{Path, PathBuf};

use brainstacks_model::moe_lora::MoeLoraConfig;
use brainstacks_model::stacks::{AuxReduction, NullSpaceMode, StackOptions};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where the frozen base comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// A Hugging Face Llama directory (config.json, safetensors, tokenizer.json). Absent: a
    /// randomly initialised toy model with the byte tokenizer (tests only: stacks on a random
    /// base learn little, spec section 7.1).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Quantize the dense projections to NF4 at load (blocks of 64).
    #[serde(default)]
    pub nf4: bool,
    /// Compute dtype: "f32" or "bf16".
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// How the frozen base products multiply f32 activations: "f32" (exact f32 products, the
    /// same bits on every x86-64 CPU with AVX2) or "bf16" (both operands rounded to bf16, f32
    /// sums: what bitsandbytes computes with a bf16 compute dtype; several times faster on CPUs
    /// with AMX, and results then differ slightly between machines with and without AMX).
    #[serde(default = "default_base_matmul")]
    pub base_matmul: String,
    /// The toy model's sizes when `path` is absent: [hidden, ffn, layers, heads, kv_heads].
    #[serde(default = "default_toy")]
    pub toy: [usize; 5],
    #[serde(default)]
    pub toy_seed: u64,
    /// Where the model, the stacks and every training step live: "cpu", "cuda" or "cuda:N"
    /// (a build with `--features cuda` and a GPU).
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_dtype() -> String {
    "f32".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_base_matmul() -> String {
    "f32".into()
}
fn default_toy() -> [usize; 5] {
    [64, 176, 2, 4, 2]
}

/// One domain of the curriculum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    pub name: String,
    /// JSONL, Alpaca (`instruction`/`input`/`output`) or chat (`messages`) lines.
    pub train: PathBuf,
    /// Optional separate validation file; otherwise a seeded split of `train`.
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Overrides the run's `max_rounds` for this domain.
    #[serde(default)]
    pub rounds: Option<usize>,
    /// Overrides the run's `steps_per_round` for this domain.
    #[serde(default)]
    pub steps: Option<usize>,
}

/// Which data the null-space projector is computed from (spec section 10 item 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NsData {
    /// An equal share of every earlier domain's validation set (default: protects what exists).
    Previous,
    /// The new domain's validation set (the released code).
    Current,
}

/// Null-space settings (spec section 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NullSpaceConfig {
    pub enabled: bool,
    /// Directions per part (per earlier domain in `per_domain_union` mode).
    pub k: usize,
    /// Sequences captured (split equally over earlier domains with `previous` data).
    pub samples: usize,
    /// Longest captured sequence, in tokens.
    pub max_tokens: usize,
    pub data: NsData,
    pub mode: NullSpaceMode,
    /// Project B after every optimizer step so the delta stays orthogonal at inference too.
    pub persist_projection: bool,
    /// Union: drop directions whose residual norm is below this.
    pub dup_tol: f64,
    /// Measure the projected delta's leakage at every training forward (costs a pass; for tests
    /// and audits) and record the largest per round.
    pub monitor_leakage: bool,
}

impl Default for NullSpaceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            k: 32,
            samples: 200,
            max_tokens: 512,
            data: NsData::Previous,
            mode: NullSpaceMode::PerDomainUnion,
            persist_projection: false,
            dup_tol: brainstacks_model::null_space::DEFAULT_DUP_TOL,
            monitor_leakage: false,
        }
    }
}

/// When the inner loop stops adding rounds (spec section 3.1 and 10 item 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// Test the gain from round 2 on; a non-improving stack is kept (the released code).
    FromRound2,
    /// Test from round 1 (the paper's Alg. 1); the stack is kept.
    FromRound1,
    /// From round 2, and a stack that does not improve by `min_delta` is discarded.
    FromRound2Discard,
}

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub out_dir: PathBuf,
    pub model: ModelSource,
    /// In curriculum order.
    pub domains: Vec<DomainConfig>,
    #[serde(default = "d_seed")]
    pub seed: u64,
    // The stack.
    #[serde(default = "d_experts")]
    pub experts: usize,
    #[serde(default = "d_top_k")]
    pub top_k: usize,
    #[serde(default = "d_rank")]
    pub rank: usize,
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    // Optimisation.
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_warmup")]
    pub warmup_steps: usize,
    #[serde(default = "d_beta1")]
    pub beta1: f64,
    #[serde(default = "d_beta2")]
    pub beta2: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_clip")]
    pub grad_clip: f64,
    #[serde(default = "d_micro")]
    pub micro_batch: usize,
    #[serde(default = "d_accum")]
    pub grad_accum: usize,
    #[serde(default = "d_seq")]
    pub seq_len: usize,
    #[serde(default = "d_aux_lambda")]
    pub aux_lambda: f64,
    #[serde(default = "d_aux")]
    pub aux: AuxReduction,
    // Rounds.
    #[serde(default = "d_steps")]
    pub steps_per_round: usize,
    #[serde(default = "d_rounds")]
    pub max_rounds: usize,
    #[serde(default = "d_min_delta")]
    pub min_delta: f64,
    #[serde(default)]
    pub stop_rule: StopRuleOrDefault,
    #[serde(default = "d_eval_every")]
    pub eval_every: usize,
    /// Validation examples evaluated (the fixed subset).
    #[serde(default = "d_eval_samples")]
    pub eval_samples: usize,
    #[serde(default = "d_eval_batch")]
    pub eval_batch: usize,
    #[serde(default = "d_patience")]
    pub patience: usize,
    #[serde(default = "d_spike")]
    pub spike_threshold: f64,
    #[serde(default = "d_val_fraction")]
    pub val_fraction: f64,
    #[serde(default = "d_split_seed")]
    pub split_seed: u64,
    #[serde(default)]
    pub null_space: NullSpaceConfig,
    // Parity flags (spec section 10).
    #[serde(default)]
    pub truncate_frozen_grad: bool,
    #[serde(default)]
    pub frozen_noise: bool,
    /// Response-only loss in SFT (default: the whole sequence, as the spec's code).
    #[serde(default)]
    pub response_only_loss: bool,
}

/// `stop_rule` with its default (serde needs a type with `Default`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StopRuleOrDefault(pub StopRule);

impl Default for StopRuleOrDefault {
    fn default() -> Self {
        Self(StopRule::FromRound2)
    }
}

fn d_seed() -> u64 {
    42
}
fn d_experts() -> usize {
    4
}
fn d_top_k() -> usize {
    2
}
fn d_rank() -> usize {
    16
}
fn d_alpha() -> f64 {
    16.0
}
fn d_lr() -> f64 {
    2e-4
}
fn d_warmup() -> usize {
    40
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.95
}
fn d_wd() -> f64 {
    0.01
}
fn d_clip() -> f64 {
    1.0
}
fn d_micro() -> usize {
    2
}
fn d_accum() -> usize {
    8
}
fn d_seq() -> usize {
    512
}
fn d_aux_lambda() -> f64 {
    0.01
}
fn d_aux() -> AuxReduction {
    AuxReduction::Mean
}
fn d_steps() -> usize {
    400
}
fn d_rounds() -> usize {
    3
}
fn d_min_delta() -> f64 {
    0.002
}
fn d_eval_every() -> usize {
    50
}
fn d_eval_samples() -> usize {
    200
}
fn d_eval_batch() -> usize {
    4
}
fn d_patience() -> usize {
    4
}
fn d_spike() -> f64 {
    0.1
}
fn d_val_fraction() -> f64 {
    0.02
}
fn d_split_seed() -> u64 {
    42
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid { what: "run config".into(), msg: msg.into() }
}

impl RunConfig {
    /// Reads and checks `path`; relative paths inside are resolved against its directory.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let mut cfg: RunConfig = serde_json::from_str(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.out_dir);
        if let Some(p) = cfg.model.path.as_mut() {
            fix(p);
        }
        for d in &mut cfg.domains {
            fix(&mut d.train);
            if let Some(v) = d.val.as_mut() {
                fix(v);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and checks the text of a `run.json`, paths left as written (unlike
    /// [`from_file`](Self::from_file), which resolves relative ones against the file's
    /// directory).
    ///
    /// ```
    /// use brainstacks_train::boost::config::RunConfig;
    /// let c = RunConfig::from_json_str(r#"{"out_dir": "runs/x", "model": {}, "domains": [{"name": "chat", "train": "chat.jsonl"}]}"#).unwrap();
    /// assert_eq!((c.domains.len(), c.top_k, c.model.base_matmul.as_str()), (1, 2, "f32"));
    /// assert!(RunConfig::from_json_str(r#"{"out_dir": "x", "model": {}, "domains": []}"#).is_err());
    /// // bf16 base products are a choice; anything else is an error naming the key.
    /// let d = r#""domains": [{"name": "chat", "train": "chat.jsonl"}]"#;
    /// let bf16 = RunConfig::from_json_str(&format!(r#"{{"out_dir": "x", "model": {{"base_matmul": "bf16"}}, {d}}}"#));
    /// assert_eq!(bf16.unwrap().model.base_matmul, "bf16");
    /// let err = RunConfig::from_json_str(&format!(r#"{{"out_dir": "x", "model": {{"base_matmul": "fp8"}}, {d}}}"#));
    /// assert!(err.unwrap_err().to_string().contains("model.base_matmul"));
    /// ```
    pub fn from_json_str(text: &str) -> Result<Self> {
        let cfg: RunConfig = serde_json::from_str(text).map_err(|e| invalid(format!("run.json: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks ranges and names; every message names the key.
    pub fn validate(&self) -> Result<()> {
        if self.domains.is_empty() {
            return Err(invalid("\"domains\" is empty"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &self.domains {
            if d.name.is_empty() || d.name.contains(['/', '\\']) || !seen.insert(&d.name) {
                return Err(invalid(format!("domain name {:?} is empty, has a path separator, or repeats", d.name)));
            }
        }
        let checks: [(&str, bool); 10] = [
            ("top_k", self.top_k >= 1 && self.top_k <= self.experts),
            ("rank", self.rank >= 1),
            ("micro_batch", self.micro_batch >= 1),
            ("grad_accum", self.grad_accum >= 1),
            ("seq_len", self.seq_len >= 2),
            ("eval_every", self.eval_every >= 1),
            ("eval_batch", self.eval_batch >= 1),
            ("val_fraction", self.val_fraction > 0.0 && self.val_fraction < 1.0),
            ("model.dtype", matches!(self.model.dtype.as_str(), "f32" | "bf16")),
            ("model.base_matmul", matches!(self.model.base_matmul.as_str(), "f32" | "bf16")),
        ];
        if let Some((key, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(invalid(format!("{key:?} is out of range")));
        }
        Ok(())
    }

    pub fn stack_config(&self) -> MoeLoraConfig {
        MoeLoraConfig { experts: self.experts, top_k: self.top_k, rank: self.rank, alpha: self.alpha }
    }

    pub fn stack_options(&self) -> StackOptions {
        StackOptions {
            truncate_frozen_grad: self.truncate_frozen_grad,
            frozen_noise: self.frozen_noise,
            aux: self.aux,
            monitor_leakage: self.null_space.monitor_leakage,
        }
    }

    pub fn rounds_for(&self, d: &DomainConfig) -> usize {
        d.rounds.unwrap_or(self.max_rounds)
    }

    pub fn steps_for(&self, d: &DomainConfig) -> usize {
        d.steps.unwrap_or(self.steps_per_round)
    }

    /// The round's seed, as the released code derives it: `seed + m + 7 * (stacks already trained
    /// in this domain)`.
    pub fn round_seed(&self, round: usize) -> u64 {
        // Wrapping: a seed near u64::MAX (any u64 is a valid seed) must not overflow.
        let round = round as u64;
        self.seed.wrapping_add(round).wrapping_add(7u64.wrapping_mul(round.wrapping_sub(1)))
    }
}
