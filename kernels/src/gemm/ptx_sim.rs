//! A small interpreter for the PTX subset of `gemm_bf16.ptx` and `gemm_f32.ptx` (tests only), so
//! that the very text the GPU loads runs on the CPU against the oracle.
//!
//! Model: the threads of one block run in lockstep, one instruction at a time (every branch in
//! these kernels is uniform across the block; the interpreter asserts it). Warp-collective
//! instructions (`ldmatrix`, `mma`) act on groups of 32 consecutive threads. Memory accesses are
//! bounds-checked against the buffers handed to the kernel (an access outside every buffer, or a
//! shared access past the block's shared memory, panics). `cp.async` runs in one of two modes:
//! [`Async::Early`] copies at issue (a kernel that overwrites a stage before reading it computes
//! garbage), [`Async::Late`] copies only at the `wait_group` that must cover it (a kernel that reads
//! a stage before waiting for it computes garbage). Shared memory starts filled with NaN bit
//! patterns so stale reads show. `mma` sums its 16 products and the accumulator in f64 and rounds
//! once to f32 (the hardware's internal order differs; the oracle tolerance covers both).
//!
//! Not modelled: timing, divergence, barriers (lockstep makes every `bar.sync` trivially
//! satisfied), caches. So this checks indexing, predicates, edges, fragment plumbing and the
//! pipeline's copy/wait order, not synchronisation between warps.

use std::collections::HashMap;

/// When `cp.async` copies land in shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Async {
    Early,
    Late,
}

