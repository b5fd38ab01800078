//! The frozen NF4 linear on the tape: input gradient by gradcheck (f64), no weight gradient.

use std::sync::Arc;

use brainstacks_autograd::{GradcheckOptions, Tape, gradcheck};
use brainstacks_tensor::nf4::Nf4Weight;
use brainstacks_tensor::{DType, Device, Rng, Tensor};

#[test]
fn input_gradient_passes_gradcheck() {
    for &(out_f, in_f, shape) in &[(5usize, 64usize, &[3usize, 64][..]), (33, 128, &[2, 2, 128][..])] {
        let w = Tensor::randn(&mut Rng::new(1), 0.0, 1.0, &[out_f, in_f], DType::F32, &Device::Cpu).unwrap();
        let w = Arc::new(Nf4Weight::quantize(&w, 64, true).unwrap());
        let x = Tensor::randn(&mut Rng::new(2), 0.0, 1.0, shape, DType::F64, &Device::Cpu).unwrap();
        gradcheck(|v| v[0].nf4_linear(&w)?.tanh(), &[x], GradcheckOptions::default()).unwrap();
    }
}

#[test]
fn only_the_input_gets_a_gradient() {
    let w = Tensor::randn(&mut Rng::new(1), 0.0, 1.0, &[6, 64], DType::F32, &Device::Cpu).unwrap();
    let q = Arc::new(Nf4Weight::quantize(&w, 64, false).unwrap());
    let tape = Tape::new();
    let x = tape.param(Tensor::randn(&mut Rng::new(3), 0.0, 1.0, &[4, 64], DType::F32, &Device::Cpu).unwrap());
    let loss = x.nf4_linear(&q).unwrap().sum_all().unwrap();
    let grads = tape.backward(&loss).unwrap();
    // d(sum(x W^T))/dx = ones · W: every row equals the column sums of the dequantized W.
    let want = Tensor::ones(&[4, 6], DType::F32, &Device::Cpu).unwrap().matmul(&q.dequantize().unwrap()).unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
}
