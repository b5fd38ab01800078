//! Rotary position embedding in the rotate-half layout of Hugging Face Llama checkpoints (pair
//! `(x_i, x_{i+D/2})`, not the interleaved pairs of the paper), fused into one pass per row.
//! The math and tolerance: `brainstacks_kernels::rope`.

use super::norm::{dispatch_float, map_rows};
use crate::{DType, Device, Error, Result, Tensor, WithDType};

/// Cos and sin tables `[positions.len(), head_dim / 2]` for RoPE:
/// `angle(p, i) = p * theta^(-2i / head_dim)`, computed in f64 and rounded once to `dtype`.
///
/// Hugging Face computes the inverse frequencies and angles in f32 and casts the tables to the
/// activation dtype, so its angles carry an absolute error of about `p * 2^-24` rad (about 2e-4
/// at p = 4096); ours are the correctly rounded values. In bf16 the difference hides below the
/// table rounding; an f32 parity test against HF at large positions should allow for it.
/// `head_dim` must be even, `theta` finite and positive, `dtype` a float.
pub fn rope_tables(positions: &[usize], head_dim: usize, theta: f64, dtype: DType) -> Result<(Tensor, Tensor)> {
    const OP: &str = "rope_tables";
    if !head_dim.is_multiple_of(2) {
        return Err(Error::invalid(OP, &[positions.len(), head_dim], format!("head_dim {head_dim} must be even")));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::invalid(OP, &[positions.len(), head_dim], format!("theta {theta} must be finite and positive")));
    }
    if !dtype.is_float() {
        return Err(Error::dtype(OP, dtype, "tables need a floating-point dtype"));
    }
    let half = head_dim / 2;
    // Inverse frequencies once, then one multiply per entry: the same expression as the oracle.
    let inv_freq: Vec<f64> = (0..half).map(|i| theta.powf(-(2.0 * i as f64) / head_dim as f64)).collect();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in &inv_freq {
            let angle = p as f64 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let shape = [positions.len(), half];
    let cos = Tensor::from_vec(cos, &shape, &Device::Cpu)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, &shape, &Device::Cpu)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

