//! Training the meta-router (spec §5.3, §5.5): a grouped train/validation split, the loss
//! (BCE-with-logits plus a confidence margin), AdamW with a per-epoch cosine schedule, and model
//! selection on validation after every epoch.
//!
//! The caller supplies features already computed by the base model (`[T, d_model]` per prompt);
//! batches pad them to the longest prompt with a 0 mask, which the router ignores exactly.

use std::collections::{BTreeMap, BTreeSet};

use brainstacks_autograd::{Tape, Var};
use brainstacks_model::router::{MetaRouter, pad_features};
use brainstacks_tensor::{DType, Device, Rng, Tensor};

use crate::optim::{AdamW, AdamWConfig, clip_grad_norm};
use crate::schedule::LrSchedule;
use crate::{Error, Result};

/// The validation share of the split (spec §5.3).
pub const VAL_FRACTION: f64 = 0.1;
/// The smallest validation set the spec asks for ("at least 200"), capped at half the data.
pub const MIN_VAL: usize = 200;
/// How many leading characters of a prompt form its group key (spec §5.3).
pub const GROUP_KEY_CHARS: usize = 100;
/// A domain counts as "on" in a mixed target above this value (spec §5.5, `mixed_set`).
pub const MIXED_ON: f64 = 0.3;

fn invalid(what: &str, msg: String) -> Error {
    Error::Invalid { what: what.into(), msg }
}

/// What a training example stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExampleKind {
    /// A single-domain prompt of the domain with this index (counts toward `single_top1`).
    Single(usize),
    /// A cross-domain prompt with a multi-hot target (counts toward `mixed_set`).
    Mixed,
}

/// One prompt: its base-model features `[T, d_model]`, a target in `[0, 1]` per domain (in the
/// router's domain order) and its kind.
#[derive(Clone, Debug)]
pub struct RouterExample {
    pub features: Tensor,
    pub target: Vec<f64>,
    pub kind: ExampleKind,
}

/// Indices into the caller's examples, each on exactly one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupedSplit {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// The group key of a prompt: its first 100 characters (characters, not bytes).
pub fn prompt_group_key(prompt: &str) -> String {
    prompt.chars().take(GROUP_KEY_CHARS).collect()
}

/// A random permutation of `0..n` drawn from `rng` (which advances by `n`).
fn permutation(n: usize, rng: &mut Rng) -> Result<Vec<usize>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let keys = Tensor::rand_uniform(rng, 0.0, 1.0, &[n], DType::F64, &Device::Cpu)?.to_vec::<f64>()?;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]).then(a.cmp(&b)));
    Ok(order)
}

/// Splits examples, given by their group keys, into train and validation so that no group
/// appears on both sides (spec §5.3: groups are the first 100 characters of the prompt, see
/// [`prompt_group_key`]).
///
/// The validation side aims at `max(ceil(val_fraction * n), min(min_val, n / 2))` examples: the
/// groups, in a random order drawn from `seed`, are moved to validation one by one until that
/// many are there, skipping any group that would leave training empty. Whole groups move, so
/// validation can overshoot by less than one group. Both index lists are sorted.
///
/// ```
/// use brainstacks_train::router_train::split_grouped;
/// let keys = ["a", "a", "b", "c", "c", "d", "e", "f", "g", "h"];
/// let s = split_grouped(&keys, 0.1, 200, 7).unwrap();
/// assert!(s.val.len() >= 5 && s.train.len() + s.val.len() == 10);
/// ```
pub fn split_grouped<S: AsRef<str>>(keys: &[S], val_fraction: f64, min_val: usize, seed: u64) -> Result<GroupedSplit> {
    let n = keys.len();
    if n < 2 {
        return Err(invalid("split_grouped", format!("{n} examples; a split needs at least 2")));
    }
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(invalid("split_grouped", format!("val_fraction {val_fraction} must be in (0, 1)")));
    }
    // Groups in first-appearance order, so the result depends only on the keys and the seed.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let g = *index_of.entry(k.as_ref()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    let target = ((val_fraction * n as f64).ceil() as usize).max(min_val.min(n / 2));
    let mut val = Vec::new();
    for g in permutation(groups.len(), &mut Rng::new(seed))? {
        if val.len() >= target {
            break;
        }
        if val.len() + groups[g].len() < n {
            val.extend_from_slice(&groups[g]);
        }
    }
    val.sort_unstable();
    let on_val: BTreeSet<usize> = val.iter().copied().collect();
    let train = (0..n).filter(|i| !on_val.contains(i)).collect();
    Ok(GroupedSplit { train, val })
}

