#![no_main]
//! See `brainstacks_tensor::fuzz_support::safetensors_bytes` for what this target checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| brainstacks_tensor::fuzz_support::safetensors_bytes(data));
