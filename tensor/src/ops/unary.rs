//! Elementwise functions of one tensor: the `UnaryOp` set (exp, log, activations, ...), plus
//! `affine`, `powf` and `clamp`.
//!
//! Float ops compute f64 in f64 and f32 in f32; bf16 and f16 widen to f32 (exactly), compute in
//! f32 and round once. Each element is computed by exactly one call whatever the thread count
//! (see `cpu::parallel`), so results are bitwise reproducible.

use half::{bf16, f16};

use crate::cpu::parallel;
use crate::{CpuStorage, DType, Error, Result, Tensor, WithDType};

/// The elementwise functions `Tensor::unary` applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural logarithm
    Log,
    /// square root
    Sqrt,
    /// `1 / sqrt(x)`
    Rsqrt,
    /// hyperbolic tangent
    Tanh,
    /// `x * sigmoid(x)` (also called swish)
    Silu,
    /// `0.5 x (1 + erf(x / sqrt 2))`, the exact (erf) form, PyTorch's default
    Gelu,
    /// `1 / (1 + e^-x)`, evaluated without overflow for any `x`
    Sigmoid,
    /// `ln(1 + e^x)`, evaluated as `max(x, 0) + ln(1 + e^-|x|)` so it neither overflows nor loses
    /// the small tail
    Softplus,
    /// `max(x, 0)`; NaN stays NaN
    Relu,
    /// `|x|`
    Abs,
    /// `x * x`
    Square,
    /// `1 / x`
    Recip,
    /// sine
    Sin,
    /// cosine
    Cos,
}

impl UnaryOp {
    /// Every op, in declaration order (handy for tests and benchmarks that sweep them).
    pub const ALL: [UnaryOp; 16] = [
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
    ];

    /// The op's name as errors and tapes print it (lower case, e.g. `"gelu"`).
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Silu => "silu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Relu => "relu",
            UnaryOp::Abs => "abs",
            UnaryOp::Square => "square",
            UnaryOp::Recip => "recip",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
        }
    }

    /// The op on one f64 value (the reference the f32 paths are tested against).
    #[inline]
    pub fn apply_f64(self, x: f64) -> f64 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Silu => x * sigmoid_f64(x),
            UnaryOp::Gelu => gelu_f64(x),
            UnaryOp::Sigmoid => sigmoid_f64(x),
            UnaryOp::Softplus => softplus_f64(x),
            // `<=` is false for NaN, so NaN passes through as in PyTorch.
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
        }
    }

    /// The op on one f32 value, computed in f32 (GELU goes through f64 `erf` and rounds once:
    /// there is no separate f32 `erf`, and the f64 one is cheap next to the rest of a layer).
    #[inline]
    pub fn apply_f32(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Silu => x * sigmoid_f32(x),
            UnaryOp::Gelu => gelu_f64(x as f64) as f32,
            UnaryOp::Sigmoid => sigmoid_f32(x),
            UnaryOp::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
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
        }
    }
}

// ---- scalar special functions -----------------------------------------------------------

/// `1 / (1 + e^-x)` without overflow: for negative `x`, `e^x / (1 + e^x)` keeps the exponent
/// non-positive, so large `|x|` gives 0 or 1 instead of `inf / inf`.
#[inline]
pub fn sigmoid_f64(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// f32 form of [`sigmoid_f64`], without branches (the two cases are both computed and one is
/// selected) and through [`exp_f32`], so loops over it vectorise: silu and its gradient are a
/// large share of a training step.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    let e = exp_f32(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

/// `e^x` in f32, within 2 ulp of the exact value (tested over the whole normal range), written
/// without calls or data-dependent branches so that loops over it vectorise (libm's `expf` is a
/// call per element). The scheme is the classic one: `x = n ln 2 + r` with `|r| <= ln(2) / 2`
/// (`ln 2` split in two parts so `n ln 2` is exact), a degree-7 polynomial for `e^r`, and `2^n`
/// built from its exponent bits.
///
/// Differences from `f32::exp`: results below `2^-125` (`x < -86.9`) are 0 rather than tiny or
/// subnormal; `x > ln(f32::MAX)` is `+inf` as usual; NaN propagates.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const OVERFLOW: f32 = 88.722_84; // ln(f32::MAX), rounded up
    const UNDERFLOW: f32 = -86.9; // n >= -125 below, so the two-step scale stays normal
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375: few bits, so n * LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer (|v| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    // Clamped so that n stays in [-125, 128]; NaN fails both tests and passes through.
    let xc = x.clamp(UNDERFLOW, OVERFLOW);
    let n = (xc * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    // 2^n as 2^(n-1) * 2, so that n = 128 (just below the overflow) still has a normal factor.
    // The biased exponent n + 126 (in 1..=254) is read off the bits of n + 126 + 2^23, which
    // holds that integer in its low mantissa bits: integer ops that vectorise, where `n as i32`
    // (a saturating conversion) does not.
    let biased = (n + (126.0 + 8_388_608.0)).to_bits().wrapping_sub(8_388_608.0f32.to_bits());
    let half_scale = f32::from_bits(biased << 23);
    let y = e * half_scale * 2.0;
    if x > OVERFLOW {
        f32::INFINITY
    } else if x < UNDERFLOW {
        0.0
    } else {
        y
    }
}

/// `e^x` in f64, within 2 ulp of libm's `exp` over the normal range (tested), written like
/// [`exp_f32`] so that loops over it vectorise: `x = n ln 2 + r` with `|r| <= ln(2) / 2` (`ln 2`
/// in two parts, the high one with enough trailing zero bits that `n ln 2` is exact), the Taylor
/// polynomial of `e^r` to degree 13 (the next term is below 1e-17 relative), and `2^n` from its
/// exponent bits. The cross-entropy's exponentials (one per logit, in f64) were libm calls, a few
/// percent of a training step.
///
/// Differences from `f64::exp`: results below `e^-707` (about 1e-307) are 0 rather than tiny or
/// subnormal; `x > ln(f64::MAX)` is `+inf` as usual; NaN propagates.
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    const OVERFLOW: f64 = 709.782_712_893_384; // ln(f64::MAX), rounded up
    const UNDERFLOW: f64 = -707.0; // n >= -1020 below, so the two-step scale stays normal
    // ln 2 = LN2_HI + LN2_LO; LN2_HI has 32 significant bits, so n * LN2_HI is exact (|n| < 2^11).
    const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76);
    // 1.5 * 2^52: adding and subtracting it rounds to the nearest integer (|v| < 2^51).
    const ROUND: f64 = 6_755_399_441_055_744.0;
    // 1/k! for k = 13 down to 2: the polynomial p(r) with e^r = 1 + r + r^2 p(r).
    const C: [f64; 12] = [
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
    ];
    let xc = x.clamp(UNDERFLOW, OVERFLOW);
    let n = (xc * std::f64::consts::LOG2_E + ROUND) - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = C[0];
    for &c in &C[1..] {
        p = p * r + c;
    }
    let e = p * (r * r) + r + 1.0;
    // 2^n as 2^(n-1) * 2 (n = 1024 is just below the overflow); the biased exponent n + 1022
    // (in 2..=2046) read off the bits of n + 1022 + 2^52, as in `exp_f32`.
    const TWO_52: f64 = 4_503_599_627_370_496.0;
    let biased = (n + (1022.0 + TWO_52)).to_bits().wrapping_sub(TWO_52.to_bits());
    let half_scale = f64::from_bits(biased << 52);
    let y = e * half_scale * 2.0;
    if x > OVERFLOW {
        f64::INFINITY
    } else if x < UNDERFLOW {
        0.0
    } else {
        y
    }
}

