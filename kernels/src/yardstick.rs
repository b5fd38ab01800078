//! Yardsticks for the GPU benchmark harness (feature `cuda`): CUDA-event timing, a device-to-device
//! copy (the memory-bandwidth ceiling) and a cuBLAS bf16 GEMM (the matrix-throughput ceiling).
//!
//! No op of this crate uses cuBLAS. It is here only so that each benchmark can be stated as a
//! fraction of what the vendor library reaches on the same card, in the same run. Like libcuda,
//! libcublas is loaded at run time, and cudarc *panics* when a library cannot be opened or lacks a
//! symbol; [`Cublas::new`] therefore probes for the library first and every cuBLAS call runs under
//! `catch_unwind`, so a missing libcublas is a [`GpuError::Library`], never a crash.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use cudarc::cublas::{CudaBlas, result as blas_result, sys as blas_sys};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, DevicePtr, DevicePtrMut, DeviceRepr};

use crate::launch::{CudaSlice, GpuContext, GpuError, panic_message};

const CUBLAS: &str = "cuBLAS";

/// Two timing events on the context's stream: GPU time of the work enqueued between them.
pub struct EventTimer {
    start: CudaEvent,
    stop: CudaEvent,
}

impl EventTimer {
    pub fn new(gpu: &GpuContext) -> Result<Self, GpuError> {
        let event = || {
            gpu.driver(
                || "creating a timing event".into(),
                // CU_EVENT_DEFAULT: timing enabled (cudarc's default disables it).
                || {
                    gpu.cuda_context()
                        .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                },
            )
        };
        Ok(Self {
            start: event()?,
            stop: event()?,
        })
    }

    /// Milliseconds of GPU time taken by the work that `f` enqueues on the context's stream
    /// (event resolution is about half a microsecond). Waits for that work to finish.
    pub fn time_ms(
        &self,
        gpu: &GpuContext,
        f: impl FnOnce() -> Result<(), GpuError>,
    ) -> Result<f32, GpuError> {
        gpu.driver(
            || "recording the start event".into(),
            || self.start.record(gpu.stream()),
        )?;
        f()?;
        gpu.driver(
            || "recording the stop event".into(),
            || self.stop.record(gpu.stream()),
        )?;
        gpu.driver(
            || "reading the time between two events".into(),
            || self.start.elapsed_ms(&self.stop),
        )
    }
}

/// `dst = src` with the driver's device-to-device copy (`cuMemcpyDtoDAsync`) on the context's
/// stream: the bandwidth ceiling. Lengths must match; an empty copy does nothing.
pub fn copy_d2d<T: DeviceRepr>(
    gpu: &GpuContext,
    src: &CudaSlice<T>,
    dst: &mut CudaSlice<T>,
) -> Result<(), GpuError> {
    if src.len() != dst.len() {
        return Err(GpuError::Invalid {
            op: "copy_d2d",
            msg: format!(
                "source has {} elements, destination {}",
                src.len(),
                dst.len()
            ),
        });
    }
    if src.is_empty() {
        return Ok(());
    }
    gpu.driver(
        || format!("copying {} elements device to device", src.len()),
        || gpu.stream().memcpy_dtod(src, dst),
    )
}

/// A cuBLAS handle bound to the context's stream (the compute yardstick).
pub struct Cublas {
    blas: CudaBlas,
}

impl std::fmt::Debug for Cublas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cublas")
    }
}

fn library_error(what: &str, msg: String) -> GpuError {
    GpuError::Library {
        lib: CUBLAS,
        what: what.to_string(),
        msg,
    }
}

/// `dim` as cuBLAS's `int`, or an error naming it.
fn blas_int(name: &str, dim: usize) -> Result<i32, GpuError> {
    i32::try_from(dim).map_err(|_| GpuError::Invalid {
        op: "cublas_gemm_bf16",
        msg: format!("{name} = {dim} exceeds cuBLAS's int range"),
    })
}

fn check_len(name: &str, rows: usize, cols: usize, len: usize) -> Result<(), GpuError> {
    match rows.checked_mul(cols) {
        Some(want) if want == len => Ok(()),
        Some(want) => Err(GpuError::Invalid {
            op: "cublas_gemm_bf16",
            msg: format!("{name} is {rows}x{cols} = {want} elements, its buffer has {len}"),
        }),
        None => Err(GpuError::Invalid {
            op: "cublas_gemm_bf16",
            msg: format!("{name}: {rows}x{cols} overflows usize"),
        }),
    }
}

