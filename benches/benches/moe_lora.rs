//! CPU MoE-LoRA dispatch, forward and forward+backward: the fast path (`Tensor::moe_lora`, tokens
//! grouped per expert and run through the packed GEMM) against the per-token f64 oracle
//! (`brainstacks_kernels::moe_lora::cpu`), at the TinyLlama q/o shape of issue 5: T = 4096 tokens,
//! d_in = d_out = 2048, E = 4 experts, rank 16, top-2. Target: fast path >= 5x the oracle.
//!
//! Ids: `moe_lora/{fast_f32,oracle_f64}/{fwd,fwd_bwd}/<t>t`. Threads: `BENCH_THREADS` (default 1).

use std::hint::black_box;
use std::time::Duration;

use brainstacks_kernels::moe_lora::cpu::{self as oracle, Dims};
use brainstacks_tensor::{DType, Device, Rng, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};

const T: usize = 4096;
const D: usize = 2048;
const E: usize = 4;
const R: usize = 16;
const K: usize = 2;


fn bench(c: &mut Criterion) {
    let t = brainstacks_benches::install_bench_threads();
    let cpu = Device::Cpu;
    let mut rng = Rng::new(3);
    let x = Tensor::randn(&mut rng, 0.0, 1.0, &[T, D], DType::F32, &cpu).unwrap();
    // A balanced routing: token i uses experts (i mod 4) and (i + 1 mod 4).
    let idx: Vec<i64> = (0..T).flat_map(|i| [(i % E) as i64, ((i + 1) % E) as i64]).collect();
    let idx = Tensor::from_vec(idx, &[T, K], &cpu).unwrap();
    let g = Tensor::full(0.5, &[T, K], DType::F32, &cpu).unwrap();
    let a = Tensor::randn(&mut rng, 0.0, 0.02, &[E, R, D], DType::F32, &cpu).unwrap();
    let b = Tensor::randn(&mut rng, 0.0, 0.02, &[E, D, R], DType::F32, &cpu).unwrap();
    let dy = Tensor::randn(&mut rng, 0.0, 1.0, &[T, D], DType::F32, &cpu).unwrap();
    let s = 4.0;

    let mut group = c.benchmark_group("moe_lora");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    group.bench_function(format!("fast_f32/fwd/{t}t"), |bn| bn.iter(|| Tensor::moe_lora(black_box(&x), &idx, &g, &a, &b, s).unwrap()));
    group.bench_function(format!("fast_f32/fwd_bwd/{t}t"), |bn| {
        bn.iter(|| {
            let y = Tensor::moe_lora(black_box(&x), &idx, &g, &a, &b, s).unwrap();
            (y, Tensor::moe_lora_backward(&x, &idx, &g, &a, &b, s, &dy).unwrap())
        })
    });
    let v = |t: &Tensor| t.to_vec_f64().unwrap();
    let (xv, iv, gv, av, bv, dyv) = (v(&x), idx.to_vec::<i64>().unwrap(), v(&g), v(&a), v(&b), v(&dy));
    let d = Dims { t: T, k: K, experts: E, d_in: D, r: R, d_out: D };
    group.bench_function(format!("oracle_f64/fwd/{t}t"), |bn| bn.iter(|| oracle::forward(black_box(&xv), &iv, &gv, &av, &bv, s, &d)));
    group.bench_function(format!("oracle_f64/fwd_bwd/{t}t"), |bn| {
        bn.iter(|| (oracle::forward(black_box(&xv), &iv, &gv, &av, &bv, s, &d), oracle::backward(&xv, &iv, &gv, &av, &bv, s, &dyv, &d)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