/// `ln(1 + e^x)` as `max(x, 0) + ln(1 + e^-|x|)`: no overflow for large `x`, full relative
/// accuracy of the `e^x` tail for very negative `x`. NaN propagates through the `exp`.
#[inline]
pub fn softplus_f64(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `2 / sqrt(pi)`.
const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
/// `1 / sqrt(pi)`.
const ONE_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI / 2.0;
/// Below this `|x|` the series for `erf` is used, above it the continued fraction for `erfc`.
/// At 2 both need at most ~70 terms and the series keeps `erf` to about 1e-15 relative (measured
/// against mpmath at 3,600 points in [0, 8] when this was written; the tests keep 12 of them).
const ERF_SWITCH: f64 = 2.0;

/// `1 / (2k + 3)` for `k = 0, 1, ...`: the series below multiplies by these instead of dividing,
/// which takes the divide off the loop's dependency chain (about 1.4x faster; the extra rounding
/// moves the measured worst case from 7e-16 to 8e-16 relative).
const INV_ODD: [f64; 64] = {
    let mut a = [0.0; 64];
    let mut k = 0;
    while k < 64 {
        a[k] = 1.0 / (2 * k + 3) as f64;
        k += 1;
    }
    a
};

/// `erf(a)` for `0 <= a < ERF_SWITCH` by the series with positive terms
/// `erf(a) = 2/sqrt(pi) · a · e^(-a²) · sum_n (2a²)^n / (1·3·5···(2n+1))`
/// (Abramowitz & Stegun 7.1.6). No term cancels another, so the sum is accurate to a few ulps;
/// the loop stops once a term no longer changes the sum (at most ~35 terms below a = 2; the
/// table's 64 entries only run out for arguments this function is not used for).
fn erf_series(a: f64) -> f64 {
    let t = 2.0 * a * a;
    let mut term = 1.0f64;
    let mut sum = 1.0f64;
    for inv in INV_ODD {
        term *= t * inv;
        sum += term;
        if term <= sum * 1e-17 {
            break;
        }
    }
    TWO_OVER_SQRT_PI * a * (-a * a).exp() * sum
}

/// `erfc(a)` for `a >= ERF_SWITCH` by the continued fraction
/// `erfc(a) = e^(-a²)/sqrt(pi) · 1 / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...))))`
/// (A&S 7.1.14), evaluated with the modified Lentz method (Numerical Recipes §5.2). It converges
/// in under 70 steps at a = 2 and faster beyond.
fn erfc_fraction(a: f64) -> f64 {
    // e^(-a²) underflows to 0 past about 27.3: the result is 0 and the fraction need not run.
    if a > 27.5 {
        return 0.0;
    }
    const TINY: f64 = 1e-300;
    let mut f = a;
    let mut c = a;
    let mut d = 0.0f64;
    for n in 1..500 {
        let an = n as f64 * 0.5;
        d = a + an * d;
        if d == 0.0 {
            d = TINY;
        }
        c = a + an / c;
        if c == 0.0 {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-a * a).exp() * ONE_OVER_SQRT_PI / f
}

/// The error function, accurate to about 1e-15 relative over the whole line.
///
/// Small `|x|` use the positive-term series, larger ones `1 - erfc` from a continued fraction
/// (see the private helpers for the formulas). NaN gives NaN, `±inf` gives `±1`.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < ERF_SWITCH { erf_series(a) } else { 1.0 - erfc_fraction(a) };
    r.copysign(x)
}

/// The complementary error function `1 - erf(x)`.
///
/// For `x >= 2` it comes straight from the continued fraction, so the tail keeps its relative
/// accuracy (about 1e-15) down to underflow; for `|x| < 2` it is `1 - erf(x)`, accurate to about
/// 1e-15 absolute (1e-13 relative at worst, near x = 2); for `x <= -2` it is `2 - erfc(-x)`.
pub fn erfc_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x >= ERF_SWITCH {
        erfc_fraction(x)
    } else if x <= -ERF_SWITCH {
        2.0 - erfc_fraction(-x)
    } else {
        1.0 - erf_series(x.abs()).copysign(x)
    }
}

