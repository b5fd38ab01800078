//! PEFT LoRA adapters (written by `scripts/fixtures/make_peft_fixture.py` with peft) on the tiny
//! `llama3` model: logits through them equal PEFT's, saving and reloading is exact, gradients
//! reach the factors, and unsupported configs are refused by name.

use std::path::{Path, PathBuf};

use brainstacks_autograd::Tape;
use brainstacks_model::llama::{LlamaModel, LoadOptions, PeftLora, Proj};
use brainstacks_tensor::DType;
use brainstacks_tensor::io::SafeTensors;

type R = Result<(), Box<dyn std::error::Error>>;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// f32 logits with each adapter within 1e-4 of PEFT's, and far from the base model's (so the
/// adapter is really applied: the scale and every factor matter).
#[test]
fn logits_match_peft() -> R {
    for (name, r, scale, n) in [("lora", 4, 2.0, 4), ("rslora", 8, 4.0 / 8f64.sqrt(), 7)] {
        let mut m = LlamaModel::load(fixture("tiny_llama_llama3"), &LoadOptions::default())?;
        let dir = fixture(&format!("tiny_llama_llama3_{name}"));
        let reference = SafeTensors::open(dir.join("reference.safetensors"))?;
        let ids = reference.tensor("ids")?;
        let base = m.forward(&ids, None)?.tensor().to_vec_f64()?;
        let lora = PeftLora::load(&dir, &m, None)?;
        assert_eq!((lora.config.r, lora.config.target_modules.len(), lora.adapters.len()), (r, n, 2 * n));
        assert!((lora.config.scale() - scale).abs() < 1e-15);
        lora.attach(&mut m)?;
        let got = m.forward(&ids, None)?.tensor().to_vec_f64()?;
        let want = reference.tensor("logits")?.to_vec_f64()?;
        let (diff, moved) = (max_abs_diff(&got, &want), max_abs_diff(&base, &want));
        println!("{name}: max |logit - peft| = {diff:.3e}; the adapter moves logits by up to {moved:.3}");
        assert!(diff <= 1e-4 && moved > 0.1, "{name}: {diff} {moved}");
    }
    Ok(())
}

/// Save then load gives the same factors and config; gradients reach the factors on a tape.
#[test]
fn save_roundtrip_and_trainable_factors() -> R {
    let mut m = LlamaModel::load(fixture("tiny_llama_llama3"), &LoadOptions::default())?;
    let lora = PeftLora::load(fixture("tiny_llama_llama3_rslora"), &m, None)?;
    let out = std::env::temp_dir().join(format!("bs-lora-{}", std::process::id()));
    lora.save(&out)?;
    let back = PeftLora::load(&out, &m, None)?;
    assert_eq!(back.config, lora.config);
    for (k, a) in &lora.adapters {
        let b = &back.adapters[k];
        assert_eq!(a.a.tensor().to_vec_f64()?, b.a.tensor().to_vec_f64()?);
        assert_eq!(a.b.tensor().to_vec_f64()?, b.b.tensor().to_vec_f64()?);
    }
    std::fs::remove_dir_all(&out)?;

    let tape = Tape::new();
    let lora = PeftLora::load(fixture("tiny_llama_llama3_lora"), &m, Some(&tape))?;
    lora.attach(&mut m)?;
    let ids = SafeTensors::open(fixture("tiny_llama_llama3_lora").join("reference.safetensors"))?.tensor("ids")?;
    let grads = tape.backward(&m.next_token_loss(&ids)?)?;
    let a = &lora.adapters[&(1, Proj::Down)];
    for v in [&a.a, &a.b] {
        let g = grads.get(v).expect("a gradient for every factor");
        assert_eq!((g.dtype(), g.shape()), (DType::F32, v.shape()));
        assert!(g.to_vec_f64()?.iter().any(|x| *x != 0.0));
    }
    Ok(())
}

#[test]
fn unsupported_configs_are_refused() -> R {
    let m = LlamaModel::load(fixture("tiny_llama_llama3"), &LoadOptions::default())?;
    let src = fixture("tiny_llama_llama3_lora");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json"))?)?;
    let out = std::env::temp_dir().join(format!("bs-lora-bad-{}", std::process::id()));
    std::fs::create_dir_all(&out)?;
    std::fs::copy(src.join("adapter_model.safetensors"), out.join("adapter_model.safetensors"))?;
    let cases = [
        ("use_dora", serde_json::json!(true)),
        ("rank_pattern", serde_json::json!({"q_proj": 2})),
        ("bias", serde_json::json!("all")),
        ("target_modules", serde_json::json!(["q_proj", "lm_head"])),
        ("r", serde_json::json!(3)),
    ];
    for (k, v) in cases {
        let mut c = cfg.clone();
        c[k] = v;
        std::fs::write(out.join("adapter_config.json"), c.to_string())?;
        let e = PeftLora::load(&out, &m, None).unwrap_err().to_string();
        let needle = if k == "r" { "shape" } else { k };
        assert!(e.contains(needle), "{k}: {e}");
    }
    std::fs::remove_dir_all(&out)?;
    Ok(())
}
