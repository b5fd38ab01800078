//! Our own f64 `ln` and `sin`/`cos` of `2 pi u`, for the Box-Muller normals.
//!
//! Why not `f64::ln`/`sin`/`cos`: std leaves their last bit to the platform's libm, and PTX has no
//! f64 transcendental instructions at all, so a GPU kernel could never reproduce them bit for bit.
//! These routines use only IEEE-754 operations that are correctly rounded everywhere (`+ - * /`,
//! `floor`, exact bit manipulation), each written as one separately rounded operation in a fixed
//! order, no fused multiply-add. `philox.ptx` (`philox_normal_f32`/`_f64`) repeats the very same
//! sequence with `add.rn`/`sub.rn`/`mul.rn`/`div.rn.f64` (the `.rn` forms are never contracted
//! into an FMA by ptxas), so CPU and GPU agree bit for bit. Any edit here must be made there too.
//!
//! Coefficients are Taylor coefficients (the nearest f64 to `2 / (2j + 1)` and `1 / k!`, checked
//! by the tests), not minimax ones: a few more terms, nothing to re-derive. Accuracy, measured by
//! the tests over many inputs: [`ln`] within 1 ulp of std's `ln`; [`sincos_2pi`] within 2 ulp of
//! std's `sin`/`cos` at `fl(2 pi u)` corrected to first order for the rounding of `2 pi u` (a
//! reference good to about 1 ulp; std at `fl(2 pi u)` alone is far off near the zeros).

/// `ln 2` split so that `k * LN2_HI` is exact for every exponent `k` (33 significant bits).
const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEF0_0000);
/// `ln 2 - LN2_HI`, rounded.
const LN2_LO: f64 = f64::from_bits(0x3DD4_73DE_6AF2_78ED);
/// Bits of the nearest f64 to `sqrt(2)`: mantissas above it are halved.
const SQRT2_BITS: u64 = 0x3FF6_A09E_667F_3BCD;
/// `2 pi`, rounded.
pub const TAU: f64 = f64::from_bits(0x4019_21FB_5444_2D18);

/// `L[j - 1]` = `2 / (2j + 1)`, j = 1..=10: `ln(1+f) = 2 atanh(s) = 2s + s (sum_j L_j s^2j)`.
const LN_C: [f64; 10] = [
    f64::from_bits(0x3FE5_5555_5555_5555),
    f64::from_bits(0x3FD9_9999_9999_999A),
    f64::from_bits(0x3FD2_4924_9249_2492),
    f64::from_bits(0x3FCC_71C7_1C71_C71C),
    f64::from_bits(0x3FC7_45D1_745D_1746),
    f64::from_bits(0x3FC3_B13B_13B1_3B14),
    f64::from_bits(0x3FC1_1111_1111_1111),
    f64::from_bits(0x3FBE_1E1E_1E1E_1E1E),
    f64::from_bits(0x3FBA_F286_BCA1_AF28),
    f64::from_bits(0x3FB8_6186_1861_8618),
];

/// `S[n]` = `(-1)^(n+1) / (2n + 3)!`, n = 0..=7: `sin a = a + a z (S_0 + z S_1 + ...)`, `z = a^2`.
const SIN_C: [f64; 8] = [
    f64::from_bits(0xBFC5_5555_5555_5555), // -1/3!
    f64::from_bits(0x3F81_1111_1111_1111), // 1/5!
    f64::from_bits(0xBF2A_01A0_1A01_A01A), // -1/7!
    f64::from_bits(0x3EC7_1DE3_A556_C734), // 1/9!
    f64::from_bits(0xBE5A_E645_67F5_44E4), // -1/11!
    f64::from_bits(0x3DE6_1246_13A8_6D09), // 1/13!
    f64::from_bits(0xBD6A_E7F3_E733_B81F), // -1/15!
    f64::from_bits(0x3CE9_52C7_7030_AD4A), // 1/17!
];

/// `C[n]` = `(-1)^(n+1) / (2n + 2)!`, n = 0..=8: `cos a = 1 + z (C_0 + z C_1 + ...)`.
const COS_C: [f64; 9] = [
    f64::from_bits(0xBFE0_0000_0000_0000), // -1/2!
    f64::from_bits(0x3FA5_5555_5555_5555), // 1/4!
    f64::from_bits(0xBF56_C16C_16C1_6C17), // -1/6!
    f64::from_bits(0x3EFA_01A0_1A01_A01A), // 1/8!
    f64::from_bits(0xBE92_7E4F_B778_9F5C), // -1/10!
    f64::from_bits(0x3E21_EED8_EFF8_D898), // 1/12!
    f64::from_bits(0xBDA9_3974_A8C0_7C9D), // -1/14!
    f64::from_bits(0x3D2A_E7F3_E733_B81F), // 1/16!
    f64::from_bits(0xBCA6_8278_63B9_7D97), // -1/18!
];

