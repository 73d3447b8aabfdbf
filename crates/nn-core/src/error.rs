//! The error type of nn-core.

use std::path::PathBuf;

/// Everything that can go wrong while building, running, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A tensor's shape does not fit where it is used; names the layer and both shapes.
    #[error("{layer}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// The layer (e.g. `dense_1 (Dense)`) or operation.
        layer: String,
        /// The shape it needs.
        expected: Vec<usize>,
        /// The shape it got.
        found: Vec<usize>,
    },
    /// An architecture or option that cannot work (e.g. `Dense(0)`, dropout rate 1.5).
    #[error("{0}")]
    Spec(String),
    /// A failure of the compute device (allocation, kernel launch, missing driver).
    #[error("device: {0}")]
    Device(String),
    /// A model file that cannot be read or does not hold a valid model.
    #[error("{path}: {message}")]
    File {
        /// The model file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = NnError> = std::result::Result<T, E>;

impl NnError {
    pub(crate) fn spec(msg: impl Into<String>) -> Self {
        NnError::Spec(msg.into())
    }
    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        NnError::File { path: path.into(), message: message.into() }
    }
}
