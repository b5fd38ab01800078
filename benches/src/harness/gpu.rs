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

use brainstacks_kernels::adamw::{AdamWParams, cuda as adamw};
use brainstacks_kernels::cast::cuda as cast;
use brainstacks_kernels::cross_entropy::cuda::{self as ce, Logits};
use brainstacks_kernels::elementwise::{BinaryOp, UnaryOp, cuda as ew};
use brainstacks_kernels::embedding::cuda as embedding;
use brainstacks_kernels::gemm::cuda::{self as gemm, Bf16Layout, GemmDims, Strides as GemmStrides};
use brainstacks_kernels::launch::{CudaSlice, GpuContext, GpuError};
use brainstacks_kernels::moe_lora::cpu::{Dims as MoeDims, GateDims};
use brainstacks_kernels::moe_lora::cuda::{self as moe, DeviceRouting, DispatchGrads, GateOutputs};
use brainstacks_kernels::nf4::cuda::{self as nf4, Nf4Out, Nf4Scales, Nf4Weight};
use brainstacks_kernels::philox::cuda as philox;
use brainstacks_kernels::reduce::{ReduceOp, cuda as reduce};
use brainstacks_kernels::rms_norm::cuda as rms_norm;
use brainstacks_kernels::rope::cuda::{self as rope, RopeShape};
use brainstacks_kernels::rsvd::cuda as rsvd;
use brainstacks_kernels::softmax::cuda as softmax;
use brainstacks_kernels::topk::cuda as topk;
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

