//! The Llama decoder (`LlamaForCausalLM`) on the autograd engine, loaded from Hugging Face
//! checkpoints, with frozen base weights (dense or NF4) and a per-projection adapter hook.
//!
//! - [`config`]: `config.json` (transformers 4 and 5 layouts) and the RoPE frequencies.
//! - [`linear`]: [`BaseLinear`], the seven [`Proj`]ections and the [`ProjectionAdapter`] hook.
//! - [`load`]: checkpoint loading with shape/dtype checks, NF4 (pre-quantized or at load).
//! - [`model`]: the forward pass; [`cache`]: the KV cache for incremental decoding.

pub mod cache;
pub mod config;
pub mod linear;
pub mod load;
pub mod model;

pub use cache::KvCache;
pub use config::{LlamaConfig, RopeScaling};
pub use linear::{BaseLinear, Proj, Projection, ProjectionAdapter};
pub use load::{LoadOptions, LoadReport, Nf4AtLoad};
pub use model::{LlamaLayer, LlamaModel};
