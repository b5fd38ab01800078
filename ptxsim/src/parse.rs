//! PTX text to [`Module`]: functions with their instructions decoded once, names resolved to
//! register numbers, parameter slots, label targets and shared/constant offsets.
//!
//! The grammar covered is what hand-written PTX for this project uses: module directives,
//! `.entry` and `.func` (with a return parameter and `call.uni`), `.reg` lists and `%r<N>` ranges,
//! `.shared`/`.const`/`.param` variables (module scope or inside `{ }` blocks, which open a new
//! scope), labels, `.branchtargets`, guards `@%p`/`@!%p`, vector operands and `[base+offset]`.

use std::collections::{BTreeSet, HashMap};

use crate::SimError;
use crate::exec::op::{Op, decode};

/// A register number inside one function's register file.
pub(crate) type Reg = u32;

/// Built-in special registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Tid(usize),
    Ntid(usize),
    Ctaid(usize),
    Nctaid(usize),
    LaneId,
    WarpId,
}

/// An immediate as written; its bits depend on the type of the instruction reading it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Imm {
    Int(i64),
    /// `0fXXXXXXXX`: f32 bits.
    F32Bits(u32),
    /// `0dXXXXXXXXXXXXXXXX`: f64 bits.
    F64Bits(u64),
    /// A decimal floating-point literal.
    Float(f64),
}

/// What a variable name stands for when used as a value or as an address base.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Sym {
    /// Offset in the CTA's shared memory.
    Shared(u64),
    /// The extern (dynamic) shared array: starts after all static shared variables.
    DynShared,
    /// Offset in the module's constant bank.
    Const(u64),
    /// A parameter slot of the current function frame.
    Param(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Operand {
    Reg(Reg),
    Imm(Imm),
    Special(Special),
    Sym(Sym),
    Vec(Vec<Operand>),
    /// `_`: a destination that is discarded.
    Sink,
    Addr {
        base: AddrBase,
        offset: i64,
    },
    /// A label, as an instruction index of the current function.
    Label(usize),
    /// A `.branchtargets` table of the current function.
    Targets(usize),
    /// A function of the module.
    Func(usize),
    /// `(a, b, ...)`: the argument or return list of a call.
    List(Vec<Operand>),
    /// `%r|%p`: a destination and a predicate destination.
    Pair(Box<Operand>, Box<Operand>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AddrBase {
    Reg(Reg),
    Sym(Sym),
    /// `[1234]`: an absolute address.
    Abs,
}

pub(crate) struct Inst {
    /// `@%p` (false) or `@!%p` (true).
    pub guard: Option<(Reg, bool)>,
    pub op: Op,
    pub args: Vec<Operand>,
    pub line: usize,
}

pub(crate) struct ParamDecl {
    pub bytes: usize,
}

pub(crate) struct Function {
    pub name: String,
    pub is_entry: bool,
    pub insts: Vec<Inst>,
    /// Number of registers (all scopes get distinct numbers).
    pub regs: usize,
    /// Every parameter slot: first the return parameter (for a `.func` that has one), then the
    /// formal parameters, then the `.param` variables declared inside the body.
    pub params: Vec<ParamDecl>,
    pub ret_param: Option<usize>,
    pub formal_params: Vec<usize>,
    pub branch_tables: Vec<Vec<usize>>,
    /// Offsets of the static shared variables this function declares or names.
    pub shared_used: BTreeSet<u64>,
    /// Functions it calls.
    pub callees: BTreeSet<usize>,
}

/// A parsed PTX module.
pub struct Module {
    pub(crate) funcs: Vec<Function>,
    pub(crate) by_name: HashMap<String, usize>,
    pub(crate) const_bank: Vec<u8>,
    /// End of the static shared layout: every shared variable of the module has its own offset,
    /// so one CTA buffer of this size serves every entry.
    pub(crate) static_shared: u64,
    /// Size of the static shared variable at each offset.
    pub(crate) shared_sizes: HashMap<u64, u64>,
    /// Alignment of the extern shared array.
    pub(crate) dyn_shared_align: u64,
}

impl Module {
    /// Parses and decodes a whole module.
    pub fn parse(src: &str) -> Result<Module, SimError> {
        let toks = lex(src)?;
        Parser::new(toks).module()
    }

    /// Byte size of each `.param` of the `.entry` kernel `entry`, in order.
    pub fn entry_param_sizes(&self, entry: &str) -> Option<Vec<usize>> {
        let f = &self.funcs[*self.by_name.get(entry)?];
        f.is_entry.then(|| f.formal_params.iter().map(|&s| f.params[s].bytes).collect())
    }

    /// Static shared memory a launch of `entry` uses: the shared variables it and the functions
    /// it calls declare or name (what a driver counts against the per-block limit).
    pub fn static_shared_bytes(&self, entry: &str) -> Option<usize> {
        let root = *self.by_name.get(entry)?;
        if !self.funcs[root].is_entry {
            return None;
        }
        let (mut seen, mut todo, mut vars) = (BTreeSet::new(), vec![root], BTreeSet::new());
        while let Some(f) = todo.pop() {
            if seen.insert(f) {
                vars.extend(self.funcs[f].shared_used.iter().copied());
                todo.extend(self.funcs[f].callees.iter().copied());
            }
        }
        Some(vars.iter().map(|o| self.shared_sizes[o]).sum::<u64>() as usize)
    }

    /// Where the extern shared array starts.
    pub(crate) fn dyn_shared_base(&self) -> u64 {
        self.static_shared.next_multiple_of(self.dyn_shared_align.max(16))
    }
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// Identifiers, directives (`.reg`), opcodes with their dots, registers (`%r1`, `%tid.x`).
    Word(String),
    Int(i64),
    F32(u32),
    F64(u64),
    Float(f64),
    /// One of `{ } [ ] ( ) , ; : + - | ! @ < > =`.
    Punct(char),
}

struct Token {
    tok: Tok,
    line: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, SimError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let err = |line, msg: String| SimError::Parse { line, msg };
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c.is_ascii_alphabetic() || matches!(c, b'_' | b'%' | b'$' | b'.') {
            let s = i;
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'_' | b'$' | b'.')) {
                i += 1;
            }
            out.push(Token { tok: Tok::Word(src[s..i].to_string()), line });
        } else if c.is_ascii_digit() {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            let text = &src[s..i];
            let tok = number(text).ok_or_else(|| err(line, format!("bad number {text:?}")))?;
            out.push(Token { tok, line });
        } else if b"{}[](),;:+-|!@<>=".contains(&c) {
            out.push(Token { tok: Tok::Punct(c as char), line });
            i += 1;
        } else {
            return Err(err(line, format!("unexpected character {:?}", c as char)));
        }
    }
    Ok(out)
}

