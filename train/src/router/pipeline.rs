//! Training the meta-router of a finished run (`brainstacks router --run DIR`): oracle targets per
//! domain (cached), features of every prompt, a grouped split, the spec's training recipe, and the
//! router saved beside the stacks (`router/router.safetensors` with `router/routing.json` and
//! `router/report.json`). [`RunRouter`] loads it back and routes prompts.

use std::path::{Path, PathBuf};

use brainstacks_autograd::Tape;
use brainstacks_model::router::{MetaRouter, MetaRouterConfig, pad_features};
use brainstacks_tensor::{DType, Rng};
use serde::{Deserialize, Serialize};

use super::dataset::{LabelTargets, build_samples};
use super::discovery::{DomainDiscovery, discover_domain};
use super::evaluate::Route;
use super::features::{ROUTER_SEQ_LEN, router_features, router_text};
use super::oracle::OracleConfig;
use super::routed::{RunModel, gate_weights};
use crate::boost::prepare::{PreparedDomain, prepare_domain};
use crate::data::Example;
use crate::router_train::{
    ExampleKind, MIN_VAL, RouterExample, RouterTrainConfig, RouterTrainReport, VAL_FRACTION, split_grouped, train_router,
};
use crate::{Error, Result};

/// The inference-time routing rule saved with the router (spec section 6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingRule {
    pub domains: Vec<String>,
    /// The domain that always gets at least `chat_floor`, if the run has one named "chat".
    pub chat: Option<String>,
    pub chat_floor: f64,
    /// Domains at or below this weight are off (and their stacks not loaded).
    pub gate: f64,
}

/// Everything `brainstacks router` can change.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// Single-domain label prompts per domain (from its training examples).
    pub label_samples: usize,
    /// What those prompts are trained towards.
    pub label_targets: LabelTargets,
    /// Held-out examples per domain the oracle scores.
    pub oracle_samples: usize,
    pub oracle: OracleConfig,
    pub train: RouterTrainConfig,
    pub hidden: usize,
    /// Domains whose cached oracle results are recomputed.
    pub recompute: Vec<String>,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            label_samples: 2000,
            label_targets: LabelTargets::OneHot,
            oracle_samples: 200,
            oracle: OracleConfig::default(),
            train: RouterTrainConfig::default(),
            hidden: 512,
            recompute: Vec::new(),
        }
    }
}

/// Progress of the long phases.
pub trait RouterProgress {
    fn phase(&mut self, _name: &str, _total: usize) {}
    fn advance(&mut self, _done: usize) {}
    fn message(&mut self, _text: &str) {}
}

/// No progress output.
pub struct NoProgress;
impl RouterProgress for NoProgress {}

/// What training the router produced.
#[derive(Clone, Debug, Serialize)]
pub struct RouterSummary {
    pub train_examples: usize,
    pub val_examples: usize,
    pub report_lines: Vec<String>,
    pub best_epoch: usize,
    pub oracle: Vec<(String, f64, f64)>,
    /// Every domain's oracle results in full.
    #[serde(skip)]
    pub discoveries: Vec<DomainDiscovery>,
}

fn router_dir(dir: &Path) -> PathBuf {
    dir.join("router")
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid { what: "router".into(), msg: msg.into() }
}

/// Prepares every domain of an opened run (data read and encoded as training did).
pub fn prepare_all(rm: &RunModel) -> Result<Vec<PreparedDomain>> {
    rm.config.domains.iter().map(|d| prepare_domain(&rm.config, d, rm.encoder.as_ref())).collect()
}

