//! Cascade's public HTTP wire types: request and response bodies and the stable error codes.
//!
//! These types depend on nothing else in Cascade, so refactoring an engine never silently changes
//! the public API. The OpenAPI document is generated from them (see `docs/openapi.json`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

mod lifecycle;
pub mod schema;

pub use lifecycle::*;

/// Stable, machine-readable error codes. Clients may match on these strings; they never change
/// meaning once published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON / NDJSON.
    MalformedJson,
    /// One or more events failed validation; `details` lists each index, field and reason.
    InvalidEvents,
    /// `POST /v1/events` carried no event (`[]`, an empty body, blank NDJSON); nothing happened.
    EmptyBatch,
    /// A time lies further past the server's clock than `log.max_event_ahead` allows: an
    /// event's `ts`, an item's or user's `updated_at` or `created_at`, a request's
    /// `context.time`. `details` names each index (for batches), field, and how far ahead it is.
    /// Nothing was written.
    TimeAhead,
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
    /// A recommendation, rank or similar-items request is well-formed JSON but not valid (`k`
    /// out of range, an empty user id, too many items); `details` names the field.
    InvalidRecommendationRequest,
    /// The request names a pipeline that is not configured.
    UnknownPipeline,
    /// A request that is not valid, where no more specific code applies; `details` names the field.
    InvalidRequest,
    /// What the request names does not exist, where no more specific code applies.
    NotFound,
    /// The request conflicts with the current state (a concurrent change); reread and retry.
    Conflict,
    /// A dependency is down or busy; retry later.
    Unavailable,
    /// No API key, or one that is not known or was revoked (401, with `WWW-Authenticate`).
    Unauthorized,
    /// The API key lacks the route's scope (403); the message names the scope.
    Forbidden,
    /// Too many requests of this route's class at once (503, with `Retry-After`); retry shortly.
    Overloaded,
    /// The request took longer than `server.request_timeout` (503); retrying may work.
    Timeout,
    /// The body did not arrive within `server.body_read_timeout` (408).
    RequestTimeout,
    /// The path exists but not with this method; the `allow` header lists the methods it takes.
    MethodNotAllowed,
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
#[serde(deny_unknown_fields)]
pub struct EventIn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::id)]
    pub id: Option<String>,
    /// An event type declared in `cascade.toml` (`[events.<type>]`).
    #[serde(rename = "type")]
    #[schema(min_length = 1)]
    pub event_type: String,
    #[schema(schema_with = schema::timestamp)]
    pub ts: serde_json::Value,
    /// Present exactly when the event type's `entities` lists `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::id)]
    pub user: Option<String>,
    /// Present exactly when the event type's `entities` lists `item`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::id)]
    pub item: Option<String>,
    /// The event type's declared fields (`null` reads as none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Option<Object>)]
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
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    /// The attributes declared under `[entities.item.attributes]` (`null` reads as none).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub available: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::timestamp)]
    pub created_at: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub deleted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::timestamp)]
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
#[serde(deny_unknown_fields)]
pub struct UserIn {
    /// The attributes declared under `[entities.user.attributes]` (`null` reads as none).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::timestamp)]
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
    #[schema(min_items = 1)]
    pub entities: Vec<EntityIn>,
    /// Features as `view:feature`, or `view` for every feature of a view, in the order the
    /// response returns them (at least one).
    #[schema(min_items = 1)]
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
    #[schema(schema_with = schema::scalars)]
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
    /// The value, or the declared default unless `status` is `present` (`null`: no default):
    /// a number, string, boolean or list, by the feature's aggregation.
    #[schema(value_type = Value)]
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

/// One of the node's long-running jobs (`GET /v2/health/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobHealth {
    /// `live-view`, `feature-tail`, `registry-watch`, `precompute`, `offline-export`,
    /// `store-maintenance`, `impressions`, `vector-log`.
    pub name: String,
    /// Rounds run so far (polls of a log consumer, runs of a schedule).
    pub rounds: u64,
    pub failures: u64,
    /// Rounds that panicked; the job carried on with the next one.
    pub panics: u64,
    /// Failures since the last successful round: above zero, the job is retrying with backoff.
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Whether the job has ended (only while the node stops, or a queue writer whose queue closed).
    pub ended: bool,
}