/// GELU in its exact form, `x · Φ(x)` with `Φ(x) = 0.5 (1 + erf(x / sqrt 2))` the standard
/// normal CDF. For negative `x`, `Φ(x) = 0.5 erfc(-x / sqrt 2)`, which keeps the relative
/// accuracy of the small negative tail that `1 + erf` would cancel away.
#[inline]
pub fn gelu_f64(x: f64) -> f64 {
    let z = x * std::f64::consts::FRAC_1_SQRT_2;
    if x >= 0.0 { 0.5 * x * (1.0 + erf_f64(z)) } else { 0.5 * x * erfc_f64(-z) }
}

/// The standard normal CDF `Φ(x)`, accurate in both tails (see [`gelu_f64`]).
pub fn normal_cdf_f64(x: f64) -> f64 {
    let z = x * std::f64::consts::FRAC_1_SQRT_2;
    if x >= 0.0 { 0.5 * (1.0 + erf_f64(z)) } else { 0.5 * erfc_f64(-z) }
}

/// `d/dx gelu(x) = Φ(x) + x φ(x)`, with `φ(x) = e^(-x²/2) / sqrt(2 pi)` the normal density; the
/// backward rule of [`UnaryOp::Gelu`].
pub fn gelu_derivative_f64(x: f64) -> f64 {
    // 1 / sqrt(2 pi) = (2 / sqrt(pi)) · (1 / sqrt(2)) / 2
    const INV_SQRT_2PI: f64 = std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2 / 2.0;
    normal_cdf_f64(x) + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
}

/// [`gelu_derivative_f64`] evaluated in f64 and rounded once to f32.
pub fn gelu_derivative_f32(x: f32) -> f32 {
    gelu_derivative_f64(x as f64) as f32
}

// ---- elementwise loops ------------------------------------------------------------------

/// `f` applied to every element of a view (contiguous or strided), in row-major order of the
/// view, threaded with the fixed chunks of `cpu::parallel` (thread-count invariant).
pub(crate) fn map_view<T: WithDType, U: Send + Default + Clone>(
    t: &Tensor,
    op: &'static str,
    f: impl Fn(T) -> U + Sync + Send,
) -> Result<Vec<U>> {
    let data = t.cpu_slice::<T>(op)?;
    if let Some((a, b)) = t.layout().contiguous_range() {
        return Ok(parallel::map(&data[a..b], f));
    }
    let layout = t.layout();
    let mut out = vec![U::default(); t.elem_count()];
    parallel::fill_chunks(&mut out, |start, chunk| {
        parallel::for_offsets_in(layout, start, chunk.len(), |j, off| chunk[j] = f(data[off]))
    });
    Ok(out)
}

impl Tensor {
    /// Maps every element of a float tensor with `f64_fn` (f64) or `f32_fn` (f32, and bf16/f16
    /// widened to f32 and rounded once); integer dtypes are an error naming `op`.
    fn map_float(
        &self,
        op: &'static str,
        f64_fn: impl Fn(f64) -> f64 + Sync + Send,
        f32_fn: impl Fn(f32) -> f32 + Sync + Send,
    ) -> Result<Tensor> {
        let storage = match self.dtype() {
            DType::F64 => CpuStorage::F64(map_view(self, op, f64_fn)?),
            DType::F32 => CpuStorage::F32(map_view(self, op, f32_fn)?),
            DType::BF16 => CpuStorage::BF16(map_view(self, op, |x: bf16| bf16::from_f32(f32_fn(x.to_f32())))?),
            DType::F16 => CpuStorage::F16(map_view(self, op, |x: f16| f16::from_f32(f32_fn(x.to_f32())))?),
            dt => return Err(Error::dtype(op, dt, "a floating-point dtype is required")),
        };
        Tensor::from_cpu_storage(storage, self.shape())
    }

