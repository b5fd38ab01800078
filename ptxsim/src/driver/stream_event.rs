//! Streams and events: bookkeeping only, since every call has completed its work before it
//! returns (see the module documentation of `driver`).

use super::*;

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
