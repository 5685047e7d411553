//! Integration tests of the feature engine: behaviour of each aggregation, checkpoints, crash
//! recovery with a real SIGKILL, property tests of the replay against a brute-force oracle, and the
//! online store suite run against both backends.

mod asof;
mod behaviour;
mod checkpoint;
mod crash;
mod offline;
mod online_store;
mod oracle;
mod redis_outage;

use cascade_core::{Config, Event, ItemRecord, Record, Timestamp, Value};
use cascade_features::{FeatureSet, FeatureValue};

/// A feature set from `[features.*]` TOML (with the default events and attributes).
pub fn features(toml: &str) -> FeatureSet {
    let config = Config::from_toml(toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    FeatureSet::from_config(&config).unwrap()
}

pub fn tx(ts: i64, user: &str, amount: f64, device: Option<&str>, card: &str) -> Record {
    let mut fields = vec![
        ("amount".to_string(), Value::Float(amount)),
        ("card".to_string(), Value::String(card.into())),
        ("currency".to_string(), Value::String("EUR".into())),
    ];
    if let Some(d) = device {
        fields.push(("device".to_string(), Value::String(d.into())));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Record::Event(Event {
        id: None,
        event_type: "transaction".into(),
        ts: Timestamp(ts),
        user: Some(user.into()),
        item: None,
        fields,
    })
}

pub fn play(ts: i64, user: &str, item: &str, completed: Option<bool>) -> Record {
    Record::Event(Event {
        id: None,
        event_type: "play".into(),
        ts: Timestamp(ts),
        user: Some(user.into()),
        item: Some(item.into()),
        fields: completed.map(|c| ("completed".to_string(), Value::Bool(c))).into_iter().collect(),
    })
}

pub fn item(ts: i64, id: &str, price: Option<f64>, deleted: bool) -> Record {
    Record::Item(ItemRecord {
        id: id.into(),
        attributes: price.map(|p| ("price".to_string(), Value::Float(p))).into_iter().collect(),
        available: true,
        created_at: None,
        deleted,
        updated_at: Timestamp(ts),
    })
}

/// Floats equal up to summation-order rounding; everything else exactly.
pub fn same_value(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(Value::Float(x)), Some(Value::Float(y))) => (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())),
        _ => a == b,
    }
}

pub fn same(a: &FeatureValue, b: &FeatureValue) -> bool {
    a.status == b.status && a.event_time == b.event_time && a.age == b.age && same_value(&a.value, &b.value)
}
