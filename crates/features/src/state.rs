//! Per-key aggregation state: the one code path that both the online engine (records in log
//! order) and the replay (records in event-time order) run, and the read that turns state into
//! values as of an instant.
//!
//! Every aggregate is a function of the *set* of records applied (ties broken by log offset), not
//! of the order they came in, so both paths agree; see the crate documentation for the argument.

use crate::key::{Entities, value_str};
use crate::resolve::{AggSpec, FieldRef, ResolvedFeature, ResolvedView, Tiling, filter_matches};
use crate::{FeatureValue, Status};
use cascade_core::{Event, FieldType, ItemRecord, Timestamp, UserRecord, Value};
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// "No timestamp yet".
pub(crate) const NONE: i64 = i64::MIN;

/// A record as a view sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    Event(&'a Event),
    Item(&'a ItemRecord),
    User(&'a UserRecord),
}

/// A field of a record: an id or a typed value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FieldVal<'a> {
    Str(&'a str),
    Val(&'a Value),
}

impl FieldVal<'_> {
    fn num(self) -> Option<f64> {
        match self {
            FieldVal::Val(Value::Int(i)) => Some(*i as f64),
            FieldVal::Val(Value::Float(f)) => Some(*f),
            _ => None,
        }
    }

    fn string(&self) -> Option<Cow<'_, str>> {
        match self {
            FieldVal::Str(s) => Some(Cow::Borrowed(s)),
            FieldVal::Val(v) => value_str(v),
        }
    }

    fn to_value(self) -> Value {
        match self {
            FieldVal::Str(s) => Value::String(s.to_string()),
            FieldVal::Val(v) => v.clone(),
        }
    }
}

impl<'a> Source<'a> {
    /// The record as a source (which views it may enter is decided by admission).
    pub(crate) fn of(record: &'a cascade_core::Record) -> Source<'a> {
        match record {
            cascade_core::Record::Event(e) => Source::Event(e),
            cascade_core::Record::Item(i) => Source::Item(i),
            cascade_core::Record::User(u) => Source::User(u),
        }
    }

    fn is_catalogue(self) -> bool {
        !matches!(self, Source::Event(_))
    }

    fn field(self, r: &FieldRef) -> Option<FieldVal<'a>> {
        match (self, r) {
            (Source::Event(e), FieldRef::User) => e.user.as_deref().map(FieldVal::Str),
            (Source::Event(e), FieldRef::Item) => e.item.as_deref().map(FieldVal::Str),
            (Source::Event(e), FieldRef::Field(f)) => e.field(f).map(FieldVal::Val),
            (Source::Item(i), FieldRef::Item) => Some(FieldVal::Str(&i.id)),
            (Source::User(u), FieldRef::User) => Some(FieldVal::Str(&u.id)),
            (Source::Item(i), FieldRef::Field(f)) if !i.deleted => attribute(&i.attributes, f),
            (Source::User(u), FieldRef::Field(f)) => attribute(&u.attributes, f),
            _ => None,
        }
    }

    /// Whether the record is one the feature reads (event type and filter).
    fn matches(self, f: &ResolvedFeature) -> bool {
        match self {
            Source::Event(e) => {
                f.events.contains(&e.event_type)
                    && f.filter.iter().all(|(name, want)| filter_matches(e.field(name), want))
            }
            Source::Item(_) | Source::User(_) => true,
        }
    }
}

fn attribute<'a>(attrs: &'a [(String, Value)], name: &str) -> Option<FieldVal<'a>> {
    attrs.iter().find(|(n, _)| n == name).map(|(_, v)| FieldVal::Val(v))
}

