//! Small hand-written kernels run through the interpreter, each checking one piece of PTX
//! semantics against a value worked out here.

use ptxsim::{GlobalMemory, LaunchDims, Module, launch};

fn dims(grid: u32, block: u32) -> LaunchDims {
    LaunchDims { grid: [grid, 1, 1], block: [block, 1, 1], dynamic_shared: 0 }
}

fn upload_f32(mem: &mut GlobalMemory, v: &[f32]) -> u64 {
    let a = mem.alloc(v.len() * 4);
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    mem.write(a, &bytes).unwrap();
    a
}

fn download_f32(mem: &GlobalMemory, a: u64, n: usize) -> Vec<f32> {
    let mut b = vec![0u8; n * 4];
    mem.read(a, &mut b).unwrap();
    b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

/// y[i] = a[i] * 2 + b[i] for i < n, through a device function with a return parameter.
const AXPY: &str = r#"
.func (.param .b32 ret) twice_plus(.param .b32 px, .param .b32 py)
{
    .reg .f32 %f<3>;
    ld.param.f32 %f0, [px];
    ld.param.f32 %f1, [py];
    fma.rn.f32 %f2, %f0, 0f40000000, %f1;
    st.param.f32 [ret], %f2;
    ret;
}
.visible .entry axpy(.param .u64 pa, .param .u64 pb, .param .u64 py, .param .u32 pn)
.maxntid 64, 1, 1
{
    .reg .b32 %r<6>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<4>;
    .reg .pred %p<2>;
    ld.param.u64 %rd0, [pa];
    ld.param.u64 %rd1, [pb];
    ld.param.u64 %rd2, [py];
    ld.param.u32 %r0, [pn];
    mov.u32 %r1, %ctaid.x;
    mov.u32 %r2, %ntid.x;
    mov.u32 %r3, %tid.x;
    mad.lo.u32 %r4, %r1, %r2, %r3;
    setp.ge.u32 %p0, %r4, %r0;
    @%p0 bra DONE;
    mul.wide.u32 %rd3, %r4, 4;
    add.u64 %rd4, %rd0, %rd3;
    add.u64 %rd5, %rd1, %rd3;
    add.u64 %rd6, %rd2, %rd3;
    ld.global.f32 %f0, [%rd4];
    ld.global.f32 %f1, [%rd5];
    {
        .param .b32 a0;
        .param .b32 a1;
        .param .b32 r0;
        st.param.f32 [a0], %f0;
        st.param.f32 [a1], %f1;
        call.uni (r0), twice_plus, (a0, a1);
        ld.param.f32 %f2, [r0];
    }
    st.global.f32 [%rd6], %f2;
DONE:
    ret;
}
"#;

fn param_u64(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Launches `entry` on one block of `block` threads with the given parameter bytes and options.
fn run_with(mem: &mut GlobalMemory, m: &Module, entry: &str, block: u32, params: &[Vec<u8>], options: ptxsim::LaunchOptions) {
    let refs: Vec<&[u8]> = params.iter().map(|p| &p[..]).collect();
    ptxsim::launch_with(mem, m, entry, dims(1, block), &refs, options).unwrap();
}

/// Launches `entry` on a `grid` of blocks of `block` threads with the given parameter bytes.
fn run(mem: &mut GlobalMemory, m: &Module, entry: &str, grid: u32, block: u32, params: &[Vec<u8>]) -> Result<(), ptxsim::SimError> {
    let refs: Vec<&[u8]> = params.iter().map(|p| &p[..]).collect();
    launch(mem, m, entry, dims(grid, block), &refs)
}

#[test]
fn guarded_elementwise_kernel_with_a_call() {
    let m = Module::parse(&format!("{HEADER}{AXPY}")).unwrap();
    assert_eq!(m.entry_param_sizes("axpy"), Some(vec![8, 8, 8, 4]));
    let mut mem = GlobalMemory::new();
    let n = 100;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 - i as f32).collect();
    let (pa, pb) = (upload_f32(&mut mem, &a), upload_f32(&mut mem, &b));
    let py = mem.alloc(n * 4);
    let params = [param_u64(pa), param_u64(pb), param_u64(py), (n as u32).to_le_bytes().to_vec()];
    run(&mut mem, &m, "axpy", 2, 64, &params).unwrap();
    let y = download_f32(&mem, py, n);
    for i in 0..n {
        assert_eq!(y[i], a[i] * 2.0 + b[i], "element {i}");
    }
    // Without the bounds guard's effect (n larger than the buffers): an out-of-bounds error.
    let big = [param_u64(pa), param_u64(pb), param_u64(py), 128u32.to_le_bytes().to_vec()];
    let err = run(&mut mem, &m, "axpy", 2, 64, &big).unwrap_err().to_string();
    assert!(err.contains("runs past the allocation"), "{err}");
}

/// A block-wide sum: warp butterfly shuffles, one partial per warp in shared memory, a barrier,
/// then thread 0 adds the partials.
const BLOCK_SUM: &str = r#"
.visible .entry block_sum(.param .u64 px, .param .u64 py)
{
    .reg .b32 %r<8>;
    .reg .b64 %rd<4>;
    .reg .f32 %f<4>;
    .reg .pred %p<2>;
    .shared .align 4 .f32 partial[8];
    ld.param.u64 %rd0, [px];
    ld.param.u64 %rd1, [py];
    mov.u32 %r0, %tid.x;
    mul.wide.u32 %rd2, %r0, 4;
    add.u64 %rd2, %rd0, %rd2;
    ld.global.f32 %f0, [%rd2];
    shfl.sync.bfly.b32 %f1, %f0, 16, 31, -1;
    add.rn.f32 %f0, %f0, %f1;
    shfl.sync.bfly.b32 %f1, %f0, 8, 31, -1;
    add.rn.f32 %f0, %f0, %f1;
    shfl.sync.bfly.b32 %f1, %f0, 4, 31, -1;
    add.rn.f32 %f0, %f0, %f1;
    shfl.sync.bfly.b32 %f1, %f0, 2, 31, -1;
    add.rn.f32 %f0, %f0, %f1;
    shfl.sync.bfly.b32 %f1, %f0, 1, 31, -1;
    add.rn.f32 %f0, %f0, %f1;
    and.b32 %r1, %r0, 31;
    shr.u32 %r2, %r0, 5;
    mov.u32 %r3, partial;
    mad.lo.u32 %r3, %r2, 4, %r3;
    setp.eq.u32 %p0, %r1, 0;
    @%p0 st.shared.f32 [%r3], %f0;
    bar.sync 0;
    setp.ne.u32 %p1, %r0, 0;
    @%p1 bra END;
    mov.u32 %r4, partial;
    ld.shared.f32 %f2, [%r4];
    ld.shared.f32 %f3, [%r4+4];
    add.rn.f32 %f2, %f2, %f3;
    ld.shared.f32 %f3, [%r4+8];
    add.rn.f32 %f2, %f2, %f3;
    ld.shared.f32 %f3, [%r4+12];
    add.rn.f32 %f2, %f2, %f3;
    st.global.f32 [%rd1], %f2;
END:
    ret;
}
"#;

#[test]
fn shuffles_shared_memory_and_a_barrier() {
    let m = Module::parse(&format!("{HEADER}{BLOCK_SUM}")).unwrap();
    let mut mem = GlobalMemory::new();
    let x: Vec<f32> = (0..128).map(|i| (i % 7) as f32).collect();
    let px = upload_f32(&mut mem, &x);
    let py = mem.alloc(4);
    let params = [param_u64(px), param_u64(py)];
    run(&mut mem, &m, "block_sum", 1, 128, &params).unwrap();
    assert_eq!(download_f32(&mem, py, 1)[0], x.iter().sum::<f32>());
    // Half a warp: the full-mask shuffle names lanes that were never launched.
    let err = run(&mut mem, &m, "block_sum", 1, 16, &params).unwrap_err().to_string();
    assert!(err.contains("not here"), "{err}");
}

/// One m16n8k16 bf16 product: A (16x16 row-major) and B (16x8, stored as B^T 8x16 row-major)
/// loaded with ldmatrix (.x4 for A, .x2 for B), C = 0, D written row-major.
const MMA: &str = r#"
.visible .entry mma16(.param .u64 pa, .param .u64 pbt, .param .u64 pd)
{
    .reg .b32 %r<16>;
    .reg .b64 %rd<8>;
    .reg .f32 %f<4>;
    .shared .align 16 .b8 sa[512];
    .shared .align 16 .b8 sb[256];
    ld.param.u64 %rd0, [pa];
    ld.param.u64 %rd1, [pbt];
    ld.param.u64 %rd2, [pd];
    mov.u32 %r0, %tid.x;
    // Copy A (512 bytes) and B^T (256 bytes) to shared: 16 bytes per thread for A, 8 for B.
    mul.wide.u32 %rd3, %r0, 16;
    add.u64 %rd4, %rd0, %rd3;
    mov.u32 %r1, sa;
    mad.lo.u32 %r2, %r0, 16, %r1;
    cp.async.cg.shared.global [%r2], [%rd4], 16;
    mul.wide.u32 %rd3, %r0, 8;
    add.u64 %rd4, %rd1, %rd3;
    ld.global.v2.b32 {%r3, %r4}, [%rd4];
    mov.u32 %r5, sb;
    mad.lo.u32 %r6, %r0, 8, %r5;
    st.shared.v2.b32 [%r6], {%r3, %r4};
    cp.async.wait_all;
    bar.sync 0;
    // A: matrix j = rows 8(j&1).., cols 8(j>>1)..; lane l gives row (l&15), col chunk (l>>4).
    and.b32 %r7, %r0, 15;
    shr.u32 %r8, %r0, 4;
    mad.lo.u32 %r9, %r7, 32, %r1;
    mad.lo.u32 %r9, %r8, 16, %r9;
    ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r10, %r11, %r12, %r13}, [%r9];
    // B^T: matrix j = k chunk j, rows n; lanes 0..15 give row (l&7), k chunk (l>>3)&1.
    and.b32 %r7, %r0, 7;
    bfe.u32 %r8, %r0, 3, 1;
    mad.lo.u32 %r9, %r7, 32, %r5;
    mad.lo.u32 %r9, %r8, 16, %r9;
    ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%r14, %r15}, [%r9];
    mov.f32 %f0, 0f00000000;
    mov.f32 %f1, 0f00000000;
    mov.f32 %f2, 0f00000000;
    mov.f32 %f3, 0f00000000;
    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f0, %f1, %f2, %f3}, {%r10, %r11, %r12, %r13}, {%r14, %r15}, {%f0, %f1, %f2, %f3};
    // D: c0,c1 at (g, 2t..), c2,c3 at (g+8, 2t..).
    shr.u32 %r7, %r0, 2;
    and.b32 %r8, %r0, 3;
    shl.b32 %r8, %r8, 1;
    mad.lo.u32 %r9, %r7, 8, %r8;
    mul.wide.u32 %rd5, %r9, 4;
    add.u64 %rd6, %rd2, %rd5;
    st.global.v2.f32 [%rd6], {%f0, %f1};
    st.global.v2.f32 [%rd6+256], {%f2, %f3};
    ret;
}
"#;