fn number(text: &str) -> Option<Tok> {
    let t = text.trim_end_matches(['U', 'u']);
    if let Some(h) = t.strip_prefix("0f").or_else(|| t.strip_prefix("0F")) {
        return u32::from_str_radix(h, 16).ok().map(Tok::F32);
    }
    if let Some(h) = t.strip_prefix("0d").or_else(|| t.strip_prefix("0D")) {
        return u64::from_str_radix(h, 16).ok().map(Tok::F64);
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok().map(|v| Tok::Int(v as i64));
    }
    if t.contains(['.', 'e', 'E']) {
        return t.parse::<f64>().ok().map(Tok::Float);
    }
    t.parse::<u64>().ok().map(|v| Tok::Int(v as i64))
}

// ---------------------------------------------------------------------------------------------
// Parser

#[derive(Clone, Copy)]
enum Name {
    Reg(Reg),
    Sym(Sym),
}

/// A branch or table reference to a label not yet seen: patched at the end of the function.
enum Fixup {
    Operand { inst: usize, arg: usize, label: String },
    Table { table: usize, index: usize, label: String },
}

struct FuncBuilder {
    f: Function,
    scopes: Vec<HashMap<String, Name>>,
    labels: HashMap<String, usize>,
    tables: HashMap<String, usize>,
    fixups: Vec<(Fixup, usize)>,
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    module_names: HashMap<String, Name>,
    funcs: Vec<Function>,
    by_name: HashMap<String, usize>,
    const_bank: Vec<u8>,
    shared_top: u64,
    shared_sizes: HashMap<u64, u64>,
    dyn_align: u64,
}