/// Every benchmark, in run order (ceilings first; each dense cuBLAS reference right before the
/// kernels compared with it). To add one: a `Spec` constructor in `spec.rs` (id, bytes, FLOPs)
/// and one line here.
pub fn registry() -> Vec<Bench> {
    use spec::{GemmLayout as L, Nf4ScaleForm as S};
    const N: u64 = 16 << 20;
    let mut v = vec![
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
        bench(spec::philox_normal_f32(N), |c| {
            philox_normal_op(c, N as usize)
        }),
        bench(spec::cast_f32_bf16(N), |c| cast_f32_bf16_op(c, N as usize)),
        bench(spec::cast_bf16_f32(N), |c| cast_bf16_f32_op(c, N as usize)),
    ];
    // Dense GEMM: ours against the cuBLAS ceilings at the same shapes.
    for (layout, s) in [
        (L::Nt, 4096usize),
        (L::Nt, 8192),
        (L::Nn, 4096),
        (L::Tn, 4096),
    ] {
        let u = s as u64;
        v.push(bench(spec::gemm_bf16(layout, u, u, u), move |c| {
            gemm_bf16_op(c, layout, s, s, s)
        }));
    }
    v.push(bench(spec::gemm_f32(4096, 4096, 4096), |c| {
        gemm_f32_op(c, 4096, 4096, 4096)
    }));
    // NF4 (weights out x in) at M = 1, 16, 256, 4096, each after its dense cuBLAS reference.
    for (n, k) in [
        (2048usize, 2048usize),
        (2048, 5632),
        (5632, 2048),
        (8192, 8192),
    ] {
        for m in [1usize, 16, 256, 4096] {
            let (mu, nu, ku) = (m as u64, n as u64, k as u64);
            v.push(bench(spec::cublas_bf16_reference(mu, nu, ku), move |c| {
                cublas_reference_op(c, m, n, k)
            }));
            v.push(bench(spec::nf4_matmul(mu, nu, ku, S::F32), move |c| {
                nf4_op(c, m, n, k, S::F32, false)
            }));
            if (n, k) == (8192, 8192) && m <= 16 {
                v.push(bench(spec::nf4_matmul(mu, nu, ku, S::Double), move |c| {
                    nf4_op(c, m, n, k, S::Double, false)
                }));
            }
        }
    }
    // The transposed product dx = dy W (its baseline, M x K x N, is 8192^2 too: measured above).
    for m in [16usize, 4096] {
        v.push(bench(spec::nf4_matmul_t(m as u64, 8192, 8192), move |c| {
            nf4_op(c, m, 8192, 8192, S::F32, true)
        }));
    }
    v.extend([
        bench(spec::unary_f32("silu", N), |c| silu_op(c, N as usize)),
        bench(spec::binary_f32("add", N), |c| add_op(c, N as usize)),
        bench(spec::reduce_sum(4096, 4096, true), |c| {
            reduce_sum_op(c, 4096, 4096, true)
        }),
        bench(spec::reduce_sum(4096, 4096, false), |c| {
            reduce_sum_op(c, 4096, 4096, false)
        }),
        bench(spec::softmax(4096, 32000, false), |c| {
            softmax_op(c, 4096, 32000, false)
        }),
        bench(spec::softmax(4096, 32000, true), |c| {
            softmax_op(c, 4096, 32000, true)
        }),
        bench(spec::rms_norm(16384, 2048, false), |c| {
            rms_norm_op(c, 16384, 2048, false)
        }),
        bench(spec::rms_norm(16384, 2048, true), |c| {
            rms_norm_op(c, 16384, 2048, true)
        }),
        bench(spec::rope_fwd(8, 32, 2048, 64), |c| {
            rope_op(c, 8 * 32, 2048, 64)
        }),
        bench(spec::embedding_fwd(16384, 2048), |c| {
            embedding_op(c, 16384, 2048, 32000)
        }),
        bench(spec::cross_entropy(4096, 32000), |c| {
            cross_entropy_op(c, 4096, 32000)
        }),
        bench(spec::topk(65536, 64, 2), |c| topk_op(c, 65536, 64, 2)),
        bench(spec::adamw(50 << 20), |c| adamw_op(c, 50 << 20)),
    ]);
    // MoE-LoRA: the paper's stack (E = 4, r = 16, top-2) at 2048 -> {2048, 256, 5632}, and 8 / 64
    // experts at 2048 -> 2048; the gate at E = 4, 8, 64.
    let paper = spec::MoeShape {
        t: 4096,
        d_in: 2048,
        d_out: 2048,
        experts: 4,
        r: 16,
        k: 2,
    };
    let mut shapes = vec![paper];
    for d_out in [256, 5632] {
        shapes.push(spec::MoeShape { d_out, ..paper });
    }
    for experts in [8, 64] {
        shapes.push(spec::MoeShape { experts, ..paper });
    }
    for s in shapes {
        v.push(bench(spec::moe_lora_fwd(s, false), move |c| {
            moe_lora_op(c, s, false, false)
        }));
        if s == paper {
            v.push(bench(spec::moe_lora_fwd(s, true), move |c| {
                moe_lora_op(c, s, false, true)
            }));
        }
        v.push(bench(spec::moe_lora_bwd(s), move |c| {
            moe_lora_op(c, s, true, false)
        }));
    }
    for experts in [4usize, 64] {
        v.push(bench(
            spec::moe_lora_group(4096, 2, experts as u64),
            move |c| moe_group_op(c, 4096, 2, experts),
        ));
    }
    for experts in [4usize, 8, 64] {
        for bwd in [false, true] {
            let e = experts as u64;
            let sp = if bwd {
                spec::moe_gate_bwd(4096, 2048, e, 2)
            } else {
                spec::moe_gate_fwd(4096, 2048, e, 2)
            };
            v.push(bench(sp, move |c| {
                moe_gate_op(c, 4096, 2048, experts, 2, bwd)
            }));
        }
    }
    // Randomized SVD (p = 8) at the shapes, q = 0, 2, 4; the torch.svd_lowrank anchor is
    // 5.77 ms at 2048x8192, k = 64, q = 2.
    for (m, n, k) in [
        (2048usize, 8192usize, 64usize),
        (5632, 16384, 64),
        (2048, 65536, 128),
    ] {
        for q in [0usize, 2, 4] {
            v.push(bench(
                spec::rsvd_f32(m as u64, n as u64, k as u64, q as u64),
                move |c| rsvd_op(c, m, n, k, q),
            ));
        }
    }
    // Its Jacobi SVD alone, at the l of k = 64 and k = 128.
    for l in [72usize, 136] {
        v.push(bench(spec::rsvd_jacobi_f64(l as u64), move |c| jacobi_op(c, l)));
    }
    v
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

fn philox_normal_op(c: &Ctx, n: usize) -> Result<Op, SetupError> {
    let mut out = c.gpu.alloc_zeros::<f32>(n)?;
    Ok(Box::new(move |c: &Ctx| {
        philox::fill_normal_f32(&c.gpu, 7, 0, 0.0, 1.0, &mut out)
    }))
}

/// Device copies of device buffers (the driver's copy), one function per element type (this crate
/// does not name cudarc's traits).
macro_rules! dup_fn {
    ($name:ident, $t:ty) => {
        fn $name(gpu: &GpuContext, x: &CudaSlice<$t>) -> Result<CudaSlice<$t>, GpuError> {
            let mut d = gpu.alloc_zeros::<$t>(x.len())?;
            copy_d2d(gpu, x, &mut d)?;
            Ok(d)
        }
    };
}
dup_fn!(dup_u8, u8);
dup_fn!(dup_u16, u16);
dup_fn!(dup_f32, f32);

fn gemm_bf16_op(
    c: &Ctx,
    layout: spec::GemmLayout,
    m: usize,
    n: usize,
    k: usize,
) -> Result<Op, SetupError> {
    let layout = match layout {
        spec::GemmLayout::Nt => Bf16Layout::Nt,
        spec::GemmLayout::Nn => Bf16Layout::Nn,
        spec::GemmLayout::Tn => Bf16Layout::Tn,
    };
    let a = random_bf16(&c.gpu, m * k, 11)?;
    let b = random_bf16(&c.gpu, k * n, 12)?;
    let mut out = c.gpu.alloc_zeros::<u16>(m * n)?;
    // Leading dimensions of the operands as stored: A [m, k] (At [k, m] for TN), B [k, n]
    // (Bt [n, k] for NT).
    let (lda, ldb) = match layout {
        Bf16Layout::Nt => (k, k),
        Bf16Layout::Nn => (k, n),
        Bf16Layout::Tn => (m, n),
    };
    let d = GemmDims {
        m,
        n,
        k,
        lda,
        ldb,
        ldc: n,
    };
    Ok(Box::new(move |c: &Ctx| {
        gemm::gemm_bf16_to_bf16(&c.gpu, layout, d, &a, &b, &mut out)
    }))
}

fn gemm_f32_op(c: &Ctx, m: usize, n: usize, k: usize) -> Result<Op, SetupError> {
    let a = random_f32(&c.gpu, m * k, 13)?;
    let b = random_f32(&c.gpu, k * n, 14)?;
    let mut out = c.gpu.alloc_zeros::<f32>(m * n)?;
    let (sa, sb) = (GemmStrides { rs: k, cs: 1 }, GemmStrides { rs: n, cs: 1 });
    Ok(Box::new(move |c: &Ctx| {
        gemm::gemm_f32(&c.gpu, m, n, k, &a, sa, &b, sb, &mut out, n)
    }))
}

/// The dense baseline of an NF4 product: cuBLAS bf16 `y = x·Wᵀ` with `W` `n x k`, cycling
/// through copies of `W` as the NF4 benchmark does (see [`spec::rotation_copies`]).
fn cublas_reference_op(c: &Ctx, m: usize, n: usize, k: usize) -> Result<Op, SetupError> {
    if let Err(why) = &c.cublas {
        return Err(SetupError::Unavailable(why.clone()));
    }
    let x = random_bf16(&c.gpu, m * k, 21)?;
    let w = random_bf16(&c.gpu, n * k, 22)?;
    let mut ws = Vec::new();
    for _ in 1..spec::rotation_copies(2 * (n * k) as u64) {
        ws.push(dup_u16(&c.gpu, &w)?);
    }
    ws.insert(0, w);
    let mut y = c.gpu.alloc_zeros::<u16>(m * n)?;
    let mut i = 0;
    Ok(Box::new(move |c: &Ctx| {
        let w = &ws[i];
        i = (i + 1) % ws.len();
        match &c.cublas {
            Ok(blas) => blas.gemm_bf16_nt(&c.gpu, (m, n, k), &x, w, &mut y),
            Err(why) => Err(GpuError::Invalid {
                op: "cublas",
                msg: why.clone(),
            }),
        }
    }))
}

/// `n` random bytes, made on the host (a xorshift; no u8 Philox kernel) and copied once.
fn random_u8(gpu: &GpuContext, n: usize, seed: u64) -> Result<CudaSlice<u8>, GpuError> {
    let mut s = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let take = (n - v.len()).min(8);
        v.extend_from_slice(&s.to_le_bytes()[..take]);
    }
    gpu.htod(&v)
}

