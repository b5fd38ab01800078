//! NF4 weights in the tensor crate: a frozen `[out, in]` linear weight stored as 4-bit codes
//! (bitsandbytes-compatible; the format contract is `brainstacks_kernels::nf4`), and the two
//! products a frozen linear layer needs: `y = x · Wᵀ` and `dx = dy · W`.
//!
//! ```
//! use brainstacks_tensor::{Device, DType, Tensor, Rng, nf4::Nf4Weight};
//! # fn main() -> brainstacks_tensor::Result<()> {
//! let w = Tensor::randn(&mut Rng::new(1), 0.0, 0.02, &[128, 64], DType::F32, &Device::Cpu)?;
//! let q = Nf4Weight::quantize(&w, 64, true)?; // blocks of 64, double-quantized scales
//! let x = Tensor::ones(&[3, 64], DType::F32, &Device::Cpu)?;
//! let y = q.linear(&x)?; // [3, 128], never materialising the dequantized weight
//! assert_eq!(y.shape(), &[3, 128]);
//! # Ok(()) }
//! ```
//!
//! Shapes: `in_features` must be a multiple of the block size, so that no block straddles two
//! rows (every kernel, CPU and GPU, relies on it; bitsandbytes' default block size is 64 and every
//! Llama width is a multiple of it). Products accept f32, bf16 and f64 inputs with any leading
//! dimensions and return the input's dtype; they accumulate in f32 (f64 for f64 inputs).

use brainstacks_kernels::nf4::{self as fmt, Nf4Error};

/// The format's building blocks, for readers and writers of checkpoints.
pub use brainstacks_kernels::nf4::{DoubleQuant, NESTED_BLOCKSIZE, NF4_CODE, NF4_DEFAULT_BLOCKSIZE, check_blocksize};

use crate::cpu::gemm::{MatRef, gemm_bf16_packed, gemm_f32_as_bf16_packed, gemm_f32_packed, gemm_f64_packed};
use crate::cpu::nf4::{Nf4Plain, Nf4Ref, Nf4Transposed};
use crate::{DType, Device, Error, MatmulPrecision, Result, Tensor};

fn nf4_err(op: &'static str, shape: &[usize], e: Nf4Error) -> Error {
    Error::invalid(op, shape, e.to_string())
}

/// A frozen NF4 weight `[out_features, in_features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4Weight {
    out_features: usize,
    in_features: usize,
    blocksize: usize,
    packed: Vec<u8>,
    /// One f32 scale per block; for double-quantized weights, the reconstructed scales.
    absmax: Vec<f32>,
    double_quant: Option<DoubleQuant>,
    /// The dtype the weight had before quantization (recorded in checkpoints).
    orig_dtype: DType,
    /// Where the products run (the host copy above is always kept).
    placement: Placement,
}

/// The device copy of a weight placed on a GPU by [`Nf4Weight::to_device`]; none on the CPU.
/// Equality ignores it: two weights are equal when their values are.
#[derive(Clone, Default)]
struct Placement {
    #[cfg(feature = "cuda")]
    gpu: Option<std::sync::Arc<crate::cuda::nf4::DeviceNf4>>,
}

impl Placement {
    fn device(&self) -> Device {
        #[cfg(feature = "cuda")]
        if let Some(g) = &self.gpu {
            return g.device();
        }
        Device::Cpu
    }
}

impl PartialEq for Placement {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.device())
    }
}

impl Nf4Weight {
    /// Quantizes a 2-D float weight (any float dtype, any layout).
    ///
    /// Errors: not 2-D, `in_features` not a multiple of `blocksize`, an invalid block size, or a
    /// NaN/inf element (named by its row and column).
    pub fn quantize(w: &Tensor, blocksize: usize, double_quant: bool) -> Result<Self> {
        const OP: &str = "nf4_quantize";
        let &[out_features, in_features] = w.shape() else {
            return Err(Error::invalid(OP, w.shape(), "expected a 2-D [out, in] weight"));
        };
        fmt::check_blocksize(blocksize).map_err(|e| nf4_err(OP, w.shape(), e))?;
        check_in_features(OP, out_features, in_features, blocksize)?;
        let values = w.to_dtype(DType::F32)?.to_vec::<f32>()?;
        let q = fmt::quantize_nf4(&values, blocksize).map_err(|e| match e {
            Nf4Error::NaN { index } | Nf4Error::Infinite { index, .. } => Error::invalid(
                OP,
                w.shape(),
                format!("{e} (row {}, column {})", index / in_features.max(1), index % in_features.max(1)),
            ),
            e => nf4_err(OP, w.shape(), e),
        })?;
        let (packed, absmax, _, _) = q.into_parts();
        let (absmax, dq) = if double_quant {
            let dq = fmt::double_quantize_absmax(&absmax).map_err(|e| nf4_err(OP, w.shape(), e))?;
            (fmt::dequantize_absmax(&dq), Some(dq))
        } else {
            (absmax, None)
        };
        Ok(Self {
            out_features,
            in_features,
            blocksize,
            packed,
            absmax,
            double_quant: dq,
            orig_dtype: w.dtype(),
            placement: Placement::default(),
        })
    }

