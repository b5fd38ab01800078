//! RMS norm and layer norm over the last dim, fused into one pass per row.
//!
//! Also home of the small helpers the fused ops of this folder share (norm, rope, index, concat,
//! topk, select, loss, attention): the row-parallel loop, dtype dispatch and dense-slice access.
//!
//! Every row is computed by one closure call whatever the thread count, with statistics summed in
//! f64 in index order, so results are bitwise identical on 1 or N threads; bf16/f16/f32 outputs
//! are rounded once from f64.

use rayon::prelude::*;

use crate::cpu::parallel::{CHUNK, PARALLEL_THRESHOLD, filled, offset_of};
use crate::{Error, Result, Tensor, WithDType};

// ---- helpers shared by the fused ops ------------------------------------------------------

/// Calls `f(r, row)` for every row `r` of `out` (rows of `row_len` elements), in parallel when
/// the estimated total work (`row_work` per row) is large. Each row is handled by exactly one
/// call, so the result does not depend on the thread count.
pub(crate) fn for_each_row<T: Send>(out: &mut [T], row_len: usize, row_work: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if row_len == 0 || out.is_empty() {
        return;
    }
    let rows = out.len() / row_len;
    let row_work = row_work.max(1);
    if rows.saturating_mul(row_work) < PARALLEL_THRESHOLD || rows == 1 {
        out.chunks_mut(row_len).enumerate().for_each(|(r, row)| f(r, row));
        return;
    }
    // Group rows so one task does about CHUNK units of work: enough to amortise scheduling.
    let rows_per_task = (CHUNK / row_work).max(1);
    out.par_chunks_mut(rows_per_task * row_len).enumerate().for_each(|(task, block)| {
        for (i, row) in block.chunks_mut(row_len).enumerate() {
            f(task * rows_per_task + i, row);
        }
    });
}

/// [`for_each_row`] over two outputs at once: row `r` is `a[r * a_len..]` and `b[r * b_len..]`
/// (both with the same number of rows), written by `f(r, a_row, b_row)`, grouped into tasks
/// the same way.
pub(crate) fn for_each_row2<A: Send, B: Send>(
    a: &mut [A],
    a_len: usize,
    b: &mut [B],
    b_len: usize,
    row_work: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) {
    if a_len == 0 || b_len == 0 || a.is_empty() {
        return;
    }
    let rows = a.len() / a_len;
    debug_assert_eq!(b.len(), rows * b_len, "for_each_row2: outputs with different row counts");
    let row_work = row_work.max(1);
    if rows.saturating_mul(row_work) < PARALLEL_THRESHOLD || rows == 1 {
        a.chunks_mut(a_len).zip(b.chunks_mut(b_len)).enumerate().for_each(|(r, (ra, rb))| f(r, ra, rb));
        return;
    }
    let rows_per_task = (CHUNK / row_work).max(1);
    a.par_chunks_mut(rows_per_task * a_len).zip(b.par_chunks_mut(rows_per_task * b_len)).enumerate().for_each(|(task, (ba, bb))| {
        for (i, (ra, rb)) in ba.chunks_mut(a_len).zip(bb.chunks_mut(b_len)).enumerate() {
            f(task * rows_per_task + i, ra, rb);
        }
    });
}

/// A new tensor with the shape and dtype `T` of `x`, whose row `r` (the last dim, `d` elements)
/// is written by `f(r, x_row, out_row)` from the same row of `x`. Rows go through
/// [`for_each_row`] with `row_work` units of work each, so the result is thread-count invariant.
///
/// A view whose rows are each contiguous (the last dim has stride 1: a narrowed last dim, or
/// permuted outer dims such as the `[B, H, T, D]` view of the attention heads that RoPE rotates)
/// is read in place, row by row; any other view is made contiguous first.
pub(crate) fn map_rows<T: WithDType>(
    op: &'static str,
    x: &Tensor,
    d: usize,
    row_work: usize,
    f: impl Fn(usize, &[T], &mut [T]) + Sync + Send,
) -> Result<Tensor> {
    let mut out = filled(x.elem_count(), T::default());
    if !x.is_contiguous() && x.strides().last() == Some(&1) {
        let (data, layout) = (x.cpu_slice::<T>(op)?, x.layout());
        for_each_row(&mut out, d, row_work, |r, row| {
            let start = offset_of(layout, r * d);
            f(r, &data[start..start + d], row)
        });
    } else {
        let xc = x.contiguous()?;
        let xs = dense::<T>(&xc, op)?;
        for_each_row(&mut out, d, row_work, |r, row| f(r, &xs[r * d..(r + 1) * d], row));
    }
    Tensor::from_vec(out, x.shape(), &x.device())
}

