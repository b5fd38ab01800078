//! Top-k along the last dim. The ranking order (larger first, NaN above every number, ties to the
//! lower position) is the contract of `brainstacks_kernels::topk`, matched exactly.

use std::cmp::Ordering;

use super::norm::{dense, dispatch_all, for_each_row};
use crate::{Error, Result, Tensor, WithDType};

/// `Less` when `(a, ia)` ranks before `(b, ib)`. `x != x` is true only for NaN, and never for the
/// integer dtypes, so one generic comparison serves every dtype.
#[allow(clippy::eq_op)]
fn rank<T: WithDType>(a: T, ia: usize, b: T, ib: usize) -> Ordering {
    let by_value = match (a != a, b != b) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    };
    by_value.then(ia.cmp(&ib))
}

impl Tensor {
    /// The `k` largest values along the last dim, sorted descending, and their positions as I64:
    /// `([..., k] values of self's dtype, [..., k] indices)`. Equal values come lower position
    /// first; NaN counts as larger than every number (as `torch.topk`), so a NaN is selected, not
    /// hidden. `k` must not exceed the size of the last dim; rank 0 is an error.
    ///
    /// Each row selects with a partial sort under that total order, so the result is unique and
    /// thread-count invariant.
    pub fn topk(&self, k: usize) -> Result<(Tensor, Tensor)> {
        const OP: &str = "topk";
        if self.rank() == 0 {
            return Err(Error::invalid(OP, self.shape(), "needs rank >= 1: it selects along the last dim"));
        }
        let n = self.shape()[self.rank() - 1];
        if k > n {
            return Err(Error::invalid(OP, self.shape(), format!("k = {k} exceeds the size {n} of the last dim")));
        }
        let mut shape = self.shape().to_vec();
        *shape.last_mut().expect("rank >= 1") = k;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::ops::topk(self, k, &shape);
        }
        // A zero-length last dim only allows k = 0, so the row count does not matter then.
        let rows = self.elem_count().checked_div(n).unwrap_or(0);
        let x = self.contiguous()?;
        let log_n = (usize::BITS - n.leading_zeros()) as usize;
        dispatch_all!(self.dtype(), T => {
            let xs = dense::<T>(&x, OP)?;
            let mut pairs = vec![(T::default(), 0i64); rows * k];
            for_each_row(&mut pairs, k, n * log_n + k, |r, out| {
                let row = &xs[r * n..(r + 1) * n];
                let mut order: Vec<usize> = (0..n).collect();
                let cmp = |&i: &usize, &j: &usize| rank(row[i], i, row[j], j);
                if k < n {
                    order.select_nth_unstable_by(k, cmp);
                }
                let top = &mut order[..k];
                top.sort_unstable_by(cmp);
                for (o, &i) in out.iter_mut().zip(top.iter()) {
                    *o = (row[i], i as i64);
                }
            });
            let (values, indices): (Vec<T>, Vec<i64>) = pairs.into_iter().unzip();
            Ok((Tensor::from_vec(values, &shape, &self.device())?, Tensor::from_vec(indices, &shape, &self.device())?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::norm::testing::*;
    use super::*;
    use crate::{DType, Device};
    use brainstacks_kernels::topk::topk as topk_oracle;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Matches the oracle bit for bit (values and indices) on rows with ties and NaNs, for
        /// strided inputs; the values equal a descending sorted copy of the row.
        #[test]
        fn topk_matches_oracle(lead in prop::collection::vec(0usize..4, 0..3), n in 0usize..12, kf in 0.0f64..=1.0, mode in 0u8..3, seed in any::<u64>(), dt in 0usize..7, nans in any::<bool>()) {
            let dtype = DType::ALL[dt];
            let mut shape = lead.clone();
            shape.push(n);
            let count: usize = shape.iter().product();
            // Few distinct values so that ties are common.
            let mut v: Vec<f64> = values(count, seed, 1.0).iter().map(|x| (x * 4.0).round()).collect();
            if nans && dtype.is_float() {
                for (i, x) in v.iter_mut().enumerate() {
                    if i % 5 == 2 { *x = f64::NAN; }
                }
            }
            let k = (kf * n as f64).floor() as usize;
            let x = view_of(&v, &shape, dtype, mode);
            let (vals, idx) = x.topk(k).unwrap();
            let mut oshape = shape.clone();
            *oshape.last_mut().unwrap() = k;
            prop_assert_eq!(vals.shape(), &oshape[..]);
            prop_assert_eq!(idx.dtype(), DType::I64);
            let xs = x.to_vec_f64().unwrap();
            let rows = count.checked_div(n).unwrap_or(0);
            let (wv, wi) = topk_oracle(&xs, rows, n, k);
            let gv = vals.to_vec_f64().unwrap();
            prop_assert_eq!(idx.to_vec::<i64>().unwrap(), wi);
            for (g, w) in gv.iter().zip(&wv) {
                prop_assert!(g == w || (g.is_nan() && w.is_nan()));
            }
            for r in 0..rows {
                let mut sorted: Vec<f64> = xs[r * n..(r + 1) * n].to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a).then(std::cmp::Ordering::Equal));
                // total_cmp puts positive NaN above +inf, as our order; the values match a sorted copy.
                for i in 0..k {
                    let (g, w) = (gv[r * k + i], sorted[i]);
                    prop_assert!(g == w || (g.is_nan() && w.is_nan()));
                }
            }
        }
    }

    #[test]
    fn ties_go_to_the_lower_index_and_nan_ranks_first() {
        let x = Tensor::from_vec(vec![2f32, 5., f32::NAN, 5., -1.], &[1, 5], &Device::Cpu).unwrap();
        let (v, i) = x.topk(3).unwrap();
        let v = v.to_vec::<f32>().unwrap();
        assert!(v[0].is_nan());
        assert_eq!(&v[1..], &[5., 5.]);
        assert_eq!(i.to_vec::<i64>().unwrap(), vec![2, 1, 3]);
    }

    #[test]
    fn thread_count_invariant() {
        let x = Tensor::from_vec(values(4000 * 64, 3, 1.0), &[4000, 64], &Device::Cpu).unwrap();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| x.topk(5).unwrap().1.to_vec::<i64>().unwrap())
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn errors() {
        let x = Tensor::zeros(&[2, 3], DType::F32, &Device::Cpu).unwrap();
        let msg = x.topk(4).unwrap_err().to_string();
        assert!(msg.contains("topk") && msg.contains("[2, 3]"), "{msg}");
        assert!(Tensor::scalar(1f32).topk(0).is_err());
    }
}
