//! CPU simulation of the index math of `nf4.ptx` (tests only). Nothing here runs on a GPU: each
//! function replays one kernel lane by lane with the *same* address and bit-field formulas the
//! generator (`gen_ptx.py`) emits — which byte and nibble a lane decodes into which fragment
//! register, which shared-memory byte offsets are written and read, which partial sum lands in
//! which output — and an `mma.m16n8k16` model built from the PTX ISA fragment layout. The tests
//! compare the replay with a plain dot product, so a wrong offset, nibble order or fragment
//! position shows up as an O(1) error. Change a formula here and in the generator together.

use super::NF4_CODE;
use crate::cast::cpu::{bf16_bits_to_f32, f32_to_bf16_bits};

/// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` on per-lane registers, following the
/// PTX ISA fragment tables (lane = 4g + t; low half of a register = lower-index element):
/// a0 = A[g][2t..], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..];
/// b0 = B[2t..][g], b1 = B[2t+8..][g]; c{0,1} = C[g][2t + {0,1}], c{2,3} = C[g+8][2t + {0,1}].
fn mma(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &mut [[f32; 4]; 32]) {
    let lo = |r: u32| f64::from(bf16_bits_to_f32((r & 0xffff) as u16));
    let hi = |r: u32| f64::from(bf16_bits_to_f32((r >> 16) as u16));
    let mut am = [[f64::NAN; 16]; 16];
    let mut bm = [[f64::NAN; 8]; 16];
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for (r, (row, col)) in [
            (g, 2 * t),
            (g + 8, 2 * t),
            (g, 2 * t + 8),
            (g + 8, 2 * t + 8),
        ]
        .into_iter()
        .enumerate()
        {
            am[row][col] = lo(a[lane][r]);
            am[row][col + 1] = hi(a[lane][r]);
        }
        for (r, k) in [2 * t, 2 * t + 8].into_iter().enumerate() {
            bm[k][g] = lo(b[lane][r]);
            bm[k + 1][g] = hi(b[lane][r]);
        }
    }
    for (lane, cl) in c.iter_mut().enumerate() {
        let (g, t) = (lane / 4, lane % 4);
        for (r, cv) in cl.iter_mut().enumerate() {
            let (row, col) = (g + 8 * (r / 2), 2 * t + r % 2);
            let s: f64 = (0..16).map(|kk| am[row][kk] * bm[kk][col]).sum();
            *cv = (f64::from(*cv) + s) as f32;
        }
    }
}

/// `NF4_CODE[(word >> bitpos) & 15] * amax` (bfe, shared table, mul.rn).
fn lut_val(word: u32, bitpos: u32, amax: f32) -> f32 {
    NF4_CODE[((word >> bitpos) & 15) as usize] * amax
}

/// `decode_pair`: byte `byte` of `word` to bf16x2, `cvt.rn.bf16x2.f32 d, odd, even` (the odd
/// element, low nibble, in the upper half).
fn decode_pair(word: u32, byte: u32, amax: f32) -> u32 {
    let even = lut_val(word, 8 * byte + 4, amax);
    let odd = lut_val(word, 8 * byte, amax);
    (u32::from(f32_to_bf16_bits(odd)) << 16) | u32::from(f32_to_bf16_bits(even))
}

/// Little-endian 32-bit word at byte offset `off` of `bytes`.
fn word(bytes: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
}

/// The two bf16 at `x[e]`, `x[e + 1]` as one `.b32` (what a vector load of bf16 gives).
fn xword(x: &[u16], e: usize) -> u32 {
    u32::from(x[e]) | (u32::from(x[e + 1]) << 16)
}

/// The weight operand as the kernels see it: packed bytes and f32 absmax.
struct W<'a> {
    packed: &'a [u8],
    absmax: &'a [f32],
    n: usize,
    k: usize,
}

/// Entry `v` of the skinny kernel's pair table: low half bf16(code of the high nibble), high half
/// bf16(code of the low nibble) (`cvt.rn.bf16x2.f32 d, code[v & 15], code[v >> 4]`).
fn pair_entry(v: u32) -> u32 {
    let lo = f32_to_bf16_bits(NF4_CODE[(v >> 4) as usize]);
    let hi = f32_to_bf16_bits(NF4_CODE[(v & 15) as usize]);
    (u32::from(hi) << 16) | u32::from(lo)
}

