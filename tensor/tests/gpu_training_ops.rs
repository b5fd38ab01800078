//! The CUDA paths a training step adds beyond the single kernels, against the same ops on the
//! CPU: indexed reads and adds (`index_select`, `index_add`, `scatter_add`, the backward of
//! embeddings and top-k), `cat` (the KV cache), `log_softmax`, causal attention composed from
//! GEMM + mask + softmax, and the NF4 products at both precisions.
//!
//! Without a usable GPU each test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
//!
//! Tolerances: copies are exact; f32 indexed adds within 64 f32 ulps of the CPU (both add in f32
//! in the same order; the bound leaves room for a different association); composed results
//! within bounds derived from their f32 reduction lengths.
#![cfg(feature = "cuda")]

use brainstacks_tensor::nf4::Nf4Weight;
use brainstacks_tensor::{DType, Device, MatmulPrecision, Tensor};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

mod common;

use common::{check_close, rel_close, runner, values, view};

fn gpu() -> Option<Device> {
    common::gpu("gpu_training_ops")
}

const F32_ULP64: f64 = 64.0 / (1u64 << 24) as f64;

/// `|g - c| <= bound[i]` for every element (`g` on the GPU, `c` on the CPU).
fn within(what: &str, g: &Tensor, c: &Tensor, bound: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(g.shape(), c.shape(), "{}: shapes", what);
    prop_assert!(g.device().is_cuda(), "{}: result left the GPU", what);
    check_close(what, &g.to_vec_f64().unwrap(), &c.to_vec_f64().unwrap(), |i| bound[i])
}

fn ids_on(ids: &[i64], device: &Device) -> Tensor {
    Tensor::from_vec(ids.to_vec(), &[ids.len()], &Device::Cpu).unwrap().to_device(device).unwrap()
}

