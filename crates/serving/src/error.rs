use cascade_core::ErrorKind;

/// Why a request could not be served, or a pipeline or bundle not set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request is well-formed but not valid; names the field.
    #[error("{field}: {reason}")]
    InvalidRequest { field: String, reason: String },
    /// A request time past the time horizon (`log.max_event_ahead`); names the field.
    #[error("{field}: {reason}")]
    TimeAhead { field: String, reason: String },
    #[error("no pipeline `{name}` (configured: {})", configured.join(", "))]
    UnknownPipeline { name: String, configured: Vec<String> },
    #[error("no model or catalogue record knows item `{0}`")]
    ItemNotFound(String),
    /// The configuration is not one serving can run; names the key.
    #[error("{key}: {reason}")]
    Config { key: String, reason: String },
    #[error(transparent)]
    Bundle(#[from] cascade_bundle::Error),
    #[error(transparent)]
    Registry(#[from] cascade_registry::Error),
    #[error(transparent)]
    Features(#[from] cascade_features::FeatureError),
    #[error("{0}")]
    Internal(String),
}

/// A section that does not type or check: its key (the file or the environment variable when
/// that is all there is) and the reason, as `ConfigError` says them.
impl From<cascade_core::ConfigError> for Error {
    fn from(e: cascade_core::ConfigError) -> Error {
        use cascade_core::ConfigError as C;
        match e {
            C::Parse { source_name, message } => Error::Config { key: source_name, reason: message },
            C::Env { var, message } => Error::Config { key: format!("environment variable {var}"), reason: message },
            C::Invalid { key, message } => Error::Config { key, reason: message },
        }
    }
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Config { key: key.into(), reason: reason.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidRequest { .. }
            | Error::TimeAhead { .. }
            | Error::UnknownPipeline { .. }
            | Error::Config { .. } => ErrorKind::Invalid,
            Error::ItemNotFound(_) => ErrorKind::NotFound,
            Error::Bundle(e) => e.kind(),
            Error::Registry(e) => e.kind(),
            Error::Features(e) => e.kind(),
            Error::Internal(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
