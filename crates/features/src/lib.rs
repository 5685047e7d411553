//! Cascade's feature engine: one aggregation code path, run incrementally online and by replay
//! for point-in-time correct training sets, so serving and training cannot disagree.
//!
//! Definitions are the `[features.<view>]` tables of `cascade.toml` (parsed and layered by
//! [`cascade_core::features`]), resolved against the declared events and attributes by
//! [`resolve()`] (errors name the key) and compiled into a [`FeatureSet`]. Three things run them:
//!
//! - [`Engine`] — the state in memory: [`Engine::apply`] one log record at a time,
//!   [`Engine::read`] a view's features for a key as of an instant.
//! - [`OnlineEngine`] — an `Engine` fed from the event log in offset order and checkpointed
//!   together with the offset it reflects, so it resumes exactly after a crash.
//! - [`OnlineStore`] — where serving keeps that state: embedded (the `OnlineEngine` in process)
//!   or Redis (each key's aggregation state in Redis, windows still evaluated at read time); a
//!   batch read of any features for any entities is one Redis round trip.
//! - [`audit`] — served vectors (logged with the log offset their state reflected) recomputed by
//!   replaying that prefix of the log; any difference is skew and is reported.
//! - [`training_set`] — label rows joined point-in-time by replaying the log through the same
//!   state code (`state::EntityState::apply` is the only place state changes).
//! - [`as_of_join`] — label rows joined point-in-time against precomputed feature tables
//!   (Feast's `get_historical_features`, strictly before `T`), a sort-merge over sorted arrays.
//! - [`offline`] — the offline store: the log's events as day-partitioned Parquet.
//! - [`training_set_parquet`] — a [`TrainingSet`] written as one Parquet file.
//!
//! # State layout
//!
//! Per view: a watermark (the newest event time admitted), counters, and a hash map from
//! [`EntityKey`] (one part, or several joined for composite keys such as user × item) to the
//! key's state: its current session (see expiry below; online, rarely also an earlier one) with
//! its oldest and newest event time and, per feature, the newest event time the feature read
//! (the value's event time, for TTLs) and an accumulator:
//!
//! | aggregation            | lifetime                    | sliding window                       |
//! |------------------------|-----------------------------|--------------------------------------|
//! | count, sum, mean       | (count, sum)                | ring of non-empty tiles (count, sum) |
//! | min, max               | the extreme                 | ring of non-empty tiles (count, ext) |
//! | distinct_count         | value → newest ts, at most `max_distinct` entries (same)          |
//! | last, last_n           | newest (ts, offset, value); the `n` newest, newest first (same)   |
//! | time_since_last        | nothing beyond the event time                                      |
//! | decayed_count          | (s, t_ref): the decayed count as of the newest event               |
//! | ratio, request features| nothing: computed at read from other features or from the request|
//!
//! Memory per key is bounded by the definitions: tiles per window, `n`, `max_distinct`
//! ([`FeatureSet::max_bytes_per_entity`]); keys are bounded by expiry and [`Engine::sweep`];
//! [`Engine::approx_heap_bytes`] measures what is held.
//!
//! # Tiles and windows
//!
//! A window `W` with tile `τ` has `n = W / τ` tiles; tile `i` holds the records with event time in
//! `[iτ, (i+1)τ)`. A read *as of* instant `a` (records with `ts ≤ a`) covers tiles
//! `⌊a/τ⌋ − n + 1 ..= ⌊a/τ⌋`, i.e. event times `[(⌊a/τ⌋ − n + 1)τ, a]`. For a label at a tile
//! boundary `T` (read as of `T − 1`) that is exactly `[T − W, T)`; otherwise the start is
//! rounded up to a tile boundary and the window spans between `W − τ` and `W`. The window is
//! computed from the tiles at read time, so a count falls back to zero with no write at all.
//!
//! # Lateness and expiry
//!
//! Records are admitted in log order. A record older than the view's watermark minus its
//! `allowed_lateness` is dropped and counted ([`ViewStats::late_dropped`]); any other is applied
//! where it belongs (a late one lands in its own tile, or in no window if every window a read can
//! still ask for has passed it). The decision depends only on the log order, and the replay makes
//! it in a first pass in log order with the same code, so both drop exactly the same records.
//!
//! Keys expire. A view's `expire_after` is the largest TTL of its features, at least the allowed
//! lateness (no expiry when any TTL is 0). A key's records form *sessions* separated by gaps
//! longer than `expire_after` in event time; reads see the newest session only, and report
//! `not_found` once it is older than `expire_after`. So a key idle for longer starts afresh
//! (lifetime aggregates count from its return), and dropping expired keys from memory
//! ([`Engine::sweep`]) changes no value: it only drops keys more than `allowed_lateness +
//! expire_after` behind the watermark, which no admissible record can reach any more.
//!
//! # Why online and replay agree, and why nothing leaks
//!
//! Every accumulator is a function of the *set* of admitted records of its session, whatever
//! the order they are applied in: counts, sums and tiles add (floats up to rounding); min and
//! max; `last` and `last_n` keep the newest by (event time, log offset); `distinct_count` keeps
//! the `max_distinct` values seen most recently (so it is exact up to the cap and saturates
//! there); decayed sums are `Σ 2^(−(a − ts)/half_life)`. Sessions are a function of the set too:
//! in event-time order (replay) a record extends the newest session or starts one; in log order
//! (online) a late record may land in the gap before the newest session and bridge it to the
//! previous one, so the engine keeps earlier sessions while an admissible record could still
//! reach them and merges them (every accumulator is mergeable). Hence online state after any
//! prefix of the log equals the replay of the same admitted records, and an online read as of `t`
//! equals the replay's value for a label at `t + 1 ms` (online reads are answered as of
//! `max(t, watermark)`: state cannot un-apply what it has seen).
//!
//! Point-in-time: the replay sorts admitted records by (event time, offset) and, before the label
//! row at `T` reads, has applied exactly those with `ts < T` — the loop stops at the first record
//! with `ts ≥ T` — and it reads as of `T − 1 ms`, so window bounds, TTLs, time-since, decay and
//! expiry all use an instant before `T`. No state consulted for that row has ever seen a record
//! at or after `T`. Which records are admitted at all is decided by log order (lateness), the
//! same for both paths. `tests/it` checks all of this against a brute-force oracle on random
//! logs, with sentinel records planted at exactly `T`.
//!
//! # Example
//!
//! ```
//! use cascade_core::{Config, Event, Record, Timestamp, Value};
//! use cascade_features::{Engine, Entities, EntityKey, FeatureSet, LabelRow, Status, training_set};
//!
//! let config = Config::from_toml(r#"
//! [features.user_tx]
//! entity = "user"
//! events = ["transaction"]
//! ttl = "1day"
//! [features.user_tx.features]
//! tx_1h = { agg = "count", window = "1h", tile = "1m", ttl = "2h" }
//! amount_1h = { agg = "sum", field = "amount", window = "1h", tile = "1m" }
//! "#, "cascade.toml").unwrap();
//! let set = FeatureSet::from_config(&config).unwrap();
//! const MIN: i64 = 60_000;
//! let tx = |ts: i64, amount: f64| Record::Event(Event {
//!     id: None, event_type: "transaction".into(), ts: Timestamp(ts), user: Some("u1".into()), item: None,
//!     fields: vec![("amount".into(), Value::Float(amount)), ("currency".into(), Value::String("EUR".into()))],
//! });
//! let log = vec![(0, tx(10 * MIN, 5.0)), (1, tx(30 * MIN, 7.5))];
//!
//! let mut engine = Engine::new(set.clone());
//! for (offset, record) in &log {
//!     engine.apply(*offset, record);
//! }
//! let u1 = EntityKey::from("u1");
//! // Features come in name order: amount_1h, tx_1h.
//! let now = engine.read("user_tx", &u1, Timestamp(45 * MIN)).unwrap();
//! assert_eq!(now[0].value, Some(Value::Float(12.5)));
//! assert_eq!((now[1].value.clone(), now[1].status), (Some(Value::Int(2)), Status::Present));
//! // Without any write, the first transaction has left the window 70 minutes later...
//! let later = engine.read("user_tx", &u1, Timestamp(80 * MIN)).unwrap();
//! assert_eq!(later[1].value, Some(Value::Int(1)));
//! // ...and past its 2 h TTL the count is served as its default, marked stale.
//! let stale = engine.read("user_tx", &u1, Timestamp(151 * MIN)).unwrap();
//! assert_eq!((stale[1].value.clone(), stale[1].status), (Some(Value::Int(0)), Status::StaleOutsideTtl));
//!
//! // A label at the second transaction's own time sees only the first one (ts < T).
//! let labels = [LabelRow { entities: Entities::user("u1"), ts: Timestamp(30 * MIN), label: Some(Value::Bool(true)) }];
//! let rows = training_set(&set, &set.select(&["user_tx:tx_1h"]).unwrap(), log.into_iter().map(Ok), &labels).unwrap();
//! assert_eq!(rows.columns[0].name(), "user_tx:tx_1h");
//! assert_eq!(rows.rows[0].values[0].value, Some(Value::Int(1)));
//! ```

