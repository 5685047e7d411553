//! Serving's real-time view of the event log: every user's recent interactions, every item's
//! facts (availability, attributes, release and first interaction) and engagement counts.
//!
//! The trained bundle knows the world as of its training data; a request must also see what
//! happened since — the item the user played a minute ago (history for item-kNN and ALS fold-in,
//! the `exclude_seen` rule), the item withdrawn this morning (`exclude_unavailable`), the new
//! release (freshness). [`Live`] is kept up with the log by the server, record by record, and is
//! rebuilt by replaying the log at start-up, so it never disagrees with what was written.

use crate::rules::ItemFacts;
use cascade_core::{Record, Value};
use parking_lot::RwLock;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The event type impressions are logged as.
pub use cascade_core::IMPRESSION;

/// What [`Live`] keeps.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Event types that are interactions (`[train] interactions`): history, first interaction,
    /// engagement outcomes.
    pub interactions: BTreeSet<String>,
    /// Most recent interactions kept per user.
    pub history_cap: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig { interactions: BTreeSet::new(), history_cap: 500 }
    }
}

/// One item as serving sees it now.
#[derive(Debug, Clone, Default)]
pub struct LiveItem {
    pub facts: Arc<ItemFacts>,
    /// Attribute tokens (genres, artists) as ids of [`Live`]'s vocabulary, sorted, for affinities.
    pub tokens: Vec<u32>,
    /// `released_at`, ms, when the item declares it.
    pub released_at: Option<i64>,
    /// Event time of its first interaction, ms.
    pub first_seen: Option<i64>,
    pub interactions: u64,
    pub impressions: u64,
}

#[derive(Debug, Default)]
struct State {
    index: HashMap<Arc<str>, u32>,
    items: Vec<LiveItem>,
    ids: Vec<Arc<str>>,
    vocab: HashMap<String, u32>,
    /// Per user: (event time ms, item index), time-ordered, at most `history_cap`.
    users: HashMap<String, Vec<(i64, u32)>>,
}

impl State {
    fn item_index(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.items.len() as u32;
        let id: Arc<str> = Arc::from(id);
        self.index.insert(id.clone(), i);
        self.ids.push(id.clone());
        self.items.push(LiveItem {
            facts: Arc::new(ItemFacts { id: id.to_string(), available: true, ..ItemFacts::default() }),
            ..LiveItem::default()
        });
        i
    }
}

/// A user's recent interactions, most recent last.
#[derive(Debug, Clone, Default)]
pub struct UserHistory {
    /// (event time ms, item id).
    pub events: Vec<(i64, Arc<str>)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Live {
    config: LiveConfig,
    state: RwLock<State>,
    next_offset: AtomicU64,
}

impl Live {
    pub fn new(config: LiveConfig) -> Live {
        Live { config, state: RwLock::default(), next_offset: AtomicU64::new(0) }
    }

    /// The offset of the next record to apply.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Moves the position past records the store's quarantine hid (never backwards).
    pub fn skip_to(&self, offset: u64) {
        self.next_offset.fetch_max(offset, Ordering::AcqRel);
    }

    /// Applies records in offset order (records below [`Live::next_offset`] are skipped).
    pub fn apply(&self, records: &[(u64, Record)]) {
        let from = self.next_offset();
        let mut state = self.state.write();
        let mut next = from;
        for (offset, record) in records.iter().filter(|(o, _)| *o >= from) {
            next = offset + 1;
            match record {
                Record::Item(item) => {
                    let i = state.item_index(&item.id) as usize;
                    let mut attributes = std::collections::BTreeMap::new();
                    let mut released_at = None;
                    for (name, value) in &item.attributes {
                        let values: Vec<String> = match value {
                            Value::StringList(list) => list.clone(),
                            Value::String(s) => vec![s.clone()],
                            Value::Int(n) => vec![n.to_string()],
                            Value::Bool(b) => vec![b.to_string()],
                            Value::Timestamp(t) => {
                                if name == "released_at" {
                                    released_at = Some(t.0);
                                }
                                vec![t.0.to_string()]
                            }
                            Value::Float(f) => vec![f.to_string()],
                        };
                        attributes.insert(name.clone(), values);
                    }
                    let mut tokens: Vec<u32> = cascade_bundle::attribute_tokens(&item.attributes)
                        .into_iter()
                        .filter(|(t, _)| !t.starts_with("title:"))
                        .map(|(t, _)| {
                            let next = state.vocab.len() as u32;
                            *state.vocab.entry(t).or_insert(next)
                        })
                        .collect();
                    tokens.sort_unstable();
                    tokens.dedup();
                    let live = &mut state.items[i];
                    live.facts = Arc::new(ItemFacts {
                        id: item.id.clone(),
                        available: item.available && !item.deleted,
                        created_at: item.created_at.map(|t| t.0).or(released_at),
                        attributes,
                    });
                    live.tokens = tokens;
                    live.released_at = released_at;
                }
                Record::User(_) => {}
                Record::Event(event) => {
                    let Some(item) = &event.item else { continue };
                    if event.event_type == IMPRESSION {
                        let i = state.item_index(item) as usize;
                        state.items[i].impressions += 1;
                    } else if self.config.interactions.contains(&event.event_type) {
                        let i = state.item_index(item);
                        let live = &mut state.items[i as usize];
                        live.interactions += 1;
                        let ts = event.ts.0;
                        live.first_seen = Some(live.first_seen.map_or(ts, |f| f.min(ts)));
                        if let Some(user) = &event.user {
                            let cap = self.config.history_cap.max(1);
                            let history = state.users.entry(user.clone()).or_default();
                            // Events mostly arrive in time order; a late one is inserted in place.
                            let at = history.partition_point(|e| e.0 <= ts);
                            history.insert(at, (ts, i));
                            if history.len() > cap {
                                history.drain(..history.len() - cap);
                            }
                        }
                    }
                }
            }
        }
        drop(state);
        self.next_offset.fetch_max(next, Ordering::AcqRel);
    }

