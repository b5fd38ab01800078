//! Outcome discovery over a run: the oracle for each domain's held-out examples (the validation
//! examples after the evaluator's subset), cached per domain under `router/oracle/<domain>.json`
//! so one domain can be recomputed alone.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::oracle::{Discovery, OracleConfig, discover};
use super::routed::{Composition, RunModel};
use super::scoring::ExampleLoss;
use crate::boost::manifest::fnv1a_hex;
use crate::boost::prepare::PreparedDomain;
use crate::data::encode_example;
use crate::{Error, Result};

/// One domain's cached results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainDiscovery {
    pub domain: String,
    /// Fingerprint of the oracle settings and the run's stacks the results were computed with.
    pub key: String,
    pub prompts: Vec<String>,
    pub discoveries: Vec<Discovery>,
}

impl DomainDiscovery {
    /// Share of the examples whose best set leaves out their own domain's stacks.
    pub fn share_excluding_own(&self) -> f64 {
        let n = self.discoveries.len().max(1) as f64;
        self.discoveries.iter().filter(|d| d.excludes_own_domain()).count() as f64 / n
    }

    /// Mean of base-only loss minus the best set's loss.
    pub fn mean_gain(&self) -> f64 {
        let n = self.discoveries.len().max(1) as f64;
        self.discoveries.iter().map(|d| d.base_loss - d.best_loss).sum::<f64>() / n
    }
}

/// Where the cache of `domain` lives.
pub fn cache_path(rm: &RunModel, domain: &str) -> PathBuf {
    rm.dir.join("router").join("oracle").join(format!("{domain}.json"))
}

/// Runs (or reads from its cache) the oracle on up to `samples` held-out examples of domain `di`.
/// `recompute` ignores the cache.
pub fn discover_domain(
    rm: &RunModel,
    prepared: &[PreparedDomain],
    di: usize,
    samples: usize,
    max_tokens: usize,
    cfg: &OracleConfig,
    recompute: bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<DomainDiscovery> {
    let d = &prepared[di];
    let stacks: Vec<String> = rm.manifest.domains.iter().flat_map(|r| r.rounds.iter().filter_map(|x| x.file.clone())).collect();
    let key_text =
        serde_json::to_string(&(cfg, samples, max_tokens, &stacks, &rm.manifest.config_fnv)).map_err(|e| invalid(e.to_string()))?;
    let key = fnv1a_hex(key_text.as_bytes());
    let path = cache_path(rm, &d.name);
    if !recompute && path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
        if let Ok(cached) = serde_json::from_str::<DomainDiscovery>(&text)
            && cached.key == key
        {
            return Ok(cached);
        }
    }
    let examples: Vec<_> = d.val_rest.iter().take(samples).collect();
    if examples.is_empty() {
        return Err(invalid(format!(
            "domain {:?} has no held-out example beyond the {} validation examples the evaluator uses; raise val_fraction",
            d.name,
            d.val_subset.len()
        )));
    }
    let domains = rm.domains();
    rm.compose(&Composition::Ungated)?; // loads every stack the candidates may need
    let mut discoveries = Vec::with_capacity(examples.len());
    let mut prompts = Vec::with_capacity(examples.len());
    for (i, e) in examples.iter().enumerate() {
        let encoded = encode_example(rm.encoder.as_ref(), e)?;
        let mut scorer = ExampleLoss::new(&rm.model, &rm.stacks, &domains, &encoded, max_tokens)?;
        discoveries.push(discover(&mut scorer, domains.len(), di, cfg)?);
        prompts.push(super::features::router_text(e));
        progress(i + 1, examples.len());
    }
    let out = DomainDiscovery { domain: d.name.clone(), key, prompts, discoveries };
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    let text = serde_json::to_string_pretty(&out).map_err(|e| invalid(e.to_string()))?;
    brainstacks_tensor::io::write_atomic_bytes(&path, text.as_bytes())?;
    Ok(out)
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid { what: "oracle".into(), msg: msg.into() }
}
