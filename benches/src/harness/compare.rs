//! Compare two result files by benchmark id: a regression is a median time more than `threshold`
//! (a fraction: 0.05 = 5 %) above the old one. Plain Rust, no GPU.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::record::Record;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the threshold either way.
    Same,
    /// Slower by more than the threshold.
    Regressed,
    /// Faster by more than the threshold.
    Improved,
}

/// One id measured on both sides.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: String,
    pub old_us: f64,
    pub new_us: f64,
    /// `new_us / old_us - 1` (positive: slower).
    pub change: f64,
    pub verdict: Verdict,
}

/// The outcome of a comparison.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub threshold: f64,
    /// Ids measured on both sides, in id order.
    pub rows: Vec<Row>,
    /// Ids present in only one file.
    pub only_old: Vec<String>,
    pub only_new: Vec<String>,
    /// Ids present on both sides but without a timing on at least one (`(id, why)`).
    pub unmeasured: Vec<(String, String)>,
    /// Ids that occur more than once in a file (the last occurrence is used).
    pub duplicates: Vec<String>,
    /// Set when the two files were measured on different devices (timings then differ anyway).
    pub device_note: Option<String>,
}

fn by_id<'a>(
    recs: &'a [Record],
    side: &str,
    dups: &mut Vec<String>,
) -> BTreeMap<&'a str, &'a Record> {
    let mut m = BTreeMap::new();
    for r in recs {
        if m.insert(r.id.as_str(), r).is_some() {
            dups.push(format!("{} ({side})", r.id));
        }
    }
    m
}

fn devices(recs: &[Record]) -> Vec<&str> {
    let mut d: Vec<&str> = recs
        .iter()
        .map(|r| r.device.as_str())
        .filter(|d| !d.is_empty())
        .collect();
    d.sort_unstable();
    d.dedup();
    d
}

fn why_unmeasured(r: &Record) -> String {
    r.error.clone().unwrap_or_else(|| "no median_us".into())
}

/// Compares `old` and `new` (see the module doc). `threshold` must be finite and >= 0.
pub fn compare(old: &[Record], new: &[Record], threshold: f64) -> Report {
    let mut rep = Report {
        threshold,
        ..Report::default()
    };
    let o = by_id(old, "old", &mut rep.duplicates);
    let n = by_id(new, "new", &mut rep.duplicates);
    for (id, ro) in &o {
        let Some(rn) = n.get(id) else {
            rep.only_old.push(id.to_string());
            continue;
        };
        match (ro.measured(), rn.measured()) {
            (true, true) => {
                let (a, b) = (ro.median_us.unwrap_or(0.0), rn.median_us.unwrap_or(0.0));
                let change = b / a - 1.0;
                // Compared as products, so that a change of exactly the threshold is not flagged
                // by a rounding error of the division.
                let verdict = if b > a * (1.0 + threshold) {
                    Verdict::Regressed
                } else if b < a * (1.0 - threshold) {
                    Verdict::Improved
                } else {
                    Verdict::Same
                };
                rep.rows.push(Row {
                    id: id.to_string(),
                    old_us: a,
                    new_us: b,
                    change,
                    verdict,
                });
            }
            (mo, mn) => {
                let mut why = Vec::new();
                if !mo {
                    why.push(format!("old: {}", why_unmeasured(ro)));
                }
                if !mn {
                    why.push(format!("new: {}", why_unmeasured(rn)));
                }
                rep.unmeasured.push((id.to_string(), why.join("; ")));
            }
        }
    }
    rep.only_new = n
        .keys()
        .filter(|id| !o.contains_key(*id))
        .map(|id| id.to_string())
        .collect();
    let (dold, dnew) = (devices(old), devices(new));
    if !dold.is_empty() && !dnew.is_empty() && dold != dnew {
        rep.device_note = Some(format!("different devices: old {:?}, new {:?}", dold, dnew));
    }
    rep
}

