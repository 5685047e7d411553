//! Cascade's runtime: a node built from its configuration, with every long-running job
//! supervised.
//!
//! [`Node::start`] opens the online feature store, the live view and the recommender over a
//! store, puts the newest bundle into service, and starts the jobs:
//!
//! | job | what it does |
//! |---|---|
//! | `live-view` | a [`LogConsumer`]: serving's histories, item facts and engagement |
//! | `feature-tail` | a [`LogConsumer`]: the online feature state, checkpointed |
//! | `feature-store-probe` | (Redis) notices Redis coming back, or losing the feature state |
//! | `registry-watch` | serves the bundles the `champion` and `challenger` aliases point to |
//! | `rollout` | (pipelines with a rollout) judges each window, ramps, promotes or rolls back |
//! | `rollout-outcomes` | (pipelines with a rollout) a [`LogConsumer`] from the log's end: outcomes joined to the arms' impressions |
//! | `shadow` | (shadow rollouts) the challenger scores sampled copies of requests |
//! | `precompute` | heavy sources' per-user lists into the online store |
//! | `offline-export` | new events into day-partitioned Parquet, compacted |
//! | `store-maintenance` | catalogue snapshot and log retention |
//! | `impressions`, `vector-log` | queue writers: impressions into the log, served vectors to disk |
//! | `keys-watch` | API keys created or revoked with `cascade keys` taken into force |
//!
//! Jobs submitted over HTTP (`POST /v1/jobs`: training, evaluation, precomputation) run one at
//! a time on the [`JobRunner`]'s own thread, recorded in `DATA_DIR/jobs` and the audit log.
//!
//! [`Node::serve`] runs the HTTP API (`cascade-server`) until shutdown, then stops in order:
//! requests drained, queues flushed, jobs stopped after their current round, the feature state
//! checkpointed, the log flushed and synced. Nothing else in Cascade spawns long-running work.

mod consumer;
mod jobs;
mod rebuild;
mod supervisor;

pub use consumer::{ConsumerOptions, LogConsumer, consume};
pub use jobs::{JOBS_DIR, JobContext, JobRunner, JobsError};
pub use rebuild::{RebuildReport, rebuild_features};
pub use supervisor::{HealthHandle, JobHealth, RoundResult, StopSignal, Supervisor};

