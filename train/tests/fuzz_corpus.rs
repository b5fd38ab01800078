//! Replays every committed fuzz seed and every saved crash input through the train crate's fuzz
//! entry points, so the normal (stable) test command keeps them passing. Seeds named `valid_*`
//! must also be accepted by the parser (so the corpus keeps reaching past the first error).

use std::path::Path;

use brainstacks_train::boost::config::RunConfig;
use brainstacks_train::boost::manifest::Manifest;
use brainstacks_train::data::{ParseOptions, parse_jsonl};

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
fn run_manifest_corpus() {
    // A seed is a manifest or a run config; valid_* must be one of the two.
    replay("run_manifest", brainstacks_train::fuzz_support::run_manifest, |b| {
        Manifest::from_json_str(utf8(b)).is_ok() || RunConfig::from_json_str(utf8(b)).is_ok()
    });
}

#[test]
fn jsonl_examples_corpus() {
    replay("jsonl_examples", brainstacks_train::fuzz_support::jsonl_examples, |b| {
        parse_jsonl(utf8(b), "seed", &ParseOptions::default()).is_ok()
    });
}
