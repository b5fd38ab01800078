//! brainstacks-train: optimizers, training loops and the `brainstacks` command-line tool.

pub mod boost;
pub mod data;
pub mod demo;
mod error;
pub mod fuzz_support;
pub mod llama_cli;
pub mod optim;
pub mod quantize_cli;
pub mod router;
pub mod router_train;
pub mod run_cli;
pub mod schedule;
pub mod train_cli;

pub use error::{Error, Result};
