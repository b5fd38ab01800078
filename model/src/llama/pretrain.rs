//! Training the base itself (pretraining a toy model from scratch) and saving it as a Hugging Face
//! checkpoint.
//!
//! The Brainstacks method never trains the base: every weight of a loaded [`LlamaModel`] is a
//! constant. [`LlamaModel::unfreeze`] turns the dense weights into leaves of a tape for a while
//! (the projections become [`BaseLinear::Trainable`]), an optimizer updates them through
//! [`LlamaModel::trainable_mut`], and [`LlamaModel::freeze`] makes them constants again.
//! [`LlamaModel::save_pretrained`] writes `config.json` + `model.safetensors` under the names
//! transformers uses, so the result loads like any downloaded checkpoint.
//!
//! ```
//! use brainstacks_autograd::Tape;
//! use brainstacks_model::llama::{LlamaConfig, LlamaModel, RandomInit};
//! use brainstacks_tensor::{Device, Tensor};
//! # fn main() -> brainstacks_model::Result<()> {
//! let mut model = LlamaModel::random(LlamaConfig::small(16, 32, 1, 2, 1, 40), &RandomInit::default())?;
//! let tape = Tape::new();
//! let names = model.unfreeze(&tape)?;
//! let ids = Tensor::from_vec(vec![1i64, 5, 9, 2], &[1, 4], &Device::Cpu)?;
//! let grads = tape.backward(&model.next_token_loss(&ids)?)?;
//! assert!(model.trainable_mut().iter().all(|w| grads.get(w).is_some()));
//! assert_eq!(names[0], "model.embed_tokens.weight");
//! model.freeze();
//! let dir = std::env::temp_dir().join(format!("pretrain-doc-{}", std::process::id()));
//! model.save_pretrained(&dir)?;
//! assert!(dir.join("config.json").exists() && dir.join("model.safetensors").exists());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use brainstacks_autograd::{Tape, Var};
use brainstacks_tensor::DType;
use brainstacks_tensor::io::{TensorToWrite, write_atomic_bytes, write_safetensors};
use serde_json::{Value, json};

use super::config::{LlamaConfig, RopeScaling};
use super::linear::{BaseLinear, Proj};
use super::model::LlamaModel;
use crate::{Error, Result};

fn invalid(msg: impl Into<String>) -> Error {
    Error::Config { layer: "LlamaModel (pretraining)".into(), msg: msg.into() }
}

impl LlamaConfig {
    /// The config as transformers writes `config.json` for `LlamaForCausalLM`; reading it back
    /// with [`LlamaConfig::from_json`] gives `self` again.
    pub fn to_hf_json(&self) -> Value {
        let ids = |v: &[u32]| match v {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let rope_scaling = match &self.rope_scaling {
            RopeScaling::None => Value::Null,
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
        };
        let dtype = self.torch_dtype.map(|d| match d {
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
            DType::F64 => "float64",
            _ => "float32",
        });
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": ids(&self.bos_token_ids),
            "eos_token_id": ids(&self.eos_token_ids),
            "torch_dtype": dtype,
        })
    }
}

impl LlamaModel {
    /// Makes every weight a trainable leaf of `tape` (embeddings, norms, the seven projections of
    /// every layer, the head) and returns their checkpoint names in the order of
    /// [`trainable_mut`](Self::trainable_mut). A tied head shares the embeddings' leaf. Fails on
    /// 4-bit projections: a quantized weight cannot take an optimizer step.
    pub fn unfreeze(&mut self, tape: &Tape) -> Result<Vec<String>> {
        if let Some((l, p)) = self.nf4_projection() {
            return Err(invalid(format!("{} is 4-bit; only a dense model can be trained", p.weight_name(l))));
        }
        let leaf = |v: &Var| tape.param(v.tensor().clone());
        self.embed_tokens = leaf(&self.embed_tokens);
        for layer in &mut self.layers {
            layer.input_layernorm = leaf(&layer.input_layernorm);
            layer.post_attention_layernorm = leaf(&layer.post_attention_layernorm);
            for p in &mut layer.projections {
                let w = p.base.to_dense(self.dtype)?;
                p.base = BaseLinear::Trainable(tape.param(w));
            }
        }
        self.norm = leaf(&self.norm);
        self.lm_head = if self.config.tie_word_embeddings {
            BaseLinear::Trainable(self.embed_tokens.clone())
        } else {
            BaseLinear::Trainable(tape.param(self.lm_head.to_dense(self.dtype)?))
        };
        Ok(self.weight_names())
    }