/// One NF4 weight's device buffers (random nibbles and positive scales).
struct Nf4Bufs {
    packed: CudaSlice<u8>,
    /// f32 absmax, or the double-quantized codes, nested absmax and map.
    absmax: Option<CudaSlice<f32>>,
    double: Option<(CudaSlice<u8>, CudaSlice<f32>, CudaSlice<f32>)>,
}

impl Nf4Bufs {
    fn new(
        gpu: &GpuContext,
        n: usize,
        k: usize,
        form: spec::Nf4ScaleForm,
    ) -> Result<Self, GpuError> {
        let blocks = n * k / 64;
        let packed = random_u8(gpu, n * k / 2, 31)?;
        let positive = |len: usize, seed: u64| -> Result<CudaSlice<f32>, GpuError> {
            let mut x = gpu.alloc_zeros::<f32>(len)?;
            philox::fill_uniform_f32(gpu, seed, 0, 0.5, 1.5, &mut x)?;
            Ok(x)
        };
        Ok(match form {
            spec::Nf4ScaleForm::F32 => Nf4Bufs {
                packed,
                absmax: Some(positive(blocks, 32)?),
                double: None,
            },
            spec::Nf4ScaleForm::Double => Nf4Bufs {
                packed,
                absmax: None,
                double: Some((
                    random_u8(gpu, blocks, 33)?,
                    positive(blocks.div_ceil(256), 34)?,
                    positive(256, 35)?,
                )),
            },
        })
    }

