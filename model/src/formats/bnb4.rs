//! The bitsandbytes 4-bit (NF4) serialization of a Hugging Face pre-quantized checkpoint.
//!
//! For a quantized linear weight `W` named e.g. `model.layers.0.mlp.up_proj.weight`, the
//! checkpoint holds (the names are the weight's name plus a suffix):
//!
//! | key | dtype, shape | content |
//! |---|---|---|
//! | `NAME` | U8 `[ceil(numel / 2), 1]` | packed codes, element `2i` in the high nibble of byte `i` |
//! | `NAME.absmax` | F32 `[blocks]`, or U8 `[blocks]` when double-quantized | per-block scales |
//! | `NAME.quant_map` | F32 `[16]` | the NF4 code table |
//! | `NAME.nested_absmax` | F32 `[ceil(blocks / 256)]` | double quantization only |
//! | `NAME.nested_quant_map` | F32 `[256]` | double quantization only: the 8-bit dynamic map |
//! | `NAME.quant_state.bitsandbytes__nf4` | U8 `[len]` | UTF-8 JSON of the other fields |
//!
//! The JSON holds, in this order, `quant_type` ("nf4"), `blocksize`, `dtype` (the weight's dtype
//! before quantization, e.g. "bfloat16"), `shape` (`[out, in]`), and when double-quantized
//! `nested_blocksize` (256), `nested_dtype` ("float32") and `nested_offset` (the mean that was
//! subtracted from the scales). We write it exactly as Python's `json.dumps` does, so a weight
//! quantized here and by bitsandbytes serialises to the same bytes.
//!
//! Norms, embeddings and `lm_head` stay in their original dtype, as transformers leaves them.

use std::path::Path;

use brainstacks_tensor::io::{Checkpoint, StDtype, TensorToWrite};
use brainstacks_tensor::nf4::{DoubleQuant, NESTED_BLOCKSIZE, NF4_CODE, Nf4Weight};
use brainstacks_tensor::DType;

use super::pyjson::py_float;
use crate::{Error, Result};

/// Suffix of the JSON metadata tensor; its presence marks a weight as stored in 4 bits.
pub const QUANT_STATE_SUFFIX: &str = "quant_state.bitsandbytes__nf4";

fn bad(path: &Path, name: &str, msg: impl std::fmt::Display) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), msg: format!("4-bit weight {name:?}: {msg}") }
}

/// The torch dtype name bitsandbytes records (`str(torch.bfloat16)` without `torch.`).
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F32 => "float32",
        DType::F64 => "float64",
        DType::U8 => "uint8",
        DType::U32 => "uint32",
        DType::I64 => "int64",
    }
}

fn dtype_from_torch_name(name: &str) -> Option<DType> {
    Some(match name {
        "bfloat16" => DType::BF16,
        "float16" => DType::F16,
        "float32" => DType::F32,
        "float64" => DType::F64,
        _ => return None,
    })
}

/// The quant-state JSON, byte-for-byte as bitsandbytes writes it.
fn quant_state_json(w: &Nf4Weight) -> String {
    let [out_f, in_f] = w.shape();
    let mut s = format!(
        "{{\"quant_type\": \"nf4\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{out_f}, {in_f}]",
        w.blocksize(),
        torch_dtype_name(w.orig_dtype())
    );
    if let Some(dq) = w.double_quant() {
        s.push_str(&format!(
            ", \"nested_blocksize\": {NESTED_BLOCKSIZE}, \"nested_dtype\": \"float32\", \"nested_offset\": {}",
            py_float(f64::from(dq.offset()))
        ));
    }
    s.push('}');
    s
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The tensors that store `w` under the weight name `name`.
pub fn nf4_to_tensors(name: &str, w: &Nf4Weight) -> Vec<TensorToWrite<'static>> {
    let mut out = vec![
        TensorToWrite::raw(name, StDtype::U8, &[w.packed().len(), 1], w.packed().to_vec()),
        TensorToWrite::raw(format!("{name}.quant_map"), StDtype::F32, &[16], f32_bytes(&NF4_CODE)),
    ];
    match w.double_quant() {
        Some(dq) => {
            out.push(TensorToWrite::raw(format!("{name}.absmax"), StDtype::U8, &[dq.quantized().len()], dq.quantized().to_vec()));
            out.push(TensorToWrite::raw(
                format!("{name}.nested_absmax"),
                StDtype::F32,
                &[dq.nested_absmax().len()],
                f32_bytes(dq.nested_absmax()),
            ));
            out.push(TensorToWrite::raw(format!("{name}.nested_quant_map"), StDtype::F32, &[256], f32_bytes(dq.nested_quant_map())));
        }
        None => out.push(TensorToWrite::raw(format!("{name}.absmax"), StDtype::F32, &[w.absmax().len()], f32_bytes(w.absmax()))),
    }
    let json = quant_state_json(w).into_bytes();
    out.push(TensorToWrite::raw(format!("{name}.{QUANT_STATE_SUFFIX}"), StDtype::U8, &[json.len()], json));
    out
}

/// Whether the checkpoint stores `name` in 4 bits.
pub fn is_nf4(ck: &Checkpoint, name: &str) -> bool {
    ck.contains(&format!("{name}.{QUANT_STATE_SUFFIX}"))
}

