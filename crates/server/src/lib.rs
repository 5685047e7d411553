//! Cascade's HTTP server: event ingestion, the catalogue, online features, recommendations,
//! jobs (training, evaluation, precomputation, run by the node), health and metrics.
//!
//! Handlers follow one shape: parse and validate the body, one call (the store, the feature
//! store, the [`Recommender`]), convert back. Only this crate knows HTTP; the wire types live in
//! `cascade-api`; everything long-running is the node's (`cascade-node`).

mod admin;
mod body;
mod catalogue;
pub mod config;
mod error;
mod extract;
mod features;
mod guard;
mod ingest;
mod jobs;
pub mod keys;
mod listen;
mod ops;
mod recommend;

pub use config::ServerConfig;
pub use error::ApiError;
pub use features::{Features, VECTOR_LOG_FILE};
pub use jobs::{JobQueue, JobRefused};
pub use keys::{KeyRing, Principal, Scope};
pub use listen::serve;
pub use ops::metrics_handle;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use cascade_core::{Clock, Config, Schema};
use cascade_serving::Recommender;
use cascade_store::Store;
use guard::{Class, Guard};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use utoipa::OpenApi;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    store: Arc<Store>,
    schema: Arc<Schema>,
    server: Arc<ServerConfig>,
    guard: Arc<Guard>,
    metrics: PrometheusHandle,
    features: Arc<Features>,
    recommender: Arc<Recommender>,
    clock: Arc<dyn Clock>,
    jobs: Option<Arc<dyn JobsReport>>,
    job_queue: Option<Arc<dyn JobQueue>>,
}

/// What reports the node's jobs for `GET /v2/health/jobs` (the node's supervisor).
pub trait JobsReport: Send + Sync {
    fn jobs(&self) -> Vec<cascade_api::JobHealth>;
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("store", &self.store).field("server", &self.server).finish_non_exhaustive()
    }
}

/// Why a server's state could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] cascade_core::ConfigError),
    #[error("reading the API keys: {0}")]
    Keys(#[from] keys::KeyError),
}

impl StartError {
    pub fn kind(&self) -> cascade_core::ErrorKind {
        match self {
            StartError::Config(e) => e.kind(),
            StartError::Keys(e) => e.kind(),
        }
    }
}

impl AppState {
    /// The state of a server over `store`, checking requests against the API keys in the
    /// store's data directory ([`keys::KEYS_FILE`]; none: authentication off).
    ///
    /// Errors: `[server]` does not type or check ([`ServerConfig::from_config`]), or the key
    /// file cannot be read.
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        features: Arc<Features>,
        recommender: Arc<Recommender>,
        clock: Arc<dyn Clock>,
    ) -> Result<AppState, StartError> {
        let server = ServerConfig::from_config(config)?;
        let keys = Arc::new(KeyRing::open(store.dir())?);
        Ok(AppState {
            schema: Arc::new(Schema::from_config(config)),
            guard: Arc::new(Guard::new(&server, keys)),
            server: Arc::new(server),
            store,
            metrics: metrics_handle(),
            features,
            recommender,
            clock,
            jobs: None,
            job_queue: None,
        })
    }

    /// The API keys requests are checked against ([`KeyRing::reload`] picks up changes).
    pub fn keys(&self) -> &Arc<KeyRing> {
        self.guard.keys()
    }

    /// The typed `[server]` section.
    pub fn config(&self) -> &ServerConfig {
        &self.server
    }

    /// The state with the node's jobs reported at `GET /v2/health/jobs`.
    pub fn with_jobs(mut self, jobs: Arc<dyn JobsReport>) -> AppState {
        self.jobs = Some(jobs);
        self
    }

    /// The state with `/v1/jobs` served by the node's job runner (without one, those routes
    /// answer 503 `unavailable`).
    pub fn with_job_queue(mut self, queue: Arc<dyn JobQueue>) -> AppState {
        self.job_queue = Some(queue);
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
        jobs::post_job, jobs::get_job, jobs::list_jobs,
        ops::live, ops::ready, ops::jobs, ops::metrics,
        admin::list_models, admin::list_aliases, admin::set_alias, admin::delete_alias, admin::alias_history,
        admin::rollback_alias, admin::rollouts, admin::audit,
    ),
    tags(
        (name = "events", description = "Event ingestion"),
        (name = "catalogue", description = "Items and users"),
        (name = "features", description = "Online feature values"),
        (name = "recommendations", description = "The serving cascade: recommendations, re-ranking, similar items"),
        (name = "jobs", description = "Training, evaluation and precomputation inside the server"),
        (name = "operations", description = "Health and metrics"),
        (name = "models", description = "Model bundles, aliases, rollouts and the audit log (scope `admin`)"),
    )
)]
struct ApiDoc;