#[test]
fn index_select_index_add_and_cat_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(32);
    let strat = (prop::collection::vec(0usize..6, 1..4), any::<u64>(), 0usize..2, 0u8..3);
    r.run(&strat, |(shape, seed, dt, mode)| {
        let dtype = [DType::F32, DType::BF16][dt];
        let n: usize = shape.iter().product();
        let vals = values(n, seed, 4.0);
        let (c, g) = (view(&vals, &shape, dtype, mode, &Device::Cpu), view(&vals, &shape, dtype, mode, &dev));
        for d in 0..shape.len() {
            let size = shape[d];
            // Up to 6 ids, repeats likely (repeated rows must accumulate in order).
            let count = if size == 0 { 0 } else { (seed as usize >> d) % 7 };
            let ids: Vec<i64> = (0..count).map(|j| ((seed >> (j + 3)) as usize % size) as i64).collect();
            let (cid, gid) = (ids_on(&ids, &Device::Cpu), ids_on(&ids, &dev));
            let cs = c.index_select(d, &cid).unwrap();
            rel_close("index_select", &g.index_select(d, &gid).unwrap(), &cs, 0.0, 0.0)?;
            rel_close(
                "cat",
                &Tensor::cat(&[&g, &g.narrow(d, 0, size / 2).unwrap()], d).unwrap(),
                &Tensor::cat(&[&c, &c.narrow(d, 0, size / 2).unwrap()], d).unwrap(),
                0.0,
                0.0,
            )?;
            if dtype == DType::F32 {
                let sv = values(cs.elem_count(), seed ^ 7, 2.0);
                let csrc = Tensor::from_vec(sv, cs.shape(), &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
                let gsrc = csrc.to_device(&dev).unwrap();
                rel_close("index_add", &g.index_add(d, &gid, &gsrc).unwrap(), &c.index_add(d, &cid, &csrc).unwrap(), F32_ULP64, 1e-6)?;
            }
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn scatter_add_as_topk_backward_matches_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(32);
    let strat = (0usize..40, 1usize..9, any::<u64>(), 0u8..3);
    r.run(&strat, |(rows, experts, seed, mode)| {
        let x = values(rows * experts, seed, 3.0);
        let (cx, gx) = (view(&x, &[rows, experts], DType::F32, mode, &Device::Cpu), view(&x, &[rows, experts], DType::F32, mode, &dev));
        let k = 1 + seed as usize % experts;
        let (cv, ci) = cx.topk(k).unwrap();
        let (_, gi) = gx.topk(k).unwrap();
        prop_assert_eq!(gi.to_vec::<i64>().unwrap(), ci.to_vec::<i64>().unwrap());
        // The top-k backward: the gradient of the kept values scattered into zeros.
        let gv = values(rows * k, seed ^ 3, 1.0);
        let cg = Tensor::from_vec(gv, cv.shape(), &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let gg = cg.to_device(&dev).unwrap();
        let cz = Tensor::zeros(&[rows, experts], DType::F32, &Device::Cpu).unwrap();
        let gz = cz.to_device(&dev).unwrap();
        rel_close("scatter_add dim 1", &gz.scatter_add(1usize, &gi, &gg).unwrap(), &cz.scatter_add(1usize, &ci, &cg).unwrap(), 0.0, 0.0)?;
        // Along dim 0 onto a non-zero base, with a src larger than the index.
        if rows > 0 {
            let idx: Vec<i64> = (0..2 * experts).map(|j| ((seed >> (j % 40)) as usize % rows) as i64).collect();
            let ci0 = Tensor::from_vec(idx, &[2, experts], &Device::Cpu).unwrap();
            let src = values(3 * experts, seed ^ 11, 2.0);
            let cs0 = Tensor::from_vec(src, &[3, experts], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
            rel_close(
                "scatter_add dim 0",
                &gx.scatter_add(0usize, &ci0.to_device(&dev).unwrap(), &cs0.to_device(&dev).unwrap()).unwrap(),
                &cx.scatter_add(0usize, &ci0, &cs0).unwrap(),
                F32_ULP64,
                1e-6,
            )?;
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn log_softmax_and_composed_attention_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(24);
    let strat = (1usize..3, 1usize..3, 1usize..3, 1usize..20, 0usize..5, 1usize..33, any::<u64>(), 0u8..3);
    r.run(&strat, |(b, hkv, group, t, extra, d, seed, mode)| {
        let xs = [b * 3, t + extra];
        let xv = values(xs[0] * xs[1], seed, 8.0);
        let (cx, gx) = (view(&xv, &xs, DType::F32, mode, &Device::Cpu), view(&xv, &xs, DType::F32, mode, &dev));
        rel_close("log_softmax", &gx.log_softmax(-1).unwrap(), &cx.log_softmax(-1).unwrap(), 1e-5, 1e-5)?;

        let (hq, s) = (hkv * group, t + extra);
        let shape = |h: usize, len: usize| [b, h, len, d];
        let (qv, kv, vv) =
            (values(b * hq * t * d, seed ^ 1, 1.0), values(b * hkv * s * d, seed ^ 2, 1.0), values(b * hkv * s * d, seed ^ 3, 1.0));
        let on = |v: &[f64], sh: [usize; 4], dev: &Device| view(v, &sh, DType::F32, mode, dev);
        let scale = 1.0 / (d as f64).sqrt();
        let got =
            on(&qv, shape(hq, t), &dev).causal_attention(&on(&kv, shape(hkv, s), &dev), &on(&vv, shape(hkv, s), &dev), scale).unwrap();
        let want = on(&qv, shape(hq, t), &Device::Cpu)
            .causal_attention(&on(&kv, shape(hkv, s), &Device::Cpu), &on(&vv, shape(hkv, s), &Device::Cpu), scale)
            .unwrap();
        // Outputs are convex combinations of values in [-1, 1]: f32 scores over d terms and
        // a softmax over s terms bound the error well below 1e-5.
        rel_close("causal_attention", &got, &want, 0.0, 1e-5)
    })
    .unwrap();
}

#[test]
fn nf4_products_match_the_cpu_at_both_precisions() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(16);
    let strat = (prop_oneof![Just(1usize), Just(5), Just(16), Just(17), Just(40)], 1usize..4, 1usize..80, any::<bool>(), any::<u64>());
    r.run(&strat, |(m, k_blocks, n, double_quant, seed)| {
        let k = 64 * k_blocks;
        let w = Tensor::from_vec(values(n * k, seed, 0.1), &[n, k], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let cw = Nf4Weight::quantize(&w, 64, double_quant).unwrap();
        let gw = cw.to_device(&dev).unwrap();
        prop_assert_eq!(gw.device(), dev);
        let x = Tensor::from_vec(values(m * k, seed ^ 1, 1.0), &[m, k], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let dy = Tensor::from_vec(values(m * n, seed ^ 2, 1.0), &[m, n], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
        let (gx, gdy) = (x.to_device(&dev).unwrap(), dy.to_device(&dev).unwrap());
        // |x| <= 1 and |w| <= 0.1: every dot product's f32 error is far below len * 1e-6.
        let (tol_y, tol_dx) = (k as f64 * 1e-6, n as f64 * 1e-6);
        let f32p = MatmulPrecision::F32;
        rel_close("nf4 linear f32", &gw.linear_with(&gx, f32p).unwrap(), &cw.linear_with(&x, f32p).unwrap(), 0.0, tol_y)?;
        rel_close(
            "nf4 input grad f32",
            &gw.linear_input_grad_with(&gdy, f32p).unwrap(),
            &cw.linear_input_grad_with(&dy, f32p).unwrap(),
            0.0,
            tol_dx,
        )?;
        // bf16 operands, f32 sums. The CPU rounds each dequantized weight `code * absmax` to
        // bf16; the skinny forward kernel (m <= 16) rounds the code and applies the f32 absmax
        // to each block's partial sum instead, so a weight may differ by 2^-8 relative: the
        // bound is the kernel's documented (2^-8 + k 2^-23) sum |x| |w| per output. The input
        // gradient rounds `code * absmax` on both sides: only the summation order differs.
        let b = MatmulPrecision::Bf16;
        let wabs = cw.dequantize().unwrap().abs().unwrap();
        let sum_abs = x.abs().unwrap().matmul(&wabs.t().unwrap()).unwrap().to_vec_f64().unwrap();
        let per_unit = 2f64.powi(-8) + k as f64 * 2f64.powi(-23);
        let bound_y: Vec<f64> = sum_abs.iter().map(|s| per_unit * s + 1e-7).collect();
        within("nf4 linear bf16", &gw.linear_with(&gx, b).unwrap(), &cw.linear_with(&x, b).unwrap(), &bound_y)?;
        let (gdx, cdx) = (gw.linear_input_grad_with(&gdy, b).unwrap(), cw.linear_input_grad_with(&dy, b).unwrap());
        rel_close("nf4 input grad bf16", &gdx, &cdx, 0.0, tol_dx)?;
        // A bf16 input gives a bf16 output (the f32 result rounded once): one more bf16 unit.
        let xb = x.to_dtype(DType::BF16).unwrap();
        let cyb = cw.linear(&xb).unwrap();
        let bound_b: Vec<f64> = bound_y.iter().zip(cyb.to_vec_f64().unwrap()).map(|(bd, c)| bd + c.abs() / 128.0).collect();
        within("nf4 linear bf16 in", &gw.linear(&xb.to_device(&dev).unwrap()).unwrap(), &cyb, &bound_b)?;
        // The weight's CPU copy stays usable and a CPU input to a GPU weight is an error.
        prop_assert!(gw.linear(&x).is_err());
        Ok(())
    })
    .unwrap();
}
