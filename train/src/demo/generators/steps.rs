//! The fixed worked-step format shared by the math and medical domains, and exact arithmetic
//! behind it.
//!
//! ```text
//! Step 1: 3 x 4 = 12
//! Step 2: 12 + 5 = 17
//! Answer: 17 dollars
//! ```
//!
//! Every step is `a op b = c` with op one of `+ - x /`, or a cap check `a > b, so use b` /
//! `a <= b, so keep a`. Numbers are exact hundredths ([`Num`]): products and quotients are
//! rounded to 2 decimals, half away from zero, and the next step uses the rounded value that was
//! printed, so every line is true as written. The answer is the last step's value, rounded to
//! the decimals it is printed with.

use std::fmt;

/// A number held exactly as a whole count of hundredths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Num(i64);

/// `n / d` rounded to the nearest whole number, halves away from zero.
fn div_round(n: i64, d: i64) -> i64 {
    let (q, r) = (n / d, n % d);
    if 2 * r.abs() >= d.abs() { q + (n.signum() * d.signum()) } else { q }
}

impl Num {
    pub const fn int(v: i64) -> Self {
        Self(v * 100)
    }

    /// `h / 100`, e.g. `Num::hundredths(250)` is 2.5.
    pub const fn hundredths(h: i64) -> Self {
        Self(h)
    }

    pub fn add(self, o: Self) -> Self {
        Self(self.0 + o.0)
    }

    pub fn sub(self, o: Self) -> Self {
        Self(self.0 - o.0)
    }

    pub fn mul(self, o: Self) -> Self {
        Self(div_round(self.0 * o.0, 100))
    }

    /// `self / o` to 2 decimals; the generators never divide by zero (they pick divisors ≥ 1).
    pub fn div(self, o: Self) -> Self {
        assert!(o.0 != 0, "Num::div by zero");
        Self(div_round(self.0 * 100, o.0))
    }

    /// Rounded to `decimals` (0, 1 or 2) places, halves away from zero.
    pub fn round_to(self, decimals: u32) -> Self {
        let unit = 10i64.pow(2 - decimals.min(2));
        Self(div_round(self.0, unit) * unit)
    }
}

/// `12`, `12.5`, `12.25`, `-0.5`: no trailing zeros, so one value has one spelling.
impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let (whole, frac) = (self.0.abs() / 100, self.0.abs() % 100);
        match frac {
            0 => write!(f, "{sign}{whole}"),
            f10 if f10 % 10 == 0 => write!(f, "{sign}{whole}.{}", f10 / 10),
            _ => write!(f, "{sign}{whole}.{frac:02}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Add => "+",
            Op::Sub => "-",
            Op::Mul => "x",
            Op::Div => "/",
        }
    }

    fn apply(self, a: Num, b: Num) -> Num {
        match self {
            Op::Add => a.add(b),
            Op::Sub => a.sub(b),
            Op::Mul => a.mul(b),
            Op::Div => a.div(b),
        }
    }
}

/// Worked steps being written, numbered from 1.
#[derive(Clone, Debug, Default)]
pub struct Steps {
    lines: Vec<String>,
    last: Option<Num>,
}

impl Steps {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `Step k: a op b = c` and returns `c`.
    pub fn op(&mut self, a: Num, op: Op, b: Num) -> Num {
        let c = op.apply(a, b);
        self.lines.push(format!("Step {}: {a} {} {b} = {c}", self.lines.len() + 1, op.symbol()));
        self.last = Some(c);
        c
    }

    /// Writes a cap check and returns the capped value: `a > cap, so use cap` or
    /// `a <= cap, so keep a`.
    pub fn cap(&mut self, a: Num, cap: Num) -> Num {
        let k = self.lines.len() + 1;
        let (line, v) = if a > cap {
            (format!("Step {k}: {a} > {cap}, so use {cap}"), cap)
        } else {
            (format!("Step {k}: {a} <= {cap}, so keep {a}"), a)
        };
        self.lines.push(line);
        self.last = Some(v);
        v
    }

    /// The steps and `Answer: v unit`, where `v` is the last step's value rounded to
    /// `decimals` places and `unit` (may be empty) follows it.
    pub fn answer(self, decimals: u32, unit: &str) -> (String, Num) {
        let v = self.last.expect("Steps::answer after at least one step").round_to(decimals);
        let mut text = self.lines.join("\n");
        text.push_str(&format!("\nAnswer: {v}"));
        if !unit.is_empty() {
            text.push(' ');
            text.push_str(unit);
        }
        (text, v)
    }
}

