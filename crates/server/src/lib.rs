//! Cascade's HTTP server: event ingestion, the catalogue, online features, recommendations,
//! health and metrics.
//!
//! Handlers follow one shape: parse and validate the body, one call (the store, the feature
//! store, the [`Recommender`]), convert back. Only this crate knows HTTP; the wire types live in
//! `cascade-api`; everything long-running is the node's (`cascade-node`).

mod catalogue;
pub mod config;
mod error;
mod extract;
mod features;
mod ingest;
mod ops;
mod recommend;

pub use config::ServerConfig;
pub use error::ApiError;
pub use features::{Features, VECTOR_LOG_FILE};
pub use ops::metrics_handle;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use cascade_core::{Clock, Config, Schema};
use cascade_serving::Recommender;
use cascade_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use utoipa::OpenApi;

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_batch_events: usize,
    max_body_bytes: usize,
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    store: Arc<Store>,
    schema: Arc<Schema>,
    limits: Limits,
    metrics: PrometheusHandle,
    features: Arc<Features>,
    recommender: Arc<Recommender>,
    clock: Arc<dyn Clock>,
    jobs: Option<Arc<dyn JobsReport>>,
}

/// What reports the node's jobs for `GET /v2/health/jobs` (the node's supervisor).
pub trait JobsReport: Send + Sync {
    fn jobs(&self) -> Vec<cascade_api::JobHealth>;
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("store", &self.store).field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl AppState {
    /// Errors: `[server]` does not type or check ([`ServerConfig::from_config`]).
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        features: Arc<Features>,
        recommender: Arc<Recommender>,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, cascade_core::ConfigError> {
        let server = ServerConfig::from_config(config)?;
        Ok(AppState {
            store,
            schema: Arc::new(Schema::from_config(config)),
            limits: Limits { max_batch_events: server.max_batch_events, max_body_bytes: server.max_body_bytes },
            metrics: metrics_handle(),
            features,
            recommender,
            clock,
            jobs: None,
        })
    }

    /// The state with the node's jobs reported at `GET /v2/health/jobs`.
    pub fn with_jobs(mut self, jobs: Arc<dyn JobsReport>) -> AppState {
        self.jobs = Some(jobs);
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Cascade", description = "Real-time recommendation and decisioning platform"),
    paths(
        ingest::post_events,
        features::post_features,
        recommend::post_recommendations, recommend::post_rank, recommend::get_similar,
        catalogue::put_item, catalogue::get_item, catalogue::put_user, catalogue::get_user,
        ops::live, ops::ready, ops::jobs, ops::metrics,
    ),
    tags(
        (name = "events", description = "Event ingestion"),
        (name = "catalogue", description = "Items and users"),
        (name = "features", description = "Online feature values"),
        (name = "recommendations", description = "The serving cascade: recommendations, re-ranking, similar items"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// The OpenAPI document of this server (checked in as `docs/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/v1/events", post(ingest::post_events))
        .route("/v1/features", post(features::post_features))
        .route("/v1/recommendations", post(recommend::post_recommendations))
        .route("/v1/rank", post(recommend::post_rank))
        .route("/v1/items/{id}/similar", get(recommend::get_similar))
        .route("/v1/items/{id}", get(catalogue::get_item).put(catalogue::put_item))
        .route("/v1/users/{id}", get(catalogue::get_user).put(catalogue::put_user))
        .route("/v2/health/live", get(ops::live))
        .route("/v2/health/ready", get(ops::ready))
        .route("/v2/health/jobs", get(ops::jobs))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        // Unknown paths and wrong methods answer in the JSON error shape like everything else.
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(axum::middleware::from_fn(ops::track))
        .with_state(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}
