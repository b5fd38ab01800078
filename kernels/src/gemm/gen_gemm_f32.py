#!/usr/bin/env python3
"""Writes gemm_f32.ptx (run from this folder: `python3 gen_gemm_f32.py > gemm_f32.ptx`).

Hand-designed register-tiled SIMT kernel; this script only unrolls the 8 x (8 x 8) FMA block, the
staging copies and the predicated epilogue. The geometry is documented in the header it writes.
"""

BM = BN = 128
BK = 8
# Shared tile rows (one k each) are padded from 128 to 132 floats: when the global loads run k
# fastest (a_cs == 1 or b_cs != 1), the 32 lanes of a staging store cover 8 k x 4 m; with 128-float
# rows every k lands in the same bank (an 8-way conflict), with 132 each k shifts by 4 banks.
ROW = BM + 4
BUF = BK * ROW * 4  # bytes of one A (or B) shared tile: 8 rows of 132 f32

HEADER = f"""//
// gemm_f32.ptx: f32 GEMM on the SIMT cores, any shapes and any strides (hand-designed PTX; the
// unrolled parts are spelled out by gen_gemm_f32.py beside this file: edit the script, not this text).
//
// Math: C[i][j] = sum_(p < k) A[i][p] * B[p][j] in f32 (fma.rn.f32), p in increasing order
//   (deterministic). A[i][p] = a[i*a_rs + p*a_cs], B[p][j] = b[p*b_rs + j*b_cs] (element strides, so
//   transposed and padded views need no copy), C[i][j] = c[i*ldc + j]. k == 0 gives C = 0.
//   mirrors kernels::gemm::cpu::gemm_reference_f32 (tolerance: kernels::gemm::f32_tolerance).
//
// Entry:
//   gemm_f32(a .u64 [f32 *], b .u64 [f32 *], c .u64 [f32 *], m .u32, n .u32, k .u32,
//            a_rs .u32, a_cs .u32, b_rs .u32, b_cs .u32, ldc .u32,
//            nb_inner .u32, a_bso .u32, a_bsi .u32, b_bso .u32, b_bsi .u32, c_bs .u32)  17 params
//   Batched: grid z runs over batch entries z = zo * nb_inner + zi (two batch dimensions, so a
//   [batch, heads, rows, cols] view with any strides is one launch); entry z uses
//   a + zo*a_bso + zi*a_bsi, b + zo*b_bso + zi*b_bsi and c + z*c_bs (element offsets). One GEMM:
//   grid z = 1, nb_inner = 1, the batch strides ignored.
//
// Launch geometry: grid (ceil(n/{BN}), ceil(m/{BM}), batch), blocks of 256 threads (.maxntid 256), no dynamic
//   shared memory (static: A and B tiles, double-buffered, 4 x {BUF} = {4 * BUF} bytes).
//   Block tile {BM} x {BN}, k-tile {BK}. Thread (ty, tx) = (tid/16, tid%16) computes the 8 x 8 outputs
//   rows {{4ty + i, 64 + 4ty + i}}, cols {{4tx + j, 64 + 4tx + j}} (i, j < 4), reading its A and B
//   values from shared memory as float4s (As[k][m], Bs[k][n], m / n contiguous; rows padded to
//   {ROW} floats so that the k-fastest staging stores are free of bank conflicts).
//   Each thread stages 4 elements of A and 4 of B per k-tile through registers (zero outside the
//   matrix), loaded while the previous tile is being multiplied; the element order follows the
//   unit stride (k fastest when a_cs == 1, else m fastest; n fastest when b_cs == 1, else k
//   fastest) so that global loads coalesce. One barrier per k-tile: tile t is read from buffer
//   t&1 while tile t+1 is written to the other.
//
// History: v1 (2026-11-27) 64 x 64 tile, 4 x 4 per thread; v2 (same day) 128 x 128, 8 x 8 per
//   thread, double-buffered shared tiles; v3 (2026-11-28) shared rows padded to {ROW} floats (the
//   ptxsim profile counted 3-5 wavefronts per staging store, now 1), and batched over grid z
//   (attention ran one launch per batch entry and head).
//
"""


