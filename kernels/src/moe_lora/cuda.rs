//! Launchers of `moe_lora.ptx`: the only code that knows the entries' parameter order.
//!
//! The routing is grouped on the host ([`group_by_expert`], which validates it) and uploaded once
//! as a [`DeviceRouting`]; forward and backward of one step share it. Every launcher checks the
//! buffer lengths against the shapes, so the kernels stay inside their buffers.

use super::cpu::{Dims, GateDims};
use super::{ExpertGroups, GPU_MAX_EXPERTS, GPU_MAX_RANK, group_by_expert};
use crate::launch::{CudaSlice, GpuContext, GpuError, LaunchConfig, grid_1d};
use crate::registry::{
    EntrySpec, MOE_GATE_BWD_ROWS_F32, MOE_GATE_FWD_F32, MOE_LORA_COMBINE_F32,
    MOE_LORA_COMBINE_SMALL_F32, MOE_LORA_GATE_GRAD_F32, MOE_LORA_GATHER_F32, MOE_LORA_GROUP,
    MOE_LORA_OUTER_F32, MOE_LORA_SUM_F32, ModuleId,
};

/// Threads per block of every entry (the PTX declares `.reqntid 256`).
const BLOCK: u32 = 256;
/// Tokens x outputs of one combine block (fixed in the PTX).
const COMBINE_TOKENS: usize = 32;
const COMBINE_OUTS: usize = 64;
/// Outputs of one outer-product block (fixed in the PTX).
const OUTER_OUTS: usize = 64;
/// Largest grid.y of a launch.
const MAX_GRID_Y: usize = 65_535;

/// Tokens per gather block for rank `r` and `slots` routed slots over `experts`: `tm * r <= 2048`
/// (8 outputs per thread), a multiple of 8, at most 128 (the shared x tile), halved while the
/// grid would have fewer than [`GATHER_MIN_BLOCKS`] blocks (the kernel is latency-bound with one
/// block per SM; each block reads its tile's `A_e` once, so smaller tiles cost only L2 traffic).
pub fn gather_tile_tokens(r: usize, slots: usize, experts: usize) -> usize {
    let mut tm = (2048 / r.max(1) / 8 * 8).min(128);
    while tm > 8 && slots.div_ceil(tm) + experts < GATHER_MIN_BLOCKS {
        tm = (tm / 2 / 8 * 8).max(8);
    }
    tm
}

/// Two blocks per SM of a 132-SM H100.
pub const GATHER_MIN_BLOCKS: usize = 264;

/// A routing table `idx` (`[T, k]`) grouped per expert and uploaded: `offsets` (`E + 1`), `slots`
/// (`T k`, grouped order) and `eidx` (`T k`, the expert of every slot), all `u32`.
pub struct DeviceRouting {
    pub tokens: usize,
    pub k: usize,
    pub experts: usize,
    offsets: CudaSlice<u32>,
    slots: CudaSlice<u32>,
    eidx: CudaSlice<u32>,
    /// The device grouping's error word (None when grouped and validated on the host).
    err: Option<CudaSlice<u32>>,
}

impl std::fmt::Debug for DeviceRouting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRouting")
            .field("tokens", &self.tokens)
            .field("k", &self.k)
            .field("experts", &self.experts)
            .finish()
    }
}

impl DeviceRouting {
    /// Groups `idx` (`[T, k]`, row-major, every row `k` distinct experts below `experts`) with
    /// [`group_by_expert`] and uploads it.
    ///
    /// ```no_run
    /// # use brainstacks_kernels::launch::GpuContext;
    /// # use brainstacks_kernels::moe_lora::cuda::DeviceRouting;
    /// # fn main() -> Result<(), brainstacks_kernels::launch::GpuError> {
    /// let gpu = GpuContext::new(0)?;
    /// let routing = DeviceRouting::new(&gpu, &[2, 0, 1, 2], 2, 4)?; // T = 2, top-2 of 4
    /// assert_eq!(routing.tokens, 2);
    /// # Ok(()) }
    /// ```
    pub fn new(gpu: &GpuContext, idx: &[i64], k: usize, experts: usize) -> Result<Self, GpuError> {
        let op = "moe_lora routing";
        let bad = |msg: String| GpuError::Invalid { op, msg };
        if k == 0 || k > experts || experts > GPU_MAX_EXPERTS {
            return Err(bad(format!(
                "k = {k} of {experts} experts: the GPU needs 1 <= k <= E <= {GPU_MAX_EXPERTS}"
            )));
        }
        if idx.len() > u32::MAX as usize {
            return Err(bad(format!("{} slots do not fit u32", idx.len())));
        }
        let groups = group_by_expert(idx, k, experts).map_err(bad)?;
        let offsets: Vec<u32> = groups.offsets.iter().map(|&v| v as u32).collect();
        let slots: Vec<u32> = groups.slots.iter().map(|&v| v as u32).collect();
        let eidx: Vec<u32> = idx.iter().map(|&e| e as u32).collect();
        Ok(Self {
            tokens: idx.len() / k,
            k,
            experts,
            offsets: gpu.htod(&offsets)?,
            slots: gpu.htod(&slots)?,
            eidx: gpu.htod(&eidx)?,
            err: None,
        })
    }

