#!/usr/bin/env python3
"""A per-thread PTX interpreter for the subset the hand-written kernels use (CPU only, slow: small
shapes). Used by check_nf4.py / check_gemm.py and their self-test (scripts/ptx-interp-check.sh).

It runs the very PTX text the GPU loads, with this model (ptxsim, the Rust interpreter behind
scripts/gpu-sim.sh, follows the same rules):
  * threads run independently (divergent branches allowed); warp-collective instructions (mma,
    ldmatrix, shfl.sync.bfly over the full warp) execute once all 32 lanes of the warp stand on the same instruction (a warp split
    over a collective, or a collective with exited lanes, is reported);
  * bar.sync releases once every thread of the block stands on the same bar.sync (exited threads
    or threads waiting elsewhere are reported as a deadlock);
  * warps run one at a time, each as far as it can (to a bar.sync), in a seeded random order, so
    a missing barrier shows as a read of never-written (NaN-filled) shared memory or stale data;
  * cp.async copies land only at the wait_group / wait_all that covers them;
  * every global access is bounds-checked against the buffers given, every shared access
    against the block's shared memory, and vector / cp.async / ldmatrix alignment is asserted.
Semantics follow the PTX ISA (mma.m16n8k16 bf16 fragment tables, ldmatrix .x4 / .trans, cvt
.bf16x2 putting its first source in the upper half). mma sums in f64 and rounds once.
"""
import random
import re
import struct

MASK32 = 0xFFFFFFFF
MASK64 = (1 << 64) - 1


def f2b(x):
    return struct.unpack('<I', struct.pack('<f', x))[0]


def b2f(b):
    return struct.unpack('<f', struct.pack('<I', b & MASK32))[0]


def bf16_rne(bits):
    bits &= MASK32
    if (bits & 0x7F800000) == 0x7F800000 and bits & 0x7FFFFF:
        return 0x7FC0
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def bf2f(h):
    return b2f((h & 0xFFFF) << 16)


def s32(x):
    x &= MASK32
    return x - (1 << 32) if x >> 31 else x


def f32r(x):
    """Round a Python float (double) to f32 bits."""
    try:
        return f2b(x)
    except OverflowError:
        return 0x7F800000 if x > 0 else 0xFF800000


class Module:
    def __init__(self, text):
        text = re.sub(r'//[^\n]*', '', text)
        self.const = {}
        for m in re.finditer(r'\.const\s+\.align\s+\d+\s+\.b32\s+(\w+)\[(\d+)\]\s*=\s*\{([^}]*)\}', text):
            vals = [int(v.strip(), 0) for v in m.group(3).split(',')]
            self.const[m.group(1)] = b''.join(struct.pack('<I', v) for v in vals)
        m = re.search(r'\.extern\s+\.shared\s+\.align\s+(\d+)\s+\.b8\s+(\w+)\[\]', text)
        self.dyn = (m.group(2), int(m.group(1))) if m else None
        self.entries = {}
        for m in re.finditer(r'\.visible\s+\.entry\s+(\w+)\s*\(([^)]*)\)([^{]*)\{', text):
            name = m.group(1)
            params = [p.split()[-1] for p in m.group(2).split(',') if p.strip()]
            depth, i = 1, m.end()
            while depth:
                depth += {'{': 1, '}': -1}.get(text[i], 0)
                i += 1
            self.entries[name] = Entry(name, params, text[m.end():i - 1])
        # module-scope static shared arrays: placed first, shared by every entry's numbering
        head = re.sub(r'\.visible\s+\.entry[^{]*\{(?:[^{}]|\{[^{}]*\})*\}', '', text)
        glob, size = {}, 0
        for m in re.finditer(r'(?<!extern )\.shared\s+\.align\s+(\d+)\s+\.b8\s+(\w+)\[(\d+)\]', head):
            al = int(m.group(1))
            size = (size + al - 1) // al * al
            glob[m.group(2)] = size
            size += int(m.group(3))
        for e in self.entries.values():
            size2 = (size + 127) // 128 * 128
            e.shared = {**glob, **{k: v + size2 for k, v in e.shared.items()}}
            e.smem += size2


def parse_operand(s):
    s = s.strip()
    if s.startswith('{'):
        return ('vec', [x.strip() for x in s[1:-1].split(',')])
    if s.startswith('['):
        inner = s[1:-1].strip()
        if '+' in inner:
            b, o = inner.split('+')
            return ('mem', b.strip(), int(o.strip(), 0))
        return ('mem', inner, 0)
    if s.startswith('%'):
        return ('reg', s)
    if re.fullmatch(r'0[fF][0-9a-fA-F]{8}', s):
        return ('imm', int(s[2:], 16))
    if re.fullmatch(r'-?(0x[0-9a-fA-F]+|\d+)', s):
        return ('imm', int(s, 0))
    return ('sym', s)


