//! Replays every committed fuzz seed and every saved crash input through the model crate's fuzz
//! entry points, so the normal (stable) test command keeps them passing. Seeds named `valid_*`
//! must also be accepted by the parser (so the corpus keeps reaching past the first error).

use std::path::Path;

use brainstacks_model::llama::{LlamaConfig, LoraConfig, SpecialTokens};

fn utf8(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("a valid_* seed is UTF-8")
}

fn replay(target: &str, run: fn(&[u8]), accepts: fn(&[u8]) -> bool) {
    brainstacks_tensor::fuzz_support::replay_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"), target, run, accepts);
}

#[test]
fn llama_config_corpus() {
    replay("llama_config", brainstacks_model::fuzz_support::llama_config, |b| LlamaConfig::from_json(utf8(b)).is_ok());
}

#[test]
fn adapter_config_corpus() {
    replay("adapter_config", brainstacks_model::fuzz_support::adapter_config, |b| LoraConfig::from_json(utf8(b)).is_ok());
}

#[test]
fn tokenizer_config_corpus() {
    replay("tokenizer_config", brainstacks_model::fuzz_support::tokenizer_config, |b| {
        let vocab = |t: &str| ["<unk>", "<s>", "</s>", "<|eot_id|>"].iter().position(|v| *v == t).map(|i| i as u32);
        SpecialTokens::from_config_json(utf8(b), vocab).is_ok()
    });
}
