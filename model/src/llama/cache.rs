//! The key/value cache for incremental decoding.
//!
//! Per layer it holds the keys (after RoPE) and values of every position seen so far,
//! `[B, kv_heads, S, head_dim]`. A forward with a cache appends the new tokens' keys and values
//! and attends over all of them; the attention mask is aligned to the end of the keys, so the
//! new queries see every cached position and the causal part of their own block.
//!
//! A forward that fails halfway may leave some layers extended and others not: `clear` the
//! cache after an error. Positions are not limited to `max_position_embeddings` (RoPE has no
//! table to run out of); staying within it is the caller's choice.

use brainstacks_autograd::Var;

use crate::{Error, Result};

/// Keys and values of the positions already processed, for every layer.
#[derive(Debug, Default, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Var, Var)>>,
    len: usize,
    batch: Option<usize>,
}

fn invalid(msg: String) -> Error {
    Error::Config { layer: "KvCache".into(), msg }
}

impl KvCache {
    /// An empty cache (sized to the model on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Checks that the cache fits a forward of `batch` rows through `layers` layers and returns
    /// the position of the first new token.
    pub(crate) fn prepare(&self, layers: usize, batch: usize) -> Result<usize> {
        if self.len > 0 && self.layers.len() != layers {
            return Err(invalid(format!("the cache holds {} layers, the model has {layers}", self.layers.len())));
        }
        if let Some(b) = self.batch
            && b != batch
        {
            return Err(invalid(format!("the cache holds batch size {b}, the tokens have {batch}")));
        }
        Ok(self.len)
    }

    /// Appends `k`, `v` (`[B, Hkv, T, D]`) to layer `layer` and returns the full keys and values.
    pub(crate) fn append(&mut self, layer: usize, k: Var, v: Var) -> Result<(Var, Var)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        self.batch = Some(k.shape()[0]);
        let full = match self.layers[layer].take() {
            Some((pk, pv)) => (Var::cat(&[&pk, &k], 2usize)?, Var::cat(&[&pv, &v], 2usize)?),
            None => (k, v),
        };
        self.layers[layer] = Some(full.clone());
        Ok(full)
    }

    /// Records that `t` more positions are held (after every layer appended them).
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
