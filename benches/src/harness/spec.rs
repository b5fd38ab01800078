//! What each GPU benchmark is, independent of running it: its stable id, and the bytes it moves
//! and the floating-point operations it does per call, computed from its shape. Plain Rust, so the
//! arithmetic is tested on the CPU.

/// What a benchmark is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The memory-bandwidth ceiling (device-to-device copy): always measured, never filtered out.
    CopyCeiling,
    /// The matrix-throughput ceiling (cuBLAS bf16 GEMM): always measured, never filtered out.
    CublasCeiling,
    /// One of our kernels.
    Kernel,
}

/// One benchmark's identity and work per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Op family, e.g. `cast` (first part of the id).
    pub kernel: &'static str,
    /// Entry or variant, e.g. `f32_bf16` (second part of the id; the record's `dtype`).
    pub variant: &'static str,
    /// Shape label, e.g. `16M` or `4096x4096x4096` (third part of the id).
    pub shape: String,
    /// Bytes read plus bytes written per call.
    pub bytes: u64,
    /// Floating-point operations per call (0 for data movement and integer work).
    pub flops: u64,
    pub role: Role,
}

impl Spec {
    /// The stable id `<kernel>/<variant>/<shape>`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kernel, self.variant, self.shape)
    }
}

/// An element count as a label: `16M` for 16·2^20, `4K` for 4·2^10, else the number.
pub fn count_label(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

/// A byte count as a label: `256MiB`, `4KiB`, else `<n>B`.
pub fn bytes_label(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

/// A device-to-device copy of `bytes` bytes: reads and writes each byte once.
pub fn copy_d2d(bytes: u64) -> Spec {
    Spec {
        kernel: "copy",
        variant: "d2d",
        shape: bytes_label(bytes),
        bytes: 2 * bytes,
        flops: 0,
        role: Role::CopyCeiling,
    }
}

/// cuBLAS `C = A·Bᵀ` in bf16 (A m×k, B n×k, C m×n; f32 accumulation): reads A and B once and
/// writes C once (the least traffic possible), 2·m·n·k FLOPs.
pub fn cublas_bf16(m: u64, n: u64, k: u64) -> Spec {
    Spec {
        kernel: "cublas",
        variant: "bf16",
        shape: format!("{m}x{n}x{k}"),
        bytes: 2 * (m * k + n * k + m * n),
        flops: 2 * m * n * k,
        role: Role::CublasCeiling,
    }
}

/// Philox 4x32-10 raw words: writes `n` u32 (the rounds are integer work, not FLOPs).
pub fn philox_u32(n: u64) -> Spec {
    Spec {
        kernel: "philox",
        variant: "u32",
        shape: count_label(n),
        bytes: 4 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// Philox uniform f32 in (low, high): writes `n` f32 (one scale and shift each is not counted).
pub fn philox_uniform_f32(n: u64) -> Spec {
    Spec {
        kernel: "philox",
        variant: "uniform_f32",
        shape: count_label(n),
        bytes: 4 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// f32 -> bf16 cast of `n` elements: reads 4n bytes, writes 2n.
pub fn cast_f32_bf16(n: u64) -> Spec {
    Spec {
        kernel: "cast",
        variant: "f32_bf16",
        shape: count_label(n),
        bytes: 6 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

/// bf16 -> f32 cast of `n` elements: reads 2n bytes, writes 4n.
pub fn cast_bf16_f32(n: u64) -> Spec {
    Spec {
        kernel: "cast",
        variant: "bf16_f32",
        shape: count_label(n),
        bytes: 6 * n,
        flops: 0,
        role: Role::Kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(count_label(16 << 20), "16M");
        assert_eq!(count_label(3 << 10), "3K");
        assert_eq!(count_label(1_000_003), "1000003");
        assert_eq!(count_label(0), "0");
        assert_eq!(bytes_label(256 << 20), "256MiB");
        assert_eq!(bytes_label(2 << 30), "2GiB");
        assert_eq!(bytes_label(1536), "1536B");
    }

    #[test]
    fn ids_bytes_and_flops_follow_the_shape() {
        let c = copy_d2d(256 << 20);
        assert_eq!(
            (c.id(), c.bytes, c.flops),
            ("copy/d2d/256MiB".into(), 512 << 20, 0)
        );
        let g = cublas_bf16(4096, 2048, 1024);
        assert_eq!(g.id(), "cublas/bf16/4096x2048x1024");
        assert_eq!(g.flops, 2 * 4096 * 2048 * 1024);
        assert_eq!(g.bytes, 2 * (4096 * 1024 + 2048 * 1024 + 4096 * 2048));
        assert_eq!(g.role, Role::CublasCeiling);
        assert_eq!(philox_u32(16 << 20).id(), "philox/u32/16M");
        assert_eq!(philox_uniform_f32(16 << 20).bytes, 64 << 20);
        let k = cast_f32_bf16(16 << 20);
        assert_eq!(
            (k.id(), k.bytes, k.role),
            ("cast/f32_bf16/16M".into(), 96 << 20, Role::Kernel)
        );
        assert_eq!(cast_bf16_f32(10).id(), "cast/bf16_f32/10");
    }
}
