//! f32 products with bf16 operands on Intel AMX tiles (Sapphire Rapids and later).
//!
//! This is the CPU side of [`MatmulPrecision::Bf16`](crate::MatmulPrecision): every operand is
//! rounded to bf16 (round to nearest even) while packing, the products of two bf16 values are
//! exact in f32, and they are summed in f32. One `tdpbf16ps` multiplies a 16 x 32 bf16 tile of A
//! by a 32 x 16 tile of B into a 16 x 16 f32 tile: 8,192 multiply-adds, where an AVX-512 FMA does
//! 16.
//!
//! # Structure
//!
//! The blocking mirrors the f32 driver in the parent module (tasks over rectangles of C, then
//! column blocks, k blocks of [`KC`], row blocks), with these layouts:
//!
//! - A block: bf16, row-major, `kc` rounded up to 32 per row (zero-padded), rows rounded up to 32
//!   (zero rows). A tile of A is 16 rows x 32 depths: 16 loads of 64 bytes, one row apart.
//! - B block: one panel per 32 columns of C. Per depth chunk of 32, the panel holds two tiles (its
//!   columns 0-15 and 16-31), each 16 rows of 64 bytes where row `r` holds, for each of the 16
//!   columns, the pair of depths `2r, 2r + 1` (the layout `tdpbf16ps` reads, "VNNI").
//! - The micro-kernel computes a 32 x 32 tile of C in four accumulator tiles (tmm0-3) from two A
//!   tiles (tmm4-5) and two B tiles (tmm6-7), then stores it to a scratch tile, whose valid part
//!   is written to (or added to) C.
//!
//! B is packed through the operand's own [`PackB<f32>`] into an f32 staging panel and converted
//! from there, so any operand the f32 driver accepts (strided views, NF4 weights decoded while
//! packing) works here unchanged.
//!
//! # Numerics
//!
//! Per entry of C and per k block of [`KC`] the tiles start from zero and sum the block's exact
//! products; then the block's sum is written to C or added to it, as the f32 kernels do. Inside a
//! block the tile hardware orders and rounds its partial sums its own way (measured: it matches
//! neither a chain of f32 fused multiply-adds nor a single rounding of the exact sum), so results
//! agree with the rounded f32 kernels only within the f32 GEMM tolerance, not bit for bit. They
//! are deterministic, and independent of the thread count (k is never split). AMX treats
//! subnormal inputs as zero and flushes subnormal results.
//!
//! # Operating system
//!
//! AMX state is large, so Linux hands it out only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`);
//! [`available`] asks once per process. Elsewhere (other systems, CPUs without AMX, or with
//! `BRAINSTACKS_NO_AMX=1`) the caller falls back to rounding and the f32 kernels.

use std::sync::OnceLock;

use super::driver::parallel_min_macs;
use super::{CPtr, MatRef, Out, PackB, round_to_bf16_bits};

/// Depth of one k block (the f32 kernels' KC): the A micro-panel, 32 x 256 bf16 = 16 KiB, stays in L1.
pub(super) const KC: usize = 256;
/// Rows (and columns) of C one micro-kernel call computes.
const TILE: usize = 32;
/// Depths one `tdpbf16ps` consumes.
const CHUNK: usize = 32;
/// Rows of A packed at once: 256 x 256 bf16 = 128 KiB, in L2 next to the B block.
const MC: usize = 256;
/// Columns of B packed at once: 2048 x 256 bf16 = 1 MiB, half of L2. Wide, so that the A block
/// (rounded from f32 on every packing) is packed once for most products of a Llama layer.
const NC: usize = 2048;

