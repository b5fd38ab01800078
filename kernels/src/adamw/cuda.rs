//! Launcher of the fused AdamW step (`adamw.ptx`). The only code that knows the entry's
//! parameter order.

use super::{AdamWParams, step_scalars};
use crate::launch::{CudaSlice, GpuContext, GpuError, grid_1d};
use crate::registry::{ADAMW_F32, ModuleId};

/// One AdamW step `t` (counted from 1) in place on `p`, `m`, `v` with gradient `g`; bit-identical
/// to `cpu::adamw_step_f32(&step_scalars(c, t), ..)`.
pub fn adamw_step_f32(
    gpu: &GpuContext,
    c: &AdamWParams,
    t: u64,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let n = p.len();
    if g.len() != n || m.len() != n || v.len() != n {
        return Err(GpuError::Invalid {
            op: "adamw_f32",
            msg: format!(
                "lengths differ: p {n}, g {}, m {}, v {}",
                g.len(),
                m.len(),
                v.len()
            ),
        });
    }
    if t == 0 {
        return Err(GpuError::Invalid {
            op: "adamw_f32",
            msg: "the step count starts at 1".into(),
        });
    }
    if n == 0 {
        return Ok(());
    }
    let [b1, c1, b2, c2, ib1, ib2, eps, wd, lr] = step_scalars(c, t);
    let n64 = n as u64;
    let f = gpu.function(ModuleId::Adamw, &ADAMW_F32)?;
    let mut l = gpu.launch(&f, &ADAMW_F32);
    // adamw_f32(p, g, m, v, n, b1, c1, b2, c2, ib1, ib2, eps, wd, lr)
    l.arg(&mut *p)
        .arg(g)
        .arg(&mut *m)
        .arg(&mut *v)
        .arg(&n64)
        .arg(&b1)
        .arg(&c1)
        .arg(&b2)
        .arg(&c2)
        .arg(&ib1)
        .arg(&ib2)
        .arg(&eps)
        .arg(&wd)
        .arg(&lr);
    // SAFETY: arguments match the .param list; all four buffers hold n elements.
    unsafe { l.launch(grid_1d(n64)) }
}
