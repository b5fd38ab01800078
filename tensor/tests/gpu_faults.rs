//! Device memory running out: a real out-of-memory (an allocation larger than the device) and an
//! injected one (`GpuContext::inject_out_of_memory_after`) both give a clear error naming the
//! device, the request and the free memory; nothing already on the device or on disk is harmed,
//! and the next allocation works.
//!
//! Without a usable GPU each test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

use brainstacks_tensor::io::{SafeTensors, TensorToWrite, write_safetensors};
use brainstacks_tensor::{Device, Tensor};

mod common;

#[test]
fn a_real_out_of_memory_is_a_clear_error_and_the_device_stays_usable() {
    let Some(device) = common::gpu("gpu_faults") else { return };
    let gpu = brainstacks_tensor::cuda::context("gpu_faults", 0).unwrap();
    let (_, total) = gpu.cuda_context().mem_get_info().unwrap();
    let kept = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3], &Device::Cpu).unwrap().to_device(&device).unwrap();
    // Twice the device's memory cannot fit.
    let err = gpu.alloc_zeros::<u8>(2 * total).expect_err("larger than the device").to_string();
    assert!(err.contains("out of memory") && err.contains("free") && !err.contains("injected"), "{err}");
    assert!(err.contains("Lower micro_batch"), "{err}");
    assert_eq!(kept.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    let after = Tensor::from_vec(vec![4.0f32; 1 << 20], &[1 << 20], &Device::Cpu).unwrap().to_device(&device).unwrap();
    assert_eq!(after.sum_all().unwrap().to_vec::<f32>().unwrap(), vec![4.0 * (1 << 20) as f32]);
}

#[test]
fn an_injected_out_of_memory_fails_one_op_and_leaves_the_saved_file_whole() {
    let Some(device) = common::gpu("gpu_faults") else { return };
    let dir = std::env::temp_dir().join(format!("bs-gpu-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weights.safetensors");
    let x = Tensor::from_vec((0..64).map(|i| i as f32).collect(), &[8, 8], &Device::Cpu).unwrap().to_device(&device).unwrap();
    write_safetensors(&path, &[TensorToWrite::from_tensor("w", &x.to_device(&Device::Cpu).unwrap()).unwrap()], &Default::default())
        .unwrap();
    let saved = std::fs::read(&path).unwrap();

    // The next allocation fails: the product's output buffer. The step that would have saved a
    // new version stops at the error, so the file on disk is the previous one.
    let gpu = brainstacks_tensor::cuda::context("gpu_faults", 0).unwrap();
    gpu.inject_out_of_memory_after(Some(0));
    let err = x
        .matmul(&x)
        .and_then(|y| write_safetensors(&path, &[TensorToWrite::from_tensor("w", &y.to_device(&Device::Cpu)?)?], &Default::default()));
    let msg = err.expect_err("the injected out-of-memory").to_string();
    assert!(msg.contains("out of memory") && msg.contains("injected") && msg.contains("cuda"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), saved);
    assert_eq!(
        SafeTensors::open(&path).unwrap().tensor("w").unwrap().to_vec::<f32>().unwrap(),
        (0..64).map(|i| i as f32).collect::<Vec<_>>()
    );

    // One-shot: the same product now runs, and the input was never touched.
    let y = x.matmul(&x).unwrap().to_device(&Device::Cpu).unwrap();
    let want = x.to_device(&Device::Cpu).unwrap().matmul(&x.to_device(&Device::Cpu).unwrap()).unwrap();
    let (got, want) = (y.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-3 * b.abs().max(1.0)), "{got:?} vs {want:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
