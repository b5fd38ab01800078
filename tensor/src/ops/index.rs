//! Indexing ops: `index_select`, `embedding`, `gather`, and their adjoints `index_add` and
//! `scatter_add`.
//!
//! Index tensors are u8, u32 or i64. A negative or out-of-range index is an
//! `Error::IndexOutOfRange` naming the op, never a panic and never a wrap-around (PyTorch's
//! negative-index convention is not supported: a negative token id is a data bug we want to see).
//!
//! The adjoints accumulate in a fixed order (increasing position in the index tensor), so their
//! results are bitwise reproducible and thread-count invariant. Accumulation is in f32 for
//! f32/bf16/f16 (one rounding to bf16/f16 at the end), f64 for f64, and f64 for the integer dtypes
//! (exact below 2^53; the final cast saturates, so a u8 sum above 255 gives 255, not a wrap).

use super::norm::{dense, dispatch_all};
use crate::cpu::parallel::{build, fill_chunks, for_offsets_in};
use crate::layout::{Layout, contiguous_strides};
use crate::{DType, Dim, Error, Result, Tensor, WithDType};

/// The values of an index tensor in row-major order, as i64; an error for non-index dtypes.
pub(crate) fn index_values(t: &Tensor, op: &'static str) -> Result<Vec<i64>> {
    match t.dtype() {
        DType::U8 => Ok(t.to_vec::<u8>()?.into_iter().map(i64::from).collect()),
        DType::U32 => Ok(t.to_vec::<u32>()?.into_iter().map(i64::from).collect()),
        DType::I64 => t.to_vec::<i64>(),
        dt => Err(Error::dtype(op, dt, "indices must be u8, u32 or i64")),
    }
}

/// Checks every index against `size` and converts to `usize`.
pub(crate) fn checked_indices(op: &'static str, ids: &[i64], size: usize) -> Result<Vec<usize>> {
    ids.iter()
        .map(|&i| if i >= 0 && (i as u64) < size as u64 { Ok(i as usize) } else { Err(Error::IndexOutOfRange { op, index: i, size }) })
        .collect()
}

/// Accumulator of the adjoint ops: f32 for the 32-bit-and-smaller floats, f64 otherwise.
trait Acc: Copy + Default + Send + Sync + std::ops::AddAssign {
    fn from_t<T: WithDType>(t: T) -> Self;
    fn to_t<T: WithDType>(self) -> T;
}
impl Acc for f32 {
    fn from_t<T: WithDType>(t: T) -> Self {
        t.to_f32()
    }
    fn to_t<T: WithDType>(self) -> T {
        T::from_f32(self)
    }
}
impl Acc for f64 {
    fn from_t<T: WithDType>(t: T) -> Self {
        t.to_f64()
    }
    fn to_t<T: WithDType>(self) -> T {
        T::from_f64(self)
    }
}

/// Runs `$body` with `$A` bound to the accumulator type of `$dtype` and `$T` to its element type.
macro_rules! with_acc {
    ($dtype:expr, $T:ident, $A:ident => $body:expr) => {
        dispatch_all!($dtype, $T => {
            match $dtype {
                DType::F32 | DType::BF16 | DType::F16 => {
                    type $A = f32;
                    $body
                }
                _ => {
                    type $A = f64;
                    $body
                }
            }
        })
    };
}

/// `(outer, size, inner)`: the product of the dims before `d`, dim `d`, the product after it.
fn split_at_dim(shape: &[usize], d: usize) -> (usize, usize, usize) {
    (shape[..d].iter().product(), shape[d], shape[d + 1..].iter().product())
}

/// The shared body of `index_select` and `embedding`: `ids` already checked against dim `d`.
fn select_along(op: &'static str, x: &Tensor, d: usize, ids: &[usize]) -> Result<Tensor> {
    let (outer, size, inner) = split_at_dim(x.shape(), d);
    let mut shape = x.shape().to_vec();
    shape[d] = ids.len();
    #[cfg(feature = "cuda")]
    if x.device().is_cuda() {
        return crate::cuda::index::select_rows(op, x, ids, (outer, size, inner), &shape);
    }
    let xc = x.contiguous()?;
    let n_ids = ids.len();
    dispatch_all!(x.dtype(), T => {
        let src = dense::<T>(&xc, op)?;
        // Written once, chunk by chunk (no zero-fill first): output row r is source row
        // (o, ids[j]) for r = o * n_ids + j.
        let out = build(outer * n_ids * inner, |start, chunk| {
            for_row_parts(start, chunk, inner, |r, col, part| {
                let (o, j) = (r / n_ids, r % n_ids);
                let at = (o * size + ids[j]) * inner + col;
                let n = part.len();
                for (dst, &x) in part.iter_mut().zip(&src[at..at + n]) {
                    dst.write(x);
                }
            });
        });
        Tensor::from_vec(out, &shape, &x.device())
    })
}