/// Re-checks worked steps found anywhere in `text` by recomputing them from the printed
/// numbers (independently of [`Num`]: plain `f64` with a half-hundredth tolerance for the
/// 2-decimal rounding). Checks numbering, each step's arithmetic, and that the answer is the
/// last step's value rounded as printed. Returns the number of steps.
#[cfg(test)]
pub fn check_worked(text: &str) -> std::result::Result<usize, String> {
    let num = |s: &str| s.trim().parse::<f64>().map_err(|e| format!("bad number {s:?}: {e}"));
    let mut last = None;
    let mut k = 0;
    let mut answer = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Step ") {
            let (idx, body) = rest.split_once(": ").ok_or(format!("no ': ' in {line:?}"))?;
            k += 1;
            if idx != k.to_string() {
                return Err(format!("step numbered {idx}, expected {k}: {line:?}"));
            }
            let value = if let Some((lhs, rhs)) = body.split_once(", so ") {
                let (verb, v) = rhs.split_once(' ').ok_or(format!("bad cap step {line:?}"))?;
                let v = num(v)?;
                if let Some((a, cap)) = lhs.split_once(" > ") {
                    let (a, cap) = (num(a)?, num(cap)?);
                    if !(a > cap && verb == "use" && v == cap) {
                        return Err(format!("wrong cap step {line:?}"));
                    }
                } else if let Some((a, cap)) = lhs.split_once(" <= ") {
                    let (a, cap) = (num(a)?, num(cap)?);
                    if !(a <= cap && verb == "keep" && v == a) {
                        return Err(format!("wrong cap step {line:?}"));
                    }
                } else {
                    return Err(format!("bad cap step {line:?}"));
                }
                v
            } else {
                let (expr, c) = body.split_once(" = ").ok_or(format!("no ' = ' in {line:?}"))?;
                let parts: Vec<&str> = expr.split(' ').collect();
                let [a, op, b] = parts[..] else { return Err(format!("expected 'a op b' in {line:?}")) };
                let (a, b, c) = (num(a)?, num(b)?, num(c)?);
                let exact = match op {
                    "+" => a + b,
                    "-" => a - b,
                    "x" => a * b,
                    "/" => a / b,
                    _ => return Err(format!("unknown op {op:?} in {line:?}")),
                };
                if (exact - c).abs() > 0.005 + 1e-9 {
                    return Err(format!("{line:?}: {a} {op} {b} is {exact}, not {c}"));
                }
                c
            };
            last = Some(value);
        } else if let Some(rest) = line.strip_prefix("Answer: ") {
            let first = rest.split(' ').next().unwrap_or("");
            let decimals = first.split_once('.').map_or(0, |(_, f)| f.len());
            answer = Some((num(first)?, decimals));
        }
    }
    let last = last.ok_or("no steps")?;
    let (answer, decimals) = answer.ok_or("no Answer line")?;
    if (answer - last).abs() > 0.5 * 10f64.powi(-(decimals as i32)) + 1e-9 {
        return Err(format!("answer {answer} is not the last step's {last} rounded"));
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_one_way() {
        let s = |n: Num| n.to_string();
        assert_eq!(s(Num::int(12)), "12");
        assert_eq!(s(Num::hundredths(1250)), "12.5");
        assert_eq!(s(Num::hundredths(1205)), "12.05");
        assert_eq!(s(Num::hundredths(-50)), "-0.5");
        assert_eq!(s(Num::hundredths(-1205)), "-12.05");
    }

    #[test]
    fn arithmetic_rounds_half_away_from_zero() {
        assert_eq!(Num::int(47).div(Num::int(3)), Num::hundredths(1567));
        assert_eq!(Num::int(1).div(Num::int(8)), Num::hundredths(13)); // 0.125 -> 0.13
        assert_eq!(Num::hundredths(168).mul(Num::hundredths(168)), Num::hundredths(282)); // 2.8224
        assert_eq!(Num::hundredths(2425).round_to(1), Num::hundredths(2430));
        assert_eq!(Num::hundredths(-2425).round_to(1), Num::hundredths(-2430));
        assert_eq!(Num::hundredths(4167).round_to(0), Num::int(42));
    }

    #[test]
    fn steps_write_the_fixed_format() {
        let mut s = Steps::new();
        let t = s.op(Num::int(3), Op::Mul, Num::int(4));
        let t = s.op(t, Op::Add, Num::int(5));
        let t = s.cap(t, Num::int(10));
        assert_eq!(t, Num::int(10));
        let (text, v) = s.answer(0, "dollars");
        assert_eq!(text, "Step 1: 3 x 4 = 12\nStep 2: 12 + 5 = 17\nStep 3: 17 > 10, so use 10\nAnswer: 10 dollars");
        assert_eq!(v, Num::int(10));
        assert_eq!(check_worked(&text), Ok(3));
    }

    #[test]
    fn the_checker_catches_wrong_lines() {
        assert!(check_worked("Step 1: 3 x 4 = 13\nAnswer: 13").is_err());
        assert!(check_worked("Step 2: 3 x 4 = 12\nAnswer: 12").is_err());
        assert!(check_worked("Step 1: 3 x 4 = 12\nAnswer: 11").is_err());
        assert!(check_worked("Step 1: 9 > 10, so use 10\nAnswer: 10").is_err());
        assert!(check_worked("Step 1: 3 x 4 = 12").is_err());
        assert_eq!(check_worked("Step 1: 47 / 3 = 15.67\nAnswer: 16"), Ok(1));
    }
}
