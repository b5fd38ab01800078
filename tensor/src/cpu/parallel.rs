//! Threaded element loops on rayon's current pool.
//!
//! Work is split into fixed-size chunks of the flat output index, so every element is computed
//! by exactly one closure call with the same inputs whatever the thread count: results are
//! bitwise identical on 1 or N threads. Small inputs stay on the calling thread, where the cost
//! of waking the pool would dominate.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::layout::Layout;
use crate::storage::CpuStorage;
use crate::{DType, WithDType};

/// Runs `f` on a worker of rayon's current pool (the global one outside any pool) and returns
/// its result, with the pool's other workers kept awake for as long as `f` runs.
///
/// Call a whole training or inference loop through this. From a thread outside the pool (such
/// as `main`), every parallel op would hand its work to the pool and sleep until it is done: a
/// wake-up and a hand-off per op, thousands of ops per training step (about 12% of a step of the
/// `train_step` benchmark at one thread). On a worker the calling thread does its share itself.
///
/// The other workers, meanwhile, poll for work instead of going to sleep between ops: an op
/// lasts 0.1 to 1 ms, about what waking a sleeping thread takes on a virtual machine, so a
/// sleeping worker used to arrive when the calling thread had done both halves of the op itself
/// (the second worker did two thirds of the first one's work in a training step at 2 threads;
/// polling took the step from about 156 to 144 ms). Like OpenMP's active wait this keeps the
/// cores busy while `f` runs; after 50 ms without work a worker naps between polls, so a run
/// waiting on I/O gives them back.
///
/// Results do not change: the split of work does not depend on which thread runs it.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let hot = HotWorkers::default();
    rayon::scope(|scope| {
        hot.caller.store(rayon::current_thread_index().unwrap_or(usize::MAX), Ordering::Relaxed);
        for _ in 1..rayon::current_num_threads() {
            let hot = &hot;
            scope.spawn(move |_| hot.poll_for_work());
        }
        // Dropped after `f`, also when it panics, so the pollers always end and the scope can.
        let _stop = hot.stop_on_drop();
        let _polled = PolledCaller::enter();
        f()
    })
}

thread_local! {
    /// Whether this thread is running the closure of an [`on_pool`] call (or a job it took while
    /// that closure waited in a join).
    static POLLED_CALLER: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs inside [`on_pool`], whose other workers poll for work: a task handed
/// to them is taken within microseconds, with no wake-up, so products too small to be worth
/// splitting elsewhere are worth splitting here (see `gemm`'s thresholds).
pub(crate) fn workers_are_polling() -> bool {
    POLLED_CALLER.with(Cell::get)
}

/// Sets [`POLLED_CALLER`] for as long as it lives and then restores it (calls may nest).
struct PolledCaller(bool);

impl PolledCaller {
    fn enter() -> Self {
        PolledCaller(POLLED_CALLER.with(|flag| flag.replace(true)))
    }
}

impl Drop for PolledCaller {
    fn drop(&mut self) {
        POLLED_CALLER.with(|flag| flag.set(self.0));
    }
}

/// The pool workers other than the caller of [`on_pool`], polling rayon for work until stopped.
#[derive(Default)]
struct HotWorkers {
    done: AtomicBool,
    /// The index of the worker running `f` (set before any poller is spawned): a poller that
    /// lands on it (stolen while `f` waited inside a join) returns at once, since polling there
    /// would block `f` until `f` had finished.
    caller: AtomicUsize,
}

/// How long a poller goes without finding work before it naps between polls.
const HOT_IDLE: std::time::Duration = std::time::Duration::from_millis(50);
/// A nap between polls once idle for [`HOT_IDLE`]: the most a worker then lags behind new work.
const HOT_NAP: std::time::Duration = std::time::Duration::from_micros(100);

impl HotWorkers {
    fn stop_on_drop(&self) -> impl Drop + '_ {
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        Stop(&self.done)
    }

    /// Runs pending pool jobs as they appear until [`HotWorkers::stop_on_drop`]'s guard drops.
    fn poll_for_work(&self) {
        if rayon::current_thread_index() == Some(self.caller.load(Ordering::Relaxed)) {
            return;
        }
        // The clock is read only every IDLE_POLLS idle polls: on some virtual machines reading
        // it is a system call.
        const IDLE_POLLS: u32 = 64;
        let mut idle_polls = 0u32;
        let mut idle_since = None;
        while !self.done.load(Ordering::Acquire) {
            if rayon::yield_now() == Some(rayon::Yield::Executed) {
                (idle_polls, idle_since) = (0, None);
                continue;
            }
            idle_polls += 1;
            if idle_polls < IDLE_POLLS {
                // Yield rather than spin: when other processes want the core (tests running side
                // by side, a busy host) they get it.
                std::thread::yield_now();
                continue;
            }
            idle_polls = 0;
            let since = *idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > HOT_IDLE {
                std::thread::sleep(HOT_NAP);
            }
        }
    }
}

