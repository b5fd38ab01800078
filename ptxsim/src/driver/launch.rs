//! Kernel launch: `cuLaunchKernel`, its geometry checks, and the `PTXSIM_TRACE`,
//! `PTXSIM_PROFILE` and `PTXSIM_CP_ASYNC` switches that every launch reads.

use std::sync::OnceLock;

use super::*;
use crate::LaunchDims;

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

/// Refuses what a GPU refuses, so that a geometry bug shows up in the simulator too.
pub(super) fn check_geometry(grid: [u32; 3], block: [u32; 3]) -> Result<(), Failure> {
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
