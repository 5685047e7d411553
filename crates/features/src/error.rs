use cascade_core::ErrorKind;
use std::path::{Path, PathBuf};

pub type Result<T, E = FeatureError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// A definition in `cascade.toml` makes no sense; the message names the view or feature.
    #[error(transparent)]
    Definition(#[from] cascade_core::ConfigError),
    #[error("unknown feature view `{0}`")]
    UnknownView(String),
    #[error("unknown feature `{view}:{feature}`")]
    UnknownFeature { view: String, feature: String },
    /// The request or label row lacks a part of the view's entity key.
    #[error("view `{view}` is keyed by {key}; the request has no `{missing}`")]
    MissingKey { view: String, key: String, missing: String },
    /// Row `row` of a batch read lacks a part of the view's entity key.
    #[error("entities[{row}]: view `{view}` is keyed by {key}; this entity has no `{missing}`")]
    RowMissingKey { row: usize, view: String, key: String, missing: String },
    /// The Redis backend could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer one operation within `features_store.redis_timeout` (paused, busy,
    /// unreachable, or still reconnecting).
    #[error("redis did not answer within {}", humantime::format_duration(*.0))]
    RedisTimeout(std::time::Duration),
    /// The store saw Redis fail and has not seen it answer since: the operation was not tried
    /// (a periodic probe and one operation per second find out when it is back).
    #[error("the redis feature store is down (for {}): {reason}", humantime::format_duration(*.down_for))]
    RedisDown { down_for: std::time::Duration, reason: String },
    /// The state Redis holds is not the one this process last wrote (Redis restarted empty, lost
    /// the meta key, or was restored from an older snapshot); the store resumed from what Redis
    /// holds or rebuilds from the log, and reads wait until it is back at `to`.
    #[error(
        "the feature state in redis is at offset {found} where this server expected {expected} \
         ({why}); continuing from offset {found}"
    )]
    StateMoved { expected: u64, found: u64, why: &'static str },
    /// The online feature state has not yet applied the log up to where it was at a start or a
    /// rebuild: its values would be partial, so it serves none.
    #[error("the online feature state is catching up with the log: at offset {at} of {to}")]
    CatchingUp { at: u64, to: u64 },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A checkpoint that does not read back (bad checksum, unknown format version, truncated).
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The records handed in do not continue where the state left off.
    #[error("log offset {got} does not follow the feature state (expected {expected})")]
    OffsetGap { expected: u64, got: u64 },
    #[error(transparent)]
    Store(#[from] cascade_store::Error),
    /// Writing or reading the offline store's Parquet files.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl FeatureError {
    pub fn io(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> FeatureError {
        let path = path.as_ref().to_path_buf();
        move |source| FeatureError::Io { path, source }
    }

    /// What a caller can do about it (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // The definitions or the request are wrong.
            FeatureError::Definition(_) | FeatureError::MissingKey { .. } | FeatureError::RowMissingKey { .. } => {
                ErrorKind::Invalid
            }
            FeatureError::UnknownView(_) | FeatureError::UnknownFeature { .. } => ErrorKind::NotFound,
            // Redis cannot be reached, dropped the connection, timed out, or asked us to wait
            // (BUSY, LOADING, TRYAGAIN, MASTERDOWN, CLUSTERDOWN): retry later.
            FeatureError::Redis(e)
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || matches!(e.retry_method(), redis::RetryMethod::WaitAndRetry) =>
            {
                ErrorKind::Unavailable
            }
            // Redis answered, with an error we caused (a bad command, wrong type under our key).
            FeatureError::Redis(_) => ErrorKind::Internal,
            // Waiting helps: Redis comes back, the state catches up.
            FeatureError::RedisTimeout(_)
            | FeatureError::RedisDown { .. }
            | FeatureError::StateMoved { .. }
            | FeatureError::CatchingUp { .. } => ErrorKind::Unavailable,
            FeatureError::Store(e) => match e.kind() {
                // An offset the feature state needs is gone from the log: our state is broken,
                // not something the caller asked for that does not exist.
                ErrorKind::NotFound => ErrorKind::Internal,
                kind @ (ErrorKind::Invalid | ErrorKind::Conflict | ErrorKind::Unavailable | ErrorKind::Internal) => {
                    kind
                }
            },
            // Storage failed or the state does not match the log.
            FeatureError::Io { .. }
            | FeatureError::Corrupt { .. }
            | FeatureError::OffsetGap { .. }
            | FeatureError::Parquet(_)
            | FeatureError::Arrow(_) => ErrorKind::Internal,
        }
    }
}
