//! One Brainstacks training step on the CPU: forward, backward and AdamW on the active stack of a
//! small Llama (4 layers, width 256, 8 query / 2 kv heads, FFN 704, vocab 2048, dense f32 base)
//! with a MoE-LoRA stack (4 experts, rank 8, top-2, alpha 16, noisy gate) on all seven
//! projections of every layer: 28 stacks, 4 parameters each. Batch 8 x 128 tokens.
//!
//! The loss is the next-token cross-entropy plus `0.01 *` the mean over the 28 stacks of the
//! Switch load-balancing loss (our training default). The tape is cleared every step; AdamW
//! (lr 2e-4, weight decay 0.01) updates the 112 stack parameters.
//!
//! The same step in PyTorch, the way the paper's code computes it (every expert dense, no aux
//! loss), is `shared/anchors/cpu_moe_lora_step.py`; `scripts/bench-train-step.sh` runs both.
//!
//! Id: `train_step/llama4x256_moe_e4r8_top2/b8x128`, throughput in tokens (elements) per second.
//! Threads: `BENCH_THREADS` (default 1; the comparison uses 2). `BENCH_BASE_MATMUL=bf16` runs the
//! frozen base products with bf16 operands (`LlamaModel::base_matmul`; AMX tiles where the CPU has
//! them), `BENCH_DTYPE=bf16` the whole model in bf16 tensors (both default to f32, the anchor's
//! precision). With `TRAIN_STEP_BREAKDOWN=<n>`
//! the suite first times `n` steps phase by phase and prints the median forward, backward and
//! optimizer milliseconds, and the last step's loss to the bit.

use std::hint::black_box;
use std::time::{Duration, Instant};

use brainstacks_autograd::{Gradients, Tape, Var};
use brainstacks_model::llama::{LlamaConfig, LlamaModel, Proj, RandomInit};
use brainstacks_model::moe_lora::MoeLoraConfig;
use brainstacks_model::stacks::StackSet;
use brainstacks_tensor::{DType, Device, MatmulPrecision, Rng, Tensor};
use brainstacks_train::optim::{AdamW, AdamWConfig};
use criterion::{Criterion, Throughput, criterion_group};

const LAYERS: usize = 4;
const HIDDEN: usize = 256;
const HEADS: usize = 8;
const KV_HEADS: usize = 2;
const FFN: usize = 704;
const VOCAB: usize = 2048;
const BATCH: usize = 8;
const SEQ: usize = 128;
const AUX_WEIGHT: f64 = 0.01;
const NOISE_SEED: u64 = 7;

/// The model with the method's `StackSet` on all seven projections (the trainer's own code
/// path: noisy gates keyed by (seed, step, module), aux losses collected by the control), one
/// active stack, and the optimiser.
struct Trainer {
    tape: Tape,
    model: LlamaModel,
    stacks: StackSet,
    step: u64,
    opt: AdamW,
    inputs: Tensor,
    targets: Tensor,
}

impl Trainer {
    fn new() -> Trainer {
        let config = LlamaConfig::small(HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB);
        let init = RandomInit { dtype: bench_dtype(), ..RandomInit::default() };
        let mut model = LlamaModel::random(config, &init).expect("random model");
        model.base_matmul = bench_base_matmul();
        let tape = Tape::new();
        let stacks = StackSet::attach(&mut model, &Proj::ALL).expect("attach");
        let cfg = MoeLoraConfig { experts: 4, top_k: 2, rank: 8, alpha: 16.0 };
        stacks.add_active(&tape, &cfg, 1).expect("stack");
        // B starts at zero (an exact no-op); give it small values so that the timed steps do the
        // work of a stack mid-training (no zero shortcuts anywhere).
        let mut rng = Rng::new(1);
        stacks.update_active(|params| {
            for b in params.iter_mut().skip(1).step_by(4) {
                let v = Tensor::randn(&mut rng, 0.0, 0.02, b.shape(), DType::F32, &Device::Cpu).expect("randn");
                b.replace_value(v).expect("same shape");
            }
        });
        let ids: Vec<i64> = {
            let u = Tensor::rand_uniform(&mut Rng::new(2), 0.0, VOCAB as f64, &[BATCH, SEQ + 1], DType::F32, &Device::Cpu).expect("ids");
            u.to_vec::<f32>().expect("f32").into_iter().map(|v| (v as i64).min(VOCAB as i64 - 1)).collect()
        };
        let ids = Tensor::from_vec(ids, &[BATCH, SEQ + 1], &Device::Cpu).expect("ids");
        let inputs = ids.narrow(1usize, 0, SEQ).expect("narrow").contiguous().expect("contiguous");
        let targets = ids.narrow(1usize, 1, SEQ).expect("narrow").contiguous().expect("contiguous").reshape(&[BATCH * SEQ]).expect("flat");
        let opt = AdamW::new(AdamWConfig { lr: 2e-4, weight_decay: 0.01, ..AdamWConfig::default() });
        Trainer { tape, model, stacks, step: 0, opt, inputs, targets }
    }

