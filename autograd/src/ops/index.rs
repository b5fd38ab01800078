//! Indexed reads and writes: embedding lookup, `index_select`, `gather`, `scatter_add`,
//! `index_add`.
//!
//! A read at given positions has, as its backward, an add into zeros at the same positions (so a
//! row read twice gets both gradients); an indexed add has, as its backward, a read. Index
//! tensors are constants: they carry no gradient.

use brainstacks_tensor::{Dim, Tensor};

use crate::{Result, Var, record};

/// `t` placed at the start of a zero tensor of `shape` (each dim of `t` at most the one of
/// `shape`): the gradient of a `src` whose trailing part an `index` smaller than it never read.
fn zero_pad_to(t: Tensor, shape: &[usize]) -> Result<Tensor> {
    let mut t = t;
    for (d, &want) in shape.iter().enumerate() {
        let have = t.shape()[d];
        if have < want {
            let mut pad_shape = t.shape().to_vec();
            pad_shape[d] = want - have;
            let zeros = Tensor::zeros(&pad_shape, t.dtype(), &t.device())?;
            t = Tensor::cat(&[&t, &zeros], d)?;
        }
    }
    Ok(t)
}

impl Var {
    /// Rows of the table `self [V, D]` at `ids` (any shape), giving `[ids.shape.., D]`.
    /// Backward: the gradient rows are added into a zero `[V, D]` at the (flattened) ids.
    pub fn embedding(&self, ids: &Tensor) -> Result<Var> {
        let out = self.tensor().embedding(ids)?;
        let table_shape = self.shape().to_vec();
        let flat_ids = ids.flatten_all()?;
        record("embedding", &[self], out, move |g, _| {
            let rows = g.reshape(&[flat_ids.elem_count(), table_shape[1]])?;
            let zeros = Tensor::zeros(&table_shape, g.dtype(), &g.device())?;
            Ok(vec![Some(zeros.index_add(0, &flat_ids, &rows)?)])
        })
    }

    /// The entries at positions `ids` (1-d) along `dim`. Backward: `index_add` of the gradient
    /// into zeros along `dim`.
    pub fn index_select<D: Dim>(&self, dim: D, ids: &Tensor) -> Result<Var> {
        let d = dim.resolve("index_select", self.shape())?;
        let out = self.tensor().index_select(d, ids)?;
        let shape = self.shape().to_vec();
        let ids = ids.clone();
        record("index_select", &[self], out, move |g, _| {
            let zeros = Tensor::zeros(&shape, g.dtype(), &g.device())?;
            Ok(vec![Some(zeros.index_add(d, &ids, g)?)])
        })
    }

    /// `out[..i..] = self[..index[..i..]..]` along `dim` (the output has `index`'s shape).
    /// Backward: `scatter_add` of the gradient into zeros at the same positions.
    pub fn gather<D: Dim>(&self, dim: D, index: &Tensor) -> Result<Var> {
        let d = dim.resolve("gather", self.shape())?;
        let out = self.tensor().gather(d, index)?;
        let shape = self.shape().to_vec();
        let index = index.clone();
        record("gather", &[self], out, move |g, _| {
            let zeros = Tensor::zeros(&shape, g.dtype(), &g.device())?;
            Ok(vec![Some(zeros.scatter_add(d, &index, g)?)])
        })
    }

    /// `self` plus `src`'s slices added at positions `ids` (1-d) along `dim`: slice `j` of `src`
    /// goes to position `ids[j]` (repeats accumulate). `src` has `self`'s shape with dim `dim`
    /// replaced by `ids.len()`. Backward: `dself = g`, `dsrc = g.index_select(dim, ids)`.
    pub fn index_add<D: Dim>(&self, dim: D, ids: &Tensor, src: &Var) -> Result<Var> {
        let d = dim.resolve("index_add", self.shape())?;
        let out = self.tensor().index_add(d, ids, src.tensor())?;
        let ids = ids.clone();
        record("index_add", &[self, src], out, move |g, needs| {
            let dself = if needs[0] { Some(g.clone()) } else { None };
            let dsrc = if needs[1] { Some(g.index_select(d, &ids)?) } else { None };
            Ok(vec![dself, dsrc])
        })
    }

    /// `self` plus `src` added at `index` along `dim` (`out[..index[..i..]..] += src[..i..]`).
    /// Backward: `dself = g` (the add passes it through) and `dsrc = g.gather(dim, index)` (each
    /// source element reads the gradient of the slot it was added to). When `index` is smaller
    /// than `src` (allowed, as in PyTorch), the unread rest of `src` gets a zero gradient.
    pub fn scatter_add<D: Dim>(&self, dim: D, index: &Tensor, src: &Var) -> Result<Var> {
        let d = dim.resolve("scatter_add", self.shape())?;
        let out = self.tensor().scatter_add(d, index, src.tensor())?;
        let index = index.clone();
        let src_shape = src.shape().to_vec();
        record("scatter_add", &[self, src], out, move |g, needs| {
            let dself = if needs[0] { Some(g.clone()) } else { None };
            let dsrc = if needs[1] { Some(zero_pad_to(g.gather(d, &index)?, &src_shape)?) } else { None };
            Ok(vec![dself, dsrc])
        })
    }
}
