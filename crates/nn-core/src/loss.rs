//! Loss functions: cross-entropy on one-hot or integer targets, from probabilities or logits.

use serde::{Deserialize, Serialize};

/// A classification loss, by its Keras name.
///
/// When the model's last layer is a softmax and the loss is a cross-entropy on probabilities,
/// the two are computed together from the logits (`log_softmax`), the numerically stable fused
/// form Keras's TensorFlow backend also uses; the gradient reaching the logits is then simply
/// `(p - y) / batch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Loss {
    /// Targets are one-hot rows `[batch, classes]` (`to_categorical`).
    CategoricalCrossentropy {
        /// The model outputs unnormalised logits rather than probabilities.
        #[serde(default)]
        from_logits: bool,
    },
    /// Targets are integer class labels `[batch]`.
    SparseCategoricalCrossentropy {
        /// The model outputs unnormalised logits rather than probabilities.
        #[serde(default)]
        from_logits: bool,
    },
}

impl Default for Loss {
    fn default() -> Self {
        Loss::SparseCategoricalCrossentropy { from_logits: false }
    }
}

impl Loss {
    /// Whether the model's output is read as logits.
    pub fn from_logits(self) -> bool {
        match self {
            Loss::CategoricalCrossentropy { from_logits } | Loss::SparseCategoricalCrossentropy { from_logits } => {
                from_logits
            }
        }
    }
    /// Whether targets are integer labels (`true`) or one-hot rows (`false`).
    pub fn sparse(self) -> bool {
        matches!(self, Loss::SparseCategoricalCrossentropy { .. })
    }
    /// The Keras name.
    pub fn name(self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy { .. } => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy { .. } => "sparse_categorical_crossentropy",
        }
    }
    /// Parses a Keras name.
    pub fn from_name(name: &str, from_logits: bool) -> Option<Loss> {
        match name {
            "categorical_crossentropy" | "categorical" | "cce" => Some(Loss::CategoricalCrossentropy { from_logits }),
            "sparse_categorical_crossentropy" | "sparse" | "scce" => {
                Some(Loss::SparseCategoricalCrossentropy { from_logits })
            }
            _ => None,
        }
    }
}

/// Keras's `epsilon()`: probabilities are clipped to `[EPSILON, 1 - EPSILON]` before the log.
pub const EPSILON: f32 = 1e-7;

/// What a device's cross-entropy kernel is asked to compute for one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XentArgs {
    /// Rows of the batch.
    pub rows: usize,
    /// Classes.
    pub cols: usize,
    /// The outputs are logits (fused log-softmax) rather than probabilities.
    pub logits: bool,
    /// Targets are labels `[rows]` (as `f32`) rather than rows `[rows, cols]`.
    pub sparse: bool,
    /// Factor applied to the gradient (`1 / batch` for a mean loss).
    pub grad_scale: f32,
}
