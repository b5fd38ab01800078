//! Reductions: sum, mean, max, min, argmax, argmin, and `sum_to_shape` (the inverse of
//! broadcasting, for gradients).
//!
//! Every reduction makes its input contiguous and views it as `[outer, size, inner]`, the reduced
//! dims merged into `size` (non-adjacent reduced dims are first permuted to the back). The
//! contract, oracle and tolerance rule are in `brainstacks_kernels::reduce`.
//!
//! Determinism: the axis is split into fixed blocks of [`BLOCK`] values; each block's partial
//! result and the in-order combination of the blocks depend only on the shape. Threads take
//! whole `(outer, block, inner-range)` units, so results are bitwise identical for any thread
//! count. Float sums accumulate in f64 (f32/bf16/f16 widen exactly) and round once.

use half::{bf16, f16};
use rayon::prelude::*;

use super::norm::dispatch_all;
use crate::cpu::parallel::PARALLEL_THRESHOLD;
use crate::{CpuStorage, DType, Dim, Error, Result, Tensor, WithDType};

/// Values of the reduced axis per block. Fixed (never derived from the thread count) because
/// it decides the summation order.
pub const BLOCK: usize = 4096;
/// Roughly how many input elements one parallel task reads.
const TASK_WORK: usize = 1 << 15;

/// Calls `f(start, chunk)` over `out` in chunks of `chunk` elements, on rayon's pool when the
/// whole job reads at least `work >= PARALLEL_THRESHOLD` elements. Callers compute each element
/// independently of the chunking, so the split never changes a result.
pub(crate) fn par_chunks<A: Send>(out: &mut [A], chunk: usize, work: usize, f: impl Fn(usize, &mut [A]) + Sync + Send) {
    let chunk = chunk.max(1);
    if work < PARALLEL_THRESHOLD || out.len() <= chunk {
        f(0, out);
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(|(k, c)| f(k * chunk, c));
    }
}

/// A contiguous input viewed as `[outer, size, inner]`, reduced along `size`.
pub(crate) struct Axis {
    pub outer: usize,
    pub size: usize,
    pub inner: usize,
}

/// Reduces `x` (`[outer, size, inner]`) along the middle axis in fixed blocks.
///
/// `accumulate(acc, base, s0, rows)` folds rows `s0 .. s0 + rows` of one block into `acc`, a
/// run of consecutive `inner` positions whose first element `(o, s0, i0)` is at `x[base]`
/// (row `s` of position `k` is at `base + (s - s0) * inner + k`). `combine(a, b)` merges block
/// `b`'s result into the running result `a` of the earlier blocks. An empty axis gives `init`.
fn reduce_blocks<A: Copy + Send + Sync>(
    ax: &Axis,
    init: A,
    accumulate: impl Fn(&mut [A], usize, usize, usize) + Sync + Send,
    combine: impl Fn(A, A) -> A,
) -> Vec<A> {
    let Axis { outer, size, inner } = *ax;
    let nblk = size.div_ceil(BLOCK);
    if nblk == 0 || outer * inner == 0 {
        return vec![init; outer * inner];
    }
    // partial[(o * nblk + b) * inner + i]: block b's result for output (o, i).
    let mut partial = vec![init; outer * nblk * inner];
    let rows_per_block = size.min(BLOCK);
    let chunk = (TASK_WORK / rows_per_block).max(1);
    par_chunks(&mut partial, chunk, outer * size * inner, |start, part| {
        // Split the chunk at row boundaries of `partial` (one row per (o, b)).
        let mut p = 0;
        while p < part.len() {
            let flat = start + p;
            let (ob, i0) = (flat / inner, flat % inner);
            let (o, b) = (ob / nblk, ob % nblk);
            let len = (inner - i0).min(part.len() - p);
            let s0 = b * BLOCK;
            let rows = BLOCK.min(size - s0);
            accumulate(&mut part[p..p + len], (o * size + s0) * inner + i0, s0, rows);
            p += len;
        }
    });
    if nblk == 1 {
        return partial;
    }
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let mut acc = partial[o * nblk * inner + i];
            for b in 1..nblk {
                acc = combine(acc, partial[(o * nblk + b) * inner + i]);
            }
            out.push(acc);
        }
    }
    out
}

