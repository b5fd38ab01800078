//! The GPU side of the harness (feature `cuda`): the benchmark registry and the runner.
//!
//! Timing: every call goes to the context's one stream. A *sample* is `inner` back-to-back calls
//! between two CUDA events, divided by `inner`; `inner` is chosen once per benchmark so that a
//! sample lasts about `--min-sample-us` (short kernels are otherwise below the events' resolution).
//! After one untimed call (module load, cuBLAS heuristics) and at least `--warmup` untimed samples
//! and `--warmup-ms` of untimed GPU time,
//! `--reps` samples are taken; the record holds their median and 10th/90th percentiles. Launch
//! checking (a synchronise after every launch) is switched off, so host launch overhead shows only
//! where a kernel is shorter than it.
//!
//! The ceilings are measured first, always: the copy's GB/s and the best cuBLAS TFLOP/s of the
//! run are the denominators of every record's `frac_copy_bw` and `frac_cublas`.

use brainstacks_kernels::cast::cuda as cast;
use brainstacks_kernels::launch::{CudaSlice, GpuContext, GpuError};
use brainstacks_kernels::philox::cuda as philox;
use brainstacks_kernels::yardstick::{Cublas, EventTimer, copy_d2d};

use super::cli::RunOptions;
use super::record::{Record, now_utc, summarize};
use super::spec::{self, Role, Spec};

/// Why a benchmark has no timing.
#[derive(Debug)]
pub enum SetupError {
    /// A yardstick library is missing (not a failure of ours).
    Unavailable(String),
    Gpu(GpuError),
}

impl From<GpuError> for SetupError {
    fn from(e: GpuError) -> Self {
        SetupError::Gpu(e)
    }
}

/// What every benchmark runs against.
pub struct Ctx {
    pub gpu: GpuContext,
    /// The cuBLAS handle, or why there is none.
    pub cublas: Result<Cublas, String>,
}

/// One call of the measured operation, owning its buffers.
pub type Op = Box<dyn FnMut(&Ctx) -> Result<(), GpuError>>;
/// Allocates and fills the inputs, returns the operation.
pub type Setup = Box<dyn Fn(&Ctx) -> Result<Op, SetupError>>;

/// A registered benchmark.
pub struct Bench {
    pub spec: Spec,
    pub setup: Setup,
}

fn bench(spec: Spec, setup: impl Fn(&Ctx) -> Result<Op, SetupError> + 'static) -> Bench {
    Bench {
        spec,
        setup: Box::new(setup),
    }
}

/// Every benchmark, in run order (ceilings first). To add one: a `Spec` constructor in `spec.rs`
/// (id, bytes, FLOPs) and one line here.
pub fn registry() -> Vec<Bench> {
    const N: u64 = 16 << 20;
    vec![
        bench(spec::copy_d2d(256 << 20), |c| copy_op(c, 256 << 20)),
        bench(spec::cublas_bf16(4096, 4096, 4096), |c| {
            cublas_op(c, 4096, 4096, 4096)
        }),
        bench(spec::cublas_bf16(8192, 8192, 8192), |c| {
            cublas_op(c, 8192, 8192, 8192)
        }),
        bench(spec::philox_u32(N), |c| philox_u32_op(c, N as usize)),
        bench(spec::philox_uniform_f32(N), |c| {
            philox_uniform_op(c, N as usize)
        }),
        bench(spec::cast_f32_bf16(N), |c| cast_f32_bf16_op(c, N as usize)),
        bench(spec::cast_bf16_f32(N), |c| cast_bf16_f32_op(c, N as usize)),
    ]
}

// ---- inputs ------------------------------------------------------------------------------------

/// `n` f32 uniform in (-1, 1) from our Philox kernel (random data: zeros would flatter the GEMM).
fn random_f32(gpu: &GpuContext, n: usize, seed: u64) -> Result<CudaSlice<f32>, GpuError> {
    let mut x = gpu.alloc_zeros::<f32>(n)?;
    philox::fill_uniform_f32(gpu, seed, 0, -1.0, 1.0, &mut x)?;
    Ok(x)
}

