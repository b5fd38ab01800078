//! The C ABI of the stand-in `libcuda`: the `cu*` entry points cudarc 0.19 (feature `cuda-12080`)
//! looks up by name, implemented over [`GlobalMemory`] and the PTX interpreter.
//!
//! Why it is shaped like this:
//! - Everything runs synchronously at call time (a launch interprets the whole grid inside
//!   `cuLaunchKernel`), so streams and events are bookkeeping only: a stream has no queue, an event
//!   is complete as soon as it is recorded and holds the wall-clock instant of its recording.
//! - One process-wide `State` behind a mutex, because the driver API is global and callable from
//!   any thread; a kernel runs with the lock held, which serialises launches the way one GPU would.
//! - Handles are small integers disguised as pointers and looked up in maps, so a stale or foreign
//!   handle is an error (`CUDA_ERROR_INVALID_HANDLE`), never a dereference.
//! - Every entry point catches panics (`entry`): unwinding into C is undefined behaviour, and a
//!   bug in the simulator should fail one call (`CUDA_ERROR_UNKNOWN`), not abort the test binary.
//! - Every failure prints `ptxsim: <call>: <why>` on stderr, because a `CUresult` cannot carry the
//!   interpreter's message and a failing GPU test should say what went wrong.
//! - Return codes are only values of cudarc's `cudaError_enum` for 12.8: cudarc transmutes the
//!   integer into that Rust enum, so any other value would be undefined behaviour on its side.
//!
//! Deliberate differences from NVIDIA's driver (all documented where they are implemented):
//! `CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED` is 1 so that cudarc takes the same
//! `cuMemAllocAsync`/`cuMemFreeAsync` path as on an H100, but the pool-object API itself is not
//! supported; a zero-byte `cuMemAllocAsync` returns the null pointer; calls do not require a
//! current context. Graphs, stream capture, managed/host/pinned memory, memory pools, external
//! memory, cooperative and cluster launches, and module globals answer `CUDA_ERROR_NOT_SUPPORTED`.
//!
//! Set `PTXSIM_TRACE=1` for one stderr line per launch (kernel, geometry, time taken), and
//! `PTXSIM_PROFILE=FILE` to append one JSON line per launch to FILE with the launch's memory
//! traffic per PTX instruction (global sectors, shared wavefronts; `scripts/ptxsim-profile.py`
//! summarises the file), and `PTXSIM_CP_ASYNC=early` to land `cp.async` data at issue instead of
//! at the wait that covers it.

// The entry points must carry the driver API's names and parameter names.
#![allow(non_snake_case)]
// The safety contracts of these functions are those of NVIDIA's driver API documentation (valid
// out-pointers, host buffers of the stated size); repeating them on each of the ~120 entry
// points adds nothing.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_int, c_uint, c_ulonglong, c_void};
use std::fmt;
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::{GlobalMemory, Module, SimError};

mod context;
mod errors;
mod init_device;
mod launch;
mod mem_calls;
mod module;
mod occupancy;
mod stream_event;
#[cfg(test)]
mod tests;
mod unsupported;

// The submodules are private: every entry point keeps its path `driver::cu*`.
pub use context::*;
pub use errors::*;
pub use init_device::*;
pub use launch::*;
pub use mem_calls::*;
pub use module::*;
pub use occupancy::*;
pub use stream_event::*;
pub use unsupported::*;

// ---------------------------------------------------------------------------------------------
// C types (as in cudarc's `driver::sys` bindings for CUDA 12.8)
// ---------------------------------------------------------------------------------------------

/// `CUresult`: a C enum, passed as a 32-bit unsigned integer.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CUresult(pub c_uint);

impl fmt::Debug for CUresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match error_name(*self) {
            Some(name) => write!(f, "{}", name.to_string_lossy()),
            None => write!(f, "CUresult({})", self.0),
        }
    }
}

