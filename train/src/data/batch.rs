//! Token batches for the model: packed training sequences and padded evaluation batches,
//! with next-token labels.
//!
//! Labels convention: `labels[b, t]` is the token position `t` must predict (`ids[b, t + 1]`),
//! or [`IGNORE_INDEX`] when that prediction is not in the loss. The loss is
//! `logits.reshape([B*T, V]).cross_entropy(labels.reshape([B*T]), Some(IGNORE_INDEX))`, the mean
//! over the counted predictions. The last position of a row never has a target.

use brainstacks_tensor::{Device, Tensor};

use super::encode::EncodedExample;
use crate::{Error, Result};

/// The label of a prediction that is not in the loss (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Which next-token predictions count in the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LossMask {
    /// Every prediction of a real (non-pad) token, prompt included: the method's SFT loss
    /// (spec §8, §10 #13). In packed rows this includes predicting the next example's first
    /// token from the previous one's EOS, as a packed causal-LM loss does.
    #[default]
    FullSequence,
    /// Only predictions of response tokens and EOS (the oracle's loss, §10 #13).
    ResponseOnly,
}

/// One row of a batch before it becomes tensors: ids, the response flags, and how many of the
/// ids are real (the rest, at the end, are padding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub ids: Vec<u32>,
    pub is_response: Vec<bool>,
    /// Tokens before the padding; `ids[real_len..]` are pads and never targets.
    pub real_len: usize,
}

impl TokenRow {
    /// The labels of this row under `mask` (see the module docs).
    pub fn labels(&self, mask: LossMask) -> Vec<i64> {
        (0..self.ids.len())
            .map(|t| {
                let next = t + 1;
                let counted = next < self.real_len && (mask == LossMask::FullSequence || self.is_response[next]);
                if counted { i64::from(self.ids[next]) } else { IGNORE_INDEX }
            })
            .collect()
    }
}

/// What happens to the tokens after the last full packed sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PackTail {
    /// Dropped, as a constant-length packing dataset does (the default).
    #[default]
    Drop,
    /// Kept as one last row, right-padded with `pad_id`; pads are never targets.
    Pad { pad_id: u32 },
}

/// Concatenates the examples, in the given order, into one token stream and cuts it into rows of
/// `seq_len` tokens. Examples run across row boundaries, and rows attend across example
/// boundaries (plain causal packing, as the method's SFT does). Shuffle the examples first
/// (e.g. with [`super::shuffled_indices`]) for a random packing.
///
/// ```
/// use brainstacks_train::data::{encode_all, pack, ByteTokenizer, Example, PackTail};
/// let ex = encode_all(&ByteTokenizer, &[Example::new("a", "b"), Example::new("c", "d")]).unwrap();
/// let total = ex[0].len() + ex[1].len();
/// let rows = pack(&ex, 16, PackTail::Drop).unwrap();
/// assert_eq!(rows.len(), total / 16);
/// let rows = pack(&ex, 16, PackTail::Pad { pad_id: ByteTokenizer::EOS }).unwrap();
/// assert_eq!(rows.len(), total.div_ceil(16));
/// assert_eq!(rows.last().unwrap().real_len, total - 16 * (rows.len() - 1));
/// ```
pub fn pack(examples: &[EncodedExample], seq_len: usize, tail: PackTail) -> Result<Vec<TokenRow>> {
    if seq_len < 2 {
        return Err(Error::Invalid { what: "pack".into(), msg: format!("seq_len must be at least 2, got {seq_len}") });
    }
    let total: usize = examples.iter().map(|e| e.len()).sum();
    let mut rows = Vec::with_capacity(total / seq_len + 1);
    let (mut ids, mut resp) = (Vec::with_capacity(seq_len), Vec::with_capacity(seq_len));
    for e in examples {
        for (&id, &r) in e.ids.iter().zip(&e.is_response) {
            ids.push(id);
            resp.push(r);
            if ids.len() == seq_len {
                rows.push(TokenRow { ids: std::mem::take(&mut ids), is_response: std::mem::take(&mut resp), real_len: seq_len });
            }
        }
    }
    if let (PackTail::Pad { pad_id }, false) = (tail, ids.is_empty()) {
        let real_len = ids.len();
        ids.resize(seq_len, pad_id);
        resp.resize(seq_len, false);
        rows.push(TokenRow { ids, is_response: resp, real_len });
    }
    Ok(rows)
}

/// A batch as the model takes it: `ids` and `labels` are `[B, T]` i64 on one device.
#[derive(Clone, Debug)]
pub struct Batch {
    pub ids: Tensor,
    pub labels: Tensor,
    /// Labels that are not [`IGNORE_INDEX`]: the denominator of the batch's mean loss, and the
    /// weight of this batch in a token-weighted mean (see [`LossMeter`]).
    pub targets: usize,
}

