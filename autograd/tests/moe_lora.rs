//! MoE-LoRA dispatch: the fast path against the f64 oracle (forward and all four gradients), the
//! tape's gradients by gradcheck, the zero-B no-op, and routing errors.

use brainstacks_autograd::{GradcheckOptions, gradcheck};
use brainstacks_kernels::moe_lora::cpu::{self as oracle, Dims};
use brainstacks_tensor::{DType, Device, Rng, Tensor};
use proptest::prelude::*;

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::randn(&mut Rng::new(seed), 0.0, 1.0, shape, DType::F64, &Device::Cpu).unwrap()
}

/// A routing table: for each token, `k` distinct experts drawn from a seed.
fn routing(t: usize, k: usize, e: usize, seed: u64) -> Tensor {
    let mut ids = Vec::with_capacity(t * k);
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    for _ in 0..t {
        let mut row: Vec<i64> = Vec::new();
        while row.len() < k {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let c = ((state >> 33) % e as u64) as i64;
            if !row.contains(&c) {
                row.push(c);
            }
        }
        ids.extend(row);
    }
    Tensor::from_vec(ids, &[t, k], &Device::Cpu).unwrap()
}

fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-10 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

fn check_against_oracle(t: usize, k: usize, e: usize, d_in: usize, r: usize, d_out: usize, seed: u64) {
    let x = randn(seed, &[t, d_in]);
    let idx = routing(t, k, e, seed);
    let g = randn(seed + 1, &[t, k]);
    let a = randn(seed + 2, &[e, r, d_in]);
    let b = randn(seed + 3, &[e, d_out, r]);
    let dy = randn(seed + 4, &[t, d_out]);
    let s = 16.0 / (r as f64).sqrt();
    let d = Dims { t, k, experts: e, d_in, r, d_out };
    let v = |t: &Tensor| t.to_vec::<f64>().unwrap();
    let iv = idx.to_vec::<i64>().unwrap();
    let want = oracle::forward(&v(&x), &iv, &v(&g), &v(&a), &v(&b), s, &d);
    close(&v(&Tensor::moe_lora(&x, &idx, &g, &a, &b, s).unwrap()), &want, "out");
    let (dx, dg, da, db) = oracle::backward(&v(&x), &iv, &v(&g), &v(&a), &v(&b), s, &v(&dy), &d);
    let got = Tensor::moe_lora_backward(&x, &idx, &g, &a, &b, s, &dy).unwrap();
    close(&v(&got.dx), &dx, "dx");
    close(&v(&got.dgates), &dg, "dgates");
    close(&v(&got.da), &da, "da");
    close(&v(&got.db), &db, "db");
}

#[test]
fn fast_path_matches_the_oracle_at_edges() {
    check_against_oracle(0, 2, 4, 8, 4, 6, 1); // no tokens
    check_against_oracle(1, 1, 1, 3, 1, 2, 2); // one expert, rank 1
    check_against_oracle(37, 2, 4, 33, 16, 17, 3); // odd sizes, the paper's E and r
    check_against_oracle(9, 8, 8, 5, 3, 4, 4); // k = E: every expert
    check_against_oracle(50, 2, 64, 12, 2, 7, 5); // many experts, most of them empty
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_shapes_match_the_oracle(t in 0usize..24, e in 1usize..10, kf in 0.0f64..1.0, d_in in 1usize..20, r in 1usize..9, d_out in 1usize..20, seed in any::<u32>()) {
        let k = 1 + ((e - 1) as f64 * kf) as usize;
        check_against_oracle(t, k, e, d_in, r, d_out, u64::from(seed));
    }
}

#[test]
fn tape_gradients_pass_gradcheck() {
    let (t, k, e, d_in, r, d_out) = (6, 2, 4, 5, 3, 4);
    let idx = routing(t, k, e, 9);
    let inputs = [randn(1, &[t, d_in]), randn(2, &[t, k]), randn(3, &[e, r, d_in]), randn(4, &[e, d_out, r])];
    gradcheck(|v| v[0].moe_lora(&idx, &v[1], &v[2], &v[3], 2.5), &inputs, GradcheckOptions::default()).unwrap();
}

#[test]
fn zero_b_is_an_exact_no_op_and_f32_works() {
    let idx = routing(10, 2, 4, 3);
    let x = randn(1, &[10, 16]).to_dtype(DType::F32).unwrap();
    let g = randn(2, &[10, 2]).to_dtype(DType::F32).unwrap();
    let a = randn(3, &[4, 8, 16]).to_dtype(DType::F32).unwrap();
    let b = Tensor::zeros(&[4, 12, 8], DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::moe_lora(&x, &idx, &g, &a, &b, 4.0).unwrap();
    assert!(y.to_vec::<f32>().unwrap().iter().all(|v| v.to_bits() == 0), "exactly +0.0 everywhere");
    // With a non-zero B, f32 agrees with the f64 oracle to f32 accuracy.
    let b = randn(4, &[4, 12, 8]).to_dtype(DType::F32).unwrap();
    let y32 = Tensor::moe_lora(&x, &idx, &g, &a, &b, 4.0).unwrap().to_vec_f64().unwrap();
    let f = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let y64 = Tensor::moe_lora(&f(&x), &idx, &f(&g), &f(&a), &f(&b), 4.0).unwrap().to_vec_f64().unwrap();
    for (p, q) in y32.iter().zip(&y64) {
        assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
    }
}

#[test]
fn bad_routing_is_an_error() {
    let x = randn(1, &[2, 4]);
    let g = randn(2, &[2, 2]);
    let a = randn(3, &[3, 2, 4]);
    let b = randn(4, &[3, 5, 2]);
    let bad = Tensor::from_vec(vec![0i64, 3, 1, 2], &[2, 2], &Device::Cpu).unwrap();
    assert!(Tensor::moe_lora(&x, &bad, &g, &a, &b, 1.0).unwrap_err().to_string().contains("expert 3"));
    let twice = Tensor::from_vec(vec![1i64, 1, 1, 2], &[2, 2], &Device::Cpu).unwrap();
    assert!(Tensor::moe_lora(&x, &twice, &g, &a, &b, 1.0).unwrap_err().to_string().contains("twice"));
    let ok = Tensor::from_vec(vec![0i64, 1, 1, 2], &[2, 2], &Device::Cpu).unwrap();
    assert!(Tensor::moe_lora(&x, &ok, &g, &a, &randn(5, &[3, 5, 3]), 1.0).is_err());
    assert!(Tensor::moe_lora(&x, &ok.to_dtype(DType::F64).unwrap(), &g, &a, &b, 1.0).unwrap_err().to_string().contains("i64"));
}
