//! Opcodes: the dotted PTX opcode string decoded once into an [`Op`] the interpreter matches on.

/// Scalar types. Registers hold raw bits; the type says how an instruction reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    Bf16,
    Bf16x2,
    F32,
    F64,
    Pred,
}

impl Ty {
    pub fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    pub fn bytes(self) -> usize {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 | Ty::Pred => 1,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 2,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::Bf16x2 => 4,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 8,
        }
    }

    pub fn bits(self) -> u32 {
        self.bytes() as u32 * 8
    }

    pub fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    pub fn is_float(self) -> bool {
        matches!(self, Ty::F32 | Ty::F64 | Ty::F16 | Ty::Bf16)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Global,
    Shared,
    Const,
    Param,
    Local,
}

/// `.lo` / `.hi` / `.wide` of integer `mul` and `mad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MulMode {
    Lo,
    Hi,
    Wide,
}

/// Comparison of `setp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// Rounding of `cvt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rnd {
    /// No modifier: exact or the default (nearest for int to float).
    None,
    Rn,
    Rz,
    Rm,
    Rp,
    /// Round to an integral value: nearest even, toward zero, down, up.
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtomOp {
    Add,
    Min,
    Max,
    Exch,
    Cas,
    And,
    Or,
    Xor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Mov(Ty),
    Add(Ty),
    Sub(Ty),
    Mul(Ty, MulMode),
    Mad(Ty, MulMode),
    Fma(Ty),
    Div(Ty),
    Rem(Ty),
    Min(Ty),
    Max(Ty),
    /// `max.NaN` / `min.NaN`: a NaN operand gives NaN.
    MinNan(Ty),
    MaxNan(Ty),
    And(Ty),
    Or(Ty),
    Xor(Ty),
    Not(Ty),
    Shl(Ty),
    Shr(Ty),
    Neg(Ty),
    Abs(Ty),
    Copysign(Ty),
    Sqrt(Ty),
    Rcp(Ty),
    Ex2,
    Lg2,
    Setp(Cmp, Ty),
    Selp(Ty),
    Cvt {
        dst: Ty,
        src: Ty,
        rnd: Rnd,
    },
    /// `cvt.rn.bf16x2.f32 d, a, b`: a to the upper half, b to the lower.
    CvtBf16x2,
    Bfe(Ty),
    TestpNan(Ty),
    Ld {
        space: Space,
        ty: Ty,
        vec: u8,
    },
    St {
        space: Space,
        ty: Ty,
        vec: u8,
    },
    /// `cvta.to.global` and friends: addresses are already space-relative here.
    Cvta,
    Bra,
    BrxIdx,
    Call,
    Ret,
    Exit,
    BarSync,
    Shfl(ShflMode),
    /// `ldmatrix.sync.aligned.m8n8.x{num}[.trans].shared.b16`
    Ldmatrix {
        num: u8,
        trans: bool,
    },
    /// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32`
    MmaBf16,
    /// `cp.async.{ca,cg}.shared.global`: reads the source at issue, writes shared memory only
    /// when a `wait_group`/`wait_all` covers it (so a read before the wait sees stale data).
    CpAsync,
    /// `cp.async.commit_group`: closes the thread's open group of copies.
    CpAsyncCommit,
    /// `cp.async.wait_group N`: lands every committed group but the newest N.
    CpAsyncWaitGroup,
    /// `cp.async.wait_all`: commits and lands everything.
    CpAsyncWaitAll,
    Atom {
        space: Space,
        op: AtomOp,
        ty: Ty,
    },
    /// `membar` / `fence`: all accesses are already ordered.
    Fence,
}