/// Natural log of a positive, finite, normal `x` (the only inputs Box-Muller has: `u` in
/// `[2^-33, 1)`). Other inputs return NaN (that guard has no PTX twin: the GPU never sees them).
///
/// `x = 2^k m` with `m` in `[sqrt2/2, sqrt2]`, `f = m - 1` (exact), `s = f / (2 + f)`,
/// `ln m = 2 atanh s = f - h + s (h + R)` with `h = f^2 / 2` and `R = sum_j L_j s^2j`, then
/// `ln x = k LN2_HI - ((h - (s (h + R) + k LN2_LO)) - f)`.
pub fn ln(x: f64) -> f64 {
    if !(x.is_normal() && x > 0.0) {
        return f64::NAN;
    }
    let bits = x.to_bits();
    let mut k = ((bits >> 52) as i64) - 1023;
    let mut mbits = (bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000;
    if mbits > SQRT2_BITS {
        mbits -= 1 << 52; // m / 2, exact
        k += 1;
    }
    let f = f64::from_bits(mbits) - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let mut r = LN_C[9];
    for c in LN_C[..9].iter().rev() {
        r = r * z + c;
    }
    r *= z;
    let h = 0.5 * f * f;
    let kf = k as f64;
    kf * LN2_HI - ((h - (s * (h + r) + kf * LN2_LO)) - f)
}

/// `(sin(2 pi u), cos(2 pi u))` for `u` in `[0, 1]`.
///
/// The reduction is exact: `q = floor(4u + 1/2)`, `r = u - q/4` (`|r| <= 1/8`, exact by Sterbenz),
/// so the only rounding before the polynomials is `a = r * TAU` (`|a| <= pi/4`); the quadrant
/// `q mod 4` then swaps and negates `(sin a, cos a)`.
pub fn sincos_2pi(u: f64) -> (f64, f64) {
    let qf = (4.0 * u + 0.5).floor();
    let r = u - qf * 0.25;
    let a = r * TAU;
    let z = a * a;
    let mut ps = SIN_C[7];
    for c in SIN_C[..7].iter().rev() {
        ps = ps * z + c;
    }
    let s = a + (a * z) * ps;
    let mut pc = COS_C[8];
    for c in COS_C[..8].iter().rev() {
        pc = pc * z + c;
    }
    let c = 1.0 + z * pc;
    match (qf as i64) & 3 {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// The Box-Muller pair of two uniforms in (0, 1): `(r cos t, r sin t)`, `r = sqrt(-2 ln u0)`,
/// `t = 2 pi u1`.
pub fn box_muller(u0: f64, u1: f64) -> (f64, f64) {
    let r = (-2.0 * ln(u0)).sqrt();
    let (s, c) = sincos_2pi(u1);
    (r * c, r * s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place of `want`.
    fn ulps(got: f64, want: f64) -> f64 {
        let w = want.abs();
        let ulp = if w < f64::MIN_POSITIVE {
            f64::from_bits(1)
        } else {
            f64::from_bits(w.to_bits() & 0x7FF0_0000_0000_0000) * f64::EPSILON
        };
        (got - want).abs() / ulp
    }

    /// A small xorshift stream: the test inputs must not depend on the code under test.
    fn xs(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn coefficients_are_the_rounded_taylor_terms() {
        for (j, c) in LN_C.iter().enumerate() {
            assert_eq!(*c, 2.0 / (2 * j + 3) as f64, "L{}", j + 1);
        }
        let fact = |k: u64| (1..=k).product::<u64>() as f64; // exact up to 18!
        for (n, c) in SIN_C.iter().enumerate() {
            let sign = if n % 2 == 0 { -1.0 } else { 1.0 };
            assert_eq!(*c, sign / fact(2 * n as u64 + 3), "S{n}");
        }
        for (n, c) in COS_C.iter().enumerate() {
            let sign = if n % 2 == 0 { -1.0 } else { 1.0 };
            assert_eq!(*c, sign / fact(2 * n as u64 + 2), "C{n}");
        }
        assert_eq!(TAU, std::f64::consts::TAU);
        assert_eq!(f64::from_bits(SQRT2_BITS), std::f64::consts::SQRT_2);
        // LN2_HI has 33 significant bits and LN2_HI + LN2_LO is ln 2 to f64 precision.
        assert_eq!(LN2_HI.to_bits() & 0xF_FFFF, 0);
        assert_eq!(LN2_HI + LN2_LO, std::f64::consts::LN_2);
    }

    #[test]
    fn ln_is_within_one_ulp_of_std() {
        let mut st = 0x9E37_79B9_7F4A_7C15u64;
        let mut worst = 0f64;
        let mut check = |x: f64| {
            let e = ulps(ln(x), x.ln());
            assert!(
                e <= 1.0,
                "ln({x:e}) = {:e}, std {:e}: {e} ulp",
                ln(x),
                x.ln()
            );
            worst = worst.max(e);
        };
        // Every uniform Box-Muller can draw has the form (x + 0.5) 2^-32: the edges, then random.
        for x in [
            0u32,
            1,
            2,
            3,
            0x7FFF_FFFF,
            0x8000_0000,
            0xB504_F333,
            0xB504_F334,
            u32::MAX - 1,
            u32::MAX,
        ] {
            check((x as f64 + 0.5) * (1.0 / 4_294_967_296.0));
        }
        for _ in 0..400_000 {
            let x = xs(&mut st) as u32;
            check((x as f64 + 0.5) * (1.0 / 4_294_967_296.0));
        }
        // Arbitrary positive normal numbers, and numbers near 1 (where ln is smallest).
        for _ in 0..200_000 {
            let b = xs(&mut st) % 0x7FE0_0000_0000_0000 + 0x0010_0000_0000_0000;
            check(f64::from_bits(b));
            let d = (xs(&mut st) >> 11) as f64 * 2f64.powi(-60);
            check(1.0 + d);
            check(1.0 - d);
        }
        println!("ln: worst {worst} ulp");
        assert_eq!(ln(1.0), 0.0);
        assert!(ln(0.0).is_nan() && ln(-1.0).is_nan() && ln(f64::INFINITY).is_nan());
    }

    /// `sin(2 pi u)`, `cos(2 pi u)` to about 1 ulp: std at `t = fl(2 pi u)` corrected to first
    /// order by the rounding error `d = 2 pi u - t`, itself exact to ~2^-106 (fma + the tail of 2 pi).
    fn reference(u: f64) -> (f64, f64) {
        let t = TAU * u;
        let tau_lo = f64::from_bits(0x3CB1_A626_3314_5C07); // 2 pi - TAU
        let d = TAU.mul_add(u, -t) + tau_lo * u;
        (t.sin() + t.cos() * d, t.cos() - t.sin() * d)
    }

    #[test]
    fn sincos_2pi_is_within_two_ulp() {
        let mut st = 0x2545_F491_4F6C_DD1Du64;
        let mut worst = 0f64;
        let mut check = |u: f64| {
            let (s, c) = sincos_2pi(u);
            let (ws, wc) = reference(u);
            let (es, ec) = (ulps(s, ws), ulps(c, wc));
            assert!(
                es <= 2.0 && ec <= 2.0,
                "u={u:e}: sin {s:e} vs {ws:e} ({es} ulp), cos {c:e} vs {wc:e} ({ec} ulp)"
            );
            worst = worst.max(es).max(ec);
        };
        // Uniforms next to the quadrant boundaries, where one result is tiny, and random ones.
        for q in 0u64..=4 {
            for dx in 0u64..64 {
                for sign in [-1i64, 1] {
                    let x = (q << 30) as i64 + sign * dx as i64;
                    if (0..=u32::MAX as i64).contains(&x) {
                        check((x as f64 + 0.5) * (1.0 / 4_294_967_296.0));
                    }
                }
            }
        }
        for _ in 0..400_000 {
            let x = xs(&mut st) as u32;
            check((x as f64 + 0.5) * (1.0 / 4_294_967_296.0));
            check((xs(&mut st) >> 11) as f64 * 2f64.powi(-53));
        }
        println!("sincos_2pi: worst {worst} ulp");
        assert_eq!(sincos_2pi(0.0), (0.0, 1.0));
        assert_eq!(sincos_2pi(0.25), (1.0, -0.0));
    }

    #[test]
    fn box_muller_is_close_to_std() {
        let mut st = 7u64;
        for _ in 0..100_000 {
            let (a, b) = (xs(&mut st) as u32, xs(&mut st) as u32);
            let u0 = (a as f64 + 0.5) * (1.0 / 4_294_967_296.0);
            let u1 = (b as f64 + 0.5) * (1.0 / 4_294_967_296.0);
            let (n0, n1) = box_muller(u0, u1);
            let r = (-2.0 * u0.ln()).sqrt();
            let t = TAU * u1;
            // Absolute: r <= 6.7 and the std reference itself carries the rounding of t.
            assert!(
                (n0 - r * t.cos()).abs() < 1e-14 && (n1 - r * t.sin()).abs() < 1e-14,
                "u0={u0} u1={u1}"
            );
        }
    }
}
