//! safetensors read/write and Hugging Face checkpoint directories: round trips, shards, and every
//! malformed-header path giving an error that names the file and the tensor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use brainstacks_tensor::io::{Checkpoint, SafeTensors, StDtype, TensorToWrite, write_safetensors};
use brainstacks_tensor::{DType, Device, Tensor};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bs-io-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A file made by hand: length, header text exactly as given, data.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn round_trip_every_dtype_and_views() {
    let d = scratch("rt");
    let cpu = Device::Cpu;
    let base = Tensor::from_vec((0..24).map(|i| i as f32 * 0.5 - 3.0).collect(), &[4, 6], &cpu).unwrap();
    let mut tensors = Vec::new();
    for dt in [DType::F64, DType::F32, DType::BF16, DType::F16, DType::U8, DType::U32, DType::I64] {
        let t = if matches!(dt, DType::U8 | DType::U32) { base.abs().unwrap().to_dtype(dt).unwrap() } else { base.to_dtype(dt).unwrap() };
        tensors.push((format!("t.{dt}"), t));
    }
    // A strided view is written as its row-major elements.
    tensors.push(("view".into(), base.t().unwrap()));
    tensors.push(("empty".into(), Tensor::zeros(&[0, 3], DType::F32, &cpu).unwrap()));
    tensors.push(("scalar".into(), Tensor::from_vec(vec![7.0f32], &[], &cpu).unwrap()));
    let to_write: Vec<_> = tensors.iter().map(|(n, t)| TensorToWrite::from_tensor(n.clone(), t).unwrap()).collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let p = d.join("a.safetensors");
    write_safetensors(&p, &to_write, &meta).unwrap();

    let st = SafeTensors::open(&p).unwrap();
    assert_eq!(st.metadata(), &meta);
    assert_eq!(st.names().count(), tensors.len());
    for (n, t) in &tensors {
        let back = st.tensor(n).unwrap();
        assert_eq!(back.shape(), t.shape(), "{n}");
        assert_eq!(back.dtype(), t.dtype(), "{n}");
        assert_eq!(back.to_vec_f64().unwrap(), t.to_vec_f64().unwrap(), "{n}");
    }
    // Data offsets are aligned to the element size (header padded to 8, larger types first).
    let bytes = std::fs::read(&p).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(header_len % 8, 0);
    for e in st.entries().values() {
        assert_eq!(e.begin % e.dtype.size_in_bytes(), 0, "{e:?}");
    }
    // An in-memory parse sees the same thing.
    let mem = SafeTensors::from_bytes(&p, bytes).unwrap();
    assert_eq!(mem.entries(), st.entries());
    assert_eq!(st.tensor_as("t.bf16", DType::F32).unwrap().dtype(), DType::F32);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn misaligned_data_still_loads() {
    // Pad the header so the f32 data starts one byte past a 4-byte boundary.
    let mut header = r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.to_string();
    while (8 + header.len()) % 4 != 1 {
        header.push(' ');
    }
    let header = header.as_str();
    let mut data = 1.5f32.to_le_bytes().to_vec();
    data.extend_from_slice(&(-2.0f32).to_le_bytes());
    let st = SafeTensors::from_bytes("mis.safetensors", raw_file(header, &data)).unwrap();
    assert_eq!(st.tensor("x").unwrap().to_vec::<f32>().unwrap(), vec![1.5, -2.0]);
}

fn parse_err(header: &str, data: &[u8]) -> String {
    SafeTensors::from_bytes("bad.safetensors", raw_file(header, data)).unwrap_err().to_string()
}

#[test]
fn malformed_headers_are_named_errors() {
    let cases: Vec<(String, Vec<u8>, &str)> = vec![
        (r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.into(), vec![0; 4], "outside"),
        (r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#.into(), vec![0; 8], "needs 12 bytes"),
        (r#"{"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#.into(), vec![0; 1], "unsupported dtype"),
        (r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.into(), vec![0; 4], "non-negative"),
        (r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#.into(), vec![0; 8], "outside"),
        (r#"{"w":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}}"#.into(), vec![], "overflows"),
        (
            r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#.into(),
            vec![0; 6],
            "overlap",
        ),
        (r#"{"w":{"dtype":"F32","shape":[1]}}"#.into(), vec![0; 4], "data_offsets"),
        (r#"[1,2]"#.into(), vec![], "not a JSON object"),
        (r#"{"w": "#.into(), vec![], "not valid JSON"),
        (r#"{"__metadata__":{"k":1}}"#.into(), vec![], "not a string"),
    ];
    for (header, data, want) in cases {
        let msg = parse_err(&header, &data);
        assert!(msg.contains(want), "header {header}: got {msg:?}, want {want:?}");
        assert!(msg.contains("bad.safetensors"), "{msg}");
    }
    // Lengths that lie.
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    let msg = SafeTensors::from_bytes("h", huge).unwrap_err().to_string();
    assert!(msg.contains("limit"), "{msg}");
    let mut long = 1000u64.to_le_bytes().to_vec();
    long.extend_from_slice(b"{}");
    let msg = SafeTensors::from_bytes("h", long).unwrap_err().to_string();
    assert!(msg.contains("only 2"), "{msg}");
    let msg = SafeTensors::from_bytes("h", vec![1, 2]).unwrap_err().to_string();
    assert!(msg.contains("not a safetensors file"), "{msg}");
    let st = SafeTensors::from_bytes("ok", raw_file("{}", &[])).unwrap();
    let msg = st.tensor("nope").unwrap_err().to_string();
    assert!(msg.contains("\"nope\""), "{msg}");
}

#[test]
fn unsupported_engine_dtype_is_listed_but_not_loaded() {
    let header = r#"{"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#;
    let st = SafeTensors::from_bytes("b.safetensors", raw_file(header, &[1, 0])).unwrap();
    assert_eq!(st.entry("m").unwrap().dtype, StDtype::Bool);
    assert_eq!(st.bytes("m").unwrap(), &[1, 0]);
    let msg = st.tensor("m").unwrap_err().to_string();
    assert!(msg.contains("BOOL") && msg.contains("\"m\""), "{msg}");
}

#[test]
fn writer_rejects_inconsistent_tensors() {
    let d = scratch("wr");
    let p = d.join("w.safetensors");
    let bad = [TensorToWrite::raw("x", StDtype::F32, &[3], vec![0u8; 8])];
    assert!(write_safetensors(&p, &bad, &BTreeMap::new()).unwrap_err().to_string().contains("does not match"));
    let dup = [TensorToWrite::raw("x", StDtype::U8, &[1], vec![0u8]), TensorToWrite::raw("x", StDtype::U8, &[1], vec![1u8])];
    assert!(write_safetensors(&p, &dup, &BTreeMap::new()).unwrap_err().to_string().contains("twice"));
    assert!(!p.exists(), "a failed write leaves nothing behind");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn sharded_checkpoint_directory() {
    let d = scratch("shard");
    let cpu = Device::Cpu;
    let a = Tensor::from_vec(vec![1f32, 2., 3.], &[3], &cpu).unwrap();
    let b = Tensor::from_vec(vec![4f32, 5.], &[1, 2], &cpu).unwrap();
    write_safetensors(&d.join("model-00001-of-00002.safetensors"), &[TensorToWrite::from_tensor("a", &a).unwrap()], &BTreeMap::new()).unwrap();
    write_safetensors(&d.join("model-00002-of-00002.safetensors"), &[TensorToWrite::from_tensor("b", &b).unwrap()], &BTreeMap::new()).unwrap();
    let index = r#"{"metadata":{"total_size":20},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#;
    std::fs::write(d.join("model.safetensors.index.json"), index).unwrap();
    let ck = Checkpoint::open_dir(&d).unwrap();
    assert_eq!(ck.names().collect::<Vec<_>>(), vec!["a", "b"]);
    assert_eq!(ck.tensor("b").unwrap().to_vec::<f32>().unwrap(), vec![4., 5.]);
    assert_eq!(ck.total_bytes(), 20);
    assert!(ck.tensor("c").unwrap_err().to_string().contains("\"c\""));

    // An index that points a tensor at the wrong shard names both.
    let wrong = r#"{"weight_map":{"a":"model-00002-of-00002.safetensors"}}"#;
    std::fs::write(d.join("model.safetensors.index.json"), wrong).unwrap();
    let msg = Checkpoint::open_dir(&d).unwrap_err().to_string();
    assert!(msg.contains("\"a\"") && msg.contains("00002"), "{msg}");
    // Paths in the index are refused.
    let escape = r#"{"weight_map":{"a":"../x.safetensors"}}"#;
    std::fs::write(d.join("model.safetensors.index.json"), escape).unwrap();
    assert!(Checkpoint::open_dir(&d).unwrap_err().to_string().contains("plain file name"));
    // A missing shard names the file.
    let missing = r#"{"weight_map":{"a":"gone.safetensors"}}"#;
    std::fs::write(d.join("model.safetensors.index.json"), missing).unwrap();
    assert!(Checkpoint::open_dir(&d).unwrap_err().to_string().contains("gone.safetensors"));
    // No checkpoint at all.
    let empty = scratch("empty");
    assert!(Checkpoint::open_dir(&empty).unwrap_err().to_string().contains("model.safetensors"));
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}
