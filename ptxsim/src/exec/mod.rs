//! Error wording matters to the stand-in driver, which maps a fault to a CUDA error code by it:
//! a message with "misaligned" is a misaligned address, one with "out of bounds", "runs past" or
//! "no allocation" an illegal address; anything else a launch failure.
//!
//! Running a kernel: the CTAs one after another, and inside a CTA every thread on its own until it
//! reaches a barrier or a warp-collective instruction. A warp's collective runs once every lane
//! that takes part has arrived; `bar.sync` releases once every thread still running has arrived.

mod alu;
pub(crate) mod op;
mod warp;

use crate::SimError;
use crate::memory::GlobalMemory;
use crate::parse::{AddrBase, Function, Imm, Inst, Module, Operand, Special, Sym};
use crate::profile::LaunchProfile;
use alu::*;
use op::{AtomOp, Op, Space, Ty};

/// Grid and block geometry of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared: u32,
}

/// Runs `entry` of `module` to completion. `params[i]` holds the bytes of the entry's i-th
/// parameter.
pub fn launch(mem: &mut GlobalMemory, module: &Module, entry: &str, dims: LaunchDims, params: &[&[u8]]) -> Result<(), SimError> {
    launch_with(mem, module, entry, dims, params, LaunchOptions::default())
}

/// How [`launch_with`] runs a kernel beyond what [`launch`] does.
#[derive(Default)]
pub struct LaunchOptions<'a> {
    /// Count the memory traffic and the instruction mix of the launch here (see
    /// [`crate::profile`]).
    pub profile: Option<&'a mut LaunchProfile>,
    /// `cp.async` data lands in shared memory at issue instead of at the `wait_group` /
    /// `wait_all` that covers it. Late (the default) shows a kernel that reads a stage before
    /// waiting for it; early shows one that overwrites a stage other warps may still be reading.
    /// A pipelined kernel should pass in both modes.
    pub early_cp_async: bool,
}

/// [`launch`] with [`LaunchOptions`].
pub fn launch_with(
    mem: &mut GlobalMemory,
    module: &Module,
    entry: &str,
    dims: LaunchDims,
    params: &[&[u8]],
    options: LaunchOptions,
) -> Result<(), SimError> {
    let LaunchOptions { mut profile, early_cp_async } = options;
    let &fi = module.by_name.get(entry).ok_or_else(|| SimError::Launch(format!("no kernel {entry} in the module")))?;
    let func = &module.funcs[fi];
    if !func.is_entry {
        return Err(SimError::Launch(format!("{entry} is a .func, not an .entry")));
    }
    if params.len() != func.formal_params.len() {
        return Err(SimError::Launch(format!("{entry}: {} parameters given, the kernel has {}", params.len(), func.formal_params.len())));
    }
    for (i, (p, &slot)) in params.iter().zip(&func.formal_params).enumerate() {
        if p.len() != func.params[slot].bytes {
            return Err(SimError::Launch(format!(
                "{entry}: parameter {i} has {} bytes, the kernel declares {}",
                p.len(),
                func.params[slot].bytes
            )));
        }
    }
    let threads = dims.block.iter().map(|&d| d as u64).product::<u64>();
    if threads == 0 || threads > 1024 || dims.grid.contains(&0) {
        return Err(SimError::Launch(format!("{entry}: bad geometry grid {:?} block {:?}", dims.grid, dims.block)));
    }
    let shared_bytes = module.dyn_shared_base() + dims.dynamic_shared as u64;
    // One set of threads and one shared buffer, reset for every block: a grid of many small
    // blocks would otherwise spend its time in the allocator.
    let mut threads = Vec::with_capacity(threads as usize);
    let mut shared = Vec::with_capacity(shared_bytes as usize);
    for z in 0..dims.grid[2] {
        for y in 0..dims.grid[1] {
            for x in 0..dims.grid[0] {
                // Shared memory starts as NaN bit patterns (its contents are undefined on a
                // GPU): a read of a never-written element shows in the results.
                shared.clear();
                shared.resize(shared_bytes as usize, 0xff);
                let mut cta =
                    Cta { module, mem: &mut *mem, shared, dims, ctaid: [x, y, z], profile: profile.as_deref_mut(), early_cp_async };
                let result = cta.run(fi, params, &mut threads);
                shared = cta.shared;
                result.map_err(|msg| SimError::Exec { kernel: entry.to_string(), msg: format!("block ({x},{y},{z}): {msg}") })?;
            }
        }
    }
    Ok(())
}

struct Frame {
    func: usize,
    pc: usize,
    regs: Vec<u64>,
    params: Vec<Vec<u8>>,
    /// The caller's parameter slot that receives this call's return value.
    ret_to: Option<usize>,
}

impl Frame {
    fn new(f: &Function, func: usize, ret_to: Option<usize>) -> Frame {
        Frame { func, pc: 0, regs: vec![0; f.regs], params: f.params.iter().map(|p| vec![0; p.bytes]).collect(), ret_to }
    }

