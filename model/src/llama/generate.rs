//! Autoregressive decoding with the KV cache: greedy or sampled (temperature, top-p), with a
//! repetition penalty, stopping at an EOS token or after `max_new_tokens`.
//!
//! The logits processing follows transformers' `generate` in its order: repetition penalty
//! over every token seen so far (prompt included; a positive logit is divided by the penalty, a
//! negative one multiplied), then temperature, then top-p (the smallest set of most likely
//! tokens whose probability reaches `top_p`, at least one). Greedy picks the first maximal
//! logit, as `torch.argmax` does. Sampling draws one uniform number per token from a Philox
//! `Rng` seeded with `seed`, so a seed reproduces a generation exactly on any machine.

use std::cmp::Ordering;

use brainstacks_autograd::no_grad;
use brainstacks_tensor::{DType, Device, Rng, Tensor};

use super::cache::KvCache;
use super::model::LlamaModel;
use crate::{Error, Result};

/// How to decode.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy; otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Nucleus sampling threshold in (0, 1]; 1 keeps every token. Ignored when greedy.
    pub top_p: f64,
    /// 1 is off; the method decodes with 1.2.
    pub repetition_penalty: f64,
    pub seed: u64,
    /// Generation stops after emitting one of these; `None` takes the config's `eos_token_id`.
    pub eos_token_ids: Option<Vec<u32>>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_new_tokens: 256, temperature: 0.0, top_p: 1.0, repetition_penalty: 1.0, seed: 0, eos_token_ids: None }
    }
}

/// Why decoding stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An EOS token was generated (it is the last of the new ids).
    Eos,
    MaxTokens,
    /// The token callback asked to stop.
    Callback,
}

/// The new tokens (the prompt not included) and why decoding stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    pub ids: Vec<u32>,
    pub stop: StopReason,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Config { layer: "generate".into(), msg: msg.into() }
}

impl GenerateOptions {
    fn check(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(invalid(format!("temperature {} must be finite and >= 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid(format!("top_p {} must be in (0, 1]", self.top_p)));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(invalid(format!("repetition_penalty {} must be finite and positive", self.repetition_penalty)));
        }
        Ok(())
    }
}

/// Applies the repetition penalty to `logits` for every distinct id in `seen`.
pub fn apply_repetition_penalty(logits: &mut [f64], seen: &[u32], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &id in seen {
        let i = id as usize;
        if i < logits.len() && !done[i] {
            done[i] = true;
            logits[i] = if logits[i] < 0.0 { logits[i] * penalty } else { logits[i] / penalty };
        }
    }
}

/// The index of the first maximum (NaN never wins).
pub fn argmax(logits: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Samples from `softmax(logits / temperature)` restricted to the top-p nucleus, with `u` a
/// uniform number in [0, 1).
pub fn sample(logits: &[f64], temperature: f64, top_p: f64, u: f64) -> usize {
    let scaled: Vec<f64> = logits.iter().map(|x| x / temperature).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let probs: Vec<f64> = scaled.iter().map(|x| (x - max).exp()).collect();
    let total: f64 = probs.iter().sum();
    // Most likely first; ties by id so the order is fixed.
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].partial_cmp(&probs[a]).unwrap_or(Ordering::Equal).then(a.cmp(&b)));
    let mut kept = 0;
    let mut mass = 0.0;
    for &i in &order {
        kept += 1;
        mass += probs[i];
        if mass >= top_p * total {
            break;
        }
    }
    let nucleus = &order[..kept];
    let target = u * mass;
    let mut acc = 0.0;
    for &i in nucleus {
        acc += probs[i];
        if acc > target {
            return i;
        }
    }
    nucleus[kept - 1]
}

impl LlamaModel {
    /// Generates up to `opts.max_new_tokens` tokens after `prompt` (batch 1), calling
    /// `on_token` with each new id as soon as it is chosen; `on_token` returning false stops.
    ///
    /// The prompt must fit the vocabulary; positions are not capped at
    /// `max_position_embeddings` (keep `prompt.len() + max_new_tokens` within it for the
    /// model's trained range).
    pub fn generate(&self, prompt: &[u32], opts: &GenerateOptions, mut on_token: impl FnMut(u32) -> bool) -> Result<Generation> {
        opts.check()?;
        let vocab = self.config.vocab_size;
        if prompt.is_empty() {
            return Err(invalid("the prompt is empty (a Llama prompt starts with at least BOS)"));
        }
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(invalid(format!("prompt token {bad} is outside the vocabulary of {vocab}")));
        }
        let eos = opts.eos_token_ids.clone().unwrap_or_else(|| self.config.eos_token_ids.clone());
        let mut rng = Rng::new(opts.seed);
        let mut cache = KvCache::new();
        let mut seen: Vec<u32> = prompt.to_vec();
        let mut new = Vec::new();
        let mut input: Vec<i64> = prompt.iter().map(|&x| x as i64).collect();
        no_grad(|| -> Result<StopReason> {
            while new.len() < opts.max_new_tokens {
                let t = input.len();
                let ids = Tensor::from_vec(std::mem::take(&mut input), &[1, t], &Device::Cpu)?;
                // Only the last position's logits choose the next token, so the head runs on that
                // row alone: over a whole prompt it would be a large share of the prefill (a
                // 32000-word head is 40% of the products of a width-512, 8-layer model). With the
                // CPU's f32 kernels a row alone gets the same bits as inside the full product
                // (see `brainstacks_tensor::cpu::gemm`), so the chosen tokens do not change.
                let hidden = self.forward_hidden(&ids, Some(&mut cache))?;
                let logits = self.lm_head.forward_with(&hidden.narrow(1usize, t - 1, 1)?, self.base_matmul)?;
                let mut last = logits.tensor().to_vec_f64()?;
                apply_repetition_penalty(&mut last, &seen, opts.repetition_penalty);
                let next = if opts.temperature == 0.0 {
                    argmax(&last)
                } else {
                    let u = Tensor::rand_uniform(&mut rng, 0.0, 1.0, &[1], DType::F64, &Device::Cpu)?.to_vec_f64()?[0];
                    sample(&last, opts.temperature, opts.top_p, u)
                } as u32;
                new.push(next);
                seen.push(next);
                let keep_going = on_token(next);
                if eos.contains(&next) {
                    return Ok(StopReason::Eos);
                }
                if !keep_going {
                    return Ok(StopReason::Callback);
                }
                input.push(next as i64);
            }
            Ok(StopReason::MaxTokens)
        })
        .map(|stop| Generation { ids: new, stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_once() {
        let mut l = vec![2.0, -1.0, 0.5];
        apply_repetition_penalty(&mut l, &[0, 1, 0, 7], 2.0);
        assert_eq!(l, vec![1.0, -2.0, 0.5]);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps the first two.
        let logits = [3.0f64, 2.0, 1.0, 0.0].map(|x: f64| x * 1.0);
        let picks: std::collections::BTreeSet<usize> = (0..200).map(|i| sample(&logits, 1.0, 0.8, i as f64 / 200.0)).collect();
        assert_eq!(picks, [0, 1].into_iter().collect());
        // top_p 1 can reach every token; u just below 1 lands on the least likely.
        assert_eq!(sample(&logits, 1.0, 1.0, 0.999_999), 3);
        assert_eq!(sample(&logits, 1.0, 1.0, 0.0), 0);
        // A tiny top_p is greedy.
        assert_eq!(sample(&logits, 1.0, 1e-9, 0.99), 0);
    }
}
