//! NF4 weights on CUDA: the device copy of an [`crate::nf4::Nf4Weight`] and its two products.
//!
//! The device copy holds the packed codes and the f32 scale of every 64-element block (the
//! reconstructed scales when the weight is double-quantized, decoded once at upload, so no
//! product decodes them again). The products follow the CPU path's precision contract:
//! - `MatmulPrecision::Bf16`: the NF4 kernels, which round the input to bf16 and dequantize the
//!   weight to bf16 in registers, with f32 accumulation (bitsandbytes' bf16 compute dtype);
//! - `MatmulPrecision::F32`: the weight dequantized to an f32 buffer for the call (bit for bit the
//!   CPU decoder) and multiplied by the f32 GEMM, so nothing is rounded to bf16.

use std::sync::Arc;

use brainstacks_kernels::nf4::cuda::{self as nk, Nf4Out, Nf4Scales};

use super::ops::{dense, first, wrap};
use super::storage::CudaBuf;
use super::{CudaSlice, GpuContext, context, gpu_error};
use crate::{DType, Device, Error, MatmulPrecision, Result, Tensor};

/// The GPU kernels read one scale per 64 elements.
const GPU_BLOCKSIZE: usize = 64;

/// Which of a frozen linear layer's two products to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nf4Product {
    /// `y = x · Wᵀ`: `x [.., in]` gives `y [.., out]` (`Nf4Weight::linear`).
    Forward,
    /// `dx = dy · W`: `dy [.., out]` gives `dx [.., in]` (`Nf4Weight::linear_input_grad`).
    InputGrad,
}

/// An NF4 weight `[n, k]` resident on one CUDA device.
pub(crate) struct DeviceNf4 {
    gpu: Arc<GpuContext>,
    device: Device,
    packed: CudaSlice<u8>,
    absmax: CudaSlice<f32>,
    n: usize,
    k: usize,
}

impl std::fmt::Debug for DeviceNf4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceNf4 {{ {}, [{}, {}] }}", self.device, self.n, self.k)
    }
}

impl DeviceNf4 {
    /// Uploads packed codes and f32 block scales of a `[n, k]` weight quantized in blocks of
    /// `blocksize` to CUDA device `ordinal`.
    pub(crate) fn upload(ordinal: usize, n: usize, k: usize, blocksize: usize, packed: &[u8], absmax: &[f32]) -> Result<Self> {
        const OP: &str = "nf4_to_device";
        let device = Device::Cuda(ordinal);
        if blocksize != GPU_BLOCKSIZE {
            return Err(Error::Device {
                op: OP,
                device,
                msg: format!(
                    "the CUDA NF4 kernels read blocks of {GPU_BLOCKSIZE}; this weight has blocks of {blocksize} (requantize it with block size {GPU_BLOCKSIZE})"
                ),
            });
        }
        let gpu = context(OP, ordinal)?;
        let e = |err| gpu_error(OP, device, err);
        let packed = gpu.htod(packed).map_err(e)?;
        let absmax = gpu.htod(absmax).map_err(e)?;
        Ok(Self { gpu, device, packed, absmax, n, k })
    }

    pub(crate) fn device(&self) -> Device {
        self.device
    }

    fn weight(&self) -> nk::Nf4Weight<'_> {
        nk::Nf4Weight { packed: &self.packed, scales: Nf4Scales::F32(&self.absmax), n: self.n, k: self.k }
    }

    /// The product `kind` of the weight `W [n, k]` (n = out, k = in) with `x`, in the input's
    /// dtype (f32 or bf16), at `precision` for f32 inputs.
    pub(crate) fn product(&self, op: &'static str, x: &Tensor, kind: Nf4Product, precision: MatmulPrecision) -> Result<Tensor> {
        let c0 = first(op, x)?;
        if c0.device() != self.device {
            return Err(Error::Device {
                op,
                device: c0.device(),
                msg: format!("the NF4 weight is on {}; move the input there (or the weight with `to_device`)", self.device),
            });
        }
        let (k_in, n_out) = match kind {
            Nf4Product::Forward => (self.k, self.n),
            Nf4Product::InputGrad => (self.n, self.k),
        };
        let m: usize = x.shape()[..x.rank() - 1].iter().product();
        let mut out_shape = x.shape().to_vec();
        *out_shape.last_mut().expect("rank >= 1") = n_out;
        match (x.dtype(), precision) {
            (DType::F32, MatmulPrecision::F32) => self.product_f32(op, x, m, kind, &out_shape),
            (DType::F32 | DType::BF16, _) => self.product_bf16(op, x, m, k_in, n_out, kind, &out_shape),
            (dt, _) => {
                Err(Error::Device { op, device: self.device, msg: format!("NF4 products on CUDA take f32 or bf16 inputs, not {dt}") })
            }
        }
    }

    /// Through the NF4 tensor-core kernels: bf16 operands, f32 accumulation; the result in the
    /// input's dtype.
    #[allow(clippy::too_many_arguments)]
    fn product_bf16(
        &self,
        op: &'static str,
        x: &Tensor,
        m: usize,
        k_in: usize,
        n_out: usize,
        kind: Nf4Product,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let xb = dense(op, &x.to_dtype(DType::BF16)?)?;
        let cx = first(op, &xb)?;
        let CudaBuf::BF16(xv) = cx.buf() else { unreachable!("cast to bf16 above") };
        let gpu = &self.gpu;
        let e = |err| gpu_error(op, self.device, err);
        let w = self.weight();
        let buf = if x.dtype() == DType::F32 {
            let mut y = gpu.alloc_zeros::<f32>(m * n_out).map_err(e)?;
            run_nf4(gpu, xv, m, k_in, &w, Nf4Out::F32(&mut y), kind).map_err(e)?;
            CudaBuf::F32(y)
        } else {
            let mut y = gpu.alloc_zeros::<u16>(m * n_out).map_err(e)?;
            run_nf4(gpu, xv, m, k_in, &w, Nf4Out::Bf16(&mut y), kind).map_err(e)?;
            CudaBuf::BF16(y)
        };
        Ok(wrap(gpu, buf, out_shape))
    }

    /// The weight dequantized to f32 for this call, then the f32 GEMM (no bf16 rounding).
    fn product_f32(&self, op: &'static str, x: &Tensor, m: usize, kind: Nf4Product, out_shape: &[usize]) -> Result<Tensor> {
        let gpu = &self.gpu;
        let e = |err| gpu_error(op, self.device, err);
        let mut w = gpu.alloc_zeros::<f32>(self.n * self.k).map_err(e)?;
        nk::nf4_dequantize(gpu, &self.weight(), &mut w).map_err(e)?;
        let w = wrap(gpu, CudaBuf::F32(w), &[self.n, self.k]);
        let rows = x.reshape(&[m, x.shape()[x.rank() - 1]])?;
        let y = match kind {
            Nf4Product::Forward => rows.matmul(&w.t()?)?,
            Nf4Product::InputGrad => rows.matmul(&w)?,
        };
        y.reshape(out_shape)
    }
}

fn run_nf4(
    gpu: &GpuContext,
    x: &CudaSlice<u16>,
    m: usize,
    ld: usize,
    w: &nk::Nf4Weight<'_>,
    out: Nf4Out<'_>,
    kind: Nf4Product,
) -> std::result::Result<(), super::GpuError> {
    if m == 0 {
        return Ok(());
    }
    match kind {
        Nf4Product::Forward => nk::nf4_matmul(gpu, x, m, ld, w, out),
        Nf4Product::InputGrad => nk::nf4_matmul_transposed(gpu, x, m, ld, w, out),
    }
}