pub const CUDA_SUCCESS: CUresult = CUresult(0);
pub const CUDA_ERROR_INVALID_VALUE: CUresult = CUresult(1);
pub const CUDA_ERROR_OUT_OF_MEMORY: CUresult = CUresult(2);
pub const CUDA_ERROR_NOT_INITIALIZED: CUresult = CUresult(3);
pub const CUDA_ERROR_INVALID_DEVICE: CUresult = CUresult(101);
pub const CUDA_ERROR_INVALID_IMAGE: CUresult = CUresult(200);
pub const CUDA_ERROR_INVALID_CONTEXT: CUresult = CUresult(201);
pub const CUDA_ERROR_UNSUPPORTED_LIMIT: CUresult = CUresult(215);
pub const CUDA_ERROR_INVALID_PTX: CUresult = CUresult(218);
pub const CUDA_ERROR_FILE_NOT_FOUND: CUresult = CUresult(301);
pub const CUDA_ERROR_INVALID_HANDLE: CUresult = CUresult(400);
pub const CUDA_ERROR_NOT_FOUND: CUresult = CUresult(500);
pub const CUDA_ERROR_ILLEGAL_ADDRESS: CUresult = CUresult(700);
pub const CUDA_ERROR_MISALIGNED_ADDRESS: CUresult = CUresult(716);
pub const CUDA_ERROR_LAUNCH_FAILED: CUresult = CUresult(719);
pub const CUDA_ERROR_NOT_SUPPORTED: CUresult = CUresult(801);
pub const CUDA_ERROR_UNKNOWN: CUresult = CUresult(999);

pub type CUdevice = c_int;
pub type CUdeviceptr = c_ulonglong;
pub type CUcontext = *mut c_void;
pub type CUmodule = *mut c_void;
pub type CUfunction = *mut c_void;
pub type CUstream = *mut c_void;
pub type CUevent = *mut c_void;
pub type CUgraph = *mut c_void;
pub type CUgraphExec = *mut c_void;
pub type CUmemoryPool = *mut c_void;
pub type CUexternalMemory = *mut c_void;
pub type CUhostFn = Option<unsafe extern "C" fn(userData: *mut c_void)>;
pub type CUoccupancyB2DSize = Option<unsafe extern "C" fn(blockSize: c_int) -> usize>;

/// `CUmemLocation`, passed by value to the managed-memory calls (which are refused).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CUmemLocation {
    pub type_: c_uint,
    pub id: c_int,
}

// ---------------------------------------------------------------------------------------------
// The simulated device
// ---------------------------------------------------------------------------------------------

/// What `cuDeviceGetName` reports: says plainly that this is not a real GPU.
const DEVICE_NAME: &str = "ptxsim (simulated sm_90)";
/// `cuDriverGetVersion`: CUDA 12.8, the API version cudarc is built against here.
const DRIVER_VERSION: c_int = 12080;
/// Reported device memory: an H100's 80 GiB. Allocations are backed by host memory, so this is
/// an upper bound for out-of-memory checks, not a promise.
const TOTAL_MEMORY: u64 = 80 << 30;
const SM_COUNT: c_int = 132;
const MAX_THREADS_PER_BLOCK: u32 = 1024;
const MAX_THREADS_PER_SM: u32 = 2048;
const MAX_BLOCKS_PER_SM: u32 = 32;
/// Shared memory a block may use without opting in (static + dynamic).
const SHARED_PER_BLOCK_DEFAULT: usize = 48 << 10;
/// The most shared memory a block may use after `cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)`.
const SHARED_PER_BLOCK_OPTIN: usize = 232_448;
const SHARED_PER_SM: usize = 233_472;
/// Shared memory the hardware reserves per resident block (counts in occupancy only).
const SHARED_RESERVED_PER_BLOCK: usize = 1024;

/// Special stream handles of the driver API besides null: `CU_STREAM_LEGACY` and
/// `CU_STREAM_PER_THREAD`. With synchronous execution they are all the same stream.
const STREAM_LEGACY: usize = 0x1;
const STREAM_PER_THREAD: usize = 0x2;
/// The handle of device 0's primary context (fixed, so every retain returns the same one, as
/// cudarc's context equality expects).
const PRIMARY_CTX: usize = 0x100;
/// First handle handed out for everything else; far above the special values.
const FIRST_HANDLE: usize = 0x1000;

const EVENT_DISABLE_TIMING: c_uint = 0x2;
/// Allocations at least this large are first tried on the host allocator, so that a request the
/// host cannot back becomes `CUDA_ERROR_OUT_OF_MEMORY` instead of aborting the process.
const HOST_PROBE_BYTES: usize = 1 << 30;

static STATE: Mutex<Option<State>> = Mutex::new(None);

