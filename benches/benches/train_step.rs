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
//! Threads: `BENCH_THREADS` (default 1; the comparison uses 2). With `TRAIN_STEP_BREAKDOWN=<n>`
//! the suite first times `n` steps phase by phase and prints the median forward, backward and
//! optimizer milliseconds.

use std::hint::black_box;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use brainstacks_autograd::{Gradients, Tape, Var};
use brainstacks_model::llama::{LlamaConfig, LlamaModel, Proj, ProjectionAdapter, RandomInit};
use brainstacks_model::moe_lora::{GateNoise, GateOutput, MoeLora, MoeLoraConfig};
use brainstacks_tensor::{DType, Device, Rng, Tensor};
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

/// What the adapters share with the training loop: the optimiser step (for the gate noise) and
/// the gate decisions of the current forward (for the load-balancing loss).
#[derive(Default)]
struct StepState {
    step: u64,
    gates: Vec<GateOutput>,
}

/// A MoE-LoRA stack attached to one projection: noisy routing keyed by (seed, step, module
/// index), its delta added to the frozen base output by the model.
struct StackAdapter {
    stack: Arc<Mutex<MoeLora>>,
    module: u32,
    state: Arc<Mutex<StepState>>,
}

impl ProjectionAdapter for StackAdapter {
    fn forward(&self, x: &Var) -> brainstacks_model::Result<Var> {
        let step = self.state.lock().expect("state lock").step;
        let noise = GateNoise { seed: NOISE_SEED, step, layer: self.module };
        let out = self.stack.lock().expect("stack lock").forward(x, Some(noise))?;
        self.state.lock().expect("state lock").gates.push(out.gate);
        Ok(out.delta)
    }
}

/// The model, its 28 stacks (shared with the adapters) and the optimiser.
struct Trainer {
    tape: Tape,
    model: LlamaModel,
    stacks: Vec<Arc<Mutex<MoeLora>>>,
    state: Arc<Mutex<StepState>>,
    opt: AdamW,
    inputs: Tensor,
    targets: Tensor,
}

impl Trainer {
    fn new() -> Trainer {
        let config = LlamaConfig::small(HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB);
        let mut model = LlamaModel::random(config, &RandomInit::default()).expect("random model");
        let tape = Tape::new();
        let state = Arc::new(Mutex::new(StepState::default()));
        let cfg = MoeLoraConfig { experts: 4, top_k: 2, rank: 8, alpha: 16.0 };
        let mut rng = Rng::new(1);
        let mut stacks = Vec::new();
        for layer in 0..LAYERS {
            for p in Proj::ALL {
                let [d_out, d_in] = model.proj(layer, p).expect("layer exists").shape();
                let mut stack = MoeLora::new(&tape, d_in, d_out, &cfg, &mut rng, DType::F32).expect("stack");
                // B starts at zero (an exact no-op); give it small values so that the timed steps
                // do the work of a stack mid-training (no zero shortcuts anywhere).
                let b = Tensor::randn(&mut rng, 0.0, 0.02, stack.b.shape(), DType::F32, &Device::Cpu).expect("randn");
                stack.b.replace_value(b).expect("same shape");
                let stack = Arc::new(Mutex::new(stack));
                let module = (layer * Proj::ALL.len() + p as usize) as u32;
                let adapter = StackAdapter { stack: stack.clone(), module, state: state.clone() };
                model.set_adapter(layer, p, Some(Box::new(adapter))).expect("attach");
                stacks.push(stack);
            }
        }
        let ids: Vec<i64> = {
            let u = Tensor::rand_uniform(&mut Rng::new(2), 0.0, VOCAB as f64, &[BATCH, SEQ + 1], DType::F32, &Device::Cpu).expect("ids");
            u.to_vec::<f32>().expect("f32").into_iter().map(|v| (v as i64).min(VOCAB as i64 - 1)).collect()
        };
        let ids = Tensor::from_vec(ids, &[BATCH, SEQ + 1], &Device::Cpu).expect("ids");
        let inputs = ids.narrow(1usize, 0, SEQ).expect("narrow").contiguous().expect("contiguous");
        let targets = ids.narrow(1usize, 1, SEQ).expect("narrow").contiguous().expect("contiguous").reshape(&[BATCH * SEQ]).expect("flat");
        let opt = AdamW::new(AdamWConfig { lr: 2e-4, weight_decay: 0.01, ..AdamWConfig::default() });
        Trainer { tape, model, stacks, state, opt, inputs, targets }
    }

    /// Task loss plus the weighted mean load-balancing loss, recorded on the tape.
    fn forward(&self) -> Var {
        self.tape.clear();
        self.state.lock().expect("state lock").gates.clear();
        let logits = self.model.forward(&self.inputs, None).expect("forward");
        let task = logits.reshape(&[BATCH * SEQ, VOCAB]).expect("flat").cross_entropy(&self.targets, None).expect("ce");
        let gates = std::mem::take(&mut self.state.lock().expect("state lock").gates);
        let mut aux: Option<Var> = None;
        for g in &gates {
            let l = g.load_balance_loss().expect("aux");
            aux = Some(match aux {
                None => l,
                Some(a) => a.add(&l).expect("add"),
            });
        }
        let aux = aux.expect("28 stacks").mul_scalar(AUX_WEIGHT / gates.len() as f64).expect("scale");
        task.add(&aux).expect("total")
    }

    fn backward(&self, loss: &Var) -> Gradients {
        self.tape.backward(loss).expect("backward")
    }

    fn optimize(&mut self, grads: &Gradients) {
        let mut guards: Vec<MutexGuard<'_, MoeLora>> = self.stacks.iter().map(|s| s.lock().expect("stack lock")).collect();
        let mut params: Vec<&mut Var> =
            guards.iter_mut().flat_map(|g| { let g = &mut **g; [&mut g.a, &mut g.b, &mut g.w_router, &mut g.w_noise] }).collect();
        self.opt.step(&mut params, grads).expect("adamw");
        self.state.lock().expect("state lock").step += 1;
    }

    fn step(&mut self) -> f64 {
        let loss = self.forward();
        let grads = self.backward(&loss);
        self.optimize(&grads);
        loss.tensor().to_scalar_f64().expect("scalar")
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
    let threads = brainstacks_benches::install_bench_threads();
    if let Some(n) = std::env::var("TRAIN_STEP_BREAKDOWN").ok().and_then(|s| s.parse::<usize>().ok()) {
        println!("threads {threads}");
        breakdown(n.max(1));
    }
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