/// The elements of a contiguous CPU tensor as a typed slice; a CUDA tensor gives the op's
/// not-implemented-on-CUDA error (not a dtype error), another dtype a dtype error naming `op`.
pub(crate) fn dense<'a, T: WithDType>(t: &'a Tensor, op: &'static str) -> Result<&'a [T]> {
    t.cpu_storage(op)?;
    t.as_contiguous_slice::<T>().ok_or(Error::DTypeMismatch { op, lhs: t.dtype(), rhs: T::DTYPE })
}

/// Runs `$body` with the type alias `$T` bound to the Rust type of a float `$dtype`; other dtypes
/// give an `UnsupportedDType` error naming `$op`. `$body` must evaluate to a `Result`.
macro_rules! dispatch_float {
    ($dtype:expr, $op:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::BF16 => {
                type $T = ::half::bf16;
                $body
            }
            $crate::DType::F16 => {
                type $T = ::half::f16;
                $body
            }
            dt => Err($crate::Error::UnsupportedDType { op: $op, dtype: dt, note: "a floating-point dtype is required".into() }),
        }
    };
}
pub(crate) use dispatch_float;

/// Runs `$body` with the type alias `$T` bound to the Rust type of `$dtype`, for every dtype.
macro_rules! dispatch_all {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::BF16 => {
                type $T = ::half::bf16;
                $body
            }
            $crate::DType::F16 => {
                type $T = ::half::f16;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
        }
    };
}
pub(crate) use dispatch_all;

/// Checks a normalisation's input and per-feature parameters; returns the feature count `D`.
fn check_norm(op: &'static str, x: &Tensor, params: &[&Tensor]) -> Result<usize> {
    if x.rank() == 0 {
        return Err(Error::invalid(op, x.shape(), "needs rank >= 1: it normalises over the last dim"));
    }
    if !x.dtype().is_float() {
        return Err(Error::dtype(op, x.dtype(), "a floating-point dtype is required"));
    }
    let d = x.shape()[x.rank() - 1];
    for p in params {
        if p.shape() != [d] {
            return Err(Error::shape(op, x.shape(), p.shape(), format!("weight and bias must be [{d}], the last dim of the input")));
        }
        if p.dtype() != x.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: p.dtype() });
        }
    }
    Ok(d)
}

impl Tensor {
    /// RMS norm over the last dim (Llama): `x * rsqrt(mean(x^2) + eps) * weight`, `weight` of shape
    /// `[D]` with `D` the last dim of `self` and the same dtype.
    ///
    /// The mean of squares and the products are computed in f64 for every dtype and rounded once
    /// (Hugging Face rounds the normalised value to bf16 before the weight product; the two differ
    /// by at most about one bf16 unit). Oracle: `brainstacks_kernels::rms_norm`.
    pub fn rms_norm(&self, weight: &Tensor, eps: f64) -> Result<Tensor> {
        const OP: &str = "rms_norm";
        let d = check_norm(OP, self, &[weight])?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || weight.device().is_cuda() {
            return crate::cuda::ops::rms_norm(self, weight, d, eps);
        }
        let w = weight.to_vec_f64()?;
        dispatch_float!(self.dtype(), OP, T => {
            map_rows::<T>(OP, self, d, 3 * d, |_, xr, row| {
                let mut sum_sq = 0f64;
                for &v in xr {
                    let v = v.to_f64();
                    sum_sq += v * v;
                }
                let inv = 1.0 / (sum_sq / d as f64 + eps).sqrt();
                for i in 0..d {
                    row[i] = T::from_f64(xr[i].to_f64() * inv * w[i]);
                }
            })
        })
    }

