//! brainstacks-train: optimizers, training loops and the `brainstacks` command-line tool.

pub mod demo;
mod error;
pub mod optim;

pub use error::{Error, Result};
