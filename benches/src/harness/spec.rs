//! What each GPU benchmark is, independent of running it: its stable id, and the bytes it moves
//! and the floating-point operations it does per call, computed from its shape. Plain Rust, so the
//! arithmetic is tested on the CPU.

/// What a benchmark is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The memory-bandwidth ceiling (device-to-device copy): always measured, never filtered out.
    CopyCeiling,
    /// The matrix-throughput ceiling (cuBLAS bf16 GEMM): always measured, never filtered out.
    CublasCeiling,
    /// A cuBLAS GEMM measured as the dense baseline of one of our kernels at the same shape (see
    /// [`baseline_of`]): runs when its own id or one of those kernels is selected, and does not
    /// count as a ceiling.
    Reference,
    /// One of our kernels.
    Kernel,
}

/// One benchmark's identity and work per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Op family, e.g. `cast` (first part of the id).
    pub kernel: &'static str,
    /// Entry or variant, e.g. `f32_bf16` (second part of the id; the record's `dtype`).
    pub variant: &'static str,
    /// Shape label, e.g. `16M` or `4096x4096x4096` (third part of the id).
    pub shape: String,
    /// Bytes read plus bytes written per call.
    pub bytes: u64,
    /// Floating-point operations per call (0 for data movement and integer work).
    pub flops: u64,
    pub role: Role,
}

impl Spec {
    /// The stable id `<kernel>/<variant>/<shape>`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kernel, self.variant, self.shape)
    }
}

