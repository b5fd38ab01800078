//! `StackSet`: the trainer's handle on every stacked projection of one model.

use std::sync::{Arc, Mutex, MutexGuard};

use brainstacks_autograd::{Tape, Var};
use brainstacks_tensor::{DType, Device, Rng, Tensor};

use super::StackId;
use super::control::StackControl;
use super::projection::{FrozenStack, ProjectionStacks, StackedProjection, lock};
use crate::llama::{LlamaModel, Proj};
use crate::moe_lora::{MoeLora, MoeLoraConfig};
use crate::null_space::NullSpace;
use crate::{Error, Result};

/// One wrapped projection.
#[derive(Debug)]
pub struct StackedModule {
    pub layer: usize,
    pub proj: Proj,
    pub d_in: usize,
    pub d_out: usize,
    pub(crate) state: Arc<Mutex<ProjectionStacks>>,
}

impl StackedModule {
    /// The module path, as in checkpoint names: `model.layers.3.self_attn.q_proj`.
    pub fn path(&self) -> String {
        format!("model.layers.{}.{}", self.layer, self.proj.module())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ProjectionStacks> {
        lock(&self.state)
    }
}

/// How the null-space projector of a module is built from captured frozen-stack deltas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullSpaceMode {
    /// Per earlier domain, the top-k directions of that domain's summed delta; their union,
    /// re-orthonormalised (the spec's default: each domain claims its own k directions).
    PerDomainUnion,
    /// One top-k of the delta summed over every frozen stack (the released code).
    Summed,
}

/// The active stack's parameter values at one moment (tensors are immutable values, so this
/// holds them without copying).
#[derive(Clone, Debug)]
pub struct ActiveSnapshot(Vec<[Tensor; 4]>);

/// Every stacked projection of one model and the control they share.
#[derive(Debug)]
pub struct StackSet {
    control: Arc<StackControl>,
    modules: Vec<StackedModule>,
    compute_dtype: DType,
    /// The model's device at attach time: every stack and projector of the set lives there.
    device: Device,
    /// The run's domain order: frozen stacks are summed by (position here, round).
    domain_order: Mutex<Vec<String>>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::Config { layer: "stacks".into(), msg: msg.into() }
}

