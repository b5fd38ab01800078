//! Replays every committed fuzz seed and every saved crash input through the fuzz entry points,
//! so the normal (stable) test command keeps them passing.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut count = 0;
    for dir in [root.join("corpus").join(target), root.join("artifacts").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("readable dir entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            run(&bytes);
            count += 1;
        }
    }
    assert!(count > 0, "no corpus for fuzz target {target}");
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
