//! GPU GEMMs against the f64 CPU oracle: the bf16 tensor-core kernel (all layouts, both outputs)
//! and the f32 SIMT kernel (any strides).
//!
//! Tolerance. bf16 values widen exactly to f32, and the oracle sums their products in f64, so a
//! kernel that accumulates in f32 (in any order, with or without FMA) is within
//! `kernels::gemm::f32_tolerance(k, S)` = `gamma(k + 2) * S + (k + 2) * 2^-150` of the oracle, with
//! `S = sum_p |A[i][p]| |B[p][j]|` (the worst-case inner-product bound, see gemm/mod.rs; it cannot
//! fail a correct kernel and still catches a missing or misplaced term). The bf16 output adds one
//! rounding of the f32 result `c`: `|bf16(c) - c| <= 2^-8 |c| + 2^-134` (relative unit roundoff of
//! an 8-bit significand, plus half the smallest bf16 subnormal), with `|c| <= |want| + tol`.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::gemm::cuda::{
    Bf16Layout, Bf16Tile, GemmBatch, GemmDims, Strides, gemm_bf16, gemm_bf16_to_bf16,
    gemm_bf16_with_tile, gemm_f32, gemm_f32_batched,
};
use brainstacks_kernels::gemm::{
    check_close_f32, f32_tolerance, gemm_abs_reference_f32, gemm_reference_f32,
};
use brainstacks_kernels::launch::GpuError;
use common::gpu;
use half::bf16;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 32;
/// Written into C before the launch: entries outside `m x n` (row padding) must keep it. Exact in
/// bf16 too, since the bf16 output buffer starts with it.
const SENTINEL: f32 = 1232.0;

/// Outer sizes: around the 16-row mma tile, the 128 block tile, and a large odd size.
fn outer() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(15),
        Just(16),
        Just(17),
        Just(127),
        Just(128),
        Just(129),
        Just(301),
        1usize..400,
    ]
}

/// k for the k-contiguous layouts: multiples of 8 around the 16-step and the 32-wide k-tile.
fn k_mult8() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(8),
        Just(16),
        Just(24),
        Just(136),
        (0usize..80).prop_map(|x| 8 * x),
    ]
}

/// None: the automatic choice (narrow at these sizes), else a forced block shape.
fn tile() -> impl Strategy<Value = Option<Bf16Tile>> {
    prop_oneof![
        Just(None),
        Just(Some(Bf16Tile::Narrow)),
        Just(Some(Bf16Tile::Wide))
    ]
}

fn layout() -> impl Strategy<Value = Bf16Layout> {
    prop_oneof![
        Just(Bf16Layout::Nt),
        Just(Bf16Layout::Nn),
        Just(Bf16Layout::Tn)
    ]
}

/// Row padding in elements (bf16 operands need multiples of 8).
fn pad8() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(8), Just(24)]
}

/// Deterministic pseudo-random bf16 values in about [-2, 2] with a spread of exponents.
fn bf16_data(len: usize, seed: u64) -> Vec<u16> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            let scale = [1.0, 0.25, 2.0, 1.0 / 64.0][(s & 3) as usize];
            bf16::from_f64((2.0 * u - 1.0) * scale).to_bits()
        })
        .collect()
}

fn widen(v: &[u16]) -> Vec<f32> {
    v.iter().map(|&h| bf16::from_bits(h).to_f32()).collect()
}

/// Stored shapes `(rows, cols)` of A and B for a layout.
fn stored(layout: Bf16Layout, m: usize, n: usize, k: usize) -> ((usize, usize), (usize, usize)) {
    match layout {
        Bf16Layout::Nt => ((m, k), (n, k)),
        Bf16Layout::Nn => ((m, k), (k, n)),
        Bf16Layout::Tn => ((k, m), (k, n)),
    }
}

