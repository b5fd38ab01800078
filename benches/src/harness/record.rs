//! One benchmark result (one JSON line), its statistics, and reading a results file back.
//!
//! Schema (keys in this order; `null` where a value does not apply or was not measured):
//!
//! | key | meaning |
//! |---|---|
//! | `id` | stable benchmark id, `<kernel>/<variant>/<shape>`, e.g. `cublas/bf16/4096x4096x4096` |
//! | `kernel`, `shape`, `dtype` | the parts of the id, spelled out |
//! | `median_us`, `p10_us`, `p90_us` | GPU time per call (CUDA events), over `reps` samples |
//! | `reps`, `inner` | samples taken; calls per sample (short kernels are timed in batches) |
//! | `bytes`, `flops` | bytes moved (read + written) and floating-point operations per call |
//! | `gbps`, `tflops` | `bytes / median`, `flops / median` (null when the count is 0) |
//! | `frac_copy_bw` | `gbps` / the device-to-device copy's GB/s measured in the same run |
//! | `frac_cublas` | `tflops` / the best cuBLAS bf16 TFLOP/s measured in the same run |
//! | `device`, `commit`, `date` | where, at what source, when (UTC) |
//! | `error` | why there is no timing (a failure, or `unavailable: ...`); null when measured |

use super::json::{self, Object, Value};

/// Quantiles of a set of samples (linear interpolation between order statistics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
}

/// The `q`-quantile (0 <= q <= 1) of sorted, non-empty `s`: interpolates linearly between the two
/// order statistics around position `q * (n - 1)`.
pub fn quantile(s: &[f64], q: f64) -> f64 {
    debug_assert!(!s.is_empty() && (0.0..=1.0).contains(&q));
    let pos = q * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

/// Median, 10th and 90th percentile of `samples`; `None` if there are none or any is not finite.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    Some(Summary {
        median: quantile(&s, 0.5),
        p10: quantile(&s, 0.1),
        p90: quantile(&s, 0.9),
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch (proleptic Gregorian, UTC).
pub fn utc_timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil date from a day count (Howard Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The current time as [`utc_timestamp`].
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_timestamp(secs)
}

/// One result line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    pub id: String,
    pub kernel: String,
    pub shape: String,
    pub dtype: String,
    pub median_us: Option<f64>,
    pub p10_us: Option<f64>,
    pub p90_us: Option<f64>,
    pub reps: u64,
    pub inner: u64,
    pub bytes: u64,
    pub flops: u64,
    pub gbps: Option<f64>,
    pub tflops: Option<f64>,
    pub frac_copy_bw: Option<f64>,
    pub frac_cublas: Option<f64>,
    pub device: String,
    pub commit: Option<String>,
    pub date: String,
    pub error: Option<String>,
}

/// Rounds to `digits` decimals (for readable files; far below the timing noise).
fn round(x: Option<f64>, digits: i32) -> Option<f64> {
    let p = 10f64.powi(digits);
    x.map(|v| (v * p).round() / p)
}

impl Record {
    /// Sets the timings from a summary of per-call microseconds and derives GB/s and TFLOP/s.
    pub fn set_timing(&mut self, s: Summary) {
        self.median_us = Some(s.median);
        self.p10_us = Some(s.p10);
        self.p90_us = Some(s.p90);
        let per_s = |count: u64| (count > 0 && s.median > 0.0).then(|| count as f64 / s.median);
        // count / us = count * 1e6 / s: GB/s = bytes / us / 1e3, TFLOP/s = flops / us / 1e6.
        self.gbps = per_s(self.bytes).map(|x| x / 1e3);
        self.tflops = per_s(self.flops).map(|x| x / 1e6);
    }

    /// Sets the fractions of the ceilings (`None` where a ceiling or a rate is missing).
    pub fn set_fractions(&mut self, copy_gbps: Option<f64>, cublas_tflops: Option<f64>) {
        let frac = |x: Option<f64>, c: Option<f64>| match (x, c) {
            (Some(x), Some(c)) if c > 0.0 => Some(x / c),
            _ => None,
        };
        self.frac_copy_bw = frac(self.gbps, copy_gbps);
        self.frac_cublas = frac(self.tflops, cublas_tflops);
    }

