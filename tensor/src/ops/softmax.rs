//! Softmax and log-softmax along one dim (float dtypes).
//!
//! Precision (the contract and tolerance rule are in `brainstacks_kernels::softmax`): the row
//! maximum is subtracted first, so every `exp` argument is `<= 0` and nothing overflows. f64
//! input computes in f64. f32, bf16 and f16 input computes `x - max` and `exp` in f32 (bf16/f16
//! widen exactly), accumulates the row sum `S` in f64 in index order, and forms `e / S` (or
//! `(x - max) - ln S`) in f64 before rounding once to the dtype. f32 `exp` keeps the hot loop
//! fast; the f64 sum keeps long rows from losing the small terms.
//!
//! Threading: whole rows go to one task, so each row's order of operations, and therefore its
//! bits, do not depend on the thread count. A reduction over a non-last dim (rows strided by
//! `inner`) processes all `inner` rows of one outer slice together, vectorised across `inner`.

use half::{bf16, f16};

use super::reduce::par_chunks;
use crate::{DType, Dim, Error, Result, Tensor, WithDType};

/// The precision a row is computed in: f64, or f32 for the narrower float dtypes.
trait Compute: Copy + PartialOrd + Send + Sync + Default {
    const NEG_INF: Self;
    fn from_t<T: WithDType>(x: T) -> Self;
    fn sub(self, b: Self) -> Self;
    fn exp(self) -> Self;
    fn to_f64(self) -> f64;
    fn is_nan(self) -> bool;
}

impl Compute for f64 {
    const NEG_INF: Self = f64::NEG_INFINITY;
    #[inline]
    fn from_t<T: WithDType>(x: T) -> Self {
        x.to_f64()
    }
    #[inline]
    fn sub(self, b: Self) -> Self {
        self - b
    }
    #[inline]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
}

impl Compute for f32 {
    const NEG_INF: Self = f32::NEG_INFINITY;
    #[inline]
    fn from_t<T: WithDType>(x: T) -> Self {
        x.to_f32()
    }
    #[inline]
    fn sub(self, b: Self) -> Self {
        self - b
    }
    #[inline]
    fn exp(self) -> Self {
        f32::exp(self)
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
}

/// The running NaN-propagating maximum: once NaN, it stays NaN.
#[inline]
fn nan_max<C: Compute>(m: C, v: C) -> C {
    if v > m || v.is_nan() { v } else { m }
}

/// Softmax (or log-softmax) of `outer` slabs of `[size, inner]` values, `x` and `out` both
/// contiguous `[outer, size, inner]`.
fn softmax_slabs<T: WithDType, C: Compute>(x: &[T], out: &mut [T], size: usize, inner: usize, log: bool) {
    let slab = size * inner;
    if slab == 0 {
        return;
    }
    // Whole slabs per task, about 32k elements each.
    let slabs_per_task = ((1usize << 15) / slab).max(1);
    par_chunks(out, slabs_per_task * slab, x.len(), |start, chunk| {
        let mut d = vec![C::default(); slab];
        if inner == 1 {
            // Contiguous rows: the same arithmetic in the same order as the general loop below,
            // without its index bookkeeping.
            for (k, y) in chunk.chunks_mut(size).enumerate() {
                let xs = &x[start + k * size..start + (k + 1) * size];
                let m = xs.iter().fold(C::NEG_INF, |m, &v| nan_max(m, C::from_t(v)));
                let mut sum = 0.0f64;
                for (dj, &v) in d.iter_mut().zip(xs) {
                    let di = C::from_t(v).sub(m);
                    let e = di.exp();
                    sum += e.to_f64();
                    *dj = if log { di } else { e };
                }
                if log {
                    let ln = sum.ln();
                    for (yj, dj) in y.iter_mut().zip(&d) {
                        *yj = T::from_f64(dj.to_f64() - ln);
                    }
                } else {
                    let inv = 1.0 / sum;
                    for (yj, dj) in y.iter_mut().zip(&d) {
                        *yj = T::from_f64(dj.to_f64() * inv);
                    }
                }
            }
            return;
        }
        let mut m = vec![C::NEG_INF; inner];
        let mut sum = vec![0.0f64; inner];
        for (k, y) in chunk.chunks_mut(slab).enumerate() {
            let xs = &x[start + k * slab..start + (k + 1) * slab];
            m.fill(C::NEG_INF);
            sum.fill(0.0);
            for s in 0..size {
                for i in 0..inner {
                    m[i] = nan_max(m[i], C::from_t(xs[s * inner + i]));
                }
            }
            // d = x - max, then e = exp(d) summed in f64 in order of s (log keeps d, needs S).
            for s in 0..size {
                for i in 0..inner {
                    let di = C::from_t(xs[s * inner + i]).sub(m[i]);
                    let e = di.exp();
                    sum[i] += e.to_f64();
                    d[s * inner + i] = if log { di } else { e };
                }
            }
            if log {
                let ln: Vec<f64> = sum.iter().map(|s| s.ln()).collect();
                for s in 0..size {
                    for i in 0..inner {
                        y[s * inner + i] = T::from_f64(d[s * inner + i].to_f64() - ln[i]);
                    }
                }
            } else {
                let inv: Vec<f64> = sum.iter().map(|s| 1.0 / s).collect();
                for s in 0..size {
                    for i in 0..inner {
                        y[s * inner + i] = T::from_f64(d[s * inner + i].to_f64() * inv[i]);
                    }
                }
            }
        }
    });
}

impl Tensor {
    /// Shared body: validates, makes the input contiguous, dispatches on dtype.
    fn softmax_impl<D: Dim>(&self, op: &'static str, dim: D, log: bool) -> Result<Tensor> {
        let d = dim.resolve(op, self.shape())?;
        let shape = self.shape();
        // The outer extent is implied by the slab count; only the row length and stride matter.
        let (size, inner): (usize, usize) = (shape[d], shape[d + 1..].iter().product());
        let x = self.contiguous()?;
        fn run<T: WithDType, C: Compute>(op: &'static str, x: &Tensor, size: usize, inner: usize, log: bool) -> Result<Tensor> {
            let data = x.cpu_slice::<T>(op)?;
            let (a, b) = x.layout().contiguous_range().ok_or_else(|| Error::invalid(op, x.shape(), "internal: expected a contiguous tensor"))?;
            let mut out = vec![T::default(); b - a];
            softmax_slabs::<T, C>(&data[a..b], &mut out, size, inner, log);
            Tensor::from_cpu_storage(T::into_storage(out), x.shape())
        }
        match self.dtype() {
            DType::F64 => run::<f64, f64>(op, &x, size, inner, log),
            DType::F32 => run::<f32, f32>(op, &x, size, inner, log),
            DType::BF16 => run::<bf16, f32>(op, &x, size, inner, log),
            DType::F16 => run::<f16, f32>(op, &x, size, inner, log),
            dt => Err(Error::dtype(op, dt, "a floating-point dtype is required")),
        }
    }