    /// Groups a routing table that lives on the device (`[T, k]` i64, e.g. the gate's `idx`) with
    /// `moe_lora_group`, the same stable counting sort as [`group_by_expert`], without a trip to
    /// the host. The content of `idx` is checked on the device: an entry outside `0..E` or
    /// repeated within its token is counted under expert 0 (every kernel stays in bounds; the
    /// results are then meaningless) and recorded; [`DeviceRouting::validate`] reads the record.
    ///
    /// ```no_run
    /// # use brainstacks_kernels::launch::GpuContext;
    /// # use brainstacks_kernels::moe_lora::cuda::DeviceRouting;
    /// # fn main() -> Result<(), brainstacks_kernels::launch::GpuError> {
    /// let gpu = GpuContext::new(0)?;
    /// let idx = gpu.htod(&[2i64, 0, 1, 2])?; // T = 2, top-2 of 4, already on the device
    /// let routing = DeviceRouting::from_device(&gpu, &idx, 2, 4)?;
    /// routing.validate(&gpu)?; // one synchronising read; skip it for idx from the gate kernel
    /// # Ok(()) }
    /// ```
    pub fn from_device(
        gpu: &GpuContext,
        idx: &CudaSlice<i64>,
        k: usize,
        experts: usize,
    ) -> Result<Self, GpuError> {
        let op = "moe_lora_group";
        let bad = |msg: String| GpuError::Invalid { op, msg };
        if k == 0 || k > experts || experts > GPU_MAX_EXPERTS {
            return Err(bad(format!(
                "k = {k} of {experts} experts: the GPU needs 1 <= k <= E <= {GPU_MAX_EXPERTS}"
            )));
        }
        let n = idx.len();
        if !n.is_multiple_of(k) {
            return Err(bad(format!(
                "routing table of {n} entries is not [T, k] with k = {k}"
            )));
        }
        if n > i32::MAX as usize {
            return Err(bad(format!("{n} slots do not fit the grouping kernel")));
        }
        let mut offsets = gpu.alloc_zeros::<u32>(experts + 1)?;
        let mut slots = gpu.alloc_zeros::<u32>(n)?;
        let mut eidx = gpu.alloc_zeros::<u32>(n)?;
        let mut err = gpu.alloc_zeros::<u32>(1)?;
        let e: &EntrySpec = &MOE_LORA_GROUP;
        let f = gpu.function(ModuleId::MoeLora, e)?;
        let (n32, k32, e32) = (u32_of(n), u32_of(k), u32_of(experts));
        let mut l = gpu.launch(&f, e);
        // moe_lora_group(idx, offsets, slots, eidx, err, n, k, experts)
        l.arg(idx)
            .arg(&mut offsets)
            .arg(&mut slots)
            .arg(&mut eidx)
            .arg(&mut err)
            .arg(&n32)
            .arg(&k32)
            .arg(&e32);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (128, 1, 1), // the PTX requires exactly 128 (.reqntid)
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match the .param list; idx holds n i64, slots and eidx n u32,
        // offsets E + 1, err 1; the kernel clamps every expert it uses to 0..E.
        unsafe { l.launch(cfg) }?;
        Ok(Self {
            tokens: n / k,
            k,
            experts,
            offsets,
            slots,
            eidx,
            err: Some(err),
        })
    }

    /// Whether the device grouping found the routing valid (synchronises; always Ok for a routing
    /// grouped on the host, which refuses bad tables up front).
    pub fn validate(&self, gpu: &GpuContext) -> Result<(), GpuError> {
        match &self.err {
            Some(err) if gpu.dtoh(err)?[0] != 0 => Err(GpuError::Invalid {
                op: "moe_lora_group",
                msg: "the routing table has an expert outside 0..E or one chosen twice for a token"
                    .into(),
            }),
            _ => Ok(()),
        }
    }

