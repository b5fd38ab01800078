//! Optimizers. They read gradients from the `Gradients` a backward pass returned and give each
//! trainable leaf its new value with `Var::replace_value` (same identity, new tensor).

use std::collections::HashMap;

use brainstacks_autograd::{Gradients, Var, VarId};
use brainstacks_tensor::ops::optim::{AdamWParams, adamw_step_fused};
use brainstacks_tensor::{DType, Device, Tensor};

use crate::{Error, Result};

/// AdamW hyperparameters (Loshchilov & Hutter): the weight decay is decoupled from the
/// adaptive update, `p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)`.
#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        // PyTorch's defaults.
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// AdamW with first and second moments kept in the parameter's dtype, one slot per parameter
/// position in the list passed to `step` (the same list, in the same order, every step).
pub struct AdamW {
    pub config: AdamWConfig,
    step: u64,
    moments: Vec<Option<(Tensor, Tensor)>>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, step: 0, moments: Vec::new() }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The learning rate the next `step` uses (a schedule sets it before every step, see
    /// [`crate::schedule::LrSchedule`]).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// One update of every parameter that has a gradient in `grads`. Parameters without one
    /// (not reached by the loss) keep their value and moments.
    pub fn step(&mut self, params: &mut [&mut Var], grads: &Gradients) -> Result<()> {
        if self.moments.is_empty() {
            self.moments = vec![None; params.len()];
        } else if self.moments.len() != params.len() {
            return Err(Error::Invalid {
                what: "AdamW::step".into(),
                msg: format!("called with {} parameters, previously {}", params.len(), self.moments.len()),
            });
        }
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        let fused = AdamWParams { lr: c.lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weight_decay: c.weight_decay };
        for (p, slot) in params.iter_mut().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(p) else { continue };
            let (m, v) = match slot.take() {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
            // On a GPU (f32): one fused kernel with the same arithmetic, so the same bits.
            if let Some((new, m, v)) = adamw_step_fused(p.tensor(), g, &m, &v, &fused, self.step)? {
                p.replace_value(new)?;
                *slot = Some((m, v));
                continue;
            }
            let m = m.affine(c.beta1, 0.0)?.add(&g.mul_scalar(1.0 - c.beta1)?)?;
            let v = v.affine(c.beta2, 0.0)?.add(&g.square()?.mul_scalar(1.0 - c.beta2)?)?;
            let denom = v.mul_scalar(1.0 / bias2)?.sqrt()?.add_scalar(c.eps)?;
            let update = m.mul_scalar(1.0 / bias1)?.div(&denom)?;
            let w = p.tensor();
            let new = w.sub(&update.add(&w.mul_scalar(c.weight_decay)?)?.mul_scalar(c.lr)?)?;
            p.replace_value(new)?;
            *slot = Some((m, v));
        }
        Ok(())
    }
}

/// Sum of squares of a gradient's elements. On the CPU every element is widened to f64 before
/// squaring and summing; on a GPU the tensor's own reduction (in f32, f64 is not available there)
/// gives the per-tensor sum, and the sums of all tensors are added in f64.
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if g.device() == Device::Cpu {
        return Ok(g.to_vec_f64()?.iter().map(|x| x * x).sum());
    }
    let g = if g.dtype() == DType::F32 { g.clone() } else { g.to_dtype(DType::F32)? };
    Ok(g.square()?.sum_all()?.to_scalar_f64()?)
}

