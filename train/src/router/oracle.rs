//! Outcome discovery, "the oracle" (method spec section 5.4): for one held-out example, which set
//! of domains' stacks gives the lowest response-only loss? The answer becomes the router's target.
//!
//! The search, for `D` domains:
//! 1. the base-only loss `b` (every stack off);
//! 2. each domain alone (with the chat floor): the best single becomes the current set if it beats
//!    `b` (no acceptance threshold at this step);
//! 3. greedy growth: try adding every remaining domain; accept an addition that lowers the loss by
//!    more than `accept` (the best such addition by default, the first in domain order with
//!    [`Search::First`], the released code's rule), until none is accepted. [`Search::Exhaustive`]
//!    replaces steps 2 and 3 by scoring every set at once (see [`Search`]);
//! 4. the soft boost: if the reasoning domain is not in the set and adding it lowers the loss at
//!    all, it joins with target 0.5;
//! 5. target = 1 for the set (0.5 soft), chat at least the floor, then
//!    `clamp(0.8 * discovered + 0.2 * label_prior, 0, 1)`.
//!
//! Every weight vector is sent through [`OracleConfig::weights`] (chat floor except base-only,
//! gate threshold) before it is scored. Candidates of one stage are scored together, so a
//! [`SetLoss`] can evaluate them in one batched forward.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the oracle looks for the best set of domains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Search {
    /// Greedy growth taking the addition with the lowest loss (spec section 10 item 27: cleaner).
    Best,
    /// Greedy growth taking the first addition in domain order (the released code).
    First,
    /// Every one of the `2^D - 1` non-empty sets, scored in one batch. Greedy growth only adds a
    /// domain that helps on its own, so it misses a set whose members help only together (a
    /// domain whose stacks were trained on top of all earlier domains' stacks is such a case).
    /// Walking set sizes upwards from base-only, the lowest-loss set of each size replaces the
    /// current one when it beats it (a single domain: at all, as in step 2; larger sets: by more
    /// than `accept`, the bar greedy growth uses), so a larger set is chosen only for a real gain.
    /// Costs `2^D` forwards per example: meant for small `D` (at most [`MAX_EXHAUSTIVE_DOMAINS`]).
    Exhaustive,
}

/// The most domains [`Search::Exhaustive`] accepts (`2^10` sets per example).
pub const MAX_EXHAUSTIVE_DOMAINS: usize = 10;

/// The oracle's constants (spec sections 5.4 and 6).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OracleConfig {
    /// Index of the chat domain (the floor applies to it), if the run has one.
    pub chat: Option<usize>,
    pub chat_floor: f64,
    /// Weights at or below this are 0 (strict `>` keeps a domain on).
    pub gate: f64,
    /// Minimum loss drop to accept an addition in greedy growth (or a larger set in the
    /// exhaustive search).
    pub accept: f64,
    /// Index of the reasoning domain (soft boost), if any.
    pub reasoning: Option<usize>,
    pub soft_weight: f64,
    /// Share of the discovered target in the final blend (the label prior gets the rest).
    pub discovered_share: f64,
    pub search: Search,
}

impl Default for OracleConfig {
    fn default() -> Self {
        Self {
            chat: None,
            chat_floor: 0.2,
            gate: 0.12,
            accept: 0.01,
            reasoning: None,
            soft_weight: 0.5,
            discovered_share: 0.8,
            search: Search::Best,
        }
    }
}

impl OracleConfig {
    /// The weight vector for domain set `set` (weight 1 each, `soft` at `soft_weight`), with the
    /// chat floor (unless the set is empty: base-only) and the gate threshold applied.
    pub fn weights(&self, domains: usize, set: &[usize], soft: Option<usize>) -> Vec<f64> {
        let mut w = vec![0.0f64; domains];
        for &d in set {
            w[d] = 1.0;
        }
        if let Some(s) = soft {
            w[s] = w[s].max(self.soft_weight);
        }
        if let Some(c) = self.chat.filter(|_| !set.is_empty() || soft.is_some()) {
            w[c] = w[c].max(self.chat_floor);
        }
        for v in &mut w {
            if *v <= self.gate {
                *v = 0.0;
            }
        }
        w
    }
}

/// Scores weight vectors: one loss per candidate, in order.
pub trait SetLoss {
    fn losses(&mut self, candidates: &[Vec<f64>]) -> Result<Vec<f64>>;
}

