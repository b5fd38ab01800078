//! The driver: the split of C into one task per thread, and each task's blocked loop nest over
//! packed panels of A and B (see the module doc of `gemm`).

use std::mem::MaybeUninit;

use super::kernels::{Acc, MAX_TILE, MicroKernel};
use super::pack::{PackB, Widen, pack_a};
use super::scratch::with_scratch;
use super::{MatRef, gemv};

/// Below this many multiply-adds (128^3, about 25 us on one AVX-512 core) a product runs on the
/// calling thread, outside `parallel::on_pool` (inside it see [`PARALLEL_MIN_MACS_POLLED`]):
/// waking a pool thread and joining it costs tens of microseconds on a busy or virtualised
/// machine, so smaller products measured slower on two threads than on one.
pub(super) const PARALLEL_MIN_MACS: usize = 128 * 128 * 128;

/// The threshold inside `parallel::on_pool`, whose other workers poll for work instead of
/// sleeping, so a split costs no wake-up. Measured on the `train_step` benchmark at 2 threads
/// (f32 base): the products of 2^18 to 2^21 multiply-adds (the gates' and noise nets' 4-column
/// products and their gradients, 1024 x 256 x 4) on both threads took the step from about 170 to
/// 164 ms; 2^16 gained nothing more.
pub(super) const PARALLEL_MIN_MACS_POLLED: usize = 1 << 18;

/// The product size from which [`run_planned`] splits C over the pool's threads, for this caller.
pub(super) fn parallel_min_macs() -> usize {
    if crate::cpu::parallel::workers_are_polling() { PARALLEL_MIN_MACS_POLLED } else { PARALLEL_MIN_MACS }
}

#[cfg(test)]
thread_local! {
    /// Calls of [`run_planned`] on this thread that cut C into more than one task (for tests).
    pub(super) static SPLIT_CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The base pointer of C, shared by the tasks of one call.
#[derive(Clone, Copy)]
pub(super) struct CPtr<E>(pub(super) *mut E);
// SAFETY: the tasks of one call write pairwise disjoint rectangles of C (see `plan`), and the call
// returns only after every task has finished, so sharing the pointer creates no data race.
unsafe impl<E: Send> Send for CPtr<E> {}
// SAFETY: as for Send.
unsafe impl<E: Send> Sync for CPtr<E> {}

impl<E> CPtr<E> {
    /// The address `offset` elements past C's first (arithmetic only: nothing is dereferenced).
    /// A method, so a closure calling it captures the whole `CPtr`, which is `Sync`.
    pub(super) fn at(self, offset: usize) -> *mut E {
        self.0.wrapping_add(offset)
    }
}

/// How C is cut into tasks: a grid of `row_tasks` x `col_tasks` rectangles, each a whole number
/// of micro-panels (`rows_per_task` rows, `cols_per_task` columns; the last ones may be short).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) row_tasks: usize,
    pub(super) col_tasks: usize,
    pub(super) rows_per_task: usize,
    pub(super) cols_per_task: usize,
}