    /// The gradient of [`Tensor::rms_norm`] with respect to its input `self`, for the output
    /// gradient `grad` (same shape and dtype as `self`): with `r = 1 / sqrt(mean(x^2) + eps)` and
    /// `xhat = x r` per row, `dx = r (g w - xhat mean(g w xhat))`. One pass per row in f64,
    /// rounded once (the composed form takes about ten full passes over the activations).
    pub fn rms_norm_input_grad(&self, weight: &Tensor, grad: &Tensor, eps: f64) -> Result<Tensor> {
        const OP: &str = "rms_norm_input_grad";
        let d = check_norm(OP, self, &[weight])?;
        if grad.shape() != self.shape() || grad.dtype() != self.dtype() {
            return Err(Error::shape(OP, self.shape(), grad.shape(), "the gradient must match the input in shape and dtype"));
        }
        let w = weight.to_vec_f64()?;
        let gc = grad.contiguous()?;
        dispatch_float!(self.dtype(), OP, T => {
            let gs = dense::<T>(&gc, OP)?;
            map_rows::<T>(OP, self, d, 6 * d, |r, xr, row| {
                let gr = &gs[r * d..(r + 1) * d];
                let mut sum_sq = 0f64;
                for &v in xr {
                    let v = v.to_f64();
                    sum_sq += v * v;
                }
                let inv = 1.0 / (sum_sq / d as f64 + eps).sqrt();
                let mut proj = 0f64;
                for i in 0..d {
                    proj += gr[i].to_f64() * w[i] * xr[i].to_f64() * inv;
                }
                proj /= d as f64;
                for i in 0..d {
                    let xhat = xr[i].to_f64() * inv;
                    row[i] = T::from_f64(inv * (gr[i].to_f64() * w[i] - xhat * proj));
                }
            })
        })
    }

    /// Layer norm over the last dim with the *biased* variance, as PyTorch:
    /// `(x - mean) / sqrt(var + eps) * weight + bias`, `weight` and `bias` of shape `[D]`.
    ///
    /// Mean and variance use two passes in f64 (no cancellation for rows with a large mean); the
    /// output is rounded once. Oracle: `brainstacks_kernels::layer_norm`.
    pub fn layer_norm(&self, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
        const OP: &str = "layer_norm";
        let d = check_norm(OP, self, &[weight, bias])?;
        let w = weight.to_vec_f64()?;
        let b = bias.to_vec_f64()?;
        dispatch_float!(self.dtype(), OP, T => {
            map_rows::<T>(OP, self, d, 4 * d, |_, xr, row| {
                let mut sum = 0f64;
                for &v in xr {
                    sum += v.to_f64();
                }
                let mean = sum / d as f64;
                let mut sq = 0f64;
                for &v in xr {
                    let c = v.to_f64() - mean;
                    sq += c * c;
                }
                let inv = 1.0 / (sq / d as f64 + eps).sqrt();
                for i in 0..d {
                    row[i] = T::from_f64((xr[i].to_f64() - mean) * inv * w[i] + b[i]);
                }
            })
        })
    }
}

/// Test helpers shared by the test modules of the fused ops.
#[cfg(test)]
pub(crate) mod testing {
    use crate::{DType, Device, Tensor};

    /// Unit roundoff of a float dtype's storage format.
    pub fn unit_roundoff(dtype: DType) -> f64 {
        match dtype {
            DType::F64 => f64::EPSILON / 2.0,
            DType::F32 => f32::EPSILON as f64 / 2.0,
            DType::BF16 => 2f64.powi(-8),
            DType::F16 => 2f64.powi(-11),
            _ => 0.0,
        }
    }

    /// Half the smallest positive subnormal of a float dtype: what an underflowing output can lose.
    pub fn tiny(dtype: DType) -> f64 {
        match dtype {
            DType::F64 => f64::from_bits(1),
            DType::F32 => 2f64.powi(-150),
            DType::BF16 => 2f64.powi(-134),
            DType::F16 => 2f64.powi(-25),
            _ => 0.0,
        }
    }

    /// The float dtypes, for proptest to pick from.
    pub const FLOATS: [DType; 4] = [DType::F64, DType::F32, DType::BF16, DType::F16];

