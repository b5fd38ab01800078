//! The tape's contract, through the public API only: which gradients `backward` returns, what
//! gets recorded, accumulation, hooks, `detach`, custom ops, printing, and the errors a user can
//! provoke.

use std::sync::{Arc, Mutex};

use brainstacks_autograd::{CustomOp, Error, Result, Tape, Var, apply_custom, no_grad};
use brainstacks_tensor::{DType, Device, Tensor};

fn t(values: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

#[test]
fn backward_returns_only_leaf_gradients() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    let w = tape.param(t(&[3.0, -1.0], &[2]));
    let h = x.mul(&w).unwrap(); // intermediate
    let y = h.exp().unwrap(); // intermediate
    let loss = y.sum_all().unwrap();
    let grads = tape.backward(&loss).unwrap();
    assert_eq!(grads.len(), 2, "only the two leaves");
    assert!(grads.get(&x).is_some() && grads.get(&w).is_some());
    assert!(grads.get(&h).is_none() && grads.get(&y).is_none() && grads.get(&loss).is_none());
    // d/dx sum(exp(x w)) = w exp(x w)
    let want: Vec<f64> = [(1.0f64, 3.0f64), (2.0, -1.0)].iter().map(|(x, w)| w * (x * w).exp()).collect();
    for (g, w) in values(grads.get(&x).unwrap()).iter().zip(&want) {
        assert!((g - w).abs() < 1e-12);
    }
}

#[test]
fn constants_record_nothing() {
    let tape = Tape::new();
    let p = tape.param(t(&[1.0], &[1]));
    let _ = p.square().unwrap();
    let before = tape.len();
    assert_eq!(before, 1);

    let a = Var::constant(t(&[1.0, 2.0], &[2]));
    let b = Var::constant(t(&[3.0, 4.0], &[2]));
    let c = a.mul(&b).unwrap().exp().unwrap().sum_all().unwrap();
    assert!(!c.requires_grad());
    assert_eq!(tape.len(), before, "a path from constants only records nothing");

    // Mixed inputs record, since one of them reaches a trainable leaf.
    let d = p.mul(&Var::constant(t(&[2.0], &[1]))).unwrap();
    assert!(d.requires_grad());
    assert_eq!(tape.len(), before + 1);

    // A loss that does not depend on any trainable leaf has no gradients.
    assert!(tape.backward(&c).unwrap().is_empty());
}

#[test]
fn no_grad_records_nothing() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    let y = no_grad(|| x.square().unwrap().sum_all().unwrap());
    assert!(tape.is_empty());
    assert!(!y.requires_grad());
    // Recording resumes after the scope.
    let z = x.square().unwrap();
    assert!(z.requires_grad());
    assert_eq!(tape.len(), 1);
}

#[test]
fn a_var_used_twice_accumulates() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.5, -2.0, 3.0], &[3]));
    let loss = x.mul(&x).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    assert_eq!(values(g.get(&x).unwrap()), vec![3.0, -4.0, 6.0]);

    // Used along two different paths: d/dx (sin x + x^2) = cos x + 2x.
    let tape = Tape::new();
    let x = tape.param(t(&[0.5], &[1]));
    let loss = x.sin().unwrap().add(&x.square().unwrap()).unwrap().sum_all().unwrap();
    let g = values(tape.backward(&loss).unwrap().get(&x).unwrap())[0];
    assert!((g - (0.5f64.cos() + 1.0)).abs() < 1e-15);
}

#[test]
fn hooks_read_gradients() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    let h = x.mul_scalar(3.0).unwrap();
    let seen: Arc<Mutex<Vec<Vec<f64>>>> = Arc::default();
    for var in [&h, &x] {
        let seen = seen.clone();
        var.register_hook(move |g| {
            seen.lock().unwrap().push(g.to_vec_f64()?);
            Ok(None)
        })
        .unwrap();
    }
    let loss = h.square().unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    // dL/dh = 2h = [6, 12]; dL/dx = 3 dL/dh = [18, 36]. The intermediate's hook runs first.
    assert_eq!(*seen.lock().unwrap(), vec![vec![6.0, 12.0], vec![18.0, 36.0]]);
    assert_eq!(values(g.get(&x).unwrap()), vec![18.0, 36.0]);
    // Reading does not retain: the intermediate's gradient is not returned.
    assert!(g.get(&h).is_none());
}

