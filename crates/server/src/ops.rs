//! Health, Prometheus metrics and the OpenAPI document.

use crate::AppState;
use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cascade_api::Health;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;

/// Latency buckets in seconds, from 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Feature value ages in seconds, from 100 ms to 30 days.
const AGE_BUCKETS: &[f64] =
    &[0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 86400.0, 7.0 * 86400.0, 30.0 * 86400.0];

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are non-empty")
                .set_buckets_for_metric(Matcher::Full("cascade_feature_value_age_seconds".into()), AGE_BUCKETS)
                .expect("buckets are non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// Counts requests and records their latency by route, method and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!("cascade_http_requests_total", &labels).increment(1);
    metrics::histogram!("cascade_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

#[utoipa::path(get, path = "/v2/health/live", tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn live() -> Json<Health> {
    Json(Health { status: "live".into(), reason: None })
}

#[utoipa::path(get, path = "/v2/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready to take traffic", body = Health),
        (status = 503, description = "Not ready; `reason` says why", body = Health),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let not_ready = |status: &str, reason: String| {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Health { status: status.into(), reason: Some(reason) })).into_response()
    };
    if let Some(reason) = state.store.failure() {
        return not_ready("unavailable", reason);
    }
    // `[features_store] ready_requires_online_store`: features and the rankers need the store.
    let online = &state.features.store;
    if online.holds_readiness()
        && let Some(reason) = online.down()
    {
        return not_ready("unavailable", format!("the online feature store is down: {reason}"));
    }
    let mut behind = Vec::new();
    if let Some((at, to)) = state.recommender.catching_up() {
        behind.push(format!("the live view (histories, item facts) is at offset {at} of {to}"));
    }
    if online.holds_readiness()
        && let Some((at, to)) = online.catching_up()
    {
        behind.push(format!("the online feature state is at offset {at} of {to}"));
    }
    if !behind.is_empty() {
        return not_ready("starting", format!("catching up with the log: {}", behind.join("; ")));
    }
    Json(Health { status: "ready".into(), reason: None }).into_response()
}

#[utoipa::path(get, path = "/v2/health/jobs", tag = "operations",
    responses((status = 200, description = "Every long-running job of the node: rounds, failures, the last error", body = cascade_api::JobsResponse)))]
pub async fn jobs(State(state): State<AppState>) -> Json<cascade_api::JobsResponse> {
    Json(cascade_api::JobsResponse { jobs: state.jobs.as_ref().map(|j| j.jobs()).unwrap_or_default() })
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Gauges that are cheap to read are refreshed at scrape time rather than on every write.
    if let Ok(stats) = state.store.log_stats() {
        metrics::gauge!("cascade_log_size_bytes").set(stats.bytes as f64);
        metrics::gauge!("cascade_log_segments").set(stats.segments as f64);
        metrics::gauge!("cascade_log_first_offset").set(stats.first_offset as f64);
        metrics::gauge!("cascade_log_next_offset").set(stats.next_offset as f64);
    }
    if let Ok(stats) = state.store.log_stats() {
        state.features.record_lag(stats.next_offset);
    }
    metrics::gauge!("cascade_feature_store_next_offset").set(state.features.store.next_offset() as f64);
    metrics::gauge!("cascade_feature_store_up").set(if state.features.store.down().is_none() { 1.0 } else { 0.0 });
    metrics::counter!("cascade_feature_store_reconnects_total").absolute(state.features.store.reconnects());
    let (items, users) = state.store.catalogue_counts();
    metrics::gauge!("cascade_catalogue_items").set(items as f64);
    metrics::gauge!("cascade_catalogue_users").set(users as f64);
    metrics::gauge!("cascade_up").set(if state.store.failure().is_none() { 1.0 } else { 0.0 });
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi())
}

/// The router's fallback: no route has this path.
pub async fn not_found(uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::new(cascade_api::ErrorCode::NotFound, format!("no route `{}`", uri.path()))
}

/// A route with this path exists but not with this method (axum adds the `allow` header).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::new(
        cascade_api::ErrorCode::MethodNotAllowed,
        format!("`{}` does not take {method}; the allow header lists the methods it takes", uri.path()),
    )
}