    /// The user's recent interactions (empty for an unknown user).
    pub fn history(&self, user: &str) -> UserHistory {
        let state = self.state.read();
        let events = state
            .users
            .get(user)
            .map(|h| h.iter().map(|&(ts, i)| (ts, state.ids[i as usize].clone())).collect())
            .unwrap_or_default();
        UserHistory { events }
    }

    /// The items named by `ids`, `None` for items the log has never mentioned.
    pub fn items(&self, ids: &[&str]) -> Vec<Option<LiveItem>> {
        let state = self.state.read();
        ids.iter().map(|id| state.index.get(*id).map(|&i| state.items[i as usize].clone())).collect()
    }

    /// Calls `f` with each named item (or `None`), under one read lock and without copying.
    pub fn with_items<T>(&self, ids: &[&str], mut f: impl FnMut(usize, Option<&LiveItem>) -> T) -> Vec<T> {
        let state = self.state.read();
        ids.iter().enumerate().map(|(n, id)| f(n, state.index.get(*id).map(|&i| &state.items[i as usize]))).collect()
    }

    /// The `n` available items with the most interactions: the fallback when no model can serve.
    pub fn most_popular(&self, n: usize) -> Vec<(String, u64)> {
        let state = self.state.read();
        let mut all: Vec<(u64, &str)> = state
            .items
            .iter()
            .zip(&state.ids)
            .filter(|(i, _)| i.facts.available && i.interactions > 0)
            .map(|(i, id)| (i.interactions, &**id))
            .collect();
        all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        all.into_iter().take(n).map(|(c, id)| (id.to_string(), c)).collect()
    }

    /// The `n` users with the most recent interactions, each with their items (most recent
    /// last): whom the precompute job serves first.
    pub fn recent_users(&self, n: usize) -> Vec<(String, Vec<Arc<str>>)> {
        let state = self.state.read();
        let mut latest: Vec<(i64, &String)> =
            state.users.iter().filter_map(|(u, h)| h.last().map(|e| (e.0, u))).collect();
        if latest.len() > n {
            latest.select_nth_unstable_by(n, |a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            latest.truncate(n);
        }
        latest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        latest
            .into_iter()
            .map(|(_, u)| (u.clone(), state.users[u].iter().map(|&(_, i)| state.ids[i as usize].clone()).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::{Event, ItemRecord, Timestamp};

    fn event(kind: &str, user: &str, item: &str, ts: i64) -> Record {
        Record::Event(Event {
            id: None,
            event_type: kind.into(),
            ts: Timestamp(ts),
            user: Some(user.into()),
            item: Some(item.into()),
            fields: Vec::new(),
        })
    }

    fn item(id: &str, available: bool, genres: &[&str]) -> Record {
        Record::Item(ItemRecord {
            id: id.into(),
            attributes: vec![("genres".into(), Value::StringList(genres.iter().map(|g| g.to_string()).collect()))],
            available,
            created_at: Some(Timestamp(5)),
            deleted: false,
            updated_at: Timestamp(5),
        })
    }

    #[test]
    fn histories_facts_and_engagement_follow_the_log() {
        let live = Live::new(LiveConfig { interactions: ["play".to_string()].into(), history_cap: 3 });
        let records: Vec<(u64, Record)> = [
            item("a", true, &["rock", "pop"]),
            item("b", false, &["rock"]),
            event("play", "u", "a", 30),
            event("play", "u", "b", 10),
            event("impression", "u", "a", 31),
            event("skip", "u", "c", 40),
            event("play", "u", "c", 50),
            event("play", "u", "a", 60),
            event("play", "v", "a", 20),
        ]
        .into_iter()
        .enumerate()
        .map(|(o, r)| (o as u64, r))
        .collect();
        live.apply(&records[..4]);
        // Re-applying what was applied changes nothing.
        live.apply(&records);
        assert_eq!(live.next_offset(), 9);
        let h: Vec<(i64, String)> = live.history("u").events.iter().map(|(t, i)| (*t, i.to_string())).collect();
        // Time-ordered, capped at the 3 latest; the skip is not an interaction.
        assert_eq!(h, [(30, "a".into()), (50, "c".into()), (60, "a".into())]);
        assert!(live.history("nobody").events.is_empty());
        let items = live.items(&["a", "b", "zzz"]);
        let a = items[0].as_ref().unwrap();
        assert_eq!((a.interactions, a.impressions, a.first_seen), (3, 1, Some(20)));
        assert_eq!(a.tokens.len(), 2);
        assert_eq!(a.facts.attributes["genres"], ["rock", "pop"]);
        let b = items[1].as_ref().unwrap();
        assert!(!b.facts.available);
        assert_eq!(b.tokens.len(), 1);
        assert!(a.tokens.contains(&b.tokens[0]), "one vocabulary for all items");
        assert!(items[2].is_none());
        // The most recently active first.
        let recent: Vec<String> = live.recent_users(5).into_iter().map(|(u, _)| u).collect();
        assert_eq!(recent, ["u", "v"]);
        assert_eq!(live.recent_users(1)[0].1.len(), 3);
        // b is unavailable, so popularity leaves it out.
        assert_eq!(live.most_popular(5), [("a".to_string(), 3), ("c".to_string(), 1)]);
    }
}