    /// Whether this record holds a timing.
    pub fn measured(&self) -> bool {
        self.median_us.is_some_and(|m| m > 0.0)
    }

    /// One JSON line (no newline).
    pub fn to_json(&self) -> String {
        let n = |x: u64| Value::num(x as f64);
        json::write_object(&[
            ("id", Value::str(&self.id)),
            ("kernel", Value::str(&self.kernel)),
            ("shape", Value::str(&self.shape)),
            ("dtype", Value::str(&self.dtype)),
            ("median_us", Value::opt_num(round(self.median_us, 3))),
            ("p10_us", Value::opt_num(round(self.p10_us, 3))),
            ("p90_us", Value::opt_num(round(self.p90_us, 3))),
            ("reps", n(self.reps)),
            ("inner", n(self.inner)),
            ("bytes", n(self.bytes)),
            ("flops", n(self.flops)),
            ("gbps", Value::opt_num(round(self.gbps, 1))),
            ("tflops", Value::opt_num(round(self.tflops, 2))),
            ("frac_copy_bw", Value::opt_num(round(self.frac_copy_bw, 4))),
            ("frac_cublas", Value::opt_num(round(self.frac_cublas, 4))),
            ("device", Value::str(&self.device)),
            ("commit", Value::opt_str(self.commit.as_deref())),
            ("date", Value::str(&self.date)),
            ("error", Value::opt_str(self.error.as_deref())),
        ])
    }

    /// Reads a record back. Only `id` is required; unknown keys are ignored, so older and newer
    /// files stay comparable.
    pub fn from_object(o: &Object) -> Result<Self, String> {
        let s = |k: &str| json::get(o, k).and_then(Value::as_str).map(str::to_string);
        let f = |k: &str| json::get(o, k).and_then(Value::as_f64);
        let u = |k: &str| f(k).filter(|x| *x >= 0.0).map_or(0, |x| x as u64);
        let id = s("id").ok_or("no string \"id\"")?;
        if id.is_empty() {
            return Err("empty \"id\"".into());
        }
        Ok(Self {
            id,
            kernel: s("kernel").unwrap_or_default(),
            shape: s("shape").unwrap_or_default(),
            dtype: s("dtype").unwrap_or_default(),
            median_us: f("median_us"),
            p10_us: f("p10_us"),
            p90_us: f("p90_us"),
            reps: u("reps"),
            inner: u("inner"),
            bytes: u("bytes"),
            flops: u("flops"),
            gbps: f("gbps"),
            tflops: f("tflops"),
            frac_copy_bw: f("frac_copy_bw"),
            frac_cublas: f("frac_cublas"),
            device: s("device").unwrap_or_default(),
            commit: s("commit"),
            date: s("date").unwrap_or_default(),
            error: s("error"),
        })
    }
}

/// Parses a JSON-lines results file (blank lines skipped); errors name the line.
pub fn parse_jsonl(text: &str) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec = json::parse_object(line)
            .and_then(|o| Record::from_object(&o))
            .map_err(|e| format!("line {}: {e}", i + 1))?;
        out.push(rec);
    }
    Ok(out)
}

