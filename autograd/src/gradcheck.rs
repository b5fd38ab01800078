//! Gradient checking: every backward rule against central differences in f64.
//!
//! The function under test maps input variables to an output of any shape. It is projected to
//! a scalar with fixed pseudo-random weights `r` (Philox, so failures reproduce): `L = sum(f(x) * r)`.
//! The analytic gradient of `L` comes from the tape; the numerical one from
//! `(L(x + eps e_j) - L(x - eps e_j)) / (2 eps)` for every element `j` of every input. A random
//! projection catches errors that a plain sum would cancel.

use brainstacks_tensor::{DType, Device, Rng, Tensor};

use crate::{Error, Result, Tape, Var, no_grad};

#[derive(Clone, Copy, Debug)]
pub struct GradcheckOptions {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        // eps 1e-6 balances truncation (O(eps^2)) and cancellation (O(1e-16/eps)) error in f64.
        Self { eps: 1e-6, atol: 1e-6, rtol: 1e-4, seed: 0x6752_6164 }
    }
}

/// Checks `f`'s gradients with respect to all `inputs` (which must be f64). Returns an error
/// naming the input, the element, and both values at the first mismatch.
pub fn gradcheck(f: impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor], opts: GradcheckOptions) -> Result<()> {
    for (i, t) in inputs.iter().enumerate() {
        if t.dtype() != DType::F64 {
            return Err(Error::Invalid { op: "gradcheck".into(), msg: format!("input {i} is {}, gradcheck needs f64", t.dtype()) });
        }
    }
    let tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.param(t.clone())).collect();
    let out = f(&vars)?;
    let weights = Tensor::randn(&mut Rng::new(opts.seed), 0.0, 1.0, out.shape(), DType::F64, &Device::Cpu)?;
    let loss = out.mul(&Var::constant(weights.clone()))?.sum_all()?;
    let grads = tape.backward(&loss)?;

    let scalar_loss = |xs: &[Tensor]| -> Result<f64> {
        no_grad(|| {
            let vs: Vec<Var> = xs.iter().map(|t| Var::constant(t.clone())).collect();
            Ok(f(&vs)?.tensor().mul(&weights)?.sum_all()?.to_scalar_f64()?)
        })
    };

    for (i, input) in inputs.iter().enumerate() {
        let analytic = match grads.get(&vars[i]) {
            Some(g) => g.to_vec_f64()?,
            None => vec![0.0; input.elem_count()], // no path from this input to the output
        };
        let base = input.to_vec_f64()?;
        for j in 0..base.len() {
            let perturbed = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let mut xs = inputs.to_vec();
                xs[i] = Tensor::from_vec(v, input.shape(), &Device::Cpu)?;
                scalar_loss(&xs)
            };
            let numeric = (perturbed(opts.eps)? - perturbed(-opts.eps)?) / (2.0 * opts.eps);
            let a = analytic[j];
            // Written as "pass, else fail" so that a NaN on either side fails the check.
            if (a - numeric).abs() <= opts.atol + opts.rtol * numeric.abs() {
                continue;
            }
            return Err(Error::Invalid {
                op: "gradcheck".into(),
                msg: format!(
                    "input {i} (shape {:?}) element {j}: analytic {a:.10e}, numeric {numeric:.10e}",
                    input.shape()
                ),
            });
        }
    }
    Ok(())
}
