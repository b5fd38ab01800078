//! Elementwise arithmetic of two tensors with NumPy broadcasting, and the scalar forms.
//!
//! Both operands must have the same dtype (no silent promotion). Floats compute in their own
//! precision (bf16 and f16 through f32, rounded once); integers wrap on overflow, and an integer
//! division by zero is an error, never a panic. The shared broadcasting loop [`zip_map`] also
//! serves the comparisons in `compare.rs`.

use std::mem::MaybeUninit;

use half::{bf16, f16};

use crate::cpu::parallel;
use super::norm::dispatch_all;
use crate::layout::{Layout, broadcast_shape, checked_alloc_len, checked_elem_count};
use crate::{CpuStorage, DType, Error, Result, Tensor, WithDType};

/// The elementwise binary ops `Tensor::binary` applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b` (integers wrap)
    Add,
    /// `a - b` (integers wrap)
    Sub,
    /// `a * b` (integers wrap)
    Mul,
    /// `a / b` (integers: truncating; a zero divisor is an error)
    Div,
    /// the larger of `a` and `b`; NaN if either is NaN
    Maximum,
    /// the smaller of `a` and `b`; NaN if either is NaN
    Minimum,
}

impl BinaryOp {
    /// The op's name as errors and tapes print it (lower case, e.g. `"add"`).
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
        }
    }
}

