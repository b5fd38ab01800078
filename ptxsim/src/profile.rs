//! Memory-access profile of a launch: how many 32-byte sectors each global access touches and how
//! many shared-memory wavefronts each shared access needs, per PTX instruction.
//!
//! Why: with no GPU at hand, the two commonest ways a kernel wastes memory bandwidth (uncoalesced
//! global accesses and shared-memory bank conflicts) can still be counted exactly from the
//! addresses the threads use. These are the same quantities Nsight Compute reports as "sectors
//! per request" and "shared wavefronts"; they are counts, not times.
//!
//! Grouping: threads run one at a time here, so a warp-level request is rebuilt from the lanes'
//! accesses: between two barriers, the n-th execution of a given instruction by each lane of a
//! warp belongs to the n-th request of that warp at that instruction (the counts restart at every
//! barrier). This is exact for converged code, and for lanes that skip an instruction (a guard, a
//! branch) in a whole barrier interval: they simply do not take part, as on the GPU. A lane that
//! skips some but not all executions of an instruction inside one interval (a divergent loop
//! without a barrier) shifts its later accesses into other requests.
//!
//! The models (documented approximations of NVIDIA's hardware since Volta):
//! - Global: a request costs the number of distinct 32-byte sectors its bytes fall in. The ideal is
//!   the distinct bytes it asks for, divided by 32 and rounded up. L1/L2 hits are not modelled.
//! - Shared: 32 banks of 4 bytes. Lanes are served in phases of 128 bytes: all 32 lanes for accesses
//!   of up to 4 bytes, half-warps for 8 bytes, quarter-warps for 16 bytes (`ldmatrix`: one 8x8
//!   matrix, i.e. 8 row addresses, per phase). A phase takes as many wavefronts as the largest
//!   number of distinct 4-byte words any one bank holds among its accesses (lanes reading the same
//!   word share it). The ideal is one wavefront per 128 distinct bytes of each phase, at least one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use crate::exec::op::{Op, Space};
use crate::parse::{Inst, Module};

/// Counters of one PTX instruction that touches global or shared memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteStats {
    /// PTX source line (1-based) and the instruction, as the interpreter decoded it.
    pub line: usize,
    pub what: String,
    /// "global" or "shared".
    pub space: &'static str,
    /// Warp-level requests, and the lane accesses they were made of.
    pub requests: u64,
    pub lane_accesses: u64,
    /// Distinct bytes asked for, summed over requests.
    pub bytes: u64,
    /// Sectors (global) or wavefronts (shared) the requests cost, and the least they could cost.
    pub transactions: u64,
    pub ideal: u64,
}

/// One lane's access within a warp-level request.
#[derive(Clone, Copy)]
struct LaneAccess {
    lane: u8,
    addr: u64,
    bytes: u8,
}

/// Identifies a warp-level request: warp, function, instruction, occurrence, shared?
type RequestKey = (u32, u32, u32, u32, bool);

/// The profile of one launch (all of its blocks).
#[derive(Default)]
pub struct LaunchProfile {
    /// Keyed by (function, instruction index, shared?): a `cp.async` reads global and writes
    /// shared memory.
    pub sites: BTreeMap<(usize, usize, bool), SiteStats>,
    /// Warp-level instructions issued, estimated per warp as the instruction count of its busiest
    /// lane: exact for converged warps, an undercount for warps that split over both sides of a
    /// branch (the GPU issues both sides, the estimate only the busier lane's path).
    pub warp_instructions: u64,
    /// Warp-level `mma.sync` instructions.
    pub mma: u64,
    /// Instructions executed per class (see [`class`]), counted per thread: divided by 32 they
    /// are warp instructions for converged code. Issue-slot pressure shows here, e.g. how many
    /// address and loop instructions a GEMM main loop spends per `mma`.
    pub mix: [u64; CLASSES.len()],
    pending: HashMap<RequestKey, (Space, Vec<LaneAccess>)>,
    /// How often each (thread, function, instruction) has issued a memory access in this block.
    occurrences: HashMap<(u32, u32, u32, bool), u32>,
}

/// The instruction classes of [`LaunchProfile::mix`], in JSON order.
pub const CLASSES: [&str; 13] = [
    "mma",
    "ldmatrix",
    "shfl",
    "ld.global",
    "st.global",
    "ld.shared",
    "st.shared",
    "cp.async",
    "atom",
    "bar",
    "branch",
    "float",
    "int/move",
];

