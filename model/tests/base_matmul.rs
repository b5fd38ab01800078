//! `LlamaModel::base_matmul`: with bf16 products the frozen base (dense or NF4) gives logits close
//! to the f32 ones but not equal to them, and an active stack still gets its gradients.

use brainstacks_autograd::Tape;
use brainstacks_model::llama::{LlamaConfig, LlamaModel, Nf4AtLoad, Proj, RandomInit};
use brainstacks_model::moe_lora::MoeLoraConfig;
use brainstacks_model::stacks::StackSet;
use brainstacks_tensor::{DType, Device, MatmulPrecision, Tensor};

fn model(nf4: bool) -> LlamaModel {
    let cfg = LlamaConfig::small(64, 96, 2, 4, 2, 50);
    let nf4 = nf4.then_some(Nf4AtLoad { blocksize: 64, double_quant: false });
    LlamaModel::random(cfg, &RandomInit { seed: 5, std: 0.1, dtype: DType::F32, nf4 }).unwrap()
}

fn ids() -> Tensor {
    let v: Vec<i64> = (0..24).map(|i| (i * 11 + 3) % 50).collect();
    Tensor::from_vec(v, &[2, 12], &Device::Cpu).unwrap()
}

fn logits(m: &LlamaModel) -> Vec<f32> {
    m.forward(&ids(), None).unwrap().tensor().to_vec::<f32>().unwrap()
}

#[test]
fn bf16_base_products_stay_close_to_f32_for_dense_and_nf4_bases() {
    for nf4 in [false, true] {
        let mut m = model(nf4);
        let exact = logits(&m);
        m.base_matmul = MatmulPrecision::Bf16;
        let bf16 = logits(&m);
        let scale = exact.iter().fold(0f32, |a, x| a.max(x.abs()));
        let diff = exact.iter().zip(&bf16).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        // bf16 keeps 8 significant bits: relative differences of a few 1e-3 through two layers.
        assert!(diff < 3e-2 * scale, "nf4={nf4}: max |diff| {diff} against max |logit| {scale}");
        assert!(diff > 0.0, "nf4={nf4}: bf16 products gave the f32 logits bit for bit");
        assert_eq!(logits(&m), bf16, "nf4={nf4}: not deterministic");
    }
}

#[test]
fn an_active_stack_trains_through_a_bf16_base() {
    let mut m = model(true);
    m.base_matmul = MatmulPrecision::Bf16;
    let tape = Tape::new();
    let stacks = StackSet::attach(&mut m, &Proj::ALL).unwrap();
    stacks.add_active(&tape, &MoeLoraConfig { experts: 4, top_k: 2, rank: 4, alpha: 4.0 }, 1).unwrap();
    let loss = m.forward(&ids(), None).unwrap().sum_all().unwrap();
    let grads = tape.backward(&loss).unwrap();
    let (mut b_params, mut nonzero) = (0, 0);
    stacks.update_active(|params| {
        // The parameters of each projection's stack come in fours; B is the second. B starts at
        // zero, but its gradient (the input through A, times the output gradient) does not.
        for b in params.iter().skip(1).step_by(4) {
            let g = grads.get(b).expect("B gets a gradient");
            b_params += 1;
            nonzero += usize::from(g.to_vec::<f32>().unwrap().iter().any(|&x| x != 0.0));
        }
    });
    assert_eq!((b_params, nonzero), (14, 14), "2 layers x 7 projections");
}
