//! The profiler calls (nothing to profile) and the entry points cudarc can reach that the
//! simulator does not implement: they answer `CUDA_ERROR_NOT_SUPPORTED`.

use std::ffi::c_char;

use super::*;

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