/// Oracle strides `(rs, cs)` reading the logical A (`m x k`) and B (`k x n`) from storage.
fn oracle_strides(layout: Bf16Layout, lda: usize, ldb: usize) -> ((usize, usize), (usize, usize)) {
    match layout {
        Bf16Layout::Nt => ((lda, 1), (1, ldb)),
        Bf16Layout::Nn => ((lda, 1), (ldb, 1)),
        Bf16Layout::Tn => ((1, lda), (ldb, 1)),
    }
}

/// The `m x n` block of a row-major buffer with stride `ld`, and whether the padding kept `SENTINEL`.
fn unpad(c: &[f32], m: usize, n: usize, ld: usize) -> (Vec<f32>, bool) {
    let mut out = Vec::with_capacity(m * n);
    let mut pad_ok = true;
    for (idx, &x) in c.iter().enumerate() {
        if idx % ld < n && idx / ld < m {
            out.push(x);
        } else if x != SENTINEL {
            pad_ok = false;
        }
    }
    (out, pad_ok)
}

#[allow(clippy::too_many_arguments)]
fn run_bf16_case(
    layout: Bf16Layout,
    m: usize,
    n: usize,
    k: usize,
    pads: (usize, usize, usize),
    bf16_out: bool,
    tile: Option<Bf16Tile>,
    seed: u64,
) -> Result<(), TestCaseError> {
    let g = gpu().expect("checked by the caller");
    let ((ar, ac), (br, bc)) = stored(layout, m, n, k);
    let (lda, ldb, ldc) = (ac + pads.0, bc + pads.1, n + pads.2);
    // Pad the stored column counts up to the 8-multiple the kernel needs (Tn allows any k or m).
    let lda = lda.next_multiple_of(8);
    let ldb = ldb.next_multiple_of(8);
    let a = bf16_data(ar * lda, seed);
    let b = bf16_data(br * ldb, seed ^ 0x9E37_79B9_7F4A_7C15);
    let (af, bfv) = (widen(&a), widen(&b));
    let ((a_rs, a_cs), (b_rs, b_cs)) = oracle_strides(layout, lda, ldb);
    let want = gemm_reference_f32(m, n, k, &af, a_rs, a_cs, &bfv, b_rs, b_cs);
    let abs = gemm_abs_reference_f32(m, n, k, &af, a_rs, a_cs, &bfv, b_rs, b_cs);
    let dims = GemmDims {
        m,
        n,
        k,
        lda,
        ldb,
        ldc,
    };
    let da = g.htod(&a).unwrap();
    let db = g.htod(&b).unwrap();
    let c_len = m * ldc;
    let got: Vec<f32> = if bf16_out {
        let mut dc = g
            .htod(&vec![bf16::from_f32(SENTINEL).to_bits(); c_len])
            .unwrap();
        match tile {
            None => gemm_bf16_to_bf16(g, layout, dims, &da, &db, &mut dc).unwrap(),
            Some(t) => gemm_bf16_with_tile(g, layout, dims, &da, &db, &mut dc, t).unwrap(),
        }
        widen(&g.dtoh(&dc).unwrap())
    } else {
        let mut dc = g.htod(&vec![SENTINEL; c_len]).unwrap();
        match tile {
            None => gemm_bf16(g, layout, dims, &da, &db, &mut dc).unwrap(),
            Some(t) => gemm_bf16_with_tile(g, layout, dims, &da, &db, &mut dc, t).unwrap(),
        }
        g.dtoh(&dc).unwrap()
    };
    let ctx = format!(
        "{layout:?} {tile:?} m={m} n={n} k={k} lda={lda} ldb={ldb} ldc={ldc} bf16_out={bf16_out}"
    );
    let (got, pad_ok) = unpad(&got, m, n, ldc);
    prop_assert!(pad_ok, "{}: wrote outside m x n", ctx);
    if !bf16_out {
        check_close_f32(&got, &want, &abs, k)
            .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))?;
    } else {
        for (idx, ((&x, &w), &s)) in got.iter().zip(&want).zip(&abs).enumerate() {
            let tol = f32_tolerance(k, s);
            let tol = tol + 2f64.powi(-8) * (w.abs() + tol) + 2f64.powi(-134);
            let diff = (f64::from(x) - w).abs();
            prop_assert!(
                diff <= tol,
                "{}: entry {}: got {:e}, want {:e}, |diff| {:e} > {:e}",
                ctx,
                idx,
                x,
                w,
                diff,
                tol
            );
        }
    }
    Ok(())
}

