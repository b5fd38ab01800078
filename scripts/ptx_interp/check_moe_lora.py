#!/usr/bin/env python3
"""Runs moe_lora.ptx (MoE-LoRA dispatch forward and backward) and moe_gate.ptx (noisy top-k gate)
through interp.py on small shapes against plain-Python f64 references of kernels/src/moe_lora/cpu.rs.
Review aid; slow.

The gate uses a few f32 instructions interp.py does not know (abs, neg, sub, div, max, setp on
f32, ex2.approx, lg2.approx); this script adds them to a private copy of the interpreter at load
time (interp.py itself is unchanged). ex2 / lg2 are modelled as the exact function rounded to f32
with subnormals flushed (the hardware's .approx is within a few ulp: the tolerances allow it).

The kernels are driven exactly as moe_lora/cuda.rs drives them: the host groups the slots per
expert (a copy of group_by_expert), the forward runs gather (A) then combine (B), the backward
runs gather (B^T dy), gate_grad, combine (A^T, dx) and outer (dA, dB), with the launcher's tile
size and grids. Every buffer is allocated at its exact size (the interpreter bounds-checks each
access) and the outputs start NaN-filled, so an entry the kernels forget to write shows.

Tolerance: every output is a chain of f32 fma sums; it may differ from the f64 reference by
(length of the chain + 8) * 2^-23 * (the same expression over absolute values).

Usage: python3 scripts/ptx_interp/check_moe_lora.py [quick]
"""
import math
import os
import random
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
KERNELS = os.path.join(HERE, '..', '..', 'kernels', 'src')
import interp as _base  # noqa: E402,F401  (fails early if interp.py is missing)


def _extended_interp():
    """interp.py plus the f32 instructions of moe_gate.ptx, as a separate module object."""
    import types
    src = open(os.path.join(HERE, 'interp.py')).read()
    anchor = "        else:\n            raise AssertionError(f'unsupported instruction {op}')"
    assert src.count(anchor) == 1, 'interp.py changed: update the extension in check_moe_lora.py'
    extra = """        elif op in ('abs.f32', 'neg.f32'):
            R[d] = (v(1) & 0x7FFFFFFF) if op == 'abs.f32' else (v(1) ^ 0x80000000)
        elif op == 'sub.rn.f32':
            R[d] = f32r(b2f(v(1)) - b2f(v(2)))
        elif op == 'div.rn.f32':
            x_, y_ = b2f(v(1)), b2f(v(2))
            R[d] = f32r(x_ / y_) if y_ != 0 else (0x7FC00000 if x_ == 0 or x_ != x_ else
                                                  f32r(math.copysign(math.inf, x_) * math.copysign(1, y_)))
        elif op == 'max.f32':
            x_, y_ = b2f(v(1)), b2f(v(2))
            R[d] = v(2) if x_ != x_ else (v(1) if y_ != y_ else (v(1) if x_ >= y_ else v(2)))
        elif op == 'ex2.approx.ftz.f32':
            x_ = b2f(v(1))
            r_ = f32r(2.0 ** x_) if x_ < 128 else 0x7F800000
            R[d] = 0 if (r_ & 0x7F800000) == 0 else r_
        elif op == 'lg2.approx.ftz.f32':
            x_ = b2f(v(1))
            assert x_ > 0, 'lg2 of a non-positive value'
            R[d] = f32r(math.log2(x_))
        elif op.startswith('setp.') and op.endswith('.f32'):
            x_, y_ = b2f(v(1)), b2f(v(2))
            cmp = op.split('.')[1]
            R[d] = int({'lt': x_ < y_, 'le': x_ <= y_, 'gt': x_ > y_, 'ge': x_ >= y_, 'eq': x_ == y_,
                        'ne': x_ != y_}[cmp])
"""
    # the generic integer setp branch comes first in interp.py: route f32 compares around it
    generic = "        elif op.startswith('setp.'):"
    assert src.count(generic) == 1, 'interp.py changed: update the extension in check_moe_lora.py'
    src = src.replace(generic, "        elif op.startswith('setp.') and not op.endswith('.f32'):")
    src = src.replace(anchor, extra + anchor)
    mod = types.ModuleType('interp_moe')
    mod.__dict__['math'] = math
    exec(compile(src, os.path.join(HERE, 'interp.py') + ' (+moe extension)', 'exec'), mod.__dict__)
    return mod


