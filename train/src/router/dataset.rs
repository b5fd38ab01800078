//! The router's training data (spec section 5.3), built from a finished run: per domain, label
//! prompts from its training examples (one-hot target by default, see [`LabelTargets`]; prompts
//! under 15 characters skipped) and the oracle's held-out examples (discovered targets); every
//! prompt turned into features by the frozen base with all stacks off. Features are computed once and kept: the base is frozen and
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

/// The target of a label prompt (a training example the oracle did not score).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelTargets {
    /// Its domain, one-hot (spec section 5.3).
    #[default]
    OneHot,
    /// The mean of the oracle's targets over its domain's scored examples: what the stacks did,
    /// on average, for held-out prompts of that domain. The spec scores a tenth of the prompts
    /// and trains the rest on one-hot labels, so a domain whose prompts gain from other domains'
    /// stacks teaches the router that only in its scored tenth; with this choice every prompt of
    /// the domain carries the finding, and the scored ones still carry their own. A domain with
    /// no scored example keeps its one-hot target.
    OracleMean,
}

/// Per domain, the target of its label prompts.
fn label_targets(domains: usize, oracle: &[DomainDiscovery], names: &[&str], how: LabelTargets) -> Vec<Vec<f64>> {
    (0..domains)
        .map(|di| {
            let mut one_hot = vec![0.0; domains];
            one_hot[di] = 1.0;
            let found = oracle.iter().find(|f| f.domain == names[di]).filter(|f| !f.discoveries.is_empty());
            match (how, found) {
                (LabelTargets::OracleMean, Some(f)) => {
                    let n = f.discoveries.len() as f64;
                    (0..domains).map(|d| f.discoveries.iter().map(|x| x.target[d]).sum::<f64>() / n).collect()
                }
                _ => one_hot,
            }
        })
        .collect()
}

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

/// Label samples (up to `per_domain` per domain, targets as `how` says) and every oracle
/// example, with features.
pub fn build_samples(
    rm: &RunModel,
    prepared: &[PreparedDomain],
    oracle: &[DomainDiscovery],
    per_domain: usize,
    how: LabelTargets,
    mut progress: impl FnMut(usize),
) -> Result<Vec<RouterSample>> {
    let n = prepared.len();
    let names: Vec<&str> = prepared.iter().map(|d| d.name.as_str()).collect();
    let targets = label_targets(n, oracle, &names, how);
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
            let target = targets[di].clone();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::oracle::Discovery;

    fn found(domain: &str, targets: &[&[f64]]) -> DomainDiscovery {
        let discoveries = targets
            .iter()
            .map(|t| Discovery {
                label: 0,
                base_loss: 1.0,
                single_losses: Vec::new(),
                chosen: Vec::new(),
                soft: None,
                best_loss: 1.0,
                discovered: t.to_vec(),
                target: t.to_vec(),
            })
            .collect();
        DomainDiscovery { domain: domain.into(), key: String::new(), prompts: Vec::new(), discoveries }
    }

    #[test]
    fn oracle_mean_labels_average_their_domains_targets_and_fall_back_to_one_hot() {
        let names = ["chat", "math", "medical"];
        let oracle = [found("medical", &[&[0.2, 1.0, 1.0], &[0.4, 0.0, 1.0]]), found("math", &[])];
        let mean = label_targets(3, &oracle, &names, LabelTargets::OracleMean);
        // chat was not scored, math has no scored example: one-hot; medical: the mean.
        assert_eq!(mean, vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0], vec![0.30000000000000004, 0.5, 1.0]]);
        let one_hot = label_targets(3, &oracle, &names, LabelTargets::OneHot);
        assert_eq!(one_hot[2], vec![0.0, 0.0, 1.0]);
    }
}