    /// Wraps stored data (e.g. from a bitsandbytes checkpoint), checking every length. With
    /// `double_quant`, `absmax` must be `None` (the scales are reconstructed from it); without,
    /// `absmax` holds one f32 per block, each finite and `>= 0`.
    pub fn from_parts(
        out_features: usize,
        in_features: usize,
        blocksize: usize,
        packed: Vec<u8>,
        absmax: Option<Vec<f32>>,
        double_quant: Option<DoubleQuant>,
        orig_dtype: DType,
    ) -> Result<Self> {
        const OP: &str = "nf4_from_parts";
        let shape = [out_features, in_features];
        fmt::check_blocksize(blocksize).map_err(|e| nf4_err(OP, &shape, e))?;
        check_in_features(OP, out_features, in_features, blocksize)?;
        let numel = out_features
            .checked_mul(in_features)
            .ok_or_else(|| Error::invalid(OP, &shape, "element count overflows"))?;
        let blocks = numel.div_ceil(blocksize);
        let absmax = match (absmax, &double_quant) {
            (Some(a), None) => {
                // Validates lengths and scales; the packed bytes are moved back out unchanged.
                let q = fmt::Nf4Quantized::from_parts(packed, a, numel, blocksize)
                    .map_err(|e| nf4_err(OP, &shape, e))?;
                let (packed, absmax, _, _) = q.into_parts();
                return Ok(Self {
                    out_features,
                    in_features,
                    blocksize,
                    packed,
                    absmax,
                    double_quant: None,
                    orig_dtype,
                    placement: Placement::default(),
                });
            }
            (None, Some(dq)) => {
                if dq.quantized().len() != blocks {
                    return Err(Error::invalid(
                        OP,
                        &shape,
                        format!("{} double-quantized scales, expected {blocks}", dq.quantized().len()),
                    ));
                }
                fmt::dequantize_absmax(dq)
            }
            _ => return Err(Error::invalid(OP, &shape, "give exactly one of f32 absmax and double-quantized scales")),
        };
        if packed.len() != numel.div_ceil(2) {
            return Err(Error::invalid(OP, &shape, format!("{} packed bytes, expected {}", packed.len(), numel.div_ceil(2))));
        }
        Ok(Self { out_features, in_features, blocksize, packed, absmax, double_quant, orig_dtype, placement: Placement::default() })
    }

