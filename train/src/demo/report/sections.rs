//! The text of `report.md`, section by section. Each section says what was measured; every number
//! comes from the [`DemoResults`] of this run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::markdown::{cell, fenced, num, opt_num, table, yes_no};
use super::{PLOTS_DIR, domain_order, drifts, forgetting_verdict, mean_drift, modes_verdict, plots, round_one};
use crate::demo::results::{DemoResults, ForgettingMatrix, RunSummary};

/// The section headings, in order (the tests check that each one is present).
pub(super) const HEADINGS: [&str; 12] = [
    "## Data",
    "## Tokenizer",
    "## Base model and pretraining",
    "## The method run",
    "## MoE stacks vs a single LoRA",
    "## Forgetting",
    "## Oracle",
    "## Router weights",
    "## Three compositions",
    "## Generations",
    "## Timings",
    "## What the demo does",
];

/// The whole report; `drawn(file)` says whether the plot `file` was written.
pub(super) fn report_markdown(r: &DemoResults, drawn: &dyn Fn(&str) -> bool) -> String {
    let mut out = String::new();
    header(&mut out, r);
    data(&mut out, r);
    tokenizer(&mut out, r);
    pretraining(&mut out, r, drawn);
    method_run(&mut out, r, drawn);
    moe_vs_single(&mut out, r, drawn);
    forgetting(&mut out, r, drawn);
    oracle(&mut out, r);
    router(&mut out, r, drawn);
    modes(&mut out, r, drawn);
    generations(&mut out, r);
    timings(&mut out, r);
    out
}

/// A link to a plot, or a line saying it was skipped.
fn plot(out: &mut String, drawn: &dyn Fn(&str) -> bool, file: &str, alt: &str) {
    if drawn(file) {
        let _ = writeln!(out, "![{alt}]({PLOTS_DIR}/{file})\n");
    } else {
        let _ = writeln!(out, "_Plot skipped ({alt}): no data to draw._\n");
    }
}

fn header(out: &mut String, r: &DemoResults) {
    let _ = writeln!(out, "# Brainstacks demo report\n");
    let _ = writeln!(out, "Engine: `{}`; device: {}; seed: {}; quick mode: {}.\n", r.engine, r.device, r.seed, yes_no(r.quick));
    let _ = writeln!(
        out,
        "Everything below was measured by this run and is also in `report.json`. Losses are mean \
         token cross-entropy on held-out validation data unless a section says otherwise; the timings \
         at the end are the only machine-dependent numbers.\n"
    );
    let _ = writeln!(out, "{}\n", HEADINGS[11]);
    let _ = writeln!(
        out,
        "The pipeline: generate instruction data for each domain, train a tokenizer, pretrain a small \
         Llama, quantize it to NF4, then train MoE-LoRA stacks domain by domain in curriculum order \
         (residual boosting rounds, each stack frozen once trained, a null-space projector against \
         earlier domains); two ablations: the curriculum \
         rerun without the null space, and the first round redone with a single LoRA instead of MoE experts. An oracle finds which \
         stacks help each held-out prompt, a meta-router learns to predict that, and the three \
         compositions (base, every stack ungated, routed) are compared.\n"
    );
}

fn data(out: &mut String, r: &DemoResults) {
    let _ = writeln!(out, "{}\n", HEADINGS[0]);
    let total: usize = r.data.iter().map(|d| d.train_examples).sum();
    let _ =
        writeln!(out, "Generated instruction/response pairs per domain ({} domains, {total} training examples in all).\n", r.data.len());
    let rows: Vec<Vec<String>> = r
        .data
        .iter()
        .map(|d| {
            vec![
                cell(&d.domain, 40),
                d.train_examples.to_string(),
                format!("`{}`", cell(&d.file, 80)),
                cell(&d.sample_instruction, 90),
                cell(&d.sample_response, 90),
            ]
        })
        .collect();
    out.push_str(&table(&["domain", "train examples", "file", "sample instruction", "sample response"], &[false, true], &rows));
    out.push('\n');
}

