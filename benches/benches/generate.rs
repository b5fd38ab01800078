//! Generation on the CPU: prefill and KV-cached decode of a small Llama (8 layers, width 512,
//! 8 query / 4 kv heads of 64, SwiGLU 1408, vocab 32000, untied lm_head; random weights, in f32
//! unless an id says otherwise), batch 1, no gradient tape.
//!
//! Ids (throughput in tokens per second):
//! - `generate/prefill/llama8x512/t128`: one forward of a 128-token prompt into an empty cache,
//!   logits for every position (as a plain `model(ids)` computes them);
//! - `generate/first-token/llama8x512/t128`: `LlamaModel::generate` of one token after the same
//!   prompt (greedy): the prefill with the head on the last position only, what a user waits for
//!   before the first token;
//! - `generate/decode/llama8x512/ctx128`: one forward of one new token against a cache already
//!   holding 128 positions (the step greedy decoding repeats), logits for that token;
//! - `generate/{prefill,first-token,decode}/llama8x512-nf4/...`: the same three steps with the
//!   same weights, the seven projections of every layer quantized to NF4 (blocks of 64, no
//!   double quantization; embeddings, norms and the head stay f32), the base a QLoRA model
//!   runs on;
//! - `generate/{prefill,first-token,decode}/llama8x512-bf16/...`: the same three steps with
//!   every weight and activation in bf16 (products accumulate in f32).
//!
//! `GENERATE_BENCH_SAVE=DIR` also writes the model as a Hugging Face checkpoint (config.json +
//! model.safetensors) to DIR, so that `scripts/bench-generate.sh` can time the identical model
//! with transformers (`benches/anchors/cpu_generate.py`) in the same run. Threads:
//! `BENCH_THREADS` (default 1).

use std::hint::black_box;
use std::path::Path;

use brainstacks_autograd::no_grad;
use brainstacks_model::llama::{GenerateOptions, KvCache, LlamaConfig, LlamaModel, Nf4AtLoad, RandomInit};
use brainstacks_tensor::{DType, Device, Tensor};
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group};

const LAYERS: usize = 8;
const HIDDEN: usize = 512;
const HEADS: usize = 8;
const KV_HEADS: usize = 4;
const FFN: usize = 1408;
const VOCAB: usize = 32_000;
const PROMPT: usize = 128;

/// The benchmark model in `dtype`, drawn from a fixed seed; with `nf4`, its projections
/// quantized.
fn model(dtype: DType, nf4: Option<Nf4AtLoad>) -> LlamaModel {
    let mut config = LlamaConfig::small(HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB);
    config.tie_word_embeddings = false;
    config.max_position_embeddings = 2048;
    LlamaModel::random(config, &RandomInit { seed: 11, dtype, nf4, ..RandomInit::default() }).expect("random model")
}

/// A prompt of `len` ids spread over the vocabulary.
fn prompt(len: usize) -> Tensor {
    let ids: Vec<i64> = prompt_ids(len).into_iter().map(i64::from).collect();
    Tensor::from_vec(ids, &[1, len], &Device::Cpu).expect("ids")
}

/// The ids of [`prompt`], as `LlamaModel::generate` takes them.
fn prompt_ids(len: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7919 + 13) % VOCAB) as u32).collect()
}

fn bench(c: &mut Criterion) {
    let dense = model(DType::F32, None);
    if let Ok(dir) = std::env::var("GENERATE_BENCH_SAVE") {
        dense.save_pretrained(Path::new(&dir)).expect("saving the benchmark model");
        println!("saved the model to {dir}");
    }
    let mut group = c.benchmark_group("generate");
    group.sample_size(10);
    let name = format!("llama{LAYERS}x{HIDDEN}");
    steps(&mut group, &dense, &name);
    drop(dense);
    steps(&mut group, &model(DType::F32, Some(Nf4AtLoad::default())), &format!("{name}-nf4"));
    steps(&mut group, &model(DType::BF16, None), &format!("{name}-bf16"));
    group.finish();
}

/// Times the prefill, first-token and decode steps of `model` under `generate/{step}/{name}/...`.
fn steps(group: &mut BenchmarkGroup<'_, WallTime>, model: &LlamaModel, name: &str) {
    let ids = prompt(PROMPT);
    let next = prompt(PROMPT + 1).narrow(1usize, PROMPT, 1).expect("the next id");

    group.throughput(Throughput::Elements(PROMPT as u64));
    group.bench_function(format!("prefill/{name}/t{PROMPT}"), |b| {
        b.iter(|| {
            no_grad(|| {
                let mut cache = KvCache::new();
                black_box(model.forward(&ids, Some(&mut cache)).expect("prefill"))
            })
        })
    });

    // What a user waits for before the first token: `LlamaModel::generate` with one new token
    // (prefill, then the head on the last position only).
    let prompt_ids = prompt_ids(PROMPT);
    let one_token = GenerateOptions { max_new_tokens: 1, temperature: 0.0, ..GenerateOptions::default() };
    group.bench_function(format!("first-token/{name}/t{PROMPT}"), |b| {
        b.iter(|| black_box(model.generate(&prompt_ids, &one_token, |_| true).expect("first token")))
    });

    let mut prefilled = KvCache::new();
    no_grad(|| model.forward(&ids, Some(&mut prefilled)).expect("prefill"));
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("decode/{name}/ctx{PROMPT}"), |b| {
        b.iter_batched(
            || prefilled.clone(),
            |mut cache| no_grad(|| black_box(model.forward(&next, Some(&mut cache)).expect("decode step"))),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);

fn main() {
    brainstacks_tensor::cpu::heap::retain_freed_memory();
    let threads = brainstacks_benches::install_bench_threads();
    println!("threads {threads}");
    brainstacks_tensor::cpu::parallel::on_pool(benches);
    criterion::Criterion::default().configure_from_args().final_summary();
}