/// Body of `GET /v2/health/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobsResponse {
    pub jobs: Vec<JobHealth>,
}

/// What a job does (`POST /v1/jobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `cascade train`: a bundle trained on the event log and committed; the promotion gate
    /// moves the aliases. One training at a time per project.
    Train,
    /// `cascade evaluate` on the event log: the configured retrievers, each tuned on the
    /// validation slice and scored on the latest 10% of interactions.
    Evaluate,
    /// One round of the `precompute` schedule now: heavy sources' lists for recent users into
    /// the online store.
    Precompute,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Evaluate => "evaluate",
            JobKind::Precompute => "precompute",
        }
    }
}

/// Body of `POST /v1/jobs`: the kind, and its parameters (all optional). Its schema is written
/// by hand ([`schema::job_request`]): the derive cannot say that a kind takes no other keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum JobRequest {
    Train {
        #[serde(default)]
        params: ModelJobParams,
    },
    Evaluate {
        #[serde(default)]
        params: ModelJobParams,
    },
    Precompute {
        #[serde(default)]
        params: NoParams,
    },
}

impl utoipa::PartialSchema for JobRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::job_request().into()
    }
}

impl ToSchema for JobRequest {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push((ModelJobParams::name().into(), ModelJobParams::schema()));
        schemas.push((NoParams::name().into(), NoParams::schema()));
    }
}

impl JobRequest {
    pub fn kind(&self) -> JobKind {
        match self {
            JobRequest::Train { .. } => JobKind::Train,
            JobRequest::Evaluate { .. } => JobKind::Evaluate,
            JobRequest::Precompute { .. } => JobKind::Precompute,
        }
    }
}

/// Most K a training or evaluation job takes.
pub const MAX_JOB_K: usize = 100;

/// Parameters of a `train` or `evaluate` job (those of `cascade train` and `cascade evaluate`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelJobParams {
    /// Skip the grid search; fit each model with its base parameters.
    #[serde(default)]
    pub no_tune: bool,
    /// List length K of the offline metrics and of the tuning objective, NDCG@K (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "schema::integral_not_null")]
    #[schema(minimum = 1, maximum = 100, nullable = false)]
    pub k: Option<usize>,
}

/// No parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting its turn: jobs run one at a time, in the order submitted.
    Queued,
    Running,
    Succeeded,
    /// `error` says why: the work failed, or the server stopped or restarted before it ended.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    /// Whether the job has ended (succeeded or failed).
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// How far a job has come: `done` of `total` steps, and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    pub done: u32,
    /// Steps of the job: for `train`, reading the log, training and committing, finishing;
    /// for `evaluate`, reading the log, then one per model; for `precompute`, one.
    pub total: u32,
    /// The latest progress line.
    pub message: String,
}

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobLogLine {
    /// RFC 3339.
    pub at: String,
    pub message: String,
}

/// A job (`GET /v1/jobs/{id}`; the answer to `POST /v1/jobs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    #[schema(pattern = r"^job_[0-9a-f]{12}$")]
    pub id: String,
    pub kind: JobKind,
    pub state: JobState,
    /// The parameters it runs with, defaults filled in.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Who submitted it: `key:NAME` (the API key's name), or `anonymous` when the project has
    /// no API keys.
    pub who: String,
    /// RFC 3339.
    pub submitted_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub finished_at: Option<String>,
    pub progress: JobProgress,
    /// The latest lines of its log, oldest first (at most 200; `GET /v1/jobs` leaves them out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<JobLogLine>,
    /// What a job that succeeded produced: for `train`, the bundle `version`, the promotion
    /// `gate`'s verdict, the offline `metrics` per model and the `data` trained on; for
    /// `evaluate`, `k`, `test_fraction` and one entry per model in `models` (as `cascade
    /// evaluate --json` prints them); for `precompute`, the users whose lists were written, per
    /// source (`null` when no pipeline precomputes a source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable = false)]
    pub result: Option<serde_json::Value>,
    /// Why a failed job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// Body of `GET /v1/jobs`: the most recent jobs, newest first, without their logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// Body of `POST /v1/recommendations`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user": "u42", "k": 10, "context": {"device": "mobile", "page": "home"}, "exclude": ["i7"], "explain": true}))]
