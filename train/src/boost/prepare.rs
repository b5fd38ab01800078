//! Everything a run needs before its first step: the base model with stacks attached, the
//! tokenizer, and every domain's packed training rows and fixed validation batches.

use brainstacks_model::llama::{LlamaConfig, LlamaModel, LlamaTokenizer, LoadOptions, Nf4AtLoad, Proj, RandomInit};
use brainstacks_model::stacks::StackSet;
use brainstacks_tensor::{DType, Device, MatmulPrecision};

use super::config::{DomainConfig, RunConfig};
use crate::data::{
    Batch, ByteTokenizer, DomainConfig as DataConfig, DomainData, EncodedExample, Example, LossMask, SplitConfig, TextEncoder, TokenRow,
    eval_batches, read_jsonl,
};
use crate::{Error, Result};

/// A domain ready to train on.
pub struct PreparedDomain {
    pub name: String,
    pub train_rows: Vec<TokenRow>,
    /// The fixed validation subset, encoded (null-space capture reads these).
    pub val_examples: Vec<EncodedExample>,
    /// The same subset as right-padded batches (the evaluator's input).
    pub val_batches: Vec<Batch>,
    pub train_examples: usize,
    /// Validation examples longer than `seq_len`, cut to it (their tail is not evaluated).
    pub val_truncated: usize,
    /// The validation subset as examples (routing reads their prompt text).
    pub val_subset: Vec<Example>,
    /// The validation examples after the subset: held out from training and from the evaluator,
    /// the oracle scores them.
    pub val_rest: Vec<Example>,
    /// The training examples (the router's single-domain label prompts come from them).
    pub train: Vec<Example>,
}

/// The base model (frozen) and its tokenizer.
pub fn load_model(cfg: &RunConfig) -> Result<(LlamaModel, Box<dyn TextEncoder>)> {
    let dtype = match cfg.model.dtype.as_str() {
        "bf16" => DType::BF16,
        _ => DType::F32,
    };
    let device: Device = cfg.model.device.parse().map_err(|msg| Error::Invalid { what: "model.device".into(), msg })?;
    if device.is_cuda() && dtype != DType::F32 {
        // The GPU's norms, softmax, reductions and loss have f32 kernels only.
        return Err(Error::Invalid {
            what: "model.dtype".into(),
            msg: format!("{dtype} on {device}: training on CUDA computes in f32 for now (use \"dtype\": \"f32\")"),
        });
    }
    let nf4 = cfg.model.nf4.then(Nf4AtLoad::default);
    let (mut model, encoder): (LlamaModel, Box<dyn TextEncoder>) = match &cfg.model.path {
        Some(dir) => {
            let model = LlamaModel::load(dir, &LoadOptions { dtype, quantize: nf4, allow_unused: false })?;
            (model, Box::new(LlamaTokenizer::from_dir(dir)?))
        }
        None => {
            let [h, ffn, layers, heads, kv] = cfg.model.toy;
            let config = LlamaConfig::small(h, ffn, layers, heads, kv, ByteTokenizer::VOCAB_SIZE);
            let init = RandomInit { seed: cfg.model.toy_seed, std: 0.02, dtype, nf4 };
            (LlamaModel::random(config, &init)?, Box::new(ByteTokenizer))
        }
    };
    model.base_matmul = match cfg.model.base_matmul.as_str() {
        "bf16" => MatmulPrecision::Bf16,
        _ => MatmulPrecision::F32,
    };
    Ok((model.to_device(&device)?, encoder))
}

/// The model with a `StackSet` on all seven projections, domains ordered as the curriculum.
pub fn attach_stacks(model: &mut LlamaModel, cfg: &RunConfig) -> Result<StackSet> {
    let stacks = StackSet::attach(model, &Proj::ALL)?;
    stacks.set_domain_order(&cfg.domains.iter().map(|d| d.name.clone()).collect::<Vec<_>>());
    stacks.control().set_options(cfg.stack_options());
    Ok(stacks)
}

fn loss_mask(cfg: &RunConfig) -> LossMask {
    if cfg.response_only_loss { LossMask::ResponseOnly } else { LossMask::FullSequence }
}

/// Reads, splits, encodes and packs one domain.
pub fn prepare_domain(cfg: &RunConfig, d: &DomainConfig, encoder: &dyn TextEncoder) -> Result<PreparedDomain> {
    let data_cfg = DataConfig { split: SplitConfig { val_fraction: cfg.val_fraction, seed: cfg.split_seed }, ..Default::default() };
    let data = match &d.val {
        None => DomainData::load(&d.name, &d.train, &data_cfg)?,
        Some(val) => {
            let train = read_jsonl(&d.train, &data_cfg.parse)?;
            let val = read_jsonl(val, &data_cfg.parse)?;
            if train.examples.is_empty() || val.examples.is_empty() {
                return Err(Error::Invalid { what: format!("domain {:?}", d.name), msg: "empty training or validation file".into() });
            }
            DomainData { name: d.name.clone(), train: train.examples, val: val.examples, counts: train.counts }
        }
    };
    let train_rows = data.packed_train(encoder, cfg.seq_len, cfg.split_seed)?;
    if train_rows.len() < cfg.micro_batch {
        return Err(Error::Invalid {
            what: format!("domain {:?}", d.name),
            msg: format!("{} packed rows of {} tokens, fewer than one micro-batch of {}", train_rows.len(), cfg.seq_len, cfg.micro_batch),
        });
    }
    let val_examples = data.eval_examples(encoder, cfg.eval_samples)?;
    let val_batches = eval_batches(&val_examples, cfg.eval_batch, cfg.seq_len, loss_mask(cfg), encoder.eos()?, &Device::Cpu)?;
    let val_truncated = val_examples.iter().filter(|e| e.len() > cfg.seq_len).count();
    let val_subset = data.val.iter().take(val_examples.len()).cloned().collect();
    let val_rest = data.val.iter().skip(val_examples.len()).cloned().collect();
    Ok(PreparedDomain {
        name: d.name.clone(),
        train_rows,
        val_examples,
        val_batches,
        train_examples: data.train.len(),
        val_truncated,
        val_subset,
        val_rest,
        train: data.train,
    })
}

/// The loss mask training and evaluation use.
pub fn run_loss_mask(cfg: &RunConfig) -> LossMask {
    loss_mask(cfg)
}