/// Runs the oracle for every domain, builds the samples, trains and saves the router.
pub fn train_run_router(dir: &Path, opts: &RouterOptions, progress: &mut dyn RouterProgress) -> Result<RouterSummary> {
    let rm = RunModel::open(dir)?;
    let domains = rm.domains();
    let prepared = prepare_all(&rm)?;
    let mut oracle_cfg = opts.oracle.clone();
    oracle_cfg.chat = oracle_cfg.chat.or_else(|| domains.iter().position(|d| d == "chat"));
    oracle_cfg.reasoning = oracle_cfg.reasoning.or_else(|| domains.iter().position(|d| d == "reasoning"));
    let mut found: Vec<DomainDiscovery> = Vec::new();
    for di in 0..prepared.len() {
        let n = prepared[di].val_rest.len().min(opts.oracle_samples);
        progress.phase(&format!("oracle {}", prepared[di].name), n);
        let recompute = opts.recompute.contains(&prepared[di].name);
        found.push(discover_domain(&rm, &prepared, di, opts.oracle_samples, ROUTER_SEQ_LEN, &oracle_cfg, recompute, |done, _| {
            progress.advance(done)
        })?);
        let f = found.last().expect("pushed");
        progress.message(&format!(
            "oracle {}: {} examples, {:.1}% best served without their own stacks, mean gain {:.4}",
            f.domain,
            f.discoveries.len(),
            100.0 * f.share_excluding_own(),
            f.mean_gain()
        ));
    }
    let total = prepared.iter().map(|d| d.train.len().min(opts.label_samples)).sum::<usize>()
        + found.iter().map(|f| f.prompts.len()).sum::<usize>();
    progress.phase("router features", total);
    let samples = build_samples(&rm, &prepared, &found, opts.label_samples, opts.label_targets, |n| progress.advance(n))?;
    if samples.len() < 2 {
        return Err(invalid(format!(
            "{} usable prompts (prompts under {} characters are skipped); the router needs more",
            samples.len(),
            super::dataset::MIN_PROMPT_CHARS
        )));
    }
    let keys: Vec<&str> = samples.iter().map(|s| s.group.as_str()).collect();
    let split = split_grouped(&keys, VAL_FRACTION, MIN_VAL, opts.train.seed)?;
    let example = |i: &usize| RouterExample {
        features: samples[*i].features.clone(),
        target: samples[*i].target.clone(),
        kind: ExampleKind::Single(samples[*i].domain),
    };
    let (train, val): (Vec<_>, Vec<_>) = (split.train.iter().map(example).collect(), split.val.iter().map(example).collect());
    let tape = Tape::new();
    let config = MetaRouterConfig { hidden: opts.hidden, ..MetaRouterConfig::new(rm.model.config.hidden_size, domains.clone()) };
    let mut net = MetaRouter::new(&tape, config, DType::F32, &mut Rng::new(opts.train.seed))?;
    progress.phase("router training", opts.train.epochs);
    let report: RouterTrainReport = train_router(&mut net, &tape, &train, &val, &opts.train)?;
    for line in report.lines() {
        progress.message(&line);
    }
    let out = router_dir(dir);
    std::fs::create_dir_all(&out).map_err(|e| invalid(format!("{}: {e}", out.display())))?;
    net.save(&out.join("router.safetensors"))?;
    let rule = RoutingRule {
        domains: domains.clone(),
        chat: oracle_cfg.chat.map(|c| domains[c].clone()),
        chat_floor: oracle_cfg.chat_floor,
        gate: oracle_cfg.gate,
    };
    write_json(&out.join("routing.json"), &rule)?;
    let summary = RouterSummary {
        train_examples: train.len(),
        val_examples: val.len(),
        report_lines: report.lines(),
        best_epoch: report.best_epoch,
        oracle: found.iter().map(|f| (f.domain.clone(), f.share_excluding_own(), f.mean_gain())).collect(),
        discoveries: found,
    };
    write_json(&out.join("report.json"), &summary)?;
    Ok(summary)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| invalid(e.to_string()))?;
    brainstacks_tensor::io::write_atomic_bytes(path, text.as_bytes())?;
    Ok(())
}

/// A run's trained router with its routing rule, routing prompts for a [`RunModel`].
pub struct RunRouter<'a> {
    pub rm: &'a RunModel,
    pub net: MetaRouter,
    pub rule: RoutingRule,
}

impl<'a> RunRouter<'a> {
    /// Loads `router/` of the run; an error naming the command to run when it is missing.
    pub fn load(rm: &'a RunModel) -> Result<Self> {
        let dir = router_dir(&rm.dir);
        let path = dir.join("router.safetensors");
        if !path.exists() {
            return Err(invalid(format!(
                "{} has no trained router; run `brainstacks router --run {}` first",
                rm.dir.display(),
                rm.dir.display()
            )));
        }
        let net = MetaRouter::load(&path, &Tape::new())?;
        let text = std::fs::read_to_string(dir.join("routing.json")).map_err(|e| invalid(format!("routing.json: {e}")))?;
        let rule: RoutingRule = serde_json::from_str(&text).map_err(|e| invalid(format!("routing.json: {e}")))?;
        if rule.domains != rm.domains() || net.domains() != rm.domains() {
            return Err(invalid(format!("the router was trained for domains {:?}, the run has {:?}", rule.domains, rm.domains())));
        }
        Ok(Self { rm, net, rule })
    }

    /// The router's raw sigmoid per domain for `prompt` (no floor, no gate).
    pub fn probs(&self, prompt: &str) -> Result<Vec<f64>> {
        let f = router_features(&self.rm.model, &self.rm.stacks, self.rm.encoder.as_ref(), prompt, ROUTER_SEQ_LEN)?;
        let (x, mask) = pad_features(&[&f])?;
        Ok(self.net.probs(&x, &mask)?.to_vec_f64()?)
    }

    /// The weights a prompt gets: chat floor, then the strict gate.
    pub fn weights(&self, prompt: &str) -> Result<std::collections::BTreeMap<String, f64>> {
        let p = self.probs(prompt)?;
        Ok(gate_weights(&self.rule.domains, &p, self.rule.chat.as_deref(), self.rule.chat_floor, self.rule.gate))
    }
}

impl Route for RunRouter<'_> {
    fn route(&self, example: &Example) -> Result<std::collections::BTreeMap<String, f64>> {
        self.weights(&router_text(example))
    }
}
