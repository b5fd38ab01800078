//! One Brainstacks stack at one projection: the noisy top-k gate and the rsLoRA experts
//! (method spec section 1). The delta added to the frozen projection's output is
//! `sum_e g_e * s * B_e A_e x` with `s = alpha / sqrt(r)`, over the `k` experts the gate keeps.
//!
//! ```
//! use brainstacks_autograd::{Tape, Var};
//! use brainstacks_model::moe_lora::{MoeLora, MoeLoraConfig, GateNoise};
//! use brainstacks_tensor::{DType, Device, Rng, Tensor};
//! # fn main() -> brainstacks_model::Result<()> {
//! let tape = Tape::new();
//! let stack = MoeLora::new(&tape, 64, 32, &MoeLoraConfig::default(), &mut Rng::new(0), DType::F32)?;
//! let x = Var::constant(Tensor::ones(&[2, 5, 64], DType::F32, &Device::Cpu)?);
//! let noise = GateNoise { seed: 1, step: 0, layer: 3 };            // training: noisy routing
//! let out = stack.forward(&x, Some(noise))?;
//! assert_eq!(out.delta.shape(), &[2, 5, 32]);                     // zero B: exactly 0 at step 0
//! let aux = out.gate.load_balance_loss()?;                       // Switch-style, with gradient
//! # let _ = aux; Ok(()) }
//! ```

use brainstacks_autograd::{Tape, Var};
use brainstacks_kernels::moe_lora::noise_seed;
use brainstacks_tensor::{DType, Device, Rng, Tensor};

use crate::{Error, Result};

/// The stack's shape and scale. Defaults are the paper's: 4 experts, top-2, rank 16, alpha 16.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeLoraConfig {
    pub experts: usize,
    pub top_k: usize,
    pub rank: usize,
    pub alpha: f64,
}

impl Default for MoeLoraConfig {
    fn default() -> Self {
        Self { experts: 4, top_k: 2, rank: 16, alpha: 16.0 }
    }
}

impl MoeLoraConfig {
    /// The rsLoRA scale `alpha / sqrt(rank)` (4.0 for the defaults).
    pub fn scale(&self) -> f64 {
        self.alpha / (self.rank as f64).sqrt()
    }

    /// Trainable parameters of one stack at a `d_in -> d_out` projection:
    /// `E r (d_in + d_out)` expert weights plus `2 E d_in` for the router and the noise net.
    pub fn param_count(&self, d_in: usize, d_out: usize) -> usize {
        self.experts * self.rank * (d_in + d_out) + 2 * self.experts * d_in
    }
}

/// Where the training noise of one forward comes from: the run's seed, the optimiser step and the
/// wrapped projection's index. The same triple gives the same noise on every device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateNoise {
    pub seed: u64,
    pub step: u64,
    pub layer: u32,
}

impl GateNoise {
    /// `eps[t, e] ~ N(0, 1)`: Philox normals with the key `noise_seed(seed, step, layer)`, element
    /// `t * E + e`.
    pub fn sample(&self, tokens: usize, experts: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let mut rng = Rng::new(noise_seed(self.seed, self.step, self.layer));
        Ok(Tensor::randn(&mut rng, 0.0, 1.0, &[tokens, experts], dtype, device)?)
    }
}

/// What the gate decided for a batch of tokens.
#[derive(Clone, Debug)]
pub struct GateOutput {
    /// `[T, k]` i64: the kept experts of each token, by decreasing noisy logit.
    pub idx: Tensor,
    /// `[T, k]`: softmax over the kept noisy logits (sums to 1 per token).
    pub gates: Var,
    /// `[T, E]`: the (noisy) logits.
    pub logits: Var,
    /// Number of experts.
    pub experts: usize,
}

impl GateOutput {
    /// `[T, E]` gates with zeros for the experts a token does not use (for inspection and tests).
    pub fn dense_gates(&self) -> Result<Tensor> {
        let t = self.idx.shape()[0];
        let zeros = Tensor::zeros(&[t, self.experts], self.gates.tensor().dtype(), &self.gates.tensor().device())?;
        Ok(zeros.scatter_add(1, &self.idx, self.gates.tensor())?)
    }

