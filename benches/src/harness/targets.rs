//! The performance targets of the kernel issues, judged from one results file: every ratio is
//! between two records of the same run (same device, same clocks), never against a number from
//! elsewhere. Plain Rust, tested on the CPU; `gpu-bench targets FILE` and the end of `gpu-bench
//! run` print them.
//!
//! | target | value | pass |
//! |---|---|---|
//! | `gemm_bf16_4096` | cuBLAS time / ours, bf16 NT 4096³ (= our TFLOP/s / cuBLAS's) | >= 0.6 |
//! | `gemm_bf16_8192` | the same at 8192³ | >= 0.6 |
//! | `nf4_m1_weight_bw` | NF4 M=1 8192x8192: (packed + f32 absmax bytes) / time, over the d2d copy's GB/s | >= 0.8 |
//! | `nf4_m16_speedup` | NF4 M=16 8192x8192: cuBLAS dense bf16 time / ours | >= 3 |
//! | `nf4_m4096_vs_cublas` | NF4 M=4096 8192x8192: cuBLAS dense bf16 time / ours | >= 0.85 |
//!
//! Besides the targets, every record that has a dense baseline ([`spec::baseline_of`]) gets an
//! informational *ratio* (baseline time / ours: above 1 is faster than cuBLAS).

use std::fmt::Write as _;

use super::json::{self, Value};
use super::record::Record;
use super::spec::{self, Nf4ScaleForm};

/// The id of the copy ceiling the bandwidth target divides by.
pub const COPY_ID: &str = "copy/d2d/256MiB";

/// Outcome of one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// A record it needs is absent or has no timing (the reason is in `missing`).
    Missing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Missing => "MISSING",
        }
    }
}

/// One judged target (or, with `threshold` None, an informational ratio).
#[derive(Clone, Debug, PartialEq)]
pub struct Judged {
    /// Short stable name, e.g. `gemm_bf16_4096`.
    pub name: String,
    /// What `value` is.
    pub what: String,
    /// Our record's id.
    pub ours: String,
    /// The id it is divided by (cuBLAS or the copy).
    pub reference: String,
    pub value: Option<f64>,
    /// Pass when `value >= threshold`; None for an informational ratio.
    pub threshold: Option<f64>,
    pub verdict: Option<Verdict>,
    /// Why there is no value.
    pub missing: Option<String>,
}

/// The last record with this id (as `compare` does), if any.
fn find<'a>(recs: &'a [Record], id: &str) -> Option<&'a Record> {
    recs.iter().rev().find(|r| r.id == id)
}

/// The median time of `id`, or why there is none.
fn median(recs: &[Record], id: &str) -> Result<f64, String> {
    let r = find(recs, id).ok_or_else(|| format!("{id}: not in the results"))?;
    match r.median_us {
        Some(m) if m > 0.0 && r.error.is_none() => Ok(m),
        _ => Err(format!(
            "{id}: {}",
            r.error.as_deref().unwrap_or("no timing")
        )),
    }
}