    /// A copy made on the device.
    fn duplicate(&self, gpu: &GpuContext) -> Result<Self, GpuError> {
        Ok(Nf4Bufs {
            packed: dup_u8(gpu, &self.packed)?,
            absmax: self.absmax.as_ref().map(|a| dup_f32(gpu, a)).transpose()?,
            double: match &self.double {
                Some((c, nst, map)) => {
                    Some((dup_u8(gpu, c)?, dup_f32(gpu, nst)?, dup_f32(gpu, map)?))
                }
                None => None,
            },
        })
    }

    fn weight(&self, n: usize, k: usize) -> Nf4Weight<'_> {
        let scales = match (&self.absmax, &self.double) {
            (Some(a), _) => Nf4Scales::F32(a),
            (None, Some((codes, nested, map))) => Nf4Scales::Double {
                codes,
                nested,
                map,
                offset: 0.0,
            },
            (None, None) => unreachable!("Nf4Bufs::new sets one scale form"),
        };
        Nf4Weight {
            packed: &self.packed,
            scales,
            n,
            k,
        }
    }
}

/// `y = x·Wᵀ` through `nf4_matmul`, or (`transposed`) `dx = dy·W` through
/// `nf4_matmul_transposed`, bf16 activations in and out, cycling through copies of the weight
/// so that every call streams it from DRAM (see [`spec::rotation_copies`]).
fn nf4_op(
    c: &Ctx,
    m: usize,
    n: usize,
    k: usize,
    form: spec::Nf4ScaleForm,
    transposed: bool,
) -> Result<Op, SetupError> {
    let first = Nf4Bufs::new(&c.gpu, n, k, form)?;
    let copies = spec::rotation_copies(spec::nf4_weight_bytes(n as u64, k as u64, form));
    let mut ws = Vec::with_capacity(copies);
    for _ in 1..copies {
        ws.push(first.duplicate(&c.gpu)?);
    }
    ws.insert(0, first);
    let (len_in, len_out) = if transposed { (n, k) } else { (k, n) };
    let x = random_bf16(&c.gpu, m * len_in, 36)?;
    let mut y = c.gpu.alloc_zeros::<u16>(m * len_out)?;
    let mut i = 0;
    Ok(Box::new(move |c: &Ctx| {
        let w = ws[i].weight(n, k);
        i = (i + 1) % ws.len();
        if transposed {
            nf4::nf4_matmul_transposed(&c.gpu, &x, m, len_in, &w, Nf4Out::Bf16(&mut y))
        } else {
            nf4::nf4_matmul(&c.gpu, &x, m, len_in, &w, Nf4Out::Bf16(&mut y))
        }
    }))
}

fn silu_op(c: &Ctx, n: usize) -> Result<Op, SetupError> {
    let x = random_f32(&c.gpu, n, 41)?;
    let mut y = c.gpu.alloc_zeros::<f32>(n)?;
    Ok(Box::new(move |c: &Ctx| {
        let view = ew::Strides {
            strides: &[1],
            offset: 0,
        };
        ew::unary_f32(&c.gpu, UnaryOp::Silu, &x, &[n], view, &mut y)
    }))
}

