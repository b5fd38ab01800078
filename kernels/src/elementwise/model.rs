//! A CPU model of `elementwise.ptx`'s f32 math, instruction by instruction (`fma.rn` is
//! `mul_add`, `cvt.rni` is `round_ties_even`), checked against the oracle with the stated
//! tolerance over dense sweeps. It validates the algorithms and constants of the kernel here,
//! where no GPU runs; the GPU tests then check the PTX against the same oracle.

use super::cpu::unary_f64;
use super::{U_F32, UnaryOp, unary_tolerance};

// max then min, as the PTX: both drop a NaN (the NaN is restored at the end), clamp would not.
#[allow(clippy::manual_clamp)]
fn exp_f32(x: f32) -> f32 {
    let xc = x.max(-104.0).min(89.0);
    let k = (xc * f32::from_bits(0x3FB8AA3B)).round_ties_even();
    let r = (-k).mul_add(f32::from_bits(0x3F317200), xc);
    let r = (-k).mul_add(f32::from_bits(0x35BFBE8E), r);
    let mut p = f32::from_bits(0x39500D01);
    for c in [
        0x3AB60B61u32,
        0x3C088889,
        0x3D2AAAAB,
        0x3E2AAAAB,
        0x3F000000,
        0x3F800000,
        0x3F800000,
    ] {
        p = p.mul_add(r, f32::from_bits(c));
    }
    let ki = k as i32;
    let k1 = ki >> 1;
    let k2 = ki - k1;
    let s1 = f32::from_bits(((k1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((k2 + 127) as u32) << 23);
    let y = p * s1 * s2;
    if x.is_nan() { x } else { y }
}

fn expm1_f32(x: f32) -> f32 {
    if x.abs() < f32::from_bits(0x3EB17218) {
        let mut q = f32::from_bits(0x37D00D01);
        for c in [
            0x39500D01u32,
            0x3AB60B61,
            0x3C088889,
            0x3D2AAAAB,
            0x3E2AAAAB,
            0x3F000000,
        ] {
            q = q.mul_add(x, f32::from_bits(c));
        }
        (x * x).mul_add(q, x)
    } else {
        exp_f32(x) - 1.0
    }
}

fn atanh_s(s: f32) -> f32 {
    let w = s * s;
    let mut q = f32::from_bits(0x3D70F0F1);
    for c in [
        0x3D888889u32,
        0x3D9D89D9,
        0x3DBA2E8C,
        0x3DE38E39,
        0x3E124925,
        0x3E4CCCCD,
        0x3EAAAAAB,
    ] {
        q = q.mul_add(w, f32::from_bits(c));
    }
    (s * w).mul_add(q, s)
}

fn log_f32(x: f32) -> f32 {
    let small = x < f32::from_bits(0x0080_0000);
    let xs = if small { x * 8388608.0 } else { x };
    let bias = if small { -150 } else { -127 };
    let b = xs.to_bits();
    let mut e = ((b >> 23) & 255) as i32 + bias;
    let mut m = f32::from_bits((b & 0x7F_FFFF) | 0x3F80_0000);
    if m > f32::from_bits(0x3FB504F3) {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let l = atanh_s(s);
    let l = l + l;
    let ef = e as f32;
    let r = ef.mul_add(f32::from_bits(0x35BFBE8E), l);
    let mut r = ef.mul_add(f32::from_bits(0x3F317200), r);
    if x == f32::INFINITY {
        r = x;
    }
    if x == 0.0 {
        r = f32::NEG_INFINITY;
    }
    if x < 0.0 || x.is_nan() {
        r = f32::NAN;
    }
    r
}

fn sincos_f32(x: f32, c: u32) -> f32 {
    let xd = x as f64;
    let k = (xd * f64::from_bits(0x3FE45F306DC9C883)).round_ties_even();
    let r = (-k).mul_add(f64::from_bits(0x3FF921FB54442D18), xd);
    let r = (-k).mul_add(f64::from_bits(0x3C91A62633145C07), r);
    let w = r * r;
    let mut s = f64::from_bits(0xBD6AE7F3E733B81F);
    for c in [
        0x3DE6124613A86D09u64,
        0xBE5AE64567F544E4,
        0x3EC71DE3A556C734,
        0xBF2A01A01A01A01A,
        0x3F81111111111111,
        0xBFC5555555555555,
    ] {
        s = s.mul_add(w, f64::from_bits(c));
    }
    let s = (r * w).mul_add(s, r);
    let mut co = f64::from_bits(0x3D2AE7F3E733B81F);
    for c in [
        0xBDA93974A8C07C9Du64,
        0x3E21EED8EFF8D898,
        0xBE927E4FB7789F5C,
        0x3EFA01A01A01A01A,
        0xBF56C16C16C16C17,
        0x3FA5555555555555,
        0xBFE0000000000000,
        0x3FF0000000000000,
    ] {
        co = co.mul_add(w, f64::from_bits(c));
    }
    let q = (k as i64 as u32).wrapping_add(c);
    let v = if q & 1 != 0 { co } else { s };
    let v = if q & 2 != 0 { -v } else { v };
    v as f32
}

const ERF_SERIES: [u32; 23] = [
    0x3F800000, 0x3EAAAAAB, 0x3D888889, 0x3C1C09C1, 0x3A8AB356, 0x38C9BF09, 0x36F84D94, 0x35046DA4,
    0x32F946DB, 0x30D1EAD4, 0x2E9FEFDE, 0x2C5E8562, 0x2A0E69D8, 0x27A8C94C, 0x253A3F39, 0x22C04143,
    0x203A6DD5, 0x1DAA730C, 0x1B136A6B, 0x1871E9B6, 0x15BCCF62, 0x130C8285, 0x1047D612,
];

fn gelu_f32(x: f32, derivative: bool) -> f32 {
    let a = x.abs();
    let t = x * x;
    let lo = if a > 16.0 { 0.0 } else { x.mul_add(x, -t) };
    let e = exp_f32(t * -0.5);
    let e = e.mul_add(lo * -0.5, e);
    if a < f32::from_bits(0x4007C3B6) {
        let mut s = f32::from_bits(ERF_SERIES[22]);
        for n in (0..22).rev() {
            s = s.mul_add(t, f32::from_bits(ERF_SERIES[n]));
        }
        let erf = (a * f32::from_bits(0x3F4C422A)) * e * s;
        let g = erf.copysign(x);
        let h = x * 0.5;
        let y = h.mul_add(g, h);
        let cdf = g.mul_add(0.5, 0.5);
        let d = (x * e).mul_add(f32::from_bits(0x3ECC422A), cdf);
        if derivative { d } else { y }
    } else {
        let z = a * f32::from_bits(0x3F3504F3);
        let mut f = z;
        for n in (1..=32u32).rev() {
            f = z + (n as f32 * 0.5) / f;
        }
        let erfc = (e * f32::from_bits(0x3F106EBB)) / f;
        let q = erfc * 0.5;
        let y = if x > 0.0 { x * (1.0 - q) } else { x * q };
        let cdf = if x > 0.0 { 1.0 - q } else { q };
        let d = (x * e).mul_add(f32::from_bits(0x3ECC422A), cdf);
        let y = if derivative { d } else { y };
        if x.is_nan() { x } else { y }
    }
}

fn sigmoid_f32(x: f32) -> f32 {
    let pos = x >= 0.0;
    let e = exp_f32(if pos { -x } else { x });
    (if pos { 1.0 } else { e }) / (e + 1.0)
}

/// The model of `unary_eval`.
pub fn unary_model(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => exp_f32(x),
        UnaryOp::Log => log_f32(x),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Tanh => {
            let a = x.abs();
            let e = expm1_f32(a + a);
            let t = if a > 10.0 { 1.0 } else { e / (e + 2.0) };
            t.copysign(x)
        }
        UnaryOp::Silu => x * sigmoid_f32(x),
        UnaryOp::Gelu => gelu_f32(x, false),
        UnaryOp::GeluDerivative => gelu_f32(x, true),
        UnaryOp::Sigmoid => sigmoid_f32(x),
        UnaryOp::Softplus => {
            let t = exp_f32(-x.abs());
            let s = t / (t + 2.0);
            let l = atanh_s(s);
            x.max(0.0) + (l + l)
        }
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
        UnaryOp::Sin => sincos_f32(x, 0),
        UnaryOp::Cos => sincos_f32(x, 1),
    }
}

/// Whether `got` (f32) meets the oracle for input `x`.
pub fn accept_f32(op: UnaryOp, x: f32, got: f32) -> bool {
    let want = unary_f64(op, x as f64);
    if want.is_nan() {
        return got.is_nan();
    }
    let w32 = want as f32;
    if w32.is_infinite() {
        return got == w32;
    }
    let tol = unary_tolerance(op, x as f64, want, U_F32, 0.0);
    (got as f64 - want).abs() <= tol
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs: a log-spaced sweep of both signs over every binade from 2^-30 to 2^7, dense (and
    /// every f32) around the branch points, plus specials.
    fn inputs() -> Vec<f32> {
        let mut v = vec![
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut b = 0x3080_0000u32; // 2^-30
        while b < 0x4340_0000 {
            // up to 192
            v.push(f32::from_bits(b));
            v.push(-f32::from_bits(b));
            b += 997;
        }
        for c in [
            0.3466f32,
            std::f32::consts::LN_2,
            2.0,
            2.828427,
            2.12132,
            10.0,
            16.0,
            88.7,
            89.0,
            -87.3,
            -103.9,
            -104.0,
        ] {
            let cb = c.abs().to_bits();
            for d in 0..2000u32 {
                for s in [1.0f32, -1.0] {
                    v.push(s * f32::from_bits(cb - 1000 + d));
                }
            }
        }
        // subnormals and tiny values for log / exp / tanh
        for k in [1u32, 7, 1000, 0x7F_FFFF, 0x80_0000] {
            v.push(f32::from_bits(k));
        }
        v
    }

    fn check(op: UnaryOp, domain: impl Fn(f32) -> bool) {
        let mut worst = (0.0f64, 0.0f32);
        for x in inputs().into_iter().filter(|x| domain(*x)) {
            let got = unary_model(op, x);
            assert!(
                accept_f32(op, x, got),
                "{op:?}({x:e} = {:#010x}): model {got:e}, oracle {:e}",
                x.to_bits(),
                unary_f64(op, x as f64)
            );
            let want = unary_f64(op, x as f64);
            if want.is_finite() && want != 0.0 && (want as f32).is_normal() {
                let e = ((got as f64 - want) / want).abs() / U_F32;
                if e > worst.0 {
                    worst = (e, x);
                }
            }
        }
        println!(
            "{op:?}: worst relative error {:.2} u at x = {:e}",
            worst.0, worst.1
        );
    }

    #[test]
    fn sin_cos_large_arguments() {
        // Every 4099th f32 from 192 up to 2^30 (both signs): the f64 reduction keeps 2 ulps.
        let mut b = 0x4340_0000u32;
        while b < 0x4E80_0000 {
            for x in [f32::from_bits(b), -f32::from_bits(b)] {
                for op in [UnaryOp::Sin, UnaryOp::Cos] {
                    let got = unary_model(op, x);
                    assert!(
                        accept_f32(op, x, got),
                        "{op:?}({x:e}): model {got:e}, oracle {:e}",
                        unary_f64(op, x as f64)
                    );
                }
            }
            b += 4099;
        }
    }

    #[test]
    fn model_meets_the_tolerance_for_every_op() {
        for op in UnaryOp::ALL {
            match op {
                UnaryOp::Sin | UnaryOp::Cos => check(op, |x| !x.is_finite() || x.abs() < 1.0e9),
                _ => check(op, |_| true),
            }
        }
    }
}
