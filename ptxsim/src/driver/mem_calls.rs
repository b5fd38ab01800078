//! Device memory calls: allocation and free (plain and stream-ordered), copies in every
//! direction, memsets, and `cuMemGetInfo`.

use std::ffi::{c_uchar, c_ushort};

use super::*;

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
