//! brainstacks-model: layers built on the autograd engine: the dense building blocks (`Linear`,
//! `Mlp`), checkpoint formats, and the Llama decoder (`llama`); MoE-LoRA stacks join here.

mod error;
pub mod formats;
pub mod llama;
pub mod moe_lora;
pub mod nn;
pub mod null_space;

pub use error::{Error, Result};
