//! CPU oracle of the f32 <-> bf16 casts (math in `mod.rs`). Plain integer code on the bits.

/// f32 -> bf16 bits: round to nearest even; NaN keeps sign and top payload and is made quiet.
#[inline]
pub fn f32_to_bf16_bits(value: f32) -> u16 {
    let x = value.to_bits();
    if x & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((x >> 16) | 0x0040) as u16;
    }
    let round_bit = 0x0000_8000u32;
    if (x & round_bit) != 0 && (x & (3 * round_bit - 1)) != 0 {
        ((x >> 16) + 1) as u16
    } else {
        (x >> 16) as u16
    }
}

/// bf16 bits -> f32: exact; a signalling NaN is made quiet.
#[inline]
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    let h = h as u32;
    if h & 0x7FFF > 0x7F80 {
        f32::from_bits((h | 0x0040) << 16)
    } else {
        f32::from_bits(h << 16)
    }
}

/// `dst[i] = bf16(src[i])`. Panics if the lengths differ (callers check shapes first).
pub fn cast_f32_bf16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "cast_f32_bf16: length mismatch");
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32_to_bf16_bits(*s);
    }
}

/// `dst[i] = f32(src[i])`. Panics if the lengths differ (callers check shapes first).
pub fn cast_bf16_f32(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "cast_bf16_f32: length mismatch");
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16_bits_to_f32(*s);
    }
}
