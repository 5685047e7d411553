use cascade_core::ErrorKind;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong building, growing, saving or loading an index.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a valid index file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: index format version {found} is not supported (this build reads version {supported})", path.display())]
    UnsupportedVersion { path: PathBuf, found: u32, supported: u32 },
    #[error("invalid index parameters: {0}")]
    InvalidParams(String),
    #[error("vector has {found} dimensions, the index has {expected}")]
    DimensionMismatch { expected: usize, found: usize },
    #[error("vector for id {id} has a non-finite component (NaN or infinity)")]
    NonFinite { id: u32 },
    #[error("id {0} is already in the index")]
    DuplicateId(u32),
    #[error("the index is full: at most {0} vectors")]
    Full(usize),
}

impl Error {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_path_buf(), reason: reason.into() }
    }

    /// What a caller can do about it (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // A file could not be read or written, or is not an index this build reads.
            Error::Io { .. } | Error::Corrupt { .. } | Error::UnsupportedVersion { .. } => ErrorKind::Internal,
            // The caller passed something wrong: parameters, a vector, an id, one too many.
            Error::InvalidParams(_) | Error::DimensionMismatch { .. } | Error::NonFinite { .. } | Error::Full(_) => {
                ErrorKind::Invalid
            }
            // The id exists: the caller's view of the index is out of date.
            Error::DuplicateId(_) => ErrorKind::Conflict,
        }
    }
}
