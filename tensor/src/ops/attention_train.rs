//! Causal GQA attention for training on f32: a forward and its backward, each built from small
//! packed GEMMs per query head (`S = Q Kᵀ`, `O = P V`; `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dQ = dS K`,
//! `dK += dSᵀ Q`), with the masked softmax in between. The backward recomputes the probabilities
//! with the same code as the forward (same bits) instead of saving them.
//!
//! The composed differentiable form (matmul, scale, mask, softmax, matmul) does the same math in
//! about a dozen full passes over `[B, H, T, S]` tensors; this is one pass per head, and reads
//! `q`, `k`, `v` and `dO` through their strides (the head views of a projection's output are
//! transposes, never copied).
//!
//! Work is split by (batch, kv head): each task owns its query heads' rows of the outputs and its
//! kv head's `dK`, `dV`, summing the query heads of its group in increasing order, so results do
//! not depend on the thread count.
//!
//! ```
//! use brainstacks_tensor::{DType, Device, Rng, Tensor};
//! # fn main() -> brainstacks_tensor::Result<()> {
//! let mut rng = Rng::new(0);
//! let q = Tensor::randn(&mut rng, 0.0, 1.0, &[1, 4, 6, 8], DType::F32, &Device::Cpu)?;
//! let k = Tensor::randn(&mut rng, 0.0, 1.0, &[1, 2, 6, 8], DType::F32, &Device::Cpu)?;
//! let v = Tensor::randn(&mut rng, 0.0, 1.0, &[1, 2, 6, 8], DType::F32, &Device::Cpu)?;
//! let out = q.causal_attention_f32(&k, &v, 0.35)?;
//! let dout = Tensor::ones(&[1, 4, 6, 8], DType::F32, &Device::Cpu)?;
//! let grads = Tensor::causal_attention_f32_backward(&q, &k, &v, &dout, 0.35)?;
//! assert_eq!((out.shape(), grads.dk.shape()), (&[1, 4, 6, 8][..], &[1, 2, 6, 8][..]));
//! # Ok(()) }
//! ```

use rayon::prelude::*;

use crate::cpu::gemm::{MatRef, gemm_f32};
use crate::ops::unary::exp_f32;
use crate::{DType, Device, Error, Result, Tensor};

/// Gradients of [`Tensor::causal_attention_f32`] with respect to `q`, `k` and `v` (contiguous, in
/// their shapes).
#[derive(Clone, Debug)]
pub struct AttentionGrads {
    pub dq: Tensor,
    pub dk: Tensor,
    pub dv: Tensor,
}

/// Sizes of one attention call: `b` batches, `hq` query heads in groups of `rep` per kv head,
/// `t` queries, `s` keys, head dims `d` (q, k) and `dv` (v).
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    hq: usize,
    hkv: usize,
    rep: usize,
    t: usize,
    s: usize,
    d: usize,
    dv: usize,
}

/// A 4-d f32 tensor read through its layout: the `[rows, cols]` matrix of (batch, head).
struct View4<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 4],
}

impl<'a> View4<'a> {
    fn of(t: &'a Tensor, op: &'static str) -> Result<Self> {
        let l = t.layout();
        let s = l.strides();
        Ok(View4 {
            data: t.cpu_slice::<f32>(op)?,
            offset: l.offset(),
            strides: [s[0], s[1], s[2], s[3]],
        })
    }

    fn mat(&self, b: usize, h: usize, rows: usize, cols: usize) -> MatRef<'a, f32> {
        MatRef {
            data: &self.data[self.offset + b * self.strides[0] + h * self.strides[1]..],
            rows,
            cols,
            row_stride: self.strides[2],
            col_stride: self.strides[3],
        }
    }
}