fn bf16(x: f32) -> u16 {
    (x.to_bits() >> 16) as u16
}

#[test]
fn ldmatrix_and_mma_give_the_matrix_product() {
    let m = Module::parse(&format!("{HEADER}{MMA}")).unwrap();
    let mut mem = GlobalMemory::new();
    // Small integers: exact in bf16 and in the f32 sums.
    let a: Vec<f32> = (0..256).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let bt: Vec<f32> = (0..128).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
    let to_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|&x| bf16(x).to_le_bytes()).collect() };
    let pa = mem.alloc(512);
    mem.write(pa, &to_bytes(&a)).unwrap();
    let pbt = mem.alloc(256);
    mem.write(pbt, &to_bytes(&bt)).unwrap();
    let pd = mem.alloc(16 * 8 * 4);
    let params = [param_u64(pa), param_u64(pbt), param_u64(pd)];
    run(&mut mem, &m, "mma16", 1, 32, &params).unwrap();
    let d = download_f32(&mem, pd, 128);
    for r in 0..16 {
        for c in 0..8 {
            let want: f32 = (0..16).map(|k| a[r * 16 + k] * bt[c * 16 + k]).sum();
            assert_eq!(d[r * 8 + c], want, "D[{r}][{c}]");
        }
    }
}

/// Warp 1 writes shared[0]; thread 0 of warp 0 reads it into out[block], with or without a
/// barrier in between (`BARRIER` is replaced by `bar.sync 0;` or nothing).
const HANDOFF: &str = r#"
.visible .entry handoff(.param .u64 pout)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    .reg .f32 %f<2>;
    .reg .pred %p<2>;
    .shared .align 4 .f32 cell[1];
    ld.param.u64 %rd0, [pout];
    mov.u32 %r0, %tid.x;
    mov.u32 %r1, cell;
    setp.eq.u32 %p0, %r0, 32;
    mov.f32 %f0, 0f3F800000;
    @%p0 st.shared.f32 [%r1], %f0;
    BARRIER
    setp.ne.u32 %p1, %r0, 0;
    @%p1 bra END;
    ld.shared.f32 %f1, [%r1];
    mov.u32 %r2, %ctaid.x;
    mul.wide.u32 %rd1, %r2, 4;
    add.u64 %rd2, %rd0, %rd1;
    st.global.f32 [%rd2], %f1;