/// Splits `chunk`, the flat elements `start..start + chunk.len()` of a row-major buffer of rows
/// `row_len` long, at row boundaries, and calls `f(row, first column, part)` on each part.
fn for_row_parts<U>(start: usize, chunk: &mut [U], row_len: usize, mut f: impl FnMut(usize, usize, &mut [U])) {
    let mut done = 0;
    while done < chunk.len() {
        let flat = start + done;
        let (row, col) = (flat / row_len, flat % row_len);
        let n = (row_len - col).min(chunk.len() - done);
        f(row, col, &mut chunk[done..done + n]);
        done += n;
    }
}

impl Tensor {
    /// The slices `ids[0], ids[1], ...` of `self` along `dim`, stacked in that order: the output
    /// has the shape of `self` with dim `dim` replaced by `ids.len()`. `ids` is 1-d, u8/u32/i64,
    /// every entry in `0..size(dim)`. Values are copied exactly; any dtype works.
    pub fn index_select<D: Dim>(&self, dim: D, ids: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        let d = dim.resolve(OP, self.shape())?;
        if ids.rank() != 1 {
            return Err(Error::shape(OP, self.shape(), ids.shape(), "ids must be 1-d"));
        }
        let ids = checked_indices(OP, &index_values(ids, OP)?, self.shape()[d])?;
        select_along(OP, self, d, &ids)
    }

