//! `LlamaConfig`: the fields of a Hugging Face `config.json` the decoder needs, with the defaults
//! transformers applies, and the RoPE inverse frequencies (with `rope_scaling`) computed as
//! transformers' `modeling_rope_utils` does.
//!
//! Both config layouts are read: transformers 4 (`rope_theta` and `rope_scaling` at the top
//! level, `torch_dtype`) and transformers 5 (`rope_parameters = {rope_type, rope_theta, ...}`,
//! `dtype`). Unknown keys are ignored; a present key of the wrong type or value is an error that
//! names it.

use std::path::Path;

use brainstacks_tensor::DType;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `rope_scaling: null` (or `rope_type: "default"`).
    None,
    /// Every inverse frequency divided by `factor` (position interpolation).
    Linear { factor: f64 },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: usize },
}

/// The Llama hyper-parameters (see the module docs for the accepted layouts).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (plain multi-head attention).
    pub num_key_value_heads: usize,
    /// Defaults to `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    /// Defaults to 1e-6 (transformers' `LlamaConfig` default).
    pub rms_norm_eps: f64,
    /// Defaults to 10000.
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// Defaults to 2048.
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    /// Defaults to false.
    pub tie_word_embeddings: bool,
    /// `bos_token_id` / `eos_token_id`: an int, a list, or absent/null (empty).
    pub bos_token_ids: Vec<u32>,
    pub eos_token_ids: Vec<u32>,
    /// `torch_dtype` (or `dtype`): the dtype the weights were saved in, when stated.
    pub torch_dtype: Option<DType>,
}

fn cfg_err(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Config { layer: "LlamaConfig".into(), msg: format!("key {key:?}: {msg}") }
}

/// A present, non-null value.
fn get<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn usize_at(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<usize>> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| cfg_err(path, format!("expected a non-negative integer, found {v}"))),
    }
}

fn f64_at(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<f64>> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| cfg_err(path, format!("expected a number, found {v}"))),
    }
}

fn required_usize(obj: &Map<String, Value>, key: &str) -> Result<usize> {
    let v = usize_at(obj, key, key)?.ok_or_else(|| cfg_err(key, "missing"))?;
    if v == 0 {
        return Err(cfg_err(key, "must be positive"));
    }
    Ok(v)
}

/// Upper bounds on the sizes a config may claim: far above any real Llama (the largest have a
/// width of 16384, an FFN of 53248, 128 heads, 126 layers, vocabularies of 256k), low enough that
/// nothing derived from them (RoPE tables, weight shapes, their products) overflows or asks for an
/// impossible allocation before the weights are even opened.
const MAX_WIDTH: usize = 1 << 20;
const MAX_HEADS: usize = 1 << 14;
const MAX_LAYERS: usize = 1 << 14;
const MAX_VOCAB: usize = 1 << 26;

/// `value` of `key`, or an error when it is above `max`.
fn at_most(key: &str, value: usize, max: usize) -> Result<usize> {
    if value > max {
        return Err(cfg_err(key, format!("{value} is implausibly large (at most {max} is accepted)")));
    }
    Ok(value)
}

fn token_ids(obj: &Map<String, Value>, key: &str) -> Result<Vec<u32>> {
    let one = |v: &Value| v.as_u64().and_then(|x| u32::try_from(x).ok());
    match get(obj, key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| one(v).ok_or_else(|| cfg_err(key, format!("list entry {v} is not a token id"))))
            .collect(),
        Some(v) => one(v).map(|x| vec![x]).ok_or_else(|| cfg_err(key, format!("expected a token id or a list, found {v}"))),
    }
}

fn parse_dtype(key: &str, v: &Value) -> Result<DType> {
    let name = v.as_str().ok_or_else(|| cfg_err(key, format!("expected a string, found {v}")))?;
    Ok(match name.strip_prefix("torch.").unwrap_or(name) {
        "float32" => DType::F32,
        "bfloat16" => DType::BF16,
        "float16" => DType::F16,
        "float64" => DType::F64,
        other => return Err(cfg_err(key, format!("unsupported dtype {other:?}"))),
    })
}

