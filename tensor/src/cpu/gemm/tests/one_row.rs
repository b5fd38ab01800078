//! The one-row path (`gemv`): each row computed alone gets the bits it gets inside a larger
//! product through the blocked driver, for every kernel, element type, layout and thread count.

use super::*;

/// Row `i` of `o` as a one-row view of the same data (an empty row may start past the data).
fn row<T>(o: &Operand<T>, i: usize) -> MatRef<'_, T> {
    MatRef { data: &o.data[(i * o.rs).min(o.data.len())..], rows: 1, cols: o.cols, row_stride: o.rs, col_stride: o.cs }
}

/// Runs `product(a, c)` on all of `a` (the blocked driver: `m > 1`) and on each row alone (the
/// one-row path), and fails unless every row's bits agree. `c0` is C before the product.
fn check_rows<T, E: Pod + std::fmt::Debug>(
    a: &Operand<T>,
    n: usize,
    c0: &[E],
    product: impl Fn(MatRef<'_, T>, &mut [E]),
) -> Result<(), String> {
    let bits = |v: &[E]| bytemuck::cast_slice::<E, u8>(v).to_vec();
    let mut whole = c0.to_vec();
    product(a.view(), &mut whole);
    for i in 0..a.rows {
        let mut alone = c0[i * n..(i + 1) * n].to_vec();
        product(row(a, i), &mut alone);
        if bits(&alone) != bits(&whole[i * n..(i + 1) * n]) {
            return Err(format!("row {i} alone: {alone:?}\n  inside the product: {:?}", &whole[i * n..(i + 1) * n]));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// f32, bf16 and f64 operands with every kernel (fused and portable), several KC blocks deep,
    /// n across the 32-column panels and the driver's tiles, on a two-thread pool.
    #[test]
    fn a_row_alone_gets_the_bits_it_gets_inside_a_product(
        m in 2usize..30, n in 0usize..80, k in prop_oneof![0usize..20, 250usize..530],
        la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut noise = Noise::new(seed);
        let context = format!("m={m} n={n} k={k} a={la:?} b={lb:?} accumulate={accumulate}");
        let a = operand(m, k, la, &mut noise, |x| x as f32);
        let b = operand(k, n, lb, &mut noise, |x| x as f32);
        let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
        for kernel in f32_kernels_available() {
            pool(2).install(|| check_rows(&a, n, &c0, |a, c| gemm_with(&kernel, a, b.view(), c, accumulate)))
                .map_err(|e| TestCaseError::fail(format!("{} f32 {context}: {e}", kernel.name)))?;
        }
        let a16 = operand(m, k, la, &mut noise, bf16::from_f64);
        let b16 = operand(k, n, lb, &mut noise, bf16::from_f64);
        for kernel in f32_kernels_available() {
            check_rows(&a16, n, &c0, |a, c| gemm_with(&kernel, a, b16.view(), c, accumulate))
                .map_err(|e| TestCaseError::fail(format!("{} bf16 {context}: {e}", kernel.name)))?;
        }
        check_rows(&a, n, &c0, |a, c| gemm_rounded_for_f32_kernels(a, b.view(), Out::Init(c, accumulate)))
            .map_err(|e| TestCaseError::fail(format!("rounded to bf16 {context}: {e}")))?;
        let a64 = operand(m, k, la, &mut noise, |x| x);
        let b64 = operand(k, n, lb, &mut noise, |x| x);
        let c64: Vec<f64> = (0..m * n).map(|_| noise.next()).collect();
        for kernel in f64_kernels_available() {
            check_rows(&a64, n, &c64, |a, c| gemm_with(&kernel, a, b64.view(), c, accumulate))
                .map_err(|e| TestCaseError::fail(format!("{} f64 {context}: {e}", kernel.name)))?;
        }
    }
}

/// Products big enough to split their columns over threads, with a partial last panel and two KC
/// blocks: the same bits on 1, 2 and 3 threads, and right against the oracle.
#[test]
fn one_row_is_bitwise_independent_of_thread_count() {
    for kernel in f32_kernels_available() {
        for (n, k, lb) in [(3001, 300, Layout::Transposed), (2050, 513, Layout::RowMajor), (1500, 400, Layout::Strided)] {
            assert!(n * k >= gemv::PARALLEL_MIN_MACS);
            let mut noise = Noise::new(5);
            let a = operand(1, k, Layout::RowMajor, &mut noise, |x| x as f32);
            let b = operand(k, n, lb, &mut noise, |x| x as f32);
            let c0: Vec<f32> = (0..n).map(|_| noise.next() as f32).collect();
            assert_threads_agree_and_match_oracle(&kernel, &a, &b, &c0, &format!("1x{n}x{k} {lb:?}"));
        }
    }
}

/// Into uninitialised memory the one-row path writes every entry (k = 0 included).
#[test]
fn one_row_into_uninit_memory_matches_overwriting() {
    for (n, k) in [(45, 600), (16, 300), (70, 0), (1, 1), (0, 5)] {
        let mut noise = Noise::new(9);
        let a = operand(1, k, Layout::RowMajor, &mut noise, |x| x as f32);
        let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
        let mut want = vec![f32::NAN; n];
        gemm_f32(a.view(), b.view(), &mut want, false);
        let mut out = vec![MaybeUninit::new(f32::NAN); n];
        gemm_f32_uninit(a.view(), b.view(), &mut out);
        // SAFETY: gemm_f32_uninit wrote every element (and they started initialised anyway).
        let got: Vec<u32> = out.iter().map(|x| unsafe { x.assume_init() }.to_bits()).collect();
        assert_eq!(got, want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "1x{n}x{k}");
    }
}

/// The fused path for a transposed f32 or bf16 weight (whole 32-lane panels, depth a multiple
/// of 8), on fixed shapes so every run covers it: a last KC block shorter than KC (264 = 256 + 8,
/// 520 = 2 x 256 + 8) and several panels, each row against its bits inside the blocked product.
#[test]
fn fused_rows_of_a_transposed_weight_match_the_driver_on_short_last_blocks() {
    for (m, n, k) in [(3, 64, 264), (2, 96, 520), (2, 32, 8)] {
        let mut noise = Noise::new(17);
        let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x as f32);
        let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
        let b16 = operand(k, n, Layout::Transposed, &mut noise, bf16::from_f64);
        let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
        for kernel in f32_kernels_available() {
            for accumulate in [false, true] {
                check_rows(&a, n, &c0, |a, c| gemm_with(&kernel, a, b.view(), c, accumulate))
                    .unwrap_or_else(|e| panic!("{} f32 {m}x{n}x{k} accumulate={accumulate}: {e}", kernel.name));
                check_rows(&a, n, &c0, |a, c| gemm_with(&kernel, a, b16.view(), c, accumulate))
                    .unwrap_or_else(|e| panic!("{} bf16 weight {m}x{n}x{k} accumulate={accumulate}: {e}", kernel.name));
            }
        }
    }
}