/// `n` bf16 (raw bits) uniform in (-1, 1).
fn random_bf16(gpu: &GpuContext, n: usize, seed: u64) -> Result<CudaSlice<u16>, GpuError> {
    let x = random_f32(gpu, n, seed)?;
    let mut y = gpu.alloc_zeros::<u16>(n)?;
    cast::cast_f32_bf16(gpu, &x, &mut y)?;
    Ok(y)
}

// ---- operations --------------------------------------------------------------------------------

fn copy_op(c: &Ctx, bytes: usize) -> Result<Op, SetupError> {
    let src = c.gpu.alloc_zeros::<u8>(bytes)?;
    let mut dst = c.gpu.alloc_zeros::<u8>(bytes)?;
    Ok(Box::new(move |c: &Ctx| copy_d2d(&c.gpu, &src, &mut dst)))
}

fn cublas_op(c: &Ctx, m: usize, n: usize, k: usize) -> Result<Op, SetupError> {
    if let Err(why) = &c.cublas {
        return Err(SetupError::Unavailable(why.clone()));
    }
    let a = random_bf16(&c.gpu, m * k, 1)?;
    let b = random_bf16(&c.gpu, n * k, 2)?;
    let mut out = c.gpu.alloc_zeros::<u16>(m * n)?;
    Ok(Box::new(move |c: &Ctx| match &c.cublas {
        Ok(blas) => blas.gemm_bf16_nt(&c.gpu, (m, n, k), &a, &b, &mut out),
        Err(why) => Err(GpuError::Invalid {
            op: "cublas",
            msg: why.clone(),
        }),
    }))
}

fn philox_u32_op(c: &Ctx, n: usize) -> Result<Op, SetupError> {
    let mut out = c.gpu.alloc_zeros::<u32>(n)?;
    Ok(Box::new(move |c: &Ctx| {
        philox::fill_u32(&c.gpu, 7, 0, &mut out)
    }))
}

fn philox_uniform_op(c: &Ctx, n: usize) -> Result<Op, SetupError> {
    let mut out = c.gpu.alloc_zeros::<f32>(n)?;
    Ok(Box::new(move |c: &Ctx| {
        philox::fill_uniform_f32(&c.gpu, 7, 0, -1.0, 1.0, &mut out)
    }))
}

fn cast_f32_bf16_op(c: &Ctx, n: usize) -> Result<Op, SetupError> {
    let src = random_f32(&c.gpu, n, 3)?;
    let mut dst = c.gpu.alloc_zeros::<u16>(n)?;
    Ok(Box::new(move |c: &Ctx| {
        cast::cast_f32_bf16(&c.gpu, &src, &mut dst)
    }))
}

fn cast_bf16_f32_op(c: &Ctx, n: usize) -> Result<Op, SetupError> {
    let src = random_bf16(&c.gpu, n, 4)?;
    let mut dst = c.gpu.alloc_zeros::<f32>(n)?;
    Ok(Box::new(move |c: &Ctx| {
        cast::cast_bf16_f32(&c.gpu, &src, &mut dst)
    }))
}

// ---- self-checks of the yardsticks -------------------------------------------------------------

/// The copy moves the bytes it should (odd length, non-trivial pattern).
fn check_copy(gpu: &GpuContext) -> Result<(), String> {
    let n = 1_000_003usize;
    let want: Vec<u8> = (0..n).map(|i| (i * 131 + 7) as u8).collect();
    let run = || -> Result<Vec<u8>, GpuError> {
        let src = gpu.htod(&want)?;
        let mut dst = gpu.alloc_zeros::<u8>(n)?;
        copy_d2d(gpu, &src, &mut dst)?;
        gpu.dtoh(&dst)
    };
    let got = run().map_err(|e| e.to_string())?;
    match got.iter().zip(&want).position(|(a, b)| a != b) {
        None if got.len() == n => Ok(()),
        None => Err(format!("copied {} bytes, expected {n}", got.len())),
        Some(i) => Err(format!("byte {i}: got {}, want {}", got[i], want[i])),
    }
}