    /// Applies `op` to every element. Float dtypes only (an integer tensor is an
    /// `UnsupportedDType` error); bf16 and f16 compute in f32 and round once. The result is a new
    /// contiguous tensor of the same shape and dtype.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::unary(self, Some(op));
        }
        // One monomorphised loop per op, so the `match` inside `apply_*` folds away and the
        // loops vectorise where the function allows.
        macro_rules! dispatch {
            ($($v:ident),*) => {
                match op {
                    $(UnaryOp::$v => self.map_float(
                        op.name(),
                        |x| UnaryOp::$v.apply_f64(x),
                        |x| UnaryOp::$v.apply_f32(x),
                    ),)*
                }
            };
        }
        dispatch!(Neg, Exp, Log, Sqrt, Rsqrt, Tanh, Silu, Gelu, Sigmoid, Softplus, Relu, Abs, Square, Recip, Sin, Cos)
    }

    /// The gradient of [`Tensor::silu`] for the output gradient `grad` (same shape and dtype):
    /// `grad * s (1 + x (1 - s))` with `s = sigmoid(x)`, in one pass (f64 for f64, f32 otherwise,
    /// rounded once).
    pub fn silu_backward(&self, grad: &Tensor) -> Result<Tensor> {
        const OP: &str = "silu_backward";
        if grad.shape() != self.shape() || grad.dtype() != self.dtype() {
            return Err(Error::shape(OP, self.shape(), grad.shape(), "the gradient must match the input in shape and dtype"));
        }
        let (x, g) = (self.contiguous()?, grad.contiguous()?);
        fn zip<T: WithDType>(x: &Tensor, g: &Tensor, f: impl Fn(T, T) -> T + Sync + Send) -> Result<Vec<T>> {
            // Errors (rather than a CPU loop over nothing) for tensors on another device.
            let (xs, gs) = (super::norm::dense::<T>(x, OP)?, super::norm::dense::<T>(g, OP)?);
            Ok(parallel::zip_with(xs, gs, f))
        }
        let f32_rule = |x: f32, g: f32| {
            let s = sigmoid_f32(x);
            g * (s * (1.0 + x * (1.0 - s)))
        };
        let storage = match self.dtype() {
            DType::F64 => CpuStorage::F64(zip(&x, &g, |x: f64, g: f64| {
                let s = sigmoid_f64(x);
                g * (s * (1.0 + x * (1.0 - s)))
            })?),
            DType::F32 => CpuStorage::F32(zip(&x, &g, f32_rule)?),
            DType::BF16 => CpuStorage::BF16(zip(&x, &g, |x: bf16, g: bf16| bf16::from_f32(f32_rule(x.to_f32(), g.to_f32())))?),
            DType::F16 => CpuStorage::F16(zip(&x, &g, |x: f16, g: f16| f16::from_f32(f32_rule(x.to_f32(), g.to_f32())))?),
            dt => return Err(Error::dtype(OP, dt, "a floating-point dtype is required")),
        };
        Tensor::from_cpu_storage(storage, self.shape())
    }

    /// `-x` elementwise (float dtypes).
    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg)
    }
    /// `e^x` elementwise (float dtypes).
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp)
    }
    /// Natural logarithm elementwise (float dtypes); negative inputs give NaN, 0 gives `-inf`.
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log)
    }
    /// Square root elementwise (float dtypes); negative inputs give NaN.
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt)
    }
    /// `1 / sqrt(x)` elementwise (float dtypes).
    pub fn rsqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Rsqrt)
    }
    /// Hyperbolic tangent elementwise (float dtypes).
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh)
    }
    /// `x * sigmoid(x)` elementwise (float dtypes).
    pub fn silu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Silu)
    }
    /// Exact (erf) GELU elementwise (float dtypes).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu)
    }
    /// Logistic sigmoid elementwise, stable for any `|x|` (float dtypes).
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid)
    }
    /// `ln(1 + e^x)` elementwise, stable for any `x` (float dtypes).
    pub fn softplus(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Softplus)
    }
    /// `max(x, 0)` elementwise, NaN kept (float dtypes).
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu)
    }
    /// `|x|` elementwise (float dtypes).
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs)
    }
    /// `x * x` elementwise (float dtypes).
    pub fn square(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Square)
    }
    /// `1 / x` elementwise (float dtypes).
    pub fn recip(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Recip)
    }
    /// Sine elementwise (float dtypes).
    pub fn sin(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sin)
    }
    /// Cosine elementwise (float dtypes).
    pub fn cos(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Cos)
    }

    /// `x * mul + add` elementwise (float dtypes). f64 computes in f64; f32, bf16 and f16 compute
    /// in f32 with `mul` and `add` rounded to f32, like every other f32 elementwise op.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            use super::binary::BinaryOp;
            return crate::cuda::ops::scalar_ops("affine", self, &[(BinaryOp::Mul, mul), (BinaryOp::Add, add)]);
        }
        let (m32, a32) = (mul as f32, add as f32);
        self.map_float("affine", move |x| x * mul + add, move |x| x * m32 + a32)
    }

    /// `x ^ exponent` elementwise (float dtypes), with the IEEE `pow` conventions (a negative
    /// base and a non-integer exponent give NaN). f32/bf16/f16 use the exponent rounded to f32.
    pub fn powf(&self, exponent: f64) -> Result<Tensor> {
        let e32 = exponent as f32;
        self.map_float("powf", move |x| x.powf(exponent), move |x| x.powf(e32))
    }

    /// `min(max(x, min), max)` elementwise, any dtype, keeping it (PyTorch's order: with
    /// `min > max` every element becomes `max`). NaN elements stay NaN. For integer dtypes the
    /// bounds are rounded inward (`ceil(min)`, `floor(max)`) and saturated to the dtype's range.
    /// A NaN bound is an `InvalidArgument` error.
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        const OP: &str = "clamp";
        if min.is_nan() || max.is_nan() {
            return Err(Error::invalid(OP, self.shape(), format!("bounds must not be NaN (min {min}, max {max})")));
        }
        fn run<T: WithDType>(t: &Tensor, lo: f64, hi: f64) -> Result<CpuStorage> {
            let (lo, hi) = if T::DTYPE.is_float() { (lo, hi) } else { (lo.ceil(), hi.floor()) };
            let (lo, hi) = (T::from_f64(lo), T::from_f64(hi));
            // Written with `<`/`>` so that a NaN element compares false and passes through.
            let v = map_view(t, OP, move |x: T| {
                let y = if x < lo { lo } else { x };
                if y > hi { hi } else { y }
            })?;
            Ok(T::into_storage(v))
        }
        let storage = match self.dtype() {
            DType::F64 => run::<f64>(self, min, max)?,
            DType::F32 => run::<f32>(self, min, max)?,
            DType::BF16 => run::<bf16>(self, min, max)?,
            DType::F16 => run::<f16>(self, min, max)?,
            DType::U8 => run::<u8>(self, min, max)?,
            DType::U32 => run::<u32>(self, min, max)?,
            DType::I64 => run::<i64>(self, min, max)?,
        };
        Tensor::from_cpu_storage(storage, self.shape())
    }
}

