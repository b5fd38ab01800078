//! Elementwise comparisons with broadcasting, returning U8 masks (1 for true, 0 for false).
//!
//! Comparisons are exact in every dtype (no rounding happens), and follow IEEE for NaN: every
//! comparison with NaN is false except `Ne`, which is true.

use super::binary::zip_map;
use super::norm::dispatch_all;
use crate::{CpuStorage, Result, Tensor, WithDType};

/// The comparisons `Tensor::cmp` evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
}

impl CmpOp {
    /// The op's name as errors print it (lower case, e.g. `"lt"`).
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
        }
    }

    /// The comparison on two values of any ordered type (IEEE semantics for floats).
    #[inline]
    pub fn apply<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// The comparison for one element type; one monomorphised loop per op.
fn cmp_typed<T: WithDType>(lhs: &Tensor, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
    macro_rules! dispatch {
        ($($v:ident),*) => {
            match op {
                $(CmpOp::$v => zip_map(op.name(), lhs, rhs, |a: T, b: T| CmpOp::$v.apply(a, b) as u8)?,)*
            }
        };
    }
    let (v, shape) = dispatch!(Eq, Ne, Lt, Le, Gt, Ge);
    Tensor::from_cpu_storage(CpuStorage::U8(v), &shape)
}

impl Tensor {
    /// `self op rhs` elementwise with NumPy broadcasting, as a U8 tensor of 0/1 with the
    /// broadcast shape. Both tensors must have the same dtype (`DTypeMismatch` otherwise); shapes
    /// that do not broadcast give a `ShapeMismatch` naming the op and both shapes.
    pub fn cmp(&self, rhs: &Tensor, op: CmpOp) -> Result<Tensor> {
        dispatch_all!(self.dtype(), T => cmp_typed::<T>(self, rhs, op))
    }

