//! CPU replay of the index math of `gemm_bf16.ptx` (tests only): which global element each thread
//! copies to which shared byte, which shared rows each lane hands to `ldmatrix`, and how the
//! fragments feed `mma.m16n8k16`. The formulas below are the ones `gen_gemm_bf16.py` emits (change
//! both together). One block tile with one k-tile is replayed end to end for every layout and both
//! block shapes (128 x 128 with 128 threads, 128 x 256 `_wide` with 256 threads), with integer
//! data so the product is exact; every `ldmatrix` phase is checked for bank conflicts.
//!
//! Hardware semantics assumed (PTX ISA): `ldmatrix .x4`: lanes 8j..8j+7 give the row addresses of
//! matrix j; lane l receives in register j the elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix
//! j (of its transpose with `.trans`), lower column in the low half. `mma.m16n8k16` bf16 fragments
//! with g = l/4, t = l%4: A reg r holds (row g + 8(r&1), cols 2t + 8(r>>1) + {0,1}); B reg r holds
//! (k 2t + 8r + {0,1}, col g); C reg i holds (row g + 8(i>>1), col 2t + (i&1)).

const BM: usize = 128;
const BK: usize = 32;
const B_REGION: usize = 8192;

/// cp.async of a k-contiguous tile (rows x 32 k) by `threads` threads: thread `tid`, copy `i` ->
/// (tile row, first k, shared byte offset within the operand region).
fn load_kc(tid: usize, i: usize, threads: usize) -> (usize, usize, usize) {
    let rpi = threads / 4;
    let (r, c) = (tid >> 2, tid & 3);
    let dst = r * 64 + ((c ^ ((r >> 1) & 3)) << 4) + 64 * rpi * i;
    (r + rpi * i, c * 8, dst)
}

/// cp.async of an outer-contiguous tile (32 k-rows x `width`): thread `tid`, copy `i` -> (k row,
/// first column, shared byte offset).
fn load_oc(tid: usize, i: usize, width: usize, threads: usize) -> (usize, usize, usize) {
    let cpr = width / 8;
    let rpi = threads / cpr;
    let (r, c) = (tid / cpr, tid % cpr);
    let dst = r * 2 * width + ((c ^ (r & 7)) << 4) + 2 * width * rpi * i;
    (r + rpi * i, c * 8, dst)
}

/// ldmatrix row address (byte offset in the operand region) of lane `l` for the A fragment of m16
/// tile `mi`, k-step `ks`, warp row `wm`.
fn a_addr(kc: bool, l: usize, wm: usize, mi: usize, ks: usize) -> usize {
    if kc {
        let off = (wm * 64 + (l & 15)) * 64 + ((((2 * ks) + (l >> 4)) ^ ((l >> 1) & 3)) << 4);
        off + mi * 1024
    } else {
        let off = ((l >> 4) * 8 + (l & 7)) * 256
            + (wm << 7)
            + ((((2 * mi) + ((l >> 3) & 1)) ^ (l & 7)) << 4);
        off + ks * 4096
    }
}

/// ldmatrix row address of lane `l` for the B fragments of n8 tiles 2q, 2q+1, k-step `ks`, warp
/// column `wn`.
fn b_addr(kc: bool, bn: usize, l: usize, wn: usize, q: usize, ks: usize) -> usize {
    if kc {
        let off = (wn * 64 + (l >> 4) * 8 + (l & 7)) * 64
            + ((((2 * ks) + ((l >> 3) & 1)) ^ ((l >> 1) & 3)) << 4);
        off + q * 1024
    } else {
        let off = (((l >> 3) & 1) * 8 + (l & 7)) * 2 * bn
            + (wn << 7)
            + ((((2 * q) + (l >> 4)) ^ (l & 7)) << 4);
        off + ks * 16 * 2 * bn
    }
}

/// ldmatrix.x4 over shared memory `smem` (u16 elements, byte addresses `addr[lane]`).
fn ldmatrix(smem: &[u16], addr: &[usize; 32], trans: bool) -> [[(u16, u16); 4]; 32] {
    // Bank check: each matrix (8 rows of 16 bytes) must touch 8 distinct 16-byte bank groups.
    for j in 0..4 {
        let mut seen = [false; 8];
        for r in 0..8 {
            let a = addr[8 * j + r];
            assert_eq!(a % 16, 0, "ldmatrix row address not 16-byte aligned");
            let grp = (a / 16) % 8;
            assert!(
                !seen[grp],
                "bank conflict in matrix {j}: addresses {addr:?}"
            );
            seen[grp] = true;
        }
    }
    let el = |j: usize, row: usize, col: usize| smem[addr[8 * j + row] / 2 + col];
    let mut out = [[(0, 0); 4]; 32];
    for (l, o) in out.iter_mut().enumerate() {
        for (j, d) in o.iter_mut().enumerate() {
            let (g, t) = (l >> 2, l & 3);
            *d = if trans {
                (el(j, 2 * t, g), el(j, 2 * t + 1, g))
            } else {
                (el(j, g, 2 * t), el(j, g, 2 * t + 1))
            };
        }
    }
    out
}