/// Sums every output of `ax` into an accumulator `A` (f64 for floats, the dtype itself for
/// wrapping integer sums). A single column (`inner == 1`) is summed in four interleaved lanes,
/// combined as `(l0 + l1) + (l2 + l3)`, which breaks the add-latency chain; wider rows add whole
/// rows at a time, which the compiler vectorises across `inner`.
fn sum_axis<T: WithDType, A: Copy + Send + Sync>(
    x: &[T],
    ax: &Axis,
    zero: A,
    add: impl Fn(A, T) -> A + Sync + Send + Copy,
    combine: impl Fn(A, A) -> A + Sync + Send + Copy,
) -> Vec<A> {
    let inner = ax.inner;
    reduce_blocks(
        ax,
        zero,
        |acc, base, _s0, rows| {
            if inner == 1 {
                let row = &x[base..base + rows];
                let mut lanes = [zero; 4];
                let mut quads = row.chunks_exact(4);
                for q in &mut quads {
                    for k in 0..4 {
                        lanes[k] = add(lanes[k], q[k]);
                    }
                }
                for (k, &v) in quads.remainder().iter().enumerate() {
                    lanes[k] = add(lanes[k], v);
                }
                acc[0] = combine(combine(lanes[0], lanes[1]), combine(lanes[2], lanes[3]));
            } else {
                for s in 0..rows {
                    let row = &x[base + s * inner..base + s * inner + acc.len()];
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a = add(*a, v);
                    }
                }
            }
        },
        combine,
    )
}

/// The running best of an arg-reduction: value and index along the axis.
#[derive(Clone, Copy)]
struct Best<T> {
    value: T,
    index: usize,
}

/// First extreme along the axis: `better(v, best)` says `v` replaces the current best; NaN
/// (the only value unequal to itself) beats everything and then sticks, so NaN propagates and
/// the first NaN is the arg; ties keep the earlier index.
fn extreme_axis<T: WithDType>(x: &[T], ax: &Axis, better: impl Fn(T, T) -> bool + Copy + Sync + Send) -> Vec<Best<T>> {
    let inner = ax.inner;
    #[allow(clippy::eq_op)]
    let is_nan = |v: T| v != v;
    let wins = move |v: T, best: T| !is_nan(best) && (is_nan(v) || better(v, best));
    let init = Best { value: T::default(), index: usize::MAX };
    reduce_blocks(
        ax,
        init,
        |acc, base, s0, rows| {
            if inner == 1 {
                // One contiguous column: a plain scan, no per-element slicing.
                let row = &x[base..base + rows];
                let mut best = Best { value: row[0], index: s0 };
                for (s, &v) in row.iter().enumerate().skip(1) {
                    if wins(v, best.value) {
                        best = Best { value: v, index: s0 + s };
                    }
                }
                acc[0] = best;
                return;
            }
            for (k, a) in acc.iter_mut().enumerate() {
                *a = Best { value: x[base + k], index: s0 };
            }
            for s in 1..rows {
                let row = &x[base + s * inner..base + s * inner + acc.len()];
                for (a, &v) in acc.iter_mut().zip(row) {
                    if wins(v, a.value) {
                        *a = Best { value: v, index: s0 + s };
                    }
                }
            }
        },
        // Blocks are combined in order, so a later block only wins by being strictly better
        // (or the first NaN).
        |a, b| if wins(b.value, a.value) { b } else { a },
    )
}

/// Sorted, de-duplicated reduced dims (`dims` empty means all of them).
fn resolve_dims<D: Dim>(op: &'static str, shape: &[usize], dims: &[D]) -> Result<Vec<usize>> {
    if dims.is_empty() {
        return Ok((0..shape.len()).collect());
    }
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        let d = d.resolve(op, shape)?;
        if out.contains(&d) {
            return Err(Error::invalid(op, shape, format!("dim {d} is listed more than once")));
        }
        out.push(d);
    }
    out.sort_unstable();
    Ok(out)
}

/// The output shape of reducing `dims` (sorted) of `shape`.
fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(shape.len());
    for (i, &d) in shape.iter().enumerate() {
        if dims.contains(&i) {
            if keepdim {
                out.push(1);
            }
        } else {
            out.push(d);
        }
    }
    out
}

