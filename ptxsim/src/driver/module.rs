//! Modules and functions: loading PTX images, looking up kernels, and function attributes.

use std::ffi::{CStr, c_char};

use super::*;

/// The PTX `.version` as major * 10 + minor (0 when absent).
pub(super) fn ptx_version(text: &str) -> c_int {
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
