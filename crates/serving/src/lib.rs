//! Cascade's online half: a request through the cascade, for the bundle in service.
//!
//! - [`Recommender`]: the bundle lifecycle (load, hot swap, the previous version as fallback),
//!   the cascade's stages under per-stage deadlines with fallbacks, similar items, and the
//!   impression queue. `cascade-server` calls it once per request; `cascade-node` runs its
//!   schedules (reload, precompute) and drains its impressions into the log.
//! - [`pipeline`]: pipelines (`[pipelines.<name>]`, typed and validated at load) and the stages
//!   of one loaded bundle: prepare, retrieve, rank, finish.
//! - [`live`]: serving's real-time view of the log — histories, item facts, engagement.
//! - [`rules`]: declarative business rules; [`explore`]: exploration with logged propensities.
//!
//! Candidates, the ranker's feature rows and every trained parameter come from
//! `cascade-bundle`, the code training uses: training and serving meet only there.

pub mod config;
mod error;
pub mod explore;
pub mod live;
pub mod pipeline;
mod recommender;
pub mod rollout;
pub mod rules;

pub use config::ServingConfig;
pub use error::{Error, Result};
#[cfg(feature = "testing")]
pub use recommender::Faults;
pub use recommender::{ROLLOUT_TICK, ROLLOUTS_FILE, Recommender, RecommenderParts, ShadowJob, Stage};