def split_args(s):
    out, cur, depth = [], '', 0
    for ch in s:
        if ch in '{[':
            depth += 1
        elif ch in '}]':
            depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur)
            cur = ''
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


class Entry:
    def __init__(self, name, params, body):
        self.name, self.params = name, params
        self.shared = {}
        self.smem = 0
        self.insts, self.labels = [], {}
        for stmt in body.split(';'):
            stmt = stmt.strip()
            while True:
                m = re.match(r'([A-Za-z_]\w*):\s*', stmt)
                if not m:
                    break
                self.labels[m.group(1)] = len(self.insts)
                stmt = stmt[m.end():]
            if not stmt:
                continue
            if stmt.startswith('.shared'):
                m = re.match(r'\.shared\s+\.align\s+(\d+)\s+\.b8\s+(\w+)\[(\d+)\]', stmt)
                al, nm, sz = int(m.group(1)), m.group(2), int(m.group(3))
                self.smem = (self.smem + al - 1) // al * al
                self.shared[nm] = self.smem
                self.smem += sz
                continue
            if stmt.startswith('.reg'):
                continue
            guard = None
            if stmt.startswith('@'):
                g, stmt = stmt.split(None, 1)
                guard = (g[1:].startswith('!'), g.lstrip('@!'))
            parts = stmt.split(None, 1)
            op = parts[0]
            args = [parse_operand(a) for a in split_args(parts[1])] if len(parts) > 1 else []
            self.insts.append((guard, op, args))


class Global:
    def __init__(self):
        self.bufs = []  # (addr, bytearray)
        self.next = 1 << 20

    def alloc(self, data):
        addr = self.next
        self.bufs.append((addr, bytearray(data)))
        self.next = (addr + len(data) + 4096 + 255) // 256 * 256
        return addr

    def slot(self, addr, n):
        for a, b in self.bufs:
            if a <= addr and addr + n <= a + len(b):
                return b, addr - a
        raise AssertionError(f'global access of {n} bytes at {addr:#x} outside every buffer')

    def read(self, addr, n):
        b, o = self.slot(addr, n)
        return bytes(b[o:o + n])

    def write(self, addr, data):
        b, o = self.slot(addr, len(data))
        b[o:o + len(data)] = data

    def get(self, addr):
        for a, b in self.bufs:
            if a == addr:
                return b
        raise KeyError(addr)


CONST_BASE = 1 << 40
COLLECTIVE = ('mma.', 'ldmatrix.', 'shfl.')


class Deadlock(AssertionError):
    pass


def run(mod, name, grid, block, params, mem, seed=1, dyn_smem=0):
    e = mod.entries[name]
    if not hasattr(e, 'static_smem'):
        e.static_smem = e.smem
    if mod.dyn:
        base = (e.static_smem + mod.dyn[1] - 1) // mod.dyn[1] * mod.dyn[1]
        e.shared[mod.dyn[0]] = base
        e.smem = base + dyn_smem
    else:
        assert dyn_smem == 0
    assert len(params) == len(e.params), 'parameter count'
    pmap = dict(zip(e.params, params))
    const_addr = {}
    const_bytes = bytearray()
    for k, v in mod.const.items():
        const_addr[k] = CONST_BASE + len(const_bytes)
        const_bytes += v
    rng = random.Random(seed)
    for bz in range(grid[2] if len(grid) > 2 else 1):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                run_block(e, (bx, by, bz), grid, block, pmap, mem, const_addr, bytes(const_bytes), rng)


