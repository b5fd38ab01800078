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
use std::ffi::{CStr, c_char, c_int, c_uchar, c_uint, c_ulonglong, c_ushort, c_void};
use std::fmt;
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use crate::{GlobalMemory, LaunchDims, Module, SimError};

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

fn trace_enabled() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var("PTXSIM_TRACE").is_ok_and(|v| v == "1"))
}

/// Where `PTXSIM_PROFILE` asks for one JSON line per launch with its memory-traffic counts
/// (see [`crate::profile`]); `None` when it is unset or empty.
fn profile_path() -> Option<&'static std::path::Path> {
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var_os("PTXSIM_PROFILE").filter(|v| !v.is_empty()).map(Into::into)).as_deref()
}

/// `PTXSIM_CP_ASYNC=early`: `cp.async` data lands at issue (see [`crate::LaunchOptions`]).
fn early_cp_async() -> bool {
    static EARLY: OnceLock<bool> = OnceLock::new();
    *EARLY.get_or_init(|| std::env::var("PTXSIM_CP_ASYNC").is_ok_and(|v| v == "early"))
}

fn append_profile_line(path: &std::path::Path, line: &str) -> Result<(), Failure> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Failure::new(CUDA_ERROR_UNKNOWN, format!("PTXSIM_PROFILE {}: {e}", path.display())))?;
    writeln!(f, "{line}").map_err(|e| Failure::new(CUDA_ERROR_UNKNOWN, format!("PTXSIM_PROFILE {}: {e}", path.display())))
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

// ---------------------------------------------------------------------------------------------
// Initialisation, version, errors
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuInit(Flags: c_uint) -> CUresult {
    entry("cuInit", || {
        if Flags != 0 {
            return Err(invalid(format!("flags must be 0, got {Flags}")));
        }
        let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        guard.get_or_insert_with(State::new);
        Ok(())
    })
}

/// Works before `cuInit`, like the real driver (the project reads it for its device report).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDriverGetVersion(driverVersion: *mut c_int) -> CUresult {
    entry("cuDriverGetVersion", || {
        // SAFETY: the caller passes a writable int (null is refused).
        unsafe { put(driverVersion, DRIVER_VERSION) }
    })
}

/// Names for every code of cudarc's `cudaError_enum` (CUDA 12.8), so `cuGetErrorName` answers for
/// any code a caller can hold.
static ERROR_NAMES: &[(c_uint, &CStr)] = &[
    (0, c"CUDA_SUCCESS"),
    (1, c"CUDA_ERROR_INVALID_VALUE"),
    (2, c"CUDA_ERROR_OUT_OF_MEMORY"),
    (3, c"CUDA_ERROR_NOT_INITIALIZED"),
    (4, c"CUDA_ERROR_DEINITIALIZED"),
    (5, c"CUDA_ERROR_PROFILER_DISABLED"),
    (6, c"CUDA_ERROR_PROFILER_NOT_INITIALIZED"),
    (7, c"CUDA_ERROR_PROFILER_ALREADY_STARTED"),
    (8, c"CUDA_ERROR_PROFILER_ALREADY_STOPPED"),
    (34, c"CUDA_ERROR_STUB_LIBRARY"),
    (46, c"CUDA_ERROR_DEVICE_UNAVAILABLE"),
    (100, c"CUDA_ERROR_NO_DEVICE"),
    (101, c"CUDA_ERROR_INVALID_DEVICE"),
    (102, c"CUDA_ERROR_DEVICE_NOT_LICENSED"),
    (200, c"CUDA_ERROR_INVALID_IMAGE"),
    (201, c"CUDA_ERROR_INVALID_CONTEXT"),
    (202, c"CUDA_ERROR_CONTEXT_ALREADY_CURRENT"),
    (205, c"CUDA_ERROR_MAP_FAILED"),
    (206, c"CUDA_ERROR_UNMAP_FAILED"),
    (207, c"CUDA_ERROR_ARRAY_IS_MAPPED"),
    (208, c"CUDA_ERROR_ALREADY_MAPPED"),
    (209, c"CUDA_ERROR_NO_BINARY_FOR_GPU"),
    (210, c"CUDA_ERROR_ALREADY_ACQUIRED"),
    (211, c"CUDA_ERROR_NOT_MAPPED"),
    (212, c"CUDA_ERROR_NOT_MAPPED_AS_ARRAY"),
    (213, c"CUDA_ERROR_NOT_MAPPED_AS_POINTER"),
    (214, c"CUDA_ERROR_ECC_UNCORRECTABLE"),
    (215, c"CUDA_ERROR_UNSUPPORTED_LIMIT"),
    (216, c"CUDA_ERROR_CONTEXT_ALREADY_IN_USE"),
    (217, c"CUDA_ERROR_PEER_ACCESS_UNSUPPORTED"),
    (218, c"CUDA_ERROR_INVALID_PTX"),
    (219, c"CUDA_ERROR_INVALID_GRAPHICS_CONTEXT"),
    (220, c"CUDA_ERROR_NVLINK_UNCORRECTABLE"),
    (221, c"CUDA_ERROR_JIT_COMPILER_NOT_FOUND"),
    (222, c"CUDA_ERROR_UNSUPPORTED_PTX_VERSION"),
    (223, c"CUDA_ERROR_JIT_COMPILATION_DISABLED"),
    (224, c"CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY"),
    (225, c"CUDA_ERROR_UNSUPPORTED_DEVSIDE_SYNC"),
    (226, c"CUDA_ERROR_CONTAINED"),
    (300, c"CUDA_ERROR_INVALID_SOURCE"),
    (301, c"CUDA_ERROR_FILE_NOT_FOUND"),
    (302, c"CUDA_ERROR_SHARED_OBJECT_SYMBOL_NOT_FOUND"),
    (303, c"CUDA_ERROR_SHARED_OBJECT_INIT_FAILED"),
    (304, c"CUDA_ERROR_OPERATING_SYSTEM"),
    (400, c"CUDA_ERROR_INVALID_HANDLE"),
    (401, c"CUDA_ERROR_ILLEGAL_STATE"),
    (402, c"CUDA_ERROR_LOSSY_QUERY"),
    (500, c"CUDA_ERROR_NOT_FOUND"),
    (600, c"CUDA_ERROR_NOT_READY"),
    (700, c"CUDA_ERROR_ILLEGAL_ADDRESS"),
    (701, c"CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"),
    (702, c"CUDA_ERROR_LAUNCH_TIMEOUT"),
    (703, c"CUDA_ERROR_LAUNCH_INCOMPATIBLE_TEXTURING"),
    (704, c"CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED"),
    (705, c"CUDA_ERROR_PEER_ACCESS_NOT_ENABLED"),
    (708, c"CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE"),
    (709, c"CUDA_ERROR_CONTEXT_IS_DESTROYED"),
    (710, c"CUDA_ERROR_ASSERT"),
    (711, c"CUDA_ERROR_TOO_MANY_PEERS"),
    (712, c"CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED"),
    (713, c"CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED"),
    (714, c"CUDA_ERROR_HARDWARE_STACK_ERROR"),
    (715, c"CUDA_ERROR_ILLEGAL_INSTRUCTION"),
    (716, c"CUDA_ERROR_MISALIGNED_ADDRESS"),
    (717, c"CUDA_ERROR_INVALID_ADDRESS_SPACE"),
    (718, c"CUDA_ERROR_INVALID_PC"),
    (719, c"CUDA_ERROR_LAUNCH_FAILED"),
    (720, c"CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE"),
    (721, c"CUDA_ERROR_TENSOR_MEMORY_LEAK"),
    (800, c"CUDA_ERROR_NOT_PERMITTED"),
    (801, c"CUDA_ERROR_NOT_SUPPORTED"),
    (802, c"CUDA_ERROR_SYSTEM_NOT_READY"),
    (803, c"CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"),
    (804, c"CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE"),
    (805, c"CUDA_ERROR_MPS_CONNECTION_FAILED"),
    (806, c"CUDA_ERROR_MPS_RPC_FAILURE"),
    (807, c"CUDA_ERROR_MPS_SERVER_NOT_READY"),
    (808, c"CUDA_ERROR_MPS_MAX_CLIENTS_REACHED"),
    (809, c"CUDA_ERROR_MPS_MAX_CONNECTIONS_REACHED"),
    (810, c"CUDA_ERROR_MPS_CLIENT_TERMINATED"),
    (811, c"CUDA_ERROR_CDP_NOT_SUPPORTED"),
    (812, c"CUDA_ERROR_CDP_VERSION_MISMATCH"),
    (900, c"CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"),
    (901, c"CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"),
    (902, c"CUDA_ERROR_STREAM_CAPTURE_MERGE"),
    (903, c"CUDA_ERROR_STREAM_CAPTURE_UNMATCHED"),
    (904, c"CUDA_ERROR_STREAM_CAPTURE_UNJOINED"),
    (905, c"CUDA_ERROR_STREAM_CAPTURE_ISOLATION"),
    (906, c"CUDA_ERROR_STREAM_CAPTURE_IMPLICIT"),
    (907, c"CUDA_ERROR_CAPTURED_EVENT"),
    (908, c"CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD"),
    (909, c"CUDA_ERROR_TIMEOUT"),
    (910, c"CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE"),
    (911, c"CUDA_ERROR_EXTERNAL_DEVICE"),
    (912, c"CUDA_ERROR_INVALID_CLUSTER_SIZE"),
    (913, c"CUDA_ERROR_FUNCTION_NOT_LOADED"),
    (914, c"CUDA_ERROR_INVALID_RESOURCE_TYPE"),
    (915, c"CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION"),
    (916, c"CUDA_ERROR_KEY_ROTATION"),
    (999, c"CUDA_ERROR_UNKNOWN"),
];