impl StackSet {
    /// Wraps projections `targets` of every layer of `model` (spec: all seven). Fails if one of
    /// them already has an adapter.
    pub fn attach(model: &mut LlamaModel, targets: &[Proj]) -> Result<Self> {
        let control = Arc::new(StackControl::default());
        let mut targets = targets.to_vec();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Err(invalid("no target projections"));
        }
        let count = model.layers.len() * targets.len();
        let mut modules = Vec::with_capacity(count);
        for layer in 0..model.layers.len() {
            for &proj in &targets {
                let [d_out, d_in] = model.proj(layer, proj).expect("layer in range").shape();
                let state = Arc::new(Mutex::new(ProjectionStacks::default()));
                let adapter = StackedProjection {
                    module: modules.len() as u32,
                    modules: count as u32,
                    compute_dtype: model.dtype,
                    d_out,
                    state: state.clone(),
                    control: control.clone(),
                };
                if let Some(previous) = model.set_adapter(layer, proj, Some(Box::new(adapter)))? {
                    model.set_adapter(layer, proj, Some(previous))?;
                    return Err(invalid(format!("model.layers.{layer}.{} already has an adapter", proj.module())));
                }
                modules.push(StackedModule { layer, proj, d_in, d_out, state });
            }
        }
        Ok(Self { control, modules, compute_dtype: model.dtype, device: model.device(), domain_order: Mutex::new(Vec::new()) })
    }

    pub fn control(&self) -> &StackControl {
        &self.control
    }

    pub fn modules(&self) -> &[StackedModule] {
        &self.modules
    }

    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The device of every stack and projector (the model's when the set was attached).
    pub fn device(&self) -> Device {
        self.device
    }

    /// The dtype of the active stack's master weights: f32, or f64 when the model computes in f64.
    pub fn master_dtype(&self) -> DType {
        if self.compute_dtype == DType::F64 { DType::F64 } else { DType::F32 }
    }

    /// Declares the run's domain order (curriculum). Frozen stacks of listed domains are summed
    /// in this order; unlisted domains come after, by name.
    pub fn set_domain_order(&self, domains: &[String]) {
        *self.domain_order.lock().unwrap_or_else(|p| p.into_inner()) = domains.to_vec();
        for m in &self.modules {
            let mut st = m.lock();
            for f in &mut st.frozen {
                f.order = self.order_of(&f.id);
            }
            st.frozen.sort_by(|a, b| (a.order, &a.id).cmp(&(b.order, &b.id)));
        }
    }

    fn order_of(&self, id: &StackId) -> (usize, u32) {
        let order = self.domain_order.lock().unwrap_or_else(|p| p.into_inner());
        (order.iter().position(|d| *d == id.domain).unwrap_or(usize::MAX), id.round)
    }

    /// A fresh active stack at every module: parameters are leaves of `tape` in the master
    /// dtype, drawn from one Philox stream of `seed` in module order (A Kaiming-uniform, B zero).
    pub fn add_active(&self, tape: &Tape, cfg: &MoeLoraConfig, seed: u64) -> Result<()> {
        if self.has_active() {
            return Err(invalid("an active stack already exists; freeze or discard it first"));
        }
        let mut rng = Rng::new(seed);
        let mut fresh = Vec::with_capacity(self.modules.len());
        for m in &self.modules {
            fresh.push(MoeLora::new(tape, m.d_in, m.d_out, cfg, &mut rng, self.master_dtype())?.to_device(&self.device)?);
        }
        for (m, stack) in self.modules.iter().zip(fresh) {
            m.lock().active = Some(stack);
        }
        Ok(())
    }

    pub fn has_active(&self) -> bool {
        self.modules.iter().any(|m| m.lock().active.is_some())
    }

    /// The active stack's parameters (A, B, router, noise per module, in module order). They
    /// share identity with the stored ones, so gradients from a backward can be looked up.
    pub fn active_params(&self) -> Vec<Var> {
        self.modules.iter().flat_map(|m| m.lock().active.as_ref().map(|s| s.params().map(Var::clone)).into_iter().flatten()).collect()
    }

    /// Runs `f` on mutable references to the active parameters (same order as `active_params`),
    /// for an optimizer step.
    pub fn update_active<R>(&self, f: impl FnOnce(&mut [&mut Var]) -> R) -> R {
        let mut guards: Vec<MutexGuard<'_, ProjectionStacks>> = self.modules.iter().map(StackedModule::lock).collect();
        let mut params: Vec<&mut Var> =
            guards.iter_mut().flat_map(|g| g.active.as_mut().map(|s| s.params_mut()).into_iter().flatten()).collect();
        f(&mut params)
    }

    /// Trainable parameters of the active stack (0 without one).
    pub fn active_param_count(&self) -> usize {
        self.modules.iter().map(|m| m.lock().active.as_ref().map_or(0, MoeLora::param_count)).sum()
    }

    pub fn snapshot_active(&self) -> Result<ActiveSnapshot> {
        let mut out = Vec::with_capacity(self.modules.len());
        for m in &self.modules {
            let st = m.lock();
            let s = st.active.as_ref().ok_or_else(|| invalid("no active stack to snapshot"))?;
            out.push(s.params().map(|p| p.tensor().clone()));
        }
        Ok(ActiveSnapshot(out))
    }

    /// Puts a snapshot's values back into the active stack (same parameter identities).
    pub fn restore_active(&self, snap: &ActiveSnapshot) -> Result<()> {
        if snap.0.len() != self.modules.len() {
            return Err(invalid(format!("snapshot of {} modules, the set has {}", snap.0.len(), self.modules.len())));
        }
        for (m, values) in self.modules.iter().zip(&snap.0) {
            let mut st = m.lock();
            let s = st.active.as_mut().ok_or_else(|| invalid("no active stack to restore"))?;
            for (p, v) in s.params_mut().into_iter().zip(values) {
                p.replace_value(v.clone())?;
            }
        }
        Ok(())
    }

    /// Drops the active stack without keeping it.
    pub fn discard_active(&self) {
        for m in &self.modules {
            m.lock().active = None;
        }
    }

    /// Turns the active stack into frozen stack `id` (constant parameters in the compute dtype,
    /// deterministic routing from now on).
    pub fn freeze_active(&self, id: StackId) -> Result<()> {
        if self.frozen_ids().contains(&id) {
            return Err(invalid(format!("a frozen stack {id} already exists")));
        }
        let mut frozen = Vec::with_capacity(self.modules.len());
        for m in &self.modules {
            let st = m.lock();
            let s = st.active.as_ref().ok_or_else(|| invalid("no active stack to freeze"))?;
            frozen.push(s.frozen(self.compute_dtype)?);
        }
        for (m, stack) in self.modules.iter().zip(frozen) {
            let mut st = m.lock();
            st.active = None;
            self.insert_frozen(&mut st, id.clone(), stack);
        }
        Ok(())
    }

    pub(crate) fn insert_frozen(&self, st: &mut ProjectionStacks, id: StackId, stack: MoeLora) {
        let order = self.order_of(&id);
        let at = st.frozen.partition_point(|f| (f.order, &f.id) < (order, &id));
        st.frozen.insert(at, FrozenStack { id, order, stack });
    }

    /// The frozen stacks' ids, in summation order.
    pub fn frozen_ids(&self) -> Vec<StackId> {
        self.modules.first().map(|m| m.lock().frozen.iter().map(|f| f.id.clone()).collect()).unwrap_or_default()
    }

    /// Removes every frozen stack of `domain` (an unload); returns how many rounds went.
    pub fn remove_domain(&self, domain: &str) -> usize {
        let mut removed = 0;
        for m in &self.modules {
            let mut st = m.lock();
            let before = st.frozen.len();
            st.frozen.retain(|f| f.id.domain != domain);
            removed = before - st.frozen.len();
        }
        removed
    }

    /// Starts recording, at every module, the mean-pooled summed delta of each frozen domain for
    /// every sequence the model sees (run it in eval mode, one sequence per batch row).
    pub fn begin_capture(&self) {
        for m in &self.modules {
            m.lock().captured.clear();
        }
        self.control.set_capture(true);
    }

    /// Stops recording (the captured rows stay until the projectors are computed).
    pub fn end_capture(&self) {
        self.control.set_capture(false);
    }

    /// Builds each module's projector from the captured rows (randomized SVD with `k` directions
    /// per part, Philox `seed` + module index) and installs it; clears the captures. Returns the
    /// rank of each module's projector, in module order.
    pub fn compute_null_spaces(&self, k: usize, seed: u64, mode: NullSpaceMode, dup_tol: f64) -> Result<Vec<usize>> {
        let mut ranks = Vec::with_capacity(self.modules.len());
        for (i, m) in self.modules.iter().enumerate() {
            let mut st = m.lock();
            let captured = std::mem::take(&mut st.captured);
            if captured.is_empty() {
                return Err(invalid(format!("{}: nothing captured (no frozen stack, or no sequence seen)", m.path())));
            }
            let seed = seed.wrapping_add(i as u64);
            let d = m.d_out;
            let parts: Vec<Vec<f64>> = match mode {
                NullSpaceMode::PerDomainUnion => captured.into_values().collect(),
                NullSpaceMode::Summed => {
                    let mut sum: Option<Vec<f64>> = None;
                    for rows in captured.into_values() {
                        sum = Some(match sum {
                            None => rows,
                            Some(s) if s.len() == rows.len() => s.iter().zip(&rows).map(|(a, b)| a + b).collect(),
                            Some(s) => {
                                return Err(invalid(format!("{}: domains captured {} and {} values", m.path(), s.len(), rows.len())));
                            }
                        });
                    }
                    sum.into_iter().collect()
                }
            };
            let spaces = parts
                .iter()
                .map(|rows| NullSpace::from_samples(rows, rows.len() / d, d, k, seed, self.compute_dtype))
                .collect::<Result<Vec<_>>>()?;
            let ns = if spaces.len() == 1 {
                spaces.into_iter().next().expect("one part")
            } else {
                NullSpace::union(&spaces.iter().collect::<Vec<_>>(), dup_tol)?
            };
            ranks.push(ns.rank());
            st.null_space = Some(ns.to_device(&self.device)?);
        }
        Ok(ranks)
    }

    /// Installs projectors directly (one per module, `None` for none), e.g. loaded from files.
    pub fn set_null_spaces(&self, spaces: Vec<Option<NullSpace>>) -> Result<()> {
        if spaces.len() != self.modules.len() {
            return Err(invalid(format!("{} projectors for {} modules", spaces.len(), self.modules.len())));
        }
        for (m, ns) in self.modules.iter().zip(spaces) {
            if let Some(ns) = &ns
                && ns.dim() != m.d_out
            {
                return Err(invalid(format!("{}: projector of dim {} for d_out {}", m.path(), ns.dim(), m.d_out)));
            }
            m.lock().null_space = ns.map(|ns| ns.to_device(&self.device)).transpose()?;
        }
        Ok(())
    }

    pub fn clear_null_spaces(&self) {
        for m in &self.modules {
            let mut st = m.lock();
            st.null_space = None;
            st.captured.clear();
        }
    }

    /// Each module's projector rank (0 without one), in module order.
    pub fn null_space_ranks(&self) -> Vec<usize> {
        self.modules.iter().map(|m| m.lock().null_space.as_ref().map_or(0, NullSpace::rank)).collect()
    }

    /// `persist_projection`: B_e <- (I - V Vᵀ) B_e for every expert of the active stack at every
    /// module with a projector, so its delta is orthogonal to V for every input, at inference too.
    pub fn project_active_b(&self) -> Result<()> {
        for m in &self.modules {
            let mut st = m.lock();
            let ProjectionStacks { active, null_space, .. } = &mut *st;
            let (Some(active), Some(ns)) = (active.as_mut(), null_space.as_ref()) else {
                continue;
            };
            let b = active.b.tensor().clone(); // [E, d_out, r]
            let v = ns.basis().to_dtype(b.dtype())?; // [d_out, k]
            // (I - V Vᵀ) B_e for all e at once: Bᵀ_e rows are [r, d_out] vectors to project.
            let bt = b.permute(&[0, 2, 1])?.contiguous()?; // [E, r, d_out]
            let [e, r, d] = [bt.shape()[0], bt.shape()[1], bt.shape()[2]];
            let flat = bt.reshape(&[e * r, d])?;
            let projected = flat.sub(&flat.matmul(&v)?.matmul(&v.t()?)?)?;
            let new_b = projected.reshape(&[e, r, d])?.permute(&[0, 2, 1])?.contiguous()?;
            active.b.replace_value(new_b)?;
        }
        Ok(())
    }

    /// The largest ||δV||/||δ|| of the active stack's projected delta recorded while
    /// `monitor_leakage` was on (then resets it).
    pub fn take_max_leakage(&self) -> f64 {
        self.control.take_max_leakage()
    }
}