pub struct RecommendationRequest {
    /// The user. One the models have never seen is a cold-start user, not an error.
    #[schema(schema_with = schema::user)]
    pub user: String,
    /// How many items (default: the pipeline's `k`, at most its `max_k`).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "schema::integral")]
    #[schema(minimum = 1)]
    pub k: Option<usize>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = schema::context)]
    pub context: BTreeMap<String, serde_json::Value>,
    /// Items that must not be recommended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = schema::exclude)]
    pub exclude: Vec<String>,
    /// Keep only items whose attribute has one of the values (at least one), e.g.
    /// `{"genres": ["Comedy"]}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = schema::filters)]
    pub filters: BTreeMap<String, Vec<String>>,
    /// Return each item's trace: sources, per-stage scores, the ranker's top reasons, rules.
    #[serde(default)]
    pub explain: bool,
    /// A configured pipeline (`[pipelines.<name>]`; default `serving.default_pipeline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub pipeline: Option<String>,
}

/// One source's opinion of an item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SourceHit {
    pub source: String,
    pub score: f64,
    /// 0-based rank in that source's list.
    pub rank: usize,
}

/// A feature's contribution to the heavy ranker's score (TreeSHAP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reason {
    pub feature: String,
    pub value: f64,
    pub contribution: f64,
}

/// Why an item is where it is (`explain: true`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct ItemTrace {
    /// Every retrieval source that proposed it.
    pub hits: Vec<SourceHit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light_score: Option<f64>,
    /// The heavy ranker's raw score, and its calibrated probability of an interaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heavy_score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Position in the ranked list before rules and exploration (0-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranked_position: Option<usize>,
    /// The heavy ranker's strongest reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
    /// What business rules did to it (`pin`, `freshness_slot`, `max_per_window:<attr>`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendedItem {
    pub id: String,
    /// The order's score: a calibrated probability when the heavy ranker served.
    pub score: f64,
    /// 0-based.
    pub position: usize,
    /// The source whose quota brought it (absent for pinned items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Shown by the exploration policy rather than the ranker.
    pub explored: bool,
    /// Probability that the serving policy shows this item in this request (logged for
    /// off-policy evaluation).
    pub propensity: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<ItemTrace>,
}

/// How a response was served.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct ServingPath {
    /// Retrieval sources that served the request.
    pub sources: Vec<String>,
    /// What ordered the items: `heavy`, `light`, `retrieval`, `popularity` or `static`.
    pub ranked_by: String,
    /// Served by the cold-start sources.
    pub cold_start: bool,
    /// Candidates retrieval proposed (or the client gave) before ranking.
    #[serde(default)]
    pub candidates: usize,
    /// Why a fallback served, when one did (`no_bundle`, `ranker_missing`, `ranker_failed`,
    /// `ranker_timeout`, `features_unavailable`, `features_timeout`, `retrieval_failed`,
    /// `retrieval_timeout`, `index_missing`, `previous_version`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// Which bundle answered: `champion`, or `challenger` when a rollout routed the request
    /// to it (`model_version` names the version).
    #[serde(default = "champion")]
    pub arm: String,
    /// Time spent per stage, ms (with `explain: true`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stages_ms: BTreeMap<String, f64>,
}

fn champion() -> String {
    "champion".into()
}

/// An item a rule removed (with `explain: true`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RemovedItem {
    pub id: String,
    pub rule: String,
}

