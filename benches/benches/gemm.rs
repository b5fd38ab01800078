//! CPU f32 GEMM: ours (`brainstacks_tensor::cpu::gemm`) side by side with the `matrixmultiply`
//! crate, square n x n x n at n = 256, 512, 1024, plus our bf16 path at 512 and our f32 product
//! with operands rounded to bf16 (`gemm_f32_as_bf16`: AMX tiles where the CPU has them) at every
//! size, beside `gemm_f32` in the same run.
//!
//! # Thread count, honestly on both sides
//!
//! `matrixmultiply` reads `MATMUL_NUM_THREADS` once per process (at its first call) and cannot be
//! changed afterwards, so one process can only measure one thread count. This bench therefore
//! takes the thread count from `BENCH_THREADS` (a number, or `all` for every available core;
//! default 1) and gives it to both sides: before anything starts a thread it sets
//! `MATMUL_NUM_THREADS` (read by `matrixmultiply`) and `RAYON_NUM_THREADS` (the size of rayon's
//! global pool, which our GEMM runs on) to that value. Run it once per thread count:
//!
//! ```text
//! BENCH_THREADS=1   cargo bench -p brainstacks-benches --bench gemm
//! BENCH_THREADS=all cargo bench -p brainstacks-benches --bench gemm
//! ```
//!
//! If either variable is already set to a different value the bench stops rather than compare
//! unequal thread counts. `matrixmultiply` uses at most 4 threads, so the count is capped at 4.
//! Its default features include `avx512`, so on an AVX-512 machine both sides run AVX-512 kernels.
//!
//! # Ids and units
//!
//! `gemm_f32/ours/<t>t/<n>`, `gemm_f32/matrixmultiply/<t>t/<n>`, `gemm_bf16/ours/<t>t/512`,
//! `gemm_f32_as_bf16/ours/<t>t/<n>` (the kernel it used is printed first), where
//! `<t>` is the thread count actually used. Throughput is `Elements(2 n^3)`, so criterion's
//! "elem/s" reads as FLOP/s. Both sides compute `C = A·B` into an existing C (no accumulation),
//! with row-major A, B and C.
//!
//! `gemv_f32/ours/<t>t/<k>x<n>` is one row times a transposed row-major `[n, k]` weight (a
//! projection at decode), and `gemv_f32/read/<t>t/<k>x<n>` a plain parallel read of as many
//! bytes in the same run, its yardstick; their throughput is the weight's bytes (criterion's
//! "B/s"). `gemv_bf16/{ours,read}/<t>t/<k>x<n>` are the same with a bf16 row and weight
//! (`gemm_bf16`).

use std::hint::black_box;
use std::time::Duration;

use brainstacks_tensor::cpu::gemm::{
    MatRef, bf16_operands_kernel_name, f32_kernel_name, gemm_bf16, gemm_f32, gemm_f32_as_bf16,
};
use brainstacks_tensor::{DType, Device, Tensor};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

const SIZES: [usize; 3] = [256, 512, 1024];

/// The thread count from `BENCH_THREADS`, made the same for `matrixmultiply`.
fn configure_threads() -> usize {
    let threads = match std::env::var("BENCH_THREADS").as_deref() {
        Err(_) | Ok("") => 1,
        Ok("all") => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("BENCH_THREADS={s:?}: expected a number or `all`")),
    };
    assert!(threads >= 1, "BENCH_THREADS must be at least 1");
    // matrixmultiply clamps to 1..=4; use the same count on our side so the comparison is fair.
    let threads = threads.min(4);
    for var in ["MATMUL_NUM_THREADS", "RAYON_NUM_THREADS"] {
        match std::env::var(var) {
            Ok(existing) => assert!(
                existing.parse() == Ok(threads),
                "{var}={existing} disagrees with BENCH_THREADS ({threads}); unset it"
            ),
            // SAFETY: runs on the main thread before criterion, rayon or matrixmultiply start any
            // thread of this process, so nothing reads the environment concurrently.
            Err(_) => unsafe { std::env::set_var(var, threads.to_string()) },
        }
    }
    threads
}

/// Deterministic values in [-1, 1) from a cheap integer hash (no denormals, no NaN).
fn values(len: usize, salt: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| {
            let h = (i ^ salt)
                .wrapping_mul(0x9e37_79b9)
                .rotate_left(13)
                .wrapping_mul(0x85eb_ca6b);
            (h >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn bench_f32(c: &mut Criterion, threads: usize) {
    let mut group = c.benchmark_group("gemm_f32");
    for n in SIZES {
        let a = values(n * n, 1);
        let b = values(n * n, 2);
        let mut out = vec![0.0f32; n * n];
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));

        bench_square(&mut group, format!("ours/{threads}t"), n, (&a, &b), &mut out, gemm_f32);

        let id = BenchmarkId::new(format!("matrixmultiply/{threads}t"), n);
        group.bench_function(id, |bench| {
            bench.iter(|| {
                matrixmultiply_square(n, black_box(&a), black_box(&b), black_box(&mut out))
            })
        });
    }
    group.finish();
}

/// Times `product` on row-major n x n operands `a`, `b` into the existing `out` (no
/// accumulation), under id `name/n` of `group`.
fn bench_square<T>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: String,
    n: usize,
    (a, b): (&[T], &[T]),
    out: &mut [f32],
    product: fn(MatRef<'_, T>, MatRef<'_, T>, &mut [f32], bool),
) {
    group.bench_function(BenchmarkId::new(name, n), |bench| {
        bench.iter(|| {
            product(
                MatRef::row_major(black_box(a), n, n),
                MatRef::row_major(black_box(b), n, n),
                black_box(&mut *out),
                false,
            )
        })
    });
}

