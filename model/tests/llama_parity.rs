//! The Llama decoder against transformers: logits of the tiny fixtures built by
//! `scripts/fixtures/make_llama_fixture.py` (see its docstring for versions and how to rerun),
//! with and without a KV cache, the f64 loss and weight gradients (through a zero adapter), the
//! NF4 paths, and the loader's errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use brainstacks_autograd::{Tape, Var, no_grad};
use brainstacks_model::formats::quantize::{QuantizeOptions, quantize_checkpoint};
use brainstacks_model::llama::{KvCache, LlamaModel, LoadOptions, Nf4AtLoad, Proj, ProjectionAdapter, RopeScaling};
use brainstacks_tensor::io::{Checkpoint, SafeTensors, TensorToWrite, write_safetensors};
use brainstacks_tensor::{DType, Tensor};

type R = Result<(), Box<dyn std::error::Error>>;

const FIXTURES: [&str; 2] = ["llama3", "linear"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("tiny_llama_{name}"))
}

fn reference(name: &str) -> SafeTensors {
    SafeTensors::open(fixture(name).join("reference.safetensors")).unwrap()
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bs-llama-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn load(name: &str, opts: &LoadOptions) -> LlamaModel {
    LlamaModel::load(fixture(name), opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn configs_parse_both_layouts() {
    let a = load("llama3", &LoadOptions::default()).config;
    assert!(matches!(a.rope_scaling, RopeScaling::Llama3 { original_max_position_embeddings: 32, .. }));
    assert_eq!((a.num_key_value_heads, a.head_dim, a.tie_word_embeddings, a.torch_dtype), (2, 16, false, Some(DType::BF16)));
    let b = load("linear", &LoadOptions::default()).config;
    assert_eq!((b.rope_scaling, b.rope_theta, b.tie_word_embeddings), (RopeScaling::Linear { factor: 2.0 }, 500000.0, true));
    assert_eq!(b.eos_token_ids, vec![2, 3]);
}

/// f32 logits within 1e-4 of transformers' f32 logits (same bf16-rounded weights). Our norms
/// accumulate in f64, the RoPE angles are computed in f64 and attention runs in f32 per-head
/// GEMMs, so the difference is f32 rounding on both sides: a few 1e-6 on logits of spread 1 to 3.
#[test]
fn logits_match_transformers() -> R {
    for name in FIXTURES {
        let m = load(name, &LoadOptions::default());
        let r = reference(name);
        let logits = m.forward(&r.tensor("ids")?, None)?;
        assert_eq!(logits.shape(), r.tensor("logits")?.shape());
        let diff = max_abs_diff(&f64s(logits.tensor()), &f64s(&r.tensor("logits")?));
        println!("{name}: max |logit - transformers| = {diff:.3e}");
        assert!(diff <= 1e-4, "{name}: {diff}");
    }
    Ok(())
}

/// A 5-token prefix, then one token at a time through the cache: each step's logits equal the
/// full forward's logits at that position.
#[test]
fn kv_cache_decoding_matches_full_forward() -> R {
    for name in FIXTURES {
        let m = load(name, &LoadOptions::default());
        let r = reference(name);
        let (ids, want) = (r.tensor("ids")?, r.tensor("logits")?);
        let t = ids.shape()[1];
        let mut cache = KvCache::new();
        let prefix = m.forward(&ids.narrow(1usize, 0, 5)?, Some(&mut cache))?;
        assert_eq!(cache.len(), 5);
        let mut worst = max_abs_diff(&f64s(prefix.tensor()), &f64s(&want.narrow(1usize, 0, 5)?));
        for p in 5..t {
            let step = m.forward(&ids.narrow(1usize, p, 1)?, Some(&mut cache))?;
            assert_eq!(step.shape(), &[2, 1, 97]);
            worst = worst.max(max_abs_diff(&f64s(step.tensor()), &f64s(&want.narrow(1usize, p, 1)?)));
        }
        assert_eq!(cache.len(), t);
        println!("{name}: cached decoding, max |logit - transformers| = {worst:.3e}");
        assert!(worst <= 1e-4, "{name}: {worst}");
        // A batch of another size does not fit this cache.
        assert!(m.forward(&ids.narrow(0usize, 0, 1)?.narrow(1usize, 0, 1)?, Some(&mut cache)).is_err());
    }
    Ok(())
}

/// A dense delta `x · Dᵀ` with `D` a trainable leaf: at `D = 0` the model is unchanged and the
/// gradient of `D` is the gradient of the frozen weight it sits on.
struct Delta(Var);

impl ProjectionAdapter for Delta {
    fn forward(&self, x: &Var) -> brainstacks_model::Result<Var> {
        Ok(x.matmul(&self.0.t()?)?)
    }
}

/// In f64: the next-token loss and the gradients of two weights (layer 0 q_proj, layer 1 v_proj,
/// a GQA-shared head) equal transformers' f64 autograd to 1e-12 (seen: about 1e-16).
#[test]
fn f64_loss_and_weight_gradients_match_transformers() -> R {
    let opts = LoadOptions { dtype: DType::F64, ..Default::default() };
    let mut m = load("llama3", &opts);
    let r = reference("llama3");
    let tape = Tape::new();
    let mut deltas = Vec::new();
    for (layer, p) in [(0, Proj::Q), (1, Proj::V)] {
        let [o, i] = m.proj(layer, p).unwrap().shape();
        let d = tape.param(Tensor::zeros(&[o, i], DType::F64, &brainstacks_tensor::Device::Cpu)?);
        m.set_adapter(layer, p, Some(Box::new(Delta(d.clone()))))?;
        deltas.push((p.weight_name(layer), d));
    }
    let loss = m.next_token_loss(&r.tensor("ids")?)?;
    let want_loss = r.tensor("loss")?.to_scalar_f64()?;
    let got_loss = loss.tensor().to_scalar_f64()?;
    println!("loss {got_loss} vs transformers {want_loss}");
    assert!((got_loss - want_loss).abs() < 1e-12);
    let grads = tape.backward(&loss)?;
    for (name, d) in &deltas {
        let want = f64s(&r.tensor(&format!("grad.{name}"))?);
        let diff = max_abs_diff(&f64s(grads.get(d).unwrap()), &want);
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        println!("{name}: max |grad - transformers| = {diff:.3e} (max |grad| {scale:.3e})");
        assert!(diff < 1e-12, "{name}: {diff}");
    }
    // Detaching restores the plain model; under no_grad nothing is recorded.
    assert!(m.set_adapter(0, Proj::Q, None)?.is_some());
    assert!(m.set_adapter(2, Proj::Q, None).is_err());
    let before = tape.len();
    no_grad(|| m.next_token_loss(&r.tensor("ids").unwrap()).map(|_| ()))?;
    assert_eq!(tape.len(), before);
    Ok(())
}

/// bf16 compute stays near the f32 reference (bf16 keeps 8 bits: a few 1e-2 on these logits).
#[test]
fn bf16_compute_stays_close() -> R {
    for name in FIXTURES {
        let m = load(name, &LoadOptions { dtype: DType::BF16, ..Default::default() });
        let r = reference(name);
        let logits = m.forward(&r.tensor("ids")?, None)?;
        assert_eq!(logits.dtype(), DType::BF16);
        let diff = max_abs_diff(&f64s(logits.tensor()), &f64s(&r.tensor("logits")?));
        println!("{name}: bf16 max |logit - transformers f32| = {diff:.3e}");
        assert!(diff < 0.25, "{name}: {diff}");
    }
    Ok(())
}

/// Mean |Δlogit| relative to the mean |logit|, and the share of positions whose argmax agrees.
fn nf4_closeness(got: &[f64], want: &[f64], vocab: usize) -> (f64, f64) {
    let mean_abs = want.iter().map(|x| x.abs()).sum::<f64>() / want.len() as f64;
    let mean_diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).sum::<f64>() / want.len() as f64;
    let argmax = |v: &[f64]| v.iter().enumerate().fold((0, f64::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m }).0;
    let rows = want.len() / vocab;
    let agree = (0..rows).filter(|&r| argmax(&got[r * vocab..(r + 1) * vocab]) == argmax(&want[r * vocab..(r + 1) * vocab])).count();
    (mean_diff / mean_abs, agree as f64 / rows as f64)
}

/// NF4 at load: which projections are quantized, and the logits stay close to dense. The bound
/// is loose on purpose (4-bit weights with ~10% relative error per weight on random,
/// unstructured matrices): mean |Δlogit| under 35% of the mean |logit| and most argmaxes kept.
/// The same checkpoint written 4-bit by `quantize_checkpoint` loads to identical logits.
#[test]
fn nf4_quantized_at_load_and_prequantized() -> R {
    for name in FIXTURES {
        let opts = LoadOptions { quantize: Some(Nf4AtLoad::default()), ..Default::default() };
        let m = load(name, &opts);
        let rep = &m.load_report;
        let layers = m.config.num_hidden_layers;
        if name == "llama3" {
            // intermediate 176 is not a multiple of 64: down_proj stays dense.
            assert_eq!(rep.quantized_at_load.len(), 6 * layers);
            assert_eq!(rep.kept_dense.len(), layers);
            assert!(rep.kept_dense[0].0.ends_with("down_proj.weight"), "{:?}", rep.kept_dense);
            assert!(!m.proj(0, Proj::Down).unwrap().is_nf4());
        } else {
            assert_eq!((rep.quantized_at_load.len(), rep.kept_dense.len()), (7 * layers, 0));
        }
        assert!(m.proj(1, Proj::Q).unwrap().is_nf4());
        let r = reference(name);
        let ids = r.tensor("ids")?;
        let got = f64s(m.forward(&ids, None)?.tensor());
        let (rel, agree) = nf4_closeness(&got, &f64s(&r.tensor("logits")?), 97);
        println!("{name}: NF4 mean |Δlogit| / mean |logit| = {rel:.3}, argmax agreement {agree:.2}");
        assert!(rel < 0.35 && agree >= 0.5, "{name}: {rel} {agree}");

        // Written in shards of at most 16 KB, so the sharded layout loads too.
        let dir = scratch(&format!("nf4-{name}"));
        let qopts = QuantizeOptions { max_shard_bytes: 16 << 10, ..Default::default() };
        let written = quantize_checkpoint(&fixture(name), &dir, &qopts, |_| {})?;
        assert!(written.files.len() > 1);
        let pre = LlamaModel::load(&dir, &LoadOptions::default())?;
        assert_eq!(pre.load_report.prequantized, rep.quantized_at_load);
        assert_eq!(f64s(pre.forward(&ids, None)?.tensor()), got);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// Copies the `linear` fixture into a scratch dir with its tensors edited by `edit`.
fn edited(tag: &str, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) -> PathBuf {
    let src = fixture("linear");
    let ck = Checkpoint::open_dir(&src).unwrap();
    let mut tensors: BTreeMap<String, Tensor> = ck.names().map(|n| (n.to_string(), ck.tensor(n).unwrap())).collect();
    edit(&mut tensors);
    let dir = scratch(tag);
    let out: Vec<TensorToWrite> = tensors.iter().map(|(n, t)| TensorToWrite::from_tensor(n.clone(), t).unwrap()).collect();
    write_safetensors(&dir.join("model.safetensors"), &out, &BTreeMap::new()).unwrap();
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    dir
}

/// An edit of a checkpoint's tensors.
type Edit = Box<dyn FnOnce(&mut BTreeMap<String, Tensor>)>;

#[test]
fn load_errors_name_the_tensor_and_file() {
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "missing",
            Box::new(|t| {
                t.remove("model.layers.1.mlp.up_proj.weight");
            }),
            &["model.layers.1.mlp.up_proj.weight", "missing"],
        ),
        (
            "shape",
            Box::new(|t| {
                let w = t["model.layers.0.self_attn.k_proj.weight"].narrow(0usize, 0, 16).unwrap();
                t.insert("model.layers.0.self_attn.k_proj.weight".into(), w);
            }),
            &["model.layers.0.self_attn.k_proj.weight", "[16, 64]", "model.safetensors"],
        ),
        (
            "dtype",
            Box::new(|t| {
                let w = t["model.norm.weight"].to_dtype(DType::I64).unwrap();
                t.insert("model.norm.weight".into(), w);
            }),
            &["model.norm.weight", "dtype", "model.safetensors"],
        ),
        (
            "unused",
            Box::new(|t| {
                let w = t["model.norm.weight"].clone();
                t.insert("model.layers.2.input_layernorm.weight".into(), w);
            }),
            &["model.layers.2.input_layernorm.weight", "does not use"],
        ),
    ];
    for (tag, edit, needles) in cases {
        let dir = edited(tag, edit);
        let e = LlamaModel::load(&dir, &LoadOptions::default()).err().unwrap_or_else(|| panic!("{tag} should fail")).to_string();
        for n in needles {
            assert!(e.contains(n), "{tag}: {e:?} lacks {n:?}");
        }
        if tag == "unused" {
            let m = LlamaModel::load(&dir, &LoadOptions { allow_unused: true, ..Default::default() }).unwrap();
            assert_eq!(m.load_report.unused, vec!["model.layers.2.input_layernorm.weight".to_string()]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn adapters_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<LlamaModel>();
    check::<Delta>();
}

/// Gradients reach an adapter through NF4 projections: in f64, the directional derivative of the
/// loss along the gradient `G` of a zero delta matches central differences, `|G|^2`, to 1e-6
/// relative (the loss is smooth; the step is 1e-4 of G's scale).
#[test]
fn gradients_flow_through_nf4_projections() -> R {
    let opts = LoadOptions { dtype: DType::F64, quantize: Some(Nf4AtLoad::default()), ..Default::default() };
    let mut m = load("linear", &opts);
    let ids = reference("linear").tensor("ids")?;
    let tape = Tape::new();
    let [o, i] = m.proj(0, Proj::Up).unwrap().shape();
    let d = tape.param(Tensor::zeros(&[o, i], DType::F64, &brainstacks_tensor::Device::Cpu)?);
    m.set_adapter(0, Proj::Up, Some(Box::new(Delta(d.clone()))))?;
    let g = tape.backward(&m.next_token_loss(&ids)?)?.get(&d).unwrap().clone();
    let norm2: f64 = f64s(&g).iter().map(|x| x * x).sum();
    assert!(norm2 > 0.0);
    let eps = 1e-4 / norm2.sqrt();
    let loss_at = |m: &mut LlamaModel, h: f64| -> f64 {
        let shifted = Var::constant(g.mul_scalar(h).unwrap());
        m.set_adapter(0, Proj::Up, Some(Box::new(Delta(shifted)))).unwrap();
        no_grad(|| m.next_token_loss(&ids).unwrap().tensor().to_scalar_f64().unwrap())
    };
    let fd = (loss_at(&mut m, eps) - loss_at(&mut m, -eps)) / (2.0 * eps);
    println!("NF4 directional derivative: autograd {norm2:.6e}, central difference {fd:.6e}");
    assert!((fd - norm2).abs() < 1e-6 * norm2, "{fd} vs {norm2}");
    Ok(())
}
