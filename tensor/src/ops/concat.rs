//! Joining and splitting along a dim: `cat`, `stack` (copies), `split`, `chunk` (views).

use super::norm::{dense, dispatch_all, for_each_row};
use crate::{Dim, Error, Result, Tensor};

impl Tensor {
    /// Concatenates `tensors` along `dim`: all have one rank and dtype, and equal sizes in every
    /// other dim. `dim` is resolved against the first tensor's shape. Inputs may be any strided
    /// view; the output is a new contiguous tensor.
    pub fn cat<D: Dim>(tensors: &[&Tensor], dim: D) -> Result<Tensor> {
        const OP: &str = "cat";
        let Some(first) = tensors.first() else {
            return Err(Error::invalid(OP, &[], "needs at least one tensor"));
        };
        let d = dim.resolve(OP, first.shape())?;
        for t in &tensors[1..] {
            let same_rank = t.rank() == first.rank();
            if !same_rank || t.shape().iter().zip(first.shape()).enumerate().any(|(e, (a, b))| e != d && a != b) {
                return Err(Error::shape(OP, first.shape(), t.shape(), format!("all dims but {d} must match")));
            }
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: OP, lhs: first.dtype(), rhs: t.dtype() });
            }
        }
        let outer: usize = first.shape()[..d].iter().product();
        let inner: usize = first.shape()[d + 1..].iter().product();
        // Each input contributes one block of `size_i * inner` elements to every outer row.
        let blocks: Vec<usize> = tensors.iter().map(|t| t.shape()[d] * inner).collect();
        let row: usize = blocks.iter().sum();
        let mut shape = first.shape().to_vec();
        shape[d] = tensors.iter().map(|t| t.shape()[d]).sum();
        #[cfg(feature = "cuda")]
        if first.device().is_cuda() {
            return crate::cuda::index::cat(OP, tensors, outer, &blocks, &shape);
        }
        let parts = tensors.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
        dispatch_all!(first.dtype(), T => {
            let slices = parts.iter().map(|p| dense::<T>(p, OP)).collect::<Result<Vec<_>>>()?;
            let mut out = vec![T::default(); outer * row];
            for_each_row(&mut out, row, row, |o, dst| {
                let mut at = 0;
                for (s, &b) in slices.iter().zip(&blocks) {
                    dst[at..at + b].copy_from_slice(&s[o * b..(o + 1) * b]);
                    at += b;
                }
            });
            Tensor::from_vec(out, &shape, &first.device())
        })
    }

    /// Stacks equally shaped tensors along a new dim `dim` in `0..=rank` (negative counts from the
    /// back of the new rank, as `unsqueeze`): the output is `[.., tensors.len(), ..]`.
    pub fn stack<D: Dim>(tensors: &[&Tensor], dim: D) -> Result<Tensor> {
        const OP: &str = "stack";
        let Some(first) = tensors.first() else {
            return Err(Error::invalid(OP, &[], "needs at least one tensor"));
        };
        // Resolve against the output rank (rank + 1), then report errors with the real shape.
        let mut grown = first.shape().to_vec();
        grown.push(1);
        let d = dim.resolve(OP, &grown).map_err(|e| match e {
            Error::DimOutOfRange { dim, .. } => Error::invalid(OP, first.shape(), format!("dim {dim} is out of range 0..={} for stacking", first.rank())),
            other => other,
        })?;
        for t in &tensors[1..] {
            if t.shape() != first.shape() {
                return Err(Error::shape(OP, first.shape(), t.shape(), "all tensors must have the same shape"));
            }
        }
        let views = tensors.iter().map(|t| t.unsqueeze(d as isize)).collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = views.iter().collect();
        Tensor::cat(&refs, d)
    }

    /// Views of consecutive pieces of `sizes[0], sizes[1], ...` elements along `dim` (no copies);
    /// the sizes must sum to the size of the dim.
    pub fn split<D: Dim>(&self, sizes: &[usize], dim: D) -> Result<Vec<Tensor>> {
        const OP: &str = "split";
        let d = dim.resolve(OP, self.shape())?;
        let total = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
        if total != Some(self.shape()[d]) {
            return Err(Error::invalid(OP, self.shape(), format!("sizes {sizes:?} do not sum to the size {} of dim {d}", self.shape()[d])));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&s| {
                let v = self.narrow(d, start, s);
                start += s;
                v
            })
            .collect()
    }

    /// Splits `dim` into `chunks` views as `torch.chunk`: pieces of `ceil(size / chunks)`, the
    /// last one smaller, so fewer than `chunks` pieces can come back (a size-0 dim gives one
    /// empty piece). `chunks` must be positive.
    pub fn chunk<D: Dim>(&self, chunks: usize, dim: D) -> Result<Vec<Tensor>> {
        const OP: &str = "chunk";
        let d = dim.resolve(OP, self.shape())?;
        if chunks == 0 {
            return Err(Error::invalid(OP, self.shape(), "chunks must be positive"));
        }
        let size = self.shape()[d];
        if size == 0 {
            return Ok(vec![self.clone()]);
        }
        let piece = size.div_ceil(chunks);
        let mut sizes = vec![piece; size / piece];
        if !size.is_multiple_of(piece) {
            sizes.push(size % piece);
        }
        self.split(&sizes, d)
    }
}

