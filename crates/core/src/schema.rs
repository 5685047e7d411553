//! Validation of incoming JSON against the project's declared schema.
//!
//! Validation collects every problem of an input, each naming its field, so a client can fix a
//! whole batch in one round trip. Nothing here writes anything: the caller appends only what
//! validated completely.

use crate::config::{Config, EntityKind, FieldSpec};
use crate::event::{Event, ItemRecord, UserRecord};
use crate::time::Timestamp;
use crate::value::{Value, json_kind, timestamp_from_json};
use std::collections::BTreeMap;

/// Ids of users, items and events are at most this many bytes.
pub const MAX_ID_BYTES: usize = 256;

/// One problem with one input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field (`type`, `fields.value`, `attributes.genres`).
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError { field: field.into(), reason: reason.into() }
    }
}

#[derive(Debug, Clone)]
struct EventSchema {
    user: bool,
    item: bool,
    fields: BTreeMap<String, FieldSpec>,
}

/// The resolved schema: what event types exist and what catalogue records look like.
#[derive(Debug, Clone)]
pub struct Schema {
    events: BTreeMap<String, EventSchema>,
    item_attributes: BTreeMap<String, FieldSpec>,
    user_attributes: BTreeMap<String, FieldSpec>,
    default_available: bool,
}

impl Schema {
    pub fn from_config(config: &Config) -> Schema {
        let events = config
            .events
            .iter()
            .map(|(name, e)| {
                let schema = EventSchema {
                    user: e.entities.contains(&EntityKind::User),
                    item: e.entities.contains(&EntityKind::Item),
                    fields: e.fields.clone(),
                };
                (name.clone(), schema)
            })
            .collect();
        Schema {
            events,
            item_attributes: config.entities.item.attributes.clone(),
            user_attributes: config.entities.user.attributes.clone(),
            default_available: config.catalogue.default_available,
        }
    }

    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.events.keys().map(String::as_str)
    }

    /// Validates one event object `{id?, type, ts, user?, item?, fields?}`.
    pub fn validate_event(&self, v: &serde_json::Value) -> Result<Event, Vec<FieldError>> {
        let Some(obj) = v.as_object() else {
            return Err(vec![FieldError::new("", format!("expected an event object, got {}", json_kind(v)))]);
        };
        let mut errors = Vec::new();
        for key in obj.keys() {
            if !matches!(key.as_str(), "id" | "type" | "ts" | "user" | "item" | "fields") {
                errors.push(FieldError::new(
                    key.as_str(),
                    "unknown top-level field (expected id, type, ts, user, item, fields)",
                ));
            }
        }
        let id = optional_id(obj.get("id"), "id", &mut errors);
        let ts = match obj.get("ts") {
            None => {
                errors.push(FieldError::new("ts", "required"));
                None
            }
            Some(t) => timestamp_from_json(t).map_err(|e| errors.push(FieldError::new("ts", e.reason))).ok(),
        };
        let user = optional_id(obj.get("user"), "user", &mut errors);
        let item = optional_id(obj.get("item"), "item", &mut errors);
        let event_type = match obj.get("type") {
            None => {
                errors.push(FieldError::new("type", "required"));
                None
            }
            Some(serde_json::Value::String(t)) => match self.events.get_key_value(t.as_str()) {
                Some(found) => Some(found),
                None => {
                    let known: Vec<&str> = self.event_types().collect();
                    errors.push(FieldError::new(
                        "type",
                        format!("unknown event type `{t}` (declared: {})", known.join(", ")),
                    ));
                    None
                }
            },
            Some(other) => {
                errors.push(FieldError::new("type", format!("expected string, got {}", json_kind(other))));
                None
            }
        };
        let mut fields = Vec::new();
        if let Some((_, schema)) = event_type {
            for (wanted, name) in [(schema.user, "user"), (schema.item, "item")] {
                match (obj.contains_key(name), wanted) {
                    (false, true) => errors.push(FieldError::new(name, "required by this event type")),
                    (true, false) => errors.push(FieldError::new(name, "not allowed for this event type")),
                    _ => {}
                }
            }
            let empty = serde_json::Map::new();
            let given = match obj.get("fields") {
                None | Some(serde_json::Value::Null) => &empty,
                Some(serde_json::Value::Object(m)) => m,
                Some(other) => {
                    errors.push(FieldError::new("fields", format!("expected object, got {}", json_kind(other))));
                    &empty
                }
            };
            fields = typed_fields("fields", &schema.fields, given, &mut errors);
        }
        match (errors.is_empty(), event_type, ts) {
            (true, Some((name, _)), Some(ts)) => Ok(Event { id, event_type: name.clone(), ts, user, item, fields }),
            _ => Err(errors),
        }
    }

    /// Validates an item upsert body `{attributes?, available?, created_at?, deleted?, updated_at?}`.
    /// `now` stands in for `updated_at` when the client sends none.
    pub fn validate_item(
        &self,
        id: &str,
        v: &serde_json::Value,
        now: Timestamp,
    ) -> Result<ItemRecord, Vec<FieldError>> {
        let mut errors = Vec::new();
        check_id(id, "id", &mut errors);
        let obj = body_object(v, &["attributes", "available", "created_at", "deleted", "updated_at"], &mut errors);
        let attributes = attributes(&self.item_attributes, obj.get("attributes"), &mut errors);
        let available = optional_bool(obj.get("available"), "available", &mut errors).unwrap_or(self.default_available);
        let deleted = optional_bool(obj.get("deleted"), "deleted", &mut errors).unwrap_or(false);
        let created_at = optional_ts(obj.get("created_at"), "created_at", &mut errors);
        let updated_at = optional_ts(obj.get("updated_at"), "updated_at", &mut errors).unwrap_or(now);
        if errors.is_empty() {
            Ok(ItemRecord { id: id.to_string(), attributes, available, created_at, deleted, updated_at })
        } else {
            Err(errors)
        }
    }

    /// Validates a user upsert body `{attributes?, updated_at?}`.
    pub fn validate_user(
        &self,
        id: &str,
        v: &serde_json::Value,
        now: Timestamp,
    ) -> Result<UserRecord, Vec<FieldError>> {
        let mut errors = Vec::new();
        check_id(id, "id", &mut errors);
        let obj = body_object(v, &["attributes", "updated_at"], &mut errors);
        let attributes = attributes(&self.user_attributes, obj.get("attributes"), &mut errors);
        let updated_at = optional_ts(obj.get("updated_at"), "updated_at", &mut errors).unwrap_or(now);
        if errors.is_empty() { Ok(UserRecord { id: id.to_string(), attributes, updated_at }) } else { Err(errors) }
    }
}

