//! Replays every committed fuzz seed and every saved crash input through the model crate's fuzz
//! entry points, so the normal (stable) test command keeps them passing. Seeds named `valid_*`
//! must also be accepted by the parser (so the corpus keeps reaching past the first error).

use std::path::Path;

use brainstacks_model::llama::{LlamaConfig, LoraConfig, SpecialTokens};

fn utf8(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("a valid_* seed is UTF-8")
}

fn replay(target: &str, run: fn(&[u8]), accepts: fn(&[u8]) -> bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for dir in [root.join("corpus").join(target), root.join("artifacts").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("readable dir entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            run(&bytes);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            assert!(!name.starts_with("valid_") || accepts(&bytes), "{} is named valid_ but rejected", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus for fuzz target {target}");
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
