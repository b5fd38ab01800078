//! Views, joins and dtype casts. Gradients of views are views or cheap copies of the incoming
//! gradient; nothing here touches element values.

use brainstacks_tensor::{DType, Dim, Tensor};

use crate::{Result, Var, record};

impl Var {
    /// Same elements, new shape; the gradient is reshaped back.
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        let out = self.tensor().reshape(shape)?;
        let in_shape = self.shape().to_vec();
        record("reshape", &[self], out, move |g, _| Ok(vec![Some(g.reshape(&in_shape)?)]))
    }

    /// Swaps dims `d0` and `d1` (a view); the gradient is transposed back.
    pub fn transpose<D0: Dim, D1: Dim>(&self, d0: D0, d1: D1) -> Result<Var> {
        let a = d0.resolve("transpose", self.shape())?;
        let b = d1.resolve("transpose", self.shape())?;
        let out = self.tensor().transpose(a, b)?;
        record("transpose", &[self], out, move |g, _| Ok(vec![Some(g.transpose(a, b)?)]))
    }

    /// Swaps the last two dims.
    pub fn t(&self) -> Result<Var> {
        let out = self.tensor().t()?;
        record("t", &[self], out, |g, _| Ok(vec![Some(g.t()?)]))
    }

    /// Reorders the dims (a view); the gradient is permuted by the inverse permutation.
    pub fn permute(&self, dims: &[usize]) -> Result<Var> {
        let out = self.tensor().permute(dims)?;
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        record("permute", &[self], out, move |g, _| Ok(vec![Some(g.permute(&inverse)?)]))
    }

    /// The gradient is the incoming one placed at `start` in zeros along `dim`.
    pub fn narrow<D: Dim>(&self, dim: D, start: usize, len: usize) -> Result<Var> {
        let d = dim.resolve("narrow", self.shape())?;
        let out = self.tensor().narrow(d, start, len)?;
        let shape = self.shape().to_vec();
        record("narrow", &[self], out, move |g, _| {
            let mut before = shape.clone();
            before[d] = start;
            let mut after = shape.clone();
            after[d] = shape[d] - start - len;
            let zb = Tensor::zeros(&before, g.dtype(), &g.device())?;
            let za = Tensor::zeros(&after, g.dtype(), &g.device())?;
            Ok(vec![Some(Tensor::cat(&[&zb, g, &za], d)?)])
        })
    }

    /// Inserts a dim of size 1 at `dim` (negative counts from the back of the new rank).
    pub fn unsqueeze(&self, dim: isize) -> Result<Var> {
        let out = self.tensor().unsqueeze(dim)?;
        let in_shape = self.shape().to_vec();
        record("unsqueeze", &[self], out, move |g, _| Ok(vec![Some(g.reshape(&in_shape)?)]))
    }

    /// Removes the size-1 dim `dim`.
    pub fn squeeze<D: Dim>(&self, dim: D) -> Result<Var> {
        let out = self.tensor().squeeze(dim)?;
        let in_shape = self.shape().to_vec();
        record("squeeze", &[self], out, move |g, _| Ok(vec![Some(g.reshape(&in_shape)?)]))
    }

    /// A stride-0 view repeating this variable up to `shape`; the gradient is summed back.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Var> {
        let out = self.tensor().broadcast_as(shape)?;
        let in_shape = self.shape().to_vec();
        record("broadcast_as", &[self], out, move |g, _| Ok(vec![Some(g.sum_to_shape(&in_shape)?)]))
    }

    /// A dense copy (or `self` when already dense); the gradient passes through.
    pub fn contiguous(&self) -> Result<Var> {
        let out = self.tensor().contiguous()?;
        record("contiguous", &[self], out, |g, _| Ok(vec![Some(g.clone())]))
    }

    /// Casts; the gradient is cast back to the input's dtype.
    pub fn to_dtype(&self, dtype: DType) -> Result<Var> {
        let out = self.tensor().to_dtype(dtype)?;
        let in_dtype = self.dtype();
        record("to_dtype", &[self], out, move |g, _| Ok(vec![Some(g.to_dtype(in_dtype)?)]))
    }

    /// Joins along `dim`; each input's gradient is its slice of the incoming one.
    pub fn cat<D: Dim>(vars: &[&Var], dim: D) -> Result<Var> {
        let tensors: Vec<&Tensor> = vars.iter().map(|v| v.tensor()).collect();
        let out = Tensor::cat(&tensors, dim)?;
        let d = dim.resolve("cat", out.shape())?;
        let sizes: Vec<usize> = vars.iter().map(|v| v.shape()[d]).collect();
        record("cat", vars, out, move |g, _| Ok(g.split(&sizes, d)?.into_iter().map(Some).collect()))
    }

    /// Stacks along a new dim `dim`.
    pub fn stack(vars: &[&Var], dim: isize) -> Result<Var> {
        let unsqueezed = vars.iter().map(|v| v.unsqueeze(dim)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Var> = unsqueezed.iter().collect();
        let rank = unsqueezed.first().map_or(1, |v| v.rank()) as isize;
        let d = if dim < 0 { dim + rank } else { dim };
        Var::cat(&refs, d.max(0) as usize)
    }

    /// Splits into views along `dim` with the given sizes (each a differentiable `narrow`).
    pub fn split<D: Dim>(&self, sizes: &[usize], dim: D) -> Result<Vec<Var>> {
        let d = dim.resolve("split", self.shape())?;
        let total: usize = sizes.iter().sum();
        if total != self.shape()[d] {
            // Let the tensor op produce the canonical error message.
            self.tensor().split(sizes, d)?;
        }
        let mut start = 0;
        let mut parts = Vec::with_capacity(sizes.len());
        for &s in sizes {
            parts.push(self.narrow(d, start, s)?);
            start += s;
        }
        Ok(parts)
    }
}