fn body_object<'a>(
    v: &'a serde_json::Value,
    allowed: &[&str],
    errors: &mut Vec<FieldError>,
) -> &'a serde_json::Map<String, serde_json::Value> {
    static EMPTY: std::sync::OnceLock<serde_json::Map<String, serde_json::Value>> = std::sync::OnceLock::new();
    let Some(obj) = v.as_object() else {
        errors.push(FieldError::new("", format!("expected an object, got {}", json_kind(v))));
        return EMPTY.get_or_init(serde_json::Map::new);
    };
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(FieldError::new(key.as_str(), format!("unknown field (expected {})", allowed.join(", "))));
        }
    }
    obj
}

fn attributes(
    schema: &BTreeMap<String, FieldSpec>,
    v: Option<&serde_json::Value>,
    errors: &mut Vec<FieldError>,
) -> Vec<(String, Value)> {
    let empty = serde_json::Map::new();
    let given = match v {
        None | Some(serde_json::Value::Null) => &empty,
        Some(serde_json::Value::Object(m)) => m,
        Some(other) => {
            errors.push(FieldError::new("attributes", format!("expected object, got {}", json_kind(other))));
            return Vec::new();
        }
    };
    typed_fields("attributes", schema, given, errors)
}

/// Checks `given` against the declared fields: unknown, missing and mistyped ones are errors.
/// The result is sorted by field name (BTreeMap order).
fn typed_fields(
    prefix: &str,
    schema: &BTreeMap<String, FieldSpec>,
    given: &serde_json::Map<String, serde_json::Value>,
    errors: &mut Vec<FieldError>,
) -> Vec<(String, Value)> {
    for key in given.keys() {
        if !schema.contains_key(key) {
            let declared: Vec<&str> = schema.keys().map(String::as_str).collect();
            let declared = if declared.is_empty() { "none".to_string() } else { declared.join(", ") };
            errors.push(FieldError::new(format!("{prefix}.{key}"), format!("unknown field (declared: {declared})")));
        }
    }
    let mut out = Vec::with_capacity(given.len());
    for (name, spec) in schema {
        match given.get(name) {
            None | Some(serde_json::Value::Null) => {
                if spec.required {
                    errors.push(FieldError::new(format!("{prefix}.{name}"), format!("required ({})", spec.ty)));
                }
            }
            Some(v) => match Value::from_json(spec.ty, v) {
                Ok(value) => out.push((name.clone(), value)),
                Err(e) => errors.push(FieldError::new(format!("{prefix}.{name}"), e.reason)),
            },
        }
    }
    out
}

