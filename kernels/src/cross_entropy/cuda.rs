//! Launchers of `cross_entropy.ptx`. The only code that knows the entries' parameter order.

use crate::launch::{CudaSlice, GpuContext, GpuError, LaunchConfig, MAX_BLOCKS_1D};
use crate::registry::{
    CROSS_ENTROPY_F32_BWD, CROSS_ENTROPY_F32_FWD, CROSS_ENTROPY_F32_MEAN, ModuleId,
};

/// The logits operand: `rows` x `classes`, row `n` at `n * row_stride` of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Logits {
    pub rows: usize,
    pub classes: usize,
    pub row_stride: usize,
}

impl Logits {
    /// Contiguous `rows` x `classes`.
    pub fn contiguous(rows: usize, classes: usize) -> Self {
        Self {
            rows,
            classes,
            row_stride: classes,
        }
    }
}

fn invalid(op: &'static str, msg: String) -> GpuError {
    GpuError::Invalid { op, msg }
}

fn check_logits(op: &'static str, s: &Logits, len: usize, targets: usize) -> Result<(), GpuError> {
    if targets != s.rows {
        return Err(invalid(
            op,
            format!("{targets} targets for {} rows", s.rows),
        ));
    }
    if s.rows == 0 {
        return Ok(());
    }
    if s.row_stride < s.classes {
        return Err(invalid(
            op,
            format!(
                "row stride {} is shorter than the {} classes",
                s.row_stride, s.classes
            ),
        ));
    }
    let need = (s.rows - 1)
        .checked_mul(s.row_stride)
        .and_then(|a| a.checked_add(s.classes));
    if need.is_none_or(|need| need > len) {
        return Err(invalid(
            op,
            format!("{s:?} reaches past the logits' {len} elements"),
        ));
    }
    Ok(())
}

fn row_grid(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((rows as u64).clamp(1, MAX_BLOCKS_1D) as u32, 1, 1),
        block_dim: (256, 1, 1), // the PTX requires exactly 256 (.reqntid)
        shared_mem_bytes: 0,
    }
}

/// Forward: `loss[0]` = mean over kept rows of `lse_n - z[n, t_n]` (0 when none is kept),
/// `kept[0]` = the number of kept rows `K`, `lse[n]` = each row's log-sum-exp (0 on ignored rows),
/// all on the device for [`cross_entropy_f32_bwd`]. Mirrors `cpu::cross_entropy` within
/// `super::tolerance`. With no rows only the mean stage runs (it writes loss 0 and K = 0).
/// A kept target outside `0..classes` gives `GpuError::Invalid` (outputs then unspecified).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_f32_fwd(
    gpu: &GpuContext,
    logits: &CudaSlice<f32>,
    shape: Logits,
    targets: &CudaSlice<i64>,
    ignore_index: Option<i64>,
    loss: &mut CudaSlice<f32>,
    kept: &mut CudaSlice<u64>,
    lse: &mut CudaSlice<f64>,
) -> Result<(), GpuError> {
    let op = CROSS_ENTROPY_F32_FWD.name;
    check_logits(op, &shape, logits.len(), targets.len())?;
    if loss.len() != 1 || kept.len() != 1 || lse.len() != shape.rows {
        return Err(invalid(
            op,
            format!(
                "loss, kept, lse hold {}, {}, {} values, not 1, 1, {}",
                loss.len(),
                kept.len(),
                lse.len(),
                shape.rows
            ),
        ));
    }
    let rows = shape.rows as u64;
    let mut row_loss = gpu.alloc_zeros::<f64>(shape.rows)?;
    let mut status = gpu.alloc_zeros::<u32>(shape.rows)?;
    let mut bad = gpu.htod(&[u64::MAX])?;
    if rows > 0 {
        let f = gpu.function(ModuleId::CrossEntropy, &CROSS_ENTROPY_F32_FWD)?;
        let (stride, classes) = (shape.row_stride as u64, shape.classes as u64);
        let ignore = ignore_index.unwrap_or(0);
        let has_ignore = u32::from(ignore_index.is_some());
        let mut l = gpu.launch(&f, &CROSS_ENTROPY_F32_FWD);
        // cross_entropy_f32_fwd(logits, row_stride, targets, rows, classes, ignore .s64,
        //                       has_ignore .u32, lse, row_loss, status)
        l.arg(logits)
            .arg(&stride)
            .arg(targets)
            .arg(&rows)
            .arg(&classes)
            .arg(&ignore)
            .arg(&has_ignore)
            .arg(&mut *lse)
            .arg(&mut row_loss)
            .arg(&mut status);
        // SAFETY: arguments match the .param list; check_logits keeps every row inside logits,
        // targets/lse/row_loss/status hold `rows` values, and a logit is read at a target only
        // after the kernel checked it against classes.
        unsafe { l.launch(row_grid(shape.rows)) }?;
    }
    let f = gpu.function(ModuleId::CrossEntropy, &CROSS_ENTROPY_F32_MEAN)?;
    let mut l = gpu.launch(&f, &CROSS_ENTROPY_F32_MEAN);
    // cross_entropy_f32_mean(row_loss, status, rows, loss, kept, bad)
    l.arg(&row_loss)
        .arg(&status)
        .arg(&rows)
        .arg(&mut *loss)
        .arg(&mut *kept)
        .arg(&mut bad);
    // SAFETY: arguments match the .param list; row_loss and status hold `rows` values, loss,
    // kept and bad one each; one block of 256 threads.
    unsafe { l.launch(row_grid(1)) }?;
    let first_bad = gpu.dtoh(&bad)?[0];
    if first_bad != u64::MAX {
        return Err(invalid(
            op,
            format!(
                "targets[{first_bad}] is out of range for {} classes",
                shape.classes
            ),
        ));
    }
    Ok(())
}

