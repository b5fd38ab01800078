#!/usr/bin/env python3
"""Writes gemm_f32.ptx (run from this folder: `python3 gen_gemm_f32.py > gemm_f32.ptx`).

Hand-designed register-tiled SIMT kernel; this script only unrolls the 16 x (4 x 4) FMA block and
the predicated epilogue. The geometry is documented in the header it writes.
"""

HEADER = """//
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
//            a_rs .u32, a_cs .u32, b_rs .u32, b_cs .u32, ldc .u32)           11 params
//
// Launch geometry: grid (ceil(n/64), ceil(m/64)), blocks of 256 threads (.maxntid 256), no dynamic
//   shared memory (static 2 x 16 x 68 f32 = 8704 bytes). Block tile 64 x 64, k-tile 16. Thread
//   (ty, tx) = (tid/16, tid%16) computes rows ty + 16i, cols tx + 16j (i, j < 4). Each thread stages
//   4 elements of A and 4 of B per k-tile through registers (zero outside the matrix); the element
//   order follows the unit stride (k fastest when a_cs == 1, else m fastest; n fastest when
//   b_cs == 1, else k fastest) so that global loads coalesce. Shared tiles As[k][m], Bs[k][n],
//   rows padded to 68 floats.
//
// History: v1 (2026-11-27) first version.
//
"""


