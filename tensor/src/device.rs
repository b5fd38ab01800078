//! Devices. `Device::Cuda` exists in every build so code never needs `cfg` in its matches; in a
//! build without the `cuda` feature asking for it gives an error that says why.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// Why a build without the `cuda` feature cannot use a CUDA device. (A build with the feature
    /// reports the driver's reason from [`Device::check_available`].)
    pub fn cuda_unavailable_reason() -> &'static str {
        "brainstacks was built without CUDA (rebuild with `--features cuda`)"
    }

    /// Checks that tensors can be created on this device: for CUDA, opens (once, then shares) the
    /// device's context. A missing driver library or device is an error, never a panic.
    pub fn check_available(&self, op: &'static str) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => crate::cuda::context(op, *n).map(|_| ()),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => {
                Err(crate::Error::Device { op, device: *self, msg: Self::cuda_unavailable_reason().to_string() })
            }
        }
    }

    /// `Some(Device::Cuda(ordinal))` when a usable GPU is present; `None` otherwise. GPU tests
    /// call this and skip, unless `REQUIRE_CUDA=1`, in which case a missing GPU is a failure.
    pub fn cuda_if_available(ordinal: usize) -> Option<Device> {
        let d = Device::Cuda(ordinal);
        d.check_available("cuda_if_available").ok().map(|_| d)
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

/// Parses what [`Device`]'s `Display` writes: `cpu`, `cuda` (ordinal 0) or `cuda:N`.
///
/// ```
/// use brainstacks_tensor::Device;
/// assert_eq!("cuda:1".parse::<Device>(), Ok(Device::Cuda(1)));
/// assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
/// assert!("gpu".parse::<Device>().unwrap_err().contains("cpu, cuda or cuda:N"));
/// ```
impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown device {s:?}: expected cpu, cuda or cuda:N");
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Device::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
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
