//! `brainstacks generate`, `logits` and `grad`: a Llama checkpoint directory driven from the
//! command line. `logits` and `grad` write safetensors files for parity checks against
//! transformers (the same ids through both, compared tensor by tensor). `--adapter` attaches a
//! PEFT LoRA adapter directory (`brainstacks_model::llama::PeftLora`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use brainstacks_autograd::{Tape, Var, no_grad};
use brainstacks_model::llama::{
    GenerateOptions, LlamaModel, LlamaTokenizer, LoadOptions, PeftLora, Proj, ProjectionAdapter, TextStream, alpaca_prompt,
    next_token_cross_entropy,
};
use brainstacks_tensor::io::{TensorToWrite, write_safetensors};
use brainstacks_tensor::{DType, Device, Tensor};

use crate::{Error, Result};

fn invalid(what: &str, msg: impl Into<String>) -> Error {
    Error::Invalid { what: what.into(), msg: msg.into() }
}

/// `"1,2,3"` (spaces allowed) as token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids: Vec<u32> =
        s.split(',').map(|x| x.trim().parse::<u32>().map_err(|e| invalid("--ids", format!("{x:?}: {e}")))).collect::<Result<_>>()?;
    if ids.is_empty() {
        return Err(invalid("--ids", "no ids"));
    }
    Ok(ids)
}

/// `f32`, `f64`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "f64" => DType::F64,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => {
            return Err(invalid("--dtype", format!("{other:?}: expected f32, f64, bf16 or f16")));
        }
    })
}

fn ids_tensor(model: &LlamaModel, ids: &[u32]) -> Result<Tensor> {
    let v = model.config.vocab_size;
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= v) {
        return Err(invalid("--ids", format!("token {bad} is outside the vocabulary of {v}")));
    }
    Ok(Tensor::from_vec(ids.iter().map(|&x| x as i64).collect::<Vec<_>>(), &[1, ids.len()], &Device::Cpu)?)
}

/// The flags of `generate`.
#[derive(Clone, Debug)]
pub struct GenerateArgs {
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory.
    pub adapter: Option<PathBuf>,
    pub prompt: String,
    /// Wrap the prompt as the instruction of the Alpaca template (empty input).
    pub alpaca: bool,
    pub dtype: DType,
    pub options: GenerateOptions,
}

