//! Neural-network ops: softmax, norms, rotary embeddings, the cross-entropy loss and causal
//! attention.
//!
//! The norms have explicit backward formulas instead of being composed from smaller `Var` ops:
//! one node instead of a dozen, and the rule recomputes the per-row statistics from the saved
//! input rather than saving them, so the tape holds one tensor per norm. Causal attention is the
//! opposite trade: it is composed from differentiable `Var` ops, so its backward is the chain of
//! rules that are each gradchecked on their own.

use brainstacks_tensor::{DType, Device, Dim, Tensor};

use crate::{Error, Result, Var, record};

/// The dtype a rule computes in: half types are upcast to f32, because per-row sums of a few
/// thousand bf16 products lose most of their bits.
fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        dt => dt,
    }
}

impl Var {
    /// Softmax along `dim`. Backward: `dx = y * (g - sum(g * y, dim))`, with `y` the saved
    /// output. Where the input is `-inf`, `y` is exactly 0, so the gradient there is 0, not NaN.
    pub fn softmax<D: Dim>(&self, dim: D) -> Result<Var> {
        let d = dim.resolve("softmax", self.shape())?;
        let y = self.tensor().softmax(d)?;
        let saved = y.clone();
        record("softmax", &[self], y, move |g, _| {
            let dot = g.mul(&saved)?.sum(&[d], true)?;
            Ok(vec![Some(saved.mul(&g.sub(&dot)?)?)])
        })
    }

    /// Log-softmax along `dim`. Backward: `dx = g - softmax(x) * sum(g, dim)`, where
    /// `softmax(x) = exp(y)` comes from the saved output.
    pub fn log_softmax<D: Dim>(&self, dim: D) -> Result<Var> {
        let d = dim.resolve("log_softmax", self.shape())?;
        let y = self.tensor().log_softmax(d)?;
        let saved = y.clone();
        record("log_softmax", &[self], y, move |g, _| {
            let total = g.sum(&[d], true)?;
            Ok(vec![Some(g.sub(&saved.exp()?.mul(&total)?)?)])
        })
    }

    /// RMS norm over the last dim: `y = x / sqrt(mean(x^2) + eps) * weight`.
    ///
    /// With `r = 1 / sqrt(mean(x^2) + eps)` and `xhat = x r` (recomputed from the saved `x`):
    /// `dweight = sum over rows of g * xhat`, `dx = r * (g w - xhat * mean(g w * xhat))`.
    pub fn rms_norm(&self, weight: &Var, eps: f64) -> Result<Var> {
        if !weight.requires_grad() && self.tensor().device() == Device::Cpu && weight.tensor().device() == Device::Cpu {
            return self.rms_norm_input_only(weight, eps);
        }
        let (x, w) = (self.tensor().clone(), weight.tensor().clone());
        let out = x.rms_norm(&w, eps)?;
        record("rms_norm", &[self, weight], out, move |g, needs| {
            let cdt = compute_dtype(x.dtype());
            // `to_dtype` to the same dtype is a clone, not a copy.
            let (xc, wc, gc) = (x.to_dtype(cdt)?, w.to_dtype(cdt)?, g.to_dtype(cdt)?);
            let last = xc.rank() - 1; // the forward rejected rank 0
            let r = xc.square()?.mean(&[last], true)?.add_scalar(eps)?.rsqrt()?;
            let xhat = xc.mul(&r)?;
            let dx = if needs[0] {
                let gw = gc.mul(&wc)?;
                let proj = gw.mul(&xhat)?.mean(&[last], true)?;
                Some(gw.sub(&xhat.mul(&proj)?)?.mul(&r)?.to_dtype(x.dtype())?)
            } else {
                None
            };
            let dw = if needs[1] { Some(gc.mul(&xhat)?.sum_to_shape(w.shape())?.to_dtype(w.dtype())?) } else { None };
            Ok(vec![dx, dw])
        })
    }

    /// [`Var::rms_norm`] when only the input can need a gradient, on the CPU: the input gradient
    /// in one fused pass per row ([`Tensor::rms_norm_input_grad`], f64 inside).
    fn rms_norm_input_only(&self, weight: &Var, eps: f64) -> Result<Var> {
        let (x, w) = (self.tensor().clone(), weight.tensor().clone());
        let out = x.rms_norm(&w, eps)?;
        record("rms_norm", &[self, weight], out, move |g, needs| {
            let dx = if needs[0] { Some(x.rms_norm_input_grad(&w, g, eps)?) } else { None };
            Ok(vec![dx, None])
        })
    }

