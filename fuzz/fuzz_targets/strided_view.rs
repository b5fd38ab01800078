#![no_main]
//! Strided-view index arithmetic: arbitrary shapes and chains of view ops must give an error or
//! a view that reads back consistently, never a panic or an out-of-bounds read.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| brainstacks_tensor::fuzz_support::strided_view(data));
