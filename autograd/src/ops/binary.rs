//! Broadcasting binary ops. The gradient of a broadcast operand is summed back to its shape.

use brainstacks_tensor::Tensor;

use crate::{Result, Var, record};

/// Gradient for an operand, reduced over the dims broadcasting stretched.
fn unbroadcast(g: Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape { Ok(g) } else { Ok(g.sum_to_shape(shape)?) }
}

impl Var {
    /// `self + rhs` with broadcasting; each operand's gradient is summed back to its shape.
    pub fn add(&self, rhs: &Var) -> Result<Var> {
        let (sa, sb) = (self.shape().to_vec(), rhs.shape().to_vec());
        let out = self.tensor().add(rhs.tensor())?;
        record("add", &[self, rhs], out, move |g, needs| {
            Ok(vec![
                if needs[0] { Some(unbroadcast(g.clone(), &sa)?) } else { None },
                if needs[1] { Some(unbroadcast(g.clone(), &sb)?) } else { None },
            ])
        })
    }

    /// `parts[0] + parts[1] + ...` left to right (see [`Tensor::add_n`]: the bits of chaining
    /// [`Var::add`], in one pass when the parts share a shape); each part's gradient is the
    /// output's, summed back to its shape if it was broadcast.
    pub fn add_n(parts: &[&Var]) -> Result<Var> {
        let tensors: Vec<&Tensor> = parts.iter().map(|p| p.tensor()).collect();
        let out = Tensor::add_n(&tensors)?;
        let shapes: Vec<Vec<usize>> = parts.iter().map(|p| p.shape().to_vec()).collect();
        record("add_n", parts, out, move |g, needs| {
            needs.iter().zip(&shapes).map(|(&need, shape)| if need { unbroadcast(g.clone(), shape).map(Some) } else { Ok(None) }).collect()
        })
    }

    /// `self - rhs` with broadcasting; `rhs` gets the negated gradient.
    pub fn sub(&self, rhs: &Var) -> Result<Var> {
        let (sa, sb) = (self.shape().to_vec(), rhs.shape().to_vec());
        let out = self.tensor().sub(rhs.tensor())?;
        record("sub", &[self, rhs], out, move |g, needs| {
            Ok(vec![
                if needs[0] { Some(unbroadcast(g.clone(), &sa)?) } else { None },
                if needs[1] { Some(unbroadcast(g.neg()?, &sb)?) } else { None },
            ])
        })
    }

    /// `self * rhs` with broadcasting; each operand's gradient is `g` times the other operand.
    pub fn mul(&self, rhs: &Var) -> Result<Var> {
        let (a, b) = (self.tensor().clone(), rhs.tensor().clone());
        let out = a.mul(&b)?;
        record("mul", &[self, rhs], out, move |g, needs| {
            Ok(vec![
                if needs[0] { Some(unbroadcast(g.mul(&b)?, a.shape())?) } else { None },
                if needs[1] { Some(unbroadcast(g.mul(&a)?, b.shape())?) } else { None },
            ])
        })
    }

    /// `self / rhs` with broadcasting: `d/dself = 1/rhs`, `d/drhs = -(self/rhs)/rhs`.
    pub fn div(&self, rhs: &Var) -> Result<Var> {
        let (a, b) = (self.tensor().clone(), rhs.tensor().clone());
        let out = a.div(&b)?;
        let q = out.clone();
        record("div", &[self, rhs], out, move |g, needs| {
            // d(a/b)/da = 1/b; d(a/b)/db = -(a/b)/b.
            Ok(vec![
                if needs[0] { Some(unbroadcast(g.div(&b)?, a.shape())?) } else { None },
                if needs[1] { Some(unbroadcast(g.mul(&q)?.div(&b)?.neg()?, b.shape())?) } else { None },
            ])
        })
    }

    /// Elementwise maximum. Where both are equal the gradient is split evenly (the derivative
    /// is undefined there; halving keeps the sum of both gradients equal to the incoming one).
    pub fn maximum(&self, rhs: &Var) -> Result<Var> {
        self.extremum(rhs, true)
    }

    /// Elementwise minimum; ties split the gradient evenly, as in `maximum`.
    pub fn minimum(&self, rhs: &Var) -> Result<Var> {
        self.extremum(rhs, false)
    }

    fn extremum(&self, rhs: &Var, max: bool) -> Result<Var> {
        let (a, b) = (self.tensor().clone(), rhs.tensor().clone());
        let (name, out) = if max { ("maximum", a.maximum(&b)?) } else { ("minimum", a.minimum(&b)?) };
        record(name, &[self, rhs], out, move |g, needs| {
            let dt = g.dtype();
            let wins = if max { a.gt(&b)? } else { a.lt(&b)? }.to_dtype(dt)?;
            let ties = a.eq(&b)?.to_dtype(dt)?.mul_scalar(0.5)?;
            let share_a = wins.add(&ties)?;
            let share_b = share_a.affine(-1.0, 1.0)?;
            Ok(vec![
                if needs[0] { Some(unbroadcast(g.mul(&share_a)?, a.shape())?) } else { None },
                if needs[1] { Some(unbroadcast(g.mul(&share_b)?, b.shape())?) } else { None },
            ])
        })
    }

    /// `self + v`; the gradient passes through unchanged.
    pub fn add_scalar(&self, v: f64) -> Result<Var> {
        let out = self.tensor().add_scalar(v)?;
        record("add_scalar", &[self], out, |g, _| Ok(vec![Some(g.clone())]))
    }

    /// `self * v`; the gradient is scaled by `v`.
    pub fn mul_scalar(&self, v: f64) -> Result<Var> {
        let out = self.tensor().mul_scalar(v)?;
        record("mul_scalar", &[self], out, move |g, _| Ok(vec![Some(g.mul_scalar(v)?)]))
    }

    /// `self * mul + add`.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Var> {
        let out = self.tensor().affine(mul, add)?;
        record("affine", &[self], out, move |g, _| Ok(vec![Some(g.mul_scalar(mul)?)]))
    }
}
