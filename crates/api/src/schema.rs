//! Schemas the derive cannot write: ids and timestamps (a string or an integer), scalar maps,
//! lists with per-value limits. The limits repeat `cascade-core`'s (this crate depends on
//! nothing); `cascade-server`'s tests check that they agree, so the document says what the
//! server enforces.

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};

/// Ids of users, items and events are at most this many bytes of UTF-8 (`cascade_core::schema::MAX_ID_BYTES`).
pub const MAX_ID_BYTES: usize = 256;

/// The last millisecond of year 9999, the latest instant a timestamp may name
/// (`cascade_core::time::MAX_MILLIS`).
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Most ids in a recommendation request's `exclude`.
pub const MAX_EXCLUDE: usize = 1_000;
/// Most keys in a request's `context`, and the longest key, in bytes.
pub const MAX_CONTEXT_KEYS: usize = 32;
pub const MAX_CONTEXT_KEY_BYTES: usize = 64;
/// Longest string value in a request's `context`, `filters` or an entity's fields, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;
/// Most attributes in `filters`, and most values per attribute.
pub const MAX_FILTERS: usize = 16;
pub const MAX_FILTER_VALUES: usize = 256;
/// Most request-time fields of one entity of `POST /v1/features`.
pub const MAX_ENTITY_FIELDS: usize = 32;

/// The body of `POST /v1/jobs`: one object per kind, each with its own parameters
/// (`ModelJobParams`, `NoParams`) and no other key.
pub fn job_request() -> Schema {
    let kind = |kind: &str, params: &str, description: &str| {
        ObjectBuilder::new()
            .property("kind", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([kind])))
            .required("kind")
            .property("params", utoipa::openapi::Ref::from_schema_name(params))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .description(Some(description))
    };
    OneOfBuilder::new()
        .item(kind("train", "ModelJobParams", "`cascade train`: a bundle trained on the event log and committed; the promotion gate moves the aliases. One training at a time per project."))
        .item(kind("evaluate", "ModelJobParams", "`cascade evaluate` on the event log: the configured retrievers, each tuned on the validation slice and scored on the latest 10% of interactions."))
        .item(kind("precompute", "NoParams", "One round of the `precompute` schedule now: heavy sources' lists for recent users into the online store."))
        .description(Some("Body of `POST /v1/jobs`: the kind, and its parameters (all optional)."))
        .examples([serde_json::json!({"kind": "train", "params": {"no_tune": true}})])
        .into()
}

/// A job id: `job_` and 12 lowercase hex digits (the server mints them).
pub const JOB_ID_PATTERN: &str = r"^job_[0-9a-f]{12}$";

/// Whether `id` has the shape of a job id ([`JOB_ID_PATTERN`]); anything else names no job,
/// and is never used as a file name.
pub fn is_job_id(id: &str) -> bool {
    id.strip_prefix("job_")
        .is_some_and(|hex| hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// An id has no control characters (Unicode category Cc: U+0000–U+001F, U+007F–U+009F), in
/// the ECMA-262 dialect JSON Schema patterns use.
pub const ID_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";

/// A string id (1 to 256 bytes, no control characters).
pub fn id_string() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        // A character is at least one byte, so this bounds the characters; the byte limit
        // itself is in the description (JSON Schema counts characters).
        .max_length(Some(MAX_ID_BYTES))
        .pattern(Some(ID_PATTERN))
}

/// A user, item or event id: a string of 1 to 256 bytes without control characters, or an
/// integer (kept in its decimal form).
pub fn id() -> Schema {
    OneOfBuilder::new()
        .item(id_string())
        .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(i64::MIN)).maximum(Some(u64::MAX)))
        .description(Some(
            "A string of 1 to 256 bytes (UTF-8) without control characters, or an integer (kept in decimal)",
        ))
        .into()
}

/// A request's user: a string id.
pub fn user() -> Schema {
    id_string().description(Some("The user (1 to 256 bytes, no control characters)")).into()
}

/// An instant: RFC 3339 with an offset, or integer milliseconds since 1970, from 1970 to the
/// end of year 9999.
pub fn timestamp() -> Schema {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))))
        .item(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(MAX_TIMESTAMP_MS)))
        .description(Some(
            "RFC 3339 with an offset (`2024-05-01T12:00:00Z`) or integer milliseconds since 1970; from 1970 to the end of 9999",
        ))
        .examples([serde_json::json!("2024-05-01T12:00:00Z")])
        .into()
}

fn short_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).max_length(Some(MAX_VALUE_BYTES))
}