// Added for the autograd crate (the backward rule of `UnaryOp::Gelu`).
impl Tensor {
    /// `d/dx gelu(x) = Φ(x) + x φ(x)` elementwise (float dtypes), the derivative of the exact
    /// (erf) GELU that [`Tensor::gelu`] computes. f64 computes in f64; f32, bf16 and f16 evaluate
    /// [`gelu_derivative_f64`] in f64 and round once (it is cheap next to the backward's other
    /// work, and keeps both tails accurate).
    pub fn gelu_derivative(&self) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::unary(self, None);
        }
        self.map_float("gelu_derivative", gelu_derivative_f64, gelu_derivative_f32)
    }
}

#[cfg(test)]
mod tests {
    /// Distance of `got` from the exact `want` in f32 units in the last place of `want`.
    fn f32_ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn exp_f32_is_within_two_ulp_over_the_normal_range() {
        // Every 61st f32 bit pattern in [-86.9, 88.72]: about 35 million values, both signs.
        let mut worst = (0.0, 0.0f32);
        for bits in (0..0x42b1_7218u32).step_by(61) {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                if !(-86.9..=88.72).contains(&x) {
                    continue;
                }
                let e = f32_ulps(super::exp_f32(x), (x as f64).exp());
                if e > worst.0 {
                    worst = (e, x);
                }
            }
        }
        assert!(worst.0 <= 2.0, "{} ulp at x = {}", worst.0, worst.1);
        assert_eq!(super::exp_f32(0.0), 1.0);
        assert_eq!(super::exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(super::exp_f32(88.8), f32::INFINITY);
        assert_eq!(super::exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp_f32(-87.0), 0.0);
        assert!(super::exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn exp_f64_is_within_two_ulp_of_libm_over_the_normal_range() {
        // Ten million points spread over [-707, 709.78] (a multiplicative congruential walk over
        // the bit patterns, both signs), plus every integer and the ends.
        let ulp = |w: f64| f64::from_bits(w.abs().to_bits() + 1) - w.abs();
        let mut worst = (0.0, 0.0f64);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let check = |x: f64, worst: &mut (f64, f64)| {
            let want = x.exp();
            let e = (super::exp_f64(x) - want).abs() / ulp(want);
            if e > worst.0 {
                *worst = (e, x);
            }
        };
        for _ in 0..10_000_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // Uniform exponent of the magnitude (2^-60 .. 2^10), so small arguments are covered.
            let mag = f64::from_bits((state >> 12) | (((state >> 2) % 70 + 963) << 52));
            let x = if state & 1 == 0 { mag } else { -mag };
            if (-707.0..=709.78).contains(&x) {
                check(x, &mut worst);
            }
        }
        for i in -707..=709 {
            check(f64::from(i), &mut worst);
        }
        assert!(worst.0 <= 2.0, "{} ulp at x = {:e}", worst.0, worst.1);
        assert_eq!(super::exp_f64(0.0), 1.0);
        assert_eq!(super::exp_f64(f64::INFINITY), f64::INFINITY);
        assert_eq!(super::exp_f64(709.8), f64::INFINITY);
        assert_eq!(super::exp_f64(f64::NEG_INFINITY), 0.0);
        assert_eq!(super::exp_f64(-707.5), 0.0);
        assert!(super::exp_f64(f64::NAN).is_nan());
        assert!(super::exp_f64(709.78).is_finite());
    }

    #[test]
    fn sigmoid_f32_matches_f64_and_saturates() {
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.004; // [-80, 80]
            let want = super::sigmoid_f64(x as f64);
            let got = super::sigmoid_f32(x);
            // Tails: relative accuracy down to the flush of exp_f32 (e^-86.9).
            assert!(f32_ulps(got, want) <= 4.0, "x = {x}: {got} vs {want}");
        }
        assert_eq!(super::sigmoid_f32(100.0), 1.0);
        assert_eq!(super::sigmoid_f32(-100.0), 0.0);
        assert_eq!(super::sigmoid_f32(0.0), 0.5);
        assert!(super::sigmoid_f32(f32::NAN).is_nan());
    }

