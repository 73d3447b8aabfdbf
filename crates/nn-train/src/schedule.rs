//! Learning-rate schedules: the rate of each step from the base rate.

use serde::{Deserialize, Serialize};

/// How the learning rate changes during training (`step` counts updates from 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `factor` every `every_epochs` epochs (Keras's step decay).
    Step {
        /// Factor, e.g. 0.5.
        factor: f32,
        /// Epochs between drops.
        every_epochs: usize,
    },
    /// `lr · rate^(step / decay_steps)` (Keras's `ExponentialDecay`, smooth).
    Exponential {
        /// Decay rate, e.g. 0.96.
        rate: f32,
        /// Steps per decay.
        decay_steps: usize,
    },
    /// Cosine decay from the base rate to `alpha · base` over `total_steps` (Keras's `CosineDecay`).
    Cosine {
        /// Steps to decay over (the schedule stays at the floor after); 0: the whole run.
        total_steps: usize,
        /// Floor as a fraction of the base rate.
        alpha: f32,
    },
    /// One-cycle: linear warm-up from `base/div` to the base rate over `warmup` of the steps,
    /// then cosine down to `base/final_div` (Smith's super-convergence).
    OneCycle {
        /// Total steps of the run; 0: the whole run.
        total_steps: usize,
        /// Fraction of the steps spent warming up.
        warmup: f32,
        /// Start rate is `base / div`.
        div: f32,
        /// End rate is `base / final_div`.
        final_div: f32,
    },
}

impl Schedule {
    /// Fills in a `total_steps` of 0 (meaning "the whole run") with the run's length.
    pub fn resolved(self, run_steps: usize) -> Schedule {
        match self {
            Schedule::Cosine { total_steps: 0, alpha } => Schedule::Cosine { total_steps: run_steps, alpha },
            Schedule::OneCycle { total_steps: 0, warmup, div, final_div } => {
                Schedule::OneCycle { total_steps: run_steps, warmup, div, final_div }
            }
            other => other,
        }
    }

    /// The schedule for a new run of another length: one fixed to a run's length (cosine,
    /// one-cycle) covers the whole of the next ([`Schedule::resolved`] fixes it again); the
    /// others are kept.
    #[must_use]
    pub fn restarted(self) -> Schedule {
        match self {
            Schedule::Cosine { alpha, .. } => Schedule::Cosine { total_steps: 0, alpha },
            Schedule::OneCycle { warmup, div, final_div, .. } => {
                Schedule::OneCycle { total_steps: 0, warmup, div, final_div }
            }
            other => other,
        }
    }