/// The state of one key of one view: its current lifetime (session) and, online only, the few
/// earlier ones a late record could still join to it.
///
/// A key's records form sessions separated by gaps longer than the view's `expire_after` in
/// event time; reads see the newest session. In event-time order (replay) a record either
/// extends the newest session or starts a new one. In log order (online) a late record may also
/// fall in the gap before the newest session and bridge it to the previous one, which is then
/// merged in; that is why earlier sessions are kept until no admissible record can reach them.
/// Admission guarantees an admitted record is never more than `expire_after` before the newest
/// session's start (the allowed lateness is at most `expire_after`), so only the last earlier
/// session can ever be bridged.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EntityState {
    pub(crate) newest: Session,
    /// Earlier sessions in time order (none in replay; rarely more than one online).
    pub(crate) older: Vec<Session>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Session {
    /// Oldest and newest event time applied.
    pub(crate) min_ts: i64,
    pub(crate) max_ts: i64,
    /// One per feature of the view, in definition order.
    pub(crate) feats: Box<[FeatState]>,
}

impl Session {
    pub(crate) fn new(view: &ResolvedView) -> Session {
        Session {
            min_ts: NONE,
            max_ts: NONE,
            feats: view.features.iter().map(|f| FeatState { last_ts: NONE, acc: Acc::for_feature(f) }).collect(),
        }
    }

    fn apply(&mut self, view: &ResolvedView, src: Source<'_>, ts: i64, seq: u64) {
        self.min_ts = if self.min_ts == NONE { ts } else { self.min_ts.min(ts) };
        self.max_ts = self.max_ts.max(ts);
        for (f, st) in view.features.iter().zip(self.feats.iter_mut()) {
            if !f.agg.is_stateful() || !src.matches(f) {
                continue;
            }
            let val = match &f.field {
                None => None,
                Some(r) => match src.field(r) {
                    Some(v) => Some(v),
                    // A catalogue record without the attribute says it has none now.
                    None if src.is_catalogue() => None,
                    // An event without the field does not count for this feature.
                    None => continue,
                },
            };
            st.update(f, ts, seq, val, self.max_ts);
        }
    }

    /// Folds an earlier session into this one.
    fn merge(&mut self, view: &ResolvedView, earlier: Session) {
        self.min_ts = self.min_ts.min(earlier.min_ts);
        self.max_ts = self.max_ts.max(earlier.max_ts);
        for ((f, st), other) in view.features.iter().zip(self.feats.iter_mut()).zip(earlier.feats.into_vec()) {
            st.merge(f, other, self.max_ts);
        }
    }

    fn heap_bytes(&self) -> usize {
        self.feats.len() * size_of::<FeatState>() + self.feats.iter().map(|f| f.acc.heap_bytes()).sum::<usize>()
    }
}

impl EntityState {
    pub(crate) fn new(view: &ResolvedView) -> EntityState {
        EntityState { newest: Session::new(view), older: Vec::new() }
    }

    /// Newest event time applied in the current session.
    pub(crate) fn max_ts(&self) -> i64 {
        self.newest.max_ts
    }

    /// Applies one record admitted to the view, with event time `ts` and log offset `seq`.
    /// `horizon` is the oldest event time a later record can still have (the watermark minus the
    /// allowed lateness online; `ts` itself in event-time order).
    ///
    /// This is the only place state changes.
    pub(crate) fn apply(&mut self, view: &ResolvedView, src: Source<'_>, ts: i64, seq: u64, horizon: i64) {
        if let Some(gap) = view.expire_after_ms
            && self.newest.max_ts != NONE
        {
            if ts > self.newest.max_ts.saturating_add(gap) {
                let done = std::mem::replace(&mut self.newest, Session::new(view));
                self.older.push(done);
            } else if let Some(prev) = self.older.last()
                && ts <= prev.max_ts.saturating_add(gap)
            {
                // A late record bridging the gap: the two sessions are one.
                let prev = self.older.pop().expect("checked");
                self.newest.merge(view, prev);
            }
            debug_assert!(ts >= self.newest.min_ts.saturating_sub(gap) || self.newest.min_ts == NONE);
            // Sessions no later record can reach are gone for good.
            let reach = horizon.saturating_sub(gap);
            self.older.retain(|s| s.max_ts >= reach);
        }
        self.newest.apply(view, src, ts, seq);
    }