    /// Makes a finished frame the fresh frame of a call to `f` (its buffers kept).
    fn reuse(&mut self, f: &Function, func: usize, ret_to: Option<usize>) {
        self.func = func;
        self.pc = 0;
        self.ret_to = ret_to;
        self.regs.clear();
        self.regs.resize(f.regs, 0);
        self.params.resize_with(f.params.len(), Vec::new);
        for (buf, p) in self.params.iter_mut().zip(&f.params) {
            buf.clear();
            buf.resize(p.bytes, 0);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ready,
    /// Waiting at `bar.sync` (its pc already past the barrier).
    Barrier,
    /// Waiting at a warp-collective instruction (pc on it).
    Collective,
    Exited,
}

pub(crate) struct Thread {
    frames: Vec<Frame>,
    /// Frames of finished calls, kept so that a call allocates nothing.
    spare_frames: Vec<Frame>,
    status: Status,
    tid: [u32; 3],
    linear: u32,
    /// Instructions executed in this block (for the profile's warp instruction count).
    executed: u64,
    /// `cp.async` copies issued since the last `commit_group`.
    open_copies: Vec<AsyncCopy>,
    /// Committed groups not yet landed, oldest first.
    copy_groups: std::collections::VecDeque<Vec<AsyncCopy>>,
}

/// One `cp.async` in flight: the bytes read at issue and where they land in shared memory.
struct AsyncCopy {
    dst: u64,
    bytes: [u8; 16],
    len: usize,
}

impl Thread {
    fn frame(&self) -> &Frame {
        self.frames.last().expect("a running thread has a frame")
    }
    fn frame_mut(&mut self) -> &mut Frame {
        self.frames.last_mut().expect("a running thread has a frame")
    }
}

pub(crate) struct Cta<'a> {
    module: &'a Module,
    mem: &'a mut GlobalMemory,
    shared: Vec<u8>,
    dims: LaunchDims,
    ctaid: [u32; 3],
    profile: Option<&'a mut LaunchProfile>,
    early_cp_async: bool,
}

impl Cta<'_> {
    /// Runs this block on `threads` (created on the first block, reset for the later ones).
    fn run(&mut self, entry: usize, params: &[&[u8]], threads: &mut Vec<Thread>) -> Result<(), String> {
        let f = &self.module.funcs[entry];
        let [bx, by, bz] = self.dims.block;
        if threads.is_empty() {
            for z in 0..bz {
                for y in 0..by {
                    for x in 0..bx {
                        threads.push(Thread {
                            frames: vec![Frame::new(f, entry, None)],
                            spare_frames: Vec::new(),
                            status: Status::Ready,
                            tid: [x, y, z],
                            linear: threads.len() as u32,
                            open_copies: Vec::new(),
                            copy_groups: std::collections::VecDeque::new(),
                            executed: 0,
                        });
                    }
                }
            }
        }
        for t in threads.iter_mut() {
            while t.frames.len() > 1 {
                let fr = t.frames.pop().expect("frame");
                t.spare_frames.push(fr);
            }
            let fr = &mut t.frames[0];
            fr.pc = 0;
            fr.regs.fill(0);
            for (p, &slot) in params.iter().zip(&f.formal_params) {
                fr.params[slot].copy_from_slice(p);
            }
            t.status = Status::Ready;
            t.open_copies.clear();
            t.copy_groups.clear();
            t.executed = 0;
        }
        // Warps run in a new random order between barriers (seeded per block, so a run is
        // reproducible): a missing barrier shows as a read of NaN-filled or stale shared memory.
        let mut order: Vec<usize> = (0..threads.len().div_ceil(32)).collect();
        let mut rng = self.seed();
        loop {
            shuffle(&mut order, &mut rng);
            for &w in &order {
                let lanes = w * 32..((w + 1) * 32).min(threads.len());
                loop {
                    for t in &mut threads[lanes.clone()] {
                        while t.status == Status::Ready {
                            self.step(t).map_err(|e| self.locate(t, e))?;
                        }
                    }
                    let warp = &mut threads[lanes.clone()];
                    if !warp.iter().any(|t| t.status == Status::Collective) {
                        break;
                    }
                    warp::collective(self, warp)?;
                }
            }
            let waiting = threads.iter().filter(|t| t.status == Status::Barrier).count();
            if let Some(p) = self.profile.as_deref_mut() {
                if waiting == 0 {
                    p.end_block(threads.iter().map(|t| t.executed));
                } else {
                    p.settle();
                }
            }
            if waiting == 0 {
                return Ok(());
            }
            for t in threads.iter_mut() {
                if t.status == Status::Barrier {
                    t.status = Status::Ready;
                }
            }
        }
    }

    fn seed(&self) -> u64 {
        let [x, y, z] = self.ctaid;
        let s = (x as u64) | (y as u64) << 21 | (z as u64) << 42;
        splitmix(s ^ self.dims.grid[0] as u64 ^ splitmix(warp_order_seed()))
    }

    /// Writes the landed copies to shared memory, oldest first.
    fn land(&mut self, copies: Vec<AsyncCopy>) -> Result<(), String> {
        for c in copies {
            let r = span(self.shared.len(), c.dst, c.len, "cp.async to shared")?;
            self.shared[r].copy_from_slice(&c.bytes[..c.len]);
        }
        Ok(())
    }

