//! brainstacks-model: layers built on the autograd engine. For now the dense building blocks
//! (`Linear`, `Mlp`); the Llama decoder, NF4 linear and MoE-LoRA stacks join here.

mod error;
pub mod formats;
pub mod nn;

pub use error::{Error, Result};
