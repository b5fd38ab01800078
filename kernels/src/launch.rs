//! The CUDA launcher (feature `cuda`): one [`GpuContext`] per device, a lazy per-context cache of
//! the embedded PTX modules, and the checked launch path every `<op>/cuda.rs` goes through.
//!
//! All cudarc calls of this crate live here (cudarc's API churns; one file to fix). cudarc is used
//! with dynamic loading, where a missing `libcuda` or symbol is a *panic*; [`GpuContext::new`]
//! therefore probes the library first and turns any panic during context creation into an error.
//!
//! Launch checking: [`Launch`] counts the arguments an op pushes and refuses to launch when the
//! count differs from the registry's; with `check_launches` on (the default in builds with debug
//! assertions, which includes `cargo test`) every launch is followed by a stream synchronise, so an
//! asynchronous fault is reported at the guilty kernel.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, DriverError, LaunchArgs,
    PushKernelArg, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, LaunchConfig};

use crate::registry::{ALL, EntrySpec, ModuleId};

/// Threads per block of every 1-D elementwise kernel (the PTX declares `.maxntid 256`).
pub const BLOCK_1D: u32 = 256;
/// Upper bound on the blocks of a 1-D grid-stride launch (enough to fill any current GPU).
pub const MAX_BLOCKS_1D: u64 = 65_536;

/// Everything that can go wrong on the GPU path. No GPU path panics on user input.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// `libcuda` could not be loaded (no NVIDIA driver, or it is not on the loader path).
    #[error(
        "CUDA unavailable: the driver library libcuda could not be loaded (no NVIDIA driver installed, or libcuda.so not on the loader path)"
    )]
    NoDriver,
    /// A CUDA driver call failed.
    #[error("CUDA device {ordinal} ({device}): {what}: {source}")]
    Driver {
        ordinal: usize,
        device: String,
        what: String,
        #[source]
        source: DriverError,
    },
    /// cudarc panicked inside a driver call (e.g. a symbol missing from an old libcuda).
    #[error("CUDA device {ordinal} ({device}): {what}: the driver binding panicked: {message}")]
    DriverPanic {
        ordinal: usize,
        device: String,
        what: String,
        message: String,
    },
    /// A `cuda.rs` pushed a different number of arguments than the registry records for the entry.
    #[error(
        "kernel {entry}: {pushed} arguments pushed, the registry (and the PTX) have {expected}"
    )]
    ArgCount {
        entry: &'static str,
        pushed: usize,
        expected: usize,
    },
    /// The registry has no such entry in the module (a bug in a `cuda.rs`).
    #[error("kernel {entry}: not an entry of module {module} in the registry")]
    UnknownEntry {
        module: &'static str,
        entry: &'static str,
    },
    /// The device has no room for an allocation (`CUDA_ERROR_OUT_OF_MEMORY`, or one injected by
    /// [`GpuContext::inject_out_of_memory_after`]). Nothing was allocated; earlier buffers and
    /// files are untouched.
    #[error(
        "CUDA device {ordinal} ({device}): out of memory {what} ({}; the device has {} free){}. \
         Lower micro_batch or seq_len, or free the memory other processes hold",
        mib(*.requested_bytes as u64),
        memory_info(*.free_bytes, *.total_bytes),
        if *.injected { " [injected by a test]" } else { "" }
    )]
    OutOfMemory {
        ordinal: usize,
        device: String,
        what: String,
        requested_bytes: usize,
        free_bytes: Option<usize>,
        total_bytes: Option<usize>,
        injected: bool,
    },
    /// Invalid arguments to a GPU op (lengths, ranges).
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    /// An optional vendor library (cuBLAS, used only as a benchmark yardstick) is missing or one
    /// of its calls failed.
    #[error("{lib}: {what}: {msg}")]
    Library {
        lib: &'static str,
        what: String,
        msg: String,
    },
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn memory_info(free: Option<usize>, total: Option<usize>) -> String {
    match (free, total) {
        (Some(f), Some(t)) => format!("{} of {}", mib(f as u64), mib(t as u64)),
        _ => "an unknown amount".into(),
    }
}