    /// `silu_backward` against `g * d/dx silu(x)` in f64, for strided inputs and every float
    /// dtype, with the f32 rule's bits for f32 and bf16.
    #[test]
    fn silu_backward_matches_derivative() {
        use super::super::norm::testing::{view_of, values};
        for dtype in [DType::F64, DType::F32, DType::BF16, DType::F16] {
            for mode in 0u8..3 {
                let (xv, gv) = (values(40_000, 3, 12.0), values(40_000, 4, 2.0));
                let x = view_of(&xv, &[200, 200], dtype, mode);
                let g = view_of(&gv, &[200, 200], dtype, mode + 1);
                let got = x.silu_backward(&g).unwrap().to_vec_f64().unwrap();
                let (xs, gs) = (x.to_vec_f64().unwrap(), g.to_vec_f64().unwrap());
                let tol = match dtype { DType::F64 => 1e-14, DType::F32 => 1e-6, DType::BF16 => 1e-2, _ => 2e-3 };
                for ((o, &xi), &gi) in got.iter().zip(&xs).zip(&gs) {
                    let s = 1.0 / (1.0 + (-xi).exp());
                    let want = gi * s * (1.0 + xi * (1.0 - s));
                    assert!((o - want).abs() <= tol * (1.0 + want.abs()), "{dtype:?} x={xi}: {o} vs {want}");
                }
            }
        }
        let x = Tensor::zeros(&[3], DType::F32, &Device::Cpu).unwrap();
        assert!(x.silu_backward(&Tensor::zeros(&[4], DType::F32, &Device::Cpu).unwrap()).unwrap_err().to_string().contains("silu_backward"));
        let i = Tensor::zeros(&[3], DType::I64, &Device::Cpu).unwrap();
        assert!(i.silu_backward(&i).is_err());
    }

