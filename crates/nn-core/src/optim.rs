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
                let t = sp.t as i32;
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
