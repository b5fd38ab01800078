//! The Llama decoder: embeddings, `num_hidden_layers` pre-norm blocks (RMSNorm, GQA causal
//! attention with rotate-half RoPE, RMSNorm, SwiGLU MLP, each with a residual), a final RMSNorm
//! and the LM head. Mirrors transformers' `LlamaForCausalLM` forward.
//!
//! Everything runs on autograd `Var`s. The frozen weights are constants, so with no adapter
//! attached nothing is recorded and the forward costs what a plain inference pass costs; with
//! an adapter, gradients flow from the logits back to its parameters. Under `no_grad` (or when
//! no input of the attention needs a gradient) attention uses the fused kernel instead of the
//! composed differentiable one: same math, one pass.

use brainstacks_autograd::{Var, no_grad_active};
use brainstacks_tensor::{DType, Device, MatmulPrecision, Tensor};

use super::cache::KvCache;
use super::config::LlamaConfig;
use super::linear::{BaseLinear, Proj, Projection, ProjectionAdapter};
use super::load::LoadReport;
use crate::{Error, Result};

/// Mean cross-entropy of `logits [B, T, V]` predicting `ids [B, T]` shifted by one (position
/// `t` predicts `t + 1`), as transformers' causal-LM loss with `labels = input_ids`.
pub fn next_token_cross_entropy(logits: &Var, ids: &Tensor) -> Result<Var> {
    let (&[b, t], &[lb, lt, v]) = (ids.shape(), logits.shape()) else {
        return Err(invalid(format!("ids {:?} and logits {:?} must be [B, T] and [B, T, V]", ids.shape(), logits.shape())));
    };
    if (b, t) != (lb, lt) || t < 2 {
        return Err(invalid(format!("ids {:?} and logits {:?}: need matching [B, T] with T >= 2", ids.shape(), logits.shape())));
    }
    let logits = logits.narrow(1usize, 0, t - 1)?.reshape(&[b * (t - 1), v])?;
    // Built on the host (the ids are a few KB; the GPU has no copy kernel for strided integer
    // views, nor integer casts), then placed beside the logits, wherever the ids came from.
    let targets = ids
        .narrow(1usize, 1, t - 1)?
        .to_device(&Device::Cpu)?
        .to_dtype(DType::I64)?
        .contiguous()?
        .reshape(&[b * (t - 1)])?
        .to_device(&logits.tensor().device())?;
    Ok(logits.cross_entropy(&targets, None)?)
}

/// One decoder block.
#[derive(Debug)]
pub struct LlamaLayer {
    pub input_layernorm: Var,
    pub post_attention_layernorm: Var,
    /// Indexed by `Proj as usize` (Q, K, V, O, Gate, Up, Down).
    pub(crate) projections: [Projection; 7],
}

impl LlamaLayer {
    pub fn projection(&self, p: Proj) -> &Projection {
        &self.projections[p as usize]
    }
}

/// A Llama causal language model with frozen base weights.
#[derive(Debug)]
pub struct LlamaModel {
    pub config: LlamaConfig,
    /// The compute dtype: activations, dense weights and norms are in it.
    pub dtype: DType,
    pub embed_tokens: Var,
    pub layers: Vec<LlamaLayer>,
    pub norm: Var,
    /// Dense; shares the embedding's storage when the embeddings are tied.
    pub lm_head: BaseLinear,
    /// What the loader did with each weight.
    pub load_report: LoadReport,
    /// How the frozen base products (the seven projections of every layer and the LM head)
    /// multiply f32 activations, forward and backward. [`MatmulPrecision::F32`] after loading;
    /// [`MatmulPrecision::Bf16`] rounds both operands to bf16 (the compute of bitsandbytes with a
    /// bf16 compute dtype), on AMX tiles where the CPU has them. Adapters and attention always
    /// compute in the model's dtype.
    pub base_matmul: MatmulPrecision,
    pub(crate) inv_freq: Vec<f64>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Config { layer: "LlamaModel".into(), msg: msg.into() }
}

impl LlamaModel {
    /// The frozen weight of projection `p` in `layer` (`None` past the last layer).
    pub fn proj(&self, layer: usize, p: Proj) -> Option<&BaseLinear> {
        self.layers.get(layer).map(|l| &l.projections[p as usize].base)
    }

