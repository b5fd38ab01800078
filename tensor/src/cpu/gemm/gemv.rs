//! Products with a single row of A (`m = 1`): `c = a · B`, the shape of every projection while a
//! model decodes one token.
//!
//! The blocked driver packs a `KC x NC` block of B (1 MiB of f32) and runs an `MR`-row
//! micro-kernel over it from L2. With one row of A the kernel computes `MR - 1` rows of zero
//! padding, and the packed block makes a round trip through L2 that a single row never amortises.
//! Here B is consumed [`WIDTH`] columns at a time over the whole depth: each group is packed `KC`
//! rows at a time into a panel that stays in L1 (the driver's own packing, so NF4 decodes and bf16
//! widens exactly as there) and multiplied into `WIDTH` accumulators at once. A transposed f32
//! or bf16 weight (`x · Wᵀ`, the usual projection) skips the panel: with a fused kernel its
//! columns are transposed 8 x 8 in registers (bf16 widened on the way) and multiplied in straight
//! away (`PackB::fused_row_sums`), in the same order. Most of a dense decode is then the reading
//! of B from memory (see `benches/RESULTS.md`, CPU generation).
//!
//! # The same bits as the driver
//!
//! Each entry sums the products of one KC block in increasing `p` into an accumulator that starts
//! at zero, with the micro-kernel's multiply-add (fused exactly when the driver's kernel is), and
//! C is set to the first block's sum (or incremented by it when accumulating) and incremented by
//! each later one. That is the driver's order term for term, so a row of `A · B` gets the same bits
//! whether it is computed alone or inside a larger product, and on any thread count.

use std::borrow::Cow;

use super::{Acc, CPtr, MicroKernel, Out, PackB, Widen, prepare_out, run_planned, with_scratch};
use crate::cpu::gemm::MatRef;

/// Columns of B per panel: 32 accumulators, two 512-bit or four 256-bit vectors of f32 (eight of
/// f64), updated together at each depth step, so the dependent multiply-adds of one column
/// overlap with the others'. The panel (`KC x WIDTH`, 32 KiB of f32) stays in L1. Measured on the
/// decode benchmark: 32 columns were 4-5% faster than 16 for the panel path (then taken by bf16
/// and NF4 weights; NF4 still is); the fused path of transposed f32 and bf16 weights sweeps 16
/// of them at a time (see `fused_lane_sums_with`).
pub(super) const WIDTH: usize = 32;

/// From this many multiply-adds on, the columns are split over the pool's threads. One row reads
/// each element of B once, so the product is bound by memory bandwidth, which a second core adds
/// to; a 512 x 512 f32 weight (1 MiB, about 100 us from DRAM on one core) already pays for waking a
/// pool thread. Outside `parallel::on_pool` the blocked driver's threshold is higher, because its
/// products are compute-bound there; inside it both are 2^18.
pub(super) const PARALLEL_MIN_MACS: usize = 1 << 18;

/// Whether [`gemv`] computes this product (one row of A, and nothing to gain from the blocked
/// driver).
pub(super) fn applies(m: usize) -> bool {
    m == 1
}

