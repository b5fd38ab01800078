//! NF4 ("4-bit NormalFloat", QLoRA) weight quantization, bit-compatible with bitsandbytes.
//!
//! This module is the format contract; [`cpu`] holds the plain-loop oracle and
//! [`double_quant`] the nested 8-bit quantization of the per-block scales ("double
//! quantization", bitsandbytes `compress_statistics=True`). The facts below were taken from
//! bitsandbytes (`functional.py`, `csrc/kernels.cu`, `backends/default/ops.py`) as summarised in
//! `shared/spec/kernel-references.md` section A; no bitsandbytes code is reproduced here.
//!
//! # Layout
//!
//! A weight `W` of shape `[out, in]` is flattened row-major and cut into blocks of `blocksize`
//! (default [`NF4_DEFAULT_BLOCKSIZE`] = 64) consecutive elements; the last block may be partial.
//! With `in % blocksize == 0` a block never straddles two rows, which is what a GEMM kernel wants.
//!
//! * `absmax[b]` = max |x| over block `b`, stored as `f32`, one per block (partial block included).
//! * Every element becomes a 4-bit index (nibble) into [`NF4_CODE`]. Element `2i` goes to the
//!   **high** nibble (bits 7..4) of byte `i`, element `2i + 1` to the low nibble (bits 3..0), so
//!   `packed.len() == numel.div_ceil(2)`. An odd trailing element is padded with the nibble of a
//!   `0.0` element, [`NF4_ZERO_NIBBLE`] (bitsandbytes pads with a zero element).
//! * Dequantization: `NF4_CODE[nibble] * absmax[elem / blocksize]`, one `f32` multiply.
//!   (bitsandbytes 0.50.2's C++ CPU dequantizer, for some shapes, e.g. `cols` a multiple of 16,
//!   picks scale `r * (cols / blocksize) + c / blocksize` for element `(r, c)`, which is wrong
//!   when `cols` is not a multiple of `blocksize`; its quantizers write the flat layout here.)
//!
//! # Quantization rule (the part that must match bit for bit)
//!
//! 1. `scaled = x * (1 / absmax)`: the reciprocal is taken once per block in `f32` and then
//!    multiplied, as the CUDA kernel does (`x / absmax` can differ by one ulp and so flip ties).
//! 2. The nibble is chosen by a 4-level binary decision tree over the 15 midpoints
//!    [`NF4_MIDPOINTS`] between adjacent codes. **Every comparison is `scaled > midpoint`**
//!    (strict): a value lying exactly on a midpoint goes to the **lower** code. The tree's first
//!    threshold is `NF4_MIDPOINTS[7]` (between codes 7 and 8), then `[3]` / `[11]`, then the odd
//!    ones `[1] [5] [9] [13]`, then the even ones; going right on `>` and left otherwise. Since the
//!    midpoints are increasing this equals "nibble = number of midpoints `m` with `scaled > m`",
//!    which is how bitsandbytes' pure-PyTorch reference computes it (`bucketize`, `right=False`).
//!    The midpoints are the `f64` average of adjacent `f32` codes rounded to `f32` (they equal the
//!    decimal literals with an `f` suffix in bitsandbytes' CUDA tree).
//!
//! # Edge cases (decided here; bitsandbytes' backends disagree on some)
//!
//! * **All-zero block** (`absmax == 0`): every element gets [`NF4_ZERO_NIBBLE`] (code `0.0`) and
//!   `absmax` is stored as `0.0`, so no NaN is ever formed. This matches bitsandbytes' CPU/PyTorch
//!   reference (it clamps the divisor to 1e-38). The CUDA kernel instead computes `0 * inf = NaN`,
//!   every `>` fails and it writes nibble 0 (code -1.0): its packed bytes for such a block are
//!   `0x00` where ours are `0x77`, but both dequantize to zero. Compare values, not bytes, there.
//!   The PyTorch reference stores the absmax of an all-zero *partial last* block as the clamped
//!   `1e-38` (of a full block as `0.0`); ours is `0.0` for both.
//! * **Partial last block**: bitsandbytes' PyTorch reference scales it by `x / absmax` (full
//!   blocks by the reciprocal), so a value within an ulp of a midpoint can land one code apart
//!   from ours there. We follow rule 1 for every block, as its CUDA kernel does.
//! * **Tiny (subnormal) absmax**: when `1 / absmax` overflows to `+inf` (absmax below about
//!   `2.9e-39`) the CUDA kernel would turn zeros into NaN and hence into code -1.0. The oracle
//!   instead scales by `x / absmax` computed in `f64` and rounded to `f32`, which keeps the
//!   round-trip error bound below; this is a deliberate, documented deviation in a case where
//!   the CUDA output is wrong anyway. Subnormal absmax whose reciprocal is finite follow rule 1.
//!   bitsandbytes' PyTorch reference scales any block whose absmax is below `1e-38` by `1e-38`
//!   instead (and stores `1e-38` for a partial last block), so its codes there collapse toward
//!   zero; ours keep the error bound. `tests/nf4_bitsandbytes.rs` checks each of these
//!   differences, and byte equality everywhere else, against bitsandbytes 0.50.2.
//! * **NaN or ±inf inputs** are rejected with [`Nf4Error`] (bitsandbytes silently produces garbage
//!   codes for them).
//!
//! # Error bound
//!
//! For every element, `|dequant - x| <= NF4_MAX_HALF_GAP * absmax` up to `f32` rounding of the
//! scale and the final product (a few ulps of `absmax`): the worst case is half the widest gap
//! between adjacent codes (between -1.0 and -0.6961928).
//!
//! # GPU kernels
//!
//! `nf4.ptx` (hand-designed PTX, unrolled by `gen_ptx.py` in this folder), launched by
//! `cuda.rs` (feature `cuda`). Shapes: activations bf16 (raw `u16` bits) `[M, K]` row-major with
//! a row stride; weight NF4 `[N = out, K = in]` in exactly the layout above with block size 64 and
//! **`K % 64 == 0`** (launchers return `GpuError::Invalid` naming K otherwise), so every block is
//! one 64-wide piece of one weight row: `absmax[n * K/64 + k/64]`. Scales are either `f32` (one
//! per block) or double-quantized ([`double_quant`]: `u8` codes, one nested `f32` absmax per 256
//! blocks, the 256-entry `f32` map, an `f32` offset). Outputs are `f32`, accumulated in `f32` in
//! a fixed order (deterministic, no atomics); every matmul launcher also writes bf16 instead
//! (`cuda::Nf4Out::Bf16`: the same f32 result rounded to nearest even, bit for bit).
//!
//! * **Dequantize** (`nf4_dequantize`): `f32 [N*K]`, bit for bit [`cpu::dequantize_nf4`] (one
//!   `f32` multiply per element), with either scale form; `nf4_decode_absmax` turns
//!   double-quantized scales into `f32` bit for bit [`dequantize_absmax`] (`mul` then `add`, two
//!   roundings, never fused).
//! * **Skinny** (`nf4_matmul_skinny`, `M <= NF4_GPU_SKINNY_MAX_M = 16`, row stride % 8 == 0):
//!   `y = x W^T` on tensor cores with a single m16 tile; every lane reads its packed weight bytes
//!   straight from global memory into `mma.sync` B fragments (the reduction index is permuted
//!   inside each 64-wide block so that the x loads are 16-byte and the weight loads 8-byte
//!   contiguous vectors; see the comment above the entry), so the packed weight is streamed
//!   exactly once and the 16 x rows come from L1/L2. Decode is one shared-memory lookup per
//!   packed byte (a 256-entry table of bf16 code pairs, replicated per bank so it never
//!   conflicts); the block's absmax multiplies the f32 partial sum of its 64 k, not each weight.
//!   Split-K over the 8 warps of a CTA, reduced through shared memory in warp order. Both scale
//!   forms, decoded inline.
//! * **Tensor core** (`nf4_matmul_tc`, any M, any row stride): CTA tile 128 x 128, reduction
//!   stage 64; each stage decodes its 128 x 64 weight tile once into shared memory as bf16 and
//!   feeds `mma.sync.m16n8k16` from there (`ldmatrix` fragments, activations staged with
//!   `cp.async`); a dequantized weight is never written to global memory. `f32` scales only: with double-quantized scales the launcher first decodes them
//!   into a temporary `f32` buffer (`N*K/64` floats, 1/8 of the packed bytes).
//! * **Dispatch** (`nf4_matmul`): skinny for `M <= 16` with a row stride divisible by 8, tensor
//!   core otherwise.
//! * **Transposed** (`nf4_matmul_transposed`): `dX [M, K] = dY [M, N] W` for the backward pass
//!   through the frozen base, dispatched by M like the forward product:
//!   `nf4_matmul_transposed_skinny` (`M <= 16`, any row stride) is a single-m16-tile kernel in
//!   which each lane loads 4 packed bytes (8 consecutive k) of four weight rows and the 8 output
//!   columns of each mma tile are a permutation of k (column `c` of tile `e` is
//!   `k = kb + 8c + e`), so every B fragment comes from the lane's own bytes; the reduction over N
//!   is split over the CTA's warps and summed in warp order. `nf4_matmul_transposed_tc` is the
//!   tile kernel in its transposed mode (each stage decodes a 64 (n) x 128 (k) weight tile into
//!   shared memory transposed). Both take `f32` scales; double-quantized scales are decoded to
//!   a temporary buffer first.
//!
//! Precision (what the GPU tests assert, `tests/gpu_nf4.rs`). The tile kernel rounds every
//! weight once to bf16 (round to nearest even) from its exact `f32` value `code * absmax`; the
//! skinny kernel uses `bf16(code)` and applies the `f32` absmax to each block's partial sum; in
//! both the weight's relative error is `<= 2^-9`. The bf16 x bf16 products are exact in `f32`;
//! accumulation is `f32`. Against the `f64` oracle on the `f32` weights ([`nf4_matmul_f64`],
//! [`cpu::nf4_matmul_transposed_f64`]):
//! `|gpu - oracle| <= (2^-8 + R * 2^-23) * sum_r |a_r| |w_r|`, `R` the reduction length: `2^-8`
//! bounds the bf16 rounding of the weight (it is `<= 2^-9` relative), `R * 2^-23` generously
//! bounds `f32` accumulation in any order (tensor cores may add partial sums in an order of their
//! own). Dequantize is exact (bit for bit).
//!
//! Performance (H100 targets of the issue, none measured yet: no GPU when this was written; the
//! ignored test `nf4_h100_performance_targets` in `tests/gpu_nf4.rs` measures them):
//! skinny M = 1 at >= 80% of copy bandwidth and M = 16 at <= 16 us for 8192 x 8192; tile kernel
//! at >= 0.85x dense bf16 cuBLAS for M = 4096. Known limits of this first version:
//! * the tile kernel uses `mma.sync` (no `wgmma`), single-buffered 64-wide stages (activations
//!   by `cp.async`, fragments by `ldmatrix`), and re-decodes each weight tile once per 128-row M
//!   tile; on H100 an `mma.sync` kernel is reported to top out near 75% of peak (see
//!   `shared/spec/kernel-references.md` B), so the 0.85x cuBLAS target likely needs an `sm_90a`
//!   `wgmma` variant;
//! * the skinny kernel reads x from L1/L2 once per 32 output columns (for M = 16 that is twice
//!   the packed weight's bytes, from cache); if M = 16 misses its target, share x between warps
//!   through shared memory and split K across CTAs instead;
//! * the small-M transposed path runs `K/64` CTAs (128 for K = 8192), one wave on an H100.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod double_quant;
#[cfg(test)]
mod sim;