    /// Heap bytes held (an estimate: allocator overhead is not counted).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.newest.heap_bytes()
            + self.older.capacity() * size_of::<Session>()
            + self.older.iter().map(Session::heap_bytes).sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FeatState {
    /// Newest event time of a record this feature read: the value's event time.
    pub(crate) last_ts: i64,
    pub(crate) acc: Acc,
}

/// One tile of a sliding window: the records whose event time falls in
/// `[idx * tile, (idx + 1) * tile)`. `val` is their sum, minimum or maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tile {
    pub(crate) idx: i64,
    pub(crate) count: u64,
    pub(crate) val: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Acc {
    /// Nothing beyond `last_ts` (time_since_last; ratio and request features have no state).
    None,
    /// Lifetime count, sum, mean.
    Scalar { count: u64, sum: f64 },
    /// Lifetime min or max.
    Extreme(Option<f64>),
    /// Sliding count, sum, mean, min, max: non-empty tiles in ascending order, at most the
    /// window's tile count (a ring: old tiles leave at the front as new ones enter at the back).
    Tiles(VecDeque<Tile>),
    /// Value → newest event time seen with it, at most `max_distinct` entries.
    Distinct(HashMap<Box<str>, i64>),
    /// (event time, log offset, value) of the newest record; `None` value = attribute absent.
    Last(Option<Box<(i64, u64, Option<Value>)>>),
    /// The newest (event time, log offset, value) entries, newest first, at most `n`.
    LastN(VecDeque<(i64, u64, Box<str>)>),
    /// `s` is the decayed count as of `t_ref`, the newest event time applied.
    Decayed { s: f64, t_ref: i64 },
}

impl Acc {
    fn for_feature(f: &ResolvedFeature) -> Acc {
        use AggSpec as A;
        match (f.agg, f.window) {
            (A::Count | A::Sum | A::Mean, None) => Acc::Scalar { count: 0, sum: 0.0 },
            (A::Min | A::Max, None) => Acc::Extreme(None),
            (A::Count | A::Sum | A::Mean | A::Min | A::Max, Some(_)) => Acc::Tiles(VecDeque::new()),
            (A::DistinctCount { .. }, _) => Acc::Distinct(HashMap::new()),
            (A::Last, _) => Acc::Last(None),
            (A::LastN { .. }, _) => Acc::LastN(VecDeque::new()),
            (A::DecayedCount { .. }, _) => Acc::Decayed { s: 0.0, t_ref: NONE },
            (A::TimeSinceLast | A::Ratio { .. } | A::HourOfDay | A::DayOfWeek | A::Context, _) => Acc::None,
        }
    }
}

/// The first tile a window read (or kept) as of `t` covers.
fn first_tile(w: Tiling, t: i64) -> i64 {
    t.div_euclid(w.tile_ms) - w.tiles + 1
}

/// The earliest event time a window as of `t` covers (`i64::MIN` for lifetime).
fn window_start(window: Option<Tiling>, t: i64) -> i64 {
    window.map_or(i64::MIN, |w| first_tile(w, t).saturating_mul(w.tile_ms))
}

impl Acc {
    fn heap_bytes(&self) -> usize {
        match self {
            Acc::None | Acc::Scalar { .. } | Acc::Extreme(_) | Acc::Decayed { .. } => 0,
            Acc::Tiles(t) => t.capacity() * size_of::<Tile>(),
            Acc::Distinct(m) => {
                m.capacity() * (size_of::<(Box<str>, i64)>() + 1) + m.keys().map(|k| k.len()).sum::<usize>()
            }
            Acc::Last(l) => l.as_ref().map_or(0, |b| size_of::<(i64, u64, Option<Value>)>() + value_heap(&b.2)),
            Acc::LastN(l) => {
                l.capacity() * size_of::<(i64, u64, Box<str>)>() + l.iter().map(|e| e.2.len()).sum::<usize>()
            }
        }
    }
}

fn value_heap(v: &Option<Value>) -> usize {
    match v {
        Some(Value::String(s)) => s.capacity(),
        Some(Value::StringList(l)) => l.capacity() * 24 + l.iter().map(String::capacity).sum::<usize>(),
        _ => 0,
    }
}

impl FeatState {
    fn update(&mut self, f: &ResolvedFeature, ts: i64, seq: u64, val: Option<FieldVal<'_>>, max_ts: i64) {
        self.last_ts = self.last_ts.max(ts);
        let x = val.and_then(FieldVal::num);
        match &mut self.acc {
            Acc::None => {}
            Acc::Scalar { count, sum } => {
                *count += 1;
                *sum += x.unwrap_or(0.0);
            }
            Acc::Extreme(cur) => {
                let x = x.unwrap_or(f64::NAN);
                *cur = Some(match (f.agg, *cur) {
                    (AggSpec::Min, Some(c)) => c.min(x),
                    (AggSpec::Max, Some(c)) => c.max(x),
                    _ => x,
                });
            }
            Acc::Tiles(tiles) => {
                let w = f.window.expect("tiles only for sliding windows");
                let live = first_tile(w, max_ts);
                while tiles.front().is_some_and(|t| t.idx < live) {
                    tiles.pop_front();
                }
                let idx = ts.div_euclid(w.tile_ms);
                if idx < live {
                    // Late, and older than any window a read can still ask for.
                    return;
                }
                let pos = match tiles.back() {
                    Some(t) if t.idx == idx => tiles.len() - 1,
                    Some(t) if t.idx > idx => match tiles.binary_search_by_key(&idx, |t| t.idx) {
                        Ok(p) => p,
                        Err(p) => {
                            tiles.insert(p, Tile { idx, count: 0, val: 0.0 });
                            p
                        }
                    },
                    _ => {
                        tiles.push_back(Tile { idx, count: 0, val: 0.0 });
                        tiles.len() - 1
                    }
                };
                combine(f.agg, &mut tiles[pos], 1, x.unwrap_or(0.0));
            }
            Acc::Distinct(map) => {
                let AggSpec::DistinctCount { max_distinct } = f.agg else { unreachable!("distinct state") };
                let Some(v) = val.as_ref().and_then(FieldVal::string) else { return };
                let start = window_start(f.window, max_ts);
                if ts < start {
                    return;
                }
                if let Some(m) = map.get_mut(v.as_ref()) {
                    *m = (*m).max(ts);
                    return;
                }
                map.insert(v.as_ref().into(), ts);
                cap_distinct(map, max_distinct, start);
            }
            Acc::Last(cur) => {
                if cur.as_ref().is_none_or(|c| (c.0, c.1) < (ts, seq)) {
                    *cur = Some(Box::new((ts, seq, val.map(FieldVal::to_value))));
                }
            }
            Acc::LastN(list) => {
                let AggSpec::LastN { n } = f.agg else { unreachable!("last_n state") };
                let Some(v) = val.as_ref().and_then(FieldVal::string) else { return };
                insert_newest_first(list, n, (ts, seq, v.as_ref().into()));
            }
            Acc::Decayed { s, t_ref } => {
                let AggSpec::DecayedCount { half_life_ms } = f.agg else { unreachable!("decayed state") };
                let h = half_life_ms as f64;
                if *t_ref == NONE {
                    (*s, *t_ref) = (1.0, ts);
                } else if ts >= *t_ref {
                    *s = *s * (-((ts - *t_ref) as f64) / h).exp2() + 1.0;
                    *t_ref = ts;
                } else {
                    *s += (-((*t_ref - ts) as f64) / h).exp2();
                }
            }
        }
    }

