//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the stable test that replays
//! their corpus (`tests/fuzz_corpus.rs`). Not part of the supported API.
//!
//! Each takes arbitrary bytes and must never panic: a rejected input is an error, and an
//! accepted one must satisfy the cheap invariants asserted here (a panic is a bug the fuzzer
//! found).

use brainstacks_model::llama::alpaca_prompt;

use crate::Error;
use crate::boost::config::RunConfig;
use crate::boost::manifest::Manifest;
use crate::data::{ByteTokenizer, ParseOptions, encode_example, parse_jsonl};

/// The same text as a run manifest and as a run config (`run.json`): each is rejected with an
/// error or accepted, and an accepted one reads back equal from what the run writes.
pub fn run_manifest(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(m) = Manifest::from_json_str(text) {
        let written = serde_json::to_string_pretty(&m).expect("a manifest serializes");
        assert_eq!(Manifest::from_json_str(&written).expect("a written manifest parses back"), m, "manifest round trip");
    }
    if let Ok(cfg) = RunConfig::from_json_str(text) {
        let written = serde_json::to_string(&cfg).expect("a run config serializes");
        assert_eq!(RunConfig::from_json_str(&written).expect("a written config parses back"), cfg, "run.json round trip");
        // What a run derives from a validated config must not panic either.
        let _ = (cfg.stack_config(), cfg.stack_options());
        for d in &cfg.domains {
            let _ = cfg.steps_for(d);
            for round in 1..=cfg.rounds_for(d).min(4) {
                let _ = cfg.round_seed(round);
            }
        }
    }
}

/// JSONL text -> examples (under two option sets), then every accepted example through the
/// Alpaca template and the byte tokenizer. A rejection must name a non-blank line of the text;
/// an acceptance must count every line, and every encoding must be `BOS + bytes of (prompt +
/// response) + EOS` with the response marked exactly after the prompt.
pub fn jsonl_examples(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let cut = ParseOptions { max_response_chars: Some(1 + bytes.len() % 7), strip_chat_tokens: false };
    for opts in [ParseOptions::default(), cut] {
        match parse_jsonl(text, "fuzz", &opts) {
            Err(Error::Invalid { what, .. }) => {
                let line: usize = what
                    .strip_prefix("fuzz:")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("the error does not name a line: {what:?}"));
                let named = text.lines().nth(line.wrapping_sub(1)).unwrap_or_else(|| panic!("line {line} is past the text"));
                assert!(!named.trim().is_empty(), "the error names blank line {line}");
            }
            Err(e) => panic!("unexpected error kind: {e}"),
            Ok(data) => {
                let c = data.counts;
                assert_eq!(c.lines, text.lines().count());
                assert_eq!(c.alpaca + c.chat, data.examples.len());
                assert_eq!(c.blank + data.examples.len(), c.lines);
                assert!(c.truncated <= data.examples.len());
                for ex in &data.examples {
                    assert!(!ex.instruction.is_empty() && !ex.response.is_empty());
                    if let Some(n) = opts.max_response_chars {
                        assert!(ex.response.chars().count() <= n, "response longer than max_response_chars");
                    }
                    let enc = encode_example(&ByteTokenizer, ex).expect("the byte tokenizer encodes any text");
                    let prompt = alpaca_prompt(&ex.instruction, ex.input.as_deref());
                    let body: Vec<u32> = format!("{prompt}{}", ex.response).bytes().map(u32::from).collect();
                    let n = enc.len();
                    assert_eq!(enc.is_response.len(), n);
                    assert_eq!((enc.ids[0], enc.ids[n - 1]), (ByteTokenizer::BOS, ByteTokenizer::EOS));
                    assert_eq!(enc.ids[1..n - 1], body[..], "encoding differs from the template's bytes");
                    assert_eq!(enc.prompt_len(), 1 + prompt.len(), "response boundary");
                    assert!(enc.is_response[enc.prompt_len()..].iter().all(|&r| r), "response marks are not a suffix");
                }
            }
        }
    }
}
