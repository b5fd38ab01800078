//! Contexts: the primary context, `cuCtxCreate*`/`cuCtxDestroy`, the per-thread context stack,
//! and the context-wide flags, limits, cache configuration and stream priorities.

use super::*;

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