/// `cuGetErrorString` texts of the codes this driver returns (NVIDIA's wording); the other codes
/// are described by their name.
static ERROR_DESCRIPTIONS: &[(c_uint, &CStr)] = &[
    (0, c"no error"),
    (1, c"invalid argument"),
    (2, c"out of memory"),
    (3, c"initialization error"),
    (101, c"invalid device ordinal"),
    (200, c"device kernel image is invalid"),
    (201, c"invalid device context"),
    (215, c"limit is not supported on this architecture"),
    (218, c"a PTX JIT compilation failed"),
    (301, c"file not found"),
    (400, c"invalid resource handle"),
    (500, c"named symbol not found"),
    (600, c"device not ready"),
    (700, c"an illegal memory access was encountered"),
    (716, c"misaligned address"),
    (719, c"unspecified launch failure"),
    (801, c"operation not supported"),
    (999, c"unknown error"),
];

fn error_name(e: CUresult) -> Option<&'static CStr> {
    ERROR_NAMES.iter().find(|(c, _)| *c == e.0).map(|(_, n)| *n)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, pStr: *mut *const c_char) -> CUresult {
    entry("cuGetErrorName", || {
        let name = error_name(error);
        // SAFETY: the caller passes a writable `const char*` (null is refused).
        unsafe { put(pStr, name.map_or(std::ptr::null(), CStr::as_ptr)) }?;
        name.map(|_| ()).ok_or_else(|| invalid(format!("unknown CUresult {}", error.0)))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, pStr: *mut *const c_char) -> CUresult {
    entry("cuGetErrorString", || {
        let text = ERROR_DESCRIPTIONS.iter().find(|(c, _)| *c == error.0).map(|(_, d)| *d).or_else(|| error_name(error));
        // SAFETY: the caller passes a writable `const char*` (null is refused).
        unsafe { put(pStr, text.map_or(std::ptr::null(), CStr::as_ptr)) }?;
        text.map(|_| ()).ok_or_else(|| invalid(format!("unknown CUresult {}", error.0)))
    })
}

// ---------------------------------------------------------------------------------------------
// Device
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    entry("cuDeviceGetCount", || {
        with_state(|_| Ok(()))?;
        // SAFETY: the caller passes a writable int (null is refused).
        unsafe { put(count, 1) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    entry("cuDeviceGet", || {
        with_state(|_| Ok(()))?;
        check_device(ordinal)?;
        // SAFETY: the caller passes a writable CUdevice (null is refused).
        unsafe { put(device, 0) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    entry("cuDeviceGetName", || {
        with_state(|_| Ok(()))?;
        check_device(dev)?;
        if name.is_null() || len <= 0 {
            return Err(invalid("null name buffer or non-positive length"));
        }
        let n = DEVICE_NAME.len().min(len as usize - 1);
        // SAFETY: the caller's buffer holds `len` bytes; `n + 1 <= len` are written.
        unsafe {
            std::ptr::copy_nonoverlapping(DEVICE_NAME.as_ptr(), name.cast::<u8>(), n);
            name.add(n).write(0);
        }
        Ok(())
    })
}

/// A fixed UUID: some tools print it, nothing should rely on it.
const DEVICE_UUID: [u8; 16] = *b"ptxsim-sm90-dev0";

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut [c_char; 16], dev: CUdevice) -> CUresult {
    entry("cuDeviceGetUuid", || {
        with_state(|_| Ok(()))?;
        check_device(dev)?;
        // SAFETY: the caller passes a writable CUuuid (16 chars; null is refused).
        unsafe { put(uuid, DEVICE_UUID.map(|b| b as c_char)) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [c_char; 16], dev: CUdevice) -> CUresult {
    // SAFETY: same contract as cuDeviceGetUuid.
    unsafe { cuDeviceGetUuid(uuid, dev) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    entry("cuDeviceTotalMem_v2", || {
        with_state(|_| Ok(()))?;
        check_device(dev)?;
        // SAFETY: the caller passes a writable size_t (null is refused).
        unsafe { put(bytes, TOTAL_MEMORY as usize) }
    })
}

/// The answer for a device attribute (numbering of cudarc's `CUdevice_attribute_enum`, 12.8),
/// or `None` for one the simulator does not model. Values are an H100 SXM's, except where the
/// simulator lacks the feature (then 0, so that callers do not try it).
fn device_attribute(attrib: c_uint) -> Option<c_int> {
    Some(match attrib {
        1 => MAX_THREADS_PER_BLOCK as c_int,    // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,                          // MAX_BLOCK_DIM_X, _Y
        4 => 64,                                // MAX_BLOCK_DIM_Z
        5 => i32::MAX,                          // MAX_GRID_DIM_X
        6 | 7 => 65535,                         // MAX_GRID_DIM_Y, _Z
        8 => SHARED_PER_BLOCK_DEFAULT as c_int, // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 65536,                             // TOTAL_CONSTANT_MEMORY
        10 => 32,                               // WARP_SIZE
        11 => i32::MAX,                         // MAX_PITCH
        12 => 65536,                            // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000,                        // CLOCK_RATE (kHz)
        14 => 512,                              // TEXTURE_ALIGNMENT
        15 => 1,                                // GPU_OVERLAP
        16 => SM_COUNT,                         // MULTIPROCESSOR_COUNT
        17 => 0,                                // KERNEL_EXEC_TIMEOUT
        18 => 0,                                // INTEGRATED
        19 => 0,                                // CAN_MAP_HOST_MEMORY: no mapped host memory here
        20 => 0,                                // COMPUTE_MODE: default
        30 => 512,                              // SURFACE_ALIGNMENT
        31 => 1,                                // CONCURRENT_KERNELS
        32 => 0,                                // ECC_ENABLED
        33..=35 => 0,                           // PCI_BUS_ID, PCI_DEVICE_ID, TCC_DRIVER
        36 => 2_619_000,                        // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                             // GLOBAL_MEMORY_BUS_WIDTH
        38 => 50 << 20,                         // L2_CACHE_SIZE
        39 => MAX_THREADS_PER_SM as c_int,      // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 2,                                // ASYNC_ENGINE_COUNT
        41 => 1,                                // UNIFIED_ADDRESSING
        50 => 0,                                // PCI_DOMAIN_ID
        51 => 32,                               // TEXTURE_PITCH_ALIGNMENT
        75 => 9,                                // COMPUTE_CAPABILITY_MAJOR
        76 => 0,                                // COMPUTE_CAPABILITY_MINOR
        78 => 1,                                // STREAM_PRIORITIES_SUPPORTED
        79 | 80 => 1,                           // GLOBAL_L1_CACHE_SUPPORTED, LOCAL_L1_CACHE_SUPPORTED
        81 => SHARED_PER_SM as c_int,           // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,                            // MAX_REGISTERS_PER_MULTIPROCESSOR
        83 => 0,                                // MANAGED_MEMORY: not supported
        84 | 85 => 0,                           // MULTI_GPU_BOARD, MULTI_GPU_BOARD_GROUP_ID
        86 => 0,                                // HOST_NATIVE_ATOMIC_SUPPORTED
        87 => 2,                                // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
        88 | 89 => 0,                           // PAGEABLE_MEMORY_ACCESS, CONCURRENT_MANAGED_ACCESS
        90 => 1,                                // COMPUTE_PREEMPTION_SUPPORTED
        91 => 0,                                // CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
        92..=94 => 0,                           // stream memory operations (v1)
        // COOPERATIVE_LAUNCH, COOPERATIVE_MULTI_DEVICE_LAUNCH: a grid-wide barrier cannot be
        // interpreted one block after another, so cuLaunchCooperativeKernel is refused.
        95 | 96 => 0,
        97 => SHARED_PER_BLOCK_OPTIN as c_int,     // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        98 => 0,                                   // CAN_FLUSH_REMOTE_WRITES
        99 => 0,                                   // HOST_REGISTER_SUPPORTED
        100 | 101 => 0,                            // pageable access via host tables, direct managed access
        102 => 0,                                  // VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED
        103..=105 => 0,                            // IPC handle types
        106 => MAX_BLOCKS_PER_SM as c_int,         // MAX_BLOCKS_PER_MULTIPROCESSOR
        107 => 0,                                  // GENERIC_COMPRESSION_SUPPORTED
        108 => 0,                                  // MAX_PERSISTING_L2_CACHE_SIZE
        109 => 0,                                  // MAX_ACCESS_POLICY_WINDOW_SIZE
        110 => 0,                                  // GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED
        111 => SHARED_RESERVED_PER_BLOCK as c_int, // RESERVED_SHARED_MEMORY_PER_BLOCK
        112 | 113 => 0,                            // SPARSE_CUDA_ARRAY, READ_ONLY_HOST_REGISTER
        114 => 0,                                  // TIMELINE_SEMAPHORE_INTEROP_SUPPORTED
        // MEMORY_POOLS_SUPPORTED: 1 makes cudarc allocate with cuMemAllocAsync and free with
        // cuMemFreeAsync, the path it takes on a real H100 (and the one where a zero-length
        // `CudaStream::null()` works). The pool objects themselves are not supported.
        115 => 1,
        116..=118 => 0, // GPU Direct RDMA
        119 => 0,       // MEMPOOL_SUPPORTED_HANDLE_TYPES
        120 => 0,       // CLUSTER_LAUNCH: not supported
        121..=125 => 0, // deferred mapping, stream mem ops, dma-buf, IPC events
        126 => 1,       // MEM_SYNC_DOMAIN_COUNT
        127 | 128 => 0, // TENSOR_MAP_ACCESS_SUPPORTED, HANDLE_TYPE_FABRIC
        129 => 0,       // UNIFIED_FUNCTION_POINTERS
        130 => 0,       // NUMA_CONFIG: none
        131 => -1,      // NUMA_ID
        132 | 133 => 0, // MULTICAST_SUPPORTED, MPS_ENABLED
        134 => -1,      // HOST_NUMA_ID
        _ => return None,
    })
}

/// Highest attribute number in cudarc's 12.8 enum (`CU_DEVICE_ATTRIBUTE_MAX`).
const DEVICE_ATTRIBUTE_MAX: c_uint = 144;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceGetAttribute(pi: *mut c_int, attrib: c_uint, dev: CUdevice) -> CUresult {
    entry("cuDeviceGetAttribute", || {
        let value = with_state(|st| {
            check_device(dev)?;
            if attrib == 0 || attrib >= DEVICE_ATTRIBUTE_MAX {
                return Err(invalid(format!("no device attribute {attrib}")));
            }
            Ok(device_attribute(attrib).unwrap_or_else(|| {
                if st.noted_attributes.insert(attrib) {
                    eprintln!("ptxsim: cuDeviceGetAttribute: attribute {attrib} is not modelled; answering 0");
                }
                0
            }))
        })?;
        // SAFETY: the caller passes a writable int (null is refused).
        unsafe { put(pi, value) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(canAccessPeer: *mut c_int, dev: CUdevice, peerDev: CUdevice) -> CUresult {
    entry("cuDeviceCanAccessPeer", || {
        with_state(|_| Ok(()))?;
        check_device(dev)?;
        check_device(peerDev)?;
        // SAFETY: the caller passes a writable int (null is refused).
        unsafe { put(canAccessPeer, 0) }
    })
}

// ---------------------------------------------------------------------------------------------
// Contexts
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    entry("cuDevicePrimaryCtxRetain", || {
        with_state(|st| {
            check_device(dev)?;
            // SAFETY: the caller passes a writable CUcontext (null is refused).
            unsafe { put(pctx, handle(PRIMARY_CTX)) }?;
            st.primary_retains += 1;
            Ok(())
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    entry("cuDevicePrimaryCtxRelease_v2", || {
        with_state(|st| {
            check_device(dev)?;
            if st.primary_retains == 0 {
                return Err(Failure::new(CUDA_ERROR_INVALID_CONTEXT, "primary context released more often than retained"));
            }
            // At zero a real driver destroys the context and its allocations; here memory stays
            // (cudarc only releases after dropping everything it allocated).
            st.primary_retains -= 1;
            Ok(())
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) -> CUresult {
    entry("cuDevicePrimaryCtxGetState", || {
        let (f, a) = with_state(|st| {
            check_device(dev)?;
            Ok((st.primary_flags, c_int::from(st.primary_retains > 0)))
        })?;
        // SAFETY: the caller passes a writable uint and int (null is refused).
        unsafe {
            put(flags, f)?;
            put(active, a)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) -> CUresult {
    entry("cuDevicePrimaryCtxSetFlags_v2", || {
        with_state(|st| {
            check_device(dev)?;
            st.primary_flags = flags;
            Ok(())
        })
    })
}

fn create_context(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> Result<(), Failure> {
    let h = with_state(|st| {
        check_device(dev)?;
        let h = st.new_handle();
        // SAFETY: the entry point's caller passes a writable CUcontext (null is refused).
        unsafe { put(pctx, handle(h)) }?;
        st.contexts.insert(h);
        st.ctx_flags = flags;
        Ok(h)
    })?;
    // cuCtxCreate makes the new context current.
    CONTEXT_STACK.with(|s| s.borrow_mut().push(h));
    Ok(())
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v2(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> CUresult {
    entry("cuCtxCreate_v2", || create_context(pctx, flags, dev))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v3(
    pctx: *mut CUcontext,
    _paramsArray: *mut c_void,
    _numParams: c_int,
    flags: c_uint,
    dev: CUdevice,
) -> CUresult {
    entry("cuCtxCreate_v3", || create_context(pctx, flags, dev))
}

/// `ctxCreateParams` (execution affinity, CUDA-in-graphics) is ignored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxCreate_v4(pctx: *mut CUcontext, _ctxCreateParams: *mut c_void, flags: c_uint, dev: CUdevice) -> CUresult {
    entry("cuCtxCreate_v4", || create_context(pctx, flags, dev))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxDestroy_v2(ctx: CUcontext) -> CUresult {
    entry("cuCtxDestroy_v2", || {
        let h = ctx.addr();
        with_state(|st| {
            if h == PRIMARY_CTX {
                return Err(Failure::new(CUDA_ERROR_INVALID_CONTEXT, "the primary context is released, not destroyed"));
            }
            if !st.contexts.remove(&h) {
                return Err(Failure::new(CUDA_ERROR_INVALID_CONTEXT, format!("unknown context {h:#x}")));
            }
            Ok(())
        })?;
        CONTEXT_STACK.with(|s| s.borrow_mut().retain(|&c| c != h));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    entry("cuCtxSetCurrent", || {
        let h = ctx.addr();
        if h != 0 {
            with_state(|st| st.check_context(h))?;
        }
        CONTEXT_STACK.with(|s| {
            let mut s = s.borrow_mut();
            s.pop();
            if h != 0 {
                s.push(h);
            }
        });
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult {
    entry("cuCtxGetCurrent", || {
        with_state(|_| Ok(()))?;
        // SAFETY: the caller passes a writable CUcontext (null is refused).
        unsafe { put(pctx, handle(current_context())) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(ctx: CUcontext) -> CUresult {
    entry("cuCtxPushCurrent_v2", || {
        let h = ctx.addr();
        with_state(|st| st.check_context(h))?;
        CONTEXT_STACK.with(|s| s.borrow_mut().push(h));
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut CUcontext) -> CUresult {
    entry("cuCtxPopCurrent_v2", || {
        with_state(|_| Ok(()))?;
        let popped = CONTEXT_STACK
            .with(|s| s.borrow_mut().pop())
            .ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_CONTEXT, "no current context to pop"))?;
        if !pctx.is_null() {
            // SAFETY: the caller passes a writable CUcontext or null (checked).
            unsafe { put(pctx, handle(popped)) }?;
        }
        Ok(())
    })
}

/// Device memory is one space for all contexts, so there is only one device to report.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CUresult {
    entry("cuCtxGetDevice", || {
        with_state(|_| Ok(()))?;
        // SAFETY: the caller passes a writable CUdevice (null is refused).
        unsafe { put(device, 0) }
    })
}

/// Nothing is ever pending: every call completed its work before returning.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSynchronize() -> CUresult {
    entry("cuCtxSynchronize", || with_state(|_| Ok(())))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSetFlags(flags: c_uint) -> CUresult {
    entry("cuCtxSetFlags", || {
        with_state(|st| {
            st.ctx_flags = flags;
            Ok(())
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetFlags(flags: *mut c_uint) -> CUresult {
    entry("cuCtxGetFlags", || {
        let f = with_state(|st| Ok(st.ctx_flags))?;
        // SAFETY: the caller passes a writable uint (null is refused).
        unsafe { put(flags, f) }
    })
}

fn limit_index(limit: c_uint) -> Result<usize, Failure> {
    let i = limit as usize;
    if i < 10 { Ok(i) } else { Err(Failure::new(CUDA_ERROR_UNSUPPORTED_LIMIT, format!("no context limit {limit}"))) }
}

/// Limits are stored and reported back; the interpreter does not enforce them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetLimit(pvalue: *mut usize, limit: c_uint) -> CUresult {
    entry("cuCtxGetLimit", || {
        let v = with_state(|st| Ok(st.limits[limit_index(limit)?]))?;
        // SAFETY: the caller passes a writable size_t (null is refused).
        unsafe { put(pvalue, v) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSetLimit(limit: c_uint, value: usize) -> CUresult {
    entry("cuCtxSetLimit", || {
        with_state(|st| {
            st.limits[limit_index(limit)?] = value;
            Ok(())
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetCacheConfig(pconfig: *mut c_uint) -> CUresult {
    entry("cuCtxGetCacheConfig", || {
        let c = with_state(|st| Ok(st.cache_config))?;
        // SAFETY: the caller passes a writable CUfunc_cache (null is refused).
        unsafe { put(pconfig, c) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxSetCacheConfig(config: c_uint) -> CUresult {
    entry("cuCtxSetCacheConfig", || {
        if config > 3 {
            return Err(invalid(format!("no cache configuration {config}")));
        }
        with_state(|st| {
            st.cache_config = config;
            Ok(())
        })
    })
}

/// An H100's range: 0 (least) to -5 (greatest). Priorities are recorded, not acted on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(leastPriority: *mut c_int, greatestPriority: *mut c_int) -> CUresult {
    entry("cuCtxGetStreamPriorityRange", || {
        with_state(|_| Ok(()))?;
        // SAFETY: each pointer is writable or null (checked).
        unsafe {
            if !leastPriority.is_null() {
                put(leastPriority, 0)?;
            }
            if !greatestPriority.is_null() {
                put(greatestPriority, -5)?;
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

fn create_stream(phStream: *mut CUstream, flags: c_uint, priority: c_int) -> Result<(), Failure> {
    if flags > 1 {
        return Err(invalid(format!("stream flags {flags:#x}")));
    }
    let ctx = current_context();
    with_state(|st| {
        let h = st.new_handle();
        // SAFETY: the entry point's caller passes a writable CUstream (null is refused).
        unsafe { put(phStream, handle(h)) }?;
        st.streams.insert(h, Stream { flags, priority: priority.clamp(-5, 0), ctx });
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreate(phStream: *mut CUstream, Flags: c_uint) -> CUresult {
    entry("cuStreamCreate", || create_stream(phStream, Flags, 0))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamCreateWithPriority(phStream: *mut CUstream, flags: c_uint, priority: c_int) -> CUresult {
    entry("cuStreamCreateWithPriority", || create_stream(phStream, flags, priority))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamDestroy_v2(hStream: CUstream) -> CUresult {
    entry("cuStreamDestroy_v2", || {
        with_state(|st| {
            let h = hStream.addr();
            st.streams.remove(&h).map(|_| ()).ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("unknown stream {h:#x}")))
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamSynchronize(hStream: CUstream) -> CUresult {
    entry("cuStreamSynchronize", || with_state(|st| st.check_stream(hStream)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamQuery(hStream: CUstream) -> CUresult {
    entry("cuStreamQuery", || with_state(|st| st.check_stream(hStream)))
}

/// Work recorded in the event has already completed, so there is nothing to wait for.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamWaitEvent(hStream: CUstream, hEvent: CUevent, _Flags: c_uint) -> CUresult {
    entry("cuStreamWaitEvent", || {
        with_state(|st| {
            st.check_stream(hStream)?;
            st.event(hEvent).map(|_| ())
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetFlags(hStream: CUstream, flags: *mut c_uint) -> CUresult {
    entry("cuStreamGetFlags", || {
        let f = with_state(|st| {
            st.check_stream(hStream)?;
            Ok(st.streams.get(&hStream.addr()).map_or(0, |s| s.flags))
        })?;
        // SAFETY: the caller passes a writable uint (null is refused).
        unsafe { put(flags, f) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetPriority(hStream: CUstream, priority: *mut c_int) -> CUresult {
    entry("cuStreamGetPriority", || {
        let p = with_state(|st| {
            st.check_stream(hStream)?;
            Ok(st.streams.get(&hStream.addr()).map_or(0, |s| s.priority))
        })?;
        // SAFETY: the caller passes a writable int (null is refused).
        unsafe { put(priority, p) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamGetCtx(hStream: CUstream, pctx: *mut CUcontext) -> CUresult {
    entry("cuStreamGetCtx", || {
        let current = current_context();
        let c = with_state(|st| {
            st.check_stream(hStream)?;
            Ok(st.streams.get(&hStream.addr()).map_or(current, |s| s.ctx))
        })?;
        // SAFETY: the caller passes a writable CUcontext (null is refused).
        unsafe { put(pctx, handle(c)) }
    })
}

/// Stream capture is not supported, so no stream is ever capturing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuStreamIsCapturing(hStream: CUstream, captureStatus: *mut c_uint) -> CUresult {
    entry("cuStreamIsCapturing", || {
        with_state(|st| st.check_stream(hStream))?;
        // SAFETY: the caller passes a writable CUstreamCaptureStatus (null is refused).
        unsafe { put(captureStatus, 0) }
    })
}

/// Runs the callback now: everything enqueued before it has already completed. The state lock is
/// not held, so a callback that (against the API's rules) calls the driver does not deadlock.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchHostFunc(hStream: CUstream, fn_: CUhostFn, userData: *mut c_void) -> CUresult {
    entry("cuLaunchHostFunc", || {
        with_state(|st| st.check_stream(hStream))?;
        let f = fn_.ok_or_else(|| invalid("null host function"))?;
        // SAFETY: the caller guarantees `f` may be called with `userData` once the stream's
        // earlier work is done, which it is.
        unsafe { f(userData) };
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventCreate(phEvent: *mut CUevent, Flags: c_uint) -> CUresult {
    entry("cuEventCreate", || {
        if Flags & !0x7 != 0 {
            return Err(invalid(format!("event flags {Flags:#x}")));
        }
        with_state(|st| {
            let h = st.new_handle();
            // SAFETY: the caller passes a writable CUevent (null is refused).
            unsafe { put(phEvent, handle(h)) }?;
            st.events.insert(h, Event { flags: Flags, recorded: None });
            Ok(())
        })
    })
}

/// Everything enqueued before has completed, so the event completes now: it takes this instant.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventRecord(hEvent: CUevent, hStream: CUstream) -> CUresult {
    entry("cuEventRecord", || {
        with_state(|st| {
            st.check_stream(hStream)?;
            st.event(hEvent)?.recorded = Some(Instant::now());
            Ok(())
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventRecordWithFlags(hEvent: CUevent, hStream: CUstream, _flags: c_uint) -> CUresult {
    // SAFETY: same contract as cuEventRecord.
    unsafe { cuEventRecord(hEvent, hStream) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventQuery(hEvent: CUevent) -> CUresult {
    entry("cuEventQuery", || with_state(|st| st.event(hEvent).map(|_| ())))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventSynchronize(hEvent: CUevent) -> CUresult {
    entry("cuEventSynchronize", || with_state(|st| st.event(hEvent).map(|_| ())))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventDestroy_v2(hEvent: CUevent) -> CUresult {
    entry("cuEventDestroy_v2", || {
        with_state(|st| {
            let h = hEvent.addr();
            st.events.remove(&h).map(|_| ()).ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("unknown event {h:#x}")))
        })
    })
}

/// Wall-clock milliseconds between the two recordings (what a launch took to interpret, not
/// what a GPU would take). Like the real driver: both events must have been recorded and created
/// without `CU_EVENT_DISABLE_TIMING`, else `CUDA_ERROR_INVALID_HANDLE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuEventElapsedTime(pMilliseconds: *mut f32, hStart: CUevent, hEnd: CUevent) -> CUresult {
    entry("cuEventElapsedTime", || {
        let ms = with_state(|st| {
            let mut instant = |e: CUevent| -> Result<Instant, Failure> {
                let ev = st.event(e)?;
                if ev.flags & EVENT_DISABLE_TIMING != 0 {
                    return Err(Failure::new(CUDA_ERROR_INVALID_HANDLE, "event created with CU_EVENT_DISABLE_TIMING"));
                }
                ev.recorded.ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, "event never recorded"))
            };
            let (start, end) = (instant(hStart)?, instant(hEnd)?);
            Ok(if end >= start { (end - start).as_secs_f64() * 1e3 } else { -((start - end).as_secs_f64() * 1e3) })
        })?;
        // SAFETY: the caller passes a writable float (null is refused).
        unsafe { put(pMilliseconds, ms as f32) }
    })
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// Zero bytes is `CUDA_ERROR_INVALID_VALUE`, as with the real cuMemAlloc.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult {
    entry("cuMemAlloc_v2", || {
        if bytesize == 0 {
            return Err(invalid("allocation of 0 bytes"));
        }
        with_state(|st| {
            if dptr.is_null() {
                return Err(invalid("null output pointer"));
            }
            let addr = st.alloc(bytesize)?;
            // SAFETY: the caller passes a writable CUdeviceptr (checked non-null above).
            unsafe { put(dptr, addr) }
        })
    })
}

/// Zero bytes gives the null pointer (which cuMemFreeAsync accepts): cudarc's
/// `CudaStream::null()` allocates an empty buffer this way.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytesize: usize, hStream: CUstream) -> CUresult {
    entry("cuMemAllocAsync", || {
        with_state(|st| {
            st.check_stream(hStream)?;
            if dptr.is_null() {
                return Err(invalid("null output pointer"));
            }
            let addr = if bytesize == 0 { 0 } else { st.alloc(bytesize)? };
            // SAFETY: the caller passes a writable CUdeviceptr (checked non-null above).
            unsafe { put(dptr, addr) }
        })
    })
}

fn free(dptr: CUdeviceptr) -> Result<(), Failure> {
    with_state(|st| if dptr == 0 { Ok(()) } else { st.mem.free(dptr).map_err(copy_error) })
}

/// Freeing null succeeds (nothing to free); anything not returned by an allocation is
/// `CUDA_ERROR_INVALID_VALUE`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    entry("cuMemFree_v2", || free(dptr))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, hStream: CUstream) -> CUresult {
    entry("cuMemFreeAsync", || {
        with_state(|st| st.check_stream(hStream))?;
        free(dptr)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    entry("cuMemGetInfo_v2", || {
        let f = with_state(|st| Ok(st.free_bytes()))?;
        // SAFETY: the caller passes two writable size_t (null is refused).
        unsafe {
            put(free, f as usize)?;
            put(total, TOTAL_MEMORY as usize)
        }
    })
}

/// # Safety
/// `src` is null or readable for `n` bytes.
unsafe fn htod(dst: CUdeviceptr, src: *const c_void, n: usize, stream: Option<CUstream>) -> Result<(), Failure> {
    with_state(|st| {
        if let Some(s) = stream {
            st.check_stream(s)?;
        }
        if n == 0 {
            return Ok(());
        }
        check_len(n)?;
        if src.is_null() {
            return Err(invalid("null host source"));
        }
        // SAFETY: non-null, and readable for `n` bytes by this function's contract.
        let data = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), n) };
        st.mem.write(dst, data).map_err(copy_error)
    })
}

/// Reads into a buffer of our own first: the host destination may be uninitialised memory
/// (cudarc's `clone_dtoh` hands over a `Vec` with unset contents), which must not be viewed as
/// a `&mut [u8]`.
///
/// # Safety
/// `dst` is null or writable for `n` bytes.
unsafe fn dtoh(dst: *mut c_void, src: CUdeviceptr, n: usize, stream: Option<CUstream>) -> Result<(), Failure> {
    let data = with_state(|st| {
        if let Some(s) = stream {
            st.check_stream(s)?;
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        check_len(n)?;
        if dst.is_null() {
            return Err(invalid("null host destination"));
        }
        let mut data = vec![0u8; n];
        st.mem.read(src, &mut data).map_err(copy_error)?;
        Ok(data)
    })?;
    if n > 0 {
        // SAFETY: `dst` is non-null (checked) and writable for `n` bytes by this function's
        // contract; `data` is our own buffer, so the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst.cast::<u8>(), n) };
    }
    Ok(())
}

fn dtod(dst: CUdeviceptr, src: CUdeviceptr, n: usize, stream: Option<CUstream>) -> Result<(), Failure> {
    with_state(|st| {
        if let Some(s) = stream {
            st.check_stream(s)?;
        }
        if n == 0 {
            return Ok(());
        }
        check_len(n)?;
        st.mem.copy(dst, src, n).map_err(copy_error)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dstDevice: CUdeviceptr, srcHost: *const c_void, ByteCount: usize) -> CUresult {
    // SAFETY: the caller's host buffer holds `ByteCount` bytes.
    entry("cuMemcpyHtoD_v2", || unsafe { htod(dstDevice, srcHost, ByteCount, None) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dstDevice: CUdeviceptr,
    srcHost: *const c_void,
    ByteCount: usize,
    hStream: CUstream,
) -> CUresult {
    // SAFETY: the caller's host buffer holds `ByteCount` bytes.
    entry("cuMemcpyHtoDAsync_v2", || unsafe { htod(dstDevice, srcHost, ByteCount, Some(hStream)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dstHost: *mut c_void, srcDevice: CUdeviceptr, ByteCount: usize) -> CUresult {
    // SAFETY: the caller's host buffer has room for `ByteCount` bytes.
    entry("cuMemcpyDtoH_v2", || unsafe { dtoh(dstHost, srcDevice, ByteCount, None) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dstHost: *mut c_void,
    srcDevice: CUdeviceptr,
    ByteCount: usize,
    hStream: CUstream,
) -> CUresult {
    // SAFETY: the caller's host buffer has room for `ByteCount` bytes.
    entry("cuMemcpyDtoHAsync_v2", || unsafe { dtoh(dstHost, srcDevice, ByteCount, Some(hStream)) })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dstDevice: CUdeviceptr, srcDevice: CUdeviceptr, ByteCount: usize) -> CUresult {
    entry("cuMemcpyDtoD_v2", || dtod(dstDevice, srcDevice, ByteCount, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(
    dstDevice: CUdeviceptr,
    srcDevice: CUdeviceptr,
    ByteCount: usize,
    hStream: CUstream,
) -> CUresult {
    entry("cuMemcpyDtoDAsync_v2", || dtod(dstDevice, srcDevice, ByteCount, Some(hStream)))
}

/// All contexts share the one device memory, so a peer copy is a device-to-device copy.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyPeer(
    dstDevice: CUdeviceptr,
    dstContext: CUcontext,
    srcDevice: CUdeviceptr,
    srcContext: CUcontext,
    ByteCount: usize,
) -> CUresult {
    entry("cuMemcpyPeer", || {
        with_state(|st| {
            st.check_context(dstContext.addr())?;
            st.check_context(srcContext.addr())
        })?;
        dtod(dstDevice, srcDevice, ByteCount, None)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemcpyPeerAsync(
    dstDevice: CUdeviceptr,
    dstContext: CUcontext,
    srcDevice: CUdeviceptr,
    srcContext: CUcontext,
    ByteCount: usize,
    hStream: CUstream,
) -> CUresult {
    entry("cuMemcpyPeerAsync", || {
        with_state(|st| {
            st.check_context(dstContext.addr())?;
            st.check_context(srcContext.addr())
        })?;
        dtod(dstDevice, srcDevice, ByteCount, Some(hStream))
    })
}

/// Fills `n` elements of `pattern` at `dst`, which must be aligned to the element size like on a
/// GPU. The whole range is checked before anything is written.
fn memset(dst: CUdeviceptr, pattern: &[u8], n: usize, stream: Option<CUstream>) -> Result<(), Failure> {
    with_state(|st| {
        if let Some(s) = stream {
            st.check_stream(s)?;
        }
        if n == 0 {
            return Ok(());
        }
        if !dst.is_multiple_of(pattern.len() as u64) {
            return Err(invalid(format!("address {dst:#x} is not aligned to {} bytes", pattern.len())));
        }
        let bytes = n.checked_mul(pattern.len()).ok_or_else(|| invalid(format!("{n} elements is too many")))?;
        check_len(bytes)?;
        if pattern.iter().all(|&b| b == pattern[0]) {
            st.mem.fill(dst, pattern[0], bytes).map_err(copy_error)
        } else {
            st.mem.write(dst, &pattern.repeat(n)).map_err(copy_error)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD8_v2(dstDevice: CUdeviceptr, uc: c_uchar, N: usize) -> CUresult {
    entry("cuMemsetD8_v2", || memset(dstDevice, &[uc], N, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD8Async(dstDevice: CUdeviceptr, uc: c_uchar, N: usize, hStream: CUstream) -> CUresult {
    entry("cuMemsetD8Async", || memset(dstDevice, &[uc], N, Some(hStream)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD16_v2(dstDevice: CUdeviceptr, us: c_ushort, N: usize) -> CUresult {
    entry("cuMemsetD16_v2", || memset(dstDevice, &us.to_le_bytes(), N, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD16Async(dstDevice: CUdeviceptr, us: c_ushort, N: usize, hStream: CUstream) -> CUresult {
    entry("cuMemsetD16Async", || memset(dstDevice, &us.to_le_bytes(), N, Some(hStream)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD32_v2(dstDevice: CUdeviceptr, ui: c_uint, N: usize) -> CUresult {
    entry("cuMemsetD32_v2", || memset(dstDevice, &ui.to_le_bytes(), N, None))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuMemsetD32Async(dstDevice: CUdeviceptr, ui: c_uint, N: usize, hStream: CUstream) -> CUresult {
    entry("cuMemsetD32Async", || memset(dstDevice, &ui.to_le_bytes(), N, Some(hStream)))
}

// ---------------------------------------------------------------------------------------------
// Modules and functions
// ---------------------------------------------------------------------------------------------

/// The PTX `.version` as major * 10 + minor (0 when absent).
fn ptx_version(text: &str) -> c_int {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(".version"))
        .find_map(|v| {
            let (major, minor) = v.trim().split_once('.')?;
            Some(major.parse::<c_int>().ok()? * 10 + minor.trim().parse::<c_int>().ok()?)
        })
        .unwrap_or(0)
}

/// Parses a module image. Only PTX text is understood: a cubin or fatbin is refused with
/// `CUDA_ERROR_INVALID_IMAGE` rather than misread.
fn load_module(pmodule: *mut CUmodule, image: &[u8]) -> Result<(), Failure> {
    with_state(|_| Ok(()))?;
    if image.starts_with(b"\x7fELF") || image.starts_with(&0xba55_ed50u32.to_le_bytes()) || image.starts_with(&0x4662_43b1u32.to_le_bytes())
    {
        return Err(Failure::new(CUDA_ERROR_INVALID_IMAGE, "a cubin or fatbin image: the simulator runs PTX text only"));
    }
    let text = std::str::from_utf8(image).map_err(|e| Failure::new(CUDA_ERROR_INVALID_IMAGE, format!("the image is not PTX text: {e}")))?;
    // Parse without holding the lock: other threads' calls need not wait for it.
    let module = Module::parse(text).map_err(load_error)?;
    let ptx_version = ptx_version(text);
    with_state(|st| {
        let h = st.new_handle();
        // SAFETY: the entry point's caller passes a writable CUmodule (null is refused).
        unsafe { put(pmodule, handle(h)) }?;
        st.modules.insert(h, LoadedModule { module, ptx_version, functions: HashMap::new() });
        Ok(())
    })
}

/// `image` is NUL-terminated PTX text (what cudarc passes for `Ptx::from_src`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult {
    entry("cuModuleLoadData", || {
        if image.is_null() {
            return Err(invalid("null image"));
        }
        // SAFETY: the caller passes a NUL-terminated image (PTX text); reading stops at the NUL.
        let bytes = unsafe { CStr::from_ptr(image.cast::<c_char>()) }.to_bytes();
        load_module(module, bytes)
    })
}

/// JIT options are ignored: there is no compilation step to tune.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut CUmodule,
    image: *const c_void,
    _numOptions: c_uint,
    _options: *mut c_uint,
    _optionValues: *mut *mut c_void,
) -> CUresult {
    // SAFETY: same contract as cuModuleLoadData.
    unsafe { cuModuleLoadData(module, image) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleLoad(module: *mut CUmodule, fname: *const c_char) -> CUresult {
    entry("cuModuleLoad", || {
        if fname.is_null() {
            return Err(invalid("null file name"));
        }
        // SAFETY: the caller passes a NUL-terminated file name.
        let path = unsafe { CStr::from_ptr(fname) }.to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).map_err(|e| Failure::new(CUDA_ERROR_FILE_NOT_FOUND, format!("{path}: {e}")))?;
        load_module(module, &bytes)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleUnload(hmod: CUmodule) -> CUresult {
    entry("cuModuleUnload", || {
        with_state(|st| {
            let h = hmod.addr();
            let m = st.modules.remove(&h).ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("unknown module {h:#x}")))?;
            for f in m.functions.values() {
                st.functions.remove(f);
            }
            Ok(())
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuModuleGetFunction(hfunc: *mut CUfunction, hmod: CUmodule, name: *const c_char) -> CUresult {
    entry("cuModuleGetFunction", || {
        if name.is_null() {
            return Err(invalid("null function name"));
        }
        // SAFETY: the caller passes a NUL-terminated name.
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
        with_state(|st| {
            let mh = hmod.addr();
            let m = st.modules.get(&mh).ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("unknown module {mh:#x}")))?;
            let fh = match m.functions.get(&name) {
                Some(&fh) => fh,
                None => {
                    let param_sizes = m
                        .module
                        .entry_param_sizes(&name)
                        .ok_or_else(|| Failure::new(CUDA_ERROR_NOT_FOUND, format!("no .entry {name} in the module")))?;
                    let static_shared = m.module.static_shared_bytes(&name).unwrap_or(0);
                    let fh = st.new_handle();
                    st.functions.insert(
                        fh,
                        Function {
                            module: mh,
                            entry: name.clone(),
                            param_sizes,
                            static_shared,
                            max_dynamic_shared: SHARED_PER_BLOCK_DEFAULT.saturating_sub(static_shared),
                            carveout: -1,
                        },
                    );
                    st.modules.get_mut(&mh).expect("looked up above").functions.insert(name, fh);
                    fh
                }
            };
            // SAFETY: the caller passes a writable CUfunction (null is refused).
            unsafe { put(hfunc, handle(fh)) }
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncGetAttribute(pi: *mut c_int, attrib: c_uint, hfunc: CUfunction) -> CUresult {
    entry("cuFuncGetAttribute", || {
        let value = with_state(|st| {
            let f = st.function(hfunc)?;
            Ok(match attrib {
                0 => MAX_THREADS_PER_BLOCK as c_int,                         // MAX_THREADS_PER_BLOCK
                1 => f.static_shared as c_int,                               // SHARED_SIZE_BYTES
                2 | 3 => 0,                                                  // CONST_SIZE_BYTES, LOCAL_SIZE_BYTES
                4 => 32,                                                     // NUM_REGS: no register allocation here
                5 => st.modules.get(&f.module).map_or(0, |m| m.ptx_version), // PTX_VERSION
                6 => 90,                                                     // BINARY_VERSION: sm_90
                7 => 0,                                                      // CACHE_MODE_CA
                8 => f.max_dynamic_shared as c_int,                          // MAX_DYNAMIC_SHARED_SIZE_BYTES
                9 => f.carveout,                                             // PREFERRED_SHARED_MEMORY_CARVEOUT
                10..=15 => 0,                                                // cluster attributes
                _ => return Err(invalid(format!("no function attribute {attrib}"))),
            })
        })?;
        // SAFETY: the caller passes a writable int (null is refused).
        unsafe { put(pi, value) }
    })
}

/// `MAX_DYNAMIC_SHARED_SIZE_BYTES` is checked against the opt-in limit and then enforced at
/// launch, as on a GPU, so a missing opt-in fails here too. Cluster attributes are accepted and
/// ignored; read-only attributes are refused.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncSetAttribute(hfunc: CUfunction, attrib: c_uint, value: c_int) -> CUresult {
    entry("cuFuncSetAttribute", || {
        with_state(|st| {
            let h = hfunc.addr();
            let f = st.functions.get_mut(&h).ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("unknown function {h:#x}")))?;
            match attrib {
                8 => {
                    let limit = SHARED_PER_BLOCK_OPTIN.saturating_sub(f.static_shared);
                    match usize::try_from(value) {
                        Ok(v) if v <= limit => f.max_dynamic_shared = v,
                        _ => {
                            return Err(invalid(format!(
                                "{}: {value} bytes of dynamic shared memory; at most {limit} (232448 minus {} static)",
                                f.entry, f.static_shared
                            )));
                        }
                    }
                }
                9 => {
                    if !(-1..=100).contains(&value) {
                        return Err(invalid(format!("shared memory carveout {value}")));
                    }
                    f.carveout = value;
                }
                10..=15 => {}
                _ => return Err(invalid(format!("function attribute {attrib} cannot be set"))),
            }
            Ok(())
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncSetCacheConfig(hfunc: CUfunction, config: c_uint) -> CUresult {
    entry("cuFuncSetCacheConfig", || {
        if config > 3 {
            return Err(invalid(format!("no cache configuration {config}")));
        }
        with_state(|st| st.function(hfunc).map(|_| ()))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuFuncSetSharedMemConfig(hfunc: CUfunction, _config: c_uint) -> CUresult {
    entry("cuFuncSetSharedMemConfig", || with_state(|st| st.function(hfunc).map(|_| ())))
}

// ---------------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------------

/// Refuses what a GPU refuses, so that a geometry bug shows up in the simulator too.
fn check_geometry(grid: [u32; 3], block: [u32; 3]) -> Result<(), Failure> {
    let grid_max = [i32::MAX as u32, 65535, 65535];
    let block_max = [1024, 1024, 64];
    if (0..3).any(|i| grid[i] == 0 || grid[i] > grid_max[i]) {
        return Err(invalid(format!("grid {grid:?}: each dimension must be 1..={grid_max:?}")));
    }
    if (0..3).any(|i| block[i] == 0 || block[i] > block_max[i]) {
        return Err(invalid(format!("block {block:?}: each dimension must be 1..={block_max:?}")));
    }
    let threads = block.iter().map(|&b| u64::from(b)).product::<u64>();
    if threads > u64::from(MAX_THREADS_PER_BLOCK) {
        return Err(invalid(format!("block {block:?} has {threads} threads; at most {MAX_THREADS_PER_BLOCK}")));
    }
    Ok(())
}

/// # Safety
/// `kernelParams` is null or points to one readable pointer per parameter of the function, each
/// to that parameter's bytes.
unsafe fn launch(
    f: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared: u32,
    stream: CUstream,
    kernelParams: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<(), Failure> {
    with_state(|st| {
        st.check_stream(stream)?;
        let func = st.function(f)?;
        if kernelParams.is_null() && !extra.is_null() {
            return Err(Failure::new(CUDA_ERROR_NOT_SUPPORTED, "parameters passed through `extra` are not supported"));
        }
        if !kernelParams.is_null() && !extra.is_null() {
            return Err(invalid("both kernelParams and extra given"));
        }
        if kernelParams.is_null() && !func.param_sizes.is_empty() {
            return Err(invalid(format!("{}: no parameters given, the kernel has {}", func.entry, func.param_sizes.len())));
        }
        check_geometry(grid, block)?;
        let dynamic = shared as usize;
        if dynamic > func.max_dynamic_shared {
            return Err(invalid(format!(
                "{}: {dynamic} bytes of dynamic shared memory, above the function's limit of {} \
                 (raise it with cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES))",
                func.entry, func.max_dynamic_shared
            )));
        }
        let mut params: Vec<Vec<u8>> = Vec::with_capacity(func.param_sizes.len());
        for (i, &size) in func.param_sizes.iter().enumerate() {
            // SAFETY: `kernelParams` is non-null here (checked above) and holds one pointer per
            // parameter by this function's contract.
            let p = unsafe { *kernelParams.add(i) };
            if p.is_null() {
                return Err(invalid(format!("{}: parameter {i} is a null pointer", func.entry)));
            }
            // SAFETY: by contract, parameter `i` points to `size` readable bytes (its PTX type's size).
            params.push(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), size) }.to_vec());
        }
        let entry = func.entry.clone();
        let module = &st
            .modules
            .get(&func.module)
            .ok_or_else(|| Failure::new(CUDA_ERROR_INVALID_HANDLE, format!("{entry}: its module was unloaded")))?
            .module;
        let dims = LaunchDims { grid, block, dynamic_shared: shared };
        let slices: Vec<&[u8]> = params.iter().map(Vec::as_slice).collect();
        let start = Instant::now();
        let mut profile = profile_path().map(|_| crate::profile::LaunchProfile::default());
        let options = crate::LaunchOptions { profile: profile.as_mut(), early_cp_async: early_cp_async() };
        let result = crate::launch_with(&mut st.mem, module, &entry, dims, &slices, options);
        if let (Some(p), Some(path), Ok(())) = (&profile, profile_path(), &result) {
            append_profile_line(path, &p.to_json(&entry, grid, block, shared))?;
        }
        if trace_enabled() {
            eprintln!(
                "ptxsim: launch {entry} grid={grid:?} block={block:?} dynamic_shared={shared} {:.3} ms{}",
                start.elapsed().as_secs_f64() * 1e3,
                if result.is_err() { " (failed)" } else { "" }
            );
        }
        result.map_err(launch_error)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuLaunchKernel(
    f: CUfunction,
    gridDimX: c_uint,
    gridDimY: c_uint,
    gridDimZ: c_uint,
    blockDimX: c_uint,
    blockDimY: c_uint,
    blockDimZ: c_uint,
    sharedMemBytes: c_uint,
    hStream: CUstream,
    kernelParams: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    entry("cuLaunchKernel", || {
        let grid = [gridDimX, gridDimY, gridDimZ];
        let block = [blockDimX, blockDimY, blockDimZ];
        // SAFETY: the caller passes one pointer per kernel parameter, as the driver API requires.
        unsafe { launch(f, grid, block, sharedMemBytes, hStream, kernelParams, extra) }
    })
}

// ---------------------------------------------------------------------------------------------
// Occupancy (a simple model of an H100 SM: threads, blocks and shared memory; no registers)
// ---------------------------------------------------------------------------------------------

/// Resident blocks per SM for blocks of `threads` threads using `shared` bytes of shared memory.
fn blocks_per_sm(threads: c_int, shared: usize) -> u32 {
    if threads <= 0 || threads as u32 > MAX_THREADS_PER_BLOCK || shared > SHARED_PER_BLOCK_OPTIN {
        return 0;
    }
    let warps = (threads as u32).div_ceil(32);
    let by_threads = MAX_THREADS_PER_SM / 32 / warps;
    let by_shared = (SHARED_PER_SM / (shared + SHARED_RESERVED_PER_BLOCK)) as u32;
    MAX_BLOCKS_PER_SM.min(by_threads).min(by_shared)
}

fn static_shared(f: CUfunction) -> Result<usize, Failure> {
    with_state(|st| Ok(st.function(f)?.static_shared))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    numBlocks: *mut c_int,
    func: CUfunction,
    blockSize: c_int,
    dynamicSMemSize: usize,
) -> CUresult {
    entry("cuOccupancyMaxActiveBlocksPerMultiprocessor", || {
        let s = static_shared(func)?;
        let n = blocks_per_sm(blockSize, s.saturating_add(dynamicSMemSize));
        // SAFETY: the caller passes a writable int (null is refused).
        unsafe { put(numBlocks, n as c_int) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    numBlocks: *mut c_int,
    func: CUfunction,
    blockSize: c_int,
    dynamicSMemSize: usize,
    _flags: c_uint,
) -> CUresult {
    // SAFETY: same contract as cuOccupancyMaxActiveBlocksPerMultiprocessor.
    unsafe { cuOccupancyMaxActiveBlocksPerMultiprocessor(numBlocks, func, blockSize, dynamicSMemSize) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    dynamicSmemSize: *mut usize,
    func: CUfunction,
    numBlocks: c_int,
    blockSize: c_int,
) -> CUresult {
    entry("cuOccupancyAvailableDynamicSMemPerBlock", || {
        let s = static_shared(func)?;
        let avail = if numBlocks <= 0 || blocks_per_sm(blockSize, s) < numBlocks as u32 {
            0
        } else {
            (SHARED_PER_SM / numBlocks as usize).saturating_sub(SHARED_RESERVED_PER_BLOCK).min(SHARED_PER_BLOCK_OPTIN).saturating_sub(s)
        };
        // SAFETY: the caller passes a writable size_t (null is refused).
        unsafe { put(dynamicSmemSize, avail) }
    })
}

/// The block size (a multiple of 32) with the most resident threads per SM, largest on ties.
/// The callback is called without the state lock held.
///
/// # Safety
/// `b2d` is null or callable with a block size.
unsafe fn potential_block_size(func: CUfunction, b2d: CUoccupancyB2DSize, dynamic: usize, limit: c_int) -> Result<(c_int, c_int), Failure> {
    let s = static_shared(func)?;
    let top = if limit <= 0 { MAX_THREADS_PER_BLOCK as c_int } else { limit.min(MAX_THREADS_PER_BLOCK as c_int) };
    let mut best = (0, 0u32); // (block size, blocks per SM)
    let mut size = top - top % 32;
    while size >= 32 {
        // SAFETY: by this function's contract the callback accepts a block size.
        let dyn_bytes = b2d.map_or(dynamic, |f| unsafe { f(size) });
        let blocks = blocks_per_sm(size, s.saturating_add(dyn_bytes));
        if blocks as i64 * size as i64 > best.1 as i64 * best.0 as i64 {
            best = (size, blocks);
        }
        size -= 32;
    }
    Ok((best.1 as c_int * SM_COUNT, best.0))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSize(
    minGridSize: *mut c_int,
    blockSize: *mut c_int,
    func: CUfunction,
    blockSizeToDynamicSMemSize: CUoccupancyB2DSize,
    dynamicSMemSize: usize,
    blockSizeLimit: c_int,
) -> CUresult {
    entry("cuOccupancyMaxPotentialBlockSize", || {
        // SAFETY: the caller's callback accepts a block size.
        let (grid, block) = unsafe { potential_block_size(func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit) }?;
        // SAFETY: the caller passes two writable ints (null is refused).
        unsafe {
            put(minGridSize, grid)?;
            put(blockSize, block)
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    minGridSize: *mut c_int,
    blockSize: *mut c_int,
    func: CUfunction,
    blockSizeToDynamicSMemSize: CUoccupancyB2DSize,
    dynamicSMemSize: usize,
    blockSizeLimit: c_int,
    _flags: c_uint,
) -> CUresult {
    // SAFETY: same contract as cuOccupancyMaxPotentialBlockSize.
    unsafe { cuOccupancyMaxPotentialBlockSize(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit) }
}

// ---------------------------------------------------------------------------------------------
// Profiler (nothing to profile) and what the simulator does not support
// ---------------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuProfilerStart() -> CUresult {
    entry("cuProfilerStart", || with_state(|_| Ok(())))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn cuProfilerStop() -> CUresult {
    entry("cuProfilerStop", || with_state(|_| Ok(())))
}

/// Declares entry points that cudarc can reach but the simulator does not implement: they answer
/// `CUDA_ERROR_NOT_SUPPORTED` with a note, where a missing symbol would make cudarc panic.
macro_rules! not_supported {
    ($($(#[$attr:meta])* fn $name:ident($($ty:ty),* $(,)?);)*) => {$(
        $(#[$attr])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($(_: $ty),*) -> CUresult {
            entry(stringify!($name), || {
                Err(Failure::new(CUDA_ERROR_NOT_SUPPORTED, "not supported by the simulator"))
            })
        }
    )*};
}

not_supported! {
    /// Managed (unified) memory.
    fn cuMemAllocManaged(*mut CUdeviceptr, usize, c_uint);
    fn cuMemPrefetchAsync_v2(CUdeviceptr, usize, CUmemLocation, c_uint, CUstream);
    fn cuMemAdvise_v2(CUdeviceptr, usize, c_uint, CUmemLocation);
    fn cuStreamAttachMemAsync(CUstream, CUdeviceptr, usize, c_uint);
    /// Page-locked host memory.
    fn cuMemHostAlloc(*mut *mut c_void, usize, c_uint);
    fn cuMemAllocHost_v2(*mut *mut c_void, usize);
    fn cuMemFreeHost(*mut c_void);
    fn cuMemHostRegister_v2(*mut c_void, usize, c_uint);
    fn cuMemHostUnregister(*mut c_void);
    /// Stream capture and graphs.
    fn cuStreamBeginCapture_v2(CUstream, c_uint);
    fn cuStreamEndCapture(CUstream, *mut CUgraph);
    fn cuGraphInstantiateWithFlags(*mut CUgraphExec, CUgraph, c_ulonglong);
    fn cuGraphLaunch(CUgraphExec, CUstream);
    fn cuGraphUpload(CUgraphExec, CUstream);
    fn cuGraphDestroy(CUgraph);
    fn cuGraphExecDestroy(CUgraphExec);
    /// Memory-pool objects (stream-ordered allocation itself is supported).
    fn cuDeviceGetDefaultMemPool(*mut CUmemoryPool, CUdevice);
    fn cuDeviceGetMemPool(*mut CUmemoryPool, CUdevice);
    fn cuDeviceSetMemPool(CUdevice, CUmemoryPool);
    fn cuMemPoolCreate(*mut CUmemoryPool, *const c_void);
    fn cuMemPoolDestroy(CUmemoryPool);
    fn cuMemPoolTrimTo(CUmemoryPool, usize);
    fn cuMemPoolGetAttribute(CUmemoryPool, c_uint, *mut c_void);
    fn cuMemPoolSetAttribute(CUmemoryPool, c_uint, *mut c_void);
    fn cuMemAllocFromPoolAsync(*mut CUdeviceptr, usize, CUmemoryPool, CUstream);
    /// External memory.
    fn cuImportExternalMemory(*mut CUexternalMemory, *const c_void);
    fn cuDestroyExternalMemory(CUexternalMemory);
    fn cuExternalMemoryGetMappedBuffer(*mut CUdeviceptr, CUexternalMemory, *const c_void);
    /// Module globals: the interpreter's `Module` does not expose `.global`/`.const` variables.
    fn cuModuleGetGlobal_v2(*mut CUdeviceptr, *mut usize, CUmodule, *const c_char);
    /// Cooperative launches: a grid-wide barrier cannot be interpreted one block at a time.
    fn cuLaunchCooperativeKernel(CUfunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, CUstream, *mut *mut c_void);
    /// Launches with attributes (clusters) and cluster occupancy.
    fn cuLaunchKernelEx(*const c_void, CUfunction, *mut *mut c_void, *mut *mut c_void);
    fn cuOccupancyMaxActiveClusters(*mut c_int, CUfunction, *const c_void);
    fn cuOccupancyMaxPotentialClusterSize(*mut c_int, CUfunction, *const c_void);
}

// ---------------------------------------------------------------------------------------------
// Tests (driver plumbing only; launches are tested with the interpreter)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn init() {
        assert_eq!(unsafe { cuInit(0) }, CUDA_SUCCESS);
    }

    fn alloc(bytes: usize) -> CUdeviceptr {
        let mut p: CUdeviceptr = 0;
        assert_eq!(unsafe { cuMemAlloc_v2(&mut p, bytes) }, CUDA_SUCCESS);
        assert_ne!(p, 0);
        p
    }

    #[test]
    fn device_queries() {
        init();
        let (mut count, mut dev, mut v) = (0, -1, 0);
        unsafe {
            assert_eq!(cuDeviceGetCount(&mut count), CUDA_SUCCESS);
            assert_eq!(cuDeviceGet(&mut dev, 0), CUDA_SUCCESS);
            assert_eq!(cuDeviceGet(&mut dev, 1), CUDA_ERROR_INVALID_DEVICE);
            assert_eq!(cuDriverGetVersion(&mut v), CUDA_SUCCESS);
        }
        assert_eq!((count, dev, v), (1, 0, 12080));

        let mut buf = [1 as c_char; 128];
        assert_eq!(unsafe { cuDeviceGetName(buf.as_mut_ptr(), 128, 0) }, CUDA_SUCCESS);
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(name.to_str().unwrap(), DEVICE_NAME);
        let mut short = [1 as c_char; 7];
        assert_eq!(unsafe { cuDeviceGetName(short.as_mut_ptr(), 7, 0) }, CUDA_SUCCESS);
        assert_eq!(unsafe { CStr::from_ptr(short.as_ptr()) }.to_str().unwrap(), "ptxsim");

        let attr = |a: c_uint| {
            let mut v = -7;
            assert_eq!(unsafe { cuDeviceGetAttribute(&mut v, a, 0) }, CUDA_SUCCESS, "attribute {a}");
            v
        };
        assert_eq!((attr(75), attr(76)), (9, 0));
        assert_eq!(attr(97), 232_448);
        assert_eq!(attr(8), 49_152);
        assert_eq!(attr(16), 132);
        assert_eq!(attr(115), 1);
        assert_eq!(attr(138), 0, "an attribute not modelled answers 0");
        let mut v = 0;
        assert_eq!(unsafe { cuDeviceGetAttribute(&mut v, 9999, 0) }, CUDA_ERROR_INVALID_VALUE);

        let mut total = 0;
        assert_eq!(unsafe { cuDeviceTotalMem_v2(&mut total, 0) }, CUDA_SUCCESS);
        assert_eq!(total as u64, TOTAL_MEMORY);
    }

    #[test]
    fn copies_round_trip_and_memsets_fill() {
        init();
        let p = alloc(64);
        let src: Vec<u8> = (0..64).collect();
        let mut back = vec![0u8; 64];
        unsafe {
            assert_eq!(cuMemcpyHtoD_v2(p, src.as_ptr().cast(), 64), CUDA_SUCCESS);
            assert_eq!(cuMemcpyDtoHAsync_v2(back.as_mut_ptr().cast(), p, 64, std::ptr::null_mut()), CUDA_SUCCESS);
        }
        assert_eq!(back, src);

        // Device to device, inside one allocation and between two.
        let q = alloc(64);
        unsafe {
            assert_eq!(cuMemcpyDtoDAsync_v2(q, p + 8, 16, std::ptr::null_mut()), CUDA_SUCCESS);
            assert_eq!(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), q, 16), CUDA_SUCCESS);
        }
        assert_eq!(&back[..16], &src[8..24]);

        unsafe {
            assert_eq!(cuMemsetD8Async(p, 0xab, 4, std::ptr::null_mut()), CUDA_SUCCESS);
            assert_eq!(cuMemsetD32_v2(p + 4, 0x1122_3344, 2), CUDA_SUCCESS);
            assert_eq!(cuMemsetD16_v2(p + 12, 0xbeef, 1), CUDA_SUCCESS);
            assert_eq!(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), p, 16), CUDA_SUCCESS);
        }
        assert_eq!(&back[..16], &[0xab, 0xab, 0xab, 0xab, 0x44, 0x33, 0x22, 0x11, 0x44, 0x33, 0x22, 0x11, 0xef, 0xbe, 14, 15]);
        assert_eq!(unsafe { cuMemsetD32_v2(p + 2, 0, 1) }, CUDA_ERROR_INVALID_VALUE, "misaligned");

        // Out of bounds is an error and leaves the memory alone; zero-length copies succeed.
        unsafe {
            assert_eq!(cuMemcpyHtoD_v2(p + 60, src.as_ptr().cast(), 8), CUDA_ERROR_INVALID_VALUE);
            assert_eq!(cuMemsetD8_v2(p + 60, 0, 5), CUDA_ERROR_INVALID_VALUE);
            assert_eq!(cuMemcpyHtoD_v2(p, std::ptr::null(), 0), CUDA_SUCCESS);
            assert_eq!(cuMemcpyDtoD_v2(0, 0, 0), CUDA_SUCCESS);
            assert_eq!(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), p + 56, 8), CUDA_SUCCESS);
        }
        assert_eq!(&back[..8], &src[56..64]);

        unsafe {
            assert_eq!(cuMemFree_v2(p), CUDA_SUCCESS);
            assert_eq!(cuMemFreeAsync(q, std::ptr::null_mut()), CUDA_SUCCESS);
            assert_eq!(cuMemFree_v2(p), CUDA_ERROR_INVALID_VALUE, "double free");
            assert_eq!(cuMemFree_v2(0x1234), CUDA_ERROR_INVALID_VALUE, "never allocated");
            assert_eq!(cuMemcpyDtoH_v2(back.as_mut_ptr().cast(), p, 1), CUDA_ERROR_INVALID_VALUE, "use after free");
        }
    }

    #[test]
    fn allocation_sizes() {
        init();
        let mut p: CUdeviceptr = 7;
        unsafe {
            assert_eq!(cuMemAlloc_v2(&mut p, 0), CUDA_ERROR_INVALID_VALUE);
            assert_eq!(cuMemAllocAsync(&mut p, 0, std::ptr::null_mut()), CUDA_SUCCESS);
            assert_eq!(p, 0);
            assert_eq!(cuMemFreeAsync(p, std::ptr::null_mut()), CUDA_SUCCESS);
            assert_eq!(cuMemAllocAsync(&mut p, 2 * TOTAL_MEMORY as usize, std::ptr::null_mut()), CUDA_ERROR_OUT_OF_MEMORY);
            assert_eq!(cuMemAllocAsync(&mut p, 16, handle(0xdead_0000)), CUDA_ERROR_INVALID_HANDLE);
        }
        let (mut free, mut total) = (0, 0);
        assert_eq!(unsafe { cuMemGetInfo_v2(&mut free, &mut total) }, CUDA_SUCCESS);
        assert!(free <= total && total as u64 == TOTAL_MEMORY);
    }

    #[test]
    fn contexts_and_streams() {
        init();
        let mut ctx = std::ptr::null_mut();
        let mut cur = std::ptr::null_mut();
        unsafe {
            assert_eq!(cuDevicePrimaryCtxRetain(&mut ctx, 0), CUDA_SUCCESS);
            assert_eq!(cuCtxSetCurrent(ctx), CUDA_SUCCESS);
            assert_eq!(cuCtxGetCurrent(&mut cur), CUDA_SUCCESS);
            assert_eq!(cur, ctx);
            assert_eq!(cuCtxSetCurrent(handle(0x42)), CUDA_ERROR_INVALID_CONTEXT);
            assert_eq!(cuCtxSynchronize(), CUDA_SUCCESS);
        }
        let mut s = std::ptr::null_mut();
        unsafe {
            assert_eq!(cuStreamCreate(&mut s, 1), CUDA_SUCCESS);
            assert_eq!(cuStreamSynchronize(s), CUDA_SUCCESS);
            assert_eq!(cuStreamQuery(s), CUDA_SUCCESS);
            assert_eq!(cuStreamDestroy_v2(s), CUDA_SUCCESS);
            assert_eq!(cuStreamDestroy_v2(s), CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(cuStreamSynchronize(s), CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(cuDevicePrimaryCtxRelease_v2(0), CUDA_SUCCESS);
        }

        extern "C" fn bump(data: *mut c_void) {
            // SAFETY: the test passes a pointer to its u32 counter.
            unsafe { *data.cast::<u32>() += 1 };
        }
        let mut calls = 0u32;
        let data = (&raw mut calls).cast::<c_void>();
        assert_eq!(unsafe { cuLaunchHostFunc(std::ptr::null_mut(), Some(bump), data) }, CUDA_SUCCESS);
        assert_eq!(calls, 1, "the host function runs at once");
    }

    #[test]
    fn events_time_wall_clock() {
        init();
        let (mut start, mut end, mut untimed) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        unsafe {
            assert_eq!(cuEventCreate(&mut start, 0), CUDA_SUCCESS);
            assert_eq!(cuEventCreate(&mut end, 0), CUDA_SUCCESS);
            assert_eq!(cuEventCreate(&mut untimed, EVENT_DISABLE_TIMING), CUDA_SUCCESS);
        }
        let mut ms = -1.0f32;
        assert_eq!(unsafe { cuEventElapsedTime(&mut ms, start, end) }, CUDA_ERROR_INVALID_HANDLE, "not recorded");
        unsafe {
            assert_eq!(cuEventRecord(start, std::ptr::null_mut()), CUDA_SUCCESS);
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert_eq!(cuEventRecord(end, std::ptr::null_mut()), CUDA_SUCCESS);
            assert_eq!(cuEventRecord(untimed, std::ptr::null_mut()), CUDA_SUCCESS);
            assert_eq!(cuEventSynchronize(end), CUDA_SUCCESS);
            assert_eq!(cuEventQuery(end), CUDA_SUCCESS);
            assert_eq!(cuStreamWaitEvent(std::ptr::null_mut(), end, 0), CUDA_SUCCESS);
            assert_eq!(cuEventElapsedTime(&mut ms, start, end), CUDA_SUCCESS);
        }
        assert!(ms >= 1.0, "{ms} ms");
        unsafe {
            assert_eq!(cuEventElapsedTime(&mut ms, start, untimed), CUDA_ERROR_INVALID_HANDLE);
            for e in [start, end, untimed] {
                assert_eq!(cuEventDestroy_v2(e), CUDA_SUCCESS);
            }
            assert_eq!(cuEventDestroy_v2(start), CUDA_ERROR_INVALID_HANDLE);
        }
    }

    #[test]
    fn error_names_and_strings() {
        let text = |f: unsafe extern "C" fn(CUresult, *mut *const c_char) -> CUresult, e: CUresult| {
            let mut p = std::ptr::null();
            assert_eq!(unsafe { f(e, &mut p) }, CUDA_SUCCESS);
            unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
        };
        assert_eq!(text(cuGetErrorName, CUDA_ERROR_ILLEGAL_ADDRESS), "CUDA_ERROR_ILLEGAL_ADDRESS");
        assert_eq!(text(cuGetErrorString, CUDA_ERROR_OUT_OF_MEMORY), "out of memory");
        assert_eq!(text(cuGetErrorString, CUresult(907)), "CUDA_ERROR_CAPTURED_EVENT");
        let mut p = std::ptr::null();
        assert_eq!(unsafe { cuGetErrorName(CUresult(12345), &mut p) }, CUDA_ERROR_INVALID_VALUE);
        assert!(p.is_null());
        assert_eq!(format!("{:?}", CUDA_ERROR_INVALID_PTX), "CUDA_ERROR_INVALID_PTX");
    }

    #[test]
    fn bad_handles_and_images_are_refused() {
        init();
        let mut m = std::ptr::null_mut();
        let mut f = std::ptr::null_mut();
        let elf = b"\x7fELF\x02\x01\x01\0";
        unsafe {
            assert_eq!(cuModuleLoadData(&mut m, elf.as_ptr().cast()), CUDA_ERROR_INVALID_IMAGE);
            assert_eq!(cuModuleGetFunction(&mut f, handle(0x77), c"k".as_ptr()), CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(cuModuleUnload(handle(0x77)), CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(
                cuLaunchKernel(handle(0x77), 1, 1, 1, 1, 1, 1, 0, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut()),
                CUDA_ERROR_INVALID_HANDLE
            );
            assert_eq!(cuFuncSetAttribute(handle(0x77), 8, 1024), CUDA_ERROR_INVALID_HANDLE);
            assert_eq!(cuGraphLaunch(std::ptr::null_mut(), std::ptr::null_mut()), CUDA_ERROR_NOT_SUPPORTED);
        }
    }

    #[test]
    fn launch_geometry_is_checked_like_a_gpu() {
        assert!(check_geometry([1, 1, 1], [1024, 1, 1]).is_ok());
        assert!(check_geometry([i32::MAX as u32, 65535, 65535], [32, 32, 1]).is_ok());
        assert!(check_geometry([1, 1, 1], [1025, 1, 1]).is_err());
        assert!(check_geometry([1, 1, 1], [64, 32, 1]).is_err());
        assert!(check_geometry([0, 1, 1], [1, 1, 1]).is_err());
        assert!(check_geometry([1, 65536, 1], [1, 1, 1]).is_err());
        assert!(check_geometry([1, 1, 1], [1, 1, 65]).is_err());
    }

    #[test]
    fn ptx_version_is_read() {
        assert_eq!(ptx_version("//\n.version 8.0\n.target sm_90\n"), 80);
        assert_eq!(ptx_version(".target sm_90\n"), 0);
    }

    #[test]
    fn occupancy_model() {
        assert_eq!(blocks_per_sm(256, 0), 8);
        assert_eq!(blocks_per_sm(1024, 0), 2);
        assert_eq!(blocks_per_sm(32, 0), 32);
        assert_eq!(blocks_per_sm(128, 100_000), 2);
        assert_eq!(blocks_per_sm(128, SHARED_PER_BLOCK_OPTIN + 1), 0);
    }
}
