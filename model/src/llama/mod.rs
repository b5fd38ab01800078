//! The Llama decoder (`LlamaForCausalLM`) on the autograd engine, loaded from Hugging Face
//! checkpoints, with frozen base weights (dense or NF4) and a per-projection adapter hook.
//!
//! - [`config`]: `config.json` (transformers 4 and 5 layouts) and the RoPE frequencies.
//! - [`linear`]: [`BaseLinear`], the seven [`Proj`]ections and the [`ProjectionAdapter`] hook.
//! - [`init`]: small configs and randomly initialised models.
//! - [`load`]: checkpoint loading with shape/dtype checks, NF4 (pre-quantized or at load).
//! - [`model`]: the forward pass; [`cache`]: the KV cache for incremental decoding.
//! - [`pretrain`]: training the base itself (toy models) and saving Hugging Face checkpoints.
//! - [`generate`]: greedy and sampled decoding with the cache.
//! - [`lora`]: PEFT LoRA adapters (load, attach, save).
//! - [`tokenizer`]: tokenizer.json / tokenizer_config.json and the Alpaca template.
//!
//! ```
//! use brainstacks_model::llama::{KvCache, LlamaModel, LoadOptions};
//! use brainstacks_tensor::{Device, Tensor};
//! # fn main() -> brainstacks_model::Result<()> {
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny_llama_llama3");
//! let model = LlamaModel::load(dir, &LoadOptions::default())?;
//! let mut cache = KvCache::new();
//! let prompt = Tensor::from_vec(vec![1i64, 5, 9], &[1, 3], &Device::Cpu)?;
//! let logits = model.forward(&prompt, Some(&mut cache))?; // [1, 3, vocab]
//! assert_eq!(logits.shape(), &[1, 3, model.config.vocab_size]);
//! // The next token continues at position 3.
//! let next = Tensor::from_vec(vec![42i64], &[1, 1], &Device::Cpu)?;
//! let logits = model.forward(&next, Some(&mut cache))?;
//! assert_eq!((logits.shape()[1], cache.len()), (1, 4));
//! # Ok(()) }
//! ```

pub mod cache;
pub mod config;
pub mod device;
pub mod generate;
pub mod init;
pub mod linear;
pub mod load;
pub mod lora;
pub mod model;
pub mod pretrain;
pub mod tokenizer;

pub use cache::KvCache;
pub use config::{LlamaConfig, RopeScaling};
pub use generate::{GenerateOptions, Generation, StopReason};
pub use init::RandomInit;
pub use linear::{BaseLinear, Proj, Projection, ProjectionAdapter};
pub use load::{LoadOptions, LoadReport, Nf4AtLoad};
pub use lora::{LoraAdapter, LoraConfig, PeftLora};
pub use model::{LlamaLayer, LlamaModel, next_token_cross_entropy};
pub use tokenizer::{LlamaTokenizer, SpecialTokens, TextStream, alpaca_prompt};