fn tokenizer(out: &mut String, r: &DemoResults) {
    let t = &r.tokenizer;
    let _ = writeln!(out, "{}\n", HEADINGS[1]);
    let _ = writeln!(out, "The tokenizer the demo trains on the generated text, and how much it compresses that text.\n");
    let ratio = if t.tokens > 0 { num(t.chars as f64 / t.tokens as f64) } else { "-".into() };
    let rows = vec![vec![t.vocab_size.to_string(), t.documents.to_string(), t.chars.to_string(), t.tokens.to_string(), ratio]];
    out.push_str(&table(&["vocab size", "documents", "characters", "tokens", "characters per token"], &[true; 5], &rows));
    out.push('\n');
}

fn pretraining(out: &mut String, r: &DemoResults, drawn: &dyn Fn(&str) -> bool) {
    let p = &r.pretrain;
    let _ = writeln!(out, "{}\n", HEADINGS[2]);
    let _ = writeln!(out, "The base model the demo pretrains itself, then quantizes to NF4 for the method to train on.\n");
    let config = vec![vec![
        p.hidden.to_string(),
        p.intermediate.to_string(),
        p.layers.to_string(),
        p.heads.to_string(),
        p.kv_heads.to_string(),
        p.vocab.to_string(),
        p.parameters.to_string(),
        p.steps.to_string(),
        p.tokens.to_string(),
    ]];
    out.push_str(&table(
        &["hidden", "ffn", "layers", "heads", "kv heads", "vocab", "parameters", "steps", "tokens seen"],
        &[true; 9],
        &config,
    ));
    out.push('\n');
    let losses = vec![vec![num(p.unigram_loss), num(p.final_val_loss), num(p.nf4_val_loss), num(p.nf4_val_loss - p.final_val_loss)]];
    out.push_str(&table(&["unigram loss (context-free)", "final val loss", "NF4 val loss", "NF4 - full precision"], &[true; 4], &losses));
    let _ = writeln!(
        out,
        "\nThe pretrained model beats the unigram baseline (uses context): {} ({} vs {}).\n",
        yes_no(p.final_val_loss < p.unigram_loss),
        num(p.final_val_loss),
        num(p.unigram_loss)
    );
    plot(out, drawn, "pretrain_loss.svg", "pretraining loss curve");
}

fn run_config(out: &mut String, run: &RunSummary) {
    let projector: usize = run.domains.iter().map(|d| d.projector_rank_total).sum();
    let rows = vec![vec![
        cell(&run.label, 40),
        run.experts.to_string(),
        run.top_k.to_string(),
        run.rank.to_string(),
        run.trainable_params_per_stack.to_string(),
        yes_no(run.null_space).to_string(),
        projector.to_string(),
        format!("`{}`", cell(&run.dir, 60)),
    ]];
    out.push_str(&table(
        &["run", "experts", "top-k", "rank", "trainable params / stack", "null space", "projector rank (sum)", "directory"],
        &[false, true, true, true, true, false, true, false],
        &rows,
    ));
    out.push('\n');
}

