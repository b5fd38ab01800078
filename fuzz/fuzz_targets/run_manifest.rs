#![no_main]
//! See `brainstacks_train::fuzz_support::run_manifest` for what this target checks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| brainstacks_train::fuzz_support::run_manifest(data));