fn scalar() -> Schema {
    OneOfBuilder::new()
        .item(short_string())
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .into()
}

/// A map of names to strings, numbers or booleans (an entity's key parts and context).
pub fn scalars() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_ENTITY_FIELDS))
        .additional_properties(Some(AdditionalProperties::RefOr(scalar().into())))
        .description(Some(
            "Other key parts (`device`, `card`) and request context, by name: strings, numbers, booleans",
        ))
        .into()
}

/// A request's context: free-form, but `time` is an instant.
pub fn context() -> Schema {
    let value = OneOfBuilder::new()
        .item(short_string())
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(ObjectBuilder::new().schema_type(Type::Null));
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_CONTEXT_KEY_BYTES))
        .pattern(Some(ID_PATTERN));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("time", timestamp())
        .additional_properties(Some(AdditionalProperties::RefOr(Schema::from(value).into())))
        .max_properties(Some(MAX_CONTEXT_KEYS))
        .property_names(Some(name))
        .description(Some(
            "Request context: `time` (default now) is the instant features and rules are evaluated at; \
             other keys (`device`, `page`, ...; at most 32, each 1 to 64 bytes) hold strings (at most 256 \
             bytes), numbers, booleans or null, and are logged with the impressions",
        ))
        .into()
}

/// `exclude`: ids, at most [`MAX_EXCLUDE`].
pub fn exclude() -> Schema {
    ArrayBuilder::new()
        .items(id_string())
        .max_items(Some(MAX_EXCLUDE))
        .description(Some("Items that must not be recommended (at most 1,000 ids)"))
        .into()
}

/// `filters`: attribute name to the values kept (at least one each).
pub fn filters() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(
            Schema::from(
                ArrayBuilder::new().items(short_string()).min_items(Some(1)).max_items(Some(MAX_FILTER_VALUES)),
            )
            .into(),
        )))
        .max_properties(Some(MAX_FILTERS))
        .description(Some(
            "Keep only items whose attribute has one of the values (at least one), e.g. `{\"genres\": [\"Comedy\"]}`",
        ))
        .into()
}

/// `POST /v1/rank`'s items: at least one, each once.
pub fn rank_items() -> Schema {
    ArrayBuilder::new()
        .items(id_string())
        .min_items(Some(1))
        .unique_items(true)
        .description(Some(
            "The items to order, each once (at least one, at most the pipeline's `candidates`). \
             Items the models do not know keep their relative order after the known ones",
        ))
        .into()
}

/// Body of `POST /v1/events` as a JSON array: at least one event (at most
/// `server.max_batch_events`). The server reads the events as JSON values and checks each
/// against the project's schema, so this type only describes the document.
#[derive(Debug)]
pub struct EventBatch;

impl utoipa::PartialSchema for EventBatch {
    fn schema() -> utoipa::openapi::RefOr<Schema> {
        ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name(<crate::EventIn as utoipa::ToSchema>::name()))
            .min_items(Some(1))
            .description(Some("At least one event, at most `server.max_batch_events`"))
            .into()
    }
}

impl utoipa::ToSchema for EventBatch {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push((crate::EventIn::name().into(), crate::EventIn::schema()));
        crate::EventIn::schemas(schemas);
    }
}

/// Deserializes a version number that JSON may write as `7` or `7.0` (see [`integral`]); one too
/// large for `u64` saturates, so it names no version.
pub fn version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match integral(d)? {
        Some(v) => Ok(v as u64),
        None => Err(serde::de::Error::custom("expected a version number, got null")),
    }
}

/// Deserializes an optional count that JSON may write as `5` or `5.0` (the same integer to JSON
/// Schema and to JavaScript clients); a fraction or a negative number is refused. A count too
/// large for `usize` saturates, so the caller's range check names the limit it exceeds.
pub fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    use serde::Deserialize;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else { return Ok(None) };
    count(&n).map(Some)
}

/// [`integral`] for a count that may be left out (with `#[serde(default)]`) but not be `null`.
pub fn integral_not_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    use serde::Deserialize;
    count(&serde_json::Number::deserialize(d)?).map(Some)
}

fn count<E: serde::de::Error>(n: &serde_json::Number) -> Result<usize, E> {
    if let Some(u) = n.as_u64() {
        return Ok(usize::try_from(u).unwrap_or(usize::MAX));
    }
    match n.as_f64() {
        // `as` saturates at usize::MAX.
        Some(f) if f.fract() == 0.0 && f >= 0.0 => Ok(f as usize),
        _ => Err(E::custom(format!("expected a non-negative integer, got {n}"))),
    }
}
