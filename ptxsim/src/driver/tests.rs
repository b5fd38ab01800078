//! Tests of the driver plumbing only; launches are tested with the interpreter.

use std::ffi::{CStr, c_char};

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
