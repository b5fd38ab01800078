//! Code: small programs with their execution traces, and short functions written to order.
//!
//! The programs are in a tiny Python-like language (assignments, `for .. in range(n)`, `if`,
//! `print`) over small whole numbers. They are generated as syntax trees, printed as the
//! example's input, and *run* by [`run`] to produce the trace, so the answer is whatever the
//! program really does. Trace format, one line per executed statement:
//!
//! ```text
//! s = 0              an assignment (a plain value)
//! i=1: s = 0 + 1 = 1 inside a loop: the loop variable first, then the computation
//! if 3 > 2: true     a condition and how it came out
//! print 6            a print
//! Output: 6          everything printed, in order
//! ```

use std::fmt::Write as _;

use super::rng::Rng;
use super::rough_tokens;
use crate::data::Example;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Atom {
    Lit(i64),
    Var(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinOp {
    Add,
    Sub,
    Mul,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Expr {
    Atom(Atom),
    Bin(Atom, BinOp, Atom),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cmp {
    Gt,
    Lt,
    Eq,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stmt {
    Assign(String, Expr),
    Print(Atom),
    /// `for var in range(n):` with its body.
    For(String, i64, Vec<Stmt>),
    If(Atom, Cmp, Atom, Vec<Stmt>),
}

impl std::fmt::Display for Atom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Atom::Lit(v) => write!(f, "{v}"),
            Atom::Var(name) => f.write_str(name),
        }
    }
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
        }
    }
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Lt => "<",
            Cmp::Eq => "==",
        }
    }
}

/// The program's source text, four spaces per level of nesting.
pub(super) fn render(program: &[Stmt]) -> String {
    fn block(out: &mut String, stmts: &[Stmt], depth: usize) {
        for s in stmts {
            let pad = "    ".repeat(depth);
            match s {
                Stmt::Assign(v, Expr::Atom(a)) => writeln!(out, "{pad}{v} = {a}"),
                Stmt::Assign(v, Expr::Bin(a, op, b)) => writeln!(out, "{pad}{v} = {a} {} {b}", op.symbol()),
                Stmt::Print(a) => writeln!(out, "{pad}print({a})"),
                Stmt::For(v, n, _) => writeln!(out, "{pad}for {v} in range({n}):"),
                Stmt::If(a, c, b, _) => writeln!(out, "{pad}if {a} {} {b}:", c.symbol()),
            }
            .expect("writing to a String cannot fail");
            match s {
                Stmt::For(_, _, body) | Stmt::If(_, _, _, body) => block(out, body, depth + 1),
                _ => {}
            }
        }
    }
    let mut out = String::new();
    block(&mut out, program, 0);
    out.truncate(out.trim_end().len());
    out
}

/// What running a program produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Run {
    pub trace: Vec<String>,
    pub printed: Vec<i64>,
    /// The largest absolute value any variable held (the generator keeps numbers small).
    pub max_abs: i64,
}

impl Run {
    /// The trace lines followed by `Output: ..`.
    pub fn answer(&self) -> String {
        let printed: Vec<String> = self.printed.iter().map(i64::to_string).collect();
        let mut text = self.trace.join("\n");
        text.push_str("\nOutput: ");
        text.push_str(&printed.join(" "));
        text
    }
}