#[test]
fn gemm_bf16_matches_oracle() {
    if gpu().is_none() {
        return;
    }
    let mut runner = TestRunner::new(Config::with_cases(96));
    let case = (
        layout(),
        outer(),
        outer(),
        k_mult8(),
        (pad8(), pad8(), 0usize..5),
        (any::<bool>(), tile()),
        any::<u64>(),
    );
    runner
        .run(&case, |(layout, m, n, k, pads, (out, tile), seed)| {
            run_bf16_case(layout, m, n, k, pads, out, tile, seed)
        })
        .unwrap();
}

#[test]
fn gemm_bf16_tn_any_k_and_edges() {
    // Tn reads both operands along m / n, so k needs no alignment; m and n end inside a chunk.
    if gpu().is_none() {
        return;
    }
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let case = (
        outer(),
        outer(),
        prop_oneof![Just(1usize), Just(7), Just(31), Just(33), 0usize..300],
        (any::<bool>(), tile()),
        any::<u64>(),
    );
    runner
        .run(&case, |(m, n, k, (out, tile), seed)| {
            run_bf16_case(Bf16Layout::Tn, m, n, k, (0, 0, 0), out, tile, seed)
        })
        .unwrap();
}

#[test]
fn gemm_bf16_fixed_edge_cases() {
    if gpu().is_none() {
        return;
    }
    for layout in [Bf16Layout::Nt, Bf16Layout::Nn, Bf16Layout::Tn] {
        for &(m, n, k) in &[
            (1, 1, 8),
            (16, 8, 16),
            (128, 128, 32),
            (129, 127, 40),
            (256, 384, 1024),
            (257, 513, 72),
            (17, 301, 0),
            (300, 5, 136),
        ] {
            for out in [false, true] {
                for tile in [Bf16Tile::Narrow, Bf16Tile::Wide] {
                    let seed = (m * 31 + n * 7 + k) as u64;
                    run_bf16_case(layout, m, n, k, (8, 0, 3), out, Some(tile), seed)
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
    }
}

#[test]
fn gemm_bf16_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let a = g.htod(&vec![0u16; 64 * 64]).unwrap();
    let b = g.htod(&vec![0u16; 64 * 64]).unwrap();
    let mut c = g.alloc_zeros::<f32>(64 * 64).unwrap();
    let ok = GemmDims {
        m: 64,
        n: 64,
        k: 64,
        lda: 64,
        ldb: 64,
        ldc: 64,
    };
    gemm_bf16(g, Bf16Layout::Nt, ok, &a, &b, &mut c).unwrap();
    let bad = [
        GemmDims {
            k: 60,
            lda: 60,
            ldb: 60,
            ..ok
        }, // lda not a multiple of 8
        GemmDims { k: 60, ..ok },   // k % 8 != 0 for Nt
        GemmDims { m: 65, ..ok },   // A and C too short
        GemmDims { lda: 32, ..ok }, // lda < k
        GemmDims { ldc: 72, ..ok }, // C too short
    ];
    for d in bad {
        let e = gemm_bf16(g, Bf16Layout::Nt, d, &a, &b, &mut c).unwrap_err();
        assert!(matches!(e, GpuError::Invalid { .. }), "{d:?}: {e}");
    }
    // k % 8 != 0 is fine for Tn (both operands run along m / n).
    gemm_bf16(g, Bf16Layout::Tn, GemmDims { k: 60, ..ok }, &a, &b, &mut c).unwrap();
}

/// A strided f32 operand: rows x cols, row-major with padding or stored transposed (with padding).
fn f32_operand(
    rows: usize,
    cols: usize,
    transposed: bool,
    pad: usize,
    seed: u64,
) -> (Vec<f32>, Strides) {
    let (outer, inner) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let ld = inner + pad;
    let len = if outer == 0 {
        0
    } else {
        (outer - 1) * ld + inner
    };
    let v = widen(&bf16_data(len, seed))
        .into_iter()
        .zip(bf16_data(len, seed ^ 0x5555))
        .map(|(x, y)| x + bf16::from_bits(y).to_f32() * (1.0 / 512.0)) // more than 8 bits
        .collect();
    let s = if transposed {
        Strides { rs: 1, cs: ld }
    } else {
        Strides { rs: ld, cs: 1 }
    };
    (v, s)
}

#[test]
fn gemm_f32_matches_oracle() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(64));
    let sizes = prop_oneof![
        Just(0usize),
        Just(1),
        Just(15),
        Just(16),
        Just(17),
        Just(63),
        Just(64),
        Just(65),
        Just(127),
        Just(128),
        Just(129),
        Just(301),
        1usize..200
    ];
    let case = (
        sizes.clone(),
        sizes.clone(),
        sizes,
        (any::<bool>(), any::<bool>()),
        (0usize..4, 0usize..4, 0usize..3),
        any::<u64>(),
    );
    runner
        .run(&case, |(m, n, k, (ta, tb), (pa, pb, pc), seed)| {
            let (a, sa) = f32_operand(m, k, ta, pa, seed);
            let (b, sb) = f32_operand(k, n, tb, pb, seed ^ 0xABCD);
            let want = gemm_reference_f32(m, n, k, &a, sa.rs, sa.cs, &b, sb.rs, sb.cs);
            let abs = gemm_abs_reference_f32(m, n, k, &a, sa.rs, sa.cs, &b, sb.rs, sb.cs);
            let ldc = n + pc;
            let da = g.htod(&a).unwrap();
            let db = g.htod(&b).unwrap();
            let mut dc = g.htod(&vec![SENTINEL; m * ldc]).unwrap();
            gemm_f32(g, m, n, k, &da, sa, &db, sb, &mut dc, ldc).unwrap();
            let (got, pad_ok) = unpad(&g.dtoh(&dc).unwrap(), m, n, ldc);
            let ctx = format!("m={m} n={n} k={k} A {sa:?} B {sb:?} ldc={ldc}");
            prop_assert!(pad_ok, "{}: wrote outside m x n", ctx);
            check_close_f32(&got, &want, &abs, k)
                .map_err(|e| TestCaseError::fail(format!("{ctx}: {e}")))
        })
        .unwrap();
}