    /// Fraction of tokens dispatched to each expert, `f(e)` (sums to `k`; no gradient).
    pub fn dispatch_fraction(&self) -> Result<Vec<f64>> {
        let ids = self.idx.to_vec::<i64>()?;
        let t = self.idx.shape()[0].max(1);
        let mut f = vec![0.0; self.experts];
        for e in ids {
            f[e as usize] += 1.0;
        }
        Ok(f.into_iter().map(|c| c / t as f64).collect())
    }

    /// The Switch-style load-balancing loss `E * sum_e P(e) f(e)`, with `P(e)` the mean over tokens
    /// of the softmax of the noisy logits (differentiable) and `f(e)` the dispatch fraction
    /// (constant). Its minimum, with uniform routing, is `k`.
    pub fn load_balance_loss(&self) -> Result<Var> {
        let p = self.logits.softmax(-1)?.mean(&[0usize], false)?;
        let f = Tensor::from_vec(self.dispatch_fraction()?, &[self.experts], &Device::Cpu)?
            .to_dtype(p.tensor().dtype())?
            .to_device(&p.tensor().device())?;
        Ok(p.mul(&Var::constant(f))?.sum_all()?.mul_scalar(self.experts as f64)?)
    }

    /// The router z-loss `mean_t (logsumexp_e logits[t, e])^2` (optional regulariser).
    pub fn z_loss(&self) -> Result<Var> {
        // logsumexp = logits[:, 0] - log_softmax(logits)[:, 0], composed so the tape differentiates it.
        let first = self.logits.narrow(1, 0, 1)?;
        let lse = first.sub(&self.logits.log_softmax(-1)?.narrow(1, 0, 1)?)?;
        Ok(lse.square()?.mean_all()?)
    }
}

/// The noisy top-k gate on flattened tokens `x` (`[T, d_in]`): logits `x W_rᵀ`, plus
/// `softplus(x W_nᵀ) * eps` when `eps` is given (training), top-k, softmax over the kept logits.
pub fn noisy_top_k(x: &Var, w_router: &Var, w_noise: &Var, k: usize, eps: Option<&Tensor>) -> Result<GateOutput> {
    let experts = w_router.shape()[0];
    let clean = x.matmul(&w_router.t()?)?;
    let logits = match eps {
        Some(eps) => clean.add(&x.matmul(&w_noise.t()?)?.softplus()?.mul(&Var::constant(eps.clone()))?)?,
        None => clean,
    };
    let (kept, idx) = logits.topk(k)?;
    let gates = kept.softmax(-1)?;
    Ok(GateOutput { idx, gates, logits, experts })
}

/// One MoE-LoRA stack at one projection.
#[derive(Clone, Debug)]
pub struct MoeLora {
    /// `[E, r, d_in]`, Kaiming-uniform (bound `1 / sqrt(d_in)`).
    pub a: Var,
    /// `[E, d_out, r]`, zeros: a new stack is an exact no-op.
    pub b: Var,
    /// `[E, d_in]`, `N(0, 0.02^2)`.
    pub w_router: Var,
    /// `[E, d_in]`, zeros: the initial noise scale is `softplus(0) = ln 2`.
    pub w_noise: Var,
    pub config: MoeLoraConfig,
}

/// The forward's outputs: the delta to add to the projection and the gate's decisions.
#[derive(Clone, Debug)]
pub struct MoeLoraOutput {
    /// Same leading shape as the input, last dim `d_out`.
    pub delta: Var,
    pub gate: GateOutput,
}

impl MoeLora {
    /// A fresh stack whose parameters are leaves of `tape`, initialised as the method specifies.
    pub fn new(tape: &Tape, d_in: usize, d_out: usize, cfg: &MoeLoraConfig, rng: &mut Rng, dtype: DType) -> Result<Self> {
        if cfg.experts == 0 || cfg.top_k == 0 || cfg.top_k > cfg.experts || cfg.rank == 0 {
            return Err(Error::Config {
                layer: "moe_lora".into(),
                msg: format!("need 1 <= top_k ({}) <= experts ({}) and rank ({}) >= 1", cfg.top_k, cfg.experts, cfg.rank),
            });
        }
        let cpu = Device::Cpu;
        let bound = 1.0 / (d_in as f64).sqrt();
        Ok(Self {
            a: tape.param(Tensor::rand_uniform(rng, -bound, bound, &[cfg.experts, cfg.rank, d_in], dtype, &cpu)?),
            b: tape.param(Tensor::zeros(&[cfg.experts, d_out, cfg.rank], dtype, &cpu)?),
            w_router: tape.param(Tensor::randn(rng, 0.0, 0.02, &[cfg.experts, d_in], dtype, &cpu)?),
            w_noise: tape.param(Tensor::zeros(&[cfg.experts, d_in], dtype, &cpu)?),
            config: cfg.clone(),
        })
    }

