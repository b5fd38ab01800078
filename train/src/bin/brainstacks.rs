//! The `brainstacks` command-line tool.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use std::path::PathBuf;

use brainstacks_model::llama::GenerateOptions;
use brainstacks_train::demo::spirals::{SpiralsConfig, run};
use brainstacks_train::demo::{DemoOptions, TerminalProgress, run_demo};
use brainstacks_train::llama_cli;

#[derive(Parser)]
#[command(name = "brainstacks", version, about = "Brainstacks: MoE-LoRA stacks on a from-scratch Rust numerics engine")]
struct Cli {
    /// Worker threads for the CPU kernels (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

/// `brainstacks router --oracle-search` (the library's `router::oracle::Search`).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum OracleSearch {
    Best,
    First,
    Exhaustive,
}

/// `brainstacks router --label-targets` (the library's `router::dataset::LabelTargets`).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LabelTargetsArg {
    OneHot,
    OracleMean,
}

#[derive(Subcommand)]
enum Command {
    /// The whole method on models the demo trains itself, with nothing to download: generated
    /// data for chat, code, math and medical; a BPE tokenizer; a small Llama pretrained from
    /// scratch and quantized to NF4; MoE-LoRA stacks with residual boosting and null-space
    /// projection, two ablations, the meta-router; a report (report.md + SVG plots).
    ///
    /// About 8 minutes on 2 CPU cores (--quick: under a minute). Everything lands under --out, which
    /// `brainstacks generate --run OUT/runs/brainstacks` and `brainstacks eval --run ...` accept.
    Demo {
        /// Smaller everything: an end-to-end check in under a minute.
        #[arg(long)]
        quick: bool,
        /// Seeds data, initialisation, batching and noise: the same seed gives the same numbers.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory: created, or a previous demo's directory (its outputs are replaced).
        #[arg(long, default_value = "brainstacks-demo")]
        out: PathBuf,
        /// Where to compute: cpu, cuda or cuda:N (needs a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Trains a two-layer MLP on two spirals with the engine's autograd and prints the loss (a
    /// one-second smoke test of tensors, autograd and the optimizer).
    Spirals {
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
    /// Generates text from a Llama checkpoint directory (with its tokenizer.json), streaming it
    /// to stdout. Greedy unless --temperature is above 0.
    Generate {
        /// A Llama checkpoint directory (give this or --run).
        #[arg(long, required_unless_present = "run", conflicts_with = "run")]
        model: Option<PathBuf>,
        /// A Brainstacks run directory: generate with its stacks composed as --mode says.
        #[arg(long)]
        run: Option<PathBuf>,
        /// With --run: `routed` (needs `brainstacks router` first), `base`, `ungated`, or explicit
        /// weights `domain=weight,...`.
        #[arg(long, default_value = "routed")]
        mode: String,
        /// A PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors).
        #[arg(long)]
        adapter: Option<PathBuf>,
        #[arg(long)]
        prompt: String,
        /// Use the prompt as the instruction of the Alpaca template (as the method generates).
        #[arg(long)]
        alpaca: bool,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// 1 is off; the method decodes with 1.2.
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Compute dtype: f32, bf16, f16 or f64.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// With --run: cpu, cuda or cuda:N (default: the device the run trained on).
        #[arg(long, requires = "run")]
        device: Option<String>,
    },
    /// Trains Brainstacks stacks as `run.json` describes: domains in curriculum order, residual
    /// boosting rounds, null-space projection; resumes a stopped run from its manifest.
    Train {
        /// The run config (JSON; see `brainstacks_train::boost::config`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Trains the meta-router of a finished run: oracle targets on held-out examples (cached per
    /// domain), router features from the frozen base, the spec's recipe; saved under DIR/router.
    Router {
        #[arg(long)]
        run: PathBuf,
        /// Label prompts per domain.
        #[arg(long, default_value_t = 2000)]
        label_samples: usize,
        /// What label prompts are trained towards: their domain, one-hot (the spec), or the mean
        /// of the oracle's targets on their domain's held-out examples.
        #[arg(long, value_enum, default_value_t = LabelTargetsArg::OneHot)]
        label_targets: LabelTargetsArg,
        /// Held-out examples per domain scored by the oracle.
        #[arg(long, default_value_t = 200)]
        oracle_samples: usize,
        #[arg(long, default_value_t = 8)]
        epochs: usize,
        #[arg(long, default_value_t = 512)]
        hidden: usize,
        #[arg(long, default_value_t = 8e-4)]
        lr: f64,
        /// Recompute this domain's cached oracle results (repeatable).
        #[arg(long)]
        recompute: Vec<String>,
        /// How the oracle finds each example's best domain set: greedy growth adding the best
        /// improving domain (`best`), the released code's first improving one (`first`), or every
        /// set scored at once (`exhaustive`, 2^D forwards per example, for a handful of domains).
        #[arg(long, value_enum, default_value_t = OracleSearch::Best)]
        oracle_search: OracleSearch,
        /// Least loss drop for the oracle's greedy growth to accept a domain (the spec's 0.01 is
        /// tuned for losses of billion-parameter models; a small model's gains are smaller).
        #[arg(long, default_value_t = 0.01)]
        accept: f64,
    },
    /// Prints the router's domain weights for a prompt.
    Route {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        prompt: String,
        /// cpu, cuda or cuda:N (default: the device the run trained on).
        #[arg(long)]
        device: Option<String>,
    },
    /// Per-domain validation loss of a finished run: base only, ungated, routed; and the oracle
    /// statistics when they have been computed.
    Eval {
        #[arg(long)]
        run: PathBuf,
        /// cpu, cuda or cuda:N (default: the device the run trained on).
        #[arg(long)]
        device: Option<String>,
    },
    /// Writes the logits [T, vocab] (f32, key `logits`) of one sequence of token ids.
    Logits {
        #[arg(long)]
        model: PathBuf,
        /// A PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors).
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// Comma-separated token ids, e.g. 1,5,9.
        #[arg(long)]
        ids: String,
        #[arg(long, default_value = "f32")]
        dtype: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Writes the mean next-token loss of the ids (`loss`) and the gradient of every weight
    /// (`grad.<Hugging Face name>`), for parity checks.
    Grad {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        ids: String,
        #[arg(long, default_value = "f64")]
        dtype: String,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Stack of each worker thread: commands run on a worker (see `main`), so it gets the main
/// thread's usual size rather than the 2 MiB of a spawned thread.
const WORKER_STACK_BYTES: usize = 8 << 20;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Training and evaluation free and reallocate the same large buffers every step.
    brainstacks_tensor::cpu::heap::retain_freed_memory();
    let mut pool = rayon::ThreadPoolBuilder::new().stack_size(WORKER_STACK_BYTES);
    if let Some(n) = cli.threads {
        pool = pool.num_threads(n);
    }
    pool.build_global().context("setting up the thread pool")?;
    // The whole command on a worker of the pool, so the tensor ops it runs do not each pay a
    // hand-off from the main thread to the pool.
    brainstacks_tensor::cpu::parallel::on_pool(|| run_command(cli))
}

/// `--device` (`cpu`, `cuda`, `cuda:N`), when given.
fn parse_device(device: Option<String>) -> anyhow::Result<Option<brainstacks_tensor::Device>> {
    device.map(|d| d.parse().map_err(|e: String| anyhow::anyhow!("--device: {e}"))).transpose()
}

fn run_command(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo { quick, seed, out, device } => {
            let device = parse_device(Some(device))?.expect("given");
            let start = std::time::Instant::now();
            let results = run_demo(&DemoOptions { out: out.clone(), seed, quick, plan: None, device }, &mut TerminalProgress::new())?;
            println!("{}", brainstacks_train::demo::report::summary_table(&results));
            println!("report: {} ({:.1} s)", out.join("report.md").display(), start.elapsed().as_secs_f64());
            println!("try:    brainstacks generate --run {} --prompt \"...\"", out.join("runs").join("brainstacks").display());
        }
        Command::Spirals { steps, hidden, points_per_class, lr, seed, log_every } => {
            anyhow::ensure!(steps > 0 && hidden > 0 && points_per_class > 0, "--steps, --hidden and --points-per-class must be positive");
            let cfg = SpiralsConfig { points_per_class, hidden, steps, lr, seed, log_every };
            println!("two-spirals MLP: {} points, 2 -> {hidden} -> 2, AdamW lr {lr}, {steps} steps, seed {seed}", 2 * points_per_class);
            let start = std::time::Instant::now();
            let logs = run(&cfg, |l| println!("step {:>5}  loss {:.4}  accuracy {:5.1}%", l.step, l.loss, 100.0 * l.accuracy))?;
            let (first, last) = (logs.first().unwrap(), logs.last().unwrap());
            println!("loss {:.4} -> {:.4}, accuracy {:.1}% in {:.2?}", first.loss, last.loss, 100.0 * last.accuracy, start.elapsed());
        }
        Command::Quantize { model, out, double_quant, blocksize, max_shard_mib } => {
            let opts = brainstacks_train::quantize_cli::Options { model, out, double_quant, blocksize, max_shard_mib };
            brainstacks_train::quantize_cli::run(&opts)?;
        }
        Command::Generate {
            model,
            run,
            mode,
            adapter,
            prompt,
            alpaca,
            max_tokens,
            temperature,
            top_p,
            repetition_penalty,
            seed,
            dtype,
            device,
        } => {
            let options = GenerateOptions { max_new_tokens: max_tokens, temperature, top_p, repetition_penalty, seed, eos_token_ids: None };
            if let Some(dir) = run {
                anyhow::ensure!(adapter.is_none(), "--adapter does not combine with --run");
                let rm = brainstacks_train::router::routed::RunModel::open_on(&dir, parse_device(device)?)?;
                let composition = brainstacks_train::run_cli::parse_composition(&rm, &mode, &prompt)?;
                println!("{}", brainstacks_train::run_cli::generate(&rm, &prompt, &composition, &options)?);
                return Ok(());
            }
            let model = model.context("--model or --run is required")?;
            let args = llama_cli::GenerateArgs { model, adapter, prompt, alpaca, dtype: llama_cli::parse_dtype(&dtype)?, options };
            let start = std::time::Instant::now();
            let ids = llama_cli::generate(&args, &mut std::io::stdout().lock())?;
            let secs = start.elapsed().as_secs_f64();
            eprintln!("{} tokens in {secs:.2} s ({:.1} tokens/s)", ids.len(), ids.len() as f64 / secs.max(1e-9));
        }
        Command::Train { config } => {
            brainstacks_train::train_cli::train(&config)?;
        }
        Command::Router { run, label_samples, label_targets, oracle_samples, epochs, hidden, lr, recompute, oracle_search, accept } => {
            use brainstacks_train::router::{dataset::LabelTargets, oracle::Search, pipeline};
            let label_targets = match label_targets {
                LabelTargetsArg::OneHot => LabelTargets::OneHot,
                LabelTargetsArg::OracleMean => LabelTargets::OracleMean,
            };
            let mut opts =
                pipeline::RouterOptions { label_samples, label_targets, oracle_samples, hidden, recompute, ..Default::default() };
            opts.train.epochs = epochs;
            opts.train.lr = lr;
            opts.oracle.search = match oracle_search {
                OracleSearch::Best => Search::Best,
                OracleSearch::First => Search::First,
                OracleSearch::Exhaustive => Search::Exhaustive,
            };
            if !(accept.is_finite() && accept >= 0.0) {
                anyhow::bail!("--accept must be a finite loss drop >= 0, got {accept}");
            }
            opts.oracle.accept = accept;
            let summary = pipeline::train_run_router(&run, &opts, &mut brainstacks_train::run_cli::PhaseBars::new())?;
            println!(
                "router: {} training / {} validation prompts, best epoch {}; saved in {}",
                summary.train_examples,
                summary.val_examples,
                summary.best_epoch,
                run.join("router").display()
            );
        }
        Command::Route { run, prompt, device } => {
            let rm = brainstacks_train::router::routed::RunModel::open_on(&run, parse_device(device)?)?;
            print!("{}", brainstacks_train::run_cli::route(&rm, &prompt)?);
        }
        Command::Eval { run, device } => {
            print!("{}", brainstacks_train::run_cli::eval(&run, None, parse_device(device)?)?);
        }
        Command::Logits { model, adapter, ids, dtype, out } => {
            llama_cli::logits(&model, adapter.as_deref(), &llama_cli::parse_ids(&ids)?, llama_cli::parse_dtype(&dtype)?, &out)?;
            eprintln!("wrote {}", out.display());
        }
        Command::Grad { model, ids, dtype, out } => {
            let loss = llama_cli::grad(&model, &llama_cli::parse_ids(&ids)?, llama_cli::parse_dtype(&dtype)?, &out)?;
            eprintln!("loss {loss:.12}; wrote {}", out.display());
        }
    }
    Ok(())
}