    /// `add_owned` gives the bits of `add`, writes in place only when it owns the buffer alone,
    /// and never changes a tensor another handle can see.
    #[test]
    fn add_owned_matches_add_and_respects_sharing() {
        let mut rng = crate::Rng::new(9);
        for dtype in [DType::F32, DType::F64, DType::BF16] {
            let a = Tensor::randn(&mut rng, 0.0, 1.0, &[300, 301], dtype, &Device::Cpu).unwrap();
            let b = Tensor::randn(&mut rng, 0.0, 1.0, &[300, 301], dtype, &Device::Cpu).unwrap();
            let want = a.add(&b).unwrap().to_vec_f64().unwrap();
            let shared = a.clone();
            let before = shared.to_vec_f64().unwrap();
            assert_eq!(a.add_owned(&b).unwrap().to_vec_f64().unwrap(), want);
            assert_eq!(shared.to_vec_f64().unwrap(), before, "a shared buffer must not change");
            let alone = shared.to_vec_f64().map(|v| Tensor::from_vec(v, &[300, 301], &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
            let ptr = alone.storage() as *const _;
            let sum = alone.add_owned(&b).unwrap();
            assert_eq!(sum.to_vec_f64().unwrap(), want);
            let strided = Tensor::from_vec(before.clone(), &[300, 301], &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let bt = b.t().unwrap().contiguous().unwrap().t().unwrap();
            assert_eq!(strided.add_owned(&bt).unwrap().to_vec_f64().unwrap(), want);
            if matches!(dtype, DType::F32 | DType::F64) {
                assert!(std::ptr::eq(sum.storage(), ptr), "an unshared f32/f64 buffer is reused");
            }
        }
        let a = Tensor::zeros(&[2, 3], DType::F32, &Device::Cpu).unwrap();
        assert!(a.add_owned(&Tensor::zeros(&[4, 3], DType::F32, &Device::Cpu).unwrap()).is_err());
        let a = Tensor::ones(&[2, 3], DType::F32, &Device::Cpu).unwrap();
        assert_eq!(a.add_owned(&Tensor::ones(&[3], DType::F32, &Device::Cpu).unwrap()).unwrap().to_vec::<f32>().unwrap(), vec![2.0; 6]);
    }
    use super::*;
    use crate::Device;
    use proptest::prelude::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    /// `(x, erf(x), erfc(x))` from mpmath at 40 digits:
    /// `python3 -c "import mpmath as m; m.mp.dps=40; print([(x, m.erf(x), m.erfc(x)) for x in ...])"`.
    // mpmath's digits are kept as printed; the compiler rounds them to the nearest f64.
    #[allow(clippy::excessive_precision)]
    const ERF_TABLE: [(f64, f64, f64); 12] = [
        (1e-10, 1.128379167095512573892398e-10, 0.9999999998871620832904487),
        (0.1, 0.1124629160182848922032751, 0.8875370839817151077967249),
        (0.5, 0.5204998778130465376827467, 0.4795001221869534623172533),
        (1.0, 0.8427007929497148693412206, 0.1572992070502851306587794),
        (1.5, 0.9661051464753107270669763, 0.03389485352468927293302374),
        (1.99, 0.9951114131996169972383472, 0.00488858680038300276165276),
        (2.0, 0.9953222650189527341620693, 0.004677734981047265837930744),
        (2.5, 0.9995930479825550410604358, 0.0004069520174449589395642157),
        (3.0, 0.9999779095030014145586272, 0.00002209049699858544137277613),
        (4.5, 0.9999999998033839558457113, 1.96616044154288747627916e-10),
        (6.0, 0.9999999999999999784802633, 2.151973671249891311659335e-17),
        (10.0, 1.0, 2.088487583762544757000786e-45),
    ];

    #[test]
    fn erf_matches_mpmath() {
        for &(x, e, ec) in &ERF_TABLE {
            let (got, gotc) = (erf_f64(x), erfc_f64(x));
            assert!((got - e).abs() <= 2e-15 * e, "erf({x}) = {got}, want {e}");
            assert!((erf_f64(-x) + e).abs() <= 2e-15 * e, "erf(-{x})");
            // erfc keeps ~1e-15 relative from x = 2 on (continued fraction) and ~1e-15 absolute
            // below (1 - erf).
            let tol = if x >= 2.0 { 4e-15 * ec } else { 2e-15 };
            assert!((gotc - ec).abs() <= tol, "erfc({x}) = {gotc}, want {ec}");
            assert!((erfc_f64(-x) - (2.0 - ec)).abs() <= 4e-15, "erfc(-{x})");
        }
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert_eq!(erf_f64(f64::NEG_INFINITY), -1.0);
        assert_eq!(erfc_f64(f64::INFINITY), 0.0);
        assert!(erf_f64(f64::NAN).is_nan() && erfc_f64(f64::NAN).is_nan());
        assert_eq!(erf_f64(0.0), 0.0);
    }

    #[test]
    fn gelu_and_derivative_known_values() {
        // gelu(1) = Φ(1) = 0.841344746068542948585232545632... and Φ(-3) = 0.00134989803163009452665..., from mpmath.
        assert!((gelu_f64(1.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
        // gelu(-3) = -3 Φ(-3) = -0.004049695...: relative accuracy in the negative tail.
        let want = -3.0 * 0.001_349_898_031_630_094_6;
        assert!((gelu_f64(-3.0) - want).abs() < 1e-15 * want.abs());
        assert_eq!(gelu_f64(0.0), 0.0);
        assert!(gelu_f64(f64::NAN).is_nan());
        // Derivative against a central difference.
        for &x in &[-4.0, -1.3, -0.2, 0.0, 0.7, 2.5] {
            let h = 1e-5;
            let fd = (gelu_f64(x + h) - gelu_f64(x - h)) / (2.0 * h);
            assert!((gelu_derivative_f64(x) - fd).abs() < 1e-9, "x = {x}");
        }
    }

    #[test]
    fn stable_activations_at_extremes() {
        assert_eq!(sigmoid_f64(-800.0), 0.0);
        assert_eq!(sigmoid_f64(800.0), 1.0);
        assert_eq!(sigmoid_f32(-200.0), 0.0);
        assert_eq!(UnaryOp::Softplus.apply_f64(1000.0), 1000.0);
        assert!((UnaryOp::Softplus.apply_f64(-50.0) - (-50f64).exp()).abs() < 1e-35);
        assert_eq!(UnaryOp::Softplus.apply_f32(100.0), 100.0);
        assert!(UnaryOp::Relu.apply_f32(f32::NAN).is_nan());
        assert_eq!(UnaryOp::Silu.apply_f64(-800.0), -0.0);
    }

    fn sample(x: f64, op: UnaryOp) -> f64 {
        // Keep each op on its domain so the comparison is meaningful.
        match op {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => x.abs() + 0.01,
            UnaryOp::Recip => if x.abs() < 0.01 { 0.5 } else { x },
            _ => x,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Every op on every float dtype, on a transposed + narrowed view, equals the scalar
        /// function applied to the same elements (f64 exactly; f32 within a few ulps of the f64
        /// reference; bf16/f16 equal to the f32 function rounded once).
        #[test]
        fn ops_match_scalar_functions(rows in 0usize..7, cols in 1usize..9, seed in any::<u64>()) {
            let mut rng = crate::Rng::new(seed);
            let base = Tensor::randn(&mut rng, 0.0, 3.0, &[cols, rows + 1], DType::F64, &Device::Cpu).unwrap();
            let view = base.t().unwrap().narrow(0, 1, rows).unwrap(); // [rows, cols], strided
            for op in UnaryOp::ALL {
                let xs: Vec<f64> = view.to_vec_f64().unwrap().into_iter().map(|x| sample(x, op)).collect();
                let x = Tensor::from_vec(xs.clone(), &[rows, cols], &Device::Cpu).unwrap();
                // The strided path: the same values read through a transposed view.
                let xt = x.t().unwrap().contiguous().unwrap().t().unwrap();
                prop_assert!(!xt.is_contiguous() || rows <= 1 || cols <= 1);
                let got64 = xt.unary(op).unwrap();
                prop_assert_eq!(got64.shape(), &[rows, cols]);
                let want: Vec<f64> = xs.iter().map(|&v| op.apply_f64(v)).collect();
                prop_assert_eq!(got64.to_vec::<f64>().unwrap(), want.clone());

                let x32 = xt.to_dtype(DType::F32).unwrap();
                let got32 = x32.unary(op).unwrap().to_vec::<f32>().unwrap();
                let inputs32 = x32.to_vec::<f32>().unwrap();
                for (i, (&g, &v)) in got32.iter().zip(&inputs32).enumerate() {
                    let r = op.apply_f64(v as f64);
                    // 8 f32 ulps of the result, or an absolute 1e-6 for results that pass near 0
                    // (sin/cos of large arguments, silu/gelu near their zero).
                    let tol = 8.0 * f32::EPSILON as f64 * r.abs() + 1e-6;
                    prop_assert!((g as f64 - r).abs() <= tol, "{} at {}: {} vs {}", op.name(), i, g, r);
                }
                for dt in [DType::BF16, DType::F16] {
                    let xh = xt.to_dtype(dt).unwrap();
                    let got = xh.unary(op).unwrap();
                    prop_assert_eq!(got.dtype(), dt);
                    let want: Vec<f64> = xh.to_vec_f64().unwrap().iter()
                        .map(|&v| Tensor::scalar(op.apply_f32(v as f32)).to_dtype(dt).unwrap().to_scalar_f64().unwrap())
                        .collect();
                    let got = got.to_vec_f64().unwrap();
                    for (g, w) in got.iter().zip(&want) {
                        prop_assert!(g == w || (g.is_nan() && w.is_nan()), "{} {:?}: {} vs {}", op.name(), dt, g, w);
                    }
                }
            }
        }

        /// affine, powf and clamp against their scalar definitions.
        #[test]
        fn affine_powf_clamp(n in 0usize..40, mul in -3.0f64..3.0, add in -3.0f64..3.0, e in -2.0f64..3.0, lo in -2.0f64..1.0, width in 0.0f64..3.0) {
            let xs: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 4.0).collect();
            let x = Tensor::from_vec(xs.clone(), &[n], &Device::Cpu).unwrap();
            let a = x.affine(mul, add).unwrap().to_vec::<f64>().unwrap();
            let p = x.abs().unwrap().powf(e).unwrap().to_vec::<f64>().unwrap();
            let c = x.clamp(lo, lo + width).unwrap().to_vec::<f64>().unwrap();
            for i in 0..n {
                prop_assert_eq!(a[i], xs[i] * mul + add);
                prop_assert_eq!(p[i].to_bits(), xs[i].abs().powf(e).to_bits());
                prop_assert_eq!(c[i], xs[i].max(lo).min(lo + width));
            }
            let a32 = x.to_dtype(DType::F32).unwrap().affine(mul, add).unwrap().to_vec::<f32>().unwrap();
            for i in 0..n {
                prop_assert_eq!(a32[i], (xs[i] as f32) * mul as f32 + add as f32);
            }
        }
    }

    #[test]
    fn clamp_integers_nan_and_inverted_bounds() {
        let x = Tensor::from_vec(vec![-5i64, 0, 3, 9], &[4], &Device::Cpu).unwrap();
        assert_eq!(x.clamp(-1.5, 4.5).unwrap().to_vec::<i64>().unwrap(), vec![-1, 0, 3, 4]);
        let u = Tensor::from_vec(vec![0u8, 7, 255], &[3], &Device::Cpu).unwrap();
        assert_eq!(u.clamp(-10.0, 300.0).unwrap().to_vec::<u8>().unwrap(), vec![0, 7, 255]);
        assert_eq!(u.clamp(5.0, 6.0).unwrap().to_vec::<u8>().unwrap(), vec![5, 6, 6]);
        let f = Tensor::from_vec(vec![f32::NAN, -3.0, 3.0], &[3], &Device::Cpu).unwrap();
        let c = f.clamp(-1.0, 1.0).unwrap().to_vec::<f32>().unwrap();
        assert!(c[0].is_nan());
        assert_eq!(&c[1..], &[-1.0, 1.0]);
        // min > max: everything becomes max, as in PyTorch.
        assert_eq!(f.clamp(2.0, 1.0).unwrap().to_vec::<f32>().unwrap()[1..], [1.0, 1.0]);
        let err = f.clamp(f64::NAN, 1.0).unwrap_err().to_string();
        assert!(err.starts_with("clamp:") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn integer_dtypes_are_rejected_with_the_op_name() {
        let x = Tensor::from_vec(vec![1u32, 2], &[2], &Device::Cpu).unwrap();
        let err = x.exp().unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "exp", dtype: DType::U32, .. }), "{err}");
        assert_eq!(err.to_string(), "exp: dtype u32 is not supported: a floating-point dtype is required");
        assert!(x.affine(1.0, 1.0).is_err() && x.powf(2.0).is_err());
    }

    #[test]
    fn scalars_and_empty_tensors() {
        let s = Tensor::scalar(2.0f32);
        assert_eq!(s.sqrt().unwrap().shape(), &[] as &[usize]);
        assert_eq!(s.square().unwrap().to_vec::<f32>().unwrap(), vec![4.0]);
        let e = Tensor::zeros(&[3, 0, 2], DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(e.gelu().unwrap().shape(), &[3, 0, 2]);
    }

    /// The threaded path (over 32768 elements) gives the same bits on 1 and 2 threads, for a
    /// contiguous and a strided input.
    #[test]
    fn thread_count_invariant() {
        let mut rng = crate::Rng::new(7);
        let x = Tensor::randn(&mut rng, 0.0, 2.0, &[300, 230], DType::F32, &Device::Cpu).unwrap();
        for input in [x.clone(), x.t().unwrap()] {
            let one = pool(1).install(|| input.gelu().unwrap().to_vec::<f32>().unwrap());
            let two = pool(2).install(|| input.gelu().unwrap().to_vec::<f32>().unwrap());
            assert_eq!(one, two);
            let want: Vec<f32> = input.to_vec::<f32>().unwrap().iter().map(|&v| UnaryOp::Gelu.apply_f32(v)).collect();
            assert_eq!(one, want);
        }
    }
}
