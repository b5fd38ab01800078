//! Batching prompts of different lengths for the router: features are padded with zeros to the
//! longest prompt and a mask marks the real tokens.

use brainstacks_tensor::{DType, Device, Tensor};

use crate::{Error, Result};

fn batch_err(msg: String) -> Error {
    Error::Config { layer: "router::pad_features".into(), msg }
}

/// Stacks per-prompt features `[T_i, d_model]` into `features [B, T_max, d_model]` (f32, zeros
/// after each prompt's end) and `mask [B, T_max]` (f32, 1 for a token, 0 for padding), on the CPU.
///
/// Every prompt must have at least one token and the same `d_model`.
///
/// ```
/// use brainstacks_model::router::pad_features;
/// use brainstacks_tensor::{Device, Tensor};
/// let a = Tensor::from_vec(vec![1f32, 2., 3., 4.], &[2, 2], &Device::Cpu).unwrap();
/// let b = Tensor::from_vec(vec![5f32, 6.], &[1, 2], &Device::Cpu).unwrap();
/// let (x, m) = pad_features(&[&a, &b]).unwrap();
/// assert_eq!(x.shape(), &[2, 2, 2]);
/// assert_eq!(x.to_vec::<f32>().unwrap(), vec![1., 2., 3., 4., 5., 6., 0., 0.]);
/// assert_eq!(m.to_vec::<f32>().unwrap(), vec![1., 1., 1., 0.]);
/// ```
pub fn pad_features(prompts: &[&Tensor]) -> Result<(Tensor, Tensor)> {
    let first = prompts.first().ok_or_else(|| batch_err("no prompts to batch".into()))?;
    if first.rank() != 2 {
        return Err(batch_err(format!("prompt 0 has shape {:?}; features must be [tokens, d_model]", first.shape())));
    }
    let d_model = first.shape()[1];
    let mut t_max = 0;
    for (i, p) in prompts.iter().enumerate() {
        if p.rank() != 2 || p.shape()[1] != d_model {
            return Err(batch_err(format!("prompt {i} has shape {:?}; expected [tokens, {d_model}]", p.shape())));
        }
        if p.shape()[0] == 0 {
            return Err(batch_err(format!("prompt {i} has no tokens")));
        }
        t_max = t_max.max(p.shape()[0]);
    }
    let b = prompts.len();
    let mut x = vec![0f32; b * t_max * d_model];
    let mut m = vec![0f32; b * t_max];
    for (i, p) in prompts.iter().enumerate() {
        let t = p.shape()[0];
        let values = p.to_dtype(DType::F32)?.to_vec::<f32>()?;
        let start = i * t_max * d_model;
        x[start..start + t * d_model].copy_from_slice(&values);
        m[i * t_max..i * t_max + t].fill(1.0);
    }
    Ok((Tensor::from_vec(x, &[b, t_max, d_model], &Device::Cpu)?, Tensor::from_vec(m, &[b, t_max], &Device::Cpu)?))
}