/// Per-dtype arithmetic. Floats follow IEEE (bf16/f16 via f32, one rounding); integers wrap.
pub(crate) trait Arith: WithDType {
    fn add(a: Self, b: Self) -> Self;
    fn sub(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    /// Callers guarantee a non-zero divisor for integer dtypes (checked up front).
    fn div(a: Self, b: Self) -> Self;
    fn maximum(a: Self, b: Self) -> Self;
    fn minimum(a: Self, b: Self) -> Self;
    fn is_zero(self) -> bool;
}

macro_rules! float_arith {
    ($t:ty) => {
        impl Arith for $t {
            #[inline]
            fn add(a: Self, b: Self) -> Self {
                a + b
            }
            #[inline]
            fn sub(a: Self, b: Self) -> Self {
                a - b
            }
            #[inline]
            fn mul(a: Self, b: Self) -> Self {
                a * b
            }
            #[inline]
            fn div(a: Self, b: Self) -> Self {
                a / b
            }
            // `a + b` in the last arm is reached only when one side is NaN, and propagates it
            // (`f32::max` would drop it).
            #[inline]
            fn maximum(a: Self, b: Self) -> Self {
                if a > b {
                    a
                } else if b >= a {
                    b
                } else {
                    a + b
                }
            }
            #[inline]
            fn minimum(a: Self, b: Self) -> Self {
                if a < b {
                    a
                } else if b <= a {
                    b
                } else {
                    a + b
                }
            }
            #[inline]
            fn is_zero(self) -> bool {
                self == 0.0
            }
        }
    };
}
float_arith!(f64);
float_arith!(f32);

macro_rules! half_arith {
    ($t:ty) => {
        impl Arith for $t {
            #[inline]
            fn add(a: Self, b: Self) -> Self {
                <$t>::from_f32(a.to_f32() + b.to_f32())
            }
            #[inline]
            fn sub(a: Self, b: Self) -> Self {
                <$t>::from_f32(a.to_f32() - b.to_f32())
            }
            #[inline]
            fn mul(a: Self, b: Self) -> Self {
                <$t>::from_f32(a.to_f32() * b.to_f32())
            }
            #[inline]
            fn div(a: Self, b: Self) -> Self {
                <$t>::from_f32(a.to_f32() / b.to_f32())
            }
            #[inline]
            fn maximum(a: Self, b: Self) -> Self {
                <$t>::from_f32(<f32 as Arith>::maximum(a.to_f32(), b.to_f32()))
            }
            #[inline]
            fn minimum(a: Self, b: Self) -> Self {
                <$t>::from_f32(<f32 as Arith>::minimum(a.to_f32(), b.to_f32()))
            }
            #[inline]
            fn is_zero(self) -> bool {
                self.to_f32() == 0.0
            }
        }
    };
}
half_arith!(bf16);
half_arith!(f16);

macro_rules! int_arith {
    ($t:ty) => {
        impl Arith for $t {
            #[inline]
            fn add(a: Self, b: Self) -> Self {
                a.wrapping_add(b)
            }
            #[inline]
            fn sub(a: Self, b: Self) -> Self {
                a.wrapping_sub(b)
            }
            #[inline]
            fn mul(a: Self, b: Self) -> Self {
                a.wrapping_mul(b)
            }
            // The zero check keeps this panic-free even if a caller forgot the up-front check;
            // `wrapping_div` turns `i64::MIN / -1` into `i64::MIN` instead of panicking.
            #[inline]
            fn div(a: Self, b: Self) -> Self {
                if b == 0 { 0 } else { a.wrapping_div(b) }
            }
            #[inline]
            fn maximum(a: Self, b: Self) -> Self {
                Ord::max(a, b)
            }
            #[inline]
            fn minimum(a: Self, b: Self) -> Self {
                Ord::min(a, b)
            }
            #[inline]
            fn is_zero(self) -> bool {
                self == 0
            }
        }
    };
}
int_arith!(u8);
int_arith!(u32);
int_arith!(i64);

/// One run of a [`for_runs2_in`] walk: output indices `j .. j + len` of the chunk read the
/// operands at `a + k * a_step` and `b + k * b_step` for `k` in `0..len`.
#[derive(Clone, Copy, Debug)]
struct Run2 {
    j: usize,
    len: usize,
    a: usize,
    a_step: usize,
    b: usize,
    b_step: usize,
}

/// The two-layout twin of `parallel::for_offsets_in`, a run at a time: calls `f` once per run of
/// the last dim within flat indices `start .. start + len` of two layouts of the same shape, so
/// the caller's inner loop can be a plain slice loop when the run is contiguous (step 1) or
/// broadcast (step 0) in an operand.
fn for_runs2_in(a: &Layout, b: &Layout, start: usize, len: usize, mut f: impl FnMut(Run2)) {
    if len == 0 {
        return;
    }
    let shape = a.shape();
    let rank = shape.len();
    if rank == 0 {
        f(Run2 { j: 0, len: 1, a: a.offset(), a_step: 0, b: b.offset(), b_step: 0 });
        return;
    }
    let (sa, sb) = (a.strides(), b.strides());
    let mut index = vec![0usize; rank];
    let mut rem = start;
    for d in (0..rank).rev() {
        index[d] = rem % shape[d];
        rem /= shape[d];
    }
    let (mut oa, mut ob) = (parallel::offset_of(a, start), parallel::offset_of(b, start));
    let last = rank - 1;
    let (la, lb) = (sa[last], sb[last]);
    let mut j = 0;
    while j < len {
        let run = (shape[last] - index[last]).min(len - j);
        f(Run2 { j, len: run, a: oa, a_step: la, b: ob, b_step: lb });
        j += run;
        // Move to the start of the next run: carry through the outer dims.
        oa += run * la;
        ob += run * lb;
        index[last] += run;
        let mut d = last;
        while index[d] == shape[d] && d > 0 {
            oa -= sa[d] * shape[d];
            ob -= sb[d] * shape[d];
            index[d] = 0;
            d -= 1;
            index[d] += 1;
            oa += sa[d];
            ob += sb[d];
        }
    }
}

/// Writes `out[k] = f(a[..], b[..])` for one run, with slice loops for the common steps (both
/// contiguous; one contiguous against a broadcast value) so they vectorise, and a strided loop
/// otherwise. Every slot of `out` is written.
fn zip_run<T: Copy, U>(out: &mut [MaybeUninit<U>], a: &[T], b: &[T], r: Run2, f: &impl Fn(T, T) -> U) {
    let out = &mut out[r.j..r.j + r.len];
    match (r.a_step, r.b_step) {
        (1, 1) => {
            for ((o, &x), &y) in out.iter_mut().zip(&a[r.a..r.a + r.len]).zip(&b[r.b..r.b + r.len]) {
                o.write(f(x, y));
            }
        }
        (1, 0) => {
            let y = b[r.b];
            for (o, &x) in out.iter_mut().zip(&a[r.a..r.a + r.len]) {
                o.write(f(x, y));
            }
        }
        (0, 1) => {
            let x = a[r.a];
            for (o, &y) in out.iter_mut().zip(&b[r.b..r.b + r.len]) {
                o.write(f(x, y));
            }
        }
        (sa, sb) => {
            for (k, o) in out.iter_mut().enumerate() {
                o.write(f(a[r.a + k * sa], b[r.b + k * sb]));
            }
        }
    }
}

/// `f(lhs[i], rhs[i])` over the broadcast shape of two same-dtype tensors, returned as a dense
/// row-major vector with that shape. Errors name `op`: `DTypeMismatch` for different dtypes,
/// `ShapeMismatch` (with both shapes) for shapes that do not broadcast.
///
/// Fast paths: equal shapes, both contiguous (one zipped pass); a one-element operand against a
/// contiguous one of the output shape (a map). Everything else walks both broadcast layouts.
/// All paths are threaded by fixed output chunks, so results do not depend on the thread count.
pub(crate) fn zip_map<T: WithDType, U: Send + Default + Clone>(
    op: &'static str,
    lhs: &Tensor,
    rhs: &Tensor,
    f: impl Fn(T, T) -> U + Sync + Send,
) -> Result<(Vec<U>, Vec<usize>)> {
    if lhs.dtype() != rhs.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: lhs.dtype(), rhs: rhs.dtype() });
    }
    let shape = broadcast_shape(op, lhs.shape(), rhs.shape())?;
    let a = lhs.cpu_slice::<T>(op)?;
    let b = rhs.cpu_slice::<T>(op)?;
    let n = checked_alloc_len(op, &shape, std::mem::size_of::<U>())?;
    let (ra, rb) = (lhs.layout().contiguous_range(), rhs.layout().contiguous_range());
    let full_a = lhs.shape() == shape.as_slice();
    let full_b = rhs.shape() == shape.as_slice();
    let out = match (ra, rb) {
        (Some((a0, _)), Some((b0, _))) if full_a && full_b => parallel::zip_with(&a[a0..a0 + n], &b[b0..b0 + n], f),
        (Some((a0, _)), _) if full_a && rhs.elem_count() == 1 => {
            let y = b[rhs.layout().offset()];
            parallel::map(&a[a0..a0 + n], |x| f(x, y))
        }
        (_, Some((b0, _))) if full_b && lhs.elem_count() == 1 => {
            let x = a[lhs.layout().offset()];
            parallel::map(&b[b0..b0 + n], |y| f(x, y))
        }
        _ => {
            let la = lhs.layout().broadcast_as(op, &shape)?;
            let lb = rhs.layout().broadcast_as(op, &shape)?;
            parallel::build(n, |start, chunk| for_runs2_in(&la, &lb, start, chunk.len(), |r| zip_run(chunk, a, b, r, &f)))
        }
    };
    Ok((out, shape))
}

