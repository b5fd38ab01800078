//! Occupancy: a simple model of an H100 SM (threads, blocks and shared memory; no registers)
//! behind the `cuOccupancy*` calls.

use super::*;

/// Resident blocks per SM for blocks of `threads` threads using `shared` bytes of shared memory.
pub(super) fn blocks_per_sm(threads: c_int, shared: usize) -> u32 {
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
