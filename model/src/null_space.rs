//! Null-space projection of a new stack's output delta (method spec section 4).
//!
//! `V` (d x k, orthonormal columns) spans the directions claimed by frozen stacks; the projector is
//! `P = V Vᵀ` and a training-time delta becomes `δ - δ V Vᵀ`, applied per token on the last dim.
//! `P` is never formed: two thin matmuls cost O(T d k) instead of O(T d²).
//!
//! - [`NullSpace::from_samples`]: V from the rows of D (n x d) as in spec 4.2: randomized SVD
//!   (oversampling 0, 2 power iterations) when n > 2k, else the exact thin SVD; both from
//!   `brainstacks_kernels::rsvd::cpu`, in f64.
//! - [`NullSpace::union`]: several domains' bases stacked, re-orthonormalised by Gram-Schmidt run
//!   twice per column, in order (domain, then column). A column whose residual norm after removing
//!   the accepted span is below `dup_tol` is dropped ([`DEFAULT_DUP_TOL`] = 1e-3: its direction is
//!   within ~0.06 degrees of the span already kept, and normalising it would amplify noise by >1e3).
//! - [`NullSpace::leakage`]: ||δ V||_F / ||δ||_F in f64 (0 for a zero delta).
//! - Files: one safetensors tensor, key [`V_KEY`] = `"null_space.v"`, shape [d, k], in V's dtype;
//!   metadata `format = "brainstacks-null-space"`.

use std::collections::BTreeMap;
use std::path::Path;

use brainstacks_autograd::Var;
use brainstacks_kernels::rsvd::cpu::{rsvd, svd_exact};
use brainstacks_tensor::io::{SafeTensors, TensorToWrite, write_safetensors};
use brainstacks_tensor::{DType, Device, Tensor};

use crate::{Error, Result};

/// The safetensors key of V.
pub const V_KEY: &str = "null_space.v";
/// Default residual norm below which [`NullSpace::union`] drops a direction as a duplicate.
pub const DEFAULT_DUP_TOL: f64 = 1e-3;
const FORMAT: &str = "brainstacks-null-space";

/// An orthonormal basis V (d x k) of the directions a delta must avoid.
#[derive(Clone, Debug)]
pub struct NullSpace {
    v: Tensor,
}

fn config(msg: impl Into<String>) -> Error {
    Error::Config { layer: "null_space".into(), msg: msg.into() }
}

impl NullSpace {
    /// Wraps a basis V of shape [d, k]; its columns must already be orthonormal (not checked).
    pub fn from_basis(v: Tensor) -> Result<Self> {
        if v.rank() != 2 {
            return Err(config(format!("V must be [d, k], got {:?}", v.shape())));
        }
        Ok(Self { v })
    }

    /// V = the top-k right singular vectors of D (n x d, row-major f64), stored as `dtype`.
    /// Randomized (p = 0, q = 2, Philox `seed`) when n > 2k, exact otherwise; k is clamped to
    /// min(n, d).
    pub fn from_samples(d_rows: &[f64], n: usize, d: usize, k: usize, seed: u64, dtype: DType) -> Result<Self> {
        if d_rows.len() != n * d {
            return Err(config(format!("D has {} values, expected {n} x {d}", d_rows.len())));
        }
        let svd = if n > 2 * k { rsvd(d_rows, n, d, k, 0, 2, seed) } else { svd_exact(d_rows, n, d) };
        let r = svd.s.len();
        let k = k.min(r);
        let v: Vec<f64> = (0..d).flat_map(|i| svd.v[i * r..i * r + k].iter().copied()).collect();
        Self::from_basis(Tensor::from_vec(v, &[d, k], &Device::Cpu)?.to_dtype(dtype)?)
    }

