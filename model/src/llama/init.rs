//! Freshly initialised models: a `LlamaConfig` for a small decoder and a `LlamaModel` with random
//! weights, for tests, benchmarks and pretraining a toy base from scratch.
//!
//! ```
//! use brainstacks_model::llama::{LlamaConfig, LlamaModel, RandomInit};
//! use brainstacks_tensor::{Device, Tensor};
//! # fn main() -> brainstacks_model::Result<()> {
//! let config = LlamaConfig::small(64, 176, 2, 4, 2, 128);
//! let model = LlamaModel::random(config, &RandomInit::default())?;
//! let ids = Tensor::from_vec(vec![1i64, 5, 9], &[1, 3], &Device::Cpu)?;
//! assert_eq!(model.forward(&ids, None)?.shape(), &[1, 3, 128]);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use brainstacks_autograd::Var;
use brainstacks_tensor::nf4::Nf4Weight;
use brainstacks_tensor::{DType, Device, Rng, Tensor};

use super::config::{LlamaConfig, RopeScaling};
use super::linear::{BaseLinear, Proj, Projection};
use super::load::{LoadReport, Nf4AtLoad};
use super::model::{LlamaLayer, LlamaModel};
use crate::{Error, Result};

impl LlamaConfig {
    /// A Llama config with transformers' defaults for everything but the sizes
    /// (head_dim = hidden / heads, RoPE theta 10000, eps 1e-6, untied head, no BOS/EOS ids).
    pub fn small(hidden: usize, intermediate: usize, layers: usize, heads: usize, kv_heads: usize, vocab: usize) -> Self {
        Self {
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: hidden.checked_div(heads).unwrap_or(0),
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 2048,
            vocab_size: vocab,
            tie_word_embeddings: false,
            bos_token_ids: Vec::new(),
            eos_token_ids: Vec::new(),
            torch_dtype: None,
        }
    }
}

/// How `LlamaModel::random` draws the weights.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomInit {
    /// Philox seed; the same seed gives the same weights on every machine.
    pub seed: u64,
    /// Standard deviation of every matrix (transformers' `initializer_range`, 0.02).
    pub std: f64,
    /// The compute dtype.
    pub dtype: DType,
    /// Quantize the seven projections of every layer to NF4.
    pub nf4: Option<Nf4AtLoad>,
}

impl Default for RandomInit {
    fn default() -> Self {
        Self { seed: 0, std: 0.02, dtype: DType::F32, nf4: None }
    }
}

impl LlamaModel {
    /// A model with `N(0, std²)` matrices and unit norms, drawn in a fixed order (embeddings,
    /// then per layer Q, K, V, O, gate, up, down, then the head).
    pub fn random(config: LlamaConfig, init: &RandomInit) -> Result<Self> {
        let c = &config;
        let invalid = |msg: String| Error::Config { layer: "LlamaModel::random".into(), msg };
        if c.num_attention_heads == 0 || c.num_key_value_heads == 0 || !c.num_attention_heads.is_multiple_of(c.num_key_value_heads) {
            return Err(invalid(format!(
                "{} attention heads must be a non-zero multiple of {} key/value heads",
                c.num_attention_heads, c.num_key_value_heads
            )));
        }
        if c.head_dim == 0 || !c.head_dim.is_multiple_of(2) || [c.hidden_size, c.intermediate_size, c.vocab_size].contains(&0) {
            return Err(invalid(format!("sizes must be non-zero and head_dim ({}) even", c.head_dim)));
        }
        if !init.dtype.is_float() {
            return Err(invalid(format!("compute dtype {:?} is not a floating-point dtype", init.dtype)));
        }
        let cpu = Device::Cpu;
        let mut rng = Rng::new(init.seed);
        let mut matrix = |rows: usize, cols: usize| Tensor::randn(&mut rng, 0.0, init.std, &[rows, cols], init.dtype, &cpu);
        let (h, v) = (c.hidden_size, c.vocab_size);
        let embed = matrix(v, h)?;
        let mut report = LoadReport::default();
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let mut projections = Vec::with_capacity(7);
            for p in Proj::ALL {
                let (out_f, in_f) = p.shape(c);
                let w = matrix(out_f, in_f)?;
                let base = match &init.nf4 {
                    Some(q) if in_f.is_multiple_of(q.blocksize) => {
                        report.quantized_at_load.push(p.weight_name(l));
                        BaseLinear::Nf4(Arc::new(Nf4Weight::quantize(&w, q.blocksize, q.double_quant)?))
                    }
                    Some(q) => {
                        report.kept_dense.push((p.weight_name(l), format!("in_features {in_f} is not a multiple of {}", q.blocksize)));
                        BaseLinear::Dense(w)
                    }
                    None => BaseLinear::Dense(w),
                };
                projections.push(Projection::new(base));
            }
            let ones = || Tensor::ones(&[h], init.dtype, &cpu).map(Var::constant);
            layers.push(LlamaLayer {
                input_layernorm: ones()?,
                post_attention_layernorm: ones()?,
                projections: projections.try_into().expect("seven projections"),
            });
        }
        let lm_head = if c.tie_word_embeddings { BaseLinear::Dense(embed.clone()) } else { BaseLinear::Dense(matrix(v, h)?) };
        let inv_freq = config.inv_freq();
        Ok(LlamaModel {
            config,
            dtype: init.dtype,
            embed_tokens: Var::constant(embed),
            layers,
            norm: Var::constant(Tensor::ones(&[h], init.dtype, &cpu)?),
            lm_head,
            load_report: report,
            base_matmul: brainstacks_tensor::MatmulPrecision::F32,
            inv_freq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_and_nf4_where_blocks_fit() -> Result<()> {
        let cfg = LlamaConfig::small(64, 96, 1, 4, 2, 50);
        let init = RandomInit { nf4: Some(Nf4AtLoad::default()), ..Default::default() };
        let (a, b) = (LlamaModel::random(cfg.clone(), &init)?, LlamaModel::random(cfg, &init)?);
        let ids = Tensor::from_vec(vec![3i64, 7, 1, 0], &[2, 2], &Device::Cpu)?;
        assert_eq!(a.forward(&ids, None)?.tensor().to_vec::<f32>()?, b.forward(&ids, None)?.tensor().to_vec::<f32>()?);
        // Down has in_features 96, not a multiple of 64: it stays dense; the rest are NF4.
        assert!(a.proj(0, Proj::Q).is_some_and(BaseLinear::is_nf4));
        assert!(!a.proj(0, Proj::Down).is_some_and(BaseLinear::is_nf4));
        assert_eq!(a.load_report.kept_dense.len(), 1);
        Ok(())
    }

    #[test]
    fn bad_head_counts_are_errors() {
        let err = LlamaModel::random(LlamaConfig::small(64, 96, 1, 4, 3, 50), &RandomInit::default()).unwrap_err();
        assert!(err.to_string().contains("key/value heads"), "{err}");
    }
}