#[test]
fn gemm_f32_rejects_operands_that_do_not_fit() {
    let Some(g) = gpu() else { return };
    let a = g.htod(&[0f32; 10]).unwrap();
    let mut c = g.alloc_zeros::<f32>(4).unwrap();
    let s = Strides { rs: 5, cs: 1 };
    // A is 2 x 5 (fits), B 5 x 2 read with strides (2, 1) needs 10 elements: fits; C 2 x 2 fits.
    gemm_f32(g, 2, 2, 5, &a, s, &a, Strides { rs: 2, cs: 1 }, &mut c, 2).unwrap();
    let e = gemm_f32(g, 3, 2, 5, &a, s, &a, Strides { rs: 2, cs: 1 }, &mut c, 2).unwrap_err();
    assert!(matches!(e, GpuError::Invalid { .. }), "{e}");
    let e = gemm_f32(g, 2, 2, 5, &a, s, &a, Strides { rs: 2, cs: 1 }, &mut c, 3).unwrap_err();
    assert!(matches!(e, GpuError::Invalid { .. }), "{e}");
}

/// One launch over `outer x inner` products: A entries packed with a gap after each (and read
/// from a view that starts past the buffer's first element), B shared by the outer entries
/// (batch stride 0), C entries dense. Every entry against the oracle.
#[test]
fn gemm_f32_batched_matches_oracle_per_entry() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(24));
    let sizes = prop_oneof![Just(1usize), Just(17), Just(64), Just(129), 1usize..80];
    let case = (
        (sizes.clone(), sizes.clone(), prop_oneof![Just(0usize), 1usize..70]),
        (1usize..4, 1usize..5),
        (any::<bool>(), any::<bool>()),
        (0usize..3, 0usize..9),
        any::<u64>(),
    );
    runner
        .run(&case, |((m, n, k), (outer, inner), (ta, tb), (gap, lead), seed)| {
            let count = outer * inner;
            let a_entries: Vec<(Vec<f32>, Strides)> = (0..count).map(|z| f32_operand(m, k, ta, 1, seed ^ z as u64)).collect();
            let b_entries: Vec<(Vec<f32>, Strides)> = (0..inner).map(|z| f32_operand(k, n, tb, 0, seed ^ 0xB0 ^ z as u64)).collect();
            let (sa, sb) = (a_entries[0].1, b_entries[0].1);
            let a_step = a_entries[0].0.len() + gap;
            let mut a_all = vec![f32::NAN; lead + count * a_step];
            for (z, (v, _)) in a_entries.iter().enumerate() {
                a_all[lead + z * a_step..][..v.len()].copy_from_slice(v);
            }
            let b_step = b_entries[0].0.len();
            let b_all: Vec<f32> = b_entries.iter().flat_map(|(v, _)| v.iter().copied()).collect();
            let batch = GemmBatch { outer, inner, a: (inner * a_step, a_step), b: (0, b_step), c: m * n };
            let da = g.htod(&a_all).unwrap();
            let db = g.htod(&b_all).unwrap();
            let mut dc = g.htod(&vec![SENTINEL; count * m * n + 3]).unwrap();
            let a_view = da.slice(lead..);
            gemm_f32_batched(g, m, n, k, batch, &a_view, sa, &db.as_view(), sb, &mut dc.as_view_mut(), n).unwrap();
            let got = g.dtoh(&dc).unwrap();
            let ctx = format!("m={m} n={n} k={k} batch {outer}x{inner} A {sa:?} B {sb:?} gap={gap} lead={lead}");
            prop_assert!(got[count * m * n..].iter().all(|&x| x == SENTINEL), "{}: wrote past the last entry", ctx);
            for z in 0..count {
                let (a, b) = (&a_entries[z].0, &b_entries[z % inner].0);
                let want = gemm_reference_f32(m, n, k, a, sa.rs, sa.cs, b, sb.rs, sb.cs);
                let abs = gemm_abs_reference_f32(m, n, k, a, sa.rs, sa.cs, b, sb.rs, sb.cs);
                check_close_f32(&got[z * m * n..(z + 1) * m * n], &want, &abs, k)
                    .map_err(|e| TestCaseError::fail(format!("{ctx}, entry {z}: {e}")))?;
            }
            Ok(())
        })
        .unwrap();
}

