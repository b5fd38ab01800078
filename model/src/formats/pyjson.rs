//! Numbers written the way Python's `json.dumps` writes them, so that metadata we serialise is
//! byte-identical to what bitsandbytes writes for the same values.

/// `repr(float(x))`: the shortest digits that round-trip, in fixed notation for decimal exponents
/// in `-4..16` (always with a fractional part, e.g. `1.0`) and scientific notation otherwise
/// (`1e-05`, `1.5e+16`); `NaN`/`Infinity` as `json.dumps` writes them.
pub(crate) fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.2345e-5".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    if (-4..16).contains(&exp) {
        let fixed = format!("{x}");
        if fixed.contains('.') { fixed } else { format!("{fixed}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn matches_python_repr() {
        // Expected strings are what CPython 3.11 prints for repr(float).
        let cases = [
            (0.1, "0.1"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (123456789.0, "123456789.0"),
            (f64::from(0.012_345_679_f32), "0.012345679104328156"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (2.5e-300, "2.5e-300"),
        ];
        for (x, want) in cases {
            assert_eq!(py_float(x), want, "{x:e}");
        }
    }
}