/// Replays `nf4_gemm_bf16_f32_skinny` (f32 scales; the double-quantized path differs only in
/// how a scale is fetched).
fn sim_skinny(x: &[u16], ldx: usize, m: usize, w: &W) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    let kb = k >> 6;
    let nch = (k + 127) >> 7;
    let mut y = vec![f32::NAN; m * n];
    for cta in 0..n.div_ceil(32) {
        let n0 = 32 * cta;
        let mut red = vec![[0f32; 16]; 256];
        for warp in 0..8 {
            let mut acc = [[[0f32; 4]; 32]; 4];
            let mut c = warp;
            while c < nch {
                let mut xa = [[0u32; 16]; 32];
                let mut xb = [[0u32; 16]; 32];
                let mut wr = [[[0u32; 4]; 4]; 32];
                let mut sc = [[[0f32; 4]; 4]; 32];
                // Sub-chunk 1 is skipped (loads and compute) past K; columns >= N read row N-1.
                let kv1 = 128 * c + 64 < k;
                for h in 0..if kv1 { 2 } else { 1 } {
                    let blk = 2 * c + h;
                    for lane in 0..32 {
                        let (g, t) = (lane >> 2, lane & 3);
                        let kseg = 64 * blk + 16 * t;
                        for (regs, row) in [(&mut xa[lane], g), (&mut xb[lane], g + 8)] {
                            if row < m {
                                for i in 0..8 {
                                    regs[8 * h + i] = xword(x, row * ldx + kseg + 2 * i);
                                }
                            }
                        }
                        for tt in 0..4 {
                            let nn = (n0 + 8 * tt + g).min(n - 1);
                            let off = nn * (k / 2) + kseg / 2;
                            wr[lane][tt][2 * h] = word(w.packed, off);
                            wr[lane][tt][2 * h + 1] = word(w.packed, off + 4);
                            for e in 0..2 {
                                let col = (n0 + 8 * tt + 2 * t + e).min(n - 1);
                                sc[lane][tt][2 * h + e] = w.absmax[col * kb + blk];
                            }
                        }
                    }
                }
                for h in 0..if kv1 { 2 } else { 1 } {
                    for tt in 0..4 {
                        let mut tmp = [[0f32; 4]; 32];
                        for s in 0..4 {
                            let mut a = [[0u32; 4]; 32];
                            let mut b = [[0u32; 2]; 32];
                            for lane in 0..32 {
                                let xi = 8 * h + 2 * s;
                                a[lane] = [
                                    xa[lane][xi],
                                    xb[lane][xi],
                                    xa[lane][xi + 1],
                                    xb[lane][xi + 1],
                                ];
                                let wd = wr[lane][tt][2 * h + (s >> 1)];
                                let lut = |byte: usize| pair_entry((wd >> (8 * (byte & 3))) & 0xff);
                                b[lane] = [lut(2 * s), lut(2 * s + 1)];
                            }
                            mma(&a, &b, &mut tmp);
                        }
                        for lane in 0..32 {
                            let (s0, s1) = (sc[lane][tt][2 * h], sc[lane][tt][2 * h + 1]);
                            let ac = &mut acc[tt][lane];
                            ac[0] = tmp[lane][0].mul_add(s0, ac[0]);
                            ac[1] = tmp[lane][1].mul_add(s1, ac[1]);
                            ac[2] = tmp[lane][2].mul_add(s0, ac[2]);
                            ac[3] = tmp[lane][3].mul_add(s1, ac[3]);
                        }
                    }
                }
                c += 8;
            }
            for lane in 0..32 {
                for tile in 0..4 {
                    for r in 0..4 {
                        red[warp * 32 + lane][4 * tile + r] = acc[tile][lane][r];
                    }
                }
            }
        }
        for tid in 0..256 {
            for half in 0..2 {
                let o = tid + 256 * half;
                let (mm, nl) = (o >> 5, o & 31);
                let src = 4 * (mm & 7) + ((nl >> 1) & 3);
                let reg = 4 * (nl >> 3) + 2 * (mm >> 3) + (nl & 1);
                let mut s = red[src][reg];
                for wp in 1..8 {
                    s += red[wp * 32 + src][reg];
                }
                if mm < m && n0 + nl < n {
                    y[mm * n + n0 + nl] = s;
                }
            }
        }
    }
    y
}

