use cascade_core::ErrorKind;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A training input is unusable; names the field (`labels`, `groups`, `params.num_leaves`, ...).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A model file (ours or an imported one) is malformed; says where.
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid { field: field.into(), reason: reason.into() }
    }

    pub fn format(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Format { what: what.into(), reason: reason.into() }
    }

    /// What a caller can do about it (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // Training inputs or parameters the caller passed.
            Error::Invalid { .. } => ErrorKind::Invalid,
            // A model file that does not read back: ours (a bundle) or an imported one. The
            // variant cannot tell them apart, so it is not blamed on the caller; an endpoint that
            // imports a model the request carries should answer `Invalid` itself.
            Error::Format { .. } | Error::Io { .. } => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