/// Runs `program`, tracing every statement. An unknown variable or an overflow is an error
/// (the generator never makes either; the check keeps a hand-written or parsed program honest).
pub(super) fn run(program: &[Stmt]) -> std::result::Result<Run, String> {
    struct State {
        vars: Vec<(String, i64)>,
        run: Run,
    }
    impl State {
        fn get(&self, a: &Atom) -> std::result::Result<i64, String> {
            match a {
                Atom::Lit(v) => Ok(*v),
                Atom::Var(name) => {
                    self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| *v).ok_or(format!("variable {name} used before it is set"))
                }
            }
        }
        fn set(&mut self, name: &str, v: i64) {
            self.run.max_abs = self.run.max_abs.max(v.abs());
            match self.vars.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = v,
                None => self.vars.push((name.to_string(), v)),
            }
        }
        fn block(&mut self, stmts: &[Stmt], prefix: &str) -> std::result::Result<(), String> {
            for s in stmts {
                match s {
                    Stmt::Assign(v, Expr::Atom(a)) => {
                        let x = self.get(a)?;
                        self.set(v, x);
                        self.run.trace.push(format!("{prefix}{v} = {x}"));
                    }
                    Stmt::Assign(v, Expr::Bin(a, op, b)) => {
                        let (x, y) = (self.get(a)?, self.get(b)?);
                        let r = match op {
                            BinOp::Add => x.checked_add(y),
                            BinOp::Sub => x.checked_sub(y),
                            BinOp::Mul => x.checked_mul(y),
                        }
                        .ok_or(format!("overflow in {x} {} {y}", op.symbol()))?;
                        self.set(v, r);
                        self.run.trace.push(format!("{prefix}{v} = {x} {} {y} = {r}", op.symbol()));
                    }
                    Stmt::Print(a) => {
                        let x = self.get(a)?;
                        self.run.printed.push(x);
                        self.run.trace.push(format!("{prefix}print {x}"));
                    }
                    Stmt::For(v, n, body) => {
                        for i in 0..*n {
                            self.set(v, i);
                            self.block(body, &format!("{prefix}{v}={i}: "))?;
                        }
                    }
                    Stmt::If(a, c, b, body) => {
                        let (x, y) = (self.get(a)?, self.get(b)?);
                        let holds = match c {
                            Cmp::Gt => x > y,
                            Cmp::Lt => x < y,
                            Cmp::Eq => x == y,
                        };
                        self.run.trace.push(format!("{prefix}if {x} {} {y}: {holds}", c.symbol()));
                        if holds {
                            self.block(body, prefix)?;
                        }
                    }
                }
            }
            Ok(())
        }
    }
    let mut state = State { vars: Vec::new(), run: Run::default() };
    state.block(program, "")?;
    Ok(state.run)
}

/// Parses the tiny language back from its source text (the inverse of [`render`]), so the
/// tests can check that a trace belongs to the program the example shows.
#[cfg(test)]
pub(super) fn parse(source: &str) -> std::result::Result<Vec<Stmt>, String> {
    fn atom(s: &str) -> std::result::Result<Atom, String> {
        let s = s.trim();
        if let Ok(v) = s.parse() {
            Ok(Atom::Lit(v))
        } else if !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase()) {
            Ok(Atom::Var(s.to_string()))
        } else {
            Err(format!("bad value {s:?}"))
        }
    }
    fn block(lines: &[&str], at: &mut usize, depth: usize) -> std::result::Result<Vec<Stmt>, String> {
        let pad = "    ".repeat(depth);
        let mut out = Vec::new();
        while *at < lines.len() {
            let line = lines[*at];
            let Some(text) = line.strip_prefix(&pad).filter(|t| !t.starts_with(' ')) else {
                let indent = line.len() - line.trim_start().len();
                if indent < pad.len() {
                    break;
                }
                return Err(format!("unexpected indent: {line:?}"));
            };
            *at += 1;
            if let Some(rest) = text.strip_prefix("for ") {
                let (v, n) = rest.split_once(" in range(").ok_or(format!("bad for: {line:?}"))?;
                let n = n.strip_suffix("):").ok_or(format!("bad for: {line:?}"))?.parse().map_err(|_| format!("bad for: {line:?}"))?;
                out.push(Stmt::For(v.to_string(), n, block(lines, at, depth + 1)?));
            } else if let Some(rest) = text.strip_prefix("if ") {
                let cond = rest.strip_suffix(':').ok_or(format!("bad if: {line:?}"))?;
                let (a, c, b) = [(" > ", Cmp::Gt), (" < ", Cmp::Lt), (" == ", Cmp::Eq)]
                    .into_iter()
                    .find_map(|(sym, c)| cond.split_once(sym).map(|(a, b)| (a, c, b)))
                    .ok_or(format!("bad condition: {line:?}"))?;
                out.push(Stmt::If(atom(a)?, c, atom(b)?, block(lines, at, depth + 1)?));
            } else if let Some(rest) = text.strip_prefix("print(") {
                out.push(Stmt::Print(atom(rest.strip_suffix(')').ok_or(format!("bad print: {line:?}"))?)?));
            } else {
                let (v, e) = text.split_once(" = ").ok_or(format!("bad statement: {line:?}"))?;
                let expr = [(" + ", BinOp::Add), (" - ", BinOp::Sub), (" * ", BinOp::Mul)]
                    .into_iter()
                    .find_map(|(sym, op)| e.split_once(sym).map(|(a, b)| (a, op, b)))
                    .map_or_else(|| atom(e).map(Expr::Atom), |(a, op, b)| Ok(Expr::Bin(atom(a)?, op, atom(b)?)))?;
                out.push(Stmt::Assign(v.to_string(), expr));
            }
        }
        Ok(out)
    }
    let lines: Vec<&str> = source.lines().collect();
    let mut at = 0;
    let program = block(&lines, &mut at, 0)?;
    if at != lines.len() {
        return Err(format!("could not parse line {:?}", lines[at]));
    }
    Ok(program)
}