    /// Folds the same feature's state of an earlier session into this one; `max_ts` is the
    /// merged session's newest event time. The result is what applying both sessions' records
    /// to one state would give.
    fn merge(&mut self, f: &ResolvedFeature, other: FeatState, max_ts: i64) {
        self.last_ts = self.last_ts.max(other.last_ts);
        match (&mut self.acc, other.acc) {
            (Acc::Scalar { count, sum }, Acc::Scalar { count: c, sum: s }) => {
                *count += c;
                *sum += s;
            }
            (Acc::Extreme(a), Acc::Extreme(b)) => {
                *a = match (*a, b) {
                    (Some(x), Some(y)) if f.agg == AggSpec::Min => Some(x.min(y)),
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                };
            }
            (Acc::Tiles(tiles), Acc::Tiles(other)) => {
                let w = f.window.expect("tiles only for sliding windows");
                let live = first_tile(w, max_ts);
                let mut merged = VecDeque::with_capacity(tiles.len() + other.len());
                let (mut a, mut b) = (std::mem::take(tiles).into_iter().peekable(), other.into_iter().peekable());
                loop {
                    let next = match (a.peek(), b.peek()) {
                        (Some(x), Some(y)) if x.idx == y.idx => {
                            let (mut x, y) = (a.next().expect("peeked"), b.next().expect("peeked"));
                            combine(f.agg, &mut x, y.count, y.val);
                            x
                        }
                        (Some(x), Some(y)) if x.idx < y.idx => a.next().expect("peeked"),
                        (Some(_), None) => a.next().expect("peeked"),
                        (_, Some(_)) => b.next().expect("peeked"),
                        (None, None) => break,
                    };
                    if next.idx >= live {
                        merged.push_back(next);
                    }
                }
                *tiles = merged;
            }
            (Acc::Distinct(map), Acc::Distinct(other)) => {
                let AggSpec::DistinctCount { max_distinct } = f.agg else { unreachable!("distinct state") };
                for (k, m) in other {
                    let e = map.entry(k).or_insert(m);
                    *e = (*e).max(m);
                }
                cap_distinct(map, max_distinct, window_start(f.window, max_ts));
            }
            (Acc::Last(a), Acc::Last(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|x| (x.0, x.1) < (b.0, b.1))
                {
                    *a = Some(b);
                }
            }
            (Acc::LastN(list), Acc::LastN(other)) => {
                let AggSpec::LastN { n } = f.agg else { unreachable!("last_n state") };
                for e in other {
                    insert_newest_first(list, n, e);
                }
            }
            (Acc::Decayed { s, t_ref }, Acc::Decayed { s: s2, t_ref: t2 }) => {
                let AggSpec::DecayedCount { half_life_ms } = f.agg else { unreachable!("decayed state") };
                let h = half_life_ms as f64;
                if t2 != NONE {
                    if *t_ref == NONE {
                        (*s, *t_ref) = (s2, t2);
                    } else if t2 > *t_ref {
                        *s = *s * (-((t2 - *t_ref) as f64) / h).exp2() + s2;
                        *t_ref = t2;
                    } else {
                        *s += s2 * (-((*t_ref - t2) as f64) / h).exp2();
                    }
                }
            }
            (Acc::None, Acc::None) => {}
            (mine, theirs) => unreachable!("sessions of one view have one shape: {mine:?} / {theirs:?}"),
        }
    }