#[test]
fn a_replacing_hook_propagates_to_upstream_leaves() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, -2.0, 3.0], &[3]));
    let w = tape.param(t(&[0.5], &[1]));
    let h = x.mul(&w).unwrap();
    // Zero the negative entries of h's gradient (a one-sided clip).
    h.register_hook(|g| Ok(Some(g.relu()?))).unwrap();
    let loss = h.sum_all().unwrap(); // dL/dh = [1, 1, 1] ...
    let loss = loss.mul(&Var::constant(t(&[-1.0], &[]))).unwrap(); // ... times -1: all negative
    let g = tape.backward(&loss).unwrap();
    assert_eq!(values(g.get(&x).unwrap()), vec![0.0, 0.0, 0.0]);
    assert_eq!(values(g.get(&w).unwrap()), vec![0.0]);

    // A hook on a leaf replaces the returned gradient.
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    x.register_hook(|g| Ok(Some(g.mul_scalar(10.0)?))).unwrap();
    let g = tape.backward(&x.square().unwrap().sum_all().unwrap()).unwrap();
    assert_eq!(values(g.get(&x).unwrap()), vec![20.0, 40.0]);
}

#[test]
fn a_hook_that_changes_the_shape_is_an_error() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    x.register_hook(|_| Ok(Some(Tensor::zeros(&[3], DType::F64, &Device::Cpu)?))).unwrap();
    let err = tape.backward(&x.sum_all().unwrap()).err().unwrap();
    assert!(err.to_string().contains("hook"), "{err}");
}

#[test]
fn hooks_on_constants_are_rejected() {
    assert!(Var::constant(t(&[1.0], &[1])).register_hook(|_| Ok(None)).is_err());
}

#[test]
fn detach_stops_gradients() {
    let tape = Tape::new();
    let x = tape.param(t(&[2.0], &[1]));
    let frozen = x.square().unwrap().detach();
    assert!(!frozen.requires_grad());
    // L = x * stop(x^2): dL/dx = x^2 = 4 (not 3 x^2 = 12).
    let loss = x.mul(&frozen).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    assert_eq!(values(g.get(&x).unwrap()), vec![4.0]);
    // A loss built only from the detached value has no gradients.
    assert!(tape.backward(&frozen.sum_all().unwrap()).unwrap().is_empty());
}

/// `y = a * b` with a deliberately wrong-looking but valid rule: only `b`'s gradient is given,
/// scaled by 2, so the test proves the user's rule (not a built-in one) ran.
struct MulGradOnlyForB;

impl CustomOp for MulGradOnlyForB {
    fn name(&self) -> &str {
        "mul_b_only"
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(inputs[0].mul(inputs[1])?)
    }
    fn backward(&self, inputs: &[&Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None, Some(grad.mul(inputs[0])?.mul_scalar(2.0)?)])
    }
}

#[test]
fn custom_op_uses_the_user_backward() {
    let tape = Tape::new();
    let a = tape.param(t(&[1.0, 2.0], &[2]));
    let b = tape.param(t(&[3.0, 4.0], &[2]));
    let y = apply_custom(Arc::new(MulGradOnlyForB), &[&a, &b]).unwrap();
    assert_eq!(values(y.tensor()), vec![3.0, 8.0]);
    assert!(tape.to_string().contains("custom:mul_b_only"));
    let g = tape.backward(&y.sum_all().unwrap()).unwrap();
    assert!(g.get(&a).is_none(), "the rule gave no gradient for a");
    assert_eq!(values(g.get(&b).unwrap()), vec![2.0, 4.0]);
}

