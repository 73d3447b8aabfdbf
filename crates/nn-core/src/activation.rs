//! Activation functions applied element-wise (or row-wise for softmax) after a layer.

use serde::{Deserialize, Serialize};

/// Keras's activation names. Each derivative is computed from the activation's *output*, so a
/// layer only keeps its output for the backward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `f(x) = x` (Keras default for `Dense`).
    #[default]
    Linear,
    /// `max(0, x)`.
    Relu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Row-wise `e^x / Σ e^x`; over the last axis of `[batch, classes]`.
    Softmax,
}

impl Activation {
    /// The Keras name (`"relu"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
        }
    }

    /// Parses a Keras name.
    pub fn from_name(s: &str) -> Option<Activation> {
        Some(match s {
            "linear" | "none" => Activation::Linear,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            _ => return None,
        })
    }

    /// The element-wise function (not for softmax, which is row-wise).
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Linear | Activation::Softmax => x,
            Activation::Relu => x.max(0.0),
            Activation::Sigmoid => crate::fastmath::sigmoid(x),
            Activation::Tanh => x.tanh(),
        }
    }

    /// The derivative expressed through the output `y = f(x)` (not for softmax).
    #[inline]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Linear | Activation::Softmax => 1.0,
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
        }
    }
}
