//! What the tensor crate's GPU test files share.

use brainstacks_tensor::Device;
use proptest::test_runner::{Config, TestRunner};

/// Device 0, or `None` (skipped) without a usable GPU; panics when `REQUIRE_CUDA=1`.
pub fn gpu(test: &'static str) -> Option<Device> {
    let d = Device::Cuda(0);
    match d.check_available(test) {
        Ok(()) => Some(d),
        Err(e) => {
            if std::env::var("REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("REQUIRE_CUDA=1 but the GPU is unusable: {e}");
            }
            println!("skipped: {e}");
            None
        }
    }
}

/// A proptest runner with `cases` cases and no failure files.
#[allow(dead_code)] // not every test file that includes this module draws proptest cases
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}