    /// The union of several bases (all with the same d), re-orthonormalised, near-duplicate
    /// directions (residual norm < `dup_tol`) dropped. The result has V's dtype of `parts[0]`.
    pub fn union(parts: &[&NullSpace], dup_tol: f64) -> Result<Self> {
        let first = parts.first().ok_or_else(|| config("union of no bases"))?;
        let d = first.dim();
        let mut kept: Vec<Vec<f64>> = Vec::new();
        for part in parts {
            if part.dim() != d {
                return Err(config(format!("union of bases with d = {d} and d = {}", part.dim())));
            }
            let k = part.rank();
            let v = part.v.to_vec_f64()?;
            for j in 0..k {
                let mut c: Vec<f64> = (0..d).map(|i| v[i * k + j]).collect();
                let norm0 = c.iter().map(|x| x * x).sum::<f64>().sqrt();
                if norm0 == 0.0 {
                    continue;
                }
                c.iter_mut().for_each(|x| *x /= norm0);
                // Two passes of modified Gram-Schmidt: the second removes what rounding left.
                for _ in 0..2 {
                    for q in &kept {
                        let dot: f64 = q.iter().zip(&c).map(|(a, b)| a * b).sum();
                        c.iter_mut().zip(q).for_each(|(x, y)| *x -= dot * y);
                    }
                }
                let res = c.iter().map(|x| x * x).sum::<f64>().sqrt();
                if res >= dup_tol {
                    c.iter_mut().for_each(|x| *x /= res);
                    kept.push(c);
                }
            }
        }
        let k = kept.len();
        let flat: Vec<f64> = (0..d).flat_map(|i| kept.iter().map(move |c| c[i])).collect();
        Self::from_basis(Tensor::from_vec(flat, &[d, k], &Device::Cpu)?.to_dtype(first.v.dtype())?)
    }

    /// The same projector with its basis on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        Ok(Self { v: self.v.to_device(device)? })
    }

    /// The basis V, [d, k].
    pub fn basis(&self) -> &Tensor {
        &self.v
    }
    /// d: the delta's last dimension.
    pub fn dim(&self) -> usize {
        self.v.shape()[0]
    }
    /// k: the number of directions removed.
    pub fn rank(&self) -> usize {
        self.v.shape()[1]
    }

    /// δ - (δ V) Vᵀ over the last dim of `delta` ([..., d]); differentiable in `delta` (V is a
    /// constant), so the gradient reaching δ is projected the same way.
    pub fn apply(&self, delta: &Var) -> Result<Var> {
        let shape = delta.shape().to_vec();
        let d = self.dim();
        if shape.last() != Some(&d) {
            return Err(config(format!("delta {shape:?} does not end in d = {d}")));
        }
        let rows = shape[..shape.len() - 1].iter().product::<usize>();
        let flat = delta.contiguous()?.reshape(&[rows, d])?;
        let v = Var::constant(self.v.to_dtype(delta.dtype())?);
        let proj = flat.matmul(&v)?.matmul(&v.t()?)?;
        Ok(flat.sub(&proj)?.reshape(&shape)?)
    }

    /// ||δ V||_F / ||δ||_F for `delta` [..., d], in f64; 0 when δ is zero.
    pub fn leakage(&self, delta: &Tensor) -> Result<f64> {
        let (d, k) = (self.dim(), self.rank());
        let x = delta.to_vec_f64()?;
        if x.len() % d.max(1) != 0 || delta.shape().last() != Some(&d) {
            return Err(config(format!("delta {:?} does not end in d = {d}", delta.shape())));
        }
        let v = self.v.to_vec_f64()?;
        let total: f64 = x.iter().map(|a| a * a).sum();
        if total == 0.0 {
            return Ok(0.0);
        }
        let mut inside = 0.0;
        for row in x.chunks(d) {
            for j in 0..k {
                let dot: f64 = (0..d).map(|i| row[i] * v[i * k + j]).sum();
                inside += dot * dot;
            }
        }
        Ok((inside / total).sqrt())
    }

    /// Writes V to `path` under [`V_KEY`].
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = BTreeMap::from([("format".to_string(), FORMAT.to_string())]);
        write_safetensors(path, &[TensorToWrite::from_tensor(V_KEY, &self.v)?], &meta)?;
        Ok(())
    }

    /// Reads V written by [`NullSpace::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let st = SafeTensors::open(path)?;
        let v = st.tensor(V_KEY)?;
        if v.rank() != 2 {
            return Err(Error::Checkpoint { path: path.into(), msg: format!("{V_KEY} is {:?}, not [d, k]", v.shape()) });
        }
        Ok(Self { v })
    }
}
