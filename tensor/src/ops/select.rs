//! Elementwise selection by a mask: `where_cond` and `masked_fill`. Masks are u8: 0 is false,
//! anything else true (what the comparison ops return). Inputs may be any strided or broadcast
//! view; they are read through their strides, never materialised.

use super::norm::dispatch_all;
use crate::cpu::parallel::{fill_chunks, for_offsets_in};
use crate::layout::{Layout, broadcast_shape};
use crate::{DType, Error, Result, Tensor, WithDType};

fn check_mask(op: &'static str, mask: &Tensor) -> Result<()> {
    if mask.dtype() != DType::U8 {
        return Err(Error::dtype(op, mask.dtype(), "the mask must be u8 (0 = false, anything else = true)"));
    }
    Ok(())
}

/// `out[i] = if mask[i] != 0 { on_true(i) } else { base[i] }` over `n` elements in row-major
/// order, every operand read through a layout of the output shape.
fn select<T: WithDType>(
    mask: &[u8],
    ml: &Layout,
    base: &[T],
    bl: &Layout,
    on_true: impl Fn(usize) -> T + Sync + Send,
    tl: Option<&Layout>,
    n: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); n];
    fill_chunks(&mut out, |start, chunk| {
        let len = chunk.len();
        for_offsets_in(bl, start, len, |j, off| chunk[j] = base[off]);
        let mut hit = vec![false; len];
        for_offsets_in(ml, start, len, |j, off| hit[j] = mask[off] != 0);
        match tl {
            Some(tl) => for_offsets_in(tl, start, len, |j, off| {
                if hit[j] {
                    chunk[j] = on_true(off);
                }
            }),
            None => {
                for (c, &h) in chunk.iter_mut().zip(&hit) {
                    if h {
                        *c = on_true(0);
                    }
                }
            }
        }
    });
    out
}

