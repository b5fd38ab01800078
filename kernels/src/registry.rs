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
    GemmBf16 = 2,
    GemmF32 = 3,
}

impl ModuleId {
    /// Number of modules (the length of [`ALL`]).
    pub const COUNT: usize = 4;

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
/// Entry `gemm_f32(a, b, c, m, n, k, a_rs, a_cs, b_rs, b_cs, ldc)`.
pub const GEMM_F32: EntrySpec = EntrySpec {
    name: "gemm_f32",
    params: 11,
};

/// Every embedded PTX module, in `ModuleId` order (`ALL[id.index()].id == id`).
pub const ALL: [ModuleSpec; ModuleId::COUNT] = [
    ModuleSpec {
        id: ModuleId::Philox,
        name: "philox/philox.ptx",
        ptx: crate::philox::PTX,
        entries: &[PHILOX_U32, PHILOX_UNIFORM_F32],
    },
    ModuleSpec {
        id: ModuleId::Cast,
        name: "cast/cast.ptx",
        ptx: crate::cast::PTX,
        entries: &[CAST_F32_BF16, CAST_BF16_F32],
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
