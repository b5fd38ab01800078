//! `quantize_checkpoint` on a small Llama-shaped checkpoint: what is quantized, what is kept byte
//! for byte, sharding, the config, and the errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use brainstacks_model::formats::bnb4::{is_nf4, read_nf4};
use brainstacks_model::formats::quantize::{QuantizeEvent, QuantizeOptions, quantize_checkpoint};
use brainstacks_tensor::io::{Checkpoint, TensorToWrite, write_safetensors};
use brainstacks_tensor::{DType, Device, Rng, Tensor};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bs-quant-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 2-layer Llama-shaped bf16 checkpoint in two shards, with a tokenizer file.
fn write_source(dir: &Path, odd_width: bool) -> Vec<(String, Tensor)> {
    let mut rng = Rng::new(7);
    let mut tensors = Vec::new();
    let mut add = |name: &str, shape: &[usize]| {
        let t = Tensor::randn(&mut rng, 0.0, 0.05, shape, DType::F32, &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
        tensors.push((name.to_string(), t));
    };
    let (h, ffn, vocab) = (128, if odd_width { 200 } else { 192 }, 50);
    add("model.embed_tokens.weight", &[vocab, h]);
    for l in 0..2 {
        for p in ["q", "k", "v", "o"] {
            add(&format!("model.layers.{l}.self_attn.{p}_proj.weight"), &[h, h]);
        }
        add(&format!("model.layers.{l}.mlp.gate_proj.weight"), &[ffn, h]);
        add(&format!("model.layers.{l}.mlp.up_proj.weight"), &[ffn, h]);
        add(&format!("model.layers.{l}.mlp.down_proj.weight"), &[h, ffn]);
        add(&format!("model.layers.{l}.input_layernorm.weight"), &[h]);
        add(&format!("model.layers.{l}.post_attention_layernorm.weight"), &[h]);
    }
    add("model.norm.weight", &[h]);
    add("lm_head.weight", &[vocab, h]);
    let (first, second) = tensors.split_at(7);
    let mut map = serde_json::Map::new();
    for (k, part) in [first, second].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let w: Vec<_> = part.iter().map(|(n, t)| TensorToWrite::from_tensor(n.clone(), t).unwrap()).collect();
        write_safetensors(&dir.join(&file), &w, &BTreeMap::new()).unwrap();
        for (n, _) in part.iter() {
            map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llama", "hidden_size": 128, "torch_dtype": "bfloat16"}"#).unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{\"fake\": true}").unwrap();
    tensors
}

#[test]
fn quantizes_linear_weights_and_keeps_the_rest() {
    for (dq, shard_bytes) in [(false, 1u64 << 40), (true, 40_000)] {
        let src = scratch(&format!("src-{dq}"));
        let dst = scratch(&format!("dst-{dq}"));
        let originals = write_source(&src, false);
        let opts = QuantizeOptions { double_quant: dq, blocksize: 64, max_shard_bytes: shard_bytes };
        let (mut seen, mut total) = (0u64, 0u64);
        let report = quantize_checkpoint(&src, &dst, &opts, |e| match e {
            QuantizeEvent::Start { bytes, .. } => total = bytes,
            QuantizeEvent::Tensor { bytes, .. } => seen += bytes,
            QuantizeEvent::Wrote { .. } => {}
        })
        .unwrap();
        assert_eq!(seen, total, "progress covers every input byte");
        assert_eq!(report.quantized.len(), 14);
        assert_eq!(report.kept.len(), originals.len() - 14);
        assert!(report.bytes_out < report.bytes_in);
        if shard_bytes < 1 << 30 {
            assert!(report.files.len() > 1 && dst.join("model.safetensors.index.json").exists());
        } else {
            assert_eq!(report.files, vec![dst.join("model.safetensors")]);
        }
        let ck = Checkpoint::open_dir(&dst).unwrap();
        for (name, t) in &originals {
            let quantized = name.contains("_proj");
            assert_eq!(is_nf4(&ck, name), quantized, "{name}");
            if quantized {
                let w = read_nf4(&ck, name).unwrap();
                assert_eq!(w.orig_dtype(), DType::BF16);
                assert_eq!(w.double_quant().is_some(), dq);
                // Dequantized within the NF4 bound of each block's absmax.
                let orig = t.to_vec_f64().unwrap();
                let deq = w.dequantize().unwrap().to_vec::<f32>().unwrap();
                // Bound: half the widest code gap times the block's true absmax, plus the error of
                // the stored scale (double quantization rounds it to 8 bits) times |code| <= 1.
                for (i, (a, b)) in orig.iter().zip(&deq).enumerate() {
                    let block = &orig[i / 64 * 64..(i / 64 + 1) * 64];
                    let amax = block.iter().fold(0f64, |m, x| m.max(x.abs()));
                    let scale_err = (f64::from(w.absmax()[i / 64]) - amax).abs();
                    let bound = 0.1519037 * amax + scale_err + 1e-6 * amax;
                    assert!((a - f64::from(*b)).abs() <= bound, "{name}[{i}]: {a} vs {b}, bound {bound}");
                }
            } else {
                let back = ck.tensor(name).unwrap();
                assert_eq!(back.dtype(), DType::BF16, "{name}");
                assert_eq!(back.to_vec_f64().unwrap(), t.to_vec_f64().unwrap(), "{name} kept byte for byte");
            }
        }
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dst.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["quantization_config"]["bnb_4bit_quant_type"], "nf4");
        assert_eq!(cfg["quantization_config"]["bnb_4bit_use_double_quant"], dq);
        assert_eq!(cfg["quantization_config"]["bnb_4bit_compute_dtype"], "bfloat16");
        assert_eq!(cfg["hidden_size"], 128);
        assert_eq!(std::fs::read(dst.join("tokenizer.json")).unwrap(), b"{\"fake\": true}");

        // The output is already quantized: a second pass refuses it.
        let again = scratch(&format!("again-{dq}"));
        let msg = quantize_checkpoint(&dst, &again, &opts, |_| {}).unwrap_err().to_string();
        assert!(msg.contains("already quantized"), "{msg}");
        for d in [src, dst, again] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}

#[test]
fn odd_widths_are_kept_with_a_reason_and_errors_name_the_problem() {
    let src = scratch("odd-src");
    let dst = scratch("odd-dst");
    write_source(&src, true);
    let report = quantize_checkpoint(&src, &dst, &QuantizeOptions::default(), |_| {}).unwrap();
    let down: Vec<_> = report.kept.iter().filter(|(n, _)| n.contains("down_proj")).collect();
    assert_eq!(down.len(), 2);
    assert!(down[0].1.contains("200") && down[0].1.contains("multiple"), "{:?}", down[0]);

    let msg = quantize_checkpoint(&src, &src, &QuantizeOptions::default(), |_| {}).unwrap_err().to_string();
    assert!(msg.contains("must differ"), "{msg}");
    let bad = QuantizeOptions { blocksize: 48, ..Default::default() };
    assert!(quantize_checkpoint(&src, &dst, &bad, |_| {}).unwrap_err().to_string().contains("48"));
    let empty = scratch("odd-empty");
    let msg = quantize_checkpoint(&empty, &dst, &QuantizeOptions::default(), |_| {}).unwrap_err().to_string();
    assert!(msg.contains("config.json"), "{msg}");
    for d in [src, dst, empty] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