/// Hyperparameters of [`train_router`]; the defaults are the method's (spec §5.5).
#[derive(Clone, Debug, PartialEq)]
pub struct RouterTrainConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub batch: usize,
    pub epochs: usize,
    /// Global gradient-norm clip (must be > 0).
    pub grad_clip: f64,
    /// Weight of the confidence-margin term.
    pub margin_weight: f64,
    /// The margin: probabilities closer than this to 0.5 are penalised.
    pub margin: f64,
    /// Seeds the batch order and the dropout masks.
    pub seed: u64,
}

impl Default for RouterTrainConfig {
    fn default() -> Self {
        Self { lr: 8e-4, weight_decay: 0.01, batch: 16, epochs: 8, grad_clip: 1.0, margin_weight: 0.05, margin: 0.3, seed: 0 }
    }
}

impl RouterTrainConfig {
    fn validate(&self) -> Result<()> {
        let ok = self.lr.is_finite()
            && self.lr >= 0.0
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0
            && self.batch > 0
            && self.epochs > 0
            && self.grad_clip.is_finite()
            && self.grad_clip > 0.0
            && self.margin_weight.is_finite()
            && self.margin.is_finite();
        if ok {
            Ok(())
        } else {
            Err(invalid("RouterTrainConfig", format!("{self:?}: rates must be finite and >= 0, batch, epochs and grad_clip > 0")))
        }
    }

    /// The learning rate of (0-based) `epoch`: cosine annealing with `T_max = epochs`, stepped
    /// once per epoch, `lr * (1 + cos(pi * epoch / epochs)) / 2` (PyTorch's `CosineAnnealingLR`
    /// with `eta_min = 0`; the same as a cosine schedule without warm-up counted in epochs).
    pub fn lr_at_epoch(&self, epoch: usize) -> Result<f64> {
        Ok(LrSchedule::cosine(self.lr, 0, self.epochs as u64)?.lr_at(epoch as u64))
    }
}

/// The training loss of logits `z [B, D]` against targets `y [B, D]`:
/// `mean(BCE-with-logits(z, y)) + margin_weight * mean(max(0, margin - |sigmoid(z) - 1/2|))`.
///
/// The BCE is written `softplus(z) - y z`, which equals `-(y log s + (1-y) log(1-s))` and stays
/// finite for any `z` (softplus is computed as `max(z, 0) + log1p(exp(-|z|))`).
///
/// ```
/// use brainstacks_autograd::Var;
/// use brainstacks_tensor::{Device, Tensor};
/// use brainstacks_train::router_train::router_loss;
/// let z = Var::constant(Tensor::from_vec(vec![0.0f64, 2.0], &[1, 2], &Device::Cpu).unwrap());
/// let y = Tensor::from_vec(vec![1.0f64, 0.0], &[1, 2], &Device::Cpu).unwrap();
/// let loss = router_loss(&z, &y, 0.05, 0.3).unwrap().tensor().to_scalar_f64().unwrap();
/// // BCE: (ln 2 + ln(1 + e^2)) / 2; margin: (0.3 + 0) / 2, since |sigmoid(2) - 0.5| > 0.3.
/// let want = (2f64.ln() + (1.0 + 2f64.exp()).ln()) / 2.0 + 0.05 * 0.15;
/// assert!((loss - want).abs() < 1e-12);
/// ```
pub fn router_loss(logits: &Var, targets: &Tensor, margin_weight: f64, margin: f64) -> Result<Var> {
    if logits.shape() != targets.shape() {
        return Err(invalid("router_loss", format!("logits {:?} and targets {:?} differ in shape", logits.shape(), targets.shape())));
    }
    let y = Var::constant(targets.to_dtype(logits.dtype())?);
    let bce = logits.softplus()?.sub(&y.mul(logits)?)?.mean_all()?;
    let distance = logits.sigmoid()?.add_scalar(-0.5)?.abs()?;
    let hinge = distance.neg()?.add_scalar(margin)?.relu()?.mean_all()?;
    Ok(bce.add(&hinge.mul_scalar(margin_weight)?)?)
}

