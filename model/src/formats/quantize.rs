//! Turns a bf16/f16/f32 Hugging Face Llama checkpoint into a bitsandbytes-style 4-bit one.
//!
//! Every 2-D `*.weight` except the token embeddings and `lm_head` is quantized to NF4 (the linear
//! layers; transformers leaves `lm_head` and embeddings unquantized, and norms are 1-D). A weight
//! whose input width is not a multiple of the block size is kept as it is, with the reason in the
//! report: NF4 blocks must not straddle rows for our kernels. `config.json` gains the
//! `quantization_config` transformers writes, and the tokenizer files are copied, so the output
//! directory is a complete model.
//!
//! Output: `model.safetensors`, or shards of at most `max_shard_bytes` with an index when larger,
//! each written atomically (a run killed halfway leaves no torn file). Memory: one shard's output
//! at a time, plus the input memory map.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use brainstacks_tensor::io::checkpoint::{INDEX_FILE, SINGLE_FILE};
use brainstacks_tensor::io::{Checkpoint, TensorEntry, TensorToWrite, write_atomic_bytes, write_safetensors};
use brainstacks_tensor::nf4::{NESTED_BLOCKSIZE, Nf4Weight};
use brainstacks_tensor::DType;

use super::bnb4::{nf4_to_tensors, quantization_config};
use crate::{Error, Result};

/// Files copied unchanged next to the weights when present.
pub const COPIED_FILES: [&str; 5] =
    ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];

/// How to quantize.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// Double-quantize the per-block scales (QLoRA's default; 0.127 fewer bits per weight).
    pub double_quant: bool,
    /// Elements per block (bitsandbytes' default is 64).
    pub blocksize: usize,
    /// Largest output file before the checkpoint is sharded.
    pub max_shard_bytes: u64,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self { double_quant: false, blocksize: 64, max_shard_bytes: 4 << 30 }
    }
}

/// What happened, for a summary.
#[derive(Clone, Debug, Default)]
pub struct QuantizeReport {
    /// Weights stored in 4 bits.
    pub quantized: Vec<String>,
    /// Tensors stored as they were, with the reason.
    pub kept: Vec<(String, String)>,
    /// Tensor bytes read and written.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The weight files written.
    pub files: Vec<PathBuf>,
}

/// Progress, reported as the conversion goes.
#[derive(Clone, Debug)]
pub enum QuantizeEvent<'a> {
    /// Before any work: tensor count and input bytes.
    Start { tensors: usize, bytes: u64 },
    /// One input tensor done (its input bytes).
    Tensor { name: &'a str, bytes: u64, quantized: bool },
    /// A file written.
    Wrote { path: &'a Path },
}

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), msg: msg.into() }
}

/// Why `name` stays unquantized, or `None` to quantize it.
fn keep_reason(name: &str, e: &TensorEntry, blocksize: usize) -> Option<String> {
    if !name.ends_with(".weight") || e.shape.len() != 2 {
        return Some("not a 2-D weight".into());
    }
    if name.contains("embed_tokens") || name.starts_with("lm_head") || name.contains(".lm_head") {
        return Some("embeddings and lm_head stay unquantized".into());
    }
    match e.dtype.to_dtype() {
        Some(DType::F32 | DType::BF16 | DType::F16 | DType::F64) => {}
        _ => return Some(format!("dtype {} is not a float", e.dtype)),
    }
    if !e.shape[1].is_multiple_of(blocksize) {
        return Some(format!("in_features {} is not a multiple of the block size {blocksize}", e.shape[1]));
    }
    None
}

/// Output bytes of a quantized `[out, in]` weight (codes, scales, maps, JSON).
fn quantized_bytes(numel: usize, blocksize: usize, double_quant: bool) -> u64 {
    let blocks = numel.div_ceil(blocksize);
    let scales = if double_quant { blocks + 4 * blocks.div_ceil(NESTED_BLOCKSIZE) + 4 * 256 } else { 4 * blocks };
    (numel.div_ceil(2) + 64 + scales + 200) as u64
}

