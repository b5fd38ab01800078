//! GPU RoPE and embedding kernels against their CPU oracles.
//!
//! RoPE and the lookups are compared bit for bit (see why in each test); the embedding adjoint
//! bit for bit against the f32 sum in the oracle's order, and within the oracle's error bound.
//! Without a usable GPU every test prints "skipped: <reason>" and passes, unless `REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]

mod common;

use brainstacks_kernels::embedding::{cpu as emb_cpu, cuda as emb_cuda};
use brainstacks_kernels::rope::{cpu as rope_cpu, cuda as rope_cuda};
use common::gpu;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CASES: u32 = 24;

/// A small xorshift stream for bulk test data (proptest picks the seed and the shapes).
struct Xs(u64);

impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-a, a).
    fn f32(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------- RoPE

/// (batch, t, half, pos pad, batch pad): empty, one, odd, around the 256-thread block, and one
/// large odd case.
fn rope_shape() -> impl Strategy<Value = (usize, usize, usize, usize, usize)> {
    prop_oneof![
        (0usize..=3, 0usize..40, 1usize..70, 0usize..5, 0usize..9),
        (
            1usize..=2,
            prop_oneof![Just(1usize), Just(255), Just(257)],
            prop_oneof![Just(1usize), Just(64), Just(128)],
            0usize..3,
            0usize..3
        ),
        Just((3usize, 1001usize, 65usize, 3usize, 5usize)),
    ]
}

/// Runs one RoPE case, forward or backward. Products of two f32 are exact in f64, so the kernel
/// does exactly the oracle's f64 arithmetic: its output must equal the oracle rounded to f32.
fn rope_case(
    bwd: bool,
    (batch, t, half, pad_p, pad_b): (usize, usize, usize, usize, usize),
    seed: u64,
) -> Result<(), TestCaseError> {
    let g = gpu().expect("checked by the caller");
    let d = 2 * half;
    let pos: Vec<usize> = (0..t).map(|p| p * 3 + 1).collect();
    let (cos64, sin64) = rope_cpu::rope_tables(&pos, d, 10_000.0);
    let cos: Vec<f32> = cos64.iter().map(|v| *v as f32).collect();
    let sin: Vec<f32> = sin64.iter().map(|v| *v as f32).collect();
    let shape = rope_cuda::RopeShape {
        batch,
        t,
        d,
        pos_stride: d + pad_p,
        batch_stride: t * (d + pad_p) + pad_b,
    };
    // The strided buffer: padding is NaN, so reading it would show in the output.
    let len = if batch * t == 0 {
        0
    } else {
        (batch - 1) * shape.batch_stride + (t - 1) * shape.pos_stride + d
    };
    let mut buf = vec![f32::NAN; len];
    let mut x = Vec::with_capacity(batch * t * d);
    let mut rng = Xs(seed | 1);
    for b in 0..batch {
        for p in 0..t {
            for i in 0..d {
                let v = rng.f32(4.0);
                buf[b * shape.batch_stride + p * shape.pos_stride + i] = v;
                x.push(v as f64);
            }
        }
    }
    let (c64, s64): (Vec<f64>, Vec<f64>) = (
        cos.iter().map(|v| *v as f64).collect(),
        sin.iter().map(|v| *v as f64).collect(),
    );
    let want = if bwd {
        rope_cpu::rope_backward(&x, &c64, &s64, batch, t, d)
    } else {
        rope_cpu::rope(&x, &c64, &s64, batch, t, d)
    };
    let (dx, dc, ds) = (
        g.htod(&buf).unwrap(),
        g.htod(&cos).unwrap(),
        g.htod(&sin).unwrap(),
    );
    let mut dy = g.alloc_zeros::<f32>(batch * t * d).unwrap();
    if bwd {
        rope_cuda::rope_f32_bwd(g, &dx, shape, &dc, &ds, &mut dy).unwrap();
    } else {
        rope_cuda::rope_f32_fwd(g, &dx, shape, &dc, &ds, &mut dy).unwrap();
    }
    let got = g.dtoh(&dy).unwrap();
    if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != (want[i] as f32).to_bits()) {
        return Err(TestCaseError::fail(format!(
            "bwd={bwd} {shape:?}: element {i}: gpu {:e} oracle {:e}",
            got[i], want[i]
        )));
    }
    Ok(())
}

