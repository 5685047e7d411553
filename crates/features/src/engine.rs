//! The in-memory engine: per view, a watermark and the state of every key; records are applied
//! incrementally and reads evaluate windows at read time.

use crate::def::FeatureSet;
use crate::error::{FeatureError, Result};
use crate::key::{Entities, EntityKey, KeySource};
use crate::resolve::{FieldRef, ResolvedView, filter_matches};
use crate::state::{EntityState, NONE, Source, read_view};
use crate::{FeatureValue, Status};
use cascade_core::features::ViewSource;
use cascade_core::{Record, Timestamp};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Admission bookkeeping of one view: the watermark (newest event time admitted) and what was
/// turned away. Shared by the online engine and the replay, so both drop the same records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    pub(crate) watermark: i64,
    pub(crate) late_dropped: u64,
    pub(crate) missing_key: u64,
}

impl Default for Admission {
    fn default() -> Self {
        Admission { watermark: NONE, late_dropped: 0, missing_key: 0 }
    }
}

impl Admission {
    /// What `record` (in log order) does to `view`: `None` when it is not the view's, lacks a key
    /// part (counted) or is later than the allowed lateness (counted); otherwise its key, its
    /// source and its event time, and the watermark has advanced.
    pub(crate) fn admit<'r>(
        &mut self,
        view: &ResolvedView,
        record: &'r Record,
    ) -> Option<(EntityKey, Source<'r>, i64)> {
        let (key, src) = match (view.source, record) {
            (ViewSource::Events, Record::Event(e)) => {
                if !view.events.contains(&e.event_type)
                    || !view.filter.iter().all(|(n, want)| filter_matches(e.field(n), want))
                {
                    return None;
                }
                match e.key(&view.key) {
                    Ok(k) => (k, Source::Event(e)),
                    Err(_) => {
                        self.missing_key += 1;
                        return None;
                    }
                }
            }
            (ViewSource::Item, Record::Item(i)) => (EntityKey::from(i.id.as_str()), Source::Item(i)),
            (ViewSource::User, Record::User(u)) => (EntityKey::from(u.id.as_str()), Source::User(u)),
            _ => return None,
        };
        let ts = record.ts().0;
        if self.watermark != NONE && ts < self.watermark.saturating_sub(view.allowed_lateness_ms) {
            self.late_dropped += 1;
            return None;
        }
        self.watermark = self.watermark.max(ts);
        Some((key, src, ts))
    }
}

#[derive(Debug, Default)]
pub(crate) struct ViewState {
    pub(crate) admission: Admission,
    pub(crate) stale_reads: AtomicU64,
    pub(crate) entities: HashMap<EntityKey, EntityState>,
}

/// Counters and size of one view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewStats {
    /// Keys held.
    pub entities: usize,
    /// Newest event time admitted.
    pub watermark: Option<Timestamp>,
    /// Records older than the watermark minus the allowed lateness, dropped.
    pub late_dropped: u64,
    /// Records of the view's event types that lacked a key part (e.g. no `device`).
    pub missing_key: u64,
    /// Reads that served a default because the value was older than its TTL.
    pub stale_reads: u64,
}

/// The feature state of every key of every view, updated one record at a time.
///
/// Reads answer as of `max(at, view watermark)`: state cannot un-apply what it has seen, so a
/// read never pretends to be earlier than the newest record of its view.
#[derive(Debug)]
pub struct Engine {
    set: FeatureSet,
    pub(crate) views: Vec<ViewState>,
}

impl Engine {
    pub fn new(set: FeatureSet) -> Engine {
        let views = set.views().iter().map(|_| ViewState::default()).collect();
        Engine { set, views }
    }

    pub fn features(&self) -> &FeatureSet {
        &self.set
    }

    /// Applies the record stored at log `offset`. Records must come in offset order (the order
    /// decides which ones are late); ties in event time are broken by offset.
    pub fn apply(&mut self, offset: u64, record: &Record) {
        for (view, vs) in self.set.views().iter().zip(self.views.iter_mut()) {
            let Some((key, src, ts)) = vs.admission.admit(view, record) else { continue };
            let horizon = vs.admission.watermark.saturating_sub(view.allowed_lateness_ms);
            match vs.entities.get_mut(&key) {
                Some(state) => state.apply(view, src, ts, offset, horizon),
                None => vs
                    .entities
                    .entry(key)
                    .or_insert_with(|| EntityState::new(view))
                    .apply(view, src, ts, offset, horizon),
            }
        }
    }