/// The binary op for one element type; one monomorphised loop per op.
fn binary_typed<T: Arith>(lhs: &Tensor, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let name = op.name();
    if op == BinaryOp::Div && !T::DTYPE.is_float() && lhs.dtype() == rhs.dtype() {
        // Only divisors that are actually used matter; an empty result divides nothing.
        let shape = broadcast_shape(name, lhs.shape(), rhs.shape())?;
        if checked_elem_count(name, &shape)? > 0 {
            let b = rhs.cpu_slice::<T>(name)?;
            if rhs.layout().offsets().any(|o| b[o].is_zero()) {
                return Err(Error::invalid(
                    name,
                    rhs.shape(),
                    format!("integer division by zero (dtype {}, lhs shape {:?})", T::DTYPE, lhs.shape()),
                ));
            }
        }
    }
    let (v, shape) = match op {
        BinaryOp::Add => zip_map(name, lhs, rhs, T::add)?,
        BinaryOp::Sub => zip_map(name, lhs, rhs, T::sub)?,
        BinaryOp::Mul => zip_map(name, lhs, rhs, T::mul)?,
        BinaryOp::Div => zip_map(name, lhs, rhs, T::div)?,
        BinaryOp::Maximum => zip_map(name, lhs, rhs, T::maximum)?,
        BinaryOp::Minimum => zip_map(name, lhs, rhs, T::minimum)?,
    };
    Tensor::from_cpu_storage(T::into_storage(v), &shape)
}