impl Tensor {
    /// `self ? on_true : on_false` elementwise; `self` is the u8 mask. The three shapes broadcast
    /// together (NumPy rules); `on_true` and `on_false` must share a dtype, which the output has.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        const OP: &str = "where_cond";
        check_mask(OP, self)?;
        if on_true.dtype() != on_false.dtype() {
            return Err(Error::DTypeMismatch { op: OP, lhs: on_true.dtype(), rhs: on_false.dtype() });
        }
        let shape = broadcast_shape(OP, self.shape(), on_true.shape())?;
        let shape = broadcast_shape(OP, &shape, on_false.shape())?;
        let ml = self.layout().broadcast_as(OP, &shape)?;
        let tl = on_true.layout().broadcast_as(OP, &shape)?;
        let fl = on_false.layout().broadcast_as(OP, &shape)?;
        let mask = self.cpu_slice::<u8>(OP)?;
        let n = shape.iter().product();
        dispatch_all!(on_true.dtype(), T => {
            let t = on_true.cpu_slice::<T>(OP)?;
            let f = on_false.cpu_slice::<T>(OP)?;
            let out = select(mask, &ml, f, &fl, |off| t[off], Some(&tl), n);
            Tensor::from_vec(out, &shape, &self.device())
        })
    }

    /// A copy of `self` with `value` (cast to the dtype of `self`, e.g. `-inf` for attention
    /// masks) wherever the u8 `mask` is non-zero; `mask` broadcasts to the shape of `self`.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        const OP: &str = "masked_fill";
        check_mask(OP, mask)?;
        let ml = mask
            .layout()
            .broadcast_as(OP, self.shape())
            .map_err(|_| Error::shape(OP, self.shape(), mask.shape(), "the mask must broadcast to the shape of the input"))?;
        let m = mask.cpu_slice::<u8>(OP)?;
        dispatch_all!(self.dtype(), T => {
            let v = T::from_f64(value);
            let base = self.cpu_slice::<T>(OP)?;
            let out = select(m, &ml, base, self.layout(), |_| v, None, self.elem_count());
            Tensor::from_vec(out, self.shape(), &self.device())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::norm::testing::*;
    use super::*;
    use crate::Device;
    use proptest::prelude::*;

    fn mask_of(shape: &[usize], seed: u64, mode: u8) -> Tensor {
        let n: usize = shape.iter().product();
        let bits: Vec<f64> = values(n, seed, 1.0).iter().map(|v| if *v > 0.0 { 1.0 } else { 0.0 }).collect();
        view_of(&bits, shape, DType::U8, mode)
    }

    /// Dropping dims to 1 (or removing leading dims) from `shape`, picked by `pick` bits.
    fn shrink(shape: &[usize], pick: u32) -> Vec<usize> {
        let drop_lead = (pick & 1) as usize;
        shape.iter().enumerate().skip(drop_lead.min(shape.len())).map(|(i, &s)| if pick >> (i + 1) & 1 == 1 { 1 } else { s }).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn where_cond_broadcasts_like_a_naive_loop(shape in prop::collection::vec(0usize..4, 0..4), pm in any::<u32>(), pt in any::<u32>(), pf in any::<u32>(), seed in any::<u64>(), mode in 0u8..3, dt in 0usize..7) {
            let dtype = DType::ALL[dt];
            let (ms, ts, fs) = (shrink(&shape, pm), shrink(&shape, pt), shrink(&shape, pf));
            let mask = mask_of(&ms, seed, mode);
            let t = view_of(&values(ts.iter().product(), seed ^ 1, 50.0), &ts, dtype, mode + 1);
            let f = view_of(&values(fs.iter().product(), seed ^ 2, 50.0), &fs, dtype, mode + 2);
            let out_shape = broadcast_shape("t", &broadcast_shape("t", &ms, &ts).unwrap(), &fs).unwrap();
            let got = mask.where_cond(&t, &f).unwrap();
            prop_assert_eq!(got.shape(), &out_shape[..]);
            prop_assert_eq!(got.dtype(), dtype);
            let (mb, tb, fb) = (mask.broadcast_as(&out_shape).unwrap(), t.broadcast_as(&out_shape).unwrap(), f.broadcast_as(&out_shape).unwrap());
            let want: Vec<f64> = mb.to_vec_f64().unwrap().iter().zip(tb.to_vec_f64().unwrap()).zip(fb.to_vec_f64().unwrap())
                .map(|((&m, t), f)| if m != 0.0 { t } else { f }).collect();
            prop_assert_eq!(got.to_vec_f64().unwrap(), want);

            // masked_fill: mask broadcast to the full shape of a strided input.
            let x = view_of(&values(out_shape.iter().product(), seed ^ 3, 50.0), &out_shape, dtype, mode);
            let filled = x.masked_fill(&mask, -3.0).unwrap();
            let fill = Tensor::full(-3.0, &[], dtype, &Device::Cpu).unwrap().to_vec_f64().unwrap()[0];
            let want: Vec<f64> = mb.to_vec_f64().unwrap().iter().zip(x.to_vec_f64().unwrap()).map(|(&m, v)| if m != 0.0 { fill } else { v }).collect();
            prop_assert_eq!(filled.to_vec_f64().unwrap(), want);
        }
    }

    #[test]
    fn masked_fill_with_neg_inf_for_attention() {
        let dev = Device::Cpu;
        let x = Tensor::zeros(&[2, 2], DType::BF16, &dev).unwrap();
        let mask = Tensor::from_vec(vec![0u8, 1], &[1, 2], &dev).unwrap();
        let y = x.masked_fill(&mask, f64::NEG_INFINITY).unwrap().to_vec_f64().unwrap();
        assert_eq!(y, vec![0.0, f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY]);
    }

    #[test]
    fn errors_name_the_op_and_both_shapes() {
        let dev = Device::Cpu;
        let m = Tensor::zeros(&[2, 3], DType::U8, &dev).unwrap();
        let a = Tensor::zeros(&[4, 3], DType::F32, &dev).unwrap();
        let b = Tensor::zeros(&[3], DType::F32, &dev).unwrap();
        let msg = m.where_cond(&a, &b).unwrap_err().to_string();
        assert!(msg.contains("where_cond") && msg.contains("[2, 3]") && msg.contains("[4, 3]"), "{msg}");
        let b64 = Tensor::zeros(&[3], DType::F64, &dev).unwrap();
        assert!(matches!(m.where_cond(&b, &b64), Err(Error::DTypeMismatch { op: "where_cond", .. })));
        let fm = Tensor::zeros(&[2, 3], DType::F32, &dev).unwrap();
        assert!(matches!(fm.where_cond(&b, &b), Err(Error::UnsupportedDType { op: "where_cond", .. })));
        let msg = a.masked_fill(&m, 0.0).unwrap_err().to_string();
        assert!(msg.contains("masked_fill") && msg.contains("[4, 3]") && msg.contains("[2, 3]"), "{msg}");
        // The mask broadcasts to self, not the other way round.
        let big = Tensor::zeros(&[5, 3], DType::U8, &dev).unwrap();
        assert!(b.masked_fill(&big, 0.0).is_err());
    }
}
