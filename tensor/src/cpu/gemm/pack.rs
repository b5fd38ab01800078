//! Packing: A and B copied (and widened) into the micro-panels the kernels read.

use half::bf16;

use super::kernels::Acc;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{MatRef, gemv};

/// An input element type and how it widens to the accumulation type `E` while packing.
///
/// A trait rather than a closure so that a type can bring a faster way to pack the awkward
/// layout (see [`Widen::pack_lanes_along_depth`]).
pub(crate) trait Widen<E: Acc>: Copy + Sync {
    fn widen(self) -> E;

    /// `src` as accumulation-type elements when no widening is needed (`Self == E`), so that A
    /// can be read in place by [`MicroKernel::run_direct`](super::kernels::MicroKernel::run_direct).
    #[inline(always)]
    fn in_place(_src: &[Self]) -> Option<&[E]> {
        None
    }

    /// Packs a panel whose lanes are each contiguous along k (`lanes.depth_stride == 1`): row-major
    /// A, or a transposed B. The panel is the transpose of the source, so this is the slow case.
    /// The default reads each lane in one sequential pass and scatters it into the panel, which
    /// is small enough to stay in L1.
    #[inline(always)]
    fn pack_lanes_along_depth(src: &[Self], lanes: &Lanes, width: usize, panel: &mut [E]) {
        scatter_lanes(src, lanes, 0, width, panel, Self::widen);
    }

    /// `sums[l] = Σ_p a[p] · lane_l[p]` for [`gemv::WIDTH`] lanes that are each contiguous
    /// along k (`lanes.depth_stride == 1`), one fused multiply-add per term in increasing `p`
    /// from zero: the bits of packing the lanes and summing the panel as [`gemv`] does with a
    /// fused kernel, without the panel. `None` where this type or CPU has no such path (the
    /// caller packs).
    #[inline(always)]
    fn fused_lane_sums(_a: &[E], _src: &[Self], _lanes: &Lanes) -> Option<[E; gemv::WIDTH]> {
        None
    }
}

impl Widen<f32> for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    #[inline(always)]
    fn in_place(src: &[f32]) -> Option<&[f32]> {
        Some(src)
    }

    #[inline(always)]
    fn pack_lanes_along_depth(src: &[f32], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        x86::transpose_lanes_f32(src, lanes, width, panel);
        #[cfg(not(target_arch = "x86_64"))]
        scatter_lanes(src, lanes, 0, width, panel, |x| x);
    }

    #[inline(always)]
    fn fused_lane_sums(a: &[f32], src: &[f32], lanes: &Lanes) -> Option<[f32; gemv::WIDTH]> {
        #[cfg(target_arch = "x86_64")]
        return x86::fused_lane_sums_f32(a, src, lanes);
        #[cfg(not(target_arch = "x86_64"))]
        None
    }
}

impl Widen<f32> for bf16 {
    /// bf16 is the top half of an f32, so widening is a shift: exact for every value, NaN stays
    /// NaN. (`bf16::to_f32` also quiets signalling NaNs, a branch the packing loop does not need:
    /// the first arithmetic operation quiets them anyway.)
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }

    #[inline(always)]
    fn pack_lanes_along_depth(src: &[bf16], lanes: &Lanes, width: usize, panel: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        x86::transpose_lanes_bf16(src, lanes, width, panel);
        #[cfg(not(target_arch = "x86_64"))]
        scatter_lanes(src, lanes, 0, width, panel, Self::widen);
    }

    #[inline(always)]
    fn fused_lane_sums(a: &[f32], src: &[bf16], lanes: &Lanes) -> Option<[f32; gemv::WIDTH]> {
        #[cfg(target_arch = "x86_64")]
        return x86::fused_lane_sums_bf16(a, src, lanes);
        #[cfg(not(target_arch = "x86_64"))]
        None
    }
}

impl Widen<f64> for f64 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }

    #[inline(always)]
    fn in_place(src: &[f64]) -> Option<&[f64]> {
        Some(src)
    }
}

/// The B operand of a product (`k` x `n`), seen only through the packed micro-panels it produces.
///
/// A strided matrix ([`MatRef`]) packs by copying (and widening); a compressed operand (the NF4
/// weights of `cpu::nf4`) decodes straight into the panel, so the full-size matrix never exists.
pub(crate) trait PackB<E>: Sync {
    /// `k`.
    fn rows(&self) -> usize;
    /// `n`.
    fn cols(&self) -> usize;
    /// Panics unless the operand is internally consistent (cheap; runs in release).
    fn assert_fits(&self);
    /// Writes rows `depth` x columns `cols` as NR-column micro-panels: panel `q` holds
    /// `out[q * kc * nr + p * nr + j] = B[depth.start + p][cols.start + q * nr + j]`, zero past
    /// `cols.end`; `out` holds exactly `cols.len().div_ceil(nr)` panels of `kc = depth.len()` rows.
    fn pack(&self, depth: std::ops::Range<usize>, cols: std::ops::Range<usize>, nr: usize, out: &mut [E]);

    /// For [`gemv`] with a fused kernel: the sums of `a` (the row's values at `depth`) times
    /// columns `cols` (exactly [`gemv::WIDTH`] of them) straight from the operand, with the bits
    /// packing them and summing the panel would give; `None` where the operand has no such path
    /// (the caller packs).
    fn fused_row_sums(&self, _a: &[E], _depth: std::ops::Range<usize>, _cols: std::ops::Range<usize>) -> Option<[E; gemv::WIDTH]> {
        None
    }
}

