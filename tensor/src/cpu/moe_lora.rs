//! Fast CPU MoE-LoRA dispatch: tokens grouped per expert (the stable counting sort of
//! `brainstacks_kernels::moe_lora`), each expert's rows gathered into one contiguous block and run
//! through the packed GEMM twice (`X_e Aᵀ_e`, then `· Bᵀ_e`), results added back per token in
//! increasing expert order. The backward recomputes the expert activations the same way and
//! forms each gradient with one GEMM per expert. Every sum has a fixed order, so results do not
//! depend on the thread count.

use brainstacks_kernels::moe_lora::ExpertGroups;

use super::gemm::{MatRef, gemm_f32, gemm_f64};
use super::parallel::filled;

/// Element types with a packed GEMM.
pub(crate) trait MoeFloat: Copy + Default + Send + Sync + std::ops::Mul<Output = Self> + std::ops::AddAssign + 'static {
    fn gemm(a: MatRef<'_, Self>, b: MatRef<'_, Self>, c: &mut [Self]);
    fn from_f64(v: f64) -> Self;
}

impl MoeFloat for f32 {
    fn gemm(a: MatRef<'_, f32>, b: MatRef<'_, f32>, c: &mut [f32]) {
        gemm_f32(a, b, c, false);
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl MoeFloat for f64 {
    fn gemm(a: MatRef<'_, f64>, b: MatRef<'_, f64>, c: &mut [f64]) {
        gemm_f64(a, b, c, false);
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// Shapes: `t` tokens of `d_in`, `k` experts each, rank `r`, `d_out` outputs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MoeDims {
    pub k: usize,
    pub d_in: usize,
    pub r: usize,
    pub d_out: usize,
}

/// Copies rows `slots[i] / k` of `src` (row length `width`) into `dst` (one row per slot).
fn gather_rows<T: Copy>(src: &[T], slots: &[usize], k: usize, width: usize, dst: &mut Vec<T>) {
    dst.clear();
    // One allocation up front: growing by doubling would copy (and fault in) the block repeatedly.
    dst.reserve(slots.len() * width);
    for &s in slots {
        let t = s / k;
        dst.extend_from_slice(&src[t * width..(t + 1) * width]);
    }
}

/// One expert's activations into reused buffers: `mid = X_e Aᵀ_e` (`n x r`) and `y = mid Bᵀ_e`
/// (`n x d_out`). Reusing them across experts and calls' phases keeps the large `y` block from being
/// allocated (and faulted in) once per expert.
fn expert_forward<T: MoeFloat>(xe: &[T], n: usize, a_e: &[T], b_e: &[T], d: &MoeDims, mid: &mut Vec<T>, y: &mut Vec<T>) {
    mid.resize(n * d.r, T::default());
    T::gemm(MatRef::row_major(xe, n, d.d_in), MatRef::row_major(a_e, d.r, d.d_in).t(), mid);
    y.resize(n * d.d_out, T::default());
    T::gemm(MatRef::row_major(mid, n, d.r), MatRef::row_major(b_e, d.d_out, d.r).t(), y);
}

/// `out` (`[T, d_out]`, zero-initialised by the caller) `+= sum_j g * scale * B_e A_e x_t`.
pub(crate) fn forward<T: MoeFloat>(
    x: &[T],
    gates: &[T],
    a: &[T],
    b: &[T],
    scale: f64,
    groups: &ExpertGroups,
    d: &MoeDims,
    out: &mut [T],
) {
    let (mut xe, mut mid, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for e in 0..groups.offsets.len() - 1 {
        let slots = &groups.slots[groups.offsets[e]..groups.offsets[e + 1]];
        if slots.is_empty() {
            continue;
        }
        gather_rows(x, slots, d.k, d.d_in, &mut xe);
        let a_e = &a[e * d.r * d.d_in..(e + 1) * d.r * d.d_in];
        let b_e = &b[e * d.d_out * d.r..(e + 1) * d.d_out * d.r];
        expert_forward(&xe, slots.len(), a_e, b_e, d, &mut mid, &mut y);
        for (i, &s) in slots.iter().enumerate() {
            let gs = gates[s] * T::from_f64(scale);
            let t = s / d.k;
            for (o, &v) in out[t * d.d_out..(t + 1) * d.d_out].iter_mut().zip(&y[i * d.d_out..(i + 1) * d.d_out]) {
                *o += gs * v;
            }
        }
    }
}

/// The expert-weight gradients `(da, db)` a backward writes (shapes of `a`, `b`), or `None` when
/// only the input and gate gradients are wanted (a frozen stack): their GEMMs are then skipped.
pub(crate) type WeightGrads<'g, T> = Option<(&'g mut [T], &'g mut [T])>;

/// Gradients of [`forward`]: `dx` (`[T, d_in]`), `dg` (`[T, k]`) and, when asked for, `da`, `db`;
/// all zero-initialised by the caller and written in full.
pub(crate) fn backward<T: MoeFloat>(
    x: &[T],
    gates: &[T],
    a: &[T],
    b: &[T],
    scale: f64,
    dy: &[T],
    groups: &ExpertGroups,
    d: &MoeDims,
    (dx, dg, mut weights): (&mut [T], &mut [T], WeightGrads<'_, T>),
) {
    let (mut xe, mut ge, mut mid, mut y, mut dmid, mut dxe) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let s = T::from_f64(scale);
    for e in 0..groups.offsets.len() - 1 {
        let slots = &groups.slots[groups.offsets[e]..groups.offsets[e + 1]];
        let n = slots.len();
        if n == 0 {
            continue;
        }
        gather_rows(x, slots, d.k, d.d_in, &mut xe);
        let a_e = &a[e * d.r * d.d_in..(e + 1) * d.r * d.d_in];
        let b_e = &b[e * d.d_out * d.r..(e + 1) * d.d_out * d.r];
        expert_forward(&xe, n, a_e, b_e, d, &mut mid, &mut y);
        // G = diag(g * s) dY_e, and dg = s * rowdot(dY_e, y).
        gather_rows(dy, slots, d.k, d.d_out, &mut ge);
        for (i, &slot) in slots.iter().enumerate() {
            let row = &mut ge[i * d.d_out..(i + 1) * d.d_out];
            let mut dot = T::default();
            for (gv, &yv) in row.iter().zip(&y[i * d.d_out..(i + 1) * d.d_out]) {
                dot += *gv * yv;
            }
            dg[slot] = s * dot;
            let gs = gates[slot] * s;
            for v in row.iter_mut() {
                *v = *v * gs;
            }
        }
        // dB_e = Gᵀ mid; dmid = G B_e; dA_e = dmidᵀ X_e; dX_e = dmid A_e.
        if let Some((_, db)) = weights.as_mut() {
            T::gemm(MatRef::row_major(&ge, n, d.d_out).t(), MatRef::row_major(&mid, n, d.r), &mut db[e * d.d_out * d.r..(e + 1) * d.d_out * d.r]);
        }
        dmid.resize(n * d.r, T::default());
        T::gemm(MatRef::row_major(&ge, n, d.d_out), MatRef::row_major(b_e, d.d_out, d.r), &mut dmid);
        if let Some((da, _)) = weights.as_mut() {
            T::gemm(MatRef::row_major(&dmid, n, d.r).t(), MatRef::row_major(&xe, n, d.d_in), &mut da[e * d.r * d.d_in..(e + 1) * d.r * d.d_in]);
        }
        dxe.resize(n * d.d_in, T::default());
        T::gemm(MatRef::row_major(&dmid, n, d.r), MatRef::row_major(a_e, d.r, d.d_in), &mut dxe);
        for (i, &slot) in slots.iter().enumerate() {
            let t = slot / d.k;
            for (o, &v) in dx[t * d.d_in..(t + 1) * d.d_in].iter_mut().zip(&dxe[i * d.d_in..(i + 1) * d.d_in]) {
                *o += v;
            }
        }
    }
}

/// Whether the dense formulation is the faster one: it computes every expert's down-projection
/// (`E / k` times the selected work there) but runs the whole dispatch as a few large GEMMs with
/// no row gathers. Worth it while at most half of the experts are wasted per token.
pub(crate) fn prefer_dense(experts: usize, k: usize) -> bool {
    experts <= 2 * k
}

/// `c[t][e] = scale * gate` for the selected experts of each token, 0 elsewhere (`[T, E]`).
fn gate_matrix<T: MoeFloat>(idx: &[i64], gates: &[T], scale: f64, t: usize, k: usize, experts: usize) -> Vec<T> {
    let mut c = filled(t * experts, T::default());
    for (slot, (&e, &g)) in idx.iter().zip(gates).enumerate() {
        c[(slot / k) * experts + e as usize] = g * T::from_f64(scale);
    }
    c
}

/// The dense forward: `MID = X Aᵀ_all` (`[T, E r]`, every expert), `GM = c ⊙ MID` (the gate and
/// scale of each token's expert broadcast over its `r` columns; zero for unselected experts),
/// `out = GM B_cat` with `B_cat[(e, i), o] = B_e[o, i]`. Two GEMMs, no gathers; adding the exact
/// zeros of unselected experts changes no bit of the result.
/// Returns `MID` (before the gates are applied), which [`backward_dense`] can take instead of
/// recomputing it.
pub(crate) fn forward_dense<T: MoeFloat>(x: &[T], idx: &[i64], gates: &[T], a: &[T], b: &[T], scale: f64, t: usize, experts: usize, d: &MoeDims, out: &mut [T]) -> Vec<T> {
    let er = experts * d.r;
    let mut gm = filled(t * er, T::default());
    T::gemm(MatRef::row_major(x, t, d.d_in), MatRef::row_major(a, er, d.d_in).t(), &mut gm);
    let mid = gm.clone();
    let c = gate_matrix(idx, gates, scale, t, d.k, experts);
    for (row, crow) in gm.chunks_exact_mut(er).zip(c.chunks_exact(experts)) {
        for (chunk, &ce) in row.chunks_exact_mut(d.r).zip(crow) {
            chunk.iter_mut().for_each(|v| *v = *v * ce);
        }
    }
    let bcat = b_cat(b, experts, d);
    T::gemm(MatRef::row_major(&gm, t, er), MatRef::row_major(&bcat, er, d.d_out), out);
    mid
}

/// `b` (`[E, d_out, r]`) rearranged as the `[E r, d_out]` matrix `B_cat[(e, i), o] = B_e[o, i]`
/// (small: `E r d_out` elements), so the up-projection of every expert is one GEMM.
fn b_cat<T: MoeFloat>(b: &[T], experts: usize, d: &MoeDims) -> Vec<T> {
    let (o, r) = (d.d_out, d.r);
    let mut m = filled(experts * r * o, T::default());
    for e in 0..experts {
        for oi in 0..o {
            for i in 0..r {
                m[(e * r + i) * o + oi] = b[(e * o + oi) * r + i];
            }
        }
    }
    m
}

/// Gradients of [`forward_dense`], as five GEMMs over all tokens:
/// `dGM = dY B_catᵀ`, `dg = s * sum_i dGM ⊙ MID` (selected entries), `dMID = c ⊙ dGM`,
/// `dB_e[o, i] = sum_t dY[t, o] GM[t, (e, i)]`, `dA_all = dMIDᵀ X`, `dX = dMID A_all`
/// (three when `weights` is `None`: no `dB`, `dA`).
/// `saved_mid` is the forward's `MID` (the same bits this would recompute), when kept.
pub(crate) fn backward_dense<T: MoeFloat>(
    saved_mid: Option<&[T]>,
    x: &[T],
    idx: &[i64],
    gates: &[T],
    a: &[T],
    b: &[T],
    scale: f64,
    dy: &[T],
    t: usize,
    experts: usize,
    d: &MoeDims,
    (dx, dg, weights): (&mut [T], &mut [T], WeightGrads<'_, T>),
) {
    let er = experts * d.r;
    let recomputed;
    let mid: &[T] = match saved_mid {
        Some(m) if m.len() == t * er => m,
        _ => {
            let mut mid = filled(t * er, T::default());
            T::gemm(MatRef::row_major(x, t, d.d_in), MatRef::row_major(a, er, d.d_in).t(), &mut mid);
            recomputed = mid;
            &recomputed
        }
    };
    let c = gate_matrix(idx, gates, scale, t, d.k, experts);
    let bcat = b_cat(b, experts, d);
    let mut dgm = filled(t * er, T::default());
    T::gemm(MatRef::row_major(dy, t, d.d_out), MatRef::row_major(&bcat, er, d.d_out).t(), &mut dgm);
    // dg from the raw activations; then dgm becomes dMID (for dA, dX) and a copy of mid GM (for dB).
    let s = T::from_f64(scale);
    for tt in 0..t {
        for j in 0..d.k {
            let e = idx[tt * d.k + j] as usize;
            let cols = tt * er + e * d.r..tt * er + (e + 1) * d.r;
            let mut dot = T::default();
            for (u, v) in dgm[cols.clone()].iter().zip(&mid[cols]) {
                dot += *u * *v;
            }
            dg[tt * d.k + j] = s * dot;
        }
    }
    scale_expert_blocks(&mut dgm, &c, er, d.r);
    if let Some((da, db)) = weights {
        let mut gm = mid.to_vec();
        scale_expert_blocks(&mut gm, &c, er, d.r);
        // dB_cat^T = dYᵀ GM: [d_out, E r]; rearranged into db [E, d_out, r].
        let mut dbt = filled(d.d_out * er, T::default());
        T::gemm(MatRef::row_major(dy, t, d.d_out).t(), MatRef::row_major(&gm, t, er), &mut dbt);
        for e in 0..experts {
            for o in 0..d.d_out {
                for i in 0..d.r {
                    db[(e * d.d_out + o) * d.r + i] = dbt[o * er + e * d.r + i];
                }
            }
        }
        T::gemm(MatRef::row_major(&dgm, t, er).t(), MatRef::row_major(x, t, d.d_in), da);
    }
    T::gemm(MatRef::row_major(&dgm, t, er), MatRef::row_major(a, er, d.d_in), dx);
}

/// Multiplies each token's block of `r` columns for expert `e` (rows of `m`, `[T, E r]`) by
/// `c[t][e]`: the gate and scale of a selected expert, 0 for the others.
fn scale_expert_blocks<T: MoeFloat>(m: &mut [T], c: &[T], er: usize, r: usize) {
    let experts = er / r;
    for (row, crow) in m.chunks_exact_mut(er).zip(c.chunks_exact(experts)) {
        for (chunk, &ce) in row.chunks_exact_mut(r).zip(crow) {
            chunk.iter_mut().for_each(|v| *v = *v * ce);
        }
    }
}