#[cfg(test)]
mod tests {
    use super::super::norm::testing::*;
    use super::*;
    use crate::{DType, Device};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// cat of the pieces of a split gives back the original, for strided inputs and any dtype;
        /// stack equals cat of unsqueezed inputs, checked element by element.
        #[test]
        fn split_then_cat_round_trips(shape in prop::collection::vec(0usize..5, 1..4), dim_pick in 0usize..3, cuts in prop::collection::vec(0usize..4, 0..4), mode in 0u8..3, seed in any::<u64>(), dt in 0usize..7) {
            let d = dim_pick % shape.len();
            let dtype = DType::ALL[dt];
            let n: usize = shape.iter().product();
            let x = view_of(&values(n, seed, 100.0), &shape, dtype, mode);
            // Sizes: the cuts, clipped so they fit, then the rest.
            let mut sizes = Vec::new();
            let mut left = shape[d];
            for c in cuts {
                let c = c.min(left);
                sizes.push(c);
                left -= c;
            }
            sizes.push(left);
            let parts = x.split(&sizes, d).unwrap();
            prop_assert!(parts.iter().all(|p| p.same_storage(&x)));
            let refs: Vec<&Tensor> = parts.iter().collect();
            let back = Tensor::cat(&refs, d).unwrap();
            prop_assert_eq!(back.shape(), x.shape());
            prop_assert_eq!(back.to_vec_f64().unwrap(), x.to_vec_f64().unwrap());

            // stack along every position, negative too.
            let y = view_of(&values(n, seed ^ 1, 100.0), &shape, dtype, mode + 1);
            for sd in 0..=shape.len() {
                let s = Tensor::stack(&[&x, &y], sd).unwrap();
                let neg = Tensor::stack(&[&x, &y], sd as isize - shape.len() as isize - 1).unwrap();
                let mut want = shape.clone();
                want.insert(sd, 2);
                prop_assert_eq!(s.shape(), &want[..]);
                prop_assert_eq!(s.to_vec_f64().unwrap(), neg.to_vec_f64().unwrap());
                prop_assert_eq!(s.narrow(sd, 0, 1).unwrap().to_vec_f64().unwrap(), x.to_vec_f64().unwrap());
                prop_assert_eq!(s.narrow(sd, 1, 1).unwrap().to_vec_f64().unwrap(), y.to_vec_f64().unwrap());
            }
        }

        #[test]
        fn chunk_sizes_follow_torch(size in 0usize..20, chunks in 1usize..8) {
            let x = Tensor::zeros(&[3, size], DType::F32, &Device::Cpu).unwrap();
            let parts = x.chunk(chunks, -1).unwrap();
            let sizes: Vec<usize> = parts.iter().map(|p| p.shape()[1]).collect();
            prop_assert_eq!(sizes.iter().sum::<usize>(), size);
            prop_assert!(parts.len() <= chunks);
            let piece = size.div_ceil(chunks).max(1);
            prop_assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == piece));
        }
    }

    #[test]
    fn cat_by_hand_along_the_last_dim() {
        let dev = Device::Cpu;
        let a = Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2], &dev).unwrap();
        let b = Tensor::from_vec(vec![5i64, 6], &[2, 1], &dev).unwrap();
        let c = Tensor::cat(&[&a, &b], -1).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.to_vec::<i64>().unwrap(), vec![1, 2, 5, 3, 4, 6]);
        assert_eq!(Tensor::chunk(&Tensor::zeros(&[5], DType::F32, &dev).unwrap(), 3, 0).unwrap().len(), 3);
    }

    #[test]
    fn errors_name_the_op_and_both_shapes() {
        let dev = Device::Cpu;
        let a = Tensor::zeros(&[2, 3], DType::F32, &dev).unwrap();
        let b = Tensor::zeros(&[4, 2], DType::F32, &dev).unwrap();
        let msg = Tensor::cat(&[&a, &b], 0).unwrap_err().to_string();
        assert!(msg.contains("cat") && msg.contains("[2, 3]") && msg.contains("[4, 2]"), "{msg}");
        let r3 = Tensor::zeros(&[2, 3, 1], DType::F32, &dev).unwrap();
        assert!(Tensor::cat(&[&a, &r3], 0).unwrap_err().to_string().contains("[2, 3, 1]"));
        let i = Tensor::zeros(&[2, 3], DType::I64, &dev).unwrap();
        assert!(matches!(Tensor::cat(&[&a, &i], 0), Err(Error::DTypeMismatch { op: "cat", .. })));
        assert!(Tensor::cat::<usize>(&[], 0).is_err());
        assert!(matches!(Tensor::cat(&[&a], 2), Err(Error::DimOutOfRange { op: "cat", .. })));
        let msg = Tensor::stack(&[&a, &b], 0).unwrap_err().to_string();
        assert!(msg.contains("stack") && msg.contains("[2, 3]") && msg.contains("[4, 2]"), "{msg}");
        let msg = Tensor::stack(&[&a], 3).unwrap_err().to_string();
        assert!(msg.contains("stack") && msg.contains("[2, 3]"), "{msg}");
        assert!(Tensor::stack(&[&a], -4).is_err());
        let msg = a.split(&[1, 1], 1).unwrap_err().to_string();
        assert!(msg.contains("split") && msg.contains("[2, 3]"), "{msg}");
        assert!(a.split(&[usize::MAX, 4], 1).is_err());
        assert!(a.chunk(0, 0).unwrap_err().to_string().contains("chunk"));
    }
}