fn add_op(c: &Ctx, n: usize) -> Result<Op, SetupError> {
    let a = random_f32(&c.gpu, n, 42)?;
    let b = random_f32(&c.gpu, n, 43)?;
    let mut y = c.gpu.alloc_zeros::<f32>(n)?;
    Ok(Box::new(move |c: &Ctx| {
        let view = ew::Strides {
            strides: &[1],
            offset: 0,
        };
        ew::binary_f32(&c.gpu, BinaryOp::Add, &a, view, &b, view, &[n], &mut y)
    }))
}

/// Sums each row (`per_row`) or each column of a `rows x cols` array.
fn reduce_sum_op(c: &Ctx, rows: usize, cols: usize, per_row: bool) -> Result<Op, SetupError> {
    let x = random_f32(&c.gpu, rows * cols, 44)?;
    let (outer, size, inner) = if per_row {
        (rows, cols, 1)
    } else {
        (1, rows, cols)
    };
    let mut y = c.gpu.alloc_zeros::<f32>(outer * inner)?;
    Ok(Box::new(move |c: &Ctx| {
        reduce::reduce_f32(&c.gpu, ReduceOp::Sum, &x, outer, size, inner, &mut y)
    }))
}

fn softmax_op(c: &Ctx, rows: usize, cols: usize, bwd: bool) -> Result<Op, SetupError> {
    let x = random_f32(&c.gpu, rows * cols, 45)?;
    let mut y = c.gpu.alloc_zeros::<f32>(rows * cols)?;
    if !bwd {
        return Ok(Box::new(move |c: &Ctx| {
            softmax::softmax_f32_fwd(&c.gpu, &x, &mut y, rows, cols)
        }));
    }
    softmax::softmax_f32_fwd(&c.gpu, &x, &mut y, rows, cols)?;
    let dy = x;
    let mut dx = c.gpu.alloc_zeros::<f32>(rows * cols)?;
    Ok(Box::new(move |c: &Ctx| {
        softmax::softmax_f32_bwd(&c.gpu, &y, &dy, &mut dx, rows, cols)
    }))
}

fn rms_norm_op(c: &Ctx, rows: usize, dim: usize, bwd: bool) -> Result<Op, SetupError> {
    const EPS: f64 = 1e-6;
    let x = random_f32(&c.gpu, rows * dim, 46)?;
    let w = random_f32(&c.gpu, dim, 47)?;
    let mut y = c.gpu.alloc_zeros::<f32>(rows * dim)?;
    if !bwd {
        return Ok(Box::new(move |c: &Ctx| {
            rms_norm::rms_norm_f32_fwd(&c.gpu, &x, &w, &mut y, rows, dim, EPS)
        }));
    }
    let dy = random_f32(&c.gpu, rows * dim, 48)?;
    let mut dw = c.gpu.alloc_zeros::<f32>(dim)?;
    Ok(Box::new(move |c: &Ctx| {
        rms_norm::rms_norm_f32_bwd(&c.gpu, &x, &w, &dy, &mut y, &mut dw, rows, dim, EPS)
    }))
}

/// RoPE over `seqs` contiguous sequences of `t x d` (batch times heads).
fn rope_op(c: &Ctx, seqs: usize, t: usize, d: usize) -> Result<Op, SetupError> {
    let x = random_f32(&c.gpu, seqs * t * d, 49)?;
    let cos = random_f32(&c.gpu, t * d / 2, 50)?;
    let sin = random_f32(&c.gpu, t * d / 2, 51)?;
    let mut y = c.gpu.alloc_zeros::<f32>(seqs * t * d)?;
    let shape = RopeShape::contiguous(seqs, t, d);
    Ok(Box::new(move |c: &Ctx| {
        rope::rope_f32_fwd(&c.gpu, &x, shape, &cos, &sin, &mut y)
    }))
}

/// `n` i64 in `0..bound`, made on the host (small) with a fixed LCG.
fn random_ids(
    gpu: &GpuContext,
    n: usize,
    bound: u64,
    seed: u64,
) -> Result<CudaSlice<i64>, GpuError> {
    let mut s = seed;
    let ids: Vec<i64> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 33) % bound) as i64
        })
        .collect();
    gpu.htod(&ids)
}

