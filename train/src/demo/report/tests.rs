//! The report on small hand-made results: sections, computed verdicts, plot files, empty data and
//! determinism.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::sections::HEADINGS;
use super::*;
use crate::demo::results::*;

fn curve(start: f64, steps: usize) -> Vec<CurvePoint> {
    (0..steps).map(|i| CurvePoint { step: i * 10, loss: start / (1.0 + i as f64 * 0.3) }).collect()
}

fn round(round: u32, best_val: f64, stop: &str) -> RoundSummary {
    RoundSummary {
        round,
        best_val,
        best_step: 20,
        steps_run: 40,
        stop: stop.into(),
        val_curve: curve(best_val + 1.0, 5),
        train_loss_last: best_val - 0.1,
    }
}

fn run(label: &str, null_space: bool, shift: f64, rows: Vec<Vec<f64>>) -> RunSummary {
    let names = ["chat", "code", "medical"];
    RunSummary {
        label: label.into(),
        dir: format!("runs/{label}"),
        experts: if label == "single LoRA" { 1 } else { 4 },
        top_k: 2,
        rank: 8,
        trainable_params_per_stack: 12_345,
        null_space,
        domains: names
            .iter()
            .enumerate()
            .map(|(i, d)| DomainRunSummary {
                domain: d.to_string(),
                baseline_val: 3.0 + i as f64 * 0.1,
                rounds: vec![round(1, 2.0 + shift + i as f64 * 0.1, "patience"), round(2, 1.8 + shift + i as f64 * 0.1, "steps")],
                projector_rank_total: if null_space { 16 * i } else { 0 },
            })
            .collect(),
        forgetting: ForgettingMatrix { domains: names.iter().map(|d| d.to_string()).collect(), rows },
    }
}