/// Reads and parses a results file; errors name the file.
pub fn read_jsonl(path: &std::path::Path) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse_jsonl(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A plain-text table of results: time, rates and fractions of the ceilings, or the error.
pub fn table(recs: &[Record]) -> String {
    use std::fmt::Write as _;
    let w = recs
        .iter()
        .map(|r| r.id.len())
        .chain([2])
        .max()
        .unwrap_or(2);
    let mut s = format!(
        "{:<w$}  {:>11}  {:>11}  {:>11}  {:>8}  {:>8}  {:>6}  {:>7}\n",
        "id", "median_us", "p10_us", "p90_us", "GB/s", "TFLOP/s", "%copy", "%cublas"
    );
    let num = |x: Option<f64>, d: usize| x.map_or("-".to_string(), |v| format!("{v:.d$}"));
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1}", v * 100.0));
    for r in recs {
        if let Some(e) = r.error.as_deref().filter(|_| !r.measured()) {
            let _ = writeln!(s, "{:<w$}  {e}", r.id);
            continue;
        }
        let _ = writeln!(
            s,
            "{:<w$}  {:>11}  {:>11}  {:>11}  {:>8}  {:>8}  {:>6}  {:>7}",
            r.id,
            num(r.median_us, 3),
            num(r.p10_us, 3),
            num(r.p90_us, 3),
            num(r.gbps, 1),
            num(r.tflops, 1),
            pct(r.frac_copy_bw),
            pct(r.frac_cublas)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        let s = summarize(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.p10, s.p90), (3.0, 1.4, 4.6));
        let s = summarize(&[2.0, 1.0]).unwrap();
        assert_eq!(s.median, 1.5);
        let s = summarize(&[7.0]).unwrap();
        assert_eq!((s.median, s.p10, s.p90), (7.0, 7.0, 7.0));
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(utc_timestamp(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_760_724), "2026-11-27T06:25:24Z");
    }

    fn sample() -> Record {
        let mut r = Record {
            id: "cast/f32_bf16/16M".into(),
            kernel: "cast".into(),
            shape: "16M".into(),
            dtype: "f32_bf16".into(),
            reps: 50,
            inner: 40,
            bytes: 6 << 24,
            flops: 0,
            device: "cuda:0 NVIDIA H100 (sm_90), driver CUDA 13.0".into(),
            date: "2026-11-27T06:25:24Z".into(),
            ..Record::default()
        };
        r.set_timing(Summary {
            median: 50.0,
            p10: 49.0,
            p90: 52.5,
        });
        r
    }

    #[test]
    fn rates_and_fractions_follow_the_median() {
        let mut r = sample();
        // 100_663_296 bytes in 50 us = 2013.27 GB/s; no flops, so no TFLOP/s.
        assert!((r.gbps.unwrap() - 2_013.265_92).abs() < 1e-3);
        assert_eq!(r.tflops, None);
        r.set_fractions(Some(3000.0), Some(700.0));
        assert!((r.frac_copy_bw.unwrap() - 0.671_088_64).abs() < 1e-6);
        assert_eq!(r.frac_cublas, None);
        r.set_fractions(None, Some(700.0));
        assert_eq!(r.frac_copy_bw, None);
        let mut g = Record {
            flops: 2 * 4096u64.pow(3),
            ..Record::default()
        };
        g.set_timing(Summary {
            median: 200.0,
            p10: 200.0,
            p90: 200.0,
        });
        assert!((g.tflops.unwrap() - 687.194_767_36).abs() < 1e-6);
        g.set_fractions(None, Some(687.194_767_36));
        assert!((g.frac_cublas.unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn json_lines_round_trip() {
        let mut r = sample();
        r.set_fractions(Some(3000.0), None);
        r.commit = Some("2d4c8e3".into());
        let mut e = sample();
        e.id = "cublas/bf16/8192x8192x8192".into();
        e.median_us = None;
        e.p10_us = None;
        e.p90_us = None;
        e.gbps = None;
        e.error = Some("unavailable: cuBLAS: loading the library: \"no\"".into());
        let text = format!("{}\n\n{}\n", r.to_json(), e.to_json());
        let back = parse_jsonl(&text).unwrap();
        assert_eq!(back.len(), 2);
        // Values are rounded on the way out; these are already round.
        assert_eq!(back[0].median_us, Some(50.0));
        assert_eq!(back[0].gbps, Some(2013.3));
        assert_eq!(back[0].frac_copy_bw, Some(0.6711));
        assert_eq!(back[0].commit.as_deref(), Some("2d4c8e3"));
        assert_eq!(back[0].bytes, 6 << 24);
        assert!(back[0].measured());
        assert_eq!(back[1].error, e.error);
        assert!(!back[1].measured());
        assert_eq!(back[1].id, e.id);
        let err = parse_jsonl("{\"id\": \"a\"}\n{\"kernel\": \"x\"}\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        let t = table(&back);
        assert!(t.contains("2013.3"), "{t}");
        assert!(t.contains("67.1"), "{t}");
        assert!(
            t.contains("cublas/bf16/8192x8192x8192  unavailable: cuBLAS"),
            "{t}"
        );
    }
}