/// What a device says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for an H100.
    pub compute_capability: (i32, i32),
    /// `cuDriverGetVersion`, e.g. 12080 for CUDA 12.8.
    pub driver_version: i32,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cuda:{} {} (sm_{}{}), driver CUDA {}.{}",
            self.ordinal,
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10
        )
    }
}

/// One device: cudarc's context, its default stream, and the module cache.
pub struct GpuContext {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    name: String,
    modules: Mutex<[Option<Arc<CudaModule>>; ModuleId::COUNT]>,
    check_launches: bool,
    /// Allocations left before an injected out-of-memory ([`NO_INJECTED_OOM`]: none injected).
    oom_countdown: AtomicU64,
}

/// [`GpuContext::oom_countdown`] when no out-of-memory is injected.
const NO_INJECTED_OOM: u64 = u64::MAX;

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("check_launches", &self.check_launches)
            .finish()
    }
}

pub(crate) fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Runs a driver call, mapping its error and any panic of the binding to a [`GpuError`].
fn guarded<T>(
    ordinal: usize,
    device: &str,
    what: impl FnOnce() -> String,
    f: impl FnOnce() -> Result<T, DriverError>,
) -> Result<T, GpuError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(GpuError::Driver {
            ordinal,
            device: device.to_string(),
            what: what(),
            source,
        }),
        Err(p) => Err(GpuError::DriverPanic {
            ordinal,
            device: device.to_string(),
            what: what(),
            message: panic_message(p),
        }),
    }
}