/// What the router does on a set of examples (spec §5.5's selection measures).
#[derive(Clone, Debug, PartialEq)]
pub struct RouterEval {
    /// Mean BCE-with-logits over every example and domain.
    pub bce: f64,
    /// Share of `Single` examples whose highest prediction is the highest target (0 when there are none).
    pub single_top1: f64,
    /// Share of `Mixed` examples whose top-2 predictions are exactly `{d : target_d > 0.3}`
    /// (0 when there are none).
    pub mixed_set: f64,
    pub singles: usize,
    pub mixed: usize,
}

impl RouterEval {
    /// The model-selection score `0.50 single_top1 + 0.35 mixed_set - 0.15 bce`.
    pub fn score(&self) -> f64 {
        0.50 * self.single_top1 + 0.35 * self.mixed_set - 0.15 * self.bce
    }
}

/// The first index of the largest value.
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Checks every example against the router's shape: `[T >= 1, d_model]` features, `D` finite
/// targets in `[0, 1]`, a `Single` index below `D`.
fn check_examples(net: &MetaRouter, examples: &[&RouterExample], what: &str) -> Result<()> {
    let (dm, d) = (net.config().d_model, net.config().num_domains());
    for (i, e) in examples.iter().enumerate() {
        let s = e.features.shape();
        if s.len() != 2 || s[0] == 0 || s[1] != dm {
            return Err(invalid(what, format!("example {i}: features {s:?}, expected [tokens >= 1, {dm}]")));
        }
        if e.target.len() != d || e.target.iter().any(|t| !(0.0..=1.0).contains(t)) {
            return Err(invalid(what, format!("example {i}: target {:?} must hold {d} values in [0, 1]", e.target)));
        }
        if let ExampleKind::Single(k) = e.kind
            && k >= d
        {
            return Err(invalid(what, format!("example {i}: domain index {k} out of range for {d} domains")));
        }
    }
    Ok(())
}

/// Padded features (in the router's dtype), mask and targets `[B, D]` of a batch.
fn batch_tensors(net: &MetaRouter, examples: &[&RouterExample]) -> Result<(Tensor, Tensor, Tensor)> {
    let feats: Vec<&Tensor> = examples.iter().map(|e| &e.features).collect();
    let (x, mask) = pad_features(&feats)?;
    let x = if x.dtype() == net.dtype() { x } else { x.to_dtype(net.dtype())? };
    let y: Vec<f64> = examples.iter().flat_map(|e| e.target.iter().copied()).collect();
    let y = Tensor::from_vec(y, &[examples.len(), net.config().num_domains()], &Device::Cpu)?.to_dtype(net.dtype())?;
    Ok((x, mask, y))
}

