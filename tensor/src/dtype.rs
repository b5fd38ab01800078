//! Element types and the glue that lets generic code move between them.

use half::{bf16, f16};

use crate::storage::CpuStorage;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    BF16,
    F16,
    U8,
    U32,
    I64,
}

impl DType {
    pub const ALL: [DType; 7] = [DType::F64, DType::F32, DType::BF16, DType::F16, DType::U8, DType::U32, DType::I64];

    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::U32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::U8 => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::BF16 | DType::F16)
    }

    /// Integer dtypes usable as indices (embedding ids, gather indices, top-k positions).
    pub fn is_index(self) -> bool {
        matches!(self, DType::U8 | DType::U32 | DType::I64)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::I64 => "i64",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Rust element type that a tensor can hold.
///
/// Conversions go through f64, which represents every value of every dtype we support except
/// i64 beyond 2^53 (an index that large is not a realistic tensor index).
pub trait WithDType: Copy + Send + Sync + std::fmt::Debug + PartialOrd + Default + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
    fn from_f32(v: f32) -> Self {
        Self::from_f64(v as f64)
    }
    fn into_storage(v: Vec<Self>) -> CpuStorage;
    fn slice_of(s: &CpuStorage) -> Option<&[Self]>;
}

macro_rules! with_dtype {
    ($t:ty, $variant:ident, $to64:expr, $from64:expr, $to32:expr, $from32:expr) => {
        impl WithDType for $t {
            const DTYPE: DType = DType::$variant;
            #[inline]
            fn to_f64(self) -> f64 {
                $to64(self)
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                $from64(v)
            }
            #[inline]
            fn to_f32(self) -> f32 {
                $to32(self)
            }
            #[inline]
            fn from_f32(v: f32) -> Self {
                $from32(v)
            }
            fn into_storage(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn slice_of(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

with_dtype!(f64, F64, |x| x, |v| v, |x: f64| x as f32, |v: f32| v as f64);
with_dtype!(f32, F32, |x: f32| x as f64, |v: f64| v as f32, |x| x, |v| v);
with_dtype!(bf16, BF16, |x: bf16| x.to_f64(), bf16::from_f64, |x: bf16| x.to_f32(), bf16::from_f32);
with_dtype!(f16, F16, |x: f16| x.to_f64(), f16::from_f64, |x: f16| x.to_f32(), f16::from_f32);
// Float-to-int conversions saturate and truncate toward zero (Rust `as` semantics).
with_dtype!(u8, U8, |x: u8| x as f64, |v: f64| v as u8, |x: u8| x as f32, |v: f32| v as u8);
with_dtype!(u32, U32, |x: u32| x as f64, |v: f64| v as u32, |x: u32| x as f32, |v: f32| v as u32);
with_dtype!(i64, I64, |x: i64| x as f64, |v: f64| v as i64, |x: i64| x as f32, |v: f32| v as i64);