fn check(op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Dims> {
    if q.rank() != 4 || k.rank() != 4 || v.rank() != 4 {
        return Err(Error::shape(
            op,
            q.shape(),
            k.shape(),
            "q, k and v must be [B, H, T, D]",
        ));
    }
    let (b, hq, t, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, s, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    if k.shape()[0] != b || k.shape()[3] != d || v.shape()[..3] != k.shape()[..3] {
        return Err(Error::shape(
            op,
            k.shape(),
            v.shape(),
            format!("k must be [{b}, Hkv, S, {d}] and v [{b}, Hkv, S, Dv]"),
        ));
    }
    if hkv == 0 || !hq.is_multiple_of(hkv) {
        return Err(Error::shape(
            op,
            q.shape(),
            k.shape(),
            format!("{hq} query heads cannot be grouped over {hkv} kv heads"),
        ));
    }
    if d == 0 || dv == 0 {
        return Err(Error::shape(
            op,
            q.shape(),
            v.shape(),
            "the head dims must be at least 1",
        ));
    }
    if s < t {
        return Err(Error::shape(
            op,
            q.shape(),
            k.shape(),
            format!("{s} keys for {t} queries: the causal mask is aligned to the end, so S >= T"),
        ));
    }
    for x in [q, k, v] {
        if x.dtype() != DType::F32 {
            return Err(Error::dtype(
                op,
                x.dtype(),
                "this attention kernel takes f32",
            ));
        }
    }
    Ok(Dims {
        b,
        hq,
        hkv,
        rep: hq / hkv,
        t,
        s,
        d,
        dv,
    })
}

/// `p` (`[t, s]`) = the masked softmax of `scale * q kᵀ`: query `i` sees keys `0..=i + s - t`,
/// the rest is exactly 0. Max, exponentials ([`exp_f32`]) and the sum run in index order, in f32.
fn probabilities(q: MatRef<'_, f32>, k: MatRef<'_, f32>, dims: &Dims, scale: f32, p: &mut [f32]) {
    let (t, s) = (dims.t, dims.s);
    gemm_f32(q, k.t(), p, false);
    for (i, row) in p.chunks_exact_mut(s).enumerate() {
        let (seen, hidden) = row.split_at_mut(i + s - t + 1);
        seen.iter_mut().for_each(|x| *x *= scale);
        let m = max_f32(seen);
        // The exponentials in one vectorised pass, then the sum in index order.
        seen.iter_mut().for_each(|x| *x = exp_f32(*x - m));
        let total: f32 = seen.iter().fold(0.0, |acc, &x| acc + x);
        let inv = 1.0 / total;
        seen.iter_mut().for_each(|x| *x *= inv);
        hidden.fill(0.0);
    }
}

/// The largest value of `xs` (`-inf` when empty; NaN is ignored, as `f32::max` does), in eight
/// independent lanes so the loop vectorises. Exact, so the order does not matter.
fn max_f32(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = if x > *l { x } else { *l };
        }
    }
    tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

impl Tensor {
    /// Causal grouped-query attention on f32 (same contract as [`Tensor::causal_attention`]:
    /// `self = q [B, Hq, T, D]`, `k [B, Hkv, S, D]`, `v [B, Hkv, S, Dv]`, query `t` sees keys
    /// `s <= t + S - T`), computed in f32 with packed GEMMs; its gradients come from
    /// [`Tensor::causal_attention_f32_backward`]. Returns `[B, Hq, T, Dv]`, contiguous.
    pub fn causal_attention_f32(&self, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        const OP: &str = "causal_attention_f32";
        let dims = check(OP, self, k, v)?;
        let Dims {
            b,
            hq,
            hkv,
            rep,
            t,
            s,
            d,
            dv,
        } = dims;
        let mut out = vec![0f32; b * hq * t * dv];
        if out.is_empty() {
            return Tensor::from_vec(out, &[b, hq, t, dv], &Device::Cpu);
        }
        let (qv, kv, vv) = (View4::of(self, OP)?, View4::of(k, OP)?, View4::of(v, OP)?);
        let scale = scale as f32;
        out.par_chunks_mut(rep * t * dv)
            .enumerate()
            .for_each(|(task, block)| {
                let (bi, g) = (task / hkv, task % hkv);
                let mut p = vec![0f32; t * s];
                let (kg, vg) = (kv.mat(bi, g, s, d), vv.mat(bi, g, s, dv));
                for (j, o) in block.chunks_exact_mut(t * dv).enumerate() {
                    probabilities(qv.mat(bi, g * rep + j, t, d), kg, &dims, scale, &mut p);
                    gemm_f32(MatRef::row_major(&p, t, s), vg, o, false);
                }
            });
        Tensor::from_vec(out, &[b, hq, t, dv], &Device::Cpu)
    }

    /// Gradients of [`Tensor::causal_attention_f32`] for the output gradient `dout`
    /// (`[B, Hq, T, Dv]`, any layout): `dq`, `dk`, `dv`, contiguous, in the shapes of the inputs.
    pub fn causal_attention_f32_backward(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        dout: &Tensor,
        scale: f64,
    ) -> Result<AttentionGrads> {
        const OP: &str = "causal_attention_f32_backward";
        let dims = check(OP, q, k, v)?;
        let Dims {
            b,
            hq,
            hkv,
            rep,
            t,
            s,
            d,
            dv,
        } = dims;
        if dout.shape() != [b, hq, t, dv] || dout.dtype() != DType::F32 {
            return Err(Error::shape(
                OP,
                dout.shape(),
                &[b, hq, t, dv],
                "dout must be f32 and match the output",
            ));
        }
        let (mut dq, mut dk, mut dvv) = (
            vec![0f32; b * hq * t * d],
            vec![0f32; b * hkv * s * d],
            vec![0f32; b * hkv * s * dv],
        );
        if b * hq * t > 0 && s > 0 {
            let (qv, kv, vv, gv) = (
                View4::of(q, OP)?,
                View4::of(k, OP)?,
                View4::of(v, OP)?,
                View4::of(dout, OP)?,
            );
            let scale = scale as f32;
            let tasks = dq
                .par_chunks_mut(rep * t * d)
                .zip(dk.par_chunks_mut(s * d))
                .zip(dvv.par_chunks_mut(s * dv));
            tasks.enumerate().for_each(|(task, ((dq_g, dk_g), dv_g))| {
                let (bi, g) = (task / hkv, task % hkv);
                let (mut p, mut ds) = (vec![0f32; t * s], vec![0f32; t * s]);
                let (kg, vg) = (kv.mat(bi, g, s, d), vv.mat(bi, g, s, dv));
                for j in 0..rep {
                    let h = g * rep + j;
                    let (qh, doh) = (qv.mat(bi, h, t, d), gv.mat(bi, h, t, dv));
                    probabilities(qh, kg, &dims, scale, &mut p);
                    // dV += Pᵀ dO (heads of the group in increasing order, from zeros).
                    gemm_f32(MatRef::row_major(&p, t, s).t(), doh, dv_g, true);
                    // dS = P ⊙ (dP - rowsum(P ⊙ dP)) * scale, with dP = dO Vᵀ.
                    gemm_f32(doh, vg.t(), &mut ds, false);
                    for (prow, drow) in p.chunks_exact(s).zip(ds.chunks_exact_mut(s)) {
                        let delta: f32 = prow.iter().zip(drow.iter()).map(|(a, b)| a * b).sum();
                        for (x, &pp) in drow.iter_mut().zip(prow) {
                            *x = pp * (*x - delta) * scale;
                        }
                    }
                    gemm_f32(
                        MatRef::row_major(&ds, t, s),
                        kg,
                        &mut dq_g[j * t * d..(j + 1) * t * d],
                        false,
                    );
                    gemm_f32(MatRef::row_major(&ds, t, s).t(), qh, dk_g, true);
                }
            });
        }
        let cpu = Device::Cpu;
        Ok(AttentionGrads {
            dq: Tensor::from_vec(dq, q.shape(), &cpu)?,
            dk: Tensor::from_vec(dk, k.shape(), &cpu)?,
            dv: Tensor::from_vec(dvv, v.shape(), &cpu)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::norm::testing::*;
    use super::*;
    use proptest::prelude::*;

    /// Output and input gradients of causal GQA attention by the textbook formulas, plain f64
    /// loops over (batch, head, query): `p = softmax(scale q kᵀ)` over the visible keys,
    /// `o = p v`, `dv += pᵀ do`, `dp = do vᵀ`, `ds = p (dp - sum p dp)`, `dq = scale ds k`,
    /// `dk += scale dsᵀ q`.
    #[allow(clippy::type_complexity)]
    fn naive(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        dout: &[f64],
        dims: [usize; 7],
        scale: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let [b, hq, hkv, t, s, d, dv] = dims;
        let (mut o, mut dq, mut dk, mut dvv) = (
            vec![0.0; b * hq * t * dv],
            vec![0.0; b * hq * t * d],
            vec![0.0; b * hkv * s * d],
            vec![0.0; b * hkv * s * dv],
        );
        for bi in 0..b {
            for h in 0..hq {
                let kh = h / (hq / hkv);
                let qi = |i: usize, e: usize| ((bi * hq + h) * t + i) * d + e;
                let oi = |i: usize, e: usize| ((bi * hq + h) * t + i) * dv + e;
                let ki = |j: usize, e: usize| ((bi * hkv + kh) * s + j) * d + e;
                let vi = |j: usize, e: usize| ((bi * hkv + kh) * s + j) * dv + e;
                for i in 0..t {
                    let seen = i + s - t + 1;
                    let sc: Vec<f64> = (0..seen)
                        .map(|j| (0..d).map(|e| q[qi(i, e)] * k[ki(j, e)]).sum::<f64>() * scale)
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    let p: Vec<f64> = sc.iter().map(|x| (x - m).exp() / z).collect();
                    let dp: Vec<f64> = (0..seen)
                        .map(|j| (0..dv).map(|e| dout[oi(i, e)] * v[vi(j, e)]).sum())
                        .collect();
                    let delta: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                    for j in 0..seen {
                        let ds = p[j] * (dp[j] - delta);
                        for e in 0..dv {
                            o[oi(i, e)] += p[j] * v[vi(j, e)];
                            dvv[vi(j, e)] += p[j] * dout[oi(i, e)];
                        }
                        for e in 0..d {
                            dq[qi(i, e)] += scale * ds * k[ki(j, e)];
                            dk[ki(j, e)] += scale * ds * q[qi(i, e)];
                        }
                    }
                }
            }
        }
        (o, dq, dk, dvv)
    }

    fn close(got: &Tensor, want: &[f64], what: &str) -> std::result::Result<(), TestCaseError> {
        let got = got.to_vec_f64().unwrap();
        prop_assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            // f32 arithmetic over sums of at most a few dozen terms of size <= ~10.
            prop_assert!(
                (g - w).abs() <= 2e-5 * (1.0 + w.abs()) * 8.0,
                "{what}[{i}]: {g} vs {w}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Forward and all three gradients against the f64 textbook form, for GQA groups, KV
        /// caches (S > T) and strided inputs (transposed or narrowed rows).
        #[test]
        fn matches_naive_attention(b in 1usize..3, hkv in 1usize..3, group in 1usize..4, t in 1usize..7, extra in 0usize..4, d in 1usize..9, dv in 1usize..7, mode in 0u8..3, seed in any::<u64>()) {
            let (hq, s) = (hkv * group, t + extra);
            let scale = 1.0 / (d as f64).sqrt();
            let (qv, kv, vv, gv) = (values(b * hq * t * d, seed, 2.0), values(b * hkv * s * d, seed ^ 1, 2.0), values(b * hkv * s * dv, seed ^ 2, 2.0), values(b * hq * t * dv, seed ^ 3, 1.0));
            // Round the inputs to f32 first so the oracle sees exactly what the kernel sees.
            let r = |x: &[f64]| x.iter().map(|&v| v as f32 as f64).collect::<Vec<_>>();
            let (qv, kv, vv, gv) = (r(&qv), r(&kv), r(&vv), r(&gv));
            let q = view_of(&qv, &[b, hq, t, d], DType::F32, mode);
            let k = view_of(&kv, &[b, hkv, s, d], DType::F32, mode + 1);
            let v = view_of(&vv, &[b, hkv, s, dv], DType::F32, mode + 2);
            let g = view_of(&gv, &[b, hq, t, dv], DType::F32, mode);
            let (o, dq, dk, dvw) = naive(&qv, &kv, &vv, &gv, [b, hq, hkv, t, s, d, dv], scale);
            let out = q.causal_attention_f32(&k, &v, scale).unwrap();
            prop_assert_eq!(out.shape(), &[b, hq, t, dv][..]);
            close(&out, &o, "out")?;
            let grads = Tensor::causal_attention_f32_backward(&q, &k, &v, &g, scale).unwrap();
            prop_assert_eq!(grads.dq.shape(), q.shape());
            prop_assert_eq!(grads.dk.shape(), k.shape());
            prop_assert_eq!(grads.dv.shape(), v.shape());
            close(&grads.dq, &dq, "dq")?;
            close(&grads.dk, &dk, "dk")?;
            close(&grads.dv, &dvw, "dv")?;
        }
    }

    /// Same bits on 1 and 2 threads, at a size where the (batch, kv head) tasks run in parallel.
    #[test]
    fn thread_count_invariant() {
        let dev = Device::Cpu;
        let f = |n: usize, seed: u64, shape: &[usize]| {
            Tensor::from_vec(values(n, seed, 1.0), shape, &dev)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        };
        let q = f(2 * 4 * 40 * 16, 1, &[2, 4, 40, 16]);
        let k = f(2 * 2 * 48 * 16, 2, &[2, 2, 48, 16]);
        let g = f(2 * 4 * 40 * 16, 3, &[2, 4, 40, 16]);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let o = q
                    .causal_attention_f32(&k, &k, 0.25)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap();
                let gr = Tensor::causal_attention_f32_backward(&q, &k, &k, &g, 0.25).unwrap();
                (
                    o,
                    gr.dq.to_vec::<f32>().unwrap(),
                    gr.dk.to_vec::<f32>().unwrap(),
                    gr.dv.to_vec::<f32>().unwrap(),
                )
            })
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn errors_name_the_op() {
        let z = |s: &[usize], dt: DType| Tensor::zeros(s, dt, &Device::Cpu).unwrap();
        let f = DType::F32;
        let msg = z(&[1, 3, 4, 8], f)
            .causal_attention_f32(&z(&[1, 2, 4, 8], f), &z(&[1, 2, 4, 8], f), 1.0)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("causal_attention_f32"), "{msg}");
        assert!(
            z(&[1, 2, 5, 8], f)
                .causal_attention_f32(&z(&[1, 2, 4, 8], f), &z(&[1, 2, 4, 8], f), 1.0)
                .is_err()
        );
        assert!(
            z(&[1, 2, 4, 8], DType::F64)
                .causal_attention_f32(
                    &z(&[1, 2, 4, 8], DType::F64),
                    &z(&[1, 2, 4, 8], DType::F64),
                    1.0
                )
                .is_err()
        );
        let q = z(&[1, 2, 4, 8], f);
        let msg = Tensor::causal_attention_f32_backward(&q, &q, &q, &z(&[1, 2, 4, 7], f), 1.0)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("causal_attention_f32_backward"), "{msg}");
    }
}
