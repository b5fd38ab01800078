#!/usr/bin/env python3
"""Runs rsvd.ptx (Gram partials and their fixed-order sum, Cholesky, triangular solve, one-sided
Jacobi SVD, f64 -> f32 cast) through interp.py on small shapes against plain-Python references of
kernels/src/rsvd/cpu.rs. Review aid; slow.

The kernels compute in f64, which interp.py does not model; this script adds the f64
instructions (IEEE-754 binary64 arithmetic with round-to-nearest-even, as Python floats are;
fma rounded once through exact rationals), 8-byte loads and stores, 0d immediates, float setp and
a few integer / predicate ops to a private copy of the interpreter at load time (interp.py itself
is unchanged).

The kernels are driven as rsvd/cuda.rs drives them (the launcher's split rule for the Gram
partials, its grids and block sizes). Every buffer has its exact size (the interpreter
bounds-checks each access) and outputs start NaN-filled, so a forgotten entry shows.

Expected results: the Gram partials, their sum, R, Q and the cast are compared BIT FOR BIT with
references that do the kernels' operations in the kernels' order (for R that is also the order of
cpu.rs cholesky_upper). The Jacobi SVD is compared bit for bit with a Python model of the same
round-robin sweep and the same dot products (lane-strided sums in a group of lanes, then a
butterfly), and against cpu.rs's row-major cyclic order by properties: singular values
within 1e-12 relative to sigma_max, W = U S V^T within 1e-12, U^T U = V^T V = I within 1e-12.

The driver (rsvd/cuda.rs rsvd_f32) is replayed step by step on small shapes, every piece through
the interpreter and the f32 GEMMs modelled as f64 products rounded to f32, against an f64
reference of cpu.rs rsvd with the same Omega (a stand-in for the Philox normals, which have their
own test): singular values within 1e-6 sigma_1, and the smallest cosine of the principal angles
between the top-k left (and right) singular subspaces above 1 - 1e-6 (f32 rounding of the
factors alone moves it by about 1e-7).

Usage: python3 scripts/ptx_interp/check_rsvd.py [quick]
"""
import math
import os
import random
import struct
import sys
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
KERNELS = os.path.join(HERE, '..', '..', 'kernels', 'src')
import interp as _base  # noqa: E402,F401  (fails early if interp.py is missing)


def d2b(x):
    return struct.unpack('<Q', struct.pack('<d', x))[0]


def b2d(b):
    return struct.unpack('<d', struct.pack('<Q', b & ((1 << 64) - 1)))[0]


def fma(a, b, c):
    """a * b + c rounded once (binary64)."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return a * b + c
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact == 0:
        # an exact zero is +0 under round-to-nearest unless both terms are -0
        prod_neg = (math.copysign(1, a) < 0) != (math.copysign(1, b) < 0)
        both_neg_zero = a * b == 0 and prod_neg and c == 0 and math.copysign(1, c) < 0
        return -0.0 if both_neg_zero else 0.0
    return float(exact)


def fdiv(x, y):
    if y == 0:
        if x == 0 or x != x:
            return math.nan
        return math.copysign(math.inf, x) * math.copysign(1, y)
    return x / y


def _extended_interp():
    import types
    src = open(os.path.join(HERE, 'interp.py')).read()

    def patch(old, new):
        nonlocal src
        assert src.count(old) >= 1, f'interp.py changed: update check_rsvd.py ({old!r})'
        src = src.replace(old, new)

    anchor = "        else:\n            raise AssertionError(f'unsupported instruction {op}')"
    assert src.count(anchor) == 1
    extra = """        elif op == 'mov.f64':
            R[d] = v(1)
        elif op == 'cvt.f64.f32':
            R[d] = d2b(b2f(v(1)))
        elif op == 'cvt.rn.f32.f64':
            R[d] = f32r(b2d(v(1)))
        elif op in ('add.rn.f64', 'sub.rn.f64', 'mul.rn.f64', 'div.rn.f64', 'min.f64', 'max.f64',
                    'copysign.f64'):
            x_, y_ = b2d(v(1)), b2d(v(2))
            kind = op.split('.')[0]
            if kind == 'add':
                r_ = x_ + y_
            elif kind == 'sub':
                r_ = x_ - y_
            elif kind == 'mul':
                r_ = x_ * y_
            elif kind == 'div':
                r_ = fdiv(x_, y_)
            elif kind == 'min':
                r_ = y_ if x_ != x_ else (x_ if y_ != y_ else min(x_, y_))
            elif kind == 'max':
                r_ = y_ if x_ != x_ else (x_ if y_ != y_ else max(x_, y_))
            else:  # copysign d, a, b: |b| with the sign of a
                r_ = math.copysign(abs(y_), x_)
            R[d] = d2b(r_)
        elif op == 'fma.rn.f64':
            R[d] = d2b(fma(b2d(v(1)), b2d(v(2)), b2d(v(3))))
        elif op == 'sqrt.rn.f64':
            x_ = b2d(v(1))
            R[d] = d2b(math.sqrt(x_) if x_ >= 0 else (x_ if x_ == 0 else math.nan))
        elif op == 'rcp.rn.f64':
            R[d] = d2b(fdiv(1.0, b2d(v(1))))
        elif op == 'abs.f64':
            R[d] = v(1) & 0x7FFFFFFFFFFFFFFF
        elif op == 'neg.f64':
            R[d] = v(1) ^ 0x8000000000000000
        elif op in ('selp.f64', 'selp.f32'):
            R[d] = v(1) if v(3) else v(2)
        elif op in ('or.b32', 'or.pred'):
            R[d] = v(1) | v(2)
        elif op == 'max.u32':
            R[d] = max(v(1) & MASK32, v(2) & MASK32)
        elif op.startswith('setp.') and op.endswith(('.f64', '.f32')):
            if op.endswith('.f64'):
                x_, y_ = b2d(v(1)), b2d(v(2))
            else:
                x_, y_ = b2f(v(1)), b2f(v(2))
            cmp = op.split('.')[1]
            R[d] = int({'lt': x_ < y_, 'le': x_ <= y_, 'gt': x_ > y_, 'ge': x_ >= y_, 'eq': x_ == y_,
                        'ne': x_ != y_}[cmp])