impl Parser {
    fn new(toks: Vec<Token>) -> Self {
        Self {
            toks,
            pos: 0,
            module_names: HashMap::new(),
            funcs: Vec::new(),
            by_name: HashMap::new(),
            const_bank: Vec::new(),
            shared_top: 0,
            shared_sizes: HashMap::new(),
            dyn_align: 16,
        }
    }

    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(0, |t| t.line)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, SimError> {
        Err(SimError::Parse { line: self.line(), msg: msg.into() })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn next(&mut self) -> Result<Tok, SimError> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t.tok.clone())
            }
            None => self.err("unexpected end of the module"),
        }
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let yes = self.is_punct(c);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_punct(&mut self, c: char) -> Result<(), SimError> {
        if self.eat_punct(c) { Ok(()) } else { self.err(format!("expected {c:?}, found {:?}", self.peek())) }
    }

    fn word(&mut self) -> Result<String, SimError> {
        match self.next()? {
            Tok::Word(w) => Ok(w),
            t => self.err(format!("expected a name, found {t:?}")),
        }
    }

    fn int(&mut self) -> Result<i64, SimError> {
        let neg = self.eat_punct('-');
        match self.next()? {
            Tok::Int(v) => Ok(if neg { -v } else { v }),
            t => self.err(format!("expected an integer, found {t:?}")),
        }
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn module(mut self) -> Result<Module, SimError> {
        while let Some(tok) = self.peek().cloned() {
            let Tok::Word(w) = tok else {
                return self.err(format!("unexpected {tok:?} at module scope"));
            };
            match w.as_str() {
                ".version" => {
                    self.pos += 1;
                    self.next()?;
                }
                ".target" => {
                    self.pos += 1;
                    self.word()?;
                    while self.eat_punct(',') {
                        self.word()?;
                    }
                }
                ".address_size" => {
                    self.pos += 1;
                    self.int()?;
                }
                ".visible" | ".weak" => self.pos += 1,
                ".entry" | ".func" => self.function()?,
                ".shared" | ".const" | ".extern" | ".global" | ".align" => {
                    let (name, sym) = self.variable(None)?;
                    self.module_names.insert(name, Name::Sym(sym));
                }
                _ => return self.err(format!("unexpected {w:?} at module scope")),
            }
        }
        Ok(Module {
            funcs: self.funcs,
            by_name: self.by_name,
            const_bank: self.const_bank,
            static_shared: self.shared_top,
            shared_sizes: self.shared_sizes,
            dyn_shared_align: self.dyn_align,
        })
    }

    /// `[.extern] <space> [.align N] .type name[N] [= {..}];` Returns the name and its symbol;
    /// `.param` variables get a slot of `fb`.
    fn variable(&mut self, fb: Option<&mut FuncBuilder>) -> Result<(String, Sym), SimError> {
        let mut space = None;
        let mut align = 1u64;
        let mut elem = 0usize;
        let mut is_extern = false;
        let name = loop {
            let w = self.word()?;
            match w.as_str() {
                ".extern" => is_extern = true,
                ".shared" | ".const" | ".param" | ".global" | ".local" => space = Some(w),
                ".align" => align = self.int()? as u64,
                ".v2" | ".v4" => return self.err("vector variables are not supported"),
                t if t.starts_with('.') => match type_bytes(t) {
                    Some(b) => elem = b,
                    None => return self.err(format!("unknown type {t}")),
                },
                _ => break w,
            }
        };
        let mut count = 1usize;
        let mut unsized_array = false;
        if self.eat_punct('[') {
            if self.eat_punct(']') {
                unsized_array = true;
            } else {
                count = self.int()? as usize;
                self.expect_punct(']')?;
            }
        }
        let mut init = Vec::new();
        if self.eat_punct('=') {
            let braced = self.eat_punct('{');
            loop {
                let neg = self.eat_punct('-');
                let bits = match self.next()? {
                    Tok::Int(v) => (if neg { -v } else { v }) as u64,
                    Tok::F32(b) => b as u64,
                    Tok::F64(b) => b,
                    t => return self.err(format!("bad initialiser {t:?}")),
                };
                init.extend_from_slice(&bits.to_le_bytes()[..elem]);
                if !braced || !self.eat_punct(',') {
                    break;
                }
            }
            if braced {
                self.expect_punct('}')?;
            }
        }
        self.expect_punct(';')?;
        let bytes = elem * count;
        let sym = match space.as_deref() {
            Some(".shared") if is_extern || unsized_array => {
                self.dyn_align = self.dyn_align.max(align);
                Sym::DynShared
            }
            Some(".shared") => {
                let off = self.shared_top.next_multiple_of(align.max(1));
                self.shared_top = off + bytes as u64;
                self.shared_sizes.insert(off, bytes as u64);
                if let Some(fb) = fb {
                    fb.f.shared_used.insert(off);
                }
                Sym::Shared(off)
            }
            Some(".const") => {
                let off = (self.const_bank.len() as u64).next_multiple_of(align.max(1));
                self.const_bank.resize(off as usize, 0);
                init.resize(bytes, 0);
                self.const_bank.extend_from_slice(&init);
                Sym::Const(off)
            }
            Some(".param") => match fb {
                Some(fb) => {
                    fb.f.params.push(ParamDecl { bytes });
                    Sym::Param(fb.f.params.len() - 1)
                }
                None => return self.err(".param outside a function"),
            },
            other => return self.err(format!("unsupported variable space {other:?}")),
        };
        Ok((name, sym))
    }

    /// `(.param .type name, ...)`: declares formal parameters, returns their slots.
    fn param_list(&mut self, fb: &mut FuncBuilder) -> Result<Vec<usize>, SimError> {
        self.expect_punct('(')?;
        let mut slots = Vec::new();
        if self.eat_punct(')') {
            return Ok(slots);
        }
        loop {
            let mut elem = 0;
            let mut count = 1;
            let name = loop {
                let w = self.word()?;
                match w.as_str() {
                    ".param" => {}
                    // Parameters are copied byte-wise here: their alignment does not matter.
                    ".align" => {
                        self.int()?;
                    }
                    t if t.starts_with('.') => {
                        elem = match type_bytes(t) {
                            Some(b) => b,
                            None => return self.err(format!("unknown type {t}")),
                        }
                    }
                    _ => break w,
                }
            };
            if self.eat_punct('[') {
                count = self.int()? as usize;
                self.expect_punct(']')?;
            }
            fb.f.params.push(ParamDecl { bytes: elem * count });
            let slot = fb.f.params.len() - 1;
            fb.scopes[0].insert(name, Name::Sym(Sym::Param(slot)));
            slots.push(slot);
            if !self.eat_punct(',') {
                break;
            }
        }
        self.expect_punct(')')?;
        Ok(slots)
    }

    fn function(&mut self) -> Result<(), SimError> {
        let is_entry = self.word()? == ".entry";
        let mut fb = FuncBuilder {
            f: Function {
                name: String::new(),
                is_entry,
                insts: Vec::new(),
                regs: 0,
                params: Vec::new(),
                ret_param: None,
                formal_params: Vec::new(),
                branch_tables: Vec::new(),
                shared_used: BTreeSet::new(),
                callees: BTreeSet::new(),
            },
            scopes: vec![HashMap::new()],
            labels: HashMap::new(),
            tables: HashMap::new(),
            fixups: Vec::new(),
        };
        if !is_entry && self.is_punct('(') {
            let r = self.param_list(&mut fb)?;
            if r.len() != 1 {
                return self.err("a function returns exactly one parameter here");
            }
            fb.f.ret_param = Some(r[0]);
        }
        fb.f.name = self.word()?;
        let index = self.funcs.len();
        if self.is_punct('(') {
            fb.f.formal_params = self.param_list(&mut fb)?;
        }
        // Performance directives: .maxntid a, b, c / .reqntid / .minnctapersm n / .noreturn.
        while let Some(w) = self.peek_word() {
            match w {
                ".maxntid" | ".reqntid" | ".minnctapersm" | ".maxnreg" | ".maxnctapersm" => {
                    self.pos += 1;
                    self.int()?;
                    while self.eat_punct(',') {
                        self.int()?;
                    }
                }
                ".noreturn" => self.pos += 1,
                _ => return self.err(format!("unexpected {w:?} before a function body")),
            }
        }
        if self.eat_punct(';') {
            return self.err("function prototypes without a body are not supported");
        }
        // Named before the body is parsed, so that a call from the body itself resolves.
        self.by_name.insert(fb.f.name.clone(), index);
        self.expect_punct('{')?;
        self.block(&mut fb)?;
        for (fixup, line) in std::mem::take(&mut fb.fixups) {
            let label = match &fixup {
                Fixup::Operand { label, .. } | Fixup::Table { label, .. } => label.clone(),
            };
            let Some(&target) = fb.labels.get(&label) else {
                return Err(SimError::Parse { line, msg: format!("unknown label {label}") });
            };
            match fixup {
                Fixup::Operand { inst, arg, .. } => fb.f.insts[inst].args[arg] = Operand::Label(target),
                Fixup::Table { table, index, .. } => fb.f.branch_tables[table][index] = target,
            }
        }
        // A final implicit return, so that running off the end is well defined.
        fb.f.insts.push(Inst { guard: None, op: Op::Ret, args: Vec::new(), line: self.line() });
        self.funcs.push(fb.f);
        Ok(())
    }

    /// Statements until the matching `}` (already consumed the `{`).
    fn block(&mut self, fb: &mut FuncBuilder) -> Result<(), SimError> {
        loop {
            let line = self.line();
            match self.next()? {
                Tok::Punct('}') => return Ok(()),
                Tok::Punct('{') => {
                    fb.scopes.push(HashMap::new());
                    self.block(fb)?;
                    fb.scopes.pop();
                }
                Tok::Punct('@') => {
                    let neg = self.eat_punct('!');
                    let p = self.word()?;
                    let Name::Reg(r) = self.resolve(fb, &p)? else {
                        return self.err(format!("{p} is not a predicate register"));
                    };
                    let opcode = self.word()?;
                    self.instruction(fb, Some((r, neg)), opcode, line)?;
                }
                Tok::Word(w) if w == ".reg" => self.reg_decl(fb)?,
                Tok::Word(w) if matches!(w.as_str(), ".shared" | ".param" | ".const" | ".local") => {
                    self.pos -= 1;
                    let (name, sym) = self.variable(Some(fb))?;
                    fb.scopes.last_mut().expect("scope").insert(name, Name::Sym(sym));
                }
                Tok::Word(w) if w == ".pragma" => {
                    while !self.eat_punct(';') {
                        self.next()?;
                    }
                }
                Tok::Word(w) if self.is_punct(':') => {
                    self.pos += 1;
                    if self.peek_word() == Some(".branchtargets") {
                        self.pos += 1;
                        let table = fb.f.branch_tables.len();
                        fb.f.branch_tables.push(Vec::new());
                        loop {
                            let l = self.word()?;
                            let index = fb.f.branch_tables[table].len();
                            fb.f.branch_tables[table].push(usize::MAX);
                            fb.fixups.push((Fixup::Table { table, index, label: l }, line));
                            if !self.eat_punct(',') {
                                break;
                            }
                        }
                        self.expect_punct(';')?;
                        fb.tables.insert(w, table);
                    } else {
                        fb.labels.insert(w, fb.f.insts.len());
                    }
                }
                Tok::Word(w) => self.instruction(fb, None, w, line)?,
                t => return self.err(format!("unexpected {t:?}")),
            }
        }
    }

    /// `.reg .type a, b, %r<N>;`
    fn reg_decl(&mut self, fb: &mut FuncBuilder) -> Result<(), SimError> {
        let ty = self.word()?;
        if ty.starts_with(".v") {
            return self.err("vector registers are not supported");
        }
        loop {
            let name = self.word()?;
            let scope = fb.scopes.last_mut().expect("scope");
            if self.eat_punct('<') {
                let n = self.int()?;
                self.expect_punct('>')?;
                for i in 0..n {
                    scope.insert(format!("{name}{i}"), Name::Reg(fb.f.regs as Reg));
                    fb.f.regs += 1;
                }
            } else {
                scope.insert(name, Name::Reg(fb.f.regs as Reg));
                fb.f.regs += 1;
            }
            if !self.eat_punct(',') {
                break;
            }
        }
        self.expect_punct(';')
    }

    fn resolve(&self, fb: &FuncBuilder, name: &str) -> Result<Name, SimError> {
        for s in fb.scopes.iter().rev() {
            if let Some(n) = s.get(name) {
                return Ok(*n);
            }
        }
        if let Some(n) = self.module_names.get(name) {
            return Ok(*n);
        }
        self.err(format!("unknown name {name}"))
    }

    fn instruction(&mut self, fb: &mut FuncBuilder, guard: Option<(Reg, bool)>, opcode: String, line: usize) -> Result<(), SimError> {
        let op = decode(&opcode).map_err(|msg| SimError::Parse { line, msg })?;
        let mut args = Vec::new();
        let index = fb.f.insts.len();
        if !self.is_punct(';') {
            loop {
                let arg = self.operand(fb, index, args.len(), line)?;
                args.push(arg);
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        self.expect_punct(';')?;
        fb.f.insts.push(Inst { guard, op, args, line });
        Ok(())
    }

    fn operand(&mut self, fb: &mut FuncBuilder, inst: usize, arg: usize, line: usize) -> Result<Operand, SimError> {
        let first = self.single(fb, inst, arg, line)?;
        if self.eat_punct('|') {
            let second = self.single(fb, inst, arg, line)?;
            return Ok(Operand::Pair(Box::new(first), Box::new(second)));
        }
        Ok(first)
    }

    fn single(&mut self, fb: &mut FuncBuilder, inst: usize, arg: usize, line: usize) -> Result<Operand, SimError> {
        match self.next()? {
            Tok::Punct('{') => {
                let mut v = Vec::new();
                loop {
                    v.push(self.single(fb, inst, arg, line)?);
                    if !self.eat_punct(',') {
                        break;
                    }
                }
                self.expect_punct('}')?;
                Ok(Operand::Vec(v))
            }
            Tok::Punct('(') => {
                let mut v = Vec::new();
                if !self.eat_punct(')') {
                    loop {
                        v.push(self.single(fb, inst, arg, line)?);
                        if !self.eat_punct(',') {
                            break;
                        }
                    }
                    self.expect_punct(')')?;
                }
                Ok(Operand::List(v))
            }
            Tok::Punct('[') => {
                let base = match self.next()? {
                    Tok::Word(w) => match self.resolve(fb, &w)? {
                        Name::Reg(r) => AddrBase::Reg(r),
                        Name::Sym(s) => {
                            note_shared(fb, s);
                            AddrBase::Sym(s)
                        }
                    },
                    Tok::Int(v) => {
                        self.expect_punct(']')?;
                        return Ok(Operand::Addr { base: AddrBase::Abs, offset: v });
                    }
                    t => return self.err(format!("bad address {t:?}")),
                };
                // `[base+8]`, or `[base-8]` (the `-` is read as the integer's sign).
                let mut offset = 0;
                if self.eat_punct('+') || self.is_punct('-') {
                    offset = self.int()?;
                }
                self.expect_punct(']')?;
                Ok(Operand::Addr { base, offset })
            }
            Tok::Punct('-') => match self.next()? {
                Tok::Int(v) => Ok(Operand::Imm(Imm::Int(-v))),
                Tok::Float(v) => Ok(Operand::Imm(Imm::Float(-v))),
                t => self.err(format!("bad operand -{t:?}")),
            },
            Tok::Int(v) => Ok(Operand::Imm(Imm::Int(v))),
            Tok::F32(b) => Ok(Operand::Imm(Imm::F32Bits(b))),
            Tok::F64(b) => Ok(Operand::Imm(Imm::F64Bits(b))),
            Tok::Float(v) => Ok(Operand::Imm(Imm::Float(v))),
            Tok::Word(w) if w == "_" => Ok(Operand::Sink),
            Tok::Word(w) => {
                if let Some(s) = special(&w) {
                    return Ok(Operand::Special(s));
                }
                if let Ok(n) = self.resolve(fb, &w) {
                    return Ok(match n {
                        Name::Reg(r) => Operand::Reg(r),
                        Name::Sym(s) => {
                            note_shared(fb, s);
                            Operand::Sym(s)
                        }
                    });
                }
                if let Some(&t) = fb.tables.get(&w) {
                    return Ok(Operand::Targets(t));
                }
                if let Some(&f) = self.by_name.get(&w) {
                    fb.f.callees.insert(f);
                    return Ok(Operand::Func(f));
                }
                if w.starts_with('%') {
                    return self.err(format!("unknown register {w}"));
                }
                // A label (possibly declared later in the function).
                fb.fixups.push((Fixup::Operand { inst, arg, label: w }, line));
                Ok(Operand::Label(usize::MAX))
            }
            t => self.err(format!("unexpected {t:?} in an operand")),
        }
    }
}

/// Records that the function uses a static shared variable.
fn note_shared(fb: &mut FuncBuilder, s: Sym) {
    if let Sym::Shared(off) = s {
        fb.f.shared_used.insert(off);
    }
}

fn special(w: &str) -> Option<Special> {
    let axis = |s: &str| match s {
        "x" => Some(0),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    let (base, rest) = w.split_once('.').unwrap_or((w, ""));
    Some(match base {
        "%tid" => Special::Tid(axis(rest)?),
        "%ntid" => Special::Ntid(axis(rest)?),
        "%ctaid" => Special::Ctaid(axis(rest)?),
        "%nctaid" => Special::Nctaid(axis(rest)?),
        "%laneid" => Special::LaneId,
        "%warpid" => Special::WarpId,
        _ => return None,
    })
}

/// Bytes of a scalar PTX type name (`.b32` -> 4).
pub(crate) fn type_bytes(t: &str) -> Option<usize> {
    Some(match t {
        ".b8" | ".u8" | ".s8" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        ".pred" => 1,
        _ => return None,
    })
}