pi = _extended_interp()

NAN = b'\x00\x00\xc0\x7f'


def f32(x):
    return pi.b2f(pi.f32r(x))


def fbuf(vals):
    return struct.pack(f'<{len(vals)}f', *vals) or bytes(4)


def ubuf(vals):
    return struct.pack(f'<{len(vals)}I', *vals) or bytes(4)


def nan_buf(n):
    return NAN * max(n, 1)


def read_f32(mem, addr, n):
    return list(struct.unpack(f'<{n}f', bytes(mem.get(addr)[:4 * n])))


def group_by_expert(idx, k, experts):
    counts = [0] * (experts + 1)
    for e in idx:
        counts[e + 1] += 1
    for e in range(experts):
        counts[e + 1] += counts[e]
    offsets = counts[:]
    nxt = counts[:]
    slots = [0] * len(idx)
    for s, e in enumerate(idx):
        slots[nxt[e]] = s
        nxt[e] += 1
    return offsets, slots


def tile_tokens(r, slots, experts):
    """The launcher's gather tile (moe_lora/cuda.rs gather_tile_tokens)."""
    tm = min(128, (2048 // r) // 8 * 8)
    while tm > 8 and (slots + tm - 1) // tm + experts < 264:
        tm = max(8, tm // 2 // 8 * 8)
    return tm


def small_combine(experts, k, r):
    """The launcher's rule for moe_lora_combine_small_f32 (every W tile in shared memory)."""
    return experts * r <= 128 and k * r <= 64


def run_combine(mod, mem, rng, args, n_out, T, both):
    """combine as the launcher runs it; with `both`, also the other entry into a second buffer
    (when the small one applies). Returns the output buffers, the launcher's first."""
    out = args[-1]
    experts, k, r = args[9], args[8], args[10]
    names = ['moe_lora_combine_f32']
    if small_combine(experts, k, r):
        names.insert(0, 'moe_lora_combine_small_f32')
    if not both:
        names = names[:1]
    outs = []
    for i, name in enumerate(names):
        dst = out if i == 0 else mem.alloc(nan_buf(len(mem.get(out)) // 4))
        pi.run(mod, name, ((n_out + 63) // 64, (T + 31) // 32), 256, args[:-1] + [dst], mem,
               seed=rng.randrange(1 << 30))
        outs.append((name, dst))
    return outs


def outer_splits(n_out, experts, slots):
    """The launcher's token splits of the outer product (moe_lora/cuda.rs outer_splits)."""
    blocks = (n_out + 63) // 64 * max(experts, 1)
    return max(1, min(-(-264 // blocks), 16, slots // max(experts, 1) // 64))


def run_outer(mod, mem, rng, y, z, g, scale_bits, use_gate, offsets, slots, k, n_out, r, out_trans,
              experts, out, splits):
    """moe_lora_outer_f32 as the launcher runs it: straight into out, or into `splits` planes of
    partial sums (exactly sized) that moe_lora_sum_f32 then adds."""
    plane = experts * n_out * r
    dst = out if splits == 1 else mem.alloc(nan_buf(splits * plane))
    pi.run(mod, 'moe_lora_outer_f32', ((n_out + 63) // 64, experts * splits), 256,
           [y, z, g, scale_bits, use_gate, offsets, slots, k, n_out, r, out_trans, experts, splits,
            dst], mem, seed=rng.randrange(1 << 30))
    if splits > 1:
        pi.run(mod, 'moe_lora_sum_f32', (min((plane + 255) // 256, 3), 1), 256,
               [dst, out, plane, splits], mem, seed=rng.randrange(1 << 30))


def reference(x, idx, g, a, b, s, dy, T, k, E, d_in, r, d_out):
    """Forward and backward of cpu.rs in f64, plus the same over absolute values (for bounds)."""
    out = [0.0] * (T * d_out)
    out_abs = [0.0] * (T * d_out)
    dx = [0.0] * (T * d_in)
    dx_abs = [0.0] * (T * d_in)
    dg = [0.0] * (T * k)
    dg_abs = [0.0] * (T * k)
    da = [0.0] * (E * r * d_in)
    da_abs = [0.0] * (E * r * d_in)
    db = [0.0] * (E * d_out * r)
    db_abs = [0.0] * (E * d_out * r)
    for t in range(T):
        xt = x[t * d_in:(t + 1) * d_in]
        dyt = dy[t * d_out:(t + 1) * d_out]
        for j in range(k):
            n = t * k + j
            e = idx[n]
            gs = g[n] * s
            mid = [sum(a[(e * r + i) * d_in + p] * xt[p] for p in range(d_in)) for i in range(r)]
            mida = [sum(abs(a[(e * r + i) * d_in + p] * xt[p]) for p in range(d_in))
                    for i in range(r)]
            u = [sum(b[(e * d_out + o) * r + i] * dyt[o] for o in range(d_out)) for i in range(r)]
            ua = [sum(abs(b[(e * d_out + o) * r + i] * dyt[o]) for o in range(d_out))
                  for i in range(r)]
            for o in range(d_out):
                row = b[(e * d_out + o) * r:(e * d_out + o + 1) * r]
                out[t * d_out + o] += gs * sum(w * m for w, m in zip(row, mid))
                out_abs[t * d_out + o] += abs(gs) * sum(abs(w) * m for w, m in zip(row, mida))
            dg[n] = s * sum(ui * mi for ui, mi in zip(u, mid))
            dg_abs[n] = abs(s) * sum(ui * mi for ui, mi in zip(ua, mida))
            for o in range(d_out):
                for i in range(r):
                    db[(e * d_out + o) * r + i] += gs * dyt[o] * mid[i]
                    db_abs[(e * d_out + o) * r + i] += abs(gs * dyt[o]) * mida[i]
            for i in range(r):
                for p in range(d_in):
                    da[(e * r + i) * d_in + p] += gs * u[i] * xt[p]
                    da_abs[(e * r + i) * d_in + p] += abs(gs * xt[p]) * ua[i]
                    dx[t * d_in + p] += a[(e * r + i) * d_in + p] * gs * u[i]
                    dx_abs[t * d_in + p] += abs(a[(e * r + i) * d_in + p] * gs) * ua[i]
    return (out, out_abs), (dx, dx_abs), (dg, dg_abs), (da, da_abs), (db, db_abs)


def compare(what, got, want, chain):
    vals, absv = want
    bad = 0
    for i, (gv, w, sa) in enumerate(zip(got, vals, absv)):
        tol = (chain + 8) * 2.0 ** -23 * sa + 1e-30
        if not abs(gv - w) <= tol:
            if bad < 5:
                print(f'  {what}[{i}]: got {gv!r} want {w!r} tol {tol:.3g}')
            bad += 1
    print(f'  {what}: {"OK" if not bad else f"{bad} BAD of {len(got)}"}')
    return bad == 0


def case(mod, rng, T, k, E, d_in, r, d_out, skew=False, big_tile=False, splits=None):
    """big_tile: the largest gather tile the kernel accepts (the launcher picks it for large T);
    otherwise the launcher's choice for this small T (8 tokens)."""
    tm = min(128, (2048 // r) // 8 * 8) if big_tile else tile_tokens(r, T * k, E)
    print(f'case T={T} k={k} E={E} d_in={d_in} r={r} d_out={d_out} tm={tm}{" skewed" if skew else ""}')
    s = f32(16.0 / math.sqrt(r))
    x = [f32(rng.uniform(-1, 1)) for _ in range(T * d_in)]
    a = [f32(rng.uniform(-1, 1)) for _ in range(E * r * d_in)]
    b = [f32(rng.uniform(-1, 1)) for _ in range(E * d_out * r)]
    dy = [f32(rng.uniform(-1, 1)) for _ in range(T * d_out)]
    idx, g = [], []
    for _ in range(T):
        if skew:  # expert 0 takes almost every token: several tiles and chunks of one expert
            row = [0] + rng.sample(range(1, E), k - 1) if rng.random() < 0.9 else rng.sample(range(E), k)
        else:
            row = rng.sample(range(E), k)
        idx += row
        w = [rng.uniform(0.1, 1) for _ in range(k)]
        g += [f32(v / sum(w)) for v in w]
    offsets, slots = group_by_expert(idx, k, E)
    seed = rng.randrange(1 << 30)

    mem = pi.Global()
    px, pa, pb, pdy = mem.alloc(fbuf(x)), mem.alloc(fbuf(a)), mem.alloc(fbuf(b)), mem.alloc(fbuf(dy))
    pg = mem.alloc(fbuf(g))
    poff, psl, pe = mem.alloc(ubuf(offsets)), mem.alloc(ubuf(slots)), mem.alloc(ubuf(idx))
    pmid = mem.alloc(nan_buf(T * k * r))
    pout = mem.alloc(nan_buf(T * d_out))
    pu = mem.alloc(nan_buf(T * k * r))
    pdmid = mem.alloc(nan_buf(T * k * r))
    pdg = mem.alloc(nan_buf(T * k))
    pdx = mem.alloc(nan_buf(T * d_in))
    pda = mem.alloc(nan_buf(E * r * d_in))
    pdb = mem.alloc(nan_buf(E * d_out * r))
    sb = pi.f2b(s)
    gather_grid = ((T * k + tm - 1) // tm + E, 1)

    # forward: mid = A_e x (gather, w_trans 0), out = sum B_e (g s mid) (combine, w_trans 0)
    pi.run(mod, 'moe_lora_gather_f32', gather_grid, 256,
           [px, pa, poff, psl, pmid, E, k, d_in, r, tm, 0], mem, seed=seed)
    outs = run_combine(mod, mem, rng, [pmid, pe, pg, sb, 1, pb, 0, T, k, E, r, d_out, pout], d_out,
                       T, True)
    # backward
    pi.run(mod, 'moe_lora_gather_f32', gather_grid, 256,
           [pdy, pb, poff, psl, pu, E, k, d_out, r, tm, 1], mem, seed=seed + 2)
    pi.run(mod, 'moe_lora_gate_grad_f32', (max(1, min((T * k + 255) // 256, 3)), 1), 256,
           [pu, pmid, pg, sb, T * k, r, pdg, pdmid], mem, seed=seed + 3)
    dxs = run_combine(mod, mem, rng, [pdmid, pe, pg, sb, 0, pa, 1, T, k, E, r, d_in, pdx], d_in, T,
                      True)
    sa = splits or outer_splits(d_in, E, T * k)
    sb_ = splits or outer_splits(d_out, E, T * k)
    print(f'  outer splits: dA {sa}, dB {sb_}')
    run_outer(mod, mem, rng, px, pdmid, pg, sb, 0, poff, psl, k, d_in, r, 1, E, pda, sa)
    run_outer(mod, mem, rng, pdy, pmid, pg, sb, 1, poff, psl, k, d_out, r, 0, E, pdb, sb_)

    out, dx, dg, da, db = reference(x, idx, g, a, b, s, dy, T, k, E, d_in, r, d_out)
    ok = True
    for name, buf in outs:
        ok &= compare(f'out ({name})', read_f32(mem, buf, T * d_out), out, d_in + k * r + 4)
    ok &= compare('dg', read_f32(mem, pdg, T * k), dg, d_out + r + 4)
    for name, buf in dxs:
        ok &= compare(f'dx ({name})', read_f32(mem, buf, T * d_in), dx, d_out + k * r + 4)
    ok &= compare('dA', read_f32(mem, pda, E * r * d_in), da, d_out + T + 4)
    ok &= compare('dB', read_f32(mem, pdb, E * d_out * r), db, d_in + T + 4)
    return ok


def group_case(mod, rng, T, k, E, bad=None):
    """moe_lora_group against group_by_expert; bad: plant 'range', 'negative' or 'twice'."""
    idx = []
    for _ in range(T):
        idx += rng.sample(range(E), k)
    want_err = 0
    if bad and T:
        t = rng.randrange(T)
        if bad == 'range':
            idx[t * k] = E + rng.randrange(3)
        elif bad == 'negative':
            idx[t * k] = -1
        elif bad == 'twice' and k > 1:
            idx[t * k + k - 1] = idx[t * k]
        want_err = 1
    n = T * k
    mem = pi.Global()
    pidx = mem.alloc(struct.pack(f'<{n}q', *idx) or bytes(8))
    poff, psl, pe = mem.alloc(nan_buf(E + 1)), mem.alloc(nan_buf(n)), mem.alloc(nan_buf(n))
    perr = mem.alloc(bytes(4))
    pi.run(mod, 'moe_lora_group', (1, 1), 128, [pidx, poff, psl, pe, perr, n, k, E], mem,
           seed=rng.randrange(1 << 30))
    rd = lambda a, m: list(struct.unpack(f'<{m}I', bytes(mem.get(a)[:4 * m])))  # noqa: E731
    # the device's rule for a bad entry: counted under expert 0
    clean = []
    for s_, e in enumerate(idx):
        row = idx[s_ - s_ % k:s_]
        clean.append(0 if e < 0 or e >= E or e in row else e)
    offsets, slots = group_by_expert(clean, k, E)
    got = (rd(poff, E + 1), rd(psl, n), rd(pe, n), rd(perr, 1)[0])
    ok = got == (offsets, slots, clean, want_err)
    print(f'group T={T} k={k} E={E} bad={bad}: {"OK" if ok else "BAD"}')
    if not ok:
        print('  got ', got)
        print('  want', (offsets, slots, clean, want_err))
    return ok


def softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def rank_key(v):
    """topk's order: larger first, NaN above all, ties by lower position (sort key, ascending)."""
    return (0, 0.0) if v != v else (1, -v)


def gate_case(mod, dmod, rng, T, E, k, d_in, noise, ties=False):
    print(f'gate T={T} E={E} k={k} d_in={d_in} noise={noise}{" ties" if ties else ""}')
    x = [f32(rng.uniform(-1, 1)) for _ in range(T * d_in)]
    w = [f32(rng.uniform(-1, 1)) for _ in range(2 * E * d_in)]
    if ties:  # every router row the same: equal clean logits, the lowest experts must win
        w[:E * d_in] = w[:d_in] * E
    eps = [f32(rng.gauss(0, 1)) for _ in range(T * E)]
    dgates = [f32(rng.uniform(-1, 1)) for _ in range(T * k)]
    extra = [f32(rng.uniform(-1, 1)) for _ in range(T * E)]
    tm = min(128, (2048 // (2 * E)) // 8 * 8)
    mem = pi.Global()
    px, pw, peps = mem.alloc(fbuf(x)), mem.alloc(fbuf(w)), mem.alloc(fbuf(eps))
    plog, pns = mem.alloc(nan_buf(T * E)), mem.alloc(nan_buf(T * E))
    pidx, pg = mem.alloc(nan_buf(2 * T * k)), mem.alloc(nan_buf(T * k))
    pi.run(mod, 'moe_gate_fwd_f32', ((T + tm - 1) // tm, 1), 256,
           [px, pw, peps, plog, pns, pidx, pg, T, E, k, d_in, tm, int(noise)], mem,
           seed=rng.randrange(1 << 30))
    logits = read_f32(mem, plog, T * E)
    nscale = read_f32(mem, pns, T * E)
    gates = read_f32(mem, pg, T * k)
    raw = bytes(mem.get(pidx)[:8 * T * k])
    idx = list(struct.unpack(f'<{T * k}q', raw))
    ok = True
    bad = 0
    for t in range(T):
        xt = x[t * d_in:(t + 1) * d_in]
        for e in range(E):
            cl = sum(a * b for a, b in zip(w[e * d_in:(e + 1) * d_in], xt))
            cla = sum(abs(a * b) for a, b in zip(w[e * d_in:(e + 1) * d_in], xt))
            z = sum(a * b for a, b in zip(w[(E + e) * d_in:(E + e + 1) * d_in], xt))
            za = sum(abs(a * b) for a, b in zip(w[(E + e) * d_in:(E + e + 1) * d_in], xt))
            ep = eps[t * E + e] if noise else 0.0
            want = cl + softplus(z) * ep
            ns = ep / (1 + math.exp(-z)) if noise else 0.0
            # dot products in f32, then softplus / sigmoid a few ulp off (the approx ex2 / lg2)
            tol = (d_in + 8) * 2.0 ** -23 * (cla + za * abs(ep)) + 2.0 ** -20 * (abs(want) + abs(ep))
            tn = 2.0 ** -20 * abs(ns) + (d_in + 8) * 2.0 ** -23 * za * abs(ep)
            if not (abs(logits[t * E + e] - want) <= tol and abs(nscale[t * E + e] - ns) <= tn):
                bad += 1
                if bad < 5:
                    print(f'  [{t},{e}] logit {logits[t * E + e]} want {want} tol {tol:.3g}; '
                          f'nscale {nscale[t * E + e]} want {ns}')
        # selection: exactly the top k of the kernel's own logits, in rank order
        row = logits[t * E:(t + 1) * E]
        order = sorted(range(E), key=lambda e: (rank_key(row[e]), e))[:k]
        if idx[t * k:(t + 1) * k] != order:
            bad += 1
            print(f'  token {t}: idx {idx[t * k:(t + 1) * k]} want {order}')
            continue
        ex = [math.exp(row[e] - row[order[0]]) for e in order]
        for j in range(k):
            want = ex[j] / sum(ex)
            if not abs(gates[t * k + j] - want) <= (k + 8) * 2.0 ** -20 * want + 1e-30:
                bad += 1
                print(f'  gate [{t},{j}] {gates[t * k + j]} want {want}')
    print(f'  forward: {"OK" if not bad else f"{bad} BAD"}')
    ok &= bad == 0

    # backward rows, on the kernel's own forward outputs
    pdg, pex = mem.alloc(fbuf(dgates)), mem.alloc(fbuf(extra))
    pdz = mem.alloc(nan_buf(T * 2 * E))
    has_extra = T % 2
    pi.run(mod, 'moe_gate_bwd_rows_f32', (max(1, min((T + 255) // 256, 2)), 1), 256,
           [pidx, pg, pdg, pns, pex, pdz, T, E, k, has_extra], mem, seed=rng.randrange(1 << 30))
    dz = read_f32(mem, pdz, T * 2 * E)
    bad = 0
    for t in range(T):
        g = gates[t * k:(t + 1) * k]
        dg = dgates[t * k:(t + 1) * k]
        dot = sum(a * b for a, b in zip(g, dg))
        dl = [extra[t * E + e] if has_extra else 0.0 for e in range(E)]
        for j in range(k):
            dl[idx[t * k + j]] += g[j] * (dg[j] - dot)
        for e in range(E):
            for q, want in ((e, dl[e]), (E + e, dl[e] * nscale[t * E + e])):
                scale = (1 + abs(nscale[t * E + e])) * (1 + sum(abs(a * b) for a, b in zip(g, dg)) + 2)
                if not abs(dz[t * 2 * E + q] - want) <= (k + 8) * 2.0 ** -23 * scale:
                    bad += 1
                    if bad < 5:
                        print(f'  dz[{t},{q}] {dz[t * 2 * E + q]} want {want}')
    print(f'  backward rows: {"OK" if not bad else f"{bad} BAD"}')
    ok &= bad == 0

    # dx and dw on the dispatch kernels: 2 "experts" (router, noise net) of rank E, every token
    # routed to both (slot 2t -> router, 2t + 1 -> noise), as moe_lora/cuda.rs does
    offsets, slots = group_by_expert([0, 1] * T, 2, 2)
    poff, psl, pe = mem.alloc(ubuf(offsets)), mem.alloc(ubuf(slots)), mem.alloc(ubuf([0, 1] * T))
    pdx, pdw = mem.alloc(nan_buf(T * d_in)), mem.alloc(nan_buf(2 * E * d_in))
    one = pi.f2b(1.0)
    gdx = run_combine(dmod, mem, rng, [pdz, pe, pg, one, 0, pw, 1, T, 2, 2, E, d_in, pdx], d_in, T,
                      True)
    run_outer(dmod, mem, rng, px, pdz, pg, one, 0, poff, psl, 2, d_in, E, 1, 2, pdw,
              outer_splits(d_in, 2, 2 * T))
    dw = read_f32(mem, pdw, 2 * E * d_in)
    want_dx = [(sum(dz[t * 2 * E + q] * w[q * d_in + p] for q in range(2 * E)),
                sum(abs(dz[t * 2 * E + q] * w[q * d_in + p]) for q in range(2 * E)))
               for t in range(T) for p in range(d_in)]
    want_dw = [(sum(dz[t * 2 * E + q] * x[t * d_in + p] for t in range(T)),
                sum(abs(dz[t * 2 * E + q] * x[t * d_in + p]) for t in range(T)))
               for q in range(2 * E) for p in range(d_in)]
    for name, buf in gdx:
        ok &= compare(f'gate dx ({name})', read_f32(mem, buf, T * d_in),
                      ([a for a, _ in want_dx], [b for _, b in want_dx]), 2 * E)
    ok &= compare('gate dw', dw, ([a for a, _ in want_dw], [b for _, b in want_dw]), T)
    return ok


def main():
    mod = pi.Module(open(os.path.join(KERNELS, 'moe_lora', 'moe_lora.ptx')).read())
    gmod = pi.Module(open(os.path.join(KERNELS, 'moe_lora', 'moe_gate.ptx')).read())
    rng = random.Random(11)
    ok = True
    # gate: noise on / off, odd d_in over two chunks, k = E, E = 64 (tm = 16, two blocks)
    ok &= gate_case(gmod, mod, rng, 5, 4, 2, 37, True)
    ok &= gate_case(gmod, mod, rng, 3, 3, 3, 5, False, ties=True)
    ok &= case(mod, rng, 11, 2, 2, 9, 3, 5, splits=2)
    # device grouping: empty, fewer slots than threads, several slots per thread, k = E = 64,
    # and each planted error
    ok &= group_case(mod, rng, 0, 2, 4)
    ok &= group_case(mod, rng, 37, 2, 5)
    ok &= group_case(mod, rng, 301, 3, 7)
    ok &= group_case(mod, rng, 3, 64, 64)
    for bad in ('range', 'negative', 'twice'):
        ok &= group_case(mod, rng, 50, 2, 4, bad=bad)
    if len(sys.argv) < 2:
        ok &= gate_case(gmod, mod, rng, 17, 64, 8, 33, True)
        # T = 130: two gate blocks (tm = 128) and two token splits in the dw outer product
        ok &= gate_case(gmod, mod, rng, 130, 2, 1, 40, True)
    # odd sizes, two column chunks (d_in 37), two output tiles (d_out 70), a rank not a power of 2
    ok &= case(mod, rng, 5, 2, 3, 37, 5, 70)
    # k = E = 1, r = 1, d_out = 1
    ok &= case(mod, rng, 3, 1, 1, 3, 1, 1)
    if len(sys.argv) < 2:
        # r = 64 (tm = 32): expert 0 has > 32 tokens, so two gather tiles and two outer chunks; two
        # combine token tiles (T > 32); every 16-rank group of outer in use
        ok &= case(mod, rng, 37, 2, 3, 9, 64, 7, skew=True, big_tile=True)
        # token splits: expert 0's ~70 slots cut into 3 ranges of 32, 32 and the rest (one
        # range empty for the small experts)
        ok &= case(mod, rng, 37, 2, 3, 9, 20, 70, skew=True, splits=3)
        # r = 17 (tm = 120: every output pair of gather in use; an odd padded W stride in
        # combine), k = E = 4, d_in exactly one chunk
        ok &= case(mod, rng, 6, 4, 4, 32, 17, 65, big_tile=True)
        # r = 7 (tm = 128, 896 outputs: pairs 0 and 1), tm = 8 tiles elsewhere above
        ok &= case(mod, rng, 9, 3, 5, 40, 7, 3, big_tile=True)
    print('ALL OK' if ok else 'FAILURES')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