    /// Embedding lookup: `self` is the table `[V, D]`, `ids` any shape of u8/u32/i64 in `0..V`;
    /// the output is `[...ids.shape, D]` with row `W[id]` for each id. Its adjoint (the table
    /// gradient) is [`Tensor::index_add`] along dim 0. Oracle: `brainstacks_kernels::embedding`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        const OP: &str = "embedding";
        if self.rank() != 2 {
            return Err(Error::shape(OP, self.shape(), ids.shape(), "the table must be [V, D]"));
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::embedding(self, ids);
        }
        let ids_v = checked_indices(OP, &index_values(ids, OP)?, self.shape()[0])?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape()[1]);
        select_along(OP, self, 0, &ids_v)?.reshape(&shape)
    }

    /// `torch.gather`: `out[i][j][k] = self[index[i][j][k]][j][k]` for `dim = 0` (likewise for
    /// other dims). `index` has the rank of `self`, `index.size(e) <= self.size(e)` for `e != dim`,
    /// entries in `0..self.size(dim)`; the output has the shape of `index` and the dtype of `self`.
    /// Reads `self` through its strides (no copy of a strided input).
    pub fn gather<D: Dim>(&self, dim: D, index: &Tensor) -> Result<Tensor> {
        const OP: &str = "gather";
        let d = dim.resolve(OP, self.shape())?;
        check_index_shape(OP, self.shape(), index.shape(), d, None)?;
        let idx = checked_indices(OP, &index_values(index, OP)?, self.shape()[d])?;
        // Walking `index`'s shape with the strides of `self` (and 0 for `dim`) gives the offset of
        // every output's source element except for the `idx * stride(dim)` term.
        let mut strides = self.strides().to_vec();
        let stride_d = strides[d];
        strides[d] = 0;
        let walk = Layout::new(index.shape().to_vec(), strides, self.layout().offset());
        let storage = self.cpu_storage(OP)?;
        let out = crate::match_cpu_storage!(storage, src => {
            let mut out = vec![Default::default(); idx.len()];
            fill_chunks(&mut out, |start, chunk| {
                for_offsets_in(&walk, start, chunk.len(), |j, off| chunk[j] = src[off + idx[start + j] * stride_d]);
            });
            WithDType::into_storage(out)
        });
        Tensor::from_cpu_storage(out, index.shape())
    }

    /// `torch.scatter_add` (not in place): a copy of `self` where, for every position `p` of
    /// `index` in row-major order, `out[p with dim := index[p]] += src[p]`. `index`, `src` and
    /// `self` have one rank; `index.size(e) <= src.size(e)` for every `e` and
    /// `<= self.size(e)` for `e != dim`. It is the adjoint of [`Tensor::gather`]. The additions
    /// happen in that fixed order (deterministic; see the module docs for the accumulator).
    pub fn scatter_add<D: Dim>(&self, dim: D, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        let d = dim.resolve(OP, self.shape())?;
        check_index_shape(OP, self.shape(), index.shape(), d, Some(src.shape()))?;
        if src.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: self.dtype(), rhs: src.dtype() });
        }
        let idx = checked_indices(OP, &index_values(index, OP)?, self.shape()[d])?;
        // Destination offsets in the dense output: contiguous strides with dim's stride applied
        // per element; source offsets: `src`'s own strides over `index`'s shape.
        let out_strides = contiguous_strides(self.shape());
        let stride_d = out_strides[d];
        let mut walk_strides = out_strides.clone();
        walk_strides[d] = 0;
        let dst_walk = Layout::new(index.shape().to_vec(), walk_strides, 0);
        let src_walk = Layout::new(index.shape().to_vec(), src.strides().to_vec(), src.layout().offset());
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            // One-element rows: each index position adds its source element at its destination.
            let dst: Vec<i64> = dst_walk.offsets().zip(&idx).map(|(o, &i)| (o + i * stride_d) as i64).collect();
            return crate::cuda::index::add_rows(OP, self, &dst, &src.view(src_walk), 1);
        }
        let base = self.contiguous()?;
        with_acc!(self.dtype(), T, A => {
            let mut acc: Vec<A> = dense::<T>(&base, OP)?.iter().map(|&v| A::from_t(v)).collect();
            let s = src.cpu_slice::<T>(OP)?;
            for ((dst, so), &i) in dst_walk.offsets().zip(src_walk.offsets()).zip(&idx) {
                acc[dst + i * stride_d] += A::from_t(s[so]);
            }
            let out: Vec<T> = acc.into_iter().map(|a| a.to_t::<T>()).collect();
            Tensor::from_vec(out, self.shape(), &self.device())
        })
    }

    /// The adjoint of [`Tensor::index_select`] (not in place): a copy of `self` where slice
    /// `ids[j]` along `dim` gets `src`'s slice `j` added, for `j = 0, 1, ...` in that order (so
    /// repeated ids accumulate deterministically). `ids` is 1-d; `src` has the shape of `self`
    /// with dim `dim` replaced by `ids.len()`, and the dtype of `self`.
    ///
    /// Parallel over output slices: each output slice sums its hits in increasing `j`, so the
    /// result does not depend on the thread count.
    pub fn index_add<D: Dim>(&self, dim: D, ids: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_add";
        let d = dim.resolve(OP, self.shape())?;
        if ids.rank() != 1 {
            return Err(Error::shape(OP, self.shape(), ids.shape(), "ids must be 1-d"));
        }
        let mut want = self.shape().to_vec();
        want[d] = ids.shape()[0];
        if src.shape() != want.as_slice() {
            return Err(Error::shape(OP, self.shape(), src.shape(), format!("src must be {want:?}: self with dim {d} replaced by the number of ids")));
        }
        if src.dtype() != self.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: self.dtype(), rhs: src.dtype() });
        }
        let (_, size, inner) = split_at_dim(self.shape(), d);
        let ids = checked_indices(OP, &index_values(ids, OP)?, size)?;
        let n_ids = ids.len();
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            // Rows of `inner` elements: source row (o, j) goes to destination row (o, ids[j]).
            let outer: usize = self.shape()[..d].iter().product();
            let dst: Vec<i64> = (0..outer).flat_map(|o| ids.iter().map(move |&v| (o * size + v) as i64)).collect();
            return crate::cuda::index::add_rows(OP, self, &dst, src, inner);
        }
        // hits[starts[v]..starts[v + 1]] lists the j with ids[j] == v, in increasing j.
        let mut starts = vec![0usize; size + 1];
        for &v in &ids {
            starts[v + 1] += 1;
        }
        for v in 0..size {
            starts[v + 1] += starts[v];
        }
        let mut fill = starts.clone();
        let mut hits = vec![0usize; n_ids];
        for (j, &v) in ids.iter().enumerate() {
            hits[fill[v]] = j;
            fill[v] += 1;
        }
        let base = self.contiguous()?;
        let srcc = src.contiguous()?;
        with_acc!(self.dtype(), T, A => {
            let b = dense::<T>(&base, OP)?;
            let s = dense::<T>(&srcc, OP)?;
            // Written once, chunk by chunk: each element is its base value plus the source
            // elements that land on it in increasing j, summed in the accumulator type, so the
            // chunking (and the thread count) never changes a bit. A row nothing lands on is a
            // copy of the base.
            let out = build(b.len(), |start, chunk| {
                let mut acc: Vec<A> = Vec::with_capacity(chunk.len().min(inner));
                for_row_parts(start, chunk, inner, |r, col, part| {
                    let (o, v) = (r / size, r % size);
                    let (first, n) = (r * inner + col, part.len());
                    let base_part = &b[first..first + n];
                    let landing = &hits[starts[v]..starts[v + 1]];
                    if landing.is_empty() {
                        for (dst, &x) in part.iter_mut().zip(base_part) {
                            dst.write(x);
                        }
                        return;
                    }
                    acc.clear();
                    acc.extend(base_part.iter().map(|&x| A::from_t(x)));
                    for &j in landing {
                        let at = (o * n_ids + j) * inner + col;
                        for (a, &x) in acc.iter_mut().zip(&s[at..at + n]) {
                            *a += A::from_t(x);
                        }
                    }
                    for (dst, a) in part.iter_mut().zip(&acc) {
                        dst.write(a.to_t::<T>());
                    }
                });
            });
            Tensor::from_vec(out, self.shape(), &self.device())
        })
    }
}

