//! GPU kernels against their CPU oracles, bit for bit: Philox streams (raw, uniform, normal) and
//! f32 <-> bf16 casts.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`,
//! in which case it fails (a GPU run can never pass by skipping).
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::cast::{cpu as cast_cpu, cuda as cast_cuda};
use brainstacks_kernels::philox::{cpu as philox_cpu, cuda as philox_cuda};
use common::gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 24;

/// Lengths: empty, one, around the 256-thread block, a large odd size, and random small ones.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(255),
        Just(256),
        Just(257),
        Just(1_000_003),
        1usize..5000,
    ]
}

/// Offsets: small, unaligned; around the 2^32 block-counter boundary (g / 4 crossing 32 bits);
/// anywhere (kept below 2^62 so offset + length never overflows).
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..1000,
        ((1u64 << 34) - 2000)..((1u64 << 34) + 2000),
        0u64..(1u64 << 62)
    ]
}

#[test]
fn device_info_is_readable() {
    let Some(g) = gpu() else { return };
    let info = g.device_info().expect("device_info");
    println!("device: {info}");
    assert!(
        info.compute_capability.0 >= 8,
        "sm_80 or newer required, got {info}"
    );
}

#[test]
fn philox_u32_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&(length(), any::<u64>(), offset()), |(n, seed, off)| {
            let mut want = vec![0u32; n];
            philox_cpu::fill_u32(seed, off, &mut want);
            let mut d = g.alloc_zeros::<u32>(n).unwrap();
            philox_cuda::fill_u32(g, seed, off, &mut d).unwrap();
            let got = g.dtoh(&d).unwrap();
            if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
                return Err(TestCaseError::fail(format!(
                    "n={n} seed={seed} offset={off}: element {i}: gpu {:#010x} cpu {:#010x}",
                    got[i], want[i]
                )));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn philox_uniform_f32_matches_cpu() {
    let Some(g) = gpu() else { return };
    let bounds = prop_oneof![
        Just((0.0f32, 1.0f32)),
        Just((-1.0f32, 1.0f32)),
        (-1000.0f32..1000.0, 0.001f32..1000.0).prop_map(|(lo, w)| (lo, lo + w)),
    ];
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&(length(), any::<u64>(), offset(), bounds), |(n, seed, off, (lo, hi))| {
            let mut want = vec![0f32; n];
            philox_cpu::fill_uniform_f32(seed, off, lo, hi, &mut want);
            let mut d = g.alloc_zeros::<f32>(n).unwrap();
            philox_cuda::fill_uniform_f32(g, seed, off, lo, hi, &mut d).unwrap();
            let got = g.dtoh(&d).unwrap();
            if let Some(i) = (0..n).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                return Err(TestCaseError::fail(format!(
                    "n={n} seed={seed} offset={off} low={lo} high={hi}: element {i}: gpu {} cpu {}",
                    got[i], want[i]
                )));
            }
            Ok(())
        })
        .unwrap();
}

/// Normal parameters: the standard one, and random (mean, std) pairs.
fn normal_params() -> impl Strategy<Value = (f64, f64)> {
    prop_oneof![Just((0.0, 1.0)), (-100.0f64..100.0, 0.0f64..10.0)]
}