def main():
    L = []

    def e(s=""):
        L.append("    " + s if s and not s.endswith(":") else s)

    L += [HEADER, ".version 8.0", ".target sm_80", ".address_size 64", ""]
    L.append(".shared .align 16 .b8 gemm_f32_as[4352];")
    L.append(".shared .align 16 .b8 gemm_f32_bs[4352];")
    L.append("")
    names = ["a", "b", "c", "m", "n", "k", "a_rs", "a_cs", "b_rs", "b_cs", "ldc"]
    types = ["u64"] * 3 + ["u32"] * 8
    L.append(".visible .entry gemm_f32(")
    L.append(",\n".join(f"    .param .{t} gemm_f32_param_{s}" for t, s in zip(types, names)))
    L.append(")")
    L.append(".maxntid 256, 1, 1")
    L.append("{")
    e(".reg .pred  %p<32>;")
    e(".reg .b32   %r<96>;")
    e(".reg .b64   %rd<48>;")
    e(".reg .f32   %acc<16>;")
    e(".reg .f32   %fa<4>;")
    e(".reg .f32   %fb<4>;")
    e(".reg .f32   %ga<4>;")
    e(".reg .f32   %gb<4>;")
    e()
    for i, s in enumerate(names[:3]):
        e(f"ld.param.u64    %rd{i + 1}, [gemm_f32_param_{s}];")
        e(f"cvta.to.global.u64 %rd{i + 1}, %rd{i + 1};")
    for i, s in enumerate(names[3:]):
        e(f"ld.param.u32    %r{i + 1}, [gemm_f32_param_{s}];")
    # %r1 m, %r2 n, %r3 k, %r4 a_rs, %r5 a_cs, %r6 b_rs, %r7 b_cs, %r8 ldc
    e("mov.u32         %r9, %tid.x;")
    e("shr.u32         %r10, %r9, 4;              // ty")
    e("and.b32         %r11, %r9, 15;             // tx")
    e("mov.u32         %r12, %ctaid.y;")
    e("shl.b32         %r12, %r12, 6;             // m0")
    e("mov.u32         %r13, %ctaid.x;")
    e("shl.b32         %r13, %r13, 6;             // n0")
    e()
    e("// A staging: element q (q < 4) is (m0 + ma + q*dm, kt*16 + ka + q*dk).")
    e("setp.eq.u32     %p1, %r5, 1;               // A k-contiguous?")
    e("shr.u32         %r14, %r9, 4;")
    e("and.b32         %r15, %r9, 63;")
    e("selp.u32        %r16, %r14, %r15, %p1;     // ma")
    e("and.b32         %r14, %r9, 15;")
    e("shr.u32         %r15, %r9, 6;")
    e("selp.u32        %r17, %r14, %r15, %p1;     // ka")
    e("selp.u32        %r18, 16, 0, %p1;          // dm")
    e("selp.u32        %r19, 0, 4, %p1;           // dk")
    e("// B staging: element q is (kt*16 + kb + q*dkb, n0 + nb + q*dn).")
    e("setp.eq.u32     %p2, %r7, 1;               // B n-contiguous?")
    e("shr.u32         %r14, %r9, 6;")
    e("and.b32         %r15, %r9, 15;")
    e("selp.u32        %r20, %r14, %r15, %p2;     // kb")
    e("and.b32         %r14, %r9, 63;")
    e("shr.u32         %r15, %r9, 4;")
    e("selp.u32        %r21, %r14, %r15, %p2;     // nb")
    e("selp.u32        %r22, 4, 0, %p2;           // dkb")
    e("selp.u32        %r23, 0, 16, %p2;          // dn")
    e()
    # Per q: A pointer %rd(10+q) (at k = ka + q*dk of tile 0), A row ok %p(4+q), A k index %r(24+q)
    #        B pointer %rd(14+q), B col ok %p(8+q), B k index %r(28+q); shared dst %r(32+q), %r(36+q)
    e("mov.u32         %r40, gemm_f32_as;")
    e("mov.u32         %r41, gemm_f32_bs;")
    for q in range(4):
        e(f"mad.lo.u32      %r42, %r18, {q}, %r16;        // m in tile")
        e(f"mad.lo.u32      %r43, %r19, {q}, %r17;        // k in tile")
        e("add.u32         %r44, %r42, %r12;")
        e(f"setp.lt.u32     %p{4 + q}, %r44, %r1;")
        e(f"mov.u32         %r{24 + q}, %r43;")
        e("mul.wide.u32    %rd30, %r44, %r4;")
        e("mul.wide.u32    %rd31, %r43, %r5;")
        e("add.u64         %rd30, %rd30, %rd31;")
        e("shl.b64         %rd30, %rd30, 2;")
        e(f"add.u64         %rd{10 + q}, %rd30, %rd1;")
        e("mad.lo.u32      %r45, %r43, 68, %r42;")
        e("shl.b32         %r45, %r45, 2;")
        e(f"add.u32         %r{32 + q}, %r45, %r40;")
        e(f"mad.lo.u32      %r42, %r23, {q}, %r21;        // n in tile")
        e(f"mad.lo.u32      %r43, %r22, {q}, %r20;        // k in tile")
        e("add.u32         %r44, %r42, %r13;")
        e(f"setp.lt.u32     %p{8 + q}, %r44, %r2;")
        e(f"mov.u32         %r{28 + q}, %r43;")
        e("mul.wide.u32    %rd30, %r43, %r6;")
        e("mul.wide.u32    %rd31, %r44, %r7;")
        e("add.u64         %rd30, %rd30, %rd31;")
        e("shl.b64         %rd30, %rd30, 2;")
        e(f"add.u64         %rd{14 + q}, %rd30, %rd2;")
        e("mad.lo.u32      %r45, %r43, 68, %r42;")
        e("shl.b32         %r45, %r45, 2;")
        e(f"add.u32         %r{36 + q}, %r45, %r41;")
    e("mul.wide.u32    %rd20, %r5, 64;            // A step per k-tile (16 * a_cs * 4 bytes)")
    e("mul.wide.u32    %rd21, %r6, 64;            // B step per k-tile")
    e("// Compute-side shared addresses: As[kk][ty + 16 i], Bs[kk][tx + 16 j].")
    e("shl.b32         %r46, %r10, 2;")
    e("add.u32         %r46, %r46, %r40;")
    e("shl.b32         %r47, %r11, 2;")
    e("add.u32         %r47, %r47, %r41;")
    for i in range(16):
        e(f"mov.f32         %acc{i}, 0f00000000;")
    e("mov.u32         %r48, 0;                   // k0 of the tile")
    e("setp.eq.u32     %p3, %r3, 0;")
    e("@%p3 bra        EPILOGUE;")
    e("LOOP:")
    for q in range(4):
        e(f"mov.f32         %ga{q}, 0f00000000;")
        e(f"add.u32         %r49, %r48, %r{24 + q};")
        e("setp.lt.u32     %p12, %r49, %r3;")
        e(f"and.pred        %p12, %p12, %p{4 + q};")
        e(f"@%p12 ld.global.f32 %ga{q}, [%rd{10 + q}];")
        e(f"add.u64         %rd{10 + q}, %rd{10 + q}, %rd20;")
        e(f"mov.f32         %gb{q}, 0f00000000;")
        e(f"add.u32         %r49, %r48, %r{28 + q};")
        e("setp.lt.u32     %p12, %r49, %r3;")
        e(f"and.pred        %p12, %p12, %p{8 + q};")
        e(f"@%p12 ld.global.f32 %gb{q}, [%rd{14 + q}];")
        e(f"add.u64         %rd{14 + q}, %rd{14 + q}, %rd21;")
    e("bar.sync        0;                         // previous tile fully read")
    for q in range(4):
        e(f"st.shared.f32   [%r{32 + q}], %ga{q};")
        e(f"st.shared.f32   [%r{36 + q}], %gb{q};")
    e("bar.sync        0;")
    for kk in range(16):
        for i in range(4):
            e(f"ld.shared.f32   %fa{i}, [%r46+{(kk * 68 + 16 * i) * 4}];")
        for j in range(4):
            e(f"ld.shared.f32   %fb{j}, [%r47+{(kk * 68 + 16 * j) * 4}];")
        for i in range(4):
            for j in range(4):
                e(f"fma.rn.f32      %acc{i * 4 + j}, %fa{i}, %fb{j}, %acc{i * 4 + j};")
    e("add.u32         %r48, %r48, 16;")
    e("setp.lt.u32     %p13, %r48, %r3;")
    e("@%p13 bra       LOOP;")
    e("EPILOGUE:")
    e("add.u32         %r50, %r12, %r10;          // row of i = 0")
    e("add.u32         %r51, %r13, %r11;          // col of j = 0")
    for j in range(4):
        e(f"add.u32         %r52, %r51, {16 * j};")
        e(f"setp.lt.u32     %p{16 + j}, %r52, %r2;")
    e("mul.wide.u32    %rd32, %r51, 4;")
    e("add.u64         %rd32, %rd32, %rd3;")
    for i in range(4):
        e(f"add.u32         %r53, %r50, {16 * i};")
        e("setp.lt.u32     %p14, %r53, %r1;")
        e("mul.wide.u32    %rd33, %r53, %r8;")
        e("shl.b64         %rd33, %rd33, 2;")
        e("add.u64         %rd33, %rd33, %rd32;")
        for j in range(4):
            e(f"and.pred        %p15, %p14, %p{16 + j};")
            e(f"@%p15 st.global.f32 [%rd33+{64 * j}], %acc{i * 4 + j};")
    e("ret;")
    L.append("}")
    print("\n".join(L))


if __name__ == "__main__":
    main()
