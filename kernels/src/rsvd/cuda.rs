//! Launchers of `rsvd.ptx` and the randomized-SVD driver [`rsvd_f32`]: the only code that knows
//! the entries' parameter order. Every launcher checks the buffer lengths against the shapes, so
//! the kernels stay inside their buffers.

use super::cpu::{self, QrPath};
use super::{GPU_CHOLQR_RATIO_LIMIT, GPU_JACOBI_MAX_SWEEPS, GPU_MAX_L};
use crate::gemm::cuda::{Strides, gemm_f32};
use crate::launch::{CudaSlice, GpuContext, GpuError, LaunchConfig, grid_1d};
use crate::philox::cuda::fill_normal_f64;
use crate::registry::{
    ModuleId, RSVD_CAST_F64_F32, RSVD_CHOLESKY_F64, RSVD_GRAM_PARTIAL_F64, RSVD_JACOBI_F64,
    RSVD_SUM_F64, RSVD_TRSM_F64,
};

/// Rows per shared-memory chunk of the Gram kernel (fixed in the PTX).
const GRAM_CHUNK_ROWS: usize = 32;
/// Entries per Gram block (its thread count, fixed in the PTX).
const GRAM_TILE: usize = 256;
/// At most this many row splits of the Gram partials.
const GRAM_MAX_SPLITS: usize = 64;
/// Aim for about this many Gram blocks (a few per SM on current GPUs).
const GRAM_TARGET_BLOCKS: usize = 528;
/// Threads per block of the Cholesky (one block; thread c owns column c) and of trsm.
const CHOL_THREADS: u32 = 256;
const TRSM_THREADS: u32 = 128;
/// The Jacobi block size for an l x l matrix: `l' / 2` pairs per round (`l'` = l rounded up to
/// even), each worked on by a group of G lanes, G = 32, 16 or 8 for up to 32, 64 or 128 pairs (the
/// kernel picks G by the same rule), rounded up to whole warps: at most 1024 threads for l <= 256.
fn jacobi_threads(l: u32) -> u32 {
    let pairs = l.div_ceil(2).max(1);
    let group = match pairs {
        0..=32 => 32,
        33..=64 => 16,
        _ => 8,
    };
    (pairs * group).next_multiple_of(32)
}

fn invalid(op: &'static str, msg: String) -> GpuError {
    GpuError::Invalid { op, msg }
}

fn u31(op: &'static str, what: &str, v: usize) -> Result<u32, GpuError> {
    u32::try_from(v)
        .ok()
        .filter(|&v| v <= i32::MAX as u32)
        .ok_or_else(|| invalid(op, format!("{what} = {v} does not fit in 31 bits")))
}

fn check_l(op: &'static str, l: usize) -> Result<u32, GpuError> {
    if l == 0 || l > GPU_MAX_L {
        return Err(invalid(op, format!("l = {l} is outside 1..={GPU_MAX_L}")));
    }
    Ok(l as u32)
}

fn check_len(op: &'static str, what: &str, len: usize, need: usize) -> Result<(), GpuError> {
    if len < need {
        return Err(invalid(
            op,
            format!("{what} has {len} elements, {need} needed"),
        ));
    }
    Ok(())
}

/// `(splits, rows per split)` of the Gram partials for an m x l matrix: about 528 blocks in all,
/// at most 64 splits and at most `ceil(m / 32)`. Depends on the shape only, so the summation order
/// (and the result's bits) does too. Mirrored by scripts/ptx_interp/check_rsvd.py.
pub fn gram_splits(m: usize, l: usize) -> (usize, usize) {
    let tiles = (l * l).div_ceil(GRAM_TILE).max(1);
    let want = GRAM_TARGET_BLOCKS
        .div_ceil(tiles)
        .min(GRAM_MAX_SPLITS)
        .min(m.div_ceil(GRAM_CHUNK_ROWS))
        .max(1);
    let rps = m.div_ceil(want).max(1);
    (m.div_ceil(rps).max(1), rps)
}

