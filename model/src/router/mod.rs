//! The Brainstacks meta-router ("the Oracle" of spec §5): a small attention-pooling network that
//! reads the base model's per-token features of a prompt and gives one independent sigmoid per
//! domain, used as that domain's stack weight at inference (spec §6).
//!
//! - [`net`]: the network ([`MetaRouter`], [`MetaRouterConfig`]) and its forward pass.
//! - [`file`]: saving and loading it as a safetensors file (`format = "brainstacks-router"`).
//! - [`batch`]: padding prompts of different lengths into one batch with a token mask.

pub mod batch;
pub mod file;
pub mod net;

pub use batch::pad_features;
pub use file::{FORMAT, VERSION};
pub use net::{MetaRouter, MetaRouterConfig};
