//! The loss the trainer minimises on a `data::Batch`, and the batch streams it pulls from.

use brainstacks_autograd::Var;
use brainstacks_model::llama::LlamaModel;

use crate::data::{Batch, IGNORE_INDEX, MicroBatches};
use crate::{Error, Result};

/// Mean cross-entropy over the counted predictions of `batch` (labels equal to
/// `IGNORE_INDEX` are left out).
pub fn batch_loss(model: &LlamaModel, batch: &Batch) -> Result<Var> {
    let logits = model.forward(&batch.ids, None)?;
    let &[b, t, v] = logits.shape() else {
        return Err(Error::Invalid { what: "batch_loss".into(), msg: format!("logits {:?} are not [B, T, V]", logits.shape()) });
    };
    let labels = batch.labels.reshape(&[b * t])?.to_device(&logits.tensor().device())?;
    Ok(logits.reshape(&[b * t, v])?.cross_entropy(&labels, Some(IGNORE_INDEX))?)
}

/// An endless source of training micro-batches.
pub trait BatchStream {
    fn next_batch(&mut self) -> Result<Batch>;
}

impl BatchStream for MicroBatches {
    fn next_batch(&mut self) -> Result<Batch> {
        MicroBatches::next_batch(self)
    }
}

/// Cycles over a fixed list of batches (tests, benchmarks).
pub struct Cycle {
    batches: Vec<Batch>,
    next: usize,
}

impl Cycle {
    pub fn new(batches: Vec<Batch>) -> Result<Self> {
        if batches.is_empty() {
            return Err(Error::Invalid { what: "Cycle".into(), msg: "no batches".into() });
        }
        Ok(Self { batches, next: 0 })
    }
}

impl BatchStream for Cycle {
    fn next_batch(&mut self) -> Result<Batch> {
        let b = self.batches[self.next % self.batches.len()].clone();
        self.next += 1;
        Ok(b)
    }
}