/// The hand-written PTX of the NF4 GPU kernels (generated by `gen_ptx.py`), embedded in every
/// build (the registry and the lint read it).
pub const PTX: &str = include_str!("nf4.ptx");

/// Largest M the skinny (single m16 tile) kernel takes; `cuda::nf4_matmul` dispatches on it.
pub const NF4_GPU_SKINNY_MAX_M: usize = 16;

pub use cpu::{dequantize_nf4, nf4_matmul_f64, nf4_matmul_transposed_f64, quantize_nf4};
pub use double_quant::{
    DoubleQuant, NESTED_BLOCKSIZE, create_dynamic_map, dequantize_absmax, double_quantize_absmax,
    double_quantize_absmax_with_offset,
};

use std::fmt;

/// The 16 NF4 code values, indexed by nibble. These are the `f32` values of bitsandbytes'
/// `get_4bit_type("nf4")` table, written here in their shortest `f32` form (a test checks each
/// against bitsandbytes' 16-17 digit decimals); 7 negatives, an exact zero, 8 positives,
/// normalised so the extremes are exactly ±1.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928,
    -0.52507305,
    -0.3949175,
    -0.28444138,
    -0.18477343,
    -0.091050036,
    0.0,
    0.0795803,
    0.1609302,
    0.2461123,
    0.33791524,
    0.44070983,
    0.562617,
    0.72295684,
    1.0,
];

