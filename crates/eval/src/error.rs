use cascade_core::ErrorKind;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a split, evaluating recommendations or evaluating
/// a policy off-policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or reading a file failed (including a corrupt gzip stream).
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A line of a split file is not `user \t item \t rating \t ts`.
    #[error("{}:{line}: {reason}", path.display())]
    Malformed { path: PathBuf, line: u64, reason: String },
    /// `test_fraction` outside `0.0..=1.0` (or NaN).
    #[error("test fraction {0} is not within 0..=1")]
    InvalidFraction(f64),
    /// The recommendation lists handed to `evaluate` break the protocol (wrong count, an item
    /// outside the catalogue, a duplicate, or an item the user has in train).
    #[error("invalid recommendations: {0}")]
    InvalidRecommendations(String),
    /// The split has no evaluation user, so every average would be 0/0.
    #[error("the split has no evaluation user (no train user has a test row)")]
    NoEvalUsers,
    /// A target policy that is not `logged`, `greedy` or `epsilon:<share>` with the share
    /// within 0..=1 (`policy::Target`'s `FromStr`).
    #[error("`{text}`: {reason}")]
    InvalidTarget { text: String, reason: &'static str },
    /// An outcome type for off-policy evaluation that is not a declared event type other than
    /// the impression.
    #[error("`{name}` is not an outcome event type (declared: {})", declared.join(", "))]
    NotAnOutcome { name: String, declared: Vec<String> },
    /// An outcome type whose events carry no item, so they cannot be attributed to impressions.
    #[error("`{0}` events carry no item, so they cannot be attributed to an impression")]
    OutcomeWithoutItem(String),
    /// Off-policy evaluation found no impression events in the log.
    #[error("no impressions in the log: serve recommendations with serving.log_impressions = true first")]
    NoImpressions,
    /// Off-policy evaluation of one pipeline found no impressions it served.
    #[error("no impressions of pipeline `{pipeline}` in the log (logged pipelines: {})", logged.join(", "))]
    NoPipelineImpressions { pipeline: String, logged: Vec<String> },
    /// The configuration's `[train] interactions` do not type or check.
    #[error(transparent)]
    Config(#[from] cascade_core::ConfigError),
}

impl Error {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn malformed(path: &Path, line: u64, reason: impl Into<String>) -> Error {
        Error::Malformed { path: path.to_path_buf(), line, reason: reason.into() }
    }

    /// What a caller can do about it (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // The input files could not be read.
            Error::Io { .. } => ErrorKind::Internal,
            // The input (files, fraction or data) is unusable as given.
            Error::Malformed { .. }
            | Error::InvalidFraction(_)
            | Error::NoEvalUsers
            | Error::InvalidTarget { .. }
            | Error::NotAnOutcome { .. }
            | Error::OutcomeWithoutItem(_) => ErrorKind::Invalid,
            Error::Config(e) => e.kind(),
            // The log holds nothing to evaluate (for that pipeline).
            Error::NoImpressions | Error::NoPipelineImpressions { .. } => ErrorKind::NotFound,
            // The caller (a model or its glue) produced lists that break the protocol: a bug.
            Error::InvalidRecommendations(_) => ErrorKind::Internal,
        }
    }
}