/// No GPU needed: which batches one launch takes (callers split or loop over the others).
#[test]
fn batches_past_one_launch_are_flagged() {
    let ok = GemmBatch { outer: 256, inner: 16, a: (1 << 20, 1 << 10), b: (0, 1 << 10), c: 4096 };
    assert!(ok.fits_one_launch());
    assert!(GemmBatch::ONE.fits_one_launch());
    assert!(!GemmBatch { outer: 4096, ..ok }.fits_one_launch(), "65536 entries");
    assert!(!GemmBatch { a: (1 << 31, 0), ..ok }.fits_one_launch(), "a 2^31 stride");
    assert!(!GemmBatch { c: 1 << 31, ..ok }.fits_one_launch(), "2^31 elements per C entry");
}

#[test]
fn gemm_f32_batched_rejects_entries_that_do_not_fit_or_overlap() {
    let Some(g) = gpu() else { return };
    let a = g.htod(&[0f32; 12]).unwrap();
    let mut c = g.alloc_zeros::<f32>(8).unwrap();
    let s = Strides { rs: 2, cs: 1 };
    let fits = GemmBatch { outer: 1, inner: 3, a: (0, 4), b: (0, 4), c: 2 };
    // Three 1 x 2 products of A (1 x 2) and B (2 x 2, 4 elements apart): the last entry ends at 12.
    gemm_f32_batched(g, 1, 2, 2, fits, &a.as_view(), s, &a.as_view(), s, &mut c.as_view_mut(), 2).unwrap();
    for (what, batch) in [
        ("past the end of B", GemmBatch { b: (0, 5), ..fits }),
        ("overlapping C entries", GemmBatch { c: 1, ..fits }),
        ("past the end of C", GemmBatch { c: 4, ..fits }),
    ] {
        let e = gemm_f32_batched(g, 1, 2, 2, batch, &a.as_view(), s, &a.as_view(), s, &mut c.as_view_mut(), 2).unwrap_err();
        assert!(matches!(e, GpuError::Invalid { .. }), "{what}: {e}");
    }
    let huge = GemmBatch { outer: 65_536, inner: 1, a: (0, 0), b: (0, 0), c: 2 };
    let mut big = g.alloc_zeros::<f32>(2 * 65_536).unwrap();
    let e = gemm_f32_batched(g, 1, 2, 2, huge, &a.as_view(), s, &a.as_view(), s, &mut big.as_view_mut(), 2).unwrap_err();
    assert!(e.to_string().contains("65535"), "{e}");
}

