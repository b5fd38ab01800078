//! Placing a model on a device: every weight moves once, and the forward then runs wherever its
//! weights are (the inputs must be on the same device).
//!
//! ```
//! use brainstacks_model::llama::{LlamaConfig, LlamaModel, RandomInit};
//! use brainstacks_tensor::Device;
//! # fn main() -> brainstacks_model::Result<()> {
//! let model = LlamaModel::random(LlamaConfig::small(64, 128, 2, 4, 2, 100), &RandomInit::default())?;
//! assert_eq!(model.device(), Device::Cpu);
//! let same = model.to_device(&Device::Cpu)?; // a no-op move; `Device::Cuda(0)` uploads
//! assert_eq!(same.device(), Device::Cpu);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use brainstacks_autograd::Var;
use brainstacks_tensor::Device;

use super::linear::BaseLinear;
use super::model::LlamaModel;
use crate::{Error, Result};

/// `v` with its value on `device`, keeping its identity (a trainable leaf stays the same leaf).
pub(crate) fn var_to_device(v: &Var, device: &Device) -> Result<Var> {
    let mut out = v.clone();
    if v.tensor().device() != *device {
        out.replace_value(v.tensor().to_device(device)?)?;
    }
    Ok(out)
}

impl BaseLinear {
    /// The same weight with its products on `device` (an NF4 weight keeps its host copy for
    /// checkpoints and gains a device copy).
    pub fn to_device(&self, device: &Device) -> Result<BaseLinear> {
        Ok(match self {
            BaseLinear::Dense(w) => BaseLinear::Dense(w.to_device(device)?),
            BaseLinear::Nf4(w) => BaseLinear::Nf4(Arc::new(w.to_device(device)?)),
            BaseLinear::Trainable(w) => BaseLinear::Trainable(var_to_device(w, device)?),
        })
    }

    /// The device its products run on.
    pub fn device(&self) -> Device {
        match self {
            BaseLinear::Dense(w) => w.device(),
            BaseLinear::Nf4(w) => w.device(),
            BaseLinear::Trainable(w) => w.tensor().device(),
        }
    }
}

impl LlamaModel {
    /// The device of the model's weights (that of the embeddings; [`LlamaModel::to_device`] moves
    /// them all together).
    pub fn device(&self) -> Device {
        self.embed_tokens.tensor().device()
    }

    /// The model with every weight on `device`. Place a model before attaching adapters (stacks,
    /// LoRA): they are created on the model's device, and an adapter already attached is an
    /// error here, since it cannot be moved generically. Trainable leaves keep their identity.
    pub fn to_device(mut self, device: &Device) -> Result<LlamaModel> {
        if self.device() == *device && self.lm_head.device() == *device {
            return Ok(self);
        }
        let tied = self.config.tie_word_embeddings;
        self.embed_tokens = var_to_device(&self.embed_tokens, device)?;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            layer.input_layernorm = var_to_device(&layer.input_layernorm, device)?;
            layer.post_attention_layernorm = var_to_device(&layer.post_attention_layernorm, device)?;
            for p in &mut layer.projections {
                if p.adapter.is_some() {
                    return Err(Error::Config {
                        layer: format!("model.layers.{l}"),
                        msg: format!("an adapter is attached; place the model on {device} before attaching adapters"),
                    });
                }
                p.base = p.base.to_device(device)?;
            }
        }
        self.norm = var_to_device(&self.norm, device)?;
        // A tied head shares the embeddings' (moved) weight instead of getting a second copy.
        self.lm_head = match (&self.lm_head, tied) {
            (BaseLinear::Dense(_), true) => BaseLinear::Dense(self.embed_tokens.tensor().clone()),
            (BaseLinear::Trainable(_), true) => BaseLinear::Trainable(self.embed_tokens.clone()),
            (head, _) => head.to_device(device)?,
        };
        Ok(self)
    }
}
