//! NF4 weights: the fast products against the dense path on the dequantized weight (bit for bit:
//! the packed panels hold the very values the dense path packs), against the f64 oracle, and every
//! user error with a message.

use brainstacks_kernels::nf4 as oracle;
use brainstacks_tensor::nf4::Nf4Weight;
use brainstacks_tensor::{DType, Device, Rng, Tensor};
use proptest::prelude::*;

fn randn(seed: u64, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::randn(&mut Rng::new(seed), 0.0, 1.0, shape, dtype, &Device::Cpu).unwrap()
}

fn check_against_dense(out_f: usize, in_f: usize, m: usize, blocksize: usize, dq: bool, seed: u64) {
    let w = randn(seed, &[out_f, in_f], DType::F32);
    let q = Nf4Weight::quantize(&w, blocksize, dq).unwrap();
    let deq = q.dequantize().unwrap();
    let x = randn(seed + 1, &[m, in_f], DType::F32);
    let dy = randn(seed + 2, &[m, out_f], DType::F32);
    // f32: identical to the dense product on the dequantized weight.
    let y = q.linear(&x).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), x.matmul(&deq.t().unwrap()).unwrap().to_vec::<f32>().unwrap());
    let dx = q.linear_input_grad(&dy).unwrap();
    assert_eq!(dx.to_vec::<f32>().unwrap(), dy.matmul(&deq).unwrap().to_vec::<f32>().unwrap());
    // f64 and bf16 take the same panels, widened / after widening the input.
    let x64 = x.to_dtype(DType::F64).unwrap();
    let deq64 = deq.to_dtype(DType::F64).unwrap();
    assert_eq!(
        q.linear(&x64).unwrap().to_vec::<f64>().unwrap(),
        x64.matmul(&deq64.t().unwrap()).unwrap().to_vec::<f64>().unwrap()
    );
    let dy64 = dy.to_dtype(DType::F64).unwrap();
    assert_eq!(q.linear_input_grad(&dy64).unwrap().to_vec::<f64>().unwrap(), dy64.matmul(&deq64).unwrap().to_vec::<f64>().unwrap());
    let xb = x.to_dtype(DType::BF16).unwrap();
    let yb = q.linear(&xb).unwrap();
    assert_eq!(yb.dtype(), DType::BF16);
    let want_b = xb.to_dtype(DType::F32).unwrap().matmul(&deq.t().unwrap()).unwrap().to_dtype(DType::BF16).unwrap();
    assert_eq!(yb.to_vec_f64().unwrap(), want_b.to_vec_f64().unwrap());
    // And the f64 oracle of the format, within the f32 accumulation bound.
    if m > 0 {
        let wq = oracle::quantize_nf4(&w.to_vec::<f32>().unwrap(), blocksize).unwrap();
        let absmax = if dq {
            oracle::dequantize_absmax(&oracle::double_quantize_absmax(wq.absmax()).unwrap())
        } else {
            wq.absmax().to_vec()
        };
        assert_eq!(q.absmax(), &absmax[..]);
        let deq_oracle: Vec<f32> = (0..out_f * in_f)
            .map(|e| oracle::NF4_CODE[wq.nibble(e).unwrap() as usize] * absmax[e / blocksize])
            .collect();
        assert_eq!(deq.to_vec::<f32>().unwrap(), deq_oracle);
        let xs = x.to_vec::<f32>().unwrap();
        let ys = y.to_vec::<f32>().unwrap();
        for i in 0..m {
            for j in 0..out_f {
                let (mut exact, mut mag) = (0f64, 0f64);
                for p in 0..in_f {
                    let t = f64::from(xs[i * in_f + p]) * f64::from(deq_oracle[j * in_f + p]);
                    exact += t;
                    mag += t.abs();
                }
                let bound = in_f as f64 * f64::from(f32::EPSILON) * mag + 1e-30;
                let err = (f64::from(ys[i * out_f + j]) - exact).abs();
                assert!(err <= bound, "y[{i},{j}] = {} vs {exact}: error {err} > {bound}", ys[i * out_f + j]);
            }
        }
    }
}

#[test]
fn products_equal_the_dense_path_at_tile_edges() {
    for &(out_f, in_f, m) in &[(1, 64, 1), (37, 64, 5), (33, 128, 13), (64, 192, 12), (129, 256, 25), (300, 320, 2), (17, 64, 0)] {
        check_against_dense(out_f, in_f, m, 64, false, out_f as u64);
        check_against_dense(out_f, in_f, m, 64, true, 7 + out_f as u64);
    }
    check_against_dense(40, 96, 7, 32, false, 3);
    check_against_dense(40, 256, 7, 128, true, 4);
}

#[test]
fn large_product_crosses_the_cache_blocks() {
    // in = 640 > KC (256) and out = 600 > one NC block on some kernels: panels from many blocks.
    check_against_dense(600, 640, 40, 64, true, 11);
}

