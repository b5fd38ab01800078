//! Shape, strides and offset: everything a view changes without touching storage.
//!
//! Strides are counted in elements and never negative. A stride of 0 is a broadcast dimension.

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major (C order) strides of a dense tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc = acc.saturating_mul(shape[i]);
    }
    strides
}

/// The element count of `shape`, or an `InvalidArgument` error naming `op` when it does not fit
/// a `usize`. Dims multiply as `max(d, 1)`, so a shape with a zero dim is rejected too when its
/// other dims overflow: every partial product of an accepted shape (outer/inner extents) fits.
pub fn checked_elem_count(op: &'static str, shape: &[usize]) -> Result<usize> {
    let nonzero = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d.max(1)));
    match nonzero {
        Some(_) if shape.contains(&0) => Ok(0),
        Some(n) => Ok(n),
        None => Err(Error::invalid(op, shape, "the element count overflows usize")),
    }
}

/// The element count of a new buffer of `shape` with `elem_bytes` bytes per element, or an error
/// naming `op` when the count or the byte size is beyond what one allocation can hold
/// (`isize::MAX` bytes), so an absurd shape is an error, not a capacity-overflow panic.
pub fn checked_alloc_len(op: &'static str, shape: &[usize], elem_bytes: usize) -> Result<usize> {
    let n = checked_elem_count(op, shape)?;
    match n.checked_mul(elem_bytes) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(n),
        _ => Err(Error::invalid(op, shape, format!("{n} elements of {elem_bytes} bytes exceed the largest possible allocation"))),
    }
}

/// The shape two operands broadcast to (NumPy rules: align on the right, 1 stretches).
pub fn broadcast_shape(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<Vec<usize>> {
    let rank = lhs.len().max(rhs.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let l = if i + lhs.len() >= rank { lhs[i + lhs.len() - rank] } else { 1 };
        let r = if i + rhs.len() >= rank { rhs[i + rhs.len() - rank] } else { 1 };
        out[i] = match (l, r) {
            (a, b) if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => return Err(Error::shape(op, lhs, rhs, "dimensions differ and neither is 1, so they cannot broadcast")),
        };
    }
    Ok(out)
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Self { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Self { shape, strides, offset }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when elements sit densely in row-major order from `offset` (size-1 dims ignored).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] == 1 {
                continue;
            }
            if self.strides[i] != expected {
                return false;
            }
            expected *= self.shape[i];
        }
        true
    }

    /// The storage range `[start, end)` when the layout is contiguous.
    pub fn contiguous_range(&self) -> Option<(usize, usize)> {
        self.is_contiguous().then(|| (self.offset, self.offset + self.elem_count()))
    }

    /// One past the largest storage index this layout can touch (0 when it is empty).
    pub fn storage_extent(&self) -> usize {
        if self.elem_count() == 0 {
            return 0;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(d, s)| (d - 1) * s).sum::<usize>() + 1
    }

    pub fn transpose(&self, d0: usize, d1: usize) -> Layout {
        let mut l = self.clone();
        l.shape.swap(d0, d1);
        l.strides.swap(d0, d1);
        l
    }

    /// Reorders dims; `dims` must be a permutation of `0..rank` (checked by the caller).
    pub fn permute(&self, dims: &[usize]) -> Layout {
        Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        }
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut l = self.clone();
        l.offset += start * self.strides[dim];
        l.shape[dim] = len;
        l
    }

    /// A stride-0 view that repeats this layout up to `shape`.
    pub fn broadcast_as(&self, op: &'static str, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.rank() {
            return Err(Error::shape(op, &self.shape, shape, "cannot broadcast to a lower rank"));
        }
        checked_elem_count(op, shape)?;
        let extra = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for (i, &d) in shape.iter().enumerate() {
            if i < extra {
                continue;
            }
            let src = self.shape[i - extra];
            strides[i] = if src == d {
                self.strides[i - extra]
            } else if src == 1 {
                0
            } else {
                return Err(Error::shape(op, &self.shape, shape, "a dimension that is not 1 cannot be broadcast"));
            };
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    /// A view with a new shape, when the data can be reinterpreted without a copy.
    /// Only contiguous layouts are reshaped in place; others return `None` and the caller copies.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        self.is_contiguous().then(|| Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset })
    }

    /// Storage offsets of every element in row-major order of the view.
    pub fn offsets(&self) -> StridedOffsets<'_> {
        StridedOffsets::new(self)
    }
}

/// Walks a layout in row-major order, yielding storage offsets. The innermost dimension is
/// advanced by addition so the common case costs one add per element.
pub struct StridedOffsets<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
    remaining: usize,
}

impl<'a> StridedOffsets<'a> {
    fn new(layout: &'a Layout) -> Self {
        let n = layout.elem_count();
        Self { layout, index: vec![0; layout.rank()], next: (n > 0).then_some(layout.offset), remaining: n }
    }
}

impl Iterator for StridedOffsets<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        let current = self.next?;
        self.remaining -= 1;
        if self.remaining == 0 {
            self.next = None;
            return Some(current);
        }
        let mut off = current;
        for d in (0..self.index.len()).rev() {
            self.index[d] += 1;
            off += self.layout.strides[d];
            if self.index[d] < self.layout.shape[d] {
                break;
            }
            off -= self.layout.strides[d] * self.index[d];
            self.index[d] = 0;
        }
        self.next = Some(off);
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for StridedOffsets<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_a_transposed_narrowed_view() {
        let l = Layout::contiguous(&[3, 4]).transpose(0, 1).narrow(0, 1, 2);
        // rows 1..3 of the 4x3 transpose: elements (1,0)=1,(1,1)=5,(1,2)=9,(2,0)=2,...
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![1, 5, 9, 2, 6, 10]);
        assert!(!l.is_contiguous());
    }

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shape("t", &[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert!(broadcast_shape("t", &[2, 3], &[4, 3]).is_err());
        let l = Layout::contiguous(&[3, 1]).broadcast_as("t", &[2, 3, 2]).unwrap();
        assert_eq!(l.offsets().collect::<Vec<_>>(), vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn element_counts_that_overflow_are_errors() {
        assert_eq!(checked_elem_count("t", &[2, 0, 3]).unwrap(), 0);
        assert_eq!(checked_elem_count("t", &[]).unwrap(), 1);
        assert!(checked_elem_count("t", &[usize::MAX, 2]).is_err());
        // Zero elements, but the outer extent `usize::MAX * 2` would still overflow.
        assert!(checked_elem_count("t", &[usize::MAX, 2, 0]).is_err());
        assert!(checked_alloc_len("t", &[usize::MAX / 2], 4).is_err());
        assert_eq!(checked_alloc_len("t", &[3, 4], 8).unwrap(), 12);
        assert!(Layout::contiguous(&[1]).broadcast_as("t", &[usize::MAX, 2]).is_err());
    }

    #[test]
    fn empty_and_scalar() {
        assert_eq!(Layout::contiguous(&[2, 0, 3]).offsets().count(), 0);
        assert_eq!(Layout::contiguous(&[]).offsets().collect::<Vec<_>>(), vec![0]);
    }
}
