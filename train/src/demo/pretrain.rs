//! Pretraining the demo's base model from scratch: a small Llama with every weight trainable,
//! trained by AdamW on packed sequences of the whole corpus (every domain mixed), evaluated on
//! held-out examples, and compared with the unigram loss (what a model that ignores context
//! reaches), so the report can show the base learned more than token frequencies.

use brainstacks_autograd::{Tape, no_grad};
use brainstacks_model::llama::{LlamaConfig, LlamaModel, RandomInit};
use brainstacks_tensor::{DType, Device, Rng};

use super::results::CurvePoint;
use crate::boost::batch::batch_loss;
use crate::data::{Batch, EncodedExample, LossMask, LossMeter, MicroBatches, PackTail, TextEncoder, eval_batches, pack, shuffled_indices};
use crate::optim::{AdamW, AdamWConfig, clip_grad_norm};
use crate::schedule::LrSchedule;
use crate::{Error, Result};

/// The base model's sizes and its training recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct PretrainConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seq_len: usize,
    pub batch: usize,
    pub steps: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub eval_every: usize,
    pub seed: u64,
    /// Where the model trains.
    pub device: Device,
}

impl PretrainConfig {
    /// The demo's base: 4 layers, width 256, grouped-query attention (4 query heads sharing 2
    /// key/value heads).
    pub fn standard(seed: u64) -> Self {
        Self {
            hidden: 256,
            intermediate: 688,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            seq_len: 128,
            batch: 16,
            steps: 220,
            lr: 3e-3,
            warmup: 20,
            weight_decay: 0.1,
            grad_clip: 1.0,
            eval_every: 50,
            seed,
            device: Device::Cpu,
        }
    }

    /// `--quick`: the same shape of pipeline at a size that runs in seconds.
    pub fn quick(seed: u64) -> Self {
        Self { hidden: 64, intermediate: 176, layers: 2, heads: 4, kv_heads: 2, batch: 8, steps: 60, lr: 5e-3, warmup: 5, eval_every: 20, ..Self::standard(seed) }
    }

    pub fn llama_config(&self, vocab: usize, bos: Option<u32>, eos: u32) -> LlamaConfig {
        let mut c = LlamaConfig::small(self.hidden, self.intermediate, self.layers, self.heads, self.kv_heads, vocab);
        c.max_position_embeddings = 4 * self.seq_len.max(512);
        c.bos_token_ids = bos.into_iter().collect();
        c.eos_token_ids = vec![eos];
        c
    }
}

/// What one evaluation or step reports to the caller (for progress bars).
#[derive(Clone, Copy, Debug)]
pub enum PretrainEvent {
    Step { step: usize, loss: f64 },
    Eval { step: usize, loss: f64 },
}

/// The trained base and its curves.
pub struct Pretrained {
    pub model: LlamaModel,
    pub train_curve: Vec<CurvePoint>,
    pub val_curve: Vec<CurvePoint>,
    pub tokens: u64,
    pub parameters: usize,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid { what: "pretrain".into(), msg: msg.into() }
}

