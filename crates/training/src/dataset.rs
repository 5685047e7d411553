//! Training data from a project's event log: implicit interactions and item attribute tokens.

use crate::error::Result;
use cascade_bundle::{ItemTokens, attribute_tokens};
use cascade_core::{Record, Timestamp};
use cascade_eval::Row;
use cascade_registry::{DataHasher, DataInfo};
use std::collections::BTreeMap;

/// Interactions read from the log, in log order, with their lineage.
#[derive(Debug)]
pub struct LogData {
    pub rows: Vec<Row>,
    pub tokens: ItemTokens,
    /// Release times (ms) of items that declare `released_at`.
    pub released_at: std::collections::HashMap<String, i64>,
    pub info: DataInfo,
}

/// Reads every event whose type `weights` lists (`[train] interactions`: its weight becomes the
/// row's `rating`), and the attribute tokens of every live item. `source` names the log in the
/// lineage (`log:/path/to/data`).
pub fn from_log(store: &cascade_store::Store, weights: &BTreeMap<String, f32>, source: String) -> Result<LogData> {
    let mut rows = Vec::new();
    let mut hasher = DataHasher::default();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for entry in store.read_from(store.log_stats()?.first_offset) {
        let (_, record) = entry?;
        let Record::Event(e) = record else { continue };
        let (Some(weight), Some(user), Some(item)) = (weights.get(&e.event_type), e.user, e.item) else { continue };
        hasher.row(&[user.as_bytes(), item.as_bytes(), &weight.to_le_bytes(), &e.ts.0.to_le_bytes()]);
        first = first.min(e.ts.0);
        last = last.max(e.ts.0);
        rows.push(Row { user, item, rating: *weight, ts: e.ts.0 });
    }
    let items = store.items();
    let tokens = items.iter().map(|i| (i.id.clone(), attribute_tokens(&i.attributes))).collect();
    let released_at = items
        .iter()
        .filter_map(|i| match i.attributes.iter().find(|(n, _)| n == "released_at") {
            Some((_, cascade_core::Value::Timestamp(t))) => Some((i.id.clone(), t.millis())),
            _ => None,
        })
        .collect();
    let info = DataInfo {
        source,
        rows: hasher.rows(),
        first_ts: (!rows.is_empty()).then(|| Timestamp(first).to_string()),
        last_ts: (!rows.is_empty()).then(|| Timestamp(last).to_string()),
        hash: hasher.finish(),
    };
    Ok(LogData { rows, tokens, released_at, info })
}
