use cascade_core::ErrorKind;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when fitting, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hyper-parameter is out of range (named in the message).
    #[error("invalid parameter: {0}")]
    InvalidParams(String),
    /// The training data does not fit the model (shape mismatch, wrong lengths, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Reading or writing a model file failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Reading or writing a model stream (no path known) failed.
    #[error("model stream: {0}")]
    Stream(#[from] std::io::Error),
    /// The bytes are not a model this build can read.
    #[error("not a valid model file: {0}")]
    Format(String),
    /// The file was written by a newer (or unknown) format version.
    #[error("model format version {found} is not supported (this build reads version {supported})")]
    Version { found: u32, supported: u32 },
}

impl Error {
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.as_ref().to_path_buf();
        move |source| Error::Io { path, source }
    }

    /// What a caller can do about it (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // Bad parameters or data: fix the request.
            Error::InvalidParams(_) | Error::InvalidInput(_) => ErrorKind::Invalid,
            // A stored model is unreadable or from another format version: retrain or pick
            // another bundle. The file system failing is ours too.
            Error::Format(_) | Error::Version { .. } | Error::Io { .. } | Error::Stream(_) => ErrorKind::Internal,
        }
    }
}