"""
    patch("        elif op.startswith('setp.'):",
          "        elif op.startswith('setp.') and not op.endswith(('.f32', '.f64')):")
    patch("n = 2 if op.endswith('16') else 4",
          "n = 2 if op.endswith('16') else (8 if op.endswith('64') else 4)")
    patch("{'u8': 1, 'b16': 2}", "{'u8': 1, 'b16': 2, 'f64': 8, 'u64': 8, 'b64': 8}")
    patch("    if re.fullmatch(r'0[fF][0-9a-fA-F]{8}', s):",
          "    if re.fullmatch(r'0[dD][0-9a-fA-F]{16}', s):\n        return ('imm', int(s[2:], 16))\n"
          "    if re.fullmatch(r'0[fF][0-9a-fA-F]{8}', s):")
    src = src.replace(anchor, extra + anchor)
    mod = types.ModuleType('interp_rsvd')
    mod.__dict__.update(math=math, d2b=d2b, b2d=b2d, fma=fma, fdiv=fdiv)
    exec(compile(src, os.path.join(HERE, 'interp.py') + ' (+rsvd extension)', 'exec'), mod.__dict__)
    return mod


pi = _extended_interp()


def f32(x):
    return pi.b2f(pi.f32r(x))


def fbuf(vals):
    return struct.pack(f'<{len(vals)}f', *vals) or bytes(4)


def dbuf(vals):
    return struct.pack(f'<{len(vals)}d', *vals) or bytes(8)


def nan_f32(n):
    return b'\x00\x00\xc0\x7f' * max(n, 1)


def nan_f64(n):
    return struct.pack('<d', math.nan) * max(n, 1)


def rd_f32(mem, addr, n):
    return list(struct.unpack(f'<{n}f', bytes(mem.get(addr)[:4 * n])))


def rd_f64(mem, addr, n):
    return list(struct.unpack(f'<{n}d', bytes(mem.get(addr)[:8 * n])))


def rd_u32(mem, addr, n):
    return list(struct.unpack(f'<{n}I', bytes(mem.get(addr)[:4 * n])))


def same_bits(name, got, want):
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if struct.pack('<d', g) != struct.pack('<d', w)]
    if bad or len(got) != len(want):
        i = bad[0] if bad else -1
        print(f'FAIL {name}: {len(bad)} of {len(want)} differ; first at {i}: {got[i]!r} vs {want[i]!r}')
        return False
    print(f'ok   {name} ({len(want)} values, bit-identical)')
    return True


# ---- the launcher's rules (rsvd/cuda.rs) ----

def gram_splits(m, l):
    """(splits, rows per split): about 528 blocks in all, at most 64 splits and ceil(m / 32)."""
    tiles = (l * l + 255) // 256
    want = max(1, min(64, (528 + tiles - 1) // tiles, (m + 31) // 32))
    rps = (m + want - 1) // want
    return (m + rps - 1) // rps, rps


# ---- references ----

def ref_gram_partials(y, m, l, splits, rps):
    out = []
    for s in range(splits):
        for i in range(l):
            for j in range(l):
                acc = 0.0
                for r in range(s * rps, min(m, (s + 1) * rps)):
                    acc = fma(float(y[r * l + i]), float(y[r * l + j]), acc)
                out.append(acc)
    return out


def ref_cholesky(g, n):
    """cpu.rs cholesky_upper: (R, status) with status j + 1 at a bad pivot."""
    r = [0.0] * (n * n)
    for j in range(n):
        d = g[j * n + j]
        for p in range(j):
            d -= r[p * n + j] * r[p * n + j]
        if not d > 0:
            return r, j + 1
        rjj = math.sqrt(d)
        r[j * n + j] = rjj
        for c in range(j + 1, n):
            v = g[j * n + c]
            for p in range(j):
                v -= r[p * n + j] * r[p * n + c]
            r[j * n + c] = v / rjj
    return r, 0


def ref_trsm(y, r, m, l):
    q = [0.0] * (m * l)
    for i in range(m):
        for j in range(l):
            acc = float(y[i * l + j])
            for p in range(j):
                acc = fma(-q[i * l + p], r[p * l + j], acc)
            q[i * l + j] = f32(acc / r[j * l + j])
    return q


def group_lanes(l):
    """G, the lanes per pair of the kernel (and of rsvd/cuda.rs jacobi_threads)."""
    pairs = (l + 1) // 2
    return 32 if pairs <= 32 else (16 if pairs <= 64 else 8)


def group_sum(terms, g):
    """The kernel's sum of terms[0..n) by a group of g lanes: lane t adds terms t, t + g, ... in
    order (from 0.0), then a butterfly at offsets g/2, ..., 2, 1 adds the partner lane's sum."""
    lanes = [0.0] * g
    for i, x in enumerate(terms):
        lanes[i % g] += x
    off = g // 2
    while off:
        lanes = [lanes[t] + lanes[t ^ off] for t in range(g)]
        off //= 2
    return lanes[0]


