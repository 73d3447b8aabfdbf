//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while drawing a picture or reading a digit from one.
///
/// Every variant names the file it is about, so a message printed to a user says where to look.
#[derive(Debug, thiserror::Error)]
pub enum VizError {
    /// The file (or its folder) could not be read, created or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder that failed.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an image this crate can read (PNG, JPEG or BMP), or it is damaged.
    #[error("{path}: {message}")]
    Decode {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The data handed in cannot be drawn (e.g. 9 titles for 10 images, a matrix that is not
    /// square); nothing was written.
    #[error("{path}: cannot draw: {message}")]
    Invalid {
        /// The picture that was to be written.
        path: PathBuf,
        /// What is inconsistent, with the expected and the found value.
        message: String,
    },
    /// Drawing or encoding the picture failed (e.g. the embedded font could not be registered).
    #[error("{path}: drawing failed: {message}")]
    Draw {
        /// The picture that was to be written.
        path: PathBuf,
        /// The drawing library's reason.
        message: String,
    },
    /// The image was read but no digit could be found in it (see [`DigitizeError`]).
    #[error("{path}: {source}")]
    Digitize {
        /// The image file.
        path: PathBuf,
        /// Why no MNIST-style digit came out of it.
        #[source]
        source: DigitizeError,
    },
}

/// Why a picture could not be turned into an MNIST-style digit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigitizeError {
    /// Nothing stands out from the background: a blank page, one flat colour, or only noise.
    #[error("no digit found: {0}")]
    NoDigit(String),
    /// The pixel buffer does not hold `width × height` pixels (or one side is 0).
    #[error("bad pixel buffer: {0}")]
    BadBuffer(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = VizError> = std::result::Result<T, E>;

impl VizError {
    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        VizError::Invalid { path: path.into(), message: message.into() }
    }
    pub(crate) fn draw(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        VizError::Draw { path: path.into(), message: message.into() }
    }
}