END:
    ret;
}
"#;

#[test]
fn a_missing_barrier_shows_as_never_written_shared_memory() {
    let run = |barrier: &str| -> Vec<f32> {
        let m = Module::parse(&format!("{HEADER}{}", HANDOFF.replace("BARRIER", barrier))).unwrap();
        let mut mem = GlobalMemory::new();
        let out = mem.alloc(16 * 4);
        let params = [param_u64(out)];
        run(&mut mem, &m, "handoff", 16, 64, &params).unwrap();
        download_f32(&mem, out, 16)
    };
    assert!(run("bar.sync 0;").iter().all(|&x| x == 1.0));
    // Warps run in a random order per block: in some blocks warp 0 reads before warp 1 writes.
    let racy = run("");
    assert!(racy.iter().any(|x| x.is_nan()), "{racy:?}");
    assert!(racy.contains(&1.0), "{racy:?}");
}

/// Thread t copies 16 bytes to shared with cp.async, then reads them back before or after the
/// wait (`WAIT_EARLY` / `WAIT_LATE` hold `cp.async.wait_all;` or nothing).
const COPY: &str = r#"
.visible .entry copy(.param .u64 pin, .param .u64 pout)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<6>;
    .reg .f32 %f<2>;
    .shared .align 16 .b8 stage[512];
    ld.param.u64 %rd0, [pin];
    ld.param.u64 %rd1, [pout];
    mov.u32 %r0, %tid.x;
    mul.wide.u32 %rd2, %r0, 16;
    add.u64 %rd3, %rd0, %rd2;
    mov.u32 %r1, stage;
    mad.lo.u32 %r2, %r0, 16, %r1;
    cp.async.cg.shared.global [%r2], [%rd3], 16;
    cp.async.commit_group;
    WAIT_EARLY
    ld.shared.f32 %f0, [%r2];
    WAIT_LATE
    mul.wide.u32 %rd4, %r0, 4;
    add.u64 %rd5, %rd1, %rd4;
    st.global.f32 [%rd5], %f0;
    ret;
}
"#;

