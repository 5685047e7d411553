use cascade_core::ErrorKind;

/// Why a bundle cannot be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] cascade_registry::Error),
    #[error(transparent)]
    Model(#[from] cascade_models::Error),
    #[error(transparent)]
    Ann(#[from] cascade_ann::Error),
    #[error(transparent)]
    Rank(#[from] cascade_rank::Error),
    /// An artifact is missing, unreadable or does not match the rest of the bundle.
    #[error("{artifact}: {message}")]
    Artifact { artifact: String, message: String },
}

impl Error {
    pub(crate) fn artifact(artifact: impl Into<String>, message: impl std::fmt::Display) -> Error {
        Error::Artifact { artifact: artifact.into(), message: message.to_string() }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Registry(e) => e.kind(),
            Error::Model(e) => e.kind(),
            Error::Ann(e) => e.kind(),
            Error::Rank(e) => e.kind(),
            Error::Artifact { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
