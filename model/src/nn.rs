//! Dense layers: `Linear` (y = x W^T + b, W stored [out, in] as Hugging Face does) and a
//! two-layer `Mlp`.

use brainstacks_autograd::{Tape, Var};
use brainstacks_tensor::{DType, Device, Rng, Tensor};

use crate::{Error, Result};

/// `y = x W^T + b` with `W: [out, in]`. The transpose is a view, never a copy.
pub struct Linear {
    pub weight: Var,
    pub bias: Option<Var>,
}

impl Linear {
    /// Kaiming-uniform weights (bound `1/sqrt(in)`, PyTorch's `nn.Linear` default) and bias
    /// from the same bound, drawn from `rng`, registered as trainable leaves on `tape`.
    pub fn new(tape: &Tape, rng: &mut Rng, in_features: usize, out_features: usize, bias: bool, dtype: DType) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::Config {
                layer: "Linear".into(),
                msg: format!("in_features {in_features} and out_features {out_features} must be positive"),
            });
        }
        let bound = 1.0 / (in_features as f64).sqrt();
        let w = Tensor::rand_uniform(rng, -bound, bound, &[out_features, in_features], dtype, &Device::Cpu)?;
        let b = if bias {
            Some(tape.param(Tensor::rand_uniform(rng, -bound, bound, &[out_features], dtype, &Device::Cpu)?))
        } else {
            None
        };
        Ok(Self { weight: tape.param(w), bias: b })
    }

    /// `x [..., in] -> [..., out]`.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        let y = x.matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }

    pub fn params_mut(&mut self) -> Vec<&mut Var> {
        let mut p = vec![&mut self.weight];
        if let Some(b) = &mut self.bias {
            p.push(b);
        }
        p
    }
}

/// `Linear -> tanh -> Linear`.
pub struct Mlp {
    pub hidden: Linear,
    pub out: Linear,
}

impl Mlp {
    pub fn new(tape: &Tape, rng: &mut Rng, inputs: usize, hidden: usize, outputs: usize) -> Result<Self> {
        Ok(Self {
            hidden: Linear::new(tape, rng, inputs, hidden, true, DType::F32)?,
            out: Linear::new(tape, rng, hidden, outputs, true, DType::F32)?,
        })
    }

    pub fn forward(&self, x: &Var) -> Result<Var> {
        self.out.forward(&self.hidden.forward(x)?.tanh()?)
    }

    pub fn params_mut(&mut self) -> Vec<&mut Var> {
        let mut p = self.hidden.params_mut();
        p.extend(self.out.params_mut());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_explicit_product() -> Result<()> {
        let tape = Tape::new();
        let lin = Linear::new(&tape, &mut Rng::new(1), 3, 2, true, DType::F32)?;
        let x = Tensor::from_vec(vec![1f32, 2., 3.], &[1, 3], &Device::Cpu)?;
        let y = lin.forward(&Var::constant(x))?.tensor().to_vec::<f32>()?;
        let w = lin.weight.tensor().to_vec::<f32>()?;
        let b = lin.bias.as_ref().unwrap().tensor().to_vec::<f32>()?;
        for o in 0..2 {
            let expect = w[o * 3] + 2.0 * w[o * 3 + 1] + 3.0 * w[o * 3 + 2] + b[o];
            assert!((y[o] - expect).abs() < 1e-6);
        }
        Ok(())
    }

    #[test]
    fn zero_width_is_an_error() {
        let err = Linear::new(&Tape::new(), &mut Rng::new(1), 0, 2, true, DType::F32).err().unwrap();
        assert!(err.to_string().contains("Linear"));
    }
}