    /// The grouping as the host oracle writes it (downloads; for tests and inspection).
    pub fn groups(&self, gpu: &GpuContext) -> Result<ExpertGroups, GpuError> {
        Ok(ExpertGroups {
            offsets: gpu
                .dtoh(&self.offsets)?
                .into_iter()
                .map(|v| v as usize)
                .collect(),
            slots: gpu
                .dtoh(&self.slots)?
                .into_iter()
                .map(|v| v as usize)
                .collect(),
        })
    }
}

/// Shape checks shared by forward and backward: limits, routing agreement, u32 indexing.
fn check_dims(op: &'static str, routing: &DeviceRouting, d: &Dims) -> Result<(), GpuError> {
    let bad = |msg: String| GpuError::Invalid { op, msg };
    if (d.t, d.k, d.experts) != (routing.tokens, routing.k, routing.experts) {
        return Err(bad(format!(
            "dims say T = {}, k = {}, E = {}; the routing has T = {}, k = {}, E = {}",
            d.t, d.k, d.experts, routing.tokens, routing.k, routing.experts
        )));
    }
    if d.r == 0 || d.r > GPU_MAX_RANK {
        return Err(bad(format!("rank {} outside 1..={GPU_MAX_RANK}", d.r)));
    }
    let wide = |a: usize, b: usize, c: usize| {
        a.checked_mul(b)
            .and_then(|v| v.checked_mul(c))
            .is_none_or(|v| v > u32::MAX as usize)
    };
    // i32 bounds leave room for the kernels' `+ 32` / grid-stride steps in u32
    if d.d_in > i32::MAX as usize
        || d.d_out > i32::MAX as usize
        || d.t.saturating_mul(d.k) > i32::MAX as usize
        || wide(d.t, d.d_in, 1)
        || wide(d.t, d.d_out, 1)
        || wide(d.t, d.k, d.r)
        || wide(d.experts, d.r, d.d_in)
        || wide(d.experts, d.r, d.d_out)
    {
        return Err(bad(format!(
            "{d:?}: a buffer has 2^32 or more elements (the kernels index in u32)"
        )));
    }
    if d.t.div_ceil(COMBINE_TOKENS) > MAX_GRID_Y {
        return Err(bad(format!(
            "{} tokens exceed the combine grid ({} x {COMBINE_TOKENS})",
            d.t, MAX_GRID_Y
        )));
    }
    Ok(())
}

fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<(), GpuError> {
    if got != want {
        return Err(GpuError::Invalid {
            op,
            msg: format!("{what} holds {got} elements, not {want}"),
        });
    }
    Ok(())
}