    /// Every feature of `view` for `key`, in definition order, as of `at`.
    pub fn read(&self, view: &str, key: &EntityKey, at: Timestamp) -> Result<Vec<FeatureValue>> {
        let (vi, def) = self.set.view(view)?;
        let vs = &self.views[vi];
        Ok(self.finish(vs, read_view(def, vs.entities.get(key), self.read_time(vi, at), None)))
    }

    /// Like [`Engine::read`], with the key (and request features) taken from a request row.
    pub fn read_row(&self, view: &str, row: &Entities, at: Timestamp) -> Result<Vec<FeatureValue>> {
        let (vi, def) = self.set.view(view)?;
        let vs = &self.views[vi];
        let state = if def.source == ViewSource::Request {
            None
        } else {
            let key = row.key(&def.key).map_err(|missing| FeatureError::MissingKey {
                view: view.to_string(),
                key: def.key.iter().map(FieldRef::name).collect::<Vec<_>>().join(" × "),
                missing: missing.name().to_string(),
            })?;
            vs.entities.get(&key)
        };
        Ok(self.finish(vs, read_view(def, state, self.read_time(vi, at), Some(row))))
    }

    fn read_time(&self, view: usize, at: Timestamp) -> i64 {
        at.0.max(self.views[view].admission.watermark)
    }

    fn finish(&self, vs: &ViewState, values: Vec<FeatureValue>) -> Vec<FeatureValue> {
        let stale = values.iter().filter(|v| v.status == Status::StaleOutsideTtl).count() as u64;
        if stale > 0 {
            vs.stale_reads.fetch_add(stale, Ordering::Relaxed);
        }
        values
    }

    pub fn stats(&self, view: &str) -> Result<ViewStats> {
        let (vi, _) = self.set.view(view)?;
        let vs = &self.views[vi];
        let a = vs.admission;
        Ok(ViewStats {
            entities: vs.entities.len(),
            watermark: (a.watermark != NONE).then_some(Timestamp(a.watermark)),
            late_dropped: a.late_dropped,
            missing_key: a.missing_key,
            stale_reads: vs.stale_reads.load(Ordering::Relaxed),
        })
    }

    /// The keys `view` holds, in no particular order.
    pub fn keys(&self, view: &str) -> Result<impl Iterator<Item = &EntityKey>> {
        let (vi, _) = self.set.view(view)?;
        Ok(self.views[vi].entities.keys())
    }

    /// Keys held over all views.
    pub fn entity_count(&self) -> usize {
        self.views.iter().map(|v| v.entities.len()).sum()
    }

    /// Forgets keys no read or record can see any more: their newest event is more than the
    /// view's `expire_after` plus allowed lateness behind the watermark, so every later record
    /// admitted for them would start them afresh and every read reports them not found. Returns
    /// how many keys went. Invisible in values; call it as often as memory asks.
    pub fn sweep(&mut self) -> usize {
        let mut removed = 0;
        for (view, vs) in self.set.views().iter().zip(self.views.iter_mut()) {
            let (Some(expire), wm) = (view.expire_after_ms, vs.admission.watermark) else { continue };
            if wm == NONE {
                continue;
            }
            let cutoff = wm.saturating_sub(view.allowed_lateness_ms).saturating_sub(expire);
            let before = vs.entities.len();
            vs.entities.retain(|_, s| s.max_ts() >= cutoff);
            removed += before - vs.entities.len();
            if vs.entities.capacity() > 64 && vs.entities.capacity() > 4 * vs.entities.len() {
                vs.entities.shrink_to_fit();
            }
        }
        removed
    }

    /// Approximate heap bytes of all state: hash tables, keys, tiles, lists, sets. Divided by
    /// [`Engine::entity_count`] it gives the bytes per entity a benchmark reports.
    pub fn approx_heap_bytes(&self) -> usize {
        let slot = size_of::<(EntityKey, EntityState)>() + 1;
        self.views
            .iter()
            .map(|vs| {
                vs.entities.capacity() * slot
                    + vs.entities.iter().map(|(k, s)| k.heap_bytes() + s.heap_bytes()).sum::<usize>()
            })
            .sum()
    }
}