/// Shape rules of gather/scatter_add: `index` has the rank of `x`, `index.size(e) <= x.size(e)`
/// for `e != dim` and, when `src` is given, `index.size(e) <= src.size(e)` for every `e`.
fn check_index_shape(op: &'static str, x: &[usize], index: &[usize], d: usize, src: Option<&[usize]>) -> Result<()> {
    if index.len() != x.len() {
        return Err(Error::shape(op, x, index, "index must have the rank of the input"));
    }
    for e in 0..x.len() {
        if e != d && index[e] > x[e] {
            return Err(Error::shape(op, x, index, format!("index size {} exceeds the input size {} in dim {e}", index[e], x[e])));
        }
    }
    if let Some(src) = src {
        if src.len() != x.len() {
            return Err(Error::shape(op, x, src, "src must have the rank of the input"));
        }
        for e in 0..x.len() {
            if index[e] > src[e] {
                return Err(Error::shape(op, index, src, format!("index size {} exceeds the src size {} in dim {e}", index[e], src[e])));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::norm::testing::*;
    use super::*;
    use crate::Device;
    use brainstacks_kernels::embedding::{embedding as emb_oracle, embedding_adjoint};
    use proptest::prelude::*;

    fn ids_tensor(ids: &[i64], shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_vec(ids.to_vec(), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    /// Row-major multi-index of flat position `flat` in `shape`.
    fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
        let mut idx = vec![0; shape.len()];
        for e in (0..shape.len()).rev() {
            idx[e] = flat % shape[e];
            flat /= shape[e];
        }
        idx
    }

    fn ravel(idx: &[usize], shape: &[usize]) -> usize {
        idx.iter().zip(shape).fold(0, |acc, (&i, &s)| acc * s + i)
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn shape_and_dim() -> impl Strategy<Value = (Vec<usize>, usize)> {
        prop::collection::vec(0usize..5, 1..4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), 0..r)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// index_select against a naive multi-index loop; index_add is its adjoint:
        /// <index_select(x, ids), y> == <x, index_add(0, ids, y)>.
        #[test]
        fn index_select_and_its_adjoint((shape, d) in shape_and_dim(), n_ids in 0usize..7, mode in 0u8..3, seed in any::<u64>(), idt in 0usize..3) {
            let size = shape[d];
            let ids: Vec<i64> = if size == 0 { vec![] } else { values(n_ids, seed ^ 3, 1.0).iter().map(|v| ((v + 1.0) * 1000.0) as i64 % size as i64).collect() };
            let id_dtype = [DType::U8, DType::U32, DType::I64][idt];
            let idt_t = ids_tensor(&ids, &[ids.len()], id_dtype);
            let n: usize = shape.iter().product();
            let x = view_of(&values(n, seed, 4.0), &shape, DType::F64, mode);
            let got = x.index_select(d, &idt_t).unwrap();
            let mut oshape = shape.clone();
            oshape[d] = ids.len();
            prop_assert_eq!(got.shape(), &oshape[..]);
            let xs = x.to_vec_f64().unwrap();
            let gs = got.to_vec_f64().unwrap();
            for (flat, g) in gs.iter().enumerate() {
                let mut idx = unravel(flat, &oshape);
                idx[d] = ids[idx[d]] as usize;
                prop_assert_eq!(*g, xs[ravel(&idx, &shape)]);
            }
            let y = view_of(&values(gs.len(), seed ^ 9, 1.0), &oshape, DType::F64, mode);
            let zeros = Tensor::zeros(&shape, DType::F64, &Device::Cpu).unwrap();
            let back = zeros.index_add(d, &idt_t, &y).unwrap().to_vec_f64().unwrap();
            let (lhs, rhs) = (dot(&gs, &y.to_vec_f64().unwrap()), dot(&xs, &back));
            prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }

        /// embedding and its adjoint against the oracle, any ids shape, in f32 and bf16.
        #[test]
        fn embedding_matches_oracle(v in 1usize..9, dm in 0usize..6, ids_shape in prop::collection::vec(0usize..4, 0..3), seed in any::<u64>(), bf in any::<bool>()) {
            let dtype = if bf { DType::BF16 } else { DType::F32 };
            let n_ids: usize = ids_shape.iter().product();
            let ids: Vec<i64> = values(n_ids, seed, 1.0).iter().map(|x| ((x + 1.0) * 500.0) as i64 % v as i64).collect();
            let table = view_of(&values(v * dm, seed ^ 5, 2.0), &[v, dm], dtype, (seed % 3) as u8);
            let idt = ids_tensor(&ids, &ids_shape, DType::I64);
            let got = table.embedding(&idt).unwrap();
            let mut oshape = ids_shape.clone();
            oshape.push(dm);
            prop_assert_eq!(got.shape(), &oshape[..]);
            prop_assert_eq!(got.to_vec_f64().unwrap(), emb_oracle(&table.to_vec_f64().unwrap(), v, dm, &ids));
            // Adjoint: index_add along 0 with f32 accumulation in increasing j, vs the f64 oracle.
            let dy = view_of(&values(n_ids * dm, seed ^ 7, 1.0), &[n_ids, dm], dtype, 0);
            let zeros = Tensor::zeros(&[v, dm], dtype, &Device::Cpu).unwrap();
            let dw = zeros.index_add(0, &ids_tensor(&ids, &[n_ids], DType::I64), &dy).unwrap().to_vec_f64().unwrap();
            let want = embedding_adjoint(&dy.to_vec_f64().unwrap(), v, dm, &ids);
            let u = unit_roundoff(dtype) + n_ids as f64 * unit_roundoff(DType::F32);
            for (g, w) in dw.iter().zip(&want) {
                prop_assert!((g - w).abs() <= 2.0 * u * (n_ids as f64 + w.abs()), "{g} vs {w}");
            }
        }

        /// gather against a naive loop; scatter_add is its adjoint:
        /// <gather(x, idx), y> == <x, scatter_add(0, idx, y)>.
        #[test]
        fn gather_and_scatter_add_are_adjoint((shape, d) in shape_and_dim(), shrink in prop::collection::vec(0usize..3, 3), grow in 0usize..4, mode in 0u8..3, seed in any::<u64>()) {
            let size = shape[d];
            let mut ishape: Vec<usize> = shape.iter().zip(&shrink).map(|(&s, &k)| s.saturating_sub(k)).collect();
            ishape[d] = if size == 0 { 0 } else { grow + 1 };
            let n_idx: usize = ishape.iter().product();
            let idx: Vec<i64> = if size == 0 { vec![] } else { values(n_idx, seed ^ 11, 1.0).iter().map(|v| ((v + 1.0) * 700.0) as i64 % size as i64).collect() };
            let it = ids_tensor(&idx, &ishape, DType::I64);
            let n: usize = shape.iter().product();
            let x = view_of(&values(n, seed, 3.0), &shape, DType::F64, mode);
            let got = x.gather(d, &it).unwrap();
            prop_assert_eq!(got.shape(), &ishape[..]);
            let xs = x.to_vec_f64().unwrap();
            let gs = got.to_vec_f64().unwrap();
            for (flat, g) in gs.iter().enumerate() {
                let mut m = unravel(flat, &ishape);
                m[d] = idx[flat] as usize;
                prop_assert_eq!(*g, xs[ravel(&m, &shape)]);
            }
            // src larger than index in every dim: only the index-shaped corner is read.
            let sshape: Vec<usize> = ishape.iter().map(|s| s + 1).collect();
            let sn: usize = sshape.iter().product();
            let src = view_of(&values(sn, seed ^ 13, 1.0), &sshape, DType::F64, mode);
            let corner: Vec<f64> = (0..n_idx).map(|f| src.to_vec_f64().unwrap()[ravel(&unravel(f, &ishape), &sshape)]).collect();
            let zeros = Tensor::zeros(&shape, DType::F64, &Device::Cpu).unwrap();
            let back = zeros.scatter_add(d, &it, &src).unwrap().to_vec_f64().unwrap();
            let (lhs, rhs) = (dot(&gs, &corner), dot(&xs, &back));
            prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }

    #[test]
    fn scatter_add_by_hand_and_keeps_self() {
        let dev = Device::Cpu;
        let base = Tensor::from_vec(vec![1f32, 1., 1., 1.], &[1, 4], &dev).unwrap();
        let idx = Tensor::from_vec(vec![3i64, 0, 3], &[1, 3], &dev).unwrap();
        let src = Tensor::from_vec(vec![10f32, 20., 30.], &[1, 3], &dev).unwrap();
        let out = base.scatter_add(1, &idx, &src).unwrap();
        assert_eq!(out.to_vec::<f32>().unwrap(), vec![21., 1., 1., 41.]);
        assert_eq!(base.to_vec::<f32>().unwrap(), vec![1., 1., 1., 1.]);
    }

    /// `index_add` onto a non-zero base with repeated ids, rows nothing lands on, and inner
    /// sizes around the parallel chunk: every element is the base plus its sources in increasing
    /// j, summed in the accumulation type (f32 for f32 and bf16) and rounded once, to the bit.
    #[test]
    fn index_add_sums_sources_in_order_onto_the_base() {
        for (dtype, size, inner, ids) in [
            (DType::F32, 5, 3, vec![4i64, 1, 4, 4, 0]),
            (DType::BF16, 4, 7, vec![2, 2, 0]),
            (DType::F32, 6, 9000, vec![5, 0, 5, 3]),
            (DType::BF16, 3, 20000, vec![1, 1, 2, 1]),
        ] {
            let n = ids.len();
            let base = Tensor::from_vec(values(size * inner, 21, 3.0), &[size, inner], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let src = Tensor::from_vec(values(n * inner, 22, 1.0), &[n, inner], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let got = base.index_add(0, &ids_tensor(&ids, &[n], DType::I64), &src).unwrap().to_vec_f64().unwrap();
            let (b, s) = (base.to_vec_f64().unwrap(), src.to_vec_f64().unwrap());
            for v in 0..size {
                for c in 0..inner {
                    let mut acc = b[v * inner + c] as f32;
                    for (j, _) in ids.iter().enumerate().filter(|&(_, &id)| id as usize == v) {
                        acc += s[j * inner + c] as f32;
                    }
                    let want = Tensor::from_vec(vec![acc], &[1], &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_vec_f64().unwrap()[0];
                    assert_eq!(got[v * inner + c].to_bits(), want.to_bits(), "{dtype:?} row {v} col {c}");
                }
            }
        }
    }

    #[test]
    fn index_add_is_thread_count_invariant() {
        let (v, dm, n) = (50, 300, 400);
        let ids: Vec<i64> = (0..n).map(|j| (j * 7 % v) as i64).collect();
        let ids = ids_tensor(&ids, &[n], DType::I64);
        let src = Tensor::from_vec(values(n * dm, 1, 1.0), &[n, dm], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let base = Tensor::zeros(&[v, dm], DType::F32, &Device::Cpu).unwrap();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| base.index_add(0, &ids, &src).unwrap().to_vec::<f32>().unwrap())
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn bad_indices_are_errors_not_panics() {
        let dev = Device::Cpu;
        let table = Tensor::zeros(&[4, 3], DType::F32, &dev).unwrap();
        let neg = Tensor::from_vec(vec![0i64, -1], &[2], &dev).unwrap();
        let big = Tensor::from_vec(vec![4u32], &[1], &dev).unwrap();
        assert!(matches!(table.embedding(&neg), Err(Error::IndexOutOfRange { op: "embedding", index: -1, size: 4 })));
        assert!(matches!(table.embedding(&big), Err(Error::IndexOutOfRange { op: "embedding", index: 4, size: 4 })));
        assert!(matches!(table.index_select(1, &big), Err(Error::IndexOutOfRange { op: "index_select", index: 4, size: 3 })));
        let gi = Tensor::from_vec(vec![5i64], &[1, 1], &dev).unwrap();
        assert!(matches!(table.gather(0, &gi), Err(Error::IndexOutOfRange { op: "gather", .. })));
        let one = Tensor::zeros(&[1, 1], DType::F32, &dev).unwrap();
        assert!(matches!(table.scatter_add(0, &gi, &one), Err(Error::IndexOutOfRange { op: "scatter_add", .. })));
        let src = Tensor::zeros(&[2, 3], DType::F32, &dev).unwrap();
        assert!(matches!(table.index_add(0, &neg, &src), Err(Error::IndexOutOfRange { op: "index_add", .. })));
        // A float tensor is not an index tensor.
        let fl = Tensor::zeros(&[2], DType::F32, &dev).unwrap();
        assert!(matches!(table.embedding(&fl), Err(Error::UnsupportedDType { op: "embedding", .. })));
        // Bad dims.
        assert!(matches!(table.index_select(2, &big), Err(Error::DimOutOfRange { .. })));
    }

    #[test]
    fn shape_errors_name_the_op_and_both_shapes() {
        let dev = Device::Cpu;
        let x = Tensor::zeros(&[4, 3], DType::F32, &dev).unwrap();
        let check = |r: Result<Tensor>, op: &str, a: &str, b: &str| {
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains(op) && msg.contains(a) && msg.contains(b), "{msg}");
        };
        let ids2 = Tensor::zeros(&[2, 2], DType::I64, &dev).unwrap();
        check(x.index_select(0, &ids2), "index_select", "[4, 3]", "[2, 2]");
        let v3 = Tensor::zeros(&[2, 3, 1], DType::F32, &dev).unwrap();
        check(v3.embedding(&ids2), "embedding", "[2, 3, 1]", "[2, 2]");
        let gi = Tensor::zeros(&[2, 5], DType::I64, &dev).unwrap();
        check(x.gather(0, &gi), "gather", "[4, 3]", "[2, 5]");
        let g1 = Tensor::zeros(&[4], DType::I64, &dev).unwrap();
        check(x.gather(0, &g1), "gather", "[4, 3]", "[4]");
        let si = Tensor::zeros(&[2, 2], DType::I64, &dev).unwrap();
        let small = Tensor::zeros(&[1, 2], DType::F32, &dev).unwrap();
        check(x.scatter_add(0, &si, &small), "scatter_add", "[2, 2]", "[1, 2]");
        let ids = Tensor::zeros(&[2], DType::I64, &dev).unwrap();
        let wrong = Tensor::zeros(&[3, 3], DType::F32, &dev).unwrap();
        check(x.index_add(0, &ids, &wrong), "index_add", "[4, 3]", "[3, 3]");
        let f64src = Tensor::zeros(&[2, 3], DType::F64, &dev).unwrap();
        assert!(matches!(x.index_add(0, &ids, &f64src), Err(Error::DTypeMismatch { op: "index_add", .. })));
    }
}