mod asof;
mod audit;
mod codec;
pub mod config;
mod def;
mod engine;
mod error;
mod key;
pub mod offline;
mod online;
mod online_store;
mod replay;
pub mod resolve;
mod state;
pub mod training_set_parquet;

pub use asof::as_of_join;
pub use audit::{AuditReport, LoggedValue, LoggedVector, Mismatch, audit, context_value};
pub use cascade_core::ErrorKind;
pub use config::{FeaturesBackend, FeaturesStoreConfig};
pub use def::{Column, FeatureSet, Selection};
pub use engine::{Engine, ViewStats};
pub use error::{FeatureError, Result};
pub use key::{Entities, EntityKey};
pub use online::{CHECKPOINT_FILE, OnlineEngine};
pub use online_store::{OnlineStore, Served};
pub use replay::{LabelRow, TrainingRow, TrainingSet, training_set};
pub use resolve::{AggSpec, FieldRef, ResolvedFeature, ResolvedView, Tiling, filter_matches, resolve};

use cascade_core::{Timestamp, Value};
use std::time::Duration;

/// What a read found for one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A value computed from the key's records, younger than the TTL.
    Present,
    /// The key is known but this feature has no value (no matching record, an empty window of a
    /// mean or min, a zero denominator); the declared default is served.
    Default,
    /// The newest record behind the value is older than the TTL; the default is served.
    StaleOutsideTtl,
    /// The key is unknown to the view (never seen, or expired); the default is served.
    NotFound,
}

/// One feature's value as of a read, with its freshness.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureValue {
    /// The value, or the declared default when `status` is not `Present` (`None`: null).
    pub value: Option<Value>,
    pub status: Status,
    /// Event time of the newest record behind the value (the read time for request features).
    pub event_time: Option<Timestamp>,
    /// How old that record is at the read.
    pub age: Option<Duration>,
}
