//! Selection: top-k, `where_cond` and `masked_fill`.
//!
//! Masks and top-k indices are constants. Each backward routes the gradient with the same
//! tensor op the forward used (a `where_cond` or `masked_fill` with zeros), so the forward and
//! backward agree on which positions were picked, and a non-finite gradient in an unpicked
//! position is dropped instead of turning into NaN through a multiply by 0.

use brainstacks_tensor::Tensor;

use crate::{Result, Var, record};

/// Sums `g` back to `shape` when broadcasting stretched the operand.
fn unbroadcast(g: Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape { Ok(g) } else { Ok(g.sum_to_shape(shape)?) }
}

impl Var {
    /// The `k` largest entries along the last dim and their positions (an `I64` constant).
    /// Backward: the values' gradient is scattered back to the positions they came from.
    pub fn topk(&self, k: usize) -> Result<(Var, Tensor)> {
        let (values, indices) = self.tensor().topk(k)?;
        let shape = self.shape().to_vec();
        // The forward rejected rank 0, so the last dim exists.
        let last = shape.len().saturating_sub(1);
        let idx = indices.clone();
        let values = record("topk", &[self], values, move |g, _| {
            let zeros = Tensor::zeros(&shape, g.dtype(), &g.device())?;
            Ok(vec![Some(zeros.scatter_add(last, &idx, g)?)])
        })?;
        Ok((values, indices))
    }

    /// `mask ? on_true : on_false` elementwise (the three broadcast together; `mask` is a `U8`
    /// constant). Each branch's gradient is the incoming one where it was picked and 0 elsewhere,
    /// summed back to the branch's shape.
    pub fn where_cond(mask: &Tensor, on_true: &Var, on_false: &Var) -> Result<Var> {
        let out = mask.where_cond(on_true.tensor(), on_false.tensor())?;
        let (true_shape, false_shape) = (on_true.shape().to_vec(), on_false.shape().to_vec());
        let mask = mask.clone();
        record("where_cond", &[on_true, on_false], out, move |g, needs| {
            let zero = Tensor::zeros(&[], g.dtype(), &g.device())?;
            let dt = if needs[0] { Some(unbroadcast(mask.where_cond(g, &zero)?, &true_shape)?) } else { None };
            let df = if needs[1] { Some(unbroadcast(mask.where_cond(&zero, g)?, &false_shape)?) } else { None };
            Ok(vec![dt, df])
        })
    }

    /// `value` where `mask` (a `U8` constant broadcast to this shape) is set, `self` elsewhere.
    /// Backward: the incoming gradient with the filled positions zeroed.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Var> {
        let out = self.tensor().masked_fill(mask, value)?;
        let shape = self.shape().to_vec();
        let mask = mask.clone();
        record("masked_fill", &[self], out, move |g, _| Ok(vec![Some(unbroadcast(g.masked_fill(&mask, 0.0)?, &shape)?)]))
    }
}