/// Bit equality: the kernel repeats `philox::math` operation for operation (no libm anywhere).
#[test]
fn philox_normal_f32_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(length(), any::<u64>(), offset(), normal_params()),
            |(n, seed, off, (mean, std))| {
                let (mean, std) = (mean as f32, std as f32);
                let mut want = vec![0f32; n];
                philox_cpu::fill_normal_f32(seed, off, mean, std, &mut want);
                let mut d = g.alloc_zeros::<f32>(n).unwrap();
                philox_cuda::fill_normal_f32(g, seed, off, mean, std, &mut d).unwrap();
                let got = g.dtoh(&d).unwrap();
                if let Some(i) = (0..n).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                    return Err(TestCaseError::fail(format!(
                        "n={n} seed={seed} offset={off} mean={mean} std={std}: element {i}: gpu {:e} cpu {:e}",
                        got[i], want[i]
                    )));
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn philox_normal_f64_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(length(), any::<u64>(), offset(), normal_params()),
            |(n, seed, off, (mean, std))| {
                let mut want = vec![0f64; n];
                philox_cpu::fill_normal_f64(seed, off, mean, std, &mut want);
                let mut d = g.alloc_zeros::<f64>(n).unwrap();
                philox_cuda::fill_normal_f64(g, seed, off, mean, std, &mut d).unwrap();
                let got = g.dtoh(&d).unwrap();
                if let Some(i) = (0..n).find(|&i| got[i].to_bits() != want[i].to_bits()) {
                    return Err(TestCaseError::fail(format!(
                        "n={n} seed={seed} offset={off} mean={mean} std={std}: element {i}: gpu {:e} cpu {:e}",
                        got[i], want[i]
                    )));
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Every 32-bit word as u0 and as u1 would take 2^32 draws; this walks a million consecutive
/// blocks (4M normals, every lane) of one seed, so each polynomial sees ~2M arguments.
#[test]
fn philox_normal_f64_long_stream_matches_cpu() {
    let Some(g) = gpu() else { return };
    let n = 4_000_003usize;
    let mut want = vec![0f64; n];
    philox_cpu::fill_normal_f64(0x5EED, 1, 0.0, 1.0, &mut want);
    let mut d = g.alloc_zeros::<f64>(n).unwrap();
    philox_cuda::fill_normal_f64(g, 0x5EED, 1, 0.0, 1.0, &mut d).unwrap();
    let got = g.dtoh(&d).unwrap();
    for i in 0..n {
        assert_eq!(
            got[i].to_bits(),
            want[i].to_bits(),
            "element {i}: gpu {:e} cpu {:e}",
            got[i],
            want[i]
        );
    }
}

#[test]
fn philox_offset_continues_the_stream_on_gpu() {
    let Some(g) = gpu() else { return };
    let mut whole = g.alloc_zeros::<u32>(1000).unwrap();
    philox_cuda::fill_u32(g, 42, 0, &mut whole).unwrap();
    let mut tail = g.alloc_zeros::<u32>(993).unwrap();
    philox_cuda::fill_u32(g, 42, 7, &mut tail).unwrap();
    assert_eq!(&g.dtoh(&whole).unwrap()[7..], &g.dtoh(&tail).unwrap()[..]);
}

/// f32 bit patterns biased to the interesting ones: NaNs with payloads, infinities, zeros,
/// subnormals, exact ties, and uniformly random bits.
fn f32_bits() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        (any::<bool>(), 1u32..0x80_0000).prop_map(|(s, m)| (s as u32) << 31 | 0x7F80_0000 | m),
        (any::<bool>(), 0u32..0x80_0000).prop_map(|(s, m)| (s as u32) << 31 | m),
        (any::<u32>()).prop_map(|x| (x & 0xFFFF_0000) | 0x8000),
        Just(0x7F80_0000u32),
        Just(0xFF80_0000u32),
        Just(0x7F7F_FFFFu32),
    ]
}

#[test]
fn cast_f32_bf16_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let data = length().prop_flat_map(|n| proptest::collection::vec(f32_bits(), n));
    runner
        .run(&data, |bits| {
            let src: Vec<f32> = bits.iter().map(|b| f32::from_bits(*b)).collect();
            let mut want = vec![0u16; src.len()];
            cast_cpu::cast_f32_bf16(&src, &mut want);
            let d_src = g.htod(&src).unwrap();
            let mut d_dst = g.alloc_zeros::<u16>(src.len()).unwrap();
            cast_cuda::cast_f32_bf16(g, &d_src, &mut d_dst).unwrap();
            let got = g.dtoh(&d_dst).unwrap();
            if let Some(i) = (0..src.len()).find(|&i| got[i] != want[i]) {
                return Err(TestCaseError::fail(format!(
                    "n={} element {i}: f32 {:#010x}: gpu {:#06x} cpu {:#06x}",
                    src.len(),
                    bits[i],
                    got[i],
                    want[i]
                )));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn cast_bf16_f32_exhaustive_matches_cpu() {
    let Some(g) = gpu() else { return };
    let src: Vec<u16> = (0..=u16::MAX).collect();
    let mut want = vec![0f32; src.len()];
    cast_cpu::cast_bf16_f32(&src, &mut want);
    let d_src = g.htod(&src).unwrap();
    let mut d_dst = g.alloc_zeros::<f32>(src.len()).unwrap();
    cast_cuda::cast_bf16_f32(g, &d_src, &mut d_dst).unwrap();
    let got = g.dtoh(&d_dst).unwrap();
    for i in 0..src.len() {
        assert_eq!(got[i].to_bits(), want[i].to_bits(), "bf16 {:#06x}", src[i]);
    }
}

#[test]
fn cast_f32_bf16_sweep_matches_cpu() {
    let Some(g) = gpu() else { return };
    // Every 4099th f32 bit pattern (~1M values) plus all low halves of a few high halves.
    let mut bits: Vec<u32> = (0..=u32::MAX / 4099).map(|k| k * 4099).collect();
    for hi in [0x0000u32, 0x3F80, 0x7F7F, 0x7F80, 0xFF80, 0x8000] {
        bits.extend((0..=0xFFFFu32).map(|lo| hi << 16 | lo));
    }
    let src: Vec<f32> = bits.iter().map(|b| f32::from_bits(*b)).collect();
    let mut want = vec![0u16; src.len()];
    cast_cpu::cast_f32_bf16(&src, &mut want);
    let d_src = g.htod(&src).unwrap();
    let mut d_dst = g.alloc_zeros::<u16>(src.len()).unwrap();
    cast_cuda::cast_f32_bf16(g, &d_src, &mut d_dst).unwrap();
    let got = g.dtoh(&d_dst).unwrap();
    for i in 0..src.len() {
        assert_eq!(got[i], want[i], "f32 {:#010x}", bits[i]);
    }
}

#[test]
fn cast_length_mismatch_is_an_error() {
    let Some(g) = gpu() else { return };
    let src = g.htod(&[1.0f32, 2.0]).unwrap();
    let mut dst = g.alloc_zeros::<u16>(3).unwrap();
    let e = cast_cuda::cast_f32_bf16(g, &src, &mut dst).unwrap_err();
    assert!(e.to_string().contains("cast_f32_bf16"), "{e}");
}
