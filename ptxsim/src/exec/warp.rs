//! Warp-collective instructions (`shfl.sync`, `ldmatrix`, `mma.sync`), run once every lane that
//! takes part has arrived. Fragment layouts follow the PTX ISA's figures for m8n8 `ldmatrix` and
//! `mma.m16n8k16` with `.row.col` bf16 operands and f32 accumulators.

use super::alu::{f32b, f32v, mask};
use super::op::{Op, ShflMode, Ty};
use super::{Cta, Status, Thread};
use crate::parse::Operand;

/// Runs the collective the waiting lanes of `warp` stopped at, then moves them past it.
pub(super) fn collective(cta: &mut Cta, warp: &mut [Thread]) -> Result<(), String> {
    let waiting: Vec<usize> = (0..warp.len()).filter(|&l| warp[l].status == Status::Collective).collect();
    let first = &warp[waiting[0]];
    let (func, pc) = (first.frame().func, first.frame().pc);
    let f = &cta.module.funcs[func];
    let inst = &f.insts[pc];
    let here = |msg: String| format!("warp {} in {} at PTX line {}: {msg}", first.linear / 32, f.name, inst.line);
    for &l in &waiting {
        let fr = warp[l].frame();
        if (fr.func, fr.pc) != (func, pc) {
            let other = &cta.module.funcs[fr.func].insts[fr.pc];
            return Err(here(format!("lane {l} waits at a different warp-collective instruction (PTX line {})", other.line)));
        }
    }
    let everyone = |what: &str| -> Result<(), String> {
        if waiting.len() != 32 {
            let missing: Vec<usize> = (0..32).filter(|l| !waiting.contains(l)).collect();
            return Err(here(format!("{what} needs all 32 lanes; lanes {missing:?} are not here (exited, at a barrier, or not launched)")));
        }
        Ok(())
    };
    let results: Vec<(usize, Vec<(Operand, u64)>)> = match inst.op {
        Op::Shfl(mode) => {
            let a = &inst.args;
            let member = cta.get(&warp[waiting[0]], &a[4], Ty::B32)? as u32;
            for l in 0..32 {
                if member >> l & 1 == 1 && !waiting.contains(&l) {
                    return Err(here(format!("shfl.sync member mask {member:#x} names lane {l}, which is not here")));
                }
            }
            let mut out = Vec::new();
            for &l in &waiting {
                let t = &warp[l];
                let b = cta.get(t, &a[2], Ty::U32)? as u32 & 31;
                let c = cta.get(t, &a[3], Ty::U32)? as u32;
                let seg = (c >> 8) & 31;
                let clamp = c & 31;
                let lane = l as u32;
                let max_lane = (lane & seg) | (clamp & !seg);
                let min_lane = lane & seg;
                let (j, ok) = match mode {
                    ShflMode::Up => {
                        let j = lane as i32 - b as i32;
                        (j, j >= max_lane as i32)
                    }
                    ShflMode::Down => {
                        let j = (lane + b) as i32;
                        (j, j <= max_lane as i32)
                    }
                    ShflMode::Bfly => {
                        let j = (lane ^ b) as i32;
                        (j, j <= max_lane as i32)
                    }
                    ShflMode::Idx => {
                        let j = (min_lane | (b & !seg)) as i32;
                        (j, j <= max_lane as i32)
                    }
                };
                let src = if ok { j as usize } else { l };
                if !waiting.contains(&src) {
                    return Err(here(format!("lane {l} reads lane {src}, which is not here")));
                }
                let v = cta.get(&warp[src], &a[1], Ty::B32)?;
                let mut w = Vec::new();
                match &a[0] {
                    Operand::Pair(d, p) => {
                        w.push(((**d).clone(), v));
                        w.push(((**p).clone(), ok as u64));
                    }
                    d => w.push((d.clone(), v)),
                }
                out.push((l, w));
            }
            out
        }
        Op::Ldmatrix { num, trans } => {
            everyone("ldmatrix")?;
            let num = num as usize;
            // rows[m][r]: the 8 b16 values of row r of matrix m, from the address lane 8m + r gave.
            let mut rows = vec![[[0u16; 8]; 8]; num];
            let mut row_addrs = Vec::with_capacity(8 * num);
            for m in 0..num {
                for r in 0..8 {
                    let t = &warp[8 * m + r];
                    let (addr, _) = cta.address(t, &inst.args[1])?;
                    row_addrs.push(((8 * m + r) as u8, addr));
                    let mut buf = [0u8; 16];
                    cta.load(t, super::op::Space::Shared, addr, None, &mut buf).map_err(|e| here(format!("lane {}: {e}", 8 * m + r)))?;
                    for (c, v) in rows[m][r].iter_mut().enumerate() {
                        *v = u16::from_le_bytes([buf[2 * c], buf[2 * c + 1]]);
                    }
                }
            }
            if let Some(p) = cta.profile.as_deref_mut() {
                p.warp_request(cta.module, func, pc, &row_addrs, 16);
            }
            let dsts = vec_operands(&inst.args[0], num).map_err(here)?;
            (0..32)
                .map(|l| {
                    let (g, q) = (l / 4, l % 4);
                    let w = (0..num)
                        .map(|m| {
                            let (lo, hi) =
                                if trans { (rows[m][2 * q][g], rows[m][2 * q + 1][g]) } else { (rows[m][g][2 * q], rows[m][g][2 * q + 1]) };
                            (dsts[m].clone(), lo as u64 | (hi as u64) << 16)
                        })
                        .collect();
                    (l, w)
                })
                .collect()
        }
        Op::MmaBf16 => {
            everyone("mma.sync")?;
            if let Some(p) = cta.profile.as_deref_mut() {
                p.mma += 1;
            }
            let a = &inst.args;
            let (da, aa, ba, ca) = (
                vec_operands(&a[0], 4).map_err(here)?,
                vec_operands(&a[1], 4).map_err(here)?,
                vec_operands(&a[2], 2).map_err(here)?,
                vec_operands(&a[3], 4).map_err(here)?,
            );
            let bf = |v: u64, hi: bool| f32::from_bits(((if hi { v >> 16 } else { v }) as u32 & 0xffff) << 16);
            let mut am = [[0f32; 16]; 16];
            let mut bm = [[0f32; 8]; 16];
            let mut cm = [[0f32; 8]; 16];
            for l in 0..32 {
                let t = &warp[l];
                let (g, q) = (l / 4, l % 4);
                let r = |o: &Operand| cta.get(t, o, Ty::B32);
                for (i, (row, col)) in [(g, 2 * q), (g + 8, 2 * q), (g, 2 * q + 8), (g + 8, 2 * q + 8)].into_iter().enumerate() {
                    let v = r(&aa[i])?;
                    am[row][col] = bf(v, false);
                    am[row][col + 1] = bf(v, true);
                }
                for (i, k) in [2 * q, 2 * q + 8].into_iter().enumerate() {
                    let v = r(&ba[i])?;
                    bm[k][g] = bf(v, false);
                    bm[k + 1][g] = bf(v, true);
                }
                for (i, (row, col)) in [(g, 2 * q), (g, 2 * q + 1), (g + 8, 2 * q), (g + 8, 2 * q + 1)].into_iter().enumerate() {
                    cm[row][col] = f32v(r(&ca[i])?);
                }
            }
            (0..32)
                .map(|l| {
                    let (g, q) = (l / 4, l % 4);
                    let w = [(g, 2 * q), (g, 2 * q + 1), (g + 8, 2 * q), (g + 8, 2 * q + 1)]
                        .into_iter()
                        .enumerate()
                        .map(|(i, (row, col))| {
                            // Products of bf16 values are exact in f64; one rounding at the end.
                            let dot: f64 = (0..16).map(|k| am[row][k] as f64 * bm[k][col] as f64).sum();
                            let d = (dot + cm[row][col] as f64) as f32;
                            (da[i].clone(), f32b(d))
                        })
                        .collect();
                    (l, w)
                })
                .collect()
        }
        other => return Err(here(format!("{other:?} is not a warp-collective instruction"))),
    };
    for (l, writes) in results {
        let t = &mut warp[l];
        for (o, v) in writes {
            Cta::set(t, &o, mask(v, Ty::B64))?;
        }
        t.frame_mut().pc += 1;
        t.status = Status::Ready;
    }
    Ok(())
}

fn vec_operands(o: &Operand, n: usize) -> Result<Vec<Operand>, String> {
    match o {
        Operand::Vec(v) if v.len() == n => Ok(v.clone()),
        other => Err(format!("expected a vector of {n} registers, found {other:?}")),
    }
}
