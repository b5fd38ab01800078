//! Seeded shuffles and the train/validation split.

use brainstacks_tensor::{DType, Device, Rng, Tensor};

use crate::{Error, Result};

/// A permutation of `0..n` (Fisher-Yates) driven by the Philox stream of `rng`, which advances
/// by `n` draws. The same `rng` state always gives the same permutation.
///
/// ```
/// use brainstacks_tensor::Rng;
/// use brainstacks_train::data::shuffled_indices;
/// let a = shuffled_indices(10, &mut Rng::new(7)).unwrap();
/// let b = shuffled_indices(10, &mut Rng::new(7)).unwrap();
/// assert_eq!(a, b);
/// let mut sorted = a.clone();
/// sorted.sort();
/// assert_eq!(sorted, (0..10).collect::<Vec<_>>());
/// ```
pub fn shuffled_indices(n: usize, rng: &mut Rng) -> Result<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    if n < 2 {
        return Ok(order);
    }
    // Uniforms in the open interval (0, 1), so floor(u * (i + 1)) lies in 0..=i.
    let u = Tensor::rand_uniform(rng, 0.0, 1.0, &[n], DType::F64, &Device::Cpu)?.to_vec::<f64>()?;
    for i in (1..n).rev() {
        let j = ((u[i] * (i + 1) as f64) as usize).min(i);
        order.swap(i, j);
    }
    Ok(order)
}

/// How a dataset is split into training and validation examples.
#[derive(Clone, Copy, Debug)]
pub struct SplitConfig {
    /// Share of the examples held out, in (0, 1). Default 0.02 (the method's 2 %).
    pub val_fraction: f64,
    /// Default 42 (the method's seed).
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { val_fraction: 0.02, seed: 42 }
    }
}

/// Positions of the training and validation examples in the original list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitIndices {
    /// In the original order.
    pub train: Vec<usize>,
    /// In shuffled order, so any prefix of it is a random sample of the dataset.
    pub val: Vec<usize>,
}

/// Splits `n` examples: shuffles `0..n` with `Rng::new(seed)`, the first
/// `ceil(n * val_fraction)` (at least 1 and at most `n - 1` when `n >= 2`; 0 when `n < 2`) are
/// validation. Deterministic in `(n, val_fraction, seed)`.
///
/// ```
/// use brainstacks_train::data::{split_indices, SplitConfig};
/// let s = split_indices(100, &SplitConfig::default()).unwrap();
/// assert_eq!((s.train.len(), s.val.len()), (98, 2));
/// assert_eq!(split_indices(3, &SplitConfig::default()).unwrap().val.len(), 1);
/// ```
pub fn split_indices(n: usize, cfg: &SplitConfig) -> Result<SplitIndices> {
    if !(cfg.val_fraction > 0.0 && cfg.val_fraction < 1.0) {
        return Err(Error::Invalid {
            what: "train/validation split".into(),
            msg: format!("val_fraction must lie in (0, 1), got {}", cfg.val_fraction),
        });
    }
    if n < 2 {
        return Ok(SplitIndices { train: (0..n).collect(), val: Vec::new() });
    }
    let n_val = ((n as f64 * cfg.val_fraction).ceil() as usize).clamp(1, n - 1);
    let order = shuffled_indices(n, &mut Rng::new(cfg.seed))?;
    let val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    train.sort_unstable();
    Ok(SplitIndices { train, val })
}

/// The examples of [`split_indices`]: `(train, val)`.
pub fn split_train_val<T: Clone>(items: &[T], cfg: &SplitConfig) -> Result<(Vec<T>, Vec<T>)> {
    let s = split_indices(items.len(), cfg)?;
    let pick = |idx: &[usize]| idx.iter().map(|&i| items[i].clone()).collect();
    Ok((pick(&s.train), pick(&s.val)))
}

/// The fixed evaluation subset: the first `n` validation examples (all of them when fewer).
pub fn eval_subset<T>(val: &[T], n: usize) -> &[T] {
    &val[..n.min(val.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled_indices(1000, &mut Rng::new(1)).unwrap();
        let b = shuffled_indices(1000, &mut Rng::new(2)).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        // A continued stream gives a different permutation (the next epoch's).
        let mut rng = Rng::new(1);
        let first = shuffled_indices(1000, &mut rng).unwrap();
        let second = shuffled_indices(1000, &mut rng).unwrap();
        assert_eq!(first, a);
        assert_ne!(second, a);
        assert_eq!(shuffled_indices(0, &mut rng).unwrap(), Vec::<usize>::new());
        assert_eq!(shuffled_indices(1, &mut rng).unwrap(), vec![0]);
    }

    /// Every position is about equally likely to receive every element (a biased shuffle,
    /// such as the naive swap-with-any, fails this with these counts).
    #[test]
    fn shuffle_is_roughly_uniform() {
        let mut counts = [[0usize; 4]; 4];
        let mut rng = Rng::new(3);
        let trials = 24_000;
        for _ in 0..trials {
            let p = shuffled_indices(4, &mut rng).unwrap();
            for (pos, &v) in p.iter().enumerate() {
                counts[pos][v] += 1;
            }
        }
        for row in counts {
            for c in row {
                // Expected 6000, sd ~ 67.
                assert!((c as i64 - 6000).abs() < 400, "{counts:?}");
            }
        }
    }

    #[test]
    fn split_sizes_and_determinism() {
        let cfg = SplitConfig::default();
        for n in [2usize, 3, 49, 50, 51, 1000] {
            let s = split_indices(n, &cfg).unwrap();
            let expect_val = ((n as f64 * 0.02).ceil() as usize).clamp(1, n - 1);
            assert_eq!(s.val.len(), expect_val, "n={n}");
            assert_eq!(s.train.len() + s.val.len(), n);
            let mut all: Vec<usize> = s.train.iter().chain(&s.val).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
            assert_eq!(split_indices(n, &cfg).unwrap(), s);
        }
        assert!(split_indices(1000, &SplitConfig { seed: 43, ..cfg }).unwrap() != split_indices(1000, &cfg).unwrap());
        assert_eq!(split_indices(1, &cfg).unwrap(), SplitIndices { train: vec![0], val: vec![] });
        assert_eq!(split_indices(0, &cfg).unwrap(), SplitIndices { train: vec![], val: vec![] });
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let err = split_indices(10, &SplitConfig { val_fraction: bad, seed: 0 }).unwrap_err().to_string();
            assert!(err.contains("val_fraction"), "{err}");
        }
    }

    #[test]
    fn split_items_follow_the_indices() {
        let items: Vec<String> = (0..60).map(|i| format!("ex{i}")).collect();
        let cfg = SplitConfig { val_fraction: 0.1, seed: 5 };
        let (train, val) = split_train_val(&items, &cfg).unwrap();
        let s = split_indices(60, &cfg).unwrap();
        assert_eq!(val, s.val.iter().map(|&i| items[i].clone()).collect::<Vec<_>>());
        assert_eq!(train.len(), 54);
        assert!(train.windows(2).all(|w| w[0] != w[1]));
        assert_eq!(eval_subset(&val, 4), &val[..4]);
        assert_eq!(eval_subset(&val, 100).len(), 6);
    }
}
