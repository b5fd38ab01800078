//! The CUDA backend (feature `cuda`): device buffers ([`CudaStorage`]), one shared
//! [`GpuContext`] per device ordinal, and the dispatch of tensor ops to the kernels of
//! `brainstacks-kernels`.
//!
//! Rules of this backend:
//! - an op on a CUDA tensor runs a GPU kernel or returns `Error::Device` saying it is "not
//!   implemented on CUDA yet"; nothing silently copies to the CPU and back (only the explicit
//!   transfers `to_device`, `to_vec*`, and host-built creation such as `from_vec` and `full` cross);
//! - contexts are created on first use and shared by every tensor of the device; creating one
//!   never panics (a missing driver or device is an error naming the reason);
//! - results are dense (contiguous from offset 0, buffer length equal to the element count).

use std::sync::{Arc, Mutex, OnceLock};

pub use brainstacks_kernels::launch::{CudaSlice, GpuContext, GpuError};

use crate::{Device, Error, Result};

pub(crate) mod adamw;
pub(crate) mod index;
mod moe_gate;
pub(crate) mod moe_lora;
pub(crate) mod nf4;
pub(crate) mod ops;
mod storage;

pub use moe_gate::{MoeGateForward, MoeGateGrads, moe_gate, moe_gate_backward};
pub use storage::{CudaBuf, CudaStorage};

type Contexts = Mutex<Vec<Option<Arc<GpuContext>>>>;

/// One context per ordinal, created on first use. Creation is serialised by the lock, so two
/// threads asking for the same device get the same context.
static CONTEXTS: OnceLock<Contexts> = OnceLock::new();

/// The shared context of CUDA device `ordinal`, created on first use. `op` names the caller in
/// the error (no driver, no such device).
pub fn context(op: &'static str, ordinal: usize) -> Result<Arc<GpuContext>> {
    let mut all = CONTEXTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(Some(g)) = all.get(ordinal) {
        return Ok(g.clone());
    }
    let g = Arc::new(GpuContext::new(ordinal).map_err(|e| gpu_error(op, Device::Cuda(ordinal), e))?);
    // Resized only after the device opened, so a bogus huge ordinal allocates nothing.
    if all.len() <= ordinal {
        all.resize(ordinal + 1, None);
    }
    all[ordinal] = Some(g.clone());
    Ok(g)
}

/// A kernel or driver failure as the tensor crate's error.
pub(crate) fn gpu_error(op: &'static str, device: Device, e: GpuError) -> Error {
    Error::Device { op, device, msg: e.to_string() }
}

/// The error of every op without a CUDA implementation.
pub(crate) fn not_implemented(op: &'static str, device: Device) -> Error {
    Error::Device {
        op,
        device,
        msg: "not implemented on CUDA yet (move the tensor with `to_device(&Device::Cpu)` first)".into(),
    }
}