/// The OpenAPI document of this server (checked in as `docs/openapi.json`), with the bearer
/// security scheme, each operation's scope, and the answers the guard gives any route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let bearer = HttpBuilder::new()
        .scheme(HttpAuthScheme::Bearer)
        .bearer_format("csk_<id>_<secret>")
        .description(Some("An API key from `cascade keys create`. Needed once the project has keys."))
        .build();
    doc.components.get_or_insert_with(Default::default).add_security_scheme("api_key", SecurityScheme::Http(bearer));
    for item in doc.paths.paths.values_mut() {
        let ops =
            [("GET", &mut item.get), ("POST", &mut item.post), ("PUT", &mut item.put), ("DELETE", &mut item.delete)];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let tag = op.tags.as_ref().and_then(|t| t.first()).map(String::as_str).unwrap_or_default();
            let scope = match (tag, method) {
                ("events", _) | ("catalogue", "PUT") => Some(Scope::Ingest),
                ("catalogue", _) => Some(Scope::Read),
                ("features" | "recommendations", _) => Some(Scope::Serve),
                ("models" | "jobs", _) => Some(Scope::Admin),
                _ => None,
            };
            let Some(scope) = scope else {
                // Health and metrics are open by default (server.open_health, server.open_metrics).
                op.security = Some(vec![SecurityRequirement::default(), SecurityRequirement::new("api_key", [""; 0])]);
                continue;
            };
            op.security = Some(vec![SecurityRequirement::new("api_key", [""; 0])]);
            let note = match scope {
                Scope::Admin => "Scope: `admin` once the project has API keys.".to_string(),
                _ => format!("Scope: `{scope}` (or `admin`) once the project has API keys."),
            };
            op.description = Some(match op.description.take() {
                Some(d) => format!("{d}\n\n{note}"),
                None => note,
            });
            let body = method != "GET" && method != "DELETE";
            let guard_answers = [
                ("401", "No API key, or an unknown or revoked one (`unauthorized`)", true),
                ("403", "The API key lacks the scope (`forbidden`)", true),
                ("408", "The body did not arrive within server.body_read_timeout (`request_timeout`)", body),
                ("413", "The body exceeds server.max_body_bytes (`payload_too_large`)", body),
                ("415", "The content type is not application/json (`unsupported_media_type`)", body),
                (
                    "503",
                    "Overloaded (`overloaded`, with Retry-After), too slow (`timeout`), or a dependency is down",
                    true,
                ),
            ];
            for (status, description, applies) in guard_answers {
                if applies {
                    op.responses.responses.entry(status.to_string()).or_insert_with(|| error_response(description));
                }
            }
        }
    }
    doc
}

fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorResponse"))).build())
        .build()
        .into()
}

/// Every route, grouped by class: each group shares its key scope and its in-flight slots
/// ([`guard`]), so the table below is also the API's authorization table (ingest, serve, read:
/// that scope or `admin`; admin: `admin` only).
pub fn router(state: AppState) -> Router {
    let group = |class: Class, routes: Router<AppState>| {
        routes.route_layer(axum::middleware::from_fn_with_state((state.clone(), class), guard::guard))
    };
    let ingest = Router::new()
        .route("/v1/events", post(ingest::post_events))
        .route("/v1/items/{id}", axum::routing::put(catalogue::put_item))
        .route("/v1/users/{id}", axum::routing::put(catalogue::put_user));
    let serve = Router::new()
        .route("/v1/features", post(features::post_features))
        .route("/v1/recommendations", post(recommend::post_recommendations))
        .route("/v1/rank", post(recommend::post_rank))
        .route("/v1/items/{id}/similar", get(recommend::get_similar));
    let read = Router::new()
        .route("/v1/items/{id}", get(catalogue::get_item))
        .route("/v1/users/{id}", get(catalogue::get_user));
    let health = Router::new()
        .route("/v2/health/live", get(ops::live))
        .route("/v2/health/ready", get(ops::ready))
        .route("/v2/health/jobs", get(ops::jobs));
    let metrics = Router::new().route("/metrics", get(ops::metrics));
    let admin = Router::new()
        .route("/v1/models", get(admin::list_models))
        .route("/v1/models/{family}/aliases", get(admin::list_aliases))
        .route("/v1/models/{family}/aliases/{alias}", axum::routing::put(admin::set_alias).delete(admin::delete_alias))
        .route("/v1/models/{family}/aliases/{alias}/history", get(admin::alias_history))
        .route("/v1/models/{family}/aliases/{alias}/rollback", post(admin::rollback_alias))
        .route("/v1/rollouts", get(admin::rollouts))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/jobs", post(jobs::post_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job));
    let cors = cors(&state.server.cors_origins);
    let router = Router::new()
        .merge(group(Class::Ingest, ingest))
        .merge(group(Class::Serve, serve))
        .merge(group(Class::Read, read))
        .merge(group(Class::Admin, admin))
        .merge(group(Class::Health, health))
        .merge(group(Class::Metrics, metrics))
        // The document describes the API; it is public like any published contract.
        .route("/openapi.json", get(ops::openapi))
        // Unknown paths and wrong methods answer in the JSON error shape like everything else.
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        // The guard reads bodies under its own limit; axum's would refuse first with its own shape.
        .layer(DefaultBodyLimit::disable())
        .route_layer(axum::middleware::from_fn(ops::track))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// The CORS layer for `origins` (none: no CORS headers, so browsers refuse cross-origin reads).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600)),
    )
}