/// What the search found for one example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    /// The example's own domain (its label).
    pub label: usize,
    pub base_loss: f64,
    /// Each domain alone (with the floor).
    pub single_losses: Vec<f64>,
    /// The chosen set, in the order domains were accepted.
    pub chosen: Vec<usize>,
    /// The softly added reasoning domain.
    pub soft: Option<usize>,
    /// The loss of the chosen set (or `base_loss` when empty).
    pub best_loss: f64,
    /// 1 per chosen domain, `soft_weight` for a soft one, chat at least the floor.
    pub discovered: Vec<f64>,
    /// `clamp(share * discovered + (1 - share) * one_hot(label), 0, 1)`.
    pub target: Vec<f64>,
}

impl Discovery {
    /// Whether the best set leaves out the example's own domain (the "medical is better served by
    /// chat + math" finding).
    pub fn excludes_own_domain(&self) -> bool {
        !self.chosen.contains(&self.label)
    }
}

fn one(losses: Vec<f64>, what: &str) -> Result<f64> {
    match losses.as_slice() {
        [l] => Ok(*l),
        _ => Err(Error::Invalid { what: "oracle".into(), msg: format!("{what}: expected 1 loss, got {}", losses.len()) }),
    }
}

/// What a search found before the soft boost and the targets.
struct Found {
    base_loss: f64,
    single_losses: Vec<f64>,
    chosen: Vec<usize>,
    best: f64,
    /// The loss of `chosen` plus each domain, where the search scored it (the soft boost reuses it).
    with_added: Vec<Option<f64>>,
}

fn scored(scorer: &mut dyn SetLoss, candidates: &[Vec<f64>]) -> Result<Vec<f64>> {
    let scores = scorer.losses(candidates)?;
    if scores.len() != candidates.len() {
        return Err(Error::Invalid { what: "oracle".into(), msg: format!("{} losses for {} candidates", scores.len(), candidates.len()) });
    }
    Ok(scores)
}

/// Steps 1 to 3 of the spec: base, singles, then greedy growth (best or first improvement).
fn search_greedy(scorer: &mut dyn SetLoss, domains: usize, cfg: &OracleConfig) -> Result<Found> {
    // Base-only and every single domain, in one batch.
    let mut first: Vec<Vec<f64>> = vec![vec![0.0; domains]];
    first.extend((0..domains).map(|d| cfg.weights(domains, &[d], None)));
    let scores = scored(scorer, &first)?;
    let (base_loss, single_losses) = (scores[0], scores[1..].to_vec());
    let mut chosen = Vec::new();
    let mut best = base_loss;
    let (arg, &lowest) = single_losses.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).expect("domains >= 1");
    if lowest < base_loss {
        chosen.push(arg);
        best = lowest;
    }
    let mut with_added: Vec<Option<f64>> = vec![None; domains];
    loop {
        let remaining: Vec<usize> = (0..domains).filter(|d| !chosen.contains(d)).collect();
        if remaining.is_empty() || chosen.is_empty() {
            break;
        }
        let candidates: Vec<Vec<f64>> = remaining
            .iter()
            .map(|&r| {
                let mut set = chosen.clone();
                set.push(r);
                cfg.weights(domains, &set, None)
            })
            .collect();
        let scores = scored(scorer, &candidates)?;
        for (&r, &l) in remaining.iter().zip(&scores) {
            with_added[r] = Some(l);
        }
        let improving = remaining.iter().zip(&scores).filter(|(_, l)| best - **l > cfg.accept);
        let pick = match cfg.search {
            Search::First => improving.map(|(&r, &l)| (r, l)).next(),
            _ => improving.map(|(&r, &l)| (r, l)).min_by(|a, b| a.1.total_cmp(&b.1)),
        };
        match pick {
            Some((r, l)) => {
                chosen.push(r);
                best = l;
            }
            None => break,
        }
    }
    Ok(Found { base_loss, single_losses, chosen, best, with_added })
}