impl Batch {
    /// Stacks equal-length rows into a batch on `device`.
    pub fn from_rows(rows: &[&TokenRow], mask: LossMask, device: &Device) -> Result<Batch> {
        let Some(first) = rows.first() else {
            return Err(Error::Invalid { what: "Batch::from_rows".into(), msg: "no rows".into() });
        };
        let t = first.ids.len();
        let mut ids = Vec::with_capacity(rows.len() * t);
        let mut labels = Vec::with_capacity(rows.len() * t);
        for (b, row) in rows.iter().enumerate() {
            if row.ids.len() != t || row.is_response.len() != t || row.real_len > t {
                return Err(Error::Invalid {
                    what: "Batch::from_rows".into(),
                    msg: format!(
                        "row {b} has {} ids, {} flags, real_len {}; row 0 has {t} ids",
                        row.ids.len(),
                        row.is_response.len(),
                        row.real_len
                    ),
                });
            }
            ids.extend(row.ids.iter().map(|&i| i64::from(i)));
            labels.extend(row.labels(mask));
        }
        let targets = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
        let shape = [rows.len(), t];
        Ok(Batch {
            ids: Tensor::from_vec(ids, &shape, &Device::Cpu)?.to_device(device)?,
            labels: Tensor::from_vec(labels, &shape, &Device::Cpu)?.to_device(device)?,
            targets,
        })
    }

    /// Rows in the batch.
    pub fn batch_size(&self) -> usize {
        self.ids.shape()[0]
    }

    /// Positions per row.
    pub fn seq_len(&self) -> usize {
        self.ids.shape()[1]
    }
}

/// Unpacked evaluation batches (spec §10 #12): each example alone in its row, cut to its first
/// `max_len` tokens, right-padded with `pad_id` (EOS in the method) to the longest row of its
/// batch; pads are never targets. Batches take the examples in order, `batch_size` at a time
/// (the last may be smaller). The mean over batches weighted by [`Batch::targets`] is the
/// token-weighted mean loss over all non-pad predictions ([`LossMeter`]).
///
/// ```
/// use brainstacks_tensor::Device;
/// use brainstacks_train::data::{encode_all, eval_batches, ByteTokenizer, Example, LossMask};
/// let ex = encode_all(&ByteTokenizer, &[Example::new("a", "b"), Example::new("a", "bcd")]).unwrap();
/// let b = eval_batches(&ex, 4, 512, LossMask::FullSequence, ByteTokenizer::EOS, &Device::Cpu).unwrap();
/// assert_eq!(b.len(), 1);
/// assert_eq!(b[0].ids.shape(), &[2, ex[1].len()]);
/// assert_eq!(b[0].targets, ex[0].len() - 1 + ex[1].len() - 1);
/// ```
pub fn eval_batches(
    examples: &[EncodedExample],
    batch_size: usize,
    max_len: usize,
    mask: LossMask,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<Batch>> {
    if batch_size == 0 || max_len < 2 {
        return Err(Error::Invalid {
            what: "eval_batches".into(),
            msg: format!("batch_size must be >= 1 and max_len >= 2, got {batch_size} and {max_len}"),
        });
    }
    examples
        .chunks(batch_size)
        .map(|chunk| {
            let width = chunk.iter().map(|e| e.len().min(max_len)).max().unwrap_or(0);
            let rows: Vec<TokenRow> = chunk
                .iter()
                .map(|e| {
                    let real_len = e.len().min(max_len);
                    let mut ids = e.ids[..real_len].to_vec();
                    let mut is_response = e.is_response[..real_len].to_vec();
                    ids.resize(width, pad_id);
                    is_response.resize(width, false);
                    TokenRow { ids, is_response, real_len }
                })
                .collect();
            Batch::from_rows(&rows.iter().collect::<Vec<_>>(), mask, device)
        })
        .collect()
}

/// A token-weighted mean of per-batch mean losses: `sum(loss_b * targets_b) / sum(targets_b)`,
/// accumulated in f64. Batches with no targets add nothing.
///
/// ```
/// use brainstacks_train::data::LossMeter;
/// let mut m = LossMeter::default();
/// m.add(2.0, 1);
/// m.add(1.0, 3);
/// assert_eq!(m.mean(), Some(1.25));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossMeter {
    pub weighted_sum: f64,
    pub targets: usize,
}

impl LossMeter {
    pub fn add(&mut self, batch_mean_loss: f64, targets: usize) {
        if targets > 0 {
            self.weighted_sum += batch_mean_loss * targets as f64;
            self.targets += targets;
        }
    }
    /// `None` before any target was counted.
    pub fn mean(&self) -> Option<f64> {
        (self.targets > 0).then(|| self.weighted_sum / self.targets as f64)
    }
}
