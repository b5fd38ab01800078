//! Device memory of a CUDA tensor: one typed device buffer per dtype plus the shared context of
//! its device, and the host <-> device transfers. bf16 and f16 buffers hold the raw 16-bit
//! patterns (`CudaSlice<u16>`), as the kernels take them.

use std::sync::Arc;

use half::{bf16, f16};

use super::{CudaSlice, GpuContext, GpuError, gpu_error};
use crate::{CpuStorage, DType, Device};

/// A typed device buffer.
pub enum CudaBuf {
    F64(CudaSlice<f64>),
    F32(CudaSlice<f32>),
    BF16(CudaSlice<u16>),
    F16(CudaSlice<u16>),
    U8(CudaSlice<u8>),
    U32(CudaSlice<u32>),
    I64(CudaSlice<i64>),
}

/// Runs `$body` with `$v` bound to the device buffer inside a `CudaBuf`, for every dtype, and
/// wraps a returned buffer back into the same variant with `$wrap`.
macro_rules! match_cuda_buf {
    ($s:expr, $v:ident => wrap $body:expr) => {
        match $s {
            CudaBuf::F64($v) => CudaBuf::F64($body),
            CudaBuf::F32($v) => CudaBuf::F32($body),
            CudaBuf::BF16($v) => CudaBuf::BF16($body),
            CudaBuf::F16($v) => CudaBuf::F16($body),
            CudaBuf::U8($v) => CudaBuf::U8($body),
            CudaBuf::U32($v) => CudaBuf::U32($body),
            CudaBuf::I64($v) => CudaBuf::I64($body),
        }
    };
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CudaBuf::F64($v) => $body,
            CudaBuf::F32($v) => $body,
            CudaBuf::BF16($v) => $body,
            CudaBuf::F16($v) => $body,
            CudaBuf::U8($v) => $body,
            CudaBuf::U32($v) => $body,
            CudaBuf::I64($v) => $body,
        }
    };
}

/// `$call` (a cudarc driver call returning `Result<_, DriverError>`, made here rather than through
/// the kernels' launcher) with its error as a `GpuError::Driver` of `$gpu`. A macro because the
/// cudarc error type cannot be named from this crate (cudarc is not a direct dependency).
macro_rules! driver {
    ($gpu:expr, $what:expr, $call:expr) => {
        $call.map_err(|source| GpuError::Driver {
            ordinal: $gpu.ordinal(),
            device: $gpu.name().to_string(),
            what: $what.to_string(),
            source,
        })
    };
}
pub(crate) use driver;

impl CudaBuf {
    pub fn dtype(&self) -> DType {
        match self {
            CudaBuf::F64(_) => DType::F64,
            CudaBuf::F32(_) => DType::F32,
            CudaBuf::BF16(_) => DType::BF16,
            CudaBuf::F16(_) => DType::F16,
            CudaBuf::U8(_) => DType::U8,
            CudaBuf::U32(_) => DType::U32,
            CudaBuf::I64(_) => DType::I64,
        }
    }

