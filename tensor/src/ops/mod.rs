//! Tensor ops, forward only (gradients live in `brainstacks-autograd`). Each file adds methods
//! to `Tensor`; all of them validate shapes and dtypes and return `Error`, never panic, on input a
//! user can get wrong.

pub mod attention;
pub mod attention_train;
pub mod binary;
pub mod compare;
pub mod concat;
pub mod index;
pub mod loss;
pub mod matmul;
pub mod moe_lora;
pub mod norm;
pub mod optim;
pub mod reduce;
pub mod rope;
pub mod select;
pub mod softmax;
pub mod topk;
pub mod unary;