/// The class of an instruction (an index into [`CLASSES`]).
pub(crate) fn class(op: &Op) -> usize {
    match op {
        Op::MmaBf16 => 0,
        Op::Ldmatrix { .. } => 1,
        Op::Shfl(_) => 2,
        Op::Ld { space: Space::Global, .. } => 3,
        Op::St { space: Space::Global, .. } => 4,
        Op::Ld { space: Space::Shared, .. } => 5,
        Op::St { space: Space::Shared, .. } => 6,
        Op::CpAsync | Op::CpAsyncCommit | Op::CpAsyncWaitGroup | Op::CpAsyncWaitAll => 7,
        Op::Atom { .. } => 8,
        Op::BarSync => 9,
        Op::Bra | Op::BrxIdx | Op::Call | Op::Ret | Op::Exit => 10,
        Op::Ex2 | Op::Lg2 | Op::CvtBf16x2 => 11,
        Op::Add(t) | Op::Sub(t) | Op::Mul(t, _) | Op::Mad(t, _) | Op::Fma(t) | Op::Div(t) | Op::Min(t) | Op::Max(t) if t.is_float() => 11,
        Op::MinNan(t) | Op::MaxNan(t) | Op::Neg(t) | Op::Abs(t) | Op::Copysign(t) | Op::Sqrt(t) | Op::Rcp(t) | Op::Setp(_, t)
            if t.is_float() =>
        {
            11
        }
        Op::TestpNan(_) => 11,
        _ => 12,
    }
}

impl LaunchProfile {
    /// Counts one executed instruction (per thread) in [`LaunchProfile::mix`].
    pub(crate) fn executed(&mut self, op: &Op) {
        self.mix[class(op)] += 1;
    }

    /// Notes one thread's access of `bytes` bytes at `addr` (space-relative) by instruction `pc`
    /// of function `func`. Spaces other than global and shared are not profiled.
    pub(crate) fn access(&mut self, module: &Module, thread: u32, func: usize, pc: usize, space: Space, addr: u64, bytes: usize) {
        if !matches!(space, Space::Global | Space::Shared) {
            return;
        }
        self.site(module, func, pc, space);
        let occ = self.occurrences.entry((thread, func as u32, pc as u32, space == Space::Shared)).or_insert(0);
        let key = (thread / 32, func as u32, pc as u32, *occ, space == Space::Shared);
        *occ += 1;
        let lane = LaneAccess { lane: (thread % 32) as u8, addr, bytes: bytes as u8 };
        self.pending.entry(key).or_insert_with(|| (space, Vec::new())).1.push(lane);
    }

    /// Notes a complete warp-level shared request of `bytes`-byte accesses, one per listed lane
    /// (`ldmatrix`: lane 8m + r gives row r of matrix m).
    pub(crate) fn warp_request(&mut self, module: &Module, func: usize, pc: usize, lanes: &[(u8, u64)], bytes: usize) {
        self.site(module, func, pc, Space::Shared);
        let lanes: Vec<LaneAccess> = lanes.iter().map(|&(lane, addr)| LaneAccess { lane, addr, bytes: bytes as u8 }).collect();
        self.count(func, pc, Space::Shared, &lanes);
    }

    /// Settles every request noted so far: call when the lanes that take part in them are done
    /// with them (at a barrier that all threads reached, and at the end of a block).
    pub(crate) fn settle(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for ((_, func, pc, _, _), (space, lanes)) in pending {
            self.count(func as usize, pc as usize, space, &lanes);
        }
        // The next interval's requests are counted afresh, so that a lane that skipped an
        // instruction in an earlier interval lines up with the others again.
        self.occurrences.clear();
    }

    /// Ends a block: settles its requests and adds its warps' instruction counts (per lane, in
    /// thread order).
    pub(crate) fn end_block(&mut self, executed: impl Iterator<Item = u64>) {
        self.settle();
        let executed: Vec<u64> = executed.collect();
        self.warp_instructions += executed.chunks(32).map(|w| w.iter().copied().max().unwrap_or(0)).sum::<u64>();
    }