fn judge(
    name: &str,
    what: &str,
    ours: String,
    reference: String,
    value: Result<f64, String>,
    threshold: Option<f64>,
) -> Judged {
    let (value, missing) = match value {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let verdict = threshold.map(|t| match value {
        Some(v) if v >= t => Verdict::Pass,
        Some(_) => Verdict::Fail,
        None => Verdict::Missing,
    });
    Judged {
        name: name.into(),
        what: what.into(),
        ours,
        reference,
        value,
        threshold,
        verdict,
        missing,
    }
}

/// `reference time / our time` (both from `recs`).
fn speedup(recs: &[Record], ours: &str, reference: &str) -> Result<f64, String> {
    let (o, r) = (median(recs, ours), median(recs, reference));
    match (o, r) {
        (Ok(o), Ok(r)) => Ok(r / o),
        (Err(a), Err(b)) => Err(format!("{a}; {b}")),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Judges the issue targets on `recs` (see the module doc), in the table's order.
pub fn evaluate(recs: &[Record]) -> Vec<Judged> {
    let mut out = Vec::new();
    for s in [4096u64, 8192] {
        let ours = spec::gemm_bf16(spec::GemmLayout::Nt, s, s, s).id();
        let base = spec::cublas_bf16(s, s, s).id();
        let v = speedup(recs, &ours, &base);
        out.push(judge(
            &format!("gemm_bf16_{s}"),
            "bf16 NT GEMM throughput / cuBLAS's",
            ours,
            base,
            v,
            Some(0.6),
        ));
    }
    let (n, k) = (8192u64, 8192u64);
    let m1 = spec::nf4_matmul(1, n, k, Nf4ScaleForm::F32).id();
    let weight = spec::nf4_weight_bytes(n, k, Nf4ScaleForm::F32) as f64;
    let bw = median(recs, &m1).and_then(|us| {
        let copy = find(recs, COPY_ID)
            .filter(|r| r.measured() && r.error.is_none() && r.bytes > 0)
            .ok_or_else(|| format!("{COPY_ID}: not measured"))?;
        let copy_bps = copy.bytes as f64 / copy.median_us.unwrap_or(f64::INFINITY);
        Ok(weight / us / copy_bps)
    });
    out.push(judge(
        "nf4_m1_weight_bw",
        "weight (packed + absmax) bytes/s / the d2d copy's bytes/s",
        m1,
        COPY_ID.into(),
        bw,
        Some(0.8),
    ));
    for (m, name, what, t) in [
        (
            16u64,
            "nf4_m16_speedup",
            "cuBLAS dense bf16 time / NF4 time",
            3.0,
        ),
        (
            4096,
            "nf4_m4096_vs_cublas",
            "NF4 throughput / cuBLAS dense bf16's",
            0.85,
        ),
    ] {
        let ours = spec::nf4_matmul(m, n, k, Nf4ScaleForm::F32).id();
        let base = spec::cublas_bf16(m, n, k).id();
        let v = speedup(recs, &ours, &base);
        out.push(judge(name, what, ours, base, v, Some(t)));
    }
    out
}

/// An informational ratio (baseline time / ours) for every record of `recs` that has a dense
/// baseline, in file order.
pub fn ratios(recs: &[Record]) -> Vec<Judged> {
    let mut seen = std::collections::BTreeSet::new();
    recs.iter()
        .filter_map(|r| Some((r, spec::baseline_of(&r.id)?)))
        .filter(|(r, _)| seen.insert(r.id.clone()))
        .map(|(r, base)| {
            let v = speedup(recs, &r.id, &base);
            judge(
                &r.id,
                "cuBLAS bf16 time at the same shape / ours",
                r.id.clone(),
                base,
                v,
                None,
            )
        })
        .collect()
}

impl Judged {
    /// One JSON line: `kind` is `target` (with threshold and verdict) or `ratio`.
    pub fn to_json(&self) -> String {
        let kind = if self.threshold.is_some() {
            "target"
        } else {
            "ratio"
        };
        json::write_object(&[
            ("kind", Value::str(kind)),
            ("name", Value::str(&self.name)),
            ("what", Value::str(&self.what)),
            ("ours", Value::str(&self.ours)),
            ("reference", Value::str(&self.reference)),
            (
                "value",
                Value::opt_num(self.value.map(|v| (v * 1e4).round() / 1e4)),
            ),
            ("threshold", Value::opt_num(self.threshold)),
            ("verdict", Value::opt_str(self.verdict.map(Verdict::as_str))),
            ("missing", Value::opt_str(self.missing.as_deref())),
        ])
    }
}

/// The targets table, then the ratios table (plain text).
pub fn render(targets: &[Judged], ratios: &[Judged]) -> String {
    let mut s = String::new();
    let value = |j: &Judged| j.value.map_or("-".into(), |v| format!("{v:.3}"));
    let pass = targets
        .iter()
        .filter(|j| j.verdict == Some(Verdict::Pass))
        .count();
    let _ = writeln!(
        s,
        "targets ({pass} of {} pass; ratios from this run only):",
        targets.len()
    );
    let w = targets.iter().map(|j| j.name.len()).max().unwrap_or(4);
    for j in targets {
        let _ = writeln!(
            s,
            "  {:<7}  {:<w$}  {:>8} (need >= {})  {}  [{} vs {}]{}",
            j.verdict.map_or("-", Verdict::as_str),
            j.name,
            value(j),
            j.threshold.map_or("-".into(), |t| t.to_string()),
            j.what,
            j.ours,
            j.reference,
            j.missing
                .as_deref()
                .map_or(String::new(), |m| format!(": {m}"))
        );
    }
    if !ratios.is_empty() {
        let _ = writeln!(s, "ratios to cuBLAS bf16 at the same shape (> 1: faster):");
        let w = ratios.iter().map(|j| j.name.len()).max().unwrap_or(4);
        for j in ratios {
            let _ = writeln!(
                s,
                "  {:<w$}  {:>8}  vs {}{}",
                j.name,
                value(j),
                j.reference,
                j.missing
                    .as_deref()
                    .map_or(String::new(), |m| format!(": {m}"))
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::record::Summary;

    fn rec(id: &str, us: f64, bytes: u64) -> Record {
        let mut r = Record {
            id: id.into(),
            bytes,
            ..Record::default()
        };
        r.set_timing(Summary {
            median: us,
            p10: us,
            p90: us,
        });
        r
    }

    fn full_run(
        ours_gemm_us: f64,
        nf4_m1_us: f64,
        nf4_m16_us: f64,
        nf4_m4096_us: f64,
    ) -> Vec<Record> {
        vec![
            // 512 MiB moved in 200 us: 2.684 TB/s.
            rec(COPY_ID, 200.0, 512 << 20),
            rec("cublas/bf16/4096x4096x4096", 200.0, 0),
            rec("cublas/bf16/8192x8192x8192", 1600.0, 0),
            rec("gemm/bf16_nt/4096x4096x4096", ours_gemm_us, 0),
            rec("gemm/bf16_nt/8192x8192x8192", 8.0 * ours_gemm_us, 0),
            rec("cublas/bf16/1x8192x8192", 60.0, 0),
            rec("nf4/matmul/1x8192x8192", nf4_m1_us, 0),
            rec("cublas/bf16/16x8192x8192", 60.0, 0),
            rec("nf4/matmul/16x8192x8192", nf4_m16_us, 0),
            rec("cublas/bf16/4096x8192x8192", 800.0, 0),
            rec("nf4/matmul/4096x8192x8192", nf4_m4096_us, 0),
        ]
    }

    fn verdicts(recs: &[Record]) -> Vec<(String, Verdict)> {
        evaluate(recs)
            .into_iter()
            .map(|j| (j.name, j.verdict.unwrap()))
            .collect()
    }

    #[test]
    fn thresholds_are_inclusive_and_ratios_come_from_the_same_file() {
        // GEMM at exactly 0.6x (200/0.6 us), NF4 M=1 weight traffic at exactly 0.8x the copy:
        // 37_748_736 bytes / (0.8 * 2_684_354.56 bytes/us) = 17.578125 us; M=16 at exactly 3x,
        // M=4096 at exactly 0.85x.
        let w = spec::nf4_weight_bytes(8192, 8192, Nf4ScaleForm::F32);
        assert_eq!(w, 32 * (1 << 20) + 4 * (1 << 20));
        let copy_bpus = (512u64 << 20) as f64 / 200.0;
        let m1_us = w as f64 / (0.8 * copy_bpus);
        let recs = full_run(200.0 / 0.6, m1_us, 20.0, 800.0 / 0.85);
        let j = evaluate(&recs);
        for t in &j {
            let v = t.value.unwrap();
            assert!((v - t.threshold.unwrap()).abs() < 1e-9, "{}: {v}", t.name);
        }
        // Exactly at the threshold passes unless rounding put it a hair below; nudge ours faster.
        let recs = full_run(
            200.0 / 0.6 - 1e-6,
            m1_us - 1e-6,
            20.0 - 1e-6,
            800.0 / 0.85 - 1e-6,
        );
        assert!(verdicts(&recs).iter().all(|(_, v)| *v == Verdict::Pass));
        // And a hair slower fails each one.
        let recs = full_run(
            200.0 / 0.6 + 1e-3,
            m1_us + 1e-3,
            20.0 + 1e-3,
            800.0 / 0.85 + 1e-3,
        );
        let v = verdicts(&recs);
        assert_eq!(v.len(), 5);
        assert!(v.iter().all(|(_, v)| *v == Verdict::Fail), "{v:?}");
    }

    #[test]
    fn values_follow_the_records() {
        let recs = full_run(250.0, 20.0, 15.0, 1000.0);
        let j = evaluate(&recs);
        let names: Vec<&str> = j.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gemm_bf16_4096",
                "gemm_bf16_8192",
                "nf4_m1_weight_bw",
                "nf4_m16_speedup",
                "nf4_m4096_vs_cublas"
            ]
        );
        assert!((j[0].value.unwrap() - 0.8).abs() < 1e-12);
        assert!((j[1].value.unwrap() - 0.8).abs() < 1e-12);
        // 37_748_736 B / 20 us = 1_887_436.8 B/us over 2_684_354.56 B/us.
        assert!((j[2].value.unwrap() - 0.703_125).abs() < 1e-12);
        assert!((j[3].value.unwrap() - 4.0).abs() < 1e-12);
        assert!((j[4].value.unwrap() - 0.8).abs() < 1e-12);
        let v: Vec<Verdict> = j.iter().map(|j| j.verdict.unwrap()).collect();
        use Verdict::*;
        assert_eq!(v, [Pass, Pass, Fail, Pass, Fail]);
        let text = render(&j, &ratios(&recs));
        assert!(text.contains("targets (3 of 5 pass"), "{text}");
        assert!(text.contains("FAIL     nf4_m4096_vs_cublas"), "{text}");
        let line = j[3].to_json();
        assert!(line.starts_with("{\"kind\": \"target\""), "{line}");
        assert!(line.contains("\"verdict\": \"PASS\""), "{line}");
        assert!(line.contains("\"value\": 4"), "{line}");
    }

    #[test]
    fn missing_or_failed_records_are_reported_not_judged() {
        let mut recs = full_run(250.0, 20.0, 15.0, 1000.0);
        recs.retain(|r| r.id != "cublas/bf16/8192x8192x8192");
        // A later record of the same id wins (a rerun appended to the file).
        let mut failed = rec("nf4/matmul/16x8192x8192", 1.0, 0);
        failed.median_us = None;
        failed.error = Some("nf4_matmul_skinny: launch failed".into());
        recs.push(failed);
        let mut unavailable = rec("cublas/bf16/4096x8192x8192", 1.0, 0);
        unavailable.median_us = None;
        unavailable.error = Some("unavailable: cuBLAS: not found".into());
        recs.push(unavailable);
        recs.retain(|r| r.id != COPY_ID);
        let j = evaluate(&recs);
        assert_eq!(j[0].verdict, Some(Verdict::Pass));
        for (i, why) in [
            (1, "cublas/bf16/8192x8192x8192: not in the results"),
            (2, "copy/d2d/256MiB: not measured"),
            (3, "launch failed"),
            (4, "unavailable: cuBLAS"),
        ] {
            assert_eq!(j[i].verdict, Some(Verdict::Missing), "{}", j[i].name);
            assert!(j[i].missing.as_deref().unwrap().contains(why), "{:?}", j[i]);
            assert_eq!(j[i].value, None);
        }
        assert!(render(&j, &[]).contains("MISSING"));
        assert!(
            evaluate(&[])
                .iter()
                .all(|j| j.verdict == Some(Verdict::Missing))
        );
    }

    #[test]
    fn ratios_pair_every_kernel_with_its_baseline() {
        let recs = vec![
            rec("cublas/bf16/16x2048x5632", 30.0, 0),
            rec("nf4/matmul/16x2048x5632", 10.0, 0),
            rec("nf4/matmul_dq/16x2048x5632", 12.0, 0),
            rec("cublas/bf16/16x8192x4096", 40.0, 0),
            rec("nf4/matmul_t/16x4096x8192", 20.0, 0),
            rec("gemm/bf16_nn/64x64x64", 2.0, 0),
            rec("softmax/f32_fwd/4096x32000", 100.0, 0),
        ];
        let r = ratios(&recs);
        let got: Vec<(&str, &str, Option<f64>)> = r
            .iter()
            .map(|j| (j.name.as_str(), j.reference.as_str(), j.value))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "nf4/matmul/16x2048x5632",
                    "cublas/bf16/16x2048x5632",
                    Some(3.0)
                ),
                (
                    "nf4/matmul_dq/16x2048x5632",
                    "cublas/bf16/16x2048x5632",
                    Some(2.5)
                ),
                (
                    "nf4/matmul_t/16x4096x8192",
                    "cublas/bf16/16x8192x4096",
                    Some(2.0)
                ),
                ("gemm/bf16_nn/64x64x64", "cublas/bf16/64x64x64", None),
            ]
        );
        assert!(
            r[3].missing
                .as_deref()
                .unwrap()
                .contains("not in the results")
        );
        assert!(r[0].to_json().starts_with("{\"kind\": \"ratio\""));
        assert!(r[0].to_json().contains("\"verdict\": null"));
    }
}