#[test]
fn cp_async_lands_only_at_the_wait() {
    let run = |early: &str, late: &str| -> Vec<f32> {
        let text = COPY.replace("WAIT_EARLY", early).replace("WAIT_LATE", late);
        let m = Module::parse(&format!("{HEADER}{text}")).unwrap();
        let mut mem = GlobalMemory::new();
        let input: Vec<f32> = (0..128).map(|i| i as f32).collect();
        let pin = upload_f32(&mut mem, &input);
        let pout = mem.alloc(32 * 4);
        let params = [param_u64(pin), param_u64(pout)];
        run(&mut mem, &m, "copy", 1, 32, &params).unwrap();
        download_f32(&mem, pout, 32)
    };
    let waited = run("cp.async.wait_group 0;", "");
    assert!((0..32).all(|t| waited[t] == (4 * t) as f32), "{waited:?}");
    let early = run("", "cp.async.wait_all;");
    assert!(early.iter().all(|x| x.is_nan()), "{early:?}");
}

/// Each of `iters` rounds: thread t reads a[(t * stride) % n] from global memory and writes it to
/// shared word (t * stride) % 1024; threads t >= active skip both.
const STRIDED: &str = r#"
.visible .entry strided(.param .u64 pa, .param .u32 pstride, .param .u32 pactive, .param .u32 piters)
{
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    .reg .f32 %f<2>;
    .reg .pred %p<3>;
    .shared .align 4 .b8 tile[4096];
    ld.param.u64 %rd0, [pa];
    ld.param.u32 %r0, [pstride];
    ld.param.u32 %r1, [pactive];
    ld.param.u32 %r2, [piters];
    mov.u32 %r3, %tid.x;
    setp.ge.u32 %p0, %r3, %r1;
    mul.lo.u32 %r4, %r3, %r0;
    and.b32 %r4, %r4, 1023;
    mov.u32 %r5, 0;
LOOP:
    setp.ge.u32 %p1, %r5, %r2;
    @%p1 bra DONE;
    @%p0 bra SKIP;
    mul.wide.u32 %rd1, %r4, 4;
    add.u64 %rd2, %rd0, %rd1;
    ld.global.f32 %f0, [%rd2];
    mov.u32 %r6, tile;
    mad.lo.u32 %r7, %r4, 4, %r6;
    st.shared.f32 [%r7], %f0;
SKIP:
    bar.sync 0;
    add.u32 %r5, %r5, 1;
    bra LOOP;
DONE:
    ret;
}
"#;