fn method_run(out: &mut String, r: &DemoResults, drawn: &dyn Fn(&str) -> bool) {
    let run = &r.main_run;
    let _ = writeln!(out, "{}\n", HEADINGS[3]);
    let _ = writeln!(
        out,
        "The method itself, domain by domain in curriculum order. `baseline` is the domain's validation loss \
         before its first round (earlier stacks on); each boosting round freezes the stacks before it, trains a fresh one \
         on the same data, and reports its best validation loss and why it stopped.\n"
    );
    run_config(out, run);
    let mut rows = Vec::new();
    let mut stops: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &run.domains {
        if d.rounds.is_empty() {
            rows.push(vec![
                cell(&d.domain, 40),
                num(d.baseline_val),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for x in &d.rounds {
            *stops.entry(x.stop.as_str()).or_default() += 1;
            rows.push(vec![
                cell(&d.domain, 40),
                num(d.baseline_val),
                x.round.to_string(),
                num(x.best_val),
                x.best_step.to_string(),
                x.steps_run.to_string(),
                cell(&x.stop, 20),
                num(x.train_loss_last),
            ]);
        }
    }
    out.push_str(&table(
        &["domain", "baseline", "round", "best val", "best step", "steps run", "stop", "last train loss"],
        &[false, true, true, true, true, true, false, true],
        &rows,
    ));
    let stops: Vec<String> = stops.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let stops = if stops.is_empty() { "none (no round ran)".to_string() } else { stops.join(", ") };
    let _ = writeln!(out, "\nStop reasons over all rounds: {stops}.\n");
    plot(out, drawn, "rounds.svg", "best validation loss per round");
}

fn moe_vs_single(out: &mut String, r: &DemoResults, drawn: &dyn Fn(&str) -> bool) {
    let _ = writeln!(out, "{}\n", HEADINGS[4]);
    let _ = writeln!(
        out,
        "The convergence ablation: the same round trained with one plain LoRA of rank 4r (one expert, always \
         chosen) instead of the MoE experts, for the same steps, on the domains listed. Both compare their \
         first round (`round 1 best val`), where they start from the same model.\n"
    );
    run_config(out, &r.single_lora);
    let mut rows = Vec::new();
    let (mut wins, mut compared) = (0, 0);
    for d in domain_order(r) {
        let first = |run: &RunSummary| {
            run.domains.iter().find(|x| x.domain == d).and_then(round_one).map(|x| x.best_val).filter(|v| v.is_finite())
        };
        let (moe, single) = (first(&r.main_run), first(&r.single_lora));
        let (Some(m), Some(s)) = (moe, single) else { continue };
        compared += 1;
        wins += usize::from(m <= s);
        let better = if m <= s { "MoE" } else { "single LoRA" }.to_string();
        rows.push(vec![cell(&d, 40), num(m), num(s), num(s - m), better]);
    }
    out.push_str(&table(
        &["domain", "MoE round 1 best val", "single LoRA round 1 best val", "single - MoE", "lower"],
        &[false, true, true, true],
        &rows,
    ));
    let _ = writeln!(out, "\nMoE round 1 best val <= single LoRA on {wins} of {compared} domains.\n");
    plot(out, drawn, "moe_vs_single_lora.svg", "round 1 validation curves, MoE vs single LoRA");
}

fn matrix_table(out: &mut String, m: &ForgettingMatrix) {
    let mut header = vec!["after training".to_string()];
    header.extend(m.domains.iter().map(|d| cell(d, 30)));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = m
        .rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut cells = vec![m.domains.get(i).map(|d| cell(d, 30)).unwrap_or_else(|| format!("row {i}"))];
            cells.extend((0..m.domains.len()).map(|j| opt_num(row.get(j).copied())));
            cells
        })
        .collect();
    let mut right = vec![false];
    right.extend(std::iter::repeat_n(true, m.domains.len()));
    out.push_str(&table(&header, &right, &rows));
    out.push('\n');
}

fn forgetting(out: &mut String, r: &DemoResults, drawn: &dyn Fn(&str) -> bool) {
    let _ = writeln!(out, "{}\n", HEADINGS[5]);
    let _ = writeln!(
        out,
        "Row `i`, column `j`: validation loss on domain `j` right after domain `i` finished training. \
         Forgetting of an earlier domain is its final loss (last row) minus its loss right after its own \
         training (the diagonal); the mean over earlier domains is the run's mean forgetting.\n"
    );
    for (title, run) in [("With null space", &r.main_run), ("Without null space", &r.no_null_space)] {
        let _ = writeln!(out, "### {title} ({})\n", cell(&run.label, 40));
        matrix_table(out, &run.forgetting);
        let d: Vec<String> = drifts(&run.forgetting).iter().map(|(k, v)| format!("{k} {}", num(*v))).collect();
        let d = if d.is_empty() { "none".to_string() } else { d.join(", ") };
        let _ = writeln!(out, "Drift per earlier domain: {d}. Mean forgetting: {}.\n", opt_num(mean_drift(&run.forgetting)));
    }
    let _ = writeln!(out, "**{}**\n", forgetting_verdict(r));
    plot(out, drawn, "forgetting_drift.svg", "forgetting drift per earlier domain");
}

fn oracle(out: &mut String, r: &DemoResults) {
    let _ = writeln!(out, "{}\n", HEADINGS[6]);
    let settings = &r.router_settings;
    let search = match settings.oracle_search.as_str() {
        "exhaustive" => "scored every set of domain stacks".to_string(),
        "" => "searched".to_string(),
        greedy => format!("grew a set of domain stacks greedily ({greedy} improvement)"),
    };
    let _ = writeln!(
        out,
        "For each held-out prompt (up to {} per domain) the oracle {search} and kept the one with the lowest \
         answer loss; a larger set had to lower the loss by more than {} to be kept. `mean gain` is \
         base-only loss minus the best set's loss; `excluding own` is the share of prompts whose best set \
         leaves out the domain's own stack; `chosen` is how often each stack is in the best set.\n",
        settings.oracle_samples,
        num(settings.oracle_accept),
    );
    let rows: Vec<Vec<String>> = r
        .oracle
        .iter()
        .map(|o| {
            let chosen: Vec<String> = o.chosen_share.iter().map(|(k, v)| format!("{} {}", cell(k, 30), num(*v))).collect();
            vec![cell(&o.domain, 40), o.examples.to_string(), num(o.mean_gain), num(o.share_excluding_own), chosen.join(", ")]
        })
        .collect();
    out.push_str(&table(&["prompt domain", "examples", "mean gain", "excluding own", "chosen"], &[false, true, true, true], &rows));
    out.push('\n');
}

fn router(out: &mut String, r: &DemoResults, drawn: &dyn Fn(&str) -> bool) {
    let _ = writeln!(out, "{}\n", HEADINGS[7]);
    let settings = &r.router_settings;
    let labels = match settings.label_targets.as_str() {
        "oracle mean" => {
            "towards the mean of the oracle's targets on their domain's held-out prompts (not one-hot, as the \
             method's spec has it: with one-hot labels the router never learns that a domain's prompts also \
             gain from other domains' stacks)"
        }
        _ => "towards their domain, one-hot",
    };
    let _ = writeln!(
        out,
        "The router trained on the oracle's prompts with their own targets, and on up to {} training prompts per \
         domain {labels}.\n",
        settings.label_samples
    );
    let _ = writeln!(out, "The meta-router's mean gate weight for each stack over each domain's held-out prompts.\n");
    if !r.router_train_lines.is_empty() {
        let _ = writeln!(out, "Router training log:\n");
        out.push_str(&fenced(&r.router_train_lines.join("\n")));
        out.push('\n');
    }
    let stacks = plots::stack_domains(r);
    let mut header = vec!["prompt domain".to_string(), "prompts".to_string()];
    header.extend(stacks.iter().map(|s| format!("{} stack", cell(s, 30))));
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = r
        .router_weights
        .iter()
        .map(|w| {
            let mut row = vec![cell(&w.domain, 40), w.prompts.to_string()];
            row.extend(stacks.iter().map(|s| opt_num(w.mean_weights.get(s).copied())));
            row
        })
        .collect();
    let mut right = vec![false, true];
    right.extend(std::iter::repeat_n(true, stacks.len()));
    out.push_str(&table(&header, &right, &rows));
    out.push('\n');
    let top = |w: &BTreeMap<String, f64>, skip: Option<&str>| {
        w.iter().filter(|(k, v)| v.is_finite() && Some(k.as_str()) != skip).max_by(|a, b| a.1.total_cmp(b.1)).map(|(k, v)| (k.clone(), *v))
    };
    let own_top = r.router_weights.iter().filter(|w| top(&w.mean_weights, None).is_some_and(|(k, _)| k == w.domain)).count();
    let _ =
        writeln!(out, "The prompts' own stack gets the highest mean weight on {own_top} of {} prompt domains.\n", r.router_weights.len());
    match r.router_weights.iter().find(|w| w.domain == "medical") {
        Some(w) => {
            let own = w.mean_weights.get("medical").copied();
            let other = top(&w.mean_weights, Some("medical"));
            let verdict = match (own, &other) {
                (Some(o), Some((_, v))) => format!("the medical stack is the top-weighted one: {}", yes_no(o > *v)),
                (Some(_), None) => "no other stack was weighed".into(),
                (None, _) => "the medical stack has no weight recorded".into(),
            };
            let other = other.map(|(k, v)| format!("{} ({k})", num(v))).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "On medical prompts the medical stack's mean weight is {}, the largest other stack weight is {other}; {verdict}.\n",
                opt_num(own)
            );
        }
        None => {
            let _ = writeln!(out, "This run has no medical prompts, so there is no medical weight to report.\n");
        }
    }
    let examples: Vec<Vec<String>> = r
        .router_weights
        .iter()
        .flat_map(|w| w.examples.iter().map(move |(prompt, weights)| (w, prompt, weights)))
        .map(|(w, prompt, weights)| {
            let ws: Vec<String> = weights.iter().map(|(k, v)| format!("{} {}", cell(k, 30), num(*v))).collect();
            vec![cell(&w.domain, 40), cell(prompt, 80), ws.join(", ")]
        })
        .collect();
    if !examples.is_empty() {
        let _ = writeln!(out, "Individual prompts:\n");
        out.push_str(&table(&["prompt domain", "prompt", "weights"], &[], &examples));
        out.push('\n');
    }
    plot(out, drawn, "router_weights.svg", "router mean weights per prompt domain");
}