/// Decision thresholds: `NF4_MIDPOINTS[i]` separates codes `i` and `i + 1`. Each is
/// `((NF4_CODE[i] as f64 + NF4_CODE[i + 1] as f64) / 2) as f32`; a scaled value equal to a
/// threshold quantizes to the lower code `i`.
pub const NF4_MIDPOINTS: [f32; 15] = [
    -0.8480964,
    -0.6106329,
    -0.45999527,
    -0.33967942,
    -0.2346074,
    -0.13791174,
    -0.045525018,
    0.03979015,
    0.12025525,
    0.20352125,
    0.29201376,
    0.38931254,
    0.50166345,
    0.6427869,
    0.86147845,
];

/// The nibble of code `0.0`: used for zeros, all-zero blocks and the odd-length pad.
pub const NF4_ZERO_NIBBLE: u8 = 7;

/// bitsandbytes' default block size for 4-bit quantization (`quantize_4bit`, `Linear4bit`).
pub const NF4_DEFAULT_BLOCKSIZE: usize = 64;

/// Half of the widest gap between adjacent codes, `(-0.6961928 - -1.0) / 2` (the table is
/// asymmetric, so its negative end is the coarsest): the worst-case quantization error as a
/// fraction of the block's absmax.
pub const NF4_MAX_HALF_GAP: f32 = 0.1519036;