/// [`Search::Exhaustive`]: every non-empty set in one batch, then the size walk its doc describes.
fn search_exhaustive(scorer: &mut dyn SetLoss, domains: usize, cfg: &OracleConfig) -> Result<Found> {
    if domains > MAX_EXHAUSTIVE_DOMAINS {
        return Err(Error::Invalid {
            what: "oracle".into(),
            msg: format!(
                "the exhaustive search scores 2^D sets; {domains} domains is more than {MAX_EXHAUSTIVE_DOMAINS}, use a greedy search"
            ),
        });
    }
    let set_of = |mask: usize| (0..domains).filter(|d| mask >> d & 1 == 1).collect::<Vec<usize>>();
    // Candidate `mask` is the set with those bits; mask 0 is base-only.
    let candidates: Vec<Vec<f64>> =
        (0..1usize << domains).map(|mask| if mask == 0 { vec![0.0; domains] } else { cfg.weights(domains, &set_of(mask), None) }).collect();
    let loss = scored(scorer, &candidates)?;
    let base_loss = loss[0];
    let single_losses: Vec<f64> = (0..domains).map(|d| loss[1 << d]).collect();
    let (mut chosen_mask, mut best) = (0usize, base_loss);
    for size in 1..=domains {
        let bar = if size == 1 { 0.0 } else { cfg.accept };
        let lowest = (1..1usize << domains)
            .filter(|m| m.count_ones() as usize == size)
            .min_by(|a, b| loss[*a].total_cmp(&loss[*b]).then(a.cmp(b)))
            .expect("a set of every size up to D");
        if best - loss[lowest] > bar {
            chosen_mask = lowest;
            best = loss[lowest];
        }
    }
    let with_added = (0..domains).map(|d| (chosen_mask >> d & 1 == 0).then(|| loss[chosen_mask | 1 << d])).collect();
    Ok(Found { base_loss, single_losses, chosen: set_of(chosen_mask), best, with_added })
}

