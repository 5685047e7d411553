use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} (byte {position}): {reason}", path.display())]
    Corrupt { path: PathBuf, position: u64, reason: String },
    #[error("offset {offset} is no longer retained (the log starts at {first})")]
    OffsetNotRetained { offset: u64, first: u64 },
    #[error("{} is in use by another Cascade process (is `cascade serve` running?)", .0.display())]
    Locked(PathBuf),
    #[error("the event log is closed")]
    Closed,
    #[error("the event log failed and refuses writes until restarted: {0}")]
    Failed(String),
}

/// What a caller can do about an error; the server maps it to a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Unavailable,
    Internal,
}

impl Error {
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.as_ref().to_path_buf();
        move |source| Error::Io { path, source }
    }

    pub fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_path_buf(), position, reason: reason.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::OffsetNotRetained { .. } => ErrorKind::NotFound,
            Error::Closed | Error::Failed(_) | Error::Locked(_) => ErrorKind::Unavailable,
            Error::Io { .. } | Error::Corrupt { .. } => ErrorKind::Internal,
        }
    }
}
