//! `brainstacks demo`: the whole method on data, a tokenizer and a base model that the demo makes
//! itself, with nothing to download.
//!
//! 1. [`generators`]: deterministic instruction data for chat, code, math and medical, written
//!    as Alpaca JSONL (medical answers use math's worked-step procedure in chat's format);
//! 2. [`tokenizer`]: a byte-level BPE trained on that corpus with the `tokenizers` crate;
//! 3. [`pretrain`]: a small Llama (4 layers, width 256, grouped-query attention) pretrained by
//!    the engine, saved as a Hugging Face checkpoint and quantized to NF4;
//! 4. [`pipeline`]: the method on the NF4 base (curriculum, residual boosting, null space), its
//!    two ablations (single LoRA of rank 4r; no null space), the oracle and the meta-router,
//!    evaluation in the base / ungated / routed compositions, and generations;
//! 5. [`report`]: `report.md` with tables and SVG plots, drawn from [`results::DemoResults`].
//!
//! ```no_run
//! use brainstacks_train::demo::{DemoOptions, Silent, run_demo};
//! let opts = DemoOptions { out: "demo-run".into(), seed: 0, quick: true, plan: None, device: brainstacks_tensor::Device::Cpu };
//! let results = run_demo(&opts, &mut Silent).unwrap();
//! println!("{}", brainstacks_train::demo::report::summary_table(&results));
//! ```
//!
//! The starter spiral job lives on in [`spirals`] (`brainstacks spirals`).

pub mod generators;
pub mod pipeline;
pub mod pretrain;
pub mod progress;
pub mod report;
pub mod results;
pub mod spirals;
pub mod tokenizer;

pub use pipeline::{DemoOptions, DemoPlan, DemoProgress, run_demo};
pub use progress::TerminalProgress;
pub use results::DemoResults;

/// Reports nothing (tests, library use).
pub struct Silent;

impl DemoProgress for Silent {
    fn begin(&mut self, _phase: &str, _total: Option<usize>) {}
    fn tick(&mut self, _done: usize, _message: &str) {}
    fn end(&mut self, _summary: &str) {}
}
impl crate::boost::RunObserver for Silent {}
impl crate::router::pipeline::RouterProgress for Silent {}
