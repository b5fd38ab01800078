//! The GPU AdamW step against its oracles: bit-identical to the f32 mirror of the train crate's
//! op sequence (`adamw::cpu::adamw_step_f32`), and within `adamw::tolerance` of the f64 oracle,
//! over several consecutive steps.
//!
//! Without a usable GPU every test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::adamw::cpu::{adamw_step_f32, adamw_step_f64, update_f64};
use brainstacks_kernels::adamw::{AdamWParams, cuda as adamw_cuda, step_scalars, tolerance};
use common::gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 24;

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        prop::sample::select(vec![255usize, 256, 257, 1023, 1024, 1025]),
        1usize..5000,
        Just(100_003),
    ]
}

fn params() -> impl Strategy<Value = AdamWParams> {
    (
        1e-5f64..0.5,
        prop::sample::select(vec![0.9f64, 0.5, 0.0]),
        prop::sample::select(vec![0.999f64, 0.95, 0.5]),
        prop::sample::select(vec![1e-8f64, 1e-6, 0.0]),
        prop::sample::select(vec![0.0f64, 0.01, 0.5]),
    )
        .prop_map(|(lr, beta1, beta2, eps, weight_decay)| AdamWParams {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        })
}

fn rnd(seed: u64, i: usize, scale: f32) -> f32 {
    let mut z = seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
}

#[test]
fn adamw_matches_f32_mirror_bitwise_and_f64_oracle() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(length(), params(), any::<u64>(), 1u64..2000),
            |(n, c, seed, t0)| {
                let mut p: Vec<f32> = (0..n).map(|i| rnd(seed, i, 2.0)).collect();
                let mut m: Vec<f32> = (0..n).map(|i| rnd(seed ^ 1, i, 0.1)).collect();
                let mut v: Vec<f32> = (0..n).map(|i| rnd(seed ^ 2, i, 0.01).abs()).collect();
                let (mut dp, mut dm, mut dv) = (
                    g.htod(&p).unwrap(),
                    g.htod(&m).unwrap(),
                    g.htod(&v).unwrap(),
                );
                // Three consecutive steps (t0, t0 + 1, t0 + 2) with fresh gradients.
                for t in t0..t0 + 3 {
                    let gr: Vec<f32> = (0..n).map(|i| rnd(seed ^ (t << 8), i, 1.0)).collect();
                    let dg = g.htod(&gr).unwrap();
                    adamw_cuda::adamw_step_f32(g, &c, t, &mut dp, &dg, &mut dm, &mut dv).unwrap();
                    let f = |x: &[f32]| -> Vec<f64> { x.iter().map(|&a| a as f64).collect() };
                    let (p_old, m_old, v_old) = (f(&p), f(&m), f(&v));
                    let (mut p64, mut m64, mut v64) = (p_old.clone(), m_old.clone(), v_old.clone());
                    adamw_step_f64(&c, t, &mut p64, &f(&gr), &mut m64, &mut v64);
                    adamw_step_f32(&step_scalars(&c, t), &mut p, &gr, &mut m, &mut v);
                    let (gp, gm, gv) = (
                        g.dtoh(&dp).unwrap(),
                        g.dtoh(&dm).unwrap(),
                        g.dtoh(&dv).unwrap(),
                    );
                    for i in 0..n {
                        prop_assert_eq!(
                            gp[i].to_bits(),
                            p[i].to_bits(),
                            "p: n={} t={} i={} {:?}",
                            n,
                            t,
                            i,
                            c
                        );
                        prop_assert_eq!(
                            gm[i].to_bits(),
                            m[i].to_bits(),
                            "m: n={} t={} i={}",
                            n,
                            t,
                            i
                        );
                        prop_assert_eq!(
                            gv[i].to_bits(),
                            v[i].to_bits(),
                            "v: n={} t={} i={}",
                            n,
                            t,
                            i
                        );
                        let u = update_f64(&c, t, m64[i], v64[i]);
                        let (tp, tm, tv) =
                            tolerance(&c, t, p_old[i], m_old[i], v_old[i], gr[i] as f64, p64[i], u);
                        prop_assert!(
                            (gp[i] as f64 - p64[i]).abs() <= tp,
                            "p vs f64: t={} i={}: {} vs {}",
                            t,
                            i,
                            gp[i],
                            p64[i]
                        );
                        prop_assert!(
                            (gm[i] as f64 - m64[i]).abs() <= tm,
                            "m vs f64: t={} i={}",
                            t,
                            i
                        );
                        prop_assert!(
                            (gv[i] as f64 - v64[i]).abs() <= tv,
                            "v vs f64: t={} i={}",
                            t,
                            i
                        );
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn adamw_rejects_bad_input() {
    let Some(g) = gpu() else { return };
    let c = AdamWParams {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut p = g.htod(&[1.0f32; 4]).unwrap();
    let gr = g.htod(&[1.0f32; 3]).unwrap();
    let mut m = g.alloc_zeros::<f32>(4).unwrap();
    let mut v = g.alloc_zeros::<f32>(4).unwrap();
    assert!(adamw_cuda::adamw_step_f32(g, &c, 1, &mut p, &gr, &mut m, &mut v).is_err());
    let gr = g.htod(&[1.0f32; 4]).unwrap();
    assert!(adamw_cuda::adamw_step_f32(g, &c, 0, &mut p, &gr, &mut m, &mut v).is_err());
}