/// Global L2 norm of the gradients of `params` (those without a gradient count as zero),
/// and, when it exceeds `max_norm`, every one of those gradients scaled in place by
/// `max_norm / (norm + 1e-6)`, as `torch.nn.utils.clip_grad_norm_` does. Returns the norm before
/// clipping. A non-finite norm is returned unchanged with the gradients left alone, so the caller
/// can skip the step.
///
/// ```
/// use brainstacks_autograd::{Tape, Var};
/// use brainstacks_tensor::{Device, Tensor};
/// use brainstacks_train::optim::clip_grad_norm;
/// let tape = Tape::new();
/// let w = tape.param(Tensor::from_vec(vec![0.0f64, 0.0], &[2], &Device::Cpu).unwrap());
/// let c = Var::constant(Tensor::from_vec(vec![3.0f64, 4.0], &[2], &Device::Cpu).unwrap());
/// let mut grads = tape.backward(&w.mul(&c).unwrap().sum_all().unwrap()).unwrap();
/// assert_eq!(clip_grad_norm(&mut grads, &[&w], 1.0).unwrap(), 5.0);
/// let g = grads.get(&w).unwrap().to_vec::<f64>().unwrap();
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// ```
pub fn clip_grad_norm(grads: &mut Gradients, params: &[&Var], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(Error::Invalid { what: "clip_grad_norm".into(), msg: format!("max_norm must be > 0, got {max_norm}") });
    }
    let mut total = 0.0f64;
    for p in params {
        if let Some(g) = grads.get(p) {
            total += sum_of_squares(g)?;
        }
    }
    let norm = total.sqrt();
    if norm.is_finite() && norm > max_norm {
        let coef = max_norm / (norm + 1e-6);
        for p in params {
            if let Some(g) = grads.get(p) {
                let scaled = g.mul_scalar(coef)?;
                grads.insert(p, scaled);
            }
        }
    }
    Ok(norm)
}

/// Gradient accumulation over micro-batches: the (optionally weighted) sum of each listed
/// parameter's gradient, turned into one `Gradients` for the optimizer by [`GradAccumulator::finish`].
///
/// For a mean loss per micro-batch, `add` each one and `finish(params, n_micro_batches)`: the
/// average of the micro-batch gradients (the method's accumulation). For the exact gradient of
/// the token-weighted mean over the whole batch, `add_scaled(.., batch.targets as f64)` and
/// `finish(params, total_targets)`.
///
/// ```
/// use brainstacks_autograd::{Tape, Var};
/// use brainstacks_tensor::{Device, Tensor};
/// use brainstacks_train::optim::GradAccumulator;
/// let tape = Tape::new();
/// let w = tape.param(Tensor::from_vec(vec![1.0f64], &[1], &Device::Cpu).unwrap());
/// let mut acc = GradAccumulator::new();
/// for c in [2.0f64, 4.0] {
///     let c = Var::constant(Tensor::from_vec(vec![c], &[1], &Device::Cpu).unwrap());
///     let grads = tape.backward(&w.mul(&c).unwrap().sum_all().unwrap()).unwrap();
///     acc.add(&grads, &[&w]).unwrap();
///     tape.clear();
/// }
/// assert_eq!(acc.micro_batches(), 2);
/// let mean = acc.finish(&[&w], 2.0).unwrap();
/// assert_eq!(mean.get(&w).unwrap().to_vec::<f64>().unwrap(), vec![3.0]);
/// ```
#[derive(Default)]
pub struct GradAccumulator {
    sums: HashMap<VarId, Tensor>,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the gradients of `params` found in `grads` (others are ignored).
    pub fn add(&mut self, grads: &Gradients, params: &[&Var]) -> Result<()> {
        self.add_scaled(grads, params, 1.0)
    }

