//! The per-tensor arithmetic of the optimisers, as data a device executes in one fused pass.
//! The policies around it (Keras defaults, learning-rate schedules) live in `nn-train`.

use serde::{Deserialize, Serialize};

use crate::cpu::adam::AdamStep;

/// One optimiser's update rule, applied to each parameter tensor with its gradient and its
/// state slots (the formulas are Keras 3's).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum UpdateRule {
    /// `v = μv - ηg; w += v` (Nesterov: `w += μv - ηg`). Slots: velocity (when `μ > 0`).
    Sgd {
        /// Momentum `μ`.
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// `m += (g - m)(1 - β1); v += (g² - v)(1 - β2); w -= η √(1-β2ᵗ)/(1-β1ᵗ) · m / (√v + ε)`.
    /// Slots: `m`, `v`.
    Adam {
        /// β1.
        beta_1: f32,
        /// β2.
        beta_2: f32,
        /// ε.
        epsilon: f32,
    },
    /// `v = ρv + (1-ρ)g²; Δ = ηg / √(v + ε)`; with momentum `m = μm + Δ; w -= m`, else `w -= Δ`.
    /// Slots: `v` (and `m` with momentum).
    RmsProp {
        /// ρ.
        rho: f32,
        /// Momentum μ.
        momentum: f32,
        /// ε.
        epsilon: f32,
    },
}

impl UpdateRule {
    /// How many state tensors of the parameter's size the rule keeps.
    pub fn slots(&self) -> usize {
        match *self {
            UpdateRule::Sgd { momentum, .. } => usize::from(momentum != 0.0),
            UpdateRule::Adam { .. } => 2,
            UpdateRule::RmsProp { momentum, .. } => 1 + usize::from(momentum != 0.0),
        }
    }
}

/// The per-step numbers of an update: learning rate and the 1-based step count (for Adam's bias
/// correction).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepParams {
    /// Learning rate η of this step (after the schedule).
    pub lr: f32,
    /// 1-based index of this update.
    pub t: u64,
}

/// Applies `rule` to one tensor on the host: the reference every device matches.
pub fn update_host(rule: &UpdateRule, sp: StepParams, w: &mut [f32], g: &[f32], slots: &mut [&mut [f32]]) {
    let prepared = Prepared::new(rule, sp);
    crate::cpu::simd::with_simd(
        #[inline(always)]
        || prepared.apply(w, g, slots),
    )
}

/// An update rule with the numbers of one step worked out (Adam's bias-corrected rate), to
/// apply to a whole tensor or, slice by slice, to a share of it (the same bits either way).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prepared {
    rule: UpdateRule,
    lr: f32,
    /// Adam's `η √(1-β2ᵗ)/(1-β1ᵗ)` (unused by the other rules).
    lr_t: f32,
}

impl Prepared {
    pub(crate) fn new(rule: &UpdateRule, sp: StepParams) -> Prepared {
        let lr_t = match *rule {
            UpdateRule::Adam { beta_1, beta_2, .. } => {
                // Past 2^31 steps β^t is 0 in f32 anyway: the exponent saturates, not wraps.
                let t = i32::try_from(sp.t).unwrap_or(i32::MAX);
                sp.lr * (1.0 - beta_2.powi(t)).sqrt() / (1.0 - beta_1.powi(t))
            }
            _ => sp.lr,
        };
        Prepared { rule: *rule, lr: sp.lr, lr_t }
    }

