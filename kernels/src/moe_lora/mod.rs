//! MoE-LoRA expert dispatch (one Brainstacks stack at one projection) and its gate noise.
//!
//! # Math
//!
//! Per token `t` with input `x_t` (`d_in`), the gate selected `k` experts `idx[t, j]` with weights
//! `g[t, j]` (`j < k`; softmax over the kept noisy logits, so they sum to 1). Each expert `e` has
//! `A_e` (`r x d_in`) and `B_e` (`d_out x r`), and `s = alpha / sqrt(r)` (rsLoRA). The output is
//!
//! ```text
//! out_t = sum_j g[t, j] * s * B_{idx[t,j]} (A_{idx[t,j]} x_t)
//! ```
//!
//! Unselected experts contribute nothing and are never computed (the paper computes every expert
//! densely and multiplies the unselected ones by zero: the same result). Gradients, with
//! `dy_t = d loss / d out_t` and `mid_{t,j} = A_e x_t`:
//!
//! ```text
//! dg[t, j] = s * dy_t . (B_e mid_{t,j})
//! dB_e    += s * g[t, j] * dy_t mid_{t,j}^T
//! dA_e    += (s * g[t, j] * B_e^T dy_t) x_t^T
//! dx_t    += A_e^T (s * g[t, j] * B_e^T dy_t)
//! ```
//!
//! # Order (determinism)
//!
//! Tokens are grouped per expert by a stable counting sort ([`group_by_expert`]): expert `e`'s
//! tokens in increasing `(t, j)` order. Every sum is then taken in a fixed order: `out_t` and `dx_t`
//! add their experts' contributions in increasing expert order; `dA_e` and `dB_e` add their tokens in
//! increasing token order. No float atomics are needed on any device.
//!
//! # Gate noise
//!
//! Training-time noise `eps[t, e] ~ N(0, 1)` comes from the Philox normal stream (`philox` module)
//! with the key [`noise_seed`]`(seed, step, layer)`, element `t * E + e`, offset 0: the same numbers
//! on every device and thread count, and an independent stream for every (step, layer).

pub mod cpu;

/// The Philox key of the gate noise for training step `step` at wrapped projection `layer`: one
/// Philox block of the run's `seed` at counter `[step lo, step hi, layer, 0x4d6f45]`, so every
/// (step, layer) has its own stream.
pub fn noise_seed(seed: u64, step: u64, layer: u32) -> u64 {
    let key = [seed as u32, (seed >> 32) as u32];
    let w = crate::philox::cpu::philox4x32_10([step as u32, (step >> 32) as u32, layer, 0x004d_6f45], key);
    u64::from(w[0]) | (u64::from(w[1]) << 32)
}

/// Tokens grouped per expert: `slots[offsets[e]..offsets[e + 1]]` are the `(token, j)` pairs routed
/// to expert `e`, as flat indices `t * k + j`, increasing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertGroups {
    pub offsets: Vec<usize>,
    pub slots: Vec<usize>,
}

/// Stable counting sort of the routing table `idx` (`[T, k]`, row-major) by expert.
///
/// Errors: an index outside `0..experts`, or an expert chosen twice for one token.
pub fn group_by_expert(idx: &[i64], k: usize, experts: usize) -> Result<ExpertGroups, String> {
    if k == 0 || !idx.len().is_multiple_of(k) {
        return Err(format!("routing table of {} entries is not [T, k] with k = {k}", idx.len()));
    }
    let mut counts = vec![0usize; experts + 1];
    for (slot, &e) in idx.iter().enumerate() {
        if e < 0 || e as usize >= experts {
            return Err(format!("token {} routes to expert {e}, outside 0..{experts}", slot / k));
        }
        counts[e as usize + 1] += 1;
    }
    for row in idx.chunks_exact(k) {
        for (j, e) in row.iter().enumerate() {
            if row[..j].contains(e) {
                return Err(format!("a token routes to expert {e} twice"));
            }
        }
    }
    for e in 0..experts {
        counts[e + 1] += counts[e];
    }
    let offsets = counts.clone();
    let mut next = counts;
    let mut slots = vec![0usize; idx.len()];
    for (slot, &e) in idx.iter().enumerate() {
        slots[next[e as usize]] = slot;
        next[e as usize] += 1;
    }
    Ok(ExpertGroups { offsets, slots })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_is_stable_and_complete() {
        // T = 4, k = 2, E = 3.
        let idx = [2i64, 0, 0, 1, 2, 1, 0, 2];
        let g = group_by_expert(&idx, 2, 3).unwrap();
        assert_eq!(g.offsets, vec![0, 3, 5, 8]);
        assert_eq!(g.slots, vec![1, 2, 6, 3, 5, 0, 4, 7]);
        assert!(group_by_expert(&[0, 3], 2, 3).unwrap_err().contains("expert 3"));
        assert!(group_by_expert(&[1, 1], 2, 3).unwrap_err().contains("twice"));
        assert!(group_by_expert(&[0, 1, 2], 2, 3).is_err());
        let empty = group_by_expert(&[], 2, 3).unwrap();
        assert_eq!(empty.offsets, vec![0; 4]);
    }

    #[test]
    fn noise_streams_differ_per_step_and_layer() {
        let a = noise_seed(7, 0, 0);
        assert_eq!(a, noise_seed(7, 0, 0));
        assert_ne!(a, noise_seed(7, 1, 0));
        assert_ne!(a, noise_seed(7, 0, 1));
        assert_ne!(a, noise_seed(8, 0, 0));
        assert_ne!(noise_seed(7, 1 << 32, 0), noise_seed(7, 0, 0));
    }
}