fn weights(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Three domains; routing loses to ungated on medical (2.25 > 2.0), ties on code.
fn sample() -> DemoResults {
    let names = ["chat", "code", "medical"];
    DemoResults {
        seed: 7,
        quick: true,
        engine: "brainstacks-rs 0.1.0".into(),
        device: "cpu".into(),
        data: names
            .iter()
            .map(|d| DomainDataSummary {
                domain: d.to_string(),
                train_examples: 100,
                file: format!("data/{d}.jsonl"),
                sample_instruction: format!("Tell me about {d} | pipes\nand lines"),
                sample_response: "An answer.".into(),
            })
            .collect(),
        tokenizer: TokenizerSummary { vocab_size: 512, documents: 300, chars: 40_000, tokens: 10_000 },
        pretrain: PretrainSummary {
            hidden: 64,
            intermediate: 172,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 512,
            parameters: 150_000,
            steps: 200,
            tokens: 409_600,
            unigram_loss: 4.5,
            train_curve: curve(6.0, 20),
            val_curve: curve(6.2, 5),
            final_val_loss: 3.1,
            nf4_val_loss: 3.15,
        },
        main_run: run("brainstacks", true, 0.0, vec![vec![1.0, 3.0, 3.0], vec![1.1, 1.5, 3.0], vec![1.2, 1.6, 1.4]]),
        no_null_space: run("no null space", false, 0.05, vec![vec![1.0, 3.0, 3.0], vec![1.5, 1.5, 3.0], vec![1.8, 1.9, 1.4]]),
        single_lora: run("single LoRA", true, 0.2, vec![vec![1.0]]),
        router_train_lines: vec!["epoch 1 loss 0.6931".into(), "epoch 2 loss 0.4000".into()],
        router_settings: RouterSettings {
            oracle_search: "exhaustive".into(),
            oracle_accept: 0.002,
            oracle_samples: 20,
            label_samples: 40,
            label_targets: "oracle mean".into(),
        },
        oracle: names
            .iter()
            .map(|d| OracleSummary {
                domain: d.to_string(),
                examples: 20,
                mean_gain: 0.5,
                share_excluding_own: 0.1,
                chosen_share: weights(&[("chat", 0.9), (d, 0.95)]),
            })
            .collect(),
        router_weights: names
            .iter()
            .map(|d| RouterWeights {
                domain: d.to_string(),
                prompts: 20,
                mean_weights: weights(&[("chat", 0.5), ("code", 0.2), ("medical", 0.1), (d, 0.9)]),
                examples: vec![(format!("a {d} prompt"), weights(&[(d, 0.8)]))],
            })
            .collect(),
        modes: vec![
            ModeLossRow { domain: "chat".into(), base: 3.0, ungated: 2.0, routed: 1.9 },
            ModeLossRow { domain: "code".into(), base: 3.0, ungated: 2.5, routed: 2.5 },
            ModeLossRow { domain: "medical".into(), base: 3.0, ungated: 2.0, routed: 2.25 },
        ],
        generations: vec![GenerationSample {
            domain: "code".into(),
            prompt: "write ``` a fence".into(),
            reference: "ref".into(),
            base: "b".into(),
            ungated: String::new(),
            routed: "r".into(),
        }],
        timings: vec![PhaseTiming { phase: "pretrain".into(), seconds: 12.5 }],
    }
}

/// Everything empty, and curves whose only points are NaN.
fn empty() -> DemoResults {
    let run = |label: &str| RunSummary {
        label: label.into(),
        dir: String::new(),
        experts: 0,
        top_k: 0,
        rank: 0,
        trainable_params_per_stack: 0,
        null_space: false,
        domains: Vec::new(),
        forgetting: ForgettingMatrix { domains: Vec::new(), rows: Vec::new() },
    };
    DemoResults {
        seed: 0,
        quick: false,
        engine: String::new(),
        device: "cpu".into(),
        data: Vec::new(),
        tokenizer: TokenizerSummary { vocab_size: 0, documents: 0, chars: 0, tokens: 0 },
        pretrain: PretrainSummary {
            hidden: 0,
            intermediate: 0,
            layers: 0,
            heads: 0,
            kv_heads: 0,
            vocab: 0,
            parameters: 0,
            steps: 0,
            tokens: 0,
            unigram_loss: f64::NAN,
            train_curve: vec![CurvePoint { step: 0, loss: f64::NAN }],
            val_curve: Vec::new(),
            final_val_loss: f64::NAN,
            nf4_val_loss: f64::NAN,
        },
        main_run: run("brainstacks"),
        no_null_space: run("no null space"),
        single_lora: run("single LoRA"),
        router_train_lines: Vec::new(),
        router_settings: RouterSettings::default(),
        oracle: Vec::new(),
        router_weights: Vec::new(),
        modes: Vec::new(),
        generations: Vec::new(),
        timings: Vec::new(),
    }
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bs-report-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The plot paths `report.md` links to.
fn linked_plots(md: &str) -> Vec<String> {
    md.match_indices(&format!("]({PLOTS_DIR}/"))
        .map(|(i, m)| {
            let rest = &md[i + 2..];
            let end = rest.find(')').expect("closed link");
            debug_assert!(m.len() > 2);
            rest[..end].to_string()
        })
        .collect()
}

#[test]
fn the_report_has_every_section_and_the_computed_verdicts() -> crate::Result<()> {
    let dir = scratch("full");
    let written = write_report(&sample(), &dir)?;
    let md_path = dir.join(REPORT_FILE);
    assert_eq!(written.last(), Some(&md_path));
    let md = read(&md_path);
    assert!(md.starts_with("# Brainstacks demo report\n"));
    let mut last = 0;
    for h in HEADINGS.iter().filter(|h| **h != "## What the demo does") {
        let at = md.find(&format!("\n{h}\n")).unwrap_or_else(|| panic!("missing {h}"));
        assert!(at > last, "{h} out of order");
        last = at;
    }
    assert!(md.contains("\n## What the demo does\n"));
    // With null space: drifts 0.2 (chat) and 0.1 (code); without: 0.8 and 0.4.
    assert!(md.contains("forgetting with null space <= without: yes (0.1500 vs 0.6000)"), "{md}");
    assert!(md.contains("routed <= ungated on every domain: no (exceptions: medical (2.2500 > 2.0000))"), "{md}");
    assert!(md.contains("MoE round 1 best val <= single LoRA on "), "{md}");
    assert!(md.contains("The prompts' own stack gets the highest mean weight on 3 of 3 prompt domains."));
    assert!(md.contains("On medical prompts the medical stack's mean weight is 0.9000, the largest other stack weight is 0.5000 (chat)"));
    assert!(md.contains("The pretrained model beats the unigram baseline (uses context): yes (3.1000 vs 4.5000)"));
    assert!(md.contains("Stop reasons over all rounds: patience: 3, steps: 3."));
    assert!(md.contains("(up to 20 per domain) the oracle scored every set of domain stacks"), "{md}");
    assert!(md.contains("by more than 0.0020 to be kept"), "{md}");
    assert!(md.contains("up to 40 training prompts per domain towards the mean of the oracle's targets"), "{md}");
    // Table cells escape pipes; generated text with a fence gets a longer one.
    assert!(md.contains("Tell me about chat \\| pipes and lines"));
    assert!(md.contains("````text\nwrite ``` a fence\n````"));
    // Timings come last.
    assert!(md.trim_end().ends_with("| **total** | 12.5000 |"));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn every_linked_plot_is_written_and_is_an_svg_with_text() -> crate::Result<()> {
    let dir = scratch("plots");
    let written = write_report(&sample(), &dir)?;
    let md = read(&dir.join(REPORT_FILE));
    let links = linked_plots(&md);
    assert_eq!(links.len(), 6, "{links:?}");
    assert_eq!(written.len(), 7);
    for link in &links {
        let path = dir.join(link);
        assert!(written.contains(&path), "{link} not reported as written");
        let svg = read(&path);
        assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{link}");
        assert!(svg.contains("<path") || svg.contains("<polyline") || svg.contains("<rect"), "{link}");
        assert!(svg.contains("<text"), "{link} has no text");
        assert!(svg.trim_end().ends_with("</svg>"), "{link}");
    }
    assert!(read(&dir.join("plots/router_weights.svg")).contains("medical prompts"));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn writing_twice_gives_identical_files() -> crate::Result<()> {
    let (a, b) = (scratch("twice-a"), scratch("twice-b"));
    let first = write_report(&sample(), &a)?;
    let second = write_report(&sample(), &b)?;
    assert_eq!(first.len(), second.len());
    for (x, y) in first.iter().zip(&second) {
        assert_eq!(x.strip_prefix(&a).ok(), y.strip_prefix(&b).ok());
        assert_eq!(std::fs::read(x).ok(), std::fs::read(y).ok(), "{} differs", x.display());
    }
    // Rewriting in place also reproduces the bytes.
    let again = write_report(&sample(), &a)?;
    for (x, y) in again.iter().zip(&second) {
        assert_eq!(std::fs::read(x).ok(), std::fs::read(y).ok());
    }
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
    Ok(())
}

#[test]
fn empty_results_skip_every_plot_without_panicking() -> crate::Result<()> {
    let dir = scratch("empty");
    let written = write_report(&empty(), &dir)?;
    assert_eq!(written, vec![dir.join(REPORT_FILE)]);
    let md = read(&dir.join(REPORT_FILE));
    assert!(linked_plots(&md).is_empty());
    assert_eq!(md.matches("_Plot skipped").count(), 6);
    assert!(md.contains("forgetting with null space <= without: n/a"));
    assert!(md.contains("routed <= ungated on every domain: n/a"));
    assert_eq!(summary_table(&empty()).lines().count(), 2);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn the_summary_table_has_one_aligned_line_per_domain() {
    let table = summary_table(&sample());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 3, "{table}");
    assert!(lines[0].starts_with("domain "));
    for (line, d) in lines[2..].iter().zip(["chat", "code", "medical"]) {
        assert!(line.starts_with(d), "{line}");
    }
    // Medical: best val over rounds 2.0; 1.4 at the end of both curricula (last forgetting rows);
    // routed 2.25.
    assert!(lines[4].contains("2.0000") && lines[4].contains("1.4000") && lines[4].contains("2.2500"), "{table}");
    // Right-aligned columns end at the same place on every line.
    let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
}

#[test]
fn verdicts_follow_the_numbers() {
    let mut r = sample();
    r.modes[2].routed = 2.0;
    assert_eq!(modes_verdict(&r), "routed <= ungated on every domain: yes");
    r.modes[0].routed = f64::NAN;
    assert!(modes_verdict(&r).contains("no (exceptions: chat (NaN > 2.0000))"));
    std::mem::swap(&mut r.main_run.forgetting, &mut r.no_null_space.forgetting);
    assert_eq!(forgetting_verdict(&r), "forgetting with null space <= without: no (0.6000 vs 0.1500)");
}

#[test]
fn drift_matches_mean_forgetting_and_survives_ragged_rows() {
    let r = sample();
    for m in [&r.main_run.forgetting, &r.no_null_space.forgetting] {
        let (ours, theirs) = (mean_drift(m).expect("3 rows"), m.mean_forgetting().expect("3 rows"));
        assert!((ours - theirs).abs() < 1e-12);
    }
    let ragged = ForgettingMatrix { domains: vec!["a".into()], rows: vec![vec![], vec![1.0]] };
    assert_eq!(drifts(&ragged), Vec::new());
    assert_eq!(mean_drift(&ragged), None);
}
