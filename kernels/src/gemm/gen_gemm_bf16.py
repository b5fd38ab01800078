#!/usr/bin/env python3
"""Writes gemm_bf16.ptx (run from this folder: `python3 gen_gemm_bf16.py > gemm_bf16.ptx`).

The kernel is hand-designed; this script only spells out the fully unrolled parts (128
accumulators, 64 mma per k-tile, the predicated epilogue) that would be error-prone to type.
Every index formula here is mirrored, and checked, by the CPU simulation in `layout.rs`:
change both together. The geometry and the layouts are documented in the header it writes.
"""

BM, BK = 128, 32
STAGES = 4
B_REGION = BM * BK * 2  # 8192: the A tile, then the B tile
GROUP_M = 8


class Cfg:
    """One block shape: 2 x wn warps of 64 x 64, block tile 128 x (64 wn), 64 wn threads."""

    def __init__(self, wn, suffix):
        self.wn = wn
        self.bn = 64 * wn
        self.threads = 64 * wn
        self.suffix = suffix
        self.stage = B_REGION + self.bn * BK * 2
        self.smem = STAGES * self.stage
        self.min_blocks = 2 if wn == 2 else 1


CFGS = [Cfg(2, ""), Cfg(4, "_wide")]

HEADER = f"""//
// gemm_bf16.ptx: bf16 tensor-core GEMM, f32 accumulation (hand-designed PTX; the unrolled parts are
// spelled out by gen_gemm_bf16.py beside this file: edit the script, not this text).
//
// Math: C[i][j] = sum_(p < k) A[i][p] * B[p][j], bf16 operands (raw u16 bits), every product and sum
//   in f32 (mma.sync ... .f32.bf16.bf16.f32), summed over k in a fixed order (k-tiles of 32 in
//   increasing order, each split by the tensor core into two k16 steps): deterministic.
//   k == 0 gives C = 0. The `_bf16` outputs round the f32 result once (cvt.rn.bf16.f32).
//   mirrors kernels::gemm::cpu::gemm_reference_f32 (on the operands widened to f32; tolerance in
//   kernels::gemm::f32_tolerance, plus one bf16 rounding for the `_bf16` outputs).
//
// Layouts (row-major storage with leading dimension = row stride in elements):
//   nt: A [m, k] (lda), B given as Bt [n, k] (ldb): C = A * Bt^T       (y = x W^T)
//   nn: A [m, k] (lda), B [k, n] (ldb)                                   (dX = dY W)
//   tn: A given as At [k, m] (lda), B [k, n] (ldb): C = At^T * B         (dW = dY^T X)
//   C [m, n] (ldc), f32 or bf16.
//
// Entries (all 9 params, in order), each in a 128 x 128 block version and a 128 x 256 `_wide` one:
//   gemm_bf16_nt_f32, gemm_bf16_nn_f32, gemm_bf16_tn_f32,
//   gemm_bf16_nt_bf16, gemm_bf16_nn_bf16, gemm_bf16_tn_bf16,
//   gemm_bf16_nt_f32_wide, gemm_bf16_nn_f32_wide, gemm_bf16_tn_f32_wide,
//   gemm_bf16_nt_bf16_wide, gemm_bf16_nn_bf16_wide, gemm_bf16_tn_bf16_wide
//   (a .u64 [u16 *], b .u64 [u16 *], c .u64 [f32 * or u16 *],
//    m .u32, n .u32, k .u32, lda .u32, ldb .u32, ldc .u32)
//   Requirements (gemm/cuda.rs checks them): lda, ldb multiples of 8 and a, b 16-byte aligned (every
//   16-byte chunk that cp.async reads is aligned); k a multiple of 8 when an operand is k-contiguous
//   (nt: A and B; nn: A); m, n arbitrary (edges are zero-filled on load, predicated on store).
//
// Launch geometry (BN = 128, or 256 for `_wide`): 1-D grid of ceil(m/128) * ceil(n/BN) blocks of
//   BN threads (.maxntid BN; .minnctapersm 2 for BN = 128, 1 for 256), dynamic shared memory
//   4 * (8192 + 64 BN) bytes = 65536 (BN = 128) or 98304 (BN = 256); the launcher raises the
//   function's max-dynamic-shared-memory attribute (above the 48 KiB default).
//   Block tile 128 x BN, k-tile 32, {STAGES}-stage cp.async pipeline (stage = A tile 8192 B, then
//   the B tile 64 BN bytes).
//   Main loop over k-tiles kt (wait_group 2 keeps two tiles in flight behind the one computed):
//     ldmatrix k-step 1 of tile kt | cp.async tile kt+3 into the stage of tile kt-1 | 32 mma of
//     k-step 0 | wait_group 2 + bar.sync (tile kt+1 landed everywhere, tile kt fully read) |
//     ldmatrix k-step 0 of tile kt+1 | 32 mma of k-step 1.
//   The fragment loads of the next k-step thus overlap the mma of the current one, across the
//   barrier too; copies of tiles past the end are zero-fills of a stage nobody reads (no branch).
//   Raster: blocks are grouped {GROUP_M} block-rows at a time (block id -> (tile_m, tile_n) walks down a
//   group of 8 tile rows before moving right), so concurrent blocks share A and B tiles in L2.
//   BN/32 warps as 2 (m) x BN/64 (n), each computing a 64 x 64 sub-tile: 4 (m16) x 8 (n8) mma
//   tiles, 128 f32 accumulators per thread.
//
// Shared layouts (16-byte chunks, XOR-swizzled so that every ldmatrix phase, 8 rows of 16 bytes,
//   hits 8 distinct 16-byte bank groups, and cp.async writes stay 16-byte aligned):
//   k-contiguous tile (A of nt/nn, B of nt): 128 rows x 32 k = 64 bytes/row = 4 chunks;
//     element (row, kk) at row*64 + ((kk/8) ^ ((row>>1)&3))*16 + (kk%8)*2.
//   k-contiguous B of the wide version: 256 rows, same formula.
//   outer-contiguous tile (A of tn: [k][m]; B of nn/tn: [k][n]): 32 k-rows x W (128, or 256 for B
//     of the wide version) = 2W bytes/row; element (kr, x) at kr*2W + ((x/8) ^ (kr&7))*16 + (x%8)*2.
//
// Fragments (PTX ISA, mma.m16n8k16 .bf16; g = lane>>2, t = lane&3; "reg r" = r-th .b32 operand,
//   two bf16 each, lower index in the low half):
//   A (16x16, row): reg 0 = (row g, k 2t, 2t+1), reg 1 = (g+8, 2t..), reg 2 = (g, 2t+8..),
//                   reg 3 = (g+8, 2t+8..)
//   B (16x8, col):  reg 0 = (k 2t, 2t+1; col g), reg 1 = (k 2t+8, 2t+9; col g)
//   C (16x8 f32):   c0, c1 = (row g; cols 2t, 2t+1), c2, c3 = (row g+8; cols 2t, 2t+1)
//   ldmatrix .x4: lanes 8j..8j+7 give the 8 row addresses of matrix j, lane l receives in d_j the
//   pair (row l>>2, cols 2(l&3), +1) of matrix j (.trans: of its transpose). Hence:
//     A k-contig:  matrix j = (m 8(j&1).., k 8(j>>1)..); lane l row (l&15), k-chunk (l>>4).
//     A m-contig (.trans): matrix j stored rows k 8(j>>1) + (l&7), m-chunk (j&1).
//     B k-contig:  matrix j = (n 8(j>>1).., k 8(j&1)..): d0,d1 = b0,b1 of n8-tile 2q, d2,d3 of 2q+1.
//     B n-contig (.trans): stored rows k 8(j&1) + (l&7), n-chunk (j>>1).
//   CPU checks: gemm/layout.rs replays the loader, swizzle, ldmatrix and mma fragment index math for
//   one block (and that every ldmatrix phase is conflict-free); gemm/ptx_check.rs runs this very
//   file through the ptxsim interpreter on small shapes, every entry, against the oracle.
//
// History: v1 (2026-11-27) first version (128x128x32 and 128x256x32, 4 stages, warps of 64x64).
//
"""


