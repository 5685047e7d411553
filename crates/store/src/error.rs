use cascade_core::{ErrorKind, FieldError};
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
    /// Records dated past the time horizon (`log.max_event_ahead`): (index in the batch, the
    /// field and why). Nothing of the batch was written.
    #[error("{}", describe_ahead(.0))]
    TimeAhead(Vec<(usize, FieldError)>),
    /// A quarantine could not be recorded (the store is read-only, or the time is not one).
    #[error("quarantine: {0}")]
    Quarantine(String),
}

fn describe_ahead(problems: &[(usize, FieldError)]) -> String {
    let mut out = String::from("records dated past the time horizon; nothing was written: ");
    for (n, (index, e)) in problems.iter().enumerate().take(3) {
        if n > 0 {
            out.push_str("; ");
        }
        out.push_str(&format!("record {index} `{}`: {}", e.field, e.reason));
    }
    if problems.len() > 3 {
        out.push_str(&format!(" (and {} more)", problems.len() - 3));
    }
    out
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
            // The caller's records or arguments: fix them and retry.
            Error::TimeAhead(_) | Error::Quarantine(_) => ErrorKind::Invalid,
        }
    }
}
