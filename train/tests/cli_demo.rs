//! `brainstacks demo --quick` through the binary, end to end: every phase runs, every artefact
//! lands under --out, the report has its sections and plots, and the run directory it made is
//! accepted by `brainstacks eval --run` and `generate --run`.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brainstacks"))
}

fn must_exist(p: &Path) {
    assert!(p.exists(), "{} is missing", p.display());
}

#[test]
fn quick_demo_runs_end_to_end_and_its_run_is_usable() {
    let out = std::env::temp_dir().join(format!("bs-cli-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = bin().args(["demo", "--quick", "--seed", "3", "--out"]).arg(&out).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "stdout {stdout}\nstderr {stderr}");
    for phase in ["data", "tokenizer", "pretraining", "quantize", "stacks: brainstacks", "stacks: no null space", "stacks: single LoRA", "router", "evaluation"] {
        assert!(stderr.contains(&format!("== {phase}")), "phase {phase} not reported:\n{stderr}");
    }
    for domain in ["chat", "code", "math", "medical"] {
        must_exist(&out.join(format!("data/{domain}.jsonl")));
        assert!(stdout.contains(domain), "summary table lacks {domain}:\n{stdout}");
    }
    for f in ["base/config.json", "base/model.safetensors", "base/tokenizer.json", "base-nf4/config.json", "base-nf4/tokenizer.json"] {
        must_exist(&out.join(f));
    }
    for r in ["brainstacks", "no-null-space", "single-lora"] {
        must_exist(&out.join(format!("runs/{r}/manifest.json")));
    }
    must_exist(&out.join("runs/brainstacks/router/router.safetensors"));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in ["routed <= ungated", "forgetting with null space <= without", "medical"] {
        assert!(report.contains(needle), "report.md lacks {needle:?}");
    }
    for link in report.split("](").skip(1).filter_map(|s| s.split(')').next()).filter(|l| l.ends_with(".svg")) {
        must_exist(&out.join(link));
    }
    let config = std::fs::read_to_string(out.join("base-nf4/config.json")).unwrap();
    assert!(config.contains("quantization_config") && config.contains("nf4"), "{config}");

    // The run directory works with the other commands.
    let main = out.join("runs/brainstacks");
    let eval = bin().args(["eval", "--device", "cpu", "--run"]).arg(&main).output().unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    assert!(String::from_utf8_lossy(&eval.stdout).contains("routed"));
    let gen_ = bin().args(["generate", "--run"]).arg(&main).args(["--prompt", "What is 3 + 4?", "--max-tokens", "8"]).output().unwrap();
    assert!(gen_.status.success(), "{}", String::from_utf8_lossy(&gen_.stderr));

    // A wrong device is refused with a clear message, not a panic.
    let bad = bin().args(["demo", "--quick", "--device", "tpu", "--out"]).arg(out.join("never")).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--device"));
    let bad = bin().args(["route", "--device", "cuda:x", "--prompt", "hi", "--run"]).arg(&main).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected cpu, cuda or cuda:N"));
    // Without the `cuda` feature a GPU request says how to get one, before writing anything.
    if !cfg!(feature = "cuda") {
        let gpu = bin().args(["demo", "--quick", "--device", "cuda", "--out"]).arg(out.join("never")).output().unwrap();
        assert!(!gpu.status.success());
        assert!(String::from_utf8_lossy(&gpu.stderr).contains("--features cuda"), "{}", String::from_utf8_lossy(&gpu.stderr));
        assert!(!out.join("never").exists());
    }
    std::fs::remove_dir_all(&out).ok();
}
