//! `Var`: a tensor that may take part in differentiation, and the recording of ops onto a tape.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use brainstacks_tensor::{DType, Tensor};

use crate::tape::{BackwardFn, Node, Tape};
use crate::{Error, Result, no_grad};

/// Identifies a `Var` on its tape and in `Gradients`. Unique for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VarId(pub u64);

impl VarId {
    pub(crate) fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        VarId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for VarId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A tensor plus its identity for differentiation. Cheap to clone.
///
/// A `Var` either requires a gradient (a trainable leaf made by `Tape::param`, or the result of
/// an op with such an input, recorded on that tape) or is a constant (made by `Var::constant`,
/// `detach`, or any op run under `no_grad`). Constants carry no tape and cost nothing to use.
#[derive(Clone)]
pub struct Var {
    tensor: Tensor,
    id: VarId,
    tape: Option<Tape>,
}

impl Var {
    /// A constant: gradients never flow into it.
    pub fn constant(tensor: Tensor) -> Self {
        Var { tensor, id: VarId::fresh(), tape: None }
    }

    pub(crate) fn tracked(tensor: Tensor, id: VarId, tape: Tape) -> Self {
        Var { tensor, id, tape: Some(tape) }
    }

    pub fn tensor(&self) -> &Tensor {
        &self.tensor
    }
    pub fn id(&self) -> VarId {
        self.id
    }
    pub fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }
    pub fn dtype(&self) -> DType {
        self.tensor.dtype()
    }
    pub fn rank(&self) -> usize {
        self.tensor.rank()
    }
    /// The tape this variable is recorded on, if it requires a gradient.
    pub fn tape(&self) -> Option<&Tape> {
        self.tape.as_ref()
    }
    pub fn requires_grad(&self) -> bool {
        self.tape.is_some()
    }

    /// The same values, cut off from the tape: gradients stop here.
    pub fn detach(&self) -> Var {
        Var::constant(self.tensor.clone())
    }

    /// Registers a hook that sees this variable's gradient once it is complete and may replace
    /// it (return `Some(new)`) or leave it (`None`). Hooks run in registration order. A hook on
    /// a constant is an error: it would never run.
    pub fn register_hook(
        &self,
        hook: impl Fn(&Tensor) -> Result<Option<Tensor>> + Send + Sync + 'static,
    ) -> Result<()> {
        let tape = self.tape.as_ref().ok_or_else(|| Error::Invalid {
            op: "register_hook".into(),
            msg: format!("variable {} does not require a gradient, so a hook on it would never run", self.id),
        })?;
        tape.add_hook(self.id, Box::new(hook));
        Ok(())
    }

    /// Keeps this (intermediate) variable's gradient in the `Gradients` that `backward` returns.
    /// Leaves are always kept; intermediates are otherwise freed as soon as they are consumed.
    pub fn retain_grad(&self) -> Result<()> {
        self.register_hook(|_| Ok(None))?;
        if let Some(t) = &self.tape {
            t.retain(self.id);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({}, grad={}, {:?})", self.id, self.requires_grad(), self.tensor)
    }
}

/// Records `op` on the tape shared by the inputs that require a gradient and returns its output.
///
/// `backward(grad_output, needs)` returns one optional gradient per input; `needs[i]` says whether
/// input `i` wants one, so rules skip work for constants. When no input requires a gradient, or
/// inside `no_grad`, nothing is recorded and the output is a constant.
pub fn record(
    op: impl Into<String>,
    inputs: &[&Var],
    output: Tensor,
    backward: impl Fn(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Result<Var> {
    let op = op.into();
    let mut tape: Option<&Tape> = None;
    for v in inputs {
        if let Some(t) = &v.tape {
            match tape {
                None => tape = Some(t),
                Some(first) if first.same_as(t) => {}
                Some(_) => return Err(Error::DifferentTapes { op }),
            }
        }
    }
    let Some(tape) = tape.filter(|_| !no_grad::is_active()) else {
        return Ok(Var::constant(output));
    };
    let id = VarId::fresh();
    let node = Node {
        op,
        inputs: inputs.iter().map(|v| (v.id, v.requires_grad(), v.shape().to_vec(), v.dtype())).collect(),
        output: id,
        output_shape: output.shape().to_vec(),
        output_dtype: output.dtype(),
        backward: Arc::new(backward) as BackwardFn,
    };
    tape.push(node);
    Ok(Var::tracked(output, id, tape.clone()))
}

impl Var {
    /// Gives a trainable leaf a new value, keeping its identity (an optimizer step). The shape
    /// and dtype must not change. Only meaningful for leaves made by `Tape::param`: an op's
    /// output has a recorded history that a new value would contradict.
    pub fn replace_value(&mut self, value: Tensor) -> Result<()> {
        if value.shape() != self.shape() || value.dtype() != self.dtype() {
            return Err(Error::Invalid {
                op: "replace_value".into(),
                msg: format!(
                    "new value {:?}/{} does not match {:?}/{}",
                    value.shape(),
                    value.dtype(),
                    self.shape(),
                    self.dtype()
                ),
            });
        }
        self.tensor = value;
        Ok(())
    }
}