    /// Adds `scale` times the gradients of `params` found in `grads`.
    pub fn add_scaled(&mut self, grads: &Gradients, params: &[&Var], scale: f64) -> Result<()> {
        for p in params {
            let Some(g) = grads.get(p) else { continue };
            let g = if scale == 1.0 { g.clone() } else { g.mul_scalar(scale)? };
            let sum = match self.sums.remove(&p.id()) {
                Some(s) => s.add(&g)?,
                None => g,
            };
            self.sums.insert(p.id(), sum);
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// Micro-batches added since the last `finish`.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The accumulated gradients of `params` divided by `divisor`, as a `Gradients` the
    /// optimizer and [`clip_grad_norm`] take; the accumulator starts over empty. Parameters that
    /// never received a gradient are absent.
    pub fn finish(&mut self, params: &[&Var], divisor: f64) -> Result<Gradients> {
        if !(divisor.is_finite() && divisor > 0.0) {
            return Err(Error::Invalid {
                what: "GradAccumulator::finish".into(),
                msg: format!("divisor must be finite and > 0, got {divisor}"),
            });
        }
        let mut sums = std::mem::take(&mut self.sums);
        self.micro_batches = 0;
        let mut out = Gradients::default();
        for p in params {
            if let Some(s) = sums.remove(&p.id()) {
                let g = if divisor == 1.0 { s } else { s.mul_scalar(1.0 / divisor)? };
                out.insert(p, g);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brainstacks_autograd::Tape;
    use brainstacks_tensor::Device;

    /// One AdamW step from zero moments moves every weight by -lr * (sign(g) + wd * w)
    /// (m_hat / sqrt(v_hat) = g / |g| on the first step, up to eps).
    #[test]
    fn first_step_is_sign_descent_plus_decay() -> Result<()> {
        let tape = Tape::new();
        let mut w = tape.param(Tensor::from_vec(vec![1.0f64, -2.0], &[2], &Device::Cpu)?);
        let loss = w.mul(&Var::constant(Tensor::from_vec(vec![3.0f64, -0.5], &[2], &Device::Cpu)?))?.sum_all()?;
        let grads = tape.backward(&loss)?;
        let cfg = AdamWConfig { lr: 0.1, weight_decay: 0.5, eps: 0.0, ..Default::default() };
        let mut opt = AdamW::new(cfg);
        opt.step(&mut [&mut w], &grads)?;
        let got = w.tensor().to_vec::<f64>()?;
        let expect = [1.0 - 0.1 * (1.0 + 0.5 * 1.0), -2.0 - 0.1 * (-1.0 + 0.5 * -2.0)];
        for (g, e) in got.iter().zip(expect) {
            assert!((g - e).abs() < 1e-12, "{got:?} vs {expect:?}");
        }
        Ok(())
    }

    fn t64(v: Vec<f64>, shape: &[usize]) -> Tensor {
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    /// Deterministic, irregular values (no two equal), so a wrong row or column shows.
    fn data(n: usize, salt: f64) -> Vec<f64> {
        (0..n).map(|i| ((i as f64 + 1.0) * 0.731 + salt).sin()).collect()
    }

    /// Mean squared error of a linear model: the average of the two halves' gradients (each a
    /// mean over its 4 rows) is the gradient of the mean over all 8 rows.
    #[test]
    fn accumulated_halves_equal_the_whole_batch() -> Result<()> {
        let tape = Tape::new();
        let w = tape.param(t64(data(3, 0.3), &[3, 1]));
        let x = t64(data(24, 1.0), &[8, 3]);
        let y = t64(data(8, 2.0), &[8, 1]);
        let loss = |rows: std::ops::Range<usize>| -> Result<Gradients> {
            let xs = Var::constant(x.narrow(0, rows.start, rows.len())?);
            let ys = Var::constant(y.narrow(0, rows.start, rows.len())?);
            let l = xs.matmul(&w)?.sub(&ys)?.square()?.mean_all()?;
            let g = tape.backward(&l)?;
            tape.clear();
            Ok(g)
        };
        let whole = loss(0..8)?;
        let mut acc = GradAccumulator::new();
        acc.add(&loss(0..4)?, &[&w])?;
        acc.add(&loss(4..8)?, &[&w])?;
        assert_eq!(acc.micro_batches(), 2);
        let avg = acc.finish(&[&w], 2.0)?;
        assert_close(&avg.get(&w).unwrap().to_vec::<f64>()?, &whole.get(&w).unwrap().to_vec::<f64>()?, 1e-12);
        // finish starts over.
        assert_eq!(acc.micro_batches(), 0);
        assert!(acc.finish(&[&w], 1.0)?.is_empty());
        Ok(())
    }

    /// Cross-entropy with ignored labels (the data pipeline's convention): micro-batches with
    /// different numbers of counted targets, weighted by their counts, give the gradient of the
    /// token-weighted mean over the whole batch; the plain average does not.
    #[test]
    fn target_weighted_accumulation_matches_masked_cross_entropy() -> Result<()> {
        let tape = Tape::new();
        let w = tape.param(t64(data(12, 0.1), &[3, 4]));
        let unused = tape.param(t64(vec![1.0], &[1]));
        let x = t64(data(18, 0.7), &[6, 3]);
        let labels = Tensor::from_vec(vec![1i64, -100, 3, 0, 2, -100], &[6], &Device::Cpu)?;
        let grad_of = |rows: std::ops::Range<usize>| -> Result<Gradients> {
            let xs = Var::constant(x.narrow(0, rows.start, rows.len())?);
            let l = xs.matmul(&w)?.cross_entropy(&labels.narrow(0, rows.start, rows.len())?, Some(-100))?;
            let g = tape.backward(&l)?;
            tape.clear();
            Ok(g)
        };
        let whole = grad_of(0..6)?.get(&w).unwrap().to_vec::<f64>()?;
        // Rows 0..2 hold 1 target, rows 2..6 hold 3.
        let mut acc = GradAccumulator::new();
        acc.add_scaled(&grad_of(0..2)?, &[&w, &unused], 1.0)?;
        acc.add_scaled(&grad_of(2..6)?, &[&w, &unused], 3.0)?;
        let weighted = acc.finish(&[&w, &unused], 4.0)?;
        assert!(weighted.get(&unused).is_none());
        assert_close(&weighted.get(&w).unwrap().to_vec::<f64>()?, &whole, 1e-12);
        acc.add(&grad_of(0..2)?, &[&w])?;
        acc.add(&grad_of(2..6)?, &[&w])?;
        let plain = acc.finish(&[&w], 2.0)?.get(&w).unwrap().to_vec::<f64>()?;
        assert!(plain.iter().zip(&whole).any(|(a, b)| (a - b).abs() > 1e-3));
        assert!(acc.finish(&[&w], 0.0).is_err());
        Ok(())
    }

    #[test]
    fn clip_grad_norm_scales_all_listed_gradients() -> Result<()> {
        let tape = Tape::new();
        let a = tape.param(t64(vec![0.0, 0.0], &[2]));
        let b = tape.param(t64(vec![0.0; 3], &[3]));
        let other = tape.param(t64(vec![0.0], &[1]));
        let ca = Var::constant(t64(vec![1.0, -2.0], &[2]));
        let cb = Var::constant(t64(vec![2.0, 0.0, 4.0], &[3]));
        let co = Var::constant(t64(vec![7.0], &[1]));
        let loss = a.mul(&ca)?.sum_all()?.add(&b.mul(&cb)?.sum_all()?)?.add(&other.mul(&co)?.sum_all()?)?;
        let mut grads = tape.backward(&loss)?;
        // Norm over a and b only: sqrt(1 + 4 + 4 + 0 + 16) = 5.
        let norm = clip_grad_norm(&mut grads, &[&a, &b], 2.5)?;
        assert_eq!(norm, 5.0);
        let k = 2.5 / (5.0 + 1e-6);
        assert_close(&grads.get(&a).unwrap().to_vec::<f64>()?, &[k, -2.0 * k], 1e-15);
        assert_close(&grads.get(&b).unwrap().to_vec::<f64>()?, &[2.0 * k, 0.0, 4.0 * k], 1e-15);
        assert_eq!(grads.get(&other).unwrap().to_vec::<f64>()?, vec![7.0]);
        // Below the threshold nothing changes; the norm is still reported.
        let before = grads.get(&a).unwrap().to_vec::<f64>()?;
        let norm2 = clip_grad_norm(&mut grads, &[&a, &b], 10.0)?;
        assert!((norm2 - 2.5 * 5.0 / (5.0 + 1e-6)).abs() < 1e-12);
        assert_eq!(grads.get(&a).unwrap().to_vec::<f64>()?, before);
        assert!(clip_grad_norm(&mut grads, &[&a], 0.0).is_err());
        Ok(())
    }

    #[test]
    fn set_lr_changes_the_next_step() -> Result<()> {
        let tape = Tape::new();
        let mut w = tape.param(Tensor::from_vec(vec![1.0f64], &[1], &Device::Cpu)?);
        let loss = w.mul(&Var::constant(Tensor::from_vec(vec![2.0f64], &[1], &Device::Cpu)?))?.sum_all()?;
        let grads = tape.backward(&loss)?;
        let mut opt = AdamW::new(AdamWConfig { lr: 0.1, weight_decay: 0.0, eps: 0.0, ..Default::default() });
        opt.set_lr(0.0);
        assert_eq!(opt.lr(), 0.0);
        opt.step(&mut [&mut w], &grads)?;
        assert_eq!(w.tensor().to_vec::<f64>()?, vec![1.0]);
        opt.set_lr(0.25);
        opt.step(&mut [&mut w], &grads)?;
        // Constant gradient: m_hat / sqrt(v_hat) = 1, so the step is exactly lr.
        assert_close(&w.tensor().to_vec::<f64>()?, &[0.75], 1e-12);
        Ok(())
    }
}