fn grid(x: usize, y: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (x as u32, y as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn u32_of(v: usize) -> u32 {
    v as u32 // every caller passed check_dims, which bounds each size by u32::MAX
}

/// `out[n, i] = sum_p W_e(i, p) x[n / k, p]` for every slot `n` (`x` is `[T, n_red]`).
#[allow(clippy::too_many_arguments)]
fn gather(
    gpu: &GpuContext,
    routing: &DeviceRouting,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    w_trans: bool,
    n_red: usize,
    r: usize,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let slots = routing.tokens * routing.k;
    if slots == 0 {
        return Ok(());
    }
    let tm = gather_tile_tokens(r, slots, routing.experts);
    let blocks = slots.div_ceil(tm) + routing.experts;
    let e: &EntrySpec = &MOE_LORA_GATHER_F32;
    let f = gpu.function(ModuleId::MoeLora, e)?;
    let (experts, k, n, r, tm, wt) = (
        u32_of(routing.experts),
        u32_of(routing.k),
        u32_of(n_red),
        u32_of(r),
        u32_of(tm),
        u32::from(w_trans),
    );
    let mut l = gpu.launch(&f, e);
    // moe_lora_gather_f32(x, w, offsets, slots, out, experts, k, n, r, tm, w_trans)
    l.arg(x)
        .arg(w)
        .arg(&routing.offsets)
        .arg(&routing.slots)
        .arg(&mut *out)
        .arg(&experts)
        .arg(&k)
        .arg(&n)
        .arg(&r)
        .arg(&tm)
        .arg(&wt);
    // SAFETY: arguments match the .param list; the callers checked x ([T, n_red]), w (E r n_red)
    // and out ([T k, r]) against the routing's shape, and the routing's offsets/slots come from
    // group_by_expert (a permutation of 0..T k split at nondecreasing offsets).
    unsafe { l.launch(grid(blocks, 1)) }
}

/// Whether the combine runs `moe_lora_combine_small_f32` (`E r <= 128` and `k r <= 64`: its shared
/// tiles of every expert's W and of the tile's mids) instead of the per-expert loop.
pub fn combine_small(experts: usize, k: usize, r: usize) -> bool {
    experts * r <= 128 && k * r <= 64
}

/// `out[t, o] = sum_e sum_{j: e} W_e(o, i) (c mid[t k + j, i])` (see the PTX for W and c).
#[allow(clippy::too_many_arguments)]
fn combine(
    gpu: &GpuContext,
    routing: &DeviceRouting,
    mid: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    scale: Option<f32>,
    w: &CudaSlice<f32>,
    w_trans: bool,
    r: usize,
    n_out: usize,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    if routing.tokens == 0 || n_out == 0 {
        return Ok(());
    }
    // Every expert's W tile fits shared memory at once: no loop over experts, 4 outputs per
    // shared load (same parameters, another fixed summation order).
    let e: &EntrySpec = if combine_small(routing.experts, routing.k, r) {
        &MOE_LORA_COMBINE_SMALL_F32
    } else {
        &MOE_LORA_COMBINE_F32
    };
    let f = gpu.function(ModuleId::MoeLora, e)?;
    let cfg = grid(
        n_out.div_ceil(COMBINE_OUTS),
        routing.tokens.div_ceil(COMBINE_TOKENS),
    );
    let (use_gate, s) = (u32::from(scale.is_some()), scale.unwrap_or(1.0));
    let (wt, tokens, k, experts, r, n_out) = (
        u32::from(w_trans),
        u32_of(routing.tokens),
        u32_of(routing.k),
        u32_of(routing.experts),
        u32_of(r),
        u32_of(n_out),
    );
    let mut l = gpu.launch(&f, e);
    // moe_lora_combine_f32(mid, eidx, g, scale, use_gate, w, w_trans, tokens, k, experts, r, n_out,
    // out)
    l.arg(mid)
        .arg(&routing.eidx)
        .arg(g)
        .arg(&s)
        .arg(&use_gate)
        .arg(w)
        .arg(&wt)
        .arg(&tokens)
        .arg(&k)
        .arg(&experts)
        .arg(&r)
        .arg(&n_out)
        .arg(&mut *out);
    // SAFETY: arguments match the .param list; the callers checked mid ([T k, r]), g ([T k]), w
    // (E r n_out) and out ([T, n_out]); eidx holds validated experts below E.
    unsafe { l.launch(cfg) }
}

/// Token splits of the outer product for `n_out` outputs over `experts` and `slots` routed slots:
/// enough blocks for [`GATHER_MIN_BLOCKS`], at most 16, and at most one split per 64 tokens of an
/// average expert. Depends on the shape only, so the summation order (and the bits) of dA and dB
/// are the same on every run.
pub fn outer_splits(n_out: usize, experts: usize, slots: usize) -> usize {
    let blocks = n_out.div_ceil(OUTER_OUTS) * experts.max(1);
    GATHER_MIN_BLOCKS
        .div_ceil(blocks.max(1))
        .min(16)
        .min((slots / experts.max(1) / 64).max(1))
}

/// `D_e(o, i) = sum_{n in e} y[n / k, o] (c_n z[n, i])`, stored as `[E, n_out, r]` or, with
/// `out_trans`, `[E, r, n_out]`; over [`outer_splits`] token ranges summed in a fixed order.
#[allow(clippy::too_many_arguments)]
fn outer(
    gpu: &GpuContext,
    routing: &DeviceRouting,
    y: &CudaSlice<f32>,
    z: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    scale: Option<f32>,
    n_out: usize,
    r: usize,
    out_trans: bool,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    if n_out == 0 {
        return Ok(());
    }
    let splits = outer_splits(n_out, routing.experts, routing.tokens * routing.k);
    let plane = routing.experts * n_out * r;
    let mut partial = if splits > 1 {
        Some(gpu.alloc_zeros::<f32>(splits * plane)?)
    } else {
        None
    };
    let e: &EntrySpec = &MOE_LORA_OUTER_F32;
    let f = gpu.function(ModuleId::MoeLora, e)?;
    let cfg = grid(n_out.div_ceil(OUTER_OUTS), routing.experts * splits);
    let (use_gate, s) = (u32::from(scale.is_some()), scale.unwrap_or(1.0));
    let (k, n_out32, r32, ot, experts, splits32) = (
        u32_of(routing.k),
        u32_of(n_out),
        u32_of(r),
        u32::from(out_trans),
        u32_of(routing.experts),
        u32_of(splits),
    );
    {
        let dst: &mut CudaSlice<f32> = match partial.as_mut() {
            Some(p) => p,
            None => &mut *out,
        };
        let mut l = gpu.launch(&f, e);
        // moe_lora_outer_f32(y, z, g, scale, use_gate, offsets, slots, k, n_out, r, out_trans,
        // experts, splits, out)
        l.arg(y)
            .arg(z)
            .arg(g)
            .arg(&s)
            .arg(&use_gate)
            .arg(&routing.offsets)
            .arg(&routing.slots)
            .arg(&k)
            .arg(&n_out32)
            .arg(&r32)
            .arg(&ot)
            .arg(&experts)
            .arg(&splits32)
            .arg(dst);
        // SAFETY: arguments match the .param list; the callers checked y ([T, n_out]), z
        // ([T k, r]) and g ([T k]); dst holds splits planes of E n_out r (out itself when
        // splits = 1, checked by the callers); an expert without tokens gets zeros.
        unsafe { l.launch(cfg) }?;
    }
    if let Some(p) = partial {
        let e: &EntrySpec = &MOE_LORA_SUM_F32;
        let f = gpu.function(ModuleId::MoeLora, e)?;
        // plane = E n_out r fits u32 (check_dims / check_gate bound every buffer)
        let (n, sp) = (u32_of(plane), splits32);
        let mut l = gpu.launch(&f, e);
        // moe_lora_sum_f32(partial, out, n, splits)
        l.arg(&p).arg(&mut *out).arg(&n).arg(&sp);
        // SAFETY: arguments match the .param list; p holds splits x plane elements, out plane.
        unsafe { l.launch(grid_1d(plane as u64)) }?;
    }
    Ok(())
}

/// Forward dispatch (mirrors [`super::cpu::forward`] in f32): `mid` (`[T k, r]`, slot order,
/// kept for the backward) gets `A_e x_t` and `out` (`[T, d_out]`) gets
/// `sum_j g[t, j] scale B_e mid[t k + j]`, experts added in increasing order.
///
/// Shapes: `x` `[T, d_in]`, `g` `[T, k]`, `a` `[E, r, d_in]`, `b` `[E, d_out, r]`; `d` must agree
/// with `routing`. No work (T = 0) launches nothing.
#[allow(clippy::too_many_arguments)]
pub fn dispatch_forward_f32(
    gpu: &GpuContext,
    routing: &DeviceRouting,
    x: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    scale: f32,
    d: &Dims,
    mid: &mut CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let op = "moe_lora_dispatch_forward_f32";
    check_dims(op, routing, d)?;
    check_len(op, "x", x.len(), d.t * d.d_in)?;
    check_len(op, "g", g.len(), d.t * d.k)?;
    check_len(op, "a", a.len(), d.experts * d.r * d.d_in)?;
    check_len(op, "b", b.len(), d.experts * d.d_out * d.r)?;
    check_len(op, "mid", mid.len(), d.t * d.k * d.r)?;
    check_len(op, "out", out.len(), d.t * d.d_out)?;
    gather(gpu, routing, x, a, false, d.d_in, d.r, mid)?;
    combine(
        gpu,
        routing,
        mid,
        g,
        Some(scale),
        b,
        false,
        d.r,
        d.d_out,
        out,
    )
}

/// Gradients of [`dispatch_forward_f32`] (mirrors [`super::cpu::backward`] in f32), given the
/// forward's `mid` and the output gradient `dy` (`[T, d_out]`): `dx` `[T, d_in]`, `dg` `[T, k]`,
/// `da` `[E, r, d_in]`, `db` `[E, d_out, r]` (experts without tokens get zeros). Deterministic:
/// every sum has one fixed order (see the PTX). Allocates two `[T k, r]` work buffers.
#[allow(clippy::too_many_arguments)]
pub fn dispatch_backward_f32(
    gpu: &GpuContext,
    routing: &DeviceRouting,
    x: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    scale: f32,
    d: &Dims,
    mid: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    grads: DispatchGrads<'_>,
) -> Result<(), GpuError> {
    let op = "moe_lora_dispatch_backward_f32";
    check_dims(op, routing, d)?;
    check_len(op, "x", x.len(), d.t * d.d_in)?;
    check_len(op, "g", g.len(), d.t * d.k)?;
    check_len(op, "a", a.len(), d.experts * d.r * d.d_in)?;
    check_len(op, "b", b.len(), d.experts * d.d_out * d.r)?;
    check_len(op, "mid", mid.len(), d.t * d.k * d.r)?;
    check_len(op, "dy", dy.len(), d.t * d.d_out)?;
    let DispatchGrads { dx, dg, da, db } = grads;
    check_len(op, "dx", dx.len(), d.t * d.d_in)?;
    check_len(op, "dg", dg.len(), d.t * d.k)?;
    check_len(op, "da", da.len(), d.experts * d.r * d.d_in)?;
    check_len(op, "db", db.len(), d.experts * d.d_out * d.r)?;
    let slots = d.t * d.k;
    if slots > 0 {
        let mut u = gpu.alloc_zeros::<f32>(slots * d.r)?;
        let mut dmid = gpu.alloc_zeros::<f32>(slots * d.r)?;
        // u = B_e^T dy_t, then dg = s u . mid and dmid = g s u
        gather(gpu, routing, dy, b, true, d.d_out, d.r, &mut u)?;
        gate_grad(gpu, &u, mid, g, scale, slots, d.r, dg, &mut dmid)?;
        combine(gpu, routing, &dmid, g, None, a, true, d.r, d.d_in, dx)?;
        outer(gpu, routing, x, &dmid, g, None, d.d_in, d.r, true, da)?;
    } else {
        // no tokens: dA = 0 (the outer kernel writes zeros for an expert without tokens)
        let empty = gpu.alloc_zeros::<f32>(0)?;
        outer(gpu, routing, x, &empty, g, None, d.d_in, d.r, true, da)?;
    }
    outer(
        gpu,
        routing,
        dy,
        mid,
        g,
        Some(scale),
        d.d_out,
        d.r,
        false,
        db,
    )
}

/// The outputs of [`dispatch_backward_f32`].
pub struct DispatchGrads<'a> {
    pub dx: &'a mut CudaSlice<f32>,
    pub dg: &'a mut CudaSlice<f32>,
    pub da: &'a mut CudaSlice<f32>,
    pub db: &'a mut CudaSlice<f32>,
}

#[allow(clippy::too_many_arguments)]
fn gate_grad(
    gpu: &GpuContext,
    u: &CudaSlice<f32>,
    mid: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    scale: f32,
    slots: usize,
    r: usize,
    dg: &mut CudaSlice<f32>,
    dmid: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let e: &EntrySpec = &MOE_LORA_GATE_GRAD_F32;
    let f = gpu.function(ModuleId::MoeLora, e)?;
    let (n, r32) = (u32_of(slots), u32_of(r));
    let mut l = gpu.launch(&f, e);
    // moe_lora_gate_grad_f32(u, mid, g, scale, slots, r, dg, dmid)
    l.arg(u)
        .arg(mid)
        .arg(g)
        .arg(&scale)
        .arg(&n)
        .arg(&r32)
        .arg(&mut *dg)
        .arg(&mut *dmid);
    // SAFETY: arguments match the .param list; u, mid, dmid hold slots r and g, dg hold slots
    // elements (checked by dispatch_backward_f32 / allocated there).
    unsafe { l.launch(grid_1d(slots as u64)) }
}

// ------------------------------------------------------------------------------------------------
// The noisy top-k gate (`moe_gate.ptx`)
// ------------------------------------------------------------------------------------------------

/// Tokens per gate-forward block for `experts`: `tm * 2E <= 2048`, a multiple of 8, at most 128.
pub fn gate_tile_tokens(experts: usize) -> usize {
    (2048 / (2 * experts.max(1)) / 8 * 8).min(128)
}

/// The outputs of [`gate_forward_f32`].
pub struct GateOutputs<'a> {
    /// `[T, E]`: the (noisy) logits.
    pub logits: &'a mut CudaSlice<f32>,
    /// `[T, E]`: `eps * sigmoid(W_n x)` (zeros without noise), kept for the backward.
    pub nscale: &'a mut CudaSlice<f32>,
    /// `[T, k]`: the kept experts, in `topk` order.
    pub idx: &'a mut CudaSlice<i64>,
    /// `[T, k]`: softmax over the kept logits.
    pub gates: &'a mut CudaSlice<f32>,
}