fn check_id(id: &str, field: &str, errors: &mut Vec<FieldError>) -> bool {
    match id_problem(id) {
        None => true,
        Some(reason) => {
            errors.push(FieldError::new(field, reason));
            false
        }
    }
}

/// What is wrong with `id` as a user, item or event id, if anything: the one rule for ids in
/// every request, so an id that could never have been ingested is refused everywhere.
pub fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("must not be empty")
    } else if id.len() > MAX_ID_BYTES {
        Some("longer than 256 bytes")
    } else if id.chars().any(char::is_control) {
        Some("contains control characters")
    } else {
        None
    }
}

/// Ids are strings; integers are accepted and kept in their decimal form (MovieLens-style ids).
fn optional_id(v: Option<&serde_json::Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let id = match v? {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_u64() => n.to_string(),
        // `5.0` is the integer 5 to JSON Schema and to JavaScript clients.
        serde_json::Value::Number(n) if let Some(i) = crate::value::json_integer(n) => i.to_string(),
        other => {
            errors.push(FieldError::new(field, format!("expected string id, got {}", json_kind(other))));
            return None;
        }
    };
    check_id(&id, field, errors).then_some(id)
}

fn optional_bool(v: Option<&serde_json::Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<bool> {
    match v? {
        serde_json::Value::Bool(b) => Some(*b),
        other => {
            errors.push(FieldError::new(field, format!("expected bool, got {}", json_kind(other))));
            None
        }
    }
}

fn optional_ts(v: Option<&serde_json::Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<Timestamp> {
    timestamp_from_json(v?).map_err(|e| errors.push(FieldError::new(field, e.reason))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::from_config(&Config::default())
    }

    fn errors(v: &serde_json::Value) -> Vec<(String, String)> {
        schema().validate_event(v).unwrap_err().into_iter().map(|e| (e.field, e.reason)).collect()
    }

    #[test]
    fn accepts_a_rating() {
        let e = schema()
            .validate_event(&json!({"id": "e1", "type": "rating", "ts": "2024-01-01T00:00:00Z", "user": 7, "item": "i9", "fields": {"value": 4}}))
            .unwrap();
        assert_eq!(e.user.as_deref(), Some("7"));
        assert_eq!(e.field("value"), Some(&Value::Float(4.0)));
        assert_eq!(e.ts, Timestamp(1_704_067_200_000));
    }

    #[test]
    fn names_every_bad_field() {
        let errs = errors(
            &json!({"type": "rating", "ts": "noon", "user": "u", "fields": {"value": "high", "mood": 1}, "extra": 1}),
        );
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["extra", "ts", "item", "fields.mood", "fields.value"], "{errs:?}");
        assert!(errs[4].1.contains("expected float, got string"));
    }

    #[test]
    fn unknown_type_lists_declared_ones() {
        let errs = errors(&json!({"type": "teleport", "ts": 0, "user": "u"}));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "type");
        assert!(errs[0].1.contains("unknown event type `teleport`") && errs[0].1.contains("rating"));
    }

    #[test]
    fn missing_required_and_forbidden_entities() {
        let errs = errors(&json!({"type": "rating", "ts": 0, "user": "u", "item": "i"}));
        assert_eq!(errs, [("fields.value".to_string(), "required (float)".to_string())]);
        let errs = errors(
            &json!({"type": "transaction", "ts": 0, "user": "u", "item": "i", "fields": {"amount": 3.5, "currency": "EUR"}}),
        );
        assert_eq!(errs, [("item".to_string(), "not allowed for this event type".to_string())]);
    }

    #[test]
    fn item_upsert_defaults_and_checks() {
        let s = schema();
        let now = Timestamp(5);
        let item = s.validate_item("i1", &json!({"attributes": {"title": "T", "genres": ["rock"]}}), now).unwrap();
        assert!(item.available && !item.deleted);
        assert_eq!(item.updated_at, now);
        let errs = s.validate_item("", &json!({"attributes": {"genres": "rock"}, "colour": 1}), now).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["id", "colour", "attributes.genres", "attributes.title"]);
    }
}