thread_local! {
    /// The calling thread's context stack (`cuCtxSetCurrent` replaces its top).
    static CONTEXT_STACK: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Everything the driver knows; created by `cuInit`.
struct State {
    mem: GlobalMemory,
    next_handle: usize,
    primary_retains: u32,
    primary_flags: c_uint,
    /// Non-primary contexts (`cuCtxCreate*`): they share the one device memory.
    contexts: HashSet<usize>,
    ctx_flags: c_uint,
    cache_config: c_uint,
    limits: [usize; 10],
    modules: HashMap<usize, LoadedModule>,
    functions: HashMap<usize, Function>,
    streams: HashMap<usize, Stream>,
    events: HashMap<usize, Event>,
    /// Device attributes already reported as not modelled (one note each).
    noted_attributes: HashSet<c_uint>,
}

struct LoadedModule {
    module: Module,
    /// `.version` of the PTX times ten (e.g. 80 for 8.0), for `CU_FUNC_ATTRIBUTE_PTX_VERSION`.
    ptx_version: c_int,
    /// Handles already given out by `cuModuleGetFunction`, so that a name always maps to one.
    functions: HashMap<String, usize>,
}

struct Function {
    module: usize,
    entry: String,
    param_sizes: Vec<usize>,
    static_shared: usize,
    max_dynamic_shared: usize,
    carveout: c_int,
}

struct Stream {
    flags: c_uint,
    priority: c_int,
    ctx: usize,
}

struct Event {
    flags: c_uint,
    recorded: Option<Instant>,
}

impl State {
    fn new() -> Self {
        Self {
            mem: GlobalMemory::new(),
            next_handle: FIRST_HANDLE,
            primary_retains: 0,
            primary_flags: 0,
            contexts: HashSet::new(),
            ctx_flags: 0,
            cache_config: 0,
            // Defaults of an H100 for CU_LIMIT_STACK_SIZE .. CU_LIMIT_CIG_SHMEM_FALLBACK_ENABLED.
            limits: [1024, 1 << 20, 8 << 20, 2, 2048, 64, 0, 0, 0, 0],
            modules: HashMap::new(),
            functions: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
            noted_attributes: HashSet::new(),
        }
    }

    fn new_handle(&mut self) -> usize {
        let h = self.next_handle;
        self.next_handle += 1;
        h
    }

    fn free_bytes(&self) -> u64 {
        TOTAL_MEMORY.saturating_sub(self.mem.in_use)
    }

    fn check_context(&self, ctx: usize) -> Result<(), Failure> {
        if (ctx == PRIMARY_CTX && self.primary_retains > 0) || self.contexts.contains(&ctx) {
            Ok(())
        } else {
            Err(Failure::new(CUDA_ERROR_INVALID_CONTEXT, format!("unknown context {ctx:#x}")))
        }
    }

    fn check_stream(&self, stream: CUstream) -> Result<(), Failure> {
        let h = stream.addr();
        if h == 0 || h == STREAM_LEGACY || h == STREAM_PER_THREAD || self.streams.contains_key(&h) {
            Ok(())
        } else {
            Err(Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("unknown stream {h:#x}")))
        }
    }

    fn event(&mut self, event: CUevent) -> Result<&mut Event, Failure> {
        let h = event.addr();
        self.events.get_mut(&h).ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("unknown event {h:#x}")))
    }

    fn function(&self, f: CUfunction) -> Result<&Function, Failure> {
        let h = f.addr();
        self.functions.get(&h).ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("unknown function {h:#x}")))
    }

    /// A new zeroed allocation; out-of-memory when the reported device or the host is full.
    fn alloc(&mut self, bytes: usize) -> Result<u64, Failure> {
        let free = self.free_bytes();
        if bytes as u64 > free {
            return Err(Failure::new(
                CUDA_ERROR_OUT_OF_MEMORY,
                format!("out of memory: {bytes} bytes requested, {free} of {TOTAL_MEMORY} bytes free"),
            ));
        }
        if bytes >= HOST_PROBE_BYTES {
            let mut probe: Vec<u8> = Vec::new();
            if probe.try_reserve_exact(bytes).is_err() {
                return Err(Failure::new(
                    CUDA_ERROR_OUT_OF_MEMORY,
                    format!("out of memory: the host cannot back an allocation of {bytes} bytes"),
                ));
            }
        }
        Ok(self.mem.alloc(bytes))
    }
}

// ---------------------------------------------------------------------------------------------
// Plumbing: errors, the panic guard, out-pointers
// ---------------------------------------------------------------------------------------------

