//! The GEMM against the oracle of `brainstacks_kernels::gemm`: every kernel this CPU runs, every
//! layout, thread-count invariance, the packing paths; the one-row path and the bf16-operand
//! products in the submodules.

use std::cell::Cell;

use super::driver::{PARALLEL_MIN_MACS, PARALLEL_MIN_MACS_POLLED, SPLIT_CALLS, gemm_run, parallel_min_macs, plan};
use super::kernels::{F32_PORTABLE, f32_kernels_available, f64_kernels_available};
use super::*;

mod bf16_operands;
mod one_row;
use brainstacks_kernels::gemm::{
    check_close_f32, check_close_f64, gemm_abs_reference_f32, gemm_abs_reference_f64, gemm_reference_f32, gemm_reference_f64,
};
use proptest::prelude::*;

/// xorshift64*: a few lines of deterministic noise, seeded by proptest.
struct Noise(u64);
impl Noise {
    fn new(seed: u64) -> Self {
        Noise(seed | 1)
    }
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        bits as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// How an operand is laid out in its slice.
#[derive(Clone, Copy, Debug)]
enum Layout {
    RowMajor,
    /// Column-major: what a transposed row-major matrix looks like.
    Transposed,
    /// Row-major with 3 unused elements after each row.
    PaddedRows,
    /// Column-major with 3 unused elements after each column.
    PaddedTransposed,
    /// Neither stride is 1: every other element of every other row.
    Strided,
    /// Row stride 0: every row is the same slice (a broadcast view).
    BroadcastRows,
}

fn layouts() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::RowMajor),
        Just(Layout::Transposed),
        Just(Layout::PaddedRows),
        Just(Layout::PaddedTransposed),
        Just(Layout::Strided),
        Just(Layout::BroadcastRows),
    ]
}

/// An owned operand; the gaps between elements hold noise too, so reading one shows up.
struct Operand<T> {
    data: Vec<T>,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<T> Operand<T> {
    fn view(&self) -> MatRef<'_, T> {
        MatRef { data: &self.data, rows: self.rows, cols: self.cols, row_stride: self.rs, col_stride: self.cs }
    }
}

