//! Cascade's public HTTP wire types: request and response bodies and the stable error codes.
//!
//! These types depend on nothing else in Cascade, so refactoring an engine never silently changes
//! the public API. The OpenAPI document is generated from them (see `docs/openapi.json`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Stable, machine-readable error codes. Clients may match on these strings; they never change
/// meaning once published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON / NDJSON.
    MalformedJson,
    /// One or more events failed validation; `details` lists each index, field and reason.
    InvalidEvents,
    /// An item upsert failed validation.
    InvalidItem,
    /// A user upsert failed validation.
    InvalidUser,
    /// More events in one request than `server.max_batch_events`.
    BatchTooLarge,
    /// The body is larger than `server.max_body_bytes`.
    PayloadTooLarge,
    /// The body is not JSON (or NDJSON for `/v1/events`).
    UnsupportedMediaType,
    ItemNotFound,
    UserNotFound,
    /// The event log cannot take writes (a disk failure); retry on another replica or later.
    StoreUnavailable,
    /// A requested feature or view is not defined; `details` names each one (`features[i]`).
    UnknownFeature,
    /// A `POST /v1/features` body is well-formed JSON but not a valid request (no entities, no
    /// features, an entity lacking a key part a requested view needs); `details` names the field.
    InvalidFeatureRequest,
    /// The online feature store (Redis) cannot be reached; retry later.
    FeatureStoreUnavailable,
    Internal,
}

/// Every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// A human-readable summary.
    pub message: String,
    /// One entry per problem, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldProblem>,
}

/// One problem with one field of one input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldProblem {
    /// Position of the event in the batch (0-based); absent for single-record bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Dotted path of the field, e.g. `fields.value`; empty for the whole record.
    pub field: String,
    pub reason: String,
}

/// An event as clients send it. `ts` is an RFC 3339 string or integer milliseconds since the
/// epoch; `id` is an idempotency key; `fields` must match the event type's declared fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventIn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = String, example = "2024-05-01T12:00:00Z")]
    pub ts: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// The answer to an accepted batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IngestResponse {
    /// Events newly written.
    pub accepted: usize,
    /// Events whose id had been seen before; they were not written again.
    pub duplicates: Vec<Duplicate>,
    /// Log offsets of the first and last event written, when any was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Duplicate {
    /// Position of the event in the batch.
    pub index: usize,
    pub id: String,
    /// Offset of the copy stored earlier.
    pub offset: u64,
}

/// Body of `PUT /v1/items/{id}`. Omitted `available` takes `catalogue.default_available`;
/// omitted `updated_at` takes the server's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemIn {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub created_at: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub updated_at: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Item {
    pub id: String,
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// Log offset of this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Body of `PUT /v1/users/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserIn {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub updated_at: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: String,
    #[schema(value_type = Object)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// Body of `POST /v1/features`: the features to read for each entity, as of now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"entities": [{"user": "u1", "fields": {"device": "d7"}}], "features": ["user_tx:tx_1h", "user_tx:amount_24h"]}))]
pub struct FeaturesRequest {
    /// The entities to read features for (at least one, at most
    /// `features_store.max_entities_per_request`).
    pub entities: Vec<EntityIn>,
    /// Features as `view:feature`, or `view` for every feature of a view, in the order the
    /// response returns them.
    pub features: Vec<String>,
}

/// One entity of a feature read: the parts of the views' keys and the request context.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntityIn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Other key parts (`device`, `card`) and request context, by name: strings, numbers, booleans.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

/// Where a served value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeatureStatus {
    /// Computed from the entity's records, younger than the feature's TTL.
    Present,
    /// The entity is known but the feature has no value (e.g. an empty window of a mean); the
    /// declared default is served.
    Default,
    /// The newest record behind the value is older than the TTL; the default is served.
    StaleOutsideTtl,
    /// The entity is unknown to the view (never seen, or expired); the default is served.
    NotFound,
}

/// One feature of one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeatureValueOut {
    /// The value, or the declared default unless `status` is `present` (`null`: no default).
    #[schema(value_type = Object, nullable)]
    pub value: serde_json::Value,
    pub status: FeatureStatus,
    /// Event time (RFC 3339) of the newest record behind the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// How old that record was at the read, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
}

/// The features of one entity, in the response's `features` order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EntityFeatures {
    pub values: Vec<FeatureValueOut>,
}

/// The answer to `POST /v1/features`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeaturesResponse {
    /// The features served, as `view:feature` (a requested view expanded to its features).
    pub features: Vec<String>,
    /// One entry per requested entity, in request order.
    pub results: Vec<EntityFeatures>,
    /// The instant read (RFC 3339); a view answers as of its newest record if that is later.
    pub as_of: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `live`, `ready` or `unavailable`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