fn embedding_op(c: &Ctx, tokens: usize, dim: usize, vocab: usize) -> Result<Op, SetupError> {
    let table = random_f32(&c.gpu, vocab * dim, 52)?;
    let ids = random_ids(&c.gpu, tokens, vocab as u64, 53)?;
    let mut out = c.gpu.alloc_zeros::<f32>(tokens * dim)?;
    Ok(Box::new(move |c: &Ctx| {
        embedding::embedding_f32_fwd(&c.gpu, &table, vocab, dim, &ids, &mut out)
    }))
}

fn cross_entropy_op(c: &Ctx, rows: usize, classes: usize) -> Result<Op, SetupError> {
    let logits = random_f32(&c.gpu, rows * classes, 54)?;
    let targets = random_ids(&c.gpu, rows, classes as u64, 55)?;
    let mut loss = c.gpu.alloc_zeros::<f32>(1)?;
    let mut kept = c.gpu.alloc_zeros::<u64>(1)?;
    let mut lse = c.gpu.alloc_zeros::<f64>(rows)?;
    let dloss = c.gpu.htod(&[1.0f32])?;
    let mut dlogits = c.gpu.alloc_zeros::<f32>(rows * classes)?;
    let shape = Logits::contiguous(rows, classes);
    Ok(Box::new(move |c: &Ctx| {
        ce::cross_entropy_f32_fwd(
            &c.gpu, &logits, shape, &targets, None, &mut loss, &mut kept, &mut lse,
        )?;
        ce::cross_entropy_f32_bwd(
            &c.gpu,
            &logits,
            shape,
            &targets,
            None,
            &lse,
            &kept,
            &dloss,
            &mut dlogits,
        )
    }))
}

fn topk_op(c: &Ctx, rows: usize, n: usize, k: usize) -> Result<Op, SetupError> {
    let x = random_f32(&c.gpu, rows * n, 56)?;
    let mut values = c.gpu.alloc_zeros::<f32>(rows * k)?;
    let mut indices = c.gpu.alloc_zeros::<i64>(rows * k)?;
    Ok(Box::new(move |c: &Ctx| {
        topk::topk_f32(&c.gpu, &x, rows, n, n, k, &mut values, &mut indices)
    }))
}

