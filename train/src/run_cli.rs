//! Commands on a finished run directory: `brainstacks eval --run DIR` (per-domain validation loss
//! base-only, ungated and routed, plus the oracle statistics when cached), `brainstacks generate
//! --run DIR` (text in one of the three compositions) and `brainstacks route --run DIR` (the
//! domain weights the router gives a prompt).

use std::collections::BTreeMap;
use std::path::Path;

use brainstacks_model::llama::{GenerateOptions, alpaca_prompt};

use crate::boost::prepare::prepare_domain;
use crate::router::discovery::{DomainDiscovery, cache_path};
use crate::router::evaluate::{ModeLosses, Route, evaluate_modes};
use crate::router::pipeline::RunRouter;
use crate::router::routed::{Composition, RunModel};
use crate::{Error, Result};

/// The table `eval` prints.
pub fn eval_table(rows: &[ModeLosses], oracle: &[DomainDiscovery]) -> String {
    let mut out = format!("{:<12} {:>10} {:>10} {:>10}\n", "domain", "base", "ungated", "routed");
    for r in rows {
        let routed = r.routed.map_or("-".to_string(), |v| format!("{v:.4}"));
        out.push_str(&format!("{:<12} {:>10.4} {:>10.4} {routed:>10}\n", r.domain, r.base, r.ungated));
    }
    if !oracle.is_empty() {
        out.push_str("\noracle (held-out examples): share whose best set leaves out their own domain, mean base - best loss\n");
        for o in oracle {
            out.push_str(&format!(
                "{:<12} {:>5.1}% of {:>4}   gain {:.4}\n",
                o.domain,
                100.0 * o.share_excluding_own(),
                o.discoveries.len(),
                o.mean_gain()
            ));
        }
    }
    out
}

/// Evaluates every domain of the run in the three compositions (routed with `router`), on
/// `device` (default: the run's own).
pub fn eval(dir: &Path, router: Option<&dyn Route>, device: Option<brainstacks_tensor::Device>) -> Result<String> {
    let rm = RunModel::open_on(dir, device)?;
    let prepared = rm.config.domains.iter().map(|d| prepare_domain(&rm.config, d, rm.encoder.as_ref())).collect::<Result<Vec<_>>>()?;
    let loaded = match router {
        Some(_) => None,
        None if rm.dir.join("router/router.safetensors").exists() => Some(RunRouter::load(&rm)?),
        None => None,
    };
    let router = router.or(loaded.as_ref().map(|r| r as &dyn Route));
    let rows = evaluate_modes(&rm, &prepared, router)?;
    let mut oracle = Vec::new();
    for d in rm.domains() {
        let path = cache_path(&rm, &d);
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(found) = serde_json::from_str::<DomainDiscovery>(&text)
        {
            oracle.push(found);
        }
    }
    Ok(eval_table(&rows, &oracle))
}

/// Parses `--mode`: `routed` (the run's router decides, per prompt), `base`, `ungated`, or
/// `domain=weight,...` for explicit weights.
pub fn parse_composition(rm: &RunModel, mode: &str, prompt: &str) -> Result<Composition> {
    Ok(match mode {
        "routed" => Composition::Weighted(RunRouter::load(rm)?.weights(prompt)?),
        "base" => Composition::Base,
        "ungated" => Composition::Ungated,
        spec => {
            let mut w = BTreeMap::new();
            for part in spec.split(',') {
                let (d, v) = part.split_once('=').ok_or_else(|| bad_mode(mode))?;
                w.insert(d.trim().to_string(), v.trim().parse::<f64>().map_err(|_| bad_mode(mode))?);
            }
            Composition::Weighted(w)
        }
    })
}

fn bad_mode(mode: &str) -> Error {
    Error::Invalid { what: "--mode".into(), msg: format!("{mode:?}: expected routed, base, ungated or domain=weight[,domain=weight...]") }
}

/// Generates from `prompt` wrapped in the Alpaca template (as training saw it) with
/// `composition`; returns the text.
pub fn generate(rm: &RunModel, prompt: &str, composition: &Composition, opts: &GenerateOptions) -> Result<String> {
    rm.compose(composition)?;
    let mut ids: Vec<u32> = rm.encoder.bos().into_iter().collect();
    ids.extend(rm.encoder.encode(&alpaca_prompt(prompt, None))?);
    let mut opts = opts.clone();
    opts.eos_token_ids.get_or_insert_with(Vec::new).push(rm.encoder.eos()?);
    let g = rm.model.generate(&ids, &opts, |_| true)?;
    rm.encoder.decode_text(&g.ids)
}

/// The router's view of `prompt`: every domain's sigmoid and the weights after the floor and gate.
pub fn route(rm: &RunModel, prompt: &str) -> Result<String> {
    let router = RunRouter::load(rm)?;
    let probs = router.probs(prompt)?;
    let weights = router.weights(prompt)?;
    let mut out = format!("{:<12} {:>8} {:>8}\n", "domain", "sigmoid", "weight");
    for (d, p) in router.rule.domains.iter().zip(probs) {
        let w = weights.get(d).map_or("off".to_string(), |w| format!("{w:.4}"));
        out.push_str(&format!("{d:<12} {p:>8.4} {w:>8}\n"));
    }
    Ok(out)
}

/// Progress bars for `brainstacks router`'s phases (plain lines when stderr is not a terminal).
pub struct PhaseBars {
    bar: Option<indicatif::ProgressBar>,
    tty: bool,
}

impl PhaseBars {
    pub fn new() -> Self {
        Self { bar: None, tty: std::io::IsTerminal::is_terminal(&std::io::stderr()) }
    }
}

impl Default for PhaseBars {
    fn default() -> Self {
        Self::new()
    }
}

impl crate::router::pipeline::RouterProgress for PhaseBars {
    fn phase(&mut self, name: &str, total: usize) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.tty {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} (ETA {eta})")
                    .expect("a valid template"),
            );
            bar.set_prefix(name.to_string());
            self.bar = Some(bar);
        } else {
            eprintln!("{name}: {total} items");
        }
    }
    fn advance(&mut self, done: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }
    fn message(&mut self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }
}
