//! The GEMM PTX text itself, run on the CPU by the `ptxsim` interpreter against the oracle (tests
//! only, no GPU needed): every layout and output type of `gemm_bf16.ptx`, and `gemm_f32.ptx` with
//! strided and transposed operands.
//!
//! The values are multiples of 1/16 in [-1, 1], exact in bf16, and every sum the tests form is
//! exact in f32, so the kernels must match the oracle bit for bit, in any summation order. Each
//! bf16 case runs twice: with `cp.async` data landing at the wait that covers it (a stage read
//! before its wait shows as ptxsim's NaN-filled shared memory) and landing at issue (a stage
//! overwritten while a slower warp still reads it shows as wrong values). ptxsim also runs the
//! warps of a block in a random order between barriers and bounds-checks every access.

use ptxsim::{GlobalMemory, LaunchDims, LaunchOptions, Module};

/// Deterministic values k/16 with |k| <= 16.
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 20) % 33) as f32 / 16.0 - 1.0
        })
        .collect()
}

fn bytes_bf16(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes()).collect()
}

fn bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Written into C first; exact in bf16 too. Entries outside `m x n` must keep it.
const SENTINEL: f32 = 1232.0;

/// A buffer in simulated device memory holding `bytes`.
fn upload(mem: &mut GlobalMemory, bytes: &[u8]) -> u64 {
    let a = mem.alloc(bytes.len());
    mem.write(a, bytes).expect("a fresh allocation holds its bytes");
    a
}

/// Launches `entry` with `args` encoded at the sizes its `.param` list declares (pointers and
/// `.u64` as 8 bytes, `.u32` as 4); a fault the interpreter detects is an error.
fn run(module: &Module, entry: &str, mem: &mut GlobalMemory, dims: LaunchDims, args: &[u64], early_cp_async: bool) -> Result<(), String> {
    let sizes = module.entry_param_sizes(entry).unwrap_or_else(|| panic!("no entry {entry}"));
    assert_eq!(sizes.len(), args.len(), "{entry}: parameter count");
    let params: Vec<Vec<u8>> = args.iter().zip(&sizes).map(|(v, &n)| v.to_le_bytes()[..n].to_vec()).collect();
    let refs: Vec<&[u8]> = params.iter().map(Vec::as_slice).collect();
    let options = LaunchOptions { early_cp_async, ..Default::default() };
    ptxsim::launch_with(mem, module, entry, dims, &refs, options).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    Nt,
    Nn,
    Tn,
}

/// One bf16 GEMM `C = A·B` (`m x n x k`) with the operands' leading dimensions padded by `pads`
/// (rounded up to 8 elements for A and B, as the kernel requires), checked element by element,
/// the padding of C included.
fn bf16_case(layout: Layout, bf16_out: bool, wide: bool, shape: (usize, usize, usize), pads: (usize, usize, usize), early: bool) {
    if let Err(e) = bf16_check(super::PTX_BF16, layout, bf16_out, wide, shape, pads, early) {
        panic!("{e}");
    }
}

