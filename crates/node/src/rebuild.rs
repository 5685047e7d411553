//! Rebuilding the state a node derives from the log, while no node runs: the operator's way out
//! of a log that holds records dated far ahead (`cascade features rebuild --exclude-after T`).

use crate::Result;
use cascade_core::{Config, Timestamp};
use cascade_features::{FeatureSet, FeaturesStoreConfig, OnlineStore};
use cascade_serving::pipeline::with_ranking_views;
use cascade_store::{QuarantineReport, Store};

/// Records applied per batch while rebuilding.
const BATCH: usize = 10_000;

/// What [`rebuild_features`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// The quarantine rule added (with `exclude_after`), and the records it and earlier rules hide.
    pub quarantine: Option<QuarantineReport>,
    /// Log records applied to the rebuilt feature state.
    pub applied: u64,
    /// The log offset the rebuilt state reflects (everything below it).
    pub next_offset: u64,
    /// Rows removed from the offline store's Parquet files.
    pub offline_rows_removed: usize,
}

/// With `exclude_after`, quarantines the records stored so far that are dated after it
/// ([`Store::quarantine`]: every reader, the catalogue and the idempotency index skip them from
/// now on) and removes them from the offline store; then rebuilds the online feature state
/// (embedded checkpoint or Redis, as configured) from the retained log, so every watermark is
/// that of the records that remain. `store` must be open for writing: no `cascade serve` may run
/// on the data directory. The live view needs nothing: a node rebuilds it from the log at start.
pub async fn rebuild_features(
    config: &Config,
    store: &Store,
    exclude_after: Option<Timestamp>,
) -> Result<RebuildReport> {
    // The same views the node runs, so the rebuilt state is the one it loads.
    let config = with_ranking_views(config)?;
    let features_store = FeaturesStoreConfig::from_config(&config)?;
    let set = FeatureSet::from_config(&config)?;
    let quarantine = exclude_after.map(|t| store.quarantine(t)).transpose()?;
    let mut offline_rows_removed = 0;
    if let Some(report) = &quarantine {
        let root = store.dir().join("offline").join("events");
        offline_rows_removed =
            cascade_features::offline::purge(&root, report.rule.below_offset, Timestamp(report.rule.after_ms))?;
    }
    let online = OnlineStore::open(&features_store, store.dir(), set).await?;
    online.clear().await?;
    let mut reader = store.read_from(store.log_stats()?.first_offset);
    let mut applied = 0;
    loop {
        let batch = reader.by_ref().take(BATCH).collect::<cascade_store::Result<Vec<_>>>()?;
        let through = reader.position();
        if batch.is_empty() && through <= online.next_offset() {
            break;
        }
        applied += batch.len() as u64;
        online.apply_through(&batch, through).await?;
    }
    online.checkpoint().await?;
    Ok(RebuildReport { quarantine, applied, next_offset: online.next_offset(), offline_rows_removed })
}