fn modes(out: &mut String, r: &DemoResults, drawn: &dyn Fn(&str) -> bool) {
    let _ = writeln!(out, "{}\n", HEADINGS[8]);
    let _ = writeln!(
        out,
        "Validation loss per domain for the frozen base alone, every stack on at weight 1 (ungated), and \
         the stacks weighted by the meta-router (routed).\n"
    );
    let rows: Vec<Vec<String>> =
        r.modes.iter().map(|m| vec![cell(&m.domain, 40), num(m.base), num(m.ungated), num(m.routed), num(m.routed - m.ungated)]).collect();
    out.push_str(&table(&["domain", "base", "ungated", "routed", "routed - ungated"], &[false, true, true, true, true], &rows));
    let _ = writeln!(out, "\n**{}**\n", modes_verdict(r));
    plot(out, drawn, "modes.svg", "validation loss by composition");
}

fn generations(out: &mut String, r: &DemoResults) {
    let _ = writeln!(out, "{}\n", HEADINGS[9]);
    let _ = writeln!(out, "Continuations of held-out prompts in the three compositions, next to the reference answer.\n");
    if r.generations.is_empty() {
        let _ = writeln!(out, "No generations were recorded.\n");
    }
    for g in &r.generations {
        let _ = writeln!(out, "### {}\n", cell(&g.domain, 60));
        for (name, text) in
            [("Prompt", &g.prompt), ("Reference", &g.reference), ("Base", &g.base), ("Ungated", &g.ungated), ("Routed", &g.routed)]
        {
            let _ = writeln!(out, "{name}:\n");
            out.push_str(&fenced(text));
            out.push('\n');
        }
    }
}

fn timings(out: &mut String, r: &DemoResults) {
    let _ = writeln!(out, "{}\n", HEADINGS[10]);
    let _ = writeln!(out, "Wall-clock seconds per phase on the machine that ran this demo (machine-dependent).\n");
    let mut rows: Vec<Vec<String>> = r.timings.iter().map(|t| vec![cell(&t.phase, 60), num(t.seconds)]).collect();
    rows.push(vec!["**total**".into(), num(r.timings.iter().map(|t| t.seconds).sum::<f64>())]);
    out.push_str(&table(&["phase", "seconds"], &[false, true], &rows));
}