/// (requests, distinct bytes, transactions, ideal transactions) of one space.
type Totals = (u64, u64, u64, u64);

/// Global (requests, bytes, sectors, ideal) and shared (requests, bytes, wavefronts, ideal) of one
/// launch of `strided` on one block of `block` threads.
fn strided_profile(block: u32, stride: u32, active: u32, iters: u32) -> (Totals, Totals) {
    let m = Module::parse(&format!("{HEADER}{STRIDED}")).unwrap();
    let mut mem = GlobalMemory::new();
    let a = mem.alloc(4096);
    let params = [param_u64(a), stride.to_le_bytes().to_vec(), active.to_le_bytes().to_vec(), iters.to_le_bytes().to_vec()];
    let mut p = ptxsim::profile::LaunchProfile::default();
    run_with(&mut mem, &m, "strided", block, &params, ptxsim::LaunchOptions { profile: Some(&mut p), ..Default::default() });
    (p.totals("global"), p.totals("shared"))
}

#[test]
fn the_profile_counts_sectors_and_bank_conflicts_per_warp_request() {
    // Two warps, three rounds, unit stride: 6 requests of 128 bytes each, 4 sectors and one
    // wavefront apiece.
    assert_eq!(strided_profile(64, 1, 64, 3), ((6, 768, 24, 24), (6, 768, 6, 6)));
    // Stride 2: twice the sectors; a two-way bank conflict.
    assert_eq!(strided_profile(64, 2, 64, 3), ((6, 768, 48, 24), (6, 768, 12, 6)));
    // Stride 32 words: a sector per lane; every lane in one bank.
    assert_eq!(strided_profile(32, 32, 32, 1), ((1, 128, 32, 4), (1, 128, 32, 1)));
    // Stride 33 (a padded row): still a sector per lane, but no bank conflict.
    assert_eq!(strided_profile(32, 33, 32, 1), ((1, 128, 32, 4), (1, 128, 1, 1)));
    // Only 40 of 64 threads active: the second warp's requests have 8 lanes (one sector).
    assert_eq!(strided_profile(64, 1, 40, 2), ((4, 320, 10, 10), (4, 320, 4, 4)));
}

/// Two rounds separated by a barrier; in round r, thread r skips the load (a different lane each
/// round).
const SKIP_ONE: &str = r#"
.visible .entry skip_one(.param .u64 pa)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    .reg .f32 %f<2>;
    .reg .pred %p<3>;
    ld.param.u64 %rd0, [pa];
    mov.u32 %r0, %tid.x;
    mul.wide.u32 %rd1, %r0, 4;
    add.u64 %rd2, %rd0, %rd1;
    mov.u32 %r1, 0;
ROUND:
    setp.eq.u32 %p0, %r0, %r1;
    @!%p0 ld.global.f32 %f0, [%rd2];
    bar.sync 0;
    add.u32 %r1, %r1, 1;
    setp.lt.u32 %p1, %r1, 2;
    @%p1 bra ROUND;
    ret;
}
"#;