    /// `self == rhs` as a U8 mask; see [`Tensor::cmp`].
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Eq)
    }
    /// `self != rhs` as a U8 mask; see [`Tensor::cmp`].
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Ne)
    }
    /// `self < rhs` as a U8 mask; see [`Tensor::cmp`].
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Lt)
    }
    /// `self <= rhs` as a U8 mask; see [`Tensor::cmp`].
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Le)
    }
    /// `self > rhs` as a U8 mask; see [`Tensor::cmp`].
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Gt)
    }
    /// `self >= rhs` as a U8 mask; see [`Tensor::cmp`].
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.cmp(rhs, CmpOp::Ge)
    }

    /// `x op v` elementwise against a scalar, as a U8 mask of the same shape; any dtype. The
    /// element is widened to f64 and compared there, which is exact for every float dtype and
    /// for integers up to 2^53 in magnitude (so `v = 0.5` against integers works as expected).
    pub fn cmp_scalar(&self, v: f64, op: CmpOp) -> Result<Tensor> {
        macro_rules! dispatch {
            ($($c:ident),*) => {
                match op {
                    $(CmpOp::$c => dispatch_all!(self.dtype(), T => {
                        super::unary::map_view(self, op.name(), |x: T| CmpOp::$c.apply(x.to_f64(), v) as u8)?
                    }),)*
                }
            };
        }
        let out = dispatch!(Eq, Ne, Lt, Le, Gt, Ge);
        Tensor::from_cpu_storage(CpuStorage::U8(out), self.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::super::binary::tests::{broadcast_partner, broadcast_reference};
    use super::*;
    use crate::{DType, Device, Error};
    use proptest::prelude::*;

    const OPS: [CmpOp; 6] = [CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Broadcast comparisons on every dtype (values chosen with many ties) against the
        /// definition, including transposed operands and size-0/1 dims.
        #[test]
        fn matches_reference(
            shape in proptest::collection::vec(0usize..4, 0..4),
            mask in any::<u32>(),
            drop in 0usize..3,
            swap in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let other = broadcast_partner(&shape, mask, drop);
            let (ashape, bshape) = if swap { (other, shape) } else { (shape.clone(), other) };
            let values = |n: usize, s: u64| -> Vec<f64> { (0..n).map(|i| ((s.wrapping_add(i as u64 * 13)) % 5) as f64).collect() };
            let (av, bv) = (values(ashape.iter().product(), seed), values(bshape.iter().product(), seed >> 3));
            for dt in DType::ALL {
                let mut a = Tensor::from_vec(av.clone(), &ashape, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                if a.rank() >= 2 {
                    a = a.t().unwrap().contiguous().unwrap().t().unwrap();
                }
                let b = Tensor::from_vec(bv.clone(), &bshape, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
                for op in OPS {
                    let got = a.cmp(&b, op).unwrap();
                    let (want, wshape) = broadcast_reference(&av, &ashape, &bv, &bshape, |x, y| op.apply(x, y) as u8);
                    prop_assert_eq!(got.dtype(), DType::U8);
                    prop_assert_eq!(got.shape(), wshape.as_slice());
                    prop_assert_eq!(got.to_vec::<u8>().unwrap(), want);
                    let gs = a.cmp_scalar(2.0, op).unwrap().to_vec::<u8>().unwrap();
                    let ws: Vec<u8> = a.to_vec_f64().unwrap().iter().map(|&x| op.apply(x, 2.0) as u8).collect();
                    prop_assert_eq!(gs, ws);
                }
            }
        }
    }

    #[test]
    fn nan_compares_false_except_ne() {
        let a = Tensor::from_vec(vec![f32::NAN, 1.0], &[2], &Device::Cpu).unwrap();
        let b = Tensor::from_vec(vec![f32::NAN, 1.0], &[2], &Device::Cpu).unwrap();
        assert_eq!(a.eq(&b).unwrap().to_vec::<u8>().unwrap(), vec![0, 1]);
        assert_eq!(a.ne(&b).unwrap().to_vec::<u8>().unwrap(), vec![1, 0]);
        assert_eq!(a.le(&b).unwrap().to_vec::<u8>().unwrap(), vec![0, 1]);
        assert_eq!(a.cmp_scalar(f64::NAN, CmpOp::Ge).unwrap().to_vec::<u8>().unwrap(), vec![0, 0]);
        let i = Tensor::from_vec(vec![0u32, 1, 2], &[3], &Device::Cpu).unwrap();
        assert_eq!(i.cmp_scalar(0.5, CmpOp::Gt).unwrap().to_vec::<u8>().unwrap(), vec![0, 1, 1]);
    }

    #[test]
    fn errors_name_the_op_and_both_sides() {
        let a = Tensor::zeros(&[2, 3], DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(&[3, 2], DType::F32, &Device::Cpu).unwrap();
        let err = a.lt(&b).unwrap_err().to_string();
        assert!(err.starts_with("lt: shape mismatch between [2, 3] and [3, 2]"), "{err}");
        let c = Tensor::zeros(&[2, 3], DType::I64, &Device::Cpu).unwrap();
        let err = a.ge(&c).unwrap_err();
        assert!(matches!(err, Error::DTypeMismatch { op: "ge", lhs: DType::F32, rhs: DType::I64 }), "{err}");
    }

    #[test]
    fn thread_count_invariant() {
        let mut rng = crate::Rng::new(3);
        let a = Tensor::randn(&mut rng, 0.0, 1.0, &[200, 200], DType::F32, &Device::Cpu).unwrap();
        let row = Tensor::randn(&mut rng, 0.0, 1.0, &[200], DType::F32, &Device::Cpu).unwrap();
        let run = |n: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(|| a.t().unwrap().gt(&row).unwrap().to_vec::<u8>().unwrap())
        };
        let one = run(1);
        assert_eq!(one, run(2));
        let (want, _) = broadcast_reference(&a.t().unwrap().to_vec_f64().unwrap(), &[200, 200], &row.to_vec_f64().unwrap(), &[200], |x, y| (x > y) as u8);
        assert_eq!(one, want);
    }
}
