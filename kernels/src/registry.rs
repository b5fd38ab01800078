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
    Nf4 = 2,
}

impl ModuleId {
    /// Number of modules (the length of [`ALL`]).
    pub const COUNT: usize = 3;

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