#[test]
fn rope_f32_fwd_matches_cpu() {
    let Some(_) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&(rope_shape(), any::<u64>()), |(s, seed)| {
            rope_case(false, s, seed)
        })
        .unwrap();
}

#[test]
fn rope_f32_bwd_matches_cpu() {
    let Some(_) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&(rope_shape(), any::<u64>()), |(s, seed)| {
            rope_case(true, s, seed)
        })
        .unwrap();
}

/// bf16 value of raw bits, widened exactly.
fn bf16_val(b: u16) -> f64 {
    f32::from_bits((b as u32) << 16) as f64
}

/// The bf16 entries: the f64 oracle on the stored bf16 values, rounded once to bf16
/// (`rope::round_to_bf16`), must match bit for bit (same exact products as in f32).
fn rope_bf16_case(
    bwd: bool,
    (batch, t, half, pad_p, pad_b): (usize, usize, usize, usize, usize),
    seed: u64,
) -> Result<(), TestCaseError> {
    let g = gpu().expect("checked by the caller");
    let d = 2 * half;
    let pos: Vec<usize> = (0..t).map(|p| p * 5 + 2).collect();
    let (cos64, sin64) = rope_cpu::rope_tables(&pos, d, 500_000.0);
    let cos: Vec<u16> = cos64.iter().map(|v| rope_cpu::round_to_bf16(*v)).collect();
    let sin: Vec<u16> = sin64.iter().map(|v| rope_cpu::round_to_bf16(*v)).collect();
    let shape = rope_cuda::RopeShape {
        batch,
        t,
        d,
        pos_stride: d + pad_p,
        batch_stride: t * (d + pad_p) + pad_b,
    };
    let len = if batch * t == 0 {
        0
    } else {
        (batch - 1) * shape.batch_stride + (t - 1) * shape.pos_stride + d
    };
    let mut buf = vec![0x7FC0u16; len]; // NaN padding
    let mut x = Vec::with_capacity(batch * t * d);
    let mut rng = Xs(seed | 1);
    for b in 0..batch {
        for p in 0..t {
            for i in 0..d {
                let v = rope_cpu::round_to_bf16(rng.f32(4.0) as f64);
                buf[b * shape.batch_stride + p * shape.pos_stride + i] = v;
                x.push(bf16_val(v));
            }
        }
    }
    let c64: Vec<f64> = cos.iter().map(|v| bf16_val(*v)).collect();
    let s64: Vec<f64> = sin.iter().map(|v| bf16_val(*v)).collect();
    let want = if bwd {
        rope_cpu::rope_backward(&x, &c64, &s64, batch, t, d)
    } else {
        rope_cpu::rope(&x, &c64, &s64, batch, t, d)
    };
    let (dx, dc, ds) = (
        g.htod(&buf).unwrap(),
        g.htod(&cos).unwrap(),
        g.htod(&sin).unwrap(),
    );
    let mut dy = g.alloc_zeros::<u16>(batch * t * d).unwrap();
    if bwd {
        rope_cuda::rope_bf16_bwd(g, &dx, shape, &dc, &ds, &mut dy).unwrap();
    } else {
        rope_cuda::rope_bf16_fwd(g, &dx, shape, &dc, &ds, &mut dy).unwrap();
    }
    let got = g.dtoh(&dy).unwrap();
    if let Some(i) = (0..want.len()).find(|&i| got[i] != rope_cpu::round_to_bf16(want[i])) {
        return Err(TestCaseError::fail(format!(
            "bf16 bwd={bwd} {shape:?}: element {i}: gpu {:#06x} oracle {:e} -> {:#06x}",
            got[i],
            want[i],
            rope_cpu::round_to_bf16(want[i])
        )));
    }
    Ok(())
}

#[test]
fn rope_bf16_fwd_and_bwd_match_cpu() {
    let Some(_) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(rope_shape(), any::<u64>(), any::<bool>()),
            |(s, seed, bwd)| rope_bf16_case(bwd, s, seed),
        )
        .unwrap();
}