    /// Layer norm over the last dim: `y = (x - mean) / sqrt(var + eps) * weight + bias` (biased
    /// variance).
    ///
    /// With `xhat` and `r = 1 / sqrt(var + eps)` recomputed from the saved `x`:
    /// `dbias = sum g`, `dweight = sum g * xhat` (both over every leading dim),
    /// `dx = r * (g w - mean(g w) - xhat * mean(g w * xhat))`.
    pub fn layer_norm(&self, weight: &Var, bias: &Var, eps: f64) -> Result<Var> {
        let (x, w) = (self.tensor().clone(), weight.tensor().clone());
        let out = x.layer_norm(&w, bias.tensor(), eps)?;
        // The rule needs only the bias's shape and dtype, not its values.
        let (b_shape, b_dtype) = (bias.shape().to_vec(), bias.dtype());
        record("layer_norm", &[self, weight, bias], out, move |g, needs| {
            let cdt = compute_dtype(x.dtype());
            // `to_dtype` to the same dtype is a clone, not a copy.
            let (xc, wc, gc) = (x.to_dtype(cdt)?, w.to_dtype(cdt)?, g.to_dtype(cdt)?);
            let last = xc.rank() - 1;
            let centered = xc.sub(&xc.mean(&[last], true)?)?;
            let r = centered.square()?.mean(&[last], true)?.add_scalar(eps)?.rsqrt()?;
            let xhat = centered.mul(&r)?;
            let dx = if needs[0] {
                let gw = gc.mul(&wc)?;
                let mean_gw = gw.mean(&[last], true)?;
                let proj = gw.mul(&xhat)?.mean(&[last], true)?;
                Some(gw.sub(&mean_gw)?.sub(&xhat.mul(&proj)?)?.mul(&r)?.to_dtype(x.dtype())?)
            } else {
                None
            };
            let dw = if needs[1] { Some(gc.mul(&xhat)?.sum_to_shape(w.shape())?.to_dtype(w.dtype())?) } else { None };
            let db = if needs[2] { Some(gc.sum_to_shape(&b_shape)?.to_dtype(b_dtype)?) } else { None };
            Ok(vec![dx, dw, db])
        })
    }

    /// Rotary position embedding (rotate-half) of `x [..., T, D]` with constant tables
    /// `cos, sin [T, D/2]` (see `brainstacks_tensor::ops::rope::rope_tables`).
    ///
    /// Each pair `(x_i, x_{i + D/2})` is rotated by an angle; the transpose of a rotation is the
    /// rotation by the opposite angle, so the backward is `rope(g, cos, -sin)`. That holds for
    /// any tables, not only ones with `cos^2 + sin^2 = 1`.
    pub fn rope(&self, cos: &Tensor, sin: &Tensor) -> Result<Var> {
        let out = self.tensor().rope(cos, sin)?;
        let (c, s) = (cos.clone(), sin.clone());
        record("rope", &[self], out, move |g, _| Ok(vec![Some(g.rope(&c, &s.neg()?)?)]))
    }

    /// Mean cross-entropy of `logits [N, C]` against class ids `targets [N]`; rows whose target
    /// equals `ignore_index` do not count. Returns a rank-0 variable.
    ///
    /// Backward: `g * cross_entropy_grad(targets)`, the tensor op giving the gradient of the
    /// mean loss (`(softmax - onehot) / valid_rows`, zero on ignored rows).
    ///
    /// When the gradient will be needed (the logits require one and recording is on), the
    /// forward computes it too, in the same pass ([`Tensor::cross_entropy_with_grad`], the same
    /// bits): the backward then only scales it, and the exponentials are computed once.
    pub fn cross_entropy(&self, targets: &Tensor, ignore_index: Option<i64>) -> Result<Var> {
        if !self.requires_grad() || crate::no_grad::is_active() {
            let out = self.tensor().cross_entropy(targets, ignore_index)?;
            return record("cross_entropy", &[self], out, |_, _| Ok(vec![None]));
        }
        let (out, grad) = self.tensor().cross_entropy_with_grad(targets, ignore_index)?;
        record("cross_entropy", &[self], out, move |g, _| {
            let grad = grad.clone();
            // The usual case, a loss that is (part of) the final sum, has g = 1 exactly: skip a
            // full pass over [N, C] that would multiply by one.
            if g.device() == Device::Cpu && g.to_scalar_f64()? == 1.0 {
                return Ok(vec![Some(grad)]);
            }
            // `g` is rank 0; broadcasting keeps it on the device (no host read of its value).
            Ok(vec![Some(grad.mul(g)?)])
        })
    }

