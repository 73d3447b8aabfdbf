//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading, preparing or fetching a data set.
///
/// Every variant about a file names it (or its folder, or URL), so a message printed to a user
/// says where to look; [`DataError::Config`] is about the caller's settings, not a file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but its contents are not what they claim to be.
    #[error("{path}: {message}")]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, with the expected and the found value.
        message: String,
    },
    /// A file of a data set is missing from its folder.
    #[error("{dir}: no {what} file (looked for {looked_for}); download them (`mnist fetch`, or `mnist_data::fetch` with its `fetch` feature) or copy them there")]
    Missing {
        /// The folder searched.
        dir: PathBuf,
        /// Which file (e.g. "training images").
        what: &'static str,
        /// The names tried, comma separated.
        looked_for: String,
    },
    /// Arguments that cannot work together (e.g. a batch size of 0).
    #[error("{0}")]
    Config(String),
    /// A download failed (network, HTTP status, or checksum).
    #[error("{url}: {message}")]
    Fetch {
        /// What was being downloaded.
        url: String,
        /// What went wrong and, when offline, where to put the files by hand.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Invalid { path: path.into(), message: message.into() }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}