/// A 1-D grid-stride launch over `n` elements: blocks of [`BLOCK_1D`] threads,
/// `min(ceil(n / 256), 65536)` blocks, at least one.
pub fn grid_1d(n: u64) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK_1D as u64).clamp(1, MAX_BLOCKS_1D) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK_1D, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl GpuContext {
    /// Opens device `ordinal`. Returns [`GpuError::NoDriver`] when libcuda cannot be loaded and a
    /// driver error when there is no such device; never panics.
    pub fn new(ordinal: usize) -> Result<Self, GpuError> {
        // SAFETY: only tries to dlopen the driver library and drops the handle.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(GpuError::NoDriver);
        }
        let unknown = "<device not opened>";
        let ctx = guarded(
            ordinal,
            unknown,
            || "creating the context".into(),
            || CudaContext::new(ordinal),
        )?;
        let name = guarded(
            ordinal,
            unknown,
            || "reading the device name".into(),
            || ctx.name(),
        )?;
        let stream = ctx.default_stream();
        Ok(Self {
            ctx,
            stream,
            ordinal,
            name,
            modules: Mutex::new([const { None }; ModuleId::COUNT]),
            check_launches: cfg!(debug_assertions),
            oom_countdown: AtomicU64::new(NO_INJECTED_OOM),
        })
    }

    /// Device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Device name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// cudarc's context (for the tensor crate's storage; ops should not need it).
    pub fn cuda_context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch of this context goes to (the context's default stream).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Whether every launch is followed by a synchronise and a check.
    pub fn check_launches(&self) -> bool {
        self.check_launches
    }

    /// Turns the synchronise-after-every-launch check on or off (on by default with debug
    /// assertions, off in release builds).
    pub fn set_check_launches(&mut self, on: bool) {
        self.check_launches = on;
    }

    pub(crate) fn driver<T>(
        &self,
        what: impl FnOnce() -> String,
        f: impl FnOnce() -> Result<T, DriverError>,
    ) -> Result<T, GpuError> {
        guarded(self.ordinal, &self.name, what, f)
    }

    /// Name, compute capability and driver version.
    pub fn device_info(&self) -> Result<DeviceInfo, GpuError> {
        let compute_capability = self.driver(
            || "reading the compute capability".into(),
            || self.ctx.compute_capability(),
        )?;
        let driver_version = self.driver(
            || "cuDriverGetVersion".into(),
            || {
                let mut v: std::ffi::c_int = 0;
                // SAFETY: writes one int through a valid pointer.
                unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }.result()?;
                Ok(v)
            },
        )?;
        Ok(DeviceInfo {
            ordinal: self.ordinal,
            name: self.name.clone(),
            compute_capability,
            driver_version,
        })
    }

    /// The loaded module `id`, loading its PTX on first use (`Ptx::from_src` + `load_module`).
    pub fn module(&self, id: ModuleId) -> Result<Arc<CudaModule>, GpuError> {
        let mut cache = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = &cache[id.index()] {
            return Ok(m.clone());
        }
        let spec = &ALL[id.index()];
        let m = self.driver(
            || format!("loading PTX module {}", spec.name),
            || self.ctx.load_module(Ptx::from_src(spec.ptx)),
        )?;
        cache[id.index()] = Some(m.clone());
        Ok(m)
    }

    /// The kernel `entry` of module `id` (loads the module if needed).
    pub fn function(
        &self,
        id: ModuleId,
        entry: &'static EntrySpec,
    ) -> Result<CudaFunction, GpuError> {
        let spec = &ALL[id.index()];
        if spec.entry(entry.name) != Some(entry) {
            return Err(GpuError::UnknownEntry {
                module: spec.name,
                entry: entry.name,
            });
        }
        let m = self.module(id)?;
        self.driver(
            || format!("looking up kernel {} in {}", entry.name, spec.name),
            || m.load_function(entry.name),
        )
    }

    /// Loads every registered module and looks up every entry, so that bad PTX fails here and not
    /// in the middle of a step. Tests call this first.
    pub fn preload_all(&self) -> Result<(), GpuError> {
        for spec in ALL.iter() {
            for e in spec.entries {
                self.function(spec.id, e)?;
            }
        }
        Ok(())
    }

    /// Allows `f` to be launched with up to `bytes` of dynamic shared memory
    /// (`cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)`); needed above the
    /// 48 KiB default. Fails (as a driver error) when the device has less shared memory per block.
    pub fn set_max_dynamic_shared(&self, f: &CudaFunction, bytes: u32) -> Result<(), GpuError> {
        let value = i32::try_from(bytes).map_err(|_| GpuError::Invalid {
            op: "set_max_dynamic_shared",
            msg: format!("{bytes} bytes of shared memory"),
        })?;
        self.driver(
            || format!("raising the dynamic shared memory limit to {bytes} bytes"),
            || {
                f.set_attribute(
                    cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    value,
                )
            },
        )
    }

    /// Starts a checked launch of `f` (which must be the function of `entry`) on this context's
    /// stream. Only `<op>/cuda.rs` calls this.
    pub fn launch<'a>(&'a self, f: &'a CudaFunction, entry: &'static EntrySpec) -> Launch<'a> {
        Launch {
            gpu: self,
            entry,
            args: self.stream.launch_builder(f),
            pushed: 0,
        }
    }

    /// Waits for all work on this context's stream.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        self.driver(
            || "synchronizing the stream".into(),
            || self.stream.synchronize(),
        )
    }

    /// Makes the allocation after the next `n` ones on this context fail with
    /// [`GpuError::OutOfMemory`] (`None`: no injected failure). One-shot: the allocations after
    /// the failing one succeed again. For tests of what callers do when the device is full.
    pub fn inject_out_of_memory_after(&self, n: Option<u64>) {
        self.oom_countdown
            .store(n.unwrap_or(NO_INJECTED_OOM), Ordering::SeqCst);
    }

    /// Runs the allocating driver call `f` of `bytes` bytes, turning an out-of-memory result (real
    /// or injected) into [`GpuError::OutOfMemory`] with the device's free memory.
    fn allocating<T>(
        &self,
        bytes: usize,
        what: impl Fn() -> String,
        f: impl FnOnce() -> Result<T, DriverError>,
    ) -> Result<T, GpuError> {
        let oom = |injected| {
            let info = self.ctx.mem_get_info().ok();
            GpuError::OutOfMemory {
                ordinal: self.ordinal,
                device: self.name.clone(),
                what: what(),
                requested_bytes: bytes,
                free_bytes: info.map(|i| i.0),
                total_bytes: info.map(|i| i.1),
                injected,
            }
        };
        if bytes > 0 {
            let left = self.oom_countdown.load(Ordering::SeqCst);
            if left != NO_INJECTED_OOM {
                // Counts down to 0, fails there, then switches the injection off.
                let next = if left == 0 { NO_INJECTED_OOM } else { left - 1 };
                self.oom_countdown.store(next, Ordering::SeqCst);
                if left == 0 {
                    return Err(oom(true));
                }
            }
        }
        match self.driver(&what, f) {
            Err(GpuError::Driver { source, .. })
                if source.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY =>
            {
                Err(oom(false))
            }
            other => other,
        }
    }

    /// Copies a host slice to a new device buffer.
    pub fn htod<T: DeviceRepr>(&self, src: &[T]) -> Result<CudaSlice<T>, GpuError> {
        self.allocating(
            std::mem::size_of_val(src),
            || format!("copying {} elements to the device", src.len()),
            || {
                // Zero-length buffers through `null()`: cuMemAlloc rejects a size of 0.
                if src.is_empty() {
                    self.stream.null()
                } else {
                    self.stream.clone_htod(src)
                }
            },
        )
    }

    /// Copies a device buffer to a new host vector (synchronises the stream).
    pub fn dtoh<T: DeviceRepr>(&self, src: &CudaSlice<T>) -> Result<Vec<T>, GpuError> {
        self.driver(
            || format!("copying {} elements to the host", src.len()),
            || {
                if src.is_empty() {
                    Ok(Vec::new())
                } else {
                    self.stream.clone_dtoh(src)
                }
            },
        )
    }

    /// A new zero-filled device buffer of `len` elements.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, GpuError> {
        self.allocating(
            len.saturating_mul(std::mem::size_of::<T>()),
            || format!("allocating {len} elements"),
            || {
                if len == 0 {
                    self.stream.null()
                } else {
                    self.stream.alloc_zeros(len)
                }
            },
        )
    }
}