/// The column-major GEMM (cuBLAS's convention) that computes row-major `C = A·Bᵀ` with A m×k,
/// B n×k, C m×n, all dense (leading dimensions k, k, n).
///
/// A row-major r×c matrix with leading dimension c is, read column-major, the c×r matrix: its
/// transpose. So row-major C (m×n) is column-major Cᵀ (n×m, ldc = n), and Cᵀ = B·Aᵀ. Row-major
/// B (n×k) reads as column-major Bᵀ (k×n, ld k): the first operand is B with op T. Row-major A
/// reads as column-major Aᵀ (k×m, ld k), exactly the second factor: the second operand is A with
/// op N. Hence cuBLAS's (m, n, k) = (n, m, k), "TN".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NtAsColumnMajor {
    /// op of the first operand (row-major B) is transpose.
    trans_first: bool,
    /// op of the second operand (row-major A) is transpose.
    trans_second: bool,
    m: i32,
    n: i32,
    k: i32,
    ld_first: i32,
    ld_second: i32,
    ldc: i32,
}

impl NtAsColumnMajor {
    fn new(m: i32, n: i32, k: i32) -> Self {
        Self {
            trans_first: true,
            trans_second: false,
            m: n,
            n: m,
            k,
            ld_first: k,
            ld_second: k,
            ldc: n,
        }
    }
}

impl Cublas {
    /// Loads libcublas (by the names cudarc tries: `libcublas.so`, `libcublas.so.12`, ...; a
    /// `libcublas.so.13` alone is not among them, so a folder holding only that needs a link named
    /// `libcublas.so`) and creates a handle on the context's stream.
    pub fn new(gpu: &GpuContext) -> Result<Self, GpuError> {
        // SAFETY: only tries to dlopen the library by each candidate name and drops the handle.
        match catch_unwind(|| unsafe { blas_sys::is_culib_present() }) {
            Ok(true) => {}
            Ok(false) => {
                return Err(library_error(
                    "loading the library",
                    "libcublas is not on the loader path (tried libcublas.so, libcublas.so.12, \
                     .so.11, ...); add its folder to LD_LIBRARY_PATH (for a libcublas.so.13 alone, \
                     a folder with a link named libcublas.so to it)"
                        .into(),
                ));
            }
            Err(p) => return Err(library_error("probing the library", panic_message(p))),
        }
        match catch_unwind(AssertUnwindSafe(|| CudaBlas::new(gpu.stream().clone()))) {
            Ok(Ok(blas)) => Ok(Self { blas }),
            Ok(Err(e)) => Err(library_error("cublasCreate", e.to_string())),
            Err(p) => Err(library_error(
                "cublasCreate (the binding panicked)",
                panic_message(p),
            )),
        }
    }