/// The answer to `POST /v1/recommendations` and `POST /v1/rank`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendationResponse {
    /// Identifies this response in the impression log; send it with outcomes
    /// (`fields.request_id`) to attribute them exactly.
    pub request_id: String,
    pub pipeline: String,
    /// The model bundle that served (absent when none could).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u64>,
    pub items: Vec<RecommendedItem>,
    pub path: ServingPath,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RemovedItem>,
    /// Rules' remarks (a pin that could not be placed, a list shorter than `k`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Body of `POST /v1/rank`: re-rank a list the client already has.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user": "u42", "items": ["i1", "i2", "i3"]}))]
pub struct RankRequest {
    #[schema(schema_with = schema::user)]
    pub user: String,
    /// The items to order, each once (at least one, at most the pipeline's `candidates`).
    /// Items the models do not know keep their relative order after the known ones.
    #[schema(schema_with = schema::rank_items)]
    pub items: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = schema::context)]
    pub context: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub explain: bool,
    /// A configured pipeline (`[pipelines.<name>]`; default `serving.default_pipeline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub pipeline: Option<String>,
}

/// The answer to `GET /v1/items/{id}/similar`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SimilarResponse {
    pub item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<u64>,
    pub items: Vec<SimilarItem>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SimilarItem {
    pub id: String,
    pub score: f64,
    /// `itemknn` (co-interaction cosine) or `content` (attribute tf-idf cosine).
    pub source: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_requests_take_each_kind_its_own_parameters() {
        let parse = |v: serde_json::Value| serde_json::from_value::<JobRequest>(v);
        assert_eq!(parse(json!({"kind": "train"})).unwrap(), JobRequest::Train { params: ModelJobParams::default() });
        assert_eq!(
            parse(json!({"kind": "evaluate", "params": {"no_tune": true, "k": 5.0}})).unwrap(),
            JobRequest::Evaluate { params: ModelJobParams { no_tune: true, k: Some(5) } }
        );
        assert_eq!(parse(json!({"kind": "precompute", "params": {}})).unwrap().kind(), JobKind::Precompute);
        for bad in [
            json!({}),
            json!({"kind": "retrain"}),
            json!({"kind": "train", "extra": 1}),
            json!({"kind": "train", "params": {"tune": false}}),
            json!({"kind": "train", "params": {"k": 2.5}}),
            json!({"kind": "precompute", "params": {"k": 5}}),
            json!({"kind": "train", "params": null}),
            json!({"kind": "train", "params": {"k": null}}),
            json!({"kind": "train", "params": {"no_tune": null}}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_ids_have_one_shape() {
        assert!(schema::is_job_id("job_018f2a3b4c5d"));
        for bad in ["job_018F2A3B4C5D", "job_018f2a3b4c5", "job_018f2a3b4c5d0", "018f2a3b4c5d", "job_../../etc", ""] {
            assert!(!schema::is_job_id(bad), "{bad}");
        }
    }

    #[test]
    fn k_takes_integral_numbers_only() {
        let k = |v: serde_json::Value| {
            serde_json::from_value::<RecommendationRequest>(json!({"user": "u", "k": v})).map(|r| r.k)
        };
        assert_eq!(k(json!(5)).unwrap(), Some(5));
        assert_eq!(k(json!(5.0)).unwrap(), Some(5));
        assert_eq!(k(json!(null)).unwrap(), None);
        // Too large for any pipeline: kept as the largest count, for the range check to refuse.
        assert_eq!(k(json!(3.6e25)).unwrap(), Some(usize::MAX));
        assert!(k(json!(5.5)).unwrap_err().to_string().contains("expected a non-negative integer"));
        assert!(k(json!(-1)).is_err());
        assert!(k(json!("5")).is_err());
        let absent: RecommendationRequest = serde_json::from_value(json!({"user": "u"})).unwrap();
        assert_eq!(absent.k, None);
    }
}