fn check_gate(op: &'static str, d: &GateDims) -> Result<(), GpuError> {
    let bad = |msg: String| GpuError::Invalid { op, msg };
    if d.k == 0 || d.k > d.experts || d.experts > GPU_MAX_EXPERTS {
        return Err(bad(format!(
            "k = {} of {} experts: the GPU needs 1 <= k <= E <= {GPU_MAX_EXPERTS}",
            d.k, d.experts
        )));
    }
    let too_big = |a: usize, b: usize| a.checked_mul(b).is_none_or(|v| v > u32::MAX as usize);
    if d.d_in > i32::MAX as usize
        || d.t > i32::MAX as usize
        || too_big(d.t, d.d_in)
        || too_big(2 * d.experts, d.d_in)
        || too_big(d.t, 2 * d.experts)
    {
        return Err(bad(format!(
            "{d:?}: a buffer has 2^32 or more elements (the kernels index in u32)"
        )));
    }
    if d.t.div_ceil(COMBINE_TOKENS) > MAX_GRID_Y {
        return Err(bad(format!(
            "{} tokens exceed the backward's combine grid",
            d.t
        )));
    }
    Ok(())
}

/// The noisy top-k gate forward (mirrors [`super::cpu::gate_forward`] in f32): `x` `[T, d_in]`,
/// `w` `[2E, d_in]` (`W_r` rows, then `W_n` rows). With `noise_key = Some(noise_seed(seed, step,
/// layer))` the logits get `softplus(W_n x) eps`, `eps` the Philox normals of that key at offset 0
/// (drawn here by `philox_normal_f32` into a `[T, E]` scratch buffer: the same bits as
/// `GateNoise::sample`); `None` is the deterministic (evaluation) gate.
///
/// ```no_run
/// # use brainstacks_kernels::launch::GpuContext;
/// # use brainstacks_kernels::moe_lora::{noise_seed, cpu::GateDims, cuda::*};
/// # fn main() -> Result<(), brainstacks_kernels::launch::GpuError> {
/// let gpu = GpuContext::new(0)?;
/// let d = GateDims { t: 3, experts: 4, k: 2, d_in: 8 };
/// let x = gpu.alloc_zeros::<f32>(3 * 8)?;
/// let w = gpu.alloc_zeros::<f32>(2 * 4 * 8)?;
/// let (mut logits, mut nscale) = (gpu.alloc_zeros(12)?, gpu.alloc_zeros(12)?);
/// let (mut idx, mut gates) = (gpu.alloc_zeros::<i64>(6)?, gpu.alloc_zeros(6)?);
/// let out = GateOutputs { logits: &mut logits, nscale: &mut nscale, idx: &mut idx, gates: &mut gates };
/// gate_forward_f32(&gpu, &x, &w, Some(noise_seed(1, 0, 3)), &d, out)?;
/// # Ok(()) }
/// ```
pub fn gate_forward_f32(
    gpu: &GpuContext,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    noise_key: Option<u64>,
    d: &GateDims,
    out: GateOutputs<'_>,
) -> Result<(), GpuError> {
    let op = "moe_gate_forward_f32";
    check_gate(op, d)?;
    check_len(op, "x", x.len(), d.t * d.d_in)?;
    check_len(op, "w", w.len(), 2 * d.experts * d.d_in)?;
    let GateOutputs {
        logits,
        nscale,
        idx,
        gates,
    } = out;
    check_len(op, "logits", logits.len(), d.t * d.experts)?;
    check_len(op, "nscale", nscale.len(), d.t * d.experts)?;
    check_len(op, "idx", idx.len(), d.t * d.k)?;
    check_len(op, "gates", gates.len(), d.t * d.k)?;
    if d.t == 0 {
        return Ok(());
    }
    let mut eps = gpu.alloc_zeros::<f32>(if noise_key.is_some() {
        d.t * d.experts
    } else {
        1
    })?;
    if let Some(key) = noise_key {
        crate::philox::cuda::fill_normal_f32(gpu, key, 0, 0.0, 1.0, &mut eps)?;
    }
    let tm = gate_tile_tokens(d.experts);
    let e: &EntrySpec = &MOE_GATE_FWD_F32;
    let f = gpu.function(ModuleId::MoeGate, e)?;
    let (tokens, experts, k, d_in, tm32, noise) = (
        u32_of(d.t),
        u32_of(d.experts),
        u32_of(d.k),
        u32_of(d.d_in),
        u32_of(tm),
        u32::from(noise_key.is_some()),
    );
    let mut l = gpu.launch(&f, e);
    // moe_gate_fwd_f32(x, w, eps, logits, nscale, idx, gates, tokens, experts, k, d_in, tm, noise)
    l.arg(x)
        .arg(w)
        .arg(&eps)
        .arg(&mut *logits)
        .arg(&mut *nscale)
        .arg(&mut *idx)
        .arg(&mut *gates)
        .arg(&tokens)
        .arg(&experts)
        .arg(&k)
        .arg(&d_in)
        .arg(&tm32)
        .arg(&noise);
    // SAFETY: arguments match the .param list; every buffer was checked against the shape above
    // (eps holds T E normals when noise is on and is not read otherwise).
    unsafe { l.launch(grid(d.t.div_ceil(tm), 1)) }
}

