//! The frozen NF4 linear: `y = x · Wᵀ` with `W` a 4-bit weight that never gets a gradient. Its only
//! backward output is the input gradient `dx = dy · W`, computed by the transposed NF4 product
//! (no dequantized copy of `W`, on the CPU as on the GPU).

use std::sync::Arc;

use brainstacks_tensor::MatmulPrecision;
use brainstacks_tensor::nf4::Nf4Weight;

use crate::{Result, Var, record};

impl Var {
    /// `self · Wᵀ` for a frozen NF4 weight `[out, in]`; `self` is `[..., in]`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use brainstacks_autograd::{Tape, Var};
    /// use brainstacks_tensor::{nf4::Nf4Weight, DType, Device, Rng, Tensor};
    /// # fn main() -> brainstacks_autograd::Result<()> {
    /// let w = Tensor::randn(&mut Rng::new(0), 0.0, 0.1, &[8, 64], DType::F32, &Device::Cpu)?;
    /// let w = Arc::new(Nf4Weight::quantize(&w, 64, false)?);
    /// let tape = Tape::new();
    /// let x = tape.param(Tensor::ones(&[2, 64], DType::F32, &Device::Cpu)?);
    /// let loss = x.nf4_linear(&w)?.sum_all()?;
    /// let grads = tape.backward(&loss)?;
    /// assert_eq!(grads.get(&x).unwrap().shape(), &[2, 64]);
    /// # Ok(()) }
    /// ```
    pub fn nf4_linear(&self, weight: &Arc<Nf4Weight>) -> Result<Var> {
        self.nf4_linear_with(weight, MatmulPrecision::F32)
    }

    /// [`Var::nf4_linear`] with an f32 input multiplied at `precision`, in the forward and in the
    /// input gradient.
    pub fn nf4_linear_with(&self, weight: &Arc<Nf4Weight>, precision: MatmulPrecision) -> Result<Var> {
        let out = weight.linear_with(self.tensor(), precision)?;
        let w = weight.clone();
        record("nf4_linear", &[self], out, move |g, needs| {
            let dx = if needs[0] { Some(w.linear_input_grad_with(g, precision)?) } else { None };
            Ok(vec![dx])
        })
    }
}
