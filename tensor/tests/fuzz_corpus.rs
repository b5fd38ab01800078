//! Replays every committed fuzz seed and every saved crash input through the fuzz entry points,
//! so the normal (stable) test command keeps them passing.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    // The tensor targets take any bytes: no seed has to be accepted.
    brainstacks_tensor::fuzz_support::replay_corpus(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz"), target, run, |_| true);
}

#[test]
fn strided_view_corpus() {
    replay("strided_view", brainstacks_tensor::fuzz_support::strided_view);
}

#[test]
fn safetensors_bytes_corpus() {
    replay("safetensors_bytes", brainstacks_tensor::fuzz_support::safetensors_bytes);
}

#[test]
fn nf4_parts_corpus() {
    replay("nf4_parts", brainstacks_tensor::fuzz_support::nf4_parts);
}
