//! Strided unary and broadcasting binary elementwise ops, f32 and bf16 (bf16 computed in f32).
//!
//! # The math
//!
//! Unary ([`UnaryOp`], the op code is the discriminant, in `brainstacks-tensor`'s `UnaryOp` order):
//! neg, exp, log, sqrt, rsqrt (`1 / sqrt x`), tanh, silu (`x sigmoid x`), gelu (the erf form
//! `0.5 x (1 + erf(x / sqrt 2))`, as the tensor crate), sigmoid, softplus
//! (`max(x, 0) + ln(1 + e^-|x|)`), relu (NaN passes through), abs, square, recip, sin, cos; and
//! op 16, gelu's derivative `Phi(x) + x phi(x)`, which autograd needs and cannot compose.
//!
//! Binary ([`BinaryOp`]): add, sub, mul, div, maximum, minimum. `maximum(a, b)` is `a` if `a > b`,
//! else `b` if `b >= a`, else NaN (either side NaN); `minimum` likewise; exactly the tensor
//! crate's rule, including which zero wins (`b` when `a == b`).
//!
//! # Shapes
//!
//! Inputs are strided views: a shape of rank `<= 8` (the same for both operands of a binary op,
//! already broadcast), element strides per operand (0 on broadcast dims; negative allowed) and an
//! element offset. Output `y` is contiguous, row-major in the shape. Element `i` of `y` is the
//! multi-index of `i` in the shape, mapped through each operand's strides (see [`cpu`]).
//!
//! # GPU (`elementwise.ptx`, launched by `cuda.rs`)
//!
//! Shapes and strides travel in a small device buffer of `i64` (`dims`): `[shape.., strides..]`
//! for unary, `[shape.., a_strides.., b_strides..]` for binary, in dim order. The launcher first
//! merges adjacent dims that are contiguous with each other in every operand (a contiguous input
//! becomes rank 1, where the kernel does no division), then copies `dims` (at most 24 values).
//! Math is f32 throughout with no `.approx` instruction: exp is `2^k e^r` with a Cody-Waite
//! reduction (`|r| <= ln2/2`) and a degree-7 Taylor polynomial; log is `k ln2 + 2 atanh(s)`,
//! `s = (m - 1) / (m + 1)`, `m` in `[sqrt(1/2), sqrt 2)`; tanh, sigmoid, silu, softplus are built
//! from those (tanh through an `expm1` that is Taylor below `ln2/2`); gelu uses the positive series
//! `erf(a) = 2/sqrt(pi) a e^(-a^2) sum (2a^2)^n / (1 3 .. (2n+1))` for `a < 1.5` and the continued
//! fraction for `erfc` (depth 32) above, with `e^(-x^2/2)` from an exact split of `x^2`; sin and
//! cos reduce by `pi/2` in f64 (two-part `pi/2`) and evaluate Taylor polynomials in f64.
//! add/sub/mul/div/sqrt/recip are IEEE round-to-nearest, so those match the f32 reference bit for
//! bit. bf16 inputs widen exactly; bf16 outputs round to nearest even on the bits exactly as
//! `cast.ptx` and the `half` crate do (subnormals kept, NaN quiet with its payload).
//!
//! # Tolerance
//!
//! See [`unary_tolerance`]: for f32 output `|y - oracle| <= c_op u |oracle| + a_op + tiny` with
//! `u = 2^-24`; `c_op` in ulps: 0 neg/abs/relu (exact), 1 square/sqrt/recip (one rounding),
//! 2 rsqrt (two roundings), 8 exp/log, 16 sigmoid/silu/tanh/softplus, 32 gelu, 2 sin/cos.
//! `a_op` is 0 except:
//! - gelu, `4 u |x|`: for `x < 0` and `a = |x| / sqrt 2 < 1.5` the result is `0.5 x (1 - erf a)`,
//!   whose absolute error is that of `erf` (at most about 200 ulps of the small result);
//! - gelu_derivative (32 ulps), `8 u (Phi(x) + |x| phi(x))`: the two terms cancel near
//!   `x = -0.75`, where only an absolute bound in their size holds;
//! - silu, `2^-149 |x|`: a subnormal sigmoid's step, times `x`;
//! - sin/cos, `2^-40`: the f64 reduction. sin/cos are in contract only for `|x| < 2^30` (the
//!   reduction's `k` must be exact; beyond that the result is some value in `[-1, 1]`).
//!
//! The bounds are a small multiple of the rounding count of each sequence (each f32 operation
//! costs `u`, polynomial truncation is below `2^-27` relative). Every op also gets `tiny = 2^-147`
//! absolute (a few subnormal steps: results that pass through the subnormal range, e.g. exp(-90)
//! inside softplus, round there more than once). [`model`] replays the kernel's f32 sequences on
//! the CPU and checks them against this rule over dense sweeps (worst cases seen: exp 1.2, log 2.6,
//! tanh 4, sigmoid 2.9, softplus 3.6, sin/cos 1 ulps; gelu 137 ulps just below the branch point;
//! gelu_derivative is relative-unbounded only at its zero near `x = -0.7518`).
//! A bf16 output adds the output rounding, `2^-8 |oracle|`.
//!
//! Binary ops are exact against the f32 reference (`(a op b)` in f64 rounded to f32, the same as
//! one f32 operation since f64 holds every product and quotient bit needed): tolerance zero, and
//! zero for bf16 against `bf16(f32 result)`.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod model;