/// [`bf16_case`] on the PTX text `ptx`: the first wrong element or interpreter fault, if any.
fn bf16_check(
    ptx: &str,
    layout: Layout,
    bf16_out: bool,
    wide: bool,
    (m, n, k): (usize, usize, usize),
    (pa, pb, pc): (usize, usize, usize),
    early: bool,
) -> Result<(), String> {
    let name = format!(
        "gemm_bf16_{}_{}{}",
        format!("{layout:?}").to_lowercase(),
        if bf16_out { "bf16" } else { "f32" },
        if wide { "_wide" } else { "" }
    );
    let module = Module::parse(ptx).map_err(|e| e.to_string())?;
    let ((ar, ac), (br, bc)) = match layout {
        Layout::Nt => ((m, k), (n, k)),
        Layout::Nn => ((m, k), (k, n)),
        Layout::Tn => ((k, m), (k, n)),
    };
    let (lda, ldb, ldc) = ((ac + pa).next_multiple_of(8), (bc + pb).next_multiple_of(8), n + pc);
    let a = values(ar * lda, 1 + m as u64);
    let b = values(br * ldb, 2 + n as u64);
    let ((a_rs, a_cs), (b_rs, b_cs)) = match layout {
        Layout::Nt => ((lda, 1), (1, ldb)),
        Layout::Nn => ((lda, 1), (ldb, 1)),
        Layout::Tn => ((1, lda), (ldb, 1)),
    };
    let want = super::gemm_reference_f32(m, n, k, &a, a_rs, a_cs, &b, b_rs, b_cs);
    let mut mem = GlobalMemory::new();
    let (da, db) = (upload(&mut mem, &bytes_bf16(&a)), upload(&mut mem, &bytes_bf16(&b)));
    let c0 = vec![SENTINEL; m * ldc];
    let dc = upload(&mut mem, &if bf16_out { bytes_bf16(&c0) } else { bytes_f32(&c0) });
    let bn = if wide { 256 } else { 128 };
    let blocks = (m.div_ceil(128) * n.div_ceil(bn)) as u32;
    let dims = LaunchDims { grid: [blocks, 1, 1], block: [bn as u32, 1, 1], dynamic_shared: 4 * (8192 + 64 * bn as u32) };
    run(&module, &name, &mut mem, dims, &[da, db, dc, m as u64, n as u64, k as u64, lda as u64, ldb as u64, ldc as u64], early)?;
    let mut c = vec![0u8; m * ldc * if bf16_out { 2 } else { 4 }];
    mem.read(dc, &mut c).expect("C is allocated");
    for i in 0..m {
        for j in 0..ldc {
            let e = i * ldc + j;
            let got = if bf16_out {
                f32::from_bits(u32::from(u16::from_le_bytes([c[2 * e], c[2 * e + 1]])) << 16)
            } else {
                f32::from_le_bytes([c[4 * e], c[4 * e + 1], c[4 * e + 2], c[4 * e + 3]])
            };
            let expect = if j < n { want[i * n + j] as f32 } else { SENTINEL };
            // `want` is exact in f32; rounding it to bf16 (RNE) is what the bf16 output stores.
            let expect = if bf16_out && j < n {
                let x = expect.to_bits();
                f32::from_bits((x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16) << 16)
            } else {
                expect
            };
            if got.to_bits() != expect.to_bits() {
                return Err(format!(
                    "{name} early={early} m={m} n={n} k={k} lda={lda} ldb={ldb} ldc={ldc}: C[{i}][{j}] = {got}, want {expect}"
                ));
            }
        }
    }
    Ok(())
}

/// Every output type and block shape of `layouts`, with `cp.async` landing late and early.
fn all_bf16(shape: (usize, usize, usize), pads: (usize, usize, usize), layouts: &[Layout]) {
    for &layout in layouts {
        for bf16_out in [false, true] {
            for wide in [false, true] {
                for early in [false, true] {
                    bf16_case(layout, bf16_out, wide, shape, pads, early);
                }
            }
        }
    }
}

const ALL: [Layout; 3] = [Layout::Nt, Layout::Nn, Layout::Tn];

#[test]
fn bf16_ptx_single_element_and_empty_k() {
    all_bf16((1, 1, 8), (0, 0, 0), &ALL);
    all_bf16((3, 5, 0), (0, 0, 1), &ALL);
}

#[test]
fn bf16_ptx_ragged_edges_with_padding() {
    all_bf16((17, 33, 40), (8, 8, 3), &ALL);
}

#[test]
fn bf16_ptx_edges_inside_every_copy_round() {
    // Row edges that fall inside the 2nd, 3rd and 4th copy rounds of the k-contiguous loader
    // (32 rows per round narrow, 64 wide) and inside a partial 16-byte chunk of the others.
    all_bf16((45, 100, 16), (0, 0, 0), &ALL);
    all_bf16((100, 60, 24), (8, 0, 1), &ALL);
}

#[test]
fn bf16_ptx_several_blocks_and_stage_wraparound() {
    // 7 k-tiles: every stage is reused; 2 x 2 (narrow) and 2 x 1 (wide) blocks with edges.
    all_bf16((129, 130, 200), (0, 8, 1), &ALL);
}

#[test]
fn bf16_ptx_tn_any_k() {
    all_bf16((70, 45, 13), (0, 0, 0), &[Layout::Tn]);
    all_bf16((9, 260, 37), (8, 0, 2), &[Layout::Tn]);
}

#[test]
fn bf16_ptx_grouped_raster_over_many_block_rows() {
    // 10 block rows x 2 block columns (narrow): two raster groups, the second of 2 rows.
    bf16_case(Layout::Nt, false, false, (1280, 200, 16), (0, 0, 0), false);
    bf16_case(Layout::Nn, false, true, (1290, 300, 8), (0, 0, 0), true);
}