/// Whether this process may use AMX bf16 tiles: the CPU has AMX-TILE and AMX-BF16, the system
/// granted the tile state, and `BRAINSTACKS_NO_AMX` is unset (or `0`). Decided once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let disabled = std::env::var_os("BRAINSTACKS_NO_AMX").is_some_and(|v| v != "0");
        !disabled && detect()
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // The cpuid intrinsics are unsafe on older toolchains and safe on newer ones.
    #[allow(unused_unsafe)]
    // SAFETY: cpuid is available on every x86-64 CPU.
    let (max_leaf, leaf7) = unsafe { (__get_cpuid_max(0).0, __cpuid_count(7, 0)) };
    const AMX_BF16: u32 = 1 << 22;
    const AMX_TILE: u32 = 1 << 24;
    if max_leaf < 7 || leaf7.edx & (AMX_BF16 | AMX_TILE) != AMX_BF16 | AMX_TILE {
        return false;
    }
    request_tile_state()
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux (5.16+) grants the process the
/// tile data state; without it the first tile instruction is a fatal fault. Returns whether it
/// was granted.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call with integer arguments; it reads and writes no user memory.
    // The kernel clobbers rcx and r11 on `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// The product into `out` on AMX tiles. The caller checked [`available`].
pub(super) fn gemm<B: PackB<f32>>(a: MatRef<'_, f32>, b: B, out: Out<'_, f32>) {
    debug_assert!(available());
    let (m, k, n) = (a.rows, a.cols, b.cols());
    let Some((c, accumulate)) = super::prepare_out(m, k, n, &a, &b, out) else {
        return;
    };
    let job = Job { a, b, c: CPtr(c), ldc: n, accumulate };
    super::run_planned((m, n, k), (TILE, TILE), parallel_min_macs(), &|rows, cols| job.task(rows, cols));
}

/// Everything a task needs; shared read-only by the tasks of one call.
struct Job<'a, B> {
    a: MatRef<'a, f32>,
    b: B,
    c: CPtr<f32>,
    ldc: usize,
    accumulate: bool,
}

impl<B: PackB<f32>> Job<'_, B> {
    /// Rows `r0..r0 + rows` x columns `c0..c0 + cols` of C.
    fn task(&self, (r0, rows): (usize, usize), (c0, cols): (usize, usize)) {
        let k = self.a.cols;
        let kc_pad_max = KC.min(k).next_multiple_of(CHUNK);
        let a_len = MC.min(rows).next_multiple_of(TILE) * kc_pad_max;
        let b_len = NC.min(cols).next_multiple_of(TILE) * kc_pad_max;
        // The f32 staging panel for B is carved from the same scratch, as u16 pairs.
        let staging_len = 2 * KC.min(k) * TILE;
        super::with_scratch::<u16, _>(a_len, b_len + staging_len, |a_buf, rest| {
            let (b_buf, staging) = rest.split_at_mut(b_len);
            let staging: &mut [f32] = bytemuck::cast_slice_mut(staging);
            let _tiles = TileConfig::load();
            for j0 in (c0..c0 + cols).step_by(NC) {
                let nc = NC.min(c0 + cols - j0);
                for p0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - p0);
                    let kc_pad = kc.next_multiple_of(CHUNK);
                    let b_block = &mut b_buf[..nc.next_multiple_of(TILE) * kc_pad];
                    pack_b(&self.b, p0..p0 + kc, j0..j0 + nc, &mut staging[..kc * TILE], b_block);
                    let load_c = self.accumulate || p0 > 0;
                    for i0 in (r0..r0 + rows).step_by(MC) {
                        let mc = MC.min(r0 + rows - i0);
                        let a_block = &mut a_buf[..mc.next_multiple_of(TILE) * kc_pad];
                        pack_a(&self.a, (i0, mc), (p0, kc), kc_pad, a_block);
                        self.macro_kernel((i0, mc), (j0, nc), kc_pad, a_block, b_block, load_c);
                    }
                }
            }
        });
    }

    /// Every 32 x 32 tile of a packed A block times a packed B block, into C.
    fn macro_kernel(
        &self,
        (i0, mc): (usize, usize),
        (j0, nc): (usize, usize),
        kc_pad: usize,
        a_block: &[u16],
        b_block: &[u16],
        load_c: bool,
    ) {
        let mut tile = [0f32; TILE * TILE];
        let a_panel_len = TILE * kc_pad;
        let b_panel_len = TILE * kc_pad;
        for (q, a_panel) in a_block.chunks_exact(a_panel_len).enumerate() {
            let rows = TILE.min(mc - q * TILE);
            for (jq, b_panel) in b_block.chunks_exact(b_panel_len).enumerate() {
                let cols = TILE.min(nc - jq * TILE);
                // SAFETY: the A panel holds 32 rows of kc_pad values and the B panel kc_pad / 32
                // chunks of two 16 x 32 tiles (lengths from `chunks_exact`); the tile holds 32 x 32
                // f32 at row stride 32; the tile configuration is loaded on this thread (`_tiles`
                // in `task`, alive for the whole task).
                unsafe { tile_32x32(kc_pad / CHUNK, a_panel.as_ptr(), kc_pad, b_panel.as_ptr(), tile.as_mut_ptr()) };
                let c_tile = self.c.0.wrapping_add((i0 + q * TILE) * self.ldc + j0 + jq * TILE);
                for (i, src) in tile.chunks_exact(TILE).take(rows).enumerate() {
                    let dst = c_tile.wrapping_add(i * self.ldc);
                    // SAFETY: row i of the tile's valid part (`cols` values from `dst`) is inside C
                    // and inside this task's rectangle (see `CPtr`), so nothing else accesses it;
                    // C is read only when `load_c` says an earlier block (or the caller)
                    // initialised it. The single addition is the one the f32 kernels make.
                    unsafe {
                        if load_c {
                            let dst = std::slice::from_raw_parts_mut(dst, cols);
                            for (d, &partial) in dst.iter_mut().zip(&src[..cols]) {
                                *d += partial;
                            }
                        } else {
                            std::ptr::copy_nonoverlapping(src.as_ptr(), dst, cols);
                        }
                    }
                }
            }
        }
    }
}