/// Gradients of [`gate_forward_f32`] (mirrors [`super::cpu::gate_backward`] in f32): from the
/// forward's `idx`, `gates`, `nscale` and `dgates` (`[T, k]`), plus an optional further gradient
/// of the logits `extra` (`[T, E]`), writes `dx` (`[T, d_in]`) and `dw` (`[2E, d_in]`, like `w`).
/// Deterministic (fixed-order sums); allocates a `[T, 2E]` work buffer and uploads a fixed
/// two-"expert" routing (router, noise net) for the dispatch kernels that finish the job.
#[allow(clippy::too_many_arguments)]
pub fn gate_backward_f32(
    gpu: &GpuContext,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    fwd_idx: &CudaSlice<i64>,
    fwd_gates: &CudaSlice<f32>,
    fwd_nscale: &CudaSlice<f32>,
    dgates: &CudaSlice<f32>,
    extra: Option<&CudaSlice<f32>>,
    d: &GateDims,
    dx: &mut CudaSlice<f32>,
    dw: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let op = "moe_gate_backward_f32";
    check_gate(op, d)?;
    check_len(op, "x", x.len(), d.t * d.d_in)?;
    check_len(op, "w", w.len(), 2 * d.experts * d.d_in)?;
    check_len(op, "idx", fwd_idx.len(), d.t * d.k)?;
    check_len(op, "gates", fwd_gates.len(), d.t * d.k)?;
    check_len(op, "nscale", fwd_nscale.len(), d.t * d.experts)?;
    check_len(op, "dgates", dgates.len(), d.t * d.k)?;
    if let Some(extra) = extra {
        check_len(op, "extra", extra.len(), d.t * d.experts)?;
    }
    check_len(op, "dx", dx.len(), d.t * d.d_in)?;
    check_len(op, "dw", dw.len(), 2 * d.experts * d.d_in)?;
    // Router and noise net as experts 0 and 1 of rank E; every token uses both (slot 2t, 2t + 1).
    let pairs: Vec<i64> = (0..d.t).flat_map(|_| [0i64, 1]).collect();
    let routing = DeviceRouting::new(gpu, &pairs, 2, 2)?;
    let mut dz = gpu.alloc_zeros::<f32>((d.t * 2 * d.experts).max(1))?;
    if d.t > 0 {
        let e: &EntrySpec = &MOE_GATE_BWD_ROWS_F32;
        let f = gpu.function(ModuleId::MoeGate, e)?;
        let (tokens, experts, k, has_extra) = (
            u32_of(d.t),
            u32_of(d.experts),
            u32_of(d.k),
            u32::from(extra.is_some()),
        );
        let extra = extra.unwrap_or(fwd_nscale); // not read when has_extra = 0
        let mut l = gpu.launch(&f, e);
        // moe_gate_bwd_rows_f32(idx, gates, dgates, nscale, extra, dz, tokens, experts, k,
        // has_extra)
        l.arg(fwd_idx)
            .arg(fwd_gates)
            .arg(dgates)
            .arg(fwd_nscale)
            .arg(extra)
            .arg(&mut dz)
            .arg(&tokens)
            .arg(&experts)
            .arg(&k)
            .arg(&has_extra);
        // SAFETY: arguments match the .param list; idx (T k, experts below E as the forward wrote
        // them), gates, dgates, nscale, extra and dz (T 2E) were checked or allocated above.
        unsafe { l.launch(grid_1d(d.t as u64)) }?;
    }
    // dz rows are [dlogit (E), dz (E)] = mid of slots 2t, 2t + 1 at rank E; w is [2, E, d_in].
    combine(
        gpu, &routing, &dz, &dz, None, w, true, d.experts, d.d_in, dx,
    )?;
    outer(
        gpu, &routing, x, &dz, &dz, None, d.d_in, d.experts, true, dw,
    )
}