    pub fn len(&self) -> usize {
        match_cuda_buf!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A zero-filled buffer of `n` elements (all-zero bits are 0 for every dtype).
    pub fn zeros(gpu: &GpuContext, dtype: DType, n: usize) -> Result<Self, GpuError> {
        Ok(match dtype {
            DType::F64 => CudaBuf::F64(gpu.alloc_zeros(n)?),
            DType::F32 => CudaBuf::F32(gpu.alloc_zeros(n)?),
            DType::BF16 => CudaBuf::BF16(gpu.alloc_zeros(n)?),
            DType::F16 => CudaBuf::F16(gpu.alloc_zeros(n)?),
            DType::U8 => CudaBuf::U8(gpu.alloc_zeros(n)?),
            DType::U32 => CudaBuf::U32(gpu.alloc_zeros(n)?),
            DType::I64 => CudaBuf::I64(gpu.alloc_zeros(n)?),
        })
    }

    /// Copies host elements `data` to a new device buffer.
    pub fn upload(gpu: &GpuContext, data: &CpuStorage) -> Result<Self, GpuError> {
        Ok(match data {
            CpuStorage::F64(v) => CudaBuf::F64(gpu.htod(v)?),
            CpuStorage::F32(v) => CudaBuf::F32(gpu.htod(v)?),
            CpuStorage::BF16(v) => CudaBuf::BF16(gpu.htod(bytemuck::cast_slice::<bf16, u16>(v))?),
            CpuStorage::F16(v) => CudaBuf::F16(gpu.htod(bytemuck::cast_slice::<f16, u16>(v))?),
            CpuStorage::U8(v) => CudaBuf::U8(gpu.htod(v)?),
            CpuStorage::U32(v) => CudaBuf::U32(gpu.htod(v)?),
            CpuStorage::I64(v) => CudaBuf::I64(gpu.htod(v)?),
        })
    }

    /// Copies the whole buffer to the host (synchronises the stream).
    pub fn download(&self, gpu: &GpuContext) -> Result<CpuStorage, GpuError> {
        Ok(match self {
            CudaBuf::F64(v) => CpuStorage::F64(gpu.dtoh(v)?),
            CudaBuf::F32(v) => CpuStorage::F32(gpu.dtoh(v)?),
            CudaBuf::BF16(v) => CpuStorage::BF16(gpu.dtoh(v)?.into_iter().map(bf16::from_bits).collect()),
            CudaBuf::F16(v) => CpuStorage::F16(gpu.dtoh(v)?.into_iter().map(f16::from_bits).collect()),
            CudaBuf::U8(v) => CpuStorage::U8(gpu.dtoh(v)?),
            CudaBuf::U32(v) => CpuStorage::U32(gpu.dtoh(v)?),
            CudaBuf::I64(v) => CpuStorage::I64(gpu.dtoh(v)?),
        })
    }

    /// A new buffer holding elements `start .. start + len` (a device-to-device copy).
    pub fn copy_range(&self, gpu: &GpuContext, start: usize, len: usize) -> Result<Self, GpuError> {
        let end = start.checked_add(len).filter(|&e| e <= self.len()).ok_or_else(|| GpuError::Invalid {
            op: "copy_range",
            msg: format!("range {start}..{} exceeds a buffer of {}", start.saturating_add(len), self.len()),
        })?;
        if len == 0 {
            return Self::zeros(gpu, self.dtype(), 0);
        }
        Ok(match_cuda_buf!(self, v => wrap {
            let view = v.slice(start..end);
            driver!(gpu, "copying a device range", gpu.stream().clone_dtod(&view))?
        }))
    }

    /// Copies `len` elements of `src` from `src_at` into `self` at `dst_at` (same dtype; a
    /// device-to-device copy, no kernel).
    pub fn copy_block_from(&mut self, gpu: &GpuContext, dst_at: usize, src: &CudaBuf, src_at: usize, len: usize) -> Result<(), GpuError> {
        let fits = |at: usize, total: usize| at.checked_add(len).is_some_and(|e| e <= total);
        if !fits(dst_at, self.len()) || !fits(src_at, src.len()) {
            return Err(GpuError::Invalid {
                op: "copy_block",
                msg: format!("{len} elements from {src_at} of {} into {dst_at} of {}", src.len(), self.len()),
            });
        }
        if len == 0 {
            return Ok(());
        }
        macro_rules! copy {
            ($d:expr, $s:expr) => {{
                let from = $s.slice(src_at..src_at + len);
                let mut to = $d.slice_mut(dst_at..dst_at + len);
                driver!(gpu, "copying a device block", gpu.stream().memcpy_dtod(&from, &mut to))
            }};
        }
        match (self, src) {
            (CudaBuf::F64(d), CudaBuf::F64(s)) => copy!(d, s),
            (CudaBuf::F32(d), CudaBuf::F32(s)) => copy!(d, s),
            (CudaBuf::BF16(d), CudaBuf::BF16(s)) | (CudaBuf::F16(d), CudaBuf::F16(s)) => copy!(d, s),
            (CudaBuf::U8(d), CudaBuf::U8(s)) => copy!(d, s),
            (CudaBuf::U32(d), CudaBuf::U32(s)) => copy!(d, s),
            (CudaBuf::I64(d), CudaBuf::I64(s)) => copy!(d, s),
            (d, s) => Err(GpuError::Invalid { op: "copy_block", msg: format!("dtype {} into {}", s.dtype(), d.dtype()) }),
        }
    }
}


/// Device memory of one CUDA tensor (shared by its views through the tensor's `Arc<Storage>`).
pub struct CudaStorage {
    buf: CudaBuf,
    gpu: Arc<GpuContext>,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({}, {} elements, cuda:{})", self.buf.dtype(), self.buf.len(), self.gpu.ordinal())
    }
}

impl CudaStorage {
    pub fn new(buf: CudaBuf, gpu: Arc<GpuContext>) -> Self {
        Self { buf, gpu }
    }
    pub fn buf(&self) -> &CudaBuf {
        &self.buf
    }
    pub fn gpu(&self) -> &Arc<GpuContext> {
        &self.gpu
    }
    pub fn dtype(&self) -> DType {
        self.buf.dtype()
    }
    pub fn device(&self) -> Device {
        Device::Cuda(self.gpu.ordinal())
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The whole buffer on the host; `op` names the caller in errors.
    pub fn to_cpu(&self, op: &'static str) -> crate::Result<CpuStorage> {
        self.buf.download(&self.gpu).map_err(|e| gpu_error(op, self.device(), e))
    }
}