/// The hand-written PTX of this op, embedded in every build (the registry and the lint read it).
pub const PTX: &str = include_str!("elementwise.ptx");

/// Largest rank the GPU kernels take (the launcher returns an error above it).
pub const MAX_RANK: usize = 8;

/// Unary ops; the discriminant is the op code the kernel takes (the tensor crate's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum UnaryOp {
    Neg = 0,
    Exp = 1,
    Log = 2,
    Sqrt = 3,
    Rsqrt = 4,
    Tanh = 5,
    Silu = 6,
    Gelu = 7,
    Sigmoid = 8,
    Softplus = 9,
    Relu = 10,
    Abs = 11,
    Square = 12,
    Recip = 13,
    Sin = 14,
    Cos = 15,
    /// `d gelu / dx = Phi(x) + x phi(x)` (standard normal cdf and density): the local derivative
    /// autograd's gelu rule needs, which no composition of the other ops gives. Not one of the
    /// tensor crate's `UnaryOp`s (there it is `Tensor::gelu_derivative`).
    GeluDerivative = 16,
}

impl UnaryOp {
    /// Every op, in op-code order.
    pub const ALL: [UnaryOp; 17] = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Tanh,
        UnaryOp::Silu,
        UnaryOp::Gelu,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Relu,
        UnaryOp::Abs,
        UnaryOp::Square,
        UnaryOp::Recip,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::GeluDerivative,
    ];

    /// The op code passed to the kernel.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// Binary ops; the discriminant is the op code the kernel takes (the tensor crate's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Maximum = 4,
    Minimum = 5,
}

impl BinaryOp {
    /// Every op, in op-code order.
    pub const ALL: [BinaryOp; 6] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
    ];

    /// The op code passed to the kernel.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// Unit roundoff of f32.
pub const U_F32: f64 = 1.0 / (1u64 << 24) as f64;
/// Unit roundoff of bf16.
pub const U_BF16: f64 = 1.0 / 256.0;

/// Largest allowed `|gpu - oracle|` for one unary output: `x` the input (as f64), `oracle` the f64
/// oracle value, `u_out` the output dtype's unit roundoff ([`U_F32`] or [`U_BF16`]) and `tiny`
/// its smallest subnormal. Callers treat results whose oracle overflows the output dtype (or is
/// NaN) separately: those must be the same infinity (or NaN). See the module documentation.
pub fn unary_tolerance(op: UnaryOp, x: f64, oracle: f64, u_out: f64, tiny: f64) -> f64 {
    let (ulps, abs) = match op {
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => (0.0, 0.0),
        UnaryOp::Square | UnaryOp::Sqrt | UnaryOp::Recip => (1.0, 0.0),
        UnaryOp::Rsqrt => (2.0, 0.0),
        UnaryOp::Exp | UnaryOp::Log => (8.0, 0.0),
        UnaryOp::Sigmoid | UnaryOp::Tanh | UnaryOp::Softplus => (16.0, 0.0),
        // sigmoid(x) is subnormal below x ~ -87: its absolute error, a subnormal step, times x.
        UnaryOp::Silu => (16.0, 2f64.powi(-149) * x.abs()),
        UnaryOp::Gelu => (32.0, 4.0 * U_F32 * x.abs()),
        UnaryOp::GeluDerivative => {
            let (cdf, pdf) = (cpu::normal_cdf_f64(x), cpu::normal_pdf_f64(x));
            (32.0, 8.0 * U_F32 * (cdf + x.abs() * pdf))
        }
        UnaryOp::Sin | UnaryOp::Cos => (2.0, 2f64.powi(-40)),
    };
    let f32_err = ulps * U_F32 * oracle.abs() + abs + 2f64.powi(-147);
    if u_out == U_F32 {
        f32_err
    } else {
        f32_err + u_out * (oracle.abs() + f32_err) + tiny
    }
}

#[cfg(test)]
mod tests {
    use super::cpu::*;
    use super::*;