/// [`Tensor::add_n`] for at least two CPU parts of one shape and element type `T`: each output
/// element is `T::add` folded over the parts in order, as the chain of binary adds computes it.
fn add_n_typed<T: Arith>(op: &'static str, parts: &[&Tensor]) -> Result<Tensor> {
    let contiguous: Vec<Tensor> = parts.iter().map(|p| p.contiguous()).collect::<Result<_>>()?;
    let slices: Vec<&[T]> = contiguous.iter().map(|c| super::norm::dense::<T>(c, op)).collect::<Result<_>>()?;
    let (a, b, rest) = (slices[0], slices[1], &slices[2..]);
    let out = parallel::build(a.len(), |start, chunk| {
        let end = start + chunk.len();
        for ((o, &x), &y) in chunk.iter_mut().zip(&a[start..end]).zip(&b[start..end]) {
            o.write(T::add(x, y));
        }
        // SAFETY: the loop above wrote every element of the chunk (`a` and `b` have its length),
        // and `MaybeUninit<T>` has the layout of `T`.
        let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<T>] as *mut [T]) };
        for part in rest {
            for (o, &y) in chunk.iter_mut().zip(&part[start..end]) {
                *o = T::add(*o, y);
            }
        }
    });
    Tensor::from_cpu_storage(T::into_storage(out), parts[0].shape())
}

/// Checks that `v` can act on an integer tensor: finite, integral, within i64.
fn int_scalar(op: &'static str, t: &Tensor, v: f64) -> Result<i64> {
    if v.is_finite() && v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64 {
        Ok(v as i64)
    } else {
        Err(Error::invalid(op, t.shape(), format!("the scalar {v} is not an integer, which dtype {} needs", t.dtype())))
    }
}

impl Tensor {
    /// `self op rhs` elementwise with NumPy broadcasting (shapes align on the right; a dim of 1
    /// stretches). Both tensors must have the same dtype (`DTypeMismatch` otherwise); all seven
    /// dtypes work. Floats follow IEEE (bf16/f16 compute in f32 and round once; `maximum` and
    /// `minimum` propagate NaN); integers wrap on overflow, divide truncating toward zero, and a
    /// zero divisor is an `InvalidArgument` error. Shapes that do not broadcast give a
    /// `ShapeMismatch` naming the op and both shapes.
    pub fn binary(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || rhs.device().is_cuda() {
            return crate::cuda::ops::binary(self, rhs, op);
        }
        dispatch_all!(self.dtype(), T => binary_typed::<T>(self, rhs, op))
    }