    fn site(&mut self, module: &Module, func: usize, pc: usize, space: Space) {
        self.sites.entry((func, pc, space == Space::Shared)).or_insert_with(|| {
            let inst: &Inst = &module.funcs[func].insts[pc];
            SiteStats {
                line: inst.line,
                what: format!("{:?}", inst.op),
                space: if space == Space::Global { "global" } else { "shared" },
                ..SiteStats::default()
            }
        });
    }

    fn count(&mut self, func: usize, pc: usize, space: Space, lanes: &[LaneAccess]) {
        let (transactions, ideal, bytes) = if space == Space::Global { global_cost(lanes) } else { shared_cost(lanes) };
        let s = self.sites.get_mut(&(func, pc, space == Space::Shared)).expect("site created before its accesses");
        s.requests += 1;
        s.lane_accesses += lanes.len() as u64;
        s.bytes += bytes;
        s.transactions += transactions;
        s.ideal += ideal;
    }

    /// Totals over all sites of one space: (requests, bytes, transactions, ideal).
    pub fn totals(&self, space: &str) -> (u64, u64, u64, u64) {
        self.sites
            .values()
            .filter(|s| s.space == space)
            .fold((0, 0, 0, 0), |t, s| (t.0 + s.requests, t.1 + s.bytes, t.2 + s.transactions, t.3 + s.ideal))
    }

    /// One JSON object (a line of the `PTXSIM_PROFILE` file) describing this launch.
    pub fn to_json(&self, kernel: &str, grid: [u32; 3], block: [u32; 3], dynamic_shared: u32) -> String {
        let mut out = String::new();
        let tot = |space: &str| {
            let (r, b, t, i) = self.totals(space);
            format!("{{\"requests\":{r},\"bytes\":{b},\"transactions\":{t},\"ideal\":{i}}}")
        };
        let _ = write!(
            out,
            "{{\"kernel\":{},\"grid\":{grid:?},\"block\":{block:?},\"dynamic_shared\":{dynamic_shared},\
             \"warp_instructions\":{},\"mma\":{},\"mix\":{{{}}},\"global\":{},\"shared\":{},\"sites\":[",
            json_string(kernel),
            self.warp_instructions,
            self.mma,
            CLASSES.iter().zip(&self.mix).map(|(c, n)| format!("\"{c}\":{n}")).collect::<Vec<_>>().join(","),
            tot("global"),
            tot("shared"),
        );
        for (i, s) in self.sites.values().enumerate() {
            let _ = write!(
                out,
                "{}{{\"line\":{},\"what\":{},\"space\":\"{}\",\"requests\":{},\"lane_accesses\":{},\"bytes\":{},\"transactions\":{},\"ideal\":{}}}",
                if i == 0 { "" } else { "," },
                s.line,
                json_string(&s.what),
                s.space,
                s.requests,
                s.lane_accesses,
                s.bytes,
                s.transactions,
                s.ideal
            );
        }
        out.push_str("]}");
        out
    }
}

/// Every byte address an access covers.
fn byte_range(a: &LaneAccess) -> std::ops::Range<u64> {
    a.addr..a.addr + a.bytes as u64
}

/// (sectors, ideal sectors, distinct bytes) of one global request.
fn global_cost(lanes: &[LaneAccess]) -> (u64, u64, u64) {
    let mut bytes = BTreeSet::new();
    for a in lanes {
        bytes.extend(byte_range(a));
    }
    let sectors: BTreeSet<u64> = bytes.iter().map(|b| b / 32).collect();
    let n = bytes.len() as u64;
    (sectors.len() as u64, n.div_ceil(32), n)
}