/// Backward: `dlogits` (contiguous `rows` x `classes`) = `(softmax - onehot) * dloss[0] / K` on
/// kept rows, 0 on ignored rows, from the forward's `lse` and `kept`. Mirrors
/// `cpu::cross_entropy_grad` (times `dloss`) within `super::tolerance`. A kept target outside
/// `0..classes` gives `GpuError::Invalid`.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_f32_bwd(
    gpu: &GpuContext,
    logits: &CudaSlice<f32>,
    shape: Logits,
    targets: &CudaSlice<i64>,
    ignore_index: Option<i64>,
    lse: &CudaSlice<f64>,
    kept: &CudaSlice<u64>,
    dloss: &CudaSlice<f32>,
    dlogits: &mut CudaSlice<f32>,
) -> Result<(), GpuError> {
    let op = CROSS_ENTROPY_F32_BWD.name;
    check_logits(op, &shape, logits.len(), targets.len())?;
    let out = shape.rows.checked_mul(shape.classes);
    if out != Some(dlogits.len()) || lse.len() != shape.rows || kept.len() != 1 || dloss.len() != 1
    {
        return Err(invalid(
            op,
            format!(
                "dlogits, lse, kept, dloss hold {}, {}, {}, {} values, not {} x {}, {}, 1, 1",
                dlogits.len(),
                lse.len(),
                kept.len(),
                dloss.len(),
                shape.rows,
                shape.classes,
                shape.rows
            ),
        ));
    }
    if shape.rows == 0 {
        return Ok(());
    }
    let mut err = gpu.htod(&[u64::MAX])?;
    let f = gpu.function(ModuleId::CrossEntropy, &CROSS_ENTROPY_F32_BWD)?;
    let (stride, rows, classes) = (
        shape.row_stride as u64,
        shape.rows as u64,
        shape.classes as u64,
    );
    let ignore = ignore_index.unwrap_or(0);
    let has_ignore = u32::from(ignore_index.is_some());
    let mut l = gpu.launch(&f, &CROSS_ENTROPY_F32_BWD);
    // cross_entropy_f32_bwd(logits, row_stride, targets, rows, classes, ignore .s64,
    //                       has_ignore .u32, lse, kept, dloss, dlogits, err)
    l.arg(logits)
        .arg(&stride)
        .arg(targets)
        .arg(&rows)
        .arg(&classes)
        .arg(&ignore)
        .arg(&has_ignore)
        .arg(lse)
        .arg(kept)
        .arg(dloss)
        .arg(&mut *dlogits)
        .arg(&mut err);
    // SAFETY: arguments match the .param list; rows stay inside logits (check_logits) and
    // dlogits (rows x classes); lse holds `rows` values, kept/dloss/err one each.
    unsafe { l.launch(row_grid(shape.rows)) }?;
    let first_bad = gpu.dtoh(&err)?[0];
    if first_bad != u64::MAX {
        return Err(invalid(
            op,
            format!(
                "targets[{first_bad}] is out of range for {} classes",
                shape.classes
            ),
        ));
    }
    Ok(())
}