    /// `exp(x - max) / sum(exp(x - max))` along `dim` (negative dims count from the back), same
    /// shape and dtype. Float dtypes only. A row holding NaN or `+inf`, or only `-inf`, gives
    /// NaN; `-inf` entries in an otherwise finite row give exactly 0 (masking works).
    pub fn softmax<D: Dim>(&self, dim: D) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::softmax(self, dim.resolve("softmax", self.shape())?);
        }
        self.softmax_impl("softmax", dim, false)
    }

    /// `(x - max) - ln(sum(exp(x - max)))` along `dim`, same shape and dtype; float dtypes only.
    /// Computed directly, not as `ln(softmax)`, so tiny probabilities keep their log.
    pub fn log_softmax<D: Dim>(&self, dim: D) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            // Composed from the reduction and elementwise kernels, in the same form.
            let d = dim.resolve("log_softmax", self.shape())?;
            let shifted = self.sub(&self.max(d, true)?)?;
            return shifted.sub(&shifted.exp()?.sum(&[d], true)?.log()?);
        }
        self.softmax_impl("log_softmax", dim, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;
    use brainstacks_kernels::softmax as oracle;
    use proptest::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// Unit roundoff of the compute precision, of the output dtype, and the output's smallest
    /// subnormal (the tolerance rule's `u`, `u_out`, `tiny`).
    fn units(dt: DType) -> (f64, f64, f64) {
        let u32_ = f32::EPSILON as f64 / 2.0;
        match dt {
            DType::F64 => (f64::EPSILON / 2.0, f64::EPSILON / 2.0, f64::from_bits(1)),
            DType::F32 => (u32_, u32_, f32::from_bits(1) as f64),
            DType::BF16 => (u32_, 2f64.powi(-8), bf16::from_bits(1).to_f64()),
            _ => (u32_, 2f64.powi(-11), f16::from_bits(1).to_f64()),
        }
    }

    /// The tensor's values with `dim` moved last, as contiguous rows for the oracle.
    fn rows_of(t: &Tensor, dim: usize) -> (Vec<f64>, usize, usize) {
        let last = t.rank() - 1;
        let moved = t.transpose(dim, last).unwrap();
        let cols = t.shape()[dim];
        let rows = t.elem_count().checked_div(cols).unwrap_or(0);
        (moved.to_vec_f64().unwrap(), rows, cols)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Softmax and log-softmax along any dim (negative or not) of transposed views, every
        /// float dtype, within the oracle's tolerance; softmax rows sum to one.
        #[test]
        fn matches_oracle(shape in proptest::collection::vec(0usize..6, 1..4), which in 0usize..4, neg in any::<bool>(), tr in any::<bool>(), seed in any::<u64>(), scale in 0.1f64..30.0) {
            let d = which % shape.len();
            let given = if neg { d as isize - shape.len() as isize } else { d as isize };
            let mut rng = crate::Rng::new(seed);
            for dt in [DType::F64, DType::F32, DType::BF16, DType::F16] {
                let mut t = Tensor::randn(&mut rng, 0.0, scale, &shape, DType::F64, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                if tr && shape.len() >= 2 {
                    let r = shape.len();
                    let mut s = shape.clone();
                    s.swap(r - 2, r - 1);
                    t = Tensor::randn(&mut rng, 0.0, scale, &s, DType::F64, &Device::Cpu).unwrap().to_dtype(dt).unwrap().t().unwrap();
                }
                let (xs, rows, cols) = rows_of(&t, d);
                let ranges = oracle::row_ranges_f64(&xs, rows, cols);
                let (u, u_out, tiny) = units(dt);
                let y = t.softmax(given).unwrap();
                prop_assert_eq!(y.shape(), shape.as_slice());
                prop_assert_eq!(y.dtype(), dt);
                let (ys, _, _) = rows_of(&y, d);
                let want = oracle::softmax_rows_f64(&xs, rows, cols);
                for (k, (g, w)) in ys.iter().zip(&want).enumerate() {
                    let tol = oracle::softmax_tolerance(*w, ranges[k / cols.max(1)], u, u_out, tiny);
                    prop_assert!((g - w).abs() <= tol, "{:?} softmax {} vs {} (tol {})", dt, g, w, tol);
                }
                for r in 0..rows {
                    let s: f64 = ys[r * cols..(r + 1) * cols].iter().sum();
                    prop_assert!((s - 1.0).abs() <= 2.0 * cols as f64 * u_out + 1e-12, "{:?} row sum {}", dt, s);
                }
                let l = t.log_softmax(given).unwrap();
                let (ls, _, _) = rows_of(&l, d);
                let want = oracle::log_softmax_rows_f64(&xs, rows, cols);
                for (k, (g, w)) in ls.iter().zip(&want).enumerate() {
                    let tol = oracle::log_softmax_tolerance(*w, ranges[k / cols.max(1)], u, u_out, tiny);
                    prop_assert!((g - w).abs() <= tol, "{:?} log_softmax {} vs {} (tol {})", dt, g, w, tol);
                }
            }
        }
    }

    #[test]
    fn masking_nan_and_large_values() {
        let x = Tensor::from_vec(vec![1000.0f32, f32::NEG_INFINITY, 1000.0, 1.0, f32::NAN, 2.0], &[2, 3], &Device::Cpu).unwrap();
        let y = x.softmax(-1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(&y[..3], &[0.5, 0.0, 0.5]);
        assert!(y[3..].iter().all(|v| v.is_nan()));
        let l = x.log_softmax(1usize).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(l[1], f32::NEG_INFINITY);
        assert!((l[0] - (-std::f32::consts::LN_2)).abs() < 1e-7);
        // Very negative log-probabilities stay finite and exact (no log of a rounded-to-0 value).
        let t = Tensor::from_vec(vec![0.0f64, -2000.0], &[2], &Device::Cpu).unwrap();
        assert_eq!(t.log_softmax(0usize).unwrap().to_vec::<f64>().unwrap(), vec![0.0, -2000.0]);
    }

    #[test]
    fn errors_and_edge_shapes() {
        let i = Tensor::zeros(&[2, 3], DType::I64, &Device::Cpu).unwrap();
        let err = i.softmax(-1).unwrap_err().to_string();
        assert_eq!(err, "softmax: dtype i64 is not supported: a floating-point dtype is required");
        let f = Tensor::zeros(&[2, 3], DType::F32, &Device::Cpu).unwrap();
        let err = f.log_softmax(2usize).unwrap_err().to_string();
        assert_eq!(err, "log_softmax: dim 2 is out of range for a tensor of rank 2 (shape [2, 3])");
        assert!(Tensor::scalar(1.0f32).softmax(0usize).is_err());
        assert_eq!(Tensor::zeros(&[3, 0], DType::F32, &Device::Cpu).unwrap().softmax(1usize).unwrap().shape(), &[3, 0]);
        assert_eq!(Tensor::zeros(&[0, 3], DType::F32, &Device::Cpu).unwrap().softmax(1usize).unwrap().shape(), &[0, 3]);
        let one = Tensor::from_vec(vec![7.0f32, -3.0], &[2, 1], &Device::Cpu).unwrap();
        assert_eq!(one.softmax(1usize).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    }

    /// The threaded path gives the same bits on 1 and 2 threads along the last and a middle dim.
    #[test]
    fn thread_count_invariant() {
        let mut rng = crate::Rng::new(9);
        let x = Tensor::randn(&mut rng, 0.0, 3.0, &[40, 50, 33], DType::F32, &Device::Cpu).unwrap();
        for d in [0usize, 1, 2] {
            let run = |n: usize| pool(n).install(|| x.softmax(d).unwrap().to_vec::<f32>().unwrap());
            assert_eq!(run(1), run(2), "dim {d}");
            let runl = |n: usize| pool(n).install(|| x.log_softmax(d).unwrap().to_vec::<f32>().unwrap());
            assert_eq!(runl(1), runl(2), "dim {d}");
        }
    }
}