#[test]
fn leading_dims_and_views() {
    let w = randn(1, &[24, 64], DType::F32);
    let q = Nf4Weight::quantize(&w, 64, false).unwrap();
    let x = randn(2, &[2, 3, 64], DType::F32);
    let y = q.linear(&x).unwrap();
    assert_eq!(y.shape(), &[2, 3, 24]);
    let flat = q.linear(&x.reshape(&[6, 64]).unwrap()).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), flat.to_vec::<f32>().unwrap());
    // A transposed (strided) input gives the same numbers as its contiguous copy.
    let xt = randn(3, &[64, 5], DType::F32).t().unwrap();
    assert!(!xt.is_contiguous());
    assert_eq!(q.linear(&xt).unwrap().to_vec::<f32>().unwrap(), q.linear(&xt.contiguous().unwrap()).unwrap().to_vec::<f32>().unwrap());
}

/// Empty weights multiply like empty matrices: `[n, 0]` gives zeros of the right shape (found by
/// the `nf4_parts` fuzz target: the row count was taken as `elements / 0`), `[0, k]` gives an
/// empty output.
#[test]
fn empty_weights_give_products_of_the_right_shape() {
    let zero_in = Nf4Weight::from_parts(3, 0, 64, Vec::new(), Some(Vec::new()), None, DType::F32).unwrap();
    let y = zero_in.linear(&Tensor::ones(&[2, 4, 0], DType::F32, &Device::Cpu).unwrap()).unwrap();
    assert_eq!((y.shape(), y.to_vec::<f32>().unwrap()), (&[2usize, 4, 3][..], vec![0.0; 24]));
    let dx = zero_in.linear_input_grad(&Tensor::ones(&[5, 3], DType::F32, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(dx.shape(), &[5, 0]);
    let zero_out = Nf4Weight::quantize(&Tensor::zeros(&[0, 64], DType::F32, &Device::Cpu).unwrap(), 64, false).unwrap();
    assert_eq!(zero_out.linear(&randn(4, &[2, 64], DType::F32)).unwrap().shape(), &[2, 0]);
}

#[test]
fn user_errors_are_reported() {
    let w = randn(1, &[4, 96], DType::F32);
    let msg = Nf4Weight::quantize(&w, 64, false).unwrap_err().to_string();
    assert!(msg.contains("96") && msg.contains("multiple"), "{msg}");
    let msg = Nf4Weight::quantize(&randn(1, &[64], DType::F32), 64, false).unwrap_err().to_string();
    assert!(msg.contains("2-D"), "{msg}");
    let mut v = vec![0.5f32; 2 * 64];
    v[64 + 3] = f32::NAN;
    let wn = Tensor::from_vec(v, &[2, 64], &Device::Cpu).unwrap();
    let msg = Nf4Weight::quantize(&wn, 64, false).unwrap_err().to_string();
    assert!(msg.contains("NaN") && msg.contains("row 1, column 3"), "{msg}");
    let q = Nf4Weight::quantize(&randn(2, &[4, 64], DType::F32), 64, false).unwrap();
    let msg = q.linear(&randn(3, &[2, 32], DType::F32)).unwrap_err().to_string();
    assert!(msg.contains("64"), "{msg}");
    let msg = q.linear_input_grad(&randn(3, &[2, 64], DType::F32)).unwrap_err().to_string();
    assert!(msg.contains("must be 4"), "{msg}");
    let msg = q.linear(&Tensor::zeros(&[2, 64], DType::I64, &Device::Cpu).unwrap()).unwrap_err().to_string();
    assert!(msg.contains("f32, bf16 or f64"), "{msg}");
    // from_parts checks every length.
    let (packed, absmax) = (q.packed().to_vec(), q.absmax().to_vec());
    assert!(Nf4Weight::from_parts(4, 64, 64, packed[1..].to_vec(), Some(absmax.clone()), None, DType::F32).is_err());
    assert!(Nf4Weight::from_parts(4, 64, 64, packed.clone(), Some(absmax[1..].to_vec()), None, DType::F32).is_err());
    assert!(Nf4Weight::from_parts(4, 64, 64, packed.clone(), None, None, DType::F32).is_err());
    let back = Nf4Weight::from_parts(4, 64, 64, packed, Some(absmax), None, DType::F32).unwrap();
    assert_eq!(back, q);
}

#[test]
fn storage_is_about_four_and_a_half_bits() {
    let q = Nf4Weight::quantize(&randn(5, &[256, 1024], DType::F32), 64, false).unwrap();
    assert_eq!(q.storage_bytes(), 256 * 1024 / 2 + 4 * 256 * 1024 / 64);
    let dq = Nf4Weight::quantize(&randn(5, &[256, 1024], DType::F32), 64, true).unwrap();
    assert!(dq.storage_bytes() < q.storage_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_shapes_match_the_dense_path(out_f in 1usize..70, blocks in 1usize..5, m in 0usize..30, dq in any::<bool>(), seed in any::<u32>()) {
        check_against_dense(out_f, 64 * blocks, m, 64, dq, u64::from(seed));
    }
}
