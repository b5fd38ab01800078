//! The bitsandbytes 4-bit serialization against real bitsandbytes output.
//!
//! `tests/fixtures/bnb4_linear.safetensors` was written by bitsandbytes 0.50.2 itself (see
//! `scripts/fixtures/make_bnb4_checkpoint.py`): three weights quantized as transformers saves
//! them, plain and double-quantized, f32 and bf16 originals, with the originals beside them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use brainstacks_model::formats::bnb4::{is_nf4, nf4_to_tensors, read_nf4};
use brainstacks_tensor::io::{Checkpoint, SafeTensors, write_safetensors};
use brainstacks_tensor::nf4::Nf4Weight;
use brainstacks_tensor::DType;

fn fixture_dir(tag: &str) -> PathBuf {
    // Checkpoint::open_dir wants model.safetensors; copy the fixture into a scratch dir, one per
    // test (tests run in parallel and one of them removes its copy).
    let d = std::env::temp_dir().join(format!("bs-bnb4-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bnb4_linear.safetensors");
    std::fs::copy(src, d.join("model.safetensors")).unwrap();
    d
}

#[test]
fn reading_then_writing_reproduces_bitsandbytes_bytes() {
    let d = fixture_dir("t1");
    let ck = Checkpoint::open_dir(&d).unwrap();
    for (name, dtype, dq) in [("plain.weight", DType::F32, false), ("dq.weight", DType::F32, true), ("bf.weight", DType::BF16, true)] {
        assert!(is_nf4(&ck, name));
        let w = read_nf4(&ck, name).unwrap();
        assert_eq!(w.orig_dtype(), dtype, "{name}");
        assert_eq!(w.double_quant().is_some(), dq, "{name}");
        let ours = nf4_to_tensors(name, &w);
        let mut keys: Vec<&str> = ck.names().filter(|n| n.starts_with(name)).collect();
        keys.sort();
        let mut our_keys: Vec<&str> = ours.iter().map(|t| t.name.as_str()).collect();
        our_keys.sort();
        assert_eq!(our_keys, keys, "{name}: the same set of keys");
        for t in &ours {
            let (_, e) = ck.locate(&t.name).unwrap();
            assert_eq!((t.dtype, &t.shape), (e.dtype, &e.shape), "{}", t.name);
            assert_eq!(&t.data[..], ck.bytes(&t.name).unwrap(), "{}: bytes differ", t.name);
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn our_quantizer_gives_the_same_checkpoint() {
    let d = fixture_dir("t2");
    let ck = Checkpoint::open_dir(&d).unwrap();
    for (name, orig, dq) in [("plain.weight", "orig.plain", false), ("dq.weight", "orig.dq", true), ("bf.weight", "orig.bf", true)] {
        let theirs = read_nf4(&ck, name).unwrap();
        let ours = Nf4Weight::quantize(&ck.tensor(orig).unwrap(), 64, dq).unwrap();
        assert_eq!(ours.packed(), theirs.packed(), "{name}: packed codes");
        assert_eq!(ours.orig_dtype(), theirs.orig_dtype(), "{name}");
        if dq {
            // The mean of the scales is taken in f64 here and in f32 by PyTorch, which may round
            // one ulp apart; the reconstructed scales then agree to a few ulps.
            for (a, b) in ours.absmax().iter().zip(theirs.absmax()) {
                assert!((a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-6), "{name}: scale {a} vs {b}");
            }
        } else {
            assert_eq!(ours.absmax(), theirs.absmax(), "{name}");
        }
        assert_eq!(ours.dequantize().unwrap().shape(), theirs.dequantize().unwrap().shape());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn write_read_round_trip_and_corruptions() {
    let d = std::env::temp_dir().join(format!("bs-bnb4-rt-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let src = fixture_dir("t3");
    let ck = Checkpoint::open_dir(&src).unwrap();
    let w = Nf4Weight::quantize(&ck.tensor("orig.dq").unwrap(), 64, true).unwrap();
    let tensors = nf4_to_tensors("m.weight", &w);
    write_safetensors(&d.join("model.safetensors"), &tensors, &BTreeMap::new()).unwrap();
    let back = read_nf4(&Checkpoint::open_dir(&d).unwrap(), "m.weight").unwrap();
    assert_eq!(back, w);

    // Each corruption is an error naming the weight.
    let corrupt = |edit: &dyn Fn(&mut Vec<brainstacks_tensor::io::TensorToWrite<'static>>), want: &str| {
        let mut t = tensors.clone();
        edit(&mut t);
        write_safetensors(&d.join("model.safetensors"), &t, &BTreeMap::new()).unwrap();
        let msg = read_nf4(&Checkpoint::open_dir(&d).unwrap(), "m.weight").unwrap_err().to_string();
        assert!(msg.contains("m.weight") && msg.contains(want), "want {want:?} in {msg}");
    };
    let set = |t: &mut Vec<brainstacks_tensor::io::TensorToWrite<'static>>, key: &str, data: Vec<u8>, shape: Vec<usize>| {
        let e = t.iter_mut().find(|x| x.name == key).unwrap();
        e.data = data.into();
        e.shape = shape;
    };
    corrupt(&|t| set(t, "m.weight", vec![0; 10], vec![10, 1]), "packed bytes");
    corrupt(&|t| set(t, "m.weight.absmax", vec![0; 3], vec![3]), "absmax");
    corrupt(&|t| set(t, "m.weight.quant_map", vec![0; 64], vec![16]), "code table");
    corrupt(
        &|t| {
            let json = br#"{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [48, 256]}"#.to_vec();
            let n = json.len();
            set(t, "m.weight.quant_state.bitsandbytes__nf4", json, vec![n]);
        },
        "fp4",
    );
    corrupt(
        &|t| {
            let json = b"{not json".to_vec();
            set(t, "m.weight.quant_state.bitsandbytes__nf4", json, vec![9]);
        },
        "JSON",
    );
    corrupt(&|t| t.retain(|x| x.name != "m.weight.nested_absmax"), "nested_absmax");
    // The raw file is still a valid safetensors file throughout.
    SafeTensors::open(d.join("model.safetensors")).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&src).unwrap();
}
