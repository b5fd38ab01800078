//! Reductions. A sum's gradient is the incoming one broadcast back over the reduced dims; a
//! max's goes to the position the forward picked (the first maximum, as `argmax`).

use brainstacks_tensor::{Dim, Tensor};

use crate::{Result, Var, record};

/// The input shape with every reduced dim set to 1 (the keepdim shape).
fn kept_shape(shape: &[usize], dims: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().map(|(i, &d)| if dims.contains(&i) { 1 } else { d }).collect()
}

fn resolve_dims<D: Dim>(op: &'static str, dims: &[D], shape: &[usize]) -> Result<Vec<usize>> {
    if dims.is_empty() {
        return Ok((0..shape.len()).collect());
    }
    Ok(dims.iter().map(|d| d.resolve(op, shape)).collect::<brainstacks_tensor::Result<Vec<_>>>()?)
}

impl Var {
    /// Sum over `dims` (all dims when empty).
    pub fn sum<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Var> {
        let out = self.tensor().sum(dims, keepdim)?;
        let shape = self.shape().to_vec();
        let kept = kept_shape(&shape, &resolve_dims("sum", dims, &shape)?);
        record("sum", &[self], out, move |g, _| Ok(vec![Some(g.reshape(&kept)?.broadcast_as(&shape)?)]))
    }

    /// Mean over `dims` (all dims when empty).
    pub fn mean<D: Dim>(&self, dims: &[D], keepdim: bool) -> Result<Var> {
        let out = self.tensor().mean(dims, keepdim)?;
        let shape = self.shape().to_vec();
        let reduced = resolve_dims("mean", dims, &shape)?;
        let count: usize = reduced.iter().map(|&d| shape[d]).product();
        let kept = kept_shape(&shape, &reduced);
        record("mean", &[self], out, move |g, _| {
            Ok(vec![Some(g.mul_scalar(1.0 / count.max(1) as f64)?.reshape(&kept)?.broadcast_as(&shape)?)])
        })
    }

    /// Sum of every element, as a rank-0 variable.
    pub fn sum_all(&self) -> Result<Var> {
        self.sum::<usize>(&[], false)
    }

    /// Mean of every element, as a rank-0 variable.
    pub fn mean_all(&self) -> Result<Var> {
        self.mean::<usize>(&[], false)
    }

    /// Maximum along `dim`; the gradient goes to the first position holding it (as `argmax`).
    pub fn max<D: Dim>(&self, dim: D, keepdim: bool) -> Result<Var> {
        self.extremum_along(dim, keepdim, true)
    }

    /// Minimum along `dim`; the gradient goes to the first position holding it (as `argmin`).
    pub fn min<D: Dim>(&self, dim: D, keepdim: bool) -> Result<Var> {
        self.extremum_along(dim, keepdim, false)
    }

    fn extremum_along<D: Dim>(&self, dim: D, keepdim: bool, max: bool) -> Result<Var> {
        let x = self.tensor().clone();
        let name = if max { "max" } else { "min" };
        let d = dim.resolve(name, x.shape())?;
        let out = if max { x.max(d, keepdim)? } else { x.min(d, keepdim)? };
        let pos = if max { x.argmax(d, true)? } else { x.argmin(d, true)? };
        let kept = kept_shape(x.shape(), &[d]);
        record(name, &[self], out, move |g, _| {
            let zeros = Tensor::zeros(x.shape(), g.dtype(), &x.device())?;
            Ok(vec![Some(zeros.scatter_add(d, &pos, &g.reshape(&kept)?)?)])
        })
    }
}
