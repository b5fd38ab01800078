//! Element-wise dtype casts between f32 and bf16 (bf16 carried as its raw `u16` bits, so this leaf
//! crate needs no `half` dependency).
//!
//! # Math (bit-level; identical to the `half` crate 2.7 `bf16::from_f32` / `bf16::to_f32`)
//! - f32 -> bf16: round to nearest, ties to even, on the integer bits; NaN keeps its sign and top
//!   payload bits and is made quiet (`(x >> 16) | 0x0040`); no flush of subnormals; values past
//!   the largest finite bf16 round to infinity.
//! - bf16 -> f32: exact (`h << 16`), except that a signalling NaN is made quiet (`| 0x0040`), as
//!   `half` does.
//!
//! Shapes: contiguous buffers of equal length; no accumulation; the tolerance is zero (every
//! backend must be bit-identical to `cpu.rs`).
//!
//! GPU: `cast.ptx` (entries `cast_f32_bf16`, `cast_bf16_f32`), launched by `cuda.rs`.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

/// The hand-written PTX of this op, embedded in every build (the registry and the lint read it).
pub const PTX: &str = include_str!("cast.ptx");

#[cfg(test)]
mod tests {
    use super::cpu::*;
    use proptest::prelude::*;

    fn check_f32(x: f32) {
        let want = half::bf16::from_f32(x).to_bits();
        assert_eq!(f32_to_bf16_bits(x), want, "f32 bits {:#010x}", x.to_bits());
    }

    #[test]
    fn bf16_to_f32_exhaustive_matches_half() {
        for h in 0..=u16::MAX {
            let want = half::bf16::from_bits(h).to_f32().to_bits();
            assert_eq!(bf16_bits_to_f32(h).to_bits(), want, "bf16 bits {h:#06x}");
        }
    }

    #[test]
    fn f32_to_bf16_special_values_match_half() {
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::EPSILON,
            1.0e-40,
            -1.0e-45,
        ];
        for x in specials {
            check_f32(x);
        }
        // Signalling NaNs with payload, ties (even and odd), round-up carries, near f32::MAX.
        for bits in [
            0x7F80_0001u32,
            0xFF80_0001,
            0x7FA0_0000,
            0x7F81_0000,
            0x3F80_8000,
            0x3F81_8000,
            0x3F80_8001,
            0x3F80_7FFF,
            0x3FFF_8000,
            0x7F7F_8000,
            0x7F7F_FFFF,
            0x0000_8000,
            0x0001_8000,
            0x807F_FFFF,
        ] {
            check_f32(f32::from_bits(bits));
        }
    }

    #[test]
    fn f32_to_bf16_strided_sweep_matches_half() {
        // Every 4099th bit pattern (about a million values) plus all low-16-bit patterns of a
        // few high halves: covers every rounding case in every binade.
        let mut bits = 0u32;
        loop {
            check_f32(f32::from_bits(bits));
            match bits.checked_add(4099) {
                Some(b) => bits = b,
                None => break,
            }
        }
        for hi in [0x0000u32, 0x3F80, 0x7F7F, 0x7F80, 0xFF80, 0x8000] {
            for lo in 0..=0xFFFFu32 {
                check_f32(f32::from_bits(hi << 16 | lo));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn slices_match_elementwise(v in proptest::collection::vec(any::<u32>(), 0..300)) {
            let src: Vec<f32> = v.iter().map(|b| f32::from_bits(*b)).collect();
            let mut mid = vec![0u16; src.len()];
            cast_f32_bf16(&src, &mut mid);
            let mut back = vec![0f32; src.len()];
            cast_bf16_f32(&mid, &mut back);
            for i in 0..src.len() {
                prop_assert_eq!(mid[i], half::bf16::from_f32(src[i]).to_bits());
                prop_assert_eq!(back[i].to_bits(), half::bf16::from_bits(mid[i]).to_f32().to_bits());
            }
        }
    }
}
