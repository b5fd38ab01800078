//! The GPU benchmark harness behind the `gpu-bench` binary (see `benches/README.md`).
//!
//! Everything but [`gpu`] is plain Rust and tested on the CPU: the result schema and its JSON
//! lines ([`record`], [`json`]), benchmark ids with their bytes and FLOPs ([`spec`]), the
//! regression check ([`compare`]) and the command line ([`cli`]).

pub mod cli;
pub mod compare;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod json;
pub mod record;
pub mod spec;
pub mod targets;