def main():
    L = []

    def e(s=""):
        L.append("    " + s if s and not s.endswith(":") else s)

    L += [HEADER, ".version 8.0", ".target sm_80", ".address_size 64", ""]
    L.append(f".shared .align 16 .b8 gemm_f32_as[{2 * BUF}];")
    L.append(f".shared .align 16 .b8 gemm_f32_bs[{2 * BUF}];")
    L.append("")
    names = ["a", "b", "c", "m", "n", "k", "a_rs", "a_cs", "b_rs", "b_cs", "ldc",
             "nb_inner", "a_bso", "a_bsi", "b_bso", "b_bsi", "c_bs"]
    types = ["u64"] * 3 + ["u32"] * 14
    L.append(".visible .entry gemm_f32(")
    L.append(",\n".join(f"    .param .{t} gemm_f32_param_{s}" for t, s in zip(types, names)))
    L.append(")")
    L.append(".maxntid 256, 1, 1")
    L.append(".minnctapersm 2")
    L.append("{")
    e(".reg .pred  %p<40>;")
    e(".reg .b32   %r<96>;")
    e(".reg .b64   %rd<48>;")
    e(".reg .f32   %acc<64>;")
    e(".reg .f32   %fa<8>;")
    e(".reg .f32   %fb<8>;")
    e(".reg .f32   %ga<4>;")
    e(".reg .f32   %gb<4>;")
    e()
    for i, s in enumerate(names[:3]):
        e(f"ld.param.u64    %rd{i + 1}, [gemm_f32_param_{s}];")
        e(f"cvta.to.global.u64 %rd{i + 1}, %rd{i + 1};")
    for i, s in enumerate(names[3:]):
        e(f"ld.param.u32    %r{i + 1}, [gemm_f32_param_{s}];")
    # %r1 m, %r2 n, %r3 k, %r4 a_rs, %r5 a_cs, %r6 b_rs, %r7 b_cs, %r8 ldc, %r9 nb_inner,
    # %r10 a_bso, %r11 a_bsi, %r12 b_bso, %r13 b_bsi, %r14 c_bs: moved to %r60.. before the
    # registers are reused below.
    e("// Batch entry z = ctaid.z = zo * nb_inner + zi: move a, b, c to its operands.")
    e("mov.u32         %r60, %ctaid.z;")
    e("div.u32         %r61, %r60, %r9;           // zo")
    e("mul.lo.u32      %r62, %r61, %r9;")
    e("sub.u32         %r62, %r60, %r62;          // zi")
    e("mul.wide.u32    %rd40, %r61, %r10;")
    e("mul.wide.u32    %rd41, %r62, %r11;")
    e("add.u64         %rd40, %rd40, %rd41;")
    e("shl.b64         %rd40, %rd40, 2;")
    e("add.u64         %rd1, %rd1, %rd40;")
    e("mul.wide.u32    %rd40, %r61, %r12;")
    e("mul.wide.u32    %rd41, %r62, %r13;")
    e("add.u64         %rd40, %rd40, %rd41;")
    e("shl.b64         %rd40, %rd40, 2;")
    e("add.u64         %rd2, %rd2, %rd40;")
    e("mul.wide.u32    %rd40, %r60, %r14;")
    e("shl.b64         %rd40, %rd40, 2;")
    e("add.u64         %rd3, %rd3, %rd40;")
    e("mov.u32         %r9, %tid.x;")
    e("shr.u32         %r10, %r9, 4;              // ty")
    e("and.b32         %r11, %r9, 15;             // tx")
    e("mov.u32         %r12, %ctaid.y;")
    e("shl.b32         %r12, %r12, 7;             // m0")
    e("mov.u32         %r13, %ctaid.x;")
    e("shl.b32         %r13, %r13, 7;             // n0")
    e()
    e("// A staging: element q (q < 4) is (m0 + ma + q*dm, kt*8 + ka + q*dk).")
    e("setp.eq.u32     %p1, %r5, 1;               // A k-contiguous?")
    e("shr.u32         %r14, %r9, 3;")
    e("and.b32         %r15, %r9, 127;")
    e("selp.u32        %r16, %r14, %r15, %p1;     // ma")
    e("and.b32         %r14, %r9, 7;")
    e("shr.u32         %r15, %r9, 7;")
    e("selp.u32        %r17, %r14, %r15, %p1;     // ka")
    e("selp.u32        %r18, 32, 0, %p1;          // dm")
    e("selp.u32        %r19, 0, 2, %p1;           // dk")
    e("// B staging: element q is (kt*8 + kb + q*dkb, n0 + nb + q*dn).")
    e("setp.eq.u32     %p2, %r7, 1;               // B n-contiguous?")
    e("shr.u32         %r14, %r9, 7;")
    e("and.b32         %r15, %r9, 7;")
    e("selp.u32        %r20, %r14, %r15, %p2;     // kb")
    e("and.b32         %r14, %r9, 127;")
    e("shr.u32         %r15, %r9, 3;")
    e("selp.u32        %r21, %r14, %r15, %p2;     // nb")
    e("selp.u32        %r22, 2, 0, %p2;           // dkb")
    e("selp.u32        %r23, 0, 32, %p2;          // dn")
    e()
    # Per q: A pointer %rd(10+q) (next tile to load), A row ok %p(4+q), A k index %r(24+q) (next tile)
    #        B pointer %rd(14+q), B col ok %p(8+q), B k index %r(28+q); shared dst (buffer 0)
    #        %r(32+q), %r(36+q)
    e("mov.u32         %r40, gemm_f32_as;")
    e("mov.u32         %r41, gemm_f32_bs;")
    for q in range(4):
        e(f"mad.lo.u32      %r42, %r18, {q}, %r16;        // m in tile")
        e(f"mad.lo.u32      %r43, %r19, {q}, %r17;        // k in tile")
        e("add.u32         %r44, %r42, %r12;")
        e(f"setp.lt.u32     %p{4 + q}, %r44, %r1;")
        if q == 0:
            e("mov.u32         %r24, %r43;               // A k index of element 0, next tile")
            e("mul.wide.u32    %rd30, %r44, %r4;")
            e("mul.wide.u32    %rd31, %r43, %r5;")
            e("add.u64         %rd30, %rd30, %rd31;")
            e("shl.b64         %rd30, %rd30, 2;")
            e("add.u64         %rd10, %rd30, %rd1;        // A pointer of element 0, next tile")
        e(f"mad.lo.u32      %r45, %r43, {ROW}, %r42;")
        e("shl.b32         %r45, %r45, 2;")
        e(f"add.u32         %r{32 + q}, %r45, %r40;")
        e(f"mad.lo.u32      %r42, %r23, {q}, %r21;        // n in tile")
        e(f"mad.lo.u32      %r43, %r22, {q}, %r20;        // k in tile")
        e("add.u32         %r44, %r42, %r13;")
        e(f"setp.lt.u32     %p{8 + q}, %r44, %r2;")
        if q == 0:
            e("mov.u32         %r28, %r43;               // B k index of element 0, next tile")
            e("mul.wide.u32    %rd30, %r43, %r6;")
            e("mul.wide.u32    %rd31, %r44, %r7;")
            e("add.u64         %rd30, %rd30, %rd31;")
            e("shl.b64         %rd30, %rd30, 2;")
            e("add.u64         %rd14, %rd30, %rd2;        // B pointer of element 0, next tile")
        e(f"mad.lo.u32      %r45, %r43, {ROW}, %r42;")
        e("shl.b32         %r45, %r45, 2;")
        e(f"add.u32         %r{36 + q}, %r45, %r41;")
    e(f"mul.wide.u32    %rd20, %r5, {BK * 4};             // A step per k-tile ({BK} * a_cs * 4 bytes)")
    e(f"mul.wide.u32    %rd21, %r6, {BK * 4};             // B step per k-tile")
    e("// Steps between staged elements q and q + 1: (dm * a_rs + dk * a_cs) * 4 bytes, likewise B.")
    e("mul.wide.u32    %rd22, %r18, %r4;")
    e("mul.wide.u32    %rd23, %r19, %r5;")
    e("add.u64         %rd22, %rd22, %rd23;")
    e("shl.b64         %rd22, %rd22, 2;")
    e("mul.wide.u32    %rd23, %r22, %r6;")
    e("mul.wide.u32    %rd24, %r23, %r7;")
    e("add.u64         %rd23, %rd23, %rd24;")
    e("shl.b64         %rd23, %rd23, 2;")
    e("// Compute-side shared offsets: As[kk][4ty (+64)], Bs[kk][4tx (+64)].")
    e("shl.b32         %r46, %r10, 4;")
    e("add.u32         %r46, %r46, %r40;")
    e("shl.b32         %r47, %r11, 4;")
    e("add.u32         %r47, %r47, %r41;")
    for i in range(64):
        e(f"mov.f32         %acc{i}, 0f00000000;")
    e("mov.u32         %r48, 0;                   // buffer offset of the tile being computed")
    e("add.u32         %r49, %r3, 7;")
    e("shr.u32         %r49, %r49, 3;             // ktiles")
    e("setp.eq.u32     %p3, %r49, 0;")
    e("@%p3 bra        EPILOGUE;")

    def stage_load():
        """Global -> %ga/%gb of the next tile (zero outside the matrix), pointers advanced."""
        for q in range(4):
            e(f"mov.f32         %ga{q}, 0f00000000;")
            if q == 0:
                e("mov.b64         %rd25, %rd10;")
                e("mov.u32         %r58, %r24;")
            else:
                e("add.u64         %rd25, %rd25, %rd22;")
                e("add.u32         %r58, %r58, %r19;")
            e("setp.lt.u32     %p12, %r58, %r3;")
            e(f"and.pred        %p12, %p12, %p{4 + q};")
            e(f"@%p12 ld.global.f32 %ga{q}, [%rd25];")
            e(f"mov.f32         %gb{q}, 0f00000000;")
            if q == 0:
                e("mov.b64         %rd26, %rd14;")
                e("mov.u32         %r59, %r28;")
            else:
                e("add.u64         %rd26, %rd26, %rd23;")
                e("add.u32         %r59, %r59, %r22;")
            e("setp.lt.u32     %p12, %r59, %r3;")
            e(f"and.pred        %p12, %p12, %p{8 + q};")
            e(f"@%p12 ld.global.f32 %gb{q}, [%rd26];")
        e("add.u64         %rd10, %rd10, %rd20;")
        e(f"add.u32         %r24, %r24, {BK};")
        e("add.u64         %rd14, %rd14, %rd21;")
        e(f"add.u32         %r28, %r28, {BK};")

    def stage_store(buf_reg):
        for q in range(4):
            e(f"add.u32         %r50, %r{32 + q}, {buf_reg};")
            e(f"st.shared.f32   [%r50], %ga{q};")
            e(f"add.u32         %r50, %r{36 + q}, {buf_reg};")
            e(f"st.shared.f32   [%r50], %gb{q};")

    e("// Prologue: tile 0 into buffer 0.")
    stage_load()
    stage_store("%r48")
    e("bar.sync        0;")
    e("mov.u32         %r51, 0;                   // kt")
    e("LOOP:")
    e("// Tile kt + 1 into registers (all predicates false past the end: no access).")
    stage_load()
    e("add.u32         %r52, %r46, %r48;")
    e("add.u32         %r53, %r47, %r48;")
    for kk in range(BK):
        off = kk * ROW * 4
        e(f"ld.shared.v4.f32 {{%fa0, %fa1, %fa2, %fa3}}, [%r52+{off}];")
        e(f"ld.shared.v4.f32 {{%fa4, %fa5, %fa6, %fa7}}, [%r52+{off + 256}];")
        e(f"ld.shared.v4.f32 {{%fb0, %fb1, %fb2, %fb3}}, [%r53+{off}];")
        e(f"ld.shared.v4.f32 {{%fb4, %fb5, %fb6, %fb7}}, [%r53+{off + 256}];")
        for i in range(8):
            for j in range(8):
                e(f"fma.rn.f32      %acc{i * 8 + j}, %fa{i}, %fb{j}, %acc{i * 8 + j};")
    e(f"xor.b32         %r48, %r48, {BUF};          // the other buffer")
    e("// Tile kt + 1 into the other buffer: its last readers (tile kt - 1) passed the last barrier.")
    stage_store("%r48")
    e("bar.sync        0;")
    e("add.u32         %r51, %r51, 1;")
    e("setp.lt.u32     %p13, %r51, %r49;")
    e("@%p13 bra       LOOP;")
    e("EPILOGUE:")
    e("// Thread rows 4ty + i (+64 for i >= 4), cols 4tx + j (+64 for j >= 4).")
    e("shl.b32         %r54, %r10, 2;")
    e("add.u32         %r54, %r54, %r12;          // row of i = 0")
    e("shl.b32         %r55, %r11, 2;")
    e("add.u32         %r55, %r55, %r13;          // col of j = 0")

    def col_off(j):
        return (j % 4) + 64 * (j // 4)

    for j in range(8):
        e(f"add.u32         %r56, %r55, {col_off(j)};")
        e(f"setp.lt.u32     %p{16 + j}, %r56, %r2;")
    e("mul.wide.u32    %rd32, %r55, 4;")
    e("add.u64         %rd32, %rd32, %rd3;")
    for i in range(8):
        e(f"add.u32         %r57, %r54, {col_off(i)};")
        e("setp.lt.u32     %p14, %r57, %r1;")
        e("mul.wide.u32    %rd33, %r57, %r8;")
        e("shl.b64         %rd33, %rd33, 2;")
        e("add.u64         %rd33, %rd33, %rd32;")
        for j in range(8):
            e(f"and.pred        %p15, %p14, %p{16 + j};")
            e(f"@%p15 st.global.f32 [%rd33+{4 * col_off(j)}], %acc{i * 8 + j};")
    e("ret;")
    L.append("}")
    print("\n".join(L))


if __name__ == "__main__":
    main()