/// A contiguous tensor whose reduced dims (sorted) form one block `[outer, size, inner]`.
/// Adjacent dims need no copy beyond `contiguous()`; otherwise the kept dims are permuted to
/// the front first, so each output's values are still read in row-major order of the reduced
/// dims.
fn as_axis(t: &Tensor, dims: &[usize]) -> Result<(Tensor, Axis)> {
    let shape = t.shape();
    let prod = |r: &[usize]| r.iter().product::<usize>();
    let adjacent = dims.windows(2).all(|w| w[1] == w[0] + 1);
    if dims.is_empty() {
        return Ok((t.contiguous()?, Axis { outer: prod(shape), size: 1, inner: 1 }));
    }
    if adjacent {
        let (a, b) = (dims[0], dims[dims.len() - 1]);
        let ax = Axis { outer: prod(&shape[..a]), size: prod(&shape[a..=b]), inner: prod(&shape[b + 1..]) };
        return Ok((t.contiguous()?, ax));
    }
    let mut perm: Vec<usize> = (0..shape.len()).filter(|d| !dims.contains(d)).collect();
    let outer = perm.iter().map(|&d| shape[d]).product();
    perm.extend_from_slice(dims);
    let size = dims.iter().map(|&d| shape[d]).product();
    Ok((t.permute(&perm)?.contiguous()?, Axis { outer, size, inner: 1 }))
}

/// The contiguous elements of `t` as a typed slice (after `as_axis`, always available).
fn slice_of<'a, T: WithDType>(op: &'static str, t: &'a Tensor) -> Result<&'a [T]> {
    let data = t.cpu_slice::<T>(op)?;
    let (a, b) = t.layout().contiguous_range().ok_or_else(|| Error::invalid(op, t.shape(), "internal: expected a contiguous tensor"))?;
    Ok(&data[a..b])
}

/// f64-accumulated float sums over `ax`, divided by `divisor` (1 for a sum, `size` for a mean),
/// rounded once to `T`.
fn float_sum<T: WithDType>(op: &'static str, t: &Tensor, ax: &Axis, divisor: f64) -> Result<CpuStorage> {
    let x = slice_of::<T>(op, t)?;
    let sums = sum_axis(x, ax, 0.0f64, |a, v: T| a + v.to_f64(), |a, b| a + b);
    Ok(T::into_storage(sums.into_iter().map(|s| T::from_f64(s / divisor)).collect()))
}

/// Wrapping integer sums over `ax` (wrapping addition is associative, so the blocking does not
/// change the result).
fn int_sum<T: WithDType>(op: &'static str, t: &Tensor, ax: &Axis, add: fn(T, T) -> T) -> Result<CpuStorage> {
    let x = slice_of::<T>(op, t)?;
    Ok(T::into_storage(sum_axis(x, ax, T::default(), add, add)))
}

