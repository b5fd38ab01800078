//! The `Tensor` type: shared storage plus a layout. Clones are cheap (one `Arc`), views never
//! copy, and tensors are immutable: every op returns a new tensor.

use std::sync::Arc;

use crate::layout::{Layout, checked_alloc_len, checked_elem_count};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Error, Result, WithDType};

#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    layout: Layout,
}

/// A dimension argument: `usize` counts from the front, negative `i32`/`isize` from the back
/// (`-1` is the last dim), as in PyTorch.
pub trait Dim: Copy {
    fn resolve(self, op: &'static str, shape: &[usize]) -> Result<usize>;
}

fn dim_error(op: &'static str, dim: isize, shape: &[usize]) -> Error {
    Error::DimOutOfRange { op, dim, rank: shape.len(), shape: shape.to_vec() }
}

impl Dim for usize {
    fn resolve(self, op: &'static str, shape: &[usize]) -> Result<usize> {
        if self < shape.len() { Ok(self) } else { Err(dim_error(op, self as isize, shape)) }
    }
}

impl Dim for isize {
    fn resolve(self, op: &'static str, shape: &[usize]) -> Result<usize> {
        let rank = shape.len() as isize;
        let d = if self < 0 { self + rank } else { self };
        if (0..rank).contains(&d) { Ok(d as usize) } else { Err(dim_error(op, self, shape)) }
    }
}

impl Dim for i32 {
    fn resolve(self, op: &'static str, shape: &[usize]) -> Result<usize> {
        (self as isize).resolve(op, shape)
    }
}

/// A counter-based random stream: a seed and how many elements have been drawn so far. Two
/// `Rng`s with the same seed and offset give the same numbers on every device (Philox 4x32-10,
/// see `brainstacks_kernels::philox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rng {
    pub seed: u64,
    pub offset: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { seed, offset: 0 }
    }

    /// Reserves `n` elements of the stream and returns the offset they start at.
    pub fn advance(&mut self, n: usize) -> u64 {
        let start = self.offset;
        self.offset += n as u64;
        start
    }
}

/// The distribution of a Philox draw, as the GPU path needs it (the CPU path takes closures).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) enum PhiloxDist {
    Uniform { low: f64, high: f64 },
    Normal { mean: f64, std: f64 },
}

impl Tensor {
    // ---- construction -------------------------------------------------------------------

    pub(crate) fn from_parts(storage: Arc<Storage>, layout: Layout) -> Self {
        Self { storage, layout }
    }

    /// A contiguous tensor owning `storage`, whose length must equal the element count of `shape`.
    pub fn from_cpu_storage(storage: CpuStorage, shape: &[usize]) -> Result<Self> {
        let n = checked_elem_count("from_cpu_storage", shape)?;
        if storage.len() != n {
            return Err(Error::invalid(
                "from_cpu_storage",
                shape,
                format!("{} elements given, the shape holds {n}", storage.len()),
            ));
        }
        Ok(Self::from_parts(Arc::new(Storage::Cpu(storage)), Layout::contiguous(shape)))
    }

    pub fn from_vec<T: WithDType>(data: Vec<T>, shape: &[usize], device: &Device) -> Result<Self> {
        device.check_available("from_vec")?;
        let n = checked_elem_count("from_vec", shape)?;
        if data.len() != n {
            return Err(Error::invalid("from_vec", shape, format!("{} elements given, the shape holds {n}", data.len())));
        }
        // On a CUDA device: one host-to-device copy of `data`.
        Self::from_cpu_storage(T::into_storage(data), shape)?.to_device(device)
    }

    pub fn from_slice<T: WithDType>(data: &[T], shape: &[usize], device: &Device) -> Result<Self> {
        Self::from_vec(data.to_vec(), shape, device)
    }

    /// A rank-0 tensor.
    pub fn scalar<T: WithDType>(value: T) -> Self {
        Self::from_cpu_storage(T::into_storage(vec![value]), &[]).expect("one element fits a scalar shape")
    }

