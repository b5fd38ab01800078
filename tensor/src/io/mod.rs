//! Files: the atomic-write helper every writer of the project goes through, and safetensors
//! (single files and Hugging Face sharded checkpoints), read through a memory map.

pub mod atomic;
pub mod checkpoint;
pub mod safetensors;

pub use atomic::{InjectedWriteFailure, WriteFault, inject_write_failure, remove_stale_temporaries, write_atomic, write_atomic_bytes};
pub use checkpoint::Checkpoint;
pub use safetensors::{SafeTensors, StDtype, TensorEntry, TensorToWrite, write_safetensors};