    /// `self + rhs` with broadcasting; see [`Tensor::binary`].
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Add)
    }

    /// `parts[0] + parts[1] + ...`, added left to right: the values of chaining [`Tensor::add`],
    /// to the bit. When the parts are CPU tensors of one shape and dtype it is one pass writing
    /// one output, where the chain writes `n - 1` tensors and reads `2 (n - 1)`: summing the
    /// deltas of several frozen stacks at every projection was such a chain. Otherwise (other
    /// shapes, which broadcast as `add` does; a GPU) it is the chain. An empty list is an error.
    pub fn add_n(parts: &[&Tensor]) -> Result<Tensor> {
        const OP: &str = "add_n";
        let Some((first, rest)) = parts.split_first() else {
            return Err(Error::invalid(OP, &[], "no tensors to add"));
        };
        let one_pass =
            !rest.is_empty() && parts.iter().all(|p| p.shape() == first.shape() && p.dtype() == first.dtype() && !p.device().is_cuda());
        if !one_pass {
            let mut sum = (*first).clone();
            for p in rest {
                sum = sum.add(p)?;
            }
            return Ok(sum);
        }
        dispatch_all!(first.dtype(), T => add_n_typed::<T>(OP, parts))
    }
    /// `self - rhs` with broadcasting; see [`Tensor::binary`].
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Sub)
    }
    /// `self * rhs` with broadcasting; see [`Tensor::binary`].
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Mul)
    }
    /// `self / rhs` with broadcasting; see [`Tensor::binary`] (integer division by zero errors).
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Div)
    }
    /// Elementwise maximum with broadcasting, NaN-propagating; see [`Tensor::binary`].
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Maximum)
    }
    /// Elementwise minimum with broadcasting, NaN-propagating; see [`Tensor::binary`].
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(rhs, BinaryOp::Minimum)
    }

    /// `x + v` elementwise, any dtype, keeping it. Floats add `v` in their compute precision
    /// (f64, or f32 for f32/bf16/f16, rounding once), so a bf16 tensor is not limited to a bf16
    /// scalar. Integer tensors need an integral `v` (an `InvalidArgument` error otherwise) and
    /// wrap like `add`.
    pub fn add_scalar(&self, v: f64) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::scalar_ops("add_scalar", self, &[(BinaryOp::Add, v)]);
        }
        self.scalar_op("add_scalar", v, |x, s| x + s, |x, s| x + s, <i64 as Arith>::add)
    }

    /// `x * v` elementwise, any dtype, keeping it; the same rules as [`Tensor::add_scalar`].
    pub fn mul_scalar(&self, v: f64) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::scalar_ops("mul_scalar", self, &[(BinaryOp::Mul, v)]);
        }
        self.scalar_op("mul_scalar", v, |x, s| x * s, |x, s| x * s, <i64 as Arith>::mul)
    }

    /// Shared body of the scalar ops: `f64_fn` for f64, `f32_fn` for f32/bf16/f16, and for
    /// integers `int_fn` on the value widened to i64 then truncated back, which equals wrapping
    /// arithmetic in the narrow type (addition and multiplication commute with reduction mod 2^k).
    fn scalar_op(
        &self,
        op: &'static str,
        v: f64,
        f64_fn: impl Fn(f64, f64) -> f64 + Sync + Send,
        f32_fn: impl Fn(f32, f32) -> f32 + Sync + Send,
        int_fn: impl Fn(i64, i64) -> i64 + Sync + Send,
    ) -> Result<Tensor> {
        use super::unary::map_view;
        let v32 = v as f32;
        let storage = match self.dtype() {
            DType::F64 => CpuStorage::F64(map_view(self, op, |x: f64| f64_fn(x, v))?),
            DType::F32 => CpuStorage::F32(map_view(self, op, |x: f32| f32_fn(x, v32))?),
            DType::BF16 => CpuStorage::BF16(map_view(self, op, |x: bf16| bf16::from_f32(f32_fn(x.to_f32(), v32)))?),
            DType::F16 => CpuStorage::F16(map_view(self, op, |x: f16| f16::from_f32(f32_fn(x.to_f32(), v32)))?),
            DType::U8 => {
                let s = int_scalar(op, self, v)?;
                CpuStorage::U8(map_view(self, op, |x: u8| int_fn(x as i64, s) as u8)?)
            }
            DType::U32 => {
                let s = int_scalar(op, self, v)?;
                CpuStorage::U32(map_view(self, op, |x: u32| int_fn(x as i64, s) as u32)?)
            }
            DType::I64 => {
                let s = int_scalar(op, self, v)?;
                CpuStorage::I64(map_view(self, op, |x: i64| int_fn(x, s))?)
            }
        };
        Tensor::from_cpu_storage(storage, self.shape())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Device;
    use proptest::prelude::*;

    /// `add_n` gives the bits of chaining `add`, for every dtype family, strided parts, sizes
    /// across the parallel chunking, broadcasting parts (the chain) and a single part; no parts
    /// is an error.
    #[test]
    fn add_n_matches_chained_adds_to_the_bit() {
        use super::super::norm::testing::{values, view_of};
        for (dtype, n, parts) in [
            (DType::F32, 7, 3),
            (DType::BF16, 9, 4),
            (DType::F64, 5, 2),
            (DType::I64, 6, 3),
            (DType::F32, 40_000, 5),
            (DType::BF16, 33_000, 3),
        ] {
            for mode in 0..3u8 {
                let ts: Vec<Tensor> = (0..parts).map(|k| view_of(&values(n * 2, 40 + k as u64, 50.0), &[n, 2], dtype, mode)).collect();
                let refs: Vec<&Tensor> = ts.iter().collect();
                let got = Tensor::add_n(&refs).unwrap();
                let mut want = ts[0].clone();
                for t in &ts[1..] {
                    want = want.add(t).unwrap();
                }
                assert_eq!(got.shape(), want.shape());
                let bits = |t: &Tensor| t.to_vec_f64().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{dtype:?} n {n} parts {parts} mode {mode}");
            }
        }
        let a = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[2, 2], &Device::Cpu).unwrap();
        let row = Tensor::from_vec(vec![10f32, 20.], &[2], &Device::Cpu).unwrap();
        assert_eq!(Tensor::add_n(&[&a, &row, &a]).unwrap().to_vec::<f32>().unwrap(), vec![12., 24., 16., 28.]);
        assert_eq!(Tensor::add_n(&[&a]).unwrap().to_vec::<f32>().unwrap(), vec![1., 2., 3., 4.]);
        assert!(Tensor::add_n(&[]).is_err());
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// A random shape that broadcasts with `base` (each dim kept or set to 1, leading dims
    /// possibly dropped), so every combination of stretched dims gets exercised.
    pub(crate) fn broadcast_partner(base: &[usize], mask: u32, drop: usize) -> Vec<usize> {
        let drop = drop.min(base.len());
        base[drop..].iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d }).collect()
    }

    /// Expected result of a broadcasting op by the plain definition: for every output
    /// multi-index, read both operands at their (clamped) indices.
    pub(crate) fn broadcast_reference<U>(
        a: &[f64],
        ashape: &[usize],
        b: &[f64],
        bshape: &[usize],
        f: impl Fn(f64, f64) -> U,
    ) -> (Vec<U>, Vec<usize>) {
        let shape = broadcast_shape("reference", ashape, bshape).unwrap();
        let n: usize = shape.iter().product();
        // Storage index in an operand of shape `s` (row-major, aligned on the right) of the
        // output element with flat index `flat`; dims of size 1 always read index 0.
        let index_in = |flat: usize, s: &[usize]| {
            let (mut idx, mut rem, mut stride_in) = (0, flat, 1);
            for d in (0..shape.len()).rev() {
                let i = rem % shape[d];
                rem /= shape[d];
                let k = d as isize - (shape.len() as isize - s.len() as isize);
                if k >= 0 {
                    let sd = s[k as usize];
                    idx += if sd == 1 { 0 } else { i } * stride_in;
                    stride_in *= sd;
                }
            }
            idx
        };
        ((0..n).map(|i| f(a[index_in(i, ashape)], b[index_in(i, bshape)])).collect(), shape)
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        // Small integers and halves: exact in every float dtype, so results compare exactly.
        (0..n).map(|i| ((seed.wrapping_mul(31).wrapping_add(i as u64 * 7919) % 41) as f64 - 20.0) / 2.0).collect()
    }

    /// The op by its textbook definition, in f64 and in f32.
    fn scalar_ref(op: BinaryOp, x: f64, y: f64) -> f64 {
        match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
        }
    }
    fn scalar_ref32(op: BinaryOp, x: f32, y: f32) -> f32 {
        match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
        }
    }

    const OPS: [BinaryOp; 6] =
        [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum, BinaryOp::Minimum];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Broadcasting combos (incl. size-0 and size-1 dims, rank differences, swapped operand
        /// order, transposed operands) against the definition, for every op on f64 and f32.
        #[test]
        fn broadcasting_matches_reference(
            shape in proptest::collection::vec(0usize..4, 0..4),
            mask in any::<u32>(),
            drop in 0usize..3,
            swap in any::<bool>(),
            transpose in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let other = broadcast_partner(&shape, mask, drop);
            let (ashape, bshape) = if swap { (other.clone(), shape.clone()) } else { (shape.clone(), other.clone()) };
            let (av, bv) = (values(ashape.iter().product(), seed), values(bshape.iter().product(), seed ^ 5));
            let bv: Vec<f64> = bv.into_iter().map(|v| if v == 0.0 { 3.0 } else { v }).collect();
            for dt in [DType::F64, DType::F32, DType::BF16] {
                let mut a = Tensor::from_vec(av.clone(), &ashape, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                if transpose && a.rank() >= 2 {
                    // Same logical values, read through a transposed (strided) layout.
                    a = a.t().unwrap().contiguous().unwrap().t().unwrap();
                }
                let b = Tensor::from_vec(bv.clone(), &bshape, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                for op in OPS {
                    let got = a.binary(&b, op).unwrap();
                    // f64 computes in f64; the others in f32, rounded once to the dtype.
                    let (want, wshape) = if dt == DType::F64 {
                        let (w, s) = broadcast_reference(&av, &ashape, &bv, &bshape, |x, y| scalar_ref(op, x, y));
                        (Tensor::from_vec(w, &s, &Device::Cpu).unwrap(), s)
                    } else {
                        let (w, s) = broadcast_reference(&av, &ashape, &bv, &bshape, |x, y| scalar_ref32(op, x as f32, y as f32));
                        (Tensor::from_vec(w, &s, &Device::Cpu).unwrap(), s)
                    };
                    prop_assert_eq!(got.shape(), wshape.as_slice());
                    prop_assert_eq!(got.dtype(), dt);
                    let want = want.to_dtype(dt).unwrap().to_vec_f64().unwrap();
                    prop_assert_eq!(got.to_vec_f64().unwrap(), want, "{} {:?} {:?} {:?}", op.name(), dt, ashape, bshape);
                }
            }
        }

        /// Integer dtypes wrap and divide truncating, matching Rust's wrapping ops.
        #[test]
        fn integer_ops_wrap(xs in proptest::collection::vec(any::<i64>(), 1..20), y in any::<i64>()) {
            let y = if y == 0 { 7 } else { y };
            let n = xs.len();
            let a = Tensor::from_vec(xs.clone(), &[n], &Device::Cpu).unwrap();
            let b = Tensor::from_vec(vec![y], &[1], &Device::Cpu).unwrap();
            prop_assert_eq!(a.add(&b).unwrap().to_vec::<i64>().unwrap(), xs.iter().map(|x| x.wrapping_add(y)).collect::<Vec<_>>());
            prop_assert_eq!(a.mul(&b).unwrap().to_vec::<i64>().unwrap(), xs.iter().map(|x| x.wrapping_mul(y)).collect::<Vec<_>>());
            prop_assert_eq!(b.sub(&a).unwrap().to_vec::<i64>().unwrap(), xs.iter().map(|x| y.wrapping_sub(*x)).collect::<Vec<_>>());
            prop_assert_eq!(a.div(&b).unwrap().to_vec::<i64>().unwrap(), xs.iter().map(|x| x.wrapping_div(y)).collect::<Vec<_>>());
            let au: Vec<u8> = xs.iter().map(|&x| x as u8).collect();
            let ua = Tensor::from_vec(au.clone(), &[n], &Device::Cpu).unwrap();
            let ub = Tensor::from_vec(vec![y as u8 | 1], &[], &Device::Cpu).unwrap();
            prop_assert_eq!(ua.add(&ub).unwrap().to_vec::<u8>().unwrap(), au.iter().map(|x| x.wrapping_add(y as u8 | 1)).collect::<Vec<_>>());
            prop_assert_eq!(ua.mul_scalar(-3.0).unwrap().to_vec::<u8>().unwrap(), au.iter().map(|x| x.wrapping_mul((-3i64) as u8)).collect::<Vec<_>>());
            prop_assert_eq!(ua.add_scalar(300.0).unwrap().to_vec::<u8>().unwrap(), au.iter().map(|x| x.wrapping_add(300u32 as u8)).collect::<Vec<_>>());
            let uu: Vec<u32> = xs.iter().map(|&x| x as u32).collect();
            let u32t = Tensor::from_vec(uu.clone(), &[n], &Device::Cpu).unwrap();
            prop_assert_eq!(u32t.maximum(&u32t.add_scalar(1.0).unwrap()).unwrap().to_vec::<u32>().unwrap(),
                uu.iter().map(|x| (*x).max(x.wrapping_add(1))).collect::<Vec<_>>());
        }

        /// The scalar forms equal the tensor forms with a scalar operand for exactly representable
        /// scalars, on every float dtype.
        #[test]
        fn scalar_ops_match(n in 0usize..30, v in -8i32..8) {
            let v = v as f64 / 4.0;
            for dt in [DType::F64, DType::F32, DType::BF16, DType::F16] {
                let x = Tensor::from_vec(values(n, 3), &[n], &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                let s = Tensor::full(v, &[], dt, &Device::Cpu).unwrap();
                prop_assert_eq!(x.add_scalar(v).unwrap().to_vec_f64().unwrap(), x.add(&s).unwrap().to_vec_f64().unwrap());
                prop_assert_eq!(x.mul_scalar(v).unwrap().to_vec_f64().unwrap(), x.mul(&s).unwrap().to_vec_f64().unwrap());
            }
        }
    }

    #[test]
    fn nan_propagates_through_maximum_and_minimum() {
        let a = Tensor::from_vec(vec![f32::NAN, 1.0, 2.0], &[3], &Device::Cpu).unwrap();
        let b = Tensor::from_vec(vec![0.0f32, f32::NAN, 1.0], &[3], &Device::Cpu).unwrap();
        for r in [a.maximum(&b).unwrap(), a.minimum(&b).unwrap(), b.maximum(&a).unwrap()] {
            let v = r.to_vec::<f32>().unwrap();
            assert!(v[0].is_nan() && v[1].is_nan());
        }
        assert_eq!(a.maximum(&b).unwrap().to_vec::<f32>().unwrap()[2], 2.0);
        let h = a.to_dtype(DType::BF16).unwrap().minimum(&b.to_dtype(DType::BF16).unwrap()).unwrap();
        assert!(h.to_vec_f64().unwrap()[1].is_nan());
    }

    #[test]
    fn errors_name_the_op_and_both_sides() {
        let a = Tensor::zeros(&[2, 3], DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(&[4, 3], DType::F32, &Device::Cpu).unwrap();
        let err = a.add(&b).unwrap_err().to_string();
        assert!(err.starts_with("add: shape mismatch between [2, 3] and [4, 3]"), "{err}");
        let c = Tensor::zeros(&[2, 3], DType::F64, &Device::Cpu).unwrap();
        let err = a.mul(&c).unwrap_err().to_string();
        assert_eq!(err, "mul: dtype mismatch between f32 and f64");
        let i = Tensor::from_vec(vec![1i64, 2, 3], &[3], &Device::Cpu).unwrap();
        let z = Tensor::from_vec(vec![1i64, 0, 1], &[3], &Device::Cpu).unwrap();
        let err = i.div(&z).unwrap_err().to_string();
        assert!(err.starts_with("div: integer division by zero"), "{err}");
        // Nothing is divided when the result is empty, so no error.
        let e = Tensor::zeros(&[0, 3], DType::I64, &Device::Cpu).unwrap();
        assert_eq!(e.div(&z).unwrap().shape(), &[0, 3]);
        let err = i.add_scalar(0.5).unwrap_err().to_string();
        assert!(err.starts_with("add_scalar: the scalar 0.5 is not an integer"), "{err}");
        assert!(i.mul_scalar(f64::NAN).is_err());
        assert_eq!(Tensor::from_vec(vec![i64::MIN], &[1], &Device::Cpu).unwrap()
            .div(&Tensor::from_vec(vec![-1i64], &[1], &Device::Cpu).unwrap()).unwrap().to_vec::<i64>().unwrap(), vec![i64::MIN]);
    }

    /// The threaded paths (same-shape, scalar and general broadcast) give the same bits on 1 and
    /// 2 threads and agree with the reference.
    #[test]
    fn thread_count_invariant() {
        let mut rng = crate::Rng::new(11);
        let a = Tensor::randn(&mut rng, 0.0, 1.0, &[190, 211], DType::F32, &Device::Cpu).unwrap();
        let row = Tensor::randn(&mut rng, 0.0, 1.0, &[211], DType::F32, &Device::Cpu).unwrap();
        let col = Tensor::randn(&mut rng, 0.0, 1.0, &[190, 1], DType::F32, &Device::Cpu).unwrap();
        let s = Tensor::scalar(0.5f32);
        let at = a.t().unwrap().contiguous().unwrap().t().unwrap();
        let cases = [(a.clone(), a.clone()), (a.clone(), s.clone()), (s, a.clone()), (a.clone(), row), (col, at.clone()), (at, a)];
        for (x, y) in &cases {
            let one = pool(1).install(|| x.div(y).unwrap().to_vec::<f32>().unwrap());
            let two = pool(2).install(|| x.div(y).unwrap().to_vec::<f32>().unwrap());
            assert_eq!(one, two);
            let (want, _) = broadcast_reference(&x.to_vec_f64().unwrap(), x.shape(), &y.to_vec_f64().unwrap(), y.shape(), |p, q| (p as f32) / (q as f32));
            assert_eq!(one, want);
        }
    }
}
