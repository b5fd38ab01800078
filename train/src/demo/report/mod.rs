//! The demo's report: `report.md` with tables and verdicts, SVG plots under `plots/`, and the short
//! summary table printed at the end of a run. Everything is drawn from [`DemoResults`] alone, so a
//! saved `report.json` can be re-rendered; every verdict is computed from the numbers.

mod markdown;
mod plots;
mod sections;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use brainstacks_tensor::io::write_atomic_bytes;

use crate::demo::results::{DemoResults, DomainRunSummary, ForgettingMatrix, RoundSummary, RunSummary};
use crate::{Error, Result};

/// The report's file name inside the demo directory.
pub const REPORT_FILE: &str = "report.md";
/// The folder (inside the demo directory) that holds the plots.
pub const PLOTS_DIR: &str = "plots";

/// One plot: its file name under [`PLOTS_DIR`] and the SVG, `None` when there was nothing to draw.
struct Plot {
    file: &'static str,
    svg: Option<String>,
}

/// Writes `dir/report.md` and the SVG plots it links (`dir/plots/*.svg`), every file atomically.
/// Returns the paths written (the plots first, the report last). A plot with no data is skipped and
/// the report says so.
///
/// ```no_run
/// # fn demo(results: &brainstacks_train::demo::results::DemoResults) -> brainstacks_train::Result<()> {
/// let written = brainstacks_train::demo::report::write_report(results, std::path::Path::new("demo-out"))?;
/// assert!(written.last().unwrap().ends_with("report.md"));
/// # Ok(()) }
/// ```
pub fn write_report(results: &DemoResults, dir: &Path) -> Result<Vec<PathBuf>> {
    let plots_dir = dir.join(PLOTS_DIR);
    std::fs::create_dir_all(&plots_dir)
        .map_err(|e| Error::Invalid { what: format!("report directory {}", plots_dir.display()), msg: e.to_string() })?;
    let plots = [
        Plot { file: "pretrain_loss.svg", svg: plots::pretrain_curve(results)? },
        Plot { file: "rounds.svg", svg: plots::rounds(results)? },
        Plot { file: "moe_vs_single_lora.svg", svg: plots::moe_vs_single(results)? },
        Plot { file: "forgetting_drift.svg", svg: plots::forgetting_drift(results)? },
        Plot { file: "router_weights.svg", svg: plots::router_weights(results)? },
        Plot { file: "modes.svg", svg: plots::modes(results)? },
    ];
    let mut written = Vec::new();
    for plot in &plots {
        if let Some(svg) = &plot.svg {
            let path = plots_dir.join(plot.file);
            write_atomic_bytes(&path, svg.as_bytes())?;
            written.push(path);
        }
    }
    let drawn = |file: &str| plots.iter().any(|p| p.file == file && p.svg.is_some());
    let text = sections::report_markdown(results, &drawn);
    let path = dir.join(REPORT_FILE);
    write_atomic_bytes(&path, text.as_bytes())?;
    written.push(path);
    Ok(written)
}

/// The short terminal summary printed at the end of the demo: one line per domain (after a header
/// and a rule) with the method's best validation loss, the loss at the end of the curriculum with
/// and without null space, and the three compositions' losses. Plain text, columns aligned; `-` where a number is absent.
///
/// ```
/// # fn show(results: &brainstacks_train::demo::results::DemoResults) {
/// println!("{}", brainstacks_train::demo::report::summary_table(results));
/// # }
/// ```
pub fn summary_table(results: &DemoResults) -> String {
    use markdown::opt_num;
    let header = ["domain", "rounds", "best val", "end (null space)", "end (without)", "base", "ungated", "routed"];
    // A domain's loss once the whole curriculum is trained: the last forgetting row.
    let end = |run: &RunSummary, d: &str| -> Option<f64> {
        let j = run.forgetting.domains.iter().position(|x| x == d)?;
        run.forgetting.rows.last().and_then(|row| row.get(j)).copied()
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for d in domain_order(results) {
        let run = results.main_run.domains.iter().find(|x| x.domain == d);
        let mode = results.modes.iter().find(|m| m.domain == d);
        rows.push(vec![
            d.clone(),
            run.map(|x| x.rounds.len().to_string()).unwrap_or_else(|| "-".into()),
            opt_num(run.and_then(best_val)),
            opt_num(end(&results.main_run, &d)),
            opt_num(end(&results.no_null_space, &d)),
            opt_num(mode.map(|m| m.base)),
            opt_num(mode.map(|m| m.ungated)),
            opt_num(mode.map(|m| m.routed)),
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].len()]).max().unwrap_or(0)).collect();
    // The domain column reads left to right; numbers line up on the right.
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (s, &w))| if c == 0 { format!("{s:<w$}") } else { format!("{s:>w$}") })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = line(&header.map(String::from));
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// Every domain the results mention, in first-seen order: the generated data, then the runs, the
/// composition table and the router (a domain missing from one phase still gets its row).
fn domain_order(r: &DemoResults) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let names = r
        .data
        .iter()
        .map(|d| &d.domain)
        .chain(r.main_run.domains.iter().map(|d| &d.domain))
        .chain(r.single_lora.domains.iter().map(|d| &d.domain))
        .chain(r.modes.iter().map(|m| &m.domain))
        .chain(r.router_weights.iter().map(|w| &w.domain));
    for name in names {
        if !order.contains(name) {
            order.push(name.clone());
        }
    }
    order
}

