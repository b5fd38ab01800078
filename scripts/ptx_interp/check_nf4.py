#!/usr/bin/env python3
"""Runs nf4.ptx through interp.py on small shapes against plain-Python references.

Usage: python3 scripts/ptx_interp/check_nf4.py [quick]
Slow (pure Python); a review aid, not part of `cargo test`.
"""
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
KERNELS = os.path.join(HERE, '..', '..', 'kernels', 'src')
import interp as pi  # noqa: E402

CODE = [-1.0, -0.6961928, -0.52507305, -0.3949175, -0.28444138, -0.18477343, -0.091050036,
        0.0, 0.0795803, 0.1609302, 0.2461123, 0.33791524, 0.44070983, 0.562617, 0.72295684, 1.0]
CODE_B = [pi.f2b(c) for c in CODE]


def f32(x):
    return pi.b2f(pi.f32r(x))


def weight(rng, n, k):
    nib = [rng.randrange(16) for _ in range(n * k)]
    packed = bytes((nib[2 * i] << 4) | nib[2 * i + 1] for i in range(n * k // 2))
    absmax = [f32(rng.uniform(0.5, 2.0)) for _ in range(n * k // 64)]
    return nib, packed, absmax


def wval(nib, absmax, i):
    return pi.b2f(pi.f32r(pi.b2f(CODE_B[nib[i]]) * absmax[i // 64]))


def bf(x):
    return pi.bf2f(pi.bf16_rne(pi.f32r(x)))


def act(rng, rows, cols, ld):
    bits = [0x7FC0] * max(rows * ld, 1)  # NaN padding: reading it poisons an output, as on the GPU
    for r in range(rows):
        for c in range(cols):
            bits[r * ld + c] = pi.bf16_rne(pi.f2b(rng.uniform(-1, 1)))
    # only the launcher's minimum, (rows - 1) * ld + cols elements, is allocated: no over-read
    used = (rows - 1) * ld + cols if rows else 0
    return bits, struct.pack(f'<{used}H', *bits[:used]) or bytes(2)


def fbuf(vals):
    return struct.pack(f'<{len(vals)}f', *vals)


def check(got, want, scale, rl, what, obf):
    """f32 accumulation bound, plus one bf16 rounding (2^-8 relative) for bf16 outputs."""
    bad = 0
    for i, (g, w, s) in enumerate(zip(got, want, scale)):
        tol = (rl + 4) * 2.0 ** -23 * s + (abs(w) * 2.0 ** -8 if obf else 0) + 1e-30
        if not abs(g - w) <= tol:
            if bad < 5:
                print(f'  {what}: entry {i}: got {g!r} want {w!r} tol {tol:.3g}')
            bad += 1
    print(f'{what}: {"OK" if not bad else f"{bad} BAD of {len(got)}"}')
    return bad == 0


def out_vals(mem, addr, n, bf16):
    b = mem.get(addr)
    if bf16:
        return [pi.bf2f(h) for h in struct.unpack(f'<{n}H', bytes(b[:2 * n]))]
    return list(struct.unpack(f'<{n}f', bytes(b[:4 * n])))


def case_dequant(mod, rng, n, k, dq):
    nib, packed, absmax = weight(rng, n, k)
    mem = pi.Global()
    nw = n * k // 8
    p = mem.alloc(packed)
    blocks = n * k // 64
    if dq:
        q8 = bytes(rng.randrange(256) for _ in range(blocks))
        nested = [f32(rng.uniform(0.1, 1)) for _ in range((blocks + 255) // 256)]
        mp = [f32(rng.uniform(-1, 1)) for _ in range(256)]
        off = f32(1.5)
        absmax = [f32(f32(mp[q8[b]] * nested[b >> 8]) + off) for b in range(blocks)]
        a = mem.alloc(bytes(4))
        qa, na, ma = mem.alloc(q8), mem.alloc(fbuf(nested)), mem.alloc(fbuf(mp))
    else:
        a = mem.alloc(fbuf(absmax))
        qa, na, ma, off = p, a, a, 0.0
    o = mem.alloc(bytes(4 * n * k))
    blocks_1d = min((nw + 255) // 256, 65536)
    pi.run(mod, 'nf4_dequant_f32', (max(blocks_1d, 1), 1), 256,
           [p, a, qa, na, ma, pi.f2b(off), int(dq), o, nw], mem)
    got = out_vals(mem, o, n * k, False)
    want = [wval(nib, absmax, i) for i in range(n * k)]
    ok = got == want
    print(f'dequant n={n} k={k} dq={dq}: {"OK" if ok else "BAD"}')
    return ok


def case_skinny(mod, rng, m, n, k, ldx, dq, obf):
    nib, packed, absmax = weight(rng, n, k)
    xb, xbytes = act(rng, m, k, ldx)
    mem = pi.Global()
    blocks = n * k // 64
    xa = mem.alloc(xbytes)
    y = mem.alloc(bytes((2 if obf else 4) * m * n))
    p = mem.alloc(packed)
    if dq:
        q8 = bytes(rng.randrange(256) for _ in range(blocks))
        nested = [f32(rng.uniform(0.1, 1)) for _ in range((blocks + 255) // 256)]
        mp = [f32(rng.uniform(-1, 1)) for _ in range(256)]
        off = f32(1.5)
        absmax = [f32(f32(mp[q8[b]] * nested[b >> 8]) + off) for b in range(blocks)]
        a = mem.alloc(bytes(4))
        qa, na, ma = mem.alloc(q8), mem.alloc(fbuf(nested)), mem.alloc(fbuf(mp))
    else:
        a = mem.alloc(fbuf(absmax))
        qa, na, ma, off = p, a, a, 0.0
    pi.run(mod, 'nf4_gemm_bf16_f32_skinny', ((n + 31) // 32, 1), 256,
           [xa, ldx, y, p, a, qa, na, ma, pi.f2b(off), int(dq), m, n, k, int(obf)], mem)
    got = out_vals(mem, y, m * n, obf)
    want, scale = [], []
    for i in range(m):
        for j in range(n):
            s = sa = 0.0
            for kk in range(k):
                w = bf(CODE[nib[j * k + kk]]) * absmax[(j * k + kk) // 64]
                s += pi.bf2f(xb[i * ldx + kk]) * w
                sa += abs(pi.bf2f(xb[i * ldx + kk]) * w)
            want.append(s)
            scale.append(sa)
    return check(got, want, scale, k, f'skinny m={m} n={n} k={k} ldx={ldx} dq={dq} bf16={obf}', obf)


def case_tc(mod, rng, m, n, k, lda, tr, obf):
    nib, packed, absmax = weight(rng, n, k)
    red, cols = (n, k) if tr else (k, n)
    ab, abytes = act(rng, m, red, lda)
    mem = pi.Global()
    aa = mem.alloc(abytes)
    o = mem.alloc(bytes((2 if obf else 4) * m * cols))
    p = mem.alloc(packed)
    am = mem.alloc(fbuf(absmax))
    pi.run(mod, 'nf4_gemm_bf16_f32_tc', ((cols + 127) // 128, (m + 127) // 128), 256,
           [aa, lda, o, p, am, m, n, k, int(tr), int(obf)], mem)
    got = out_vals(mem, o, m * cols, obf)
    W = [bf(wval(nib, absmax, i)) for i in range(n * k)]
    want, scale = [], []
    for i in range(m):
        for c in range(cols):
            s = sa = 0.0
            for r in range(red):
                w = W[r * k + c] if tr else W[c * k + r]
                x = pi.bf2f(ab[i * lda + r])
                s += x * w
                sa += abs(x * w)
            want.append(s)
            scale.append(sa)
    return check(got, want, scale, red, f'tc m={m} n={n} k={k} lda={lda} tr={tr} bf16={obf}', obf)


def case_skinny_t(mod, rng, m, n, k, lddy, obf):
    nib, packed, absmax = weight(rng, n, k)
    db, dbytes = act(rng, m, n, lddy)
    mem = pi.Global()
    da = mem.alloc(dbytes)
    o = mem.alloc(bytes((2 if obf else 4) * m * k))
    p = mem.alloc(packed)
    am = mem.alloc(fbuf(absmax))
    pi.run(mod, 'nf4_gemm_bf16_f32_skinny_t', (k // 64, 1), 256,
           [da, lddy, o, p, am, m, n, k, int(obf)], mem)
    got = out_vals(mem, o, m * k, obf)
    W = [bf(wval(nib, absmax, i)) for i in range(n * k)]
    want, scale = [], []
    for i in range(m):
        for c in range(k):
            s = sa = 0.0
            for r in range(n):
                x = pi.bf2f(db[i * lddy + r])
                s += x * W[r * k + c]
                sa += abs(x * W[r * k + c])
            want.append(s)
            scale.append(sa)
    return check(got, want, scale, n, f'skinny_t m={m} n={n} k={k} lddy={lddy} bf16={obf}', obf)


def main():
    mod = pi.Module(open(os.path.join(KERNELS, 'nf4', 'nf4.ptx')).read())
    rng = random.Random(7)
    ok = True
    ok &= case_dequant(mod, rng, 3, 128, False)
    ok &= case_dequant(mod, rng, 5, 128, True)
    ok &= case_skinny(mod, rng, 3, 37, 192, 200, False, False)
    ok &= case_skinny(mod, rng, 16, 33, 128, 128, True, True)
    ok &= case_skinny_t(mod, rng, 5, 21, 128, 23, False)
    ok &= case_skinny_t(mod, rng, 16, 17, 64, 17, True)
    ok &= case_tc(mod, rng, 19, 10, 128, 130, False, False)
    ok &= case_tc(mod, rng, 17, 70, 64, 72, True, True)
    if len(sys.argv) < 2:
        ok &= case_tc(mod, rng, 130, 129, 192, 199, False, True)
        ok &= case_tc(mod, rng, 130, 65, 192, 72, True, False)
        # K = 17 blocks: warp 0 takes two superchunks, the last one half (K % 128 == 64)
        ok &= case_skinny(mod, rng, 2, 45, 1088, 1096, True, False)
        ok &= case_skinny_t(mod, rng, 9, 150, 128, 152, False)
    print('ALL OK' if ok else 'FAILURES')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
