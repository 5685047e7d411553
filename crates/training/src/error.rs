use cascade_core::ErrorKind;

/// Why training or an offline evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown model `{0}` (known: pop, itemknn, als, bpr, content)")]
    UnknownModel(String),
    #[error("model `{model}`: {message}")]
    Params { model: &'static str, message: String },
    #[error("the content model needs item attributes, and none were given")]
    NoContent,
    /// The data cannot train what was asked (no interactions, no held-out positives, ...).
    #[error("{0}")]
    NoData(String),
    /// Another trainer (`cascade train`, a server's `train` job) holds the project's
    /// training lock.
    #[error(
        "another training is running on this project ({} is locked by `cascade train` or a server's train job); wait for it to finish",
        path.display()
    )]
    TrainingRunning { path: std::path::PathBuf },
    #[error("the training lock {}: {source}", path.display())]
    Lock { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] cascade_models::Error),
    #[error(transparent)]
    Eval(#[from] cascade_eval::Error),
    #[error(transparent)]
    Rank(#[from] cascade_rank::Error),
    #[error(transparent)]
    Features(#[from] cascade_features::FeatureError),
    #[error(transparent)]
    Ann(#[from] cascade_ann::Error),
    #[error(transparent)]
    Bundle(#[from] cascade_bundle::Error),
    #[error(transparent)]
    Registry(#[from] cascade_registry::Error),
    #[error(transparent)]
    Store(#[from] cascade_store::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownModel(_) | Error::Params { .. } | Error::NoContent | Error::NoData(_) => ErrorKind::Invalid,
            Error::TrainingRunning { .. } => ErrorKind::Conflict,
            Error::Lock { .. } => ErrorKind::Unavailable,
            Error::Model(e) => e.kind(),
            Error::Eval(e) => e.kind(),
            Error::Rank(e) => e.kind(),
            Error::Features(e) => e.kind(),
            Error::Ann(e) => e.kind(),
            Error::Bundle(e) => e.kind(),
            Error::Registry(e) => e.kind(),
            Error::Store(e) => e.kind(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
