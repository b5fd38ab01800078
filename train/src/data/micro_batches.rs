//! The seeded stream of training micro-batches over packed rows.

use brainstacks_tensor::{Device, Rng};

use super::batch::{Batch, LossMask, TokenRow};
use super::split::shuffled_indices;
use crate::{Error, Result};

/// An endless stream of micro-batches of `batch_size` packed rows. Each epoch visits the rows in
/// a fresh random order (one Philox stream seeded once, so epoch 2's order differs from epoch
/// 1's, and the same seed always replays the same sequence of batches). Rows left over at the
/// end of an epoch (fewer than `batch_size`) are skipped for that epoch, so every batch has the
/// same shape; the next epoch starts with a new shuffle of all rows.
///
/// ```
/// use brainstacks_tensor::Device;
/// use brainstacks_train::data::{encode_all, pack, ByteTokenizer, Example, LossMask, MicroBatches, PackTail};
/// let ex = encode_all(&ByteTokenizer, &vec![Example::new("add 1 and 2", "3"); 8]).unwrap();
/// let rows = pack(&ex, 32, PackTail::Drop).unwrap();
/// let mut batches = MicroBatches::new(rows, 2, LossMask::FullSequence, 42, Device::Cpu).unwrap();
/// let b = batches.next_batch().unwrap();
/// assert_eq!(b.ids.shape(), &[2, 32]);
/// assert_eq!(b.targets, 2 * 31);
/// ```
pub struct MicroBatches {
    rows: Vec<TokenRow>,
    batch_size: usize,
    mask: LossMask,
    device: Device,
    rng: Rng,
    order: Vec<usize>,
    cursor: usize,
    epoch: usize,
}

impl MicroBatches {
    /// `rows` must all have the same length (as [`super::pack`] makes them) and be at least
    /// `batch_size` many.
    pub fn new(rows: Vec<TokenRow>, batch_size: usize, mask: LossMask, seed: u64, device: Device) -> Result<Self> {
        if batch_size == 0 || rows.len() < batch_size {
            return Err(Error::Invalid {
                what: "MicroBatches".into(),
                msg: format!(
                    "need at least one full micro-batch: {} packed rows for batch size {batch_size} (more data or shorter sequences)",
                    rows.len()
                ),
            });
        }
        if let Some(b) = rows.iter().position(|r| r.ids.len() != rows[0].ids.len()) {
            return Err(Error::Invalid {
                what: "MicroBatches".into(),
                msg: format!("row {b} has {} tokens, row 0 has {}", rows[b].ids.len(), rows[0].ids.len()),
            });
        }
        let mut rng = Rng::new(seed);
        let order = shuffled_indices(rows.len(), &mut rng)?;
        Ok(Self { rows, batch_size, mask, device, rng, order, cursor: 0, epoch: 0 })
    }

    /// The next micro-batch, starting a new epoch (with a new shuffle) when the current one has
    /// no full batch left.
    pub fn next_batch(&mut self) -> Result<Batch> {
        if self.cursor + self.batch_size > self.rows.len() {
            self.order = shuffled_indices(self.rows.len(), &mut self.rng)?;
            self.cursor = 0;
            self.epoch += 1;
        }
        let picked: Vec<&TokenRow> = self.order[self.cursor..self.cursor + self.batch_size].iter().map(|&i| &self.rows[i]).collect();
        self.cursor += self.batch_size;
        Batch::from_rows(&picked, self.mask, &self.device)
    }

    /// 0-based epoch of the last batch returned (0 before the first).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Full micro-batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.rows.len() / self.batch_size
    }

    pub fn rows(&self) -> &[TokenRow] {
        &self.rows
    }

    /// Row indices of the current epoch, in visiting order.
    pub fn epoch_order(&self) -> &[usize] {
        &self.order
    }
}

impl Iterator for MicroBatches {
    type Item = Result<Batch>;

    /// Never ends; see [`MicroBatches::next_batch`].
    fn next(&mut self) -> Option<Result<Batch>> {
        Some(self.next_batch())
    }
}
