//! The meta-router network (spec §5.2), per prompt of `T` tokens with features `h [T, d_model]`:
//!
//! ```text
//! x    = LayerNorm(Linear(d_model -> H)(h))                    per token, [T, H]
//! g    = LayerNorm(softmax_t(x q_g) x)                          global context, [H]
//! c_d  = LayerNorm(softmax_t(x Q_d) x)                          one context per domain, [D, H]
//! u_d  = Dropout(GELU(Linear(H -> H)(LayerNorm(Dropout(GELU(Linear(2H -> H)([c_d ; g])))))))
//! z_d  = Linear(H -> 1)(u_d) / clamp(exp(log_tau), tau_min, tau_max)
//! p_d  = sigmoid(z_d)                                           independent per domain
//! ```
//!
//! Attention scores are plain dot products (no `1/sqrt(H)`), padding gets `-1e9` before the
//! softmax, and the fusion and head weights are shared by all domains: a domain differs only by
//! its query. With `D` domains the parameter count is
//! `H (d_model + 3H + D + 13) + 2` (see [`MetaRouterConfig::param_count`]): 1,843,714 for
//! `d_model = 2048, H = 512, D = 4` and 2,761,730 for `3840, 512, 5`, the spec's 1.84M and 2.76M.
//!
//! A consequence of the sharing worth knowing: a domain's identity enters only through which
//! tokens its query attends to. If every token of a prompt looks alike, every `c_d` is the same
//! vector and so is every logit; the router separates domains by picking out domain-typical
//! tokens among the rest of the prompt.

use brainstacks_autograd::{Tape, Var, no_grad};
use brainstacks_tensor::ops::compare::CmpOp;
use brainstacks_tensor::{DType, Device, Rng, Tensor};

use crate::nn::Linear;
use crate::{Error, Result};

/// PyTorch's `nn.LayerNorm` default.
const LN_EPS: f64 = 1e-5;
/// The score given to padding before the softmax, as the reference code does (not `-inf`, so a
/// prompt that is all padding would still give finite numbers).
const PAD_SCORE: f64 = -1e9;
/// Standard deviation of the learned queries at initialisation.
const QUERY_INIT_STD: f64 = 0.02;

/// Sizes and regularisation of a [`MetaRouter`].
#[derive(Clone, Debug, PartialEq)]
pub struct MetaRouterConfig {
    /// Width of the base model's features.
    pub d_model: usize,
    /// Width of the router's hidden layers (512 in the method).
    pub hidden: usize,
    /// Domain names, in output order; `D = domains.len()`.
    pub domains: Vec<String>,
    /// Dropout after each fusion GELU, in training only.
    pub dropout: f64,
    /// The learned temperature is clamped to `[tau_min, tau_max]`.
    pub tau_min: f64,
    pub tau_max: f64,
}

impl MetaRouterConfig {
    /// The method's settings (hidden 512, dropout 0.1, temperature in `[0.3, 3.0]`).
    pub fn new(d_model: usize, domains: Vec<String>) -> Self {
        Self { d_model, hidden: 512, domains, dropout: 0.1, tau_min: 0.3, tau_max: 3.0 }
    }

    /// Number of domains `D`.
    pub fn num_domains(&self) -> usize {
        self.domains.len()
    }

    /// `H (d_model + 3H + D + 13) + 2`: input projection `d_model H + H`, four LayerNorms `4 * 2H`,
    /// global query `H`, domain queries `D H`, fusion `2H*H + H` and `H*H + H`, head `H + 1`, and
    /// `log_tau`.
    ///
    /// ```
    /// use brainstacks_model::router::MetaRouterConfig;
    /// assert_eq!(MetaRouterConfig::param_count(2048, 512, 4), 1_843_714);
    /// ```
    pub fn param_count(d_model: usize, hidden: usize, domains: usize) -> usize {
        hidden * (d_model + 3 * hidden + domains + 13) + 2
    }