class K:
    """Accumulates the lines of one entry."""

    def __init__(self):
        self.lines = []

    def __call__(self, s=""):
        self.lines.append("    " + s if s and not s.endswith(":") else s)


def acc(mi, ni, r):
    return f"%acc{(mi * 8 + ni) * 4 + r}"


def entry(layout, out, cfg):
    a_kc = layout in ("nt", "nn")  # A k-contiguous
    b_kc = layout == "nt"  # B k-contiguous
    name = f"gemm_bf16_{layout}_{out}{cfg.suffix}"
    e = K()
    p = lambda s: f"{name}_param_{s}"  # noqa: E731
    out_lines = [
        f".visible .entry {name}(",
        ",\n".join(
            f"    .param .{t} {p(s)}"
            for t, s in [
                ("u64", "a"),
                ("u64", "b"),
                ("u64", "c"),
                ("u32", "m"),
                ("u32", "n"),
                ("u32", "k"),
                ("u32", "lda"),
                ("u32", "ldb"),
                ("u32", "ldc"),
            ]
        ),
        ")",
        f".maxntid {cfg.threads}, 1, 1",
        f".minnctapersm {cfg.min_blocks}",
        "{",
    ]
    e(".reg .pred  %p<64>;")
    e(".reg .b32   %r<128>;")
    e(".reg .b64   %rd<64>;")
    e(".reg .f32   %acc<128>;")
    e(".reg .b32   %fa<32>;")
    e(".reg .b32   %fb<32>;")
    e(".reg .b16   %h<2>;")
    e()
    e(f"ld.param.u64    %rd1, [{p('a')}];")
    e(f"ld.param.u64    %rd2, [{p('b')}];")
    e(f"ld.param.u64    %rd3, [{p('c')}];")
    e(f"ld.param.u32    %r1, [{p('m')}];")
    e(f"ld.param.u32    %r2, [{p('n')}];")
    e(f"ld.param.u32    %r3, [{p('k')}];")
    e(f"ld.param.u32    %r4, [{p('lda')}];")
    e(f"ld.param.u32    %r5, [{p('ldb')}];")
    e(f"ld.param.u32    %r6, [{p('ldc')}];")
    e("cvta.to.global.u64 %rd1, %rd1;")
    e("cvta.to.global.u64 %rd2, %rd2;")
    e("cvta.to.global.u64 %rd3, %rd3;")
    e()
    e("// Raster: (tile_m, tile_n) from the block id, GROUP_M tile rows per group.")
    e("add.u32         %r7, %r1, 127;")
    e("shr.u32         %r7, %r7, 7;               // mtiles")
    e(f"add.u32         %r8, %r2, {cfg.bn - 1};")
    e(f"shr.u32         %r8, %r8, {cfg.bn.bit_length() - 1};               // ntiles")
    e("mov.u32         %r9, %ctaid.x;             // pid")
    e(f"mul.lo.u32      %r10, %r8, {GROUP_M};        // blocks per group")
    e("div.u32         %r11, %r9, %r10;           // group")
    e(f"mul.lo.u32      %r12, %r11, {GROUP_M};       // first tile row of the group")
    e("sub.u32         %r13, %r7, %r12;")
    e(f"min.u32         %r13, %r13, {GROUP_M};       // rows in this group")
    e("mul.lo.u32      %r14, %r11, %r10;")
    e("sub.u32         %r14, %r9, %r14;           // pid within the group")
    e("rem.u32         %r15, %r14, %r13;")
    e("add.u32         %r15, %r15, %r12;          // tile_m")
    e("div.u32         %r16, %r14, %r13;          // tile_n")
    e("shl.b32         %r17, %r15, 7;             // m0")
    e(f"shl.b32         %r18, %r16, {cfg.bn.bit_length() - 1};             // n0")
    e()
    e("mov.u32         %r19, %tid.x;")
    e("and.b32         %r20, %r19, 31;            // lane")
    e("shr.u32         %r21, %r19, 5;             // warp")
    e(f"shr.u32         %r22, %r21, {cfg.wn.bit_length() - 1};             // wm")
    e(f"and.b32         %r23, %r21, {cfg.wn - 1};             // wn")
    e("add.u32         %r24, %r3, 31;")
    e("shr.u32         %r24, %r24, 5;             // ktiles")
    e("mov.u32         %r25, gemm_bf16_smem;      // shared base")
    e()

    # ---------------- loader setup ----------------
    # Per operand X (A: base %rd1, ld %r4, extent m %r1, origin m0 %r17;
    #                B: base %rd2, ld %r5, extent n %r2, origin n0 %r18)
    # K-contiguous: r = tid>>2, c = tid&3; rows r + rpi*i (rpi = threads/4);
    #   sdst = r*64 + ((c ^ ((r>>1)&3))*16) + 64*rpi*i.
    #   state: ptr (rd) = X + ((o + r)*ld + c*8)*2, advanced by 64 per tile; rowlim = E - o - r (s32);
    #          kcol (r) = t*32 + c*8 for the next tile t; stride32 = 32*ld*2.
    # Outer-contiguous (width W, cpr = W/8 chunks per k-row): r = tid/cpr, c = tid%cpr; k-rows r + rpi*i
    #   (rpi = threads/cpr, a multiple of 8); sdst = r*2W + (c ^ (r&7))*16 + 2W*rpi*i.
    #   state: ptr = X + (r*ld + o + c*8)*2, advanced by 32*ld*2 per tile; colbytes = clamp(E-o-8c,0,8)*2;
    #          krow = t*32 + r; stride8 = 8*ld*2.
    ops = {
        "A": dict(kc=a_kc, base="%rd1", ld="%r4", ext="%r1", org="%r17", reg0=30, rd0=10, soff=0,
                  rows=BM),
        "B": dict(kc=b_kc, base="%rd2", ld="%r5", ext="%r2", org="%r18", reg0=40, rd0=20,
                  soff=B_REGION, rows=cfg.bn),
    }
    T = cfg.threads
    for o in ops.values():
        if o["kc"]:
            o["rpi"] = T // 4  # tile rows per copy round
            o["rowbytes"] = 64
            o["copies"] = o["rows"] * 4 // T
        else:
            cpr = o["rows"] // 8  # 16-byte chunks per k-row
            o["cpr"] = cpr
            o["rpi"] = T // cpr
            o["rowbytes"] = 2 * o["rows"]
            o["copies"] = BK * cpr // T
            assert o["rpi"] % 8 == 0
        o["step"] = o["rpi"] * o["rowbytes"]  # shared bytes per copy round
    for nm, o in ops.items():
        r0, d0 = o["reg0"], o["rd0"]
        # registers: %r{r0}: sdst (shared, incl. region offset), %r{r0+1}: row/col limit,
        #            %r{r0+2}: kcol/krow counter, %r{r0+3}: colbytes (outer-contig)
        #            %rd{d0}: ptr, %rd{d0+1}: per-row-group stride, %rd{d0+2}: per-tile step (outer)
        e(f"// Loader of {nm} ({'k-contiguous' if o['kc'] else 'outer-contiguous'} tile).")
        if o["kc"]:
            e(f"shr.u32         %r{r0+4}, %r19, 2;            // r")
            e(f"and.b32         %r{r0+5}, %r19, 3;            // c")
            e(f"shr.u32         %r{r0+6}, %r{r0+4}, 1;")
            e(f"and.b32         %r{r0+6}, %r{r0+6}, 3;")
            e(f"xor.b32         %r{r0+6}, %r{r0+6}, %r{r0+5};    // swizzled chunk")
            e(f"shl.b32         %r{r0+6}, %r{r0+6}, 4;")
            e(f"shl.b32         %r{r0}, %r{r0+4}, 6;")
            e(f"add.u32         %r{r0}, %r{r0}, %r{r0+6};")
            e(f"add.u32         %r{r0}, %r{r0}, %r25;")
            if o["soff"]:
                e(f"add.u32         %r{r0}, %r{r0}, {o['soff']};")
            e(f"sub.u32         %r{r0+1}, {o['ext']}, {o['org']};")
            e(f"sub.u32         %r{r0+1}, %r{r0+1}, %r{r0+4};  // rowlim (s32): round i ok iff rpi*i < rowlim")
            e(f"shl.b32         %r{r0+2}, %r{r0+5}, 3;        // kcol of tile 0")
            e(f"add.u32         %r{r0+7}, {o['org']}, %r{r0+4};")
            e(f"mul.wide.u32    %rd{d0}, %r{r0+7}, {o['ld']};")
            e(f"cvt.u64.u32     %rd{d0+3}, %r{r0+2};")
            e(f"add.u64         %rd{d0}, %rd{d0}, %rd{d0+3};")
            e(f"shl.b64         %rd{d0}, %rd{d0}, 1;")
            e(f"add.u64         %rd{d0}, %rd{d0}, {o['base']};     // ptr")
            e(f"mul.wide.u32    %rd{d0+1}, {o['ld']}, {2 * o['rpi']};        // rpi rows in bytes")
        else:
            e(f"shr.u32         %r{r0+4}, %r19, {o['cpr'].bit_length() - 1};            // r")
            e(f"and.b32         %r{r0+5}, %r19, {o['cpr'] - 1};           // c")
            e(f"and.b32         %r{r0+6}, %r{r0+4}, 7;")
            e(f"xor.b32         %r{r0+6}, %r{r0+5}, %r{r0+6};")
            e(f"shl.b32         %r{r0+6}, %r{r0+6}, 4;")
            e(f"mul.lo.u32      %r{r0}, %r{r0+4}, {o['rowbytes']};")
            e(f"add.u32         %r{r0}, %r{r0}, %r{r0+6};")
            e(f"add.u32         %r{r0}, %r{r0}, %r25;")
            if o["soff"]:
                e(f"add.u32         %r{r0}, %r{r0}, {o['soff']};")
            e(f"shl.b32         %r{r0+7}, %r{r0+5}, 3;")
            e(f"add.u32         %r{r0+7}, %r{r0+7}, {o['org']};   // first column of the chunk")
            e(f"sub.u32         %r{r0+3}, {o['ext']}, %r{r0+7};")
            e(f"max.s32         %r{r0+3}, %r{r0+3}, 0;")
            e(f"min.s32         %r{r0+3}, %r{r0+3}, 8;")
            e(f"shl.b32         %r{r0+3}, %r{r0+3}, 1;        // colbytes (0..16)")
            e(f"mov.u32         %r{r0+2}, %r{r0+4};           // krow of tile 0")
            e(f"mul.wide.u32    %rd{d0}, %r{r0+4}, {o['ld']};")
            e(f"cvt.u64.u32     %rd{d0+3}, %r{r0+7};")
            e(f"add.u64         %rd{d0}, %rd{d0}, %rd{d0+3};")
            e(f"shl.b64         %rd{d0}, %rd{d0}, 1;")
            e(f"add.u64         %rd{d0}, %rd{d0}, {o['base']};     // ptr")
            e(f"mul.wide.u32    %rd{d0+1}, {o['ld']}, {2 * o['rpi']};        // rpi rows in bytes")
            e(f"mul.wide.u32    %rd{d0+2}, {o['ld']}, 64;        // 32 rows in bytes")
        e()

    # ---------------- fragment address offsets (per lane, relative to the stage base) ----------
    e("// ldmatrix lane offsets (l = lane).")
    e("shr.u32         %r50, %r20, 1;")
    e("and.b32         %r50, %r50, 3;             // (l>>1)&3")
    e("and.b32         %r51, %r20, 7;             // l&7")
    e("shr.u32         %r52, %r20, 3;")
    e("and.b32         %r52, %r52, 1;             // (l>>3)&1")
    e("shr.u32         %r53, %r20, 4;             // l>>4")
    e("and.b32         %r54, %r20, 15;            // l&15")
    # A offsets: %r60..%r63
    if a_kc:
        # aoff_ks = (wm*64 + (l&15))*64 + (((2ks + (l>>4)) ^ ((l>>1)&3))*16), ks = 0, 1
        e("shl.b32         %r55, %r22, 6;")
        e("add.u32         %r55, %r55, %r54;")
        e("shl.b32         %r55, %r55, 6;             // row * 64")
        for ks in range(2):
            e(f"add.u32         %r56, %r53, {2 * ks};")
            e("xor.b32         %r56, %r56, %r50;")
            e("shl.b32         %r56, %r56, 4;")
            e(f"add.u32         %r{60 + ks}, %r55, %r56;       // A offset, k-step {ks}")
    else:
        # aoff_mi = ((l>>4)*8 + (l&7))*256 + (wm*8 + ((2mi + ((l>>3)&1)) ^ (l&7)))*16
        e("shl.b32         %r55, %r53, 3;")
        e("add.u32         %r55, %r55, %r51;")
        e("shl.b32         %r55, %r55, 8;             // k-row * 256")
        e("shl.b32         %r57, %r22, 7;             // wm*8 chunks * 16")
        e("add.u32         %r55, %r55, %r57;")
        for mi in range(4):
            e(f"add.u32         %r56, %r52, {2 * mi};")
            e("xor.b32         %r56, %r56, %r51;")
            e("shl.b32         %r56, %r56, 4;")
            e(f"add.u32         %r{60 + mi}, %r55, %r56;       // A offset, m16 tile {mi}")
    # B offsets: %r64..%r67 (relative to the B region)
    if b_kc:
        # boff_ks = (wn*64 + (l>>4)*8 + (l&7))*64 + (((2ks + ((l>>3)&1)) ^ ((l>>1)&3))*16)
        e("shl.b32         %r55, %r23, 6;")
        e("shl.b32         %r57, %r53, 3;")
        e("add.u32         %r55, %r55, %r57;")
        e("add.u32         %r55, %r55, %r51;")
        e("shl.b32         %r55, %r55, 6;             // n-row * 64")
        for ks in range(2):
            e(f"add.u32         %r56, %r52, {2 * ks};")
            e("xor.b32         %r56, %r56, %r50;")
            e("shl.b32         %r56, %r56, 4;")
            e(f"add.u32         %r{64 + ks}, %r55, %r56;       // B offset, k-step {ks}")
    else:
        # boff_np = (((l>>3)&1)*8 + (l&7))*256 + (wn*8 + ((2np + (l>>4)) ^ (l&7)))*16
        e("shl.b32         %r55, %r52, 3;")
        e("add.u32         %r55, %r55, %r51;")
        e(f"mul.lo.u32      %r55, %r55, {2 * cfg.bn};             // k-row * row bytes")
        e("shl.b32         %r57, %r23, 7;             // wn*8 chunks * 16")
        e("add.u32         %r55, %r55, %r57;")
        for q in range(4):
            e(f"add.u32         %r56, %r53, {2 * q};")
            e("xor.b32         %r56, %r56, %r51;")
            e("shl.b32         %r56, %r56, 4;")
            e(f"add.u32         %r{64 + q}, %r55, %r56;       // B offset, n16 pair {q}")
    e()
    for i in range(128):
        e(f"mov.f32         %acc{i}, 0f00000000;")
    e()

    # ---------------- issue of one tile (uses %r26 = load tile index) ----------------
    def issue():
        # No branch around it: for a tile past the end every row / k predicate is false (its k
        # index is >= k), so the copies only zero-fill a stage nobody reads, and the loop body
        # stays one basic block that ptxas can schedule as a whole.
        e("// Issue the cp.async of tile %r26 into stage %r26 & 3.")
        e("and.b32         %r27, %r26, 3;")
        e(f"mul.lo.u32      %r27, %r27, {cfg.stage};    // stage offset")
        for nm, o in ops.items():
            r0, d0 = o["reg0"], o["rd0"]
            base = o["base"]
            e(f"add.u32         %r28, %r{r0}, %r27;            // {nm} dst")
            R = o["copies"]
            if o["kc"]:
                e(f"setp.lt.u32     %p2, %r{r0+2}, %r3;           // k chunk in range")
                for i in range(R):
                    if i == 0:
                        e(f"mov.b64         %rd30, %rd{d0};")
                    else:
                        e(f"add.u64         %rd30, %rd30, %rd{d0+1};")
                    e(f"setp.gt.s32     %p3, %r{r0+1}, {o['rpi'] * i};")
                    e("and.pred        %p3, %p3, %p2;")
                    e("selp.u32        %r29, 16, 0, %p3;")
                    e(f"selp.b64        %rd31, %rd30, {base}, %p3;")
                    e(f"cp.async.cg.shared.global [%r28+{o['step'] * i}], [%rd31], 16, %r29;")
                e(f"add.u64         %rd{d0}, %rd{d0}, 64;")
                e(f"add.u32         %r{r0+2}, %r{r0+2}, 32;")
            else:
                e(f"setp.gt.s32     %p2, %r{r0+3}, 0;             // chunk has columns in range")
                for i in range(R):
                    if i == 0:
                        e(f"mov.b64         %rd30, %rd{d0};")
                    else:
                        e(f"add.u64         %rd30, %rd30, %rd{d0+1};")
                    e(f"add.u32         %r29, %r{r0+2}, {o['rpi'] * i};")
                    e("setp.lt.u32     %p3, %r29, %r3;            // k row in range")
                    e(f"selp.u32        %r29, %r{r0+3}, 0, %p3;")
                    e("and.pred        %p3, %p3, %p2;")
                    e(f"selp.b64        %rd31, %rd30, {base}, %p3;")
                    e(f"cp.async.cg.shared.global [%r28+{o['step'] * i}], [%rd31], 16, %r29;")
                e(f"add.u64         %rd{d0}, %rd{d0}, %rd{d0+2};")
                e(f"add.u32         %r{r0+2}, %r{r0+2}, 32;")
        e("cp.async.commit_group;")
        e("add.u32         %r26, %r26, 1;")

    trans_a = "" if a_kc else ".trans"
    trans_b = "" if b_kc else ".trans"

    def stage_addrs(kt_reg, base):
        """Per-lane ldmatrix addresses of the stage of tile `kt_reg` into %r{base}..%r{base+7}."""
        e(f"and.b32         %r71, {kt_reg}, 3;")
        e(f"mul.lo.u32      %r71, %r71, {cfg.stage};")
        e("add.u32         %r71, %r71, %r25;          // stage base")
        for i in range(2 if a_kc else 4):
            e(f"add.u32         %r{base + i}, %r71, %r{60 + i};")
        for i in range(2 if b_kc else 4):
            e(f"add.u32         %r{base + 4 + i}, %r71, %r{64 + i};")

    def ldm(ks, base):
        """The A and B fragments of k-step `ks` (registers %fa/%fb{16 ks ..}) from the stage at %r{base}."""
        for mi in range(4):
            regs = ", ".join(f"%fa{ks * 16 + mi * 4 + j}" for j in range(4))
            if a_kc:
                addr = f"%r{base + ks}+{mi * 1024}"
            else:
                addr = f"%r{base + mi}+{ks * 4096}"
            e(f"ldmatrix.sync.aligned.m8n8.x4{trans_a}.shared.b16 {{{regs}}}, [{addr}];")
        for q in range(4):
            regs = ", ".join(f"%fb{ks * 16 + q * 4 + j}" for j in range(4))
            if b_kc:
                addr = f"%r{base + 4 + ks}+{B_REGION + q * 1024}"
            else:
                addr = f"%r{base + 4 + q}+{B_REGION + ks * 16 * 2 * cfg.bn}"
            e(f"ldmatrix.sync.aligned.m8n8.x4{trans_b}.shared.b16 {{{regs}}}, [{addr}];")

    def mma(ks):
        for mi in range(4):
            for ni in range(8):
                d = ", ".join(acc(mi, ni, r) for r in range(4))
                a = ", ".join(f"%fa{ks * 16 + mi * 4 + j}" for j in range(4))
                b = ", ".join(f"%fb{ks * 16 + ni * 2 + j}" for j in range(2))
                e(f"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{d}}}, {{{a}}}, {{{b}}}, {{{d}}};")

    e("// k == 0: no copies at all (the operands may be empty allocations).")
    e("mov.u32         %r70, 0;                   // kt")
    e("setp.eq.u32     %p4, %r24, 0;")
    e("@%p4 bra        EPILOGUE;")
    e("// Prologue: tiles 0, 1, 2 in flight (one commit group each).")
    e("mov.u32         %r26, 0;")
    for _ in range(STAGES - 1):
        issue()
    e()
    e(f"cp.async.wait_group {STAGES - 2};              // tile 0 has landed (this thread's copies)")
    e("bar.sync        0;                         // ... everyone's")
    stage_addrs("%r70", 90)
    ldm(0, 90)
    e("// Loop invariant at the top: k-step 0 fragments of tile kt are in registers; tiles up to")
    e("// kt + 2 are issued. Per iteration: k-step 1 fragments of tile kt, issue tile kt + 3 into")
    e("// the stage of tile kt - 1 (every warp finished reading it before the previous barrier),")
    e("// mma of k-step 0, wait for tile kt + 1 and barrier, k-step 0 fragments of tile kt + 1")
    e("// (past the end: stale data, never used), mma of k-step 1.")
    e("MAINLOOP:")
    stage_addrs("%r70", 72)
    ldm(1, 72)
    issue()
    mma(0)
    e(f"cp.async.wait_group {STAGES - 2};              // tile kt + 1 has landed (this thread's copies)")
    e("bar.sync        0;                         // ... everyone's; all reads of tile kt are done")
    e("add.u32         %r70, %r70, 1;")
    stage_addrs("%r70", 90)
    ldm(0, 90)
    mma(1)
    e("setp.lt.u32     %p5, %r70, %r24;")
    e("@%p5 bra        MAINLOOP;")
    e()
    e("EPILOGUE:")
    e("cp.async.wait_all;")
    esize = 4 if out == "f32" else 2
    e("// row = m0 + wm*64 + 16 mi + 8 h + g, col = n0 + wn*64 + 8 ni + 2t + e")
    e("shr.u32         %r80, %r20, 2;             // g")
    e("and.b32         %r81, %r20, 3;             // t")
    e("shl.b32         %r82, %r22, 6;")
    e("add.u32         %r82, %r82, %r17;")
    e("add.u32         %r82, %r82, %r80;          // row base")
    e("shl.b32         %r83, %r23, 6;")
    e("add.u32         %r83, %r83, %r18;")
    e("shl.b32         %r84, %r81, 1;")
    e("add.u32         %r83, %r83, %r84;          // col base")
    e(f"mul.wide.u32    %rd40, %r83, {esize};")
    e("add.u64         %rd40, %rd40, %rd3;        // &C[0][col base]")
    for ni in range(8):
        for ee in range(2):
            e(f"add.u32         %r85, %r83, {ni * 8 + ee};")
            e(f"setp.lt.u32     %p{10 + ni * 2 + ee}, %r85, %r2;")
    e("// A pair (cols 2t, 2t+1) is stored with one vector store when both columns are in range and")
    e("// ldc is even (the pair is then 8- or 4-byte aligned); otherwise element by element.")
    e("and.b32         %r87, %r6, 1;")
    e("setp.eq.u32     %p8, %r87, 0;              // ldc even")
    for ni in range(8):
        e(f"and.pred        %p{26 + ni}, %p8, %p{11 + ni * 2};   // pair {ni} by vector")
        e(f"not.pred        %p{34 + ni}, %p{26 + ni};")
    for mi in range(4):
        for h in range(2):
            e(f"add.u32         %r86, %r82, {mi * 16 + h * 8};")
            e("setp.lt.u32     %p6, %r86, %r1;")
            e("mul.wide.u32    %rd41, %r86, %r6;")
            e(f"shl.b64         %rd41, %rd41, {2 if esize == 4 else 1};")
            e("add.u64         %rd41, %rd41, %rd40;")
            for ni in range(8):
                v0, v1 = acc(mi, ni, h * 2), acc(mi, ni, h * 2 + 1)
                off = ni * 8 * esize
                e(f"and.pred        %p7, %p6, %p{26 + ni};")
                if out == "f32":
                    e(f"@%p7 st.global.v2.f32 [%rd41+{off}], {{{v0}, {v1}}};")
                else:
                    e(f"cvt.rn.bf16x2.f32 %r88, {v1}, {v0};")
                    e(f"@%p7 st.global.b32 [%rd41+{off}], %r88;")
                e(f"and.pred        %p9, %p6, %p{34 + ni};")
                for ee, v in ((0, v0), (1, v1)):
                    e(f"and.pred        %p7, %p9, %p{10 + ni * 2 + ee};")
                    if out == "f32":
                        e(f"@%p7 st.global.f32 [%rd41+{off + ee * esize}], {v};")
                    else:
                        e(f"cvt.rn.bf16.f32 %h0, {v};")
                        e(f"@%p7 st.global.b16 [%rd41+{off + ee * esize}], %h0;")
    e("ret;")
    return "\n".join(out_lines + e.lines + ["}", ""])


def main():
    parts = [HEADER, ".version 8.0", ".target sm_80", ".address_size 64", ""]
    parts.append(".extern .shared .align 128 .b8 gemm_bf16_smem[];")
    parts.append("")
    for cfg in CFGS:
        for out in ("f32", "bf16"):
            for layout in ("nt", "nn", "tn"):
                parts.append(entry(layout, out, cfg))
    print("\n".join(parts))


if __name__ == "__main__":
    main()