/// `gemm_bf16.ptx` with the first occurrence of `from` replaced by `to` (a planted bug).
fn planted(from: &str, to: &str) -> String {
    assert!(super::PTX_BF16.contains(from), "the kernel no longer contains {from:?}: update the planted bug");
    super::PTX_BF16.replacen(from, to, 1)
}

/// The checks above can fail: a pipeline that waits for one tile too few reads a stage before its
/// copies land (caught with late `cp.async`), and a main loop without its barrier lets a fast warp
/// overwrite a stage a slow one is still reading (caught in one of the two modes).
#[test]
fn planted_pipeline_bugs_are_caught() {
    let (shape, pads) = ((129, 130, 200), (0, 8, 1));
    let short_wait = planted("cp.async.wait_group 2;              // tile kt + 1", "cp.async.wait_group 3;              // tile kt + 1");
    let no_barrier = planted("bar.sync        0;                         // ... everyone's; all reads of tile kt are done", "");
    let fails = |ptx: &str, early: bool| bf16_check(ptx, Layout::Nt, false, false, shape, pads, early).is_err();
    assert!(fails(&short_wait, false), "a wait one tile short passed");
    assert!(fails(&no_barrier, false) || fails(&no_barrier, true), "a main loop without its barrier passed");
    // ... while the kernel as written passes both ways.
    assert!(!fails(super::PTX_BF16, false) && !fails(super::PTX_BF16, true));
}

/// One f32 GEMM with A and B stored transposed or not, rows padded by `pad`, C's rows too.
fn f32_case(m: usize, n: usize, k: usize, ta: bool, tb: bool, pad: usize) {
    let module = Module::parse(super::PTX_F32).expect("gemm_f32.ptx parses");
    let operand = |rows: usize, cols: usize, t: bool, seed: u64| {
        let (outer, inner) = if t { (cols, rows) } else { (rows, cols) };
        let ld = inner + pad;
        let len = if outer == 0 { 0 } else { (outer - 1) * ld + inner };
        (values(len, seed), if t { (1, ld) } else { (ld, 1) })
    };
    let (a, (a_rs, a_cs)) = operand(m, k, ta, 5);
    let (b, (b_rs, b_cs)) = operand(k, n, tb, 6);
    let want = super::gemm_reference_f32(m, n, k, &a, a_rs, a_cs, &b, b_rs, b_cs);
    let ldc = n + pad;
    let mut mem = GlobalMemory::new();
    let (da, db) = (upload(&mut mem, &bytes_f32(&a)), upload(&mut mem, &bytes_f32(&b)));
    let dc = upload(&mut mem, &bytes_f32(&vec![SENTINEL; m * ldc]));
    let dims = LaunchDims { grid: [n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1], block: [256, 1, 1], dynamic_shared: 0 };
    // One product: nb_inner 1, batch strides 0 (batched launches: the GPU tests and
    // scripts/ptx_interp/check_gemm.py).
    let sizes = [m, n, k, a_rs, a_cs, b_rs, b_cs, ldc, 1, 0, 0, 0, 0, 0].map(|x| x as u64);
    let args: Vec<u64> = [da, db, dc].into_iter().chain(sizes).collect();
    run(&module, "gemm_f32", &mut mem, dims, &args, false).unwrap_or_else(|e| panic!("{e}"));
    let mut c = vec![0u8; 4 * m * ldc];
    mem.read(dc, &mut c).expect("C is allocated");
    for i in 0..m {
        for j in 0..ldc {
            let o = 4 * (i * ldc + j);
            let got = f32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
            let expect = if j < n { want[i * n + j] as f32 } else { SENTINEL };
            assert_eq!(got, expect, "gemm_f32 m={m} n={n} k={k} ta={ta} tb={tb}: C[{i}][{j}]");
        }
    }
}

#[test]
fn f32_ptx_strided_and_transposed() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        f32_case(1, 1, 1, ta, tb, 0);
        f32_case(65, 70, 33, ta, tb, 3);
        f32_case(17, 130, 0, ta, tb, 1);
        // Several blocks each way, k-tiles with a ragged last one.
        f32_case(130, 260, 20, ta, tb, 2);
    }
}