/// Evaluates `net` on `examples` in batches of `batch` (no dropout, nothing recorded).
pub fn evaluate_router(net: &MetaRouter, examples: &[&RouterExample], batch: usize) -> Result<RouterEval> {
    if examples.is_empty() || batch == 0 {
        return Err(invalid("evaluate_router", format!("{} examples in batches of {batch}", examples.len())));
    }
    check_examples(net, examples, "evaluate_router")?;
    let d = net.config().num_domains();
    let (mut bce_sum, mut singles, mut single_hits, mut mixed, mut mixed_hits) = (0.0, 0, 0, 0, 0);
    for chunk in examples.chunks(batch) {
        let (x, mask, _) = batch_tensors(net, chunk)?;
        let z = net.logits(&x, &mask)?.to_vec_f64()?;
        for (e, zs) in chunk.iter().zip(z.chunks(d)) {
            for (&z, &y) in zs.iter().zip(&e.target) {
                bce_sum += z.max(0.0) + (-z.abs()).exp().ln_1p() - y * z;
            }
            match e.kind {
                ExampleKind::Single(_) => {
                    singles += 1;
                    single_hits += usize::from(argmax(zs) == argmax(&e.target));
                }
                ExampleKind::Mixed => {
                    mixed += 1;
                    let mut order: Vec<usize> = (0..d).collect();
                    order.sort_by(|&a, &b| zs[b].total_cmp(&zs[a]).then(a.cmp(&b)));
                    let top: BTreeSet<usize> = order.into_iter().take(2).collect();
                    let on: BTreeSet<usize> = (0..d).filter(|&k| e.target[k] > MIXED_ON).collect();
                    mixed_hits += usize::from(top == on);
                }
            }
        }
    }
    let share = |hits: usize, n: usize| if n == 0 { 0.0 } else { hits as f64 / n as f64 };
    Ok(RouterEval {
        bce: bce_sum / (examples.len() * d) as f64,
        single_top1: share(single_hits, singles),
        mixed_set: share(mixed_hits, mixed),
        singles,
        mixed,
    })
}

/// One epoch's numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterEpoch {
    /// 1-based.
    pub epoch: usize,
    /// The learning rate used throughout the epoch.
    pub lr: f64,
    /// Mean training loss over the epoch's batches (weighted by batch size; dropout on).
    pub train_loss: f64,
    pub val: RouterEval,
    pub score: f64,
}

impl RouterEpoch {
    /// A one-line summary, e.g.
    /// `epoch 3/8 lr 6.83e-4 train 0.4121 val bce 0.3312 top1 0.950 mixed 0.700 score 0.6703`.
    pub fn line(&self, epochs: usize) -> String {
        let mixed = if self.val.mixed == 0 { "n/a".to_string() } else { format!("{:.3}", self.val.mixed_set) };
        format!(
            "epoch {}/{epochs} lr {:.3e} train {:.4} val bce {:.4} top1 {:.3} mixed {mixed} score {:.4}",
            self.epoch, self.lr, self.train_loss, self.val.bce, self.val.single_top1, self.score
        )
    }
}

/// What [`train_router`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct RouterTrainReport {
    pub epochs: Vec<RouterEpoch>,
    /// 1-based epoch whose parameters the router holds at the end.
    pub best_epoch: usize,
    pub best_score: f64,
    /// Validation before any training step.
    pub initial: RouterEval,
    /// Caveats about the selection (e.g. no mixed examples in validation).
    pub notes: Vec<String>,
}

impl RouterTrainReport {
    /// One line per epoch, then the choice and the notes.
    pub fn lines(&self) -> Vec<String> {
        let n = self.epochs.len();
        let mut out: Vec<String> = self.epochs.iter().map(|e| e.line(n)).collect();
        out.push(format!("best epoch {} (score {:.4}), its parameters restored", self.best_epoch, self.best_score));
        out.extend(self.notes.iter().cloned());
        out
    }
}