/// The cuBLAS call computes row-major C = A·Bᵀ (not a transpose of it): distinct m, n, k and
/// values whose products and sums are exact in f32, so the only error is C's rounding to bf16
/// (relative 2^-9; checked at 2^-8, zeros exactly).
fn check_cublas(gpu: &GpuContext, blas: &Cublas) -> Result<(), String> {
    let (m, n, k) = (67usize, 45usize, 72usize);
    let a: Vec<f32> = (0..m * k)
        .map(|x| ((x / k * 7 + x % k * 3) % 17) as f32 / 8.0 - 1.0)
        .collect();
    let b: Vec<f32> = (0..n * k)
        .map(|x| ((x / k * 5 + x % k * 11) % 13) as f32 / 4.0 - 1.5)
        .collect();
    // Multiples of 1/8 and 1/4 below 2 in magnitude: exact in bf16 (the top 16 bits of the f32).
    let bits = |v: &[f32]| {
        v.iter()
            .map(|x| (x.to_bits() >> 16) as u16)
            .collect::<Vec<u16>>()
    };
    let run = || -> Result<Vec<u16>, GpuError> {
        let da = gpu.htod(&bits(&a))?;
        let db = gpu.htod(&bits(&b))?;
        let mut dc = gpu.alloc_zeros::<u16>(m * n)?;
        blas.gemm_bf16_nt(gpu, (m, n, k), &da, &db, &mut dc)?;
        gpu.dtoh(&dc)
    };
    let got = run().map_err(|e| e.to_string())?;
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k)
                .map(|l| a[i * k + l] as f64 * b[j * k + l] as f64)
                .sum();
            let g = f32::from_bits((got[i * n + j] as u32) << 16) as f64;
            if (g - want).abs() > want.abs() / 256.0 {
                return Err(format!(
                    "C[{i}][{j}] of a {m}x{n}x{k} product: got {g}, want {want}"
                ));
            }
        }
    }
    Ok(())
}

// ---- runner ------------------------------------------------------------------------------------

/// What a run produced.
pub struct Outcome {
    pub records: Vec<Record>,
    /// Benchmarks and self-checks that failed (an unavailable yardstick is not counted).
    pub failures: usize,
}

fn measure(
    ctx: &Ctx,
    timer: &EventTimer,
    b: &Bench,
    o: &RunOptions,
) -> Result<(super::record::Summary, usize), SetupError> {
    let gpu = &ctx.gpu;
    let mut op = (b.setup)(ctx)?;
    gpu.synchronize()?;
    op(ctx)?;
    gpu.synchronize()?;
    let once_us = f64::from(timer.time_ms(gpu, || op(ctx))?) * 1e3;
    let inner = if once_us > 0.0 {
        (o.min_sample_us / once_us).ceil().clamp(1.0, 10_000.0) as usize
    } else {
        100
    };
    let mut sample = || -> Result<f64, GpuError> {
        let ms = timer.time_ms(gpu, || {
            for _ in 0..inner {
                op(ctx)?;
            }
            Ok(())
        })?;
        Ok(f64::from(ms) * 1e3 / inner as f64)
    };
    // Warm-up: at least `warmup` samples and `warmup_ms` of GPU time (clocks ramp up under load).
    let (mut n, mut warm_us) = (0usize, 0.0f64);
    while (n < o.warmup || warm_us < o.warmup_ms * 1e3) && n < 100_000 {
        warm_us += sample()? * inner as f64;
        n += 1;
    }
    let samples = (0..o.reps)
        .map(|_| sample())
        .collect::<Result<Vec<f64>, _>>()?;
    let s = summarize(&samples).ok_or_else(|| GpuError::Invalid {
        op: "gpu-bench",
        msg: format!("{}: no valid samples", b.spec.id()),
    })?;
    Ok((s, inner))
}

