//! `brainstacks quantize`: the checkpoint conversion of `brainstacks_model::formats::quantize`
//! with a progress bar (hidden when stderr is not a terminal) and a summary.

use std::path::PathBuf;
use std::time::Instant;

use brainstacks_model::formats::quantize::{QuantizeEvent, QuantizeOptions, quantize_checkpoint};
use indicatif::{ProgressBar, ProgressStyle};

use crate::Result;

/// The command's flags.
#[derive(Clone, Debug)]
pub struct Options {
    pub model: PathBuf,
    pub out: PathBuf,
    pub double_quant: bool,
    pub blocksize: usize,
    pub max_shard_mib: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Runs the conversion and prints a summary to stdout.
pub fn run(opts: &Options) -> Result<()> {
    let q = QuantizeOptions {
        double_quant: opts.double_quant,
        blocksize: opts.blocksize,
        max_shard_bytes: opts.max_shard_mib.saturating_mul(1 << 20).max(1),
    };
    let bar = ProgressBar::hidden();
    let start = Instant::now();
    let report = quantize_checkpoint(&opts.model, &opts.out, &q, |event| match event {
        QuantizeEvent::Start { bytes, .. } => {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(bytes);
            bar.set_style(
                ProgressStyle::with_template("quantize [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ({eta}) {msg}")
                    .expect("valid template"),
            );
        }
        QuantizeEvent::Tensor { name, bytes, .. } => {
            bar.set_message(name.to_string());
            bar.inc(bytes);
        }
        QuantizeEvent::Wrote { path } => bar.println(format!("wrote {}", path.display())),
    })?;
    bar.finish_and_clear();
    println!(
        "quantized {} weights to NF4 (blocksize {}{}), kept {} tensors; {:.1} MiB -> {:.1} MiB in {:.1?}",
        report.quantized.len(),
        opts.blocksize,
        if opts.double_quant { ", double-quantized scales" } else { "" },
        report.kept.len(),
        mib(report.bytes_in),
        mib(report.bytes_out),
        start.elapsed()
    );
    for (name, why) in report.kept.iter().filter(|(_, why)| why.contains("multiple")) {
        println!("  kept {name}: {why}");
    }
    println!("output: {}", opts.out.display());
    Ok(())
}