/// Everything that can go wrong when building or consuming NF4 data. Returned instead of
/// panicking on any user-supplied input.
#[derive(Debug, Clone, PartialEq)]
pub enum Nf4Error {
    /// Input element `index` is NaN.
    NaN { index: usize },
    /// Input element `index` is `+inf` (`positive`) or `-inf`.
    Infinite { index: usize, positive: bool },
    /// The block size is not a power of two in `32..=4096` (the sizes bitsandbytes accepts).
    InvalidBlocksize { blocksize: usize },
    /// A length does not match the shape it must have.
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A shape product overflows `usize`.
    Overflow,
    /// A stored scale is NaN or infinite (or negative, for a nested absmax).
    InvalidScale { index: usize, value: f32 },
}

impl fmt::Display for Nf4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nf4Error::NaN { index } => write!(f, "NF4: input element {index} is NaN"),
            Nf4Error::Infinite { index, positive } => {
                let sign = if *positive { '+' } else { '-' };
                write!(f, "NF4: input element {index} is {sign}inf")
            }
            Nf4Error::InvalidBlocksize { blocksize } => {
                write!(
                    f,
                    "NF4: block size {blocksize} is not a power of two in 32..=4096"
                )
            }
            Nf4Error::ShapeMismatch {
                what,
                expected,
                got,
            } => {
                write!(f, "NF4: {what} has length {got}, expected {expected}")
            }
            Nf4Error::Overflow => write!(f, "NF4: shape product overflows usize"),
            Nf4Error::InvalidScale { index, value } => {
                write!(f, "NF4: scale {index} is {value}, not a valid scale")
            }
        }
    }
}

impl std::error::Error for Nf4Error {}

/// Checks that `blocksize` is one bitsandbytes accepts for 4-bit data.
pub fn check_blocksize(blocksize: usize) -> Result<(), Nf4Error> {
    if blocksize.is_power_of_two() && (32..=4096).contains(&blocksize) {
        Ok(())
    } else {
        Err(Nf4Error::InvalidBlocksize { blocksize })
    }
}

