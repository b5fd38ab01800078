//! One domain's data: examples read from JSONL, split into training and validation sets, and
//! turned into what the trainer consumes.

use std::path::Path;

use brainstacks_tensor::Rng;

use super::batch::{PackTail, TokenRow, pack};
use super::encode::{EncodedExample, encode_example};
use super::encoder::TextEncoder;
use super::example::{Example, JsonlCounts, ParseOptions, read_jsonl};
use super::split::{SplitConfig, eval_subset, shuffled_indices, split_train_val};
use crate::{Error, Result};

/// How a domain's file is read and split.
#[derive(Clone, Debug, Default)]
pub struct DomainConfig {
    pub parse: ParseOptions,
    pub split: SplitConfig,
}

/// A domain's training and validation examples.
#[derive(Clone, Debug)]
pub struct DomainData {
    pub name: String,
    pub train: Vec<Example>,
    /// In the split's shuffled order: [`DomainData::eval_examples`] takes a prefix.
    pub val: Vec<Example>,
    /// What reading the file saw (all zero for in-memory data).
    pub counts: JsonlCounts,
}

impl DomainData {
    /// Reads `path` (JSONL, see [`super::parse_jsonl`]) and splits it. An empty file is an error.
    pub fn load(name: impl Into<String>, path: impl AsRef<Path>, cfg: &DomainConfig) -> Result<Self> {
        let path = path.as_ref();
        let data = read_jsonl(path, &cfg.parse)?;
        if data.examples.is_empty() {
            return Err(Error::Invalid { what: path.display().to_string(), msg: "the file holds no examples".into() });
        }
        let mut d = Self::from_examples(name, data.examples, &cfg.split)?;
        d.counts = data.counts;
        Ok(d)
    }

    /// Splits examples already in memory (tests, synthetic domains).
    ///
    /// ```
    /// use brainstacks_train::data::{DomainData, Example, SplitConfig};
    /// let ex: Vec<Example> = (0..10).map(|i| Example::new(format!("q{i}"), format!("a{i}"))).collect();
    /// let d = DomainData::from_examples("toy", ex, &SplitConfig::default()).unwrap();
    /// assert_eq!((d.train.len(), d.val.len()), (9, 1));
    /// ```
    pub fn from_examples(name: impl Into<String>, examples: Vec<Example>, split: &SplitConfig) -> Result<Self> {
        let (train, val) = split_train_val(&examples, split)?;
        Ok(Self { name: name.into(), train, val, counts: JsonlCounts::default() })
    }

    /// The training examples encoded in a seeded random order and packed into rows of `seq_len`
    /// tokens (the tail that does not fill a row is dropped). An error when not even one row
    /// can be filled.
    pub fn packed_train<E: TextEncoder + ?Sized>(&self, encoder: &E, seq_len: usize, seed: u64) -> Result<Vec<TokenRow>> {
        let order = shuffled_indices(self.train.len(), &mut Rng::new(seed))?;
        let encoded = order.iter().map(|&i| encode_example(encoder, &self.train[i])).collect::<Result<Vec<_>>>()?;
        let rows = pack(&encoded, seq_len, PackTail::Drop)?;
        if rows.is_empty() {
            let tokens: usize = encoded.iter().map(EncodedExample::len).sum();
            return Err(Error::Invalid {
                what: format!("domain {:?}", self.name),
                msg: format!("{tokens} training tokens do not fill one packed sequence of {seq_len}"),
            });
        }
        Ok(rows)
    }

    /// The fixed evaluation subset (the first `n` validation examples), encoded.
    pub fn eval_examples<E: TextEncoder + ?Sized>(&self, encoder: &E, n: usize) -> Result<Vec<EncodedExample>> {
        eval_subset(&self.val, n).iter().map(|e| encode_example(encoder, e)).collect()
    }
}