/// Runs the search for one example of domain `label` among `domains` domains.
pub fn discover(scorer: &mut dyn SetLoss, domains: usize, label: usize, cfg: &OracleConfig) -> Result<Discovery> {
    if label >= domains || domains == 0 {
        return Err(Error::Invalid { what: "oracle".into(), msg: format!("label {label} out of {domains} domains") });
    }
    let Found { base_loss, single_losses, chosen, best, with_added } = match cfg.search {
        Search::Best | Search::First => search_greedy(scorer, domains, cfg)?,
        Search::Exhaustive => search_exhaustive(scorer, domains, cfg)?,
    };
    let mut soft = None;
    if let Some(rsn) = cfg.reasoning.filter(|r| !chosen.contains(r) && *r < domains) {
        let with = match with_added[rsn] {
            Some(l) => l,
            None => {
                let mut set = chosen.clone();
                set.push(rsn);
                one(scorer.losses(&[cfg.weights(domains, &set, None)])?, "soft boost")?
            }
        };
        if with < best {
            soft = Some(rsn);
        }
    }
    let mut discovered = vec![0.0f64; domains];
    for &d in &chosen {
        discovered[d] = 1.0;
    }
    if let Some(s) = soft {
        discovered[s] = cfg.soft_weight;
    }
    if let Some(c) = cfg.chat.filter(|&c| c < domains) {
        discovered[c] = discovered[c].max(cfg.chat_floor);
    }
    let share = cfg.discovered_share;
    let target =
        (0..domains).map(|d| (share * discovered[d] + (1.0 - share) * if d == label { 1.0 } else { 0.0 }).clamp(0.0, 1.0)).collect();
    Ok(Discovery { label, base_loss, single_losses, chosen, soft, best_loss: best, discovered, target })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A toy loss table keyed by the (rounded) weight vector.
    struct Table {
        table: BTreeMap<Vec<i64>, f64>,
        default: f64,
        calls: usize,
    }

    impl Table {
        fn key(w: &[f64]) -> Vec<i64> {
            w.iter().map(|v| (v * 100.0).round() as i64).collect()
        }
        fn new(entries: &[(&[f64], f64)], default: f64) -> Self {
            Self { table: entries.iter().map(|(w, l)| (Self::key(w), *l)).collect(), default, calls: 0 }
        }
    }

    impl SetLoss for Table {
        fn losses(&mut self, candidates: &[Vec<f64>]) -> Result<Vec<f64>> {
            self.calls += 1;
            Ok(candidates.iter().map(|w| *self.table.get(&Self::key(w)).unwrap_or(&self.default)).collect())
        }
    }

    /// Domains: 0 chat, 1 code, 2 math, 3 medical, 4 reasoning. A medical example is best served by
    /// chat (floor) + math + code, not by its own stacks; reasoning helps a little.
    #[test]
    fn finds_the_known_optimum_of_a_toy_table() -> Result<()> {
        let cfg = OracleConfig { chat: Some(0), reasoning: Some(4), ..Default::default() };
        let mut t = Table::new(
            &[
                (&[0.0, 0.0, 0.0, 0.0, 0.0], 3.0),
                (&[1.0, 0.0, 0.0, 0.0, 0.0], 2.9),
                (&[0.2, 1.0, 0.0, 0.0, 0.0], 2.8),
                (&[0.2, 0.0, 1.0, 0.0, 0.0], 2.5),
                (&[0.2, 0.0, 0.0, 1.0, 0.0], 2.6),
                (&[0.2, 0.0, 0.0, 0.0, 1.0], 2.95),
                (&[0.2, 1.0, 1.0, 0.0, 0.0], 2.3),
                (&[1.0, 0.0, 1.0, 0.0, 0.0], 2.45),
                (&[0.2, 0.0, 1.0, 1.0, 0.0], 2.48),
                (&[0.2, 0.0, 1.0, 0.0, 1.0], 2.49),
                (&[0.2, 1.0, 1.0, 1.0, 0.0], 2.295), // gains 0.005 < 0.01: rejected
                (&[1.0, 1.0, 1.0, 0.0, 0.0], 2.31),
                (&[0.2, 1.0, 1.0, 0.0, 1.0], 2.299), // lower at all: soft reasoning
            ],
            9.0,
        );
        let d = discover(&mut t, 5, 3, &cfg)?;
        assert_eq!(d.chosen, vec![2, 1]);
        assert_eq!(d.soft, Some(4));
        assert_eq!((d.base_loss, d.best_loss), (3.0, 2.3));
        assert!(d.excludes_own_domain());
        assert_eq!(d.discovered, vec![0.2, 1.0, 1.0, 0.0, 0.5]);
        let expect = [0.16, 0.8, 0.8, 0.2, 0.4];
        for (g, e) in d.target.iter().zip(expect) {
            assert!((g - e).abs() < 1e-12, "{:?}", d.target);
        }
        // Base, singles; two growth stages (accept math+code, then nothing): three batched calls.
        assert_eq!(t.calls, 3);
        Ok(())
    }

    #[test]
    fn first_improvement_takes_domain_order_and_base_can_win() -> Result<()> {
        let mut t = Table::new(&[(&[0.0, 0.0, 0.0], 2.0), (&[1.0, 0.0, 0.0], 1.9), (&[1.0, 1.0, 0.0], 1.85), (&[1.0, 0.0, 1.0], 1.6)], 5.0);
        let best = discover(&mut t, 3, 0, &OracleConfig::default())?;
        assert_eq!(best.chosen, vec![0, 2]);
        let first = discover(&mut t, 3, 0, &OracleConfig { search: Search::First, ..Default::default() })?;
        assert_eq!(first.chosen[..2], [0, 1]);
        // Nothing beats base-only: empty set, target is the label prior alone (no chat domain).
        let mut flat = Table::new(&[(&[0.0, 0.0], 1.0)], 1.5);
        let d = discover(&mut flat, 2, 1, &OracleConfig::default())?;
        assert!(d.chosen.is_empty() && d.soft.is_none());
        assert!(d.target[0] == 0.0 && (d.target[1] - 0.2).abs() < 1e-15, "{:?}", d.target);
        Ok(())
    }

    /// Domains: 0 chat, 1 code, 2 math, 3 medical. Medical's own stacks help; code and math help
    /// it only together (each alone hurts), the way a last domain's stacks trained on top of every
    /// earlier stack behave. Greedy growth stops at medical; the exhaustive search finds the triple.
    #[test]
    fn exhaustive_search_finds_sets_that_help_only_together() -> Result<()> {
        let entries: &[(&[f64], f64)] = &[
            (&[0.0, 0.0, 0.0, 0.0], 1.0),
            (&[1.0, 0.0, 0.0, 0.0], 0.99),
            (&[0.2, 1.0, 0.0, 0.0], 1.02),
            (&[0.2, 0.0, 1.0, 0.0], 1.01),
            (&[0.2, 0.0, 0.0, 1.0], 0.90),
            (&[1.0, 0.0, 0.0, 1.0], 0.92),
            (&[0.2, 1.0, 0.0, 1.0], 0.91),
            (&[0.2, 0.0, 1.0, 1.0], 0.905),
            (&[0.2, 1.0, 1.0, 1.0], 0.86),
            (&[1.0, 1.0, 1.0, 1.0], 0.855), // 0.005 below the triple: not worth a fourth domain
        ];
        let cfg = OracleConfig { chat: Some(0), ..Default::default() };
        let greedy = discover(&mut Table::new(entries, 2.0), 4, 3, &cfg)?;
        assert_eq!((greedy.chosen.as_slice(), greedy.best_loss), (&[3][..], 0.90));
        let mut t = Table::new(entries, 2.0);
        let d = discover(&mut t, 4, 3, &OracleConfig { search: Search::Exhaustive, ..cfg })?;
        assert_eq!(t.calls, 1, "every set in one batch");
        assert_eq!((d.chosen.as_slice(), d.best_loss, d.base_loss), (&[1, 2, 3][..], 0.86, 1.0));
        assert_eq!(d.single_losses, vec![0.99, 1.02, 1.01, 0.90]);
        assert!(!d.excludes_own_domain());
        let expect = [0.16, 0.8, 0.8, 1.0];
        for (g, e) in d.target.iter().zip(expect) {
            assert!((g - e).abs() < 1e-12, "{:?}", d.target);
        }
        Ok(())
    }

    /// No single domain beats base-only, yet a pair does: the exhaustive search still takes it.
    /// Reasoning (domain 2) joins softly when the full set is lower at all but not by `accept`.
    #[test]
    fn exhaustive_search_takes_pairs_over_base_and_soft_reasoning() -> Result<()> {
        let cfg = OracleConfig { reasoning: Some(2), search: Search::Exhaustive, ..Default::default() };
        let mut pair = Table::new(&[(&[0.0, 0.0, 0.0], 1.0), (&[1.0, 1.0, 0.0], 0.95)], 1.05);
        let d = discover(&mut pair, 3, 0, &cfg)?;
        assert_eq!((d.chosen.as_slice(), d.soft, d.best_loss), (&[0, 1][..], None, 0.95));
        let mut soft = Table::new(
            &[
                (&[0.0, 0.0, 0.0], 1.0),
                (&[1.0, 0.0, 0.0], 0.9),
                (&[0.0, 1.0, 0.0], 1.1),
                (&[0.0, 0.0, 1.0], 1.2),
                (&[1.0, 1.0, 0.0], 0.85),
                (&[1.0, 0.0, 1.0], 0.95),
                (&[0.0, 1.0, 1.0], 1.3),
                (&[1.0, 1.0, 1.0], 0.849),
            ],
            9.0,
        );
        let d = discover(&mut soft, 3, 0, &cfg)?;
        assert_eq!((d.chosen.as_slice(), d.soft, d.best_loss), (&[0, 1][..], Some(2), 0.85));
        assert_eq!(d.discovered, vec![1.0, 1.0, 0.5]);
        assert_eq!(soft.calls, 1, "the soft boost reuses the batch");
        Ok(())
    }

    #[test]
    fn exhaustive_search_refuses_too_many_domains() {
        let mut t = Table::new(&[], 1.0);
        let cfg = OracleConfig { search: Search::Exhaustive, ..Default::default() };
        let err = discover(&mut t, MAX_EXHAUSTIVE_DOMAINS + 1, 0, &cfg).unwrap_err().to_string();
        assert!(err.contains("greedy"), "{err}");
        assert_eq!(t.calls, 0);
    }

    #[test]
    fn weights_apply_floor_and_gate() {
        let cfg = OracleConfig { chat: Some(1), soft_weight: 0.1, ..Default::default() };
        assert_eq!(cfg.weights(3, &[], None), vec![0.0, 0.0, 0.0]);
        assert_eq!(cfg.weights(3, &[0], None), vec![1.0, 0.2, 0.0]);
        // A soft weight at or below the gate is dropped.
        assert_eq!(cfg.weights(3, &[0], Some(2)), vec![1.0, 0.2, 0.0]);
    }
}
