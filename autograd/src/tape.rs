//! The tape: ops recorded in execution order, and the reverse walk that turns a loss into
//! gradients.
//!
//! A `Vec` in execution order is already topologically sorted, so `backward` is a plain reverse
//! loop: no recursion, no graph search. Gradients live in a map the walk owns; an intermediate's
//! gradient is removed the moment its producing node consumes it, so at most the "frontier" of
//! gradients is alive at once. What remains at the end belongs to leaves (and to variables the
//! caller asked to retain) and is handed to the caller as `Gradients`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use brainstacks_tensor::{DType, Tensor};

use crate::var::{Var, VarId};
use crate::{Error, Result};

/// A recorded op's backward rule: `(grad_output, needs) -> one optional gradient per input`.
pub type BackwardFn = Arc<dyn Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync>;
/// A gradient hook: sees the finished gradient and may return a replacement.
pub type Hook = Box<HookFn>;
/// The callable behind a `Hook`.
pub type HookFn = dyn Fn(&Tensor) -> Result<Option<Tensor>> + Send + Sync;

pub(crate) struct Node {
    pub op: String,
    /// (id, requires_grad, shape, dtype) of each input, in argument order.
    pub inputs: Vec<(VarId, bool, Vec<usize>, DType)>,
    pub output: VarId,
    pub output_shape: Vec<usize>,
    pub output_dtype: DType,
    pub backward: BackwardFn,
}

/// Everything recorded. Nodes and hooks sit behind `Arc`s so `backward` can take a snapshot and
/// release the lock before running any rule: a hook or custom backward that records onto (or
/// just inspects) the same tape then works instead of deadlocking.
#[derive(Default, Clone)]
struct TapeInner {
    nodes: Vec<Arc<Node>>,
    hooks: HashMap<VarId, Vec<Arc<HookFn>>>,
    retained: HashSet<VarId>,
}

/// A shared handle to one tape. Clones refer to the same tape.
#[derive(Clone, Default)]
pub struct Tape {
    inner: Arc<Mutex<TapeInner>>,
}

/// Gradients returned by `backward`, keyed by variable. The caller owns them.
#[derive(Default)]
pub struct Gradients {
    map: HashMap<VarId, Tensor>,
    peak_live: usize,
}

impl Gradients {
    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.map.get(&var.id())
    }
    pub fn get_id(&self, id: VarId) -> Option<&Tensor> {
        self.map.get(&id)
    }
    pub fn remove(&mut self, var: &Var) -> Option<Tensor> {
        self.map.remove(&var.id())
    }
    pub fn insert(&mut self, var: &Var, grad: Tensor) -> Option<Tensor> {
        self.map.insert(var.id(), grad)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&VarId, &Tensor)> {
        self.map.iter()
    }
    /// Every gradient, to rewrite in place (clipping, surgery, injected faults in tests).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&VarId, &mut Tensor)> {
        self.map.iter_mut()
    }
    /// The most gradients (leaves' and intermediates') alive at once during the backward walk.
    /// Intermediate gradients are dropped as soon as their node consumes them, so for a chain
    /// of ops this stays small however long the chain is; memory profiling can rely on it.
    pub fn peak_live(&self) -> usize {
        self.peak_live
    }
}

impl Tape {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, TapeInner> {
        // A panic while holding the lock leaves the tape's data consistent (pushes are atomic),
        // so recover from poisoning instead of propagating it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn same_as(&self, other: &Tape) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A trainable leaf on this tape: `backward` returns its gradient.
    pub fn param(&self, tensor: Tensor) -> Var {
        Var::tracked(tensor, VarId::fresh(), self.clone())
    }

    pub(crate) fn push(&self, node: Node) {
        self.lock().nodes.push(Arc::new(node));
    }

    pub(crate) fn add_hook(&self, id: VarId, hook: Hook) {
        self.lock().hooks.entry(id).or_default().push(Arc::from(hook));
    }

    pub(crate) fn retain(&self, id: VarId) {
        self.lock().retained.insert(id);
    }

    /// Number of recorded ops.
    pub fn len(&self) -> usize {
        self.lock().nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every recorded op and hook (and the tensors the backward rules saved), so a
    /// training loop can reuse one tape per step. Existing vars stay valid as values.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.nodes.clear();
        inner.hooks.clear();
        inner.retained.clear();
    }

    /// Gradients of a one-element `loss` with respect to every trainable leaf it depends on.
    pub fn backward(&self, loss: &Var) -> Result<Gradients> {
        if loss.tensor().elem_count() != 1 {
            return Err(Error::NonScalarLoss { shape: loss.shape().to_vec() });
        }
        let seed = loss.tensor().ones_like()?;
        self.backward_with(loss, seed)
    }

