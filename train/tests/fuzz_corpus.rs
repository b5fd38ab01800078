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
    brainstacks_tensor::fuzz_support::replay_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"), target, run, accepts);
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
