//! The registry of every hand-written PTX module embedded in this crate.
//!
//! Each module is one `.ptx` file beside its op, embedded with `include_str!` in every build (no
//! cfg gate), so the CPU-only lint (`tests/ptx_lint.rs`) checks the very text the GPU loads. The
//! CUDA launcher (`launch.rs`, feature `cuda`) caches loaded modules in an array indexed by
//! [`ModuleId`]. Each entry carries the number of kernel parameters its `cuda.rs` pushes; the lint
//! checks it against the `.param` list of the PTX, and the launcher checks it at every launch.

/// One embedded PTX module; the discriminant is the index into [`ALL`] and into the module cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleId {
    Philox = 0,
    Cast = 1,
    Elementwise = 2,
    Reduce = 3,
    Softmax = 4,
    RmsNorm = 5,
    Adamw = 6,
    Rope = 7,
    Embedding = 8,
    TopK = 9,
    CrossEntropy = 10,
    GemmBf16 = 11,
    GemmF32 = 12,
    Nf4 = 13,
    MoeLora = 14,
    MoeGate = 15,
    Rsvd = 16,
}

impl ModuleId {
    /// Number of modules (the length of [`ALL`]).
    pub const COUNT: usize = 17;

    /// Index into [`ALL`] and into per-context module caches.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The registry record of this module.
    pub fn spec(self) -> &'static ModuleSpec {
        &ALL[self.index()]
    }
}

/// One kernel entry of a module: its name and its parameter count as pushed by `cuda.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySpec {
    pub name: &'static str,
    pub params: usize,
}

/// One embedded PTX module: id, display name (the file), the PTX text, its entries.
#[derive(Clone, Copy, Debug)]
pub struct ModuleSpec {
    pub id: ModuleId,
    pub name: &'static str,
    pub ptx: &'static str,
    pub entries: &'static [EntrySpec],
}

