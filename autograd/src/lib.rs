//! brainstacks-autograd: a tape autograd over `brainstacks_tensor::Tensor`.
//!
//! - Ops on `Var`s are recorded in execution order on a shared `Tape`; `Tape::backward(loss)`
//!   walks it in reverse and returns `Gradients`, owned by the caller.
//! - Only ops with an input that requires a gradient are recorded, so paths that reach no
//!   trainable leaf cost nothing; each intermediate gradient is freed once consumed.
//! - Hooks read or replace any variable's gradient; `no_grad` and `detach` stop recording;
//!   `CustomOp` adds an op with a user backward; `print!("{tape}")` lists the ops;
//!   `gradcheck` compares every rule with central differences in f64.
//!
//! ```
//! use brainstacks_autograd::{Tape, Var};
//! use brainstacks_tensor::{Device, Tensor};
//! # fn main() -> brainstacks_autograd::Result<()> {
//! let tape = Tape::new();
//! let w = tape.param(Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3, 1], &Device::Cpu)?);
//! let x = Var::constant(Tensor::from_vec(vec![1.0f32, 1.0, 1.0, 2.0, 0.0, 1.0], &[2, 3], &Device::Cpu)?);
//! let loss = x.matmul(&w)?.square()?.mean_all()?; // ((2)^2 + (5)^2) / 2 = 14.5
//! let grads = tape.backward(&loss)?;
//! // d loss / d w = x^T (x w) = [[1*2 + 2*5], [1*2 + 0*5], [1*2 + 1*5]]
//! assert_eq!(grads.get(&w).unwrap().to_vec::<f32>()?, vec![12.0, 2.0, 7.0]);
//! print!("{tape}");
//! # Ok(()) }
//! ```

mod custom_op;
mod error;
pub mod gradcheck;
mod no_grad;
pub mod ops;
mod tape;
mod var;

pub use custom_op::{CustomOp, apply_custom};
pub use error::{Error, Result};
pub use gradcheck::{GradcheckOptions, gradcheck};
pub use no_grad::{NoGradGuard, is_active as no_grad_active, no_grad};
pub use tape::{BackwardFn, Gradients, Hook, Tape};
pub use var::{Var, VarId, record};