impl Tensor {
    /// Applies RoPE to `self = x [..., T, D]` (`D` even, rank >= 2) with tables `cos`, `sin` of
    /// shape `[T, D/2]` (from [`rope_tables`]; row `t` is the position of the `t`-th token):
    /// `out[.., t, i] = x_i cos - x_{i+D/2} sin`, `out[.., t, i+D/2] = x_{i+D/2} cos + x_i sin`.
    ///
    /// The tables may have any float dtype (HF uses the activation dtype); the rotation is
    /// computed in f64 from the stored values and rounded once to the dtype of `x`. Rotating with
    /// `(cos, -sin)` undoes it, which is also its backward.
    pub fn rope(&self, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        const OP: &str = "rope";
        if self.rank() < 2 {
            return Err(Error::invalid(OP, self.shape(), "x must be [..., T, D] with rank >= 2"));
        }
        let (t, d) = (self.shape()[self.rank() - 2], self.shape()[self.rank() - 1]);
        if !d.is_multiple_of(2) {
            return Err(Error::invalid(OP, self.shape(), format!("the head dim {d} must be even")));
        }
        let half = d / 2;
        for table in [cos, sin] {
            if table.shape() != [t, half] {
                return Err(Error::shape(OP, self.shape(), table.shape(), format!("cos and sin must be [{t}, {half}] = [T, D/2] for x [..., T, D]")));
            }
            if !table.dtype().is_float() {
                return Err(Error::dtype(OP, table.dtype(), "cos and sin need a floating-point dtype"));
            }
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::rope(self, cos, sin);
        }
        let (c, s) = (cos.to_vec_f64()?, sin.to_vec_f64()?);
        dispatch_float!(self.dtype(), OP, T => {
            map_rows::<T>(OP, self, d, 3 * d, |r, xr, row| {
                let p = r % t;
                let (cr, sr) = (&c[p * half..(p + 1) * half], &s[p * half..(p + 1) * half]);
                for i in 0..half {
                    let (x0, x1) = (xr[i].to_f64(), xr[i + half].to_f64());
                    row[i] = T::from_f64(x0 * cr[i] - x1 * sr[i]);
                    row[i + half] = T::from_f64(x1 * cr[i] + x0 * sr[i]);
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::norm::testing::*;
    use super::*;
    use brainstacks_kernels::rope::{rope as rope_oracle, rope_tables as tables_oracle, tolerance};
    use proptest::prelude::*;

    fn negate(t: &Tensor) -> Tensor {
        let v: Vec<f64> = t.to_vec_f64().unwrap().iter().map(|x| -x).collect();
        Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap().to_dtype(t.dtype()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn rope_matches_oracle_preserves_pair_norms_and_inverts(
            batch in prop::collection::vec(0usize..4, 0..3), t in 0usize..9, half in 0usize..9,
            dt in 0usize..4, mode in 0u8..3, seed in any::<u64>(), start in 0usize..5000,
        ) {
            let dtype = FLOATS[dt];
            let d = 2 * half;
            let mut shape = batch.clone();
            shape.extend([t, d]);
            let n: usize = shape.iter().product();
            let positions: Vec<usize> = (start..start + t).collect();
            let (cos, sin) = rope_tables(&positions, d, 10000.0, dtype).unwrap();
            // Tables: the correctly rounded oracle values.
            let (oc, os) = tables_oracle(&positions, d, 10000.0);
            let cast = |v: &[f64]| Tensor::from_vec(v.to_vec(), &[t, half], &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_vec_f64().unwrap();
            prop_assert_eq!(cos.to_vec_f64().unwrap(), cast(&oc));
            prop_assert_eq!(sin.to_vec_f64().unwrap(), cast(&os));

            let x = view_of(&values(n, seed, 2.0), &shape, dtype, mode);
            let y = x.rope(&cos, &sin).unwrap();
            prop_assert_eq!(y.shape(), &shape[..]);
            let xs = x.to_vec_f64().unwrap();
            let ys = y.to_vec_f64().unwrap();
            let want = rope_oracle(&xs, &cos.to_vec_f64().unwrap(), &sin.to_vec_f64().unwrap(), n / (t * d).max(1), t, d);
            let u = unit_roundoff(dtype);
            for row in 0..n / d.max(1) {
                for i in 0..half {
                    let (a, b) = (row * d + i, row * d + i + half);
                    let pair_abs = xs[a].abs() + xs[b].abs();
                    prop_assert!((ys[a] - want[a]).abs() <= tolerance(u, want[a], pair_abs, tiny(dtype)));
                    prop_assert!((ys[b] - want[b]).abs() <= tolerance(u, want[b], pair_abs, tiny(dtype)));
                    // A rotation keeps the pair's length (up to the rounding of the tables and outputs).
                    let (nx, ny) = (xs[a].hypot(xs[b]), ys[a].hypot(ys[b]));
                    prop_assert!((nx - ny).abs() <= 8.0 * u * nx + 4.0 * tiny(dtype), "pair norm {nx} -> {ny}");
                }
            }
            // Turning back by the same angle restores x (exactly enough in f64; within rounding else).
            let back = y.rope(&cos, &negate(&sin)).unwrap().to_vec_f64().unwrap();
            for (k, (b, x0)) in back.iter().zip(&xs).enumerate() {
                let pair = if (k % d.max(1)) < half { xs[k] .abs() + xs[k + half].abs() } else { xs[k].abs() + xs[k - half].abs() };
                prop_assert!((b - x0).abs() <= 8.0 * u * pair + 4.0 * tiny(dtype), "{b} vs {x0}");
            }
        }
    }

    #[test]
    fn matches_hf_rotate_half_on_a_hand_example() {
        // D = 4, position 1, theta 1: angles [1, 1] (theta^anything = 1).
        let (cos, sin) = rope_tables(&[1], 4, 1.0, DType::F64).unwrap();
        let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[1, 4], &Device::Cpu).unwrap();
        let y = x.rope(&cos, &sin).unwrap().to_vec_f64().unwrap();
        let (c, s) = (1f64.cos(), 1f64.sin());
        // HF: x * [c, c, c, c] + rotate_half(x) * [s, s, s, s], rotate_half(x) = [-3, -4, 1, 2].
        assert_eq!(y, vec![1.0 * c - 3.0 * s, 2.0 * c - 4.0 * s, 3.0 * c + 1.0 * s, 4.0 * c + 2.0 * s]);
    }

    #[test]
    fn errors_name_the_op_and_both_shapes() {
        let (cos, sin) = rope_tables(&[0, 1, 2], 8, 10000.0, DType::F32).unwrap();
        let x = Tensor::zeros(&[2, 4, 8], DType::F32, &Device::Cpu).unwrap();
        let msg = x.rope(&cos, &sin).unwrap_err().to_string();
        assert!(msg.contains("rope") && msg.contains("[2, 4, 8]") && msg.contains("[3, 4]"), "{msg}");
        let odd = Tensor::zeros(&[3, 7], DType::F32, &Device::Cpu).unwrap();
        assert!(odd.rope(&cos, &sin).unwrap_err().to_string().contains("even"));
        assert!(Tensor::zeros(&[8], DType::F32, &Device::Cpu).unwrap().rope(&cos, &sin).is_err());
        assert!(rope_tables(&[0], 7, 10000.0, DType::F32).unwrap_err().to_string().contains("rope_tables"));
        assert!(rope_tables(&[0], 8, 0.0, DType::F32).is_err());
        assert!(rope_tables(&[0], 8, 10000.0, DType::I64).is_err());
        let xi = Tensor::zeros(&[3, 8], DType::I64, &Device::Cpu).unwrap();
        assert!(matches!(xi.rope(&cos, &sin), Err(Error::UnsupportedDType { op: "rope", .. })));
    }
}