    pub fn full(value: f64, shape: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        device.check_available("full")?;
        let n = checked_alloc_len("full", shape, dtype.size_in_bytes())?;
        let storage = match dtype {
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::BF16 => CpuStorage::BF16(vec![half::bf16::from_f64(value); n]),
            DType::F16 => CpuStorage::F16(vec![half::f16::from_f64(value); n]),
            DType::U8 => CpuStorage::U8(vec![value as u8; n]),
            DType::U32 => CpuStorage::U32(vec![value as u32; n]),
            DType::I64 => CpuStorage::I64(vec![value as i64; n]),
        };
        // On a CUDA device the value is filled on the host and copied once (no fill kernel yet).
        Self::from_cpu_storage(storage, shape)?.to_device(device)
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        device.check_available("zeros")?;
        let n = checked_alloc_len("zeros", shape, dtype.size_in_bytes())?;
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            return crate::cuda::ops::zeros(shape, n, dtype, device);
        }
        Self::from_cpu_storage(CpuStorage::zeros(dtype, n), shape)
    }

    pub fn ones(shape: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        Self::full(1.0, shape, dtype, device)
    }

    pub fn zeros_like(&self) -> Result<Self> {
        Self::zeros(self.shape(), self.dtype(), &self.device())
    }

    pub fn ones_like(&self) -> Result<Self> {
        Self::ones(self.shape(), self.dtype(), &self.device())
    }

    pub fn full_like(&self, value: f64) -> Result<Self> {
        Self::full(value, self.shape(), self.dtype(), &self.device())
    }

    /// `start, start + step, ...` while below `end` (above, for a negative step), as a 1-d tensor.
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType, device: &Device) -> Result<Self> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid("arange", &[], format!("start {start}, end {end}, step {step}: step must be finite and non-zero")));
        }
        // `as` saturates, so a huge or infinite count becomes `usize::MAX` and fails the check.
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        checked_alloc_len("arange", &[n], DType::F64.size_in_bytes())?;
        device.check_available("arange")?;
        let values: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Self::from_vec(values, &[n], &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }

    /// Uniform samples in (low, high) from the Philox stream of `rng`, which advances.
    pub fn rand_uniform(rng: &mut Rng, low: f64, high: f64, shape: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        use brainstacks_kernels::philox::cpu as ph;
        Self::philox_draw(
            "rand_uniform",
            rng,
            shape,
            dtype,
            device,
            |seed, offset, out| ph::fill_uniform_f64(seed, offset, low, high, out),
            |seed, offset, out| ph::fill_uniform_f32(seed, offset, low as f32, high as f32, out),
            PhiloxDist::Uniform { low, high },
        )
    }

    /// Normal(mean, std) samples from the Philox stream of `rng`, which advances.
    pub fn randn(rng: &mut Rng, mean: f64, std: f64, shape: &[usize], dtype: DType, device: &Device) -> Result<Self> {
        use brainstacks_kernels::philox::cpu as ph;
        Self::philox_draw(
            "randn",
            rng,
            shape,
            dtype,
            device,
            |seed, offset, out| ph::fill_normal_f64(seed, offset, mean, std, out),
            |seed, offset, out| ph::fill_normal_f32(seed, offset, mean as f32, std as f32, out),
            PhiloxDist::Normal { mean, std },
        )
    }

    /// Reserves `shape`'s element count on `rng`'s stream and fills it in parallel chunks with
    /// `fill_f64` (for f64 output) or `fill_f32` (for every other float dtype, rounded once by
    /// the final cast). Each chunk starts at its own stream offset, so the values do not depend
    /// on how the work is split.
    fn philox_draw(
        op: &'static str,
        rng: &mut Rng,
        shape: &[usize],
        dtype: DType,
        device: &Device,
        fill_f64: impl Fn(u64, u64, &mut [f64]) + Sync + Send,
        fill_f32: impl Fn(u64, u64, &mut [f32]) + Sync + Send,
        #[cfg_attr(not(feature = "cuda"), allow(unused_variables))] gpu_dist: PhiloxDist,
    ) -> Result<Self> {
        device.check_available(op)?;
        Self::check_float(op, dtype)?;
        let temp = if dtype == DType::F64 { DType::F64 } else { DType::F32 };
        let n = checked_alloc_len(op, shape, temp.size_in_bytes())?;
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            return crate::cuda::ops::philox_draw(op, rng, shape, n, dtype, device, gpu_dist);
        }
        let offset = rng.advance(n);
        let seed = rng.seed;
        if dtype == DType::F64 {
            let mut v = vec![0f64; n];
            crate::cpu::parallel::fill_chunks(&mut v, |start, chunk| fill_f64(seed, offset + start as u64, chunk));
            return Self::from_vec(v, shape, device);
        }
        let mut v = vec![0f32; n];
        crate::cpu::parallel::fill_chunks(&mut v, |start, chunk| fill_f32(seed, offset + start as u64, chunk));
        Self::from_vec(v, shape, device)?.to_dtype(dtype)
    }

    fn check_float(op: &'static str, dtype: DType) -> Result<()> {
        if dtype.is_float() { Ok(()) } else { Err(Error::dtype(op, dtype, "a floating-point dtype is required")) }
    }

    // ---- accessors ----------------------------------------------------------------------

    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }
    /// Alias of `shape`, for readers used to candle.
    pub fn dims(&self) -> &[usize] {
        self.layout.shape()
    }
    pub fn rank(&self) -> usize {
        self.layout.rank()
    }
    pub fn elem_count(&self) -> usize {
        self.layout.elem_count()
    }
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    pub fn device(&self) -> Device {
        self.storage.device()
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn strides(&self) -> &[usize] {
        self.layout.strides()
    }
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// True when both tensors view the same allocation (used by tests to prove a view is not a copy).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The size of one dimension.
    pub fn dim<D: Dim>(&self, d: D) -> Result<usize> {
        Ok(self.shape()[d.resolve("dim", self.shape())?])
    }

    /// The CPU storage, or an error naming `op` for tensors elsewhere.
    pub fn cpu_storage(&self, op: &'static str) -> Result<&CpuStorage> {
        match &*self.storage {
            Storage::Cpu(s) => Ok(s),
            // Every op reaching for CPU data of a CUDA tensor has no CUDA path (yet).
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(crate::cuda::not_implemented(op, self.device())),
            #[cfg(not(feature = "cuda"))]
            Storage::Cuda(c) => {
                let _ = op;
                match *c {}
            }
        }
    }

    /// The typed CPU buffer backing this tensor (the whole allocation, not just this view).
    pub fn cpu_slice<T: WithDType>(&self, op: &'static str) -> Result<&[T]> {
        let s = self.cpu_storage(op)?;
        T::slice_of(s).ok_or(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: T::DTYPE })
    }

    /// The elements in row-major order of the view, as `T`, which must be the tensor's dtype.
    pub fn to_vec<T: WithDType>(&self) -> Result<Vec<T>> {
        #[cfg(feature = "cuda")]
        if let Some(host) = crate::cuda::ops::host_copy(self, "to_vec")? {
            return host.to_vec();
        }
        let data = self.cpu_slice::<T>("to_vec")?;
        Ok(match self.layout.contiguous_range() {
            Some((a, b)) => data[a..b].to_vec(),
            None => self.layout.offsets().map(|o| data[o]).collect(),
        })
    }

    /// The elements converted to f64, whatever the dtype (handy in tests and printing).
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        #[cfg(feature = "cuda")]
        if let Some(host) = crate::cuda::ops::host_copy(self, "to_vec_f64")? {
            return host.to_vec_f64();
        }
        let s = self.cpu_storage("to_vec_f64")?;
        Ok(crate::match_cpu_storage!(s, v => self.layout.offsets().map(|o| v[o].to_f64()).collect()))
    }

    /// The single value of a tensor with one element, as f64.
    pub fn to_scalar_f64(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::invalid("to_scalar", self.shape(), "the tensor must hold exactly one element"));
        }
        Ok(self.to_vec_f64()?[0])
    }

    // ---- views (no copies) --------------------------------------------------------------

    pub(crate) fn view(&self, layout: Layout) -> Tensor {
        Tensor { storage: self.storage.clone(), layout }
    }

    /// Same data, new shape. A view when the tensor is contiguous, a copy otherwise (as PyTorch's
    /// `reshape`). Every dim is given explicitly; there is no inferred (-1) entry.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = checked_elem_count("reshape", shape)?;
        if n != self.elem_count() {
            return Err(Error::shape("reshape", self.shape(), shape, "element counts differ"));
        }
        match self.layout.reshape(shape) {
            Some(l) => Ok(self.view(l)),
            None => self.contiguous()?.reshape(shape),
        }
    }

    pub fn transpose<D0: Dim, D1: Dim>(&self, d0: D0, d1: D1) -> Result<Tensor> {
        let a = d0.resolve("transpose", self.shape())?;
        let b = d1.resolve("transpose", self.shape())?;
        Ok(self.view(self.layout.transpose(a, b)))
    }

    /// Swaps the last two dims (matrix transpose of every batch entry).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::invalid("t", self.shape(), "needs rank >= 2"));
        }
        self.transpose(-2, -1)
    }

    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        let valid = dims.len() == self.rank()
            && dims.iter().all(|&d| d < seen.len() && !std::mem::replace(&mut seen[d], true));
        if !valid {
            return Err(Error::invalid("permute", self.shape(), format!("{dims:?} is not a permutation of the dims")));
        }
        Ok(self.view(self.layout.permute(dims)))
    }

    /// Elements `start .. start + len` along `dim`.
    pub fn narrow<D: Dim>(&self, dim: D, start: usize, len: usize) -> Result<Tensor> {
        let d = dim.resolve("narrow", self.shape())?;
        let size = self.shape()[d];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid("narrow", self.shape(), format!("range {start}..{} exceeds dim {d} of size {size}", start.saturating_add(len))));
        }
        Ok(self.view(self.layout.narrow(d, start, len)))
    }

    /// Inserts a dim of size 1 at `dim` (0..=rank; negative counts from the back of the new rank).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let rank = self.rank() as isize;
        let d = if dim < 0 { dim + rank + 1 } else { dim };
        if !(0..=rank).contains(&d) {
            return Err(dim_error("unsqueeze", dim, self.shape()));
        }
        let d = d as usize;
        let mut shape = self.shape().to_vec();
        let mut strides = self.strides().to_vec();
        let stride = if d < shape.len() { shape[d] * strides[d] } else { 1 };
        shape.insert(d, 1);
        strides.insert(d, stride);
        Ok(self.view(Layout::new(shape, strides, self.layout.offset())))
    }

    /// Removes a dim of size 1.
    pub fn squeeze<D: Dim>(&self, dim: D) -> Result<Tensor> {
        let d = dim.resolve("squeeze", self.shape())?;
        if self.shape()[d] != 1 {
            return Err(Error::invalid("squeeze", self.shape(), format!("dim {d} has size {}, not 1", self.shape()[d])));
        }
        let mut shape = self.shape().to_vec();
        let mut strides = self.strides().to_vec();
        shape.remove(d);
        strides.remove(d);
        Ok(self.view(Layout::new(shape, strides, self.layout.offset())))
    }

    /// A stride-0 view repeating this tensor up to `shape` (NumPy broadcasting rules).
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        Ok(self.view(self.layout.broadcast_as("broadcast_as", shape)?))
    }

    /// Collapses all dims into one (a view when contiguous).
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(&[self.elem_count()])
    }

    /// A dense row-major copy, or `self` (no copy) when already contiguous from offset 0 or not.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::contiguous(self);
        }
        let s = self.cpu_storage("contiguous")?;
        let storage = crate::match_cpu_storage!(s, v => {
            let data = crate::cpu::parallel::gather_strided(v, &self.layout);
            WithDType::into_storage(data)
        });
        Tensor::from_cpu_storage(storage, self.shape())
    }

    /// `self + rhs` for tensors of the same shape and dtype, written into `self`'s buffer when
    /// this handle is its only owner, both are contiguous f32/f64 CPU tensors; otherwise exactly
    /// [`Tensor::add`]. Same bits either way (each element is `self + rhs`, rounded once), so
    /// accumulating gradients this way saves an allocation without changing a result.
    pub fn add_owned(mut self, rhs: &Tensor) -> Result<Tensor> {
        let same = self.shape() == rhs.shape() && self.dtype() == rhs.dtype();
        if let (true, Some((a, b)), Some((ra, _))) = (same, self.layout.contiguous_range(), rhs.layout.contiguous_range()) {
            let src = &*rhs.storage;
            let done = match Arc::get_mut(&mut self.storage) {
                Some(Storage::Cpu(CpuStorage::F32(dst))) => match src {
                    Storage::Cpu(CpuStorage::F32(src)) => add_assign(&mut dst[a..b], &src[ra..]),
                    _ => false,
                },
                Some(Storage::Cpu(CpuStorage::F64(dst))) => match src {
                    Storage::Cpu(CpuStorage::F64(src)) => add_assign(&mut dst[a..b], &src[ra..]),
                    _ => false,
                },
                _ => false,
            };
            if done {
                return Ok(self);
            }
        }
        self.add(rhs)
    }

    /// The elements of a contiguous view as a typed slice; `None` when not contiguous or another dtype.
    pub fn as_contiguous_slice<T: WithDType>(&self) -> Option<&[T]> {
        let (a, b) = self.layout.contiguous_range()?;
        let Storage::Cpu(s) = &*self.storage else { return None };
        T::slice_of(s).map(|v| &v[a..b])
    }

    // ---- casts --------------------------------------------------------------------------

    /// Converts to `dtype` (a copy; float to int truncates toward zero and saturates).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::to_dtype(self, dtype);
        }
        let src = self.contiguous()?;
        let s = src.cpu_storage("to_dtype")?;
        let (a, b) = src.layout.contiguous_range().expect("contiguous");
        let out = crate::match_cpu_storage!(s, v => crate::cpu::parallel::convert_slice(&v[a..b], dtype));
        Tensor::from_cpu_storage(out, self.shape())
    }

    /// Moves to another device: a copy, dense and row-major (a strided view is made contiguous
    /// on the way); the same device returns `self` (no copy). CUDA needs the `cuda` feature.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if *device == self.device() {
            return Ok(self.clone());
        }
        device.check_available("to_device")?;
        #[cfg(feature = "cuda")]
        {
            crate::cuda::ops::to_device(self, device)
        }
        #[cfg(not(feature = "cuda"))]
        {
            Ok(self.clone())
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {}, {}]", self.shape(), self.dtype(), self.device())?;
        if let Ok(v) = self.to_vec_f64() {
            const SHOWN: usize = 8;
            let head: Vec<String> = v.iter().take(SHOWN).map(|x| format!("{x:.4}")).collect();
            write!(f, " [{}{}]", head.join(", "), if v.len() > SHOWN { ", ..." } else { "" })?;
        }
        Ok(())
    }
}

/// `dst[i] += src[i]` for every `i < dst.len()` (in parallel chunks when large); returns true.
fn add_assign<T: Copy + Send + Sync + std::ops::AddAssign>(dst: &mut [T], src: &[T]) -> bool {
    crate::cpu::parallel::fill_chunks(dst, |start, chunk| {
        for (o, &x) in chunk.iter_mut().zip(&src[start..]) {
            *o += x;
        }
    });
    true
}