    /// A tensor holding `values` (row-major in `shape`), cast to `dtype`, stored so that its
    /// layout is: `mode % 3 == 0` contiguous, `1` transposed in the last two dims (rank >= 2),
    /// `2` narrowed in the last dim (the storage has a junk element on each side of every row).
    pub fn view_of(values: &[f64], shape: &[usize], dtype: DType, mode: u8) -> Tensor {
        let dev = Device::Cpu;
        let logical = Tensor::from_vec(values.to_vec(), shape, &dev).unwrap().to_dtype(dtype).unwrap();
        let rank = shape.len();
        match mode % 3 {
            1 if rank >= 2 => {
                let stored = logical.transpose(rank - 2, rank - 1).unwrap().contiguous().unwrap();
                let v = stored.transpose(rank - 2, rank - 1).unwrap();
                assert!(v.elem_count() <= 1 || shape[rank - 1] == 1 || shape[rank - 2] == 1 || !v.is_contiguous());
                v
            }
            2 if rank >= 1 => {
                let last = shape[rank - 1];
                let mut padded = Vec::new();
                let rows = values.len().checked_div(last).unwrap_or_else(|| shape[..rank - 1].iter().product());
                for r in 0..rows {
                    padded.push(-7.5);
                    padded.extend_from_slice(&values[r * last..(r + 1) * last]);
                    padded.push(9.25);
                }
                let mut pshape = shape.to_vec();
                pshape[rank - 1] = last + 2;
                let stored = Tensor::from_vec(padded, &pshape, &dev).unwrap().to_dtype(dtype).unwrap();
                stored.narrow(rank - 1, 1, last).unwrap()
            }
            _ => logical,
        }
    }

    /// Deterministic pseudo-random values in about [-scale, scale] (a hash of the index and seed),
    /// so proptest only has to draw shapes and a seed.
    pub fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let mut z = (i as u64).wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::{DType, Device};
    use brainstacks_kernels::layer_norm::layer_norm as ln_oracle;
    use brainstacks_kernels::rms_norm::rms_norm as rms_oracle;
    use proptest::prelude::*;