    /// Checks the sizes, names and ranges; names the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config { layer: "MetaRouterConfig".into(), msg });
        if self.d_model == 0 || self.hidden == 0 {
            return bad(format!("d_model {} and hidden {} must be positive", self.d_model, self.hidden));
        }
        if self.domains.is_empty() {
            return bad("at least one domain is needed".into());
        }
        for (i, d) in self.domains.iter().enumerate() {
            if d.is_empty() {
                return bad(format!("domain {i} has an empty name"));
            }
            if self.domains[..i].contains(d) {
                return bad(format!("domain {d:?} is listed twice"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if !(self.tau_min.is_finite() && self.tau_max.is_finite() && self.tau_min > 0.0 && self.tau_min <= self.tau_max) {
            return bad(format!("temperature range [{}, {}] must be finite with 0 < tau_min <= tau_max", self.tau_min, self.tau_max));
        }
        Ok(())
    }

    /// Name and shape of every parameter, in the order of [`MetaRouter::params`].
    pub fn param_shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        let (dm, h, d) = (self.d_model, self.hidden, self.num_domains());
        vec![
            ("in_proj.weight", vec![h, dm]),
            ("in_proj.bias", vec![h]),
            ("in_norm.weight", vec![h]),
            ("in_norm.bias", vec![h]),
            ("global_query", vec![h]),
            ("global_norm.weight", vec![h]),
            ("global_norm.bias", vec![h]),
            ("domain_queries", vec![d, h]),
            ("domain_norm.weight", vec![h]),
            ("domain_norm.bias", vec![h]),
            ("fuse1.weight", vec![h, 2 * h]),
            ("fuse1.bias", vec![h]),
            ("fuse_norm.weight", vec![h]),
            ("fuse_norm.bias", vec![h]),
            ("fuse2.weight", vec![h, h]),
            ("fuse2.bias", vec![h]),
            ("head.weight", vec![1, h]),
            ("head.bias", vec![1]),
            ("log_tau", vec![1]),
        ]
    }
}

/// A LayerNorm's affine parameters.
struct Norm {
    weight: Var,
    bias: Var,
}

impl Norm {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.layer_norm(&self.weight, &self.bias, LN_EPS)?)
    }
}

/// A Linear layer's weight, then its bias.
fn linear_params(l: &Linear) -> Vec<&Var> {
    std::iter::once(&l.weight).chain(l.bias.as_ref()).collect()
}

/// The meta-router. Parameters are trainable leaves on the tape it was built on.
///
/// ```
/// use brainstacks_autograd::{Tape, Var};
/// use brainstacks_model::router::{MetaRouter, MetaRouterConfig};
/// use brainstacks_tensor::{DType, Device, Rng, Tensor};
/// # fn main() -> brainstacks_model::Result<()> {
/// let mut cfg = MetaRouterConfig::new(6, vec!["chat".into(), "code".into()]);
/// cfg.hidden = 8;
/// let router = MetaRouter::new(&Tape::new(), cfg, DType::F32, &mut Rng::new(7))?;
/// let h = Tensor::randn(&mut Rng::new(1), 0.0, 1.0, &[3, 4, 6], DType::F32, &Device::Cpu)?;
/// let mask = Tensor::ones(&[3, 4], DType::F32, &Device::Cpu)?;
/// let p = router.probs(&h, &mask)?; // [3, 2], each in (0, 1)
/// assert_eq!(p.shape(), &[3, 2]);
/// assert_eq!(router.num_params(), MetaRouterConfig::param_count(6, 8, 2));
/// # Ok(()) }
/// ```
pub struct MetaRouter {
    config: MetaRouterConfig,
    in_proj: Linear,
    in_norm: Norm,
    global_query: Var,
    global_norm: Norm,
    domain_queries: Var,
    domain_norm: Norm,
    fuse1: Linear,
    fuse_norm: Norm,
    fuse2: Linear,
    head: Linear,
    log_tau: Var,
}