/// A custom rule returning the wrong number of gradients, or a wrong shape, is reported.
struct Broken {
    count: usize,
}

impl CustomOp for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Ok(inputs[0].clone())
    }
    fn backward(&self, _inputs: &[&Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok((0..self.count).map(|_| Some(grad.reshape(&[grad.elem_count(), 1]).unwrap())).collect())
    }
}

#[test]
fn custom_op_rule_errors_are_reported() {
    for count in [0, 1, 2] {
        let tape = Tape::new();
        let x = tape.param(t(&[1.0, 2.0], &[2]));
        let y = apply_custom(Arc::new(Broken { count }), &[&x]).unwrap();
        let err = tape.backward(&y.sum_all().unwrap()).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("custom:broken"), "{msg}");
        match count {
            1 => assert!(matches!(err, Error::GradientShape { .. }), "{msg}"),
            _ => assert!(matches!(err, Error::GradientCount { .. }), "{msg}"),
        }
    }
}

#[test]
fn the_tape_prints_ops_shapes_and_dtypes() {
    let tape = Tape::new();
    let w = tape.param(Tensor::zeros(&[3, 4], DType::F32, &Device::Cpu).unwrap());
    let x = Var::constant(Tensor::zeros(&[2, 3], DType::F32, &Device::Cpu).unwrap());
    let _loss = x.matmul(&w).unwrap().tanh().unwrap().mean_all().unwrap();
    let printed = tape.to_string();
    assert_eq!(printed.lines().count(), 3, "{printed}");
    for needle in ["matmul", "tanh", "mean", "[2, 3]", "[3, 4]", "[2, 4]", "f32", "(const)"] {
        assert!(printed.contains(needle), "missing {needle:?} in\n{printed}");
    }
}

#[test]
fn retain_grad_keeps_an_intermediate() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    let h = x.mul_scalar(3.0).unwrap();
    h.retain_grad().unwrap();
    let other = x.exp().unwrap(); // not retained
    let loss = h.square().unwrap().add(&other).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    assert_eq!(values(g.get(&h).unwrap()), vec![6.0, 12.0]);
    assert!(g.get(&other).is_none());
    assert_eq!(g.len(), 2, "x and the retained h");
}

#[test]
fn a_non_scalar_loss_is_an_error_and_backward_with_seeds_it() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    let y = x.square().unwrap();
    let err = tape.backward(&y).err().unwrap();
    assert!(matches!(&err, Error::NonScalarLoss { shape } if shape == &[2]), "{err}");
    assert!(err.to_string().contains("[2]"));

    let g = tape.backward_with(&y, t(&[1.0, 0.5], &[2])).unwrap();
    assert_eq!(values(g.get(&x).unwrap()), vec![2.0, 2.0]);
    let err = tape.backward_with(&y, t(&[1.0], &[1])).err().unwrap();
    assert!(matches!(err, Error::SeedMismatch { .. }), "{err}");
}

#[test]
fn vars_from_two_tapes_are_an_error() {
    let (t1, t2) = (Tape::new(), Tape::new());
    let a = t1.param(t(&[1.0], &[1]));
    let b = t2.param(t(&[2.0], &[1]));
    let err = a.add(&b).err().unwrap();
    assert!(matches!(&err, Error::DifferentTapes { op } if op == "add"), "{err}");
    let loss = b.sum_all().unwrap();
    assert!(matches!(t1.backward(&loss), Err(Error::DifferentTapes { .. })));
}