impl Tensor {
    /// Sum over `dims` (an empty slice reduces every dim; a repeated dim is an error). Keeps the
    /// dtype: floats accumulate in f64 and round once (an empty dim sums to 0); integers wrap.
    /// With `keepdim` the reduced dims stay as size 1.
    pub fn sum<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        const OP: &str = "sum";
        let dims = resolve_dims(OP, self.shape(), dims)?;
        let out_shape = reduced_shape(self.shape(), &dims, keepdim);
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::reduce(OP, self, &dims, &out_shape, brainstacks_kernels::reduce::ReduceOp::Sum);
        }
        let (x, ax) = as_axis(self, &dims)?;
        let storage = match self.dtype() {
            DType::F64 => float_sum::<f64>(OP, &x, &ax, 1.0)?,
            DType::F32 => float_sum::<f32>(OP, &x, &ax, 1.0)?,
            DType::BF16 => float_sum::<bf16>(OP, &x, &ax, 1.0)?,
            DType::F16 => float_sum::<f16>(OP, &x, &ax, 1.0)?,
            DType::U8 => int_sum::<u8>(OP, &x, &ax, u8::wrapping_add)?,
            DType::U32 => int_sum::<u32>(OP, &x, &ax, u32::wrapping_add)?,
            DType::I64 => int_sum::<i64>(OP, &x, &ax, i64::wrapping_add)?,
        };
        Tensor::from_cpu_storage(storage, &out_shape)
    }

    /// Mean over `dims` (empty = all dims; repeated dim = error), float dtypes only: the f64 sum
    /// divided by the count in f64, rounded once. An empty reduction gives NaN, as in PyTorch.
    pub fn mean<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Tensor> {
        const OP: &str = "mean";
        let dims = resolve_dims(OP, self.shape(), dims)?;
        let out_shape = reduced_shape(self.shape(), &dims, keepdim);
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::reduce(OP, self, &dims, &out_shape, brainstacks_kernels::reduce::ReduceOp::Mean);
        }
        let (x, ax) = as_axis(self, &dims)?;
        let n = ax.size as f64;
        let storage = match self.dtype() {
            DType::F64 => float_sum::<f64>(OP, &x, &ax, n)?,
            DType::F32 => float_sum::<f32>(OP, &x, &ax, n)?,
            DType::BF16 => float_sum::<bf16>(OP, &x, &ax, n)?,
            DType::F16 => float_sum::<f16>(OP, &x, &ax, n)?,
            dt => return Err(Error::dtype(OP, dt, "mean needs a floating-point dtype (convert first)")),
        };
        Tensor::from_cpu_storage(storage, &out_shape)
    }

    /// Shared body of max/min/argmax/argmin over one dim; returns the winning `Best`s and the
    /// output shape.
    fn extreme_along<T: WithDType, D: Dim, F: Fn(T, T) -> bool + Copy + Sync + Send>(
        &self,
        op: &'static str,
        dim: D,
        keepdim: bool,
        better: F,
    ) -> Result<(Vec<Best<T>>, Vec<usize>)> {
        let d = dim.resolve(op, self.shape())?;
        if self.shape()[d] == 0 {
            return Err(Error::invalid(op, self.shape(), format!("dim {d} is empty, so it has no {op}")));
        }
        let out_shape = reduced_shape(self.shape(), &[d], keepdim);
        let (x, ax) = as_axis(self, &[d])?;
        Ok((extreme_axis(slice_of::<T>(op, &x)?, &ax, better), out_shape))
    }

    /// Largest value along `dim`, any dtype (kept). NaN propagates; an empty dim is an error.
    pub fn max<D: Dim>(&self, dim: D, keepdim: bool) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return self.cuda_extreme("max", dim, keepdim);
        }
        dispatch_all!(self.dtype(), T => {
            let (best, shape) = self.extreme_along::<T, D, _>("max", dim, keepdim, |a, b| a > b)?;
            Tensor::from_cpu_storage(T::into_storage(best.into_iter().map(|b| b.value).collect()), &shape)
        })
    }

    /// Smallest value along `dim`, any dtype (kept). NaN propagates; an empty dim is an error.
    pub fn min<D: Dim>(&self, dim: D, keepdim: bool) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return self.cuda_extreme("min", dim, keepdim);
        }
        dispatch_all!(self.dtype(), T => {
            let (best, shape) = self.extreme_along::<T, D, _>("min", dim, keepdim, |a, b| a < b)?;
            Tensor::from_cpu_storage(T::into_storage(best.into_iter().map(|b| b.value).collect()), &shape)
        })
    }

    /// Index (I64) of the largest value along `dim`: the first on ties, the first NaN if any
    /// (consistent with `max`). An empty dim is an error.
    pub fn argmax<D: Dim>(&self, dim: D, keepdim: bool) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return self.cuda_extreme("argmax", dim, keepdim);
        }
        dispatch_all!(self.dtype(), T => {
            let (best, shape) = self.extreme_along::<T, D, _>("argmax", dim, keepdim, |a, b| a > b)?;
            Tensor::from_cpu_storage(CpuStorage::I64(best.into_iter().map(|b| b.index as i64).collect()), &shape)
        })
    }

    /// Index (I64) of the smallest value along `dim`: the first on ties, the first NaN if any
    /// (consistent with `min`). An empty dim is an error.
    pub fn argmin<D: Dim>(&self, dim: D, keepdim: bool) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return self.cuda_extreme("argmin", dim, keepdim);
        }
        dispatch_all!(self.dtype(), T => {
            let (best, shape) = self.extreme_along::<T, D, _>("argmin", dim, keepdim, |a, b| a < b)?;
            Tensor::from_cpu_storage(CpuStorage::I64(best.into_iter().map(|b| b.index as i64).collect()), &shape)
        })
    }

    /// max/min/argmax/argmin of a CUDA tensor: the same argument checks as the CPU path, then
    /// the reduce kernel.
    #[cfg(feature = "cuda")]
    fn cuda_extreme<D: Dim>(&self, op: &'static str, dim: D, keepdim: bool) -> Result<Tensor> {
        use brainstacks_kernels::reduce::{ArgReduceOp, ReduceOp};
        let d = dim.resolve(op, self.shape())?;
        if self.shape()[d] == 0 {
            return Err(Error::invalid(op, self.shape(), format!("dim {d} is empty, so it has no {op}")));
        }
        let out_shape = reduced_shape(self.shape(), &[d], keepdim);
        match op {
            "max" => crate::cuda::ops::reduce(op, self, &[d], &out_shape, ReduceOp::Max),
            "min" => crate::cuda::ops::reduce(op, self, &[d], &out_shape, ReduceOp::Min),
            "argmax" => crate::cuda::ops::arg_reduce(op, self, d, &out_shape, ArgReduceOp::ArgMax),
            _ => crate::cuda::ops::arg_reduce(op, self, d, &out_shape, ArgReduceOp::ArgMin),
        }
    }

    /// Sum of every element as a rank-0 tensor of the same dtype (see [`Tensor::sum`]).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum::<usize>(&[], false)
    }

    /// Mean of every element as a rank-0 tensor (float dtypes; see [`Tensor::mean`]).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean::<usize>(&[], false)
    }

    /// Sums `self` down to `shape` (the inverse of broadcasting: reduce the leading extra dims
    /// and the dims that are 1 in `shape`), keeping the dtype. Used by autograd for broadcast
    /// gradients. `shape` must be one `self` could have been broadcast from (a `ShapeMismatch`
    /// naming both shapes otherwise); when nothing needs reducing the result is a reshape view.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "sum_to_shape";
        let src = self.shape();
        if shape.len() > src.len() {
            return Err(Error::shape(OP, src, shape, "the target has a higher rank than the tensor"));
        }
        let extra = src.len() - shape.len();
        let mut dims: Vec<usize> = (0..extra).collect();
        for (i, &t) in shape.iter().enumerate() {
            let s = src[extra + i];
            if t == s {
                continue;
            }
            if t != 1 {
                return Err(Error::shape(OP, src, shape, format!("dim {} of size {s} cannot be summed to size {t}", extra + i)));
            }
            dims.push(extra + i);
        }
        if dims.is_empty() {
            return self.reshape(shape);
        }
        self.sum(&dims, true)?.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;
    use brainstacks_kernels::reduce as oracle;
    use proptest::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// Unit roundoff and smallest subnormal of each float dtype (the tolerance rule's `u_out`
    /// and `tiny`).
    fn unit(dt: DType) -> (f64, f64) {
        match dt {
            DType::F64 => (f64::EPSILON / 2.0, f64::from_bits(1)),
            DType::F32 => (f32::EPSILON as f64 / 2.0, f32::from_bits(1) as f64),
            DType::BF16 => (2f64.powi(-8), bf16::from_bits(1).to_f64()),
            DType::F16 => (2f64.powi(-11), f16::from_bits(1).to_f64()),
            _ => (0.0, 0.0),
        }
    }

    /// The input moved to `[outer, size, inner]` order by hand (reduced dims to the middle), as
    /// f64: the oracle's input.
    fn oracle_input(t: &Tensor, dims: &[usize]) -> (Vec<f64>, usize, usize) {
        let kept: Vec<usize> = (0..t.rank()).filter(|d| !dims.contains(d)).collect();
        let mut perm = kept.clone();
        perm.extend_from_slice(dims);
        let outer = kept.iter().map(|&d| t.shape()[d]).product();
        let size = dims.iter().map(|&d| t.shape()[d]).product();
        (t.permute(&perm).unwrap().to_vec_f64().unwrap(), outer, size)
    }

    /// A random shape (dims of size 0..5), a random non-empty-or-empty set of dims given as
    /// negative or positive indices, and a view kind (plain, transposed, narrowed).
    fn case() -> impl Strategy<Value = (Vec<usize>, Vec<bool>, Vec<bool>, u8, u64)> {
        proptest::collection::vec(0usize..5, 0..4).prop_flat_map(|shape| {
            let r = shape.len();
            (
                Just(shape),
                proptest::collection::vec(any::<bool>(), r),
                proptest::collection::vec(any::<bool>(), r),
                0u8..3,
                any::<u64>(),
            )
        })
    }

    /// A tensor of `shape` with values from `seed`, read through a transposed or narrowed view
    /// when `view` says so.
    fn input(shape: &[usize], view: u8, seed: u64, dt: DType) -> Tensor {
        let mut rng = crate::Rng::new(seed);
        match view {
            1 if shape.len() >= 2 => {
                let mut s = shape.to_vec();
                let r = s.len();
                s.swap(r - 2, r - 1);
                Tensor::randn(&mut rng, 0.5, 2.0, &s, DType::F64, &Device::Cpu).unwrap().t().unwrap().to_dtype(dt).unwrap()
            }
            2 if !shape.is_empty() => {
                let mut s = shape.to_vec();
                s[0] += 2;
                let base = Tensor::randn(&mut rng, 0.5, 2.0, &s, DType::F64, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                base.narrow(0, 1, shape[0]).unwrap()
            }
            _ => Tensor::randn(&mut rng, 0.5, 2.0, shape, DType::F64, &Device::Cpu).unwrap().to_dtype(dt).unwrap(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// sum and mean over random dim sets (given as negative dims half the time), keepdim or
        /// not, on strided views of every float dtype, within the oracle's tolerance rule.
        #[test]
        fn sum_and_mean_match_oracle((shape, pick, neg, view, seed) in case(), keepdim in any::<bool>()) {
            let dims: Vec<usize> = (0..shape.len()).filter(|&d| pick[d]).collect();
            let given: Vec<isize> = dims.iter().map(|&d| if neg[d] { d as isize - shape.len() as isize } else { d as isize }).collect();
            let all: Vec<usize> = if dims.is_empty() { (0..shape.len()).collect() } else { dims.clone() };
            for dt in [DType::F64, DType::F32, DType::BF16, DType::F16] {
                let t = input(&shape, view, seed, dt);
                prop_assert_eq!(t.shape(), shape.as_slice());
                let (xin, outer, size) = oracle_input(&t, &all);
                let want = oracle::sum_axis_f64(&xin, outer, size, 1);
                let scale = oracle::abs_sum_axis_f64(&xin, outer, size, 1);
                let got = t.sum(&given, keepdim).unwrap();
                let want_shape = reduced_shape(&shape, &all, keepdim);
                prop_assert_eq!(got.shape(), want_shape.as_slice());
                prop_assert_eq!(got.dtype(), dt);
                let (u, tiny) = unit(dt);
                for ((g, w), s) in got.to_vec_f64().unwrap().iter().zip(&want).zip(&scale) {
                    prop_assert!((g - w).abs() <= oracle::sum_tolerance(size, *s, *w, u, tiny), "{:?} sum {} vs {}", dt, g, w);
                }
                let got = t.mean(&given, keepdim).unwrap().to_vec_f64().unwrap();
                let want = oracle::mean_axis_f64(&xin, outer, size, 1);
                for ((g, w), s) in got.iter().zip(&want).zip(&scale) {
                    if size == 0 {
                        prop_assert!(g.is_nan() && w.is_nan());
                    } else {
                        let n = size as f64;
                        prop_assert!((g - w).abs() <= oracle::sum_tolerance(size, *s, *w * n, u, tiny) / n + u * w.abs(), "{:?} mean {} vs {}", dt, g, w);
                    }
                }
            }
        }

        /// max/min/argmax/argmin over one dim (negative or not), exact against the oracle, on
        /// values with many ties; integer dtypes too.
        #[test]
        fn extremes_match_oracle((shape, _pick, neg, view, seed) in case(), which in 0usize..4, keepdim in any::<bool>()) {
            prop_assume!(!shape.is_empty());
            let d = which % shape.len();
            let given = if neg[d] { d as isize - shape.len() as isize } else { d as isize };
            for dt in [DType::F64, DType::F32, DType::BF16, DType::U8, DType::I64] {
                // Rounded to small integers so ties are common; the shift keeps U8 non-negative.
                let t = input(&shape, view, seed, DType::F64).affine(1.0, 8.0).unwrap().clamp(0.0, 20.0).unwrap().to_dtype(DType::I64).unwrap().to_dtype(dt).unwrap();
                let (xin, outer, size) = oracle_input(&t, &[d]);
                if size == 0 {
                    let err = t.max(given, keepdim).unwrap_err().to_string();
                    prop_assert!(err.starts_with("max: dim") && err.contains("is empty"), "{}", err);
                    prop_assert!(t.argmin(given, keepdim).is_err());
                    continue;
                }
                let out_shape = reduced_shape(&shape, &[d], keepdim);
                let mx = t.max(given, keepdim).unwrap();
                prop_assert_eq!(mx.shape(), out_shape.as_slice());
                prop_assert_eq!(mx.dtype(), dt);
                prop_assert_eq!(mx.to_vec_f64().unwrap(), oracle::max_axis_f64(&xin, outer, size, 1));
                prop_assert_eq!(t.min(given, keepdim).unwrap().to_vec_f64().unwrap(), oracle::min_axis_f64(&xin, outer, size, 1));
                let am = t.argmax(given, keepdim).unwrap();
                prop_assert_eq!(am.dtype(), DType::I64);
                prop_assert_eq!(am.shape(), out_shape.as_slice());
                let want: Vec<i64> = oracle::argmax_axis(&xin, outer, size, 1).into_iter().map(|v| v as i64).collect();
                prop_assert_eq!(am.to_vec::<i64>().unwrap(), want);
                let want: Vec<i64> = oracle::argmin_axis(&xin, outer, size, 1).into_iter().map(|v| v as i64).collect();
                prop_assert_eq!(t.argmin(given, keepdim).unwrap().to_vec::<i64>().unwrap(), want);
            }
        }

        /// sum_to_shape undoes broadcasting: summing a broadcast tensor back equals multiplying
        /// by how many times each element was repeated.
        #[test]
        fn sum_to_shape_inverts_broadcast(shape in proptest::collection::vec(1usize..4, 0..4), mask in any::<u32>(), lead in proptest::collection::vec(0usize..3, 0..2)) {
            let small: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d }).collect();
            let mut big = lead.clone();
            big.extend_from_slice(&shape);
            let n: usize = small.iter().product();
            let x = Tensor::from_vec((0..n).map(|i| i as f32 - 3.0).collect::<Vec<_>>(), &small, &Device::Cpu).unwrap();
            let b = x.broadcast_as(&big).unwrap();
            let back = b.sum_to_shape(&small).unwrap();
            prop_assert_eq!(back.shape(), small.as_slice());
            let reps = (big.iter().product::<usize>() / n.max(1)) as f32;
            let want: Vec<f32> = x.to_vec::<f32>().unwrap().iter().map(|v| v * reps).collect();
            prop_assert_eq!(back.to_vec::<f32>().unwrap(), want);
        }
    }

    #[test]
    fn integer_sums_wrap_and_mean_needs_float() {
        let x = Tensor::from_vec(vec![200u8, 100, 1, 2], &[2, 2], &Device::Cpu).unwrap();
        assert_eq!(x.sum(&[0usize], false).unwrap().to_vec::<u8>().unwrap(), vec![201, 102]);
        assert_eq!(x.sum_all().unwrap().to_vec::<u8>().unwrap(), vec![47]); // 303 mod 256
        let i = Tensor::from_vec(vec![i64::MAX, 1], &[2], &Device::Cpu).unwrap();
        assert_eq!(i.sum_all().unwrap().to_vec::<i64>().unwrap(), vec![i64::MIN]);
        let err = i.mean_all().unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "mean", dtype: DType::I64, .. }), "{err}");
    }

    #[test]
    fn nan_propagates_and_first_tie_wins() {
        let x = Tensor::from_vec(vec![1.0f32, 3.0, 3.0, f32::NAN, 0.0, f32::NAN], &[2, 3], &Device::Cpu).unwrap();
        let mx = x.max(-1, false).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(mx[0], 3.0);
        assert!(mx[1].is_nan());
        assert_eq!(x.argmax(1usize, false).unwrap().to_vec::<i64>().unwrap(), vec![1, 0]);
        assert_eq!(x.argmin(1usize, true).unwrap().to_vec::<i64>().unwrap(), vec![0, 0]);
        assert_eq!(x.argmin(1usize, true).unwrap().shape(), &[2, 1]);
        assert!(x.sum_all().unwrap().to_scalar_f64().unwrap().is_nan());
    }

    #[test]
    fn errors_and_edge_shapes() {
        let x = Tensor::zeros(&[2, 3], DType::F32, &Device::Cpu).unwrap();
        let err = x.sum(&[1, -1], false).unwrap_err().to_string();
        assert_eq!(err, "sum: dim 1 is listed more than once (shape [2, 3])");
        let err = x.max(2usize, false).unwrap_err().to_string();
        assert_eq!(err, "max: dim 2 is out of range for a tensor of rank 2 (shape [2, 3])");
        let err = x.sum(&[-3], false).unwrap_err();
        assert!(matches!(err, Error::DimOutOfRange { op: "sum", dim: -3, rank: 2, .. }), "{err}");
        let err = x.sum_to_shape(&[4, 3]).unwrap_err().to_string();
        assert!(err.starts_with("sum_to_shape: shape mismatch between [2, 3] and [4, 3]"), "{err}");
        assert!(x.sum_to_shape(&[1, 2, 3]).is_err());
        // Rank 0: summing "all dims" of a scalar is the scalar.
        let s = Tensor::scalar(2.5f64);
        assert_eq!(s.sum_all().unwrap().to_vec::<f64>().unwrap(), vec![2.5]);
        assert_eq!(s.sum_all().unwrap().shape(), &[] as &[usize]);
        // Empty dims: sums are 0, means NaN, shapes right.
        let e = Tensor::zeros(&[0, 4], DType::F32, &Device::Cpu).unwrap();
        assert_eq!(e.sum(&[0usize], false).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 4]);
        assert_eq!(e.sum(&[1usize], true).unwrap().shape(), &[0, 1]);
        assert!(e.mean_all().unwrap().to_scalar_f64().unwrap().is_nan());
        assert_eq!(e.max(1usize, false).unwrap().shape(), &[0]);
    }

    /// Large inputs (several blocks per axis, and the threaded path) give the same bits on 1 and
    /// 2 threads, for every axis position, and stay within the oracle tolerance.
    #[test]
    fn thread_count_invariant_and_blocked() {
        let mut rng = crate::Rng::new(5);
        let x = Tensor::randn(&mut rng, 0.1, 1.0, &[3, 9000, 5], DType::F32, &Device::Cpu).unwrap();
        let xt = x.transpose(0, 2).unwrap(); // strided [5, 9000, 3]
        for t in [&x, &xt] {
            for dims in [vec![0usize], vec![1], vec![2], vec![0, 2], vec![]] {
                let run = |n: usize| pool(n).install(|| t.sum(&dims, false).unwrap().to_vec::<f32>().unwrap());
                let one = run(1);
                assert_eq!(one, run(2), "dims {dims:?}");
                let all: Vec<usize> = if dims.is_empty() { vec![0, 1, 2] } else { dims.clone() };
                let (xin, outer, size) = oracle_input(t, &all);
                let want = oracle::sum_axis_f64(&xin, outer, size, 1);
                let scale = oracle::abs_sum_axis_f64(&xin, outer, size, 1);
                let (u, tiny) = unit(DType::F32);
                for ((g, w), s) in one.iter().zip(&want).zip(&scale) {
                    assert!((*g as f64 - w).abs() <= oracle::sum_tolerance(size, *s, *w, u, tiny));
                }
                let am = |n: usize| pool(n).install(|| t.argmax(1usize, false).unwrap().to_vec::<i64>().unwrap());
                assert_eq!(am(1), am(2));
                let (xin, outer, size) = oracle_input(t, &[1]);
                let want: Vec<i64> = oracle::argmax_axis(&xin, outer, size, 1).into_iter().map(|v| v as i64).collect();
                assert_eq!(am(1), want);
            }
        }
        // One long row with the max in a late block, and a tie in an earlier block.
        let mut v = vec![0.0f64; 20_000];
        v[17_000] = 5.0;
        v[3] = 4.0;
        v[18_000] = 5.0;
        let r = Tensor::from_vec(v, &[20_000], &Device::Cpu).unwrap();
        assert_eq!(pool(2).install(|| r.argmax(0usize, false).unwrap().to_vec::<i64>().unwrap()), vec![17_000]);
    }
}