impl MetaRouter {
    /// A freshly initialised router on `tape`: Linear layers with PyTorch's default
    /// (Kaiming-uniform, bound `1/sqrt(fan_in)` for weight and bias), queries `N(0, 0.02^2)`,
    /// LayerNorms at weight 1 and bias 0, `log_tau = 0`. Draws come from `rng` in a fixed order,
    /// so a seed gives the same router on every run.
    pub fn new(tape: &Tape, config: MetaRouterConfig, dtype: DType, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let (dm, h, d) = (config.d_model, config.hidden, config.num_domains());
        let cpu = Device::Cpu;
        let norm = || -> Result<Norm> {
            Ok(Norm { weight: tape.param(Tensor::ones(&[h], dtype, &cpu)?), bias: tape.param(Tensor::zeros(&[h], dtype, &cpu)?) })
        };
        let in_proj = Linear::new(tape, rng, dm, h, true, dtype)?;
        let in_norm = norm()?;
        let global_query = tape.param(Tensor::randn(rng, 0.0, QUERY_INIT_STD, &[h], dtype, &cpu)?);
        let global_norm = norm()?;
        let domain_queries = tape.param(Tensor::randn(rng, 0.0, QUERY_INIT_STD, &[d, h], dtype, &cpu)?);
        let domain_norm = norm()?;
        let fuse1 = Linear::new(tape, rng, 2 * h, h, true, dtype)?;
        let fuse_norm = norm()?;
        let fuse2 = Linear::new(tape, rng, h, h, true, dtype)?;
        let head = Linear::new(tape, rng, h, 1, true, dtype)?;
        let log_tau = tape.param(Tensor::zeros(&[1], dtype, &cpu)?);
        Ok(Self {
            config,
            in_proj,
            in_norm,
            global_query,
            global_norm,
            domain_queries,
            domain_norm,
            fuse1,
            fuse_norm,
            fuse2,
            head,
            log_tau,
        })
    }

    /// A router made of the given variables, in the order and shapes of
    /// [`MetaRouterConfig::param_shapes`] (what [`MetaRouter::params`] returns). Used to load
    /// a saved router and to gradcheck the network with respect to its parameters.
    pub fn from_params(config: MetaRouterConfig, params: Vec<Var>) -> Result<Self> {
        config.validate()?;
        let shapes = config.param_shapes();
        if params.len() != shapes.len() {
            return Err(Error::Config {
                layer: "MetaRouter::from_params".into(),
                msg: format!("{} parameters given, the router has {}", params.len(), shapes.len()),
            });
        }
        let dtype = params[0].dtype();
        for ((name, shape), p) in shapes.iter().zip(&params) {
            if p.shape() != shape.as_slice() || p.dtype() != dtype {
                return Err(Error::Config {
                    layer: "MetaRouter::from_params".into(),
                    msg: format!("{name} is {:?}/{}, expected {shape:?}/{dtype}", p.shape(), p.dtype()),
                });
            }
        }
        let mut it = params.into_iter();
        // The length was checked above, so every `next` has a value.
        let mut next = || it.next().expect("parameter count checked");
        let linear = |w: Var, b: Var| Linear { weight: w, bias: Some(b) };
        Ok(Self {
            config,
            in_proj: linear(next(), next()),
            in_norm: Norm { weight: next(), bias: next() },
            global_query: next(),
            global_norm: Norm { weight: next(), bias: next() },
            domain_queries: next(),
            domain_norm: Norm { weight: next(), bias: next() },
            fuse1: linear(next(), next()),
            fuse_norm: Norm { weight: next(), bias: next() },
            fuse2: linear(next(), next()),
            head: linear(next(), next()),
            log_tau: next(),
        })
    }

    pub fn config(&self) -> &MetaRouterConfig {
        &self.config
    }

