use cascade_core::ErrorKind;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a split or evaluating recommendations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or reading a file failed (including a corrupt gzip stream).
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A line of a split file is not `user \t item \t rating \t ts`.
    #[error("{}:{line}: {reason}", path.display())]
    Malformed { path: PathBuf, line: u64, reason: String },
    /// `test_fraction` outside `0.0..=1.0` (or NaN).
    #[error("test fraction {0} is not within 0..=1")]
    InvalidFraction(f64),
    /// The recommendation lists handed to `evaluate` break the protocol (wrong count, an item
    /// outside the catalogue, a duplicate, or an item the user has in train).
    #[error("invalid recommendations: {0}")]
    InvalidRecommendations(String),
    /// The split has no evaluation user, so every average would be 0/0.
    #[error("the split has no evaluation user (no train user has a test row)")]
    NoEvalUsers,
}

impl Error {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn malformed(path: &Path, line: u64, reason: impl Into<String>) -> Error {
        Error::Malformed { path: path.to_path_buf(), line, reason: reason.into() }
    }

    /// What a caller can do about it (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // The input files could not be read.
            Error::Io { .. } => ErrorKind::Internal,
            // The input (files, fraction or data) is unusable as given.
            Error::Malformed { .. } | Error::InvalidFraction(_) | Error::NoEvalUsers => ErrorKind::Invalid,
            // The caller (a model or its glue) produced lists that break the protocol: a bug.
            Error::InvalidRecommendations(_) => ErrorKind::Internal,
        }
    }
}