/// Opens device 0, checks the yardsticks, runs the ceilings and every benchmark whose id contains
/// the filter, and hands each finished record to `emit` (ceilings first, in registry order).
/// Errors only when no GPU is usable; a failing benchmark becomes a record with `error`.
pub fn run(o: &RunOptions, mut emit: impl FnMut(&Record)) -> Result<Outcome, String> {
    let mut gpu = GpuContext::new(0).map_err(|e| e.to_string())?;
    // Timing runs must not synchronise after every launch (the test-build default).
    gpu.set_check_launches(false);
    // PTX modules load at each benchmark's first, untimed call: a module that fails to load fails
    // only the benchmarks that use it.
    let device = gpu.device_info().map_err(|e| e.to_string())?.to_string();
    eprintln!("gpu-bench: device {device}");
    let mut failures = 0;
    if let Err(e) = check_copy(&gpu) {
        eprintln!("gpu-bench: self-check FAILED: device-to-device copy: {e}");
        failures += 1;
    }
    let cublas = match Cublas::new(&gpu) {
        Err(e) => {
            eprintln!("gpu-bench: cuBLAS yardstick unavailable: {e}");
            Err(e.to_string())
        }
        Ok(blas) => match check_cublas(&gpu, &blas) {
            Ok(()) => {
                eprintln!("gpu-bench: self-check ok: cuBLAS bf16 C = A·Bᵀ (67x45x72)");
                Ok(blas)
            }
            Err(e) => {
                eprintln!("gpu-bench: self-check FAILED: cuBLAS bf16 GEMM: {e}");
                failures += 1;
                Err(format!("disabled after a failed self-check: {e}"))
            }
        },
    };
    let ctx = Ctx { gpu, cublas };
    let timer = EventTimer::new(&ctx.gpu).map_err(|e| e.to_string())?;
    let date = now_utc();
    let commit = o
        .commit
        .clone()
        .or_else(|| std::env::var("BRAINSTACKS_COMMIT").ok())
        .filter(|c| !c.is_empty());

    let run_one = |b: &Bench, failures: &mut usize| -> Record {
        let s = &b.spec;
        eprintln!("gpu-bench: {}", s.id());
        let mut r = Record {
            id: s.id(),
            kernel: s.kernel.into(),
            shape: s.shape.clone(),
            dtype: s.variant.into(),
            bytes: s.bytes,
            flops: s.flops,
            device: device.clone(),
            commit: commit.clone(),
            date: date.clone(),
            ..Record::default()
        };
        match measure(&ctx, &timer, b, o) {
            Ok((sum, inner)) => {
                r.reps = o.reps as u64;
                r.inner = inner as u64;
                r.set_timing(sum);
            }
            Err(SetupError::Unavailable(why)) => r.error = Some(format!("unavailable: {why}")),
            Err(SetupError::Gpu(e)) => {
                *failures += 1;
                eprintln!("gpu-bench: {} FAILED: {e}", s.id());
                r.error = Some(e.to_string());
            }
        }
        // Surface an asynchronous fault here, at the benchmark that caused it.
        if let Err(e) = ctx.gpu.synchronize()
            && r.error.is_none()
        {
            *failures += 1;
            r.error = Some(e.to_string());
        }
        r
    };

    let benches = registry();
    let mut records = Vec::new();
    for b in benches.iter().filter(|b| b.spec.role != Role::Kernel) {
        records.push(run_one(b, &mut failures));
    }
    // `records` holds exactly the ceilings here, in registry order.
    let ceilings = benches.iter().filter(|b| b.spec.role != Role::Kernel);
    let of_role = |role: Role| {
        records
            .iter()
            .zip(ceilings.clone())
            .filter(move |(_, b)| b.spec.role == role)
            .map(|(r, _)| r)
    };
    let copy_gbps = of_role(Role::CopyCeiling).find_map(|r| r.gbps);
    let cublas_tflops = of_role(Role::CublasCeiling)
        .filter_map(|r| r.tflops)
        .reduce(f64::max);
    for r in &mut records {
        r.set_fractions(copy_gbps, cublas_tflops);
        emit(r);
    }
    let selected = |b: &&Bench| {
        b.spec.role == Role::Kernel && o.filter.as_deref().is_none_or(|f| b.spec.id().contains(f))
    };
    for b in benches.iter().filter(selected) {
        let mut r = run_one(b, &mut failures);
        r.set_fractions(copy_gbps, cublas_tflops);
        emit(&r);
        records.push(r);
    }
    Ok(Outcome { records, failures })
}