/// Converts the checkpoint in `src` into a 4-bit one in `dst` (created if missing).
pub fn quantize_checkpoint(
    src: &Path,
    dst: &Path,
    opts: &QuantizeOptions,
    mut progress: impl FnMut(QuantizeEvent<'_>),
) -> Result<QuantizeReport> {
    brainstacks_tensor::nf4::check_blocksize(opts.blocksize)
        .map_err(|e| err(src, format!("--blocksize: {e}")))?;
    let config_path = src.join("config.json");
    let config_text = std::fs::read_to_string(&config_path)
        .map_err(|e| err(&config_path, format!("cannot read the model config: {e}")))?;
    let mut config: serde_json::Value =
        serde_json::from_str(&config_text).map_err(|e| err(&config_path, format!("not valid JSON: {e}")))?;
    let obj = config.as_object_mut().ok_or_else(|| err(&config_path, "not a JSON object"))?;
    if obj.contains_key("quantization_config") {
        return Err(err(&config_path, "the checkpoint is already quantized (config.json has quantization_config)"));
    }
    let same = match (src.canonicalize(), dst.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(err(dst, "the output directory must differ from the input"));
    }
    let ck = Checkpoint::open_dir(src)?;
    std::fs::create_dir_all(dst).map_err(|e| err(dst, format!("cannot create the output directory: {e}")))?;

    // Plan: which tensors are quantized, and how the outputs split into shards.
    let names: Vec<String> = ck.names().map(str::to_string).collect();
    let mut plan: Vec<(String, Option<String>, u64)> = Vec::with_capacity(names.len());
    let mut total_in = 0u64;
    for name in &names {
        let (_, e) = ck.locate(name)?;
        let reason = keep_reason(name, e, opts.blocksize);
        let out_bytes = match &reason {
            None => quantized_bytes(e.elem_count(), opts.blocksize, opts.double_quant),
            Some(_) => (e.end - e.begin) as u64,
        };
        total_in += (e.end - e.begin) as u64;
        plan.push((name.clone(), reason, out_bytes));
    }
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut current = 0u64;
    for (i, (_, _, bytes)) in plan.iter().enumerate() {
        if current > 0 && current + bytes > opts.max_shard_bytes {
            shards.push(Vec::new());
            current = 0;
        }
        shards.last_mut().expect("one shard").push(i);
        current += bytes;
    }
    let n_shards = shards.len();
    let file_name = |k: usize| {
        if n_shards == 1 { SINGLE_FILE.to_string() } else { format!("model-{:05}-of-{n_shards:05}.safetensors", k + 1) }
    };

    progress(QuantizeEvent::Start { tensors: names.len(), bytes: total_in });
    let mut report = QuantizeReport { bytes_in: total_in, ..Default::default() };
    let mut weight_map = serde_json::Map::new();
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    for (k, shard) in shards.iter().enumerate() {
        // Kept tensors borrow their bytes from the input's memory map: no copy of embeddings or
        // lm_head, the largest tensors of a checkpoint.
        let mut out: Vec<TensorToWrite<'_>> = Vec::new();
        for &i in shard {
            let (name, reason, _) = &plan[i];
            let (_, e) = ck.locate(name)?;
            let in_bytes = (e.end - e.begin) as u64;
            match reason {
                None => {
                    let w = Nf4Weight::quantize(&ck.tensor(name)?, opts.blocksize, opts.double_quant)
                        .map_err(|e| err(src, format!("quantizing {name:?}: {e}")))?;
                    out.extend(nf4_to_tensors(name, &w));
                    report.quantized.push(name.clone());
                }
                Some(why) => {
                    out.push(TensorToWrite::raw(name.clone(), e.dtype, &e.shape, ck.bytes(name)?));
                    report.kept.push((name.clone(), why.clone()));
                }
            }
            progress(QuantizeEvent::Tensor { name, bytes: in_bytes, quantized: reason.is_none() });
        }
        let fname = file_name(k);
        let path = dst.join(&fname);
        for t in &out {
            weight_map.insert(t.name.clone(), serde_json::Value::String(fname.clone()));
            report.bytes_out += t.data.len() as u64;
        }
        write_safetensors(&path, &out, &metadata)?;
        progress(QuantizeEvent::Wrote { path: &path });
        report.files.push(path);
    }
    if n_shards > 1 {
        let index = serde_json::json!({ "metadata": { "total_size": report.bytes_out }, "weight_map": weight_map });
        let path = dst.join(INDEX_FILE);
        write_atomic_bytes(&path, serde_json::to_string_pretty(&index).expect("JSON").as_bytes())?;
    } else {
        // A stale index from an earlier sharded run would shadow the new single file.
        let _ = std::fs::remove_file(dst.join(INDEX_FILE));
    }

    let compute = match obj.get("torch_dtype").and_then(|v| v.as_str()) {
        Some("float32") => DType::F32,
        Some("float16") => DType::F16,
        _ => DType::BF16,
    };
    obj.insert("quantization_config".into(), quantization_config(opts.double_quant, compute));
    let cfg_out = dst.join("config.json");
    write_atomic_bytes(&cfg_out, serde_json::to_string_pretty(&config).expect("JSON").as_bytes())?;
    for f in COPIED_FILES {
        let from = src.join(f);
        if from.exists() {
            let bytes = std::fs::read(&from).map_err(|e| err(&from, format!("cannot read: {e}")))?;
            write_atomic_bytes(&dst.join(f), &bytes)?;
        }
    }
    Ok(report)
}
