//! Shared by every GPU test binary: the one device they all use, opened once per binary.
//!
//! Without a usable GPU, [`gpu`] prints "skipped: <reason>" and returns `None` (the test then
//! returns early and passes), unless `REQUIRE_CUDA=1`, in which case it panics: a GPU run can never
//! pass by skipping.
#![allow(dead_code)]

use std::sync::OnceLock;

use brainstacks_kernels::launch::GpuContext;

/// Device 0 with every registered PTX module preloaded, or `None` (skipped) without a GPU.
pub fn gpu() -> Option<&'static GpuContext> {
    static GPU: OnceLock<Result<GpuContext, String>> = OnceLock::new();
    let g = GPU.get_or_init(|| {
        let g = GpuContext::new(0).map_err(|e| e.to_string())?;
        g.preload_all()
            .map_err(|e| format!("preload_all failed: {e}"))?;
        Ok(g)
    });
    match g {
        Ok(g) => Some(g),
        Err(reason) => {
            if std::env::var("REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("REQUIRE_CUDA=1 but the GPU is unusable: {reason}");
            }
            println!("skipped: {reason}");
            None
        }
    }
}
