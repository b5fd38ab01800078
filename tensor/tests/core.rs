//! The tensor core: creation, views without copies, casts, seeded generation and error messages.

use brainstacks_tensor::{DType, Device, Rng, Tensor};

type R = brainstacks_tensor::Result<()>;
const CPU: Device = Device::Cpu;

fn iota(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|i| i as f32).collect(), shape, &CPU).unwrap()
}

#[test]
fn views_share_storage_and_read_correctly() -> R {
    let x = iota(&[2, 3, 4]);
    let t = x.transpose(0, 2)?; // [4, 3, 2]
    assert!(t.same_storage(&x) && !t.is_contiguous());
    assert_eq!(t.shape(), &[4, 3, 2]);
    // t[i, j, k] = x[k, j, i] = 12k + 4j + i
    let v = t.to_vec::<f32>()?;
    for i in 0..4 {
        for j in 0..3 {
            for k in 0..2 {
                assert_eq!(v[i * 6 + j * 2 + k], (12 * k + 4 * j + i) as f32);
            }
        }
    }
    let p = x.permute(&[1, 2, 0])?;
    assert!(p.same_storage(&x));
    assert_eq!(p.shape(), &[3, 4, 2]);
    assert_eq!(p.to_vec::<f32>()?[..4], [0.0, 12.0, 1.0, 13.0]);

    let n = x.narrow(-1, 1, 2)?;
    assert!(n.same_storage(&x));
    assert_eq!(n.to_vec::<f32>()?[..4], [1.0, 2.0, 5.0, 6.0]);

    let b = iota(&[3, 1]).broadcast_as(&[2, 3, 4])?;
    assert!(b.strides().contains(&0));
    assert_eq!(b.to_vec::<f32>()?[..8], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);

    let u = x.unsqueeze(1)?;
    assert_eq!(u.shape(), &[2, 1, 3, 4]);
    assert_eq!(u.squeeze(1)?.shape(), &[2, 3, 4]);
    assert_eq!(x.unsqueeze(-1)?.shape(), &[2, 3, 4, 1]);
    Ok(())
}

#[test]
fn reshape_is_a_view_when_contiguous_and_a_copy_otherwise() -> R {
    let x = iota(&[2, 6]);
    let r = x.reshape(&[3, 4])?;
    assert!(r.same_storage(&x));
    let t = x.t()?; // [6, 2], strided
    let rt = t.reshape(&[12])?;
    assert!(!rt.same_storage(&x));
    assert_eq!(rt.to_vec::<f32>()?[..4], [0.0, 6.0, 1.0, 7.0]);
    let c = t.contiguous()?;
    assert!(c.is_contiguous());
    assert_eq!(c.to_vec::<f32>()?, t.to_vec::<f32>()?);
    Ok(())
}