/// Cuts an `m` x `n` product into at most `threads` tasks, as many as the micro-panels allow.
///
/// Every task runs the whole k loop for its rectangle, packing its own rows of A and its own
/// columns of B, so the tasks never wait for each other (one fork/join per call) and k is never
/// split (determinism). The price is that a row of tasks repacks the same B columns and a column
/// of tasks the same A rows; among grids with the most tasks we pick the one whose tasks are the
/// most square, which minimises that repacking (rows of A + columns of B per task). Ties go to
/// splitting rows: repacking row-major B is a straight copy, repacking A is a gather.
pub(super) fn plan(m: usize, n: usize, mr: usize, nr: usize, threads: usize) -> Plan {
    let (m_panels, n_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    let mut best: Option<(usize, usize, Plan)> = None;
    for row_tasks in 1..=threads.min(m_panels).max(1) {
        let col_tasks = (threads / row_tasks).clamp(1, n_panels.max(1));
        let rows_per_task = m_panels.div_ceil(row_tasks) * mr;
        let cols_per_task = n_panels.div_ceil(col_tasks) * nr;
        // Recount: rounding panels up can leave a task empty.
        let row_tasks = m.div_ceil(rows_per_task).max(1);
        let col_tasks = n.div_ceil(cols_per_task).max(1);
        let candidate = Plan { row_tasks, col_tasks, rows_per_task, cols_per_task };
        let (tasks, perimeter) = (row_tasks * col_tasks, rows_per_task + cols_per_task);
        let better = match best {
            None => true,
            Some((t, p, _)) => tasks > t || (tasks == t && perimeter < p),
        };
        if better {
            best = Some((tasks, perimeter, candidate));
        }
    }
    best.map(|(_, _, plan)| plan).expect("at least one candidate")
}

/// Products with at most this many columns read a row-major A in place rather than pack it.
///
/// Packing a row-major A is a transpose (see [`Widen::pack_lanes_along_depth`]) costing a few
/// cycles per element, amortised over the `n / nr` B micro-panels each A panel meets. For a
/// narrow product (a LoRA down-projection `X Aᵀ` with `n = E r`, a router with `n = E`) that is
/// one or two panels, so packing took about as long as the multiply-adds. Reading A in place
/// costs one scalar broadcast per row and depth step either way; beyond a few B panels the packed
/// A micro-panel's L1 locality pays off again.
const DIRECT_A_MAX_N: usize = 64;

/// Whether [`gemm_with`] reads A in place: A needs no widening, is contiguous along k, and the
/// product is narrow ([`DIRECT_A_MAX_N`]). Either way every entry gets the same bits.
pub(super) fn reads_a_in_place<T: Widen<E>, E: Acc>(a: &MatRef<'_, T>, n: usize) -> bool {
    n <= DIRECT_A_MAX_N && (a.col_stride == 1 || a.cols == 1) && T::in_place(a.data).is_some()
}

/// The whole product with one micro-kernel; inputs are widened to `E` while packing.
pub(super) fn gemm_with<T: Widen<E>, E: Acc, B: PackB<E>>(kernel: &MicroKernel<E>, a: MatRef<'_, T>, b: B, c: &mut [E], accumulate: bool) {
    let direct = reads_a_in_place(&a, b.cols());
    gemm_run(kernel, direct, a, b, c, accumulate);
}

/// [`gemm_with`] with the choice of reading A in place made by the caller (`direct`; ignored
/// unless A is contiguous along k and needs no widening).
pub(super) fn gemm_run<T: Widen<E>, E: Acc, B: PackB<E>>(
    kernel: &MicroKernel<E>,
    direct: bool,
    a: MatRef<'_, T>,
    b: B,
    c: &mut [E],
    accumulate: bool,
) {
    gemm_out(kernel, direct, a, b, Out::Init(c, accumulate));
}

/// Where a product goes: an initialised C, overwritten or (`true`) added to, or uninitialised
/// memory, which is only ever written.
pub(super) enum Out<'c, E> {
    Init(&'c mut [E], bool),
    Uninit(&'c mut [MaybeUninit<E>]),
}

/// [`gemm_run`] into either kind of [`Out`].
pub(super) fn gemm_out<T: Widen<E>, E: Acc, B: PackB<E>>(kernel: &MicroKernel<E>, direct: bool, a: MatRef<'_, T>, b: B, out: Out<'_, E>) {
    let (m, k, n) = (a.rows, a.cols, b.cols());
    if gemv::applies(m) {
        return gemv::gemv(kernel, a, b, out);
    }
    let Some((c, accumulate)) = prepare_out(m, k, n, &a, &b, out) else {
        return;
    };
    let c = CPtr(c);
    let a_in_place = if direct && (a.col_stride == 1 || k == 1) { T::in_place(a.data) } else { None };
    let job = Job { kernel, a, a_in_place, b, c, ldc: n, accumulate };
    run_planned((m, n, k), (kernel.mr, kernel.nr), parallel_min_macs(), &|rows, cols| job.task(rows, cols));
}

/// Checks the shapes of `a` (`m` x `k`), `b` (`k` x `n`) and `out`, and handles the products with
/// nothing to multiply (`m`, `n` or `k` zero). Otherwise returns C's first element and whether to
/// add to it.
///
/// Without accumulation no element of C is read before the task computing it has written it, so
/// uninitialised memory is fine behind the raw pointer.
pub(super) fn prepare_out<T, E: Acc, B: PackB<E>>(
    m: usize,
    k: usize,
    n: usize,
    a: &MatRef<'_, T>,
    b: &B,
    out: Out<'_, E>,
) -> Option<(*mut E, bool)> {
    let c_len = match &out {
        Out::Init(c, _) => c.len(),
        Out::Uninit(c) => c.len(),
    };
    assert!(b.rows() == k, "gemm: inner dimensions differ: a is {m} x {k}, b is {} x {n}", b.rows());
    assert!(m.checked_mul(n) == Some(c_len), "gemm: c has length {c_len}, expected {m} x {n}",);
    a.assert_fits("a");
    b.assert_fits();
    if m == 0 || n == 0 {
        return None;
    }
    if k == 0 {
        match out {
            Out::Init(c, false) => c.fill(E::zeroed()),
            Out::Init(_, true) => {}
            Out::Uninit(c) => c.fill(MaybeUninit::new(E::zeroed())),
        }
        return None;
    }
    Some(match out {
        Out::Init(c, accumulate) => (c.as_mut_ptr(), accumulate),
        Out::Uninit(c) => (c.as_mut_ptr().cast::<E>(), false),
    })
}

/// Cuts an `m` x `n` x `k` product into tasks of whole `mr` x `nr` micro-panels (see [`plan`]:
/// one per pool thread when the product has at least `parallel_min_macs` multiply-adds, enough to
/// be worth waking the pool) and runs
/// `task(rows, cols)` on each rectangle, `rows` and `cols` as `(first, count)`.
pub(super) fn run_planned(
    (m, n, k): (usize, usize, usize),
    (mr, nr): (usize, usize),
    parallel_min_macs: usize,
    task: &(dyn Fn((usize, usize), (usize, usize)) + Sync),
) {
    let threads = if m.saturating_mul(n).saturating_mul(k) >= parallel_min_macs { rayon::current_num_threads() } else { 1 };
    let plan = plan(m, n, mr, nr, threads);
    let run = |t: usize| {
        let (tr, tc) = (t / plan.col_tasks, t % plan.col_tasks);
        let (r0, c0) = (tr * plan.rows_per_task, tc * plan.cols_per_task);
        task((r0, plan.rows_per_task.min(m - r0)), (c0, plan.cols_per_task.min(n - c0)));
    };
    let tasks = plan.row_tasks * plan.col_tasks;
    if tasks > 1 {
        #[cfg(test)]
        SPLIT_CALLS.with(|calls| calls.set(calls.get() + 1));
        // The calling thread computes task 0 itself while the pool takes the rest: one wake-up
        // fewer than handing everything to the pool, which matters for products of ~100 us.
        let run = &run;
        rayon::in_place_scope(|scope| {
            for t in 1..tasks {
                scope.spawn(move |_| run(t));
            }
            run(0);
        });
    } else {
        run(0);
    }
}

/// Everything a task needs; shared read-only by all tasks of one call.
struct Job<'k, 'a, T, E, B> {
    kernel: &'k MicroKernel<E>,
    a: MatRef<'a, T>,
    /// `a.data` when A is read in place (contiguous along k, no widening), so only a partial
    /// last row panel is packed.
    a_in_place: Option<&'a [E]>,
    b: B,
    /// C's first element; row-major with row stride `ldc`.
    c: CPtr<E>,
    ldc: usize,
    accumulate: bool,
}

impl<T: Widen<E>, E: Acc, B: PackB<E>> Job<'_, '_, T, E, B> {
    /// Computes the rectangle rows `r0..r0 + rows` x columns `c0..c0 + cols` of C.
    fn task(&self, (r0, rows): (usize, usize), (c0, cols): (usize, usize)) {
        let kn = self.kernel;
        let (mr, nr) = (kn.mr, kn.nr);
        let k = self.a.cols;
        let kc_max = kn.kc.min(k);
        let a_len = if self.a_in_place.is_some() { mr * kc_max } else { kn.mc.min(rows).div_ceil(mr) * mr * kc_max };
        let b_len = kn.nc.min(cols).div_ceil(nr) * nr * kc_max;
        with_scratch::<E, _>(a_len, b_len, |a_buf, b_buf| {
            for j0 in (c0..c0 + cols).step_by(kn.nc) {
                let nc = kn.nc.min(c0 + cols - j0);
                for p0 in (0..k).step_by(kn.kc) {
                    let kc = kn.kc.min(k - p0);
                    let b_block = &mut b_buf[..nc.div_ceil(nr) * nr * kc];
                    self.b.pack(p0..p0 + kc, j0..j0 + nc, nr, b_block);
                    // The first KC slice overwrites C unless accumulating; later ones add to it.
                    let load_c = self.accumulate || p0 > 0;
                    for i0 in (r0..r0 + rows).step_by(kn.mc) {
                        let mc = kn.mc.min(r0 + rows - i0);
                        let a_panels = match self.a_in_place {
                            Some(data) => {
                                // Full panels are read in place; a partial last one is packed
                                // (zero-padded) so the kernel never reads past A's rows.
                                let full = mc / mr;
                                let edge = &mut a_buf[..mr * kc];
                                if full * mr < mc {
                                    let rows = (i0 + full * mr, mc - full * mr);
                                    pack_a(self.a, rows, (p0, kc), mr, edge);
                                }
                                APanels::InPlace { data, first: i0 * self.a.row_stride + p0, lda: self.a.row_stride, edge }
                            }
                            None => {
                                let a_block = &mut a_buf[..mc.div_ceil(mr) * mr * kc];
                                pack_a(self.a, (i0, mc), (p0, kc), mr, a_block);
                                APanels::Packed(a_block)
                            }
                        };
                        // Address arithmetic only; dereferenced in `tile`.
                        let c_block = self.c.0.wrapping_add(i0 * self.ldc + j0);
                        let blocks = Blocks { kc, load_c, ldc: self.ldc };
                        blocks.macro_kernel(kn, (a_panels, mc), (b_block, nc), c_block);
                    }
                }
            }
        });
    }
}

/// The A side of one macro-kernel call: `rows` rows from row `i0`, depths `p0..p0 + kc`.
#[derive(Clone, Copy)]
enum APanels<'s, E> {
    /// Packed MR-row micro-panels (see [`pack_a`]).
    Packed(&'s [E]),
    /// Read in place: row `i0 + i`, depth `p0 + p` is `data[first + i * lda + p]`; `edge` is the
    /// packed, zero-padded last panel when `rows` is not a multiple of MR.
    InPlace { data: &'s [E], first: usize, lda: usize, edge: &'s [E] },
}

/// One A micro-panel as a kernel reads it: packed (`kc * mr` values), or `mr` rows read in place
/// (`lda` apart, each `kc` long; the slice runs from the first row's start to the last row's end).
#[derive(Clone, Copy)]
enum APanel<'s, E> {
    Packed(&'s [E]),
    InPlace(&'s [E], usize),
}

/// The shape shared by the tiles of one packed A block x packed B block.
struct Blocks {
    kc: usize,
    load_c: bool,
    ldc: usize,
}

impl Blocks {
    /// Every tile of a packed `rows` x `kc` A block times a packed `kc` x `cols` B block, written
    /// to the C block starting at `c_block`.
    fn macro_kernel<E: Acc>(
        &self,
        kn: &MicroKernel<E>,
        (a_panels, rows): (APanels<'_, E>, usize),
        (b_block, cols): (&[E], usize),
        c_block: *mut E,
    ) {
        let (mr, nr, kc) = (kn.mr, kn.nr, self.kc);
        // The A micro-panel stays in L1 while every B micro-panel of the block streams past it
        // from L2.
        for q in 0..rows.div_ceil(mr) {
            let tile_rows = mr.min(rows - q * mr);
            let a = match a_panels {
                APanels::Packed(block) => APanel::Packed(&block[q * kc * mr..(q + 1) * kc * mr]),
                APanels::InPlace { data, first, lda, .. } if tile_rows == mr => {
                    // From the tile's first element to its last (row mr - 1, depth kc - 1):
                    // inside A, whose extent the caller checked.
                    let start = first + q * mr * lda;
                    APanel::InPlace(&data[start..start + (mr - 1) * lda + kc], lda)
                }
                APanels::InPlace { edge, .. } => APanel::Packed(edge),
            };
            for (jq, b_panel) in b_block.chunks_exact(kc * nr).enumerate() {
                let tile_cols = nr.min(cols - jq * nr);
                let c_tile = c_block.wrapping_add(q * mr * self.ldc + jq * nr);
                self.tile(kn, a, b_panel, c_tile, tile_rows, tile_cols);
            }
        }
    }

    /// One micro-kernel call; a partial tile goes through a scratch tile on the stack.
    fn tile<E: Acc>(&self, kn: &MicroKernel<E>, a: APanel<'_, E>, b_panel: &[E], c_tile: *mut E, rows: usize, cols: usize) {
        assert!(b_panel.len() == self.kc * kn.nr);
        // The A reads a kernel makes: `kc * mr` packed values, or rows `lda` apart whose last
        // element ends the slice (`APanel::InPlace` is cut that way).
        let (run, a_ptr, lda) = match a {
            APanel::Packed(panel) => {
                assert!(panel.len() == self.kc * kn.mr);
                (kn.run, panel.as_ptr(), 0)
            }
            APanel::InPlace(rows_slice, lda) => {
                assert!(rows_slice.len() == (kn.mr - 1) * lda + self.kc);
                (kn.run_direct, rows_slice.as_ptr(), lda)
            }
        };
        if rows == kn.mr && cols == kn.nr {
            // SAFETY: the B panel holds kc * nr elements and A the reads the kernel makes (both
            // asserted above); the full mr x nr tile at c_tile lies inside C (its rows and columns are within m and n)
            // and inside this task's rectangle, which no other task touches (see `CPtr`); the
            // kernel was chosen for features this CPU has.
            unsafe { run(self.kc, a_ptr, lda, b_panel.as_ptr(), c_tile, self.ldc, self.load_c) };
            return;
        }
        assert!(kn.mr * kn.nr <= MAX_TILE);
        let mut scratch = [E::zeroed(); MAX_TILE];
        // SAFETY: the panels as above; the scratch tile holds mr x nr at row stride nr.
        unsafe { run(self.kc, a_ptr, lda, b_panel.as_ptr(), scratch.as_mut_ptr(), kn.nr, false) };
        for i in 0..rows {
            for j in 0..cols {
                // Raw reads and writes, no reference: C may be uninitialised memory, read only
                // when `load_c` says an earlier store (or the caller) initialised it.
                let dst = c_tile.wrapping_add(i * self.ldc + j);
                let partial = scratch[i * kn.nr + j];
                // The same single addition the kernel does on a full tile, so results do not
                // depend on whether a tile happened to be full.
                // SAFETY: (i, j) with i < rows, j < cols is the valid part of this tile, inside C
                // and inside this task's rectangle.
                unsafe { dst.write(if self.load_c { dst.read() + partial } else { partial }) };
            }
        }
    }
}
