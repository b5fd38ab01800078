//! Learning-rate schedules, with the semantics of Hugging Face's `get_linear_schedule_with_warmup`
//! and `get_cosine_schedule_with_warmup` (0.5 cycles).
//!
//! `lr_at(step)` takes the number of optimizer steps already taken (0-based) and gives the rate
//! the next step uses: call `opt.set_lr(schedule.lr_at(opt.steps()))` right before
//! `opt.step(..)`. As in Hugging Face, the very first step of a warm-up schedule runs at 0.
//! The method restarts the schedule (and the optimizer) every boosting round (spec §3.1, §10 #14).

use std::f64::consts::PI;

use crate::{Error, Result};

/// How the rate moves from warm-up to the end of training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decay {
    /// Linear to 0 at `total` steps (the method's schedule).
    Linear,
    /// Half a cosine from the peak to 0 at `total` steps.
    Cosine,
    /// Stays at the peak after warm-up.
    Constant,
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then `decay` until `total` steps.
///
/// ```
/// use brainstacks_train::schedule::LrSchedule;
/// let s = LrSchedule::linear(2e-4, 40, 400).unwrap();
/// assert_eq!(s.lr_at(0), 0.0);
/// assert_eq!(s.lr_at(20), 1e-4);
/// assert_eq!(s.lr_at(40), 2e-4);
/// assert_eq!(s.lr_at(220), 1e-4);
/// assert_eq!(s.lr_at(400), 0.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup: u64,
    pub total: u64,
    pub decay: Decay,
}

impl LrSchedule {
    /// Checks `peak` (finite, >= 0); any `warmup` and `total` are accepted, as in Hugging Face.
    pub fn new(peak: f64, warmup: u64, total: u64, decay: Decay) -> Result<Self> {
        if !(peak.is_finite() && peak >= 0.0) {
            return Err(Error::Invalid {
                what: "LrSchedule".into(),
                msg: format!("peak learning rate must be finite and >= 0, got {peak}"),
            });
        }
        Ok(Self { peak, warmup, total, decay })
    }

    /// `get_linear_schedule_with_warmup`.
    pub fn linear(peak: f64, warmup: u64, total: u64) -> Result<Self> {
        Self::new(peak, warmup, total, Decay::Linear)
    }

    /// `get_cosine_schedule_with_warmup` with 0.5 cycles.
    pub fn cosine(peak: f64, warmup: u64, total: u64) -> Result<Self> {
        Self::new(peak, warmup, total, Decay::Cosine)
    }

    /// `get_constant_schedule_with_warmup`.
    pub fn constant(peak: f64, warmup: u64) -> Result<Self> {
        Self::new(peak, warmup, u64::MAX, Decay::Constant)
    }

    /// The multiplier of `peak` after `step` optimizer steps.
    pub fn factor_at(&self, step: u64) -> f64 {
        if step < self.warmup {
            return step as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        // Signed on purpose: past `total` the linear factor clamps at 0, the cosine one turns
        // back up exactly as Hugging Face's formula does (it only clamps below 0).
        let progress = (step as f64 - self.warmup as f64) / span;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => ((self.total as f64 - step as f64) / span).max(0.0),
            Decay::Cosine => (0.5 * (1.0 + (PI * 2.0 * 0.5 * progress).cos())).max(0.0),
        }
    }

    /// The learning rate of the step taken after `step` steps.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.peak * self.factor_at(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1e-300)
    }

    #[test]
    fn linear_matches_hugging_face_values() {
        // lr(step) = peak * step / warmup, then peak * (total - step) / (total - warmup).
        let s = LrSchedule::linear(1e-4, 40, 500).unwrap();
        let cases = [
            (0, 0.0),
            (1, 1e-4 / 40.0),
            (39, 1e-4 * 39.0 / 40.0),
            (40, 1e-4),
            (41, 1e-4 * 459.0 / 460.0),
            (270, 0.5e-4),
            (499, 1e-4 / 460.0),
            (500, 0.0),
            (900, 0.0),
        ];
        for (step, want) in cases {
            assert!(close(s.lr_at(step), want), "step {step}: {} vs {want}", s.lr_at(step));
        }
        // No warm-up: the first step is already at the peak.
        let s = LrSchedule::linear(3.0, 0, 4).unwrap();
        assert_eq!((0..=4).map(|k| s.lr_at(k)).collect::<Vec<_>>(), vec![3.0, 2.25, 1.5, 0.75, 0.0]);
    }

    #[test]
    fn cosine_matches_hugging_face_values() {
        let s = LrSchedule::cosine(2.0, 10, 110).unwrap();
        assert_eq!(s.lr_at(0), 0.0);
        assert!(close(s.lr_at(5), 1.0));
        assert_eq!(s.lr_at(10), 2.0);
        // Progress 1/4: 0.5 * (1 + cos(pi/4)).
        assert!(close(s.lr_at(35), 2.0 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)));
        assert!(close(s.lr_at(60), 1.0));
        assert!(s.lr_at(110) < 1e-15);
        // Monotone decay after warm-up.
        assert!((10..110).all(|k| s.lr_at(k + 1) <= s.lr_at(k)));
    }

    #[test]
    fn constant_and_degenerate_cases() {
        let s = LrSchedule::constant(0.5, 4).unwrap();
        assert_eq!([0, 2, 4, 1_000_000].map(|k| s.lr_at(k)), [0.0, 0.25, 0.5, 0.5]);
        // total <= warmup: Hugging Face divides by max(1, total - warmup).
        let s = LrSchedule::linear(1.0, 10, 5).unwrap();
        assert_eq!(s.lr_at(10), 0.0);
        assert_eq!(s.lr_at(5), 0.5);
        assert!(LrSchedule::linear(f64::NAN, 1, 2).is_err());
        assert!(LrSchedule::cosine(-1.0, 1, 2).is_err());
    }
}