/// Decodes a dotted opcode, e.g. `mul.wide.u32` or `ld.global.nc.v4.f32`.
pub(crate) fn decode(opcode: &str) -> Result<Op, String> {
    let parts: Vec<&str> = opcode.split('.').collect();
    let base = parts[0];
    let mods = &parts[1..];
    let has = |m: &str| mods.contains(&m);
    // The last type-like modifier is the instruction type for most opcodes.
    let types: Vec<Ty> = mods.iter().filter_map(|m| Ty::parse(m)).collect();
    let last_ty = types.last().copied();
    let ty = || last_ty.ok_or_else(|| format!("{opcode}: no type"));
    let mul_mode = if has("wide") {
        MulMode::Wide
    } else if has("hi") {
        MulMode::Hi
    } else {
        MulMode::Lo
    };
    let space = || {
        for m in mods {
            match *m {
                "global" => return Ok(Space::Global),
                "shared" => return Ok(Space::Shared),
                "const" => return Ok(Space::Const),
                "param" => return Ok(Space::Param),
                "local" => return Ok(Space::Local),
                _ => {}
            }
        }
        Err(format!("{opcode}: generic addressing is not supported"))
    };
    let vec = if has("v4") {
        4
    } else if has("v2") {
        2
    } else {
        1
    };
    let op = match base {
        "mov" => Op::Mov(ty()?),
        "add" => Op::Add(ty()?),
        "sub" => Op::Sub(ty()?),
        "mul" => Op::Mul(ty()?, mul_mode),
        "mad" => Op::Mad(ty()?, mul_mode),
        "fma" => Op::Fma(ty()?),
        "div" => Op::Div(ty()?),
        "rem" => Op::Rem(ty()?),
        "min" if has("NaN") => Op::MinNan(ty()?),
        "max" if has("NaN") => Op::MaxNan(ty()?),
        "min" => Op::Min(ty()?),
        "max" => Op::Max(ty()?),
        "and" => Op::And(ty()?),
        "or" => Op::Or(ty()?),
        "xor" => Op::Xor(ty()?),
        "not" => Op::Not(ty()?),
        "shl" => Op::Shl(ty()?),
        "shr" => Op::Shr(ty()?),
        "neg" => Op::Neg(ty()?),
        "abs" => Op::Abs(ty()?),
        "copysign" => Op::Copysign(ty()?),
        "sqrt" => Op::Sqrt(ty()?),
        "rcp" => Op::Rcp(ty()?),
        "ex2" => Op::Ex2,
        "lg2" => Op::Lg2,
        "setp" => {
            let cmp = match mods.first().copied() {
                Some("eq") => Cmp::Eq,
                Some("ne") => Cmp::Ne,
                Some("lt" | "lo") => Cmp::Lt,
                Some("le" | "ls") => Cmp::Le,
                Some("gt" | "hi") => Cmp::Gt,
                Some("ge" | "hs") => Cmp::Ge,
                Some("equ") => Cmp::Equ,
                Some("neu") => Cmp::Neu,
                Some("ltu") => Cmp::Ltu,
                Some("leu") => Cmp::Leu,
                Some("gtu") => Cmp::Gtu,
                Some("geu") => Cmp::Geu,
                Some("num") => Cmp::Num,
                Some("nan") => Cmp::Nan,
                _ => return Err(format!("{opcode}: unknown comparison")),
            };
            if mods.iter().any(|m| matches!(*m, "and" | "or" | "xor")) {
                return Err(format!("{opcode}: combining setp is not supported"));
            }
            Op::Setp(cmp, ty()?)
        }
        "selp" => Op::Selp(ty()?),
        "cvt" => {
            if types.len() != 2 {
                return Err(format!("{opcode}: cvt needs two types"));
            }
            if types[0] == Ty::Bf16x2 {
                Op::CvtBf16x2
            } else {
                let rnd = match mods.first().copied() {
                    Some("rn") => Rnd::Rn,
                    Some("rz") => Rnd::Rz,
                    Some("rm") => Rnd::Rm,
                    Some("rp") => Rnd::Rp,
                    Some("rni") => Rnd::Rni,
                    Some("rzi") => Rnd::Rzi,
                    Some("rmi") => Rnd::Rmi,
                    Some("rpi") => Rnd::Rpi,
                    _ => Rnd::None,
                };
                Op::Cvt { dst: types[0], src: types[1], rnd }
            }
        }
        "bfe" => Op::Bfe(ty()?),
        "testp" if has("notanumber") => Op::TestpNan(ty()?),
        "ld" => Op::Ld { space: space()?, ty: ty()?, vec },
        "st" => Op::St { space: space()?, ty: ty()?, vec },
        "cvta" => Op::Cvta,
        "bra" => Op::Bra,
        "brx" => Op::BrxIdx,
        "call" => Op::Call,
        "ret" => Op::Ret,
        "exit" => Op::Exit,
        "bar" | "barrier" if has("sync") || has("cta") => Op::BarSync,
        "shfl" => Op::Shfl(if has("up") {
            ShflMode::Up
        } else if has("down") {
            ShflMode::Down
        } else if has("bfly") {
            ShflMode::Bfly
        } else if has("idx") {
            ShflMode::Idx
        } else {
            return Err(format!("{opcode}: unknown shuffle mode"));
        }),
        "ldmatrix" if has("m8n8") && has("b16") => Op::Ldmatrix {
            num: if has("x4") {
                4
            } else if has("x2") {
                2
            } else {
                1
            },
            trans: has("trans"),
        },
        "mma" if opcode == "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" => Op::MmaBf16,
        "cp" if has("async") && has("commit_group") => Op::CpAsyncCommit,
        "cp" if has("async") && has("wait_group") => Op::CpAsyncWaitGroup,
        "cp" if has("async") && has("wait_all") => Op::CpAsyncWaitAll,
        "cp" if has("async") && has("shared") && has("global") => Op::CpAsync,
        "atom" => Op::Atom {
            space: space()?,
            op: match mods.iter().find_map(|m| match *m {
                "add" => Some(AtomOp::Add),
                "min" => Some(AtomOp::Min),
                "max" => Some(AtomOp::Max),
                "exch" => Some(AtomOp::Exch),
                "cas" => Some(AtomOp::Cas),
                "and" => Some(AtomOp::And),
                "or" => Some(AtomOp::Or),
                "xor" => Some(AtomOp::Xor),
                _ => None,
            }) {
                Some(o) => o,
                None => return Err(format!("{opcode}: unknown atomic operation")),
            },
            ty: ty()?,
        },
        "membar" | "fence" => Op::Fence,
        _ => return Err(format!("unsupported instruction {opcode}")),
    };
    Ok(op)
}
