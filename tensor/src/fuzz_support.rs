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
