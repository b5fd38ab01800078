//! Optimizers. They read gradients from the `Gradients` a backward pass returned and give each
//! trainable leaf its new value with `Var::replace_value` (same identity, new tensor).

use brainstacks_autograd::{Gradients, Var};
use brainstacks_tensor::Tensor;

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
        for (p, slot) in params.iter_mut().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(p) else { continue };
            let (m, v) = match slot.take() {
                Some(mv) => mv,
                None => (g.zeros_like()?, g.zeros_like()?),
            };
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
}