/// An element count as a label: `16M` for 16·2^20, `4K` for 4·2^10, else the number.
pub fn count_label(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

/// A byte count as a label: `256MiB`, `4KiB`, else `<n>B`.
pub fn bytes_label(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

/// A device-to-device copy of `bytes` bytes: reads and writes each byte once.
pub fn copy_d2d(bytes: u64) -> Spec {
    Spec {
        kernel: "copy",
        variant: "d2d",
        shape: bytes_label(bytes),
        bytes: 2 * bytes,
        flops: 0,
        role: Role::CopyCeiling,
    }
}

/// cuBLAS `C = A·Bᵀ` in bf16 (A m×k, B n×k, C m×n; f32 accumulation): reads A and B once and
/// writes C once (the least traffic possible), 2·m·n·k FLOPs.
pub fn cublas_bf16(m: u64, n: u64, k: u64) -> Spec {
    Spec {
        kernel: "cublas",
        variant: "bf16",
        shape: format!("{m}x{n}x{k}"),
        bytes: 2 * (m * k + n * k + m * n),
        flops: 2 * m * n * k,
        role: Role::CublasCeiling,
    }
}

/// Philox 4x32-10 raw words: writes `n` u32 (the rounds are integer work, not FLOPs).
pub fn philox_u32(n: u64) -> Spec {
    Spec {
        kernel: "philox",
        variant: "u32",
        shape: count_label(n),
        bytes: 4 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Philox uniform f32 in (low, high): writes `n` f32 (one scale and shift each is not counted).
pub fn philox_uniform_f32(n: u64) -> Spec {
    Spec {
        kernel: "philox",
        variant: "uniform_f32",
        shape: count_label(n),
        bytes: 4 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// f32 -> bf16 cast of `n` elements: reads 4n bytes, writes 2n.
pub fn cast_f32_bf16(n: u64) -> Spec {
    Spec {
        kernel: "cast",
        variant: "f32_bf16",
        shape: count_label(n),
        bytes: 6 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// bf16 -> f32 cast of `n` elements: reads 2n bytes, writes 4n.
pub fn cast_bf16_f32(n: u64) -> Spec {
    Spec {
        kernel: "cast",
        variant: "bf16_f32",
        shape: count_label(n),
        bytes: 6 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// The same as [`cublas_bf16`] at a non-ceiling shape: the dense bf16 baseline of an NF4 product
/// (`M x N x K`, weight `N x K`), measured in the same run so that ratios need no other file.
pub fn cublas_bf16_reference(m: u64, n: u64, k: u64) -> Spec {
    Spec {
        role: Role::Reference,
        ..cublas_bf16(m, n, k)
    }
}

/// Which operands of our bf16 GEMM are stored transposed (as `gemm::cuda::Bf16Layout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmLayout {
    Nt,
    Nn,
    Tn,
}

/// Our tensor-core GEMM `C = A·B` in bf16 with bf16 output (f32 accumulation): reads A and B and
/// writes C once, 2·m·n·k FLOPs (the same counts as [`cublas_bf16`], so TFLOP/s compare).
pub fn gemm_bf16(layout: GemmLayout, m: u64, n: u64, k: u64) -> Spec {
    Spec {
        kernel: "gemm",
        variant: match layout {
            GemmLayout::Nt => "bf16_nt",
            GemmLayout::Nn => "bf16_nn",
            GemmLayout::Tn => "bf16_tn",
        },
        shape: format!("{m}x{n}x{k}"),
        bytes: 2 * (m * k + n * k + m * n),
        flops: 2 * m * n * k,
        role: Role::Kernel,
    }
}

/// Our f32 SIMT GEMM: reads A and B, writes C (f32), 2·m·n·k FLOPs.
pub fn gemm_f32(m: u64, n: u64, k: u64) -> Spec {
    Spec {
        kernel: "gemm",
        variant: "f32",
        shape: format!("{m}x{n}x{k}"),
        bytes: 4 * (m * k + n * k + m * n),
        flops: 2 * m * n * k,
        role: Role::Kernel,
    }
}

/// How an NF4 weight's per-64-block scales are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nf4ScaleForm {
    /// One f32 absmax per block.
    F32,
    /// Double-quantized: a u8 code per block, one f32 nested absmax per 256 blocks, a 256-entry
    /// f32 map.
    Double,
}

/// Bytes of an NF4 weight `n x k` (k a multiple of 64): packed nibbles plus its scales.
pub fn nf4_weight_bytes(n: u64, k: u64, scales: Nf4ScaleForm) -> u64 {
    let blocks = n * k / 64;
    let scale_bytes = match scales {
        Nf4ScaleForm::F32 => 4 * blocks,
        Nf4ScaleForm::Double => blocks + 4 * blocks.div_ceil(256) + 4 * 256,
    };
    n * k / 2 + scale_bytes
}

/// `y [m, n] = x [m, k] · Wᵀ` through `nf4_matmul` (W NF4 `n x k`, x and y bf16): the weight
/// (packed + scales) plus x read and y written once; 2·m·n·k FLOPs. Shape label `MxNxK`.
pub fn nf4_matmul(m: u64, n: u64, k: u64, scales: Nf4ScaleForm) -> Spec {
    Spec {
        kernel: "nf4",
        variant: match scales {
            Nf4ScaleForm::F32 => "matmul",
            Nf4ScaleForm::Double => "matmul_dq",
        },
        shape: format!("{m}x{n}x{k}"),
        bytes: nf4_weight_bytes(n, k, scales) + 2 * m * k + 2 * m * n,
        flops: 2 * m * n * k,
        role: Role::Kernel,
    }
}

/// `dx [m, k] = dy [m, n] · W` through `nf4_matmul_transposed` (f32 scales, bf16 dy and dx): the
/// weight plus dy read and dx written once; 2·m·n·k FLOPs. Shape label `MxNxK` with the weight
/// `N x K`, as for [`nf4_matmul`]; its dense baseline is the `M x K x N` product.
pub fn nf4_matmul_t(m: u64, n: u64, k: u64) -> Spec {
    Spec {
        kernel: "nf4",
        variant: "matmul_t",
        shape: format!("{m}x{n}x{k}"),
        bytes: nf4_weight_bytes(n, k, Nf4ScaleForm::F32) + 2 * m * n + 2 * m * k,
        flops: 2 * m * n * k,
        role: Role::Kernel,
    }
}

/// Parses a `AxBxC` shape label.
pub fn parse_mnk(shape: &str) -> Option<(u64, u64, u64)> {
    let mut it = shape.split('x').map(|p| p.parse::<u64>().ok());
    let v = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(v)
}

/// The id of the cuBLAS product a benchmark is compared with at the same shape, if any: every
/// bf16 GEMM layout and every NF4 forward product `MxNxK` against `cublas/bf16/MxNxK`, the
/// transposed NF4 product against `cublas/bf16/MxKxN` (its output is `M x K`, reduced over N).
pub fn baseline_of(id: &str) -> Option<String> {
    let mut parts = id.splitn(3, '/');
    let (kernel, variant, shape) = (parts.next()?, parts.next()?, parts.next()?);
    let (m, n, k) = parse_mnk(shape)?;
    match (kernel, variant) {
        ("gemm", "bf16_nt" | "bf16_nn" | "bf16_tn") | ("nf4", "matmul" | "matmul_dq") => {
            Some(cublas_bf16(m, n, k).id())
        }
        ("nf4", "matmul_t") => Some(cublas_bf16(m, k, n).id()),
        _ => None,
    }
}

/// Elementwise unary op (e.g. `silu`) on `n` f32: reads and writes each element once. Memory-bound
/// ops report no FLOPs (judged by GB/s), here and below.
pub fn unary_f32(op: &'static str, n: u64) -> Spec {
    Spec {
        kernel: "unary",
        variant: op,
        shape: count_label(n),
        bytes: 8 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Elementwise binary op (e.g. `add`) on two contiguous `n`-element f32 operands.
pub fn binary_f32(op: &'static str, n: u64) -> Spec {
    Spec {
        kernel: "binary",
        variant: op,
        shape: count_label(n),
        bytes: 12 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Sum of each row of a `rows x cols` f32 array (`per_row`: `rows` outputs, the block-per-output
/// kernel): `sum_rows`; or of each column (`cols` outputs, the thread-per-output kernel):
/// `sum_cols`. Reads the array, writes the sums.
pub fn reduce_sum(rows: u64, cols: u64, per_row: bool) -> Spec {
    let (variant, outputs) = if per_row {
        ("sum_rows", rows)
    } else {
        ("sum_cols", cols)
    };
    Spec {
        kernel: "reduce",
        variant,
        shape: format!("{rows}x{cols}"),
        bytes: 4 * rows * cols + 4 * outputs,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Row softmax of `rows x cols` f32: forward reads x and writes y; backward reads y and dy and
/// writes dx.
pub fn softmax(rows: u64, cols: u64, bwd: bool) -> Spec {
    Spec {
        kernel: "softmax",
        variant: if bwd { "f32_bwd" } else { "f32_fwd" },
        shape: format!("{rows}x{cols}"),
        bytes: if bwd { 12 } else { 8 } * rows * cols,
        flops: 0,
        role: Role::Kernel,
    }
}

/// RMS norm over rows of `rows x dim` f32 with a `dim` weight. Forward reads x and w, writes y;
/// backward reads x, dy and w, writes dx and dw (its per-chunk scratch partials not counted).
pub fn rms_norm(rows: u64, dim: u64, bwd: bool) -> Spec {
    Spec {
        kernel: "rms_norm",
        variant: if bwd { "f32_bwd" } else { "f32_fwd" },
        shape: format!("{rows}x{dim}"),
        bytes: if bwd {
            12 * rows * dim + 8 * dim
        } else {
            8 * rows * dim + 4 * dim
        },
        flops: 0,
        role: Role::Kernel,
    }
}

/// RoPE forward on a contiguous f32 `[batch, heads, t, d]` input (rotated as `batch·heads`
/// sequences of `t x d`): reads x and the cos and sin tables (`t x d/2` each), writes y.
pub fn rope_fwd(batch: u64, heads: u64, t: u64, d: u64) -> Spec {
    let x = batch * heads * t * d;
    Spec {
        kernel: "rope",
        variant: "f32_fwd",
        shape: format!("{batch}x{t}x{heads}x{d}"),
        bytes: 8 * x + 4 * t * d,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Embedding lookup of `tokens` i64 ids into an f32 table with rows of `dim`: reads the ids and
/// one table row per token, writes `tokens x dim`. (The vocabulary size does not change the
/// traffic and is not part of the id.)
pub fn embedding_fwd(tokens: u64, dim: u64) -> Spec {
    Spec {
        kernel: "embedding",
        variant: "f32_fwd",
        shape: format!("{tokens}x{dim}"),
        bytes: 8 * tokens + 8 * tokens * dim,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Cross-entropy forward then backward (one call each) on `rows x classes` f32 logits with i64
/// targets. Forward: logits and targets read, the f64 log-sum-exp per row and the loss (f32) and
/// kept count (u64) written. Backward: logits, targets, lse, kept and dloss read, dlogits written.
pub fn cross_entropy(rows: u64, classes: u64) -> Spec {
    let fwd = 4 * rows * classes + 8 * rows + 8 * rows + 4 + 8;
    let bwd = 4 * rows * classes + 8 * rows + 8 * rows + 8 + 4 + 4 * rows * classes;
    Spec {
        kernel: "cross_entropy",
        variant: "f32_fwd_bwd",
        shape: format!("{rows}x{classes}"),
        bytes: fwd + bwd,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Top-k of each of `rows` rows of `n` f32: reads the rows, writes `k` values (f32) and `k`
/// indices (i64) per row.
pub fn topk(rows: u64, n: u64, k: u64) -> Spec {
    Spec {
        kernel: "topk",
        variant: "f32",
        shape: format!("{rows}x{n}_k{k}"),
        bytes: 4 * rows * n + 12 * rows * k,
        flops: 0,
        role: Role::Kernel,
    }
}

/// One AdamW step on `n` f32 parameters: reads p, g, m, v and writes p, m, v.
pub fn adamw(n: u64) -> Spec {
    Spec {
        kernel: "adamw",
        variant: "f32",
        shape: count_label(n),
        bytes: 28 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Philox normal f32 (Box-Muller): writes `n` f32.
pub fn philox_normal_f32(n: u64) -> Spec {
    Spec {
        kernel: "philox",
        variant: "normal_f32",
        shape: count_label(n),
        bytes: 4 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// The shape of one MoE-LoRA stack at one projection: `t` tokens, `d_in -> d_out`, top-`k` of
/// `experts` experts of rank `r`. Label `TxD_INxD_OUT_E<e>_r<r>_k<k>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoeShape {
    pub t: u64,
    pub d_in: u64,
    pub d_out: u64,
    pub experts: u64,
    pub r: u64,
    pub k: u64,
}

impl MoeShape {
    fn label(&self) -> String {
        format!(
            "{}x{}x{}_E{}_r{}_k{}",
            self.t, self.d_in, self.d_out, self.experts, self.r, self.k
        )
    }
}

/// MoE-LoRA dispatch forward, f32 (`moe_lora::cuda::dispatch_forward_f32`, routing uploaded
/// beforehand; with `route`, the host grouping and its upload are part of every call): reads x,
/// every expert's A and B, the gates, writes `mid` (`[T k, r]`) and out; 2·T·k·r·(d_in + d_out)
/// FLOPs. PyTorch anchor (H100, 2026-11-27, `/work/shared/anchors`): a presorted bmm forward at
/// T=4096, 2048 -> 2048, E=4, r=16, top-2 took 37.5 us (its routing also excluded).
pub fn moe_lora_fwd(s: MoeShape, route: bool) -> Spec {
    let MoeShape {
        t,
        d_in,
        d_out,
        experts,
        r,
        k,
    } = s;
    Spec {
        kernel: "moe_lora",
        variant: if route { "f32_fwd_route" } else { "f32_fwd" },
        shape: s.label(),
        bytes: 4 * (t * d_in + experts * r * (d_in + d_out) + t * k + t * k * r + t * d_out),
        flops: 2 * t * k * r * (d_in + d_out),
        role: Role::Kernel,
    }
}

/// MoE-LoRA dispatch backward, f32 (`dispatch_backward_f32`): reads x, dy, A, B, the gates and
/// `mid`, writes dx, d gates, dA, dB (two `[T k, r]` work buffers not counted; their allocation is
/// part of the call); 4·T·k·r·(d_in + d_out) FLOPs (B^T dy, dx, dA, dB; dg not counted).
pub fn moe_lora_bwd(s: MoeShape) -> Spec {
    let MoeShape {
        t,
        d_in,
        d_out,
        experts,
        r,
        k,
    } = s;
    Spec {
        kernel: "moe_lora",
        variant: "f32_bwd",
        shape: s.label(),
        bytes: 4
            * (2 * t * d_in + t * d_out + 2 * experts * r * (d_in + d_out) + 2 * t * k + t * k * r),
        flops: 4 * t * k * r * (d_in + d_out),
        role: Role::Kernel,
    }
}

/// The device grouping of a `[T, k]` routing over `experts` (`DeviceRouting::from_device`, one
/// 128-thread block; the allocation of its four outputs is part of the call): reads the i64
/// table, writes slots and expert ids (u32) and the `E + 1` offsets. Label `TxK_E<e>`.
pub fn moe_lora_group(t: u64, k: u64, experts: u64) -> Spec {
    Spec {
        kernel: "moe_lora",
        variant: "group",
        shape: format!("{t}x{k}_E{experts}"),
        bytes: 16 * t * k + 4 * (experts + 1),
        flops: 0,
        role: Role::Kernel,
    }
}

/// The noisy top-k gate forward, f32 (`gate_forward_f32` with noise: the Philox draw of eps
/// `[T, E]` is part of the call): reads x and `[W_r; W_n]`, writes logits and nscale (`[T, E]`),
/// idx (i64) and gates (`[T, k]`); 2·T·2E·d_in FLOPs. Label `TxD_IN_E<e>_k<k>`.
pub fn moe_gate_fwd(t: u64, d_in: u64, experts: u64, k: u64) -> Spec {
    Spec {
        kernel: "moe_gate",
        variant: "f32_fwd",
        shape: format!("{t}x{d_in}_E{experts}_k{k}"),
        bytes: 4 * (t * d_in + 2 * experts * d_in + 2 * t * experts) + 12 * t * k,
        flops: 4 * t * experts * d_in,
        role: Role::Kernel,
    }
}

/// The gate backward, f32 (`gate_backward_f32`, no extra logit gradient): reads x, `[W_r; W_n]`,
/// idx, gates, nscale and d gates, writes dx and dW (the `[T, 2E]` work buffer and the routing
/// upload are part of the call, not counted); 8·T·E·d_in FLOPs.
pub fn moe_gate_bwd(t: u64, d_in: u64, experts: u64, k: u64) -> Spec {
    Spec {
        kernel: "moe_gate",
        variant: "f32_bwd",
        shape: format!("{t}x{d_in}_E{experts}_k{k}"),
        bytes: 4 * (2 * t * d_in + 4 * experts * d_in + t * experts) + 16 * t * k,
        flops: 8 * t * experts * d_in,
        role: Role::Kernel,
    }
}

/// Randomized SVD, f32 (`rsvd::cuda::rsvd_f32` with oversampling p = 8, so l = k + 8): the
/// Philox sketch, 2q + 2 GEMM passes over A (m x n) at 2·m·n·l FLOPs each, 2q + 2 CholeskyQR2s,
/// the Jacobi SVD of the l x l factor and the two output GEMMs. Counted: the passes over A (A read
/// 2q + 2 times, the m x l / n x l products written once each) and their FLOPs; the small work is
/// not. Label `MxN_k<k>_q<q>`. Anchor: torch.svd_lowrank takes 5.77 ms at 2048x8192_k64_q2.
pub fn rsvd_f32(m: u64, n: u64, k: u64, q: u64) -> Spec {
    let l = k + 8;
    let passes = 2 * q + 2;
    Spec {
        kernel: "rsvd",
        variant: "f32",
        shape: format!("{m}x{n}_k{k}_q{q}"),
        bytes: 4 * (passes * m * n + (q + 1) * (m + n) * l),
        flops: passes * 2 * m * n * l,
        role: Role::Kernel,
    }
}

/// The one-block Jacobi SVD of the randomized SVD's small l x l matrix alone
/// (`rsvd::cuda::jacobi_svd_f64` on a dense Gaussian matrix, its sweep-count read-back
/// included): the latency-bound piece inside `rsvd/f32/...` (l = k + 8). Counted: the f64 input
/// read and the f32 outputs written; the sweeps' work depends on the matrix, so no FLOPs.
/// Label `l<l>`.
pub fn rsvd_jacobi_f64(l: u64) -> Spec {
    Spec {
        kernel: "rsvd",
        variant: "jacobi_f64",
        shape: format!("l{l}"),
        bytes: 8 * 2 * l * l + 4 * (2 * l * l + l),
        flops: 0,
        role: Role::Kernel,
    }
}

/// How many copies of a `bytes`-sized operand a benchmark cycles through so that consecutive
/// calls never find it in L2: enough for [`ROTATE_BYTES`] in all (several times the 50 MiB L2 of
/// an H100, and the H200's), at most 64. An operand already that large needs one copy.
pub fn rotation_copies(bytes: u64) -> usize {
    if bytes == 0 {
        return 1;
    }
    ROTATE_BYTES.div_ceil(bytes).clamp(1, 64) as usize
}

/// The total size [`rotation_copies`] aims at.
pub const ROTATE_BYTES: u64 = 192 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(count_label(16 << 20), "16M");
        assert_eq!(count_label(3 << 10), "3K");
        assert_eq!(count_label(1_000_003), "1000003");
        assert_eq!(count_label(0), "0");
        assert_eq!(bytes_label(256 << 20), "256MiB");
        assert_eq!(bytes_label(2 << 30), "2GiB");
        assert_eq!(bytes_label(1536), "1536B");
    }

    #[test]
    fn ids_bytes_and_flops_follow_the_shape() {
        let c = copy_d2d(256 << 20);
        assert_eq!(
            (c.id(), c.bytes, c.flops),
            ("copy/d2d/256MiB".into(), 512 << 20, 0)
        );
        let g = cublas_bf16(4096, 2048, 1024);
        assert_eq!(g.id(), "cublas/bf16/4096x2048x1024");
        assert_eq!(g.flops, 2 * 4096 * 2048 * 1024);
        assert_eq!(g.bytes, 2 * (4096 * 1024 + 2048 * 1024 + 4096 * 2048));
        assert_eq!(g.role, Role::CublasCeiling);
        assert_eq!(philox_u32(16 << 20).id(), "philox/u32/16M");
        assert_eq!(philox_uniform_f32(16 << 20).bytes, 64 << 20);
        let k = cast_f32_bf16(16 << 20);
        assert_eq!(
            (k.id(), k.bytes, k.role),
            ("cast/f32_bf16/16M".into(), 96 << 20, Role::Kernel)
        );
        assert_eq!(cast_bf16_f32(10).id(), "cast/bf16_f32/10");
    }

    /// `(id, bytes, flops)` of a spec, for compact assertions.
    fn ibf(s: Spec) -> (String, u64, u64) {
        (s.id(), s.bytes, s.flops)
    }

    #[test]
    fn gemm_specs() {
        const G: u64 = 4096;
        for (l, v) in [
            (GemmLayout::Nt, "bf16_nt"),
            (GemmLayout::Nn, "bf16_nn"),
            (GemmLayout::Tn, "bf16_tn"),
        ] {
            let s = gemm_bf16(l, G, G, G);
            assert_eq!(s.id(), format!("gemm/{v}/4096x4096x4096"));
            // Three 32 MiB bf16 matrices; 2*4096^3 = 137_438_953_472 FLOPs.
            assert_eq!((s.bytes, s.flops), (96 << 20, 137_438_953_472));
            assert_eq!(s.role, Role::Kernel);
            // The same counts as cuBLAS at the shape, so TFLOP/s and GB/s compare directly.
            let c = cublas_bf16(G, G, G);
            assert_eq!((c.bytes, c.flops), (s.bytes, s.flops));
        }
        assert_eq!(
            ibf(gemm_bf16(GemmLayout::Nt, 8192, 8192, 8192)),
            (
                "gemm/bf16_nt/8192x8192x8192".into(),
                384 << 20,
                1_099_511_627_776
            )
        );
        assert_eq!(
            ibf(gemm_f32(G, G, G)),
            ("gemm/f32/4096x4096x4096".into(), 192 << 20, 137_438_953_472)
        );
        let r = cublas_bf16_reference(16, 8192, 8192);
        assert_eq!(r.id(), "cublas/bf16/16x8192x8192");
        assert_eq!(r.role, Role::Reference);
        assert_eq!(r.bytes, 2 * (16 * 8192 + 8192 * 8192 + 16 * 8192));
    }

    #[test]
    fn nf4_specs() {
        // 8192x8192: 32 MiB of nibbles, 1 Mi blocks: 4 MiB of f32 absmax; double-quantized:
        // 1 MiB of codes, 4096 nested f32 (16 KiB) and the 1 KiB map.
        assert_eq!(
            nf4_weight_bytes(8192, 8192, Nf4ScaleForm::F32),
            (32 << 20) + (4 << 20)
        );
        assert_eq!(
            nf4_weight_bytes(8192, 8192, Nf4ScaleForm::Double),
            (32 << 20) + (1 << 20) + (16 << 10) + 1024
        );
        // 2048x5632: 11_534_336 elements, 180_224 blocks, 704 nested values.
        assert_eq!(
            nf4_weight_bytes(2048, 5632, Nf4ScaleForm::Double),
            5_767_168 + 180_224 + 4 * 704 + 1024
        );
        let s = nf4_matmul(16, 8192, 8192, Nf4ScaleForm::F32);
        assert_eq!(
            ibf(s),
            (
                "nf4/matmul/16x8192x8192".into(),
                (36 << 20) + 2 * 16 * 8192 * 2,
                2 * 16 * 8192 * 8192
            )
        );
        // M=1 against a 2048 (out) x 5632 (in) weight: x has K=5632 elements, y N=2048.
        let s = nf4_matmul(1, 2048, 5632, Nf4ScaleForm::F32);
        assert_eq!(s.id(), "nf4/matmul/1x2048x5632");
        assert_eq!(s.bytes, 5_767_168 + 4 * 180_224 + 2 * 5632 + 2 * 2048);
        assert_eq!(s.flops, 2 * 2048 * 5632);
        let s = nf4_matmul(1, 8192, 8192, Nf4ScaleForm::Double);
        assert_eq!(s.id(), "nf4/matmul_dq/1x8192x8192");
        assert_eq!(
            s.bytes,
            nf4_weight_bytes(8192, 8192, Nf4ScaleForm::Double) + 4 * 8192
        );
        // Transposed: dy [M, N] read, dx [M, K] written.
        let s = nf4_matmul_t(4096, 5632, 2048);
        assert_eq!(s.id(), "nf4/matmul_t/4096x5632x2048");
        assert_eq!(
            s.bytes,
            nf4_weight_bytes(5632, 2048, Nf4ScaleForm::F32) + 2 * 4096 * 5632 + 2 * 4096 * 2048
        );
        assert_eq!(s.flops, 2 * 4096 * 5632 * 2048);
    }

    #[test]
    fn baselines_are_cublas_at_the_dense_shape() {
        assert_eq!(parse_mnk("16x2048x5632"), Some((16, 2048, 5632)));
        assert_eq!(parse_mnk("16x2048"), None);
        assert_eq!(parse_mnk("1x2x3x4"), None);
        assert_eq!(parse_mnk("ax2x3"), None);
        let b = |id: &str| baseline_of(id);
        assert_eq!(
            b("gemm/bf16_tn/4096x4096x4096").as_deref(),
            Some("cublas/bf16/4096x4096x4096")
        );
        assert_eq!(
            b("nf4/matmul/16x2048x5632").as_deref(),
            Some("cublas/bf16/16x2048x5632")
        );
        assert_eq!(
            b("nf4/matmul_dq/1x8192x8192").as_deref(),
            Some("cublas/bf16/1x8192x8192")
        );
        assert_eq!(
            b("nf4/matmul_t/16x5632x2048").as_deref(),
            Some("cublas/bf16/16x2048x5632")
        );
        assert_eq!(b("gemm/f32/4096x4096x4096"), None);
        assert_eq!(b("cublas/bf16/4096x4096x4096"), None);
        assert_eq!(b("softmax/f32_fwd/4096x32000"), None);
        assert_eq!(b("nf4"), None);
    }

    #[test]
    fn memory_bound_specs() {
        const M16: u64 = 16 << 20;
        assert_eq!(
            ibf(unary_f32("silu", M16)),
            ("unary/silu/16M".into(), 128 << 20, 0)
        );
        assert_eq!(
            ibf(binary_f32("add", M16)),
            ("binary/add/16M".into(), 192 << 20, 0)
        );
        assert_eq!(
            ibf(reduce_sum(4096, 4096, true)),
            ("reduce/sum_rows/4096x4096".into(), (64 << 20) + 4 * 4096, 0)
        );
        assert_eq!(
            ibf(reduce_sum(4096, 1000, false)),
            (
                "reduce/sum_cols/4096x1000".into(),
                4 * 4096 * 1000 + 4 * 1000,
                0
            )
        );
        assert_eq!(
            ibf(softmax(4096, 32000, false)),
            ("softmax/f32_fwd/4096x32000".into(), 8 * 4096 * 32000, 0)
        );
        assert_eq!(softmax(4096, 32000, true).bytes, 12 * 4096 * 32000);
        assert_eq!(
            softmax(4096, 32000, true).id(),
            "softmax/f32_bwd/4096x32000"
        );
        assert_eq!(
            ibf(rms_norm(16384, 2048, false)),
            ("rms_norm/f32_fwd/16384x2048".into(), (256 << 20) + 8192, 0)
        );
        assert_eq!(rms_norm(16384, 2048, true).bytes, (384 << 20) + 16384);
        // 8 x 32 heads x 2048 positions x 64 = 32 Mi elements; tables 2 x 2048 x 32 f32.
        assert_eq!(
            ibf(rope_fwd(8, 32, 2048, 64)),
            (
                "rope/f32_fwd/8x2048x32x64".into(),
                (256 << 20) + (512 << 10),
                0
            )
        );
        assert_eq!(
            ibf(embedding_fwd(16384, 2048)),
            (
                "embedding/f32_fwd/16384x2048".into(),
                8 * 16384 + (256 << 20),
                0
            )
        );
        let ce = cross_entropy(4096, 32000);
        assert_eq!(ce.id(), "cross_entropy/f32_fwd_bwd/4096x32000");
        assert_eq!(ce.bytes, 12 * 4096 * 32000 + 32 * 4096 + 24);
        assert_eq!(
            ibf(topk(65536, 64, 2)),
            (
                "topk/f32/65536x64_k2".into(),
                (16 << 20) + 12 * 65536 * 2,
                0
            )
        );
        assert_eq!(
            ibf(adamw(50 << 20)),
            ("adamw/f32/50M".into(), 28 * (50 << 20), 0)
        );
        assert_eq!(
            ibf(philox_normal_f32(M16)),
            ("philox/normal_f32/16M".into(), 64 << 20, 0)
        );
    }

    #[test]
    fn moe_specs() {
        let s = MoeShape {
            t: 4096,
            d_in: 2048,
            d_out: 2048,
            experts: 4,
            r: 16,
            k: 2,
        };
        let f = moe_lora_fwd(s, false);
        assert_eq!(f.id(), "moe_lora/f32_fwd/4096x2048x2048_E4_r16_k2");
        // x 32 MiB + A, B 4 x 16 x 2048 f32 each (512 KiB each) + gates 32 KiB + mid 512 KiB + out
        // 32 MiB; 2 * 4096 * 2 * 16 * 4096 FLOPs.
        assert_eq!(
            f.bytes,
            (32 << 20) + (1 << 20) + (32 << 10) + (512 << 10) + (32 << 20)
        );
        assert_eq!(f.flops, 1_073_741_824);
        assert_eq!(
            moe_lora_fwd(s, true).id(),
            "moe_lora/f32_fwd_route/4096x2048x2048_E4_r16_k2"
        );
        let b = moe_lora_bwd(MoeShape { d_out: 256, ..s });
        assert_eq!(b.id(), "moe_lora/f32_bwd/4096x2048x256_E4_r16_k2");
        assert_eq!(
            b.bytes,
            4 * (2 * 4096 * 2048 + 4096 * 256 + 2 * 4 * 16 * 2304 + 2 * 4096 * 2 + 4096 * 2 * 16)
        );
        assert_eq!(b.flops, 4 * 4096 * 2 * 16 * 2304);
        assert_eq!(
            ibf(moe_lora_group(4096, 2, 64)),
            ("moe_lora/group/4096x2_E64".into(), 16 * 8192 + 4 * 65, 0)
        );
        let r = rsvd_f32(2048, 8192, 64, 2);
        assert_eq!(r.id(), "rsvd/f32/2048x8192_k64_q2");
        assert_eq!(rsvd_jacobi_f64(72).id(), "rsvd/jacobi_f64/l72");
        assert_eq!(r.flops, 6 * 2 * 2048 * 8192 * 72);
        assert_eq!(r.bytes, 4 * (6 * 2048 * 8192 + 3 * (2048 + 8192) * 72));
        let g = moe_gate_fwd(4096, 2048, 4, 2);
        assert_eq!(
            ibf(g),
            (
                "moe_gate/f32_fwd/4096x2048_E4_k2".into(),
                (32 << 20) + (64 << 10) + (128 << 10) + 12 * 8192,
                4 * 4096 * 4 * 2048
            )
        );
        let g = moe_gate_bwd(4096, 2048, 64, 2);
        assert_eq!(g.id(), "moe_gate/f32_bwd/4096x2048_E64_k2");
        assert_eq!(
            g.bytes,
            4 * (2 * 4096 * 2048 + 4 * 64 * 2048 + 4096 * 64) + 16 * 8192
        );
        assert_eq!(g.flops, 8 * 4096 * 64 * 2048);
    }

    #[test]
    fn rotation_keeps_operands_out_of_l2() {
        assert_eq!(rotation_copies(0), 1);
        assert_eq!(rotation_copies(36 << 20), 6);
        assert_eq!(rotation_copies(192 << 20), 1);
        assert_eq!(rotation_copies(1 << 30), 1);
        assert_eq!(rotation_copies(1 << 20), 64);
        // 2048x2048 NF4 with f32 absmax: 2 MiB + 256 KiB.
        assert_eq!(
            rotation_copies(nf4_weight_bytes(2048, 2048, Nf4ScaleForm::F32)),
            64
        );
    }
}
