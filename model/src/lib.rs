//! brainstacks-model: layers built on the autograd engine: the dense building blocks (`Linear`,
//! `Mlp`), checkpoint formats, the Llama decoder (`llama`), MoE-LoRA (`moe_lora`), the
//! null-space projection (`null_space`) and the Brainstacks stacks on every projection (`stacks`).

mod error;
mod file_meta;
pub mod formats;
pub mod fuzz_support;
pub mod llama;
pub mod moe_lora;
pub mod nn;
pub mod null_space;
pub mod router;
pub mod stacks;

pub use error::{Error, Result};