    /// The domain names, in output order.
    pub fn domains(&self) -> &[String] {
        &self.config.domains
    }

    /// The parameters' dtype.
    pub fn dtype(&self) -> DType {
        self.log_tau.dtype()
    }

    /// Every parameter, in the order of [`MetaRouterConfig::param_shapes`].
    pub fn params(&self) -> Vec<&Var> {
        let mut p = linear_params(&self.in_proj);
        p.extend([&self.in_norm.weight, &self.in_norm.bias, &self.global_query, &self.global_norm.weight, &self.global_norm.bias]);
        p.extend([&self.domain_queries, &self.domain_norm.weight, &self.domain_norm.bias]);
        p.extend(linear_params(&self.fuse1));
        p.extend([&self.fuse_norm.weight, &self.fuse_norm.bias]);
        p.extend(linear_params(&self.fuse2));
        p.extend(linear_params(&self.head));
        p.push(&self.log_tau);
        p
    }

    /// Mutable access to every parameter, same order as [`MetaRouter::params`] (for optimizers).
    pub fn params_mut(&mut self) -> Vec<&mut Var> {
        let mut p = self.in_proj.params_mut();
        p.extend([&mut self.in_norm.weight, &mut self.in_norm.bias, &mut self.global_query]);
        p.extend([&mut self.global_norm.weight, &mut self.global_norm.bias, &mut self.domain_queries]);
        p.extend([&mut self.domain_norm.weight, &mut self.domain_norm.bias]);
        p.extend(self.fuse1.params_mut());
        p.extend([&mut self.fuse_norm.weight, &mut self.fuse_norm.bias]);
        p.extend(self.fuse2.params_mut());
        p.extend(self.head.params_mut());
        p.push(&mut self.log_tau);
        p
    }