/// Rejects NaN and ±inf, reporting the first offending index.
pub(crate) fn check_finite(values: &[f32]) -> Result<(), Nf4Error> {
    for (index, &v) in values.iter().enumerate() {
        if v.is_nan() {
            return Err(Nf4Error::NaN { index });
        }
        if v.is_infinite() {
            return Err(Nf4Error::Infinite {
                index,
                positive: v > 0.0,
            });
        }
    }
    Ok(())
}

/// The nibble of an already-scaled value, by the decision tree of the module docs: four strict
/// `>` comparisons, descending right when the value exceeds the threshold. A NaN fails every
/// comparison and lands on nibble 0, exactly like the CUDA tree (the oracle never feeds it one).
pub fn nf4_nibble(scaled: f32) -> u8 {
    let mut lo = 0usize;
    let mut width = 16usize;
    while width > 1 {
        let half = width / 2;
        // The threshold between the left half [lo, lo+half) and the right half.
        if scaled > NF4_MIDPOINTS[lo + half - 1] {
            lo += half;
        }
        width = half;
    }
    lo as u8
}

/// NF4-quantized weights: packed nibbles plus one `f32` absmax per block. Fields are private so
/// that every value in circulation satisfies the length invariants, which lets dequantization
/// and the GEMM oracle index without checks that could panic; build one with
/// [`quantize_nf4`] or, for bytes coming from a file, [`Nf4Quantized::from_parts`].
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Quantized {
    packed: Vec<u8>,
    absmax: Vec<f32>,
    numel: usize,
    blocksize: usize,
}

impl Nf4Quantized {
    /// Validates and wraps existing data (e.g. a bitsandbytes checkpoint's `weight` bytes and
    /// fp32 `absmax`): `packed.len() == numel.div_ceil(2)`, `absmax.len() ==
    /// numel.div_ceil(blocksize)`, every absmax finite, blocksize accepted. A negative absmax is
    /// accepted and used as is: scales reconstructed from double quantization
    /// ([`dequantize_absmax`], bitsandbytes' own too) go below zero for a block whose true
    /// absmax is small next to the spread of its neighbours' (seen in real bitsandbytes output).
    pub fn from_parts(
        packed: Vec<u8>,
        absmax: Vec<f32>,
        numel: usize,
        blocksize: usize,
    ) -> Result<Self, Nf4Error> {
        check_blocksize(blocksize)?;
        let want_bytes = numel.div_ceil(2);
        if packed.len() != want_bytes {
            return Err(Nf4Error::ShapeMismatch {
                what: "packed",
                expected: want_bytes,
                got: packed.len(),
            });
        }
        let want_blocks = numel.div_ceil(blocksize);
        if absmax.len() != want_blocks {
            return Err(Nf4Error::ShapeMismatch {
                what: "absmax",
                expected: want_blocks,
                got: absmax.len(),
            });
        }
        if let Some((index, &value)) = absmax.iter().enumerate().find(|(_, a)| !a.is_finite()) {
            return Err(Nf4Error::InvalidScale { index, value });
        }
        Ok(Self {
            packed,
            absmax,
            numel,
            blocksize,
        })
    }

    /// Crate-internal constructor for data already known to be consistent.
    pub(crate) fn new_unchecked(
        packed: Vec<u8>,
        absmax: Vec<f32>,
        numel: usize,
        blocksize: usize,
    ) -> Self {
        Self {
            packed,
            absmax,
            numel,
            blocksize,
        }
    }

    /// Packed nibbles, two elements per byte, element `2i` in the high nibble of byte `i`.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// One `f32` absmax per block.
    pub fn absmax(&self) -> &[f32] {
        &self.absmax
    }

    /// Number of weight elements (not bytes).
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Elements per absmax block.
    pub fn blocksize(&self) -> usize {
        self.blocksize
    }

    /// The nibble of element `i`, or `None` past the end.
    pub fn nibble(&self, i: usize) -> Option<u8> {
        if i >= self.numel {
            return None;
        }
        let byte = self.packed[i / 2];
        Some(if i.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0f
        })
    }

    /// Splits into `(packed, absmax, numel, blocksize)`.
    pub fn into_parts(self) -> (Vec<u8>, Vec<f32>, usize, usize) {
        (self.packed, self.absmax, self.numel, self.blocksize)
    }
}