/// Replays one block (m0 = n0 = 0, one k-tile) with 2 x `wn_count` warps for a layout; returns C
/// (128 x 64 wn_count).
fn replay(a_kc: bool, b_kc: bool, wn_count: usize, a: &[i32], b: &[i32]) -> Vec<i64> {
    let bn = 64 * wn_count;
    let threads = 64 * wn_count;
    // a: A[m][k] (128 x 32), b: B[k][n] (32 x bn), logical.
    let stage = B_REGION + bn * BK * 2;
    let mut smem = vec![u16::MAX; stage / 2];
    let mut written = vec![0u8; stage / 16];
    for tid in 0..threads {
        for (kc, region, size, rows, is_a) in [
            (a_kc, 0, B_REGION, BM, true),
            (b_kc, B_REGION, stage - B_REGION, bn, false),
        ] {
            for i in 0..(rows * BK / 8 / threads) {
                let (row, col0, dst) = if kc {
                    load_kc(tid, i, threads)
                } else {
                    load_oc(tid, i, rows, threads)
                };
                assert_eq!(dst % 16, 0);
                let byte = region + dst;
                assert!(byte + 16 <= region + size, "copy leaves its region");
                written[byte / 16] += 1;
                for e in 0..8 {
                    // kc: (row = m or n, k = col0 + e); oc: (k = row, m or n = col0 + e).
                    let (x, k) = if kc { (row, col0 + e) } else { (col0 + e, row) };
                    let v = if is_a { a[x * BK + k] } else { b[k * bn + x] };
                    smem[byte / 2 + e] = v as u16;
                }
            }
        }
    }
    assert!(
        written.iter().all(|&w| w == 1),
        "each 16-byte chunk written exactly once"
    );
    let mut c = vec![0i64; BM * bn];
    for warp in 0..2 * wn_count {
        let (wm, wn) = (warp / wn_count, warp % wn_count);
        let mut accf = vec![[[0i64; 4]; 32]; 32]; // [mi*8+ni][lane][reg]
        for ks in 0..2 {
            let mut fa = Vec::new();
            for mi in 0..4 {
                let addr: [usize; 32] = std::array::from_fn(|l| a_addr(a_kc, l, wm, mi, ks));
                fa.push(ldmatrix(&smem, &addr, !a_kc));
            }
            let mut fb = Vec::new();
            for q in 0..4 {
                let addr: [usize; 32] =
                    std::array::from_fn(|l| B_REGION + b_addr(b_kc, bn, l, wn, q, ks));
                fb.push(ldmatrix(&smem, &addr, !b_kc));
            }
            for mi in 0..4 {
                for ni in 0..8 {
                    // Rebuild the 16x16 A and 16x8 B the warp holds, per the mma fragment layout.
                    let mut am = [[0i64; 16]; 16];
                    let mut bm = [[0i64; 8]; 16];
                    for l in 0..32 {
                        let (g, t) = (l >> 2, l & 3);
                        for r in 0..4 {
                            let (lo, hi) = fa[mi][l][r];
                            let row = g + 8 * (r & 1);
                            let col = 2 * t + 8 * (r >> 1);
                            am[row][col] = lo as i16 as i64;
                            am[row][col + 1] = hi as i16 as i64;
                        }
                        for r in 0..2 {
                            let (lo, hi) = fb[ni / 2][l][(ni % 2) * 2 + r];
                            bm[2 * t + 8 * r][g] = lo as i16 as i64;
                            bm[2 * t + 8 * r + 1][g] = hi as i16 as i64;
                        }
                    }
                    for l in 0..32 {
                        let (g, t) = (l >> 2, l & 3);
                        for r in 0..4 {
                            let (row, col) = (g + 8 * (r >> 1), 2 * t + (r & 1));
                            let dot: i64 = (0..16).map(|p| am[row][p] * bm[p][col]).sum();
                            accf[mi * 8 + ni][l][r] += dot;
                        }
                    }
                }
            }
        }
        // Epilogue mapping: row = wm*64 + 16 mi + 8 h + g, col = wn*64 + 8 ni + 2t + e.
        for mi in 0..4 {
            for ni in 0..8 {
                for l in 0..32 {
                    let (g, t) = (l >> 2, l & 3);
                    for h in 0..2 {
                        for e in 0..2 {
                            let row = wm * 64 + mi * 16 + h * 8 + g;
                            let col = wn * 64 + ni * 8 + 2 * t + e;
                            c[row * bn + col] = accf[mi * 8 + ni][l][h * 2 + e];
                        }
                    }
                }
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a_kc: bool, b_kc: bool) {
        for wn in [2, 4] {
            let bn = 64 * wn;
            // Small values (as i16 bit patterns; the replay does integer math on them).
            let a: Vec<i32> = (0..BM * BK)
                .map(|i| ((i * 37 + 11) % 61) as i32 - 30)
                .collect();
            let b: Vec<i32> = (0..BK * bn)
                .map(|i| ((i * 53 + 7) % 67) as i32 - 33)
                .collect();
            let c = replay(a_kc, b_kc, wn, &a, &b);
            for i in 0..BM {
                for j in 0..bn {
                    let want: i64 = (0..BK)
                        .map(|p| a[i * BK + p] as i64 * b[p * bn + j] as i64)
                        .sum();
                    assert_eq!(
                        c[i * bn + j],
                        want,
                        "C[{i}][{j}] (a_kc {a_kc}, b_kc {b_kc}, bn {bn})"
                    );
                }
            }
        }
    }

    #[test]
    fn nt_layout_replays_to_the_product() {
        check(true, true);
    }

    #[test]
    fn nn_layout_replays_to_the_product() {
        check(true, false);
    }

    #[test]
    fn tn_layout_replays_to_the_product() {
        check(false, false);
    }

    #[test]
    fn mt_layout_replays_to_the_product() {
        // A m-contiguous with B k-contiguous: not an entry, but it exercises the remaining pairing.
        check(false, true);
    }
}
