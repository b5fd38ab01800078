//! [`gemm_f32_as_bf16`]: rounding, and both of its paths (AMX tiles where this machine has them,
//! the rounded f32 kernels everywhere) against the oracle on rounded operands.

use super::*;

/// `o` with every stored value rounded through bf16 (the gaps too, which no product reads).
fn rounded(o: &Operand<f32>) -> Operand<f32> {
    Operand { data: o.data.iter().map(|&x| round_through_bf16(x)).collect(), rows: o.rows, cols: o.cols, rs: o.rs, cs: o.cs }
}

/// Which path of `gemm_f32_as_bf16` a check runs.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// The public function: AMX tiles when available.
    Public,
    /// The rounded f32 kernels, which machines without AMX use.
    RoundedF32Kernels,
}

/// One path on a random product, against the f32 oracle on the rounded operands.
fn check_case(path: Path, (m, n, k): (usize, usize, usize), (la, lb): (Layout, Layout), accumulate: bool, seed: u64) -> Result<(), String> {
    let mut noise = Noise::new(seed);
    let a = operand(m, k, la, &mut noise, |x| x as f32);
    let b = operand(k, n, lb, &mut noise, |x| x as f32);
    let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
    let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
    match path {
        Path::Public => gemm_f32_as_bf16(a.view(), b.view(), &mut c, accumulate),
        Path::RoundedF32Kernels => gemm_rounded_for_f32_kernels(a.view(), b.view(), Out::Init(&mut c, accumulate)),
    }
    let (want, abs) = oracle_f32(&rounded(&a), &rounded(&b), accumulate.then_some(&c0[..]));
    check_close_f32(&c, &want, &abs, k).map_err(|e| {
        let kernel = match path {
            Path::Public => bf16_operands_kernel_name(n),
            Path::RoundedF32Kernels => f32_kernel(n).name,
        };
        format!("{kernel}: m={m} n={n} k={k} a={la:?} b={lb:?} accumulate={accumulate}: {e}")
    })
}

#[test]
fn rounding_matches_the_half_crate_and_keeps_nan() {
    let mut noise = Noise::new(99);
    let specials = [
        0.0f32,
        -0.0,
        f32::MIN_POSITIVE,
        f32::MIN_POSITIVE / 3.0,
        f32::MAX,
        -f32::MAX,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x3f80_8000), // 1 + 2^-8: a tie, rounds down to even 1.0
        f32::from_bits(0x3f81_8000), // a tie that rounds up to even
        f32::from_bits(0x7f7f_ffff), // rounds to infinity
    ];
    let random = (0..200_000).map(|_| f32::from_bits((noise.next().to_bits() >> 20) as u32));
    for x in specials.into_iter().chain(random) {
        let ours = round_to_bf16_bits(x);
        let theirs = bf16::from_f32(x).to_bits();
        assert_eq!(ours, theirs, "{x:e} ({:#010x})", x.to_bits());
    }
    for nan in [f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001), f32::from_bits(0xffff_ffff)] {
        assert!(round_through_bf16(nan).is_nan(), "{:#010x}", nan.to_bits());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random shapes and layouts on a two-thread pool, through whichever path this machine takes.
    #[test]
    fn bf16_operands_match_the_oracle_on_rounded_values(
        m in 0usize..70, n in 0usize..70, k in 0usize..70,
        la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        pool(2).install(|| check_case(Path::Public, (m, n, k), (la, lb), accumulate, seed)).map_err(TestCaseError::fail)?;
    }

    /// The path of machines without AMX, run here whatever this machine has.
    #[test]
    fn rounded_f32_kernels_match_the_oracle_on_rounded_values(
        m in 0usize..70, n in 0usize..70, k in 0usize..70,
        la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        pool(2).install(|| check_case(Path::RoundedF32Kernels, (m, n, k), (la, lb), accumulate, seed))
            .map_err(TestCaseError::fail)?;
    }
}

/// Rows, columns and depths one below, at and one above the AMX tile (32) and k block (256), and
/// past the row and column blocks (256, 512).
#[test]
fn bf16_operands_sizes_straddling_tiles_and_blocks() {
    let cases = [(Layout::RowMajor, Layout::Transposed), (Layout::Transposed, Layout::PaddedRows)];
    for m in [1, 31, 32, 33, 257] {
        for n in [1, 31, 32, 33, 513] {
            for k in [1, 31, 32, 33, 255, 257, 600] {
                for (accumulate, layouts) in [false, true].into_iter().zip(cases) {
                    let seed = (m * 1_000_003 + n * 1009 + k) as u64;
                    for path in [Path::Public, Path::RoundedF32Kernels] {
                        check_case(path, (m, n, k), layouts, accumulate, seed).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_operands_result_is_bitwise_independent_of_thread_count() {
    let (m, n, k) = (300, 200, 300);
    let mut noise = Noise::new(5);
    let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x as f32);
    let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
    assert_thread_count_invariant(|| {
        let mut c = vec![0f32; m * n];
        gemm_f32_as_bf16(a.view(), b.view(), &mut c, false);
        c
    });
}

#[test]
fn bf16_operands_propagate_nan_and_infinity() {
    let (m, n, k) = (40, 40, 40);
    let mut noise = Noise::new(8);
    let mut a = operand(m, k, Layout::RowMajor, &mut noise, |x| x as f32);
    let b = operand(k, n, Layout::RowMajor, &mut noise, |x| x as f32);
    a.data[3 * k + 5] = f32::NAN;
    a.data[7 * k] = f32::INFINITY;
    let mut c = vec![0f32; m * n];
    gemm_f32_as_bf16(a.view(), b.view(), &mut c, false);
    assert!(c[3 * n..4 * n].iter().all(|x| x.is_nan()), "row 3 holds a NaN operand");
    assert!(c[7 * n..8 * n].iter().all(|x| !x.is_finite()), "row 7 holds an infinite operand");
    assert!(c[..3 * n].iter().all(|x| x.is_finite()), "the other rows stay finite");
}