def run_block(e, ctaid, grid, nthreads, pmap, mem, const_addr, const_bytes, rng):
    smem = bytearray(b'\xc0\x7f' * ((e.smem + 1) // 2 + 8))
    slen = e.smem
    regs = [dict() for _ in range(nthreads)]
    pc = [0] * nthreads
    done = [False] * nthreads
    pending = [[[]] for _ in range(nthreads)]  # committed groups..., open group

    def rd(t, name):
        if name == '%tid.x':
            return t
        if name == '%ntid.x':
            return nthreads
        if name == '%ctaid.x':
            return ctaid[0]
        if name == '%ctaid.y':
            return ctaid[1]
        if name == '%ctaid.z':
            return ctaid[2]
        if name == '%nctaid.x':
            return grid[0]
        try:
            return regs[t][name]
        except KeyError:
            raise AssertionError(f'{e.name}: thread {t} reads unwritten register {name} at pc {pc[t]}')

    def val(t, o):
        k = o[0]
        if k == 'reg':
            return rd(t, o[1])
        if k == 'imm':
            return o[1]
        if k == 'sym':
            if o[1] in e.shared:
                return e.shared[o[1]]
            if o[1] in const_addr:
                return const_addr[o[1]]
            raise AssertionError(f'unknown symbol {o[1]}')
        raise AssertionError(f'not a value {o}')

    def addr(t, o):
        assert o[0] == 'mem', o
        b = o[1]
        base = val(t, parse_operand(b))
        return (base + o[2]) & MASK64

    def sread(a, n):
        assert a % n == 0 or n > 16, f'misaligned shared read {a:#x}/{n}'
        assert 0 <= a and a + n <= slen, f'shared read {a:#x}+{n} past {slen}'
        return bytes(smem[a:a + n])

    def swrite(a, data):
        n = len(data)
        assert a % min(n, 16) == 0, f'misaligned shared write {a:#x}/{n}'
        assert 0 <= a and a + n <= slen, f'shared write {a:#x}+{n} past {slen}'
        smem[a:a + n] = data

    def gread(a, n):
        if a >= CONST_BASE:
            o = a - CONST_BASE
            assert o + n <= len(const_bytes)
            return const_bytes[o:o + n]
        assert a % n == 0 or n > 16, f'misaligned global read {a:#x}/{n}'
        return mem.read(a, n)

    def unpack(data, n):
        return [int.from_bytes(data[i * 4:i * 4 + 4], 'little') for i in range(n)]

    def step(t):
        """Executes thread t's instruction; returns False if it is collective (not executed)."""
        g, op, a = e.insts[pc[t]]
        if op.startswith(COLLECTIVE) or op == 'bar.sync':
            return False
        if g is not None:
            neg, p = g
            if (rd(t, p) != 0) == neg:
                pc[t] += 1
                return True
        R = regs[t]
        v = lambda i: val(t, a[i])  # noqa: E731
        pc[t] += 1
        if op == 'ret':
            done[t] = True
            return True
        if op in ('bra', 'bra.uni'):
            if op == 'bra.uni':
                pass  # uniformity checked by the scheduler only loosely
            pc[t] = e.labels[a[0][1]]
            return True
        d = a[0][1] if a and a[0][0] == 'reg' else None
        if op.startswith('ld.param'):
            R[d] = pmap[a[1][1]]
        elif op in ('cvta.to.global.u64', 'mov.u32', 'mov.b32', 'mov.u64', 'mov.b64', 'mov.f32',
                    'mov.b16'):
            if a[1][0] == 'vec':
                lo, hi = (rd(t, x) for x in a[1][1])
                R[d] = (lo & 0xFFFF) | ((hi & 0xFFFF) << 16)
            else:
                R[d] = v(1)
        elif op == 'add.u32':
            R[d] = (v(1) + v(2)) & MASK32
        elif op == 'sub.u32':
            R[d] = (v(1) - v(2)) & MASK32
        elif op == 'add.u64':
            R[d] = (v(1) + v(2)) & MASK64
        elif op == 'mul.lo.u32':
            R[d] = (v(1) * v(2)) & MASK32
        elif op == 'mul.lo.u64':
            R[d] = (v(1) * v(2)) & MASK64
        elif op == 'mad.lo.u32':
            R[d] = (v(1) * v(2) + v(3)) & MASK32
        elif op == 'mul.wide.u32':
            R[d] = (v(1) & MASK32) * (v(2) & MASK32)
        elif op == 'mad.wide.u32':
            R[d] = ((v(1) & MASK32) * (v(2) & MASK32) + v(3)) & MASK64
        elif op == 'shl.b32':
            R[d] = (v(1) << v(2)) & MASK32
        elif op == 'shl.b64':
            R[d] = (v(1) << v(2)) & MASK64
        elif op == 'shr.u32':
            R[d] = (v(1) & MASK32) >> v(2)
        elif op == 'shr.u64':
            R[d] = v(1) >> v(2)
        elif op == 'xor.b32':
            R[d] = v(1) ^ v(2)
        elif op in ('or.b32', 'or.b64'):
            R[d] = v(1) | v(2)
        elif op == 'div.u32':
            R[d] = (v(1) & MASK32) // (v(2) & MASK32)
        elif op == 'rem.u32':
            R[d] = (v(1) & MASK32) % (v(2) & MASK32)
        elif op in ('min.s32', 'max.s32'):
            x, y = s32(v(1)), s32(v(2))
            R[d] = (min(x, y) if op == 'min.s32' else max(x, y)) & MASK32
        elif op in ('and.b32', 'and.pred'):
            R[d] = v(1) & v(2)
        elif op == 'not.pred':
            R[d] = int(v(1) == 0)
        elif op == 'min.u32':
            R[d] = min(v(1) & MASK32, v(2) & MASK32)
        elif op == 'bfe.u32':
            R[d] = ((v(1) & MASK32) >> v(2)) & ((1 << v(3)) - 1)
        elif op == 'cvt.u64.u32':
            R[d] = v(1) & MASK32
        elif op == 'cvt.u32.u64':
            R[d] = v(1) & MASK32
        elif op in ('selp.b32', 'selp.u32', 'selp.b64'):
            R[d] = v(1) if v(3) else v(2)
        elif op.startswith('setp.'):
            _, cmp, ty = op.split('.')
            x, y = v(1), v(2)
            if ty.endswith('32'):
                x, y = x & MASK32, y & MASK32
            if ty == 's32':
                x, y = s32(x), s32(y)
            R[d] = int({'lt': x < y, 'le': x <= y, 'gt': x > y, 'ge': x >= y, 'eq': x == y,
                        'ne': x != y}[cmp])
        elif op == 'mul.rn.f32':
            R[d] = f32r(b2f(v(1)) * b2f(v(2)))
        elif op == 'add.rn.f32':
            R[d] = f32r(b2f(v(1)) + b2f(v(2)))
        elif op == 'fma.rn.f32':
            R[d] = f32r(b2f(v(1)) * b2f(v(2)) + b2f(v(3)))
        elif op == 'cvt.rn.bf16.f32':
            R[d] = bf16_rne(v(1))
        elif op == 'cvt.rn.bf16x2.f32':
            R[d] = (bf16_rne(v(1)) << 16) | bf16_rne(v(2))
        elif op.startswith('ld.') and '.shared.' in op + '.':
            p = addr(t, a[1])
            if a[0][0] == 'vec':
                n = len(a[0][1])
                for r_, w in zip(a[0][1], unpack(sread(p, 4 * n), n)):
                    R[r_] = w
            else:
                n = 2 if op.endswith('16') else 4
                R[d] = int.from_bytes(sread(p, n), 'little')
        elif op.startswith('st.shared'):
            p = addr(t, a[0])
            if a[1][0] == 'vec':
                data = b''.join((rd(t, x) & MASK32).to_bytes(4, 'little') for x in a[1][1])
            else:
                n = 2 if op.endswith('16') else 4
                data = (v(1) & ((1 << (8 * n)) - 1)).to_bytes(n, 'little')
            swrite(p, data)
        elif op.startswith('ld.global') or op.startswith('ld.const'):
            p = addr(t, a[1])
            if a[0][0] == 'vec':
                n = len(a[0][1])
                for r_, w in zip(a[0][1], unpack(gread(p, 4 * n), n)):
                    R[r_] = w
            else:
                n = {'u8': 1, 'b16': 2}.get(op.split('.')[-1], 4)
                R[d] = int.from_bytes(gread(p, n), 'little')
        elif op.startswith('st.global'):
            p = addr(t, a[0])
            if a[1][0] == 'vec':
                data = b''.join((rd(t, x) & MASK32).to_bytes(4, 'little') for x in a[1][1])
                assert p % len(data) == 0, f'misaligned vector store {p:#x}'
            else:
                n = 2 if op.endswith('16') else 4
                data = (v(1) & ((1 << (8 * n)) - 1)).to_bytes(n, 'little')
                assert p % n == 0
            mem.write(p, data)
        elif op == 'cp.async.cg.shared.global':
            dsta, srca = addr(t, a[0]), addr(t, a[1])
            assert v(2) == 16
            size = v(3) if len(a) > 3 else 16
            assert dsta % 16 == 0 and dsta + 16 <= slen, f'cp.async dst {dsta:#x}'
            assert srca % 16 == 0, f'cp.async src {srca:#x} thread {t} pc {pc[t] - 1} {e.insts[pc[t] - 1]} {[(k, hex(x)) for k, x in sorted(R.items()) if k.startswith("%rd")]}'
            data = mem.read(srca, max(size, 1))[:size] + bytes(16 - size)
            pending[t][-1].append((dsta, data))
        elif op == 'cp.async.commit_group':
            pending[t].append([])
        elif op in ('cp.async.wait_all', 'cp.async.wait_group'):
            keep = 0 if op == 'cp.async.wait_all' else v(0)
            groups = pending[t]
            if op == 'cp.async.wait_all':
                land, pending[t] = groups, [[]]
            else:
                committed = len(groups) - 1
                n = max(committed - keep, 0)
                land, pending[t] = groups[:n], groups[n:]
            for grp in land:
                for dsta, data in grp:
                    swrite(dsta, data)
        else:
            raise AssertionError(f'unsupported instruction {op}')
        return True

    def collective(w, op, a):
        lanes = range(32 * w, 32 * w + 32)
        if op.startswith('shfl'):
            # the full-warp butterfly: lane l gets lane (l ^ b)'s value (c = 31: no segments)
            assert op == 'shfl.sync.bfly.b32', op
            assert val(32 * w, a[3]) == 31 and val(32 * w, a[4]) & MASK32 == MASK32, a
            src = [val(t, a[1]) & MASK32 for t in lanes]
            for l in range(32):
                regs[32 * w + l][a[0][1]] = src[l ^ (val(32 * w + l, a[2]) & 31)]
            return
        if op.startswith('ldmatrix'):
            trans = op == 'ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16'
            assert trans or op == 'ldmatrix.sync.aligned.m8n8.x4.shared.b16', op
            rows = [addr(t, a[1]) for t in lanes]

            def el(j, r, c):
                return int.from_bytes(sread(rows[8 * j + r], 16)[2 * c:2 * c + 2], 'little')
            for j, dreg in enumerate(a[0][1]):
                for l in range(32):
                    g, q = l >> 2, l & 3
                    if trans:  # lane gets column g, rows 2q, 2q+1 of the stored matrix
                        lo, hi = el(j, 2 * q, g), el(j, 2 * q + 1, g)
                    else:  # lane gets row g, columns 2q, 2q+1
                        lo, hi = el(j, g, 2 * q), el(j, g, 2 * q + 1)
                    regs[32 * w + l][dreg] = lo | (hi << 16)
            return
        assert op == 'mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32', op
        d, fa, fb, fc = (x[1] for x in a)
        A = [[None] * 16 for _ in range(16)]
        B = [[None] * 8 for _ in range(16)]
        C = [[None] * 8 for _ in range(16)]
        for l in range(32):
            t = 32 * w + l
            g, q = l >> 2, l & 3
            for i, r_ in enumerate(fa):
                x = rd(t, r_)
                row, col = g + 8 * (i & 1), 2 * q + 8 * (i >> 1)
                A[row][col], A[row][col + 1] = bf2f(x), bf2f(x >> 16)
            for i, r_ in enumerate(fb):
                x = rd(t, r_)
                B[2 * q + 8 * i][g], B[2 * q + 8 * i + 1][g] = bf2f(x), bf2f(x >> 16)
            for i, r_ in enumerate(fc):
                C[g + 8 * (i >> 1)][2 * q + (i & 1)] = b2f(rd(t, r_))
        for l in range(32):
            t = 32 * w + l
            g, q = l >> 2, l & 3
            for i, r_ in enumerate(d):
                row, col = g + 8 * (i >> 1), 2 * q + (i & 1)
                s = C[row][col] + sum(A[row][p] * B[p][col] for p in range(16))
                regs[t][r_] = f32r(s)

    # One warp at a time, as far as it can go (to a bar.sync or the end), in a random warp order
    # each round: the largest skew between warps, so a missing barrier shows.
    warps = list(range(nthreads // 32))
    while True:
        rng.shuffle(warps)
        for w in warps:
            lanes = range(32 * w, 32 * w + 32)
            while True:
                for t in lanes:
                    while not done[t] and step(t):
                        pass
                pcs = {pc[t] for t in lanes if not done[t]}
                if not pcs:
                    break
                if any(e.insts[p][1].startswith(COLLECTIVE) for p in pcs):
                    if len(pcs) != 1 or any(done[t] for t in lanes):
                        raise Deadlock(f'{e.name}: warp {w} split over {sorted(pcs)} at a collective')
                    p = pcs.pop()
                    g, op, a = e.insts[p]
                    assert g is None
                    collective(w, op, a)
                    for t in lanes:
                        pc[t] += 1
                    continue
                break
        if all(done):
            return
        live = [t for t in range(nthreads) if not done[t]]
        pcs = {pc[t] for t in live}
        if len(live) != nthreads:
            raise Deadlock(f'{e.name}: bar.sync with {nthreads - len(live)} exited threads')
        if len(pcs) != 1 or e.insts[next(iter(pcs))][1] != 'bar.sync':
            raise Deadlock(f'{e.name}: threads wait at different places {sorted(pcs)[:8]}')
        for t in live:
            pc[t] += 1
