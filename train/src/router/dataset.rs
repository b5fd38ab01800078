//! The router's training data (spec section 5.3), built from a finished run: per domain, label
//! prompts from its training examples (one-hot target, prompts under 15 characters skipped) and
//! the oracle's held-out examples (discovered targets); every prompt turned into features by the
//! frozen base with all stacks off. Features are computed once and kept: the base is frozen and
//! dropout lives in the router, so recomputing them every epoch (as the released code does)
//! would give the same numbers.

use brainstacks_tensor::Tensor;

use super::discovery::DomainDiscovery;
use super::features::{ROUTER_SEQ_LEN, router_features, router_text};
use super::routed::RunModel;
use crate::Result;
use crate::boost::prepare::PreparedDomain;

/// Prompts shorter than this are not used for the router (spec section 5.3).
pub const MIN_PROMPT_CHARS: usize = 15;

/// One router training example.
#[derive(Clone, Debug)]
pub struct RouterSample {
    /// `[T, hidden]` f32.
    pub features: Tensor,
    /// Per domain, in [0, 1].
    pub target: Vec<f64>,
    /// The example's domain (single-domain examples; all of ours are).
    pub domain: usize,
    /// Split key: the first 100 characters of the prompt, so a prompt never sits on both sides.
    pub group: String,
}

fn group_key(prompt: &str) -> String {
    prompt.chars().take(100).collect()
}

/// Label samples (up to `per_domain` per domain) and every oracle example, with features.
pub fn build_samples(
    rm: &RunModel,
    prepared: &[PreparedDomain],
    oracle: &[DomainDiscovery],
    per_domain: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<RouterSample>> {
    let n = prepared.len();
    let mut out = Vec::new();
    for (di, d) in prepared.iter().enumerate() {
        let mut taken = 0;
        for e in &d.train {
            if taken == per_domain {
                break;
            }
            let prompt = router_text(e);
            if prompt.chars().count() < MIN_PROMPT_CHARS {
                continue;
            }
            let mut target = vec![0.0; n];
            target[di] = 1.0;
            let features = router_features(&rm.model, &rm.stacks, rm.encoder.as_ref(), &prompt, ROUTER_SEQ_LEN)?;
            out.push(RouterSample { features, target, domain: di, group: group_key(&prompt) });
            taken += 1;
            progress(out.len());
        }
    }
    for found in oracle {
        let Some(di) = prepared.iter().position(|d| d.name == found.domain) else { continue };
        for (prompt, disc) in found.prompts.iter().zip(&found.discoveries) {
            if prompt.chars().count() < MIN_PROMPT_CHARS {
                continue;
            }
            let features = router_features(&rm.model, &rm.stacks, rm.encoder.as_ref(), prompt, ROUTER_SEQ_LEN)?;
            out.push(RouterSample { features, target: disc.target.clone(), domain: di, group: group_key(prompt) });
            progress(out.len());
        }
    }
    Ok(out)
}
