//! Differentiable ops on `Var`. Each method computes the forward with the tensor op of the
//! same name and records a backward rule written with tensor ops. Every rule is covered by a
//! `gradcheck` test in this module's tests.

mod binary;
mod index;
mod matmul;
mod moe_lora;
mod nf4;
mod nn;
mod reduce;
mod select;
mod unary;
mod view;

#[cfg(test)]
mod tests;
