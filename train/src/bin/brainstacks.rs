//! The `brainstacks` command-line tool.

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    }
    Ok(())
}