/// A positive finite number.
fn positive(key: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 { Ok(v) } else { Err(cfg_err(key, format!("{v} must be finite and positive"))) }
}

/// Reads the scaling from a `rope_scaling` (v4) or `rope_parameters` (v5) object named `key`.
fn rope_scaling(key: &str, obj: &Map<String, Value>) -> Result<RopeScaling> {
    let p = |k: &str| format!("{key}.{k}");
    // transformers accepts the legacy spelling "type" for "rope_type".
    let kind = match get(obj, "rope_type").or_else(|| get(obj, "type")) {
        None => "default",
        Some(v) => v.as_str().ok_or_else(|| cfg_err(&p("rope_type"), format!("expected a string, found {v}")))?,
    };
    if let Some(f) = f64_at(obj, "partial_rotary_factor", &p("partial_rotary_factor"))?
        && f != 1.0
    {
        return Err(cfg_err(&p("partial_rotary_factor"), format!("{f} is not supported (only 1.0)")));
    }
    let need = |k: &str| -> Result<f64> {
        let v = f64_at(obj, k, &p(k))?.ok_or_else(|| cfg_err(&p(k), format!("missing (required by rope_type {kind:?})")))?;
        positive(&p(k), v)
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: need("factor")? },
        "llama3" => {
            let (low, high) = (need("low_freq_factor")?, need("high_freq_factor")?);
            if high <= low {
                return Err(cfg_err(&p("high_freq_factor"), format!("{high} must exceed low_freq_factor {low}")));
            }
            let key_omp = p("original_max_position_embeddings");
            let omp = usize_at(obj, "original_max_position_embeddings", &key_omp)?
                .ok_or_else(|| cfg_err(&key_omp, "missing (required by rope_type \"llama3\")"))?;
            if omp == 0 {
                return Err(cfg_err(&key_omp, "must be positive"));
            }
            RopeScaling::Llama3 { factor: need("factor")?, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: omp }
        }
        other => {
            return Err(cfg_err(&p("rope_type"), format!("{other:?} is not supported (default, linear or llama3)")));
        }
    })
}