    /// Row-major `c[i][j] = sum_l a[i][l] * b[j][l]` (C = A·Bᵀ, A m×k, B n×k, C m×n), bf16 in and
    /// out (raw bits), f32 accumulation (`cublasGemmEx`, `CUBLAS_COMPUTE_32F`), on the context's
    /// stream. Zero m or n does nothing; zero k writes zeros.
    pub fn gemm_bf16_nt(
        &self,
        gpu: &GpuContext,
        (m, n, k): (usize, usize, usize),
        a: &CudaSlice<u16>,
        b: &CudaSlice<u16>,
        c: &mut CudaSlice<u16>,
    ) -> Result<(), GpuError> {
        check_len("A", m, k, a.len())?;
        check_len("B", n, k, b.len())?;
        check_len("C", m, n, c.len())?;
        let (mi, ni, ki) = (blas_int("m", m)?, blas_int("n", n)?, blas_int("k", k)?);
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            return gpu.driver(
                || "zeroing C of an empty product".into(),
                || gpu.stream().memset_zeros(c),
            );
        }
        let stream = gpu.stream();
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (pa, _ra) = a.device_ptr(stream);
        let (pb, _rb) = b.device_ptr(stream);
        let (pc, _rc) = c.device_ptr_mut(stream);
        let g = NtAsColumnMajor::new(mi, ni, ki);
        let op = |t: bool| {
            if t {
                blas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                blas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        // Row-major A is cuBLAS's second operand, B its first (see `NtAsColumnMajor`).
        let (first, second) = (pb, pa);
        let handle = *self.blas.handle();
        let r = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the three buffers hold exactly k*n, k*m and n*m bf16 elements (checked
            // above) on this context, and `g` reads and writes only inside them (its test checks
            // every index against a column-major reference); alpha and beta are f32, as
            // CUBLAS_COMPUTE_32F requires, and live across the call.
            unsafe {
                blas_result::gemm_ex(
                    handle,
                    op(g.trans_first),
                    op(g.trans_second),
                    g.m,
                    g.n,
                    g.k,
                    (&alpha) as *const f32 as *const c_void,
                    first as *const c_void,
                    blas_sys::cudaDataType_t::CUDA_R_16BF,
                    g.ld_first,
                    second as *const c_void,
                    blas_sys::cudaDataType_t::CUDA_R_16BF,
                    g.ld_second,
                    (&beta) as *const f32 as *const c_void,
                    pc as *mut c_void,
                    blas_sys::cudaDataType_t::CUDA_R_16BF,
                    g.ldc,
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
        }));
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(library_error(
                    &format!("cublasGemmEx bf16 {m}x{n}x{k}"),
                    e.to_string(),
                ));
            }
            Err(p) => {
                return Err(library_error(
                    "cublasGemmEx (the binding panicked)",
                    panic_message(p),
                ));
            }
        }
        if gpu.check_launches() {
            gpu.synchronize()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::NtAsColumnMajor;

    /// BLAS `gemm` semantics, column-major, alpha = 1, beta = 0: `C[i + j*ldc] = sum_l
    /// op(X)[i][l] * op(Y)[l][j]` with `op(X)[i][l] = X[i + l*ldx]` (N) or `X[l + i*ldx]` (T).
    /// Panics on any index outside the buffers, as the GPU would fault.
    fn colmajor_gemm(g: &NtAsColumnMajor, x: &[f64], y: &[f64], c: &mut [f64]) {
        let (m, n, k) = (g.m as usize, g.n as usize, g.k as usize);
        let (ldx, ldy, ldc) = (g.ld_first as usize, g.ld_second as usize, g.ldc as usize);
        let opx = |i: usize, l: usize| {
            if g.trans_first {
                x[l + i * ldx]
            } else {
                x[i + l * ldx]
            }
        };
        let opy = |l: usize, j: usize| {
            if g.trans_second {
                y[j + l * ldy]
            } else {
                y[l + j * ldy]
            }
        };
        for j in 0..n {
            for i in 0..m {
                c[i + j * ldc] = (0..k).map(|l| opx(i, l) * opy(l, j)).sum();
            }
        }
    }

    #[test]
    fn nt_mapping_computes_row_major_a_times_b_transposed() {
        for (m, n, k) in [
            (1, 1, 1),
            (3, 5, 7),
            (7, 5, 3),
            (67, 45, 72),
            (8, 8, 1),
            (1, 9, 4),
        ] {
            let a: Vec<f64> = (0..m * k).map(|x| (x * 7 % 11) as f64 - 5.0).collect();
            let b: Vec<f64> = (0..n * k).map(|x| (x * 5 % 13) as f64 - 6.0).collect();
            let g = NtAsColumnMajor::new(m as i32, n as i32, k as i32);
            // BLAS's argument rules: ld >= the stored matrix's row count (k for a T operand, and
            // for the N second operand; cuBLAS's m for C).
            let rows_first = if g.trans_first { g.k } else { g.m };
            let rows_second = if g.trans_second { g.n } else { g.k };
            assert!(g.ld_first >= rows_first.max(1) && g.ld_second >= rows_second.max(1));
            assert!(g.ldc >= g.m.max(1));
            let mut c = vec![f64::NAN; m * n];
            // The first operand is row-major B, the second row-major A.
            colmajor_gemm(&g, &b, &a, &mut c);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|l| a[i * k + l] * b[j * k + l]).sum();
                    assert_eq!(c[i * n + j], want, "{m}x{n}x{k} C[{i}][{j}]");
                }
            }
        }
    }
}