    /// Adds the thread, function and PTX line to an error message.
    fn locate(&self, t: &Thread, msg: String) -> String {
        let fr = t.frame();
        let f = &self.module.funcs[fr.func];
        let line = f.insts.get(fr.pc).map_or(0, |i| i.line);
        format!("thread ({},{},{}) in {} at PTX line {line}: {msg}", t.tid[0], t.tid[1], t.tid[2], f.name)
    }

    fn special(&self, t: &Thread, s: Special) -> u64 {
        (match s {
            Special::Tid(a) => t.tid[a],
            Special::Ntid(a) => self.dims.block[a],
            Special::Ctaid(a) => self.ctaid[a],
            Special::Nctaid(a) => self.dims.grid[a],
            Special::LaneId => t.linear % 32,
            Special::WarpId => t.linear / 32,
        }) as u64
    }

    /// Reads an operand as type `ty` (bits above the type's width cleared).
    pub(crate) fn get(&self, t: &Thread, o: &Operand, ty: Ty) -> Result<u64, String> {
        let v = match o {
            Operand::Reg(r) => t.frame().regs[*r as usize],
            Operand::Imm(i) => imm_bits(*i, ty),
            Operand::Special(s) => self.special(t, *s),
            Operand::Sym(Sym::Shared(off)) | Operand::Sym(Sym::Const(off)) => *off,
            Operand::Sym(Sym::DynShared) => self.module.dyn_shared_base(),
            other => return Err(format!("cannot read {other:?} as a value")),
        };
        Ok(mask(v, ty))
    }

    pub(crate) fn set(t: &mut Thread, o: &Operand, v: u64) -> Result<(), String> {
        match o {
            Operand::Reg(r) => {
                t.frame_mut().regs[*r as usize] = v;
                Ok(())
            }
            Operand::Sink => Ok(()),
            other => Err(format!("cannot write to {other:?}")),
        }
    }

    /// The space-relative address of an `[base+offset]` operand.
    pub(crate) fn address(&self, t: &Thread, o: &Operand) -> Result<(u64, Option<usize>), String> {
        let Operand::Addr { base, offset } = o else {
            return Err(format!("expected an address, found {o:?}"));
        };
        let (b, slot) = match base {
            AddrBase::Reg(r) => (t.frame().regs[*r as usize], None),
            AddrBase::Sym(Sym::Param(s)) => (0, Some(*s)),
            AddrBase::Sym(Sym::Shared(off)) | AddrBase::Sym(Sym::Const(off)) => (*off, None),
            AddrBase::Sym(Sym::DynShared) => (self.module.dyn_shared_base(), None),
            AddrBase::Abs => (0, None),
        };
        Ok((b.wrapping_add(*offset as u64), slot))
    }

    pub(crate) fn load(&self, t: &Thread, space: Space, addr: u64, slot: Option<usize>, out: &mut [u8]) -> Result<(), String> {
        let n = out.len();
        if !addr.is_multiple_of(n as u64) && space != Space::Param {
            return Err(format!("misaligned {n}-byte load at {addr:#x} ({space:?})"));
        }
        match space {
            Space::Global => self.mem.read(addr, out).map_err(|e| e.to_string()),
            Space::Shared => {
                out.copy_from_slice(&self.shared[span(self.shared.len(), addr, n, "shared load")?]);
                Ok(())
            }
            Space::Const => {
                let bank = &self.module.const_bank;
                out.copy_from_slice(&bank[span(bank.len(), addr, n, "constant load")?]);
                Ok(())
            }
            Space::Param => {
                let p = &t.frame().params[param_slot(slot)?];
                out.copy_from_slice(&p[span(p.len(), addr, n, "parameter load")?]);
                Ok(())
            }
            Space::Local => Err(".local memory is not supported".into()),
        }
    }

    pub(crate) fn store(&mut self, t: &mut Thread, space: Space, addr: u64, slot: Option<usize>, data: &[u8]) -> Result<(), String> {
        let n = data.len();
        if !addr.is_multiple_of(n as u64) && space != Space::Param {
            return Err(format!("misaligned {n}-byte store at {addr:#x} ({space:?})"));
        }
        match space {
            Space::Global => self.mem.write(addr, data).map_err(|e| e.to_string()),
            Space::Shared => {
                let r = span(self.shared.len(), addr, n, "shared store")?;
                self.shared[r].copy_from_slice(data);
                Ok(())
            }
            Space::Param => {
                let p = &mut t.frame_mut().params[param_slot(slot)?];
                let r = span(p.len(), addr, n, "parameter store")?;
                p[r].copy_from_slice(data);
                Ok(())
            }
            Space::Const => Err("store to constant memory".into()),
            Space::Local => Err(".local memory is not supported".into()),
        }
    }

    /// Counts an access in the profile, when there is one.
    fn note_access(&mut self, t: &Thread, space: Space, addr: u64, bytes: usize) {
        if let Some(p) = self.profile.as_deref_mut() {
            let fr = t.frame();
            p.access(self.module, t.linear, fr.func, fr.pc, space, addr, bytes);
        }
    }

