//! Elementwise functions. Each rule is the textbook derivative, written with tensor ops on the
//! saved input `x` or output `y`, whichever is cheaper.

use brainstacks_tensor::{Device, Tensor, ops::unary::UnaryOp};

use crate::{Result, Var, record};

/// `g * f(x, y)` where `f` builds the local derivative.
fn rule(
    op: &'static str,
    v: &Var,
    out: Tensor,
    local: impl Fn(&Tensor, &Tensor) -> brainstacks_tensor::Result<Tensor> + Send + Sync + 'static,
) -> Result<Var> {
    let x = v.tensor().clone();
    let y = out.clone();
    record(op, &[v], out, move |g, _| Ok(vec![Some(g.mul(&local(&x, &y)?)?)]))
}

impl Var {
    /// Applies the elementwise function `op`; each op's backward is its textbook derivative.
    pub fn unary(&self, op: UnaryOp) -> Result<Var> {
        let out = self.tensor().unary(op)?;
        let name = op.name();
        match op {
            UnaryOp::Neg => record(name, &[self], out, |g, _| Ok(vec![Some(g.neg()?)])),
            UnaryOp::Exp => rule(name, self, out, |_, y| Ok(y.clone())),
            UnaryOp::Log => rule(name, self, out, |x, _| x.recip()),
            UnaryOp::Sqrt => rule(name, self, out, |_, y| y.recip()?.mul_scalar(0.5)),
            // y = x^(-1/2): dy/dx = -y^3 / 2.
            UnaryOp::Rsqrt => rule(name, self, out, |_, y| y.mul(&y.square()?)?.mul_scalar(-0.5)),
            UnaryOp::Tanh => rule(name, self, out, |_, y| y.square()?.affine(-1.0, 1.0)),
            UnaryOp::Sigmoid => rule(name, self, out, |_, y| y.mul(&y.affine(-1.0, 1.0)?)),
            // silu = x s(x): d = s (1 + x (1 - s)).
            // One fused pass on the CPU; the composed form elsewhere.
            UnaryOp::Silu if self.tensor().device() == Device::Cpu => {
                let x = self.tensor().clone();
                record(name, &[self], out, move |g, _| Ok(vec![Some(x.silu_backward(g)?)]))
            }
            UnaryOp::Silu => rule(name, self, out, |x, _| {
                let s = x.sigmoid()?;
                s.mul(&x.mul(&s.affine(-1.0, 1.0)?)?.add_scalar(1.0)?)
            }),
            UnaryOp::Gelu => rule(name, self, out, |x, _| x.gelu_derivative()),
            UnaryOp::Softplus => rule(name, self, out, |x, _| x.sigmoid()),
            UnaryOp::Relu => rule(name, self, out, |x, _| x.cmp_scalar(0.0, brainstacks_tensor::ops::compare::CmpOp::Gt)?.to_dtype(x.dtype())),
            UnaryOp::Abs => rule(name, self, out, |x, _| {
                use brainstacks_tensor::ops::compare::CmpOp;
                let pos = x.cmp_scalar(0.0, CmpOp::Gt)?.to_dtype(x.dtype())?;
                let neg = x.cmp_scalar(0.0, CmpOp::Lt)?.to_dtype(x.dtype())?;
                pos.sub(&neg)
            }),
            UnaryOp::Square => rule(name, self, out, |x, _| x.mul_scalar(2.0)),
            UnaryOp::Recip => rule(name, self, out, |_, y| y.square()?.neg()),
            UnaryOp::Sin => rule(name, self, out, |x, _| x.cos()),
            UnaryOp::Cos => rule(name, self, out, |x, _| x.sin()?.neg()),
        }
    }

    /// `-x`.
    pub fn neg(&self) -> Result<Var> {
        self.unary(UnaryOp::Neg)
    }
    /// `e^x`.
    pub fn exp(&self) -> Result<Var> {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Var> {
        self.unary(UnaryOp::Log)
    }
    /// Square root.
    pub fn sqrt(&self) -> Result<Var> {
        self.unary(UnaryOp::Sqrt)
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Result<Var> {
        self.unary(UnaryOp::Rsqrt)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Var> {
        self.unary(UnaryOp::Tanh)
    }
    /// `x * sigmoid(x)`.
    pub fn silu(&self) -> Result<Var> {
        self.unary(UnaryOp::Silu)
    }
    /// Exact (erf) GELU.
    pub fn gelu(&self) -> Result<Var> {
        self.unary(UnaryOp::Gelu)
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Result<Var> {
        self.unary(UnaryOp::Sigmoid)
    }
    /// `ln(1 + e^x)`.
    pub fn softplus(&self) -> Result<Var> {
        self.unary(UnaryOp::Softplus)
    }
    /// `max(x, 0)` (gradient 0 at 0).
    pub fn relu(&self) -> Result<Var> {
        self.unary(UnaryOp::Relu)
    }
    /// `|x|` (gradient 0 at 0).
    pub fn abs(&self) -> Result<Var> {
        self.unary(UnaryOp::Abs)
    }
    /// `x * x`.
    pub fn square(&self) -> Result<Var> {
        self.unary(UnaryOp::Square)
    }
    /// `1 / x`.
    pub fn recip(&self) -> Result<Var> {
        self.unary(UnaryOp::Recip)
    }
    /// Sine.
    pub fn sin(&self) -> Result<Var> {
        self.unary(UnaryOp::Sin)
    }
    /// Cosine.
    pub fn cos(&self) -> Result<Var> {
        self.unary(UnaryOp::Cos)
    }

    /// `x^e`; the derivative `e x^(e-1)`.
    pub fn powf(&self, e: f64) -> Result<Var> {
        let out = self.tensor().powf(e)?;
        rule("powf", self, out, move |x, _| x.powf(e - 1.0)?.mul_scalar(e))
    }

    /// Clamps to `[min, max]`; the gradient passes where the input is inside the range.
    pub fn clamp(&self, min: f64, max: f64) -> Result<Var> {
        let out = self.tensor().clamp(min, max)?;
        rule("clamp", self, out, move |x, _| {
            use brainstacks_tensor::ops::compare::CmpOp;
            let lo = x.cmp_scalar(min, CmpOp::Ge)?;
            let hi = x.cmp_scalar(max, CmpOp::Le)?;
            lo.mul(&hi)?.to_dtype(x.dtype())
        })
    }
}