    /// The aggregate as of `a` (`a` ≥ every event time applied), or `None` when it has no value
    /// (an empty window of a mean, min, max, last or last_n).
    fn value(&self, f: &ResolvedFeature, a: i64) -> Option<Value> {
        Some(match (&self.acc, f.agg) {
            (Acc::Scalar { count, .. }, AggSpec::Count) => Value::Int(*count as i64),
            (Acc::Scalar { sum, .. }, AggSpec::Sum) => Value::Float(*sum),
            (Acc::Scalar { count, sum }, AggSpec::Mean) => {
                if *count == 0 {
                    return None;
                }
                Value::Float(sum / *count as f64)
            }
            (Acc::Extreme(x), _) => Value::Float((*x)?),
            (Acc::Tiles(tiles), agg) => {
                let w = f.window.expect("tiles only for sliding windows");
                let (lo, hi) = (first_tile(w, a), a.div_euclid(w.tile_ms));
                let (mut count, mut val) = (0u64, None::<f64>);
                for t in tiles.iter().filter(|t| t.idx >= lo && t.idx <= hi) {
                    count += t.count;
                    val = Some(match (agg, val) {
                        (_, None) => t.val,
                        (AggSpec::Min, Some(v)) => v.min(t.val),
                        (AggSpec::Max, Some(v)) => v.max(t.val),
                        (_, Some(v)) => v + t.val,
                    });
                }
                match agg {
                    AggSpec::Count => Value::Int(count as i64),
                    AggSpec::Sum => Value::Float(val.unwrap_or(0.0)),
                    AggSpec::Mean if count > 0 => Value::Float(val? / count as f64),
                    AggSpec::Min | AggSpec::Max => Value::Float(val?),
                    _ => return None,
                }
            }
            (Acc::Distinct(map), _) => {
                let start = window_start(f.window, a);
                Value::Int(map.values().filter(|&&m| m >= start).count() as i64)
            }
            (Acc::Last(cur), _) => {
                let (ts, _, v) = cur.as_deref()?;
                if *ts < window_start(f.window, a) {
                    return None;
                }
                v.clone()?
            }
            (Acc::LastN(list), _) => {
                let start = window_start(f.window, a);
                let ids: Vec<String> = list.iter().filter(|e| e.0 >= start).map(|e| e.2.to_string()).collect();
                if ids.is_empty() {
                    return None;
                }
                Value::StringList(ids)
            }
            (Acc::Decayed { s, t_ref }, AggSpec::DecayedCount { half_life_ms }) => {
                Value::Float(s * (-((a - t_ref) as f64) / half_life_ms as f64).exp2())
            }
            (Acc::None, AggSpec::TimeSinceLast) => Value::Float((a - self.last_ts) as f64 / 1000.0),
            _ => return None,
        })
    }
}

/// Adds `count` records with value (sum, min or max) `val` to a tile.
fn combine(agg: AggSpec, t: &mut Tile, count: u64, val: f64) {
    t.val = match agg {
        AggSpec::Min if t.count > 0 => t.val.min(val),
        AggSpec::Max if t.count > 0 => t.val.max(val),
        AggSpec::Min | AggSpec::Max => val,
        _ => t.val + val,
    };
    t.count += count;
}

/// Keeps a distinct set within its cap: values that left the window first, then the one seen
/// longest ago (ties by value, so the kept set never depends on hash order). The kept set is
/// always the `max_distinct` most recently seen values, so the count is exact up to the cap and
/// saturates there.
fn cap_distinct(map: &mut HashMap<Box<str>, i64>, max_distinct: usize, start: i64) {
    if map.len() <= max_distinct {
        return;
    }
    map.retain(|_, m| *m >= start);
    while map.len() > max_distinct {
        let oldest = map.iter().min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0))).map(|(k, _)| k.clone()).expect("non-empty");
        map.remove(&oldest);
    }
}

