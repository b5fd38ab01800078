//! brainstacks-kernels: the leaf crate. One folder per op holds the math contract (`mod.rs`) and
//! the CPU oracle (`cpu.rs`): plain loops, f64 accumulation where it matters, never clever. Fast
//! CPU paths live in `brainstacks-tensor` and are tested against these oracles; hand-written PTX
//! kernels and their launchers join each folder as the CUDA backend lands.

pub mod philox;
pub mod gemm;
pub mod rms_norm;
pub mod layer_norm;
pub mod rope;
pub mod cross_entropy;
pub mod topk;
pub mod embedding;
pub mod softmax;
pub mod reduce;
pub mod nf4;
pub mod moe_lora;
pub mod registry;
pub mod cast;
#[cfg(feature = "cuda")]
pub mod launch;
pub mod elementwise;
pub mod adamw;
#[cfg(feature = "cuda")]
pub mod yardstick;
pub mod rsvd;
