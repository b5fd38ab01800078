//! `brainstacks quantize` end to end through the binary: success on a tiny checkpoint, and clear
//! errors (non-zero exit, no panic) on bad input.

use std::collections::BTreeMap;
use std::process::Command;

use brainstacks_tensor::io::{Checkpoint, TensorToWrite, write_safetensors};
use brainstacks_tensor::{DType, Device, Rng, Tensor};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brainstacks"))
}

#[test]
fn quantizes_a_tiny_checkpoint() {
    let root = std::env::temp_dir().join(format!("bs-cli-q-{}", std::process::id()));
    let (src, dst) = (root.join("in"), root.join("out"));
    std::fs::create_dir_all(&src).unwrap();
    let w = Tensor::randn(&mut Rng::new(1), 0.0, 0.1, &[64, 128], DType::F32, &Device::Cpu).unwrap();
    let n = Tensor::ones(&[128], DType::F32, &Device::Cpu).unwrap();
    let tensors = [
        TensorToWrite::from_tensor("model.layers.0.mlp.up_proj.weight", &w).unwrap(),
        TensorToWrite::from_tensor("model.norm.weight", &n).unwrap(),
    ];
    write_safetensors(&src.join("model.safetensors"), &tensors, &BTreeMap::new()).unwrap();
    std::fs::write(src.join("config.json"), "{}").unwrap();
    let out = bin().args(["quantize", "--model"]).arg(&src).arg("--out").arg(&dst).arg("--double-quant").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout {stdout} stderr {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("quantized 1 weights") && stdout.contains("kept 1"), "{stdout}");
    let ck = Checkpoint::open_dir(&dst).unwrap();
    assert!(ck.contains("model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let missing = std::env::temp_dir().join("bs-cli-q-does-not-exist");
    let out = bin().args(["quantize", "--model"]).arg(&missing).args(["--out", "/tmp/bs-cli-q-never"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json") && !err.contains("panicked"), "{err}");

    let out = bin().args(["quantize", "--out", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap reports a missing flag with exit code 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
}