    /// The trainable leaves after [`unfreeze`](Self::unfreeze), in the order of its names (a tied
    /// head is not listed twice). Optimizer steps update them in place.
    pub fn trainable_mut(&mut self) -> Vec<&mut Var> {
        let mut out: Vec<&mut Var> = vec![&mut self.embed_tokens];
        for layer in &mut self.layers {
            out.push(&mut layer.input_layernorm);
            out.push(&mut layer.post_attention_layernorm);
            for p in &mut layer.projections {
                if let BaseLinear::Trainable(w) = &mut p.base {
                    out.push(w);
                }
            }
        }
        out.push(&mut self.norm);
        if !self.config.tie_word_embeddings
            && let BaseLinear::Trainable(w) = &mut self.lm_head
        {
            out.push(w);
        }
        out
    }

    /// Makes every weight a constant again (the values the optimizer left). A tied head keeps
    /// sharing the embeddings' storage.
    pub fn freeze(&mut self) {
        let constant = |v: &Var| Var::constant(v.tensor().clone());
        self.embed_tokens = constant(&self.embed_tokens);
        for layer in &mut self.layers {
            layer.input_layernorm = constant(&layer.input_layernorm);
            layer.post_attention_layernorm = constant(&layer.post_attention_layernorm);
            for p in &mut layer.projections {
                if let BaseLinear::Trainable(w) = &p.base {
                    p.base = BaseLinear::Dense(w.tensor().clone());
                }
            }
        }
        self.norm = constant(&self.norm);
        if self.config.tie_word_embeddings {
            self.lm_head = BaseLinear::Dense(self.embed_tokens.tensor().clone());
        } else if let BaseLinear::Trainable(w) = &self.lm_head {
            self.lm_head = BaseLinear::Dense(w.tensor().clone());
        }
    }

    /// Checkpoint names of every weight, in a fixed order (no head when tied).
    fn weight_names(&self) -> Vec<String> {
        let mut names = vec!["model.embed_tokens.weight".to_string()];
        for l in 0..self.layers.len() {
            names.push(format!("model.layers.{l}.input_layernorm.weight"));
            names.push(format!("model.layers.{l}.post_attention_layernorm.weight"));
            names.extend(Proj::ALL.iter().map(|p| p.weight_name(l)));
        }
        names.push("model.norm.weight".into());
        if !self.config.tie_word_embeddings {
            names.push("lm_head.weight".into());
        }
        names
    }

    fn nf4_projection(&self) -> Option<(usize, Proj)> {
        self.layers.iter().enumerate().find_map(|(l, layer)| Proj::ALL.into_iter().find(|&p| layer.projection(p).base.is_nf4()).map(|p| (l, p)))
    }

