//! Router files: one safetensors file holding every parameter under the names of
//! [`MetaRouterConfig::param_shapes`], with metadata that is enough to rebuild the network:
//!
//! `format = "brainstacks-router"`, `version`, `d_model`, `hidden`, `domains` (a JSON array of
//! names, in output order), `dropout`, `tau_min`, `tau_max`. Written atomically (temp file,
//! fsync, rename), so a crash never leaves a half-written router behind.

use std::collections::BTreeMap;
use std::path::Path;

use brainstacks_autograd::Tape;
use brainstacks_tensor::io::{SafeTensors, TensorToWrite, write_safetensors};

use super::net::{MetaRouter, MetaRouterConfig};
use crate::Result;
use crate::file_meta::{FileMeta, file_err};

pub const FORMAT: &str = "brainstacks-router";
pub const VERSION: &str = "1";

/// Reads and checks a router file's metadata.
pub fn read_config(st: &SafeTensors) -> Result<MetaRouterConfig> {
    let meta = FileMeta::check(st, FORMAT, VERSION, "router file")?;
    let path = meta.path();
    let domains: Vec<String> = serde_json::from_str(meta.get("domains")?)
        .map_err(|e| file_err(path, format!("metadata \"domains\" is not a JSON list of names: {e}")))?;
    let config = MetaRouterConfig {
        d_model: meta.parse("d_model")?,
        hidden: meta.parse("hidden")?,
        domains,
        dropout: meta.parse("dropout")?,
        tau_min: meta.parse("tau_min")?,
        tau_max: meta.parse("tau_max")?,
    };
    config.validate().map_err(|e| file_err(path, e.to_string()))?;
    Ok(config)
}

impl MetaRouter {
    /// Writes every parameter and the configuration to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let c = self.config();
        let mut tensors = Vec::new();
        for (name, p) in self.named_params() {
            tensors.push(TensorToWrite::from_tensor(name, &p.tensor().to_device(&brainstacks_tensor::Device::Cpu)?)?);
        }
        let domains = serde_json::to_string(&c.domains).map_err(|e| file_err(path, format!("serialising the domain names: {e}")))?;
        let meta: BTreeMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("d_model", c.d_model.to_string()),
            ("hidden", c.hidden.to_string()),
            ("domains", domains),
            // `{:?}` of an f64 prints the shortest text that parses back to the same value.
            ("dropout", format!("{:?}", c.dropout)),
            ("tau_min", format!("{:?}", c.tau_min)),
            ("tau_max", format!("{:?}", c.tau_max)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        write_safetensors(path, &tensors, &meta)?;
        Ok(())
    }

    /// Reads a router written by [`MetaRouter::save`]; its parameters become trainable leaves on
    /// `tape`, in the dtype they were saved in.
    pub fn load(path: &Path, tape: &Tape) -> Result<Self> {
        let st = SafeTensors::open(path)?;
        let config = read_config(&st)?;
        let mut params = Vec::new();
        for (name, shape) in config.param_shapes() {
            if !st.entries().contains_key(name) {
                return Err(file_err(path, format!("tensor {name:?} is missing")));
            }
            let t = st.tensor(name)?;
            if t.shape() != shape.as_slice() {
                return Err(file_err(path, format!("tensor {name:?} has shape {:?}, the metadata implies {shape:?}", t.shape())));
            }
            params.push(tape.param(t));
        }
        let extra: Vec<&str> = st.names().filter(|n| !config.param_shapes().iter().any(|(p, _)| p == n)).collect();
        if !extra.is_empty() {
            return Err(file_err(path, format!("unexpected tensors {extra:?}")));
        }
        MetaRouter::from_params(config, params).map_err(|e| file_err(path, e.to_string()))
    }
}