fn count_lines(stmts: &[Stmt]) -> usize {
    stmts
        .iter()
        .map(|s| match s {
            Stmt::For(_, _, body) | Stmt::If(_, _, _, body) => 1 + count_lines(body),
            _ => 1,
        })
        .sum()
}

const VARS: &[&str] = &["a", "b", "c", "n", "s", "t", "x", "y"];
/// Limits that keep a program and its trace inside the demo's short sequences.
const MAX_LINES: usize = 8;
const MAX_TRACE: usize = 10;
const MAX_VALUE: i64 = 999;
/// Program plus trace in [`rough_tokens`]: with the Alpaca template (about 48 more) an example
/// mostly stays within the demo's 128-token sequences.
const MAX_TOKENS: usize = 80;

fn var(name: &str) -> Atom {
    Atom::Var(name.to_string())
}

fn pick_cmp(rng: &mut Rng) -> Cmp {
    *rng.pick(&[Cmp::Gt, Cmp::Gt, Cmp::Lt, Cmp::Eq])
}

/// One candidate program: one or two starting values, one or two middle statements (a
/// loop, a condition or a computation), then one or two prints.
fn candidate(rng: &mut Rng) -> Vec<Stmt> {
    let mut names: Vec<&str> = VARS.to_vec();
    let mut fresh = |rng: &mut Rng| names.remove(rng.below(names.len()));
    let mut defined: Vec<&str> = Vec::new();
    let mut program = Vec::new();
    let first = fresh(rng);
    program.push(Stmt::Assign(first.to_string(), Expr::Atom(Atom::Lit(rng.range(0, 9)))));
    defined.push(first);
    if rng.chance(0.6) {
        let second = fresh(rng);
        program.push(Stmt::Assign(second.to_string(), Expr::Atom(Atom::Lit(rng.range(1, 9)))));
        defined.push(second);
    }
    for _ in 0..rng.range(1, 2) {
        // Loops are the interesting part; the size limits below reject many of them, so they
        // are drawn most often.
        match *rng.pick(&[0, 0, 0, 1, 1, 2, 2]) {
            0 => {
                let acc = *rng.pick(&defined);
                let op = *rng.pick(&[BinOp::Add, BinOp::Add, BinOp::Sub, BinOp::Mul]);
                // Doubling or tripling grows fast enough; times `i` (0 first) or 1 would be dull.
                let with = match op {
                    BinOp::Mul => Atom::Lit(rng.range(2, 3)),
                    _ if rng.chance(0.6) => var("i"),
                    _ => Atom::Lit(rng.range(1, 4)),
                };
                let mut body = vec![Stmt::Assign(acc.to_string(), Expr::Bin(var(acc), op, with))];
                if rng.chance(0.15) {
                    let cond = Stmt::If(var("i"), pick_cmp(rng), Atom::Lit(rng.range(0, 2)), vec![Stmt::Print(var(acc))]);
                    body.push(cond);
                }
                program.push(Stmt::For("i".to_string(), rng.range(2, 3), body));
            }
            1 => {
                let v = *rng.pick(&defined);
                let target = *rng.pick(&defined);
                let then = Stmt::Assign(target.to_string(), Expr::Bin(var(target), BinOp::Add, Atom::Lit(rng.range(1, 9))));
                program.push(Stmt::If(var(v), pick_cmp(rng), Atom::Lit(rng.range(0, 9)), vec![then]));
            }
            _ => {
                let a = *rng.pick(&defined);
                let b = if rng.chance(0.5) {
                    let other = *rng.pick(&defined);
                    var(other)
                } else {
                    Atom::Lit(rng.range(1, 9))
                };
                let op = *rng.pick(&[BinOp::Add, BinOp::Sub, BinOp::Mul]);
                let target = if rng.chance(0.5) && defined.len() < 4 {
                    let t = fresh(rng);
                    defined.push(t);
                    t
                } else {
                    *rng.pick(&defined)
                };
                program.push(Stmt::Assign(target.to_string(), Expr::Bin(var(a), op, b)));
            }
        }
    }
    let shown = *rng.pick(&defined);
    program.push(Stmt::Print(var(shown)));
    if defined.len() > 1 && rng.chance(0.3) {
        let other = *rng.pick(&defined);
        if other != shown {
            program.push(Stmt::Print(var(other)));
        }
    }
    program
}