    /// Attaches `adapter` to projection `p` of `layer` (or detaches with `None`), returning the
    /// one it replaces. Its output `[..., out]` is added to the base output from then on.
    pub fn set_adapter(
        &mut self,
        layer: usize,
        p: Proj,
        adapter: Option<Box<dyn ProjectionAdapter>>,
    ) -> Result<Option<Box<dyn ProjectionAdapter>>> {
        let n = self.layers.len();
        let l = self.layers.get_mut(layer).ok_or_else(|| invalid(format!("layer {layer} out of range (the model has {n})")))?;
        Ok(std::mem::replace(&mut l.projections[p as usize].adapter, adapter))
    }

    /// RoPE tables `[T, head_dim / 2]` for positions `offset..offset + t`, in the compute dtype
    /// (transformers also rounds its f32 tables to the activation dtype).
    fn rope_tables(&self, offset: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for p in offset..offset + t {
            for &f in &self.inv_freq {
                let angle = p as f64 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let device = self.device();
        let cos = Tensor::from_vec(cos, &[t, half], &Device::Cpu)?.to_dtype(self.dtype)?.to_device(&device)?;
        let sin = Tensor::from_vec(sin, &[t, half], &Device::Cpu)?.to_dtype(self.dtype)?.to_device(&device)?;
        Ok((cos, sin))
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]` (i64, u32 or u8).
    ///
    /// With a cache, the tokens continue the sequence it holds: their positions start at
    /// `cache.len()`, attention sees the cached keys and values too, and the cache is extended
    /// by these tokens. Without one, positions start at 0.
    pub fn forward(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Var> {
        self.lm_head.forward_with(&self.forward_hidden(ids, cache)?, self.base_matmul)
    }

    /// The final hidden states `[B, T, hidden]` (after the last RMSNorm), which the LM head
    /// maps to logits: `forward` without the head (same cache behaviour).
    pub fn forward_hidden(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Var> {
        self.forward_collect(ids, cache, &mut |_, _| {})
    }

    /// Entries of transformers' `output_hidden_states` list for `ids` (no cache): entry 0 is the
    /// embedding output, entry `i` the output of layer `i`, and the last entry
    /// (`num_hidden_layers`) is taken after the final norm, as transformers returns it.
    pub fn hidden_states(&self, ids: &Tensor, entries: &[usize]) -> Result<Vec<Var>> {
        let n = self.layers.len();
        if let Some(&bad) = entries.iter().find(|&&e| e > n) {
            return Err(invalid(format!("hidden state {bad} requested; the model has entries 0..={n}")));
        }
        let mut found: Vec<Option<Var>> = vec![None; entries.len()];
        let last = self.forward_collect(ids, None, &mut |entry, h| {
            for (slot, &e) in found.iter_mut().zip(entries) {
                if e == entry && e < n {
                    *slot = Some(h.clone());
                }
            }
        })?;
        Ok(found.into_iter().map(|f| f.unwrap_or_else(|| last.clone())).collect())
    }

    /// The forward up to the final norm, showing `observe` each residual stream entry
    /// (0 = embeddings, `i` = after layer `i`) before the norm.
    fn forward_collect(&self, ids: &Tensor, mut cache: Option<&mut KvCache>, observe: &mut dyn FnMut(usize, &Var)) -> Result<Var> {
        let &[b, t] = ids.shape() else {
            return Err(invalid(format!("token ids must be [batch, seq], got {:?}", ids.shape())));
        };
        if t == 0 || b == 0 {
            return Err(invalid(format!("token ids {:?}: empty batch or sequence", ids.shape())));
        }
        let offset = match cache.as_deref() {
            Some(c) => c.prepare(self.layers.len(), b)?,
            None => 0,
        };
        let (cos, sin) = self.rope_tables(offset, t)?;
        let eps = self.config.rms_norm_eps;
        // Token ids may come from anywhere (they are built on the host); a few KB move to the
        // model's device here, and nothing moves when they are there already. The GPU lookup
        // takes i64 ids, so other index dtypes are widened on the host first.
        let device = self.device();
        let ids = if device.is_cuda() && ids.dtype() != DType::I64 {
            ids.to_device(&Device::Cpu)?.to_dtype(DType::I64)?.to_device(&device)?
        } else {
            ids.to_device(&device)?
        };
        let mut h = self.embed_tokens.embedding(&ids)?;
        observe(0, &h);
        for (i, layer) in self.layers.iter().enumerate() {
            let x = h.rms_norm(&layer.input_layernorm, eps)?;
            let a = self.attention(layer, &x, &cos, &sin, cache.as_deref_mut().map(|c| (c, i)))?;
            h = h.add(&a)?;
            let x = h.rms_norm(&layer.post_attention_layernorm, eps)?;
            h = h.add(&self.mlp(layer, &x)?)?;
            observe(i + 1, &h);
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        Ok(h.rms_norm(&self.norm, eps)?)
    }

    /// Mean next-token cross-entropy of `ids [B, T]` (position `t` predicts `t + 1`, as
    /// transformers computes the loss with `labels = input_ids`), as a rank-0 `Var`.
    pub fn next_token_loss(&self, ids: &Tensor) -> Result<Var> {
        let &[_, t] = ids.shape() else {
            return Err(invalid(format!("token ids must be [batch, seq], got {:?}", ids.shape())));
        };
        if t < 2 {
            return Err(invalid(format!("a next-token loss needs at least 2 tokens, got {t}")));
        }
        next_token_cross_entropy(&self.forward(ids, None)?, ids)
    }

    /// `[B, T, heads * head_dim] -> [B, heads, T, head_dim]` (a view).
    fn heads(x: &Var, heads: usize, head_dim: usize) -> Result<Var> {
        let (b, t) = (x.shape()[0], x.shape()[1]);
        Ok(x.reshape(&[b, t, heads, head_dim])?.transpose(1usize, 2usize)?)
    }

    fn attention(&self, layer: &LlamaLayer, x: &Var, cos: &Tensor, sin: &Tensor, cache: Option<(&mut KvCache, usize)>) -> Result<Var> {
        let c = &self.config;
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let d = c.head_dim;
        let q = Self::heads(&layer.projection(Proj::Q).forward_with(x, self.base_matmul)?, c.num_attention_heads, d)?.rope(cos, sin)?;
        let k = Self::heads(&layer.projection(Proj::K).forward_with(x, self.base_matmul)?, c.num_key_value_heads, d)?.rope(cos, sin)?;
        let v = Self::heads(&layer.projection(Proj::V).forward_with(x, self.base_matmul)?, c.num_key_value_heads, d)?;
        let (k, v) = match cache {
            Some((cache, i)) => cache.append(i, k, v)?,
            None => (k, v),
        };
        let scale = 1.0 / (d as f64).sqrt();
        let needs_grad = [&q, &k, &v].iter().any(|v| v.requires_grad());
        let out = if needs_grad && !no_grad_active() {
            q.causal_attention(&k, &v, scale)?
        } else if q.tensor().device() == Device::Cpu && matches!(q.dtype(), DType::F32 | DType::BF16 | DType::F16) {
            // The training kernel without its tape: per-head GEMMs in f32, several times faster
            // than the f64 row-at-a-time form below. On f32 inputs evaluation and generation then
            // compute attention exactly as a training forward does (`Var::causal_attention` runs
            // this kernel on f32 CPU tensors); half-precision inputs are widened (exactly) and the
            // output rounded back once.
            let f32 = |x: &Var| x.tensor().to_dtype(DType::F32);
            Var::constant(f32(&q)?.causal_attention_f32(&f32(&k)?, &f32(&v)?, scale)?.to_dtype(q.dtype())?)
        } else {
            Var::constant(q.tensor().causal_attention(k.tensor(), v.tensor(), scale)?)
        };
        let out = out.transpose(1usize, 2usize)?.reshape(&[b, t, c.num_attention_heads * d])?;
        layer.projection(Proj::O).forward_with(&out, self.base_matmul)
    }

    /// SwiGLU: `down(silu(gate(x)) * up(x))`.
    fn mlp(&self, layer: &LlamaLayer, x: &Var) -> Result<Var> {
        let g = layer.projection(Proj::Gate).forward_with(x, self.base_matmul)?.silu()?;
        let u = layer.projection(Proj::Up).forward_with(x, self.base_matmul)?;
        layer.projection(Proj::Down).forward_with(&g.mul(&u)?, self.base_matmul)
    }
}