fn adamw_op(c: &Ctx, n: usize) -> Result<Op, SetupError> {
    let mut p = random_f32(&c.gpu, n, 57)?;
    let g = random_f32(&c.gpu, n, 58)?;
    let mut m = c.gpu.alloc_zeros::<f32>(n)?;
    let mut v = c.gpu.alloc_zeros::<f32>(n)?;
    let params = AdamWParams {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    // The same step number every call: the work per call does not depend on it.
    Ok(Box::new(move |c: &Ctx| {
        adamw::adamw_step_f32(&c.gpu, &params, 1, &mut p, &g, &mut m, &mut v)
    }))
}

/// A balanced random top-`k` routing (`k` distinct experts per token) and its gates (each 1/k).
fn random_routing(t: usize, experts: usize, k: usize, seed: u64) -> Vec<i64> {
    let mut s = seed | 1;
    let mut idx = Vec::with_capacity(t * k);
    for _ in 0..t {
        let mut pool: Vec<i64> = (0..experts as i64).collect();
        for j in 0..k {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            pool.swap(j, j + (s % (experts - j) as u64) as usize);
        }
        idx.extend_from_slice(&pool[..k]);
    }
    idx
}

/// MoE-LoRA dispatch forward (routing uploaded once, or with `route` on every call) or backward.
fn moe_lora_op(c: &Ctx, s: spec::MoeShape, bwd: bool, route: bool) -> Result<Op, SetupError> {
    let d = MoeDims {
        t: s.t as usize,
        k: s.k as usize,
        experts: s.experts as usize,
        d_in: s.d_in as usize,
        r: s.r as usize,
        d_out: s.d_out as usize,
    };
    let idx = random_routing(d.t, d.experts, d.k, 61);
    let routing = DeviceRouting::new(&c.gpu, &idx, d.k, d.experts)?;
    let x = random_f32(&c.gpu, d.t * d.d_in, 62)?;
    let a = random_f32(&c.gpu, d.experts * d.r * d.d_in, 63)?;
    let b = random_f32(&c.gpu, d.experts * d.d_out * d.r, 64)?;
    let g = c.gpu.htod(&vec![1.0 / d.k as f32; d.t * d.k])?;
    let scale = 16.0 / (d.r as f32).sqrt();
    let mut mid = c.gpu.alloc_zeros::<f32>(d.t * d.k * d.r)?;
    let mut out = c.gpu.alloc_zeros::<f32>(d.t * d.d_out)?;
    moe::dispatch_forward_f32(
        &c.gpu, &routing, &x, &g, &a, &b, scale, &d, &mut mid, &mut out,
    )?;
    if !bwd {
        return Ok(Box::new(move |c: &Ctx| {
            if route {
                let routing = DeviceRouting::new(&c.gpu, &idx, d.k, d.experts)?;
                moe::dispatch_forward_f32(
                    &c.gpu, &routing, &x, &g, &a, &b, scale, &d, &mut mid, &mut out,
                )
            } else {
                moe::dispatch_forward_f32(
                    &c.gpu, &routing, &x, &g, &a, &b, scale, &d, &mut mid, &mut out,
                )
            }
        }));
    }
    let dy = random_f32(&c.gpu, d.t * d.d_out, 65)?;
    let mut dx = c.gpu.alloc_zeros::<f32>(d.t * d.d_in)?;
    let mut dg = c.gpu.alloc_zeros::<f32>(d.t * d.k)?;
    let mut da = c.gpu.alloc_zeros::<f32>(a.len())?;
    let mut db = c.gpu.alloc_zeros::<f32>(b.len())?;
    Ok(Box::new(move |c: &Ctx| {
        let grads = DispatchGrads {
            dx: &mut dx,
            dg: &mut dg,
            da: &mut da,
            db: &mut db,
        };
        moe::dispatch_backward_f32(
            &c.gpu, &routing, &x, &g, &a, &b, scale, &d, &mid, &dy, grads,
        )
    }))
}

/// The randomized SVD of a random m x n f32 matrix, p = 8 (the whole driver, its host
/// synchronisations included).
fn rsvd_op(c: &Ctx, m: usize, n: usize, k: usize, q: usize) -> Result<Op, SetupError> {
    let a = random_f32(&c.gpu, m * n, 70)?;
    Ok(Box::new(move |c: &Ctx| {
        rsvd::rsvd_f32(&c.gpu, &a, m, n, k, 8, q, 71).map(|_| ())
    }))
}

/// The Jacobi SVD of a random l x l matrix (uniform entries; `a1` the identity), to convergence.
fn jacobi_op(c: &Ctx, l: usize) -> Result<Op, SetupError> {
    let a = random_f32(&c.gpu, l * l, 72)?;
    let a2: Vec<f64> = c.gpu.dtoh(&a)?.into_iter().map(f64::from).collect();
    let eye: Vec<f64> = (0..l * l).map(|e| if e / l == e % l { 1.0 } else { 0.0 }).collect();
    let (a2, a1) = (c.gpu.htod(&a2)?, c.gpu.htod(&eye)?);
    Ok(Box::new(move |c: &Ctx| {
        rsvd::jacobi_svd_f64(&c.gpu, &a2, &a1, l, brainstacks_kernels::rsvd::GPU_JACOBI_MAX_SWEEPS).map(|_| ())
    }))
}

/// The device grouping of a random top-`k` routing.
fn moe_group_op(c: &Ctx, t: usize, k: usize, experts: usize) -> Result<Op, SetupError> {
    let idx = c.gpu.htod(&random_routing(t, experts, k, 69))?;
    Ok(Box::new(move |c: &Ctx| {
        DeviceRouting::from_device(&c.gpu, &idx, k, experts).map(|_| ())
    }))
}

/// The noisy top-k gate forward (noise on) or backward.
fn moe_gate_op(
    c: &Ctx,
    t: usize,
    d_in: usize,
    experts: usize,
    k: usize,
    bwd: bool,
) -> Result<Op, SetupError> {
    let d = GateDims {
        t,
        experts,
        k,
        d_in,
    };
    let x = random_f32(&c.gpu, t * d_in, 66)?;
    let w = random_f32(&c.gpu, 2 * experts * d_in, 67)?;
    let mut logits = c.gpu.alloc_zeros::<f32>(t * experts)?;
    let mut nscale = c.gpu.alloc_zeros::<f32>(t * experts)?;
    let mut idx = c.gpu.alloc_zeros::<i64>(t * k)?;
    let mut gates = c.gpu.alloc_zeros::<f32>(t * k)?;
    let key = Some(0x5eed);
    let outs = GateOutputs {
        logits: &mut logits,
        nscale: &mut nscale,
        idx: &mut idx,
        gates: &mut gates,
    };
    moe::gate_forward_f32(&c.gpu, &x, &w, key, &d, outs)?;
    if !bwd {
        return Ok(Box::new(move |c: &Ctx| {
            let outs = GateOutputs {
                logits: &mut logits,
                nscale: &mut nscale,
                idx: &mut idx,
                gates: &mut gates,
            };
            moe::gate_forward_f32(&c.gpu, &x, &w, key, &d, outs)
        }));
    }
    let dgates = random_f32(&c.gpu, t * k, 68)?;
    let mut dx = c.gpu.alloc_zeros::<f32>(t * d_in)?;
    let mut dw = c.gpu.alloc_zeros::<f32>(2 * experts * d_in)?;
    Ok(Box::new(move |c: &Ctx| {
        moe::gate_backward_f32(
            &c.gpu, &x, &w, &idx, &gates, &nscale, &dgates, None, &d, &mut dx, &mut dw,
        )
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
) -> Result<(super::record::Summary, usize, usize), SetupError> {
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
    // Fewer samples where a benchmark would overrun `--max-bench-ms` (see `sample_plan`).
    let (warmup, warmup_ms, reps) = o.sample_plan(once_us * inner as f64);
    // Warm-up: at least `warmup` samples and `warmup_ms` of GPU time (clocks ramp up under load).
    let (mut n, mut warm_us) = (0usize, 0.0f64);
    while (n < warmup || warm_us < warmup_ms * 1e3) && n < 100_000 {
        warm_us += sample()? * inner as f64;
        n += 1;
    }
    let samples = (0..reps)
        .map(|_| sample())
        .collect::<Result<Vec<f64>, _>>()?;
    let s = summarize(&samples).ok_or_else(|| GpuError::Invalid {
        op: "gpu-bench",
        msg: format!("{}: no valid samples", b.spec.id()),
    })?;
    Ok((s, inner, reps))
}

/// Opens device 0, checks the yardsticks, runs the ceilings and every benchmark whose id contains
/// the filter (and the dense references those need), and hands each finished record to `emit` (ceilings first, in registry order).
/// Errors only when no GPU is usable; a failing benchmark becomes a record with `error`.
pub fn run(o: &RunOptions, mut emit: impl FnMut(&Record)) -> Result<Outcome, String> {
    let started = std::time::Instant::now();
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
        // Wall time since the start, so a log shows where a run spends its (scarce) GPU time.
        eprintln!(
            "gpu-bench: [{:6.1} s] {}",
            started.elapsed().as_secs_f64(),
            s.id()
        );
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
            Ok((sum, inner, reps)) => {
                r.reps = reps as u64;
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
    let is_ceiling = |b: &&Bench| matches!(b.spec.role, Role::CopyCeiling | Role::CublasCeiling);
    for b in benches.iter().filter(is_ceiling) {
        records.push(run_one(b, &mut failures));
    }
    // `records` holds exactly the ceilings here, in registry order.
    let ceilings = benches.iter().filter(is_ceiling);
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
    let matches = |b: &Bench| o.filter.as_deref().is_none_or(|f| b.spec.id().contains(f));
    // A dense reference runs when it matches the filter itself or a selected kernel needs it.
    let needed: std::collections::BTreeSet<String> = benches
        .iter()
        .filter(|b| b.spec.role == Role::Kernel && matches(b))
        .filter_map(|b| spec::baseline_of(&b.spec.id()))
        .collect();
    let selected = |b: &&Bench| match b.spec.role {
        Role::Kernel => matches(b),
        Role::Reference => matches(b) || needed.contains(&b.spec.id()),
        Role::CopyCeiling | Role::CublasCeiling => false,
    };
    for b in benches.iter().filter(selected) {
        let mut r = run_one(b, &mut failures);
        r.set_fractions(copy_gbps, cublas_tflops);
        emit(&r);
        records.push(r);
    }
    eprintln!(
        "gpu-bench: {} benchmarks in {:.1} s",
        records.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Outcome { records, failures })
}