    /// The learning rate of update `step` (0-based) in epoch `epoch` (0-based).
    pub fn lr(&self, base: f32, step: u64, epoch: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { factor, every_epochs } => base * factor.powi((epoch / every_epochs.max(1)) as i32),
            Schedule::Exponential { rate, decay_steps } => base * rate.powf(step as f32 / decay_steps.max(1) as f32),
            Schedule::Cosine { total_steps, alpha } => {
                let p = (step as f32 / total_steps.max(1) as f32).min(1.0);
                let cos = 0.5 * (1.0 + (std::f32::consts::PI * p).cos());
                base * ((1.0 - alpha) * cos + alpha)
            }
            Schedule::OneCycle { total_steps, warmup, div, final_div } => {
                let total = total_steps.max(1) as f32;
                let up = (warmup * total).max(1.0);
                let s = step as f32;
                if s < up {
                    let start = base / div;
                    start + (base - start) * s / up
                } else {
                    let p = ((s - up) / (total - up).max(1.0)).min(1.0);
                    let end = base / final_div;
                    end + (base - end) * 0.5 * (1.0 + (std::f32::consts::PI * p).cos())
                }
            }
        }
    }

    /// Whether the schedule's settings give learning rates that can train: positive factors,
    /// rates and divisors, fractions in `[0, 1]`, at least one epoch or step between decays.
    /// [`crate::Trainer::fit`] checks it before any work.
    ///
    /// # Errors
    /// The first setting that cannot, in words (`schedule step: factor -1 must be a positive
    /// number`): a negative factor would climb the loss, a zero one stop training, a NaN
    /// make every weight NaN.
    pub fn check(&self) -> Result<(), String> {
        let positive = |what: &str, name: &str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("schedule {name}: {what} {v} must be a positive number"))
            }
        };
        let fraction = |what: &str, name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("schedule {name}: {what} {v} must be between 0 and 1"))
            }
        };
        let at_least_one = |what: &str, name: &str, v: usize| {
            if v >= 1 {
                Ok(())
            } else {
                Err(format!("schedule {name}: {what} must be at least 1"))
            }
        };
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { factor, every_epochs } => {
                positive("factor", "step", factor)?;
                at_least_one("every_epochs", "step", every_epochs)
            }
            Schedule::Exponential { rate, decay_steps } => {
                positive("rate", "exponential", rate)?;
                at_least_one("decay_steps", "exponential", decay_steps)
            }
            Schedule::Cosine { alpha, .. } => fraction("alpha", "cosine", alpha),
            Schedule::OneCycle { warmup, div, final_div, .. } => {
                fraction("warmup", "one-cycle", warmup)?;
                positive("div", "one-cycle", div)?;
                positive("final_div", "one-cycle", final_div)
            }
        }
    }

    /// Parses `constant`, `step`, `exponential`, `cosine` or `onecycle` with sensible settings
    /// for a run of `epochs` epochs of `steps_per_epoch` updates.
    pub fn from_name(name: &str, epochs: usize, steps_per_epoch: usize) -> Option<Schedule> {
        let total = epochs.saturating_mul(steps_per_epoch);
        Some(match name {
            "constant" | "none" => Schedule::Constant,
            "step" => Schedule::Step { factor: 0.5, every_epochs: (epochs / 3).max(1) },
            "exponential" | "exp" => Schedule::Exponential { rate: 0.96, decay_steps: steps_per_epoch.max(1) },
            "cosine" => Schedule::Cosine { total_steps: total, alpha: 0.0 },
            "onecycle" | "one-cycle" => {
                Schedule::OneCycle { total_steps: total, warmup: 0.25, div: 25.0, final_div: 1e4 }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_their_formulas() {
        assert_eq!(Schedule::Constant.lr(0.1, 99, 3), 0.1);
        let s = Schedule::Step { factor: 0.5, every_epochs: 2 };
        assert_eq!((s.lr(1.0, 0, 1), s.lr(1.0, 0, 2), s.lr(1.0, 0, 5)), (1.0, 0.5, 0.25));
        let e = Schedule::Exponential { rate: 0.5, decay_steps: 10 };
        assert!((e.lr(1.0, 10, 0) - 0.5).abs() < 1e-6 && (e.lr(1.0, 5, 0) - 0.5f32.sqrt()).abs() < 1e-6);
        let c = Schedule::Cosine { total_steps: 100, alpha: 0.1 };
        assert!((c.lr(1.0, 0, 0) - 1.0).abs() < 1e-6 && (c.lr(1.0, 100, 0) - 0.1).abs() < 1e-6);
        assert!((c.lr(1.0, 50, 0) - 0.55).abs() < 1e-6);
        let o = Schedule::OneCycle { total_steps: 100, warmup: 0.2, div: 10.0, final_div: 100.0 };
        assert!((o.lr(1.0, 0, 0) - 0.1).abs() < 1e-6 && (o.lr(1.0, 20, 0) - 1.0).abs() < 1e-6);
        assert!((o.lr(1.0, 100, 0) - 0.01).abs() < 1e-6);
    }

    #[test]
    fn a_restarted_schedule_covers_the_next_run() {
        let cosine = Schedule::Cosine { total_steps: 938, alpha: 0.1 };
        assert_eq!(cosine.restarted(), Schedule::Cosine { total_steps: 0, alpha: 0.1 });
        assert_eq!(cosine.restarted().resolved(100), Schedule::Cosine { total_steps: 100, alpha: 0.1 });
        let step = Schedule::Step { factor: 0.5, every_epochs: 2 };
        assert_eq!(step.restarted(), step);
    }

    #[test]
    fn a_run_too_long_to_count_saturates() {
        // 2^61 epochs of 8 steps wrapped round to 0 steps ("the whole run"), and the rate fell
        // as if the run were 8 steps long.
        let cosine = Schedule::from_name("cosine", 1 << 61, 8);
        assert_eq!(cosine, Some(Schedule::Cosine { total_steps: usize::MAX, alpha: 0.0 }));
        let rate = cosine.map(|s| s.lr(0.1, 8, 1));
        assert!(rate.is_some_and(|r| (r - 0.1).abs() < 1e-6), "{rate:?}");
    }

    #[test]
    fn settings_that_cannot_train_are_named() {
        for name in ["constant", "step", "exponential", "cosine", "onecycle"] {
            assert_eq!(Schedule::from_name(name, 10, 469).unwrap().check(), Ok(()), "{name}");
        }
        let cases = [
            (Schedule::Step { factor: -1.0, every_epochs: 1 }, "schedule step: factor -1 must be a positive number"),
            (Schedule::Step { factor: 0.5, every_epochs: 0 }, "schedule step: every_epochs must be at least 1"),
            (Schedule::Exponential { rate: 0.0, decay_steps: 10 }, "schedule exponential: rate 0 must be a positive"),
            (
                Schedule::Cosine { total_steps: 0, alpha: f32::NAN },
                "schedule cosine: alpha NaN must be between 0 and 1",
            ),
            (
                Schedule::OneCycle { total_steps: 0, warmup: 0.25, div: 0.0, final_div: 1e4 },
                "schedule one-cycle: div 0 must be a positive number",
            ),
        ];
        for (s, needle) in cases {
            let err = s.check().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
