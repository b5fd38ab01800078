//! CUDA tensors against the same ops on the CPU: transfers, creation, Philox draws, casts and
//! every op with a CUDA path, over random shapes (empty, 1, odd, around the kernels' block sizes)
//! and strided views; plus the clear error of ops without a CUDA path.
//!
//! Without a usable GPU each test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`
//! (then a missing GPU fails), as the kernels' GPU tests do.
//!
//! Tolerances compare two implementations that each stay close to an f64 oracle (see each
//! kernel's `mod.rs`): elementwise f32 within 64 f32 ulps of the larger magnitude (the GPU
//! functions are allowed up to 32 ulps, the CPU's about 1); bf16 results within 2 bf16 ulps (both
//! compute in f32 and round once, so a few f32 ulps can flip the final rounding by one unit);
//! sums within `n * 2^-24` of `sum |x|` (f64 accumulation on both sides, order differs).
#![cfg(feature = "cuda")]

use brainstacks_tensor::ops::binary::BinaryOp;
use brainstacks_kernels::elementwise::{U_BF16, U_F32, UnaryOp as KernelUnaryOp, unary_tolerance};
use brainstacks_tensor::ops::unary::UnaryOp;
use brainstacks_tensor::{DType, Device, Error, Rng, Tensor};
use proptest::prelude::*;

mod common;

fn gpu() -> Option<Device> {
    common::gpu("gpu_tensor")
}

use common::{check_close, rel_close, runner, values, view};

fn ulp_rel(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2.0 / 256.0,
        _ => 64.0 / (1u64 << 24) as f64,
    }
}

fn shape_strategy(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![Just(0usize), Just(1), 1..max_dim, Just(255), Just(257)], 1..=max_rank).prop_filter(
        "bounded size",
        |s| s.iter().product::<usize>() <= 70_000,
    )
}

const FLOAT_GPU: [DType; 2] = [DType::F32, DType::BF16];

#[test]
fn tensors_stay_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tensor>();
    send_sync::<brainstacks_tensor::CudaStorage>();
}

#[test]
fn check_available_never_panics() {
    // Either no driver or no such device: an error either way, never a panic.
    assert!(Device::Cuda(9999).check_available("test").is_err());
}