    /// `x` `[..., d_in]`. With `noise` (training) the gate adds its noise; without (evaluation,
    /// frozen stacks) routing is deterministic.
    pub fn forward(&self, x: &Var, noise: Option<GateNoise>) -> Result<MoeLoraOutput> {
        let shape = x.shape().to_vec();
        let d_in = *shape.last().ok_or_else(|| Error::Config { layer: "moe_lora".into(), msg: "input is a scalar".into() })?;
        let tokens = shape.iter().rev().skip(1).product::<usize>();
        let flat = x.reshape(&[tokens, d_in])?;
        let eps = noise.map(|n| n.sample(tokens, self.config.experts, x.tensor().dtype(), &x.tensor().device())).transpose()?;
        let gate = noisy_top_k(&flat, &self.w_router, &self.w_noise, self.config.top_k, eps.as_ref())?;
        let delta = flat.moe_lora(&gate.idx, &gate.gates, &self.a, &self.b, self.config.scale())?;
        let mut out_shape = shape;
        *out_shape.last_mut().expect("rank >= 1") = self.b.shape()[1];
        Ok(MoeLoraOutput { delta: delta.reshape(&out_shape)?, gate })
    }

    /// The trainable parameters, in a fixed order (A, B, router, noise net).
    /// The same stack with its four tensors on `device` (parameters keep their identity).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let m = |v: &Var| crate::llama::device::var_to_device(v, device);
        Ok(Self { a: m(&self.a)?, b: m(&self.b)?, w_router: m(&self.w_router)?, w_noise: m(&self.w_noise)?, config: self.config.clone() })
    }

    pub fn params(&self) -> [&Var; 4] {
        [&self.a, &self.b, &self.w_router, &self.w_noise]
    }

    /// The same parameters, mutable (for an optimizer's `replace_value`).
    pub fn params_mut(&mut self) -> [&mut Var; 4] {
        [&mut self.a, &mut self.b, &mut self.w_router, &mut self.w_noise]
    }

    /// A copy whose parameters are constants holding the current values in `dtype`: a frozen
    /// stack (no gradient ever reaches it; inputs still get theirs through it).
    pub fn frozen(&self, dtype: DType) -> Result<Self> {
        let c = |v: &Var| -> Result<Var> { Ok(Var::constant(v.tensor().to_dtype(dtype)?)) };
        Ok(Self { a: c(&self.a)?, b: c(&self.b)?, w_router: c(&self.w_router)?, w_noise: c(&self.w_noise)?, config: self.config.clone() })
    }

    /// The same stack computing in `dtype`: each parameter passes through a differentiable cast,
    /// so gradients reach the (f32 master) parameters in their own dtype. Returns a plain clone
    /// when the dtype already matches.
    pub fn cast(&self, dtype: DType) -> Result<Self> {
        if self.a.dtype() == dtype {
            return Ok(self.clone());
        }
        Ok(Self {
            a: self.a.to_dtype(dtype)?,
            b: self.b.to_dtype(dtype)?,
            w_router: self.w_router.to_dtype(dtype)?,
            w_noise: self.w_noise.to_dtype(dtype)?,
            config: self.config.clone(),
        })
    }

    /// `[d_in, d_out]` of the wrapped projection.
    pub fn dims(&self) -> [usize; 2] {
        [self.a.shape()[2], self.b.shape()[1]]
    }

    /// Number of parameters (all four tensors).
    pub fn param_count(&self) -> usize {
        self.params().iter().map(|p| p.tensor().elem_count()).sum()
    }
}