/// Below this many elements a loop runs on the calling thread.
pub const PARALLEL_THRESHOLD: usize = 1 << 15;
/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
pub const CHUNK: usize = 1 << 13;

/// Calls `f(start, chunk)` over `out` in chunks, in parallel when `out` is large.
pub fn fill_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.len() < PARALLEL_THRESHOLD {
        f(0, out);
    } else {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| f(i * CHUNK, c));
    }
}

/// A vector of `n` values that `fill(start, chunk)` writes chunk by chunk, without zero-filling
/// the memory first (a `memset` of every output was about 5% of a training step).
///
/// Crate-private because of its contract: every call must write every slot of its chunk. The
/// callers do so by construction (one write per element of a loop over the chunk).
pub(crate) fn build<U: Send>(n: usize, fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync + Send) -> Vec<U> {
    let mut out: Vec<MaybeUninit<U>> = Vec::with_capacity(n);
    // SAFETY: `MaybeUninit` slots need no initialisation; the capacity is `n`.
    unsafe { out.set_len(n) };
    fill_chunks(&mut out, fill);
    let mut out = std::mem::ManuallyDrop::new(out);
    // SAFETY: `fill_chunks` passes every index of `out` to exactly one `fill` call, and each
    // caller's `fill` writes its whole chunk, so all `n` values are initialised.
    // `MaybeUninit<U>` has the layout of `U`, so the allocation is that of a `Vec<U>` of the same
    // length and capacity.
    unsafe { Vec::from_raw_parts(out.as_mut_ptr() as *mut U, out.len(), out.capacity()) }
}

/// `n` copies of `value`, written in parallel when `n` is large. For outputs that must start at
/// zero: `vec![0.0; n]` is a serial `memset` whenever the heap reuses freed memory (as it does
/// with [`super::heap::retain_freed_memory`]), 5% of the calling thread's time in a training step.
pub fn filled<T: Copy + Send + Sync>(n: usize, value: T) -> Vec<T> {
    build(n, |_, chunk| {
        for o in chunk {
            o.write(value);
        }
    })
}

/// `out[i] = f(i)` for every flat index.
pub fn tabulate<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    build(n, |start, chunk| {
        for (j, o) in chunk.iter_mut().enumerate() {
            o.write(f(start + j));
        }
    })
}

/// `f` applied to every element of a contiguous slice.
pub fn map<T: Copy + Sync, U: Send>(src: &[T], f: impl Fn(T) -> U + Sync + Send) -> Vec<U> {
    build(src.len(), |start, chunk| {
        let end = start + chunk.len();
        for (o, &x) in chunk.iter_mut().zip(&src[start..end]) {
            o.write(f(x));
        }
    })
}

/// `f(a[i], b[i])` for every index of two slices of the same length (panics otherwise).
pub fn zip_with<A: Copy + Sync, B: Copy + Sync, U: Send>(a: &[A], b: &[B], f: impl Fn(A, B) -> U + Sync + Send) -> Vec<U> {
    assert_eq!(a.len(), b.len(), "zip_with: slices of different lengths");
    build(a.len(), |start, chunk| {
        let end = start + chunk.len();
        for ((o, &x), &y) in chunk.iter_mut().zip(&a[start..end]).zip(&b[start..end]) {
            o.write(f(x, y));
        }
    })
}

/// Storage offset of the element with flat (row-major) index `flat` in `layout`.
pub fn offset_of(layout: &Layout, mut flat: usize) -> usize {
    let mut off = layout.offset();
    for d in (0..layout.rank()).rev() {
        let size = layout.shape()[d];
        off += (flat % size) * layout.strides()[d];
        flat /= size;
    }
    off
}

/// Calls `f(j, offset)` for flat indices `start + j` in `start..start+len` of `layout`,
/// stepping the multi-index incrementally (one division per call, not per element).
pub fn for_offsets_in(layout: &Layout, start: usize, len: usize, mut f: impl FnMut(usize, usize)) {
    if len == 0 {
        return;
    }
    let rank = layout.rank();
    let (shape, strides) = (layout.shape(), layout.strides());
    let mut index = vec![0usize; rank];
    let mut rem = start;
    for d in (0..rank).rev() {
        index[d] = rem % shape[d];
        rem /= shape[d];
    }
    let mut off = offset_of(layout, start);
    for j in 0..len {
        f(j, off);
        for d in (0..rank).rev() {
            index[d] += 1;
            off += strides[d];
            if index[d] < shape[d] {
                break;
            }
            off -= strides[d] * index[d];
            index[d] = 0;
        }
    }
}

