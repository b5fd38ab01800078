//! Batched matmul. `dA = dC B^T`, `dB = A^T dC`, each summed over broadcast batch dims. The
//! transposes are views, so no operand is copied to form them.

use crate::{Result, Var, record};

impl Var {
    /// Batched matrix product `[..., m, k] x [..., k, n]` with broadcasting batch dims (operands
    /// may be strided views, e.g. `w.t()`).
    pub fn matmul(&self, rhs: &Var) -> Result<Var> {
        let (a, b) = (self.tensor().clone(), rhs.tensor().clone());
        let out = a.matmul(&b)?;
        record("matmul", &[self, rhs], out, move |g, needs| {
            let da = if needs[0] { Some(g.matmul(&b.t()?)?.sum_to_shape(a.shape())?) } else { None };
            let db = if needs[1] { Some(a.t()?.matmul(g)?.sum_to_shape(b.shape())?) } else { None };
            Ok(vec![da, db])
        })
    }
}
