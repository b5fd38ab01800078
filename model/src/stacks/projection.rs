//! The adapter at one projection: its frozen stacks, its active stack and its projector.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use brainstacks_autograd::Var;
use brainstacks_tensor::{DType, Device, Tensor};

use super::StackId;
use super::control::{AuxReduction, DomainWeight, StackControl};
use crate::llama::ProjectionAdapter;
use crate::moe_lora::{GateNoise, MoeLora};
use crate::null_space::NullSpace;
use crate::{Error, Result};

/// A frozen stack: constant parameters in the model's compute dtype.
#[derive(Clone, Debug)]
pub(crate) struct FrozenStack {
    pub id: StackId,
    /// Sort key: (position of the domain in the run's order, round).
    pub order: (usize, u32),
    pub stack: MoeLora,
}

/// Everything attached to one projection.
#[derive(Debug, Default)]
pub(crate) struct ProjectionStacks {
    /// Sorted by `order`.
    pub frozen: Vec<FrozenStack>,
    /// Master parameters (f32, or f64 for gradient checks), trainable leaves of a tape.
    pub active: Option<MoeLora>,
    /// Applied to the active stack's delta in training mode only.
    pub null_space: Option<NullSpace>,
    /// Captured rows per frozen domain: for each sequence seen, the mean over its tokens of
    /// the domain's summed delta (row-major, `d_out` per row).
    pub captured: BTreeMap<String, Vec<f64>>,
}

/// The `ProjectionAdapter` of one wrapped projection; the state is shared with the `StackSet`.
pub struct StackedProjection {
    /// Index of this module in the set (layer-major, then projection): the gate noise key.
    pub(crate) module: u32,
    /// Number of modules in the set, to give frozen stacks' noise (parity flag) its own keys.
    pub(crate) modules: u32,
    pub(crate) compute_dtype: DType,
    pub(crate) d_out: usize,
    pub(crate) state: Arc<Mutex<ProjectionStacks>>,
    pub(crate) control: Arc<StackControl>,
}

pub(crate) fn lock(state: &Mutex<ProjectionStacks>) -> MutexGuard<'_, ProjectionStacks> {
    // Plain data: a panic mid-update cannot leave it half-written in a way later code trusts.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The sum of `parts`, left to right (`None` when there are none), in one pass however many
/// there are: the same bits as adding them one by one, which cost a full pass and a tensor per
/// frozen stack at every projection.
fn sum(parts: Vec<Var>) -> Result<Option<Var>> {
    Ok(match parts.len() {
        0 => None,
        1 => parts.into_iter().next(),
        _ => Some(Var::add_n(&parts.iter().collect::<Vec<_>>())?),
    })
}

/// Mean over the token axis: `[B, T, d] -> B rows`, `[T, d] -> 1 row` (one sequence).
fn pooled_rows(delta: &Tensor) -> Result<Vec<f64>> {
    let pooled = match delta.rank() {
        3 => delta.mean(&[1usize], false)?,
        2 => delta.mean(&[0usize], false)?,
        r => {
            return Err(Error::Config { layer: "stacks".into(), msg: format!("cannot capture a rank-{r} delta") });
        }
    };
    Ok(pooled.to_vec_f64()?)
}

/// Errors unless a batch of `shape` has one row per weight.
fn check_rows(rows: &[f64], shape: &[usize], domain: &str) -> Result<()> {
    if shape.first() == Some(&rows.len()) {
        return Ok(());
    }
    Err(Error::Config {
        layer: "stacks".into(),
        msg: format!("{} per-row weights for domain {domain:?} but a batch of shape {shape:?}", rows.len()),
    })
}