/// `out = a · b` (or `+=`) for `a` with one row, in the order of `kernel` (see the module docs).
pub(super) fn gemv<T: Widen<E>, E: Acc, B: PackB<E>>(kernel: &MicroKernel<E>, a: MatRef<'_, T>, b: B, out: Out<'_, E>) {
    let (m, k, n) = (a.rows, a.cols, b.cols());
    debug_assert!(applies(m));
    let Some((c, accumulate)) = prepare_out(m, k, n, &a, &b, out) else {
        return;
    };
    let a_row = a_row::<T, E>(&a);
    let c = CPtr(c);
    let kc = kernel.kc;
    let fused = kernel.fused;
    let task = |_rows: (usize, usize), (c0, cols): (usize, usize)| {
        with_scratch::<E, _>(0, kc.min(k) * WIDTH, |_, panel_buf| {
            for j0 in (c0..c0 + cols).step_by(WIDTH) {
                let width = WIDTH.min(c0 + cols - j0);
                let first = c.at(j0);
                // The driver's order: C is set by the first KC block's sum, unless accumulating
                // into it, and incremented by every later one.
                let mut sums = [E::zeroed(); WIDTH];
                if accumulate {
                    for (l, sum) in sums[..width].iter_mut().enumerate() {
                        // SAFETY: j0 + l < c0 + cols <= n: inside C's one row, which the caller
                        // initialised when accumulating.
                        *sum = unsafe { first.wrapping_add(l).read() };
                    }
                }
                for p0 in (0..k).step_by(kc) {
                    let depth = kc.min(k - p0);
                    let a_block = &a_row[p0..p0 + depth];
                    // A transposed f32 or bf16 weight skips the panel: transposed in registers and
                    // summed in the same order (see `PackB::fused_row_sums`).
                    let fused_sums = if fused { b.fused_row_sums(a_block, p0..p0 + depth, j0..j0 + width) } else { None };
                    let block = fused_sums.unwrap_or_else(|| {
                        let panel = &mut panel_buf[..depth * WIDTH];
                        b.pack(p0..p0 + depth, j0..j0 + width, WIDTH, panel);
                        panel_sums(fused, a_block, panel)
                    });
                    let sets = p0 == 0 && !accumulate;
                    for (sum, partial) in sums.iter_mut().zip(block) {
                        *sum = if sets { partial } else { *sum + partial };
                    }
                }
                for (l, &sum) in sums[..width].iter().enumerate() {
                    // SAFETY: j0 + l < c0 + cols <= n: inside C's one row, and inside this task's
                    // columns, which no other task writes (see `CPtr`).
                    unsafe { first.wrapping_add(l).write(sum) };
                }
            }
        });
    };
    run_planned((m, n, k), (1, WIDTH), PARALLEL_MIN_MACS, &task);
}

/// A's one row as `E` values: borrowed when it needs no widening and is contiguous, else gathered
/// (k values: nothing beside the `k x n` product).
fn a_row<'a, T: Widen<E>, E: Acc>(a: &MatRef<'a, T>) -> Cow<'a, [E]> {
    if (a.col_stride == 1 || a.cols == 1)
        && let Some(data) = T::in_place(a.data)
    {
        return Cow::Borrowed(&data[..a.cols]);
    }
    Cow::Owned((0..a.cols).map(|p| a.data[p * a.col_stride].widen()).collect())
}

/// `sums[l] = Σ_p a[p] · panel[p * WIDTH + l]` in increasing `p` from zero, one multiply-add per
/// term, fused when `fused` (then on the FMA instructions where the CPU has them).
fn panel_sums<E: Acc>(fused: bool, a: &[E], panel: &[E]) -> [E; WIDTH] {
    debug_assert_eq!(a.len() * WIDTH, panel.len());
    if fused {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has FMA and AVX2 (checked just above).
            return unsafe { panel_sums_fma(a, panel) };
        }
        return panel_sums_with(a, panel, |x, y, acc| x.mul_add(y, acc));
    }
    panel_sums_with(a, panel, |x, y, acc| acc + x * y)
}

/// [`panel_sums_with`] fused, compiled for FMA so `mul_add` is one instruction per vector.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_sums_fma<E: Acc>(a: &[E], panel: &[E]) -> [E; WIDTH] {
    panel_sums_with(a, panel, |x, y, acc| x.mul_add(y, acc))
}

/// The loop both orders share: the `WIDTH` accumulators are independent, so the compiler keeps
/// them in vector registers and each depth step is one multiply-add per vector.
#[inline(always)]
fn panel_sums_with<E: Acc>(a: &[E], panel: &[E], madd: impl Fn(E, E, E) -> E) -> [E; WIDTH] {
    let mut acc = [E::zeroed(); WIDTH];
    for (&x, row) in a.iter().zip(panel.chunks_exact(WIDTH)) {
        for l in 0..WIDTH {
            acc[l] = madd(x, row[l], acc[l]);
        }
    }
    acc
}