/// Inserts an entry into a list kept newest first by (event time, offset), at most `n` long.
fn insert_newest_first(list: &mut VecDeque<(i64, u64, Box<str>)>, n: usize, entry: (i64, u64, Box<str>)) {
    let pos = list.iter().position(|e| (e.0, e.1) < (entry.0, entry.1)).unwrap_or(list.len());
    if pos < n {
        list.insert(pos, entry);
        list.truncate(n);
    }
}

fn fallback(f: &ResolvedFeature, status: Status, event_time: Option<i64>, a: i64) -> FeatureValue {
    FeatureValue {
        value: f.default.clone(),
        status,
        event_time: event_time.map(Timestamp),
        age: event_time.map(|t| age(a, t)),
    }
}

fn age(a: i64, t: i64) -> Duration {
    Duration::from_millis(a.saturating_sub(t).max(0) as u64)
}

/// Every feature of `view` for one key as of `a` (events with ts ≤ a; `a` must be at least the
/// key's newest event time), in definition order. `row` supplies request features.
pub(crate) fn read_view(
    view: &ResolvedView,
    state: Option<&EntityState>,
    a: i64,
    row: Option<&Entities>,
) -> Vec<FeatureValue> {
    if view.source == cascade_core::features::ViewSource::Request {
        return view.features.iter().map(|f| request_feature(f, a, row)).collect();
    }
    let live =
        state.map(|s| &s.newest).filter(|s| s.max_ts != NONE && view.expire_after_ms.is_none_or(|e| a - s.max_ts <= e));
    let Some(s) = live else {
        return view.features.iter().map(|f| fallback(f, Status::NotFound, None, a)).collect();
    };
    debug_assert!(a >= s.max_ts, "reads are as of an instant after everything applied");
    let mut out: Vec<FeatureValue> = view
        .features
        .iter()
        .zip(s.feats.iter())
        .map(|(f, st)| {
            if matches!(f.agg, AggSpec::Ratio { .. }) {
                return fallback(f, Status::Default, None, a);
            }
            if st.last_ts == NONE {
                return fallback(f, Status::Default, None, a);
            }
            if f.ttl_ms > 0 && a - st.last_ts > f.ttl_ms {
                return fallback(f, Status::StaleOutsideTtl, Some(st.last_ts), a);
            }
            match st.value(f, a) {
                Some(v) => FeatureValue {
                    value: Some(v),
                    status: Status::Present,
                    event_time: Some(Timestamp(st.last_ts)),
                    age: Some(age(a, st.last_ts)),
                },
                None => fallback(f, Status::Default, Some(st.last_ts), a),
            }
        })
        .collect();
    for (i, f) in view.features.iter().enumerate() {
        if let AggSpec::Ratio { numerator, denominator } = f.agg {
            out[i] = ratio(f, &out[numerator], &out[denominator], a);
        }
    }
    out
}