impl<T: Widen<E>, E: Acc> PackB<E> for MatRef<'_, T> {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn assert_fits(&self) {
        MatRef::assert_fits(self, "b");
    }
    fn pack(&self, depth: std::ops::Range<usize>, cols: std::ops::Range<usize>, nr: usize, out: &mut [E]) {
        pack_b(*self, (depth.start, depth.len()), (cols.start, cols.len()), nr, out);
    }

    /// Only for a B whose columns are each contiguous along k (a transposed weight, `x · Wᵀ`):
    /// the case where packing is a transpose, which the fused path does in registers.
    fn fused_row_sums(&self, a: &[E], depth: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> Option<[E; gemv::WIDTH]> {
        if self.row_stride != 1 || cols.len() != gemv::WIDTH || a.len() != depth.len() {
            return None;
        }
        let lanes =
            Lanes { base: depth.start + cols.start * self.col_stride, valid: gemv::WIDTH, lane_stride: self.col_stride, depth_stride: 1 };
        T::fused_lane_sums(a, self.data, &lanes)
    }
}

/// Packs rows `i0..i0 + rows` x columns `p0..p0 + kc` of `a` into MR-row micro-panels:
/// panel `q` holds `out[q * kc * mr + p * mr + i] = A[i0 + q * mr + i][p0 + p]`, zero past `rows`.
/// `out` holds exactly `rows.div_ceil(mr)` panels.
pub(super) fn pack_a<T: Widen<E>, E: Acc>(
    a: MatRef<'_, T>,
    (i0, rows): (usize, usize),
    (p0, kc): (usize, usize),
    mr: usize,
    out: &mut [E],
) {
    for (q, panel) in out.chunks_exact_mut(kc * mr).enumerate() {
        let r0 = i0 + q * mr;
        let lanes = Lanes {
            base: r0 * a.row_stride + p0 * a.col_stride,
            valid: mr.min(i0 + rows - r0),
            lane_stride: a.row_stride,
            depth_stride: a.col_stride,
        };
        lanes.pack(a.data, mr, panel);
    }
}

/// Packs rows `p0..p0 + kc` x columns `j0..j0 + cols` of `b` into NR-column micro-panels:
/// panel `q` holds `out[q * kc * nr + p * nr + j] = B[p0 + p][j0 + q * nr + j]`, zero past `cols`.
pub(super) fn pack_b<T: Widen<E>, E: Acc>(
    b: MatRef<'_, T>,
    (p0, kc): (usize, usize),
    (j0, cols): (usize, usize),
    nr: usize,
    out: &mut [E],
) {
    for (q, panel) in out.chunks_exact_mut(kc * nr).enumerate() {
        let c0 = j0 + q * nr;
        let lanes = Lanes {
            base: p0 * b.row_stride + c0 * b.col_stride,
            valid: nr.min(j0 + cols - c0),
            lane_stride: b.col_stride,
            depth_stride: b.row_stride,
        };
        lanes.pack(b.data, nr, panel);
    }
}

/// The source of one micro-panel: `valid` lanes (rows of A, or columns of B) starting at `base`,
/// `lane_stride` apart, each running along k with `depth_stride`.
pub(crate) struct Lanes {
    pub(crate) base: usize,
    pub(crate) valid: usize,
    pub(crate) lane_stride: usize,
    pub(crate) depth_stride: usize,
}

impl Lanes {
    /// Writes `panel[p * width + l] = src[base + l * lane_stride + p * depth_stride]` (widened)
    /// for every depth `p` (the panel holds `kc * width` elements) and lane `l < valid`, and zero
    /// in the lanes past `valid`.
    ///
    /// When lanes are adjacent in memory (row-major B, or a transposed A) each depth step is one
    /// contiguous copy. When each lane is contiguous along k instead (row-major A, or a transposed
    /// B) the panel is a transpose of the source: see [`Widen::pack_lanes_along_depth`].
    #[inline(always)]
    pub(crate) fn pack<T: Widen<E>, E: Acc>(&self, src: &[T], width: usize, panel: &mut [E]) {
        if self.valid < width {
            for dst in panel.chunks_exact_mut(width) {
                dst[self.valid..].fill(E::zeroed());
            }
        }
        if self.depth_stride == 1 && self.lane_stride != 1 {
            T::pack_lanes_along_depth(src, self, width, panel);
            return;
        }
        for (p, dst) in panel.chunks_exact_mut(width).enumerate() {
            let start = self.base + p * self.depth_stride;
            let dst = &mut dst[..self.valid];
            if self.lane_stride == 1 {
                // A separate loop over a slice, so the compiler vectorises it (a plain copy for
                // f32, a shift per element for bf16).
                for (d, &x) in dst.iter_mut().zip(&src[start..start + self.valid]) {
                    *d = x.widen();
                }
            } else {
                for (l, d) in dst.iter_mut().enumerate() {
                    *d = src[start + l * self.lane_stride].widen();
                }
            }
        }
    }
}

/// The portable way to pack lanes `first..lanes.valid` when each is contiguous along k: one
/// sequential pass per lane, scattered into the panel.
#[inline(always)]
pub(super) fn scatter_lanes<T: Copy, E>(src: &[T], lanes: &Lanes, first: usize, width: usize, panel: &mut [E], widen: impl Fn(T) -> E) {
    let kc = panel.len() / width;
    for l in first..lanes.valid {
        let start = lanes.base + l * lanes.lane_stride;
        for (dst, &x) in panel.chunks_exact_mut(width).zip(&src[start..start + kc]) {
            dst[l] = widen(x);
        }
    }
}
