//! Double quantization of the NF4 scales (bitsandbytes `compress_statistics=True`, QLoRA "DQ").
//!
//! # Contract
//!
//! Given the first-level `absmax` (one `f32` per 64-element block):
//!
//! 1. `offset` = mean of `absmax`, an `f32` scalar (the oracle sums in `f64` and rounds once;
//!    PyTorch's `f32` mean may differ in the last ulp, which is harmless because the offset is
//!    stored alongside the data and simply read back; to reproduce a stored file exactly, pass
//!    its offset to [`double_quantize_absmax_with_offset`]). PyTorch's `f32` sum also
//!    overflows to `inf` when the scales add up past `f32::MAX`, leaving bitsandbytes with an
//!    unusable nested state; the `f64` sum does not.
//! 2. `centered[i] = absmax[i] - offset` in `f32`.
//! 3. `centered` is cut into blocks of [`NESTED_BLOCKSIZE`] = 256; each gets an `f32`
//!    `nested_absmax` = max |centered| over the block.
//! 4. Each element is scaled by `centered * (1 / nested_absmax)` (`f32`, reciprocal first as in
//!    the first level) and replaced by the index of the **nearest** entry of the 256-entry signed
//!    dynamic map ([`create_dynamic_map`]); a value exactly on the `f32` midpoint
//!    `(lo + hi) * 0.5` of two neighbours takes the **lower** one, values beyond the ends clamp
//!    to them. A block whose `nested_absmax` is 0 maps to the index of `0.0` (127).
//! 5. Reconstruction: `absmax[i] = map[q[i]] * nested_absmax[i / 256] + offset`, two separate
//!    `f32` roundings (no fused multiply-add), as bitsandbytes dequantizes then adds the offset.
//!
//! Known deviations: bitsandbytes' own search (`dQuantize` on CUDA, `quantize_block` on CPU)
//! occasionally lands one entry off the nearest one, on either side (2 of 1024 codes for a
//! random `[16, 4096]` weight with bitsandbytes 0.50.2 on a CPU, `tests/nf4_bitsandbytes.rs`);
//! and for an all-zero centred block it scales `0 / 0 = NaN` and stores an arbitrary code
//! where we store 127 (every code times a zero nested absmax reconstructs the offset). Step 4
//! is the intended nearest rule; when comparing with files written by bitsandbytes, accept a
//! one-step difference in rare nested codes and compare the reconstructed absmax instead.
//!
//! # The dynamic map
//!
//! bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`: for each
//! `i` in `0..7`, take the `2^i` midpoints of `2^i + 1` evenly spaced points from 0.1 to 1 and
//! scale them by `10^(i - 6)`, with both signs; add `0` and `1.0`; sort. That is
//! `2 * 127 + 2 = 256` values in `[-0.99296874, 1.0]`: the map is **not** symmetric, its most
//! negative entry is `-(1 - 0.9/128)`, not `-1`. The generator reproduces PyTorch's `f32`
//! arithmetic (`linspace` filling the first half forward from the start and the second half
//! backward from the end, means `(a + b) / 2`, scale multiplied in `f32`). PyTorch's CPU
//! `linspace` kernel is compiled with floating-point contraction on x86 (AVX2/AVX-512 builds),
//! so `start + step * j` and `end - step * k` are each one fused multiply-add; with separate
//! roundings 42 of the 256 entries come out one ulp off. The FMA form is bit-identical to the
//! map bitsandbytes 0.50.2 builds on such a CPU (`tests/nf4_bitsandbytes.rs`). The map is
//! computed on the CPU even for GPU checkpoints, but a machine without FMA would store a
//! slightly different one, so a map loaded from a checkpoint (`nested_quant_map`) should be
//! used as stored, via [`DoubleQuant::from_parts`].

use super::{Nf4Error, check_finite};