fn ratio(f: &ResolvedFeature, num: &FeatureValue, den: &FeatureValue, a: i64) -> FeatureValue {
    let event_time = num.event_time.max(den.event_time).map(|t| t.0);
    if num.status == Status::StaleOutsideTtl || den.status == Status::StaleOutsideTtl {
        return fallback(f, Status::StaleOutsideTtl, event_time, a);
    }
    let as_num = |v: &FeatureValue| match v.value {
        Some(Value::Int(i)) => Some(i as f64),
        Some(Value::Float(x)) => Some(x),
        _ => None,
    };
    let any_present = num.status == Status::Present || den.status == Status::Present;
    match (as_num(num), as_num(den), event_time) {
        (Some(n), Some(d), Some(t)) if any_present && d != 0.0 => {
            if f.ttl_ms > 0 && a - t > f.ttl_ms {
                return fallback(f, Status::StaleOutsideTtl, event_time, a);
            }
            FeatureValue {
                value: Some(Value::Float(n / d)),
                status: Status::Present,
                event_time: Some(Timestamp(t)),
                age: Some(age(a, t)),
            }
        }
        _ => fallback(f, Status::Default, event_time, a),
    }
}

/// Hour of day and day of week of `a` (UTC), or a context field of the request row.
fn request_feature(f: &ResolvedFeature, a: i64, row: Option<&Entities>) -> FeatureValue {
    let present = |v: Value| FeatureValue {
        value: Some(v),
        status: Status::Present,
        event_time: Some(Timestamp(a)),
        age: Some(Duration::ZERO),
    };
    match f.agg {
        AggSpec::HourOfDay => present(Value::Int(a.div_euclid(3_600_000).rem_euclid(24))),
        // 1970-01-01 was a Thursday; 0 = Monday.
        AggSpec::DayOfWeek => present(Value::Int((a.div_euclid(86_400_000) + 3).rem_euclid(7))),
        _ => {
            let name = f.field.as_ref().map_or("", FieldRef::name);
            match row.and_then(|r| r.field(name)) {
                Some(v) if v.field_type() == f.ty => present(v.clone()),
                Some(Value::Int(i)) if f.ty == FieldType::Float => present(Value::Float(*i as f64)),
                _ => fallback(f, Status::Default, None, a),
            }
        }
    }
}
