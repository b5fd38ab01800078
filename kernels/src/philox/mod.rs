//! Philox 4x32-10: the one counter-based random generator of the project.
//!
//! Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC'11). A bijection of a 128-bit
//! counter under a 64-bit key, ten rounds. Because element `g` of a stream depends only on
//! `(seed, g)`, a CPU loop, a threaded CPU loop and a GPU grid all produce the same numbers without
//! sharing any state; that is the whole reason we use it.
//!
//! # The stream layout (the contract the CUDA kernel must reproduce)
//! For a stream with `seed` and element offset `offset`, element `i` has global index
//! `g = offset + i`. It is lane `g % 4` of `philox4x32_10(counter = [lo(g/4), hi(g/4), 0, 0],
//! key = [lo(seed), hi(seed)])`.
//! - uniform in (0, 1): `((x >> 8) + 0.5) * 2^-24` for f32 output, computed exactly; for f64
//!   output `(x + 0.5) * 2^-32`. Neither endpoint is ever produced, so `ln(u)` is finite.
//! - standard normal: Box-Muller on the lane pairs of one counter block. Lanes 0 and 1 give
//!   `r cos(t)` and `r sin(t)` with `r = sqrt(-2 ln u0)`, `t = 2 pi u1`; lanes 2 and 3 likewise from
//!   `u2, u3`. Uniforms here use the f64 form; `ln`, `sin`, `cos` are our own f64 routines
//!   ([`math`]: only correctly rounded IEEE operations in a fixed order, within 1-2 ulp of the exact
//!   values), so `philox.ptx` reproduces them bit for bit; the result is rounded once to the output
//!   type. (std's `ln`/`sin`/`cos` are not used: their last bit is the platform libm's.)
//!
//! Callers that draw several tensors from one seed advance `offset` by the element count of
//! each draw (see `brainstacks_tensor::Rng`).

pub mod cpu;
pub mod math;
#[cfg(feature = "cuda")]
pub mod cuda;

/// The hand-written PTX of the Philox streams (`philox_u32`, `philox_uniform_f32`,
/// `philox_normal_f32`, `philox_normal_f64`), embedded in every build.
pub const PTX: &str = include_str!("philox.ptx");

/// Multipliers and Weyl key increments of Philox 4x32 (from the paper).
pub const PHILOX_M0: u32 = 0xD251_1F53;
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
pub const PHILOX_W0: u32 = 0x9E37_79B9;
pub const PHILOX_W1: u32 = 0xBB67_AE85;
