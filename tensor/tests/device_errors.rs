//! A build without the `cuda` feature: every way onto a CUDA device fails with an error saying
//! the build has no CUDA (never a panic, never a silent CPU tensor).
#![cfg(not(feature = "cuda"))]

use brainstacks_tensor::{DType, Device, Error, Rng, Tensor};

fn assert_no_cuda(r: brainstacks_tensor::Result<Tensor>, op: &str) {
    match r {
        Err(Error::Device { device: Device::Cuda(0), msg, .. }) => {
            assert!(msg.contains("built without CUDA"), "{op}: {msg}")
        }
        other => panic!("{op}: expected the built-without-CUDA error, got {other:?}"),
    }
}

#[test]
fn cuda_device_errors_without_the_feature() {
    let cuda = Device::Cuda(0);
    assert!(Device::cuda_if_available(0).is_none());
    assert!(cuda.check_available("test").is_err());
    assert_no_cuda(Tensor::zeros(&[2], DType::F32, &cuda), "zeros");
    assert_no_cuda(Tensor::full(1.0, &[2], DType::F32, &cuda), "full");
    assert_no_cuda(Tensor::from_vec(vec![1f32, 2.], &[2], &cuda), "from_vec");
    assert_no_cuda(Tensor::arange(0.0, 3.0, 1.0, DType::F32, &cuda), "arange");
    assert_no_cuda(Tensor::randn(&mut Rng::new(1), 0.0, 1.0, &[2], DType::F32, &cuda), "randn");
    let cpu = Tensor::from_vec(vec![1f32, 2.], &[2], &Device::Cpu).unwrap();
    assert_no_cuda(cpu.to_device(&cuda), "to_device");
    assert!(cpu.to_device(&Device::Cpu).unwrap().same_storage(&cpu));
}