#[test]
fn rope_rejects_bad_shapes() {
    let Some(g) = gpu() else { return };
    let x = g.htod(&[0f32; 16]).unwrap();
    let tab = g.htod(&[0f32; 4]).unwrap();
    let mut y = g.alloc_zeros::<f32>(16).unwrap();
    // Odd head dim.
    let odd = rope_cuda::RopeShape::contiguous(1, 4, 3);
    assert!(rope_cuda::rope_f32_fwd(g, &x, odd, &tab, &tab, &mut y).is_err());
    // A view past the end of x.
    let mut far = rope_cuda::RopeShape::contiguous(2, 2, 4);
    far.batch_stride = 9;
    assert!(rope_cuda::rope_f32_fwd(g, &x, far, &tab, &tab, &mut y).is_err());
    // Tables of the wrong size.
    let big = g.htod(&[0f32; 8]).unwrap();
    let ok = rope_cuda::RopeShape::contiguous(2, 2, 4);
    assert!(rope_cuda::rope_f32_bwd(g, &x, ok, &big, &tab, &mut y).is_err());
    rope_cuda::rope_f32_bwd(g, &x, ok, &tab, &tab, &mut y).unwrap();
}

// ---------------------------------------------------------------- embedding

/// (vocab, dim, n, id pool): the pool (<= vocab) forces repeated ids.
fn emb_shape() -> impl Strategy<Value = (usize, usize, usize, usize)> {
    prop_oneof![
        (
            1usize..300,
            prop_oneof![Just(1usize), 1usize..300, Just(255), Just(256), Just(257)],
            prop_oneof![Just(0usize), Just(1), 1usize..600],
            1usize..300
        ),
        Just((50_000usize, 64usize, 100_003usize, 50_000usize)),
        Just((1000usize, 257usize, 4097usize, 3usize)),
    ]
    .prop_map(|(v, d, n, pool)| (v, d, n, pool.min(v)))
}

fn ids_of(rng: &mut Xs, vocab: usize, n: usize, pool: usize) -> Vec<i64> {
    // A random pool of rows, then ids drawn from it (many repeats when the pool is small).
    let rows: Vec<i64> = (0..pool).map(|_| rng.below(vocab as u64) as i64).collect();
    (0..n)
        .map(|_| rows[rng.below(pool as u64) as usize])
        .collect()
}

