//! Audits of served feature vectors: a sample of what serving answered is logged with the log
//! offset its state reflected and the instant each view answered as of; the audit recomputes
//! every value by replaying exactly that prefix of the log through [`crate::training_set`] (a
//! label at `read_at + 1 ms` reads as of `read_at`) and reports each value that differs. Online
//! and replay run one state code path, so the expected number of mismatches is zero; a mismatch
//! is skew (a bug), never freshness lag, because the replay sees only the records the online
//! state had applied.

use crate::def::{Column, FeatureSet};
use crate::error::Result;
use crate::key::Entities;
use crate::online_store::Served;
use crate::replay::{LabelRow, training_set};
use crate::{FeatureValue, Status};
use cascade_core::{Record, Timestamp, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One served feature vector (one entity of a read), as the vector log stores it (one JSON
/// object per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedVector {
    /// The request's instant, ms since the epoch.
    pub as_of: i64,
    /// The log offset the state reflected: records below it had been applied, none above.
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Other key parts and request context.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, serde_json::Value>,
    /// `view:feature` per column.
    pub features: Vec<String>,
    /// Per column: the instant its view answered as of (ms).
    pub read_at: Vec<i64>,
    pub values: Vec<LoggedValue>,
}

/// One served value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedValue {
    pub value: serde_json::Value,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<i64>,
}

impl From<&FeatureValue> for LoggedValue {
    fn from(v: &FeatureValue) -> Self {
        LoggedValue {
            value: v.value.as_ref().map_or(serde_json::Value::Null, Value::to_json),
            status: v.status,
            event_time: v.event_time.map(|t| t.0),
        }
    }
}

/// A JSON scalar as a key part or context value (strings, integers, floats, booleans).
pub fn context_value(v: &serde_json::Value) -> Option<Value> {
    Some(match v {
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        _ => return None,
    })
}

impl LoggedVector {
    /// Row `row` of a read of `columns` for `rows`, made at `as_of`.
    pub fn new(columns: &[Column], rows: &[Entities], served: &Served, row: usize, as_of: Timestamp) -> LoggedVector {
        let e = &rows[row];
        LoggedVector {
            as_of: as_of.0,
            offset: served.offset,
            user: e.user.clone(),
            item: e.item.clone(),
            fields: e.fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            features: columns.iter().map(Column::name).collect(),
            read_at: served.read_at.iter().map(|t| t.0).collect(),
            values: served.values[row].iter().map(LoggedValue::from).collect(),
        }
    }

    pub fn entities(&self) -> Entities {
        Entities {
            user: self.user.clone(),
            item: self.item.clone(),
            fields: self.fields.iter().filter_map(|(k, v)| Some((k.clone(), context_value(v)?))).collect(),
        }
    }
}

/// A value the replay computes differently from what was served.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// Index of the vector in the audited list.
    pub vector: usize,
    pub feature: String,
    pub online: LoggedValue,
    pub offline: LoggedValue,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReport {
    pub vectors: usize,
    /// Values compared.
    pub values: usize,
    /// Values of features no longer defined (or vectors of another definition), not compared.
    pub skipped: usize,
    pub mismatches: Vec<Mismatch>,
}

fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())),
        _ => a == b,
    }
}

/// Recomputes `vectors` offline. `log()` must give the event log from offset 0 in offset order
/// (as [`cascade_store::Store::read_from`] does); it is replayed once per distinct offset among
/// the vectors, up to that offset.
pub fn audit<F, I>(set: &FeatureSet, vectors: &[LoggedVector], mut log: F) -> Result<AuditReport>
where
    F: FnMut() -> I,
    I: IntoIterator<Item = cascade_store::Result<(u64, Record)>>,
{
    let mut report = AuditReport { vectors: vectors.len(), values: 0, skipped: 0, mismatches: Vec::new() };
    let mut by_offset: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, v) in vectors.iter().enumerate() {
        by_offset.entry(v.offset).or_default().push(i);
    }
    for (offset, group) in by_offset {
        // The features of the group that are still defined, as one selection.
        let mut names: Vec<&str> = group.iter().flat_map(|&i| vectors[i].features.iter().map(String::as_str)).collect();
        names.sort_unstable();
        names.dedup();
        names.retain(|n| set.select(&[n]).is_ok());
        let selection = set.select(&names)?;
        let column: HashMap<&str, usize> = names.iter().enumerate().map(|(c, n)| (*n, c)).collect();
        // One label row per (vector, instant a view answered as of), at that instant + 1 ms.
        let mut labels = Vec::new();
        let mut label_of: HashMap<(usize, i64), usize> = HashMap::new();
        for &i in &group {
            let entities = vectors[i].entities();
            for &t in &vectors[i].read_at {
                label_of.entry((i, t)).or_insert_with(|| {
                    labels.push(LabelRow { entities: entities.clone(), ts: Timestamp(t + 1), label: None });
                    labels.len() - 1
                });
            }
        }
        let replayed = training_set(set, &selection, log().into_iter().take(offset as usize), &labels)?;
        for &i in &group {
            let v = &vectors[i];
            for (j, name) in v.features.iter().enumerate() {
                let (Some(&c), Some(online), Some(&t)) = (column.get(name.as_str()), v.values.get(j), v.read_at.get(j))
                else {
                    report.skipped += 1;
                    continue;
                };
                let offline = LoggedValue::from(&replayed.rows[label_of[&(i, t)]].values[c]);
                report.values += 1;
                if !(same_json(&online.value, &offline.value)
                    && online.status == offline.status
                    && online.event_time == offline.event_time)
                {
                    report.mismatches.push(Mismatch {
                        vector: i,
                        feature: name.clone(),
                        online: online.clone(),
                        offline,
                    });
                }
            }
        }
    }
    Ok(report)
}