/// `G = YᵀY` (l x l, f64, row-major) of the row-major f32 `y` (m x l), `m >= 1`, `1 <= l <= 256`:
/// per-split partial Grams, then their sum in increasing split order (the same bits every run).
///
/// ```no_run
/// # use brainstacks_kernels::launch::GpuContext;
/// # use brainstacks_kernels::rsvd::cuda::gram_f64;
/// let gpu = GpuContext::new(0)?;
/// let y = gpu.htod(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])?; // 3 x 2
/// let g = gpu.dtoh(&gram_f64(&gpu, &y, 3, 2)?)?;
/// assert_eq!(g, vec![35.0, 44.0, 44.0, 56.0]);
/// # Ok::<(), brainstacks_kernels::launch::GpuError>(())
/// ```
pub fn gram_f64(
    gpu: &GpuContext,
    y: &CudaSlice<f32>,
    m: usize,
    l: usize,
) -> Result<CudaSlice<f64>, GpuError> {
    const OP: &str = "rsvd_gram_f64";
    let l32 = check_l(OP, l)?;
    if m == 0 {
        return Err(invalid(OP, "m = 0 rows".into()));
    }
    let m32 = u31(OP, "m", m)?;
    check_len(OP, "y", y.len(), m * l)?;
    let (splits, rps) = gram_splits(m, l);
    let ll = l * l;
    let mut partial = gpu.alloc_zeros::<f64>(splits * ll)?;
    let mut g = gpu.alloc_zeros::<f64>(ll)?;
    let rps32 = u31(OP, "rows per split", rps)?;
    let f = gpu.function(ModuleId::Rsvd, &RSVD_GRAM_PARTIAL_F64)?;
    let cfg = LaunchConfig {
        grid_dim: (splits as u32, ll.div_ceil(GRAM_TILE) as u32, 1),
        block_dim: (GRAM_TILE as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch(&f, &RSVD_GRAM_PARTIAL_F64);
    // rsvd_gram_partial_f64(y, partial, m, l, rps)
    launch
        .arg(y)
        .arg(&mut partial)
        .arg(&m32)
        .arg(&l32)
        .arg(&rps32);
    // SAFETY: the arguments match the .param list; y holds m l floats, partial splits l l doubles
    // (split s < splits covers rows below min(m, (s + 1) rps)).
    unsafe { launch.launch(cfg) }?;
    sum_splits(gpu, &partial, ll, splits, &mut g)?;
    Ok(g)
}

/// `out[e] = sum_s partial[s n + e]`, s increasing.
fn sum_splits(
    gpu: &GpuContext,
    partial: &CudaSlice<f64>,
    n: usize,
    splits: usize,
    out: &mut CudaSlice<f64>,
) -> Result<(), GpuError> {
    const OP: &str = "rsvd_sum_f64";
    check_len(OP, "partial", partial.len(), n * splits)?;
    check_len(OP, "out", out.len(), n)?;
    let n32 = u31(OP, "n", n)?;
    let s32 = u31(OP, "splits", splits)?;
    let f = gpu.function(ModuleId::Rsvd, &RSVD_SUM_F64)?;
    let mut cfg = grid_1d(n as u64);
    cfg.grid_dim.0 = cfg.grid_dim.0.min(64);
    let mut launch = gpu.launch(&f, &RSVD_SUM_F64);
    // rsvd_sum_f64(partial, out, n, splits)
    launch.arg(partial).arg(&mut *out).arg(&n32).arg(&s32);
    // SAFETY: the arguments match the .param list; lengths checked above.
    unsafe { launch.launch(cfg) }
}

/// Upper-triangular `R` (l x l f64, strict lower part zero) with `G = RᵀR`, in one block, the
/// same operations in the same order as the CPU oracle's Cholesky. Writes `status[0]`: 0 on
/// success, `j + 1` when pivot j is not positive (R incomplete), `l + 1` when
/// `max R_ii / min R_ii > ratio_limit` (pass `f64::INFINITY` to skip that test).
pub fn cholesky_f64(
    gpu: &GpuContext,
    g: &CudaSlice<f64>,
    l: usize,
    ratio_limit: f64,
    r: &mut CudaSlice<f64>,
    status: &mut CudaSlice<u32>,
) -> Result<(), GpuError> {
    const OP: &str = "rsvd_cholesky_f64";
    let l32 = check_l(OP, l)?;
    check_len(OP, "g", g.len(), l * l)?;
    check_len(OP, "r", r.len(), l * l)?;
    check_len(OP, "status", status.len(), 1)?;
    let f = gpu.function(ModuleId::Rsvd, &RSVD_CHOLESKY_F64)?;
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (CHOL_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch(&f, &RSVD_CHOLESKY_F64);
    // rsvd_cholesky_f64(g, r, status, l, ratio_limit)
    launch
        .arg(g)
        .arg(&mut *r)
        .arg(&mut *status)
        .arg(&l32)
        .arg(&ratio_limit);
    // SAFETY: the arguments match the .param list; g and r hold l l doubles, l <= 256 threads.
    unsafe { launch.launch(cfg) }
}

/// `Q = Y R⁻¹` for row-major f32 `y` (m x l) and upper-triangular f64 `r` (l x l), one thread per
/// row, f64 forward substitution, each `q[i, j]` rounded once to f32.
pub fn trsm_f64(
    gpu: &GpuContext,
    y: &CudaSlice<f32>,
    r: &CudaSlice<f64>,
    m: usize,
    l: usize,
    q: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    const OP: &str = "rsvd_trsm_f64";
    let l32 = check_l(OP, l)?;
    let m32 = u31(OP, "m", m)?;
    check_len(OP, "y", y.len(), m * l)?;
    check_len(OP, "r", r.len(), l * l)?;
    check_len(OP, "q", q.len(), m * l)?;
    if m == 0 {
        return Ok(());
    }
    let f = gpu.function(ModuleId::Rsvd, &RSVD_TRSM_F64)?;
    let cfg = LaunchConfig {
        grid_dim: (m32.div_ceil(TRSM_THREADS), 1, 1),
        block_dim: (TRSM_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch(&f, &RSVD_TRSM_F64);
    // rsvd_trsm_f64(y, r, q, m, l)
    launch.arg(y).arg(r).arg(&mut *q).arg(&m32).arg(&l32);
    // SAFETY: the arguments match the .param list; row i < m of y and q, r l x l.
    unsafe { launch.launch(cfg) }
}

/// The SVD of a small l x l matrix `W = a2 a1` from [`jacobi_svd_f64`]: `W = U diag(s) V_Rᵀ`,
/// all l x l row-major f32 on the device, `s` descending.
pub struct SmallSvd {
    pub s: CudaSlice<f32>,
    pub u: CudaSlice<f32>,
    pub vr: CudaSlice<f32>,
    /// Sweeps run; `converged` is false when the sweep limit stopped it.
    pub sweeps: u32,
    pub converged: bool,
}

/// One-sided Jacobi SVD of `W = a2 a1` (both l x l f64 row-major; pass the identity as `a1` for a
/// plain matrix) in one block, at most `max_sweeps` sweeps (round-robin pair order). Reads the
/// sweep count back (one synchronisation).
pub fn jacobi_svd_f64(
    gpu: &GpuContext,
    a2: &CudaSlice<f64>,
    a1: &CudaSlice<f64>,
    l: usize,
    max_sweeps: u32,
) -> Result<SmallSvd, GpuError> {
    const OP: &str = "rsvd_jacobi_f64";
    let l32 = check_l(OP, l)?;
    check_len(OP, "a2", a2.len(), l * l)?;
    check_len(OP, "a1", a1.len(), l * l)?;
    if max_sweeps >= 0x8000_0000 {
        return Err(invalid(OP, format!("max_sweeps = {max_sweeps} too large")));
    }
    let mut w = gpu.alloc_zeros::<f64>(l * l)?;
    let mut v = gpu.alloc_zeros::<f64>(l * l)?;
    let mut s = gpu.alloc_zeros::<f32>(l)?;
    let mut u = gpu.alloc_zeros::<f32>(l * l)?;
    let mut vr = gpu.alloc_zeros::<f32>(l * l)?;
    let mut info = gpu.alloc_zeros::<u32>(1)?;
    let f = gpu.function(ModuleId::Rsvd, &RSVD_JACOBI_F64)?;
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (jacobi_threads(l32), 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = gpu.launch(&f, &RSVD_JACOBI_F64);
    // rsvd_jacobi_f64(a2, a1, w, v, s, u, vr, info, l, max_sweeps)
    launch
        .arg(a2)
        .arg(a1)
        .arg(&mut w)
        .arg(&mut v)
        .arg(&mut s)
        .arg(&mut u)
        .arg(&mut vr)
        .arg(&mut info)
        .arg(&l32)
        .arg(&max_sweeps);
    // SAFETY: the arguments match the .param list; every matrix is l x l, s has l entries,
    // l <= 256 (the kernel's shared sigma array); the block is whole warps, at most 1024 threads.
    unsafe { launch.launch(cfg) }?;
    let info = gpu.dtoh(&info)?[0];
    Ok(SmallSvd {
        s,
        u,
        vr,
        sweeps: info & 0x7FFF_FFFF,
        converged: info & 0x8000_0000 == 0,
    })
}

/// `dst[i] = src[i] as f32` for `i < src.len()`.
pub fn cast_f64_f32(
    gpu: &GpuContext,
    src: &CudaSlice<f64>,
    dst: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    const OP: &str = "rsvd_cast_f64_f32";
    let n = src.len();
    check_len(OP, "dst", dst.len(), n)?;
    if n == 0 {
        return Ok(());
    }
    let n64 = n as u64;
    let f = gpu.function(ModuleId::Rsvd, &RSVD_CAST_F64_F32)?;
    let mut launch = gpu.launch(&f, &RSVD_CAST_F64_F32);
    // rsvd_cast_f64_f32(src, dst, n)
    launch.arg(src).arg(&mut *dst).arg(&n64);
    // SAFETY: the arguments match the .param list; both buffers hold n elements.
    unsafe { launch.launch(grid_1d(n64)) }
}

/// A thin QR `Y = Q R` on the device: `R = r2 r1` (both l x l upper triangular f64).
pub struct DeviceQr {
    pub q: CudaSlice<f32>,
    pub r2: CudaSlice<f64>,
    pub r1: CudaSlice<f64>,
    /// `CholeskyQr2` on the GPU, or `Householder` when it fell back to the CPU's `thin_qr_f32`.
    pub path: QrPath,
}

fn identity_f64(l: usize) -> Vec<f64> {
    let mut e = vec![0.0; l * l];
    for i in 0..l {
        e[i * l + i] = 1.0;
    }
    e
}

/// CholeskyQR2 of the row-major f32 `y` (m x l, `m >= l >= 1`, `l <= 256`): two passes of Gram,
/// Cholesky and trsm on the GPU. When a Cholesky reports a bad pivot, or the first pass's
/// `max R_ii / min R_ii` exceeds [`GPU_CHOLQR_RATIO_LIMIT`], `y` goes to the host and
/// [`cpu::thin_qr_f32`] (f64 CholeskyQR2, else Householder) gives Q; R is then `QᵀY` (in f64 on
/// the host) and `r1` the identity. Reads two status words back (one synchronisation).
pub fn cholesky_qr2_f32(
    gpu: &GpuContext,
    y: &CudaSlice<f32>,
    m: usize,
    l: usize,
) -> Result<DeviceQr, GpuError> {
    const OP: &str = "rsvd_cholesky_qr2_f32";
    check_l(OP, l)?;
    if m < l {
        return Err(invalid(OP, format!("m = {m} < l = {l}")));
    }
    check_len(OP, "y", y.len(), m * l)?;
    let mut st = [gpu.alloc_zeros::<u32>(1)?, gpu.alloc_zeros::<u32>(1)?];
    let mut r1 = gpu.alloc_zeros::<f64>(l * l)?;
    let mut r2 = gpu.alloc_zeros::<f64>(l * l)?;
    let mut q1 = gpu.alloc_zeros::<f32>(m * l)?;
    let mut q2 = gpu.alloc_zeros::<f32>(m * l)?;
    let g1 = gram_f64(gpu, y, m, l)?;
    cholesky_f64(gpu, &g1, l, GPU_CHOLQR_RATIO_LIMIT, &mut r1, &mut st[0])?;
    trsm_f64(gpu, y, &r1, m, l, &mut q1)?;
    let g2 = gram_f64(gpu, &q1, m, l)?;
    cholesky_f64(gpu, &g2, l, f64::INFINITY, &mut r2, &mut st[1])?;
    trsm_f64(gpu, &q1, &r2, m, l, &mut q2)?;
    let s1 = gpu.dtoh(&st[0])?[0];
    let s2 = gpu.dtoh(&st[1])?[0];
    if s1 == 0 && s2 == 0 {
        return Ok(DeviceQr {
            q: q2,
            r2,
            r1,
            path: QrPath::CholeskyQr2,
        });
    }
    let yh = gpu.dtoh(y)?;
    let (qh, _) = cpu::thin_qr_f32(&yh[..m * l], m, l);
    let q64: Vec<f64> = qh.iter().map(|&x| f64::from(x)).collect();
    let y64: Vec<f64> = yh[..m * l].iter().map(|&x| f64::from(x)).collect();
    let r = cpu::matmul(&cpu::transpose(&q64, m, l), &y64, l, m, l);
    Ok(DeviceQr {
        q: gpu.htod(&qh)?,
        r2: gpu.htod(&r)?,
        r1: gpu.htod(&identity_f64(l))?,
        path: QrPath::Householder,
    })
}

/// The result of [`rsvd_f32`]: `u` (m x k), `v` (n x k) row-major on the device, `s` (k,
/// descending) on the host.
pub struct GpuSvd {
    pub u: CudaSlice<f32>,
    pub s: Vec<f32>,
    pub v: CudaSlice<f32>,
    pub rank: usize,
    /// How many of the 2q + 2 thin QRs fell back to the CPU.
    pub qr_fallbacks: usize,
    /// Sweeps of the small Jacobi SVD, and whether it converged within [`GPU_JACOBI_MAX_SWEEPS`].
    pub jacobi_sweeps: u32,
    pub jacobi_converged: bool,
}

/// Randomized SVD of the row-major f32 `a` (m x n) on the GPU: the top-k singular triplets with
/// oversampling `p` and `q` power iterations, mirroring [`cpu::rsvd`] (the same `l = min(k + p,
/// m, n)`, the same Ω: Philox normals `fill_normal_f64(seed, 0, ..)` rounded to f32, n x l
/// row-major; `Q = qr(AΩ)`; q times `Z = qr(AᵀQ)`, `Q = qr(AZ)`; then `Bᵀ = AᵀQ = Q_B R_B`,
/// Jacobi `R_B = U_R S V_Rᵀ`, `U = Q V_R`, `V = Q_B U_R`, the top k kept). The GEMMs run on the
/// f32 SIMT GEMM, the QRs on [`cholesky_qr2_f32`]. Requires `k + p <= 256` after clamping.
///
/// Performance anchor: torch.svd_lowrank takes 5.77 ms for 2048 x 8192, k = 64, q = 2 (the
/// issue's number; see the gpu-bench ids `rsvd_f32_*`).
///
/// ```no_run
/// # use brainstacks_kernels::launch::GpuContext;
/// # use brainstacks_kernels::rsvd::cuda::rsvd_f32;
/// let gpu = GpuContext::new(0)?;
/// let (m, n) = (64, 48);
/// let a: Vec<f32> = (0..m * n).map(|i| ((i * 7919) % 101) as f32 / 101.0).collect();
/// let svd = rsvd_f32(&gpu, &gpu.htod(&a)?, m, n, 8, 8, 2, 42)?;
/// assert_eq!(svd.s.len(), 8);
/// # Ok::<(), brainstacks_kernels::launch::GpuError>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn rsvd_f32(
    gpu: &GpuContext,
    a: &CudaSlice<f32>,
    m: usize,
    n: usize,
    k: usize,
    p: usize,
    q: usize,
    seed: u64,
) -> Result<GpuSvd, GpuError> {
    const OP: &str = "rsvd_f32";
    check_len(OP, "a", a.len(), m * n)?;
    let r = m.min(n);
    let k = k.min(r);
    let l = k.saturating_add(p).min(r);
    if l == 0 || k == 0 {
        return Ok(GpuSvd {
            u: gpu.alloc_zeros(0)?,
            s: Vec::new(),
            v: gpu.alloc_zeros(0)?,
            rank: 0,
            qr_fallbacks: 0,
            jacobi_sweeps: 0,
            jacobi_converged: true,
        });
    }
    check_l(OP, l)?;
    u31(OP, "m", m)?;
    u31(OP, "n", n)?;
    let a_n = Strides { rs: n, cs: 1 }; // A
    let a_t = Strides { rs: 1, cs: n }; // Aᵀ
    let thin = Strides { rs: l, cs: 1 }; // any row-major x l operand
    let mut fallbacks = 0;
    let mut qr = |y: &CudaSlice<f32>, rows: usize| -> Result<DeviceQr, GpuError> {
        let f = cholesky_qr2_f32(gpu, y, rows, l)?;
        if f.path != QrPath::CholeskyQr2 {
            fallbacks += 1;
        }
        Ok(f)
    };
    // Ω: the CPU oracle's f64 normals, rounded to f32.
    let mut omega64 = gpu.alloc_zeros::<f64>(n * l)?;
    fill_normal_f64(gpu, seed, 0, 0.0, 1.0, &mut omega64)?;
    let mut omega = gpu.alloc_zeros::<f32>(n * l)?;
    cast_f64_f32(gpu, &omega64, &mut omega)?;
    drop(omega64);
    let mut ym = gpu.alloc_zeros::<f32>(m * l)?; // m x l products
    let mut yn = gpu.alloc_zeros::<f32>(n * l)?; // n x l products
    gemm_f32(gpu, m, l, n, a, a_n, &omega, thin, &mut ym, l)?;
    let mut qm = qr(&ym, m)?.q;
    for _ in 0..q {
        gemm_f32(gpu, n, l, m, a, a_t, &qm, thin, &mut yn, l)?;
        let z = qr(&yn, n)?.q;
        gemm_f32(gpu, m, l, n, a, a_n, &z, thin, &mut ym, l)?;
        qm = qr(&ym, m)?.q;
    }
    // Bᵀ = AᵀQ (n x l) = Q_B R_B; SVD of R_B
    gemm_f32(gpu, n, l, m, a, a_t, &qm, thin, &mut yn, l)?;
    let qb = qr(&yn, n)?;
    let small = jacobi_svd_f64(gpu, &qb.r2, &qb.r1, l, GPU_JACOBI_MAX_SWEEPS)?;
    // U = Q V_R[:, :k] (m x k), V = Q_B U_R[:, :k] (n x k)
    let mut u = gpu.alloc_zeros::<f32>(m * k)?;
    let mut v = gpu.alloc_zeros::<f32>(n * k)?;
    gemm_f32(gpu, m, k, l, &qm, thin, &small.vr, thin, &mut u, k)?;
    gemm_f32(gpu, n, k, l, &qb.q, thin, &small.u, thin, &mut v, k)?;
    let s = gpu.dtoh(&small.s)?[..k].to_vec();
    Ok(GpuSvd {
        u,
        s,
        v,
        rank: k,
        qr_fallbacks: fallbacks,
        jacobi_sweeps: small.sweeps,
        jacobi_converged: small.converged,
    })
}