/// The domain's first round (round number 1, else the earliest recorded).
fn round_one(d: &DomainRunSummary) -> Option<&RoundSummary> {
    d.rounds.iter().find(|x| x.round == 1).or_else(|| d.rounds.iter().min_by_key(|x| x.round))
}

/// The lowest finite best validation loss over the domain's rounds.
fn best_val(d: &DomainRunSummary) -> Option<f64> {
    d.rounds.iter().map(|x| x.best_val).filter(|v| v.is_finite()).reduce(f64::min)
}

/// Per earlier domain `j`: final loss on `j` minus the loss right after training `j` — the terms
/// [`ForgettingMatrix::mean_forgetting`] averages, read without indexing so a ragged matrix (from
/// a hand-edited `report.json`) drops terms instead of panicking.
fn drifts(m: &ForgettingMatrix) -> Vec<(String, f64)> {
    let n = m.rows.len();
    let Some(last) = m.rows.last().filter(|_| n >= 2) else {
        return Vec::new();
    };
    (0..n - 1)
        .filter_map(|j| {
            let drift = last.get(j)? - m.rows[j].get(j)?;
            Some((m.domains.get(j).cloned().unwrap_or_else(|| format!("domain {j}")), drift))
        })
        .collect()
}

/// The mean of [`drifts`]; equals [`ForgettingMatrix::mean_forgetting`] on a well-formed matrix.
fn mean_drift(m: &ForgettingMatrix) -> Option<f64> {
    let d = drifts(m);
    (!d.is_empty()).then(|| d.iter().map(|x| x.1).sum::<f64>() / d.len() as f64)
}

/// "forgetting with null space <= without: yes/no (x vs y)", from the two runs' mean forgetting.
pub fn forgetting_verdict(r: &DemoResults) -> String {
    match (mean_drift(&r.main_run.forgetting), mean_drift(&r.no_null_space.forgetting)) {
        (Some(with), Some(without)) => format!(
            "forgetting with null space <= without: {} ({} vs {})",
            markdown::yes_no(with <= without),
            markdown::num(with),
            markdown::num(without)
        ),
        _ => "forgetting with null space <= without: n/a (a run reached fewer than two domains)".into(),
    }
}

/// "routed <= ungated on every domain: yes/no", naming each domain where routing lost.
pub fn modes_verdict(r: &DemoResults) -> String {
    if r.modes.is_empty() {
        return "routed <= ungated on every domain: n/a (no domain was measured)".into();
    }
    // A NaN comparison is false, so a NaN loss is listed as an exception rather than a win.
    let exceptions: Vec<String> = r
        .modes
        .iter()
        .filter(|m| !matches!(m.routed.partial_cmp(&m.ungated), Some(Ordering::Less | Ordering::Equal)))
        .map(|m| format!("{} ({} > {})", m.domain, markdown::num(m.routed), markdown::num(m.ungated)))
        .collect();
    if exceptions.is_empty() {
        "routed <= ungated on every domain: yes".into()
    } else {
        format!("routed <= ungated on every domain: no (exceptions: {})", exceptions.join(", "))
    }
}
