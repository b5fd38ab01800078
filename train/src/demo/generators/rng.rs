//! A tiny deterministic random source for the generators.
//!
//! SplitMix64: a 64-bit counter run through a fixed mixing function. It is not for anything
//! secret; it is here because the demo data must come out bit-identical on every machine and in
//! every build, which an external crate's algorithm (free to change between versions) would not
//! promise. Each example gets its own stream, seeded from (domain, seed, example index), so
//! example `i` is the same whether 10 or 10 000 examples are asked for.

/// The SplitMix64 finaliser: spreads every input bit over the whole output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over the bytes of `s`: a fixed, portable string hash (std's `DefaultHasher` is not
/// promised to stay the same between Rust releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// A deterministic random stream.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// The stream of example `index` of `domain` under `seed`.
    pub fn for_example(domain: &str, seed: u64, index: u64) -> Self {
        let h = mix(fnv1a(domain) ^ mix(seed.wrapping_add(GOLDEN)));
        Self { state: mix(h ^ mix(index.wrapping_mul(GOLDEN).wrapping_add(1))) }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// A whole number in `lo..=hi` (both ends included). The multiply-shift map has a bias of
    /// at most span/2^64, far below anything the demo could notice.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi, "Rng::range: empty range {lo}..={hi}");
        let span = (hi as i128 - lo as i128 + 1) as u128;
        let offset = (u128::from(self.next_u64()) * span) >> 64;
        (lo as i128 + offset as i128) as i64
    }

    /// An index in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below: n must be positive");
        self.range(0, n as i64 - 1) as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// `true` with probability `p` (53-bit resolution).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// `k` of `items` (at most all of them), keeping their order: for bullet lists whose
    /// order reads naturally while the selection varies.
    pub fn subset_in_order<'a, T>(&mut self, items: &'a [T], k: usize) -> Vec<&'a T> {
        let k = k.min(items.len());
        let mut keep = vec![false; items.len()];
        let mut chosen = 0;
        while chosen < k {
            let i = self.below(items.len());
            if !keep[i] {
                keep[i] = true;
                chosen += 1;
            }
        }
        items.iter().zip(keep).filter(|(_, k)| *k).map(|(t, _)| t).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_fixed_and_separate() {
        let a: Vec<u64> = (0..4).map(|_| Rng::for_example("math", 7, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r = Rng::for_example("math", 7, 3);
        let mut s = Rng::for_example("math", 7, 4);
        let mut t = Rng::for_example("code", 7, 3);
        let (x, y, z) = (r.next_u64(), s.next_u64(), t.next_u64());
        assert!(x != y && x != z && y != z);
    }

    #[test]
    fn range_stays_inside_and_reaches_both_ends() {
        let mut r = Rng::for_example("t", 0, 0);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = r.range(-2, 2);
            assert!((-2..=2).contains(&v));
            seen[(v + 2) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.range(5, 5), 5);
        // The widest range does not overflow.
        let _ = r.range(i64::MIN, i64::MAX);
    }

    #[test]
    fn chance_matches_its_probability_roughly() {
        let mut r = Rng::for_example("t", 1, 0);
        let hits = (0..10_000).filter(|_| r.chance(0.3)).count();
        assert!((2700..3300).contains(&hits), "{hits}");
        assert!(!(0..100).any(|_| r.chance(0.0)));
        assert!((0..100).all(|_| r.chance(1.0)));
    }

    #[test]
    fn subset_keeps_order_and_size() {
        let mut r = Rng::for_example("t", 2, 0);
        let items = [1, 2, 3, 4, 5];
        for k in 0..=6 {
            let s = r.subset_in_order(&items, k);
            assert_eq!(s.len(), k.min(5));
            assert!(s.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