    /// Executes the instruction at the thread's pc (or stops the thread at a barrier or a
    /// collective).
    fn step(&mut self, t: &mut Thread) -> Result<(), String> {
        t.executed += 1;
        let module = self.module;
        let fr = t.frame();
        let func: &Function = &module.funcs[fr.func];
        let inst: &Inst = &func.insts[fr.pc];
        if let Some(p) = self.profile.as_deref_mut() {
            p.executed(&inst.op);
        }
        if let Some((p, neg)) = inst.guard {
            let on = (fr.regs[p as usize] & 1 == 1) != neg;
            if !on {
                t.frame_mut().pc += 1;
                return Ok(());
            }
        }
        let a = &inst.args;
        let arg = |i: usize| a.get(i).ok_or_else(|| format!("{:?}: missing operand {i}", inst.op));
        let mut next = t.frame().pc + 1;
        match inst.op {
            Op::Mov(ty) => match (arg(0)?, arg(1)?) {
                // `mov.b64 %rd, {%lo, %hi}`: the first element is the least significant.
                (d, Operand::Vec(parts)) => {
                    let (w, part_ty) = part_width(ty, parts.len())?;
                    let mut v = 0u64;
                    for (i, p) in parts.iter().enumerate() {
                        v |= self.get(t, p, part_ty)? << (i as u32 * w);
                    }
                    Self::set(t, d, v)?;
                }
                (Operand::Vec(parts), src) => {
                    let (w, part_ty) = part_width(ty, parts.len())?;
                    let v = self.get(t, src, ty)?;
                    for (i, p) in parts.iter().enumerate() {
                        Self::set(t, p, mask(v >> (i as u32 * w), part_ty))?;
                    }
                }
                (d, src) => {
                    let v = self.get(t, src, ty)?;
                    Self::set(t, d, v)?;
                }
            },
            Op::Cvta => {
                let v = self.get(t, arg(1)?, Ty::U64)?;
                Self::set(t, arg(0)?, v)?;
            }
            Op::Add(ty)
            | Op::Sub(ty)
            | Op::Min(ty)
            | Op::Max(ty)
            | Op::MinNan(ty)
            | Op::MaxNan(ty)
            | Op::Div(ty)
            | Op::Rem(ty)
            | Op::And(ty)
            | Op::Or(ty)
            | Op::Xor(ty)
            | Op::Copysign(ty) => {
                let x = self.get(t, arg(1)?, ty)?;
                let y = self.get(t, arg(2)?, ty)?;
                let v = binary(inst.op, ty, x, y)?;
                Self::set(t, arg(0)?, v)?;
            }
            Op::Shl(ty) | Op::Shr(ty) => {
                let x = self.get(t, arg(1)?, ty)?;
                let s = self.get(t, arg(2)?, Ty::U32)?;
                let bits = ty.bits() as u64;
                let v = match inst.op {
                    Op::Shl(_) => {
                        if s >= bits {
                            0
                        } else {
                            x << s
                        }
                    }
                    _ if ty.is_signed() => (sext(x, ty) >> s.min(bits - 1)) as u64,
                    _ => {
                        if s >= bits {
                            0
                        } else {
                            x >> s
                        }
                    }
                };
                Self::set(t, arg(0)?, mask(v, ty))?;
            }
            Op::Mul(ty, mode) => {
                let x = self.get(t, arg(1)?, ty)?;
                let y = self.get(t, arg(2)?, ty)?;
                Self::set(t, arg(0)?, multiply(ty, mode, x, y))?;
            }
            Op::Mad(ty, mode) => {
                let x = self.get(t, arg(1)?, ty)?;
                let y = self.get(t, arg(2)?, ty)?;
                let v = if ty.is_float() {
                    fma(ty, x, y, self.get(t, arg(3)?, ty)?)
                } else {
                    let cty = if mode == op::MulMode::Wide { wide(ty) } else { ty };
                    let c = self.get(t, arg(3)?, cty)?;
                    mask(multiply(ty, mode, x, y).wrapping_add(c), cty)
                };
                Self::set(t, arg(0)?, v)?;
            }
            Op::Fma(ty) => {
                let x = self.get(t, arg(1)?, ty)?;
                let y = self.get(t, arg(2)?, ty)?;
                let z = self.get(t, arg(3)?, ty)?;
                Self::set(t, arg(0)?, fma(ty, x, y, z))?;
            }
            Op::Not(ty) => {
                let x = self.get(t, arg(1)?, ty)?;
                let v = if ty == Ty::Pred { (!x) & 1 } else { mask(!x, ty) };
                Self::set(t, arg(0)?, v)?;
            }
            Op::Neg(ty) | Op::Abs(ty) | Op::Sqrt(ty) | Op::Rcp(ty) => {
                let x = self.get(t, arg(1)?, ty)?;
                Self::set(t, arg(0)?, unary(inst.op, ty, x)?)?;
            }
            Op::Ex2 => {
                let x = ftz(f32v(self.get(t, arg(1)?, Ty::F32)?));
                Self::set(t, arg(0)?, f32b(ftz(approx_ex2(x))))?;
            }
            Op::Lg2 => {
                let x = ftz(f32v(self.get(t, arg(1)?, Ty::F32)?));
                Self::set(t, arg(0)?, f32b(ftz(approx_lg2(x))))?;
            }
            Op::Setp(cmp, ty) => {
                let x = self.get(t, arg(1)?, ty)?;
                let y = self.get(t, arg(2)?, ty)?;
                Self::set(t, arg(0)?, compare(cmp, x, y, ty) as u64)?;
            }
            Op::Selp(ty) => {
                let c = self.get(t, arg(3)?, Ty::Pred)? & 1;
                let v = self.get(t, arg(if c == 1 { 1 } else { 2 })?, ty)?;
                Self::set(t, arg(0)?, v)?;
            }
            Op::Cvt { dst, src, rnd } => {
                let x = self.get(t, arg(1)?, src)?;
                Self::set(t, arg(0)?, convert(x, dst, src, rnd)?)?;
            }
            Op::CvtBf16x2 => {
                let hi = bf16_from_f32(f32v(self.get(t, arg(1)?, Ty::F32)?));
                let lo = bf16_from_f32(f32v(self.get(t, arg(2)?, Ty::F32)?));
                Self::set(t, arg(0)?, (hi << 16) | lo)?;
            }
            Op::Bfe(ty) => {
                let x = self.get(t, arg(1)?, ty)?;
                let pos = self.get(t, arg(2)?, Ty::U32)?;
                let len = self.get(t, arg(3)?, Ty::U32)?;
                Self::set(t, arg(0)?, bfe(x, pos, len, ty))?;
            }
            Op::TestpNan(ty) => {
                let x = self.get(t, arg(1)?, ty)?;
                Self::set(t, arg(0)?, float_of(x, ty).is_nan() as u64)?;
            }
            Op::Ld { space, ty, vec } => {
                let (addr, slot) = self.address(t, arg(1)?)?;
                let n = ty.bytes() * vec as usize;
                let mut buf = [0u8; 32];
                self.load(t, space, addr, slot, &mut buf[..n])?;
                self.note_access(t, space, addr, n);
                let dsts: &[Operand] = match arg(0)? {
                    Operand::Vec(v) => v,
                    o => std::slice::from_ref(o),
                };
                if dsts.len() != vec as usize {
                    return Err(format!("{} destinations for a .v{vec} load", dsts.len()));
                }
                for (i, d) in dsts.iter().enumerate() {
                    let mut b = [0u8; 8];
                    b[..ty.bytes()].copy_from_slice(&buf[i * ty.bytes()..(i + 1) * ty.bytes()]);
                    let raw = u64::from_le_bytes(b);
                    let v = if ty.is_signed() { sext(raw, ty) as u64 } else { raw };
                    Self::set(t, d, v)?;
                }
            }
            Op::St { space, ty, vec } => {
                let (addr, slot) = self.address(t, arg(0)?)?;
                let srcs: &[Operand] = match arg(1)? {
                    Operand::Vec(v) => v,
                    o => std::slice::from_ref(o),
                };
                if srcs.len() != vec as usize {
                    return Err(format!("{} sources for a .v{vec} store", srcs.len()));
                }
                let (w, mut buf) = (ty.bytes(), [0u8; 32]);
                for (i, s) in srcs.iter().enumerate() {
                    let v = self.get(t, s, ty)?;
                    buf[i * w..(i + 1) * w].copy_from_slice(&v.to_le_bytes()[..w]);
                }
                self.store(t, space, addr, slot, &buf[..w * srcs.len()])?;
                self.note_access(t, space, addr, w * srcs.len());
            }
            Op::Atom { space, op, ty } => {
                let (addr, slot) = self.address(t, arg(1)?)?;
                let n = ty.bytes();
                let mut b = [0u8; 8];
                self.load(t, space, addr, slot, &mut b[..n])?;
                let old = u64::from_le_bytes(b);
                let x = self.get(t, arg(2)?, ty)?;
                let new = match op {
                    AtomOp::Add if ty.is_float() => binary(Op::Add(ty), ty, old, x)?,
                    AtomOp::Add => old.wrapping_add(x),
                    AtomOp::Min => binary(Op::Min(ty), ty, old, x)?,
                    AtomOp::Max => binary(Op::Max(ty), ty, old, x)?,
                    AtomOp::Exch => x,
                    AtomOp::And => old & x,
                    AtomOp::Or => old | x,
                    AtomOp::Xor => old ^ x,
                    AtomOp::Cas => {
                        let y = self.get(t, arg(3)?, ty)?;
                        if old == x { y } else { old }
                    }
                };
                self.store(t, space, addr, slot, &mask(new, ty).to_le_bytes()[..n])?;
                self.note_access(t, space, addr, n);
                Self::set(t, arg(0)?, old)?;
            }
            Op::CpAsync => {
                let (dst, _) = self.address(t, arg(0)?)?;
                let (src, _) = self.address(t, arg(1)?)?;
                let size = self.get(t, arg(2)?, Ty::U32)? as usize;
                let src_size = match a.get(3) {
                    Some(o) => (self.get(t, o, Ty::U32)? as usize).min(size),
                    None => size,
                };
                if !matches!(size, 4 | 8 | 16) {
                    return Err(format!("cp.async of {size} bytes"));
                }
                let mut bytes = [0u8; 16];
                if src_size > 0 {
                    if !src.is_multiple_of(size as u64) {
                        return Err(format!("misaligned cp.async source {src:#x}"));
                    }
                    self.mem.read(src, &mut bytes[..src_size]).map_err(|e| e.to_string())?;
                }
                if !dst.is_multiple_of(size as u64) {
                    return Err(format!("misaligned cp.async of {size} bytes to shared {dst:#x}"));
                }
                // Checked at issue too, so the fault names the cp.async and not the later wait.
                span(self.shared.len(), dst, size, "cp.async to shared")?;
                if src_size > 0 {
                    self.note_access(t, Space::Global, src, src_size);
                }
                self.note_access(t, Space::Shared, dst, size);
                if self.early_cp_async {
                    self.land(vec![AsyncCopy { dst, bytes, len: size }])?;
                } else {
                    t.open_copies.push(AsyncCopy { dst, bytes, len: size });
                }
            }
            Op::CpAsyncCommit => {
                let group = std::mem::take(&mut t.open_copies);
                t.copy_groups.push_back(group);
            }
            Op::CpAsyncWaitGroup => {
                let keep = self.get(t, arg(0)?, Ty::U32)? as usize;
                while t.copy_groups.len() > keep {
                    let g = t.copy_groups.pop_front().expect("non-empty");
                    self.land(g)?;
                }
            }
            Op::CpAsyncWaitAll => {
                let open = std::mem::take(&mut t.open_copies);
                t.copy_groups.push_back(open);
                while let Some(g) = t.copy_groups.pop_front() {
                    self.land(g)?;
                }
            }
            Op::Fence => {}
            Op::Bra => {
                let Operand::Label(l) = arg(0)? else {
                    return Err("bra needs a label".into());
                };
                next = *l;
            }
            Op::BrxIdx => {
                let i = self.get(t, arg(0)?, Ty::U32)? as usize;
                let Operand::Targets(tab) = arg(1)? else {
                    return Err("brx.idx needs a .branchtargets table".into());
                };
                let table = &func.branch_tables[*tab];
                next = *table.get(i).ok_or_else(|| format!("brx.idx index {i} past a table of {}", table.len()))?;
            }
            Op::Call => return self.call(t, a),
            Op::Ret | Op::Exit => {
                let done = t.frames.pop().expect("frame");
                if inst.op == Op::Exit || t.frames.is_empty() {
                    t.frames.push(done);
                    t.status = Status::Exited;
                    return Ok(());
                }
                if let Some(slot) = done.ret_to {
                    let callee = &module.funcs[done.func];
                    let r = callee.ret_param.expect("ret_to only with a return parameter");
                    let bytes = &done.params[r];
                    let caller = t.frame_mut();
                    let dst = &mut caller.params[slot];
                    let n = dst.len().min(bytes.len());
                    dst[..n].copy_from_slice(&bytes[..n]);
                }
                t.spare_frames.push(done);
                return Ok(());
            }
            Op::BarSync => {
                t.frame_mut().pc = next;
                t.status = Status::Barrier;
                return Ok(());
            }
            Op::Shfl(_) | Op::Ldmatrix { .. } | Op::MmaBf16 => {
                t.status = Status::Collective;
                return Ok(());
            }
        }
        t.frame_mut().pc = next;
        Ok(())
    }

