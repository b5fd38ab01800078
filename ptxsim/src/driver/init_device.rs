//! Initialisation, the driver version, and the simulated device: count, name, UUID, memory,
//! attributes, peer access.

use std::ffi::c_char;

use super::*;

// ---------------------------------------------------------------------------------------------
// Initialisation, version
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
