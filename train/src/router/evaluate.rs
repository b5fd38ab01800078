//! Per-domain validation loss in the three compositions (base only, ungated, routed), with the
//! same token-weighted evaluator training uses. Routed: every validation example is routed on its
//! own prompt text and its batch row gets its own domain weights.

use std::collections::BTreeMap;

use brainstacks_model::stacks::FrozenSelection;

use super::routed::{Composition, RunModel};
use crate::Result;
use crate::boost::eval::evaluate;
use crate::boost::prepare::PreparedDomain;
use crate::data::Example;

/// Routes one prompt: the domain weights after the chat floor and gate.
pub trait Route {
    fn route(&self, example: &Example) -> Result<BTreeMap<String, f64>>;
}

/// One domain's row of the comparison.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModeLosses {
    pub domain: String,
    pub base: f64,
    pub ungated: f64,
    pub routed: Option<f64>,
}

/// Evaluates every prepared domain in the three compositions (`routed` only with a router).
pub fn evaluate_modes(rm: &RunModel, domains: &[PreparedDomain], router: Option<&dyn Route>) -> Result<Vec<ModeLosses>> {
    let mut out = Vec::with_capacity(domains.len());
    for d in domains {
        rm.compose(&Composition::Base)?;
        let base = evaluate(&rm.model, &rm.stacks, &d.val_batches)?;
        rm.compose(&Composition::Ungated)?;
        let ungated = evaluate(&rm.model, &rm.stacks, &d.val_batches)?;
        let routed = match router {
            None => None,
            Some(r) => Some(routed_loss(rm, d, r)?),
        };
        out.push(ModeLosses { domain: d.name.clone(), base, ungated, routed });
    }
    Ok(out)
}

fn routed_loss(rm: &RunModel, d: &PreparedDomain, router: &dyn Route) -> Result<f64> {
    let weights = d.val_subset.iter().map(|e| router.route(e)).collect::<Result<Vec<_>>>()?;
    for w in &weights {
        for domain in w.keys() {
            rm.ensure_loaded(domain)?;
        }
    }
    let mut meter = crate::data::LossMeter::default();
    let mut row = 0;
    for batch in &d.val_batches {
        let rows = batch.batch_size();
        let mut per_row: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (i, w) in weights[row..row + rows].iter().enumerate() {
            for (domain, &p) in w {
                per_row.entry(domain.clone()).or_insert_with(|| vec![0.0; rows])[i] = p;
            }
        }
        row += rows;
        rm.stacks.control().set_selection(FrozenSelection::PerRow(per_row));
        let loss = evaluate(&rm.model, &rm.stacks, std::slice::from_ref(batch))?;
        meter.add(loss, batch.targets);
    }
    rm.stacks.control().set_selection(FrozenSelection::All);
    Ok(meter.mean().unwrap_or(f64::NAN))
}