impl LlamaConfig {
    /// Reads `config.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Checkpoint { path: path.to_path_buf(), msg: format!("cannot read the model config: {e}") })?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config { msg, .. } => Error::Checkpoint { path: path.to_path_buf(), msg },
            e => e,
        })
    }

    /// Parses the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text).map_err(|e| cfg_err("(document)", format!("not valid JSON: {e}")))?;
        Self::from_value(&v)
    }

    /// Reads a parsed `config.json`.
    pub fn from_value(v: &Value) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| cfg_err("(document)", "expected a JSON object"))?;
        if let Some(t) = get(obj, "model_type")
            && t.as_str() != Some("llama")
        {
            return Err(cfg_err("model_type", format!("{t} is not \"llama\"")));
        }
        if let Some(a) = get(obj, "hidden_act")
            && a.as_str() != Some("silu")
        {
            return Err(cfg_err("hidden_act", format!("{a} is not supported (only \"silu\")")));
        }
        for key in ["attention_bias", "mlp_bias"] {
            match get(obj, key) {
                None | Some(Value::Bool(false)) => {}
                Some(Value::Bool(true)) => return Err(cfg_err(key, "biased projections are not supported")),
                Some(v) => return Err(cfg_err(key, format!("expected a boolean, found {v}"))),
            }
        }
        let hidden_size = at_most("hidden_size", required_usize(obj, "hidden_size")?, MAX_WIDTH)?;
        let intermediate_size = at_most("intermediate_size", required_usize(obj, "intermediate_size")?, MAX_WIDTH)?;
        let num_hidden_layers = at_most("num_hidden_layers", required_usize(obj, "num_hidden_layers")?, MAX_LAYERS)?;
        let num_attention_heads = at_most("num_attention_heads", required_usize(obj, "num_attention_heads")?, MAX_HEADS)?;
        let vocab_size = at_most("vocab_size", required_usize(obj, "vocab_size")?, MAX_VOCAB)?;
        let num_key_value_heads = usize_at(obj, "num_key_value_heads", "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(cfg_err(
                "num_key_value_heads",
                format!("{num_key_value_heads} must be positive and divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = match usize_at(obj, "head_dim", "head_dim")? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_attention_heads) => hidden_size / num_attention_heads,
            None => {
                return Err(cfg_err("head_dim", format!("absent, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")));
            }
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(cfg_err("head_dim", format!("{head_dim} must be positive and even (RoPE rotates pairs)")));
        }
        at_most("head_dim", head_dim, MAX_WIDTH)?;
        // The query projection's width: heads times head_dim, both bounded, so no overflow.
        at_most("num_attention_heads * head_dim", num_attention_heads * head_dim, MAX_WIDTH)?;
        let rms_norm_eps = f64_at(obj, "rms_norm_eps", "rms_norm_eps")?.unwrap_or(1e-6);
        if !(rms_norm_eps.is_finite() && rms_norm_eps >= 0.0) {
            return Err(cfg_err("rms_norm_eps", format!("{rms_norm_eps} must be finite and non-negative")));
        }
        // transformers 5 nests theta and scaling in `rope_parameters`; 4 keeps them at the top.
        let (rope_theta, rope_scaling) = match get(obj, "rope_parameters") {
            Some(Value::Object(rp)) => {
                let theta = f64_at(rp, "rope_theta", "rope_parameters.rope_theta")?;
                let theta = match theta {
                    Some(t) => t,
                    None => f64_at(obj, "rope_theta", "rope_theta")?.unwrap_or(10000.0),
                };
                (positive("rope_parameters.rope_theta", theta)?, rope_scaling("rope_parameters", rp)?)
            }
            Some(v) => return Err(cfg_err("rope_parameters", format!("expected an object, found {v}"))),
            None => {
                let theta = positive("rope_theta", f64_at(obj, "rope_theta", "rope_theta")?.unwrap_or(10000.0))?;
                let scaling = match get(obj, "rope_scaling") {
                    None => RopeScaling::None,
                    Some(Value::Object(rs)) => rope_scaling("rope_scaling", rs)?,
                    Some(v) => return Err(cfg_err("rope_scaling", format!("expected null or an object, found {v}"))),
                };
                (theta, scaling)
            }
        };
        let max_position_embeddings = usize_at(obj, "max_position_embeddings", "max_position_embeddings")?.unwrap_or(2048);
        let tie_word_embeddings = match get(obj, "tie_word_embeddings") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(cfg_err("tie_word_embeddings", format!("expected a boolean, found {v}"))),
        };
        let torch_dtype = match (get(obj, "torch_dtype"), get(obj, "dtype")) {
            (Some(v), _) => Some(parse_dtype("torch_dtype", v)?),
            (None, Some(v)) => Some(parse_dtype("dtype", v)?),
            (None, None) => None,
        };
        Ok(Self {
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            vocab_size,
            tie_word_embeddings,
            bos_token_ids: token_ids(obj, "bos_token_id")?,
            eos_token_ids: token_ids(obj, "eos_token_id")?,
            torch_dtype,
        })
    }

    /// RoPE inverse frequencies, `head_dim / 2` of them, as transformers computes them
    /// (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
    /// `_compute_llama3_parameters`), here in f64 (transformers uses f32; the difference is a
    /// relative 1e-7 that only matters for angles at very large positions). All three types have
    /// an attention factor of 1, so the tables need no extra scale.
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim as f64;
        let base: Vec<f64> = (0..self.head_dim / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d)).collect();
        match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.into_iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let old = original_max_position_embeddings as f64;
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                base.into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        // Long wavelengths (low frequencies) are interpolated by `factor`.
                        let scaled = if wavelen > low_freq_wavelen { f / factor } else { f };
                        // Between the two bands: a linear blend of scaled and unscaled.
                        // transformers: `~(wavelen < high) * ~(wavelen > low)`; the same for the
                        // finite wavelengths here (theta and head_dim make every one finite).
                        let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                        if medium {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"{"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 97}"#;

    fn with(extra: &str) -> Result<LlamaConfig> {
        LlamaConfig::from_json(&format!("{}, {extra}}}", MIN.trim_end_matches('}')))
    }

    #[test]
    fn defaults_follow_transformers() -> Result<()> {
        let c = LlamaConfig::from_json(MIN)?;
        assert_eq!((c.num_key_value_heads, c.head_dim, c.rope_theta), (4, 16, 10000.0));
        assert_eq!((c.rope_scaling.clone(), c.tie_word_embeddings, c.max_position_embeddings), (RopeScaling::None, false, 2048));
        assert_eq!((c.rms_norm_eps, c.torch_dtype), (1e-6, None));
        assert!(c.eos_token_ids.is_empty());
        Ok(())
    }

    #[test]
    fn token_ids_int_or_list_and_unknown_keys() -> Result<()> {
        let c = with(r#""eos_token_id": [2, 7], "bos_token_id": 1, "whatever": {"x": 1}, "torch_dtype": "bfloat16""#)?;
        assert_eq!((c.bos_token_ids, c.eos_token_ids, c.torch_dtype), (vec![1], vec![2, 7], Some(DType::BF16)));
        Ok(())
    }

    #[test]
    fn transformers5_rope_parameters() -> Result<()> {
        let c = with(r#""rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}, "dtype": "float32""#)?;
        assert_eq!((c.rope_theta, c.rope_scaling, c.torch_dtype), (500000.0, RopeScaling::None, Some(DType::F32)));
        let c = with(r#""rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 7.0}"#)?;
        assert_eq!((c.rope_theta, c.rope_scaling), (7.0, RopeScaling::Linear { factor: 2.0 }));
        Ok(())
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (r#""num_key_value_heads": 3"#, "num_key_value_heads"),
            (r#""rope_scaling": {"rope_type": "yarn", "factor": 2.0}"#, "rope_scaling.rope_type"),
            (r#""rope_scaling": {"rope_type": "linear"}"#, "rope_scaling.factor"),
            (r#""rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}"#, "rope_parameters.original_max_position_embeddings"),
            (r#""head_dim": 15"#, "head_dim"),
            (r#""head_dim": 6666666666664"#, "head_dim"),
            (r#""num_hidden_layers": 100000"#, "num_hidden_layers"),
            (r#""eos_token_id": "x""#, "eos_token_id"),
            (r#""hidden_act": "gelu""#, "hidden_act"),
            (r#""attention_bias": true"#, "attention_bias"),
            (r#""torch_dtype": "int8""#, "torch_dtype"),
            (r#""rope_theta": -1"#, "rope_theta"),
        ];
        for (extra, key) in cases {
            let e = with(extra).err().unwrap_or_else(|| panic!("{extra} should fail")).to_string();
            assert!(e.contains(&format!("{key:?}")), "{extra}: {e}");
        }
        let e = LlamaConfig::from_json(r#"{"hidden_size": 64}"#).err().unwrap().to_string();
        assert!(e.contains("\"intermediate_size\"") && e.contains("missing"), "{e}");
    }

    #[test]
    fn linear_and_llama3_frequencies() -> Result<()> {
        let plain = LlamaConfig::from_json(MIN)?.inv_freq();
        let lin = with(r#""rope_scaling": {"type": "linear", "factor": 4.0}"#)?.inv_freq();
        for (a, b) in plain.iter().zip(&lin) {
            assert_eq!(*b, a / 4.0);
        }
        // original 32, low 1, high 4: wavelen < 8 kept, > 32 divided by 8, blended between.
        let l3 = with(r#""rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}"#)?
        .inv_freq();
        let mut bands = [0; 3];
        for (f, g) in plain.iter().zip(&l3) {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < 8.0 {
                assert_eq!(g, f);
                bands[0] += 1;
            } else if wavelen > 32.0 {
                assert_eq!(*g, f / 8.0);
                bands[2] += 1;
            } else {
                let s = (32.0 / wavelen - 1.0) / 3.0;
                assert!((g - ((1.0 - s) * f / 8.0 + s * f)).abs() < 1e-15);
                assert!(*g < *f && *g > f / 8.0);
                bands[1] += 1;
            }
        }
        assert!(bands.iter().all(|&n| n > 0), "{bands:?}");
        Ok(())
    }
}