use cascade_core::{Clock, Config, ErrorKind, Record, SystemClock};
use cascade_features::{FeatureSet, FeaturesStoreConfig, OnlineStore};
use cascade_server::{AppState, Features, ServerConfig, VECTOR_LOG_FILE};
use cascade_serving::live::{Live, LiveConfig};
use cascade_serving::pipeline::{Pipeline, with_ranking_views};
use cascade_serving::{Recommender, RecommenderParts, ServingConfig};
use cascade_store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often the node snapshots the catalogue and applies log retention.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);
/// How soon a key created or revoked with `cascade keys` takes effect in a running server.
const KEYS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the node asks Redis whether it answers and still holds the feature state.
const FEATURE_STORE_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Most impressions appended to the log in one batch.
const IMPRESSION_BATCH: usize = 5_000;

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serving(#[from] cascade_serving::Error),
    #[error("opening the feature store: {0}")]
    Features(#[from] cascade_features::FeatureError),
    #[error(transparent)]
    Store(#[from] cascade_store::Error),
    #[error("serving HTTP: {0}")]
    Http(#[from] std::io::Error),
    /// A section of the configuration does not type or check (the error names the key).
    #[error(transparent)]
    Config(#[from] cascade_core::ConfigError),
    #[error(transparent)]
    Server(#[from] cascade_server::StartError),
    #[error(transparent)]
    Jobs(#[from] JobsError),
    /// Listening beyond this machine with no API key, without [`Node::insecure`].
    #[error(
        "refusing to serve on {0} without API keys: anyone who reaches it could write events and read users. Create a key (`cascade keys create --name NAME --scope admin`), listen on 127.0.0.1, or pass --insecure"
    )]
    Insecure(std::net::SocketAddr),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Serving(e) => e.kind(),
            Error::Features(e) => e.kind(),
            Error::Store(e) => e.kind(),
            Error::Http(_) => ErrorKind::Unavailable,
            Error::Config(e) => e.kind(),
            Error::Server(e) => e.kind(),
            Error::Jobs(e) => e.kind(),
            Error::Insecure(_) => ErrorKind::Invalid,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A running node: its parts and its supervised jobs.
#[derive(Debug)]
pub struct Node {
    config: Config,
    store: Arc<Store>,
    online: Arc<OnlineStore>,
    features: Arc<Features>,
    recommender: Arc<Recommender>,
    clock: Arc<dyn Clock>,
    supervisor: Supervisor,
    insecure: bool,
    config_hash: String,
}

/// Serves `config` over `store` on `listener` until `shutdown` resolves (see [`Node`]).
pub async fn run(
    config: &Config,
    store: Arc<Store>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Node::start(config, store, Arc::new(SystemClock)).await?.serve(listener, shutdown).await
}

/// The live view as a log consumer.
struct LiveView(Arc<Live>);

impl LogConsumer for LiveView {
    fn next_offset(&self) -> u64 {
        self.0.next_offset()
    }

    async fn apply(self: Arc<Self>, batch: Vec<(u64, Record)>, through: u64) -> Result<(), String> {
        let live = self.0.clone();
        tokio::task::spawn_blocking(move || {
            live.apply(&batch);
            live.skip_to(through);
        })
        .await
        .map_err(|e| e.to_string())
    }
}

/// Outcomes joined to the rollouts' impressions as a log consumer: from the log's end at start
/// (the join lives in memory; a rollout's totals persist with its state).
struct RolloutOutcomes {
    recommender: Arc<Recommender>,
    next: std::sync::atomic::AtomicU64,
}

impl LogConsumer for RolloutOutcomes {
    fn next_offset(&self) -> u64 {
        self.next.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn apply(self: Arc<Self>, batch: Vec<(u64, Record)>, through: u64) -> Result<(), String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.recommender.join_outcomes(&batch)).await.map_err(|e| e.to_string())?;
        self.next.store(through, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The online feature state as a log consumer, checkpointed.
struct FeatureTail {
    store: Arc<Store>,
    features: Arc<Features>,
}

impl LogConsumer for FeatureTail {
    fn next_offset(&self) -> u64 {
        self.features.store().next_offset()
    }

    async fn apply(self: Arc<Self>, batch: Vec<(u64, Record)>, through: u64) -> Result<(), String> {
        self.features.store().apply_through(&batch, through).await.map_err(|e| e.to_string())
    }

    async fn checkpoint(self: Arc<Self>) {
        // On the blocking pool: an embedded checkpoint sweeps and encodes the whole state
        // (seconds of CPU for millions of entities), which on a runtime thread would stall the
        // requests queued behind it.
        let (store, online, handle) =
            (self.store.clone(), self.features.store().clone(), tokio::runtime::Handle::current());
        if let Err(e) = tokio::task::spawn_blocking(move || handle.block_on(checkpoint_features(&store, &online))).await
        {
            tracing::error!(error = %e, "feature checkpoint panicked");
        }
    }

    fn observe_end(&self, log_end: u64) {
        self.features.record_lag(log_end);
    }
}

/// The pipelines a node last started with (`DATA_DIR/pipelines.json`): each start compares the
/// configuration with it and appends every added, changed or removed pipeline to the audit log.
const PIPELINES_FILE: &str = "pipelines.json";

/// Audits the pipelines' changes since the last start (who: `cascade:serve`, before and after:
/// the pipeline's resolved configuration). A failure is logged, never fatal: the audit trail of a
/// configuration file is a courtesy, the file itself is the record.
fn audit_pipeline_changes(
    data_dir: &std::path::Path,
    pipelines: &std::collections::BTreeMap<String, Arc<Pipeline>>,
    now: cascade_core::Timestamp,
) {
    let path = data_dir.join(PIPELINES_FILE);
    let current: std::collections::BTreeMap<&String, serde_json::Value> =
        pipelines.iter().map(|(name, p)| (name, serde_json::to_value(&p.config).unwrap_or_default())).collect();
    let before: std::collections::BTreeMap<String, serde_json::Value> =
        std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let audit = cascade_store::AuditLog::new(data_dir);
    let names: std::collections::BTreeSet<&String> = current.keys().copied().chain(before.keys()).collect();
    let mut changed = false;
    for name in names {
        let (old, new) = (before.get(name), current.get(name));
        if old == new {
            continue;
        }
        changed = true;
        let action = match (old, new) {
            (None, _) => "pipeline.create",
            (_, None) => "pipeline.delete",
            _ => "pipeline.change",
        };
        let record = cascade_store::AuditRecord::new(now, "cascade:serve", action, format!("pipeline:{name}"))
            .change(old, new)
            .why("cascade.toml at start");
        if let Err(e) = audit.append(&record) {
            tracing::error!(error = %e, "the audit log cannot be written");
            return;
        }
    }
    if changed {
        let bytes = serde_json::to_vec_pretty(&current).expect("pipelines serialise");
        if let Err(e) = cascade_store::files::write_atomic(&path, &bytes, false) {
            tracing::error!(error = %e, "{} cannot be written", path.display());
        }
    }
}

/// Checkpoints (and sweeps) the feature state, then moves the log's retention floor up to it.
async fn checkpoint_features(store: &Store, online: &OnlineStore) {
    let started = std::time::Instant::now();
    let done = online.checkpoint().await;
    metrics::histogram!("cascade_feature_checkpoint_seconds").record(started.elapsed().as_secs_f64());
    match done {
        Ok(swept) => tracing::debug!(swept, offset = online.retention_floor(), "feature state checkpointed"),
        Err(e) => tracing::error!(error = %e, "feature checkpoint failed"),
    }
    store.retain_from("features", online.retention_floor());
}

impl Node {
    /// Builds the node's parts from `config` over `store` and starts its jobs; the HTTP API is
    /// not served until [`Node::serve`]. A Redis feature store that cannot be reached is an
    /// error here.
    pub async fn start(config: &Config, store: Arc<Store>, clock: Arc<dyn Clock>) -> Result<Node> {
        // The rankers' aggregates are feature views like any other, defined over the interactions.
        let config = with_ranking_views(config)?;
        // Every section the node runs on, typed (and checked) before anything starts.
        let features_store = FeaturesStoreConfig::from_config(&config)?;
        let serving = ServingConfig::from_config(&config)?;
        ServerConfig::from_config(&config)?;
        cascade_training::TrainConfig::from_config(&config)?;
        let pipelines = Pipeline::from_tables(&config.pipelines)?;
        audit_pipeline_changes(store.dir(), &pipelines, clock.now());
        let set = FeatureSet::from_config(&config)?;
        let online = Arc::new(OnlineStore::open(&features_store, store.dir(), set).await?);
        let features = Arc::new(Features::new(
            online.clone(),
            features_store.max_entities_per_request,
            features_store.vector_log_sample_rate,
        ));
        let interactions = config.interactions()?;
        let live = Arc::new(Live::new(LiveConfig {
            interactions: interactions.keys().cloned().collect(),
            ..Default::default()
        }));
        let parts = RecommenderParts {
            live: live.clone(),
            features: online.clone(),
            registry: store.dir().join("registry"),
            clock: clock.clone(),
            // The log's own bound: a request may not be dated where its impressions could not be.
            horizon: store.horizon(),
        };
        let recommender = Arc::new(Recommender::new(parts, pipelines, serving.default_pipeline.clone())?);
        let r = recommender.clone();
        match tokio::task::spawn_blocking(move || r.reload()).await.map_err(|e| std::io::Error::other(e.to_string()))? {
            Ok(Some(version)) => tracing::info!(version, "serving model bundle"),
            Ok(None) => {
                tracing::warn!("no model bundle yet: recommendations fall back to popularity until `cascade train`")
            }
            Err(e) => {
                tracing::error!(error = %e, "the latest model bundle cannot be loaded; falling back to popularity")
            }
        }
        if let Ok(stats) = store.log_stats() {
            recommender.catch_up_to(stats.next_offset);
        }
        let mut node = Node {
            config,
            store,
            online,
            features,
            recommender,
            clock,
            supervisor: Supervisor::new(),
            insecure: false,
            config_hash: String::new(),
        };
        node.start_jobs(live, &interactions, &features_store, &serving).await;
        Ok(node)
    }

    async fn start_jobs(
        &mut self,
        live: Arc<Live>,
        interactions: &std::collections::BTreeMap<String, f32>,
        features_store: &FeaturesStoreConfig,
        serving: &ServingConfig,
    ) {
        let (store, sup) = (&self.store, &mut self.supervisor);
        let poll = Duration::from_millis(features_store.poll_interval_ms);

        // The log consumers.
        consume(
            sup,
            "live-view",
            store.clone(),
            Arc::new(LiveView(live)),
            ConsumerOptions { batch: 5_000, poll, checkpoint: None },
        );
        if let Ok(stats) = store.log_stats() {
            if let Err(e) = self.online.reset_if_ahead(stats.next_offset).await {
                tracing::error!(error = %e, "feature state: checking against the log failed");
            }
            // Until the tail has applied what the log held at the start, feature reads answer
            // unavailable (and readiness waits) rather than serve values from part of the log.
            self.online.catch_up_to(stats.next_offset);
        }
        store.retain_from("features", self.online.retention_floor());
        let tail = Arc::new(FeatureTail { store: store.clone(), features: self.features.clone() });
        consume(
            sup,
            "feature-tail",
            store.clone(),
            tail,
            ConsumerOptions { batch: 1_000, poll, checkpoint: Some(features_store.checkpoint_interval) },
        );

        // Schedules.
        if self.online.backend() == cascade_features::FeaturesBackend::Redis {
            let online = self.online.clone();
            sup.every("feature-store-probe", FEATURE_STORE_PROBE_INTERVAL, move || {
                let online = online.clone();
                async move {
                    // Always a successful round: the store logs and reports an outage itself
                    // (readiness, /metrics), and a failed round would back off, slowing the
                    // probe that notices Redis coming back.
                    let _ = online.probe().await;
                    Ok(())
                }
            });
        }
        if !serving.reload_interval.is_zero() {
            let r = self.recommender.clone();
            sup.every("registry-watch", serving.reload_interval, move || {
                let r = r.clone();
                async move {
                    match tokio::task::spawn_blocking(move || r.reload()).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(format!("the new bundle could not be loaded; the old one serves: {e}")),
                        Err(e) => Err(e.to_string()),
                    }
                }
            });
        }
        if self.recommender.has_rollouts() && serving.log_impressions {
            // Outcomes are the `[train] interactions` types, as `cascade evaluate --policy` reads them.
            let types = interactions.iter().map(|(t, w)| (t.clone(), f64::from(*w))).collect();
            self.recommender.open_outcomes(types, serving.attribution_window);
            let start = store.log_stats().map(|s| s.next_offset).unwrap_or(0);
            let consumer = RolloutOutcomes {
                recommender: self.recommender.clone(),
                next: std::sync::atomic::AtomicU64::new(start),
            };
            consume(
                sup,
                "rollout-outcomes",
                store.clone(),
                Arc::new(consumer),
                ConsumerOptions { batch: 5_000, poll, checkpoint: None },
            );
        }
        if self.recommender.has_rollouts() {
            let r = self.recommender.clone();
            sup.every("rollout", cascade_serving::ROLLOUT_TICK, move || {
                let r = r.clone();
                async move {
                    match tokio::task::spawn_blocking(move || r.rollout_round()).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(format!("rollout round: {e}")),
                        Err(e) => Err(e.to_string()),
                    }
                }
            });
        }
        if !serving.precompute_interval.is_zero() {
            let (r, interval, users) =
                (self.recommender.clone(), serving.precompute_interval, serving.precompute_users);
            sup.every("precompute", interval, move || {
                let r = r.clone();
                // Lists live three intervals: a late round never leaves users without one.
                async move { r.precompute(interval * 3, users).await.map(drop).map_err(|e| e.to_string()) }
            });
        }
        {
            let store = store.clone();
            sup.every("store-maintenance", MAINTENANCE_INTERVAL, move || {
                let store = store.clone();
                async move {
                    tokio::task::spawn_blocking(move || store.maintain())
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())
                }
            });
        }
        if !features_store.offline_export_interval.is_zero() {
            // The continuous offline store: new events into day-partitioned Parquet, compacted.
            let root = store.dir().join("offline").join("events");
            // Before the first retention pass: nothing not yet exported may be deleted.
            if let Err(e) = cascade_features::offline::hold_retention(store, &root) {
                tracing::error!(error = %e, "offline store: cannot read its export position");
            }
            let (store, clock) = (store.clone(), self.clock.clone());
            sup.every("offline-export", features_store.offline_export_interval, move || {
                let (store, root, now) = (store.clone(), root.clone(), clock.now());
                async move {
                    let (rows, merged) =
                        tokio::task::spawn_blocking(move || cascade_features::offline::maintain(&store, &root, now))
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| e.to_string())?;
                    tracing::debug!(rows, merged, "offline store: exported and compacted");
                    Ok(())
                }
            });
        }

        // Queue writers: they end once their queue is closed and drained.
        if serving.log_impressions {
            let mut queue = self.recommender.open_impressions(serving.impression_queue);
            let store = store.clone();
            sup.until_done("impressions", async move {
                let logged = metrics::counter!("cascade_impressions_logged_total");
                while let Some(first) = queue.recv().await {
                    let mut batch = first;
                    while batch.len() < IMPRESSION_BATCH {
                        match queue.try_recv() {
                            Ok(more) => batch.extend(more),
                            Err(_) => break,
                        }
                    }
                    match store.append(&batch).await {
                        Ok(_) => logged.increment(batch.len() as u64),
                        Err(e) => {
                            metrics::counter!("cascade_impressions_dropped_total", "reason" => "store")
                                .increment(batch.len() as u64);
                            tracing::error!(error = %e, "impressions could not be logged");
                        }
                    }
                }
            });
        }
        if let Some(capacity) = self.recommender.shadow_queue() {
            // One copy at a time: shadow scoring takes at most one blocking thread from the
            // requests, and a full queue drops copies rather than slowing them.
            let mut queue = self.recommender.open_shadow(capacity);
            let r = self.recommender.clone();
            sup.until_done("shadow", async move {
                while let Some(job) = queue.recv().await {
                    r.shadow(job).await;
                }
            });
        }
        if let Some(queue) = self.features.open_vector_log() {
            let path = store.dir().join(VECTOR_LOG_FILE);
            sup.until_done("vector-log", async move {
                if let Err(e) = tokio::task::spawn_blocking(move || write_vectors(&path, queue)).await {
                    tracing::error!(error = %e, "the feature vector log writer panicked");
                }
            });
        }
    }

    /// The recommender this node serves with.
    pub fn recommender(&self) -> &Arc<Recommender> {
        &self.recommender
    }

    /// Reads the node's job health (also after [`Node::serve`] has taken the node).
    pub fn health(&self) -> HealthHandle {
        self.supervisor.health_handle()
    }

    /// Allows serving on a non-loopback address while the project has no API key (`--insecure`).
    pub fn insecure(mut self, allow: bool) -> Node {
        self.insecure = allow;
        self
    }

    /// The hash of the project's configuration that bundles trained by `train` jobs record in
    /// their manifests (`cascade serve` passes the one `cascade train` computes; empty when
    /// not given).
    pub fn config_hash(mut self, hash: impl Into<String>) -> Node {
        self.config_hash = hash.into();
        self
    }

    /// Serves the HTTP API on `listener` until `shutdown` resolves, then stops the node: drains
    /// requests, writes every queued impression and served vector, stops the jobs after their
    /// current round, checkpoints the feature state, flushes and syncs the log and writes the
    /// catalogue snapshot.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Node { config, store, features, recommender, clock, mut supervisor, insecure, config_hash, .. } = self;
        let health = Arc::new(supervisor.health_handle());
        let context = JobContext::new(&config, store.clone(), recommender.clone(), clock.clone(), config_hash)?;
        let runner = Arc::new(JobRunner::start(context)?);
        let state = AppState::new(&config, store.clone(), features.clone(), recommender.clone(), clock)?
            .with_jobs(health)
            .with_job_queue(runner.clone());
        let local = listener.local_addr()?;
        if !local.ip().is_loopback() && !state.keys().enabled() && !insecure {
            return Err(Error::Insecure(local));
        }
        if insecure && !state.keys().enabled() {
            tracing::warn!(%local, "serving without API keys (--insecure): every route is open to anyone who reaches it");
        }
        let keys = state.keys().clone();
        supervisor.every("keys-watch", KEYS_INTERVAL, move || {
            let keys = keys.clone();
            async move {
                match keys.reload() {
                    Ok(true) => tracing::info!(enabled = keys.enabled(), "API keys reloaded"),
                    Ok(false) => {}
                    Err(e) => return Err(format!("{e}; the keys loaded before stay in force")),
                }
                Ok(())
            }
        });
        let served = cascade_server::serve(listener, state, shutdown).await;
        // No job starts once requests have stopped; the one running (if any) is not waited for.
        runner.stop();
        // Every answered request's impressions and vectors are queued; closing the queues lets
        // their writers drain them and end before the log closes.
        recommender.close_impressions();
        recommender.close_shadow();
        features.close_vector_log();
        // The feature tail checkpoints once more as it stops.
        supervisor.shutdown().await;
        served?;
        tracing::info!("shutting down: flushing the event log");
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(())
    }
}

/// Appends each served vector line to `path` until the queue is closed and drained.
fn write_vectors(path: &std::path::Path, mut queue: tokio::sync::mpsc::UnboundedReceiver<String>) {
    use std::io::Write;
    let mut out = match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => std::io::BufWriter::new(f),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot open the feature vector log");
            return;
        }
    };
    while let Some(line) = queue.blocking_recv() {
        let mut ok = writeln!(out, "{line}").is_ok();
        while let Ok(line) = queue.try_recv() {
            ok &= writeln!(out, "{line}").is_ok();
        }
        if !(ok && out.flush().is_ok()) {
            tracing::error!(path = %path.display(), "writing the feature vector log failed");
        }
    }
}
