//! `POST /v1/features`, and the background task that keeps the online feature state up with the
//! event log.

use crate::ingest::body_rejection;
use crate::{AppState, error::ApiError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use cascade_api::{
    EntityFeatures, EntityIn, ErrorCode, FeatureStatus, FeatureValueOut, FeaturesRequest, FeaturesResponse,
    FieldProblem,
};
use cascade_core::{Record, Timestamp, Value};
use cascade_features::{Entities, ErrorKind, FeatureError, LoggedVector, OnlineStore, Status};
use cascade_store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most log records applied per step; the embedded state is locked against reads while a step
/// applies, so steps stay short.
const BATCH: usize = 1000;

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

    /// Starts the task that appends sampled served vectors to `path`; it ends (flushed) after
    /// [`Features::close_vector_log`].
    pub(crate) fn open_vector_log(&self, path: std::path::PathBuf) -> Option<tokio::task::JoinHandle<()>> {
        if self.sample_rate <= 0.0 {
            return None;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        *self.vector_log.lock().expect("poisoned") = Some(tx);
        Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
            let mut out = match file {
                Ok(f) => std::io::BufWriter::new(f),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the feature vector log");
                    return;
                }
            };
            while let Some(line) = rx.blocking_recv() {
                let mut ok = writeln!(out, "{line}").is_ok();
                while let Ok(line) = rx.try_recv() {
                    ok &= writeln!(out, "{line}").is_ok();
                }
                if !(ok && out.flush().is_ok()) {
                    tracing::error!(path = %path.display(), "writing the feature vector log failed");
                }
            }
        }))
    }

    pub(crate) fn close_vector_log(&self) {
        self.vector_log.lock().expect("poisoned").take();
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
    pub(crate) fn record_lag(&self, log_end: u64) {
        let behind = log_end.saturating_sub(self.store.next_offset());
        let mut at = self.caught_up_at.lock().expect("poisoned");
        if behind == 0 {
            *at = Instant::now();
        }
        metrics::gauge!("cascade_feature_engine_lag_events").set(behind as f64);
        let secs = if behind == 0 { 0.0 } else { at.elapsed().as_secs_f64() };
        metrics::gauge!("cascade_feature_engine_lag_seconds").set(secs);
    }
}

/// Applies new log records to the feature state every `poll`, checkpoints every `checkpoint`
/// and tells the log's retention what the state still needs. Runs until aborted.
pub(crate) async fn tail(store: Arc<Store>, features: Arc<Features>, poll: Duration, checkpoint: Duration) {
    let online = features.store.clone();
    if let Ok(stats) = store.log_stats()
        && let Err(e) = online.reset_if_ahead(stats.next_offset).await
    {
        tracing::error!(error = %e, "feature state: checking against the log failed");
    }
    store.retain_from("features", online.retention_floor());
    let mut last_checkpoint = Instant::now();
    // Consecutive failures (Redis down, a log read error): retries back off up to 64 polls.
    let mut failures = 0u32;
    loop {
        let next = online.next_offset();
        let reader = store.clone();
        let batch = tokio::task::spawn_blocking(move || {
            reader.read_from(next).take(BATCH).collect::<cascade_store::Result<Vec<(u64, Record)>>>()
        })
        .await;
        let outcome = match batch {
            Ok(Ok(batch)) if batch.is_empty() => Ok(false),
            Ok(Ok(batch)) => online.apply(&batch).await.map(|()| batch.len() == BATCH).map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(format!("reading the log: {e}")),
            Err(e) => Err(e.to_string()),
        };
        let full = match outcome {
            Ok(full) => {
                failures = 0;
                full
            }
            Err(e) => {
                if failures.is_power_of_two() || failures == 0 {
                    tracing::error!(error = %e, offset = next, failures, "feature state: applying the log failed; retrying");
                }
                failures = failures.saturating_add(1);
                false
            }
        };
        if let Ok(stats) = store.log_stats() {
            features.record_lag(stats.next_offset);
        }
        if last_checkpoint.elapsed() >= checkpoint {
            // On the blocking pool: an embedded checkpoint sweeps and encodes the whole state
            // (seconds of CPU for millions of entities), which on a runtime thread would stall
            // the requests queued behind it.
            let (store, online, handle) = (store.clone(), online.clone(), tokio::runtime::Handle::current());
            let done = tokio::task::spawn_blocking(move || handle.block_on(checkpoint_now(&store, &online))).await;
            if let Err(e) = done {
                tracing::error!(error = %e, "feature checkpoint panicked");
            }
            last_checkpoint = Instant::now();
        }
        if !full {
            tokio::time::sleep(poll * (1u32 << failures.min(6))).await;
        }
    }
}

/// Checkpoints (and sweeps) the feature state, then moves the log's retention floor up to it.
pub(crate) async fn checkpoint_now(store: &Store, online: &OnlineStore) {
    let started = Instant::now();
    let done = online.checkpoint().await;
    metrics::histogram!("cascade_feature_checkpoint_seconds").record(started.elapsed().as_secs_f64());
    match done {
        Ok(swept) => tracing::debug!(swept, offset = online.retention_floor(), "feature state checkpointed"),
        Err(e) => tracing::error!(error = %e, "feature checkpoint failed"),
    }
    store.retain_from("features", online.retention_floor());
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn invalid(field: String, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    ApiError::new(ErrorCode::InvalidFeatureRequest, format!("{field}: {reason}")).with_details(vec![FieldProblem {
        index: None,
        field,
        reason,
    }])
}

/// An entity of the request as the feature engine reads it; context values must be scalars.
fn entities(i: usize, e: EntityIn) -> Result<Entities, ApiError> {
    let mut fields = Vec::with_capacity(e.fields.len());
    for (name, v) in e.fields {
        let value = match v {
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

fn read_error(e: FeatureError) -> ApiError {
    match e {
        FeatureError::RowMissingKey { row, ref missing, .. } => {
            invalid(format!("entities[{row}].{missing}"), e.to_string())
        }
        e if e.kind() == ErrorKind::Unavailable => {
            tracing::error!(error = %e, "feature store unavailable");
            ApiError::new(ErrorCode::FeatureStoreUnavailable, e.to_string())
        }
        e => {
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FeaturesResponse>, ApiError> {
    let body = body.map_err(|e| body_rejection(&e))?;
    let request: FeaturesRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("body is not a features request: {e}")))?;
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
    let selection = set.select(&request.features).map_err(read_error)?;
    let rows = request.entities.into_iter().enumerate().map(|(i, e)| entities(i, e)).collect::<Result<Vec<_>, _>>()?;
    let at = now();
    let served = features.store.read_served(&selection, &rows, at).await.map_err(read_error)?;
    let columns = set.columns(&selection);
    if features.sampled()
        && let Some(log) = features.vector_log.lock().expect("poisoned").as_ref()
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