/// A dense row-major copy of the elements a (possibly strided) layout views.
pub fn gather_strided<T: WithDType>(src: &[T], layout: &Layout) -> Vec<T> {
    let mut out = vec![T::default(); layout.elem_count()];
    fill_chunks(&mut out, |start, chunk| for_offsets_in(layout, start, chunk.len(), |j, off| chunk[j] = src[off]));
    out
}

/// Converts a slice to another dtype. Conversions among the sub-64-bit floats go through f32
/// (exact for every input), others through f64.
pub fn convert_slice<S: WithDType>(src: &[S], dtype: DType) -> CpuStorage {
    fn via<S: WithDType, D: WithDType>(src: &[S]) -> Vec<D> {
        let through_f32 = !matches!(S::DTYPE, DType::F64 | DType::I64 | DType::U32)
            && !matches!(D::DTYPE, DType::F64 | DType::I64 | DType::U32);
        if through_f32 { map(src, |x| D::from_f32(x.to_f32())) } else { map(src, |x| D::from_f64(x.to_f64())) }
    }
    match dtype {
        DType::F64 => CpuStorage::F64(via(src)),
        DType::F32 => CpuStorage::F32(via(src)),
        DType::BF16 => CpuStorage::BF16(via(src)),
        DType::F16 => CpuStorage::F16(via(src)),
        DType::U8 => CpuStorage::U8(via(src)),
        DType::U32 => CpuStorage::U32(via(src)),
        DType::I64 => CpuStorage::I64(via(src)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The threaded strided gather equals the sequential `Layout::offsets` walk (the oracle),
        /// on views large enough to take the parallel path.
        #[test]
        fn gather_matches_sequential_walk(rows in 1usize..300, cols in 1usize..300, start in 0usize..5, tr in any::<bool>()) {
            let base = Layout::contiguous(&[rows + start, cols]);
            let mut l = base.narrow(0, start, rows);
            if tr { l = l.transpose(0, 1); }
            let src: Vec<f32> = (0..base.elem_count()).map(|i| i as f32).collect();
            let expect: Vec<f32> = l.offsets().map(|o| src[o]).collect();
            let got = pool(2).install(|| gather_strided(&src, &l));
            prop_assert_eq!(got, expect);
        }
    }

    #[test]
    fn map_is_thread_count_invariant() {
        let src: Vec<f32> = (0..100_000).map(|i| (i as f32).sin()).collect();
        let one = pool(1).install(|| map(&src, |x| x.exp()));
        let two = pool(2).install(|| map(&src, |x| x.exp()));
        let oracle: Vec<f32> = src.iter().map(|x| x.exp()).collect();
        assert_eq!(one, oracle);
        assert_eq!(two, oracle);
    }

    /// `on_pool` returns `f`'s result, nests, and ends (its pollers stopped) when `f` panics,
    /// after which the pool still works.
    #[test]
    fn on_pool_returns_nests_and_survives_a_panic() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        pool.install(|| {
            assert_eq!(on_pool(|| 41 + 1), 42);
            let nested = on_pool(|| on_pool(|| (0..100_000u64).into_par_iter().sum::<u64>()));
            assert_eq!(nested, 4_999_950_000);
            let caught = std::panic::catch_unwind(|| on_pool(|| panic!("inside on_pool")));
            assert!(caught.is_err());
            assert_eq!(on_pool(|| (0..1000u32).into_par_iter().map(|x| x * 2).sum::<u32>()), 999_000);
        });
        // From outside any pool too (the global one).
        assert_eq!(on_pool(|| 7), 7);
    }

    /// `workers_are_polling` holds exactly while an `on_pool` closure runs on this thread, nested
    /// or not, and is cleared again when that closure returns or panics.
    #[test]
    fn workers_are_polling_only_inside_on_pool() {
        pool(2).install(|| {
            assert!(!workers_are_polling());
            on_pool(|| {
                assert!(workers_are_polling());
                on_pool(|| assert!(workers_are_polling()));
                assert!(workers_are_polling());
            });
            assert!(!workers_are_polling());
            let caught = std::panic::catch_unwind(|| on_pool(|| panic!("inside on_pool")));
            assert!(caught.is_err());
            assert!(!workers_are_polling());
        });
        // From outside any pool (as `main` calls it): set on the worker that runs `f`, never here.
        assert!(on_pool(workers_are_polling));
        assert!(!workers_are_polling());
    }
}