/// A launch in preparation: counts the arguments and checks them against the registry.
pub struct Launch<'a> {
    gpu: &'a GpuContext,
    entry: &'static EntrySpec,
    args: LaunchArgs<'a>,
    pushed: usize,
}

impl<'a> Launch<'a> {
    /// Pushes the next kernel argument (device buffers as `&CudaSlice`/`&mut CudaSlice`, scalars
    /// by reference: `u64` for `.u64`, `u32` for `.u32`, `f32` for `.f32`).
    pub fn arg<T>(&mut self, arg: T) -> &mut Self
    where
        LaunchArgs<'a>: PushKernelArg<T>,
    {
        self.args.arg(arg);
        self.pushed += 1;
        self
    }

    /// Launches with `cfg`; with `check_launches` on, synchronises and reports any fault here.
    ///
    /// # Safety
    /// The arguments must match the entry's `.param` list in order and type, and the kernel must
    /// stay inside the buffers it was given for the geometry `cfg` (the caller's `cuda.rs` is the
    /// only code that knows both).
    pub unsafe fn launch(&mut self, cfg: LaunchConfig) -> Result<(), GpuError> {
        if self.pushed != self.entry.params {
            return Err(GpuError::ArgCount {
                entry: self.entry.name,
                pushed: self.pushed,
                expected: self.entry.params,
            });
        }
        let name = self.entry.name;
        let args = &mut self.args;
        // SAFETY: forwarded to the caller (see above).
        self.gpu.driver(
            || format!("launching kernel {name}"),
            || unsafe { args.launch(cfg) }.map(|_| ()),
        )?;
        if self.gpu.check_launches {
            self.gpu.driver(
                || format!("kernel {name} (checked after launch)"),
                || self.gpu.stream.synchronize(),
            )?;
        }
        Ok(())
    }
}
