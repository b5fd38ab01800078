//! Brainstacks training (method spec sections 1 to 4 and 8): residual boosting rounds per domain,
//! domains in curriculum order, null-space projection against earlier domains, a manifest that
//! makes every run resumable.
//!
//! - [`config`]: `run.json` and its defaults.
//! - [`round`]: one round (steps, evaluation, the BestStack rule).
//! - [`run`]: the inner and outer loops, the null space, the prefix and forgetting records.
//! - [`manifest`], [`eval`], [`batch`], [`prepare`]: the pieces they use.

pub mod batch;
pub mod config;
pub mod eval;
pub mod manifest;
pub mod prepare;
pub mod round;
pub mod run;

pub use config::RunConfig;
pub use run::{Quiet, Run, RunObserver};