/// Cross-entropy (nats) of predicting every validation target from the training tokens' unigram
/// distribution, add-one smoothed over the vocabulary.
pub fn unigram_loss(train: &[EncodedExample], val: &[Batch], vocab: usize) -> Result<f64> {
    let mut counts = vec![1.0f64; vocab];
    for e in train {
        for &id in &e.ids {
            *counts.get_mut(id as usize).ok_or_else(|| invalid(format!("token id {id} outside the vocabulary of {vocab}")))? += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let mut nll = 0.0;
    let mut n = 0usize;
    for b in val {
        for &label in &b.labels.to_vec::<i64>()? {
            if let Ok(id) = usize::try_from(label) {
                nll -= (counts[id] / total).ln();
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(invalid("no validation target to measure the unigram loss on"));
    }
    Ok(nll / n as f64)
}

/// Token-weighted validation loss of `model` (no tape).
pub fn validation_loss(model: &LlamaModel, batches: &[Batch]) -> Result<f64> {
    no_grad(|| {
        let mut meter = LossMeter::default();
        for b in batches.iter().filter(|b| b.targets > 0) {
            meter.add(batch_loss(model, b)?.tensor().to_scalar_f64()?, b.targets);
        }
        meter.mean().ok_or_else(|| invalid("no counted token in the validation batches"))
    })
}

/// The validation batches of `examples` (full-sequence loss, as pretraining optimises).
pub fn validation_batches(examples: &[EncodedExample], encoder: &dyn TextEncoder, seq_len: usize) -> Result<Vec<Batch>> {
    eval_batches(examples, 16, seq_len, LossMask::FullSequence, encoder.eos()?, &Device::Cpu)
}

/// Trains a fresh model on `train` (already encoded; shuffled and packed here) and evaluates it
/// on `val` every `eval_every` steps and at the end.
pub fn pretrain(
    cfg: &PretrainConfig,
    encoder: &dyn TextEncoder,
    train: &[EncodedExample],
    val: &[Batch],
    on_event: &mut dyn FnMut(PretrainEvent),
) -> Result<Pretrained> {
    let config = cfg.llama_config(encoder.vocab_size(), encoder.bos(), encoder.eos()?);
    let model = LlamaModel::random(config, &RandomInit { seed: cfg.seed, std: 0.02, dtype: DType::F32, nf4: None })?;
    let mut model = model.to_device(&cfg.device)?;
    let order = shuffled_indices(train.len(), &mut Rng::new(cfg.seed ^ 0x5eed))?;
    let shuffled: Vec<EncodedExample> = order.iter().map(|&i| train[i].clone()).collect();
    let rows = pack(&shuffled, cfg.seq_len, PackTail::Drop)?;
    if rows.len() < cfg.batch {
        return Err(invalid(format!("{} packed rows of {} tokens; a batch needs {}", rows.len(), cfg.seq_len, cfg.batch)));
    }
    let mut batches = MicroBatches::new(rows, cfg.batch, LossMask::FullSequence, cfg.seed, Device::Cpu)?;

    let tape = Tape::new();
    model.unfreeze(&tape)?;
    let parameters = model.trainable_mut().iter().map(|w| w.tensor().elem_count()).sum();
    let schedule = LrSchedule::cosine(cfg.lr, cfg.warmup as u64, cfg.steps as u64)?;
    let mut opt = AdamW::new(AdamWConfig { lr: cfg.lr, beta1: 0.9, beta2: 0.95, weight_decay: cfg.weight_decay, ..AdamWConfig::default() });
    let (mut train_curve, mut val_curve) = (Vec::new(), Vec::new());
    let mut tokens = 0u64;
    val_curve.push(CurvePoint { step: 0, loss: validation_loss(&model, val)? });
    for step in 1..=cfg.steps {
        let batch = batches.next_batch()?;
        tokens += batch.targets as u64;
        let loss = batch_loss(&model, &batch)?;
        let value = loss.tensor().to_scalar_f64()?;
        let mut grads = tape.backward(&loss)?;
        tape.clear();
        drop(loss);
        let norm = {
            let params = model.trainable_mut();
            let refs: Vec<&_> = params.iter().map(|p| &**p).collect();
            clip_grad_norm(&mut grads, &refs, cfg.grad_clip)?
        };
        // A non-finite loss or gradient skips the update rather than poisoning the weights.
        if value.is_finite() && norm.is_finite() {
            opt.set_lr(schedule.lr_at(step as u64 - 1));
            opt.step(&mut model.trainable_mut(), &grads)?;
        }
        train_curve.push(CurvePoint { step, loss: value });
        on_event(PretrainEvent::Step { step, loss: value });
        if step % cfg.eval_every == 0 || step == cfg.steps {
            let v = validation_loss(&model, val)?;
            val_curve.push(CurvePoint { step, loss: v });
            on_event(PretrainEvent::Eval { step, loss: v });
        }
    }
    model.freeze();
    Ok(Pretrained { model, train_curve, val_curve, tokens, parameters })
}
