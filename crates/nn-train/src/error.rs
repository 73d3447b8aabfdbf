//! The error type of nn-train.

/// Everything that can stop training, evaluation or a search.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// From the model (shapes, device, model files).
    #[error(transparent)]
    Nn(#[from] nn_core::NnError),
    /// From the data (files, batches, splits).
    #[error(transparent)]
    Data(#[from] mnist_data::DataError),
    /// Options that cannot work together.
    #[error("{0}")]
    Config(String),
    /// A callback's own failure (a log it could not write, a service it could not reach), as
    /// it was: `TrainError::Callback(e.into())` for any error `e` inside a [`crate::Callback`]
    /// (or `.map_err(|e| TrainError::Callback(e.into()))?`). Its message and source are `e`'s.
    #[error(transparent)]
    Callback(Box<dyn std::error::Error + Send + Sync>),
    /// A checkpoint that cannot be resumed from.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
