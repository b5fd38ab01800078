#![no_main]
//! See `brainstacks_model::fuzz_support::llama_config` for what this target checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| brainstacks_model::fuzz_support::llama_config(data));