#[derive(Clone, Debug)]
enum Opnd {
    Reg(usize),
    Imm(i64),
    Special(&'static str),
    Sym(String),
    Mem(Box<Opnd>, i64),
    Vec(Vec<usize>),
    Label(String),
}

#[derive(Clone, Debug)]
struct Inst {
    guard: Option<(bool, usize)>,
    op: String,
    args: Vec<Opnd>,
}

/// One parsed entry.
pub struct Kernel {
    params: Vec<String>,
    insts: Vec<Inst>,
    labels: HashMap<String, usize>,
    nregs: usize,
    /// Static shared arrays of the module: name -> byte offset.
    shared_syms: HashMap<String, u64>,
    static_shared: u64,
}

fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for ch in s.chars() {
        match ch {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            out.push(cur.trim().to_string());
            cur.clear();
        } else {
            cur.push(ch);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

impl Kernel {
    /// Parses entry `name` of the module text `ptx`.
    pub fn parse(ptx: &str, name: &str) -> Kernel {
        let lines: Vec<String> = ptx
            .lines()
            .map(|l| l.split("//").next().unwrap().trim().to_string())
            .collect();
        let mut shared_syms = HashMap::new();
        let mut static_shared = 0u64;
        for l in &lines {
            if let Some(rest) = l.strip_prefix(".shared ") {
                // `.shared .align A .b8 NAME[SIZE];`
                let toks: Vec<&str> = rest.split_whitespace().collect();
                let align: u64 = toks[1].parse().unwrap();
                let decl = toks[3].trim_end_matches(';');
                let (sym, size) = decl.split_once('[').unwrap();
                let size: u64 = size.trim_end_matches(']').parse().unwrap();
                static_shared = static_shared.next_multiple_of(align);
                shared_syms.insert(sym.to_string(), static_shared);
                static_shared += size;
            } else if let Some(rest) = l.strip_prefix(".extern .shared ") {
                let decl = rest.split_whitespace().last().unwrap();
                let sym = decl.split('[').next().unwrap();
                shared_syms.insert(sym.to_string(), u64::MAX); // dynamic: placed after the static part
            }
        }
        let start = lines
            .iter()
            .position(|l| l.starts_with(&format!(".visible .entry {name}(")))
            .unwrap_or_else(|| panic!("no entry {name}"));
        let mut params = Vec::new();
        let mut i = start + 1;
        while lines[i] != ")" {
            let p = lines[i].trim_end_matches(',');
            params.push(p.split_whitespace().last().unwrap().to_string());
            i += 1;
        }
        while lines[i] != "{" {
            i += 1;
        }
        i += 1;
        let mut regs: HashMap<String, usize> = HashMap::new();
        let mut insts = Vec::new();
        let mut labels = HashMap::new();
        while lines[i] != "}" {
            let l = lines[i].trim_end_matches(';').trim().to_string();
            i += 1;
            if l.is_empty() {
                continue;
            }
            if let Some(rest) = l.strip_prefix(".reg ") {
                // `.reg .b32 %r<128>;`
                let decl = rest.split_whitespace().last().unwrap();
                let (prefix, n) = decl.split_once('<').unwrap();
                let n: usize = n.trim_end_matches('>').parse().unwrap();
                for k in 0..n {
                    let id = regs.len();
                    regs.insert(format!("{prefix}{k}"), id);
                }
                continue;
            }
            if let Some(label) = l.strip_suffix(':') {
                labels.insert(label.to_string(), insts.len());
                continue;
            }
            let (guard, body) = if let Some(rest) = l.strip_prefix('@') {
                let (g, b) = rest.split_once(char::is_whitespace).unwrap();
                let (neg, g) = match g.strip_prefix('!') {
                    Some(g) => (true, g),
                    None => (false, g),
                };
                (Some((neg, regs[g])), b.trim().to_string())
            } else {
                (None, l.clone())
            };
            let (op, rest) = match body.split_once(char::is_whitespace) {
                Some((o, r)) => (o.to_string(), r.trim().to_string()),
                None => (body.clone(), String::new()),
            };
            let parse_simple = |s: &str| -> Opnd {
                if let Some(&r) = regs.get(s) {
                    Opnd::Reg(r)
                } else if let Some(sp) = ["%tid.x", "%ctaid.x", "%ctaid.y", "%ctaid.z"]
                    .into_iter()
                    .find(|&sp| sp == s)
                {
                    Opnd::Special(sp)
                } else if let Some(hex) = s.strip_prefix("0f") {
                    Opnd::Imm(i64::from(u32::from_str_radix(hex, 16).unwrap()))
                } else if let Ok(v) = s.parse::<i64>() {
                    Opnd::Imm(v)
                } else if op == "bra" {
                    Opnd::Label(s.to_string())
                } else {
                    Opnd::Sym(s.to_string())
                }
            };
            let args = split_top(&rest)
                .into_iter()
                .map(|a| {
                    if let Some(v) = a.strip_prefix('{') {
                        let v = v.trim_end_matches('}');
                        Opnd::Vec(v.split(',').map(|r| regs[r.trim()]).collect())
                    } else if let Some(m) = a.strip_prefix('[') {
                        let m = m.trim_end_matches(']');
                        let (base, off) = match m.split_once('+') {
                            Some((b, o)) => (b, o.parse().unwrap()),
                            None => (m, 0),
                        };
                        Opnd::Mem(Box::new(parse_simple(base)), off)
                    } else {
                        parse_simple(&a)
                    }
                })
                .collect();
            insts.push(Inst { guard, op, args });
        }
        Kernel {
            params,
            insts,
            labels,
            nregs: regs.len(),
            shared_syms,
            static_shared,
        }
    }
}

/// Device memory: disjoint buffers at fixed addresses.
pub struct Global {
    bufs: Vec<(u64, Vec<u8>)>,
}

impl Global {
    pub fn new() -> Global {
        Global { bufs: Vec::new() }
    }

    /// Places `bytes` at a fresh 256-aligned address (with a gap after the previous buffer).
    pub fn alloc(&mut self, bytes: Vec<u8>) -> u64 {
        let addr = self.bufs.last().map_or(1 << 20, |(a, b)| {
            (a + b.len() as u64 + 4096).next_multiple_of(256)
        });
        self.bufs.push((addr, bytes));
        addr
    }

    pub fn bytes(&self, addr: u64) -> &[u8] {
        &self.bufs.iter().find(|(a, _)| *a == addr).unwrap().1
    }

    fn slot(&mut self, addr: u64, len: u64) -> &mut [u8] {
        for (a, b) in &mut self.bufs {
            if addr >= *a && addr + len <= *a + b.len() as u64 {
                let o = (addr - *a) as usize;
                return &mut b[o..o + len as usize];
            }
        }
        panic!("global access of {len} bytes at {addr:#x} outside every buffer");
    }
}

impl Default for Global {
    fn default() -> Self {
        Self::new()
    }
}

struct Copy {
    dst: usize,
    src: u64,
    size: usize,
}

/// f32 bits -> bf16 bits, round to nearest even (no NaN reaches here in the tests).
fn bf16_rne(x: u32) -> u16 {
    (x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16) as u16
}

fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Runs `kernel` over `grid` blocks of `threads` threads with `dyn_smem` bytes of dynamic shared
/// memory; `params` in the entry's order (pointers as addresses from [`Global::alloc`]).
pub fn run(
    k: &Kernel,
    grid: (u32, u32),
    threads: usize,
    dyn_smem: usize,
    params: &[u64],
    mem: &mut Global,
    mode: Async,
) {
    assert_eq!(params.len(), k.params.len(), "parameter count");
    let pmap: HashMap<&str, u64> = k
        .params
        .iter()
        .map(String::as_str)
        .zip(params.iter().copied())
        .collect();
    let dyn_base = k.static_shared.next_multiple_of(128);
    let smem_len = dyn_base as usize + dyn_smem;
    for by in 0..grid.1 {
        for bx in 0..grid.0 {
            let mut regs = vec![0u64; k.nregs * threads];
            // 0x7FC0 bf16 / 0x7FC07FC0 f32: NaN, so a read of never-written shared memory shows.
            let mut smem: Vec<u8> = [0xC0u8, 0x7F].repeat(smem_len / 2);
            let mut pending: Vec<Vec<Vec<Copy>>> = (0..threads).map(|_| vec![Vec::new()]).collect();
            let mut pc = 0usize;
            let r = |regs: &Vec<u64>, id: usize, t: usize| regs[id * threads + t];
            loop {
                let inst = &k.insts[pc];
                pc += 1;
                let active: Vec<bool> = (0..threads)
                    .map(|t| match inst.guard {
                        None => true,
                        Some((neg, p)) => (r(&regs, p, t) != 0) != neg,
                    })
                    .collect();
                let val = |regs: &Vec<u64>, o: &Opnd, t: usize| -> u64 {
                    match o {
                        Opnd::Reg(id) => r(regs, *id, t),
                        Opnd::Imm(v) => *v as u64,
                        Opnd::Special("%tid.x") => t as u64,
                        Opnd::Special("%ctaid.x") => u64::from(bx),
                        Opnd::Special("%ctaid.y") => u64::from(by),
                        // One product per launch here (batched launches: ptxsim and the GPU tests).
                        Opnd::Special("%ctaid.z") => 0,
                        Opnd::Sym(s) => match k.shared_syms.get(s) {
                            Some(&u64::MAX) => dyn_base,
                            Some(&off) => off,
                            None => panic!("unknown symbol {s}"),
                        },
                        _ => panic!("not a value: {o:?}"),
                    }
                };
                let addr = |regs: &Vec<u64>, o: &Opnd, t: usize| -> u64 {
                    match o {
                        Opnd::Mem(b, off) => val(regs, b, t).wrapping_add(*off as u64),
                        _ => panic!("not an address: {o:?}"),
                    }
                };
                let dst = |o: &Opnd| match o {
                    Opnd::Reg(id) => *id,
                    _ => panic!("not a register: {o:?}"),
                };
                let op = inst.op.as_str();
                let a = &inst.args;
                match op {
                    "ret" => break,
                    "bra" => {
                        let taken = active[0];
                        assert!(
                            active.iter().all(|&x| x == taken),
                            "divergent branch at {pc}"
                        );
                        if taken {
                            let Opnd::Label(l) = &a[0] else { panic!() };
                            pc = k.labels[l];
                        }
                        continue;
                    }
                    _ => {}
                }
                if op.starts_with("ldmatrix") || op.starts_with("mma") {
                    assert!(inst.guard.is_none());
                    for w in 0..threads / 32 {
                        let lanes = w * 32..w * 32 + 32;
                        if op.starts_with("ldmatrix") {
                            let trans = op.contains(".trans");
                            let Opnd::Vec(d) = &a[0] else { panic!() };
                            let rows: Vec<usize> = lanes
                                .clone()
                                .map(|t| addr(&regs, &a[1], t) as usize)
                                .collect();
                            let el = |j: usize, row: usize, col: usize| -> u16 {
                                let p = rows[8 * j + row];
                                assert!(
                                    p.is_multiple_of(16) && p + 16 <= smem_len,
                                    "ldmatrix row {p:#x}"
                                );
                                u16::from_le_bytes([smem[p + 2 * col], smem[p + 2 * col + 1]])
                            };
                            for l in 0..32 {
                                let (g, tq) = (l >> 2, l & 3);
                                for (j, &dj) in d.iter().enumerate() {
                                    let (lo, hi) = if trans {
                                        (el(j, 2 * tq, g), el(j, 2 * tq + 1, g))
                                    } else {
                                        (el(j, g, 2 * tq), el(j, g, 2 * tq + 1))
                                    };
                                    regs[dj * threads + w * 32 + l] =
                                        u64::from(lo) | (u64::from(hi) << 16);
                                }
                            }
                        } else {
                            let (Opnd::Vec(d), Opnd::Vec(fa), Opnd::Vec(fb), Opnd::Vec(c)) =
                                (&a[0], &a[1], &a[2], &a[3])
                            else {
                                panic!()
                            };
                            let mut am = [[0f64; 16]; 16];
                            let mut bm = [[0f64; 8]; 16];
                            let mut cm = [[0f64; 8]; 16];
                            for l in 0..32 {
                                let t = w * 32 + l;
                                let (g, tq) = (l >> 2, l & 3);
                                for (q, &ra) in fa.iter().enumerate() {
                                    let v = r(&regs, ra, t);
                                    let (row, col) = (g + 8 * (q & 1), 2 * tq + 8 * (q >> 1));
                                    am[row][col] = f64::from(bf16_to_f32(v as u16));
                                    am[row][col + 1] = f64::from(bf16_to_f32((v >> 16) as u16));
                                }
                                for (q, &rb) in fb.iter().enumerate() {
                                    let v = r(&regs, rb, t);
                                    bm[2 * tq + 8 * q][g] = f64::from(bf16_to_f32(v as u16));
                                    bm[2 * tq + 8 * q + 1][g] =
                                        f64::from(bf16_to_f32((v >> 16) as u16));
                                }
                                for (q, &rc) in c.iter().enumerate() {
                                    let v = f32::from_bits(r(&regs, rc, t) as u32);
                                    cm[g + 8 * (q >> 1)][2 * tq + (q & 1)] = f64::from(v);
                                }
                            }
                            for l in 0..32 {
                                let t = w * 32 + l;
                                let (g, tq) = (l >> 2, l & 3);
                                for (q, &rd) in d.iter().enumerate() {
                                    let (row, col) = (g + 8 * (q >> 1), 2 * tq + (q & 1));
                                    let s: f64 = cm[row][col]
                                        + (0..16).map(|p| am[row][p] * bm[p][col]).sum::<f64>();
                                    regs[rd * threads + t] = u64::from((s as f32).to_bits());
                                }
                            }
                        }
                    }
                    continue;
                }
                for t in 0..threads {
                    if !active[t] {
                        continue;
                    }
                    if op == "st.global.v2.f32" {
                        let p = addr(&regs, &a[0], t);
                        assert!(p.is_multiple_of(8), "misaligned st.global.v2.f32 at {p:#x}");
                        let Opnd::Vec(src) = &a[1] else { panic!() };
                        let lo = (r(&regs, src[0], t) as u32).to_le_bytes();
                        let hi = (r(&regs, src[1], t) as u32).to_le_bytes();
                        let slot = mem.slot(p, 8);
                        slot[..4].copy_from_slice(&lo);
                        slot[4..].copy_from_slice(&hi);
                        continue;
                    }
                    if op == "ld.shared.v4.f32" {
                        let p = addr(&regs, &a[1], t) as usize;
                        assert!(
                            p.is_multiple_of(16) && p + 16 <= smem_len,
                            "ld.shared.v4 {p:#x}"
                        );
                        let Opnd::Vec(d) = &a[0] else { panic!() };
                        for (q, &rq) in d.iter().enumerate() {
                            let b = &smem[p + 4 * q..p + 4 * q + 4];
                            regs[rq * threads + t] =
                                u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                        }
                        continue;
                    }
                    let v = |i: usize| val(&regs, &a[i], t);
                    let m32 = |x: u64| x & 0xFFFF_FFFF;
                    let s32 = |x: u64| x as u32 as i32;
                    let f = |i: usize| f32::from_bits(v(i) as u32);
                    let out: Option<u64> = match op {
                        "ld.param.u64" | "ld.param.u32" => {
                            let Opnd::Mem(b, 0) = &a[1] else { panic!() };
                            let Opnd::Sym(name) = &**b else { panic!() };
                            Some(pmap[name.as_str()])
                        }
                        "cvta.to.global.u64" | "mov.u32" | "mov.b64" | "mov.f32" => Some(v(1)),
                        "add.u32" => Some(m32(v(1).wrapping_add(v(2)))),
                        "sub.u32" => Some(m32(v(1).wrapping_sub(v(2)))),
                        "mul.lo.u32" => Some(m32(v(1).wrapping_mul(v(2)))),
                        "mad.lo.u32" => Some(m32(v(1).wrapping_mul(v(2)).wrapping_add(v(3)))),
                        "mul.wide.u32" => Some(m32(v(1)) * m32(v(2))),
                        "add.u64" => Some(v(1).wrapping_add(v(2))),
                        "shl.b32" => Some(m32(v(1) << v(2))),
                        "shl.b64" => Some(v(1) << v(2)),
                        "shr.u32" => Some(m32(v(1)) >> v(2)),
                        "and.b32" | "and.pred" => Some(v(1) & v(2)),
                        "xor.b32" => Some(v(1) ^ v(2)),
                        "min.u32" => Some(m32(v(1)).min(m32(v(2)))),
                        "min.s32" => Some(m32(s32(v(1)).min(s32(v(2))) as u64)),
                        "max.s32" => Some(m32(s32(v(1)).max(s32(v(2))) as u64)),
                        "div.u32" => Some(m32(v(1)) / m32(v(2))),
                        "rem.u32" => Some(m32(v(1)) % m32(v(2))),
                        "cvt.u64.u32" => Some(m32(v(1))),
                        "selp.u32" | "selp.b32" | "selp.b64" => {
                            Some(if v(3) != 0 { v(1) } else { v(2) })
                        }
                        "fma.rn.f32" => Some(u64::from(f(1).mul_add(f(2), f(3)).to_bits())),
                        "cvt.rn.bf16.f32" => Some(u64::from(bf16_rne(v(1) as u32))),
                        // d = {bf16(a) in the upper half, bf16(b) in the lower half}
                        "cvt.rn.bf16x2.f32" => Some(u64::from(
                            (u32::from(bf16_rne(v(1) as u32)) << 16)
                                | u32::from(bf16_rne(v(2) as u32)),
                        )),
                        "not.pred" => Some(u64::from(v(1) == 0)),
                        "st.global.f32" | "st.global.b32" => {
                            let p = addr(&regs, &a[0], t);
                            assert!(p.is_multiple_of(4), "misaligned {op} at {p:#x}");
                            mem.slot(p, 4).copy_from_slice(&(v(1) as u32).to_le_bytes());
                            None
                        }
                        "st.global.b16" => {
                            let p = addr(&regs, &a[0], t);
                            assert!(p.is_multiple_of(2), "misaligned {op} at {p:#x}");
                            mem.slot(p, 2).copy_from_slice(&(v(1) as u16).to_le_bytes());
                            None
                        }
                        "ld.global.f32" => {
                            let p = addr(&regs, &a[1], t);
                            assert!(p.is_multiple_of(4), "misaligned {op} at {p:#x}");
                            let s = mem.slot(p, 4);
                            Some(u64::from(u32::from_le_bytes([s[0], s[1], s[2], s[3]])))
                        }
                        "st.shared.f32" => {
                            let p = addr(&regs, &a[0], t) as usize;
                            assert!(p.is_multiple_of(4) && p + 4 <= smem_len, "st.shared {p:#x}");
                            smem[p..p + 4].copy_from_slice(&(v(1) as u32).to_le_bytes());
                            None
                        }
                        "ld.shared.f32" => {
                            let p = addr(&regs, &a[1], t) as usize;
                            assert!(p.is_multiple_of(4) && p + 4 <= smem_len, "ld.shared {p:#x}");
                            let x = [smem[p], smem[p + 1], smem[p + 2], smem[p + 3]];
                            Some(u64::from(u32::from_le_bytes(x)))
                        }
                        "cp.async.cg.shared.global" => {
                            let d = addr(&regs, &a[0], t) as usize;
                            let src = addr(&regs, &a[1], t);
                            assert_eq!(v(2), 16);
                            let size = v(3) as usize;
                            assert!(
                                d.is_multiple_of(16) && d + 16 <= smem_len,
                                "cp.async dst {d:#x}"
                            );
                            assert!(
                                size <= 16 && src % 16 == 0,
                                "cp.async src {src:#x} size {size}"
                            );
                            // Even a zero-byte copy must name a valid address: the hardware's
                            // behaviour for a wild source pointer is not something to rely on.
                            mem.slot(src, size.max(1) as u64);
                            let c = Copy { dst: d, src, size };
                            match mode {
                                Async::Early => apply(&c, &mut smem, mem),
                                Async::Late => pending[t].last_mut().unwrap().push(c),
                            }
                            None
                        }
                        "cp.async.commit_group" => {
                            pending[t].push(Vec::new());
                            None
                        }
                        "cp.async.wait_group" | "cp.async.wait_all" => {
                            // pending[t]: committed groups, oldest first, then the open one.
                            // wait_group n completes all but the newest n committed groups;
                            // wait_all completes everything, the open group included.
                            let all = op == "cp.async.wait_all";
                            let keep = if all { 0 } else { v(0) as usize };
                            let committed = pending[t].len() - 1;
                            let done = committed.saturating_sub(keep);
                            let mut groups: Vec<Vec<Copy>> = pending[t].drain(..done).collect();
                            if all {
                                groups.append(&mut pending[t]);
                                pending[t].push(Vec::new());
                            }
                            for c in groups.iter().flatten() {
                                apply(c, &mut smem, mem);
                            }
                            None
                        }
                        "bar.sync" => None,
                        _ => {
                            let rest = op
                                .strip_prefix("setp.")
                                .unwrap_or_else(|| panic!("unsupported instruction {op}"));
                            let (cmp, ty) = rest.split_once('.').unwrap();
                            let (x, y) = (m32(v(1)), m32(v(2)));
                            let ord = if ty == "s32" {
                                s32(x).cmp(&s32(y))
                            } else {
                                x.cmp(&y)
                            };
                            use std::cmp::Ordering::{Equal, Greater, Less};
                            Some(u64::from(match cmp {
                                "lt" => ord == Less,
                                "le" => ord != Greater,
                                "gt" => ord == Greater,
                                "ge" => ord != Less,
                                "eq" => ord == Equal,
                                "ne" => ord != Equal,
                                _ => panic!("setp {cmp}"),
                            }))
                        }
                    };
                    if let Some(x) = out {
                        regs[dst(&a[0]) * threads + t] = x;
                    }
                }
            }
        }
    }
}

fn apply(c: &Copy, smem: &mut [u8], mem: &mut Global) {
    let mut chunk = [0u8; 16];
    if c.size > 0 {
        chunk[..c.size].copy_from_slice(mem.slot(c.src, c.size as u64));
    }
    smem[c.dst..c.dst + 16].copy_from_slice(&chunk);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values k/16 with |k| <= 16: exact in bf16, and every sum of products the
    /// tests form is exact in f32, so the kernels must match the oracle bit for bit.
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
        v.iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect()
    }

    fn bytes_f32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Exact in bf16 too (the bf16 output buffer starts with it).
    const SENTINEL: f32 = 1232.0;

    #[derive(Clone, Copy, Debug)]
    enum Layout {
        Nt,
        Nn,
        Tn,
    }

    #[allow(clippy::too_many_arguments)]
    fn bf16_case(
        layout: Layout,
        bf16_out: bool,
        wide: bool,
        (m, n, k): (usize, usize, usize),
        (pa, pb, pc): (usize, usize, usize),
        mode: Async,
    ) {
        let name = format!(
            "gemm_bf16_{}_{}{}",
            format!("{layout:?}").to_lowercase(),
            if bf16_out { "bf16" } else { "f32" },
            if wide { "_wide" } else { "" }
        );
        let kern = Kernel::parse(super::super::PTX_BF16, &name);
        let ((ar, ac), (br, bc)) = match layout {
            Layout::Nt => ((m, k), (n, k)),
            Layout::Nn => ((m, k), (k, n)),
            Layout::Tn => ((k, m), (k, n)),
        };
        let (lda, ldb, ldc) = (
            (ac + pa).next_multiple_of(8),
            (bc + pb).next_multiple_of(8),
            n + pc,
        );
        let a = values(ar * lda, 1 + m as u64);
        let b = values(br * ldb, 2 + n as u64);
        let ((a_rs, a_cs), (b_rs, b_cs)) = match layout {
            Layout::Nt => ((lda, 1), (1, ldb)),
            Layout::Nn => ((lda, 1), (ldb, 1)),
            Layout::Tn => ((1, lda), (ldb, 1)),
        };
        let want = crate::gemm::gemm_reference_f32(m, n, k, &a, a_rs, a_cs, &b, b_rs, b_cs);
        let mut mem = Global::new();
        let pa_ = mem.alloc(bytes_bf16(&a));
        let pb_ = mem.alloc(bytes_bf16(&b));
        let c0 = vec![SENTINEL; m * ldc];
        let pc_ = mem.alloc(if bf16_out {
            bytes_bf16(&c0)
        } else {
            bytes_f32(&c0)
        });
        let bn = if wide { 256 } else { 128 };
        let blocks = (m.div_ceil(128) * n.div_ceil(bn)) as u32;
        let params = [
            pa_, pb_, pc_, m as u64, n as u64, k as u64, lda as u64, ldb as u64, ldc as u64,
        ];
        run(
            &kern,
            (blocks, 1),
            bn,
            4 * (8192 + 64 * bn),
            &params,
            &mut mem,
            mode,
        );
        let c = mem.bytes(pc_);
        for i in 0..m {
            for j in 0..ldc {
                let got = if bf16_out {
                    f32::from_bits(
                        u32::from(u16::from_le_bytes([
                            c[2 * (i * ldc + j)],
                            c[2 * (i * ldc + j) + 1],
                        ])) << 16,
                    )
                } else {
                    let o = 4 * (i * ldc + j);
                    f32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]])
                };
                let expect = if j < n {
                    want[i * n + j] as f32
                } else {
                    SENTINEL
                };
                // want is exact in f32; rounding it to bf16 (RNE) is what the bf16 output stores.
                let expect = if bf16_out && j < n {
                    let x = expect.to_bits();
                    f32::from_bits((x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16) << 16)
                } else {
                    expect
                };
                assert_eq!(
                    got.to_bits(),
                    expect.to_bits(),
                    "{name} {mode:?} m={m} n={n} k={k} lda={lda} ldb={ldb} ldc={ldc}: C[{i}][{j}] = {got}, want {expect}"
                );
            }
        }
    }

    fn all_bf16(shape: (usize, usize, usize), pads: (usize, usize, usize), layouts: &[Layout]) {
        for &layout in layouts {
            for bf16_out in [false, true] {
                for wide in [false, true] {
                    for mode in [Async::Early, Async::Late] {
                        bf16_case(layout, bf16_out, wide, shape, pads, mode);
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
        bf16_case(
            Layout::Nt,
            false,
            false,
            (1280, 200, 16),
            (0, 0, 0),
            Async::Late,
        );
        bf16_case(
            Layout::Nn,
            false,
            true,
            (1290, 300, 8),
            (0, 0, 0),
            Async::Early,
        );
    }

    fn f32_case(m: usize, n: usize, k: usize, ta: bool, tb: bool, pad: usize) {
        let kern = Kernel::parse(super::super::PTX_F32, "gemm_f32");
        let operand = |rows: usize, cols: usize, t: bool, seed: u64| {
            let (outer, inner) = if t { (cols, rows) } else { (rows, cols) };
            let ld = inner + pad;
            let len = if outer == 0 {
                0
            } else {
                (outer - 1) * ld + inner
            };
            let s = if t { (1, ld) } else { (ld, 1) };
            (values(len, seed), s)
        };
        let (a, (a_rs, a_cs)) = operand(m, k, ta, 5);
        let (b, (b_rs, b_cs)) = operand(k, n, tb, 6);
        let want = crate::gemm::gemm_reference_f32(m, n, k, &a, a_rs, a_cs, &b, b_rs, b_cs);
        let ldc = n + pad;
        let mut mem = Global::new();
        let pa = mem.alloc(bytes_f32(&a));
        let pb = mem.alloc(bytes_f32(&b));
        let pc = mem.alloc(bytes_f32(&vec![SENTINEL; m * ldc]));
        // No batch: nb_inner 1, batch strides 0.
        let sizes = [m, n, k, a_rs, a_cs, b_rs, b_cs, ldc, 1, 0, 0, 0, 0, 0].map(|x| x as u64);
        let params: Vec<u64> = [pa, pb, pc].into_iter().chain(sizes).collect();
        let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32);
        run(&kern, grid, 256, 0, &params, &mut mem, Async::Early);
        let c = mem.bytes(pc);
        for i in 0..m {
            for j in 0..ldc {
                let o = 4 * (i * ldc + j);
                let got = f32::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3]]);
                let expect = if j < n {
                    want[i * n + j] as f32
                } else {
                    SENTINEL
                };
                assert_eq!(
                    got, expect,
                    "gemm_f32 m={m} n={n} k={k} ta={ta} tb={tb}: C[{i}][{j}]"
                );
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
}
