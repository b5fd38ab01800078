//! The frozen base projections of the decoder and the point where adapters attach.
//!
//! Every linear layer inside a decoder layer is a [`Projection`]: a frozen [`BaseLinear`]
//! (a dense weight or an NF4 one, never trained) plus an optional [`ProjectionAdapter`] whose
//! output is added to the base output. LoRA is `x -> (x A^T) B^T * scale`; an MoE-LoRA stack is
//! a routed sum of such deltas; both only need `x`, so the trait is that one function. The
//! adapter's own parameters live on whatever `Tape` it was built with, so gradients reach them
//! through the frozen base (its input gradient is always computed when needed).

use std::fmt;
use std::sync::Arc;

use brainstacks_autograd::Var;
use brainstacks_tensor::nf4::Nf4Weight;
use brainstacks_tensor::{DType, MatmulPrecision, Tensor};

use crate::Result;

/// A frozen weight `[out, in]` applied as `y = x · Wᵀ`.
#[derive(Clone, Debug)]
pub enum BaseLinear {
    /// A dense weight in the model's compute dtype.
    Dense(Tensor),
    /// A 4-bit weight (pre-quantized in the checkpoint, or quantized at load).
    Nf4(Arc<Nf4Weight>),
    /// A dense weight that is a leaf of a tape: only while the base itself is being trained
    /// (pretraining a toy model, see [`LlamaModel::unfreeze`](super::LlamaModel::unfreeze)).
    Trainable(Var),
}

impl BaseLinear {
    /// `[out_features, in_features]`.
    pub fn shape(&self) -> [usize; 2] {
        match self {
            BaseLinear::Dense(w) => [w.shape()[0], w.shape()[1]],
            BaseLinear::Nf4(w) => w.shape(),
            BaseLinear::Trainable(w) => [w.shape()[0], w.shape()[1]],
        }
    }

    pub fn is_nf4(&self) -> bool {
        matches!(self, BaseLinear::Nf4(_))
    }

    /// `x [..., in] -> [..., out]`. The weight is a constant (only `x` can get a gradient) unless
    /// it is `Trainable`.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        self.forward_with(x, MatmulPrecision::F32)
    }

    /// [`BaseLinear::forward`] with f32 products at `precision` (forward and backward).
    pub fn forward_with(&self, x: &Var, precision: MatmulPrecision) -> Result<Var> {
        Ok(match self {
            // The transpose is a strided view: no copy of the weight.
            BaseLinear::Dense(w) => x.matmul_with(&Var::constant(w.t()?), precision)?,
            BaseLinear::Nf4(w) => x.nf4_linear_with(w, precision)?,
            BaseLinear::Trainable(w) => x.matmul_with(&w.t()?, precision)?,
        })
    }

    /// The weight as a dense `[out, in]` tensor in `dtype` (dequantized for NF4).
    pub fn to_dense(&self, dtype: DType) -> Result<Tensor> {
        Ok(match self {
            BaseLinear::Dense(w) => w.to_dtype(dtype)?,
            BaseLinear::Nf4(w) => w.dequantize()?.to_dtype(dtype)?,
            BaseLinear::Trainable(w) => w.tensor().to_dtype(dtype)?,
        })
    }
}

/// The seven projections of a decoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Gate, Proj::Up, Proj::Down];

    /// The module path inside a layer, as in Hugging Face weight names (`self_attn.q_proj`).
    pub fn module(self) -> &'static str {
        match self {
            Proj::Q => "self_attn.q_proj",
            Proj::K => "self_attn.k_proj",
            Proj::V => "self_attn.v_proj",
            Proj::O => "self_attn.o_proj",
            Proj::Gate => "mlp.gate_proj",
            Proj::Up => "mlp.up_proj",
            Proj::Down => "mlp.down_proj",
        }
    }

    /// The short name PEFT's `target_modules` uses (`q_proj`, ..., `down_proj`).
    pub fn short_name(self) -> &'static str {
        self.module().rsplit('.').next().expect("a dotted path")
    }

    /// `(out_features, in_features)` of this projection in a model with `config`.
    pub fn shape(self, config: &super::config::LlamaConfig) -> (usize, usize) {
        let c = config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let (qd, kvd) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        match self {
            Proj::Q => (qd, h),
            Proj::K | Proj::V => (kvd, h),
            Proj::O => (h, qd),
            Proj::Gate | Proj::Up => (i, h),
            Proj::Down => (h, i),
        }
    }

    /// The weight's checkpoint name in layer `layer`.
    pub fn weight_name(self, layer: usize) -> String {
        format!("model.layers.{layer}.{}.weight", self.module())
    }
}

impl fmt::Display for Proj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A trainable delta added to a frozen projection's output: `y = base(x) + adapter.forward(x)`.
///
/// `forward` gets the projection's input `[..., in]` and returns `[..., out]` in the same dtype.
/// Implementations keep their parameters as `Var`s on a tape; the model never inspects them.
pub trait ProjectionAdapter: Send + Sync {
    fn forward(&self, x: &Var) -> Result<Var>;

    /// The delta to add, or `None` when the adapter currently contributes nothing (so the
    /// projection skips the add and its output is the base output, bit for bit). The default
    /// always has a delta.
    fn delta(&self, x: &Var) -> Result<Option<Var>> {
        self.forward(x).map(Some)
    }
}

/// A frozen base linear with an optional adapter.
pub struct Projection {
    pub base: BaseLinear,
    pub adapter: Option<Box<dyn ProjectionAdapter>>,
}

impl Projection {
    pub fn new(base: BaseLinear) -> Self {
        Self { base, adapter: None }
    }

    /// `base(x)`, plus the adapter's delta when one is attached.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        self.forward_with(x, MatmulPrecision::F32)
    }

    /// [`Projection::forward`] with the base product at `precision` (the adapter computes as it
    /// always does).
    pub fn forward_with(&self, x: &Var, precision: MatmulPrecision) -> Result<Var> {
        let y = self.base.forward_with(x, precision)?;
        match self.adapter.as_ref().map(|a| a.delta(x)).transpose()?.flatten() {
            Some(delta) => Ok(y.add(&delta)?),
            None => Ok(y),
        }
    }
}

impl fmt::Debug for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projection").field("base", &self.base).field("adapter", &self.adapter.is_some()).finish()
    }
}