    /// `call (ret), f, (args)` or `call f, (args)`: a new frame with the arguments copied in.
    fn call(&mut self, t: &mut Thread, a: &[Operand]) -> Result<(), String> {
        let (ret, fi, args) = match a {
            [Operand::List(r), Operand::Func(f), Operand::List(args)] => (r.first(), *f, &args[..]),
            [Operand::Func(f), Operand::List(args)] => (None, *f, &args[..]),
            [Operand::Func(f)] => (None, *f, &[][..]),
            _ => return Err(format!("unsupported call form {a:?}")),
        };
        let callee = &self.module.funcs[fi];
        if args.len() != callee.formal_params.len() {
            return Err(format!("call of {} with {} arguments, it has {} parameters", callee.name, args.len(), callee.formal_params.len()));
        }
        let ret_to_slot = match ret {
            Some(Operand::Sym(Sym::Param(s))) => Some(*s),
            _ => None,
        };
        let mut frame = match t.spare_frames.pop() {
            Some(mut fr) => {
                fr.reuse(callee, fi, ret_to_slot);
                fr
            }
            None => Frame::new(callee, fi, ret_to_slot),
        };
        let caller = t.frame();
        for (arg, &slot) in args.iter().zip(&callee.formal_params) {
            let src = match arg {
                Operand::Sym(Sym::Param(s)) => &caller.params[*s],
                other => return Err(format!("call argument {other:?} is not a .param variable")),
            };
            let n = frame.params[slot].len().min(src.len());
            frame.params[slot][..n].copy_from_slice(&src[..n]);
        }
        let ret_to = match ret {
            Some(Operand::Sym(Sym::Param(s))) => Some(*s),
            None => None,
            Some(other) => return Err(format!("call return {other:?} is not a .param variable")),
        };
        if ret_to.is_some() && callee.ret_param.is_none() {
            return Err(format!("{} returns nothing", callee.name));
        }
        t.frame_mut().pc += 1;
        if t.frames.len() > 64 {
            return Err("call depth above 64".into());
        }
        debug_assert_eq!(frame.ret_to, ret_to);
        t.frames.push(frame);
        Ok(())
    }
}