/// A program inside the size limits, and its run. Candidates are drawn from the same stream
/// until one fits, so the result is still a function of the stream alone.
fn program(rng: &mut Rng) -> (Vec<Stmt>, Run) {
    loop {
        let p = candidate(rng);
        let r = run(&p).expect("generated programs only use variables they set");
        let fits = count_lines(&p) <= MAX_LINES && r.trace.len() <= MAX_TRACE && r.max_abs <= MAX_VALUE;
        if fits && rough_tokens(&render(&p)) + rough_tokens(&r.answer()) <= MAX_TOKENS {
            return (p, r);
        }
    }
}

const TRACE_ASK: &[&str] = &[
    "What does this program print?",
    "Trace this program step by step.",
    "Run this program and show each step.",
    "What is the output of this code?",
];

fn trace_example(rng: &mut Rng) -> Example {
    let (p, r) = program(rng);
    Example::with_input(*rng.pick(TRACE_ASK), render(&p), r.answer())
}

const WRITE_ASK: &[&str] = &["Write a function that {}.", "Write a Python function that {}.", "Show me a function that {}."];

fn list_text(items: &[i64]) -> String {
    let parts: Vec<String> = items.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// (task, code, example call, its result), each result computed here rather than written down.
fn function_task(rng: &mut Rng) -> (String, String, String, String) {
    let k = rng.range(2, 9);
    let a = rng.range(1, 12);
    let items: Vec<i64> = (0..rng.range(3, 5)).map(|_| rng.range(0, 9)).collect();
    match rng.below(9) {
        0 => (
            format!("multiplies a number by {k}"),
            format!("def times_{k}(x):\n    return x * {k}"),
            format!("times_{k}({a})"),
            (a * k).to_string(),
        ),
        1 => {
            (format!("adds {k} to a number"), format!("def add_{k}(x):\n    return x + {k}"), format!("add_{k}({a})"), (a + k).to_string())
        }
        2 => (
            format!("checks if a number is greater than {k}"),
            format!("def more_than_{k}(x):\n    return x > {k}"),
            format!("more_than_{k}({a})"),
            if a > k { "True" } else { "False" }.to_string(),
        ),
        3 => (
            "checks if a number is even".into(),
            "def is_even(x):\n    return x % 2 == 0".into(),
            format!("is_even({a})"),
            if a % 2 == 0 { "True" } else { "False" }.into(),
        ),
        4 => (
            "adds the numbers from 1 to n".into(),
            "def sum_to(n):\n    s = 0\n    for i in range(1, n + 1):\n        s = s + i\n    return s".into(),
            format!("sum_to({a})"),
            (1..=a).sum::<i64>().to_string(),
        ),
        5 => (
            "returns the larger of two numbers".into(),
            "def larger(a, b):\n    if a > b:\n        return a\n    return b".into(),
            format!("larger({a}, {k})"),
            a.max(k).to_string(),
        ),
        6 => (
            "returns the square of a number".into(),
            "def square(x):\n    return x * x".into(),
            format!("square({a})"),
            (a * a).to_string(),
        ),
        7 => (
            format!("counts the items in a list that are greater than {k}"),
            format!(
                "def count_over_{k}(items):\n    count = 0\n    for x in items:\n        if x > {k}:\n            count = count + 1\n    return count"
            ),
            format!("count_over_{k}({})", list_text(&items)),
            items.iter().filter(|&&x| x > k).count().to_string(),
        ),
        _ => (
            "returns the sum of a list".into(),
            "def total(items):\n    s = 0\n    for x in items:\n        s = s + x\n    return s".into(),
            format!("total({})", list_text(&items)),
            items.iter().sum::<i64>().to_string(),
        ),
    }
}

fn function_example(rng: &mut Rng) -> Example {
    let (task, code, call, result) = function_task(rng);
    let ask = rng.pick(WRITE_ASK).replacen("{}", &task, 1);
    Example::new(ask, format!("{code}\nExample: {call} returns {result}."))
}

pub(super) fn example(rng: &mut Rng) -> Example {
    if rng.chance(0.65) { trace_example(rng) } else { function_example(rng) }
}