/// Per-row weights shaped `[rows, 1, ...]` to broadcast over a rank-`rank` batch.
fn row_weights(rows: &[f64], rank: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mut shape = vec![1; rank];
    shape[0] = rows.len();
    Ok(Tensor::from_vec(rows.to_vec(), &shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?)
}

impl StackedProjection {
    /// `total` plus a frozen stack's delta weighted per row, running the stack only on the rows
    /// whose weight is not 0. The oracle scores every candidate domain set as one row of a batch,
    /// so each stack is off in about half the rows; skipping them gives the same values as
    /// weighting the full batch (each row's delta depends on that row alone), up to the sign of
    /// a zero.
    fn add_weighted_rows(&self, total: Option<Var>, stack: &MoeLora, x: &Var, rows: &[f64], domain: &str) -> Result<Option<Var>> {
        check_rows(rows, x.shape(), domain)?;
        let on: Vec<i64> = rows.iter().enumerate().filter(|(_, w)| **w != 0.0).map(|(i, _)| i as i64).collect();
        if on.is_empty() {
            return Ok(total);
        }
        let ids = Tensor::from_vec(on.clone(), &[on.len()], &Device::Cpu)?.to_device(&x.tensor().device())?;
        let d_on = stack.forward(&x.index_select(0usize, &ids)?, None)?.delta;
        let w_on: Vec<f64> = on.iter().map(|&i| rows[i as usize]).collect();
        let d_on = d_on.mul(&Var::constant(row_weights(&w_on, d_on.rank(), d_on.dtype(), &d_on.tensor().device())?))?;
        let base = match total {
            Some(t) => t,
            None => {
                let mut shape = x.shape().to_vec();
                *shape.last_mut().expect("a batch has a feature dim") = self.d_out;
                Var::constant(Tensor::zeros(&shape, d_on.dtype(), &x.tensor().device())?)
            }
        };
        Ok(Some(base.index_add(0usize, &ids, &d_on)?))
    }

    fn forward_delta(&self, x: &Var) -> Result<Option<Var>> {
        let settings = self.control.settings();
        let mut st = lock(&self.state);
        let training = settings.training;
        // The deltas to add up, in order; summed once at the end (see `sum`).
        let mut parts: Vec<Var> = Vec::new();

        let x_frozen = if settings.options.truncate_frozen_grad { x.detach() } else { x.clone() };
        let mut captured: Vec<(String, Tensor)> = Vec::new();
        for (slot, f) in st.frozen.iter().enumerate() {
            let Some(weight) = settings.selection.weight(&f.id.domain) else {
                continue;
            };
            let noise = match training {
                Some((seed, step)) if settings.options.frozen_noise => {
                    Some(GateNoise { seed, step, layer: self.module + self.modules * (slot as u32 + 1) })
                }
                _ => None,
            };
            if let DomainWeight::Rows(rows) = &weight
                && training.is_none()
                && !settings.capture
                && rows.contains(&0.0)
            {
                let total = self.add_weighted_rows(sum(std::mem::take(&mut parts))?, &f.stack, &x_frozen, rows, &f.id.domain)?;
                parts.extend(total);
                continue;
            }
            let mut d = f.stack.forward(&x_frozen, noise)?.delta;
            if settings.capture {
                match captured.last_mut() {
                    Some((domain, acc)) if *domain == f.id.domain => *acc = acc.add(d.tensor())?,
                    _ => captured.push((f.id.domain.clone(), d.tensor().clone())),
                }
            }
            d = match weight {
                DomainWeight::Scalar(1.0) => d,
                DomainWeight::Scalar(w) => d.mul_scalar(w)?,
                DomainWeight::Rows(rows) => {
                    check_rows(&rows, d.shape(), &f.id.domain)?;
                    d.mul(&Var::constant(row_weights(&rows, d.rank(), d.dtype(), &d.tensor().device())?))?
                }
            };
            parts.push(d);
        }
        for (domain, delta_sum) in captured {
            let rows = pooled_rows(&delta_sum)?;
            st.captured.entry(domain).or_default().extend(rows);
        }

        if let Some(active) = &st.active {
            let stack = active.cast(self.compute_dtype)?;
            let noise = training.map(|(seed, step)| GateNoise { seed, step, layer: self.module });
            let out = stack.forward(x, noise)?;
            let mut d = out.delta;
            if training.is_some() {
                if settings.options.aux != AuxReduction::Off {
                    self.control.push_aux(out.gate.load_balance_loss()?);
                }
                if let Some(ns) = &st.null_space {
                    d = ns.apply(&d)?;
                    if settings.options.monitor_leakage {
                        self.control.record_leakage(ns.leakage(d.tensor())?);
                    }
                }
            }
            parts.push(d);
        }
        sum(parts)
    }
}

impl ProjectionAdapter for StackedProjection {
    fn forward(&self, x: &Var) -> Result<Var> {
        match self.forward_delta(x)? {
            Some(d) => Ok(d),
            None => {
                // No stack contributes: an explicit zero delta of the right shape.
                let mut shape = x.shape().to_vec();
                if let Some(last) = shape.last_mut() {
                    *last = self.d_out;
                }
                Ok(Var::constant(Tensor::zeros(&shape, x.dtype(), &x.tensor().device())?))
            }
        }
    }

    fn delta(&self, x: &Var) -> Result<Option<Var>> {
        self.forward_delta(x)
    }
}
