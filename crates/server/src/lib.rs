//! Cascade's HTTP server: event ingestion, the catalogue, online features, recommendations,
//! health and metrics.
//!
//! Handlers follow one shape: parse and validate the body, one store call, convert back. Only this
//! crate knows HTTP; the wire types live in `cascade-api`.

mod catalogue;
mod error;
mod features;
mod ingest;
mod ops;
mod recommend;

pub use error::ApiError;
pub use features::{Features, VECTOR_LOG_FILE};
pub use ops::metrics_handle;
pub use recommend::{Faults, Recommender, Stage};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use cascade_core::{Config, Schema};
use cascade_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

/// How often the server snapshots the catalogue and applies log retention.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

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
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("store", &self.store).field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(config: &Config, store: Arc<Store>, features: Arc<Features>, recommender: Arc<Recommender>) -> AppState {
        AppState {
            store,
            schema: Arc::new(Schema::from_config(config)),
            limits: Limits {
                max_batch_events: config.server.max_batch_events,
                max_body_bytes: config.server.max_body_bytes,
            },
            metrics: metrics_handle(),
            features,
            recommender,
        }
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
        ops::live, ops::ready, ops::metrics,
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
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .layer(DefaultBodyLimit::max(body_limit))
        .route_layer(axum::middleware::from_fn(ops::track))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then drains in-flight requests, checkpoints the feature
/// state, flushes and syncs the log and writes the catalogue snapshot.
///
/// The online feature store (`[features_store]`) is opened first and kept up with the log by a
/// background task; a Redis backend that cannot be reached is an error here.
pub async fn run(
    config: &Config,
    store: Arc<Store>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with_faults(config, store, listener, shutdown, Arc::default()).await
}

/// [`run`] with faults injected into the serving stages (chaos tests of the fallbacks).
pub async fn run_with_faults(
    config: &Config,
    store: Arc<Store>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    faults: Arc<Faults>,
) -> std::io::Result<()> {
    // The rankers' aggregates are feature views like any other, defined over the interactions.
    let config = &cascade_engine::serving::with_ranking_views(config).map_err(std::io::Error::other)?;
    let pipelines = cascade_engine::serving::Pipeline::from_tables(&config.pipelines).map_err(std::io::Error::other)?;
    if !pipelines.contains_key(&config.serving.default_pipeline) {
        return Err(std::io::Error::other(format!(
            "serving.default_pipeline: no pipeline `{}` is configured",
            config.serving.default_pipeline
        )));
    }
    let set = cascade_features::FeatureSet::from_config(config).map_err(std::io::Error::other)?;
    let online = Arc::new(
        cascade_features::OnlineStore::open(&config.features_store, store.dir(), set)
            .await
            .map_err(|e| std::io::Error::other(format!("opening the feature store: {e}")))?,
    );
    let features = Arc::new(Features::new(
        online.clone(),
        config.features_store.max_entities_per_request,
        config.features_store.vector_log_sample_rate,
    ));
    let vector_log = features.open_vector_log(store.dir().join(VECTOR_LOG_FILE));
    let tail = tokio::spawn(features::tail(
        store.clone(),
        features.clone(),
        Duration::from_millis(config.features_store.poll_interval_ms),
        config.features_store.checkpoint_interval,
    ));
    let live = Arc::new(cascade_engine::live::Live::new(cascade_engine::live::LiveConfig {
        interactions: config.train.interactions.keys().cloned().collect(),
        ..Default::default()
    }));
    let recommender = Arc::new(Recommender::new(
        live.clone(),
        pipelines,
        config.serving.default_pipeline.clone(),
        store.dir().join("registry"),
        faults,
    ));
    {
        let r = recommender.clone();
        match tokio::task::spawn_blocking(move || r.reload()).await.map_err(std::io::Error::other)? {
            Ok(Some(version)) => tracing::info!(version, "serving model bundle"),
            Ok(None) => {
                tracing::warn!("no model bundle yet: recommendations fall back to popularity until `cascade train`")
            }
            Err(e) => {
                tracing::error!(error = %e, "the latest model bundle cannot be loaded; falling back to popularity")
            }
        }
    }
    if let Ok(stats) = store.log_stats() {
        recommender.catch_up_to(stats.next_offset);
    }
    let follow = tokio::spawn(recommend::follow_log(
        store.clone(),
        live,
        Duration::from_millis(config.features_store.poll_interval_ms),
    ));
    let watch = (!config.serving.reload_interval.is_zero())
        .then(|| tokio::spawn(recommend::watch_registry(recommender.clone(), config.serving.reload_interval)));
    let precompute = (!config.serving.precompute_interval.is_zero()).then(|| {
        tokio::spawn(recommend::precompute(
            recommender.clone(),
            online.clone(),
            config.serving.precompute_interval,
            config.serving.precompute_users,
        ))
    });
    let impressions = config
        .serving
        .log_impressions
        .then(|| recommender.open_impressions(store.clone(), config.serving.impression_queue));
    let app = router(AppState::new(config, store.clone(), features.clone(), recommender.clone()));
    let maintenance = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let store = store.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.maintain()).await {
                    tracing::error!(error = %e, "store maintenance failed");
                }
            }
        })
    };
    // The continuous offline store: new events into day-partitioned Parquet, compacted. Stopped
    // between rounds, so a round in progress finishes before the log is closed.
    let (stop_export, mut export_stopped) = tokio::sync::oneshot::channel::<()>();
    let offline_export = (!config.features_store.offline_export_interval.is_zero()).then(|| {
        let store = store.clone();
        let root = store.dir().join("offline").join("events");
        // Before the first retention pass: nothing not yet exported may be deleted.
        if let Err(e) = cascade_features::offline::hold_retention(&store, &root) {
            tracing::error!(error = %e, "offline store: cannot read its export position");
        }
        let mut tick = tokio::time::interval(config.features_store.offline_export_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::spawn(async move {
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut export_stopped => return,
                }
                let (store, root) = (store.clone(), root.clone());
                let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let now = cascade_core::Timestamp(i64::try_from(ms.as_millis()).unwrap_or(i64::MAX));
                match tokio::task::spawn_blocking(move || cascade_features::offline::maintain(&store, &root, now)).await
                {
                    Ok(Ok((rows, merged))) => tracing::debug!(rows, merged, "offline store: exported and compacted"),
                    Ok(Err(e)) => tracing::error!(error = %e, "offline store export failed"),
                    Err(e) => tracing::error!(error = %e, "offline store export panicked"),
                }
            }
        })
    });
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    follow.abort();
    for task in [watch, precompute].into_iter().flatten() {
        task.abort();
    }
    // Every answered request's impressions are in the queue; they are written before the log closes.
    recommender.close_impressions();
    if let Some(task) = impressions {
        let _ = task.await;
    }
    maintenance.abort();
    let _ = stop_export.send(());
    if let Some(task) = offline_export {
        let _ = task.await;
    }
    tail.abort();
    let _ = tail.await;
    features::checkpoint_now(&store, &online).await;
    features.close_vector_log();
    if let Some(writer) = vector_log {
        let _ = writer.await;
    }
    served?;
    tracing::info!("shutting down: flushing the event log");
    tokio::task::spawn_blocking(move || store.close())
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    Ok(())
}
