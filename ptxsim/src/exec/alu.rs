//! Scalar semantics: how one instruction turns register bits into register bits, per the PTX ISA.
//! Registers hold raw bits in a u64; every read masks to the instruction's type first.

use super::op::{Cmp, Rnd, Ty};

pub(crate) fn mask(v: u64, ty: Ty) -> u64 {
    match ty.bits() {
        64 => v,
        b => v & ((1u64 << b) - 1),
    }
}

/// The value as a signed integer of the type's width.
pub(crate) fn sext(v: u64, ty: Ty) -> i64 {
    let b = ty.bits();
    if b == 64 { v as i64 } else { ((v << (64 - b)) as i64) >> (64 - b) }
}

pub(crate) fn f32v(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

pub(crate) fn f32b(x: f32) -> u64 {
    x.to_bits() as u64
}

pub(crate) fn f64v(v: u64) -> f64 {
    f64::from_bits(v)
}

pub(crate) fn f64b(x: f64) -> u64 {
    x.to_bits()
}

/// f32 to bf16 bits, round to nearest even; NaN to the canonical 0x7fff.
pub(crate) fn bf16_from_f32(x: f32) -> u64 {
    let b = x.to_bits();
    if x.is_nan() {
        return 0x7fff;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u64
}

/// A floating-point value of type `ty` as f64 (exact for every type used).
pub(crate) fn float_of(v: u64, ty: Ty) -> f64 {
    match ty {
        Ty::F32 => f32v(v) as f64,
        Ty::F64 => f64v(v),
        Ty::Bf16 => f32::from_bits(((v as u32) & 0xffff) << 16) as f64,
        _ => f64::NAN,
    }
}

/// Arithmetic on two floats of type `ty` (f32 rounds once, like the hardware's `.rn`).
pub(crate) fn float_bin(a: u64, b: u64, ty: Ty, f32op: fn(f32, f32) -> f32, f64op: fn(f64, f64) -> f64) -> u64 {
    match ty {
        Ty::F32 => f32b(f32op(f32v(a), f32v(b))),
        _ => f64b(f64op(f64v(a), f64v(b))),
    }
}

pub(crate) fn compare(cmp: Cmp, a: u64, b: u64, ty: Ty) -> bool {
    if ty.is_float() {
        let (x, y) = (float_of(a, ty), float_of(b, ty));
        let nan = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => !nan && x == y,
            Cmp::Ne => !nan && x != y,
            Cmp::Lt => !nan && x < y,
            Cmp::Le => !nan && x <= y,
            Cmp::Gt => !nan && x > y,
            Cmp::Ge => !nan && x >= y,
            Cmp::Equ => nan || x == y,
            Cmp::Neu => nan || x != y,
            Cmp::Ltu => nan || x < y,
            Cmp::Leu => nan || x <= y,
            Cmp::Gtu => nan || x > y,
            Cmp::Geu => nan || x >= y,
            Cmp::Num => !nan,
            Cmp::Nan => nan,
        };
    }
    let ord = if ty.is_signed() { sext(a, ty).cmp(&sext(b, ty)) } else { mask(a, ty).cmp(&mask(b, ty)) };
    use std::cmp::Ordering::*;
    match cmp {
        Cmp::Eq | Cmp::Equ => ord == Equal,
        Cmp::Ne | Cmp::Neu => ord != Equal,
        Cmp::Lt | Cmp::Ltu => ord == Less,
        Cmp::Le | Cmp::Leu => ord != Greater,
        Cmp::Gt | Cmp::Gtu => ord == Greater,
        Cmp::Ge | Cmp::Geu => ord != Less,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

/// f64 to f32 with a directed rounding.
fn f64_to_f32(x: f64, rnd: Rnd) -> f32 {
    let r = x as f32;
    if x.is_nan() || (r as f64) == x {
        return r;
    }
    let toward = |r: f32, up: bool| -> f32 {
        // One step of r toward +inf (up) or -inf.
        if r.is_infinite() {
            // Out of range: the nearest value was infinite; directed modes may give MAX.
            return if (r > 0.0) == up { r } else { f32::MAX.copysign(r) };
        }
        let b = r.to_bits();
        let next = if (r > 0.0) == up || r == 0.0 && up {
            if r == 0.0 { 1 } else { b + 1 }
        } else if r == 0.0 {
            0x8000_0001
        } else {
            b - 1
        };
        f32::from_bits(next)
    };
    match rnd {
        Rnd::Rz => {
            if (r as f64).abs() > x.abs() {
                toward(r, r < 0.0)
            } else {
                r
            }
        }
        Rnd::Rm => {
            if (r as f64) > x {
                toward(r, false)
            } else {
                r
            }
        }
        Rnd::Rp => {
            if (r as f64) < x {
                toward(r, true)
            } else {
                r
            }
        }
        _ => r,
    }
}

fn round_integral(x: f64, rnd: Rnd) -> f64 {
    match rnd {
        Rnd::Rni => x.round_ties_even(),
        Rnd::Rzi => x.trunc(),
        Rnd::Rmi => x.floor(),
        Rnd::Rpi => x.ceil(),
        _ => x,
    }
}

/// `cvt.rnd.dst.src`. Float to integer saturates and maps NaN to 0, like the hardware.
pub(crate) fn convert(v: u64, dst: Ty, src: Ty, rnd: Rnd) -> Result<u64, String> {
    if matches!(dst, Ty::F16) || matches!(src, Ty::F16) {
        return Err("cvt with f16 is not supported".into());
    }
    if src.is_float() {
        let x = float_of(v, src);
        if dst.is_float() {
            return Ok(match dst {
                Ty::F64 => f64b(round_integral(x, rnd)),
                Ty::F32 => {
                    let y = round_integral(x, rnd);
                    f32b(f64_to_f32(y, rnd))
                }
                Ty::Bf16 => {
                    if src != Ty::F32 {
                        return Err("cvt to bf16 from a type other than f32".into());
                    }
                    bf16_from_f32(f32v(v))
                }
                _ => unreachable!("float types"),
            });
        }
        let r = round_integral(x, rnd);
        let bits = match dst {
            Ty::S8 => r as i8 as i64 as u64,
            Ty::S16 => r as i16 as i64 as u64,
            Ty::S32 => r as i32 as i64 as u64,
            Ty::S64 => r as i64 as u64,
            Ty::U8 | Ty::B8 => r as u8 as u64,
            Ty::U16 | Ty::B16 => r as u16 as u64,
            Ty::U32 | Ty::B32 => r as u32 as u64,
            Ty::U64 | Ty::B64 => r as u64,
            _ => return Err(format!("cvt to {dst:?}")),
        };
        return Ok(bits);
    }
    // Integer source.
    let (iv, uv) = (sext(v, src), mask(v, src));
    if dst.is_float() {
        return Ok(match dst {
            Ty::F32 => f32b(if src.is_signed() { iv as f32 } else { uv as f32 }),
            Ty::F64 => f64b(if src.is_signed() { iv as f64 } else { uv as f64 }),
            _ => return Err(format!("cvt to {dst:?} from an integer")),
        });
    }
    // Integer to integer: sign- or zero-extend the source, then truncate.
    let wide = if src.is_signed() { iv as u64 } else { uv };
    Ok(mask(wide, dst))
}

/// `bfe.ty d, a, pos, len`.
pub(crate) fn bfe(a: u64, pos: u64, len: u64, ty: Ty) -> u64 {
    let bits = ty.bits() as u64;
    let (pos, len) = (pos & 0xff, len & 0xff);
    let a = mask(a, ty);
    if len == 0 {
        return 0;
    }
    let field = if pos >= bits { 0 } else { a >> pos };
    let avail = bits.saturating_sub(pos).min(len);
    let mut d = if avail >= 64 { field } else { field & ((1u64 << avail) - 1) };
    if ty.is_signed() {
        // The sign is the field's top bit, or the source's top bit when the field runs past it.
        let sign = if pos >= bits { (a >> (bits - 1)) & 1 } else { (a >> (pos + len - 1).min(bits - 1)) & 1 };
        if sign == 1 && len < 64 {
            d |= !0u64 << len.min(bits);
        }
        d = mask(d, ty);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(bf16_from_f32(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties to the even one (1.0).
        assert_eq!(bf16_from_f32(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(bf16_from_f32(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bf16_from_f32(f32::NAN), 0x7fff);
    }

    #[test]
    fn conversions_saturate_and_round() {
        assert_eq!(convert(f64b(3.5), Ty::S32, Ty::F64, Rnd::Rni).unwrap(), 4);
        assert_eq!(convert(f64b(2.5), Ty::S32, Ty::F64, Rnd::Rni).unwrap(), 2);
        assert_eq!(convert(f64b(-2.7), Ty::S32, Ty::F64, Rnd::Rzi).unwrap() as u32 as i32, -2);
        assert_eq!(convert(f64b(1e20), Ty::S32, Ty::F64, Rnd::Rzi).unwrap() as u32, i32::MAX as u32);
        assert_eq!(convert(f64b(f64::NAN), Ty::S32, Ty::F64, Rnd::Rzi).unwrap(), 0);
        // 1 + 2^-30 rounds to 1 under rz and rn, and up under rp.
        let x = 1.0 + 2f64.powi(-30);
        assert_eq!(convert(f64b(x), Ty::F32, Ty::F64, Rnd::Rz).unwrap(), f32b(1.0));
        assert_eq!(convert(f64b(x), Ty::F32, Ty::F64, Rnd::Rp).unwrap(), f32b(1.0 + f32::EPSILON));
        assert_eq!(convert(f64b(-x), Ty::F32, Ty::F64, Rnd::Rz).unwrap(), f32b(-1.0));
        assert_eq!(convert(0xffff_fff0, Ty::U16, Ty::U32, Rnd::None).unwrap(), 0xfff0);
        assert_eq!(convert(0xffff_ffff, Ty::S64, Ty::S32, Rnd::None).unwrap(), u64::MAX);
    }

    #[test]
    fn bit_field_extract() {
        assert_eq!(bfe(0xabcd_1234, 4, 8, Ty::U32), 0x23);
        assert_eq!(bfe(0xabcd_1234, 28, 8, Ty::U32), 0xa);
        assert_eq!(bfe(0x0000_00f0, 4, 4, Ty::S32), 0xffff_ffff);
        assert_eq!(bfe(0x1234, 0, 0, Ty::U32), 0);
    }

    #[test]
    fn unordered_comparisons_see_nan() {
        let nan = f32b(f32::NAN);
        let one = f32b(1.0);
        assert!(!compare(Cmp::Lt, nan, one, Ty::F32));
        assert!(compare(Cmp::Ltu, nan, one, Ty::F32));
        assert!(!compare(Cmp::Ne, nan, one, Ty::F32));
        assert!(compare(Cmp::Neu, nan, one, Ty::F32));
        assert!(compare(Cmp::Lt, u64::MAX, 0, Ty::S32));
        assert!(!compare(Cmp::Lt, u64::MAX, 0, Ty::U32));
    }
}