    #[test]
    fn erf_known_values() {
        // Reference values of erf / erfc to 16 digits (Python's math.erf / math.erfc).
        let cases = [
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.9, 0.9927904292352575),
            (2.5, 0.999593047982555),
            (-1.0, -0.8427007929497149),
        ];
        for (z, want) in cases {
            assert!(
                (erf_f64(z) - want).abs() < 1e-14,
                "erf({z}) = {}",
                erf_f64(z)
            );
        }
        for (z, want) in [
            (3.0, 2.2090496998585438e-05),
            (5.0, 1.5374597944280351e-12),
            (2.0, 0.004677734981047265),
        ] {
            assert!(
                ((erfc_f64(z) - want) / want).abs() < 1e-13,
                "erfc({z}) = {}",
                erfc_f64(z)
            );
        }
        assert_eq!(erf_f64(0.0), 0.0);
        assert!(erf_f64(f64::NAN).is_nan());
    }

    #[test]
    fn unary_known_values() {
        let s1 = 1.0 / (1.0 + (-1.0f64).exp());
        assert_eq!(unary_f64(UnaryOp::Sigmoid, 1.0), s1);
        assert_eq!(unary_f64(UnaryOp::Silu, 1.0), s1);
        // gelu(1) = 0.5 (1 + erf(1/sqrt 2)) = 0.8413447460685429.
        assert!((unary_f64(UnaryOp::Gelu, 1.0) - 0.8413447460685429).abs() < 1e-15);
        // gelu(-3) = -1.5 erfc(3/sqrt 2) = -3 * Phi(-3) = -0.004049694.
        assert!((unary_f64(UnaryOp::Gelu, -3.0) + 3.0 * 0.0013498980316301).abs() < 1e-15);
        assert_eq!(unary_f64(UnaryOp::Softplus, 0.0), 2f64.ln());
        assert!(unary_f64(UnaryOp::Relu, f64::NAN).is_nan());
        assert_eq!(unary_f64(UnaryOp::Relu, -2.0), 0.0);
        assert_eq!(unary_f64(UnaryOp::Rsqrt, 4.0), 0.5);
        assert!(
            unary_f64(UnaryOp::Sigmoid, -1000.0) == 0.0
                && unary_f64(UnaryOp::Sigmoid, 1000.0) == 1.0
        );
    }

    #[test]
    fn maximum_minimum_follow_the_tensor_rule() {
        assert!(binary_f64(BinaryOp::Maximum, f64::NAN, 1.0).is_nan());
        assert!(binary_f64(BinaryOp::Minimum, 1.0, f64::NAN).is_nan());
        assert_eq!(binary_f64(BinaryOp::Maximum, 2.0, -1.0), 2.0);
        assert_eq!(binary_f64(BinaryOp::Minimum, 2.0, -1.0), -1.0);
        // Equal values: b wins, so the sign of zero comes from b.
        assert!(binary_f64(BinaryOp::Maximum, 0.0, -0.0).is_sign_negative());
        assert!(binary_f64(BinaryOp::Minimum, -0.0, 0.0).is_sign_positive());
    }

    #[test]
    fn strided_walk_by_hand() {
        // x = 0..12 as a [3, 4] array; its transpose is shape [4, 3], strides [1, 4].
        let x: Vec<f64> = (0..12).map(f64::from).collect();
        let y = unary_strided_f64(UnaryOp::Neg, &x, &[4, 3], &[1, 4], 0);
        assert_eq!(
            y,
            vec![
                0.0, -4.0, -8.0, -1.0, -5.0, -9.0, -2.0, -6.0, -10.0, -3.0, -7.0, -11.0
            ]
        );
        // Offset 5, negative stride: elements 5, 4, 3.
        assert_eq!(
            unary_strided_f64(UnaryOp::Abs, &x, &[3], &[-1], 5),
            vec![5.0, 4.0, 3.0]
        );
        assert!(unary_strided_f64(UnaryOp::Abs, &x, &[3, 0], &[1, 1], 0).is_empty());
        // Rank 0: one element.
        assert_eq!(
            unary_strided_f64(UnaryOp::Square, &x, &[], &[], 3),
            vec![9.0]
        );
    }

    #[test]
    fn broadcast_by_hand() {
        // a: column [10, 20] broadcast over 3 columns; b: row [1, 2, 3] broadcast over 2 rows.
        let a = [10.0, 20.0];
        let b = [1.0, 2.0, 3.0];
        let y = binary_strided_f64(
            BinaryOp::Sub,
            View {
                data: &a,
                strides: &[1, 0],
                offset: 0,
            },
            View {
                data: &b,
                strides: &[0, 1],
                offset: 0,
            },
            &[2, 3],
        );
        assert_eq!(y, vec![9.0, 8.0, 7.0, 19.0, 18.0, 17.0]);
    }

    #[test]
    fn tolerance_is_zero_for_exact_ops_and_grows_for_gelu() {
        assert_eq!(
            unary_tolerance(UnaryOp::Neg, 3.0, -3.0, U_F32, 0.0),
            2f64.powi(-147)
        );
        // gelu's absolute term 4 u |x| dominates near a small result.
        assert!(unary_tolerance(UnaryOp::Gelu, -2.0, -0.05, U_F32, 0.0) >= 8.0 * U_F32);
        assert!(unary_tolerance(UnaryOp::Exp, 0.0, 1.0, U_BF16, 0.0) > U_BF16);
    }
}