#[test]
fn a_lane_that_skipped_an_earlier_round_joins_the_next_rounds_request() {
    let m = Module::parse(&format!("{HEADER}{SKIP_ONE}")).unwrap();
    let mut mem = GlobalMemory::new();
    let a = mem.alloc(128);
    let params = [param_u64(a)];
    let mut p = ptxsim::profile::LaunchProfile::default();
    run_with(&mut mem, &m, "skip_one", 32, &params, ptxsim::LaunchOptions { profile: Some(&mut p), ..Default::default() });
    // One request of 31 lanes per round (124 bytes, 4 sectors each), not a third one for the
    // lane whose count fell behind.
    assert_eq!(p.totals("global"), (2, 248, 8, 8));
}

#[test]
fn the_profile_counts_ldmatrix_phases_and_mma() {
    let m = Module::parse(&format!("{HEADER}{MMA}")).unwrap();
    let mut mem = GlobalMemory::new();
    let (pa, pbt, pd) = (mem.alloc(512), mem.alloc(256), mem.alloc(512));
    let params = [param_u64(pa), param_u64(pbt), param_u64(pd)];
    let mut p = ptxsim::profile::LaunchProfile::default();
    run_with(&mut mem, &m, "mma16", 32, &params, ptxsim::LaunchOptions { profile: Some(&mut p), ..Default::default() });
    assert_eq!(p.mma, 1);
    // The instruction mix counts per thread: one mma, two ldmatrix, a cp.async and its wait, one
    // barrier per lane.
    let mix = |class: &str| p.mix[ptxsim::profile::CLASSES.iter().position(|&c| c == class).unwrap()];
    assert_eq!((mix("mma"), mix("ldmatrix"), mix("cp.async"), mix("bar")), (32, 64, 64, 32));
    assert_eq!(mix("st.global"), 64);
    let by_line: Vec<(&str, u64, u64, u64)> = p.sites.values().map(|s| (s.space, s.requests, s.transactions, s.ideal)).collect();
    assert_eq!(
        by_line,
        vec![
            // cp.async: 512 contiguous bytes read (16 sectors) and written (4 quarter-warp phases).
            ("global", 1, 16, 16),
            ("shared", 1, 4, 4),
            // ld.global.v2 and st.shared.v2 of 256 contiguous bytes.
            ("global", 1, 8, 8),
            ("shared", 1, 2, 2),
            // ldmatrix.x4 of A, rows 32 bytes apart: rows r and r + 4 of each matrix share banks,
            // two wavefronts per matrix.
            ("shared", 1, 8, 4),
            // ldmatrix.x2 of B^T, the same row pitch.
            ("shared", 1, 4, 2),
            // The two st.global.v2 of D: 256 contiguous bytes each.
            ("global", 1, 8, 8),
            ("global", 1, 8, 8),
        ]
    );
    // Every lane executes the kernel's instructions once, in one warp.
    assert!(p.warp_instructions > 30 && p.warp_instructions < 60, "{}", p.warp_instructions);
}

/// Reads the shared word a `cp.async` targets before waiting for it.
const EARLY_READ: &str = r#"
.visible .entry early_read(.param .u64 pin, .param .u64 pout)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<3>;
    .shared .align 16 .b8 buf[16];
    ld.param.u64 %rd0, [pin];
    ld.param.u64 %rd1, [pout];
    mov.u32 %r0, buf;
    cp.async.ca.shared.global [%r0], [%rd0], 4;
    cp.async.commit_group;
    ld.shared.b32 %r1, [%r0];
    cp.async.wait_all;
    st.global.b32 [%rd1], %r1;
    ret;
}
"#;

#[test]
fn cp_async_lands_at_the_wait_by_default_and_at_issue_when_early() {
    let m = Module::parse(&format!("{HEADER}{EARLY_READ}")).unwrap();
    let read = |early: bool| {
        let mut mem = GlobalMemory::new();
        let pin = upload_f32(&mut mem, &[1.5]);
        let pout = mem.alloc(4);
        let params = [param_u64(pin), param_u64(pout)];
        run_with(&mut mem, &m, "early_read", 1, &params, ptxsim::LaunchOptions { early_cp_async: early, ..Default::default() });
        download_f32(&mem, pout, 1)[0]
    };
    // Late: the read sees the NaN fill of fresh shared memory; early: the copied value.
    assert!(read(false).is_nan());
    assert_eq!(read(true), 1.5);
}