    /// Causal (grouped-query) attention with `self` as the queries `q [B, Hq, T, D]`, keys
    /// `k [B, Hkv, S, D]` and values `v [B, Hkv, S, Dv]`, `Hq` a multiple of `Hkv` (query head
    /// `h` reads kv head `h / (Hq / Hkv)`). Query `t` sees keys `s <= t + S - T` (the mask is
    /// aligned to the end, as when decoding with a cache). Returns `[B, Hq, T, Dv]`.
    ///
    /// Composed from differentiable ops, so every piece of the backward is a gradchecked rule:
    /// the queries are viewed as `[B, Hkv, rep, T, D]` and the kv heads get a broadcast dim of
    /// size 1, so the batched matmuls share each kv head across its `rep` query heads without
    /// copying it, and matmul's backward sums the shared gradient back. Masked scores are
    /// `-inf`; softmax gives exactly 0 there and its backward 0, not NaN. A query row that sees
    /// no key at all (only possible when `T > S`) is rejected, since its softmax is undefined.
    ///
    /// On f32 CPU tensors with non-empty head dims it runs as one op instead
    /// ([`Tensor::causal_attention_f32`] and its backward, same math in f32 through per-head
    /// GEMMs; checked against this composition and the f64 textbook form in the tests).
    pub fn causal_attention(&self, k: &Var, v: &Var, scale: f64) -> Result<Var> {
        let (qs, ks, vs) = (self.shape(), k.shape(), v.shape());
        let invalid = |msg: &str| Error::Invalid {
            op: "causal_attention".into(),
            msg: format!("q {qs:?}, k {ks:?}, v {vs:?}: {msg}"),
        };
        if qs.len() != 4 || ks.len() != 4 || vs.len() != 4 {
            return Err(invalid("q, k and v must have rank 4 ([batch, heads, seq, head_dim])"));
        }
        let (b, hq, t, d) = (qs[0], qs[1], qs[2], qs[3]);
        let (hkv, s, dv) = (ks[1], ks[2], vs[3]);
        if ks[0] != b || vs[0] != b {
            return Err(invalid("batch sizes differ"));
        }
        if vs[1] != hkv || vs[2] != s {
            return Err(invalid("k and v must have the same heads and sequence length"));
        }
        if ks[3] != d {
            return Err(invalid("q and k must have the same head dim"));
        }
        // `is_multiple_of(0)` holds only for 0: no kv heads is fine only with no query heads.
        if !hq.is_multiple_of(hkv) {
            return Err(invalid("the query heads must be a multiple of the kv heads"));
        }
        if t > s {
            return Err(invalid("more queries than keys: the first query rows would see no key"));
        }
        let fused = [self, k, v].iter().all(|x| x.dtype() == DType::F32 && x.tensor().device() == Device::Cpu);
        if fused && d > 0 && dv > 0 && hkv > 0 {
            return self.causal_attention_fused(k, v, scale);
        }
        self.causal_attention_composed(k, v, scale)
    }

    /// The fused f32 form of [`Var::causal_attention`] (shapes already checked).
    fn causal_attention_fused(&self, k: &Var, v: &Var, scale: f64) -> Result<Var> {
        let (q, kt, vt) = (self.tensor().clone(), k.tensor().clone(), v.tensor().clone());
        let out = q.causal_attention_f32(&kt, &vt, scale)?;
        record("causal_attention", &[self, k, v], out, move |g, needs| {
            let grads = Tensor::causal_attention_f32_backward(&q, &kt, &vt, g, scale)?;
            Ok(vec![needs[0].then_some(grads.dq), needs[1].then_some(grads.dk), needs[2].then_some(grads.dv)])
        })
    }

    /// [`Var::causal_attention`] composed from differentiable ops (shapes already checked).
    pub(crate) fn causal_attention_composed(&self, k: &Var, v: &Var, scale: f64) -> Result<Var> {
        let (qs, ks, vs) = (self.shape(), k.shape(), v.shape());
        let (b, hq, t, d) = (qs[0], qs[1], qs[2], qs[3]);
        let (hkv, s, dv) = (ks[1], ks[2], vs[3]);
        let rep = hq.checked_div(hkv).unwrap_or(1);
        let q5 = self.reshape(&[b, hkv, rep, t, d])?;
        let k5 = k.unsqueeze(2)?; // [B, Hkv, 1, S, D]
        let v5 = v.unsqueeze(2)?; // [B, Hkv, 1, S, Dv]
        let scores = q5.matmul(&k5.t()?)?.mul_scalar(scale)?; // [B, Hkv, rep, T, S]
        let bias = Var::constant(Tensor::causal_bias(t, s, scores.dtype(), &self.tensor().device())?);
        let probs = scores.add(&bias)?.softmax(-1isize)?;
        probs.matmul(&v5)?.reshape(&[b, hq, t, dv])
    }
}
