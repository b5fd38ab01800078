//! CPU NF4 products against the dense f32 GEMM on the same shapes: `y = x · Wᵀ` with `W`
//! `[out, in]`, as a frozen linear layer computes it.
//!
//! Both sides go through the tensor API and allocate their output: `x.matmul(&w.t())` on the f32
//! weight, and `Nf4Weight::linear(&x)` on its NF4 (blocksize 64, double-quantized) form, which
//! decodes the weight into the GEMM's packed panels and never builds a dequantized copy. The
//! target is NF4 time <= 1.3x the f32 time on the same shape.
//!
//! Ids: `nf4_linear/{f32,nf4}/<t>t/m<M>_<out>x<in>`. Throughput is `Elements(2 M out in)`, so
//! criterion's "elem/s" reads as FLOP/s. Threads: `BENCH_THREADS` (a number or `all`, default 1)
//! sets rayon's pool for both sides:
//!
//! ```text
//! BENCH_THREADS=1 cargo bench -p brainstacks-benches --bench nf4
//! ```

use std::hint::black_box;
use std::time::Duration;

use brainstacks_tensor::nf4::Nf4Weight;
use brainstacks_tensor::{DType, Device, Rng, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// (M, out, in): the TinyLlama projection shapes at decode (1), small batch (16) and prefill (256).
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 2048, 2048),
    (16, 2048, 2048),
    (256, 2048, 2048),
    (1, 5632, 2048),
    (16, 5632, 2048),
    (256, 5632, 2048),
    (1, 2048, 5632),
    (16, 2048, 5632),
    (256, 2048, 5632),
];


fn bench(c: &mut Criterion) {
    let t = brainstacks_benches::install_bench_threads();
    let mut group = c.benchmark_group("nf4_linear");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for (m, out_f, in_f) in SHAPES {
        let cpu = Device::Cpu;
        let w = Tensor::randn(&mut Rng::new(1), 0.0, 0.02, &[out_f, in_f], DType::F32, &cpu).unwrap();
        let q = Nf4Weight::quantize(&w, 64, true).unwrap();
        let x = Tensor::randn(&mut Rng::new(2), 0.0, 1.0, &[m, in_f], DType::F32, &cpu).unwrap();
        let wt = w.t().unwrap();
        let shape = format!("m{m}_{out_f}x{in_f}");
        group.throughput(Throughput::Elements((2 * m * out_f * in_f) as u64));
        group.bench_function(BenchmarkId::new(format!("f32/{t}t"), &shape), |b| {
            b.iter(|| black_box(&x).matmul(black_box(&wt)).unwrap())
        });
        group.bench_function(BenchmarkId::new(format!("nf4/{t}t"), &shape), |b| {
            b.iter(|| black_box(&q).linear(black_box(&x)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
