//! brainstacks-tensor: the `Tensor` type, its dtypes and strided views, CPU storage and the ops a
//! Llama with MoE-LoRA needs.
//!
//! ```
//! use brainstacks_tensor::{Device, DType, Tensor};
//! # fn main() -> brainstacks_tensor::Result<()> {
//! let a = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], &[2, 3], &Device::Cpu)?;
//! let at = a.t()?; // a view: no copy
//! assert!(at.same_storage(&a));
//! let g = a.matmul(&at)?; // [2, 2]
//! assert_eq!(g.to_vec::<f32>()?, vec![14., 32., 32., 77.]);
//! # Ok(()) }
//! ```

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod io;
#[doc(hidden)]
pub mod fuzz_support;
mod device;
mod dtype;
mod error;
pub mod layout;
pub mod nf4;
pub mod ops;
mod storage;
mod tensor;

pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use layout::Layout;
pub use ops::matmul::MatmulPrecision;
pub use storage::{CpuStorage, CudaStorage, Storage};
pub use tensor::{Dim, Rng, Tensor};
