//! The null-space projector: symmetric, idempotent, orthogonal to V, differentiable, union and I/O.

use brainstacks_autograd::{Tape, Var};
use brainstacks_kernels::philox::cpu::fill_normal_f64;
use brainstacks_model::null_space::{DEFAULT_DUP_TOL, NullSpace, V_KEY};
use brainstacks_tensor::{DType, Device, Tensor};

type R = Result<(), Box<dyn std::error::Error>>;

fn gaussian(n: usize, seed: u64) -> Vec<f64> {
    let mut x = vec![0.0; n];
    fill_normal_f64(seed, 0, 0.0, 1.0, &mut x);
    x
}

/// Samples whose rows live (up to 1e-3 noise) in a random k-dim subspace of R^d.
fn samples(n: usize, d: usize, k: usize, seed: u64) -> Vec<f64> {
    let basis = gaussian(k * d, seed);
    let coef = gaussian(n * k, seed + 1);
    let noise = gaussian(n * d, seed + 2);
    (0..n * d)
        .map(|idx| {
            let (r, c) = (idx / d, idx % d);
            (0..k).map(|j| coef[r * k + j] * basis[j * d + c]).sum::<f64>() + 1e-3 * noise[idx]
        })
        .collect()
}

fn apply_f64(p: &NullSpace, x: &[f64], shape: &[usize]) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let t = Tensor::from_vec(x.to_vec(), shape, &Device::Cpu)?;
    Ok(p.apply(&Var::constant(t))?.tensor().to_vec_f64()?)
}

#[test]
fn projector_is_symmetric_idempotent_and_orthogonal_to_v() -> R {
    let (n, d, k) = (40, 24, 5); // n > 2k: the randomized path
    let p = NullSpace::from_samples(&samples(n, d, k, 3), n, d, k, 9, DType::F64)?;
    assert_eq!((p.dim(), p.rank()), (d, k));
    // The matrix of the map, column by column: apply to the identity rows.
    let eye: Vec<f64> = (0..d * d).map(|i| f64::from(u8::from(i % (d + 1) == 0))).collect();
    let m = apply_f64(&p, &eye, &[d, d])?;
    let m2 = apply_f64(&p, &m, &[d, d])?;
    for i in 0..d {
        for j in 0..d {
            assert!((m[i * d + j] - m[j * d + i]).abs() < 1e-14, "symmetry {i} {j}");
            assert!((m2[i * d + j] - m[i * d + j]).abs() < 1e-14, "idempotence {i} {j}");
        }
    }
    // A batched [2, 3, d] delta: output leakage below 1e-12, input leakage large (rows in span V).
    let x = samples(6, d, k, 3);
    let out = apply_f64(&p, &x, &[2, 3, d])?;
    let out_t = Tensor::from_vec(out, &[2, 3, d], &Device::Cpu)?;
    let leak = p.leakage(&out_t)?;
    assert!(leak < 1e-12, "leakage {leak:e}");
    let before = p.leakage(&Tensor::from_vec(x, &[2, 3, d], &Device::Cpu)?)?;
    assert!(before > 0.99, "input leakage {before}");
    Ok(())
}

#[test]
fn gradient_is_projected() -> R {
    let (d, k) = (12, 3);
    let p = NullSpace::from_samples(&samples(4, d, k, 5), 4, d, k, 1, DType::F64)?; // exact path
    let tape = Tape::new();
    let x = tape.param(Tensor::from_vec(gaussian(2 * d, 7), &[2, d], &Device::Cpu)?);
    let w = gaussian(2 * d, 8);
    let wt = Var::constant(Tensor::from_vec(w.clone(), &[2, d], &Device::Cpu)?);
    let loss = p.apply(&x)?.mul(&wt)?.sum_all()?;
    let g = tape.backward(&loss)?;
    let gx = g.get(&x).expect("grad").to_vec_f64()?;
    // d/dx sum(w * (x - x V Vᵀ)) = w (I - V Vᵀ), which is apply(w).
    let expect = apply_f64(&p, &w, &[2, d])?;
    for (a, b) in gx.iter().zip(&expect) {
        assert!((a - b).abs() < 1e-14);
    }
    Ok(())
}

#[test]
fn union_drops_duplicates_and_round_trips_through_safetensors() -> R {
    let (n, d, k) = (30, 20, 4);
    let a = NullSpace::from_samples(&samples(n, d, k, 11), n, d, k, 2, DType::F64)?;
    let b = NullSpace::from_samples(&samples(n, d, k, 21), n, d, k, 2, DType::F64)?;
    // a twice plus b: a's copy is dropped entirely, b's 4 directions are new.
    let u = NullSpace::union(&[&a, &a, &b], DEFAULT_DUP_TOL)?;
    assert_eq!(u.rank(), 2 * k);
    let v = u.basis().to_vec_f64()?;
    let kk = u.rank();
    for i in 0..kk {
        for j in 0..kk {
            let dot: f64 = (0..d).map(|r| v[r * kk + i] * v[r * kk + j]).sum();
            assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-13);
        }
    }
    // Everything a and b remove, the union removes.
    for part in [&a, &b] {
        let pv = part.basis().clone().t()?.contiguous()?; // k x d: rows are a's directions
        assert!(u.leakage(&pv)? > 1.0 - 1e-12);
        let after = u.apply(&Var::constant(pv))?.tensor().clone();
        assert!(after.to_vec_f64()?.iter().all(|x| x.abs() < 1e-12));
    }
    // Save / load, and an f32 basis works on f32 deltas.
    let dir = std::env::temp_dir().join(format!("bs-null-space-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("ns.safetensors");
    u.save(&path)?;
    let back = NullSpace::load(&path)?;
    assert_eq!(back.basis().to_vec_f64()?, v);
    assert!(brainstacks_tensor::io::SafeTensors::open(&path)?.names().any(|s| s == V_KEY));
    let f = NullSpace::from_basis(u.basis().to_dtype(DType::F32)?)?;
    let x32 = Tensor::from_vec(gaussian(3 * d, 4).into_iter().map(|x| x as f32).collect(), &[3, d], &Device::Cpu)?;
    let y32 = f.apply(&Var::constant(x32))?.tensor().clone();
    assert_eq!(y32.dtype(), DType::F32);
    assert!(f.leakage(&y32)? < 1e-6);
    std::fs::remove_dir_all(&dir)?;
    // Wrong shapes are errors.
    assert!(u.apply(&Var::constant(Tensor::from_vec(vec![0.0f64; 3], &[3], &Device::Cpu)?)).is_err());
    assert!(NullSpace::union(&[], DEFAULT_DUP_TOL).is_err());
    Ok(())
}
