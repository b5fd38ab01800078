//! Per-thread packing buffers, reused across calls.

use std::cell::RefCell;

use bytemuck::{Pod, Zeroable};

/// 64 bytes aligned to 64: the unit of packing buffers, so panels start on cache lines.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct CacheLine([u8; 64]);

/// Cache lines needed for `len` elements of `E`.
fn lines_for<E>(len: usize) -> usize {
    (len * size_of::<E>()).div_ceil(size_of::<CacheLine>())
}

thread_local! {
    /// Each thread's packing buffers, kept between calls so a task does not allocate (and fault
    /// in fresh pages) every time. With the default blocking it holds at most one packed A block
    /// (`mc * kc`) and one packed B block (`kc * nc`): about 1.3 MiB for f32.
    static PACK_SCRATCH: RefCell<Vec<CacheLine>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on two cache-line aligned buffers of `a_len` and `b_len` elements of `E`, carved out
/// of this thread's scratch memory.
pub(super) fn with_scratch<E: Pod, R>(a_len: usize, b_len: usize, f: impl FnOnce(&mut [E], &mut [E]) -> R) -> R {
    let (a_lines, b_lines) = (lines_for::<E>(a_len), lines_for::<E>(b_len));
    let split = |buf: &mut [CacheLine]| {
        let (a, b) = buf.split_at_mut(a_lines);
        let a = &mut bytemuck::cast_slice_mut::<CacheLine, E>(a)[..a_len];
        let b = &mut bytemuck::cast_slice_mut::<CacheLine, E>(&mut b[..b_lines])[..b_len];
        f(a, b)
    };
    PACK_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < a_lines + b_lines {
                *buf = vec![CacheLine::zeroed(); a_lines + b_lines];
            }
            split(&mut buf)
        }
        // Only reachable if a task ever ran nested inside another on one thread: use a fresh
        // buffer rather than fail.
        Err(_) => split(&mut vec![CacheLine::zeroed(); a_lines + b_lines]),
    })
}
