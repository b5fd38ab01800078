//! `brainstacks train` through the binary: a tiny run prints its summary and writes the manifest,
//! a second invocation resumes (nothing left to do), a bad config fails with the key named.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brainstacks"))
}

#[test]
fn trains_resumes_and_reports_config_errors() {
    let root = std::env::temp_dir().join(format!("bs-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let lines: Vec<String> = (0..40)
        .map(|i| {
            serde_json::json!({"messages": [{"role": "user", "content": format!("please count up to {} now", i % 7)},
            {"role": "assistant", "content": (0..=i % 7).map(|k| k.to_string()).collect::<Vec<_>>().join(" ")}]})
            .to_string()
        })
        .collect();
    std::fs::write(root.join("count.jsonl"), lines.join("\n")).unwrap();
    let config = serde_json::json!({
        "out_dir": "run", "model": {"toy": [16, 32, 1, 2, 1]},
        "domains": [{"name": "count", "train": "count.jsonl"}],
        "rank": 2, "alpha": 2.0, "micro_batch": 2, "grad_accum": 1, "seq_len": 256, "steps_per_round": 3,
        "max_rounds": 1, "eval_every": 3, "eval_samples": 4, "val_fraction": 0.25, "warmup_steps": 1
    });
    std::fs::write(root.join("run.json"), config.to_string()).unwrap();

    let out = bin().args(["train", "--config"]).arg(root.join("run.json")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout {stdout} stderr {stderr}");
    assert!(stdout.contains("forgetting matrix") && stdout.contains("count"), "{stdout}");
    assert!(stderr.contains("validation") && stderr.contains("trainable parameters per stack"), "{stderr}");
    assert!(root.join("run/manifest.json").exists() && root.join("run/count/stack_1.safetensors").exists());
    let metrics = std::fs::read_to_string(root.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("\"event\":\"step\"")).count(), 3);

    let again = bin().args(["train", "--config"]).arg(root.join("run.json")).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("resuming"));
    assert_eq!(std::fs::read_to_string(root.join("run/metrics.jsonl")).unwrap(), metrics, "nothing retrained");

    // The finished run directory: the three-mode table and generation in a composition.
    let eval = bin().args(["eval", "--run"]).arg(root.join("run")).output().unwrap();
    let table = String::from_utf8_lossy(&eval.stdout);
    assert!(
        eval.status.success() && table.contains("ungated") && table.contains("count"),
        "{table} {}",
        String::from_utf8_lossy(&eval.stderr)
    );
    for mode in ["base", "ungated", "count=0.5"] {
        let g = bin()
            .args(["generate", "--run"])
            .arg(root.join("run"))
            .args(["--prompt", "count to 3", "--max-tokens", "4", "--mode", mode])
            .output()
            .unwrap();
        assert!(g.status.success(), "{mode}: {}", String::from_utf8_lossy(&g.stderr));
    }
    // Without a router, routed generation says what to run first.
    let g = bin().args(["generate", "--run"]).arg(root.join("run")).args(["--prompt", "count to 3", "--max-tokens", "2"]).output().unwrap();
    assert!(!g.status.success() && String::from_utf8_lossy(&g.stderr).contains("brainstacks router"));
    let r = bin()
        .args(["router", "--run"])
        .arg(root.join("run"))
        .args(["--label-samples", "10", "--oracle-samples", "2", "--epochs", "1", "--hidden", "8", "--accept", "0.005"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let bad = bin().args(["router", "--run"]).arg(root.join("run")).arg("--accept=-1").output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--accept must be"), "{bad:?}");
    let route = bin().args(["route", "--run"]).arg(root.join("run")).args(["--prompt", "please count up to 5"]).output().unwrap();
    let table = String::from_utf8_lossy(&route.stdout);
    assert!(route.status.success() && table.contains("sigmoid") && table.contains("count"), "{table}");
    let g = bin().args(["generate", "--run"]).arg(root.join("run")).args(["--prompt", "count to 3", "--max-tokens", "2"]).output().unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let eval = bin().args(["eval", "--run"]).arg(root.join("run")).output().unwrap();
    let table = String::from_utf8_lossy(&eval.stdout);
    let row = table.lines().find(|l| l.starts_with("count")).unwrap_or_default().to_string();
    assert!(!row.ends_with('-') && table.contains("oracle"), "routed column and oracle statistics: {table}");

    let g = bin().args(["generate", "--run"]).arg(root.join("run")).args(["--prompt", "x", "--mode", "nope=1"]).output().unwrap();
    assert!(!g.status.success() && String::from_utf8_lossy(&g.stderr).contains("nope"));

    std::fs::write(root.join("bad.json"), config.to_string().replace("\"rank\"", "\"rnak\"")).unwrap();
    let bad = bin().args(["train", "--config"]).arg(root.join("bad.json")).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("rnak") && !err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}