def jacobi_block(l):
    """rsvd/cuda.rs jacobi_threads: G lanes per pair, rounded up to whole warps."""
    pairs = max(1, (l + 1) // 2)
    return (pairs * group_lanes(l) + 31) // 32 * 32


def rotate_pair(w, v, p, q, l, dot='warp'):
    """One pair step on column lists, True when rotated: the kernel's dot products ('warp': a group
    of lanes) or cpu.rs jacobi_svd's sequential ones ('seq')."""
    if dot == 'warp':
        g = group_lanes(l)
        alpha = group_sum([w[p][i] * w[p][i] for i in range(l)], g)
        beta = group_sum([w[q][i] * w[q][i] for i in range(l)], g)
        gamma = group_sum([w[p][i] * w[q][i] for i in range(l)], g)
    else:
        alpha = beta = gamma = 0.0
        for i in range(l):
            alpha += w[p][i] * w[p][i]
            beta += w[q][i] * w[q][i]
            gamma += w[p][i] * w[q][i]
    if gamma == 0.0 or abs(gamma) <= 1e-15 * math.sqrt(alpha * beta):
        return False
    zeta = (beta - alpha) / (2.0 * gamma)
    t = math.copysign(1.0, zeta) / (abs(zeta) + math.sqrt(1.0 + zeta * zeta))
    c = 1.0 / math.sqrt(1.0 + t * t)
    s = c * t
    for cols in (w, v):
        for i in range(l):
            a, b = cols[p][i], cols[q][i]
            cols[p][i] = c * a - s * b
            cols[q][i] = s * a + c * b
    return True


def round_robin_pairs(l, rnd):
    L = l + (l & 1)
    out = []
    for k in range(L // 2):
        a = 0 if k == 0 else (k - 1 + rnd) % (L - 1) + 1
        b = (L - 1 - k - 1 + rnd) % (L - 1) + 1
        p, q = min(a, b), max(a, b)
        if q < l:
            out.append((p, q))
    return out


def ref_jacobi(a2, a1, l, max_sweeps, order):
    """(s, u, vt, info) as the kernel writes them; order 'rr' (the kernel's, with its warp dot
    products) or 'cyclic' (cpu.rs, sequential dot products)."""
    w = [[0.0] * l for _ in range(l)]
    for c in range(l):
        for i in range(l):
            acc = 0.0
            for p in range(l):
                acc = fma(a2[i * l + p], a1[p * l + c], acc)
            w[c][i] = acc
    v = [[1.0 if i == c else 0.0 for i in range(l)] for c in range(l)]
    L = l + (l & 1)
    sweeps, conv = 0, False
    while sweeps < max_sweeps:
        rot = False
        if order == 'rr':
            for rnd in range(L - 1):
                for p, q in round_robin_pairs(l, rnd):
                    rot |= rotate_pair(w, v, p, q, l)
        else:
            for p in range(l):
                for q in range(p + 1, l):
                    rot |= rotate_pair(w, v, p, q, l, dot='seq')
        sweeps += 1
        if not rot:
            conv = True
            break
    sig = []
    for c in range(l):
        acc = 0.0
        for i in range(l):
            acc += w[c][i] * w[c][i]
        sig.append(math.sqrt(acc))
    s = [0.0] * l
    u = [0.0] * (l * l)
    vt = [0.0] * (l * l)
    for c in range(l):
        rank = sum(1 for d in range(l) if sig[d] > sig[c] or (sig[d] == sig[c] and d < c))
        s[rank] = f32(sig[c])
        for i in range(l):
            u[i * l + rank] = f32(w[c][i] / sig[c]) if sig[c] > 1e-300 else 0.0
            vt[i * l + rank] = f32(v[c][i])
    return s, u, vt, sweeps | (0 if conv else 0x80000000), (w, v, sig)


# ---- cases ----

def rand_f32(rng, n, scale=1.0):
    return [f32(rng.gauss(0, scale)) for _ in range(n)]


def gram_case(mod, rng, m, l):
    y = rand_f32(rng, m * l)
    splits, rps = gram_splits(m, l)
    mem = pi.Global()
    ya = mem.alloc(fbuf(y))
    pa = mem.alloc(nan_f64(splits * l * l))
    ga = mem.alloc(nan_f64(l * l))
    tiles = (l * l + 255) // 256
    pi.run(mod, 'rsvd_gram_partial_f64', (splits, tiles), 256, [ya, pa, m, l, rps], mem)
    want_p = ref_gram_partials(y, m, l, splits, rps)
    ok = same_bits(f'gram partials m={m} l={l} splits={splits} rps={rps}',
                   rd_f64(mem, pa, splits * l * l), want_p)
    n = l * l
    pi.run(mod, 'rsvd_sum_f64', (max(1, min(64, (n + 255) // 256)), 1), 256, [pa, ga, n, splits], mem)
    want_g = []
    for e in range(n):
        acc = 0.0
        for s in range(splits):
            acc += want_p[s * n + e]
        want_g.append(acc)
    ok &= same_bits(f'gram sum m={m} l={l}', rd_f64(mem, ga, n), want_g)
    return ok


def spd(rng, l, cond_scale=1.0):
    x = [rng.gauss(0, 1) for _ in range((l + 3) * l)]
    g = [0.0] * (l * l)
    for i in range(l):
        for j in range(l):
            g[i * l + j] = sum(x[r * l + i] * x[r * l + j] for r in range(l + 3))
    for i in range(l):
        g[i * l + i] += cond_scale
    return g


def chol_run(mod, g, l, limit):
    mem = pi.Global()
    ga = mem.alloc(dbuf(g))
    ra = mem.alloc(nan_f64(l * l))
    sa = mem.alloc(struct.pack('<I', 0xDEADBEEF))
    pi.run(mod, 'rsvd_cholesky_f64', (1, 1), 256, [ga, ra, sa, l, d2b(limit)], mem)
    return rd_f64(mem, ra, l * l), rd_u32(mem, sa, 1)[0]


def chol_case(mod, rng, l):
    g = spd(rng, l)
    r, st = chol_run(mod, g, l, 1e6)
    want, wst = ref_cholesky(g, l)
    d = [want[i * l + i] for i in range(l)]
    if max(d) / min(d) > 1e6:
        wst = l + 1
    ok = same_bits(f'cholesky l={l}', r, want)
    ok &= st == wst
    if st != wst:
        print(f'FAIL cholesky l={l}: status {st} want {wst}')
    if l >= 2:
        # the ratio test: a limit below the actual ratio gives status l + 1 (R still complete)
        ratio = max(d) / min(d)
        _, st2 = chol_run(mod, g, l, ratio * 0.5)
        _, st3 = chol_run(mod, g, l, math.inf)
        good = st2 == l + 1 and st3 == 0 and ratio > 1
        print(f'{"ok  " if good else "FAIL"} cholesky ratio test l={l}: {st2} (want {l + 1}), {st3} (want 0)')
        ok &= good
    return ok


def chol_fail_case(mod, rng, l, j, nan=False):
    g = spd(rng, l)
    # make pivot j non-positive: g[j, j] = sum_{p < j} r[p, j]^2 - 1 (or NaN)
    r, _ = ref_cholesky(g, l)
    s = sum(r[p * l + j] ** 2 for p in range(j))
    g[j * l + j] = math.nan if nan else s - 1.0
    _, st = chol_run(mod, g, l, 1e6)
    _, want = ref_cholesky(g, l)
    good = st == want == j + 1
    print(f'{"ok  " if good else "FAIL"} cholesky failure l={l} at pivot {j}{" (NaN)" if nan else ""}: status {st}')
    return good


def trsm_case(mod, rng, m, l):
    y = rand_f32(rng, m * l)
    g = [0.0] * (l * l)
    for i in range(l):
        for j in range(l):
            g[i * l + j] = sum(float(y[r * l + i]) * float(y[r * l + j]) for r in range(m))
    if m < l:
        g = spd(rng, l)
    r, st = ref_cholesky(g, l)
    assert st == 0
    mem = pi.Global()
    ya = mem.alloc(fbuf(y))
    ra = mem.alloc(dbuf(r))
    qa = mem.alloc(nan_f32(m * l))
    pi.run(mod, 'rsvd_trsm_f64', ((m + 127) // 128, 1), 128, [ya, ra, qa, m, l], mem)
    ok = same_bits(f'trsm m={m} l={l}', rd_f32(mem, qa, m * l), ref_trsm(y, r, m, l))
    if m >= l:
        q = rd_f32(mem, qa, m * l)
        err = max(abs(sum(q[k * l + i] * q[k * l + j] for k in range(m)) - (i == j))
                  for i in range(l) for j in range(l))
        good = err < 1e-4 * l
        print(f'{"ok  " if good else "FAIL"} trsm m={m} l={l}: max |Q^T Q - I| = {err:.2e}')
        ok &= good
    return ok


def jacobi_case(mod, rng, l, max_sweeps=60, upper=True):
    def mat():
        a = [rng.gauss(0, 1) for _ in range(l * l)]
        if upper:
            for i in range(l):
                for j in range(i):
                    a[i * l + j] = 0.0
        return a
    a2, a1 = mat(), mat()
    mem = pi.Global()
    a2a, a1a = mem.alloc(dbuf(a2)), mem.alloc(dbuf(a1))
    wa, va = mem.alloc(nan_f64(l * l)), mem.alloc(nan_f64(l * l))
    sa, ua, vta = mem.alloc(nan_f32(l)), mem.alloc(nan_f32(l * l)), mem.alloc(nan_f32(l * l))
    ia = mem.alloc(struct.pack('<I', 0xDEADBEEF))
    pi.run(mod, 'rsvd_jacobi_f64', (1, 1), jacobi_block(l), [a2a, a1a, wa, va, sa, ua, vta, ia, l, max_sweeps], mem)
    s, u, vt = rd_f32(mem, sa, l), rd_f32(mem, ua, l * l), rd_f32(mem, vta, l * l)
    info = rd_u32(mem, ia, 1)[0]
    ws, wu, wvt, winfo, (w, v, sig) = ref_jacobi(a2, a1, l, max_sweeps, 'rr')
    tag = f'jacobi l={l} max_sweeps={max_sweeps}'
    ok = same_bits(f'{tag} s', s, ws) & same_bits(f'{tag} u', u, wu) & same_bits(f'{tag} vt', vt, wvt)
    ok &= same_bits(f'{tag} workspace w', rd_f64(mem, wa, l * l), [x for col in w for x in col])
    good = info == winfo
    print(f'{"ok  " if good else "FAIL"} {tag} info {info:#x} (want {winfo:#x})')
    ok &= good
    if max_sweeps >= 30:
        # properties against cpu.rs's cyclic order, in f64 (the model's unrounded columns)
        cs, _, _, cinfo, (cw, cv, csig) = ref_jacobi(a2, a1, l, max_sweeps, 'cyclic')
        order = sorted(range(l), key=lambda c: -sig[c])
        corder = sorted(range(l), key=lambda c: -csig[c])
        smax = max(sig) if l else 1.0
        e_s = max(abs(sig[a] - csig[b]) for a, b in zip(order, corder)) / smax
        # W = U S V^T: the rotated columns w_c = W v_c, so W = sum_c w_c v_c^T
        wmat = [[0.0] * l for _ in range(l)]
        for i in range(l):
            for j in range(l):
                wmat[i][j] = sum(fma(a2[i * l + p], a1[p * l + j], 0.0) for p in range(l))
        e_rec = max(abs(sum(w[c][i] * v[c][j] for c in range(l)) - wmat[i][j])
                    for i in range(l) for j in range(l)) / smax
        e_v = max(abs(sum(v[a][i] * v[b][i] for i in range(l)) - (a == b)) for a in range(l) for b in range(l))
        e_u = max(abs(sum(w[a][i] * w[b][i] for i in range(l)) / (sig[a] * sig[b]) - (a == b))
                  for a in range(l) for b in range(l) if sig[a] > 1e-300 and sig[b] > 1e-300)
        good = e_s < 1e-12 and e_rec < 1e-12 and e_v < 1e-12 and e_u < 1e-12 and winfo < 0x80000000
        print(f'{"ok  " if good else "FAIL"} {tag} vs cpu.rs cyclic order: sigma {e_s:.1e}, '
              f'reconstruction {e_rec:.1e}, V^T V {e_v:.1e}, U^T U {e_u:.1e}; sweeps {winfo} (cyclic {cinfo})')
        ok &= good
    return ok


def cast_case(mod, rng, n):
    x = [rng.gauss(0, 1) for _ in range(n)]
    x[:3] = [1e300, -1e-300, math.inf]  # overflow, underflow to -0, inf
    mem = pi.Global()
    xa, ya = mem.alloc(dbuf(x)), mem.alloc(nan_f32(n))
    pi.run(mod, 'rsvd_cast_f64_f32', (1, 1), 256, [xa, ya, n], mem)
    return same_bits(f'cast f64 -> f32 n={n}', rd_f32(mem, ya, n), [f32(v) for v in x])


# ---- the driver's composition (rsvd/cuda.rs rsvd_f32) on small shapes ----

def mm(a, b, rows, inner, cols):
    """f64 row-major product."""
    out = [0.0] * (rows * cols)
    for i in range(rows):
        for p_ in range(inner):
            x = a[i * inner + p_]
            if x:
                for j in range(cols):
                    out[i * cols + j] += x * b[p_ * cols + j]
    return out


def tr(a, rows, cols):
    return [a[i * cols + j] for j in range(cols) for i in range(rows)]


def mgs2(x, rows, cols):
    """Orthonormal columns spanning range(x): modified Gram-Schmidt, twice (f64)."""
    c = [[x[i * cols + j] for i in range(rows)] for j in range(cols)]
    for _ in range(2):
        for j in range(cols):
            for p_ in range(j):
                d = sum(c[p_][i] * c[j][i] for i in range(rows))
                c[j] = [c[j][i] - d * c[p_][i] for i in range(rows)]
            nrm = math.sqrt(sum(v * v for v in c[j]))
            c[j] = [v / nrm for v in c[j]]
    return [c[j][i] for i in range(rows) for j in range(cols)]


def jacobi_cols(x, rows, cols):
    """cpu.rs jacobi_svd on a rows x cols f64 matrix (rows >= cols): (s, u, v) descending."""
    w = [[x[i * cols + j] for i in range(rows)] for j in range(cols)]
    v = [[1.0 if i == j else 0.0 for i in range(cols)] for j in range(cols)]
    for _ in range(60):
        rot = False
        for p_ in range(cols):
            for q_ in range(p_ + 1, cols):
                a = sum(t * t for t in w[p_])
                b = sum(t * t for t in w[q_])
                g = sum(t * u for t, u in zip(w[p_], w[q_]))
                if g == 0.0 or abs(g) <= 1e-15 * math.sqrt(a * b):
                    continue
                rot = True
                z = (b - a) / (2.0 * g)
                t = math.copysign(1.0, z) / (abs(z) + math.sqrt(1.0 + z * z))
                c = 1.0 / math.sqrt(1.0 + t * t)
                sn = c * t
                for cols_ in (w, v):
                    xp, xq = cols_[p_], cols_[q_]
                    cols_[p_] = [c * e - sn * f for e, f in zip(xp, xq)]
                    cols_[q_] = [sn * e + c * f for e, f in zip(xp, xq)]
        if not rot:
            break
    sig = [math.sqrt(sum(t * t for t in col)) for col in w]
    order = sorted(range(cols), key=lambda j: (-sig[j], j))
    s_ = [sig[j] for j in order]
    u = [w[j][i] / sig[j] if sig[j] > 1e-300 else 0.0 for i in range(rows) for j in order]
    vv = [v[j][i] for i in range(cols) for j in order]
    return s_, u, vv


def min_cos(x, y, rows, k):
    c = mm(tr(x, rows, k), y, k, rows, k)
    return min(jacobi_cols(c, k, k)[0])


def gapped(rng, m, n, k):
    r = min(m, n)
    u0 = mgs2([rng.gauss(0, 1) for _ in range(m * r)], m, r)
    v0 = mgs2([rng.gauss(0, 1) for _ in range(n * r)], n, r)
    us = [u0[i * r + j] * 0.8 ** j * (1.0 if j < k else 0.05) for i in range(m) for j in range(r)]
    return [f32(x) for x in mm(us, tr(v0, n, r), m, r, n)]


def gpu_qr(mod, y, rows, l):
    """cholesky_qr2_f32: (q [f32], r2, r1, statuses), every piece through the interpreter."""
    mem = pi.Global()
    splits, rps = gram_splits(rows, l)
    tiles = (l * l + 255) // 256
    ya = mem.alloc(fbuf(y))
    bufs = {}
    for name, data in [('p', nan_f64(splits * l * l)), ('g1', nan_f64(l * l)), ('g2', nan_f64(l * l)),
                       ('r1', nan_f64(l * l)), ('r2', nan_f64(l * l)), ('q1', nan_f32(rows * l)),
                       ('q2', nan_f32(rows * l)), ('s1', bytes(4)), ('s2', bytes(4))]:
        bufs[name] = mem.alloc(data)
    b = bufs
    for src, g, r, st, limit, dst in [(ya, b['g1'], b['r1'], b['s1'], 1e6, b['q1']),
                                      (b['q1'], b['g2'], b['r2'], b['s2'], math.inf, b['q2'])]:
        pi.run(mod, 'rsvd_gram_partial_f64', (splits, tiles), 256, [src, b['p'], rows, l, rps], mem)
        pi.run(mod, 'rsvd_sum_f64', (1, 1), 256, [b['p'], g, l * l, splits], mem)
        pi.run(mod, 'rsvd_cholesky_f64', (1, 1), 256, [g, r, st, l, d2b(limit)], mem)
        pi.run(mod, 'rsvd_trsm_f64', ((rows + 127) // 128, 1), 128, [src, r, dst, rows, l], mem)
    return (rd_f32(mem, b['q2'], rows * l), rd_f64(mem, b['r2'], l * l), rd_f64(mem, b['r1'], l * l),
            (rd_u32(mem, b['s1'], 1)[0], rd_u32(mem, b['s2'], 1)[0]))


def driver_case(mod, rng, m, n, k, p, q):
    """rsvd/cuda.rs rsvd_f32 step by step (the f32 GEMMs as f64 products rounded to f32) against an
    f64 reference of cpu.rs rsvd with the same Omega (QR by Gram-Schmidt: the same subspaces)."""
    r = min(m, n)
    k = min(k, r)
    l = min(k + p, r)
    a = gapped(rng, m, n, k)
    at = tr(a, m, n)
    omega = [f32(rng.gauss(0, 1)) for _ in range(n * l)]
    g32 = lambda x, y, rows, inner, cols: [f32(v) for v in mm(x, y, rows, inner, cols)]  # noqa: E731
    statuses = []

    def qr(y, rows):
        out = gpu_qr(mod, y, rows, l)
        statuses.append(out[3])
        return out
    qm = qr(g32(a, omega, m, n, l), m)[0]
    for _ in range(q):
        z = qr(g32(at, qm, n, m, l), n)[0]
        qm = qr(g32(a, z, m, n, l), m)[0]
    qb, r2, r1, _ = qr(g32(at, qm, n, m, l), n)
    mem = pi.Global()
    r2a, r1a = mem.alloc(dbuf(r2)), mem.alloc(dbuf(r1))
    wa, va = mem.alloc(nan_f64(l * l)), mem.alloc(nan_f64(l * l))
    sa, ua, vra = mem.alloc(nan_f32(l)), mem.alloc(nan_f32(l * l)), mem.alloc(nan_f32(l * l))
    ia = mem.alloc(bytes(4))
    pi.run(mod, 'rsvd_jacobi_f64', (1, 1), jacobi_block(l), [r2a, r1a, wa, va, sa, ua, vra, ia, l, 60], mem)
    s = rd_f32(mem, sa, l)[:k]
    u_r, v_r = rd_f32(mem, ua, l * l), rd_f32(mem, vra, l * l)
    first_k = lambda x: [x[i * l + j] for i in range(l) for j in range(k)]  # noqa: E731
    u = g32(qm, first_k(v_r), m, l, k)
    v = g32(qb, first_k(u_r), n, l, k)
    # reference (f64, the same Omega)
    rq = mgs2(mm(a, omega, m, n, l), m, l)
    for _ in range(q):
        rz = mgs2(mm(at, rq, n, m, l), n, l)
        rq = mgs2(mm(a, rz, m, n, l), m, l)
    bt = mm(at, rq, n, m, l)  # B^T, n x l
    ws, wv, wu_b = jacobi_cols(bt, n, l)  # B^T = V S U_B^T
    wu = mm(rq, wu_b, m, l, l)
    wu_k = [wu[i * l + j] for i in range(m) for j in range(k)]
    wv_k = [wv[i * l + j] for i in range(n) for j in range(k)]
    e_s = max(abs(x - y) for x, y in zip(s, ws[:k])) / ws[0]
    cu, cv = min_cos(u, wu_k, m, k), min_cos(v, wv_k, n, k)
    good = (all(st == (0, 0) for st in statuses) and e_s < 1e-6 and cu > 1 - 1e-6 and cv > 1 - 1e-6
            and rd_u32(mem, ia, 1)[0] < 0x80000000)
    print(f'{"ok  " if good else "FAIL"} driver m={m} n={n} k={k} p={p} q={q} (l={l}): sigma '
          f'{e_s:.1e} of sigma_1, min cos U {cu:.9f}, V {cv:.9f}, QR statuses {statuses}')
    return good


def main():
    mod = pi.Module(open(os.path.join(KERNELS, 'rsvd', 'rsvd.ptx')).read())
    rng = random.Random(6)
    quick = len(sys.argv) >= 2
    ok = True
    # Gram: l = 1, one row, odd sizes, two entry tiles (l = 17: 289 > 256), several row chunks
    # per split (m = 2100: 64 splits of 33 rows, chunks of 32 and 1) and a short last split
    for m, l in [(1, 1), (37, 5), (70, 17), (33, 1)] + ([] if quick else [(300, 3), (129, 16), (2100, 2)]):
        ok &= gram_case(mod, rng, m, l)
    for l in [1, 2, 5] + ([] if quick else [17]):
        ok &= chol_case(mod, rng, l)
    ok &= chol_fail_case(mod, rng, 5, 0)
    ok &= chol_fail_case(mod, rng, 5, 3)
    ok &= chol_fail_case(mod, rng, 4, 2, nan=True)
    # trsm: one row, a partial block, two blocks with a tail (m = 130), l = 1
    for m, l in [(1, 1), (1, 3), (37, 5), (130, 4)] + ([] if quick else [(40, 17)]):
        ok &= trsm_case(mod, rng, m, l)
    # Jacobi: l = 1, 2 (one round), odd l (a padding column), not converged (max_sweeps = 1)
    for l in [1, 2, 3, 5] + ([] if quick else [8, 11]):
        ok &= jacobi_case(mod, rng, l)
    ok &= jacobi_case(mod, rng, 6, max_sweeps=1, upper=False)
    # 17 rows: lane 16 holds a row, so every butterfly step (offset 16 included) matters
    ok &= jacobi_case(mod, rng, 17, max_sweeps=1, upper=False)
    if not quick:
        # more than G rows: lanes sum two (G = 32) or five (G = 16) rows each before the butterfly
        ok &= jacobi_case(mod, rng, 34, max_sweeps=1, upper=False)
        ok &= jacobi_case(mod, rng, 66, max_sweeps=1, upper=False)
    ok &= cast_case(mod, rng, 300)
    # the driver's composition: tall, wide, l = min(m, n)
    ok &= driver_case(mod, rng, 24, 17, 3, 2, 1)
    if not quick:
        ok &= driver_case(mod, rng, 13, 30, 4, 3, 2)
        ok &= driver_case(mod, rng, 9, 11, 9, 4, 0)
    print('ALL OK' if ok else 'FAILURES')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