/// (wavefronts, ideal wavefronts, distinct bytes) of one shared request.
fn shared_cost(lanes: &[LaneAccess]) -> (u64, u64, u64) {
    let width = lanes.iter().map(|a| a.bytes as usize).max().unwrap_or(4).max(4);
    let per_phase = (128 / width).max(1);
    let mut phases: BTreeMap<u8, Vec<LaneAccess>> = BTreeMap::new();
    for a in lanes {
        phases.entry(a.lane / per_phase as u8).or_default().push(*a);
    }
    let (mut waves, mut ideal, mut total) = (0, 0, 0);
    for phase in phases.values() {
        let mut words = BTreeSet::new();
        let mut bytes = BTreeSet::new();
        for a in phase {
            bytes.extend(byte_range(a));
            words.extend(a.addr / 4..(a.addr + a.bytes as u64).div_ceil(4));
        }
        let mut per_bank = [0u64; 32];
        for w in &words {
            per_bank[(w % 32) as usize] += 1;
        }
        waves += per_bank.iter().copied().max().unwrap_or(0).max(1);
        ideal += (bytes.len() as u64).div_ceil(128).max(1);
        total += bytes.len() as u64;
    }
    (waves, ideal, total)
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes(addrs: impl IntoIterator<Item = u64>, bytes: u8) -> Vec<LaneAccess> {
        addrs.into_iter().enumerate().map(|(l, addr)| LaneAccess { lane: l as u8, addr, bytes }).collect()
    }

    #[test]
    fn global_sectors_follow_the_addresses() {
        // 32 consecutive f32: 128 bytes, 4 sectors, ideal.
        assert_eq!(global_cost(&lanes((0..32).map(|i| 4096 + 4 * i), 4)), (4, 4, 128));
        // The same, starting half a sector late: 5 sectors for 4 sectors' worth of bytes.
        assert_eq!(global_cost(&lanes((0..32).map(|i| 4096 + 16 + 4 * i), 4)), (5, 4, 128));
        // Stride of 2 floats: every other word, 8 sectors for 4 sectors' worth.
        assert_eq!(global_cost(&lanes((0..32).map(|i| 8 * i), 4)), (8, 4, 128));
        // Every lane reads one address: one sector, 4 bytes.
        assert_eq!(global_cost(&lanes((0..32).map(|_| 64), 4)), (1, 1, 4));
        // 16-byte vectors, contiguous: 512 bytes, 16 sectors.
        assert_eq!(global_cost(&lanes((0..32).map(|i| 16 * i), 16)), (16, 16, 512));
    }

    #[test]
    fn shared_wavefronts_count_bank_conflicts() {
        // Consecutive words: one wavefront.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 4 * i), 4)), (1, 1, 128));
        // A broadcast: one wavefront.
        assert_eq!(shared_cost(&lanes((0..32).map(|_| 8), 4)), (1, 1, 4));
        // Stride of 32 words: every lane in bank 0, 32 wavefronts.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 128 * i), 4)), (32, 1, 128));
        // Stride of 2 words: two-way conflict.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 8 * i), 4)), (2, 1, 128));
        // Stride of 33 words (a padded row): conflict-free.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 132 * i), 4)), (1, 1, 128));
        // 16-byte vectors, contiguous: four quarter-warp phases of one wavefront each.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 16 * i), 16)), (4, 4, 512));
        // 16-byte rows 64 bytes apart (an unswizzled tile of 32 bf16 per row): the even lanes of
        // each phase share banks 0-3 and the odd ones banks 16-19, four-way.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 64 * i), 16)), (16, 4, 512));
        // Rows 128 bytes apart (64 bf16 per row, unswizzled): all eight lanes of a phase collide.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 128 * i), 16)), (32, 4, 512));
        // The same rows with the 16-byte chunk index XORed with the row (a swizzle): conflict-free.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 128 * i + 16 * (i % 8)), 16)), (4, 4, 512));
        // 8-byte accesses, contiguous: two half-warp phases.
        assert_eq!(shared_cost(&lanes((0..32).map(|i| 8 * i), 8)), (2, 2, 256));
    }

    #[test]
    fn the_json_line_names_the_kernel_and_the_totals() {
        let mut p = LaunchProfile::default();
        p.sites.insert(
            (0, 3, false),
            SiteStats {
                line: 7,
                what: "Ld".into(),
                space: "global",
                requests: 2,
                lane_accesses: 64,
                bytes: 256,
                transactions: 8,
                ideal: 8,
            },
        );
        let j = p.to_json("k\"1", [1, 1, 1], [32, 1, 1], 0);
        assert!(j.starts_with("{\"kernel\":\"k\\\"1\""), "{j}");
        assert!(j.contains("\"global\":{\"requests\":2,\"bytes\":256,\"transactions\":8,\"ideal\":8}"), "{j}");
        assert!(j.contains("\"shared\":{\"requests\":0,"), "{j}");
        assert!(j.ends_with("\"ideal\":8}]}"), "{j}");
    }
}
