//! User-defined ops with their own backward rule.

use std::sync::Arc;

use brainstacks_tensor::Tensor;

use crate::var::{Var, record};
use crate::Result;

/// An op the engine does not know, with a forward and a backward the user writes.
///
/// ```
/// use brainstacks_autograd::{CustomOp, Tape, Var, apply_custom, Result};
/// use brainstacks_tensor::{Device, Tensor};
///
/// /// y = x^3, dy/dx = 3x^2.
/// struct Cube;
/// impl CustomOp for Cube {
///     fn name(&self) -> &str { "cube" }
///     fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
///         Ok(inputs[0].mul(&inputs[0].square()?)?)
///     }
///     fn backward(&self, inputs: &[&Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
///         Ok(vec![Some(grad.mul(&inputs[0].square()?.mul_scalar(3.0)?)?)])
///     }
/// }
///
/// # fn main() -> Result<()> {
/// let tape = Tape::new();
/// let x = tape.param(Tensor::from_vec(vec![2.0f64], &[1], &Device::Cpu)?);
/// let y = apply_custom(std::sync::Arc::new(Cube), &[&x])?.sum_all()?;
/// let g = tape.backward(&y)?;
/// assert_eq!(g.get(&x).unwrap().to_vec::<f64>()?, vec![12.0]);
/// # Ok(()) }
/// ```
pub trait CustomOp: Send + Sync {
    fn name(&self) -> &str;
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor>;
    /// One optional gradient per input (same shape and dtype as that input).
    fn backward(&self, inputs: &[&Tensor], output: &Tensor, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

/// Runs `op` forward and records it so `backward` calls the op's own rule.
pub fn apply_custom(op: Arc<dyn CustomOp>, inputs: &[&Var]) -> Result<Var> {
    let tensors: Vec<Tensor> = inputs.iter().map(|v| v.tensor().clone()).collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let out = op.forward(&refs)?;
    let saved_out = out.clone();
    let name = format!("custom:{}", op.name());
    record(name, inputs, out, move |g, _needs| {
        let refs: Vec<&Tensor> = tensors.iter().collect();
        op.backward(&refs, &saved_out, g)
    })
}