    /// Updates `w` (with its gradient `g` and its state `slots`, all the same length).
    #[inline(always)]
    pub(crate) fn apply(&self, w: &mut [f32], g: &[f32], slots: &mut [&mut [f32]]) {
        let lr = self.lr;
        match self.rule {
            UpdateRule::Sgd { momentum, nesterov } => {
                if momentum == 0.0 {
                    for (w, &g) in w.iter_mut().zip(g) {
                        *w -= lr * g;
                    }
                } else {
                    let v = &mut *slots[0];
                    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
                        *v = momentum * *v - lr * g;
                        *w += if nesterov { momentum * *v - lr * g } else { *v };
                    }
                }
            }
            UpdateRule::Adam { beta_1, beta_2, epsilon } => {
                let (ms, vs) = slots.split_at_mut(1);
                let step = AdamStep { c1: 1.0 - beta_1, c2: 1.0 - beta_2, lr_t: self.lr_t, epsilon };
                step.apply(w, g, &mut *ms[0], &mut *vs[0]);
            }
            UpdateRule::RmsProp { rho, momentum, epsilon } => {
                let (vs, ms) = slots.split_at_mut(1);
                let v = &mut *vs[0];
                for (i, (w, &g)) in w.iter_mut().zip(g).enumerate() {
                    v[i] = rho * v[i] + (1.0 - rho) * g * g;
                    let inc = lr * g / (v[i] + epsilon).sqrt();
                    if momentum != 0.0 {
                        let m = &mut ms[0][i];
                        *m = momentum * *m + inc;
                        *w -= *m;
                    } else {
                        *w -= inc;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `rule` for a few steps of gradients on one weight, with fresh state.
    fn run(rule: UpdateRule, lr: f32, grads: &[f32]) -> Vec<f32> {
        let (mut w, mut slots) = (vec![1.0f32], vec![vec![0.0f32]; rule.slots()]);
        let mut out = Vec::new();
        for (t, &g) in grads.iter().enumerate() {
            let mut views: Vec<&mut [f32]> = slots.iter_mut().map(|s| s.as_mut_slice()).collect();
            update_host(&rule, StepParams { lr, t: t as u64 + 1 }, &mut w, &[g], &mut views);
            out.push(w[0]);
        }
        out
    }

    fn close(got: &[f32], want: &[f64]) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()), "step {}: {g} vs {w}", i + 1);
        }
    }

    /// Each rule against its Keras 3 formula, written out by hand for three steps of one weight
    /// (w₀ = 1, gradients 0.5, −0.2, 0.3, learning rate 0.1).
    #[test]
    fn adam_past_two_to_the_31_steps_is_bias_free_not_nan() {
        // The step count cast to i32 wrapped negative at 2^31: β^t overflowed and the rate
        // became NaN. Past it, β^t is 0: the rate is η.
        let rule = UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 };
        for t in [1 << 31, u64::MAX] {
            let p = Prepared::new(&rule, StepParams { lr: 0.001, t });
            assert_eq!(p.lr_t, 0.001, "step {t}");
        }
    }

    #[test]
    fn every_rule_takes_the_steps_of_its_keras_formula() {
        let grads = [0.5f32, -0.2, 0.3];
        // SGD: w -= η g.
        close(&run(UpdateRule::Sgd { momentum: 0.0, nesterov: false }, 0.1, &grads), &[0.95, 0.97, 0.94]);
        // Momentum: v = μv − ηg; w += v.  v: −0.05, 0.02 − 0.045 = −0.025, −0.03 − 0.0225.
        let want = [0.95, 0.925, 0.8725];
        close(&run(UpdateRule::Sgd { momentum: 0.9, nesterov: false }, 0.1, &grads), &want);
        // Nesterov: v as above; w += μv − ηg.
        let want = [1.0 - 0.045 - 0.05, 0.905 - 0.0225 + 0.02, 0.9025 - 0.04725 - 0.03];
        close(&run(UpdateRule::Sgd { momentum: 0.9, nesterov: true }, 0.1, &grads), &want);
        // Adam: m, v moving averages; w -= η √(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε).
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-7f64);
        let (mut m, mut v, mut w, mut want) = (0.0, 0.0, 1.0, Vec::new());
        for (t, &g) in grads.iter().enumerate() {
            let (g, t) = (g as f64, t as i32 + 1);
            m += (g - m) * (1.0 - b1);
            v += (g * g - v) * (1.0 - b2);
            w -= 0.1 * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t)) * m / (v.sqrt() + eps);
            want.push(w);
        }
        // Its first step moves each weight by about η, whatever the gradient's size.
        assert!((want[0] - 0.9).abs() < 1e-4);
        close(&run(UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 }, 0.1, &grads), &want);
        // RMSprop: v = ρv + (1−ρ)g²; Δ = ηg/√(v + ε); with momentum m = μm + Δ, w -= m.
        for momentum in [0.0f64, 0.5] {
            let (mut v, mut mo, mut w, mut want) = (0.0f64, 0.0f64, 1.0f64, Vec::new());
            for &g in &grads {
                let g = g as f64;
                v = 0.9 * v + 0.1 * g * g;
                let inc = 0.1 * g / (v + 1e-7).sqrt();
                mo = momentum * mo + inc;
                w -= if momentum > 0.0 { mo } else { inc };
                want.push(w);
            }
            let rule = UpdateRule::RmsProp { rho: 0.9, momentum: momentum as f32, epsilon: 1e-7 };
            close(&run(rule, 0.1, &grads), &want);
        }
    }
}
