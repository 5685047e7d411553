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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