    /// `(name, parameter)` pairs, in the order of [`MetaRouter::params`] (the names are the keys
    /// of a saved router).
    pub fn named_params(&self) -> Vec<(&'static str, &Var)> {
        self.config.param_shapes().into_iter().map(|(n, _)| n).zip(self.params()).collect()
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.tensor().elem_count()).sum()
    }

    /// The temperature the logits are divided by: `clamp(exp(log_tau), tau_min, tau_max)`.
    pub fn temperature(&self) -> Result<f64> {
        Ok(self.log_tau.tensor().exp()?.clamp(self.config.tau_min, self.config.tau_max)?.to_vec_f64()?[0])
    }

    /// Logits `[B, D]` of `features [B, T, d_model]` with `mask [B, T]` (any numeric dtype;
    /// nonzero = token, 0 = padding). Padded positions are ignored exactly: they get no attention
    /// weight and their features are replaced by zeros before use, so whatever they hold cannot
    /// leak in. Every prompt needs at least one token.
    ///
    /// `dropout`: `Some(rng)` in training (the masks are drawn from `rng`, which advances),
    /// `None` for evaluation.
    pub fn forward(&self, features: &Var, mask: &Tensor, mut dropout: Option<&mut Rng>) -> Result<Var> {
        let pad = self.padding_mask(features, mask)?; // [B, T, 1], 1 = padding
        let (b, t) = (features.shape()[0], features.shape()[1]);
        let (h, d) = (self.config.hidden, self.config.num_domains());
        let features = features.masked_fill(&pad, 0.0)?;

        let x = self.in_norm.forward(&self.in_proj.forward(&features)?)?; // [B, T, H]
        // Global query first, then one per domain: one matmul scores all of them.
        let queries = Var::cat(&[&self.global_query.unsqueeze(0)?, &self.domain_queries], 0usize)?; // [1 + D, H]
        let scores = x.matmul(&queries.t()?)?.transpose(1usize, 2usize)?; // [B, 1 + D, T]
        let pad_row = pad.reshape(&[b, 1, t])?;
        let attn = scores.masked_fill(&pad_row, PAD_SCORE)?.softmax(-1isize)?;
        let pooled = attn.matmul(&x)?; // [B, 1 + D, H]
        let g = self.global_norm.forward(&pooled.narrow(1usize, 0, 1)?)?; // [B, 1, H]
        let c = self.domain_norm.forward(&pooled.narrow(1usize, 1, d)?)?; // [B, D, H]

        let fused_in = Var::cat(&[&c, &g.broadcast_as(&[b, d, h])?], 2usize)?; // [B, D, 2H]
        let u = self.fuse1.forward(&fused_in)?.gelu()?;
        let u = self.dropout(&u, dropout.as_deref_mut())?;
        let u = self.fuse_norm.forward(&u)?;
        let u = self.fuse2.forward(&u)?.gelu()?;
        let u = self.dropout(&u, dropout)?;
        let z = self.head.forward(&u)?.reshape(&[b, d])?;

        let tau = self.log_tau.exp()?.clamp(self.config.tau_min, self.config.tau_max)?;
        Ok(z.div(&tau)?)
    }

    /// Independent per-domain probabilities `sigmoid(logits)` `[B, D]` for evaluation (no
    /// dropout, nothing recorded on the tape).
    pub fn probs(&self, features: &Tensor, mask: &Tensor) -> Result<Tensor> {
        no_grad(|| Ok(self.forward(&Var::constant(features.clone()), mask, None)?.tensor().sigmoid()?))
    }

    /// Logits `[B, D]` for evaluation (no dropout, nothing recorded).
    pub fn logits(&self, features: &Tensor, mask: &Tensor) -> Result<Tensor> {
        no_grad(|| Ok(self.forward(&Var::constant(features.clone()), mask, None)?.tensor().clone()))
    }

    /// Checks the shapes and turns the token mask into a U8 padding mask `[B, T, 1]` on the
    /// features' device.
    fn padding_mask(&self, features: &Var, mask: &Tensor) -> Result<Tensor> {
        let bad = |msg: String| Err(Error::Config { layer: "MetaRouter::forward".into(), msg });
        let fs = features.shape();
        if fs.len() != 3 || fs[2] != self.config.d_model {
            return bad(format!("features have shape {fs:?}; expected [batch, tokens, {}]", self.config.d_model));
        }
        if features.dtype() != self.dtype() {
            return bad(format!("features are {}, the router's parameters {}", features.dtype(), self.dtype()));
        }
        if mask.shape() != &fs[..2] {
            return bad(format!("mask has shape {:?}; the features need [{}, {}]", mask.shape(), fs[0], fs[1]));
        }
        let (b, t) = (fs[0], fs[1]);
        let m = mask.to_vec_f64()?;
        let pad: Vec<u8> = m.iter().map(|&v| u8::from(v == 0.0)).collect();
        for row in 0..b {
            if pad[row * t..(row + 1) * t].iter().all(|&p| p == 1) {
                return bad(format!("prompt {row} of the batch has no token (its mask is all 0)"));
            }
        }
        Ok(Tensor::from_vec(pad, &[b, t, 1], &features.tensor().device())?)
    }

    /// Inverted dropout: zero with probability `p`, scale the rest by `1/(1-p)`. The identity
    /// when evaluating (`rng` is `None`) or when `p` is 0.
    fn dropout(&self, x: &Var, rng: Option<&mut Rng>) -> Result<Var> {
        let p = self.config.dropout;
        let Some(rng) = rng.filter(|_| p > 0.0) else { return Ok(x.clone()) };
        let u = Tensor::rand_uniform(rng, 0.0, 1.0, x.shape(), x.dtype(), &x.tensor().device())?;
        let keep = u.cmp_scalar(p, CmpOp::Ge)?.to_dtype(x.dtype())?.mul_scalar(1.0 / (1.0 - p))?;
        Ok(x.mul(&Var::constant(keep))?)
    }
}
