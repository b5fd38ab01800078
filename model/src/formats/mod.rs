//! Checkpoint formats other tools write and read: the bitsandbytes 4-bit serialization that
//! Hugging Face uses for pre-quantized checkpoints.

pub mod bnb4;
pub mod quantize;
mod pyjson;