    /// Like `backward`, seeding `output`'s gradient with `seed` (same shape and dtype).
    pub fn backward_with(&self, output: &Var, seed: Tensor) -> Result<Gradients> {
        if seed.shape() != output.shape() || seed.dtype() != output.dtype() {
            return Err(Error::SeedMismatch {
                seed: seed.shape().to_vec(),
                seed_dtype: seed.dtype(),
                output: output.shape().to_vec(),
                output_dtype: output.dtype(),
            });
        }
        let mut grads: HashMap<VarId, Tensor> = HashMap::new();
        let Some(tape) = output.tape() else {
            return Ok(Gradients::default()); // a constant depends on no trainable leaf
        };
        if !tape.same_as(self) {
            return Err(Error::DifferentTapes { op: "backward".into() });
        }
        grads.insert(output.id(), seed);
        let inner = self.lock().clone(); // a snapshot: the lock is not held while rules run
        let mut peak_live = grads.len();
        let mut retained: HashMap<VarId, Tensor> = HashMap::new();
        for node in inner.nodes.iter().rev() {
            let Some(mut g) = grads.remove(&node.output) else { continue };
            g = run_hooks(&inner, node.output, g)?;
            if inner.retained.contains(&node.output) {
                retained.insert(node.output, g.clone());
            }
            let needs: Vec<bool> = node.inputs.iter().map(|i| i.1).collect();
            let input_grads = (node.backward)(&g, &needs)?;
            drop(g); // the intermediate gradient is consumed: free it now
            if input_grads.len() != node.inputs.len() {
                return Err(Error::GradientCount {
                    op: node.op.clone(),
                    expected: node.inputs.len(),
                    got: input_grads.len(),
                });
            }
            for (i, (ig, (id, needs, shape, dtype))) in input_grads.into_iter().zip(&node.inputs).enumerate() {
                let (Some(ig), true) = (ig, *needs) else { continue };
                if ig.shape() != shape.as_slice() || ig.dtype() != *dtype {
                    return Err(Error::GradientShape {
                        op: node.op.clone(),
                        input: i,
                        expected: shape.clone(),
                        expected_dtype: *dtype,
                        got: ig.shape().to_vec(),
                        got_dtype: ig.dtype(),
                    });
                }
                accumulate(&mut grads, *id, ig)?;
            }
            peak_live = peak_live.max(grads.len());
        }
        // Every node's output gradient was consumed above, so what is left belongs to leaves.
        let mut out = retained;
        for (id, g) in grads {
            let g = run_hooks(&inner, id, g)?;
            out.insert(id, g);
        }
        Ok(Gradients { map: out, peak_live })
    }
}

fn run_hooks(inner: &TapeInner, id: VarId, mut g: Tensor) -> Result<Tensor> {
    if let Some(hooks) = inner.hooks.get(&id) {
        for h in hooks {
            if let Some(new) = h(&g)? {
                if new.shape() != g.shape() || new.dtype() != g.dtype() {
                    return Err(Error::Invalid {
                        op: "hook".into(),
                        msg: format!(
                            "a hook on {id} replaced a {:?}/{} gradient with {:?}/{}",
                            g.shape(),
                            g.dtype(),
                            new.shape(),
                            new.dtype()
                        ),
                    });
                }
                g = new;
            }
        }
    }
    Ok(g)
}

fn accumulate(grads: &mut HashMap<VarId, Tensor>, id: VarId, g: Tensor) -> Result<()> {
    match grads.remove(&id) {
        None => {
            grads.insert(id, g);
        }
        Some(prev) => {
            // In place when `prev` owns its buffer alone (the usual case): same bits as `add`.
            grads.insert(id, prev.add_owned(&g)?);
        }
    }
    Ok(())
}

impl std::fmt::Display for Tape {
    /// One line per recorded op: index, op, input ids with shapes and dtypes, output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        for (i, n) in inner.nodes.iter().enumerate() {
            let ins: Vec<String> = n
                .inputs
                .iter()
                .map(|(id, rg, s, d)| format!("{id}{}:{s:?}/{d}", if *rg { "" } else { "(const)" }))
                .collect();
            writeln!(f, "#{i:<4} {:<16} {} -> {}:{:?}/{}", n.op, ins.join(", "), n.output, n.output_shape, n.output_dtype)?;
        }
        Ok(())
    }
}
