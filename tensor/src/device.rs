//! Devices. `Device::Cuda` exists in every build so code never needs `cfg` in its matches; until
//! the CUDA backend lands (and always in a build without the `cuda` feature) asking for it gives
//! an error that says why.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// Why a CUDA device cannot be used by this build.
    pub fn cuda_unavailable_reason() -> &'static str {
        if cfg!(feature = "cuda") {
            "the CUDA backend is not implemented in this version of brainstacks-tensor"
        } else {
            "brainstacks was built without CUDA (rebuild with `--features cuda`)"
        }
    }

    /// Checks that tensors can be created on this device.
    pub fn check_available(&self, op: &'static str) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(_) => {
                Err(crate::Error::Device { op, device: *self, msg: Self::cuda_unavailable_reason().to_string() })
            }
        }
    }

    /// `Some(Device::Cuda(ordinal))` when a usable GPU is present; `None` otherwise. GPU tests
    /// call this and skip, unless `REQUIRE_CUDA=1`, in which case a missing GPU is a failure.
    pub fn cuda_if_available(_ordinal: usize) -> Option<Device> {
        None
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