#[test]
fn round_trips_every_dtype_and_view() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(24);
    r.run(&(shape_strategy(3, 40), any::<u64>(), 0u8..3, 0usize..7), |(shape, seed, mode, dt)| {
        let dtype = DType::ALL[dt];
        let n: usize = shape.iter().product();
        let vals: Vec<f64> = values(n, seed, 100.0).iter().map(|v| if dtype.is_float() { *v } else { v.abs().floor() }).collect();
        let c = view(&vals, &shape, dtype, mode, &Device::Cpu);
        let g = c.to_device(&dev).unwrap();
        prop_assert_eq!(g.device(), dev);
        prop_assert!(g.is_contiguous());
        prop_assert_eq!(g.to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
        let back = g.to_device(&Device::Cpu).unwrap();
        prop_assert_eq!(back.to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
        // Views made on the GPU read back the same, through to_vec and to_device.
        let gv = view(&vals, &shape, dtype, mode, &dev);
        prop_assert_eq!(gv.to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
        prop_assert_eq!(gv.to_device(&Device::Cpu).unwrap().to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
        if matches!(dtype, DType::F32 | DType::BF16) {
            let gc = gv.contiguous().unwrap();
            prop_assert!(gc.is_contiguous());
            prop_assert_eq!(gc.to_vec_f64().unwrap(), c.to_vec_f64().unwrap());
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn creation_on_the_device() {
    let Some(dev) = gpu() else { return };
    for dtype in DType::ALL {
        let z = Tensor::zeros(&[3, 5], dtype, &dev).unwrap();
        assert_eq!(z.device(), dev);
        assert_eq!(z.to_vec_f64().unwrap(), vec![0.0; 15]);
        let o = Tensor::full(3.0, &[4], dtype, &dev).unwrap();
        assert_eq!(o.to_vec_f64().unwrap(), vec![3.0; 4]);
    }
    let t = Tensor::from_vec(vec![1i64, -2, 3], &[3], &dev).unwrap();
    assert_eq!(t.to_vec::<i64>().unwrap(), vec![1, -2, 3]);
    assert_eq!(Tensor::zeros(&[0, 4], DType::F32, &dev).unwrap().to_vec::<f32>().unwrap(), Vec::<f32>::new());
    let a = Tensor::arange(0.0, 5.0, 1.0, DType::F32, &dev).unwrap();
    assert_eq!((a.device(), a.to_vec::<f32>().unwrap()), (dev, vec![0., 1., 2., 3., 4.]));
}

#[test]
fn philox_draws_match_the_cpu_bit_for_bit() {
    let Some(dev) = gpu() else { return };
    for (n, seed, start) in [(0usize, 1u64, 0u64), (1, 2, 3), (1001, 7, 5), (70_001, 9, 1 << 33)] {
        for dtype in [DType::F32, DType::BF16, DType::F64] {
            let (mut rc, mut rg) = (Rng { seed, offset: start }, Rng { seed, offset: start });
            let c = Tensor::randn(&mut rc, 0.5, 2.0, &[n], dtype, &Device::Cpu).unwrap();
            let g = Tensor::randn(&mut rg, 0.5, 2.0, &[n], dtype, &dev).unwrap();
            assert_eq!(rc, rg);
            assert_eq!(g.device(), dev);
            let (cv, gv) = (c.to_vec_f64().unwrap(), g.to_vec_f64().unwrap());
            assert!(cv.iter().zip(&gv).all(|(a, b)| a.to_bits() == b.to_bits()), "randn {dtype} n={n}");
            if dtype == DType::F64 {
                let e = Tensor::rand_uniform(&mut rg, 0.0, 1.0, &[n], dtype, &dev).unwrap_err();
                assert!(e.to_string().contains("not implemented on CUDA yet"), "{e}");
                assert_eq!(rg, rc, "a failed draw must not advance the stream");
                continue;
            }
            let c = Tensor::rand_uniform(&mut rc, -1.0, 3.0, &[n], dtype, &Device::Cpu).unwrap();
            let g = Tensor::rand_uniform(&mut rg, -1.0, 3.0, &[n], dtype, &dev).unwrap();
            assert_eq!(rc, rg);
            let (cv, gv) = (c.to_vec_f64().unwrap(), g.to_vec_f64().unwrap());
            assert!(cv.iter().zip(&gv).all(|(a, b)| a.to_bits() == b.to_bits()), "rand_uniform {dtype} n={n}");
        }
    }
}

#[test]
fn casts_match_the_cpu_exactly() {
    let Some(dev) = gpu() else { return };
    let mut vals = values(3001, 5, 1e3);
    vals.extend([0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, 3.4e38, 1e-40, 1.00390625, 1.01171875]);
    let c = Tensor::from_vec(vals.clone(), &[vals.len()], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap();
    let g = c.to_device(&dev).unwrap();
    let (cb, gb) = (c.to_dtype(DType::BF16).unwrap(), g.to_dtype(DType::BF16).unwrap());
    assert_eq!(gb.dtype(), DType::BF16);
    assert_eq!(gb.to_vec::<half::bf16>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>(), cb.to_vec::<half::bf16>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    let (cf, gf) = (cb.to_dtype(DType::F32).unwrap(), gb.to_dtype(DType::F32).unwrap());
    assert_eq!(gf.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>(), cf.to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>());
    // A strided input is read through its view.
    let m = g.narrow(0, 1, 3000).unwrap().reshape(&[60, 50]).unwrap().t().unwrap();
    let mc = c.narrow(0, 1, 3000).unwrap().reshape(&[60, 50]).unwrap().t().unwrap();
    assert_eq!(m.to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap(), mc.to_dtype(DType::BF16).unwrap().to_vec_f64().unwrap());
}

#[test]
fn unary_ops_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(32);
    r.run(&(shape_strategy(3, 70), any::<u64>(), 0u8..3, 0usize..2, 0usize..17), |(shape, seed, mode, dt, op)| {
        let dtype = FLOAT_GPU[dt];
        let n: usize = shape.iter().product();
        let vals = values(n, seed, 8.0);
        let (c, g) = (view(&vals, &shape, dtype, mode, &Device::Cpu), view(&vals, &shape, dtype, mode, &dev));
        let (name, cr, gr) = if op == 16 {
            ("gelu_derivative", c.gelu_derivative().unwrap(), g.gelu_derivative().unwrap())
        } else {
            let u = UnaryOp::ALL[op];
            (u.name(), c.unary(u).unwrap(), g.unary(u).unwrap())
        };
        // The kernel's own bound against the f64 oracle (elementwise::unary_tolerance: it has the
        // absolute terms near zero crossings and where gelu's 1 + erf cancels), plus the CPU
        // result's own rounding. The kernels list the same ops in the same order, then
        // gelu_derivative (16).
        let kop = KernelUnaryOp::ALL[op];
        let (u_out, tiny) = if dtype == DType::BF16 { (U_BF16, 2f64.powi(-133)) } else { (U_F32, 2f64.powi(-149)) };
        let x = c.to_vec_f64().unwrap();
        let rel = ulp_rel(dtype);
        let (gv, cv) = (gr.to_vec_f64().unwrap(), cr.to_vec_f64().unwrap());
        prop_assert!(gr.device().is_cuda());
        check_close(name, &gv, &cv, |i| unary_tolerance(kop, x[i], cv[i], u_out, tiny) + rel * cv[i].abs() + 1e-30)
    })
    .unwrap();
}

#[test]
fn binary_and_scalar_ops_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(32);
    let strat = (shape_strategy(3, 40), any::<u64>(), 0u8..3, 0u8..3, 0usize..2, 0usize..6, any::<u8>());
    r.run(&strat, |(shape, seed, ma, mb, dt, op, bmask)| {
        let dtype = FLOAT_GPU[dt];
        // rhs broadcasts: drop leading dims and set some dims to 1 by `bmask`.
        let drop = (bmask as usize >> 4) % (shape.len() + 1);
        let rshape: Vec<usize> = shape[drop..].iter().enumerate().map(|(i, &d)| if bmask >> i & 1 == 1 { 1 } else { d }).collect();
        let (na, nb) = (shape.iter().product(), rshape.iter().product());
        let (va, vb) = (values(na, seed, 4.0), values(nb, seed ^ 0xABCD, 4.0));
        let ca = view(&va, &shape, dtype, ma, &Device::Cpu);
        let cb = view(&vb, &rshape, dtype, mb, &Device::Cpu);
        let ga = view(&va, &shape, dtype, ma, &dev);
        let gb = view(&vb, &rshape, dtype, mb, &dev);
        let bop = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum, BinaryOp::Minimum][op];
        // One IEEE operation (computed in f32, rounded once for bf16) on both sides: exact.
        rel_close(bop.name(), &ga.binary(&gb, bop).unwrap(), &ca.binary(&cb, bop).unwrap(), 0.0, 0.0)?;
        rel_close("swapped", &gb.binary(&ga, bop).unwrap(), &cb.binary(&ca, bop).unwrap(), 0.0, 0.0)?;
        rel_close("add_scalar", &ga.add_scalar(0.3).unwrap(), &ca.add_scalar(0.3).unwrap(), 0.0, 0.0)?;
        rel_close("mul_scalar", &ga.mul_scalar(-1.7).unwrap(), &ca.mul_scalar(-1.7).unwrap(), 0.0, 0.0)?;
        rel_close("affine", &ga.affine(1.3, -0.2).unwrap(), &ca.affine(1.3, -0.2).unwrap(), 0.0, 0.0)
    })
    .unwrap();
}

#[test]
fn reductions_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(32);
    r.run(&(shape_strategy(4, 40), any::<u64>(), 0u8..3, any::<u8>(), any::<bool>()), |(shape, seed, mode, dmask, keep)| {
        let n: usize = shape.iter().product();
        let vals = values(n, seed, 10.0);
        let (c, g) = (view(&vals, &shape, DType::F32, mode, &Device::Cpu), view(&vals, &shape, DType::F32, mode, &dev));
        let dims: Vec<usize> = (0..shape.len()).filter(|i| dmask >> i & 1 == 1).collect();
        // Sums: both accumulate in f64 and round once; allow n units of 2^-24 of sum |x|.
        let abs_sum = c.abs().unwrap().sum(&dims, keep).unwrap().to_vec_f64().unwrap();
        // Elements reduced into each output.
        let per = n as f64 / abs_sum.len().max(1) as f64;
        let (gs, cs) = (g.sum(&dims, keep).unwrap(), c.sum(&dims, keep).unwrap());
        prop_assert_eq!(gs.shape(), cs.shape());
        check_close("sum", &gs.to_vec_f64().unwrap(), &cs.to_vec_f64().unwrap(), |i| abs_sum[i] * (2.0 + per) / (1u64 << 24) as f64)?;
        let (gm, cm) = (g.mean(&dims, keep).unwrap(), c.mean(&dims, keep).unwrap());
        check_close("mean", &gm.to_vec_f64().unwrap(), &cm.to_vec_f64().unwrap(), |i| abs_sum[i] / per.max(1.0) * (2.0 + per) / (1u64 << 24) as f64)?;
        let d = (dmask as usize) % shape.len();
        if shape[d] == 0 {
            prop_assert!(g.max(d, keep).is_err());
            return Ok(());
        }
        // max/min/argmax/argmin select an element: exact.
        prop_assert_eq!(g.max(d, keep).unwrap().to_vec_f64().unwrap(), c.max(d, keep).unwrap().to_vec_f64().unwrap());
        prop_assert_eq!(g.min(d, keep).unwrap().to_vec_f64().unwrap(), c.min(d, keep).unwrap().to_vec_f64().unwrap());
        let (ga, ca) = (g.argmax(d, keep).unwrap(), c.argmax(d, keep).unwrap());
        prop_assert_eq!(ga.dtype(), DType::I64);
        prop_assert_eq!(ga.to_vec::<i64>().unwrap(), ca.to_vec::<i64>().unwrap());
        prop_assert_eq!(g.argmin(d, keep).unwrap().to_vec::<i64>().unwrap(), c.argmin(d, keep).unwrap().to_vec::<i64>().unwrap());
        Ok(())
    })
    .unwrap();
}

#[test]
fn row_ops_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(32);
    let strat = (prop::collection::vec(0usize..5, 0..3), prop_oneof![Just(0usize), Just(1), 1..40usize, Just(255), Just(1025)], any::<u64>(), 0u8..3);
    r.run(&strat, |(lead, d, seed, mode)| {
        let mut shape = lead.clone();
        shape.push(d);
        let n: usize = shape.iter().product();
        let vals = values(n, seed, 6.0);
        let (c, g) = (view(&vals, &shape, DType::F32, mode, &Device::Cpu), view(&vals, &shape, DType::F32, mode, &dev));
        // softmax along the last dim and (when there is one) along the first.
        rel_close("softmax", &g.softmax(-1).unwrap(), &c.softmax(-1).unwrap(), 1e-5, 1e-7)?;
        if shape.len() > 1 {
            rel_close("softmax dim 0", &g.softmax(0usize).unwrap(), &c.softmax(0usize).unwrap(), 1e-5, 1e-7)?;
        }
        let w = values(d, seed ^ 1, 2.0);
        let (cw, gw) = (Tensor::from_vec(w.clone(), &[d], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap(), Tensor::from_vec(w, &[d], &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().to_device(&dev).unwrap());
        rel_close("rms_norm", &g.rms_norm(&gw, 1e-6).unwrap(), &c.rms_norm(&cw, 1e-6).unwrap(), 4.0 / (1u64 << 24) as f64, 1e-30)?;
        // The CUDA top-k keeps at most 64 per row (the MoE gate's limit); more is a clear error.
        if d > 64 {
            let e = g.topk(65).unwrap_err().to_string();
            prop_assert!(e.contains("GPU limit 64"), "{}", e);
        }
        let k = (seed as usize) % (d.min(64) + 1);
        let (gv, gi) = g.topk(k).unwrap();
        let (cv, ci) = c.topk(k).unwrap();
        prop_assert_eq!(gv.to_vec_f64().unwrap(), cv.to_vec_f64().unwrap());
        prop_assert_eq!(gi.to_vec::<i64>().unwrap(), ci.to_vec::<i64>().unwrap());
        Ok(())
    })
    .unwrap();
}

#[test]
fn rope_embedding_and_cross_entropy_match_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(24);
    let strat = (0usize..4, 0usize..9, 0usize..9, any::<u64>(), 0usize..2, 0u8..3);
    r.run(&strat, |(batch, t, half, seed, dt, mode)| {
        let dtype = FLOAT_GPU[dt];
        let d = 2 * half;
        let shape = [batch, t, d];
        let vals = values(batch * t * d, seed, 3.0);
        let (c, g) = (view(&vals, &shape, dtype, mode, &Device::Cpu), view(&vals, &shape, dtype, mode, &dev));
        let positions: Vec<usize> = (0..t).map(|i| i * 3 + 1).collect();
        let (cos, sin) = brainstacks_tensor::ops::rope::rope_tables(&positions, d, 10_000.0, dtype).unwrap();
        let (gcos, gsin) = (cos.to_device(&dev).unwrap(), sin.to_device(&dev).unwrap());
        rel_close("rope", &g.rope(&gcos, &gsin).unwrap(), &c.rope(&cos, &sin).unwrap(), ulp_rel(dtype), 1e-6)?;

        // Embedding: a [V, D] table, i64 ids of shape [batch, t].
        let v = half + 1;
        let tv = values(v * (d + 1), seed ^ 3, 1.0);
        let (ct, gt) = (view(&tv, &[v, d + 1], dtype, mode, &Device::Cpu), view(&tv, &[v, d + 1], dtype, mode, &dev));
        let ids: Vec<i64> = (0..batch * t).map(|i| ((seed as usize + i * 7) % v) as i64).collect();
        let cid = Tensor::from_vec(ids.clone(), &[batch, t], &Device::Cpu).unwrap();
        let gid = cid.to_device(&dev).unwrap();
        rel_close("embedding", &gt.embedding(&gid).unwrap(), &ct.embedding(&cid).unwrap(), 0.0, 0.0)?;
        let bad = Tensor::from_vec(vec![v as i64], &[1], &dev).unwrap();
        prop_assert!(gt.embedding(&bad).is_err());

        // Cross-entropy on f32 logits [N, C] with an ignored target.
        let (rows, classes) = (batch * t, d + 1);
        let lv = values(rows * classes, seed ^ 5, 5.0);
        let (cl, gl) = (view(&lv, &[rows, classes], DType::F32, mode, &Device::Cpu), view(&lv, &[rows, classes], DType::F32, mode, &dev));
        let tg: Vec<i64> = (0..rows).map(|i| if i % 3 == 1 { -100 } else { ((seed as usize + i) % classes) as i64 }).collect();
        let ctg = Tensor::from_vec(tg, &[rows], &Device::Cpu).unwrap();
        let gtg = ctg.to_device(&dev).unwrap();
        let tol = 2.0 * (classes as f64 + 8.0) / (1u64 << 24) as f64;
        rel_close("cross_entropy", &gl.cross_entropy(&gtg, Some(-100)).unwrap(), &cl.cross_entropy(&ctg, Some(-100)).unwrap(), tol, tol)?;
        rel_close("cross_entropy_grad", &gl.cross_entropy_grad(&gtg, Some(-100)).unwrap(), &cl.cross_entropy_grad(&ctg, Some(-100)).unwrap(), tol, tol / rows.max(1) as f64)
    })
    .unwrap();
}

#[test]
fn matmul_matches_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(32);
    let dim = || prop_oneof![Just(0usize), Just(1), 1..70usize, Just(129)];
    let strat = (dim(), dim(), dim(), 0usize..3, any::<u64>(), 0u8..2, 0u8..2, 0u8..3);
    r.run(&strat, |(m, n, k, batch, seed, ta, tb, bmode)| {
        // bmode: 0 no batch, 1 both batched, 2 rhs 2-D broadcast over lhs's batch.
        let lead: Vec<usize> = if bmode == 0 { vec![] } else { vec![batch, 2] };
        let mut ls = lead.clone();
        ls.extend([m, k]);
        let mut rs = if bmode == 1 { lead.clone() } else { vec![] };
        rs.extend([k, n]);
        let (va, vb) = (values(ls.iter().product(), seed, 1.0), values(rs.iter().product(), seed ^ 9, 1.0));
        let (ca, ga) = (view(&va, &ls, DType::F32, ta, &Device::Cpu), view(&va, &ls, DType::F32, ta, &dev));
        let (cb, gb) = (view(&vb, &rs, DType::F32, tb, &Device::Cpu), view(&vb, &rs, DType::F32, tb, &dev));
        let (gc, cc) = (ga.matmul(&gb).unwrap(), ca.matmul(&cb).unwrap());
        // |a|,|b| <= 1: each dot product's error is below (k + 2) f32 units of k.
        let tol = (k as f64 + 2.0) * k as f64 / (1u64 << 24) as f64 + 1e-30;
        rel_close("matmul f32", &gc, &cc, 0.0, tol)?;

        // bf16 on the tensor cores when k, and the leading dims, are multiples of 8.
        let k8 = k.div_ceil(8) * 8;
        let (mut ls8, mut rs8) = (ls.clone(), rs.clone());
        let (lr, rr) = (ls8.len(), rs8.len());
        ls8[lr - 1] = k8;
        rs8[rr - 2] = k8;
        let (va, vb) = (values(ls8.iter().product(), seed, 1.0), values(rs8.iter().product(), seed ^ 9, 1.0));
        let (ca, ga) = (view(&va, &ls8, DType::BF16, ta, &Device::Cpu), view(&va, &ls8, DType::BF16, ta, &dev));
        let (cb, gb) = (view(&vb, &rs8, DType::BF16, tb, &Device::Cpu), view(&vb, &rs8, DType::BF16, tb, &dev));
        let both_t = ta == 1 && tb == 1;
        match ga.matmul(&gb) {
            Ok(gc) => {
                let cc = ca.matmul(&cb).unwrap();
                let tol = (k8 as f64 + 2.0) * k8 as f64 / (1u64 << 24) as f64;
                rel_close("matmul bf16", &gc, &cc, 2.0 / 256.0, tol)?;
            }
            Err(e) => {
                // Only layouts outside the kernel's rules may fail, and they fail clearly.
                prop_assert!(both_t || !m.is_multiple_of(8) || !n.is_multiple_of(8), "bf16 matmul failed: {}", e);
                prop_assert!(matches!(e, Error::Device { .. }), "{}", e);
            }
        }
        Ok(())
    })
    .unwrap();
}

/// Batch dims the way attention makes them (heads split out of a `[B, T, H*D]` activation and
/// moved in front of T, so the batch strides are not those of a dense `[B, H]` block), a key
/// broadcast over the heads (stride 0, grouped-query attention), three batch dims that do not
/// merge (one launch per entry), and a view starting past the buffer's first element.
#[test]
fn matmul_with_attention_batch_strides_matches_the_cpu() {
    let Some(dev) = gpu() else { return };
    let mut r = runner(16);
    let dim = || prop_oneof![Just(1usize), 1..40usize, Just(67)];
    let strat = (1usize..4, 1usize..4, dim(), dim(), 0usize..3, any::<u64>());
    r.run(&strat, |(b, h, t, d, lead, seed)| {
        let on = |v: &[f64], shape: &[usize], device: &Device| {
            Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().to_device(device).unwrap()
        };
        // q, k: [B, T, H, D] stored with `lead` extra rows in front, then narrowed and permuted
        // to [B, H, T, D]; kv: [B, 1, T, D] broadcast to [B, H, T, D].
        let q_vals = values((b * t + lead) * h * d, seed, 1.0);
        let k_vals = values(b * t * h * d, seed ^ 3, 1.0);
        let kv_vals = values(b * t * d, seed ^ 5, 1.0);
        let heads = |x: &Tensor, rows: usize| {
            x.narrow(0, lead.min(rows), b * t).unwrap().reshape(&[b, t, h, d]).unwrap().permute(&[0, 2, 1, 3]).unwrap()
        };
        let q_c = heads(&on(&q_vals, &[b * t + lead, h * d], &Device::Cpu), b * t + lead);
        let q_g = heads(&on(&q_vals, &[b * t + lead, h * d], &dev), b * t + lead);
        let k_c = on(&k_vals, &[b, t, h, d], &Device::Cpu).permute(&[0, 2, 3, 1]).unwrap();
        let k_g = on(&k_vals, &[b, t, h, d], &dev).permute(&[0, 2, 3, 1]).unwrap();
        let tol = (d as f64 + 2.0) * d as f64 / (1u64 << 24) as f64 + 1e-30;
        // scores [B, H, T, T] = q k^T, both operands with permuted batch strides.
        rel_close("q k^T", &q_g.matmul(&k_g).unwrap(), &q_c.matmul(&k_c).unwrap(), 0.0, tol)?;
        // The same against a key shared by all heads (broadcast batch stride 0).
        let kv = |device: &Device| on(&kv_vals, &[b, 1, t, d], device).broadcast_as(&[b, h, t, d]).unwrap().transpose(2, 3).unwrap();
        rel_close("q kv^T (broadcast over heads)", &q_g.matmul(&kv(&dev)).unwrap(), &q_c.matmul(&kv(&Device::Cpu)).unwrap(), 0.0, tol)?;
        // Three batch dims that do not merge: [2, B, H, T, D] from a permuted [B, 2, T, H, D].
        let x_vals = values(b * 2 * t * h * d, seed ^ 7, 1.0);
        let x = |device: &Device| on(&x_vals, &[b, 2, t, h, d], device).permute(&[1, 0, 3, 2, 4]).unwrap();
        let y = |device: &Device| {
            on(&k_vals, &[b, t, h, d], device).permute(&[0, 2, 3, 1]).unwrap().unsqueeze(0).unwrap().broadcast_as(&[2, b, h, d, t]).unwrap()
        };
        rel_close("three batch dims", &x(&dev).matmul(&y(&dev)).unwrap(), &x(&Device::Cpu).matmul(&y(&Device::Cpu)).unwrap(), 0.0, tol)
    })
    .unwrap();
}

#[test]
fn ops_without_a_cuda_path_say_so() {
    let Some(dev) = gpu() else { return };
    let x = Tensor::from_vec(vec![1f32, -2., 3., 4., 5., -6.], &[2, 3], &dev).unwrap();
    let mask = Tensor::from_vec(vec![1u8, 0, 1, 0, 1, 0], &[2, 3], &dev).unwrap();
    let w = Tensor::from_vec(vec![1f32; 3], &[3], &dev).unwrap();
    let results: Vec<(&str, brainstacks_tensor::Result<Tensor>)> = vec![
        ("layer_norm", x.layer_norm(&w, &w, 1e-5)),
        ("clamp", x.clamp(-1.0, 1.0)),
        ("powf", x.powf(2.0)),
        ("eq", x.eq(&x)),
        ("where_cond", mask.where_cond(&x, &x)),
        ("gather", x.gather(1usize, &Tensor::from_vec(vec![0i64, 1, 2, 0, 1, 2], &[2, 3], &dev).unwrap())),
        ("to_dtype f64", x.to_dtype(DType::F64)),
        ("sum i64", Tensor::from_vec(vec![1i64, 2], &[2], &dev).unwrap().sum::<usize>(&[], false)),
        ("softmax f64", Tensor::zeros(&[2], DType::F64, &dev).unwrap().softmax(0usize)),
    ];
    for (name, r) in results {
        match r {
            Err(Error::Device { device, msg, .. }) => {
                assert_eq!(device, dev, "{name}");
                assert!(msg.contains("not implemented on CUDA yet"), "{name}: {msg}");
            }
            other => panic!("{name}: expected a not-implemented-on-CUDA error, got {other:?}"),
        }
    }
    // Mixed devices are an error naming the device, not a transfer.
    let cpu = Tensor::from_vec(vec![1f32; 6], &[2, 3], &Device::Cpu).unwrap();
    assert!(matches!(x.add(&cpu), Err(Error::Device { .. })));
    assert!(matches!(cpu.add(&x), Err(Error::Device { .. })));
    // Integer dtypes stay dtype errors, as on the CPU.
    let i = Tensor::from_vec(vec![1i64, 2], &[2], &dev).unwrap();
    assert!(matches!(i.exp(), Err(Error::UnsupportedDType { .. })));
}