#[test]
fn creation_and_casts() -> R {
    assert_eq!(Tensor::zeros(&[2, 2], DType::I64, &CPU)?.to_vec::<i64>()?, vec![0; 4]);
    assert_eq!(Tensor::ones(&[3], DType::U8, &CPU)?.to_vec::<u8>()?, vec![1; 3]);
    assert_eq!(Tensor::full(2.5, &[2], DType::F16, &CPU)?.to_vec_f64()?, vec![2.5, 2.5]);
    assert_eq!(Tensor::arange(0.0, 5.0, 2.0, DType::U32, &CPU)?.to_vec::<u32>()?, vec![0, 2, 4]);
    assert_eq!(Tensor::arange(3.0, 0.0, -1.0, DType::F64, &CPU)?.to_vec::<f64>()?, vec![3.0, 2.0, 1.0]);
    assert!(Tensor::arange(0.0, 1.0, 0.0, DType::F32, &CPU).is_err());

    let x = Tensor::from_vec(vec![1.0f32, -2.5, 3.0e5, 1.0 / 3.0], &[4], &CPU)?;
    for dt in DType::ALL {
        let y = x.to_dtype(dt)?;
        assert_eq!(y.dtype(), dt);
        assert_eq!(y.shape(), &[4]);
    }
    // bf16 keeps 8 significant bits: 1/3 rounds to 0.333984375.
    assert_eq!(x.to_dtype(DType::BF16)?.to_vec_f64()?[3], 0.333984375);
    // float -> int truncates toward zero and saturates.
    assert_eq!(x.to_dtype(DType::U8)?.to_vec::<u8>()?, vec![1, 0, 255, 0]);
    assert_eq!(x.to_dtype(DType::I64)?.to_vec::<i64>()?, vec![1, -2, 300000, 0]);
    // A strided view casts in view order.
    let m = iota(&[2, 3]).t()?.to_dtype(DType::F64)?;
    assert_eq!(m.to_vec::<f64>()?, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    Ok(())
}

#[test]
fn seeded_generation_is_reproducible_and_continues_the_stream() -> R {
    let mut a = Rng::new(9);
    let x1 = Tensor::randn(&mut a, 0.0, 1.0, &[5, 7], DType::F32, &CPU)?;
    let x2 = Tensor::randn(&mut a, 0.0, 1.0, &[3], DType::F32, &CPU)?;
    assert_eq!(a.offset, 38);
    let mut b = Rng::new(9);
    let whole = Tensor::randn(&mut b, 0.0, 1.0, &[38], DType::F32, &CPU)?.to_vec::<f32>()?;
    assert_eq!(x1.to_vec::<f32>()?, whole[..35]);
    assert_eq!(x2.to_vec::<f32>()?, whole[35..]);
    // Large draws take the threaded path and must give the same stream as the oracle.
    let big = Tensor::rand_uniform(&mut Rng::new(3), -2.0, 2.0, &[100_003], DType::F32, &CPU)?.to_vec::<f32>()?;
    let mut oracle = vec![0f32; 100_003];
    brainstacks_kernels::philox::cpu::fill_uniform_f32(3, 0, -2.0, 2.0, &mut oracle);
    assert_eq!(big, oracle);
    assert!(Tensor::randn(&mut Rng::new(1), 0.0, 1.0, &[2], DType::I64, &CPU).is_err());
    Ok(())
}

#[test]
fn user_mistakes_are_errors_that_name_the_op_and_shapes() {
    let a = iota(&[2, 3]);
    let b = iota(&[4, 5]);
    let msg = a.matmul(&b).unwrap_err().to_string();
    assert!(msg.contains("matmul") && msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
    let msg = a.reshape(&[4, 2]).unwrap_err().to_string();
    assert!(msg.contains("reshape") && msg.contains("[2, 3]") && msg.contains("[4, 2]"), "{msg}");
    let msg = a.transpose(0, 5).unwrap_err().to_string();
    assert!(msg.contains("transpose") && msg.contains("dim 5"), "{msg}");
    let msg = a.narrow(1, 2, 5).unwrap_err().to_string();
    assert!(msg.contains("narrow"), "{msg}");
    let msg = a.broadcast_as(&[3, 3]).unwrap_err().to_string();
    assert!(msg.contains("[2, 3]") && msg.contains("[3, 3]"), "{msg}");
    assert!(a.permute(&[0, 0]).is_err());
    assert!(a.squeeze(0).is_err());
    assert!(Tensor::from_vec(vec![1f32; 5], &[2, 3], &CPU).is_err());
    let msg = a.to_vec::<f64>().unwrap_err().to_string();
    assert!(msg.contains("f32") && msg.contains("f64"), "{msg}");
    let msg = Tensor::zeros(&[2], DType::F32, &Device::Cuda(0)).unwrap_err().to_string();
    assert!(msg.contains("CUDA"), "{msg}");
}

#[test]
fn matmul_with_transposed_and_broadcast_operands() -> R {
    // [2, 3] x [3, 2] through a transposed view: no copy of the operand is needed.
    let a = iota(&[2, 3]);
    let g = a.matmul(&a.t()?)?;
    assert_eq!(g.to_vec::<f32>()?, vec![5.0, 14.0, 14.0, 50.0]);
    // A batch [2, 2, 3] times a shared [3, 1]: the batch dim broadcasts.
    let batch = iota(&[2, 2, 3]);
    let w = Tensor::from_vec(vec![1f32, 0.0, -1.0], &[3, 1], &CPU)?;
    assert_eq!(batch.matmul(&w)?.to_vec::<f32>()?, vec![-2.0; 4]);
    // f64 and bf16 paths agree with f32 on exactly representable values.
    let a64 = a.to_dtype(DType::F64)?;
    assert_eq!(a64.matmul(&a64.t()?)?.to_vec::<f64>()?, vec![5.0, 14.0, 14.0, 50.0]);
    let ab = a.to_dtype(DType::BF16)?;
    assert_eq!(ab.matmul(&ab.t()?)?.to_vec_f64()?, vec![5.0, 14.0, 14.0, 50.0]);
    // Empty inner dim gives zeros; empty outer dims give an empty result.
    let e = Tensor::zeros(&[2, 0], DType::F32, &CPU)?;
    assert_eq!(e.matmul(&Tensor::zeros(&[0, 3], DType::F32, &CPU)?)?.to_vec::<f32>()?, vec![0.0; 6]);
    assert!(a.matmul(&a.to_dtype(DType::F64)?).is_err());
    Ok(())
}

/// Shapes whose element count (or byte size) overflows are errors, never a panic or an abort.
#[test]
fn overflowing_shapes_are_errors_not_panics() -> R {
    let huge = [usize::MAX, 2];
    assert!(Tensor::zeros(&huge, DType::F32, &CPU).is_err());
    assert!(Tensor::full(1.0, &huge, DType::F32, &CPU).is_err());
    assert!(Tensor::ones(&[usize::MAX / 2], DType::F32, &CPU).is_err()); // count fits, bytes do not
    assert!(Tensor::from_vec(Vec::<f32>::new(), &[usize::MAX, 2, 0], &CPU).is_err());
    assert!(Tensor::from_vec(vec![1f32, 2.0], &huge, &CPU).is_err());
    assert!(Tensor::arange(0.0, 1e300, 1.0, DType::F32, &CPU).is_err());
    assert!(Tensor::randn(&mut Rng::new(0), 0.0, 1.0, &huge, DType::F32, &CPU).is_err());
    assert!(Tensor::rand_uniform(&mut Rng::new(0), 0.0, 1.0, &huge, DType::F64, &CPU).is_err());
    let x = iota(&[2, 3]);
    assert!(x.reshape(&[usize::MAX, 2, 3]).is_err());
    assert!(x.reshape(&[usize::MAX, 0]).is_err());
    assert!(x.broadcast_as(&[usize::MAX, 2, 3]).is_err());
    // Each operand is a valid (stride-0) view, but their broadcast shape overflows.
    let s = Tensor::scalar(1f32);
    let a = s.broadcast_as(&[1 << 40, 1])?;
    let b = s.broadcast_as(&[1, 1 << 40])?;
    assert!(a.add(&b).is_err());
    assert!(a.lt(&b).is_err());
    let ai = Tensor::scalar(1i64).broadcast_as(&[1 << 40, 1])?;
    let bi = Tensor::scalar(1i64).broadcast_as(&[1, 1 << 40])?;
    assert!(ai.div(&bi).is_err());
    // 2^63 output elements: the count fits a usize, the f32 buffer does not.
    let ml = Tensor::scalar(1f32).broadcast_as(&[1 << 31, 1, 2, 2])?;
    let mr = Tensor::scalar(1f32).broadcast_as(&[1, 1 << 30, 2, 2])?;
    assert!(ml.matmul(&mr).is_err());
    // Empty shapes stay fine.
    assert_eq!(Tensor::zeros(&[0, 5], DType::F32, &CPU)?.elem_count(), 0);
    Ok(())
}
