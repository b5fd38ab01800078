//! Loading a `LlamaModel` from a Hugging Face checkpoint directory (`config.json` plus
//! `model.safetensors` or shards with an index).
//!
//! Every expected tensor is checked for presence, shape and a floating-point dtype before it is
//! converted to the compute dtype; errors name the tensor and the file. Projections stored in
//! bitsandbytes 4-bit form are read as NF4; dense projections can be quantized to NF4 at load.
//! Tensors the model does not use are an error unless `allow_unused` is set (a checkpoint with
//! more layers than its config says is a mistake worth stopping on).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use brainstacks_autograd::Var;
use brainstacks_tensor::io::Checkpoint;
use brainstacks_tensor::nf4::Nf4Weight;
use brainstacks_tensor::{DType, Tensor};

use super::config::LlamaConfig;
use super::linear::{BaseLinear, Proj, Projection};
use super::model::{LlamaLayer, LlamaModel};
use crate::formats::bnb4::{is_nf4, nf4_keys, read_nf4};
use crate::{Error, Result};

/// Quantize dense projections to NF4 while loading.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4AtLoad {
    /// Elements per block (a power of two in 32..=4096; bitsandbytes' default is 64).
    pub blocksize: usize,
    pub double_quant: bool,
}

impl Default for Nf4AtLoad {
    fn default() -> Self {
        Self { blocksize: 64, double_quant: false }
    }
}

/// How to load.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// The compute dtype (f32 or bf16 for use; f64 for gradient checks; f16 also works).
    pub dtype: DType,
    /// Quantize the dense projections (never embeddings, norms or the head) to NF4.
    pub quantize: Option<Nf4AtLoad>,
    /// Accept tensors the model does not use (listed in the report) instead of failing.
    pub allow_unused: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32, quantize: None, allow_unused: false }
    }
}

/// What the loader did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Projections stored in 4 bits in the checkpoint.
    pub prequantized: Vec<String>,
    /// Projections quantized to NF4 while loading.
    pub quantized_at_load: Vec<String>,
    /// Projections left dense although quantization was asked for, with the reason.
    pub kept_dense: Vec<(String, String)>,
    /// Tensors in the checkpoint that the model does not use (only with `allow_unused`).
    pub unused: Vec<String>,
}

struct Loader<'a> {
    ck: &'a Checkpoint,
    opts: &'a LoadOptions,
    used: BTreeSet<String>,
    report: LoadReport,
}

fn ck_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), msg: msg.into() }
}

impl Loader<'_> {
    /// The tensor `name` checked against `shape`, in its stored dtype.
    fn raw(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if !self.ck.contains(name) {
            return Err(ck_err(self.ck.dir(), format!("missing tensor {name:?} (expected shape {shape:?})")));
        }
        let (file, e) = self.ck.locate(name)?;
        if e.shape != shape {
            return Err(ck_err(file.path(), format!("tensor {name:?} has shape {:?}, expected {shape:?}", e.shape)));
        }
        if !e.dtype.to_dtype().is_some_and(|d| d.is_float()) {
            return Err(ck_err(file.path(), format!("tensor {name:?} has dtype {}, expected a floating-point dtype", e.dtype)));
        }
        self.used.insert(name.to_string());
        Ok(self.ck.tensor(name)?)
    }

    /// A dense tensor in the compute dtype.
    fn dense(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.raw(name, shape)?.to_dtype(self.opts.dtype)?)
    }

    /// A projection weight `[out, in]`: NF4 when the checkpoint stores it so, else dense and
    /// quantized at load when asked.
    fn projection(&mut self, name: &str, out_f: usize, in_f: usize) -> Result<BaseLinear> {
        if is_nf4(self.ck, name) {
            let w = read_nf4(self.ck, name)?;
            if w.shape() != [out_f, in_f] {
                let (file, _) = self.ck.locate(name)?;
                return Err(ck_err(file.path(), format!("4-bit tensor {name:?} has shape {:?}, expected [{out_f}, {in_f}]", w.shape())));
            }
            self.used.extend(nf4_keys(name));
            self.report.prequantized.push(name.to_string());
            return Ok(BaseLinear::Nf4(Arc::new(w)));
        }
        let raw = self.raw(name, &[out_f, in_f])?;
        if let Some(q) = &self.opts.quantize {
            if in_f.is_multiple_of(q.blocksize) {
                // From the stored values (quantization reads them as f32 anyway).
                let w = Nf4Weight::quantize(&raw, q.blocksize, q.double_quant)
                    .map_err(|e| ck_err(self.ck.dir(), format!("quantizing {name:?}: {e}")))?;
                self.report.quantized_at_load.push(name.to_string());
                return Ok(BaseLinear::Nf4(Arc::new(w)));
            }
            self.report
                .kept_dense
                .push((name.to_string(), format!("in_features {in_f} is not a multiple of the block size {}", q.blocksize)));
        }
        Ok(BaseLinear::Dense(raw.to_dtype(self.opts.dtype)?))
    }
}

