//! Optimisers with Keras's defaults. The per-tensor arithmetic runs on the model's device as one
//! fused pass ([`nn_core::UpdateRule`]); this module holds the user-facing settings.

use nn_core::UpdateRule;
use serde::{Deserialize, Serialize};

/// An optimiser and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Optimizer {
    /// Stochastic gradient descent (Keras: lr 0.01, momentum 0, no Nesterov).
    Sgd {
        /// Learning rate.
        learning_rate: f32,
        /// Momentum.
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam (Keras: lr 1e-3, β1 0.9, β2 0.999, ε 1e-7).
    Adam {
        /// Learning rate.
        learning_rate: f32,
        /// β1.
        beta_1: f32,
        /// β2.
        beta_2: f32,
        /// ε.
        epsilon: f32,
    },
    /// RMSprop (Keras: lr 1e-3, ρ 0.9, momentum 0, ε 1e-7).
    RmsProp {
        /// Learning rate.
        learning_rate: f32,
        /// ρ.
        rho: f32,
        /// Momentum.
        momentum: f32,
        /// ε.
        epsilon: f32,
    },
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::adam()
    }
}

impl Optimizer {
    /// Adam with Keras's defaults.
    pub fn adam() -> Optimizer {
        Optimizer::Adam { learning_rate: 1e-3, beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 }
    }
    /// SGD with Keras's defaults.
    pub fn sgd() -> Optimizer {
        Optimizer::Sgd { learning_rate: 0.01, momentum: 0.0, nesterov: false }
    }
    /// RMSprop with Keras's defaults.
    pub fn rmsprop() -> Optimizer {
        Optimizer::RmsProp { learning_rate: 1e-3, rho: 0.9, momentum: 0.0, epsilon: 1e-7 }
    }
    /// Parses `adam`, `sgd` or `rmsprop` with defaults.
    pub fn from_name(name: &str) -> Option<Optimizer> {
        match name.to_ascii_lowercase().as_str() {
            "adam" => Some(Optimizer::adam()),
            "sgd" => Some(Optimizer::sgd()),
            "rmsprop" => Some(Optimizer::rmsprop()),
            _ => None,
        }
    }
    /// The name (`adam`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
            Optimizer::RmsProp { .. } => "rmsprop",
        }
    }
    /// Sets the learning rate.
    pub fn learning_rate(mut self, lr: f32) -> Optimizer {
        match &mut self {
            Optimizer::Sgd { learning_rate, .. }
            | Optimizer::Adam { learning_rate, .. }
            | Optimizer::RmsProp { learning_rate, .. } => *learning_rate = lr,
        }
        self
    }
    /// Sets the momentum (SGD, RMSprop; ignored by Adam).
    pub fn momentum(mut self, m: f32) -> Optimizer {
        match &mut self {
            Optimizer::Sgd { momentum, .. } | Optimizer::RmsProp { momentum, .. } => *momentum = m,
            Optimizer::Adam { .. } => {}
        }
        self
    }
    /// Turns on Nesterov momentum (SGD).
    pub fn nesterov(mut self, on: bool) -> Optimizer {
        if let Optimizer::Sgd { nesterov, .. } = &mut self {
            *nesterov = on;
        }
        self
    }
    /// The base learning rate.
    pub fn lr(&self) -> f32 {
        match *self {
            Optimizer::Sgd { learning_rate, .. }
            | Optimizer::Adam { learning_rate, .. }
            | Optimizer::RmsProp { learning_rate, .. } => learning_rate,
        }
    }
    /// The update rule the device runs.
    pub fn rule(&self) -> UpdateRule {
        match *self {
            Optimizer::Sgd { momentum, nesterov, .. } => UpdateRule::Sgd { momentum, nesterov },
            Optimizer::Adam { beta_1, beta_2, epsilon, .. } => UpdateRule::Adam { beta_1, beta_2, epsilon },
            Optimizer::RmsProp { rho, momentum, epsilon, .. } => UpdateRule::RmsProp { rho, momentum, epsilon },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_keras_and_builders_set_what_they_name() {
        assert_eq!(Optimizer::default(), Optimizer::adam());
        assert_eq!(Optimizer::adam().rule(), UpdateRule::Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 });
        assert_eq!(Optimizer::adam().lr(), 1e-3);
        assert_eq!(Optimizer::sgd().lr(), 0.01);
        assert_eq!(Optimizer::sgd().rule(), UpdateRule::Sgd { momentum: 0.0, nesterov: false });
        assert_eq!(Optimizer::rmsprop().rule(), UpdateRule::RmsProp { rho: 0.9, momentum: 0.0, epsilon: 1e-7 });
        let sgd = Optimizer::sgd().learning_rate(0.1).momentum(0.9).nesterov(true);
        assert_eq!((sgd.lr(), sgd.rule()), (0.1, UpdateRule::Sgd { momentum: 0.9, nesterov: true }));
        assert_eq!(Optimizer::from_name("RMSprop"), Some(Optimizer::rmsprop()));
        assert_eq!(Optimizer::from_name("adagrad"), None);
    }
}
