//! The elementwise oracles: plain f64 formulas and a plain multi-index walk over strided views.
//!
//! A view is `(shape, strides, offset)` over a flat slice: element `(i_0, .., i_{r-1})` lives at
//! `offset + sum_d i_d * strides[d]` (strides in elements, may be 0 for broadcast dims, may be
//! negative). Outputs are contiguous, row-major in `shape`.

use super::{BinaryOp, UnaryOp};

/// `erf(z)` in f64 for the oracle: the Taylor series `2/sqrt(pi) sum (-1)^n z^(2n+1) / (n! (2n+1))`
/// for `|z| < 2`, `1 - erfc` above. The series cancels by at most `e^(z^2) < 2^6` there, so it
/// keeps about 1e-14 relative, far below the f32 tolerances it judges.
pub fn erf_f64(z: f64) -> f64 {
    if z.is_nan() {
        return z;
    }
    let a = z.abs();
    let r = if a < 2.0 {
        let mut term = a; // (-1)^n a^(2n+1) / n!
        let mut sum = a;
        for n in 1..200 {
            term *= -a * a / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-18 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        1.0 - erfc_f64(a)
    };
    r.copysign(z)
}

/// `erfc(z)` in f64: for `z >= 2` the continued fraction
/// `erfc(z) = e^(-z^2) / sqrt(pi) / (z + (1/2) / (z + (2/2) / (z + (3/2) / (z + ...))))`
/// evaluated backward from depth 200 (it is converged to f64 precision by depth 60 at z = 2);
/// `1 - erf` below 2, `2 - erfc(-z)` for negative z.
pub fn erfc_f64(z: f64) -> f64 {
    if z.is_nan() {
        return z;
    }
    if z < 0.0 {
        return 2.0 - erfc_f64(-z);
    }
    if z < 2.0 {
        return 1.0 - erf_f64(z);
    }
    let mut f = z;
    for n in (1..=200).rev() {
        f = z + (n as f64 * 0.5) / f;
    }
    (-z * z).exp() / std::f64::consts::PI.sqrt() / f
}

/// `0.5 x (1 + erf(x / sqrt 2))` (the erf GELU, as `brainstacks-tensor`'s `UnaryOp::Gelu`);
/// for negative `x` written as `0.5 x erfc(|x| / sqrt 2)`, which keeps the tail's relative accuracy.
pub fn gelu_f64(x: f64) -> f64 {
    let a = x.abs() * std::f64::consts::FRAC_1_SQRT_2;
    if x < 0.0 {
        0.5 * x * erfc_f64(a)
    } else {
        0.5 * x * (1.0 + erf_f64(a))
    }
}

/// The standard normal cdf `Phi(x) = erfc(-x / sqrt 2) / 2`, from the tail side for `x < 0`.
pub fn normal_cdf_f64(x: f64) -> f64 {
    let a = x.abs() * std::f64::consts::FRAC_1_SQRT_2;
    if x < 0.0 {
        0.5 * erfc_f64(a)
    } else {
        0.5 * (1.0 + erf_f64(a))
    }
}

/// The standard normal density `phi(x) = e^(-x^2/2) / sqrt(2 pi)`.
pub fn normal_pdf_f64(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// `1 / (1 + e^-x)`, written so neither branch overflows.
pub fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The op on one value, in f64.
pub fn unary_f64(op: UnaryOp, x: f64) -> f64 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Silu => x * sigmoid_f64(x),
        UnaryOp::Gelu => gelu_f64(x),
        UnaryOp::Sigmoid => sigmoid_f64(x),
        UnaryOp::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        // `<=` is false for NaN, so NaN passes through.
        UnaryOp::Relu => {
            if x <= 0.0 {
                0.0
            } else {
                x
            }
        }
        UnaryOp::Abs => x.abs(),
        UnaryOp::Square => x * x,
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::GeluDerivative => normal_cdf_f64(x) + x * normal_pdf_f64(x),
    }
}

/// The op on two values, in f64. `maximum`/`minimum` return NaN when either side is NaN and
/// otherwise follow `brainstacks-tensor` exactly, including which zero wins (`b` when `a == b`).
pub fn binary_f64(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Maximum => {
            if a > b {
                a
            } else if b >= a {
                b
            } else {
                a + b
            }
        }
        BinaryOp::Minimum => {
            if a < b {
                a
            } else if b <= a {
                b
            } else {
                a + b
            }
        }
    }
}

/// Flat position of multi-index `idx` in a view.
fn position(idx: &[usize], strides: &[isize], offset: usize) -> usize {
    let mut p = offset as isize;
    for (i, s) in idx.iter().zip(strides) {
        p += *i as isize * s;
    }
    usize::try_from(p).expect("elementwise oracle: view reaches below the start of its slice")
}

/// Calls `f(multi_index)` for every index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// `y[i] = op(x[view(i)])` for every index of `shape`, row-major; `y` is contiguous.
pub fn unary_strided_f64(
    op: UnaryOp,
    x: &[f64],
    shape: &[usize],
    strides: &[isize],
    offset: usize,
) -> Vec<f64> {
    assert_eq!(
        shape.len(),
        strides.len(),
        "unary oracle: shape and strides differ in rank"
    );
    let mut y = Vec::new();
    for_each_index(shape, |idx| {
        y.push(unary_f64(op, x[position(idx, strides, offset)]))
    });
    y
}

/// One operand of a binary op: a strided (possibly broadcast, stride 0) view of a slice.
#[derive(Clone, Copy, Debug)]
pub struct View<'a, T> {
    pub data: &'a [T],
    pub strides: &'a [isize],
    pub offset: usize,
}

/// `y[i] = op(a[view_a(i)], b[view_b(i)])` for every index of `shape`; `y` is contiguous.
pub fn binary_strided_f64(
    op: BinaryOp,
    a: View<'_, f64>,
    b: View<'_, f64>,
    shape: &[usize],
) -> Vec<f64> {
    assert_eq!(shape.len(), a.strides.len(), "binary oracle: rank of a");
    assert_eq!(shape.len(), b.strides.len(), "binary oracle: rank of b");
    let mut y = Vec::new();
    for_each_index(shape, |idx| {
        let va = a.data[position(idx, a.strides, a.offset)];
        let vb = b.data[position(idx, b.strides, b.offset)];
        y.push(binary_f64(op, va, vb));
    });
    y
}
