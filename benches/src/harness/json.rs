//! A tiny JSON writer and reader for *flat* objects, one per line (the benchmark result schema):
//! string keys; values that are strings, numbers, `true`/`false` or `null`. Nested objects and
//! arrays are refused with an error rather than half-read. No crate needed for that much.

use std::fmt::Write as _;

/// One value of a flat object.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl Value {
    /// `Num(x)` for a finite `x`, `Null` otherwise (JSON has no NaN or infinity).
    pub fn num(x: f64) -> Self {
        if x.is_finite() {
            Value::Num(x)
        } else {
            Value::Null
        }
    }

    /// `num(x)` for `Some(x)`, `Null` for `None`.
    pub fn opt_num(x: Option<f64>) -> Self {
        x.map_or(Value::Null, Value::num)
    }

    pub fn str(s: impl Into<String>) -> Self {
        Value::Str(s.into())
    }

    pub fn opt_str(s: Option<&str>) -> Self {
        s.map_or(Value::Null, Value::str)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(x) => Some(*x),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A parsed flat object, keys in file order.
pub type Object = Vec<(String, Value)>;

/// Looks `key` up in `obj` (the last occurrence wins, as in most JSON readers).
pub fn get<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
    obj.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_num(out: &mut String, x: f64) {
    if !x.is_finite() {
        out.push_str("null");
    } else if x.fract() == 0.0 && x.abs() < 9.007_199_254_740_992e15 {
        // Whole numbers (byte and FLOP counts, repetitions) without a trailing ".0".
        let _ = write!(out, "{}", x as i64);
    } else {
        // Rust's Display of f64 is the shortest string that reads back to the same value and
        // never uses an exponent, so it is always a valid JSON number.
        let _ = write!(out, "{x}");
    }
}

/// One line of JSON (no newline) for the fields in order.
pub fn write_object(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(&mut out, k);
        out.push_str(": ");
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Num(x) => write_num(&mut out, *x),
            Value::Str(s) => write_str(&mut out, s),
        }
    }
    out.push('}');
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err<T>(&self, msg: &str) -> Result<T, String> {
        Err(format!("column {}: {msg}", self.i + 1))
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected '{}'", c as char))
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let Some(h) = self.s.get(self.i..self.i + 4) else {
            return self.err("truncated \\u escape");
        };
        let h = std::str::from_utf8(h).map_err(|_| "bad \\u escape".to_string())?;
        let v = u32::from_str_radix(h, 16).or_else(|_| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i] != b'"' && self.s[self.i] != b'\\' {
                if self.s[self.i] < 0x20 {
                    return self.err("control character in a string");
                }
                self.i += 1;
            }
            // The input is a &str and we stop only at ASCII bytes, so this slice is valid UTF-8.
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default());
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                _ => {}
            }
            self.i += 1; // the backslash
            let Some(e) = self.peek() else {
                return self.err("unterminated escape");
            };
            self.i += 1;
            match e {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let hi = self.hex4()?;
                    let cp = if (0xd800..0xdc00).contains(&hi) {
                        // A surrogate pair: \uD8xx\uDCxx.
                        if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                            return self.err("lone high surrogate");
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xdc00..0xe000).contains(&lo) {
                            return self.err("bad low surrogate");
                        }
                        0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                    } else {
                        hi
                    };
                    match char::from_u32(cp) {
                        Some(c) => out.push(c),
                        None => return self.err("escape is not a character"),
                    }
                }
                _ => return self.err("unknown escape"),
            }
        }
    }

    fn number(&mut self) -> Result<f64, String> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.i += 1;
            }
            p.i - s
        };
        let int_start = self.i;
        let n_int = digits(self);
        if n_int == 0 || (n_int > 1 && self.s[int_start] == b'0') {
            return self.err("bad number");
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return self.err("bad number: no digits after '.'");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return self.err("bad number: no exponent digits");
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        text.parse::<f64>().or_else(|_| self.err("bad number"))
    }

    fn word(&mut self, w: &[u8], v: Value) -> Result<Value, String> {
        if self.s[self.i..].starts_with(w) {
            self.i += w.len();
            Ok(v)
        } else {
            self.err("unexpected token")
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Num),
            Some(b't') => self.word(b"true", Value::Bool(true)),
            Some(b'f') => self.word(b"false", Value::Bool(false)),
            Some(b'n') => self.word(b"null", Value::Null),
            Some(b'{' | b'[') => self.err("nested objects and arrays are not supported"),
            Some(_) => self.err("unexpected character"),
            None => self.err("unexpected end of line"),
        }
    }
}

/// Parses one line holding one flat JSON object.
pub fn parse_object(line: &str) -> Result<Object, String> {
    let mut p = Parser {
        s: line.as_bytes(),
        i: 0,
    };
    let mut obj = Object::new();
    p.ws();
    p.expect(b'{')?;
    p.ws();
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let k = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let v = p.value()?;
            obj.push((k, v));
            p.ws();
            match p.peek() {
                Some(b',') => p.i += 1,
                Some(b'}') => {
                    p.i += 1;
                    break;
                }
                _ => return p.err("expected ',' or '}'"),
            }
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return p.err("trailing characters after the object");
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_kind_of_value() {
        let fields = [
            ("id", Value::str("copy/d2d/256MiB")),
            ("median_us", Value::num(87.125)),
            ("bytes", Value::num(536_870_912.0)),
            ("neg", Value::num(-0.5)),
            ("tiny", Value::num(1e-7)),
            ("huge", Value::num(1e300)),
            ("nan", Value::num(f64::NAN)),
            ("none", Value::opt_num(None)),
            ("ok", Value::Bool(true)),
            ("no", Value::Bool(false)),
            (
                "text",
                Value::str("quote \" back \\ nl \n tab \t ctl \u{1} é ✓ 😀"),
            ),
        ];
        let line = write_object(&fields);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("\"bytes\": 536870912,"), "{line}");
        let back = parse_object(&line).unwrap();
        assert_eq!(back.len(), fields.len());
        for ((k, v), (k2, v2)) in fields.iter().zip(&back) {
            assert_eq!(k, k2);
            assert_eq!(v, v2, "{k}");
        }
        assert_eq!(get(&back, "nan"), Some(&Value::Null));
    }

    #[test]
    fn reads_what_other_writers_write() {
        let o =
            parse_object(r#"  {"a":1.5e3,"b" : -0 , "c":"\u00e9\ud83d\ude00\/","d":null,"e":[1]}"#);
        assert!(o.unwrap_err().contains("nested"));
        let o =
            parse_object(r#"{"a":1.5e3,"b" : -0 , "c":"\u00e9\ud83d\ude00\/","d":null}"#).unwrap();
        assert_eq!(get(&o, "a"), Some(&Value::Num(1500.0)));
        assert_eq!(get(&o, "b").and_then(Value::as_f64), Some(0.0));
        assert_eq!(get(&o, "c").and_then(Value::as_str), Some("é😀/"));
        assert_eq!(get(&o, "d"), Some(&Value::Null));
        assert_eq!(parse_object("{}").unwrap(), Object::new());
        // Last duplicate wins.
        let o = parse_object(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(get(&o, "a"), Some(&Value::Num(2.0)));
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "",
            "{",
            "[1]",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":"x}"#,
            r#"{"a":"\q"}"#,
            r#"{"a":"\ud800"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":1} x"#,
            r#"{a:1}"#,
        ] {
            assert!(parse_object(bad).is_err(), "accepted {bad:?}");
        }
    }
}