impl Report {
    /// Ids that regressed.
    pub fn regressions(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Regressed)
    }

    /// Whether any id regressed (the `compare` command then exits 1).
    pub fn regressed(&self) -> bool {
        self.regressions().next().is_some()
    }

    /// A plain-text table and the lists of unmatched ids.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let w = self
            .rows
            .iter()
            .map(|r| r.id.len())
            .chain([2])
            .max()
            .unwrap_or(2);
        let _ = writeln!(
            s,
            "{:<w$}  {:>12}  {:>12}  {:>8}  verdict (threshold {:.1} %)",
            "id",
            "old_us",
            "new_us",
            "change",
            self.threshold * 100.0
        );
        for r in &self.rows {
            let v = match r.verdict {
                Verdict::Same => "ok",
                Verdict::Regressed => "REGRESSED",
                Verdict::Improved => "improved",
            };
            let _ = writeln!(
                s,
                "{:<w$}  {:>12.3}  {:>12.3}  {:>+7.1}%  {v}",
                r.id,
                r.old_us,
                r.new_us,
                r.change * 100.0
            );
        }
        let list = |s: &mut String, title: &str, ids: &[String]| {
            if !ids.is_empty() {
                let _ = writeln!(s, "{title} ({}): {}", ids.len(), ids.join(", "));
            }
        };
        list(&mut s, "only in OLD", &self.only_old);
        list(&mut s, "only in NEW", &self.only_new);
        list(&mut s, "duplicate ids, last one used", &self.duplicates);
        for (id, why) in &self.unmeasured {
            let _ = writeln!(s, "not compared: {id}: {why}");
        }
        if let Some(d) = &self.device_note {
            let _ = writeln!(s, "note: {d}");
        }
        let n_reg = self.regressions().count();
        let _ = writeln!(
            s,
            "{} compared, {} regressed, {} improved",
            self.rows.len(),
            n_reg,
            self.rows
                .iter()
                .filter(|r| r.verdict == Verdict::Improved)
                .count()
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, us: Option<f64>) -> Record {
        Record {
            id: id.into(),
            median_us: us,
            device: "dev A".into(),
            error: us.is_none().then(|| "unavailable: x".to_string()),
            ..Record::default()
        }
    }

    #[test]
    fn flags_only_regressions_beyond_the_threshold() {
        let old = [
            rec("a", Some(100.0)),
            rec("b", Some(100.0)),
            rec("c", Some(100.0)),
            rec("d", Some(100.0)),
            rec("gone", Some(1.0)),
            rec("u", None),
        ];
        let new = [
            rec("a", Some(105.0)), // exactly at the threshold: not a regression
            rec("b", Some(105.1)),
            rec("c", Some(90.0)),
            rec("d", Some(97.0)),
            rec("added", Some(1.0)),
            rec("u", Some(3.0)),
        ];
        let r = compare(&old, &new, 0.05);
        let v: Vec<(&str, Verdict)> = r.rows.iter().map(|r| (r.id.as_str(), r.verdict)).collect();
        assert_eq!(
            v,
            [
                ("a", Verdict::Same),
                ("b", Verdict::Regressed),
                ("c", Verdict::Improved),
                ("d", Verdict::Same)
            ]
        );
        assert!(r.regressed());
        assert_eq!(r.only_old, ["gone"]);
        assert_eq!(r.only_new, ["added"]);
        assert_eq!(r.unmeasured.len(), 1);
        assert!(
            r.unmeasured[0].1.starts_with("old: unavailable"),
            "{:?}",
            r.unmeasured
        );
        assert_eq!(r.device_note, None);
        let text = r.render();
        assert!(text.contains("REGRESSED"), "{text}");
        assert!(text.contains("only in OLD (1): gone"), "{text}");
        assert!(
            text.contains("4 compared, 1 regressed, 1 improved"),
            "{text}"
        );
    }

    #[test]
    fn no_regression_when_everything_is_within_the_threshold() {
        let old = [rec("a", Some(10.0)), rec("b", Some(20.0))];
        let new = [rec("b", Some(20.9)), rec("a", Some(9.0))];
        let r = compare(&old, &new, 0.05);
        assert!(!r.regressed());
        assert_eq!(r.rows.len(), 2);
        // A looser threshold absorbs the same change, a tighter one flags it.
        assert!(!compare(&old, &[rec("a", Some(11.0))], 0.10).regressed());
        assert!(compare(&old, &[rec("a", Some(11.0))], 0.09).regressed());
    }

    #[test]
    fn notes_duplicates_and_different_devices() {
        let old = [rec("a", Some(10.0)), rec("a", Some(30.0))];
        let mut n = rec("a", Some(20.0));
        n.device = "dev B".into();
        let r = compare(&old, &[n], 0.05);
        assert_eq!(r.duplicates, ["a (old)"]);
        // The last duplicate (30) is used: 20 is faster.
        assert_eq!(r.rows[0].verdict, Verdict::Improved);
        assert!(r.device_note.as_deref().unwrap().contains("dev B"));
    }
}
