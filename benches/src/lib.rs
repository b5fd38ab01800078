//! Benchmark helpers shared by the criterion suites, and the GPU benchmark harness.

pub mod harness;