/// Elements per second-level block (bitsandbytes always uses 256 for the nested statistics).
pub const NESTED_BLOCKSIZE: usize = 256;

/// Index of `0.0` in the signed dynamic map: 127 negative entries sort before it.
pub const DYNAMIC_ZERO_INDEX: u8 = 127;

/// PyTorch-style `f32` linspace: first half `start + step * j`, second half `end - step * (n-1-j)`,
/// so both endpoints are exact; each is one fused multiply-add, as PyTorch's CPU kernel is
/// compiled (see the module docs).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|j| {
            if j < half {
                step.mul_add(j as f32, start)
            } else {
                (-step).mul_add((steps - 1 - j) as f32, end)
            }
        })
        .collect()
}

/// Builds bitsandbytes' signed 8-bit dynamic quantization map (`signed=True`,
/// `max_exponent_bits=7`, `total_bits=8`), sorted ascending. See the module docs.
pub fn create_dynamic_map() -> [f32; 256] {
    // 10^(i-6) as the f64 Python computes, then rounded to f32 when multiplied with a f32 tensor.
    const SCALES: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for (i, &scale) in SCALES.iter().enumerate() {
        let points = linspace_f32(0.1, 1.0, (1usize << i) + 1);
        let scale = scale as f32;
        for pair in points.windows(2) {
            let mean = (pair[0] + pair[1]) / 2.0;
            data.push(scale * mean);
            data.push(-(scale * mean));
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    let mut map = [0.0f32; 256];
    map.copy_from_slice(&data);
    map
}

/// Nearest entry of an ascending `map`, ties (at the `f32` midpoint) to the lower entry,
/// clamping outside the map's range. `s` is never NaN here (inputs are checked).
fn nearest_index(map: &[f32; 256], s: f32) -> u8 {
    // Number of entries <= s: the upper neighbour's index.
    let upper = map.partition_point(|&c| c <= s);
    if upper == 0 {
        return 0;
    }
    if upper == map.len() {
        return 255;
    }
    let lo = upper - 1;
    let mid = (map[lo] + map[upper]) * 0.5;
    if s > mid { upper as u8 } else { lo as u8 }
}

/// Double-quantized NF4 scales. Private fields keep the lengths consistent so that
/// [`dequantize_absmax`] cannot index out of bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleQuant {
    nested_absmax: Vec<f32>,
    quantized: Vec<u8>,
    offset: f32,
    nested_quant_map: [f32; 256],
}

impl DoubleQuant {
    /// Validates and wraps stored data (bitsandbytes keys `nested_absmax`, `absmax` (uint8),
    /// `nested_offset`, `nested_quant_map`): one nested absmax per 256 codes, all finite and
    /// `>= 0`, finite offset, finite map.
    pub fn from_parts(
        nested_absmax: Vec<f32>,
        quantized: Vec<u8>,
        offset: f32,
        nested_quant_map: [f32; 256],
    ) -> Result<Self, Nf4Error> {
        let want = quantized.len().div_ceil(NESTED_BLOCKSIZE);
        if nested_absmax.len() != want {
            return Err(Nf4Error::ShapeMismatch {
                what: "nested_absmax",
                expected: want,
                got: nested_absmax.len(),
            });
        }
        if let Some((index, &value)) = nested_absmax
            .iter()
            .enumerate()
            .find(|(_, a)| !(a.is_finite() && **a >= 0.0))
        {
            return Err(Nf4Error::InvalidScale { index, value });
        }
        if !offset.is_finite() {
            return Err(Nf4Error::InvalidScale {
                index: 0,
                value: offset,
            });
        }
        check_finite(&nested_quant_map)?;
        Ok(Self {
            nested_absmax,
            quantized,
            offset,
            nested_quant_map,
        })
    }

    /// One `f32` scale per 256 first-level scales.
    pub fn nested_absmax(&self) -> &[f32] {
        &self.nested_absmax
    }

    /// One 8-bit code per first-level scale.
    pub fn quantized(&self) -> &[u8] {
        &self.quantized
    }

    /// The mean that was subtracted before quantizing.
    pub fn offset(&self) -> f32 {
        self.offset
    }

    /// The 256-entry code book the codes index.
    pub fn nested_quant_map(&self) -> &[f32; 256] {
        &self.nested_quant_map
    }
}

/// Double-quantizes first-level NF4 scales as described in the module docs.
///
/// Errors: a NaN or infinite entry in `absmax`. An empty input gives an empty result with
/// offset 0 (PyTorch would produce a NaN mean there).
pub fn double_quantize_absmax(absmax: &[f32]) -> Result<DoubleQuant, Nf4Error> {
    check_finite(absmax)?;
    let offset = if absmax.is_empty() {
        0.0
    } else {
        (absmax.iter().map(|&a| f64::from(a)).sum::<f64>() / absmax.len() as f64) as f32
    };
    double_quantize_absmax_with_offset(absmax, offset)
}

/// Steps 2-4 of the module docs with a given `offset` (e.g. the one a stored file holds, which
/// PyTorch computed with its own `f32` summation order).
///
/// Errors: a NaN or infinite entry in `absmax`, or a non-finite `offset`.
pub fn double_quantize_absmax_with_offset(
    absmax: &[f32],
    offset: f32,
) -> Result<DoubleQuant, Nf4Error> {
    check_finite(absmax)?;
    if !offset.is_finite() {
        return Err(Nf4Error::InvalidScale {
            index: 0,
            value: offset,
        });
    }
    let map = create_dynamic_map();
    let centered: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let mut nested_absmax = Vec::with_capacity(centered.len().div_ceil(NESTED_BLOCKSIZE));
    let mut quantized = Vec::with_capacity(centered.len());
    for block in centered.chunks(NESTED_BLOCKSIZE) {
        let amax = block.iter().fold(0.0f32, |m, &c| m.max(c.abs()));
        nested_absmax.push(amax);
        let recip = 1.0f32 / amax;
        for &c in block {
            let code = if amax == 0.0 {
                DYNAMIC_ZERO_INDEX
            } else if recip.is_finite() {
                nearest_index(&map, c * recip)
            } else {
                // Same overflow fallback as the first level: keep zeros at zero.
                nearest_index(&map, (f64::from(c) / f64::from(amax)) as f32)
            };
            quantized.push(code);
        }
    }
    Ok(DoubleQuant {
        nested_absmax,
        quantized,
        offset,
        nested_quant_map: map,
    })
}

/// Reconstructs the first-level scales: `map[q] * nested_absmax[i / 256] + offset` in `f32`.
pub fn dequantize_absmax(dq: &DoubleQuant) -> Vec<f32> {
    dq.quantized
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            dq.nested_quant_map[usize::from(q)] * dq.nested_absmax[i / NESTED_BLOCKSIZE] + dq.offset
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dynamic_map_properties() {
        let map = create_dynamic_map();
        assert!(map.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!(map[usize::from(DYNAMIC_ZERO_INDEX)], 0.0);
        assert_eq!(map[255], 1.0);
        // The negative end is -(1 - 0.9/128) in f32, printed -0.992968738 by third-party code
        // that dumps bitsandbytes' map; there is no -1.0 entry.
        assert_eq!(map[0], -0.992_968_74_f32);
        assert!((f64::from(map[0]) + (1.0 - 0.9 / 128.0)).abs() < 1e-7);
        assert_eq!(map.iter().filter(|&&v| v < 0.0).count(), 127);
        assert_eq!(map.iter().filter(|&&v| v > 0.0).count(), 128);
        // Smallest magnitude: 1e-6 * mean(0.1, 1.0) = 5.5e-7, both signs next to zero.
        assert!((f64::from(map[128]) - 5.5e-7).abs() < 1e-12);
        assert_eq!(map[126], -map[128]);
        // Positive entries other than 1.0 mirror the negative ones.
        for j in 0..127 {
            assert_eq!(map[j], -map[254 - j]);
        }
    }

    #[test]
    fn nearest_ties_and_clamp() {
        let map = create_dynamic_map();
        for j in 0..255 {
            let mid = (map[j] + map[j + 1]) * 0.5;
            assert_eq!(nearest_index(&map, mid), j as u8, "tie at {j}");
            assert_eq!(nearest_index(&map, mid.next_up()), j as u8 + 1);
            assert_eq!(nearest_index(&map, map[j]), j as u8);
        }
        assert_eq!(nearest_index(&map, -1.0), 0);
        assert_eq!(nearest_index(&map, 1.0), 255);
        assert_eq!(nearest_index(&map, 0.0), DYNAMIC_ZERO_INDEX);
    }

    #[test]
    fn edge_cases() {
        let dq = double_quantize_absmax(&[]).unwrap();
        assert!(dq.quantized().is_empty() && dq.nested_absmax().is_empty());
        assert!(dequantize_absmax(&dq).is_empty());
        // All equal scales: centered block is all zero -> zero code, exact reconstruction.
        let dq = double_quantize_absmax(&[0.5; 300]).unwrap();
        assert_eq!(dq.offset(), 0.5);
        assert_eq!(dq.nested_absmax(), &[0.0, 0.0]);
        assert!(dq.quantized().iter().all(|&q| q == DYNAMIC_ZERO_INDEX));
        assert_eq!(dequantize_absmax(&dq), vec![0.5; 300]);
        assert_eq!(
            double_quantize_absmax(&[1.0, f32::NAN]),
            Err(Nf4Error::NaN { index: 1 })
        );
        assert!(double_quantize_absmax(&[f32::INFINITY]).is_err());
        // Round trip through from_parts, and its validation.
        let dq = double_quantize_absmax(&[0.1, 0.2, 0.3]).unwrap();
        let again = DoubleQuant::from_parts(
            dq.nested_absmax().to_vec(),
            dq.quantized().to_vec(),
            dq.offset(),
            *dq.nested_quant_map(),
        )
        .unwrap();
        assert_eq!(again, dq);
        assert!(DoubleQuant::from_parts(vec![], vec![1], 0.0, create_dynamic_map()).is_err());
        assert!(
            DoubleQuant::from_parts(vec![f32::NAN], vec![1], 0.0, create_dynamic_map()).is_err()
        );
        assert!(
            DoubleQuant::from_parts(vec![1.0], vec![1], f32::NAN, create_dynamic_map()).is_err()
        );
    }

    proptest! {
        #[test]
        fn round_trip_bound(absmax in prop::collection::vec(0.0f32..10.0, 0..700)) {
            let dq = double_quantize_absmax(&absmax).unwrap();
            let map = dq.nested_quant_map();
            // Worst case per element, as a fraction of nested_absmax: half the widest gap, or
            // the distance from -1 to the most negative entry (values there clamp).
            let half_gap = map.windows(2).map(|w| f64::from(w[1] - w[0]) / 2.0).fold(0.0, f64::max);
            let frac = half_gap.max(f64::from(map[0]) + 1.0);
            let back = dequantize_absmax(&dq);
            prop_assert_eq!(back.len(), absmax.len());
            for (i, (&a, &b)) in absmax.iter().zip(&back).enumerate() {
                let n = f64::from(dq.nested_absmax()[i / NESTED_BLOCKSIZE]);
                // Slack: f32 roundings of centering, scaling, product and offset addition.
                let bound = frac * n + 8.0 * f64::from(f32::EPSILON) * (n + f64::from(dq.offset()).abs() + f64::from(a));
                prop_assert!((f64::from(a) - f64::from(b)).abs() <= bound, "i={} a={} b={}", i, a, b);
            }
        }
    }
}
