use cascade_core::ErrorKind;
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

impl Error {
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.as_ref().to_path_buf();
        move |source| Error::Io { path, source }
    }

    pub fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Error {
        Error::Corrupt { path: path.to_path_buf(), position, reason: reason.into() }
    }

    /// What a caller can do about it (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // Retention deleted it: the offset will never be readable again.
            Error::OffsetNotRetained { .. } => ErrorKind::NotFound,
            // Another process holds the directory, the log is shutting down, or it failed and
            // waits for a restart: the store is there, just not now.
            Error::Locked(_) | Error::Closed | Error::Failed(_) => ErrorKind::Unavailable,
            Error::Io { .. } | Error::Corrupt { .. } => ErrorKind::Internal,
        }
    }
}