/// A failed call: the code returned to C and the message printed on stderr.
#[derive(Debug)]
struct Failure {
    code: CUresult,
    msg: String,
}

impl Failure {
    fn new(code: CUresult, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into() }
    }
}

fn invalid(msg: impl Into<String>) -> Failure {
    Failure::new(CUDA_ERROR_INVALID_VALUE, msg)
}

/// A memory error in a copy or memset: the caller passed a bad range.
fn copy_error(e: SimError) -> Failure {
    Failure::new(CUDA_ERROR_INVALID_VALUE, e.to_string())
}

/// An error while loading a module: the PTX is not usable.
fn load_error(e: SimError) -> Failure {
    Failure::new(CUDA_ERROR_INVALID_PTX, e.to_string())
}

/// An error from a launch, mapped like a GPU would report it. `SimError` has no variant of its own
/// for a kernel's memory fault (the interpreter reports it as `Exec`), so the message decides.
fn launch_error(e: SimError) -> Failure {
    let code = match &e {
        SimError::Memory(_) => CUDA_ERROR_ILLEGAL_ADDRESS,
        SimError::Exec { msg, .. } if msg.contains("misaligned") => CUDA_ERROR_MISALIGNED_ADDRESS,
        SimError::Exec { msg, .. }
            if ["global memory", "shared memory", "local memory", "no allocation", "runs past", "out of bounds"]
                .iter()
                .any(|k| msg.contains(k)) =>
        {
            CUDA_ERROR_ILLEGAL_ADDRESS
        }
        SimError::Exec { .. } => CUDA_ERROR_LAUNCH_FAILED,
        SimError::Launch(_) => CUDA_ERROR_INVALID_VALUE,
        SimError::Parse { .. } => CUDA_ERROR_INVALID_PTX,
    };
    Failure::new(code, e.to_string())
}

/// Runs the body of entry point `call`: maps its result to a `CUresult`, prints failures, and
/// keeps panics from unwinding into C. Messages go through `eprintln!` inside the guarded region
/// (so the test harness captures them; if stderr is gone the call fails instead of aborting); the
/// report of a panic itself ignores write errors.
fn entry(call: &'static str, body: impl FnOnce() -> Result<(), Failure>) -> CUresult {
    let guarded = catch_unwind(AssertUnwindSafe(|| match body() {
        Ok(()) => CUDA_SUCCESS,
        Err(Failure { code, msg }) => {
            eprintln!("ptxsim: {call}: {msg}");
            code
        }
    }));
    guarded.unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string panic payload>".into());
        let _ = writeln!(std::io::stderr(), "ptxsim: {call}: internal error (panic): {msg}");
        CUDA_ERROR_UNKNOWN
    })
}

/// Runs `f` on the driver state, or fails with `CUDA_ERROR_NOT_INITIALIZED` before `cuInit`.
/// A poisoned lock (a panic inside an earlier call) is taken over: the state may be as
/// inconsistent as a GPU after a fault, which is better than refusing every later call.
fn with_state<T>(f: impl FnOnce(&mut State) -> Result<T, Failure>) -> Result<T, Failure> {
    let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    let st = guard.as_mut().ok_or_else(|| Failure::new(CUDA_ERROR_NOT_INITIALIZED, "cuInit has not been called"))?;
    f(st)
}

/// Writes a result through a C out-pointer, refusing null.
///
/// # Safety
/// `p` is null or valid for a write of a `T`.
unsafe fn put<T>(p: *mut T, value: T) -> Result<(), Failure> {
    if p.is_null() {
        return Err(invalid("null output pointer"));
    }
    // SAFETY: non-null, and valid for writes by this function's contract.
    unsafe { p.write(value) };
    Ok(())
}

fn handle(h: usize) -> *mut c_void {
    std::ptr::without_provenance_mut(h)
}

fn check_device(dev: CUdevice) -> Result<(), Failure> {
    if dev == 0 {
        Ok(())
    } else {
        Err(Failure::new(CUDA_ERROR_INVALID_DEVICE, format!("no device {dev} (the simulator has device 0 only)")))
    }
}

fn check_len(n: usize) -> Result<(), Failure> {
    if n > isize::MAX as usize { Err(invalid(format!("byte count {n} is too large"))) } else { Ok(()) }
}

fn current_context() -> usize {
    CONTEXT_STACK.try_with(|s| s.borrow().last().copied().unwrap_or(0)).unwrap_or(0)
}