/// Throughput of the bf16 kernel at 4096^3 and 8192^3 (run with `--ignored --nocapture` on a GPU);
/// a few sampled entries are checked against the oracle so a fast wrong kernel cannot pass.
#[test]
#[ignore = "benchmark: large, run by hand on a GPU"]
fn gemm_bf16_throughput() {
    let Some(g) = gpu() else { return };
    for size in [4096usize, 8192] {
        for (layout, tile) in [Bf16Layout::Nt, Bf16Layout::Nn, Bf16Layout::Tn]
            .into_iter()
            .flat_map(|l| [(l, Bf16Tile::Narrow), (l, Bf16Tile::Wide)])
        {
            let (m, n, k) = (size, size, size);
            let a = bf16_data(size * size, 1);
            let b = bf16_data(size * size, 2);
            let da = g.htod(&a).unwrap();
            let db = g.htod(&b).unwrap();
            let mut dc = g.alloc_zeros::<f32>(m * n).unwrap();
            let dims = GemmDims {
                m,
                n,
                k,
                lda: size,
                ldb: size,
                ldc: size,
            };
            gemm_bf16_with_tile(g, layout, dims, &da, &db, &mut dc, tile).unwrap(); // warm-up
            g.synchronize().unwrap();
            let reps = if size == 4096 { 20 } else { 5 };
            let t = std::time::Instant::now();
            for _ in 0..reps {
                gemm_bf16_with_tile(g, layout, dims, &da, &db, &mut dc, tile).unwrap();
            }
            g.synchronize().unwrap();
            let secs = t.elapsed().as_secs_f64() / reps as f64;
            let tflops = 2.0 * (size as f64).powi(3) / secs / 1e12;
            println!(
                "gemm_bf16 {layout:?} {tile:?} {size}^3: {:.3} ms, {tflops:.1} TFLOP/s (check_launches {})",
                secs * 1e3,
                g.check_launches()
            );
            let c = g.dtoh(&dc).unwrap();
            let (af, bfv) = (widen(&a), widen(&b));
            let ((a_rs, a_cs), (b_rs, b_cs)) = oracle_strides(layout, size, size);
            for s in 0..64usize {
                let (i, j) = ((s * 2_654_435_761) % m, (s * 40_503 + 17) % n);
                let (mut want, mut abs) = (0f64, 0f64);
                for p in 0..k {
                    let x =
                        f64::from(af[i * a_rs + p * a_cs]) * f64::from(bfv[p * b_rs + j * b_cs]);
                    want += x;
                    abs += x.abs();
                }
                let diff = (f64::from(c[i * n + j]) - want).abs();
                assert!(
                    diff <= f32_tolerance(k, abs),
                    "{layout:?} {tile:?} {size}: C[{i}][{j}]"
                );
            }
        }
    }
}