/// Rows `i0..i0 + mc` x depths `p0..p0 + kc` of `a`, rounded to bf16, as a row-major block of
/// `kc_pad` values per row, zero past `kc` and in the rows past `mc` up to a multiple of 32.
fn pack_a(a: &MatRef<'_, f32>, (i0, mc): (usize, usize), (p0, kc): (usize, usize), kc_pad: usize, out: &mut [u16]) {
    for (i, row) in out.chunks_exact_mut(kc_pad).enumerate() {
        if i >= mc {
            row.fill(0);
            continue;
        }
        let start = (i0 + i) * a.row_stride + p0 * a.col_stride;
        if a.col_stride == 1 || kc == 1 {
            round_slice(&a.data[start..start + kc], &mut row[..kc]);
        } else {
            for (p, d) in row[..kc].iter_mut().enumerate() {
                *d = round_to_bf16_bits(a.data[start + p * a.col_stride]);
            }
        }
        row[kc..].fill(0);
    }
}

/// Depths `depth` x columns `cols` of `b` as 32-column VNNI panels (see the module docs): each
/// panel is first packed by the operand itself into `staging` (`depth.len()` x 32 f32, zero past
/// `cols`), then rounded and interleaved by depth pairs, zero past `depth.len()`.
fn pack_b<B: PackB<f32>>(b: &B, depth: std::ops::Range<usize>, cols: std::ops::Range<usize>, staging: &mut [f32], out: &mut [u16]) {
    let kc = depth.len();
    let kc_pad = kc.next_multiple_of(CHUNK);
    for (q, panel) in out.chunks_exact_mut(TILE * kc_pad).enumerate() {
        let j0 = cols.start + q * TILE;
        let j1 = (j0 + TILE).min(cols.end);
        b.pack(depth.clone(), j0..j1, TILE, staging);
        // Chunk `ch` of 32 depths: tile t (columns 16t..16t+16), row r (depths 2r, 2r+1), column jj.
        for (ch, chunk) in panel.chunks_exact_mut(TILE * CHUNK).enumerate() {
            for t in 0..2 {
                for r in 0..CHUNK / 2 {
                    let at = t * 512 + r * 32;
                    let dst = &mut chunk[at..at + 32];
                    let p_even = ch * CHUNK + 2 * r;
                    let row = |p: usize| -> Option<&[f32]> { (p < kc).then(|| &staging[p * TILE + 16 * t..p * TILE + 16 * t + 16]) };
                    let (even, odd) = (row(p_even), row(p_even + 1));
                    for jj in 0..16 {
                        dst[2 * jj] = even.map_or(0, |v| round_to_bf16_bits(v[jj]));
                        dst[2 * jj + 1] = odd.map_or(0, |v| round_to_bf16_bits(v[jj]));
                    }
                }
            }
        }
    }
}