/// Replays `nf4_gemm_bf16_f32_skinny_t` (dx = dy W, M <= 16).
fn sim_skinny_t(dy: &[u16], lddy: usize, m: usize, w: &W) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    let kb_blocks = k >> 6;
    let nst = n.div_ceil(16);
    let mut dx = vec![f32::NAN; m * k];
    for cta in 0..k / 64 {
        let kb = 64 * cta;
        let mut red = vec![[0f32; 32]; 256];
        for warp in 0..8 {
            let mut acc = [[[0f32; 4]; 32]; 8];
            let mut s = warp;
            while s < nst {
                let n0 = 16 * s;
                let mut a = [[0u32; 4]; 32];
                let mut v = [[0u32; 4]; 32];
                let mut am = [[0f32; 4]; 32];
                for lane in 0..32 {
                    let (g, t) = (lane >> 2, lane & 3);
                    for (j, off) in [0usize, 1, 8, 9].into_iter().enumerate() {
                        let nn = n0 + 2 * t + off;
                        if nn < n {
                            v[lane][j] = word(w.packed, ((nn * k + kb) >> 1) + 4 * g);
                            am[lane][j] = w.absmax[nn * kb_blocks + cta];
                        }
                    }
                    for (reg, (rowoff, coloff)) in
                        [(0, 0), (8, 0), (0, 8), (8, 8)].into_iter().enumerate()
                    {
                        let row = g + rowoff;
                        let col = n0 + 2 * t + coloff;
                        let el = |c: usize| {
                            if row < m && c < n {
                                u32::from(dy[row * lddy + c])
                            } else {
                                0
                            }
                        };
                        a[lane][reg] = el(col) | (el(col + 1) << 16);
                    }
                }
                for (e, acc_e) in acc.iter_mut().enumerate() {
                    let bitpos = 8 * (e as u32 >> 1) + if e % 2 == 0 { 4 } else { 0 };
                    let mut b = [[0u32; 2]; 32];
                    for lane in 0..32 {
                        let val =
                            |j: usize| f32_to_bf16_bits(lut_val(v[lane][j], bitpos, am[lane][j]));
                        b[lane] = [
                            u32::from(val(0)) | (u32::from(val(1)) << 16),
                            u32::from(val(2)) | (u32::from(val(3)) << 16),
                        ];
                    }
                    mma(&a, &b, acc_e);
                }
                s += 8;
            }
            for lane in 0..32 {
                for e in 0..8 {
                    for r in 0..4 {
                        red[warp * 32 + lane][4 * e + r] = acc[e][lane][r];
                    }
                }
            }
        }
        for tid in 0..256 {
            for q in 0..4 {
                let o = tid + 256 * q;
                let (mm, kk) = (o >> 6, o & 63);
                let src = 4 * (mm & 7) + ((kk >> 4) & 3);
                let reg = 4 * (kk & 7) + 2 * (mm >> 3) + ((kk >> 3) & 1);
                let mut sum = red[src][reg];
                for wp in 1..8 {
                    sum += red[wp * 32 + src][reg];
                }
                if mm < m {
                    dx[mm * k + kb + kk] = sum;
                }
            }
        }
    }
    dx
}

/// Shared memory as bytes, filled with a junk pattern so that reading a byte no stage wrote
/// gives a NaN-like bf16 (0xFFFF) and fails the comparison.
struct Smem(Vec<u8>);