impl LlamaModel {
    /// Loads `dir/config.json` and the weights next to it.
    pub fn load(dir: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let ck = Checkpoint::open_dir(dir)?;
        Self::from_checkpoint(config, &ck, opts)
    }

    /// Builds the model from an opened checkpoint and its config.
    pub fn from_checkpoint(config: LlamaConfig, ck: &Checkpoint, opts: &LoadOptions) -> Result<Self> {
        if !opts.dtype.is_float() {
            return Err(ck_err(ck.dir(), format!("compute dtype {:?} is not a floating-point dtype", opts.dtype)));
        }
        if let Some(q) = &opts.quantize {
            brainstacks_tensor::nf4::check_blocksize(q.blocksize)
                .map_err(|e| ck_err(ck.dir(), format!("NF4 block size: {e}")))?;
        }
        let c = &config;
        let (h, v) = (c.hidden_size, c.vocab_size);
        let mut ld = Loader { ck, opts, used: BTreeSet::new(), report: LoadReport::default() };
        let embed = ld.dense("model.embed_tokens.weight", &[v, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let norm = |ld: &mut Loader, which: &str| -> Result<Var> {
                Ok(Var::constant(ld.dense(&format!("model.layers.{l}.{which}.weight"), &[h])?))
            };
            let input_layernorm = norm(&mut ld, "input_layernorm")?;
            let post_attention_layernorm = norm(&mut ld, "post_attention_layernorm")?;
            let mut projections = Vec::with_capacity(7);
            for p in Proj::ALL {
                let (out_f, in_f) = p.shape(c);
                projections.push(Projection::new(ld.projection(&p.weight_name(l), out_f, in_f)?));
            }
            let projections: [Projection; 7] = projections.try_into().expect("seven projections");
            layers.push(LlamaLayer { input_layernorm, post_attention_layernorm, projections });
        }
        let norm = Var::constant(ld.dense("model.norm.weight", &[h])?);
        let lm_head = if c.tie_word_embeddings {
            // transformers ties the head to the embeddings and ignores a saved head.
            ld.used.insert("lm_head.weight".into());
            BaseLinear::Dense(embed.clone())
        } else {
            BaseLinear::Dense(ld.dense("lm_head.weight", &[v, h])?)
        };
        let unused: Vec<String> = ck
            .names()
            .filter(|n| !ld.used.contains(*n) && !n.ends_with("rotary_emb.inv_freq"))
            .map(str::to_string)
            .collect();
        if !unused.is_empty() && !opts.allow_unused {
            let shown: Vec<&str> = unused.iter().take(5).map(String::as_str).collect();
            return Err(ck_err(
                ck.dir(),
                format!("{} tensors the model does not use (e.g. {shown:?}); does config.json match the weights?", unused.len()),
            ));
        }
        ld.report.unused = unused;
        let inv_freq = config.inv_freq();
        Ok(LlamaModel {
            config,
            dtype: opts.dtype,
            embed_tokens: Var::constant(embed),
            layers,
            norm,
            lm_head,
            load_report: ld.report,
            base_matmul: brainstacks_tensor::MatmulPrecision::F32,
            inv_freq,
        })
    }
}
