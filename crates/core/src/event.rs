//! What the event log holds: interaction events and catalogue records.

use crate::time::Timestamp;
use crate::value::Value;

/// A validated interaction event (`view`, `click`, `rating`, `transaction`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The client's idempotency key: an id seen before is not stored again.
    pub id: Option<String>,
    pub event_type: String,
    pub ts: Timestamp,
    pub user: Option<String>,
    pub item: Option<String>,
    /// Declared fields, sorted by name.
    pub fields: Vec<(String, Value)>,
}

impl Event {
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// The latest known state of an item, as written by an upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRecord {
    pub id: String,
    /// Declared attributes, sorted by name.
    pub attributes: Vec<(String, Value)>,
    /// Whether the item may be recommended now (out of stock, region-locked, ... are `false`).
    pub available: bool,
    pub created_at: Option<Timestamp>,
    /// A tombstone: the item is gone and reads answer "not found".
    pub deleted: bool,
    /// Event time of this version of the record.
    pub updated_at: Timestamp,
}

/// The latest known state of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub attributes: Vec<(String, Value)>,
    pub updated_at: Timestamp,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(Event),
    Item(ItemRecord),
    User(UserRecord),
}

impl Record {
    /// The record's times with their field names: an event's `ts`; an item's `updated_at` and
    /// `created_at`; a user's `updated_at`. What the time horizon and a quarantine look at.
    pub fn times(&self) -> Vec<(&'static str, Timestamp)> {
        match self {
            Record::Event(e) => vec![("ts", e.ts)],
            Record::Item(i) => {
                let mut times = vec![("updated_at", i.updated_at)];
                times.extend(i.created_at.map(|t| ("created_at", t)));
                times
            }
            Record::User(u) => vec![("updated_at", u.updated_at)],
        }
    }

    /// The latest of [`Record::times`].
    pub fn latest_time(&self) -> Timestamp {
        self.times().into_iter().map(|(_, t)| t).max().unwrap_or(Timestamp(i64::MIN))
    }

    /// The client idempotency key, if any. Catalogue upserts have none: the latest write wins.
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Record::Event(e) => e.id.as_deref(),
            Record::Item(_) | Record::User(_) => None,
        }
    }

    /// Event time of the record.
    pub fn ts(&self) -> Timestamp {
        match self {
            Record::Event(e) => e.ts,
            Record::Item(i) => i.updated_at,
            Record::User(u) => u.updated_at,
        }
    }
}