/// The lookup copies bits, so f32 and bf16 must match the oracle exactly.
#[test]
fn embedding_fwd_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(emb_shape(), any::<u64>()),
            |((vocab, dim, n, pool), seed)| {
                let mut rng = Xs(seed | 1);
                let table: Vec<f32> = (0..vocab * dim).map(|_| rng.f32(3.0)).collect();
                let ids = ids_of(&mut rng, vocab, n, pool);
                let t64: Vec<f64> = table.iter().map(|v| *v as f64).collect();
                let want = emb_cpu::embedding(&t64, vocab, dim, &ids);
                let (dt, di) = (g.htod(&table).unwrap(), g.htod(&ids).unwrap());
                let mut out = g.alloc_zeros::<f32>(n * dim).unwrap();
                emb_cuda::embedding_f32_fwd(g, &dt, vocab, dim, &di, &mut out).unwrap();
                let got = g.dtoh(&out).unwrap();
                if let Some(i) =
                    (0..want.len()).find(|&i| got[i].to_bits() != (want[i] as f32).to_bits())
                {
                    return Err(TestCaseError::fail(format!(
                        "f32 vocab={vocab} dim={dim} n={n}: element {i}"
                    )));
                }
                // bf16: raw bits, the same rows.
                let tb: Vec<u16> = (0..vocab * dim).map(|_| rng.next() as u16).collect();
                let dtb = g.htod(&tb).unwrap();
                let mut ob = g.alloc_zeros::<u16>(n * dim).unwrap();
                emb_cuda::embedding_bf16_fwd(g, &dtb, vocab, dim, &di, &mut ob).unwrap();
                let gb = g.dtoh(&ob).unwrap();
                for (j, &id) in ids.iter().enumerate() {
                    let row = &tb[id as usize * dim..(id as usize + 1) * dim];
                    if &gb[j * dim..(j + 1) * dim] != row {
                        return Err(TestCaseError::fail(format!(
                            "bf16 vocab={vocab} dim={dim} n={n}: row {j}"
                        )));
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

/// The adjoint adds each row's dy in increasing j after the old value, in f32: bit-identical to
/// that sequential sum, and (from zero) within the oracle's `gamma(m) sum |dy|` bound.
#[test]
fn embedding_bwd_matches_cpu() {
    let Some(g) = gpu() else { return };
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(
            &(emb_shape(), any::<u64>(), any::<bool>()),
            |((vocab, dim, n, pool), seed, from_zero)| {
                let mut rng = Xs(seed | 1);
                let ids = ids_of(&mut rng, vocab, n, pool);
                let dy: Vec<f32> = (0..n * dim).map(|_| rng.f32(2.0)).collect();
                let init: Vec<f32> = (0..vocab * dim)
                    .map(|_| if from_zero { 0.0 } else { rng.f32(1.0) })
                    .collect();
                // The sequential f32 sum the kernel promises.
                let mut seq = init.clone();
                for (j, &id) in ids.iter().enumerate() {
                    for c in 0..dim {
                        seq[id as usize * dim + c] += dy[j * dim + c];
                    }
                }
                let (di, ddy) = (g.htod(&ids).unwrap(), g.htod(&dy).unwrap());
                let mut dt = g.htod(&init).unwrap();
                emb_cuda::embedding_f32_bwd(g, &di, &ddy, vocab, dim, &mut dt).unwrap();
                let got = g.dtoh(&dt).unwrap();
                if let Some(i) = (0..seq.len()).find(|&i| got[i].to_bits() != seq[i].to_bits()) {
                    return Err(TestCaseError::fail(format!(
                        "vocab={vocab} dim={dim} n={n}: element {i}: gpu {:e} sequential {:e}",
                        got[i], seq[i]
                    )));
                }
                if from_zero {
                    let dy64: Vec<f64> = dy.iter().map(|v| *v as f64).collect();
                    let want = emb_cpu::embedding_adjoint(&dy64, vocab, dim, &ids);
                    let mut hits = vec![0usize; vocab];
                    let mut abs = vec![0f64; vocab * dim];
                    for (j, &id) in ids.iter().enumerate() {
                        hits[id as usize] += 1;
                        for c in 0..dim {
                            abs[id as usize * dim + c] += dy64[j * dim + c].abs();
                        }
                    }
                    let u = f32::EPSILON as f64 / 2.0;
                    for i in 0..want.len() {
                        let m = hits[i / dim] as f64;
                        let tol = m * u / (1.0 - m * u) * abs[i] + u * want[i].abs();
                        if (got[i] as f64 - want[i]).abs() > tol {
                            return Err(TestCaseError::fail(format!(
                                "element {i}: gpu {} oracle {} tol {tol}",
                                got[i], want[i]
                            )));
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn embedding_out_of_range_ids_are_errors() {
    let Some(g) = gpu() else { return };
    let table = g.htod(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(); // 3 x 2
    for bad in [3i64, -1, i64::MIN, i64::MAX] {
        let ids = g.htod(&[0i64, 2, bad, 1, bad]).unwrap();
        let mut out = g.alloc_zeros::<f32>(10).unwrap();
        let e = emb_cuda::embedding_f32_fwd(g, &table, 3, 2, &ids, &mut out).unwrap_err();
        assert!(e.to_string().contains("ids[2]"), "{e}");
        let dy = g.htod(&[1f32; 10]).unwrap();
        let mut dt = g.htod(&[7f32; 6]).unwrap();
        let e = emb_cuda::embedding_f32_bwd(g, &ids, &dy, 3, 2, &mut dt).unwrap_err();
        assert!(e.to_string().contains("ids[2]"), "{e}");
        assert_eq!(
            g.dtoh(&dt).unwrap(),
            vec![7f32; 6],
            "nothing written on error"
        );
    }
    // Length mismatches.
    let ids = g.htod(&[0i64]).unwrap();
    let mut out = g.alloc_zeros::<f32>(3).unwrap();
    assert!(emb_cuda::embedding_f32_fwd(g, &table, 3, 2, &ids, &mut out).is_err());
    assert!(emb_cuda::embedding_f32_fwd(g, &table, 2, 2, &ids, &mut out).is_err());
}
