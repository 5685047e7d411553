//! Integration tests of the store: recovery, reading, retention, idempotency, crash safety.

mod crash;
mod log;
mod store;
mod time;

use cascade_core::{Event, ItemRecord, Record, Timestamp, Value};

pub fn event(id: Option<&str>, ts: i64) -> Record {
    Record::Event(Event {
        id: id.map(str::to_string),
        event_type: "play".into(),
        ts: Timestamp(ts),
        user: Some(format!("u{}", ts % 7)),
        item: Some(format!("i{}", ts % 13)),
        fields: vec![("duration_ms".into(), Value::Int(ts * 10))],
    })
}

pub fn item(id: &str, title: &str, deleted: bool) -> Record {
    Record::Item(ItemRecord {
        id: id.into(),
        attributes: vec![("title".into(), Value::String(title.into()))],
        available: true,
        created_at: None,
        deleted,
        updated_at: Timestamp(1),
    })
}
