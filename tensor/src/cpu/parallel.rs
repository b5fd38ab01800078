//! Threaded element loops on rayon's current pool.
//!
//! Work is split into fixed-size chunks of the flat output index, so every element is computed
//! by exactly one closure call with the same inputs whatever the thread count: results are
//! bitwise identical on 1 or N threads. Small inputs stay on the calling thread, where the cost
//! of waking the pool would dominate.

use rayon::prelude::*;

use crate::layout::Layout;
use crate::storage::CpuStorage;
use crate::{DType, WithDType};

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

/// `out[i] = f(i)` for every flat index.
pub fn tabulate<T: Send + Default + Clone>(n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    let mut out = vec![T::default(); n];
    fill_chunks(&mut out, |start, chunk| {
        for (j, o) in chunk.iter_mut().enumerate() {
            *o = f(start + j);
        }
    });
    out
}

/// `f` applied to every element of a contiguous slice.
pub fn map<T: Copy + Sync, U: Send + Default + Clone>(src: &[T], f: impl Fn(T) -> U + Sync + Send) -> Vec<U> {
    let mut out = vec![U::default(); src.len()];
    fill_chunks(&mut out, |start, chunk| {
        let len = chunk.len();
        for (o, &x) in chunk.iter_mut().zip(&src[start..start + len]) {
            *o = f(x);
        }
    });
    out
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
}