impl ModuleSpec {
    /// The entry record named `name`, if this module has it.
    pub fn entry(&self, name: &str) -> Option<&'static EntrySpec> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Entry `philox_u32(out, n, seed, offset)`.
pub const PHILOX_U32: EntrySpec = EntrySpec {
    name: "philox_u32",
    params: 4,
};
/// Entry `philox_uniform_f32(out, n, seed, offset, low, high)`.
pub const PHILOX_UNIFORM_F32: EntrySpec = EntrySpec {
    name: "philox_uniform_f32",
    params: 6,
};
/// Entry `philox_normal_f32(out, n, seed, offset, mean, std)`.
pub const PHILOX_NORMAL_F32: EntrySpec = EntrySpec {
    name: "philox_normal_f32",
    params: 6,
};
/// Entry `philox_normal_f64(out, n, seed, offset, mean, std)`.
pub const PHILOX_NORMAL_F64: EntrySpec = EntrySpec {
    name: "philox_normal_f64",
    params: 6,
};
/// Entry `cast_f32_bf16(src, dst, n)`.
pub const CAST_F32_BF16: EntrySpec = EntrySpec {
    name: "cast_f32_bf16",
    params: 3,
};
/// Entry `cast_bf16_f32(src, dst, n)`.
pub const CAST_BF16_F32: EntrySpec = EntrySpec {
    name: "cast_bf16_f32",
    params: 3,
};
/// Entry `rope_f32_fwd(x, y, cos, sin, batch, t, half, batch_stride, pos_stride)`.
pub const ROPE_F32_FWD: EntrySpec = EntrySpec {
    name: "rope_f32_fwd",
    params: 9,
};
/// Entry `rope_f32_bwd(dy, dx, cos, sin, batch, t, half, batch_stride, pos_stride)`.
pub const ROPE_F32_BWD: EntrySpec = EntrySpec {
    name: "rope_f32_bwd",
    params: 9,
};
/// Entry `rope_bf16_fwd(x, y, cos, sin, batch, t, half, batch_stride, pos_stride)`.
pub const ROPE_BF16_FWD: EntrySpec = EntrySpec {
    name: "rope_bf16_fwd",
    params: 9,
};
/// Entry `rope_bf16_bwd(dy, dx, cos, sin, batch, t, half, batch_stride, pos_stride)`.
pub const ROPE_BF16_BWD: EntrySpec = EntrySpec {
    name: "rope_bf16_bwd",
    params: 9,
};
/// Entry `embedding_f32_fwd(table, ids, out, n, vocab, dim, err)`.
pub const EMBEDDING_F32_FWD: EntrySpec = EntrySpec {
    name: "embedding_f32_fwd",
    params: 7,
};
/// Entry `embedding_bf16_fwd(table, ids, out, n, vocab, dim, err)`.
pub const EMBEDDING_BF16_FWD: EntrySpec = EntrySpec {
    name: "embedding_bf16_fwd",
    params: 7,
};
/// Entry `embedding_f32_bwd(dy, dtable, rows, starts, pos, groups, dim)`.
pub const EMBEDDING_F32_BWD: EntrySpec = EntrySpec {
    name: "embedding_f32_bwd",
    params: 7,
};
/// Entry `topk_f32(x, row_stride, rows, n, k, values, indices)`.
pub const TOPK_F32: EntrySpec = EntrySpec {
    name: "topk_f32",
    params: 7,
};
/// Entry `cross_entropy_f32_fwd(logits, row_stride, targets, rows, classes, ignore, has_ignore,
/// lse, row_loss, status)`.
pub const CROSS_ENTROPY_F32_FWD: EntrySpec = EntrySpec {
    name: "cross_entropy_f32_fwd",
    params: 10,
};
/// Entry `cross_entropy_f32_mean(row_loss, status, rows, loss, kept, bad)`.
pub const CROSS_ENTROPY_F32_MEAN: EntrySpec = EntrySpec {
    name: "cross_entropy_f32_mean",
    params: 6,
};
/// Entry `cross_entropy_f32_bwd(logits, row_stride, targets, rows, classes, ignore, has_ignore,
/// lse, kept, dloss, dlogits, err)`.
pub const CROSS_ENTROPY_F32_BWD: EntrySpec = EntrySpec {
    name: "cross_entropy_f32_bwd",
    params: 12,
};

/// Entry `unary_f32(x, y, n, offset, dims, rank, op)`.
pub const UNARY_F32: EntrySpec = EntrySpec {
    name: "unary_f32",
    params: 7,
};
/// Entry `unary_bf16(x, y, n, offset, dims, rank, op)`.
pub const UNARY_BF16: EntrySpec = EntrySpec {
    name: "unary_bf16",
    params: 7,
};
/// Entry `binary_f32(a, b, y, n, a_offset, b_offset, dims, rank, op)`.
pub const BINARY_F32: EntrySpec = EntrySpec {
    name: "binary_f32",
    params: 9,
};
/// Entry `binary_bf16(a, b, y, n, a_offset, b_offset, dims, rank, op)`.
pub const BINARY_BF16: EntrySpec = EntrySpec {
    name: "binary_bf16",
    params: 9,
};
/// Entry `reduce_f32(x, y, idx, outer, size, inner, op)`.
pub const REDUCE_F32: EntrySpec = EntrySpec {
    name: "reduce_f32",
    params: 7,
};
/// Entry `reduce_f32_cols(x, y, idx, outer, size, inner, op)`.
pub const REDUCE_F32_COLS: EntrySpec = EntrySpec {
    name: "reduce_f32_cols",
    params: 7,
};
/// Entry `softmax_f32_fwd(x, y, rows, cols)`.
pub const SOFTMAX_F32_FWD: EntrySpec = EntrySpec {
    name: "softmax_f32_fwd",
    params: 4,
};
/// Entry `softmax_f32_bwd(y, dy, dx, rows, cols)`.
pub const SOFTMAX_F32_BWD: EntrySpec = EntrySpec {
    name: "softmax_f32_bwd",
    params: 5,
};
/// Entry `rms_norm_f32_fwd(x, w, y, rows, dim, eps)`.
pub const RMS_NORM_F32_FWD: EntrySpec = EntrySpec {
    name: "rms_norm_f32_fwd",
    params: 6,
};
/// Entry `rms_norm_f32_bwd(x, w, dy, dx, rinv, rows, dim, eps)`.
pub const RMS_NORM_F32_BWD: EntrySpec = EntrySpec {
    name: "rms_norm_f32_bwd",
    params: 8,
};
/// Entry `rms_norm_f32_bwd_dw_partial(x, dy, rinv, partial, rows, dim)`.
pub const RMS_NORM_F32_BWD_DW_PARTIAL: EntrySpec = EntrySpec {
    name: "rms_norm_f32_bwd_dw_partial",
    params: 6,
};
/// Entry `rms_norm_f32_bwd_dw_reduce(partial, dw, chunks, dim)`.
pub const RMS_NORM_F32_BWD_DW_REDUCE: EntrySpec = EntrySpec {
    name: "rms_norm_f32_bwd_dw_reduce",
    params: 4,
};
/// Entry `adamw_f32(p, g, m, v, n, b1, c1, b2, c2, ib1, ib2, eps, wd, lr)`.
pub const ADAMW_F32: EntrySpec = EntrySpec {
    name: "adamw_f32",
    params: 14,
};

/// Entries `gemm_bf16_{nt,nn,tn}_{f32,bf16}[_wide](a, b, c, m, n, k, lda, ldb, ldc)` (block tile
/// 128 x 128, or 128 x 256 for `_wide`).
pub const GEMM_BF16_NT_F32: EntrySpec = EntrySpec {
    name: "gemm_bf16_nt_f32",
    params: 9,
};
pub const GEMM_BF16_NN_F32: EntrySpec = EntrySpec {
    name: "gemm_bf16_nn_f32",
    params: 9,
};
pub const GEMM_BF16_TN_F32: EntrySpec = EntrySpec {
    name: "gemm_bf16_tn_f32",
    params: 9,
};
pub const GEMM_BF16_NT_BF16: EntrySpec = EntrySpec {
    name: "gemm_bf16_nt_bf16",
    params: 9,
};
pub const GEMM_BF16_NN_BF16: EntrySpec = EntrySpec {
    name: "gemm_bf16_nn_bf16",
    params: 9,
};
pub const GEMM_BF16_TN_BF16: EntrySpec = EntrySpec {
    name: "gemm_bf16_tn_bf16",
    params: 9,
};
pub const GEMM_BF16_NT_F32_WIDE: EntrySpec = EntrySpec {
    name: "gemm_bf16_nt_f32_wide",
    params: 9,
};
pub const GEMM_BF16_NT_BF16_WIDE: EntrySpec = EntrySpec {
    name: "gemm_bf16_nt_bf16_wide",
    params: 9,
};
pub const GEMM_BF16_NN_F32_WIDE: EntrySpec = EntrySpec {
    name: "gemm_bf16_nn_f32_wide",
    params: 9,
};
pub const GEMM_BF16_NN_BF16_WIDE: EntrySpec = EntrySpec {
    name: "gemm_bf16_nn_bf16_wide",
    params: 9,
};
pub const GEMM_BF16_TN_F32_WIDE: EntrySpec = EntrySpec {
    name: "gemm_bf16_tn_f32_wide",
    params: 9,
};
pub const GEMM_BF16_TN_BF16_WIDE: EntrySpec = EntrySpec {
    name: "gemm_bf16_tn_bf16_wide",
    params: 9,
};
/// Entry `gemm_f32(a, b, c, m, n, k, a_rs, a_cs, b_rs, b_cs, ldc, nb_inner, a_bso, a_bsi, b_bso,
/// b_bsi, c_bs)`.
pub const GEMM_F32: EntrySpec = EntrySpec {
    name: "gemm_f32",
    params: 17,
};

/// Entry `nf4_dequant_f32(packed, absmax, q8, nested, map, offset, dq, out, n_words)`.
pub const NF4_DEQUANT_F32: EntrySpec = EntrySpec {
    name: "nf4_dequant_f32",
    params: 9,
};
/// Entry `nf4_absmax_decode_f32(q8, nested, map, offset, out, n)`.
pub const NF4_ABSMAX_DECODE_F32: EntrySpec = EntrySpec {
    name: "nf4_absmax_decode_f32",
    params: 6,
};
/// Entry `nf4_gemm_bf16_f32_skinny(x, ldx, y, packed, absmax, q8, nested, map, offset, dq, M, N,
/// K, out_bf16)`.
pub const NF4_GEMM_BF16_F32_SKINNY: EntrySpec = EntrySpec {
    name: "nf4_gemm_bf16_f32_skinny",
    params: 14,
};
/// Entry `nf4_gemm_bf16_f32_tc(a, lda, out, packed, absmax, M, N, K, transposed, out_bf16)`.
pub const NF4_GEMM_BF16_F32_TC: EntrySpec = EntrySpec {
    name: "nf4_gemm_bf16_f32_tc",
    params: 10,
};

/// Entry `nf4_gemm_bf16_f32_skinny_t(dy, lddy, dx, packed, absmax, M, N, K, out_bf16)`.
pub const NF4_GEMM_BF16_F32_SKINNY_T: EntrySpec = EntrySpec {
    name: "nf4_gemm_bf16_f32_skinny_t",
    params: 9,
};

/// Entry `moe_lora_gather_f32(x, w, offsets, slots, out, experts, k, n, r, tm, w_trans)`.
pub const MOE_LORA_GATHER_F32: EntrySpec = EntrySpec {
    name: "moe_lora_gather_f32",
    params: 11,
};
/// Entry `moe_lora_combine_f32(mid, eidx, g, scale, use_gate, w, w_trans, tokens, k, experts, r,
/// n_out, out)`.
pub const MOE_LORA_COMBINE_F32: EntrySpec = EntrySpec {
    name: "moe_lora_combine_f32",
    params: 13,
};
/// Entry `moe_lora_combine_small_f32` (the parameters of [`MOE_LORA_COMBINE_F32`]; for
/// `E r <= 128`, `k r <= 64`).
pub const MOE_LORA_COMBINE_SMALL_F32: EntrySpec = EntrySpec {
    name: "moe_lora_combine_small_f32",
    params: 13,
};
/// Entry `moe_lora_gate_grad_f32(u, mid, g, scale, slots, r, dg, dmid)`.
pub const MOE_LORA_GATE_GRAD_F32: EntrySpec = EntrySpec {
    name: "moe_lora_gate_grad_f32",
    params: 8,
};
/// Entry `moe_lora_outer_f32(y, z, g, scale, use_gate, offsets, slots, k, n_out, r, out_trans,
/// experts, splits, out)`.
pub const MOE_LORA_OUTER_F32: EntrySpec = EntrySpec {
    name: "moe_lora_outer_f32",
    params: 14,
};
/// Entry `moe_lora_group(idx, offsets, slots, eidx, err, n, k, experts)` (one block of 128).
pub const MOE_LORA_GROUP: EntrySpec = EntrySpec {
    name: "moe_lora_group",
    params: 8,
};
/// Entry `moe_lora_sum_f32(partial, out, n, splits)`.
pub const MOE_LORA_SUM_F32: EntrySpec = EntrySpec {
    name: "moe_lora_sum_f32",
    params: 4,
};
/// Entry `moe_gate_fwd_f32(x, w, eps, logits, nscale, idx, gates, tokens, experts, k, d_in, tm,
/// noise)`.
pub const MOE_GATE_FWD_F32: EntrySpec = EntrySpec {
    name: "moe_gate_fwd_f32",
    params: 13,
};
/// Entry `moe_gate_bwd_rows_f32(idx, gates, dgates, nscale, extra, dz, tokens, experts, k,
/// has_extra)`.
pub const MOE_GATE_BWD_ROWS_F32: EntrySpec = EntrySpec {
    name: "moe_gate_bwd_rows_f32",
    params: 10,
};

/// Entry `rsvd_gram_partial_f64(y, partial, m, l, rps)` (grid (splits, ceil(l l / 256)) of 256).
pub const RSVD_GRAM_PARTIAL_F64: EntrySpec = EntrySpec {
    name: "rsvd_gram_partial_f64",
    params: 5,
};
/// Entry `rsvd_sum_f64(partial, out, n, splits)`.
pub const RSVD_SUM_F64: EntrySpec = EntrySpec {
    name: "rsvd_sum_f64",
    params: 4,
};
/// Entry `rsvd_cholesky_f64(g, r, status, l, ratio_limit)` (one block of 256).
pub const RSVD_CHOLESKY_F64: EntrySpec = EntrySpec {
    name: "rsvd_cholesky_f64",
    params: 5,
};
/// Entry `rsvd_trsm_f64(y, r, q, m, l)` (blocks of 128, one thread per row).
pub const RSVD_TRSM_F64: EntrySpec = EntrySpec {
    name: "rsvd_trsm_f64",
    params: 5,
};
/// Entry `rsvd_jacobi_f64(a2, a1, w, v, s, u, vr, info, l, max_sweeps)` (one block of 128).
pub const RSVD_JACOBI_F64: EntrySpec = EntrySpec {
    name: "rsvd_jacobi_f64",
    params: 10,
};
/// Entry `rsvd_cast_f64_f32(src, dst, n)`.
pub const RSVD_CAST_F64_F32: EntrySpec = EntrySpec {
    name: "rsvd_cast_f64_f32",
    params: 3,
};

/// Every embedded PTX module, in `ModuleId` order (`ALL[id.index()].id == id`).
pub const ALL: [ModuleSpec; ModuleId::COUNT] = [
    ModuleSpec {
        id: ModuleId::Philox,
        name: "philox/philox.ptx",
        ptx: crate::philox::PTX,
        entries: &[
            PHILOX_U32,
            PHILOX_UNIFORM_F32,
            PHILOX_NORMAL_F32,
            PHILOX_NORMAL_F64,
        ],
    },
    ModuleSpec {
        id: ModuleId::Cast,
        name: "cast/cast.ptx",
        ptx: crate::cast::PTX,
        entries: &[CAST_F32_BF16, CAST_BF16_F32],
    },
    ModuleSpec {
        id: ModuleId::Elementwise,
        name: "elementwise/elementwise.ptx",
        ptx: crate::elementwise::PTX,
        entries: &[UNARY_F32, UNARY_BF16, BINARY_F32, BINARY_BF16],
    },
    ModuleSpec {
        id: ModuleId::Reduce,
        name: "reduce/reduce.ptx",
        ptx: crate::reduce::PTX,
        entries: &[REDUCE_F32, REDUCE_F32_COLS],
    },
    ModuleSpec {
        id: ModuleId::Softmax,
        name: "softmax/softmax.ptx",
        ptx: crate::softmax::PTX,
        entries: &[SOFTMAX_F32_FWD, SOFTMAX_F32_BWD],
    },
    ModuleSpec {
        id: ModuleId::RmsNorm,
        name: "rms_norm/rms_norm.ptx",
        ptx: crate::rms_norm::PTX,
        entries: &[
            RMS_NORM_F32_FWD,
            RMS_NORM_F32_BWD,
            RMS_NORM_F32_BWD_DW_PARTIAL,
            RMS_NORM_F32_BWD_DW_REDUCE,
        ],
    },
    ModuleSpec {
        id: ModuleId::Adamw,
        name: "adamw/adamw.ptx",
        ptx: crate::adamw::PTX,
        entries: &[ADAMW_F32],
    },
    ModuleSpec {
        id: ModuleId::Rope,
        name: "rope/rope.ptx",
        ptx: crate::rope::PTX,
        entries: &[ROPE_F32_FWD, ROPE_F32_BWD, ROPE_BF16_FWD, ROPE_BF16_BWD],
    },
    ModuleSpec {
        id: ModuleId::Embedding,
        name: "embedding/embedding.ptx",
        ptx: crate::embedding::PTX,
        entries: &[EMBEDDING_F32_FWD, EMBEDDING_BF16_FWD, EMBEDDING_F32_BWD],
    },
    ModuleSpec {
        id: ModuleId::TopK,
        name: "topk/topk.ptx",
        ptx: crate::topk::PTX,
        entries: &[TOPK_F32],
    },
    ModuleSpec {
        id: ModuleId::CrossEntropy,
        name: "cross_entropy/cross_entropy.ptx",
        ptx: crate::cross_entropy::PTX,
        entries: &[
            CROSS_ENTROPY_F32_FWD,
            CROSS_ENTROPY_F32_MEAN,
            CROSS_ENTROPY_F32_BWD,
        ],
    },
    ModuleSpec {
        id: ModuleId::GemmBf16,
        name: "gemm/gemm_bf16.ptx",
        ptx: crate::gemm::PTX_BF16,
        entries: &[
            GEMM_BF16_NT_F32,
            GEMM_BF16_NN_F32,
            GEMM_BF16_TN_F32,
            GEMM_BF16_NT_BF16,
            GEMM_BF16_NN_BF16,
            GEMM_BF16_TN_BF16,
            GEMM_BF16_NT_F32_WIDE,
            GEMM_BF16_NN_F32_WIDE,
            GEMM_BF16_TN_F32_WIDE,
            GEMM_BF16_NT_BF16_WIDE,
            GEMM_BF16_NN_BF16_WIDE,
            GEMM_BF16_TN_BF16_WIDE,
        ],
    },
    ModuleSpec {
        id: ModuleId::GemmF32,
        name: "gemm/gemm_f32.ptx",
        ptx: crate::gemm::PTX_F32,
        entries: &[GEMM_F32],
    },
    ModuleSpec {
        id: ModuleId::Nf4,
        name: "nf4/nf4.ptx",
        ptx: crate::nf4::PTX,
        entries: &[
            NF4_DEQUANT_F32,
            NF4_ABSMAX_DECODE_F32,
            NF4_GEMM_BF16_F32_SKINNY,
            NF4_GEMM_BF16_F32_TC,
            NF4_GEMM_BF16_F32_SKINNY_T,
        ],
    },
    ModuleSpec {
        id: ModuleId::MoeLora,
        name: "moe_lora/moe_lora.ptx",
        ptx: crate::moe_lora::PTX,
        entries: &[
            MOE_LORA_GATHER_F32,
            MOE_LORA_COMBINE_F32,
            MOE_LORA_COMBINE_SMALL_F32,
            MOE_LORA_GATE_GRAD_F32,
            MOE_LORA_OUTER_F32,
            MOE_LORA_SUM_F32,
            MOE_LORA_GROUP,
        ],
    },
    ModuleSpec {
        id: ModuleId::MoeGate,
        name: "moe_lora/moe_gate.ptx",
        ptx: crate::moe_lora::GATE_PTX,
        entries: &[MOE_GATE_FWD_F32, MOE_GATE_BWD_ROWS_F32],
    },
    ModuleSpec {
        id: ModuleId::Rsvd,
        name: "rsvd/rsvd.ptx",
        ptx: crate::rsvd::PTX,
        entries: &[
            RSVD_GRAM_PARTIAL_F64,
            RSVD_SUM_F64,
            RSVD_CHOLESKY_F64,
            RSVD_TRSM_F64,
            RSVD_JACOBI_F64,
            RSVD_CAST_F64_F32,
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_index_the_table() {
        for (i, m) in ALL.iter().enumerate() {
            assert_eq!(m.id.index(), i, "{}", m.name);
            assert!(!m.entries.is_empty());
            assert!(
                !m.ptx.contains('\0'),
                "{}: interior NUL would panic in Ptx::from_src",
                m.name
            );
        }
    }
}
