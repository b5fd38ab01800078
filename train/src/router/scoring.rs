//! The oracle's loss on the real model: one held-out example, response-only cross-entropy
//! (prompt and padding masked, at most `max_tokens` tokens), every candidate weight vector one row
//! of a single batched forward (per-row domain weights), in evaluation mode.

use std::collections::BTreeMap;

use brainstacks_autograd::no_grad;
use brainstacks_model::llama::LlamaModel;
use brainstacks_model::stacks::{FrozenSelection, StackSet};
use brainstacks_tensor::{Device, Tensor};

use super::oracle::SetLoss;
use crate::data::{EncodedExample, IGNORE_INDEX, LossMask, TokenRow};
use crate::{Error, Result};

/// Scores domain-weight vectors on one example.
pub struct ExampleLoss<'a> {
    model: &'a LlamaModel,
    stacks: &'a StackSet,
    domains: &'a [String],
    ids: Vec<i64>,
    labels: Vec<i64>,
}

impl<'a> ExampleLoss<'a> {
    /// `example` truncated to `max_tokens`; an error when no response token is left.
    pub fn new(
        model: &'a LlamaModel,
        stacks: &'a StackSet,
        domains: &'a [String],
        example: &EncodedExample,
        max_tokens: usize,
    ) -> Result<Self> {
        let n = example.len().min(max_tokens);
        let row = TokenRow { ids: example.ids[..n].to_vec(), is_response: example.is_response[..n].to_vec(), real_len: n };
        let labels = row.labels(LossMask::ResponseOnly);
        if labels.iter().all(|&l| l == IGNORE_INDEX) {
            return Err(Error::Invalid { what: "oracle".into(), msg: format!("no response token within the first {max_tokens} tokens") });
        }
        Ok(Self { model, stacks, domains, ids: row.ids.iter().map(|&t| i64::from(t)).collect(), labels })
    }
}

impl SetLoss for ExampleLoss<'_> {
    fn losses(&mut self, candidates: &[Vec<f64>]) -> Result<Vec<f64>> {
        let (rows, t) = (candidates.len(), self.ids.len());
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut per_row: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (di, name) in self.domains.iter().enumerate() {
            let w: Vec<f64> = candidates.iter().map(|c| c.get(di).copied().unwrap_or(0.0)).collect();
            if w.iter().any(|&v| v != 0.0) {
                per_row.insert(name.clone(), w);
            }
        }
        let ids = Tensor::from_vec(self.ids.repeat(rows), &[rows, t], &Device::Cpu)?;
        let labels = Tensor::from_vec(self.labels.clone(), &[t], &Device::Cpu)?.to_device(&self.model.device())?;
        let control = self.stacks.control();
        let previous = control.selection();
        control.set_selection(FrozenSelection::PerRow(per_row));
        control.set_eval();
        let logits = no_grad(|| self.model.forward(&ids, None));
        control.set_selection(previous);
        let logits = logits?;
        let v = logits.shape()[2];
        (0..rows)
            .map(|r| {
                let row = logits.tensor().narrow(0usize, r, 1)?.reshape(&[t, v])?;
                Ok(row.cross_entropy(&labels, Some(IGNORE_INDEX))?.to_scalar_f64()?)
            })
            .collect()
    }
}