impl Smem {
    fn new() -> Self {
        Smem(vec![0xff; 18432])
    }
    fn st16(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn st32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn ld32(&self, off: usize) -> u32 {
        word(&self.0, off)
    }
}

/// `ldmatrix.sync.aligned.m8n8.x4.shared.b16` (PTX ISA): lane `8j + r` supplies the byte address
/// of row `r` of 8x8 matrix `j` (8 consecutive b16, 16-byte aligned); lane `l` receives, in
/// register `j`, row `l / 4`, columns `2(l % 4)` and `2(l % 4) + 1` of matrix `j`.
fn ldmatrix_x4(s: &Smem, addr: impl Fn(usize) -> usize) -> [[u32; 4]; 32] {
    let mut out = [[0u32; 4]; 32];
    for (l, o) in out.iter_mut().enumerate() {
        for (j, r) in o.iter_mut().enumerate() {
            let row = addr(8 * j + l / 4);
            assert_eq!(row % 16, 0, "ldmatrix row address must be 16-byte aligned");
            *r = s.ld32(row + 4 * (l % 4));
        }
    }
    out
}

/// Replays `nf4_gemm_bf16_f32_tc`.
fn sim_tc(a: &[u16], lda: usize, m: usize, w: &W, transposed: bool) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    let (rl, cl) = if transposed { (n, k) } else { (k, n) };
    let kb = k >> 6;
    let mut out = vec![f32::NAN; m * cl];
    for cy in 0..m.div_ceil(128) {
        for cx in 0..cl.div_ceil(128) {
            let (m0, c0) = (128 * cy, 128 * cx);
            let mut acc = vec![[[[0f32; 4]; 32]; 16]; 8];
            // The weight operand of stage r0 as each thread's registers hold it: loaded one
            // stage ahead (prologue for r0 = 0, then r0 + 64 after each decode), as the PTX does.
            let load = |tid: usize, r0: usize| -> ([u32; 4], f32) {
                let (nn, kk) = if transposed {
                    (r0 + (tid & 63), c0 + 32 * (tid >> 6))
                } else {
                    (c0 + (tid >> 1), r0 + 32 * (tid & 1))
                };
                let (mut wd, mut am) = ([0u32; 4], 0f32);
                if nn < n && kk < k {
                    let off = (nn * k + kk) >> 1;
                    for (i, v) in wd.iter_mut().enumerate() {
                        *v = word(w.packed, off + 4 * i);
                    }
                    am = w.absmax[nn * kb + (kk >> 6)];
                }
                (wd, am)
            };
            let mut regs: Vec<([u32; 4], f32)> = (0..256).map(|tid| load(tid, 0)).collect();
            let mut r0 = 0;
            while r0 < rl {
                let mut sa = Smem::new();
                let mut sb = Smem::new();
                for tid in 0..256 {
                    let (arow, piece) = (tid >> 3, tid & 7);
                    for i in 0..4 {
                        let row = arow + 32 * i;
                        let (mm, rr) = (m0 + row, r0 + 8 * piece);
                        for e in 0..8 {
                            let v = if mm < m && rr + e < rl {
                                a[mm * lda + rr + e]
                            } else {
                                0
                            };
                            sa.st16(row * 144 + piece * 16 + 2 * e, v);
                        }
                    }
                    let (wd, am) = regs[tid];
                    if !transposed {
                        let (row, y) = (tid >> 1, tid & 1);
                        for b in 0..16 {
                            let d = decode_pair(wd[b >> 2], (b & 3) as u32, am);
                            sb.st32(row * 144 + y * 64 + 4 * b, d);
                        }
                    } else {
                        let (row, y) = (tid & 63, tid >> 6);
                        for e in 0..32 {
                            let byte = e >> 1;
                            let bitpos = 8 * (byte as u32 & 3) + if e % 2 == 0 { 4 } else { 0 };
                            let v = lut_val(wd[byte >> 2], bitpos, am);
                            sb.st16(y * 4608 + row * 2 + 144 * e, f32_to_bf16_bits(v));
                        }
                    }
                    regs[tid] = load(tid, r0 + 64);
                }
                for (warp, acc_w) in acc.iter_mut().enumerate() {
                    let (wm, wn) = (warp >> 2, warp & 3);
                    for ks in 0..4 {
                        // ldmatrix row addresses, as the PTX computes them per lane.
                        let mut fa = [[[0u32; 4]; 32]; 4];
                        let mut fb = [[[0u32; 2]; 32]; 4];
                        let abase = |l: usize| {
                            (wm * 64 + (l & 7) + 8 * ((l >> 3) & 1)) * 144 + 16 * (l >> 4)
                        };
                        let bbase = |l: usize| {
                            (wn * 32 + (l & 7) + 8 * (l >> 4)) * 144 + 16 * ((l >> 3) & 1)
                        };
                        for (mt, f) in fa.iter_mut().enumerate() {
                            *f = ldmatrix_x4(&sa, |l| abase(l) + mt * 2304 + ks * 32);
                        }
                        for p in 0..2 {
                            let r = ldmatrix_x4(&sb, |l| bbase(l) + p * 2304 + ks * 32);
                            for lane in 0..32 {
                                fb[2 * p][lane] = [r[lane][0], r[lane][1]];
                                fb[2 * p + 1][lane] = [r[lane][2], r[lane][3]];
                            }
                        }
                        for mt in 0..4 {
                            for nt in 0..4 {
                                mma(&fa[mt], &fb[nt], &mut acc_w[mt * 4 + nt]);
                            }
                        }
                    }
                }
                r0 += 64;
            }
            for (warp, acc_w) in acc.iter().enumerate() {
                let (wm, wn) = (warp >> 2, warp & 3);
                for lane in 0..32 {
                    let (g, t) = (lane >> 2, lane & 3);
                    for mt in 0..4 {
                        for hr in 0..2 {
                            let row = m0 + wm * 64 + g + 16 * mt + 8 * hr;
                            for nt in 0..4 {
                                for e in 0..2 {
                                    let col = c0 + 32 * wn + 2 * t + 8 * nt + e;
                                    if row < m && col < cl {
                                        out[row * cl + col] = acc_w[mt * 4 + nt][lane][2 * hr + e];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nf4::{dequantize_nf4, nf4_matmul_f64, nf4_matmul_transposed_f64, quantize_nf4};

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        }
    }

    /// bf16 activations `[rows, cols]` with row stride `ld` (padding filled with NaN bits so a
    /// read past the row shows), and their f32 values densely.
    fn act(rng: &mut Lcg, rows: usize, cols: usize, ld: usize) -> (Vec<u16>, Vec<f32>) {
        let mut bits = vec![0x7fc1u16; rows.saturating_sub(1) * ld + cols];
        let mut dense = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                let b = f32_to_bf16_bits(rng.next());
                bits[r * ld + c] = b;
                dense.push(bf16_bits_to_f32(b));
            }
        }
        (bits, dense)
    }

    /// Exact (f64) product on the weights as the kernel rounds them (`wb`, f64 values): what a
    /// replay must reproduce up to f32 accumulation. `tr`: reduce over n (dx = dy W) instead of
    /// over k (y = x W^T).
    fn exact_ref(a: &[f32], m: usize, wb: &[f64], n: usize, k: usize, tr: bool) -> Vec<f64> {
        let (rl, cl) = if tr { (n, k) } else { (k, n) };
        let mut out = vec![0f64; m * cl];
        for i in 0..m {
            for c in 0..cl {
                out[i * cl + c] = (0..rl)
                    .map(|r| {
                        let wv = if tr { wb[r * k + c] } else { wb[c * k + r] };
                        f64::from(a[i * rl + r]) * wv
                    })
                    .sum();
            }
        }
        out
    }

    /// Tile kernel weights: `bf16(code * absmax)`.
    fn tc_weights(wq: &[f32]) -> Vec<f64> {
        wq.iter()
            .map(|&v| f64::from(bf16_bits_to_f32(f32_to_bf16_bits(v))))
            .collect()
    }

    /// Skinny kernel weights: `bf16(code) * absmax` (the scale is applied to the f32 partial sum).
    fn skinny_weights(q: &crate::nf4::Nf4Quantized) -> Vec<f64> {
        (0..q.numel())
            .map(|i| {
                let code = NF4_CODE[usize::from(q.nibble(i).unwrap())];
                f64::from(bf16_bits_to_f32(f32_to_bf16_bits(code))) * f64::from(q.absmax()[i / 64])
            })
            .collect()
    }

    /// Compares a replay with the bf16-weight reference (tight: only f32 accumulation differs) and
    /// with the f64 oracle under the bound stated in the module docs.
    fn check(got: &[f32], tight: &[f64], oracle: &[f64], abs_sum: &[f64], rl: usize, what: &str) {
        assert_eq!(got.len(), tight.len());
        for i in 0..got.len() {
            let g = f64::from(got[i]);
            let tol = (rl as f64 + 16.0) * 2f64.powi(-23) * abs_sum[i] + 1e-30;
            assert!(
                (g - tight[i]).abs() <= tol,
                "{what}: out[{i}] = {g}, bf16 reference {}",
                tight[i]
            );
            let bound = (2f64.powi(-8) + rl as f64 * 2f64.powi(-23)) * abs_sum[i] + 1e-30;
            assert!(
                (g - oracle[i]).abs() <= bound,
                "{what}: out[{i}] = {g}, oracle {}",
                oracle[i]
            );
        }
    }

    fn abs_sums(a: &[f32], m: usize, wq: &[f32], n: usize, k: usize, tr: bool) -> Vec<f64> {
        let aa: Vec<f32> = a.iter().map(|v| v.abs()).collect();
        let wa: Vec<f32> = wq.iter().map(|v| v.abs()).collect();
        let wb: Vec<f64> = wa.iter().map(|&v| f64::from(v)).collect();
        let (rl, cl) = if tr { (n, k) } else { (k, n) };
        let mut out = vec![0f64; m * cl];
        for i in 0..m {
            for c in 0..cl {
                out[i * cl + c] = (0..rl)
                    .map(|r| {
                        let wv = if tr { wb[r * k + c] } else { wb[c * k + r] };
                        f64::from(aa[i * rl + r]) * wv
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn skinny_index_math_matches_product() {
        let mut rng = Lcg(7);
        // (m, n, k, ldx): K % 128 == 64 (half chunk), several chunks per warp, N not a multiple
        // of 8 or 32, M = 1 and 16, strided rows.
        for &(m, n, k, ldx) in &[
            (1, 3, 64, 64),
            (16, 40, 192, 200),
            (5, 33, 128, 136),
            (16, 9, 1088, 1088),
            (2, 64, 320, 328),
        ] {
            let wf: Vec<f32> = (0..n * k).map(|_| rng.next()).collect();
            let q = quantize_nf4(&wf, 64).unwrap();
            let wq = dequantize_nf4(&q);
            let (xb, xd) = act(&mut rng, m, k, ldx);
            let w = W {
                packed: q.packed(),
                absmax: q.absmax(),
                n,
                k,
            };
            let got = sim_skinny(&xb, ldx, m, &w);
            let tight = exact_ref(&xd, m, &skinny_weights(&q), n, k, false);
            let oracle = nf4_matmul_f64(&xd, m, k, &q, n).unwrap();
            let sums = abs_sums(&xd, m, &wq, n, k, false);
            check(
                &got,
                &tight,
                &oracle,
                &sums,
                k,
                &format!("skinny m={m} n={n} k={k}"),
            );
        }
    }

    #[test]
    fn tc_index_math_matches_product() {
        let mut rng = Lcg(11);
        for &(m, n, k, lda, tr) in &[
            (17, 3, 64, 64, false),
            (130, 129, 192, 197, false),
            (3, 70, 128, 128, false),
            (20, 3, 64, 5, true),
            (129, 131, 192, 133, true),
            (2, 64, 256, 64, true),
            (16, 131, 192, 133, true),
            (1, 3, 64, 3, true),
            (5, 40, 128, 41, true),
        ] {
            let wf: Vec<f32> = (0..n * k).map(|_| rng.next()).collect();
            let q = quantize_nf4(&wf, 64).unwrap();
            let wq = dequantize_nf4(&q);
            let rl = if tr { n } else { k };
            let (ab, ad) = act(&mut rng, m, rl, lda);
            let w = W {
                packed: q.packed(),
                absmax: q.absmax(),
                n,
                k,
            };
            let mut runs = vec![("tc", sim_tc(&ab, lda, m, &w, tr))];
            if tr && m <= 16 {
                runs.push(("skinny_t", sim_skinny_t(&ab, lda, m, &w)));
            }
            let tight = exact_ref(&ad, m, &tc_weights(&wq), n, k, tr);
            let oracle = if tr {
                nf4_matmul_transposed_f64(&ad, m, n, &q, k).unwrap()
            } else {
                nf4_matmul_f64(&ad, m, k, &q, n).unwrap()
            };
            let sums = abs_sums(&ad, m, &wq, n, k, tr);
            for (name, got) in &runs {
                let what = format!("{name} m={m} n={n} k={k} tr={tr}");
                check(got, &tight, &oracle, &sums, rl, &what);
            }
        }
    }

    /// The transposed oracle is the forward oracle on the transposed weight.
    #[test]
    fn transposed_oracle_is_forward_on_transpose() {
        let mut rng = Lcg(3);
        let (m, n, k) = (3, 5, 64);
        let wf: Vec<f32> = (0..n * k).map(|_| rng.next()).collect();
        let q = quantize_nf4(&wf, 64).unwrap();
        let wq = dequantize_nf4(&q);
        let dy: Vec<f32> = (0..m * n).map(|_| rng.next()).collect();
        let got = nf4_matmul_transposed_f64(&dy, m, n, &q, k).unwrap();
        for i in 0..m {
            for p in 0..k {
                let want: f64 = (0..n)
                    .map(|j| f64::from(dy[i * n + j]) * f64::from(wq[j * k + p]))
                    .sum();
                assert!((got[i * k + p] - want).abs() <= 1e-12 * (1.0 + want.abs()));
            }
        }
        assert!(nf4_matmul_transposed_f64(&dy[1..], m, n, &q, k).is_err());
        assert!(nf4_matmul_transposed_f64(&dy, m, n, &q, k + 1).is_err());
    }

    /// The mma model itself: identity-like A picks rows of B.
    #[test]
    fn mma_model_layout() {
        let one = u32::from(f32_to_bf16_bits(1.0));
        let mut a = [[0u32; 4]; 32];
        // A = identity on the first 16 k: A[i][i] = 1.
        for (lane, al) in a.iter_mut().enumerate() {
            let (g, t) = (lane / 4, lane % 4);
            for (r, (row, col)) in [
                (g, 2 * t),
                (g + 8, 2 * t),
                (g, 2 * t + 8),
                (g + 8, 2 * t + 8),
            ]
            .into_iter()
            .enumerate()
            {
                let mut v = 0;
                if row == col {
                    v |= one;
                }
                if row == col + 1 {
                    v |= one << 16;
                }
                al[r] = v;
            }
        }
        // B[k][n] = 100 k + n (exact in bf16 for these small values? use k + n/8 instead).
        let bval = |k: usize, n: usize| (k * 8 + n) as f32;
        let mut b = [[0u32; 2]; 32];
        for (lane, bl) in b.iter_mut().enumerate() {
            let (g, t) = (lane / 4, lane % 4);
            for (r, k) in [2 * t, 2 * t + 8].into_iter().enumerate() {
                bl[r] = u32::from(f32_to_bf16_bits(bval(k, g)))
                    | (u32::from(f32_to_bf16_bits(bval(k + 1, g))) << 16);
            }
        }
        let mut c = [[0f32; 4]; 32];
        mma(&a, &b, &mut c);
        for (lane, cl) in c.iter().enumerate() {
            let (g, t) = (lane / 4, lane % 4);
            assert_eq!(cl[0], bval(g, 2 * t));
            assert_eq!(cl[1], bval(g, 2 * t + 1));
            assert_eq!(cl[2], bval(g + 8, 2 * t));
            assert_eq!(cl[3], bval(g + 8, 2 * t + 1));
        }
    }
}
