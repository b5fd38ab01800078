//! Launchers of `moe_lora.ptx`: the only code that knows the entries' parameter order.
//!
//! The routing is grouped on the host ([`group_by_expert`], which validates it) and uploaded once
//! as a [`DeviceRouting`]; forward and backward of one step share it. Every launcher checks the
//! buffer lengths against the shapes, so the kernels stay inside their buffers.

use super::cpu::Dims;
use super::{GPU_MAX_EXPERTS, GPU_MAX_RANK, group_by_expert};
use crate::launch::{CudaSlice, GpuContext, GpuError, LaunchConfig, grid_1d};
use crate::registry::{
    EntrySpec, MOE_LORA_COMBINE_F32, MOE_LORA_GATE_GRAD_F32, MOE_LORA_GATHER_F32,
    MOE_LORA_OUTER_F32, ModuleId,
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

/// Tokens per gather block for rank `r`: `tm * r <= 2048` (8 outputs per thread), a multiple of 8,
/// at most 128 (the shared x tile).
pub fn gather_tile_tokens(r: usize) -> usize {
    (2048 / r.max(1) / 8 * 8).min(128)
}

/// A routing table `idx` (`[T, k]`) grouped per expert and uploaded: `offsets` (`E + 1`), `slots`
/// (`T k`, grouped order) and `eidx` (`T k`, the expert of every slot), all `u32`.
pub struct DeviceRouting {
    pub tokens: usize,
    pub k: usize,
    pub experts: usize,
    offsets: CudaSlice<u32>,
    slots: CudaSlice<u32>,
    eidx: CudaSlice<u32>,
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
    let tm = gather_tile_tokens(r);
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
    let e: &EntrySpec = &MOE_LORA_COMBINE_F32;
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

/// `D_e(o, i) = sum_{n in e} y[n / k, o] (c_n z[n, i])`, stored as `[E, n_out, r]` or, with
/// `out_trans`, `[E, r, n_out]`.
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
    let e: &EntrySpec = &MOE_LORA_OUTER_F32;
    let f = gpu.function(ModuleId::MoeLora, e)?;
    let cfg = grid(n_out.div_ceil(OUTER_OUTS), routing.experts);
    let (use_gate, s) = (u32::from(scale.is_some()), scale.unwrap_or(1.0));
    let (k, n_out, r, ot) = (
        u32_of(routing.k),
        u32_of(n_out),
        u32_of(r),
        u32::from(out_trans),
    );
    let mut l = gpu.launch(&f, e);
    // moe_lora_outer_f32(y, z, g, scale, use_gate, offsets, slots, k, n_out, r, out_trans, out)
    l.arg(y)
        .arg(z)
        .arg(g)
        .arg(&s)
        .arg(&use_gate)
        .arg(&routing.offsets)
        .arg(&routing.slots)
        .arg(&k)
        .arg(&n_out)
        .arg(&r)
        .arg(&ot)
        .arg(&mut *out);
    // SAFETY: arguments match the .param list; the callers checked y ([T, n_out]), z ([T k, r]),
    // g ([T k]) and out (E n_out r); an expert without tokens gets zeros.
    unsafe { l.launch(cfg) }
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
