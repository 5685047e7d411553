//! Cascade's offline half: everything `cascade train` and `cascade evaluate` do.
//!
//! - [`retrieval`]: the retrieval models' grids, tuning, fitting and scoring under the reference
//!   temporal protocol;
//! - [`ranking`]: learning-to-rank data built from our own retrievers and feature engine, the light
//!   and heavy rankers' training, and the whole cascade's offline evaluation;
//! - [`dataset`]: training data read from the project's event log, with its lineage;
//! - [`train_bundle`]: the bundle `cascade train` commits, under the project's [`TrainLock`] (one
//!   training at a time, whoever runs it).
//!
//! What serving must reproduce — candidate generation, the feature rows, the trained parameters —
//! comes from `cascade-bundle`, never from here: training and serving meet only there.

mod assemble;
pub mod config;
pub mod dataset;
mod error;
mod lock;
pub mod ranking;
pub mod retrieval;

pub use assemble::{CascadeSummary, TrainOptions, Trained, ranking_params, train_bundle};
pub use config::{FeatureScale, TrainConfig};
pub use error::{Error, Result};
pub use lock::{TRAIN_LOCK_FILE, TrainLock};
