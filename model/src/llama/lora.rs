//! PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors` as written by
//! `peft`'s `save_pretrained`, read into [`LoraAdapter`]s on the projections and written back.
//!
//! A LoRA on projection `W [out, in]` adds `scale · (x Aᵀ) Bᵀ` with `A [r, in]`, `B [out, r]`,
//! `scale = lora_alpha / r`, or `lora_alpha / sqrt(r)` with `use_rslora`. Keys are
//! `base_model.model.model.layers.{i}.{self_attn|mlp}.{proj}.lora_{A|B}.weight`.
//! Only plain LoRA is accepted: options that change the math (DoRA, biases, per-module ranks or
//! alphas, `fan_in_fan_out`, layer subsets, extra trained modules) are refused by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use brainstacks_autograd::{Tape, Var};
use brainstacks_tensor::io::{SafeTensors, TensorToWrite, write_safetensors};
use brainstacks_tensor::{DType, Tensor};
use serde_json::{Value, json};

use super::linear::{Proj, ProjectionAdapter};
use super::model::LlamaModel;
use crate::{Error, Result};

fn lora_err(msg: impl Into<String>) -> Error {
    Error::Config { layer: "PEFT LoRA".into(), msg: msg.into() }
}

/// One projection's LoRA: `scale · (x Aᵀ) Bᵀ`. `a` and `b` are shared handles (cloning the
/// adapter shares the parameters).
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// `[r, in]`.
    pub a: Var,
    /// `[out, r]`.
    pub b: Var,
    pub scale: f64,
}

impl ProjectionAdapter for LoraAdapter {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.matmul(&self.a.t()?)?.matmul(&self.b.t()?)?.mul_scalar(self.scale)?)
    }
}

/// The LoRA hyper-parameters of an adapter_config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub lora_alpha: f64,
    pub use_rslora: bool,
    pub target_modules: BTreeSet<Proj>,
}

impl LoraConfig {
    /// `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA).
    pub fn scale(&self) -> f64 {
        if self.use_rslora { self.lora_alpha / (self.r as f64).sqrt() } else { self.lora_alpha / self.r as f64 }
    }

    /// Parses the text of an `adapter_config.json` (as [`PeftLora::load`] reads it); options
    /// that change the math are refused by name.
    ///
    /// ```
    /// use brainstacks_model::llama::LoraConfig;
    /// let c = LoraConfig::from_json(r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}"#).unwrap();
    /// assert_eq!((c.r, c.scale()), (8, 2.0));
    /// assert!(LoraConfig::from_json(r#"{"r": 8, "lora_alpha": 16, "target_modules": "q_proj", "use_dora": true}"#).is_err());
    /// ```
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| lora_err(format!("adapter_config.json: {e}")))?;
        Self::parse(&v)
    }

    fn parse(v: &Value) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| lora_err("adapter_config.json is not a JSON object"))?;
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        if let Some(t) = get("peft_type").and_then(Value::as_str)
            && t != "LORA"
        {
            return Err(lora_err(format!("peft_type {t:?} is not LORA")));
        }
        let r = get("r").and_then(Value::as_u64).filter(|&r| r > 0).ok_or_else(|| lora_err("\"r\" must be a positive integer"))?;
        let lora_alpha = get("lora_alpha").and_then(Value::as_f64).ok_or_else(|| lora_err("\"lora_alpha\" must be a number"))?;
        let use_rslora = get("use_rslora")
            .map(|v| v.as_bool().ok_or_else(|| lora_err("\"use_rslora\" must be a boolean")))
            .transpose()?
            .unwrap_or(false);
        // Options that change the math: refuse rather than compute something else.
        let off = |k: &str| match get(k) {
            None | Some(Value::Bool(false)) => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::String(s)) => s == "none",
            _ => false,
        };
        for k in [
            "use_dora",
            "fan_in_fan_out",
            "rank_pattern",
            "alpha_pattern",
            "layers_to_transform",
            "modules_to_save",
            "bias",
            "lora_bias",
            "target_parameters",
            "trainable_token_indices",
            "layer_replication",
        ] {
            if !off(k) {
                return Err(lora_err(format!("{k:?} = {} is not supported (plain LoRA only)", obj[k])));
            }
        }
        let by_name = |s: &str| Proj::ALL.into_iter().find(|p| p.short_name() == s);
        let target_modules: BTreeSet<Proj> = match get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => Proj::ALL.into_iter().collect(),
            Some(Value::String(s)) => BTreeSet::from([by_name(s)
                .ok_or_else(|| lora_err(format!("target_modules {s:?}: only projection names or \"all-linear\" are supported")))?]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().and_then(by_name).ok_or_else(|| lora_err(format!("target_modules entry {v} is not a Llama projection")))
                })
                .collect::<Result<_>>()?,
            _ => return Err(lora_err("\"target_modules\" must be a list of projection names")),
        };
        Ok(Self { r: r as usize, lora_alpha, use_rslora, target_modules })
    }

    pub(crate) fn to_json(&self) -> Value {
        let targets: Vec<&str> = self.target_modules.iter().map(|p| p.short_name()).collect();
        json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "use_rslora": self.use_rslora,
            "target_modules": targets,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_dora": false,
            "inference_mode": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "init_lora_weights": true,
        })
    }
}