/// Trains `net` (whose parameters are leaves on `tape`) on `train`, selects on `val` after each
/// epoch, and leaves `net` holding the best epoch's parameters (spec §5.5).
///
/// Per epoch: the learning rate `lr (1 + cos(pi e / epochs)) / 2` (e = 0-based epoch), the
/// training examples in a fresh random order (from `seed`), batches padded to their longest
/// prompt, loss [`router_loss`], gradient clip to `grad_clip`, an AdamW step; then
/// [`evaluate_router`] on `val` and the score `0.50 top1 + 0.35 mixed - 0.15 bce`. The first
/// epoch with the highest score wins. With no mixed (or no single) validation examples that term
/// is 0 for every epoch, which the report notes.
///
/// The tape is cleared after every step, so it must hold nothing else the caller needs.
pub fn train_router(
    net: &mut MetaRouter,
    tape: &Tape,
    train: &[RouterExample],
    val: &[RouterExample],
    config: &RouterTrainConfig,
) -> Result<RouterTrainReport> {
    config.validate()?;
    if train.is_empty() || val.is_empty() {
        return Err(invalid(
            "train_router",
            format!("{} training and {} validation examples; both must be non-empty", train.len(), val.len()),
        ));
    }
    let train_refs: Vec<&RouterExample> = train.iter().collect();
    let val_refs: Vec<&RouterExample> = val.iter().collect();
    check_examples(net, &train_refs, "train_router (train)")?;
    let initial = evaluate_router(net, &val_refs, config.batch)?;
    let mut notes = Vec::new();
    if initial.mixed == 0 {
        notes.push("no mixed examples in validation: mixed_set counted as 0 in every score".to_string());
    }
    if initial.singles == 0 {
        notes.push("no single-domain examples in validation: single_top1 counted as 0 in every score".to_string());
    }

    let mut opt = AdamW::new(AdamWConfig { lr: config.lr, weight_decay: config.weight_decay, ..AdamWConfig::default() });
    let mut order_rng = Rng::new(config.seed);
    // A separate stream for dropout, so the batch order does not depend on the masks' sizes.
    let mut dropout_rng = Rng::new(config.seed ^ 0x6472_6f70_6f75_7421);
    let mut epochs = Vec::with_capacity(config.epochs);
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    for epoch in 0..config.epochs {
        let lr = config.lr_at_epoch(epoch)?;
        opt.set_lr(lr);
        let order = permutation(train.len(), &mut order_rng)?;
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for (step, idx) in order.chunks(config.batch).enumerate() {
            let batch: Vec<&RouterExample> = idx.iter().map(|&i| &train[i]).collect();
            let (x, mask, y) = batch_tensors(net, &batch)?;
            let logits = net.forward(&Var::constant(x), &mask, Some(&mut dropout_rng))?;
            let loss = router_loss(&logits, &y, config.margin_weight, config.margin)?;
            let loss_value = loss.tensor().to_scalar_f64()?;
            let mut grads = tape.backward(&loss)?;
            let norm = clip_grad_norm(&mut grads, &net.params(), config.grad_clip)?;
            if !loss_value.is_finite() || !norm.is_finite() {
                tape.clear();
                return Err(invalid(
                    "train_router",
                    format!("epoch {} step {step}: loss {loss_value}, gradient norm {norm}; not finite", epoch + 1),
                ));
            }
            opt.step(&mut net.params_mut(), &grads)?;
            tape.clear();
            loss_sum += loss_value * batch.len() as f64;
            seen += batch.len();
        }
        let val_eval = evaluate_router(net, &val_refs, config.batch)?;
        let score = val_eval.score();
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, epoch + 1, net.params().iter().map(|p| p.tensor().clone()).collect()));
        }
        epochs.push(RouterEpoch { epoch: epoch + 1, lr, train_loss: loss_sum / seen as f64, val: val_eval, score });
    }
    // `epochs >= 1` was checked, so a best epoch exists.
    let (best_score, best_epoch, snapshot) = best.ok_or_else(|| invalid("train_router", "no epoch ran".into()))?;
    for (p, t) in net.params_mut().into_iter().zip(snapshot) {
        p.replace_value(t)?;
    }
    Ok(RouterTrainReport { epochs, best_epoch, best_score, initial, notes })
}
