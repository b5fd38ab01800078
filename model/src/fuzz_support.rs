//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the stable test that replays
//! their corpus (`tests/fuzz_corpus.rs`). Not part of the supported API.
//!
//! Each takes arbitrary bytes and must never panic: a rejected input is an error, and an
//! accepted one must satisfy the cheap invariants asserted here (a panic is a bug the fuzzer
//! found).

use serde_json::Value;

use crate::llama::{LlamaConfig, LoraConfig, SpecialTokens};

/// The bytes as text, or `None` when they are not UTF-8 (every parser here takes `&str`).
fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// `LlamaConfig::from_json` on arbitrary text; an accepted config must read back equal from
/// `to_hf_json`, both as a JSON value and through its serialized text (what `config.json`
/// holds on disk).
pub fn llama_config(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let Ok(cfg) = LlamaConfig::from_json(text) else { return };
    let v = cfg.to_hf_json();
    let again = LlamaConfig::from_value(&v).expect("a written config reads back");
    assert_eq!(again, cfg, "config.json value round trip");
    let written = serde_json::to_string(&v).expect("JSON values serialize");
    let again = LlamaConfig::from_json(&written).expect("a written config parses back");
    assert_eq!(again, cfg, "config.json text round trip");
    // Derived tables must not panic either (head_dim is validated even and positive).
    let inv = cfg.inv_freq();
    assert_eq!(inv.len(), cfg.head_dim / 2);
}

/// The PEFT `adapter_config.json` parser on arbitrary text; an accepted config must read back
/// equal from what `PeftLora::save` writes, and its scale must be computable.
pub fn adapter_config(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let Ok(cfg) = LoraConfig::from_json(text) else { return };
    assert!(cfg.r > 0, "an accepted rank is positive");
    let written = serde_json::to_string(&cfg.to_json()).expect("JSON values serialize");
    let again = LoraConfig::from_json(&written).expect("a written adapter config parses back");
    assert_eq!(again, cfg, "adapter_config.json round trip");
    let _ = cfg.scale();
}

/// A small vocabulary for the special-token lookups: `<s>`, `</s>`, `<unk>`, `<|eot_id|>`.
fn tiny_vocab(token: &str) -> Option<u32> {
    ["<unk>", "<s>", "</s>", "<|eot_id|>"].iter().position(|t| *t == token).map(|i| i as u32)
}

/// The special-token settings of `tokenizer_config.json` on arbitrary text (looked up in a tiny
/// vocabulary): a set id is one of the vocabulary's, a flag that is true has its token, and the
/// result does not depend on keys other than the four read.
pub fn tokenizer_config(bytes: &[u8]) {
    let Some(text) = text(bytes) else { return };
    let Ok(s) = SpecialTokens::from_config_json(text, tiny_vocab) else { return };
    for id in [s.bos_token_id, s.eos_token_id].into_iter().flatten() {
        assert!(id < 4, "id {id} is not from the vocabulary");
    }
    assert!(s.add_bos_token != Some(true) || s.bos_token_id.is_some(), "add_bos_token without a BOS");
    assert!(s.add_eos_token != Some(true) || s.eos_token_id.is_some(), "add_eos_token without an EOS");
    // Only the four keys matter: the map restricted to them gives the same settings.
    let Ok(Value::Object(full)) = serde_json::from_str::<Value>(text) else { panic!("accepted text is a JSON object") };
    let kept: serde_json::Map<String, Value> =
        full.into_iter().filter(|(k, _)| matches!(k.as_str(), "bos_token" | "eos_token" | "add_bos_token" | "add_eos_token")).collect();
    assert_eq!(SpecialTokens::from_config(&kept, tiny_vocab).expect("the same keys parse again"), s);
}
