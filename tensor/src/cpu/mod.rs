//! Fast CPU paths: the packed GEMM and the threaded element loops. Each is tested against a
//! plain sequential form (the oracles in `brainstacks-kernels` where one exists).

pub mod gemm;
pub mod heap;
pub(crate) mod moe_lora;
pub(crate) mod nf4;
pub mod parallel;
