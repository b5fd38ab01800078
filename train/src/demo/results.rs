//! Everything the demo measured, in one serialisable value: the pipeline fills it phase by phase,
//! writes it as `report.json`, and the report (`report.md` + SVG plots) is drawn from it alone.
//!
//! Numbers that depend on the machine (wall-clock seconds) live only in [`DemoResults::timings`],
//! so two runs with the same seed can be compared field by field on everything else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One point of a loss curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Optimizer step (or tokens, when the curve says so).
    pub step: usize,
    pub loss: f64,
}

/// A named curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub label: String,
    pub points: Vec<CurvePoint>,
}

/// The generated data of one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainDataSummary {
    pub domain: String,
    pub train_examples: usize,
    /// The JSONL file, relative to the demo directory.
    pub file: String,
    /// One example, for the report.
    pub sample_instruction: String,
    pub sample_response: String,
}

/// The trained tokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenizerSummary {
    pub vocab_size: usize,
    pub documents: usize,
    pub chars: usize,
    pub tokens: usize,
}

/// The pretrained base.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainSummary {
    /// hidden, ffn, layers, heads, kv_heads, vocab.
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub parameters: usize,
    pub steps: usize,
    pub tokens: u64,
    /// Cross-entropy of the training data's unigram distribution, measured on the validation
    /// tokens: what a model that ignores context can reach.
    pub unigram_loss: f64,
    pub train_curve: Vec<CurvePoint>,
    pub val_curve: Vec<CurvePoint>,
    pub final_val_loss: f64,
    /// Validation loss of the NF4-quantized checkpoint the method trains on.
    pub nf4_val_loss: f64,
}

/// One boosting round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    pub round: u32,
    pub best_val: f64,
    pub best_step: usize,
    pub steps_run: usize,
    /// "steps", "patience" or "spike".
    pub stop: String,
    pub val_curve: Vec<CurvePoint>,
    pub train_loss_last: f64,
}

/// One domain of a curriculum run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainRunSummary {
    pub domain: String,
    /// Validation loss before the domain's first round (earlier stacks on).
    pub baseline_val: f64,
    pub rounds: Vec<RoundSummary>,
    /// Summed null-space projector rank over the wrapped modules (0 without a projector).
    pub projector_rank_total: usize,
}

/// A square matrix: after finishing row `i`'s domain, every domain's validation loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForgettingMatrix {
    pub domains: Vec<String>,
    /// `rows[i][j]`: loss on domain `j` after training domain `i` (`NaN`-free; absent rows for
    /// domains that were not reached).
    pub rows: Vec<Vec<f64>>,
}

impl ForgettingMatrix {
    /// Mean over earlier domains `j` of (final loss on `j` - loss on `j` right after training
    /// `j`): how much later domains hurt earlier ones. `None` with fewer than two rows.
    pub fn mean_forgetting(&self) -> Option<f64> {
        let last = self.rows.last()?;
        let n = self.rows.len();
        if n < 2 {
            return None;
        }
        let drift: Vec<f64> = (0..n - 1).map(|j| last[j] - self.rows[j][j]).collect();
        Some(drift.iter().sum::<f64>() / drift.len() as f64)
    }
}

/// A curriculum run (the method, or an ablation of it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// "brainstacks", "no null space", "single LoRA".
    pub label: String,
    /// Relative to the demo directory.
    pub dir: String,
    pub experts: usize,
    pub top_k: usize,
    pub rank: usize,
    pub trainable_params_per_stack: usize,
    pub null_space: bool,
    pub domains: Vec<DomainRunSummary>,
    pub forgetting: ForgettingMatrix,
}

/// The oracle's findings for one domain's held-out prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OracleSummary {
    pub domain: String,
    pub examples: usize,
    /// Mean of base-only loss minus the best set's loss.
    pub mean_gain: f64,
    /// Share of examples whose best set leaves out the domain's own stacks.
    pub share_excluding_own: f64,
    /// How often each domain is in the chosen set (share of examples, 0..1).
    pub chosen_share: BTreeMap<String, f64>,
}

/// How the oracle and the router's training data were set up (the demo departs from the spec's
/// defaults here; the report says how).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterSettings {
    /// "exhaustive", "best" or "first" (greedy growth).
    pub oracle_search: String,
    /// The least loss drop that adds a domain to a set.
    pub oracle_accept: f64,
    /// Held-out examples per domain the oracle scored (at most).
    pub oracle_samples: usize,
    /// Label prompts per domain (at most).
    pub label_samples: usize,
    /// "one-hot" or "oracle mean".
    pub label_targets: String,
}

/// The router's mean gate weights over one domain's held-out prompts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterWeights {
    pub domain: String,
    pub prompts: usize,
    pub mean_weights: BTreeMap<String, f64>,
    /// A few individual prompts and their weights.
    pub examples: Vec<(String, BTreeMap<String, f64>)>,
}

/// Validation loss of one domain under the three compositions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeLossRow {
    pub domain: String,
    /// The frozen base alone.
    pub base: f64,
    /// Every stack on at weight 1.
    pub ungated: f64,
    /// Stacks weighted by the meta-router.
    pub routed: f64,
}

/// Generations for one prompt in the three modes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationSample {
    pub domain: String,
    pub prompt: String,
    pub reference: String,
    pub base: String,
    pub ungated: String,
    pub routed: String,
}

/// Wall-clock time of one phase (machine-dependent; excluded from reproducibility checks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub phase: String,
    pub seconds: f64,
}

fn cpu_device() -> String {
    "cpu".into()
}

/// The whole demo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoResults {
    pub seed: u64,
    pub quick: bool,
    /// "brainstacks-rs <version>".
    pub engine: String,
    /// Where the models trained: "cpu" or "cuda:N".
    #[serde(default = "cpu_device")]
    pub device: String,
    pub data: Vec<DomainDataSummary>,
    pub tokenizer: TokenizerSummary,
    pub pretrain: PretrainSummary,
    /// The method with null space; then the two ablations.
    pub main_run: RunSummary,
    pub no_null_space: RunSummary,
    pub single_lora: RunSummary,
    pub router_train_lines: Vec<String>,
    #[serde(default)]
    pub router_settings: RouterSettings,
    pub oracle: Vec<OracleSummary>,
    pub router_weights: Vec<RouterWeights>,
    pub modes: Vec<ModeLossRow>,
    pub generations: Vec<GenerationSample>,
    pub timings: Vec<PhaseTiming>,
}

impl DemoResults {
    /// The same results with every machine-dependent number removed, for comparing two runs.
    pub fn without_timings(&self) -> Self {
        Self { timings: Vec::new(), ..self.clone() }
    }
}
