//! The `brainstacks` command-line tool.

use anyhow::Context;
use clap::{Parser, Subcommand};

use std::path::PathBuf;

use brainstacks_train::demo::{DemoConfig, run};

#[derive(Parser)]
#[command(name = "brainstacks", version, about = "Brainstacks: MoE-LoRA stacks on a from-scratch Rust numerics engine")]
struct Cli {
    /// Worker threads for the CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trains a two-layer MLP on two spirals with the engine's autograd and prints the loss.
    Demo {
        #[arg(long, default_value_t = 600)]
        steps: usize,
        #[arg(long, default_value_t = 64)]
        hidden: usize,
        #[arg(long, default_value_t = 256)]
        points_per_class: usize,
        #[arg(long, default_value_t = 0.02)]
        lr: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 50)]
        log_every: usize,
    },
    /// Quantizes a bf16/f16/f32 Hugging Face Llama checkpoint to 4-bit NF4 (bitsandbytes format).
    ///
    /// Every linear weight becomes NF4 in blocks of --blocksize; embeddings, norms and lm_head stay
    /// as they are. The output directory is a complete model: weights, config.json with its
    /// quantization_config, and the tokenizer files.
    Quantize {
        /// Input directory: config.json and model.safetensors (or shards with their index).
        #[arg(long)]
        model: PathBuf,
        /// Output directory (created if missing; must differ from --model).
        #[arg(long)]
        out: PathBuf,
        /// Double-quantize the per-block scales (8-bit, blocks of 256), as QLoRA does.
        #[arg(long)]
        double_quant: bool,
        /// Weights per block.
        #[arg(long, default_value_t = 64)]
        blocksize: usize,
        /// Largest output file in MiB before the output is sharded.
        #[arg(long, default_value_t = 4096)]
        max_shard_mib: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("setting the thread count")?;
    }
    match cli.command {
        Command::Demo { steps, hidden, points_per_class, lr, seed, log_every } => {
            anyhow::ensure!(steps > 0 && hidden > 0 && points_per_class > 0, "--steps, --hidden and --points-per-class must be positive");
            let cfg = DemoConfig { points_per_class, hidden, steps, lr, seed, log_every };
            println!(
                "two-spirals MLP: {} points, 2 -> {hidden} -> 2, AdamW lr {lr}, {steps} steps, seed {seed}",
                2 * points_per_class
            );
            let start = std::time::Instant::now();
            let logs = run(&cfg, |l| println!("step {:>5}  loss {:.4}  accuracy {:5.1}%", l.step, l.loss, 100.0 * l.accuracy))?;
            let (first, last) = (logs.first().unwrap(), logs.last().unwrap());
            println!(
                "loss {:.4} -> {:.4}, accuracy {:.1}% in {:.2?}",
                first.loss,
                last.loss,
                100.0 * last.accuracy,
                start.elapsed()
            );
        }
        Command::Quantize { model, out, double_quant, blocksize, max_shard_mib } => {
            let opts = brainstacks_train::quantize_cli::Options { model, out, double_quant, blocksize, max_shard_mib };
            brainstacks_train::quantize_cli::run(&opts)?;
        }
    }
    Ok(())
}
