//! Causal scaled-dot-product attention with grouped KV heads (GQA), fused per query row: scores,
//! a masked softmax and the weighted sum of values in one pass, in f64, rounded once.

use super::norm::{dispatch_float, for_each_row};
use crate::{DType, Device, Error, Result, Tensor, WithDType};

/// `sum a[i] * b[i]` with four partial sums in a fixed pattern: deterministic, and it lets the
/// compiler vectorise the loop (a single running sum would serialise on the add latency).
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// [`Tensor::causal_attention`] as GEMM, mask and softmax (shapes already checked): the
/// queries are viewed as `[B, Hkv, rep, T, D]` and each kv head gets a broadcast dim, so the
/// batched products share a kv head across its query heads without copying it.
fn composed_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, hq, t, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, s, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    let rep = hq.checked_div(hkv).unwrap_or(1);
    let scores = q.reshape(&[b, hkv, rep, t, d])?.matmul(&k.unsqueeze(2)?.t()?)?.mul_scalar(scale)?;
    let probs = scores.add(&Tensor::causal_bias(t, s, q.dtype(), &q.device())?)?.softmax(4)?;
    probs.matmul(&v.unsqueeze(2)?)?.reshape(&[b, hq, t, dv])
}

impl Tensor {
    /// The causal mask of an attention block with `t` queries aligned to the end of `s` keys, as
    /// an additive `[t, s]` bias of `dtype` on `device`: `-inf` where query `i` must not see key
    /// `j` (`j > i + s - t`), 0 elsewhere. Adding it to the scores equals masking them:
    /// `x + 0 = x` exactly and `x + -inf = -inf` for every finite score, and it needs only the
    /// broadcasting add, which every device has.
    pub fn causal_bias(t: usize, s: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let mut m = vec![0f64; t * s];
        for i in 0..t {
            for j in 0..s {
                // Written without subtraction so T > S (rows that see nothing) cannot underflow.
                if j + t > i + s {
                    m[i * s + j] = f64::NEG_INFINITY;
                }
            }
        }
        Tensor::from_vec(m, &[t, s], &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }

    /// Causal attention with grouped KV heads: `self = q [B, Hq, T, D]`, `k [B, Hkv, S, D]`,
    /// `v [B, Hkv, S, Dv]`, `Hq % Hkv == 0`; query head `h` uses KV head `h / (Hq / Hkv)`.
    /// Query `t` attends key `s` when `s <= t + (S - T)`: the mask is aligned to the end, so a KV
    /// cache holding `S > T` earlier positions works; `S < T` is an error (the first queries would
    /// see no key at all). Returns `softmax(q k^T * scale + mask) v`, `[B, Hq, T, Dv]`.
    ///
    /// All four tensors share one float dtype. Scores, softmax and the weighted sum are computed
    /// in f64 (no intermediate rounding to bf16, unlike an eager PyTorch bf16 run) and each output
    /// is rounded once. Threaded over query rows; each row's result does not depend on the thread
    /// count.
    pub fn causal_attention(&self, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        const OP: &str = "causal_attention";
        let q = self;
        if q.rank() != 4 || k.rank() != 4 {
            return Err(Error::shape(OP, q.shape(), k.shape(), "q must be [B, Hq, T, D] and k [B, Hkv, S, D]"));
        }
        if v.rank() != 4 {
            return Err(Error::shape(OP, k.shape(), v.shape(), "k must be [B, Hkv, S, D] and v [B, Hkv, S, Dv]"));
        }
        let (b, hq, t, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
        let (hkv, s) = (k.shape()[1], k.shape()[2]);
        let dv = v.shape()[3];
        if k.shape()[0] != b || k.shape()[3] != d {
            return Err(Error::shape(OP, q.shape(), k.shape(), "q and k must agree in batch and head dim"));
        }
        if v.shape()[..3] != k.shape()[..3] {
            return Err(Error::shape(OP, k.shape(), v.shape(), "k and v must agree in batch, heads and length"));
        }
        // `is_multiple_of(0)` holds only for 0: no kv heads is fine only with no query heads.
        if !hq.is_multiple_of(hkv) {
            return Err(Error::shape(OP, q.shape(), k.shape(), format!("{hq} query heads cannot be grouped over {hkv} kv heads")));
        }
        if s < t {
            return Err(Error::shape(OP, q.shape(), k.shape(), format!("{s} keys for {t} queries: the causal mask is aligned to the end, so S >= T")));
        }
        if q.dtype() != k.dtype() || q.dtype() != v.dtype() {
            let other = if q.dtype() != k.dtype() { k.dtype() } else { v.dtype() };
            return Err(Error::DTypeMismatch { op: OP, lhs: q.dtype(), rhs: other });
        }
        // There is no fused attention kernel yet: on a GPU the same math is composed from the
        // batched GEMM, the additive causal mask and the softmax kernel (in the input's dtype,
        // where the CPU body below computes in f64).
        if let Some(t) = [k, v].into_iter().find(|t| t.device() != q.device()) {
            return Err(Error::Device {
                op: OP,
                device: t.device(),
                msg: format!("q is on {} (move every operand to one device)", q.device()),
            });
        }
        if q.device().is_cuda() {
            return composed_attention(q, k, v, scale);
        }
        let group = hq.checked_div(hkv).unwrap_or(1);
        // Widen once: every element is read many times by the row loop.
        let (qs, ks, vs) = (q.to_vec_f64()?, k.to_vec_f64()?, v.to_vec_f64()?);
        let shift = s - t;
        dispatch_float!(q.dtype(), OP, T => {
            let mut out = vec![T::default(); b * hq * t * dv];
            for_each_row(&mut out, dv, s * (d + dv), |r, row| {
                let (bi, h, ti) = (r / (hq * t), (r / t) % hq, r % t);
                let kv = bi * hkv + h / group;
                let qr = &qs[r * d..(r + 1) * d];
                let keys = ti + shift + 1;
                let mut w: Vec<f64> = (0..keys).map(|si| dot(qr, &ks[(kv * s + si) * d..(kv * s + si + 1) * d]) * scale).collect();
                let m = w.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
                let mut total = 0.0;
                for x in &mut w {
                    *x = (*x - m).exp();
                    total += *x;
                }
                let mut acc = vec![0f64; dv];
                for (si, &p) in w.iter().enumerate() {
                    let vr = &vs[(kv * s + si) * dv..(kv * s + si + 1) * dv];
                    for (a, &x) in acc.iter_mut().zip(vr) {
                        *a += p * x;
                    }
                }
                for (o, a) in row.iter_mut().zip(acc) {
                    *o = T::from_f64(a / total);
                }
            });
            Tensor::from_vec(out, &[b, hq, t, dv], &q.device())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::norm::testing::*;
    use super::*;
    use crate::{DType, Device};
    use proptest::prelude::*;

    /// The textbook form, one (b, h) at a time: full score matrix, -inf above the shifted
    /// diagonal, softmax, product. Plain loops in f64, independent of the fused row loop.
    fn naive(q: &[f64], k: &[f64], v: &[f64], dims: [usize; 7], scale: f64) -> Vec<f64> {
        let [b, hq, hkv, t, s, d, dv] = dims;
        let mut out = vec![0.0; b * hq * t * dv];
        for bi in 0..b {
            for h in 0..hq {
                let kh = h / (hq / hkv);
                for ti in 0..t {
                    let mut scores = vec![f64::NEG_INFINITY; s];
                    for si in 0..s {
                        if si <= ti + (s - t) {
                            let mut acc = 0.0;
                            for e in 0..d {
                                acc += q[((bi * hq + h) * t + ti) * d + e] * k[((bi * hkv + kh) * s + si) * d + e];
                            }
                            scores[si] = acc * scale;
                        }
                    }
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                    for si in 0..s {
                        let p = (scores[si] - m).exp() / z;
                        for e in 0..dv {
                            out[((bi * hq + h) * t + ti) * dv + e] += p * v[((bi * hkv + kh) * s + si) * dv + e];
                        }
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        /// Against the naive form for GQA, KV caches (S > T), strided inputs and every float dtype;
        /// query row 0 of a full causal block (S == T) sees only key 0, so it equals v[0] exactly
        /// up to the output rounding.
        #[test]
        fn matches_naive_attention(b in 0usize..3, hkv in 1usize..3, group in 1usize..3, t in 0usize..6, extra in 0usize..4, d in 0usize..7, dv in 0usize..6, dt in 0usize..4, mode in 0u8..3, seed in any::<u64>()) {
            let dtype = FLOATS[dt];
            let (hq, s) = (hkv * group, t + extra);
            let scale = 1.0 / (d.max(1) as f64).sqrt();
            let q = view_of(&values(b * hq * t * d, seed, 2.0), &[b, hq, t, d], dtype, mode);
            let k = view_of(&values(b * hkv * s * d, seed ^ 1, 2.0), &[b, hkv, s, d], dtype, mode + 1);
            let v = view_of(&values(b * hkv * s * dv, seed ^ 2, 2.0), &[b, hkv, s, dv], dtype, mode + 2);
            let got = q.causal_attention(&k, &v, scale).unwrap();
            prop_assert_eq!(got.shape(), &[b, hq, t, dv][..]);
            let got = got.to_vec_f64().unwrap();
            let vs = v.to_vec_f64().unwrap();
            let want = naive(&q.to_vec_f64().unwrap(), &k.to_vec_f64().unwrap(), &vs, [b, hq, hkv, t, s, d, dv], scale);
            // Output: a convex combination of values (|v| <= 2), so f64 error is tiny next to the
            // final rounding of the output dtype.
            let u = unit_roundoff(dtype);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((g - w).abs() <= u * w.abs() + 1e-12 + tiny(dtype), "{g} vs {w}");
            }
            if extra == 0 && t > 0 {
                for bi in 0..b {
                    for h in 0..hq {
                        let kh = h / group;
                        let o = &got[((bi * hq + h) * t) * dv..((bi * hq + h) * t + 1) * dv];
                        let v0 = &vs[((bi * hkv + kh) * s) * dv..((bi * hkv + kh) * s + 1) * dv];
                        prop_assert_eq!(o, v0);
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The composed form the CUDA path runs (GEMM, additive mask, softmax), run here on the
        /// CPU in f64 against the naive form: GQA, KV caches, strided inputs.
        #[test]
        fn composed_form_matches_naive(b in 1usize..3, hkv in 1usize..3, group in 1usize..3, t in 1usize..6, extra in 0usize..4, d in 1usize..7, dv in 1usize..6, mode in 0u8..3, seed in any::<u64>()) {
            let (hq, s) = (hkv * group, t + extra);
            let scale = 1.0 / (d as f64).sqrt();
            let q = view_of(&values(b * hq * t * d, seed, 2.0), &[b, hq, t, d], DType::F64, mode);
            let k = view_of(&values(b * hkv * s * d, seed ^ 1, 2.0), &[b, hkv, s, d], DType::F64, mode + 1);
            let v = view_of(&values(b * hkv * s * dv, seed ^ 2, 2.0), &[b, hkv, s, dv], DType::F64, mode + 2);
            let got = composed_attention(&q, &k, &v, scale).unwrap();
            prop_assert_eq!(got.shape(), &[b, hq, t, dv][..]);
            let want = naive(&q.to_vec_f64().unwrap(), &k.to_vec_f64().unwrap(), &v.to_vec_f64().unwrap(), [b, hq, hkv, t, s, d, dv], scale);
            for (g, w) in got.to_vec_f64().unwrap().iter().zip(&want) {
                prop_assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn thread_count_invariant() {
        let dev = Device::Cpu;
        let q = Tensor::from_vec(values(2 * 4 * 40 * 16, 1, 1.0), &[2, 4, 40, 16], &dev).unwrap().to_dtype(DType::F32).unwrap();
        let k = Tensor::from_vec(values(2 * 2 * 48 * 16, 2, 1.0), &[2, 2, 48, 16], &dev).unwrap().to_dtype(DType::F32).unwrap();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| q.causal_attention(&k, &k, 0.25).unwrap().to_vec::<f32>().unwrap())
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn errors_name_the_op_and_both_shapes() {
        let dev = Device::Cpu;
        let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &dev).unwrap();
        let msg = z(&[1, 3, 4, 8]).causal_attention(&z(&[1, 2, 4, 8]), &z(&[1, 2, 4, 8]), 1.0).unwrap_err().to_string();
        assert!(msg.contains("causal_attention") && msg.contains("[1, 3, 4, 8]") && msg.contains("[1, 2, 4, 8]"), "{msg}");
        let msg = z(&[1, 2, 4, 8]).causal_attention(&z(&[1, 2, 4, 6]), &z(&[1, 2, 4, 8]), 1.0).unwrap_err().to_string();
        assert!(msg.contains("[1, 2, 4, 8]") && msg.contains("[1, 2, 4, 6]"), "{msg}");
        let msg = z(&[1, 2, 4, 8]).causal_attention(&z(&[1, 2, 4, 8]), &z(&[1, 2, 5, 8]), 1.0).unwrap_err().to_string();
        assert!(msg.contains("[1, 2, 4, 8]") && msg.contains("[1, 2, 5, 8]"), "{msg}");
        assert!(z(&[1, 2, 5, 8]).causal_attention(&z(&[1, 2, 4, 8]), &z(&[1, 2, 4, 8]), 1.0).unwrap_err().to_string().contains("S >= T"));
        assert!(z(&[2, 4, 8]).causal_attention(&z(&[1, 2, 4, 8]), &z(&[1, 2, 4, 8]), 1.0).is_err());
        assert!(z(&[1, 2, 4, 8]).causal_attention(&z(&[1, 0, 4, 8]), &z(&[1, 0, 4, 8]), 1.0).is_err());
        let k64 = Tensor::zeros(&[1, 2, 4, 8], DType::F64, &dev).unwrap();
        assert!(matches!(z(&[1, 2, 4, 8]).causal_attention(&k64, &z(&[1, 2, 4, 8]), 1.0), Err(Error::DTypeMismatch { .. })));
    }
}
