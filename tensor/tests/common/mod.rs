//! What the tensor crate's GPU test files share.

use brainstacks_tensor::{DType, Device, Tensor};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Device 0, or `None` (skipped) without a usable GPU; panics when `REQUIRE_CUDA=1`.
pub fn gpu(test: &'static str) -> Option<Device> {
    let d = Device::Cuda(0);
    match d.check_available(test) {
        Ok(()) => Some(d),
        Err(e) => {
            if std::env::var("REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("REQUIRE_CUDA=1 but the GPU is unusable: {e}");
            }
            println!("skipped: {e}");
            None
        }
    }
}

/// A proptest runner with `cases` cases and no failure files.
#[allow(dead_code)] // not every test file that includes this module draws proptest cases
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// Deterministic values in [-scale, scale).
#[allow(dead_code)] // not every GPU test file uses every helper
pub fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A view of logical shape `shape` built on `device`: mode 0 contiguous, 1 the transpose of a
/// stored transpose (strided, rank >= 2), 2 a narrow of a wider last dim (offset and row gaps).
#[allow(dead_code)] // not every GPU test file uses every helper
pub fn view(vals: &[f64], shape: &[usize], dtype: DType, mode: u8, device: &Device) -> Tensor {
    let r = shape.len();
    let base = |s: &[usize], v: Vec<f64>| Tensor::from_vec(v, s, &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_device(device).unwrap();
    match mode {
        1 if r >= 2 => {
            let mut ts = shape.to_vec();
            ts.swap(r - 2, r - 1);
            // Element (.., i, j) of the view is stored at (.., j, i): fill the stored layout so the
            // view reads `vals` in row-major order.
            let (a, b) = (shape[r - 2], shape[r - 1]);
            let mut stored = vec![0.0; vals.len()];
            for (blk, chunk) in vals.chunks((a * b).max(1)).enumerate() {
                for i in 0..a {
                    for j in 0..b {
                        stored[blk * a * b + j * a + i] = chunk[i * b + j];
                    }
                }
            }
            base(&ts, stored).t().unwrap()
        }
        2 if r >= 1 => {
            let last = shape[r - 1];
            let mut ws = shape.to_vec();
            ws[r - 1] = last + 3;
            let rows: usize = shape[..r - 1].iter().product();
            let mut wide = vec![7.0; rows * (last + 3)];
            for row in 0..rows {
                for j in 0..last {
                    wide[row * (last + 3) + 1 + j] = vals[row * last + j];
                }
            }
            base(&ws, wide).narrow(r - 1, 1, last).unwrap()
        }
        _ => base(shape, vals.to_vec()),
    }
}

/// Both NaN, equal (infinities included), or within `tol(i)`.
#[allow(dead_code)] // not every GPU test file uses every helper
pub fn check_close(what: &str, gpu: &[f64], cpu: &[f64], tol: impl Fn(usize) -> f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(gpu.len(), cpu.len(), "{}: lengths", what);
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let ok = (g.is_nan() && c.is_nan()) || g == c || (g - c).abs() <= tol(i);
        prop_assert!(ok, "{}: element {} gpu {} cpu {} (tol {})", what, i, g, c, tol(i));
    }
    Ok(())
}

#[allow(dead_code)] // not every GPU test file uses every helper
pub fn rel_close(what: &str, g: &Tensor, c: &Tensor, rel: f64, abs: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(g.shape(), c.shape(), "{}: shapes", what);
    prop_assert_eq!(g.dtype(), c.dtype(), "{}: dtypes", what);
    prop_assert!(g.device().is_cuda(), "{}: result left the GPU", what);
    let (gv, cv) = (g.to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
    check_close(what, &gv, &cv, |i| rel * cv[i].abs() + abs)
}