fn operand<T>(rows: usize, cols: usize, layout: Layout, noise: &mut Noise, from: impl Fn(f64) -> T) -> Operand<T> {
    let (rs, cs) = match layout {
        Layout::RowMajor => (cols, 1),
        Layout::Transposed => (1, rows),
        Layout::PaddedRows => (cols + 3, 1),
        Layout::PaddedTransposed => (1, rows + 3),
        Layout::Strided => (2 * cols + 1, 2),
        Layout::BroadcastRows => (0, 1),
    };
    let len = if rows == 0 || cols == 0 { 2 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    let data = (0..len).map(|_| from(noise.next())).collect();
    Operand { data, rows, cols, rs, cs }
}

/// The f32 oracle for `c0 + A·B` (or `A·B`) and the matching `|c0| + |A|·|B|`.
fn oracle_f32(a: &Operand<f32>, b: &Operand<f32>, c0: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let mut want = gemm_reference_f32(m, n, k, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs);
    let mut abs = gemm_abs_reference_f32(m, n, k, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs);
    if let Some(c0) = c0 {
        for ((w, s), &c) in want.iter_mut().zip(&mut abs).zip(c0) {
            *w += f64::from(c);
            *s += f64::from(c).abs();
        }
    }
    (want, abs)
}

/// Runs `kernel` on a random product of the given shape and layouts against the oracle.
fn check_f32_case(
    kernel: &MicroKernel<f32>,
    (m, n, k): (usize, usize, usize),
    (la, lb): (Layout, Layout),
    accumulate: bool,
    seed: u64,
) -> Result<(), String> {
    let mut noise = Noise::new(seed);
    let a = operand(m, k, la, &mut noise, |x| x as f32);
    let b = operand(k, n, lb, &mut noise, |x| x as f32);
    let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
    let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
    gemm_with(kernel, a.view(), b.view(), &mut c, accumulate);
    let (want, abs) = oracle_f32(&a, &b, accumulate.then_some(&c0[..]));
    check_close_f32(&c, &want, &abs, k)
        .map_err(|e| format!("{}: m={m} n={n} k={k} a={la:?} b={lb:?} accumulate={accumulate}: {e}", kernel.name))
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every kernel this CPU has, random shapes and layouts, on a two-thread pool.
    #[test]
    fn f32_matches_oracle(
        m in 0usize..70, n in 0usize..70, k in 0usize..70,
        la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        pool(2).install(|| {
            for kernel in f32_kernels_available() {
                check_f32_case(&kernel, (m, n, k), (la, lb), accumulate, seed)?;
            }
            Ok::<_, String>(())
        }).map_err(TestCaseError::fail)?;
    }

    /// The public entry point, through whatever kernel it picks.
    #[test]
    fn public_gemm_f32_matches_oracle(
        m in 0usize..70, n in 0usize..70, k in 0usize..70,
        la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut noise = Noise::new(seed);
        let a = operand(m, k, la, &mut noise, |x| x as f32);
        let b = operand(k, n, lb, &mut noise, |x| x as f32);
        let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
        let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
        gemm_f32(a.view(), b.view(), &mut c, accumulate);
        let (want, abs) = oracle_f32(&a, &b, accumulate.then_some(&c0[..]));
        check_close_f32(&c, &want, &abs, k).map_err(TestCaseError::fail)?;
    }

    /// bf16 operands against the f32 oracle on the same (exactly widened) bf16 values.
    #[test]
    fn bf16_matches_oracle_on_the_rounded_values(
        m in 0usize..70, n in 0usize..70, k in 0usize..70,
        la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut noise = Noise::new(seed);
        let a = operand(m, k, la, &mut noise, bf16::from_f64);
        let b = operand(k, n, lb, &mut noise, bf16::from_f64);
        let widen = |o: &Operand<bf16>| Operand {
            data: o.data.iter().map(|x| x.to_f32()).collect(),
            rows: o.rows, cols: o.cols, rs: o.rs, cs: o.cs,
        };
        let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
        let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
        gemm_bf16(a.view(), b.view(), &mut c, accumulate);
        let (want, abs) = oracle_f32(&widen(&a), &widen(&b), accumulate.then_some(&c0[..]));
        check_close_f32(&c, &want, &abs, k).map_err(TestCaseError::fail)?;
    }

    /// Every f64 kernel against the f64 oracle under the f64 tolerance.
    #[test]
    fn f64_matches_oracle(
        m in 0usize..70, n in 0usize..70, k in 0usize..70,
        la in layouts(), lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut noise = Noise::new(seed);
        let a = operand(m, k, la, &mut noise, |x| x);
        let b = operand(k, n, lb, &mut noise, |x| x);
        let c0: Vec<f64> = (0..m * n).map(|_| noise.next()).collect();
        let mut want = gemm_reference_f64(m, n, k, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs);
        let mut abs = gemm_abs_reference_f64(m, n, k, &a.data, a.rs, a.cs, &b.data, b.rs, b.cs);
        if accumulate {
            for ((w, s), &c) in want.iter_mut().zip(&mut abs).zip(&c0) {
                *w += c;
                *s += c.abs();
            }
        }
        for kernel in f64_kernels_available() {
            let mut c = if accumulate { c0.clone() } else { vec![f64::NAN; m * n] };
            gemm_with(&kernel, a.view(), b.view(), &mut c, accumulate);
            check_close_f64(&c, &want, &abs, k)
                .map_err(|e| TestCaseError::fail(format!("{}: {e}", kernel.name)))?;
        }
    }
}

/// Shapes one below, at and one above each kernel's MR, NR and KC, and two KC blocks deep.
#[test]
fn f32_sizes_straddling_each_kernels_tile_and_depth_edges() {
    for kernel in f32_kernels_available() {
        let (mr, nr, kc) = (kernel.mr, kernel.nr, kernel.kc);
        for m in [1, mr - 1, mr, mr + 1, 2 * mr + 1] {
            for n in [1, nr - 1, nr, nr + 1] {
                for k in [1, kc - 1, kc, kc + 1, 2 * kc + 3] {
                    // Both packing paths for each operand: lanes adjacent in memory, and
                    // lanes contiguous along k (the in-register transpose).
                    let cases = [(false, (Layout::Transposed, Layout::PaddedRows)), (true, (Layout::RowMajor, Layout::PaddedTransposed))];
                    for (accumulate, layouts) in cases {
                        let seed = (m * 1_000_003 + n * 1009 + k) as u64;
                        check_f32_case(&kernel, (m, n, k), layouts, accumulate, seed).unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            }
        }
    }
}

/// Shapes straddling MC (rows packed at once) and NC (columns one task packs).
#[test]
fn f32_sizes_straddling_row_and_column_blocks() {
    for kernel in f32_kernels_available() {
        let (mc, nc) = (kernel.mc, kernel.nc);
        for (m, n, k) in [(mc - 1, 5, 3), (mc + 1, 33, 7), (7, nc - 1, 5), (13, nc + 1, 9)] {
            for threads in [1, 2] {
                pool(threads)
                    .install(|| {
                        let layouts = (Layout::RowMajor, Layout::Strided);
                        check_f32_case(&kernel, (m, n, k), layouts, true, 7)
                    })
                    .unwrap_or_else(|e| panic!("{threads} threads: {e}"));
            }
        }
    }
}

/// Runs `f` on pools of 1, 2 and 3 threads and asserts the results are bitwise equal.
fn assert_thread_count_invariant<E: Pod + Send>(f: impl Fn() -> Vec<E> + Sync) {
    let bits = |v: Vec<E>| bytemuck::cast_slice::<E, u8>(&v).to_vec();
    let one = bits(pool(1).install(&f));
    for threads in [2, 3] {
        let many = bits(pool(threads).install(&f));
        assert!(one == many, "{threads} threads differ from 1 thread");
    }
}

/// For both values of `accumulate`: `c0 (+)= a · b` with `kernel` has the same bits on 1, 2
/// and 3 threads, and the threaded result is right against the oracle, not merely
/// reproducible.
fn assert_threads_agree_and_match_oracle(kernel: &MicroKernel<f32>, a: &Operand<f32>, b: &Operand<f32>, c0: &[f32], what: &str) {
    for accumulate in [false, true] {
        let run = || {
            let mut c = c0.to_vec();
            gemm_with(kernel, a.view(), b.view(), &mut c, accumulate);
            c
        };
        assert_thread_count_invariant(run);
        let (want, abs) = oracle_f32(a, b, accumulate.then_some(c0));
        check_close_f32(&pool(2).install(run), &want, &abs, a.cols)
            .unwrap_or_else(|e| panic!("{}: {what} accumulate={accumulate}: {e}", kernel.name));
    }
}

/// Shapes above `PARALLEL_MIN_MACS` that split by columns, by rows, and both, each crossing
/// KC blocks and tile edges.
const INVARIANCE_SHAPES: [(usize, usize, usize); 4] = [(203, 301, 600), (5, 1100, 500), (700, 7, 500), (1030, 40, 70)];

#[test]
fn f32_result_is_bitwise_independent_of_thread_count() {
    for kernel in f32_kernels_available() {
        for (m, n, k) in INVARIANCE_SHAPES {
            let mut noise = Noise::new(42);
            let a = operand(m, k, Layout::PaddedRows, &mut noise, |x| x as f32);
            let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
            let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
            assert!(m * n * k >= PARALLEL_MIN_MACS);
            assert_threads_agree_and_match_oracle(&kernel, &a, &b, &c0, &format!("{m}x{n}x{k}"));
        }
    }
}

/// Shapes that split over the threads only inside `parallel::on_pool` (between the two
/// thresholds), the gates' 4-column products among them.
const POLLED_SPLIT_SHAPES: [(usize, usize, usize); 3] = [(1024, 4, 256), (300, 37, 90), (9, 700, 70)];

#[test]
fn products_split_only_inside_on_pool_keep_their_bits() {
    assert_eq!(parallel_min_macs(), PARALLEL_MIN_MACS);
    let bits = |c: &[f32]| c.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for kernel in f32_kernels_available() {
        for (m, n, k) in POLLED_SPLIT_SHAPES {
            assert!((PARALLEL_MIN_MACS_POLLED..PARALLEL_MIN_MACS).contains(&(m * n * k)));
            let mut noise = Noise::new(7);
            let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x as f32);
            let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
            let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
            let run = || {
                let mut c = c0.clone();
                gemm_with(&kernel, a.view(), b.view(), &mut c, true);
                c
            };
            let alone = pool(1).install(run);
            // The product is cut into tasks inside `on_pool` only (counted on the calling thread).
            let splits = |f: &dyn Fn()| {
                let before = SPLIT_CALLS.with(Cell::get);
                f();
                SPLIT_CALLS.with(Cell::get) - before
            };
            assert_eq!(pool(2).install(|| splits(&|| drop(run()))), 0, "{}: {m}x{n}x{k} split outside on_pool", kernel.name);
            let inside = pool(2).install(|| crate::cpu::parallel::on_pool(|| splits(&|| drop(run()))));
            assert_eq!(inside, 1, "{}: {m}x{n}x{k} not split inside on_pool", kernel.name);
            for threads in [2, 3] {
                let polled = pool(threads).install(|| crate::cpu::parallel::on_pool(run));
                assert!(bits(&polled) == bits(&alone), "{}: {m}x{n}x{k} on {threads} polled threads", kernel.name);
            }
            let (want, abs) = oracle_f32(&a, &b, Some(&c0));
            check_close_f32(&alone, &want, &abs, k).unwrap_or_else(|e| panic!("{}: {m}x{n}x{k}: {e}", kernel.name));
        }
    }
}

/// Every fused-multiply-add kernel computes each entry in the same order, so they agree to
/// the bit whatever their tile shape.
#[test]
fn simd_kernels_agree_bitwise() {
    let fused: Vec<_> = f32_kernels_available().into_iter().filter(|k| k.name != F32_PORTABLE.name).collect();
    for (m, n, k) in [(37, 45, 600), (50, 16, 300), (5, 70, 257)] {
        let mut noise = Noise::new(11);
        let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x as f32);
        let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
        let results: Vec<Vec<u32>> = fused
            .iter()
            .map(|kernel| {
                let mut c = vec![0.0f32; m * n];
                gemm_with(kernel, a.view(), b.view(), &mut c, false);
                c.iter().map(|x| x.to_bits()).collect()
            })
            .collect();
        for (kernel, r) in fused.iter().zip(&results) {
            assert!(*r == results[0], "{} differs from {}", kernel.name, fused[0].name);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Packing lanes that run along k (the transposing pack, in whichever blocks this CPU
    /// takes: 8 x 8 AVX/AVX2, 4 x 4 SSE2, scalar leftovers) puts source lane `l`, depth `p`
    /// at `panel[p * width + l]` and zeros past the valid lanes, for bf16 (widened: the
    /// f32 with the same top 16 bits, for every bit pattern, NaN included) and for f32.
    #[test]
    fn transposing_pack_matches_the_definition(
        valid in 0usize..20, extra_width in 0usize..13, kc in 0usize..40, pad in 0usize..5,
        bits in proptest::collection::vec(any::<u16>(), 20 * 44),
    ) {
        let width = valid + extra_width;
        let lane_stride = kc + pad;
        let src16: Vec<bf16> = bits[..valid * lane_stride + 1].iter().map(|&b| bf16::from_bits(b)).collect();
        let src32: Vec<f32> = src16.iter().map(|x| f32::from_bits(u32::from(x.to_bits()) << 16)).collect();
        let lanes = Lanes { base: 1, valid, lane_stride, depth_stride: 1 };
        // Written out element by element, as bits (NaN payloads must survive too).
        let mut want = vec![0u32; kc * width];
        for p in 0..kc {
            for l in 0..valid {
                want[p * width + l] = u32::from(src16[1 + l * lane_stride + p].to_bits()) << 16;
            }
        }
        let (mut got16, mut got32) = (vec![f32::NAN; kc * width], vec![f32::NAN; kc * width]);
        if valid > 0 && kc > 0 {
            lanes.pack(&src16, width, &mut got16);
            lanes.pack(&src32, width, &mut got32);
        } else {
            want.clear();
            got16.clear();
            got32.clear();
        }
        let as_bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(&as_bits(&got16), &want, "bf16");
        prop_assert_eq!(&as_bits(&got32), &want, "f32");
    }

    /// The fused one-row sums of a transposed bf16 weight (8 x 8 blocks widened and
    /// transposed in registers) equal a plain fused loop over the widened values, lane by
    /// lane and bit for bit, for every bf16 bit pattern but NaN (an FMA may take a NaN's
    /// payload from either operand; NaNs the sums make themselves only have to be NaN).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fused_bf16_lane_sums_match_a_plain_fused_loop(
        blocks in 1usize..9, pad in 0usize..5,
        bits in proptest::collection::vec(any::<u16>(), gemv::WIDTH * (64 + 4) + 1),
        xs in proptest::collection::vec(-4.0f32..4.0, 64),
    ) {
        let (kc, lane_stride) = (8 * blocks, 8 * blocks + pad);
        let not_nan = |b: u16| if bf16::from_bits(b).is_nan() { bf16::from_f32(1.5) } else { bf16::from_bits(b) };
        let src: Vec<bf16> = bits.iter().map(|&b| not_nan(b)).collect();
        let lanes = Lanes { base: 1, valid: gemv::WIDTH, lane_stride, depth_stride: 1 };
        let a = &xs[..kc];
        // `None` only on a CPU without AVX2 and FMA: nothing fused to check there.
        if let Some(got) = x86::fused_lane_sums_bf16(a, &src, &lanes) {
            for (l, &sum) in got.iter().enumerate() {
                let row = &src[1 + l * lane_stride..][..kc];
                let want = a.iter().zip(row).fold(0f32, |acc, (&x, &w)| x.mul_add(w.widen(), acc));
                prop_assert!(
                    sum.to_bits() == want.to_bits() || (sum.is_nan() && want.is_nan()),
                    "lane {l}, kc {kc}: fused {sum:e}, plain {want:e}"
                );
            }
        }
    }

    /// Reading A in place gives every entry the bits packing A gives, with every kernel: the
    /// same values meet in the same order. Shapes cross the row-panel edge (m not a multiple
    /// of MR), several KC blocks (k > 256) and both sides of `DIRECT_A_MAX_N`; padded and
    /// broadcast rows, f32 on a two-thread pool and f64.
    #[test]
    fn reading_a_in_place_matches_packing_bitwise(
        m in 0usize..100, n in 0usize..100, k in prop_oneof![0usize..20, 250usize..530],
        la in prop_oneof![
            Just(Layout::RowMajor), Just(Layout::PaddedRows), Just(Layout::BroadcastRows)
        ],
        lb in layouts(), accumulate in any::<bool>(), seed in any::<u64>(),
    ) {
        let mut noise = Noise::new(seed);
        let a = operand(m, k, la, &mut noise, |x| x as f32);
        let b = operand(k, n, lb, &mut noise, |x| x as f32);
        let c0: Vec<f32> = (0..m * n).map(|_| noise.next() as f32).collect();
        for kernel in f32_kernels_available() {
            let run = |direct: bool| {
                let mut c = if accumulate { c0.clone() } else { vec![f32::NAN; m * n] };
                pool(2).install(|| {
                    gemm_run(&kernel, direct, a.view(), b.view(), &mut c, accumulate)
                });
                c.into_iter().map(f32::to_bits).collect::<Vec<_>>()
            };
            prop_assert!(run(true) == run(false), "{}: m={m} n={n} k={k} a={la:?}", kernel.name);
        }
        let a64 = operand(m, k, la, &mut noise, |x| x);
        let b64 = operand(k, n, lb, &mut noise, |x| x);
        for kernel in f64_kernels_available() {
            let run = |direct: bool| {
                let mut c = vec![0.5f64; m * n];
                gemm_run(&kernel, direct, a64.view(), b64.view(), &mut c, accumulate);
                c.into_iter().map(f64::to_bits).collect::<Vec<_>>()
            };
            prop_assert!(run(true) == run(false), "{}: m={m} n={n} k={k}", kernel.name);
        }
    }
}

/// Writing into uninitialised memory gives the bits of overwriting an initialised C, for
/// every entry point, including k = 0 (zeros) and edge tiles.
#[test]
fn uninit_output_matches_overwriting() {
    for (m, n, k) in [(37, 45, 600), (50, 16, 300), (5, 70, 257), (13, 9, 0), (0, 4, 3), (30, 100, 40)] {
        let mut noise = Noise::new(3);
        let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x as f32);
        let b = operand(k, n, Layout::Transposed, &mut noise, |x| x as f32);
        let mut want = vec![f32::NAN; m * n];
        gemm_f32(a.view(), b.view(), &mut want, false);
        let mut got = vec![MaybeUninit::<f32>::uninit(); m * n];
        gemm_f32_uninit(a.view(), b.view(), &mut got);
        // SAFETY: the GEMM wrote every element.
        let got: Vec<f32> = got.into_iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());

        let a16 = operand(m, k, Layout::PaddedRows, &mut noise, bf16::from_f64);
        let b16 = operand(k, n, Layout::RowMajor, &mut noise, bf16::from_f64);
        let mut want = vec![f32::NAN; m * n];
        gemm_bf16(a16.view(), b16.view(), &mut want, false);
        let mut got = vec![MaybeUninit::<f32>::uninit(); m * n];
        gemm_bf16_uninit(a16.view(), b16.view(), &mut got);
        // SAFETY: as above.
        let got: Vec<f32> = got.into_iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());

        let a64 = operand(m, k, Layout::Strided, &mut noise, |x| x);
        let b64 = operand(k, n, Layout::PaddedTransposed, &mut noise, |x| x);
        let mut want = vec![f64::NAN; m * n];
        gemm_f64(a64.view(), b64.view(), &mut want, false);
        let mut got = vec![MaybeUninit::<f64>::uninit(); m * n];
        gemm_f64_uninit(a64.view(), b64.view(), &mut got);
        // SAFETY: as above.
        let got: Vec<f64> = got.into_iter().map(|v| unsafe { v.assume_init() }).collect();
        assert_eq!(got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    }
}

#[test]
fn bf16_and_f64_results_are_bitwise_independent_of_thread_count() {
    let (m, n, k) = INVARIANCE_SHAPES[0];
    let mut noise = Noise::new(3);
    let a = operand(m, k, Layout::Strided, &mut noise, bf16::from_f64);
    let b = operand(k, n, Layout::RowMajor, &mut noise, bf16::from_f64);
    assert_thread_count_invariant(|| {
        let mut c = vec![0.0f32; m * n];
        gemm_bf16(a.view(), b.view(), &mut c, false);
        c
    });
    let a = operand(m, k, Layout::RowMajor, &mut noise, |x| x);
    let b = operand(k, n, Layout::PaddedTransposed, &mut noise, |x| x);
    assert_thread_count_invariant(|| {
        let mut c = vec![0.0f64; m * n];
        gemm_f64(a.view(), b.view(), &mut c, false);
        c
    });
}

#[test]
fn empty_inner_dimension_zeroes_or_keeps_c() {
    let a = MatRef::row_major(&[] as &[f32], 2, 0);
    let b = MatRef::row_major(&[] as &[f32], 0, 3);
    let mut c = vec![1.5f32; 6];
    gemm_f32(a, b, &mut c, true);
    assert_eq!(c, vec![1.5; 6]);
    gemm_f32(a, b, &mut c, false);
    assert_eq!(c, vec![0.0; 6]);
}

#[test]
fn empty_outer_dimension_is_a_no_op() {
    let a = MatRef::row_major(&[] as &[f32], 0, 4);
    let b = MatRef::row_major(&[1.0f32; 8], 4, 2);
    let mut c: Vec<f32> = vec![];
    gemm_f32(a, b, &mut c, false);
    assert!(c.is_empty());
}

#[test]
fn transpose_view_multiplies_by_the_transpose() {
    // A = [[1, 2], [3, 4]]; A^T·A = [[10, 14], [14, 20]].
    let data = [1.0f32, 2.0, 3.0, 4.0];
    let a = MatRef::row_major(&data, 2, 2);
    let mut c = [0.0f32; 4];
    gemm_f32(a.t(), a, &mut c, false);
    assert_eq!(c, [10.0, 14.0, 14.0, 20.0]);
}

#[test]
#[should_panic(expected = "inner dimensions differ")]
fn mismatched_inner_dimensions_panic() {
    let data = [0.0f32; 6];
    let mut c = [0.0f32; 4];
    gemm_f32(MatRef::row_major(&data, 2, 3), MatRef::row_major(&data, 2, 3), &mut c, false);
}

#[test]
#[should_panic(expected = "c has length")]
fn wrong_output_length_panics() {
    let data = [0.0f32; 4];
    let mut c = [0.0f32; 3];
    gemm_f32(MatRef::row_major(&data, 2, 2), MatRef::row_major(&data, 2, 2), &mut c, false);
}

#[test]
#[should_panic(expected = "does not fit")]
fn strides_reaching_outside_the_slice_panic() {
    let data = [0.0f32; 4];
    let mut c = [0.0f32; 4];
    let a = MatRef { data: &data, rows: 2, cols: 2, row_stride: 3, col_stride: 1 };
    gemm_f32(a, MatRef::row_major(&data, 2, 2), &mut c, false);
}

#[test]
fn plan_prefers_square_tasks() {
    // Few rows, many columns: split the columns.
    let p = plan(120, 1024, 12, 32, 2);
    assert_eq!((p.row_tasks, p.col_tasks, p.cols_per_task), (1, 2, 512));
    // One column panel: split the rows.
    let p = plan(700, 7, 12, 32, 2);
    assert_eq!((p.row_tasks, p.col_tasks, p.rows_per_task), (2, 1, 360));
    // One thread: one task.
    let p = plan(1000, 1000, 12, 32, 1);
    assert_eq!((p.row_tasks, p.col_tasks), (1, 1));
}

proptest! {
    /// The task grid covers C exactly, with no empty task and no more tasks than threads.
    #[test]
    fn plan_tiles_c_exactly(
        m in 1usize..3000, n in 1usize..3000, mr in 1usize..16, nr in 1usize..40,
        threads in 1usize..9,
    ) {
        let p = plan(m, n, mr, nr, threads);
        prop_assert!(p.row_tasks * p.col_tasks <= threads);
        prop_assert!(p.rows_per_task.is_multiple_of(mr) && p.cols_per_task.is_multiple_of(nr));
        prop_assert!(p.row_tasks * p.rows_per_task >= m);
        prop_assert!((p.row_tasks - 1) * p.rows_per_task < m);
        prop_assert!(p.col_tasks * p.cols_per_task >= n);
        prop_assert!((p.col_tasks - 1) * p.cols_per_task < n);
    }
}