    pub fn out_features(&self) -> usize {
        self.out_features
    }
    pub fn in_features(&self) -> usize {
        self.in_features
    }
    /// `[out_features, in_features]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.out_features, self.in_features]
    }
    pub fn blocksize(&self) -> usize {
        self.blocksize
    }
    /// Packed codes, element `2i` in the high nibble of byte `i`.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }
    /// The f32 scale of every block (reconstructed when double-quantized).
    pub fn absmax(&self) -> &[f32] {
        &self.absmax
    }
    /// The double-quantized scales, when the weight has them.
    pub fn double_quant(&self) -> Option<&DoubleQuant> {
        self.double_quant.as_ref()
    }
    /// The dtype the weight had before quantization.
    pub fn orig_dtype(&self) -> DType {
        self.orig_dtype
    }
    /// Bytes held: packed codes plus stored scales (what a checkpoint of it weighs).
    pub fn storage_bytes(&self) -> usize {
        self.packed.len()
            + match &self.double_quant {
                Some(dq) => dq.quantized().len() + 4 * dq.nested_absmax().len() + 4 * 256 + 4,
                None => 4 * self.absmax.len(),
            }
    }

    /// The device the products run on: the CPU, or the GPU given to [`Nf4Weight::to_device`].
    pub fn device(&self) -> Device {
        self.placement.device()
    }

    /// This weight with its products on `device`: for a CUDA device, the packed codes and the
    /// f32 block scales are uploaded once (the host copy is kept for checkpoints); for the CPU,
    /// any device copy is dropped. The CUDA kernels need block size 64 (bitsandbytes' default);
    /// another block size is an error naming it.
    pub fn to_device(&self, device: &Device) -> Result<Nf4Weight> {
        let mut out = self.clone();
        out.placement = match *device {
            Device::Cpu => Placement::default(),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => {
                if self.device() == *device {
                    return Ok(out);
                }
                let gpu = crate::cuda::nf4::DeviceNf4::upload(
                    ordinal,
                    self.out_features,
                    self.in_features,
                    self.blocksize,
                    &self.packed,
                    &self.absmax,
                )?;
                Placement { gpu: Some(std::sync::Arc::new(gpu)) }
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => {
                return Err(Error::Device { op: "nf4_to_device", device: *device, msg: Device::cuda_unavailable_reason().to_string() });
            }
        };
        Ok(out)
    }

    fn as_ref(&self) -> Nf4Ref<'_> {
        Nf4Ref {
            packed: &self.packed,
            absmax: &self.absmax,
            out_features: self.out_features,
            in_features: self.in_features,
            blocksize: self.blocksize,
        }
    }

    /// The dequantized weight as an f32 `[out, in]` tensor (for tests and export; the products
    /// never build it).
    pub fn dequantize(&self) -> Result<Tensor> {
        let mut out = vec![0f32; self.out_features * self.in_features];
        if !out.is_empty() {
            // The same decoder the products pack with.
            self.as_ref().decode_run(0, &mut out);
        }
        Tensor::from_vec(out, &[self.out_features, self.in_features], &Device::Cpu)
    }

    /// `y = x · Wᵀ`: `x` is `[..., in]`, `y` is `[..., out]`.
    pub fn linear(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_with(x, MatmulPrecision::F32)
    }

    /// [`Nf4Weight::linear`] with an f32 `x` multiplied at `precision` (with
    /// [`MatmulPrecision::Bf16`] the dequantized weight is rounded to bf16 too, as bitsandbytes
    /// does with a bf16 compute dtype).
    pub fn linear_with(&self, x: &Tensor, precision: MatmulPrecision) -> Result<Tensor> {
        self.product("nf4_linear", x, self.in_features, self.out_features, true, precision)
    }

    /// `dx = dy · W`: `dy` is `[..., out]`, `dx` is `[..., in]` (the input gradient of
    /// [`Nf4Weight::linear`]; the weight itself gets none).
    pub fn linear_input_grad(&self, dy: &Tensor) -> Result<Tensor> {
        self.linear_input_grad_with(dy, MatmulPrecision::F32)
    }

    /// [`Nf4Weight::linear_input_grad`] at `precision` (see [`Nf4Weight::linear_with`]).
    pub fn linear_input_grad_with(&self, dy: &Tensor, precision: MatmulPrecision) -> Result<Tensor> {
        self.product("nf4_linear_input_grad", dy, self.out_features, self.in_features, false, precision)
    }

    fn product(&self, op: &'static str, x: &Tensor, k: usize, n: usize, transposed: bool, precision: MatmulPrecision) -> Result<Tensor> {
        if x.rank() == 0 || x.shape()[x.rank() - 1] != k {
            return Err(Error::shape(op, x.shape(), &self.shape(), format!("the last dim of the input must be {k}")));
        }
        #[cfg(feature = "cuda")]
        if let Some(gpu) = &self.placement.gpu {
            // `transposed` is the CPU GEMM's view of W: transposed for the forward `x · Wᵀ`.
            let kind = if transposed { crate::cuda::nf4::Nf4Product::Forward } else { crate::cuda::nf4::Nf4Product::InputGrad };
            return gpu.product(op, x, kind, precision);
        }
        if x.device() != Device::Cpu {
            return Err(Error::Device {
                op,
                device: x.device(),
                msg: "the NF4 weight is on the CPU; place it with `Nf4Weight::to_device` first".into(),
            });
        }
        // Rows from the leading dims (not elem_count / k, which is 0 for every m when k is 0).
        let m: usize = x.shape()[..x.rank() - 1].iter().product();
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("rank >= 1") = n;
        let x = x.contiguous()?;
        let w = self.as_ref();
        macro_rules! run {
            ($slice:expr, $gemm:ident, $acc:ty) => {{
                let a = MatRef::row_major($slice, m, k);
                let mut c = vec![<$acc>::default(); m * n];
                if transposed {
                    $gemm(a, Nf4Transposed(w), &mut c, false);
                } else {
                    $gemm(a, Nf4Plain(w), &mut c, false);
                }
                c
            }};
        }
        let off = x.layout().offset();
        match x.dtype() {
            DType::F32 => {
                let s = &x.cpu_slice::<f32>(op)?[off..off + m * k];
                let out = match precision {
                    MatmulPrecision::F32 => run!(s, gemm_f32_packed, f32),
                    MatmulPrecision::Bf16 => run!(s, gemm_f32_as_bf16_packed, f32),
                };
                Tensor::from_vec(out, &out_shape, &Device::Cpu)
            }
            DType::BF16 => {
                let s = &x.cpu_slice::<half::bf16>(op)?[off..off + m * k];
                Tensor::from_vec(run!(s, gemm_bf16_packed, f32), &out_shape, &Device::Cpu)?.to_dtype(DType::BF16)
            }
            DType::F64 => {
                let s = &x.cpu_slice::<f64>(op)?[off..off + m * k];
                Tensor::from_vec(run!(s, gemm_f64_packed, f64), &out_shape, &Device::Cpu)
            }
            dt => Err(Error::dtype(op, dt, "NF4 products take f32, bf16 or f64 inputs")),
        }
    }
}

fn check_in_features(op: &'static str, out_features: usize, in_features: usize, blocksize: usize) -> Result<()> {
    if !in_features.is_multiple_of(blocksize) {
        return Err(Error::invalid(
            op,
            &[out_features, in_features],
            format!("in_features {in_features} is not a multiple of the block size {blocksize}; NF4 blocks must not straddle rows"),
        ));
    }
    Ok(())
}
