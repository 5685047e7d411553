//! Point-in-time training sets: the log replayed through the same state code as the online
//! engine, with each label row reading its features as of strictly before its time.

use crate::FeatureValue;
use crate::def::{Column, FeatureSet, Selection};
use crate::engine::Admission;
use crate::error::Result;
use crate::key::{Entities, EntityKey, KeySource};
use crate::state::{EntityState, Source, read_view};
use cascade_core::features::ViewSource;
use cascade_core::{Record, Timestamp, Value};
use std::collections::{HashMap, HashSet};

/// One labelled example: the entities (and request context) it is about, the label time `ts`
/// and the label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRow {
    pub entities: Entities,
    pub ts: Timestamp,
    pub label: Option<Value>,
}

/// One output row per label row, in the label rows' order.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingRow {
    pub entities: Entities,
    pub ts: Timestamp,
    pub label: Option<Value>,
    /// One per column: the feature as computed from events with ts < `ts`.
    pub values: Vec<FeatureValue>,
}

/// An in-memory training set: typed columns and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSet {
    pub columns: Vec<Column>,
    pub rows: Vec<TrainingRow>,
    /// Per view: records dropped as later than the allowed lateness (the online engine drops the
    /// same ones).
    pub late_dropped: Vec<(String, u64)>,
}

/// A record admitted to a view for a key some label row asks for.
struct Kept {
    ts: i64,
    offset: u64,
    view: usize,
    record: usize,
    key: EntityKey,
}

/// Builds a point-in-time correct training set.
///
/// `log` is the event log in offset order (as [`cascade_store::Store::read_from`] yields it).
/// A first pass in offset order decides, exactly as the online engine does, which records each
/// view admits (lateness), and keeps those of keys the labels ask for. They are then sorted by
/// (event time, offset) and applied to per-key state interleaved with the label rows sorted by
/// time: before the row at `T` reads, exactly the records with `ts < T` have been applied, and it
/// reads as of `T - 1 ms`, so windows, TTLs and time-since features are those of an online read
/// just before `T`. Rows sharing keys and times each get their own output row.
pub fn training_set<I>(set: &FeatureSet, selection: &Selection, log: I, labels: &[LabelRow]) -> Result<TrainingSet>
where
    I: IntoIterator<Item = cascade_store::Result<(u64, Record)>>,
{
    let views = set.views();
    // Per view: the selected (column, feature) pairs, and the key of every label row.
    let mut per_view: Vec<Vec<(usize, usize)>> = vec![Vec::new(); views.len()];
    for (col, &(vi, fi)) in selection.columns.iter().enumerate() {
        per_view[vi].push((col, fi));
    }
    let used: Vec<usize> = (0..views.len()).filter(|&vi| !per_view[vi].is_empty()).collect();
    let stateful: Vec<usize> = used.iter().copied().filter(|&vi| views[vi].source != ViewSource::Request).collect();
    let mut label_keys: Vec<Vec<Option<EntityKey>>> = vec![Vec::new(); views.len()];
    let mut wanted: Vec<HashSet<EntityKey>> = vec![HashSet::new(); views.len()];
    for &vi in &stateful {
        label_keys[vi] = labels.iter().map(|l| l.entities.key(&views[vi].key).ok()).collect();
        wanted[vi] = label_keys[vi].iter().flatten().cloned().collect();
    }

    // Pass 1, log order: admission exactly as online.
    let mut admission = vec![Admission::default(); views.len()];
    let mut records: Vec<Record> = Vec::new();
    let mut kept: Vec<Kept> = Vec::new();
    for entry in log {
        let (offset, record) = entry?;
        let mut any = false;
        for &vi in &stateful {
            let Some((key, _, ts)) = admission[vi].admit(&views[vi], &record) else { continue };
            if wanted[vi].contains(&key) {
                kept.push(Kept { ts, offset, view: vi, record: records.len(), key });
                any = true;
            }
        }
        if any {
            records.push(record);
        }
    }
    kept.sort_unstable_by_key(|k| (k.ts, k.offset, k.view));

    // Pass 2, event-time order, interleaved with the label rows.
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|&i| (labels[i].ts, i));
    let mut states: Vec<HashMap<EntityKey, EntityState>> = vec![HashMap::new(); views.len()];
    let mut rows: Vec<Option<TrainingRow>> = vec![None; labels.len()];
    let mut next = 0;
    for &li in &order {
        let label = &labels[li];
        let t = label.ts.0;
        while let Some(k) = kept.get(next).filter(|k| k.ts < t) {
            let view = &views[k.view];
            let src = Source::of(&records[k.record]);
            match states[k.view].get_mut(&k.key) {
                Some(s) => s.apply(view, src, k.ts, k.offset, k.ts),
                None => {
                    let mut s = EntityState::new(view);
                    s.apply(view, src, k.ts, k.offset, k.ts);
                    states[k.view].insert(k.key.clone(), s);
                }
            }
            next += 1;
        }
        // Strictly before T: the horizon is T - 1 ms (event times are whole milliseconds).
        let a = t - 1;
        let mut values = vec![None; selection.columns.len()];
        for &vi in &used {
            let state = label_keys[vi].get(li).and_then(Option::as_ref).and_then(|k| states[vi].get(k));
            let all = read_view(&views[vi], state, a, Some(&label.entities));
            for &(col, fi) in &per_view[vi] {
                values[col] = Some(all[fi].clone());
            }
        }
        rows[li] = Some(TrainingRow {
            entities: label.entities.clone(),
            ts: label.ts,
            label: label.label.clone(),
            values: values.into_iter().map(|v| v.expect("every column filled")).collect(),
        });
    }
    Ok(TrainingSet {
        columns: set.columns(selection),
        rows: rows.into_iter().map(|r| r.expect("one row per label row")).collect(),
        late_dropped: views.iter().zip(&admission).map(|(v, a)| (v.name.clone(), a.late_dropped)).collect(),
    })
}