    /// Every weight by checkpoint name, dense, in the compute dtype.
    pub fn named_weights(&self) -> Result<Vec<(String, brainstacks_tensor::Tensor)>> {
        let mut out = vec![self.embed_tokens.tensor().clone()];
        for layer in &self.layers {
            out.push(layer.input_layernorm.tensor().clone());
            out.push(layer.post_attention_layernorm.tensor().clone());
            for p in Proj::ALL {
                out.push(layer.projection(p).base.to_dense(self.dtype)?);
            }
        }
        out.push(self.norm.tensor().clone());
        if !self.config.tie_word_embeddings {
            out.push(self.lm_head.to_dense(self.dtype)?);
        }
        Ok(self.weight_names().into_iter().zip(out).collect())
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` (every weight in the compute dtype,
    /// transformers' names), creating `dir`. Fails on 4-bit projections (quantize a dense
    /// checkpoint instead: `brainstacks quantize`).
    pub fn save_pretrained(&self, dir: &Path) -> Result<()> {
        if let Some((l, p)) = self.nf4_projection() {
            return Err(invalid(format!("{} is 4-bit; save the dense model and quantize the checkpoint", p.weight_name(l))));
        }
        std::fs::create_dir_all(dir).map_err(|e| invalid(format!("cannot create {}: {e}", dir.display())))?;
        let mut config = self.config.clone();
        config.torch_dtype = Some(self.dtype);
        let text = serde_json::to_string_pretty(&config.to_hf_json()).map_err(|e| invalid(e.to_string()))?;
        write_atomic_bytes(&dir.join("config.json"), text.as_bytes())?;
        let weights = self.named_weights()?;
        let tensors = weights.iter().map(|(name, t)| TensorToWrite::from_tensor(name.clone(), t)).collect::<std::result::Result<Vec<_>, _>>()?;
        let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(&dir.join("model.safetensors"), &tensors, &metadata)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llama::{LoadOptions, RandomInit};
    use brainstacks_autograd::no_grad;
    use brainstacks_tensor::{Device, Tensor};

    fn small(tied: bool) -> LlamaModel {
        let mut c = LlamaConfig::small(16, 40, 2, 4, 2, 50);
        c.tie_word_embeddings = tied;
        c.bos_token_ids = vec![1];
        c.eos_token_ids = vec![2];
        LlamaModel::random(c, &RandomInit { seed: 3, ..Default::default() }).unwrap()
    }

    fn ids() -> Tensor {
        Tensor::from_vec(vec![1i64, 7, 9, 3, 30, 2, 4, 4], &[2, 4], &Device::Cpu).unwrap()
    }

    #[test]
    fn config_round_trips_through_hf_json() {
        let mut c = small(true).config;
        c.torch_dtype = Some(DType::F32);
        c.rope_scaling = RopeScaling::Linear { factor: 2.0 };
        let back = LlamaConfig::from_value(&c.to_hf_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn every_weight_gets_a_gradient_and_a_step_lowers_the_loss() {
        for tied in [false, true] {
            let mut model = small(tied);
            let tape = Tape::new();
            let names = model.unfreeze(&tape).unwrap();
            assert_eq!(names.len(), model.trainable_mut().len());
            assert_eq!(names.len(), 1 + 2 * 9 + 1 + usize::from(!tied));
            let loss = model.next_token_loss(&ids()).unwrap();
            let before = loss.tensor().to_scalar_f64().unwrap();
            let grads = tape.backward(&loss).unwrap();
            for (name, w) in names.iter().zip(model.trainable_mut()) {
                let g = grads.get(w).unwrap_or_else(|| panic!("no gradient for {name}"));
                let new = w.tensor().sub(&g.mul_scalar(0.5).unwrap()).unwrap();
                w.replace_value(new).unwrap();
            }
            tape.clear();
            let after = model.next_token_loss(&ids()).unwrap().tensor().to_scalar_f64().unwrap();
            assert!(after < before, "tied={tied}: {after} !< {before}");
        }
    }

    #[test]
    fn saved_checkpoint_loads_back_to_the_same_logits() {
        for tied in [false, true] {
            let mut model = small(tied);
            let tape = Tape::new();
            model.unfreeze(&tape).unwrap();
            // Move the weights off their initial values so the check covers trained ones.
            let grads = tape.backward(&model.next_token_loss(&ids()).unwrap()).unwrap();
            for w in model.trainable_mut() {
                let g = grads.get(w).unwrap().clone();
                w.replace_value(w.tensor().sub(&g).unwrap()).unwrap();
            }
            model.freeze();
            let dir = std::env::temp_dir().join(format!("bs-pretrain-save-{}-{tied}", std::process::id()));
            model.save_pretrained(&dir).unwrap();
            let loaded = LlamaModel::load(&dir, &LoadOptions::default()).unwrap();
            assert_eq!(loaded.config.tie_word_embeddings, tied);
            let a = no_grad(|| model.forward(&ids(), None)).unwrap().tensor().to_vec::<f32>().unwrap();
            let b = no_grad(|| loaded.forward(&ids(), None)).unwrap().tensor().to_vec::<f32>().unwrap();
            assert_eq!(a, b);
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    #[test]
    fn nf4_models_refuse_to_train_or_save() {
        let init = RandomInit { nf4: Some(crate::llama::Nf4AtLoad { blocksize: 64, double_quant: false }), ..Default::default() };
        let mut model = LlamaModel::random(LlamaConfig::small(64, 128, 1, 2, 1, 40), &init).unwrap();
        let err = model.unfreeze(&Tape::new()).unwrap_err().to_string();
        assert!(err.contains("4-bit"), "{err}");
        let err = model.save_pretrained(&std::env::temp_dir().join("never-written")).unwrap_err().to_string();
        assert!(err.contains("quantize"), "{err}");
    }
}
