//! Entry points shared by the cargo-fuzz targets in `fuzz/` and the stable test that replays
//! their corpus. Not part of the supported API.

use crate::{DType, Device, Tensor};

/// Builds a tensor of the shape the first bytes describe, applies the view ops the remaining
/// bytes describe (with arbitrary, possibly invalid, arguments), and checks that every view
/// either fails with an error or reads back consistently. Panics only on a real bug.
pub fn strided_view(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let rank = match next() {
        Some(b) => (b % 4) as usize + 1,
        None => return,
    };
    let shape: Vec<usize> = (0..rank).map(|_| next().map_or(1, |b| (b % 6) as usize)).collect();
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let Ok(mut t) = Tensor::from_vec(values, &shape, &Device::Cpu) else { return };
    while let Some(op) = next() {
        let a = next().unwrap_or(0);
        let b = next().unwrap_or(0);
        let c = next().unwrap_or(0);
        // Dims as signed bytes so negative and out-of-range dims are exercised too.
        let (da, db) = (a as i8 as isize, b as i8 as isize);
        let result = match op % 8 {
            0 => t.transpose(da, db),
            1 => t.narrow(da, b as usize, c as usize),
            2 => t.unsqueeze(da),
            3 => t.squeeze(da),
            4 => {
                let mut target = t.shape().to_vec();
                target.insert(0, (c % 4) as usize);
                t.broadcast_as(&target)
            }
            5 => {
                let mut dims: Vec<usize> = (0..t.rank()).collect();
                let by = (a as usize) % dims.len().max(1);
                dims.rotate_left(by);
                t.permute(&dims)
            }
            6 => t.reshape(&[t.elem_count()]),
            _ => t.contiguous(),
        };
        if let Ok(v) = result {
            check_view(&v, n);
            t = v;
        }
        if t.elem_count() > 1 << 16 {
            return; // keep each input cheap
        }
    }
}

/// `source_len`: element count of the original tensor, whose values are their own flat indices.
fn check_view(v: &Tensor, source_len: usize) {
    let storage_len = v.cpu_storage("fuzz").map(|s| s.len()).unwrap_or(0);
    assert!(v.layout().storage_extent() <= storage_len, "view reaches past its storage");
    let read = v.to_vec_f64().expect("a valid view reads back");
    assert_eq!(read.len(), v.elem_count());
    let copy = v.contiguous().expect("a valid view copies").to_vec_f64().expect("reads back");
    assert_eq!(read, copy, "a contiguous copy differs from the view");
    assert!(read.iter().all(|x| (*x as usize) < source_len.max(1)), "a view read a value that was never written");
    let _ = v.to_dtype(DType::F32).expect("casts");
}

/// safetensors parsing from arbitrary bytes: every file must either be rejected with an error or
/// parse into entries whose bytes all lie inside the input, and every tensor the engine can load
/// must load (never a panic, never an allocation larger than the input).
pub fn safetensors_bytes(data: &[u8]) {
    let Ok(st) = crate::io::SafeTensors::from_bytes("fuzz.safetensors", data.to_vec()) else {
        return;
    };
    let names: Vec<String> = st.names().map(str::to_string).collect();
    for name in &names {
        let entry = st.entry(name).expect("listed name");
        let bytes = st.bytes(name).expect("listed name");
        assert_eq!(bytes.len(), entry.end - entry.begin);
        assert!(bytes.len() <= data.len());
        if entry.dtype.to_dtype().is_some() {
            let t = st.tensor(name).expect("a validated entry of a loadable dtype loads");
            assert_eq!(t.elem_count(), entry.elem_count());
        }
    }
}

/// NF4 weights from arbitrary bytes and shapes (as a checkpoint would hand them over): either a
/// clear error, or a weight whose products run on a small input.
pub fn nf4_parts(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let out_features = usize::from(data[0] % 9);
    let in_features = 64 * usize::from(data[1] % 3);
    let blocksize = [32usize, 64, 128, 48][usize::from(data[2] % 4)];
    // Packed codes first (as many bytes as the shape needs, if there are that many), then scales.
    let rest = &data[3..];
    let split = (out_features * in_features).div_ceil(2).min(rest.len());
    let packed = rest[..split].to_vec();
    let absmax: Vec<f32> = rest[split..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let Ok(w) = crate::nf4::Nf4Weight::from_parts(out_features, in_features, blocksize, packed, Some(absmax), None, crate::DType::F32) else {
        return;
    };
    let x = crate::Tensor::ones(&[2, in_features], crate::DType::F32, &crate::Device::Cpu).expect("small");
    let y = w.linear(&x).expect("a validated weight multiplies");
    assert_eq!(y.shape(), &[2, out_features]);
    let dy = crate::Tensor::ones(&[2, out_features], crate::DType::F32, &crate::Device::Cpu).expect("small");
    assert_eq!(w.linear_input_grad(&dy).expect("transposed product").shape(), &[2, in_features]);
}

/// Replays a fuzz target's committed corpus (`fuzz_root/corpus/<target>/*`) and every crash input
/// a run saved (`fuzz_root/artifacts/<target>/*`) through `run`; a file named `valid_*` must also
/// satisfy `accepts`, so the seeds keep reaching past the parser's first error. Returns how many
/// files were replayed and panics (the test's failure) when there are none. Used by each crate's
/// `tests/fuzz_corpus.rs`.
pub fn replay_corpus(fuzz_root: &std::path::Path, target: &str, run: fn(&[u8]), accepts: fn(&[u8]) -> bool) -> usize {
    let mut count = 0;
    for dir in [fuzz_root.join("corpus").join(target), fuzz_root.join("artifacts").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.expect("readable dir entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            run(&bytes);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            assert!(!name.starts_with("valid_") || accepts(&bytes), "{} is named valid_ but rejected", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus for fuzz target {target}");
    count
}