/// Bits and type of each part when `mov` packs or unpacks `n` parts of a `ty` value.
fn part_width(ty: Ty, n: usize) -> Result<(u32, Ty), String> {
    let w = ty.bits() / n.max(1) as u32;
    let part = match w {
        8 => Ty::B8,
        16 => Ty::B16,
        32 => Ty::B32,
        _ => return Err(format!("mov of {n} parts into {ty:?}")),
    };
    Ok((w, part))
}

/// The byte range `[addr, addr + n)` of a buffer of `len` bytes, or an out-of-bounds error naming
/// the access (`what`) and the buffer's size.
fn span(len: usize, addr: u64, n: usize, what: &str) -> Result<std::ops::Range<usize>, String> {
    let start = usize::try_from(addr).unwrap_or(usize::MAX);
    match start.checked_add(n) {
        Some(end) if end <= len => Ok(start..end),
        _ => Err(format!("{what} of {n} bytes at {addr:#x} out of bounds: the buffer has {len} bytes")),
    }
}

/// The parameter slot of a `.param` access (its base must be a parameter name).
fn param_slot(slot: Option<usize>) -> Result<usize, String> {
    slot.ok_or_else(|| "a .param access needs a parameter name as its base".to_string())
}

/// `PTXSIM_SEED` (default 0): varies the warp order, to shake out barrier bugs.
fn warp_order_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| std::env::var("PTXSIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fisher-Yates with a splitmix stream.
fn shuffle(v: &mut [usize], state: &mut u64) {
    for i in (1..v.len()).rev() {
        *state = splitmix(*state);
        let j = (*state % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn imm_bits(i: Imm, ty: Ty) -> u64 {
    match (i, ty) {
        (Imm::Int(v), Ty::F32) => f32b(v as f32),
        (Imm::Int(v), Ty::F64) => f64b(v as f64),
        (Imm::Int(v), _) => v as u64,
        (Imm::F32Bits(b), Ty::F64) => f64b(f32::from_bits(b) as f64),
        (Imm::F32Bits(b), _) => b as u64,
        (Imm::F64Bits(b), Ty::F32) => f32b(f64::from_bits(b) as f32),
        (Imm::F64Bits(b), _) => b,
        (Imm::Float(x), Ty::F32) => f32b(x as f32),
        (Imm::Float(x), _) => f64b(x),
    }
}

/// `min.NaN`/`max.NaN`: a NaN operand gives the canonical NaN.
fn nan_or(a: f32, b: f32, r: f32) -> f32 {
    if a.is_nan() || b.is_nan() { f32::from_bits(0x7fff_ffff) } else { r }
}

fn nan_or64(a: f64, b: f64, r: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { r }
}

/// `ex2.approx.f32`: the hardware is accurate to about 2 ulp, not correctly rounded. The result
/// here is 2^x moved by -2..=2 ulp, chosen by a hash of x (deterministic), so that a test whose
/// bound assumes a correctly rounded exp fails here as it would on a GPU. `PTXSIM_EXACT_APPROX=1`
/// turns this off.
fn approx_ex2(x: f32) -> f32 {
    let r = x.exp2();
    if exact_approx() || !r.is_normal() {
        return r;
    }
    let k = (splitmix(x.to_bits() as u64) % 5) as i32 - 2;
    f32::from_bits((r.to_bits() as i32 + k) as u32)
}

/// `lg2.approx.f32`: an absolute error up to 2^-22.6 for x in [0.5, 2] (where log2 x is near 0),
/// about 2 ulp elsewhere; modelled like [`approx_ex2`].
fn approx_lg2(x: f32) -> f32 {
    let r = x.log2();
    if exact_approx() || !r.is_normal() {
        return r;
    }
    let h = splitmix(x.to_bits() as u64 ^ 0x1f2e_3d4c);
    if (0.5..=2.0).contains(&x) {
        let e = ((h % 3) as f32 - 1.0) * 2f32.powf(-22.6);
        return r + e;
    }
    let k = (h % 5) as i32 - 2;
    f32::from_bits((r.to_bits() as i32 + k) as u32)
}

fn exact_approx() -> bool {
    static EXACT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EXACT.get_or_init(|| std::env::var("PTXSIM_EXACT_APPROX").as_deref() == Ok("1"))
}

fn ftz(x: f32) -> f32 {
    if x.is_subnormal() { 0.0f32.copysign(x) } else { x }
}

fn wide(ty: Ty) -> Ty {
    match ty {
        Ty::U16 => Ty::U32,
        Ty::S16 => Ty::S32,
        Ty::U32 => Ty::U64,
        Ty::S32 => Ty::S64,
        other => other,
    }
}

fn multiply(ty: Ty, mode: op::MulMode, x: u64, y: u64) -> u64 {
    if ty.is_float() {
        return float_bin(x, y, ty, |a, b| a * b, |a, b| a * b);
    }
    let bits = ty.bits();
    let p: i128 = if ty.is_signed() { sext(x, ty) as i128 * sext(y, ty) as i128 } else { x as i128 * y as i128 };
    match mode {
        op::MulMode::Lo => mask(p as u64, ty),
        op::MulMode::Hi => mask((p >> bits) as u64, ty),
        op::MulMode::Wide => mask(p as u64, wide(ty)),
    }
}

fn fma(ty: Ty, x: u64, y: u64, z: u64) -> u64 {
    match ty {
        Ty::F32 => f32b(f32v(x).mul_add(f32v(y), f32v(z))),
        _ => f64b(f64v(x).mul_add(f64v(y), f64v(z))),
    }
}

fn binary(op: Op, ty: Ty, x: u64, y: u64) -> Result<u64, String> {
    if ty.is_float() {
        if !matches!(ty, Ty::F32 | Ty::F64) {
            return Err(format!("{op:?} on {ty:?}"));
        }
        return Ok(match op {
            Op::Add(_) => float_bin(x, y, ty, |a, b| a + b, |a, b| a + b),
            Op::Sub(_) => float_bin(x, y, ty, |a, b| a - b, |a, b| a - b),
            Op::Div(_) => float_bin(x, y, ty, |a, b| a / b, |a, b| a / b),
            Op::Min(_) => float_bin(x, y, ty, f32::min, f64::min),
            Op::Max(_) => float_bin(x, y, ty, f32::max, f64::max),
            Op::MinNan(_) => float_bin(x, y, ty, |a, b| nan_or(a, b, a.min(b)), |a, b| nan_or64(a, b, a.min(b))),
            Op::MaxNan(_) => float_bin(x, y, ty, |a, b| nan_or(a, b, a.max(b)), |a, b| nan_or64(a, b, a.max(b))),
            // copysign d, a, b: the magnitude of b with the sign of a.
            Op::Copysign(_) => float_bin(x, y, ty, |a, b| b.copysign(a), |a, b| b.copysign(a)),
            _ => return Err(format!("{op:?} on a float type")),
        });
    }
    let s = ty.is_signed();
    let (ix, iy) = (sext(x, ty), sext(y, ty));
    let v = match op {
        Op::Add(_) => x.wrapping_add(y),
        Op::Sub(_) => x.wrapping_sub(y),
        Op::And(_) => x & y,
        Op::Or(_) => x | y,
        Op::Xor(_) => x ^ y,
        Op::Min(_) => {
            if s {
                ix.min(iy) as u64
            } else {
                x.min(y)
            }
        }
        Op::Max(_) => {
            if s {
                ix.max(iy) as u64
            } else {
                x.max(y)
            }
        }
        // Division by zero is undefined in PTX; the all-ones result matches current hardware.
        Op::Div(_) if y == 0 => u64::MAX,
        Op::Rem(_) if y == 0 => x,
        Op::Div(_) => {
            if s {
                ix.wrapping_div(iy) as u64
            } else {
                x / y
            }
        }
        Op::Rem(_) => {
            if s {
                ix.wrapping_rem(iy) as u64
            } else {
                x % y
            }
        }
        _ => return Err(format!("{op:?} on an integer type")),
    };
    Ok(mask(v, ty))
}

fn unary(op: Op, ty: Ty, x: u64) -> Result<u64, String> {
    let sign = 1u64 << (ty.bits() - 1);
    Ok(match (op, ty.is_float()) {
        (Op::Neg(_), true) => x ^ sign,
        (Op::Abs(_), true) => x & !sign,
        (Op::Neg(_), false) => mask(x.wrapping_neg(), ty),
        (Op::Abs(_), false) => mask(sext(x, ty).unsigned_abs(), ty),
        (Op::Sqrt(_), true) => match ty {
            Ty::F32 => f32b(f32v(x).sqrt()),
            _ => f64b(f64v(x).sqrt()),
        },
        (Op::Rcp(_), true) => match ty {
            Ty::F32 => f32b(1.0 / f32v(x)),
            _ => f64b(1.0 / f64v(x)),
        },
        _ => return Err(format!("{op:?} on {ty:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximate_exp2_and_log2_stay_within_the_hardware_error_and_are_not_exact() {
        let (mut moved_ex2, mut moved_lg2) = (0, 0);
        for i in 0..1000 {
            let x = -20.0 + i as f32 * 0.0397;
            let (got, exact) = (approx_ex2(x), x.exp2());
            assert!((got.to_bits() as i64 - exact.to_bits() as i64).abs() <= 2, "ex2({x})");
            moved_ex2 += (got != exact) as u32;
            let y = 0.01 + i as f32 * 0.0037;
            let (got, exact) = (approx_lg2(y), y.log2());
            let bound =
                if (0.5..=2.0).contains(&y) { 2f32.powf(-22.6) + exact.abs() * f32::EPSILON } else { 2.0 * exact.abs() * f32::EPSILON };
            assert!((got - exact).abs() <= bound, "lg2({y}): {got} vs {exact}");
            moved_lg2 += (got != exact) as u32;
        }
        assert!(moved_ex2 > 500 && moved_lg2 > 500, "{moved_ex2} {moved_lg2}");
    }
}
