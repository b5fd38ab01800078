//! Where a tensor's elements live. CPU storage is one typed `Vec` per dtype; CUDA storage (feature
//! `cuda`) is in `crate::cuda`; a build without the feature has only the placeholder type.

use half::{bf16, f16};

use crate::{DType, Device};

#[derive(Clone, Debug)]
pub enum CpuStorage {
    F64(Vec<f64>),
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
    U8(Vec<u8>),
    U32(Vec<u32>),
    I64(Vec<i64>),
}

/// Runs `$body` with `$v` bound to the typed vector inside a `CpuStorage`, for every dtype.
#[macro_export]
macro_rules! match_cpu_storage {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            $crate::CpuStorage::F64($v) => $body,
            $crate::CpuStorage::F32($v) => $body,
            $crate::CpuStorage::BF16($v) => $body,
            $crate::CpuStorage::F16($v) => $body,
            $crate::CpuStorage::U8($v) => $body,
            $crate::CpuStorage::U32($v) => $body,
            $crate::CpuStorage::I64($v) => $body,
        }
    };
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::I64(_) => DType::I64,
        }
    }

    pub fn len(&self) -> usize {
        match_cpu_storage!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn zeros(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F64 => CpuStorage::F64(vec![0.0; n]),
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::U8 => CpuStorage::U8(vec![0; n]),
            DType::U32 => CpuStorage::U32(vec![0; n]),
            DType::I64 => CpuStorage::I64(vec![0; n]),
        }
    }
}

/// Device memory of the CUDA backend; in a build without the `cuda` feature no value of this type
/// can be made, so every match arm on it is unreachable at run time.
#[cfg(not(feature = "cuda"))]
#[derive(Debug)]
pub enum CudaStorage {}

#[cfg(feature = "cuda")]
pub use crate::cuda::CudaStorage;

#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(c) => c.device(),
            #[cfg(not(feature = "cuda"))]
            Storage::Cuda(c) => match *c {},
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(c) => c.dtype(),
            #[cfg(not(feature = "cuda"))]
            Storage::Cuda(c) => match *c {},
        }
    }
}
