//! ptxsim: a PTX interpreter for the PTX this project writes by hand, behind a stand-in for the
//! CUDA driver library.
//!
//! Why: the GPU kernels and their launch code can be run, against their CPU oracles, on a machine
//! without a GPU. `scripts/gpu-sim.sh` builds this crate's cdylib, links it as `libcuda.so` in a
//! private folder and runs the GPU test binaries with that folder on `LD_LIBRARY_PATH`; cudarc
//! loads it exactly as it would load NVIDIA's driver.
//!
//! What it is not: a timing model or a conformance suite (it does count memory traffic: global
//! sectors and shared-memory wavefronts per instruction, see [`profile`]). It executes the instructions the
//! project's PTX uses (with the semantics of the PTX ISA), one thread at a time, switching threads
//! at barriers and warp-collective instructions (`shfl`, `ldmatrix`, `mma`). It checks more than a
//! GPU does: every global and shared access is bounds-checked, and a warp-collective instruction
//! reached by only part of a warp is an error. Shared-memory races are not detected.

pub mod driver;
mod exec;
pub mod memory;
mod parse;
pub mod profile;

pub use exec::{LaunchDims, LaunchOptions, launch, launch_with};
pub use memory::GlobalMemory;
pub use parse::Module;

/// Everything that can go wrong in the simulator. The stand-in driver turns these into CUDA
/// error codes and prints the message on stderr (the driver API has no room for text).
#[derive(Debug, Clone, PartialEq)]
pub enum SimError {
    /// The PTX text could not be understood (line numbers are 1-based).
    Parse { line: usize, msg: String },
    /// A global-memory access outside every allocation, or a bad free.
    Memory(String),
    /// A fault while executing a kernel.
    Exec { kernel: String, msg: String },
    /// A launch the module cannot satisfy (unknown entry, wrong parameters, bad geometry).
    Launch(String),
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::Parse { line, msg } => write!(f, "PTX line {line}: {msg}"),
            SimError::Memory(m) => write!(f, "global memory: {m}"),
            SimError::Exec { kernel, msg } => write!(f, "kernel {kernel}: {msg}"),
            SimError::Launch(m) => write!(f, "launch: {m}"),
        }
    }
}

impl std::error::Error for SimError {}