/// `c = a · b` for row-major n x n matrices through `matrixmultiply::sgemm`.
fn matrixmultiply_square(n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() == n * n && b.len() == n * n && c.len() == n * n);
    let ld = n as isize;
    // SAFETY: a, b and c each hold n * n f32 (checked above), row-major: row stride n, column
    // stride 1, exactly what these arguments describe; c is a unique borrow, so it aliases
    // neither a nor b.
    unsafe {
        matrixmultiply::sgemm(
            n,
            n,
            n,
            1.0,
            a.as_ptr(),
            ld,
            1,
            b.as_ptr(),
            ld,
            1,
            0.0,
            c.as_mut_ptr(),
            ld,
            1,
        )
    }
}

/// `values` rounded to bf16, through the tensor API (this crate does not depend on `half`; the
/// element type is inferred from `gemm_bf16`'s signature).
fn bf16_values<T: brainstacks_tensor::WithDType>(len: usize, salt: u32) -> Vec<T> {
    Tensor::from_vec(values(len, salt), &[len], &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::BF16))
        .and_then(|t| t.to_vec())
        .expect("f32 -> bf16 conversion")
}

fn bench_bf16(c: &mut Criterion, threads: usize) {
    let mut group = c.benchmark_group("gemm_bf16");
    let n = 512;
    let a = bf16_values(n * n, 3);
    let b = bf16_values(n * n, 4);
    let mut out = vec![0.0f32; n * n];
    group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
    bench_square(&mut group, format!("ours/{threads}t"), n, (&a, &b), &mut out, gemm_bf16);
    group.finish();
}

fn bench_f32_as_bf16(c: &mut Criterion, threads: usize) {
    let mut group = c.benchmark_group("gemm_f32_as_bf16");
    for n in SIZES {
        let a = values(n * n, 1);
        let b = values(n * n, 2);
        let mut out = vec![0.0f32; n * n];
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        bench_square(&mut group, format!("ours/{threads}t"), n, (&a, &b), &mut out, gemm_f32_as_bf16);
    }
    group.finish();
}

/// One row times a transposed weight, `y = x · Wᵀ` with W row-major `[n, k]` (a projection while
/// a model decodes one token), beside a plain parallel read of as many bytes in the same run (the
/// yardstick: a one-row product cannot beat reading its weight once; an f32 buffer of the
/// weight's size, so it sits in the same cache level). Throughput is the weight's bytes, so both
/// read as GB/s. `make(len, salt)` builds the row and the weight; `product` is `gemm_f32` or
/// `gemm_bf16`.
fn bench_one_row<T>(
    c: &mut Criterion,
    (group_name, threads): (&str, usize),
    make: fn(usize, u32) -> Vec<T>,
    product: fn(MatRef<'_, T>, MatRef<'_, T>, &mut [f32], bool),
) {
    let mut group = c.benchmark_group(group_name);
    // (k, n): the decode benchmark model's up projection, its down projection and its head.
    for (k, n) in GEMV_SHAPES {
        let x = make(k, 5);
        let w = make(n * k, 6);
        let bytes = n * k * size_of::<T>();
        let same_bytes = values(bytes / size_of::<f32>(), 7);
        let mut y = vec![0.0f32; n];
        group.throughput(Throughput::Bytes(bytes as u64));
        let shape = format!("{k}x{n}");
        group.bench_function(BenchmarkId::new(format!("ours/{threads}t"), &shape), |bench| {
            bench.iter(|| {
                product(MatRef::row_major(black_box(&x), 1, k), MatRef::row_major(black_box(&w), n, k).t(), black_box(&mut y), false)
            })
        });
        group.bench_function(BenchmarkId::new(format!("read/{threads}t"), &shape), |bench| {
            bench.iter(|| read_in_parallel(black_box(&same_bytes), threads))
        });
    }
    group.finish();
}

const GEMV_SHAPES: [(usize, usize); 3] = [(512, 1408), (1408, 512), (512, 32_000)];

/// Every value of `data` read once, split in at most `threads` contiguous parts on rayon's pool
/// (a sum, so nothing is optimised away; 64 independent partial sums per part, so the adds keep
/// up with memory even in SSE2 code).
fn read_in_parallel(data: &[f32], threads: usize) -> f32 {
    const LANES: usize = 64;
    let part = data.len().div_ceil(threads.max(1)).next_multiple_of(LANES).max(LANES);
    data.par_chunks(part)
        .map(|chunk| {
            let mut sums = [0.0f32; LANES];
            let blocks = chunk.chunks_exact(LANES);
            let tail: f32 = blocks.remainder().iter().sum();
            for block in blocks {
                for (s, &v) in sums.iter_mut().zip(block) {
                    *s += v;
                }
            }
            sums.iter().sum::<f32>() + tail
        })
        .sum()
}

fn gemm(c: &mut Criterion) {
    let threads = configure_threads();
    eprintln!(
        "gemm bench: {threads} thread(s) for both ours and matrixmultiply; our f32 kernel: {}",
        f32_kernel_name(1024)
    );
    eprintln!("gemm bench: f32 with bf16 operands on {}", bf16_operands_kernel_name(1024));
    bench_f32(c, threads);
    bench_bf16(c, threads);
    bench_f32_as_bf16(c, threads);
    bench_one_row(c, ("gemv_f32", threads), values, gemm_f32);
    bench_one_row(c, ("gemv_bf16", threads), bf16_values, gemm_bf16);
}

criterion_group! {
    name = benches;
    // Short by default so both thread counts run in a few minutes; override on the command line
    // (`-- --measurement-time 10`) for tighter numbers.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = gemm
}
criterion_main!(benches);