fn key(layer: usize, p: Proj, which: &str) -> String {
    format!("base_model.model.model.layers.{layer}.{}.lora_{which}.weight", p.module())
}

/// A whole adapter: its config and one [`LoraAdapter`] per targeted projection of every layer.
#[derive(Clone, Debug)]
pub struct PeftLora {
    pub config: LoraConfig,
    pub adapters: BTreeMap<(usize, Proj), LoraAdapter>,
}

impl PeftLora {
    /// Reads `dir` for `model` (shapes are checked against it), with the factors in the
    /// model's dtype: trainable leaves on `tape` when given, constants otherwise.
    pub fn load(dir: impl AsRef<Path>, model: &LlamaModel, tape: Option<&Tape>) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| lora_err(format!("{}: {e}", cfg_path.display())))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| lora_err(format!("{}: {e}", cfg_path.display())))?;
        let config = LoraConfig::parse(&v).map_err(|e| lora_err(format!("{}: {e}", cfg_path.display())))?;
        let weights = dir.join("adapter_model.safetensors");
        let ck = SafeTensors::open(&weights)?;
        let mut used = BTreeSet::new();
        let mut adapters = BTreeMap::new();
        let leaf = |t: Tensor| -> Var { tape.map_or_else(|| Var::constant(t.clone()), |tp| tp.param(t.clone())) };
        for layer in 0..model.layers.len() {
            for &p in &config.target_modules {
                let [out_f, in_f] = model.proj(layer, p).expect("layer in range").shape();
                let mut read = |which: &str, shape: [usize; 2]| -> Result<Tensor> {
                    let name = key(layer, p, which);
                    if !ck.entries().contains_key(&name) {
                        return Err(lora_err(format!("{}: missing {name:?}", weights.display())));
                    }
                    let t = ck.tensor(&name)?;
                    if t.shape() != shape {
                        return Err(lora_err(format!("{}: {name:?} has shape {:?}, expected {shape:?}", weights.display(), t.shape())));
                    }
                    used.insert(name);
                    Ok(t.to_dtype(model.dtype)?)
                };
                let a = read("A", [config.r, in_f])?;
                let b = read("B", [out_f, config.r])?;
                adapters.insert((layer, p), LoraAdapter { a: leaf(a), b: leaf(b), scale: config.scale() });
            }
        }
        if let Some(extra) = ck.names().find(|n| !used.contains(*n)) {
            return Err(lora_err(format!("{}: tensor {extra:?} is not a LoRA factor of this model", weights.display())));
        }
        Ok(Self { config, adapters })
    }

    /// Attaches every adapter to its projection (replacing what was there).
    pub fn attach(&self, model: &mut LlamaModel) -> Result<()> {
        for (&(layer, p), a) in &self.adapters {
            model.set_adapter(layer, p, Some(Box::new(a.clone())))?;
        }
        Ok(())
    }

    /// Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (factors in f32, as
    /// PEFT saves an f32 adapter), creating `dir`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| lora_err(format!("{}: {e}", dir.display())))?;
        let mut tensors = Vec::with_capacity(2 * self.adapters.len());
        for (&(layer, p), a) in &self.adapters {
            tensors.push(TensorToWrite::from_tensor(key(layer, p, "A"), &a.a.tensor().to_dtype(DType::F32)?)?);
            tensors.push(TensorToWrite::from_tensor(key(layer, p, "B"), &a.b.tensor().to_dtype(DType::F32)?)?);
        }
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        write_safetensors(&dir.join("adapter_model.safetensors"), &tensors, &meta)?;
        let text = serde_json::to_string_pretty(&self.config.to_json()).expect("JSON values serialize");
        let path = dir.join("adapter_config.json");
        brainstacks_tensor::io::write_atomic_bytes(&path, text.as_bytes())?;
        Ok(())
    }
}