/// Streams the generated text to `out` as it is produced; returns the new ids.
pub fn generate(args: &GenerateArgs, out: &mut dyn Write) -> Result<Vec<u32>> {
    let model = load_with_adapter(&args.model, args.adapter.as_deref(), args.dtype)?;
    let tok = LlamaTokenizer::from_dir(&args.model)?;
    let text = if args.alpaca { alpaca_prompt(&args.prompt, None) } else { args.prompt.clone() };
    let prompt = tok.encode(&text, true)?;
    let mut opts = args.options.clone();
    if opts.eos_token_ids.is_none() && model.config.eos_token_ids.is_empty() {
        opts.eos_token_ids = tok.eos_token_id.map(|e| vec![e]);
    }
    let mut stream = TextStream::new(&tok, &prompt)?;
    let mut failure: Option<Error> = None;
    let g = model.generate(&prompt, &opts, |id| {
        let piece = stream
            .push(id)
            .map_err(Error::from)
            .and_then(|p| out.write_all(p.as_bytes()).and_then(|_| out.flush()).map_err(|e| invalid("stdout", e.to_string())));
        match piece {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    let rest = stream.finish()?;
    writeln!(out, "{rest}").map_err(|e| invalid("stdout", e.to_string()))?;
    Ok(g.ids)
}

/// The model in `dir` with the PEFT LoRA adapter in `adapter` attached, if any.
fn load_with_adapter(dir: &Path, adapter: Option<&Path>, dtype: DType) -> Result<LlamaModel> {
    let mut model = LlamaModel::load(dir, &LoadOptions { dtype, ..Default::default() })?;
    if let Some(a) = adapter {
        PeftLora::load(a, &model, None)?.attach(&mut model)?;
    }
    Ok(model)
}

/// Logits `[T, vocab]` (f32, key `logits`) of `ids`, with an optional PEFT LoRA adapter,
/// written to `out`.
pub fn logits(model_dir: &Path, adapter: Option<&Path>, ids: &[u32], dtype: DType, out: &Path) -> Result<()> {
    let model = load_with_adapter(model_dir, adapter, dtype)?;
    let ids = ids_tensor(&model, ids)?;
    let t = ids.shape()[1];
    let logits = no_grad(|| model.forward(&ids, None))?;
    let logits = logits.tensor().reshape(&[t, model.config.vocab_size])?.to_dtype(DType::F32)?;
    write_safetensors(out, &[TensorToWrite::from_tensor("logits", &logits)?], &BTreeMap::new())?;
    Ok(())
}

/// A dense delta `x · Dᵀ` on a frozen projection: at `D = 0` it changes nothing and the
/// gradient of `D` is the gradient of the weight under it.
struct Delta(Var);

impl ProjectionAdapter for Delta {
    fn forward(&self, x: &Var) -> brainstacks_model::Result<Var> {
        Ok(x.matmul(&self.0.t()?)?)
    }
}

/// The mean next-token loss of `ids` and the gradient of every weight, by Hugging Face name
/// (the tied head's gradient is part of the embeddings', as in PyTorch), written to `out` as
/// `loss` (rank 0) and `grad.<name>`, in `dtype`.
pub fn grad(model_dir: &Path, ids: &[u32], dtype: DType, out: &Path) -> Result<f64> {
    if ids.len() < 2 {
        return Err(invalid("--ids", "a next-token loss needs at least 2 tokens"));
    }
    let mut model = LlamaModel::load(model_dir, &LoadOptions { dtype, ..Default::default() })?;
    if model.layers.iter().any(|l| Proj::ALL.iter().any(|&p| l.projection(p).base.is_nf4())) {
        return Err(invalid("grad", "the checkpoint has 4-bit projections; weight gradients need a dense checkpoint"));
    }
    let ids = ids_tensor(&model, ids)?;
    let tape = Tape::new();
    let mut params: Vec<(String, Var)> = Vec::new();
    let leaf = |v: &Var| tape.param(v.tensor().clone());
    model.embed_tokens = leaf(&model.embed_tokens);
    params.push(("model.embed_tokens.weight".into(), model.embed_tokens.clone()));
    for l in 0..model.layers.len() {
        let layer = &mut model.layers[l];
        layer.input_layernorm = leaf(&layer.input_layernorm);
        layer.post_attention_layernorm = leaf(&layer.post_attention_layernorm);
        params.push((format!("model.layers.{l}.input_layernorm.weight"), layer.input_layernorm.clone()));
        params.push((format!("model.layers.{l}.post_attention_layernorm.weight"), layer.post_attention_layernorm.clone()));
        for p in Proj::ALL {
            let [o, i] = model.proj(l, p).expect("layer in range").shape();
            let d = tape.param(Tensor::zeros(&[o, i], dtype, &Device::Cpu)?);
            model.set_adapter(l, p, Some(Box::new(Delta(d.clone()))))?;
            params.push((p.weight_name(l), d));
        }
    }
    model.norm = leaf(&model.norm);
    params.push(("model.norm.weight".into(), model.norm.clone()));
    let head = if model.config.tie_word_embeddings {
        model.embed_tokens.clone()
    } else {
        let w = tape.param(model.lm_head.to_dense(dtype)?);
        params.push(("lm_head.weight".into(), w.clone()));
        w
    };
    let logits = model.forward_hidden(&ids, None)?.matmul(&head.t()?)?;
    let loss = next_token_cross_entropy(&logits, &ids)?;
    let grads = tape.backward(&loss)?;
    let mut tensors = vec![TensorToWrite::from_tensor("loss", loss.tensor())?];
    for (name, v) in &params {
        let g = grads.get(v).ok_or_else(|| invalid("grad", format!("no gradient reached {name}")))?;
        tensors.push(TensorToWrite::from_tensor(format!("grad.{name}"), g)?);
    }
    write_safetensors(out, &tensors, &BTreeMap::new())?;
    Ok(loss.tensor().to_scalar_f64()?)
}