/// Every key a 4-bit weight `name` may occupy (its own name included), for callers that list the
/// tensors a checkpoint holds beyond the model's own.
pub fn nf4_keys(name: &str) -> Vec<String> {
    let mut v = vec![name.to_string()];
    for s in ["absmax", "quant_map", "nested_absmax", "nested_quant_map", QUANT_STATE_SUFFIX] {
        v.push(format!("{name}.{s}"));
    }
    v
}

#[derive(serde::Deserialize)]
struct QuantStateJson {
    quant_type: String,
    blocksize: usize,
    dtype: String,
    shape: Vec<usize>,
    nested_blocksize: Option<usize>,
    nested_offset: Option<f64>,
}

fn f32_tensor(ck: &Checkpoint, key: &str, len: usize, name: &str) -> Result<Vec<f32>> {
    let (file, e) = ck.locate(key)?;
    if e.dtype != StDtype::F32 || e.elem_count() != len {
        return Err(bad(file.path(), name, format!("{key} is {} {:?}, expected F32 with {len} elements", e.dtype, e.shape)));
    }
    Ok(ck.bytes(key)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
}

/// Reads the 4-bit weight `name`, checking every key against the quant state.
pub fn read_nf4(ck: &Checkpoint, name: &str) -> Result<Nf4Weight> {
    let state_key = format!("{name}.{QUANT_STATE_SUFFIX}");
    let (file, _) = ck.locate(&state_key)?;
    let path = file.path().to_path_buf();
    let state: QuantStateJson = serde_json::from_slice(ck.bytes(&state_key)?)
        .map_err(|e| bad(&path, name, format!("quant state is not the expected JSON: {e}")))?;
    if state.quant_type != "nf4" {
        return Err(bad(&path, name, format!("quant_type {:?} is not supported (only \"nf4\")", state.quant_type)));
    }
    let &[out_f, in_f] = state.shape.as_slice() else {
        return Err(bad(&path, name, format!("shape {:?} is not 2-D", state.shape)));
    };
    let orig_dtype = dtype_from_torch_name(&state.dtype)
        .ok_or_else(|| bad(&path, name, format!("unknown original dtype {:?}", state.dtype)))?;
    let numel = out_f.checked_mul(in_f).ok_or_else(|| bad(&path, name, "shape overflows"))?;
    let blocksize = state.blocksize;
    if blocksize == 0 {
        return Err(bad(&path, name, "blocksize is 0"));
    }
    let blocks = numel.div_ceil(blocksize);

    // Packed codes: bitsandbytes may store them in another dtype (quant_storage); only bytes count.
    let (pfile, pe) = ck.locate(name)?;
    let packed = ck.bytes(name)?.to_vec();
    if packed.len() != numel.div_ceil(2) {
        return Err(bad(
            pfile.path(),
            name,
            format!("{} packed bytes ({} {:?}), shape {:?} needs {}", packed.len(), pe.dtype, pe.shape, state.shape, numel.div_ceil(2)),
        ));
    }
    let quant_map = f32_tensor(ck, &format!("{name}.quant_map"), 16, name)?;
    if quant_map.iter().zip(NF4_CODE.iter()).any(|(a, b)| a.to_bits() != b.to_bits()) {
        return Err(bad(&path, name, "quant_map is not the NF4 code table"));
    }
    let absmax_key = format!("{name}.absmax");
    let weight = if let Some(offset) = state.nested_offset {
        if state.nested_blocksize != Some(NESTED_BLOCKSIZE) {
            return Err(bad(&path, name, format!("nested_blocksize {:?}, expected {NESTED_BLOCKSIZE}", state.nested_blocksize)));
        }
        let (afile, ae) = ck.locate(&absmax_key)?;
        if ae.dtype != StDtype::U8 || ae.elem_count() != blocks {
            return Err(bad(afile.path(), name, format!("{absmax_key} is {} {:?}, expected U8 with {blocks} elements", ae.dtype, ae.shape)));
        }
        let codes = ck.bytes(&absmax_key)?.to_vec();
        let nested = f32_tensor(ck, &format!("{name}.nested_absmax"), blocks.div_ceil(NESTED_BLOCKSIZE), name)?;
        let map: [f32; 256] = f32_tensor(ck, &format!("{name}.nested_quant_map"), 256, name)?
            .try_into()
            .expect("length checked");
        let dq = DoubleQuant::from_parts(nested, codes, offset as f32, map).map_err(|e| bad(&path, name, e))?;
        Nf4Weight::from_parts(out_f, in_f, blocksize, packed, None, Some(dq), orig_dtype)
    } else {
        let absmax = f32_tensor(ck, &absmax_key, blocks, name)?;
        Nf4Weight::from_parts(out_f, in_f, blocksize, packed, Some(absmax), None, orig_dtype)
    };
    weight.map_err(|e| bad(&path, name, e))
}

/// The `quantization_config` object transformers writes into `config.json` for such a checkpoint.
pub fn quantization_config(double_quant: bool, compute_dtype: DType) -> serde_json::Value {
    serde_json::json!({
        "quant_method": "bitsandbytes",
        "load_in_4bit": true,
        "load_in_8bit": false,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": double_quant,
        "bnb_4bit_compute_dtype": torch_dtype_name(compute_dtype),
        "bnb_4bit_quant_storage": "uint8",
        "llm_int8_skip_modules": null,
        "llm_int8_threshold": 6.0,
        "llm_int8_has_fp16_weight": false,
        "llm_int8_enable_fp32_cpu_offload": false,
    })
}