#[test]
fn a_shape_error_names_the_op_and_both_shapes() {
    let tape = Tape::new();
    let a = tape.param(Tensor::zeros(&[2, 3], DType::F64, &Device::Cpu).unwrap());
    let b = Var::constant(Tensor::zeros(&[4, 5], DType::F64, &Device::Cpu).unwrap());
    let msg = a.matmul(&b).err().unwrap().to_string();
    for needle in ["matmul", "[2, 3]", "[4, 5]"] {
        assert!(msg.contains(needle), "missing {needle:?} in {msg}");
    }
    assert!(tape.is_empty(), "a failed op records nothing");
    let msg = a.add(&b).err().unwrap().to_string();
    assert!(msg.contains("add") && msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
}

#[test]
fn clear_forgets_ops_and_the_tape_is_reusable() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    let _ = x.square().unwrap().sum_all().unwrap();
    assert_eq!(tape.len(), 2);
    tape.clear();
    assert!(tape.is_empty());
    let loss = x.mul_scalar(2.0).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    assert_eq!(values(g.get(&x).unwrap()), vec![2.0, 2.0]);
}

#[test]
fn a_frozen_weight_gets_no_gradient_but_its_input_does() {
    // LoRA-style: a frozen base weight (a constant) and a trainable input.
    let tape = Tape::new();
    let base = Var::constant(t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]));
    let x = tape.param(t(&[1.0, 1.0], &[1, 2]));
    let loss = x.matmul(&base).unwrap().sum_all().unwrap();
    let g = tape.backward(&loss).unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(values(g.get(&x).unwrap()), vec![3.0, 7.0]);
}

/// Intermediate gradients are freed as soon as their node consumes them: along a chain of 60
/// ops at most a couple of gradients are alive at once, not one per op.
#[test]
fn intermediate_gradients_are_freed_along_a_chain() {
    let tape = Tape::new();
    let x = tape.param(t(&[0.5, -0.25, 1.0], &[3]));
    let mut y = x.clone();
    for _ in 0..60 {
        y = y.tanh().unwrap().mul_scalar(1.5).unwrap();
    }
    let grads = tape.backward(&y.sum_all().unwrap()).unwrap();
    assert_eq!(grads.len(), 1);
    assert!(grads.peak_live() <= 2, "peak live gradients {}", grads.peak_live());
}

/// Hooks and custom backward rules may use the tape they run on (here: read its length and
/// record a new op) without deadlocking, because backward runs on a snapshot.
#[test]
fn a_hook_may_use_its_own_tape() {
    let tape = Tape::new();
    let x = tape.param(t(&[1.0, 2.0], &[2]));
    let y = x.square().unwrap();
    let seen = Arc::new(Mutex::new(0usize));
    let (tape2, x2, seen2) = (tape.clone(), x.clone(), seen.clone());
    y.register_hook(move |g| {
        *seen2.lock().unwrap() = tape2.len();
        let _recorded = x2.mul_scalar(2.0)?; // records onto the same tape mid-backward
        Ok(Some(g.mul_scalar(10.0)?))
    })
    .unwrap();
    let loss = y.sum_all().unwrap();
    let before = tape.len();
    let grads = tape.backward(&loss).unwrap();
    assert_eq!(*seen.lock().unwrap(), before);
    assert_eq!(values(grads.get(&x).unwrap()), vec![20.0, 40.0]);
}

#[test]
fn add_n_passes_its_gradient_to_every_part() {
    let tape = Tape::new();
    let a = tape.param(t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]));
    let b = tape.param(t(&[0.5, -1.0], &[2])); // broadcast over the rows
    let c = Var::constant(t(&[10.0, 20.0, 30.0, 40.0], &[2, 2]));
    let w = Var::constant(t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]));
    // The same part twice: its gradient accumulates.
    let sum = Var::add_n(&[&a, &b, &c, &a]).unwrap();
    assert_eq!(values(sum.tensor()), vec![12.5, 23.0, 36.5, 47.0]);
    let grads = tape.backward(&sum.mul(&w).unwrap().sum_all().unwrap()).unwrap();
    assert_eq!(values(grads.get(&a).unwrap()), vec![2.0, 4.0, 6.0, 8.0]);
    assert_eq!(values(grads.get(&b).unwrap()), vec![4.0, 6.0]);
    assert!(grads.get(&c).is_none());
}