/// `dst[i] = round_to_bf16_bits(src[i])`.
fn round_slice(src: &[f32], dst: &mut [u16]) {
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { round_slice_avx512(src, dst) };
    }
    round_slice_portable(src, dst);
}

#[inline(always)]
fn round_slice_portable(src: &[f32], dst: &mut [u16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = round_to_bf16_bits(s);
    }
}

/// The same loop compiled for AVX-512, which the compiler vectorises 16 lanes wide (every AMX CPU
/// has AVX-512).
#[target_feature(enable = "avx512f,avx512bw")]
fn round_slice_avx512(src: &[f32], dst: &mut [u16]) {
    round_slice_portable(src, dst);
}

/// The tile shapes of this module, loaded into the calling thread's tile configuration for the
/// life of the value; dropping it releases the tile state (`tilerelease`), so a thread that no
/// longer multiplies does not carry 8 KiB of tile registers through every context switch.
struct TileConfig;

/// The 64-byte operand of `ldtilecfg` (palette 1): every one of tmm0-7 is 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileShapes {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    fn load() -> TileConfig {
        let mut shapes = TileShapes { palette: 1, start_row: 0, reserved: [0; 14], bytes_per_row: [0; 16], rows: [0; 16] };
        shapes.bytes_per_row[..8].fill(64);
        shapes.rows[..8].fill(16);
        // SAFETY: AMX is available (checked by the caller of `gemm`) and the operand is a valid,
        // 64-byte aligned palette-1 configuration.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) &shapes as *const TileShapes, options(nostack, readonly)) };
        TileConfig
    }
}

impl Drop for TileConfig {
    fn drop(&mut self) {
        // SAFETY: releases the tile state this thread configured in `load`.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// One 32 x 32 f32 tile of C: `c[i * 32 + j] = sum_p A(i, p) B(p, j)` over `chunks * 32` depths,
/// starting from zero.
///
/// # Safety
/// `a` must hold 32 rows of `lda` bf16 values (at least `chunks * 32` each), `b` `chunks` chunks of
/// 1024 values in the VNNI layout of the module docs, `c` 1024 f32; the tile configuration of
/// [`TileConfig`] must be loaded on this thread.
unsafe fn tile_32x32(chunks: usize, a: *const u16, lda: usize, b: *const u16, c: *mut f32) {
    let lda_bytes = lda * 2;
    // SAFETY (all blocks): the reads and writes stay inside the operands the caller guarantees;
    // only tile registers, which no compiled code uses, are changed besides memory.
    unsafe {
        std::arch::asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        for ch in 0..chunks {
            let a_top = a.add(ch * CHUNK);
            let a_bottom = a_top.add(16 * lda);
            let b_left = b.add(ch * TILE * CHUNK);
            let b_right = b_left.add(512);
            std::arch::asm!(
                "tileloadd tmm4, [{a_top} + {lda}*1]",
                "tileloadd tmm5, [{a_bottom} + {lda}*1]",
                "tileloadd tmm6, [{b_left} + {row}*1]",
                "tileloadd tmm7, [{b_right} + {row}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a_top = in(reg) a_top,
                a_bottom = in(reg) a_bottom,
                b_left = in(reg) b_left,
                b_right = in(reg) b_right,
                lda = in(reg) lda_bytes,
                row = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
        let row = TILE * 4;
        std::arch::asm!(
            "tilestored [{c00} + {row}*1], tmm0",
            "tilestored [{c01} + {row}*1], tmm1",
            "tilestored [{c10} + {row}*1], tmm2",
            "tilestored [{c11} + {row}*1], tmm3",
            c00 = in(reg) c,
            c01 = in(reg) c.add(16),
            c10 = in(reg) c.add(16 * TILE),
            c11 = in(reg) c.add(16 * TILE + 16),
            row = in(reg) row,
            options(nostack)
        );
    }
}
