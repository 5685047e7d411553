//! JSON bodies in the shape the HTTP API and NDJSON imports accept.

use cascade_core::{Event, ItemRecord, UserRecord, Value};
use serde_json::{Map, Value as Json};

fn object(fields: &[(String, Value)]) -> Json {
    Json::Object(fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// An event as `{id, type, ts, user, item, fields}`; absent parts are left out and `ts` is
/// RFC 3339 with milliseconds.
pub fn event_json(e: &Event) -> Json {
    let mut m = Map::new();
    if let Some(id) = &e.id {
        m.insert("id".into(), Json::String(id.clone()));
    }
    m.insert("type".into(), Json::String(e.event_type.clone()));
    m.insert("ts".into(), Json::String(e.ts.to_string()));
    if let Some(user) = &e.user {
        m.insert("user".into(), Json::String(user.clone()));
    }
    if let Some(item) = &e.item {
        m.insert("item".into(), Json::String(item.clone()));
    }
    if !e.fields.is_empty() {
        m.insert("fields".into(), object(&e.fields));
    }
    Json::Object(m)
}

/// An item upsert body `{attributes, available, created_at, updated_at}` (`deleted` only when set).
pub fn item_json(item: &ItemRecord) -> Json {
    let mut m = Map::new();
    m.insert("attributes".into(), object(&item.attributes));
    m.insert("available".into(), Json::Bool(item.available));
    if let Some(created) = item.created_at {
        m.insert("created_at".into(), Json::String(created.to_string()));
    }
    if item.deleted {
        m.insert("deleted".into(), Json::Bool(true));
    }
    m.insert("updated_at".into(), Json::String(item.updated_at.to_string()));
    Json::Object(m)
}

/// A user upsert body `{attributes, updated_at}`.
pub fn user_json(user: &UserRecord) -> Json {
    let mut m = Map::new();
    m.insert("attributes".into(), object(&user.attributes));
    m.insert("updated_at".into(), Json::String(user.updated_at.to_string()));
    Json::Object(m)
}