    /// Task loss plus the weighted mean load-balancing loss, recorded on the tape.
    fn forward(&self) -> Var {
        self.tape.clear();
        self.stacks.control().set_training(NOISE_SEED, self.step);
        let logits = self.model.forward(&self.inputs, None).expect("forward");
        let task = logits.reshape(&[BATCH * SEQ, VOCAB]).expect("flat").cross_entropy(&self.targets, None).expect("ce");
        let aux_losses = self.stacks.control().take_aux_losses();
        let n = aux_losses.len() as f64;
        let aux = aux_losses.into_iter().reduce(|a, l| a.add(&l).expect("add")).expect("28 stacks");
        task.add(&aux.mul_scalar(AUX_WEIGHT / n).expect("scale")).expect("total")
    }

    fn backward(&self, loss: &Var) -> Gradients {
        self.tape.backward(loss).expect("backward")
    }

    fn optimize(&mut self, grads: &Gradients) {
        let opt = &mut self.opt;
        self.stacks.update_active(|params| opt.step(params, grads)).expect("adamw");
        self.step += 1;
    }

    fn step(&mut self) -> f64 {
        let loss = self.forward();
        let grads = self.backward(&loss);
        self.optimize(&grads);
        loss.tensor().to_scalar_f64().expect("scalar")
    }
}

/// The compute dtype: `BENCH_DTYPE` (`f32`, the default, or `bf16`).
fn bench_dtype() -> DType {
    match std::env::var("BENCH_DTYPE").as_deref() {
        Ok("bf16") => DType::BF16,
        Ok("f32") | Err(_) => DType::F32,
        Ok(other) => panic!("BENCH_DTYPE={other:?}: expected f32 or bf16"),
    }
}

/// The frozen base products' precision: `BENCH_BASE_MATMUL` (`f32`, the default, or `bf16`:
/// operands rounded to bf16, on AMX tiles where the CPU has them).
fn bench_base_matmul() -> MatmulPrecision {
    match std::env::var("BENCH_BASE_MATMUL").as_deref() {
        Ok("bf16") => MatmulPrecision::Bf16,
        Ok("f32") | Err(_) => MatmulPrecision::F32,
        Ok(other) => panic!("BENCH_BASE_MATMUL={other:?}: expected f32 or bf16"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of each phase over `n` steps (after two untimed ones).
fn breakdown(n: usize) {
    let mut tr = Trainer::new();
    tr.step();
    tr.step();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let (mut f, mut b, mut o, mut s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last_loss = f64::NAN;
    for _ in 0..n {
        let t0 = Instant::now();
        let loss = tr.forward();
        f.push(ms(t0));
        let t1 = Instant::now();
        let grads = tr.backward(&loss);
        b.push(ms(t1));
        let t2 = Instant::now();
        tr.optimize(&grads);
        o.push(ms(t2));
        s.push(ms(t0));
        last_loss = loss.tensor().to_scalar_f64().expect("a scalar loss");
    }
    let step = median(s);
    println!(
        "train_step breakdown ({n} steps, median ms): forward {:.1}  backward {:.1}  optimizer {:.1}  step {:.1}  tokens/s {:.0}",
        median(f),
        median(b),
        median(o),
        step,
        (BATCH * SEQ) as f64 / (step / 1e3)
    );
    // Bit-level fingerprint of the run, to check that a change to the engine kept the numbers.
    println!("train_step last loss {last_loss:.17e} (bits {:016x})", last_loss.to_bits());
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements((BATCH * SEQ) as u64));
    // Built inside the closure, which criterion calls only when the id passes the filter.
    let mut trainer: Option<Trainer> = None;
    group.bench_function(format!("llama{LAYERS}x{HIDDEN}_moe_e4r8_top2/b{BATCH}x{SEQ}"), |bn| {
        let tr = trainer.get_or_insert_with(|| {
            let mut tr = Trainer::new();
            let first = tr.step();
            assert!(first.is_finite(), "loss {first}");
            tr
        });
        bn.iter(|| black_box(tr.step()))
    });
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    // As the CLI does: keep freed buffers for the next step instead of faulting in fresh pages.
    brainstacks_tensor::cpu::heap::retain_freed_memory();
    let threads = brainstacks_benches::install_bench_threads();
    let run = || {
        if let Some(n) = std::env::var("TRAIN_STEP_BREAKDOWN").ok().and_then(|s| s.parse::<usize>().ok()) {
            println!("threads {threads}");
            breakdown(n.max(1));
        }
        benches();
    };
    // As the CLI runs its commands: on a worker of the pool.
    brainstacks_tensor::cpu::parallel::on_pool(run);
    criterion::Criterion::default().configure_from_args().final_summary();
}
