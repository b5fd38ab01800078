#!/usr/bin/env python3
"""Runs gemm_bf16.ptx (and gemm_f32.ptx) through interp.py (per-warp scheduling, so barriers and the
cp.async pipeline's stage reuse are exercised) on small shapes against a plain-Python reference,
beside its planted-bug self-test (selftest.py). kernels/src/gemm/ptx_check.rs runs the same files
through ptxsim in `cargo test`. Review aid; slow.

Usage: python3 scripts/ptx_interp/check_gemm.py [quick]
"""
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
KERNELS = os.path.join(HERE, '..', '..', 'kernels', 'src')
import interp as pi  # noqa: E402


def case(mod, rng, layout, out, wide, m, n, k, pads):
    bn = 256 if wide else 128
    suffix = '_wide' if wide else ''
    a_rows, a_cols = (k, m) if layout == 'tn' else (m, k)
    b_rows, b_cols = (n, k) if layout == 'nt' else (k, n)
    # the launcher's rule: lda, ldb multiples of 8 (pads add whole 8-element groups)
    lda = (a_cols + 7) // 8 * 8 + pads[0]
    ldb = (b_cols + 7) // 8 * 8 + pads[1]
    ldc = n + pads[2]
    # NaN in the row padding: a read of it poisons an output even where it meets a zero-fill
    A = [[pi.bf16_rne(pi.f2b(rng.uniform(-1, 1))) if c < a_cols else 0x7FC0 for c in range(lda)]
         for _ in range(a_rows)]
    B = [[pi.bf16_rne(pi.f2b(rng.uniform(-1, 1))) if c < b_cols else 0x7FC0 for c in range(ldb)]
         for _ in range(b_rows)]
    mem = pi.Global()
    # only the launcher's minimum, (rows - 1) * ld + cols elements, is allocated: no over-read
    fa = [x for r in A for x in r][:(a_rows - 1) * lda + a_cols]
    fb = [x for r in B for x in r][:(b_rows - 1) * ldb + b_cols]
    pa = mem.alloc(struct.pack(f'<{len(fa)}H', *fa) or bytes(16))
    pb = mem.alloc(struct.pack(f'<{len(fb)}H', *fb) or bytes(16))
    es = 4 if out == 'f32' else 2
    pc = mem.alloc(bytes(es * ((m - 1) * ldc + n)))

    def a_(i, p):
        return pi.bf2f(A[p][i] if layout == 'tn' else A[i][p])

    def b_(p, j):
        return pi.bf2f(B[j][p] if layout == 'nt' else B[p][j])
    blocks = ((m + 127) // 128) * ((n + bn - 1) // bn)
    smem = 4 * (8192 + 64 * bn)
    pi.run(mod, f'gemm_bf16_{layout}_{out}{suffix}', (blocks, 1), bn,
           [pa, pb, pc, m, n, k, lda, ldb, ldc], mem, seed=rng.randrange(1 << 30), dyn_smem=smem)
    raw = bytes(mem.get(pc)) + bytes(es * (ldc - n))  # the last row's padding is not allocated
    bad = 0
    for i in range(m):
        for j in range(ldc):
            off = (i * ldc + j) * es
            g = (struct.unpack('<f', raw[off:off + 4])[0] if es == 4
                 else pi.bf2f(int.from_bytes(raw[off:off + 2], 'little')))
            if j >= n:
                ok = g == 0.0  # padding untouched
                w = 0.0
            else:
                w = sum(a_(i, p) * b_(p, j) for p in range(k))
                s = sum(abs(a_(i, p) * b_(p, j)) for p in range(k))
                tol = (k + 4) * 2.0 ** -23 * s + (abs(w) * 2.0 ** -8 if es == 2 else 0)
                ok = abs(g - w) <= tol
            if not ok:
                if bad < 4:
                    print(f'   ({i},{j}): got {g} want {w}')
                bad += 1
    name = f'{layout}_{out}{suffix} m={m} n={n} k={k} pads={pads}'
    print(f'{name}: {"OK" if not bad else f"{bad} BAD"}')
    return bad == 0


def main():
    mod = pi.Module(open(os.path.join(KERNELS, 'gemm', 'gemm_bf16.ptx')).read())
    rng = random.Random(11)
    ok = True
    quick = len(sys.argv) > 1
    for layout in ('nt', 'nn', 'tn'):
        for out in ('f32', 'bf16'):
            ok &= case(mod, rng, layout, out, False, 19, 21, 24 if layout != 'tn' else 13,
                       (8, 0, 3))
            if quick:
                continue
            ok &= case(mod, rng, layout, out, True, 9, 40, 136 if layout != 'tn' else 133,
                       (0, 8, 1))
    if not quick:
        ok &= case(mod, rng, 'nt', 'f32', False, 130, 136, 160, (0, 0, 0))
    mod32 = pi.Module(open(os.path.join(KERNELS, 'gemm', 'gemm_f32.ptx')).read())
    ok &= case_f32(mod32, rng, 13, 19, 21, False, False)
    ok &= case_f32(mod32, rng, 9, 130, 17, True, True)
    ok &= case_f32(mod32, rng, 7, 11, 5, True, False, batch=(2, 3))
    print('ALL OK' if ok else 'FAILURES')
    sys.exit(0 if ok else 1)




def case_f32(mod, rng, m, n, k, ta, tb, batch=(1, 1)):
    """gemm_f32 with A (m x k) and B (k x n) read transposed or not (strides), over a batch of
    (outer, inner) products in one launch: A entries stacked with padding between them, B shared
    by the outer entries (batch stride 0) and stacked over the inner ones, C dense."""
    outer, inner = batch
    a_rs, a_cs = (1, m) if ta else (k, 1)
    b_rs, b_cs = (1, k) if tb else (n, 1)
    a_bsi = m * k + 3
    a_bso, b_bso, b_bsi, c_bs = inner * a_bsi, 0, k * n, m * n
    count = outer * inner
    A = [rng.uniform(-1, 1) for _ in range(max(1, count * a_bsi))]
    B = [rng.uniform(-1, 1) for _ in range(max(1, inner * k * n))]
    mem = pi.Global()
    pa = mem.alloc(struct.pack(f'<{len(A)}f', *A))
    pb = mem.alloc(struct.pack(f'<{len(B)}f', *B))
    pc = mem.alloc(bytes(4 * count * m * n) or bytes(16))
    A = [pi.b2f(pi.f2b(x)) for x in A]
    B = [pi.b2f(pi.f2b(x)) for x in B]
    pi.run(mod, 'gemm_f32', ((n + 127) // 128, (m + 127) // 128, count), 256,
           [pa, pb, pc, m, n, k, a_rs, a_cs, b_rs, b_cs, n, inner, a_bso, a_bsi, b_bso, b_bsi, c_bs],
           mem, seed=rng.randrange(1 << 30))
    got = struct.unpack(f'<{count * m * n}f', bytes(mem.get(pc))[:4 * count * m * n])
    bad = 0
    for zo in range(outer):
        for zi in range(inner):
            z, ao, bo = zo * inner + zi, zo * a_bso + zi * a_bsi, zo * b_bso + zi * b_bsi
            for i in range(m):
                for j in range(n):
                    terms = [A[ao + i * a_rs + p * a_cs] * B[bo + p * b_rs + j * b_cs] for p in range(k)]
                    w, s = sum(terms), sum(abs(t) for t in terms)
                    if not abs(got[z * c_bs + i * n + j] - w) <= (k + 4) * 2.0 ** -23 * s:
                        bad += 1
    print(f'gemm_f32 m={m} n={n} k={k} ta={ta} tb={tb} batch={batch}: {"OK" if not bad else f"{bad} BAD"}')
    return bad == 0



if __name__ == '__main__':
    main()