    fn shape_strategy() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(0usize..5, 0..3).prop_flat_map(|lead| {
            (Just(lead), 0usize..40).prop_map(|(mut lead, d)| {
                lead.push(d);
                lead
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn rms_norm_matches_oracle(shape in shape_strategy(), dt in 0usize..4, mode in 0u8..3, seed in any::<u64>()) {
            let dtype = FLOATS[dt];
            let n: usize = shape.iter().product();
            let d = *shape.last().unwrap();
            let x = view_of(&values(n, seed, 3.0), &shape, dtype, mode);
            let w = view_of(&values(d, seed ^ 1, 2.0), &[d], dtype, 0);
            let got = x.rms_norm(&w, 1e-5).unwrap();
            prop_assert_eq!(got.shape(), &shape[..]);
            prop_assert_eq!(got.dtype(), dtype);
            let want = rms_oracle(&x.to_vec_f64().unwrap(), &w.to_vec_f64().unwrap(), n / d.max(1), d, 1e-5);
            for (g, w) in got.to_vec_f64().unwrap().iter().zip(&want) {
                let tol = brainstacks_kernels::rms_norm::tolerance(d, unit_roundoff(dtype), *w, tiny(dtype));
                prop_assert!((g - w).abs() <= tol, "got {g}, want {w}, tol {tol}");
            }
        }

        #[test]
        fn layer_norm_matches_oracle(shape in shape_strategy(), dt in 0usize..4, mode in 0u8..3, seed in any::<u64>(), shift in -50.0f64..50.0) {
            let dtype = FLOATS[dt];
            let n: usize = shape.iter().product();
            let d = *shape.last().unwrap();
            let xv: Vec<f64> = values(n, seed, 3.0).iter().map(|v| v + shift).collect();
            let x = view_of(&xv, &shape, dtype, mode);
            let w = view_of(&values(d, seed ^ 1, 2.0), &[d], dtype, 0);
            let b = view_of(&values(d, seed ^ 2, 1.0), &[d], dtype, 0);
            let got = x.layer_norm(&w, &b, 1e-5).unwrap();
            let (xs, ws, bs) = (x.to_vec_f64().unwrap(), w.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
            let rows = n / d.max(1);
            let want = ln_oracle(&xs, &ws, &bs, rows, d, 1e-5);
            let got = got.to_vec_f64().unwrap();
            for r in 0..rows {
                let row = &xs[r * d..(r + 1) * d];
                let mean = row.iter().sum::<f64>() / d as f64;
                let sigma = (row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64 + 1e-5).sqrt();
                let max_dev = row.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max) / sigma;
                for i in 0..d {
                    let (g, w) = (got[r * d + i], want[r * d + i]);
                    let tol = brainstacks_kernels::layer_norm::tolerance(d, unit_roundoff(dtype), w, max_dev * ws[i].abs() + bs[i].abs(), tiny(dtype));
                    prop_assert!((g - w).abs() <= tol, "row {r} col {i}: got {g}, want {w}, tol {tol}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The fused input gradient against the textbook formula in f64 (independent loops),
        /// for strided inputs and every float dtype.
        #[test]
        fn rms_norm_input_grad_matches_formula(shape in shape_strategy(), dt in 0usize..4, mode in 0u8..3, seed in any::<u64>()) {
            let dtype = FLOATS[dt];
            let n: usize = shape.iter().product();
            let d = *shape.last().unwrap();
            let round = |v: Vec<f64>| Tensor::from_vec(v, &[n], &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_vec_f64().unwrap();
            let (xv, gv, wv) = (round(values(n, seed, 2.0)), round(values(n, seed ^ 1, 1.0)), values(d, seed ^ 2, 1.5));
            let wv = Tensor::from_vec(wv, &[d], &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_vec_f64().unwrap();
            let x = view_of(&xv, &shape, dtype, mode);
            let g = view_of(&gv, &shape, dtype, mode + 1);
            let w = Tensor::from_vec(wv.clone(), &[d], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let got = x.rms_norm_input_grad(&w, &g, 1e-5).unwrap();
            prop_assert_eq!(got.shape(), &shape[..]);
            let got = got.to_vec_f64().unwrap();
            let u = unit_roundoff(dtype).max(1e-15);
            for r in 0..n.checked_div(d).unwrap_or(0) {
                let (xr, gr) = (&xv[r * d..(r + 1) * d], &gv[r * d..(r + 1) * d]);
                let inv = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() / d as f64 + 1e-5).sqrt();
                let proj: f64 = (0..d).map(|i| gr[i] * wv[i] * xr[i] * inv).sum::<f64>() / d as f64;
                for i in 0..d {
                    let want = inv * (gr[i] * wv[i] - xr[i] * inv * proj);
                    let bound = inv * (gr[i].abs() * wv[i].abs() + (xr[i] * inv).abs() * proj.abs()) * 1e-12 + u * want.abs() + tiny(dtype);
                    prop_assert!((got[r * d + i] - want).abs() <= bound, "{} vs {}", got[r * d + i], want);
                }
            }
        }
    }

    #[test]
    fn rms_norm_input_grad_rejects_mismatched_gradients() {
        let x = Tensor::zeros(&[2, 4], DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::ones(&[4], DType::F32, &Device::Cpu).unwrap();
        let msg = x.rms_norm_input_grad(&w, &Tensor::zeros(&[2, 3], DType::F32, &Device::Cpu).unwrap(), 1e-6).unwrap_err().to_string();
        assert!(msg.contains("rms_norm_input_grad"), "{msg}");
        assert!(x.rms_norm_input_grad(&w, &x.to_dtype(DType::F64).unwrap(), 1e-6).is_err());
    }

    #[test]
    fn thread_count_invariant_on_the_parallel_path() {
        let (rows, d) = (300, 257);
        let x = Tensor::from_vec(values(rows * d, 5, 2.0), &[rows, d], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let w = Tensor::from_vec(values(d, 6, 1.0), &[d], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| x.rms_norm(&w, 1e-6).unwrap().to_vec::<f32>().unwrap())
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn errors_name_the_op_and_both_shapes() {
        let dev = Device::Cpu;
        let x = Tensor::zeros(&[2, 3], DType::F32, &dev).unwrap();
        let w = Tensor::zeros(&[4], DType::F32, &dev).unwrap();
        let msg = x.rms_norm(&w, 1e-5).unwrap_err().to_string();
        assert!(msg.contains("rms_norm") && msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
        let b = Tensor::zeros(&[3], DType::F32, &dev).unwrap();
        let msg = x.layer_norm(&b, &w, 1e-5).unwrap_err().to_string();
        assert!(msg.contains("layer_norm") && msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
        let w64 = Tensor::zeros(&[3], DType::F64, &dev).unwrap();
        assert!(matches!(x.rms_norm(&w64, 1e-5), Err(Error::DTypeMismatch { op: "rms_norm", .. })));
        let xi = Tensor::zeros(&[2, 3], DType::I64, &dev).unwrap();
        let wi = Tensor::zeros(&[3], DType::I64, &dev).unwrap();
        assert!(matches!(xi.rms_norm(&wi, 1e-5), Err(Error::UnsupportedDType { op: "rms_norm", .. })));
        assert!(Tensor::scalar(1f32).rms_norm(&w, 1e-5).is_err());
    }
}
