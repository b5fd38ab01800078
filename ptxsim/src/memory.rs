//! The simulated device's global memory: separate allocations at fake addresses, every access
//! bounds-checked against the allocation it starts in (a real GPU would often not notice).

use std::collections::BTreeMap;

use crate::SimError;

/// Where the first allocation starts; far from 0 so that a null or small integer used as a
/// pointer is reported, and 256-byte aligned like cuMemAlloc.
const BASE: u64 = 0x7f00_0000_0000;
/// Gap left after every allocation, so that running off its end lands in no allocation.
const GUARD: u64 = 4096;

#[derive(Default)]
pub struct GlobalMemory {
    allocs: BTreeMap<u64, Vec<u8>>,
    next: u64,
    /// Bytes currently allocated (for cuMemGetInfo).
    pub in_use: u64,
}

impl GlobalMemory {
    pub fn new() -> Self {
        Self { allocs: BTreeMap::new(), next: BASE, in_use: 0 }
    }

    /// A new zeroed allocation of `bytes` bytes (at least 1, so every allocation has an address).
    pub fn alloc(&mut self, bytes: usize) -> u64 {
        let addr = self.next;
        let size = bytes.max(1) as u64;
        self.next = (addr + size + GUARD).next_multiple_of(256);
        self.allocs.insert(addr, vec![0; bytes]);
        self.in_use += bytes as u64;
        addr
    }

    pub fn free(&mut self, addr: u64) -> Result<(), SimError> {
        match self.allocs.remove(&addr) {
            Some(v) => {
                self.in_use -= v.len() as u64;
                Ok(())
            }
            None => Err(SimError::Memory(format!("free of {addr:#x}, which is not the start of an allocation"))),
        }
    }

    /// The allocation holding `[addr, addr + len)` and the offset of `addr` in it.
    fn locate(&self, addr: u64, len: usize) -> Result<(u64, usize), SimError> {
        let (&start, buf) = self.allocs.range(..=addr).next_back().ok_or_else(|| out_of_bounds(addr, len, None))?;
        let off = addr - start;
        if off + len as u64 > buf.len() as u64 {
            return Err(out_of_bounds(addr, len, Some((start, buf.len()))));
        }
        Ok((start, off as usize))
    }

    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), SimError> {
        let (start, off) = self.locate(addr, out.len())?;
        out.copy_from_slice(&self.allocs[&start][off..off + out.len()]);
        Ok(())
    }

    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), SimError> {
        let (start, off) = self.locate(addr, data.len())?;
        let buf = self.allocs.get_mut(&start).expect("located");
        buf[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    pub fn fill(&mut self, addr: u64, byte: u8, len: usize) -> Result<(), SimError> {
        let (start, off) = self.locate(addr, len)?;
        let buf = self.allocs.get_mut(&start).expect("located");
        buf[off..off + len].fill(byte);
        Ok(())
    }

    /// Copies `len` bytes between (possibly the same) allocations.
    pub fn copy(&mut self, dst: u64, src: u64, len: usize) -> Result<(), SimError> {
        let mut tmp = vec![0; len];
        self.read(src, &mut tmp)?;
        self.write(dst, &tmp)
    }
}

fn out_of_bounds(addr: u64, len: usize, alloc: Option<(u64, usize)>) -> SimError {
    SimError::Memory(match alloc {
        Some((start, size)) => {
            format!("access of {len} bytes at {addr:#x} runs past the allocation at {start:#x} of {size} bytes (offset {})", addr - start)
        }
        None => format!("access of {len} bytes at {addr:#x}: no allocation there"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_writes_and_rejects_out_of_bounds() {
        let mut m = GlobalMemory::new();
        let a = m.alloc(16);
        let b = m.alloc(8);
        m.write(a + 4, &[1, 2, 3]).unwrap();
        let mut out = [0u8; 4];
        m.read(a + 3, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 3]);
        assert!(m.read(a + 14, &mut out).is_err());
        assert!(m.write(b + 8, &[0]).is_err());
        assert!(m.read(a - 1, &mut out).is_err());
        m.free(a).unwrap();
        assert!(m.read(a, &mut out).is_err());
        assert!(m.free(a).is_err());
    }
}
