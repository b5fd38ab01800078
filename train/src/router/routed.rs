//! A finished run opened for inference (spec section 6): the base model, the run's stacks loaded on
//! demand per domain and kept in a cache keyed by (domain, round), and the three compositions the
//! method compares: base only, ungated (every stack at weight 1) and weighted (routed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use brainstacks_model::llama::LlamaModel;
use brainstacks_model::stacks::{FrozenSelection, StackId, StackSet};
use brainstacks_tensor::Device;

use crate::boost::RunConfig;
use crate::boost::manifest::Manifest;
use crate::boost::prepare::{attach_stacks, load_model};
use crate::boost::run::RUN_CONFIG_FILE;
use crate::data::TextEncoder;
use crate::{Error, Result};

/// How frozen stacks are composed.
#[derive(Clone, Debug, PartialEq)]
pub enum Composition {
    /// No stack.
    Base,
    /// Every stack of every domain at weight 1 (the baseline that interferes).
    Ungated,
    /// Each listed domain's stacks at its weight; unlisted domains are off and never loaded.
    Weighted(BTreeMap<String, f64>),
}

/// A run directory opened for inference.
pub struct RunModel {
    pub dir: PathBuf,
    pub config: RunConfig,
    pub manifest: Manifest,
    pub model: LlamaModel,
    pub stacks: StackSet,
    pub encoder: Box<dyn TextEncoder>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Invalid { what: "run directory".into(), msg: msg.into() }
}

impl RunModel {
    /// Opens `dir` (its `run.json` and `manifest.json`) with the model on the device the run
    /// trained on; no stack is loaded yet.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_on(dir, None)
    }

    /// [`RunModel::open`] with the model (and every stack loaded later) on `device` instead of
    /// the run's own device, when given: a run trained on a GPU can be evaluated on the CPU.
    pub fn open_on(dir: &Path, device: Option<Device>) -> Result<Self> {
        let cfg_path = dir.join(RUN_CONFIG_FILE);
        if !cfg_path.exists() {
            return Err(invalid(format!("{} has no {RUN_CONFIG_FILE}: is it a brainstacks run directory?", dir.display())));
        }
        let mut config = RunConfig::from_file(&cfg_path)?;
        config.out_dir = dir.to_path_buf();
        if let Some(d) = device {
            config.model.device = d.to_string();
        }
        let manifest = Manifest::load(&dir.join("manifest.json"))?;
        let (mut model, encoder) = load_model(&config)?;
        let stacks = attach_stacks(&mut model, &config)?;
        Ok(Self { dir: dir.to_path_buf(), config, manifest, model, stacks, encoder })
    }

    /// The run's domains in curriculum order.
    pub fn domains(&self) -> Vec<String> {
        self.config.domains.iter().map(|d| d.name.clone()).collect()
    }

    /// Loads every kept round of `domain` that is not loaded yet; returns how many were loaded.
    pub fn ensure_loaded(&self, domain: &str) -> Result<usize> {
        let rec = self.manifest.domain(domain).ok_or_else(|| invalid(format!("domain {domain:?} is not in the manifest")))?;
        let loaded = self.stacks.frozen_ids();
        let mut n = 0;
        for r in &rec.rounds {
            let Some(file) = &r.file else { continue };
            if !loaded.contains(&StackId::new(domain, r.round)) {
                self.stacks.load_stack(&self.dir.join(file))?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Puts `composition` in place (loading what it needs).
    pub fn compose(&self, composition: &Composition) -> Result<()> {
        let control = self.stacks.control();
        control.set_eval();
        match composition {
            Composition::Base => control.set_selection(FrozenSelection::Domains(BTreeMap::new())),
            Composition::Ungated => {
                for d in self.domains() {
                    if self.manifest.domain(&d).is_some() {
                        self.ensure_loaded(&d)?;
                    }
                }
                control.set_selection(FrozenSelection::All);
            }
            Composition::Weighted(w) => {
                for d in w.keys() {
                    self.ensure_loaded(d)?;
                }
                control.set_selection(FrozenSelection::Domains(w.clone()));
            }
        }
        Ok(())
    }
}

/// The routing rule (spec section 6): chat at least `chat_floor`, then only domains strictly
/// above `gate` stay on, each at its raw sigmoid.
pub fn gate_weights(domains: &[String], probs: &[f64], chat: Option<&str>, chat_floor: f64, gate: f64) -> BTreeMap<String, f64> {
    domains
        .iter()
        .zip(probs)
        .map(|(d, &p)| (d, if Some(d.as_str()) == chat { p.max(chat_floor) } else { p }))
        .filter(|(_, p)| *p > gate)
        .map(|(d, p)| (d.clone(), p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_floor_and_strict_gate() {
        let d: Vec<String> = ["chat", "code", "math"].map(String::from).to_vec();
        let w = gate_weights(&d, &[0.05, 0.12, 0.9], Some("chat"), 0.2, 0.12);
        assert_eq!(w, BTreeMap::from([("chat".to_string(), 0.2), ("math".to_string(), 0.9)]));
        let w = gate_weights(&d, &[0.5, 0.13, 0.0], None, 0.2, 0.12);
        assert_eq!(w, BTreeMap::from([("chat".to_string(), 0.5), ("code".to_string(), 0.13)]));
    }
}
