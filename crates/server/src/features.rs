//! `POST /v1/features`: values with their event time, age and status, sampled into the served
//! vector log. The node keeps the online state up with the log.

use crate::body;
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use cascade_api::{
    EntityFeatures, EntityIn, ErrorCode, FeatureStatus, FeatureValueOut, FeaturesRequest, FeaturesResponse,
    FieldProblem,
};
use cascade_core::ErrorKind;
use cascade_core::Value;
use cascade_features::{Entities, FeatureError, LoggedVector, OnlineStore, Status};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The online store and what serving it needs.
pub struct Features {
    pub(crate) store: Arc<OnlineStore>,
    max_entities: usize,
    /// Per view, in definition order: value ages served and stale reads.
    age: Vec<metrics::Histogram>,
    stale: Vec<metrics::Counter>,
    /// When the state last reached the end of the log.
    caught_up_at: Mutex<Instant>,
    /// Sampled served vectors go here, one JSON line each, to the writer task.
    vector_log: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
    sample_rate: f64,
    requests: AtomicU64,
}

/// The served-vector log in the data directory, read by `cascade features audit`.
pub const VECTOR_LOG_FILE: &str = "feature_vectors.ndjson";

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Features {
    pub fn new(store: Arc<OnlineStore>, max_entities: usize, sample_rate: f64) -> Features {
        let views = store.features().views();
        Features {
            age: views
                .iter()
                .map(|v| metrics::histogram!("cascade_feature_value_age_seconds", "view" => v.name.clone()))
                .collect(),
            stale: views
                .iter()
                .map(|v| metrics::counter!("cascade_feature_stale_reads_total", "view" => v.name.clone()))
                .collect(),
            store,
            max_entities,
            caught_up_at: Mutex::new(Instant::now()),
            vector_log: Mutex::new(None),
            sample_rate,
            requests: AtomicU64::new(0),
        }
    }

    /// Opens the queue of sampled served vectors (one JSON line each), when vectors are sampled:
    /// the node's writer drains it into [`VECTOR_LOG_FILE`] until [`Features::close_vector_log`].
    pub fn open_vector_log(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        if self.sample_rate <= 0.0 {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        *self.vector_log.lock() = Some(tx);
        Some(rx)
    }

    /// The online feature store served.
    pub fn store(&self) -> &Arc<OnlineStore> {
        &self.store
    }

    pub fn close_vector_log(&self) {
        self.vector_log.lock().take();
    }

    /// Whether this request's vectors are logged: a deterministic spread of `sample_rate`.
    fn sampled(&self) -> bool {
        if self.sample_rate <= 0.0 {
            return false;
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let u = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
        u < self.sample_rate
    }

    /// Refreshes the lag gauges: records of the log not yet applied, and for how long the state
    /// has not been at the end of the log (0 when it is).
    pub fn record_lag(&self, log_end: u64) {
        let behind = log_end.saturating_sub(self.store.next_offset());
        let mut at = self.caught_up_at.lock();
        if behind == 0 {
            *at = Instant::now();
        }
        metrics::gauge!("cascade_feature_engine_lag_events").set(behind as f64);
        let secs = if behind == 0 { 0.0 } else { at.elapsed().as_secs_f64() };
        metrics::gauge!("cascade_feature_engine_lag_seconds").set(secs);
    }
}

fn invalid(field: String, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    ApiError::new(ErrorCode::InvalidFeatureRequest, format!("{field}: {reason}")).with_details(vec![FieldProblem {
        index: None,
        field,
        reason,
    }])
}

use cascade_api::schema::{MAX_ENTITY_FIELDS, MAX_VALUE_BYTES as MAX_FIELD_BYTES};

/// An entity of the request as the feature engine reads it; context values must be scalars.
fn entities(i: usize, e: EntityIn) -> Result<Entities, ApiError> {
    for (part, id) in [("user", &e.user), ("item", &e.item)] {
        if let Some(reason) = id.as_deref().and_then(cascade_core::schema::id_problem) {
            return Err(invalid(format!("entities[{i}].{part}"), reason));
        }
    }
    if e.fields.len() > MAX_ENTITY_FIELDS {
        return Err(invalid(format!("entities[{i}].fields"), format!("at most {MAX_ENTITY_FIELDS} fields")));
    }
    let mut fields = Vec::with_capacity(e.fields.len());
    for (name, v) in e.fields {
        let value = match v {
            serde_json::Value::String(s) if s.len() > MAX_FIELD_BYTES => {
                return Err(invalid(
                    format!("entities[{i}].fields.{name}"),
                    format!("longer than {MAX_FIELD_BYTES} bytes"),
                ));
            }
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            other => {
                return Err(invalid(
                    format!("entities[{i}].fields.{name}"),
                    format!("must be a string, number or boolean, not {}", cascade_core::value::json_kind(&other)),
                ));
            }
        };
        fields.push((name, value));
    }
    Ok(Entities { user: e.user, item: e.item, fields })
}

fn read_error(e: &FeatureError) -> ApiError {
    match (e.kind(), e) {
        (_, FeatureError::RowMissingKey { row, missing, .. }) => {
            invalid(format!("entities[{row}].{missing}"), e.to_string())
        }
        // Not logged per request: the store logs an outage when it starts and ends, and
        // readiness reports it and a catch-up.
        (ErrorKind::Unavailable, _) => ApiError::new(ErrorCode::FeatureStoreUnavailable, e.to_string()),
        (ErrorKind::Invalid, _) => ApiError::new(ErrorCode::InvalidFeatureRequest, e.to_string()),
        (ErrorKind::NotFound, _) => ApiError::new(ErrorCode::UnknownFeature, e.to_string()),
        (ErrorKind::Conflict | ErrorKind::Internal, _) => {
            tracing::error!(error = %e, "feature read failed");
            ApiError::new(ErrorCode::Internal, e.to_string())
        }
    }
}

fn status(s: Status) -> FeatureStatus {
    match s {
        Status::Present => FeatureStatus::Present,
        Status::Default => FeatureStatus::Default,
        Status::StaleOutsideTtl => FeatureStatus::StaleOutsideTtl,
        Status::NotFound => FeatureStatus::NotFound,
    }
}

#[utoipa::path(
    post, path = "/v1/features", tag = "features",
    request_body(content = FeaturesRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Each entity's features with their event time, age and status", body = FeaturesResponse),
        (status = 400, description = "Malformed body, unknown feature (`unknown_feature`, naming it) or invalid request (`invalid_feature_request`, naming the field)", body = cascade_api::ErrorResponse),
        (status = 413, description = "More entities than features_store.max_entities_per_request", body = cascade_api::ErrorResponse),
        (status = 503, description = "The online feature store (Redis) cannot be reached", body = cascade_api::ErrorResponse),
    )
)]
pub async fn post_features(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<FeaturesResponse>, ApiError> {
    let request: FeaturesRequest = body::json(&headers, &body, "a features request")?;
    let features = &state.features;
    if request.entities.is_empty() {
        return Err(invalid("entities".into(), "ask for at least one entity"));
    }
    if request.entities.len() > features.max_entities {
        return Err(ApiError::new(
            ErrorCode::BatchTooLarge,
            format!(
                "{} entities in one request; the limit is {} (features_store.max_entities_per_request)",
                request.entities.len(),
                features.max_entities
            ),
        ));
    }
    if request.features.is_empty() {
        return Err(invalid("features".into(), "ask for at least one feature (`view:feature` or `view`)"));
    }
    let set = features.store.features();
    let unknown: Vec<FieldProblem> = request
        .features
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            set.select(&[name]).err().map(|e| FieldProblem {
                index: None,
                field: format!("features[{i}]"),
                reason: e.to_string(),
            })
        })
        .collect();
    if let Some(first) = unknown.first() {
        return Err(ApiError::new(ErrorCode::UnknownFeature, first.reason.clone()).with_details(unknown));
    }
    let selection = set.select(&request.features).map_err(|e| read_error(&e))?;
    let rows = request.entities.into_iter().enumerate().map(|(i, e)| entities(i, e)).collect::<Result<Vec<_>, _>>()?;
    let at = state.clock.now();
    let served = features.store.read_served(&selection, &rows, at).await.map_err(|e| read_error(&e))?;
    let columns = set.columns(&selection);
    if features.sampled()
        && let Some(log) = features.vector_log.lock().as_ref()
    {
        for row in 0..rows.len() {
            let v = LoggedVector::new(&columns, &rows, &served, row, at);
            if let Ok(line) = serde_json::to_string(&v) {
                let _ = log.send(line);
            }
        }
        metrics::counter!("cascade_feature_vectors_logged_total").increment(rows.len() as u64);
    }
    let values = served.values;

    let views: Vec<usize> = selection.columns().iter().map(|&(vi, _)| vi).collect();
    let mut stale = vec![0u64; features.stale.len()];
    let results = values
        .into_iter()
        .map(|row| EntityFeatures {
            values: row
                .into_iter()
                .zip(&views)
                .map(|(v, &vi)| {
                    match v.status {
                        Status::Present => {
                            if let Some(age) = v.age {
                                features.age[vi].record(age.as_secs_f64());
                            }
                        }
                        Status::StaleOutsideTtl => stale[vi] += 1,
                        Status::Default | Status::NotFound => {}
                    }
                    FeatureValueOut {
                        value: v.value.as_ref().map_or(serde_json::Value::Null, Value::to_json),
                        status: status(v.status),
                        event_time: v.event_time.map(|t| t.to_string()),
                        age_ms: v.age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                    }
                })
                .collect(),
        })
        .collect();
    for (vi, n) in stale.into_iter().enumerate() {
        if n > 0 {
            features.stale[vi].increment(n);
        }
    }
    Ok(Json(FeaturesResponse {
        features: columns.iter().map(cascade_features::Column::name).collect(),
        results,
        as_of: at.to_string(),
    }))
}
