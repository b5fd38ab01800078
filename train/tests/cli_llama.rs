//! `brainstacks generate`, `logits` and `grad` through the binary on the tiny `llama3` fixture
//! of brainstacks-model, against the transformers references saved next to it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use brainstacks_tensor::io::SafeTensors;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brainstacks"))
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/tiny_llama_llama3")
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bs-cli-llama-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str], extra: &[&Path]) -> Output {
    let mut c = bin();
    c.args(args);
    for p in extra {
        c.arg(p);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "stdout {stdout} stderr {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The reference's first sequence as `--ids`.
fn reference_ids(r: &SafeTensors) -> (String, usize) {
    let ids = r.tensor("ids").unwrap().narrow(0usize, 0, 1).unwrap().to_vec_f64().unwrap();
    (ids.iter().map(|x| (*x as u32).to_string()).collect::<Vec<_>>().join(","), ids.len())
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Logits of the first reference sequence within 1e-4 of transformers' f32 logits.
#[test]
fn logits_match_transformers() {
    let r = SafeTensors::open(fixture().join("reference.safetensors")).unwrap();
    let (ids, t) = reference_ids(&r);
    let out = scratch("logits").join("logits.safetensors");
    ok(&run(&["logits", "--ids", &ids, "--model"], &[&fixture(), Path::new("--out"), &out]));
    let got = SafeTensors::open(&out).unwrap().tensor("logits").unwrap();
    assert_eq!(got.shape(), &[t, 97]);
    let want = r.tensor("logits").unwrap().narrow(0usize, 0, 1).unwrap().to_vec_f64().unwrap();
    let diff = max_abs_diff(&got.to_vec_f64().unwrap(), &want);
    println!("max |logit - transformers| = {diff:.3e}");
    assert!(diff <= 1e-4, "{diff}");
    std::fs::remove_file(&out).unwrap();
}

/// With `--adapter`, the logits of the first sequence within 1e-4 of PEFT's (both fixture
/// adapters: plain LoRA on four projections, rsLoRA on all seven).
#[test]
fn logits_with_peft_adapter_match() {
    for name in ["lora", "rslora"] {
        let adapter = fixture().with_file_name(format!("tiny_llama_llama3_{name}"));
        let r = SafeTensors::open(adapter.join("reference.safetensors")).unwrap();
        let (ids, t) = reference_ids(&r);
        let out = scratch(&format!("logits-{name}")).join("logits.safetensors");
        ok(&run(&["logits", "--ids", &ids, "--model"], &[&fixture(), Path::new("--adapter"), &adapter, Path::new("--out"), &out]));
        let got = SafeTensors::open(&out).unwrap().tensor("logits").unwrap();
        assert_eq!(got.shape(), &[t, 97]);
        let want = r.tensor("logits").unwrap().narrow(0usize, 0, 1).unwrap().to_vec_f64().unwrap();
        let diff = max_abs_diff(&got.to_vec_f64().unwrap(), &want);
        println!("{name}: max |logit - peft| = {diff:.3e}");
        assert!(diff <= 1e-4, "{name}: {diff}");
        std::fs::remove_file(&out).unwrap();
    }
}

/// f64 loss and the gradient of every weight against transformers' f64 autograd. The fixture's
/// references are for both sequences of `ids` at once, so the binary is run on each row and the
/// per-row results averaged (the loss is a mean over equally many tokens per row).
#[test]
fn grad_matches_transformers() {
    let r = SafeTensors::open(fixture().join("reference.safetensors")).unwrap();
    let all = r.tensor("ids").unwrap();
    let dir = scratch("grad");
    let mut outs = Vec::new();
    for row in 0..all.shape()[0] {
        let ids: Vec<String> = all.narrow(0usize, row, 1).unwrap().to_vec_f64().unwrap().iter().map(|x| (*x as u32).to_string()).collect();
        let out = dir.join(format!("grad{row}.safetensors"));
        ok(&run(&["grad", "--dtype", "f64", "--ids", &ids.join(","), "--model"], &[&fixture(), Path::new("--out"), &out]));
        outs.push(SafeTensors::open(&out).unwrap());
    }
    let rows = outs.len() as f64;
    let loss: f64 = outs.iter().map(|o| o.tensor("loss").unwrap().to_scalar_f64().unwrap()).sum::<f64>() / rows;
    let want_loss = r.tensor("loss").unwrap().to_scalar_f64().unwrap();
    println!("loss {loss} vs transformers {want_loss}");
    assert!((loss - want_loss).abs() < 1e-12);
    let names: Vec<String> = r.names().filter(|n| n.starts_with("grad.")).map(str::to_string).collect();
    assert_eq!(names.len(), 1 + 2 * 9 + 2, "every weight of the 2-layer fixture");
    let mut worst: f64 = 0.0;
    for name in &names {
        let mut got = vec![0.0; r.tensor(name).unwrap().elem_count()];
        for o in &outs {
            for (g, x) in got.iter_mut().zip(o.tensor(name).unwrap().to_vec_f64().unwrap()) {
                *g += x / rows;
            }
        }
        let want = r.tensor(name).unwrap().to_vec_f64().unwrap();
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        let d = max_abs_diff(&got, &want) / scale.max(1e-300);
        worst = worst.max(d);
        assert!(d < 1e-10, "{name}: relative diff {d}");
    }
    println!("{} gradients: worst max|diff| / max|grad| = {worst:.3e}", names.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Greedy generation streams the decoded text of transformers' greedy ids; sampling is
/// reproducible per seed; bad flags fail cleanly.
#[test]
fn generate_streams_text() {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("generation_reference.json")).unwrap()).unwrap();
    let case = v["generate"].as_array().unwrap().iter().find(|c| c["name"] == "alpaca_greedy_rep1.2").unwrap();
    let base = ["generate", "--alpaca", "--prompt", "What is two plus two?", "--max-tokens", "24"];
    let greedy = ok(&run(&[&base[..], &["--repetition-penalty", "1.2", "--model"]].concat(), &[&fixture()]));
    assert!(!greedy.trim().is_empty());
    // The same ids decoded with the library tokenizer.
    let tok = brainstacks_model::llama::LlamaTokenizer::from_dir(fixture()).unwrap();
    let prompt: Vec<u32> = case["prompt"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let new: Vec<u32> = case["new_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let all: Vec<u32> = prompt.iter().chain(&new).copied().collect();
    let want = tok.decode(&all, true).unwrap()[tok.decode(&prompt, true).unwrap().len()..].to_string();
    assert_eq!(greedy, format!("{want}\n"));

    let sampled =
        |seed: &str| ok(&run(&[&base[..], &["--temperature", "0.8", "--top-p", "0.9", "--seed", seed, "--model"]].concat(), &[&fixture()]));
    assert_eq!(sampled("3"), sampled("3"));
    let bad = run(&["generate", "--prompt", "x", "--top-p", "0", "--model"], &[&fixture()]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("top_p"));
    let bad = run(&["logits", "--ids", "1,500", "--out", "/dev/null", "--model"], &[&fixture()]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("500"));
}
