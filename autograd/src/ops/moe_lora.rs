//! MoE-LoRA expert dispatch on the tape: gradients for the input, the gate values and both
//! expert factor tensors, from one fused backward (`Tensor::moe_lora_backward`).

use brainstacks_tensor::Tensor;

use crate::{Result, Var, record};

impl Var {
    /// `out_t = sum_j gates[t, j] * scale * B_e A_e x_t`, `e = idx[t, j]` (self is `x` `[T, d_in]`;
    /// `idx` an i64 constant `[T, k]`; `gates` `[T, k]`; `a` `[E, r, d_in]`; `b` `[E, d_out, r]`).
    pub fn moe_lora(&self, idx: &Tensor, gates: &Var, a: &Var, b: &Var, scale: f64) -> Result<Var> {
        let (x, g, at, bt) = (self.tensor().clone(), gates.tensor().clone(), a.tensor().clone(), b.tensor().clone());
        // The forward keeps its expert activations so the backward does not recompute them.
        let (out, saved) = Tensor::moe_lora_keeping(&x, idx, &g, &at, &bt, scale)?;
        let idx = idx.clone();
        record("moe_lora", &[self, gates, a, b], out, move |dy, needs| {
            if !needs.iter().any(|&n| n) {
                return Ok(vec![None, None, None, None]);
            }
            if !needs[2] && !needs[3] {
                // Constant expert weights (a frozen stack): skip their gradients' GEMMs.
                let g = Tensor::moe_lora_input_backward_kept(&x, &idx, &g, &at, &bt, scale, dy, &saved)?;
                return Ok(vec![needs[0].then_some(g.dx), needs[1].then_some(g.dgates), None, None]);
            }
            let grads = Tensor::moe_lora_backward_kept(&x, &idx, &g, &at, &bt, scale, dy, &saved)?;
            Ok(vec![
                needs[0].then_some(grads.dx),
                needs[1].then_some(grads.dgates),
                needs[2].then_some(grads.da),
                needs[3].then_some(grads.db),
            ])
        })
    }
}
