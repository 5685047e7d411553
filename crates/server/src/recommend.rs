//! `POST /v1/recommendations`, `POST /v1/rank`, `GET /v1/items/{id}/similar`: the serving
//! cascade under deadlines, with fallbacks, impression logging and hot reload.
//!
//! Each expensive stage runs on the blocking pool under its pipeline deadline. A stage that is
//! missing, fails or does not answer in time is abandoned (its work finishes in the background
//! and is discarded) and the request is served by the next path:
//!
//! | failure | served by | `fallback_total{reason}` |
//! |---|---|---|
//! | no bundle trained yet | most interacted items, then `fallback_items` | `no_bundle` |
//! | the bundle has no (usable) rankers | the previous version, when it has | `ranker_missing`, `previous_version` |
//! | ANN index missing | the other sources | `index_missing` |
//! | retrieval fails or is late | most interacted items | `retrieval_failed`, `retrieval_timeout` |
//! | feature store fails or is late | retrieval order | `features_unavailable`, `features_timeout` |
//! | ranker fails or is late | retrieval order | `ranker_failed`, `ranker_timeout` |

use crate::error::ApiError;
use crate::ingest::body_rejection;
use crate::{AppState, features::Features};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use cascade_api::{
    ErrorCode, FieldProblem, ItemTrace, RankRequest, Reason, RecommendationRequest, RecommendationResponse,
    RecommendedItem, RemovedItem, ServingPath, SimilarItem, SimilarResponse, SourceHit,
};
use cascade_core::{Event, Record, Timestamp, Value};
use cascade_engine::bundle::LoadedBundle;
use cascade_engine::live::{IMPRESSION, Live};
use cascade_engine::ranking::aggregate_value;
use cascade_engine::serving::{self, Aggregates, Pipeline, Prepared, RankedItem, Serving};
use cascade_features::Entities;
use cascade_models::AnyModel;
use cascade_store::Store;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// A stage of the cascade, for deadlines, metrics and fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Retrieval,
    Features,
    Ranking,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Retrieval => "retrieval",
            Stage::Features => "features",
            Stage::Ranking => "ranking",
        }
    }
}

/// Faults to inject into stages: chaos testing of the fallbacks in a running server.
#[derive(Debug, Default)]
pub struct Faults {
    stall: Mutex<HashMap<Stage, Duration>>,
    fail: Mutex<HashSet<Stage>>,
}

impl Faults {
    /// Every run of `stage` first sleeps `delay` (a stalled dependency).
    pub fn stall(&self, stage: Stage, delay: Duration) {
        self.stall.lock().expect("poisoned").insert(stage, delay);
    }

    /// Every run of `stage` fails (a panicking or erroring dependency).
    pub fn fail(&self, stage: Stage) {
        self.fail.lock().expect("poisoned").insert(stage);
    }

    pub fn clear(&self) {
        self.stall.lock().expect("poisoned").clear();
        self.fail.lock().expect("poisoned").clear();
    }

    fn delay(&self, stage: Stage) -> Option<Duration> {
        self.stall.lock().expect("poisoned").get(&stage).copied()
    }

    fn fails(&self, stage: Stage) -> bool {
        self.fail.lock().expect("poisoned").contains(&stage)
    }
}

/// The serving side of the server: the bundle in service, the previous one, the pipelines, the
/// live view of the log and the impression logger.
pub struct Recommender {
    pub live: Arc<Live>,
    current: RwLock<Option<Arc<Serving>>>,
    /// The version served before the current one, kept while it has rankers: the fallback when
    /// the current one's rankers are missing.
    previous: RwLock<Option<Arc<Serving>>>,
    pipelines: BTreeMap<String, Arc<Pipeline>>,
    default_pipeline: String,
    registry: PathBuf,
    impressions: Mutex<Option<tokio::sync::mpsc::Sender<Vec<Record>>>>,
    faults: Arc<Faults>,
    requests: AtomicU64,
    started_ms: i64,
    /// The log's end when the server started: until the live view has read that far, histories
    /// (and so `exclude_seen`) are incomplete and the server is not ready.
    catch_up_to: AtomicU64,
}

impl std::fmt::Debug for Recommender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recommender").field("version", &self.version()).finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The outcome of one stage under its deadline.
enum Ran<T> {
    Done(T),
    Failed,
    Late,
}

impl Recommender {
    pub fn new(
        live: Arc<Live>,
        pipelines: BTreeMap<String, Arc<Pipeline>>,
        default_pipeline: String,
        registry: PathBuf,
        faults: Arc<Faults>,
    ) -> Recommender {
        Recommender {
            live,
            current: RwLock::new(None),
            previous: RwLock::new(None),
            pipelines,
            default_pipeline,
            registry,
            impressions: Mutex::new(None),
            faults,
            requests: AtomicU64::new(0),
            started_ms: now_ms(),
            catch_up_to: AtomicU64::new(0),
        }
    }

    /// Readiness waits until the live view has read the log up to `offset` (its end at start).
    pub fn catch_up_to(&self, offset: u64) {
        self.catch_up_to.store(offset, Ordering::Relaxed);
    }

    /// `None` once the live view has caught up with the log as it was at start, else how far
    /// it is (offset read, offset to reach).
    pub fn catching_up(&self) -> Option<(u64, u64)> {
        let (at, to) = (self.live.next_offset(), self.catch_up_to.load(Ordering::Relaxed));
        (at < to).then_some((at, to))
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn version(&self) -> Option<u64> {
        self.current().map(|s| s.version())
    }

    fn current(&self) -> Option<Arc<Serving>> {
        self.current.read().expect("poisoned").clone()
    }

    fn previous(&self) -> Option<Arc<Serving>> {
        self.previous.read().expect("poisoned").clone()
    }

    /// The bundle requests are served by, and the precompute job computes for: the current one,
    /// unless its rankers are missing and a previous one has them.
    fn serving_bundle(&self) -> Option<Arc<Serving>> {
        match (self.current(), self.previous()) {
            (Some(current), Some(previous)) if !current.has_rankers() => Some(previous),
            (current, _) => current,
        }
    }

    /// Puts a loaded bundle into service; requests in flight finish on the one they started with.
    pub fn install(&self, serving: Arc<Serving>) {
        let version = serving.version();
        let (rankers, problem) = (serving.has_rankers(), serving.ranking_problem.clone());
        let old = self.current.write().expect("poisoned").replace(serving);
        if let Some(old) = old.filter(|o| o.has_rankers()) {
            *self.previous.write().expect("poisoned") = Some(old);
        }
        metrics::gauge!("cascade_model_version").set(version as f64);
        tracing::info!(version, rankers, problem = ?problem, "bundle in service");
    }

    /// Loads the newest bundle of the registry when it is newer than the one in service.
    /// Returns the version now in service.
    pub fn reload(&self) -> Result<Option<u64>, String> {
        if !self.registry.join("bundles").exists() {
            return Ok(self.version());
        }
        let registry = cascade_registry::Registry::open(&self.registry).map_err(|e| e.to_string())?;
        let Some(bundle) = registry.latest().map_err(|e| e.to_string())? else { return Ok(self.version()) };
        if self.version().is_some_and(|v| v >= bundle.manifest.version) {
            return Ok(self.version());
        }
        let loaded = LoadedBundle::load(&bundle).map_err(|e| format!("bundle v{}: {e}", bundle.manifest.version))?;
        let serving = Arc::new(Serving::new(Arc::new(loaded)));
        // A bundle without rankers, and no earlier one in memory (a fresh start): the newest
        // earlier bundle with rankers becomes the fallback, as it would have after a reload.
        if !serving.has_rankers() && self.previous().is_none() && self.current().is_none_or(|c| !c.has_rankers()) {
            let earlier = registry.list().map_err(|e| e.to_string())?;
            let with_rankers = earlier
                .iter()
                .rev()
                .filter(|m| m.version < bundle.manifest.version)
                .find(|m| m.artifacts.iter().any(|a| a.name == "ranking.json"));
            if let Some(m) = with_rankers {
                match registry
                    .get(m.version)
                    .map_err(|e| e.to_string())
                    .and_then(|b| LoadedBundle::load(&b).map_err(|e| e.to_string()))
                {
                    Ok(previous) => {
                        *self.previous.write().expect("poisoned") = Some(Arc::new(Serving::new(Arc::new(previous))));
                    }
                    Err(e) => tracing::warn!(version = m.version, error = %e, "the fallback bundle cannot be loaded"),
                }
            }
        }
        self.install(serving);
        Ok(self.version())
    }

    /// Starts the impression logger: responses' impressions go through a bounded queue to a
    /// task that appends them to the log in batches. Returns the task, which ends once
    /// [`Recommender::close_impressions`] was called and the queue is drained.
    pub fn open_impressions(&self, store: Arc<Store>, capacity: usize) -> tokio::task::JoinHandle<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Record>>(capacity.max(1));
        *self.impressions.lock().expect("poisoned") = Some(tx);
        tokio::spawn(async move {
            let logged = metrics::counter!("cascade_impressions_logged_total");
            while let Some(first) = rx.recv().await {
                let mut batch = first;
                while batch.len() < 5_000 {
                    match rx.try_recv() {
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
        })
    }

    pub fn close_impressions(&self) {
        self.impressions.lock().expect("poisoned").take();
    }

    fn log_impressions(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let guard = self.impressions.lock().expect("poisoned");
        let Some(tx) = guard.as_ref() else { return };
        let n = records.len() as u64;
        // Never wait: a full queue costs the impressions, not the response's latency.
        if tx.try_send(records).is_err() {
            metrics::counter!("cascade_impressions_dropped_total", "reason" => "queue_full").increment(n);
        }
    }

    fn request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{n:x}", self.started_ms)
    }

    fn pipeline(&self, name: Option<&str>) -> Result<Arc<Pipeline>, ApiError> {
        let name = name.unwrap_or(&self.default_pipeline);
        self.pipelines.get(name).cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnknownPipeline,
                format!(
                    "no pipeline `{name}` (configured: {})",
                    self.pipelines.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
            .with_details(vec![FieldProblem {
                index: None,
                field: "pipeline".into(),
                reason: "not configured".into(),
            }])
        })
    }

    /// Runs `f` on the blocking pool under `deadline`, with the stage's injected faults.
    async fn stage<T: Send + 'static>(
        &self,
        stage: Stage,
        deadline: Duration,
        f: impl FnOnce() -> Option<T> + Send + 'static,
    ) -> Ran<T> {
        let delay = self.faults.delay(stage);
        let fail = self.faults.fails(stage);
        let started = Instant::now();
        let task = tokio::task::spawn_blocking(move || {
            if let Some(d) = delay {
                std::thread::sleep(d);
            }
            if fail {
                return None;
            }
            f()
        });
        let out = match tokio::time::timeout(deadline, task).await {
            Ok(Ok(Some(v))) => Ran::Done(v),
            Ok(Ok(None)) | Ok(Err(_)) => Ran::Failed,
            Err(_) => Ran::Late,
        };
        metrics::histogram!("cascade_stage_duration_seconds", "stage" => stage.name())
            .record(started.elapsed().as_secs_f64());
        out
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    ApiError::new(ErrorCode::InvalidRecommendationRequest, format!("{field}: {reason}"))
        .with_details(vec![FieldProblem { index: None, field: field.into(), reason }])
}

fn fallback(path: &mut ServingPath, reason: &str) {
    metrics::counter!("cascade_fallback_total", "reason" => reason.to_string()).increment(1);
    path.fallbacks.push(reason.to_string());
}

/// The request's instant: `context.time` (RFC 3339 or ms), or now.
fn request_time(context: &BTreeMap<String, serde_json::Value>) -> Result<i64, ApiError> {
    match context.get("time") {
        None => Ok(now_ms()),
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| invalid("context.time", "not an integer")),
        Some(serde_json::Value::String(s)) => {
            Timestamp::parse_rfc3339(s).map(|t| t.0).map_err(|e| invalid("context.time", format!("not RFC 3339: {e}")))
        }
        Some(_) => Err(invalid("context.time", "expected an RFC 3339 string or integer ms")),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>, what: &str) -> Result<T, ApiError> {
    let body = body.map_err(|e| body_rejection(&e))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("body is not a {what} request: {e}")))
}

/// What the cascade produced before the response is shaped.
struct Outcome {
    serving: Option<Arc<Serving>>,
    ranked: Vec<RankedItem>,
    ranked_by: &'static str,
    prepared: Arc<Prepared>,
    sources: Vec<String>,
    path: ServingPath,
}

/// Reads the ranker's aggregates from the online store: the item view for every candidate and
/// the user view once (not once per candidate), the two reads concurrently.
async fn read_aggregates(
    features: &Features,
    serving: &Serving,
    user: &str,
    items: &[&str],
    at: i64,
) -> Result<Aggregates, String> {
    let (item_refs, user_refs) = serving.feature_refs();
    let item_rows = items.iter().map(|i| Entities { item: Some((*i).to_string()), ..Entities::default() }).collect();
    let (items, user) = tokio::join!(
        read_values(features, item_refs, item_rows, at),
        read_values(features, user_refs, vec![Entities::user(user.to_string())], at)
    );
    Ok(Aggregates { items: items?, user: user?.pop().unwrap_or_default() })
}

/// Per row, the features `refs` (`view:feature`) as ranker values.
async fn read_values(
    features: &Features,
    refs: &[String],
    rows: Vec<Entities>,
    at: i64,
) -> Result<Vec<Vec<f64>>, String> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let selection = features.store.features().select(refs).map_err(|e| e.to_string())?;
    let values = features.store.read(&selection, &rows, Timestamp(at)).await.map_err(|e| e.to_string())?;
    let names: Vec<&str> = refs.iter().map(|r| r.split_once(':').map_or(r.as_str(), |(_, f)| f)).collect();
    Ok(values
        .iter()
        .map(|row| names.iter().zip(row).map(|(name, v)| aggregate_value(name, v.value.as_ref())).collect())
        .collect())
}

/// The user's precomputed lists (one online-store read for all of the pipeline's precomputed
/// sources, under the features deadline) into `prepared`. Without them the sources score the
/// user at request time: slower, never wrong.
async fn read_lists(
    state: &AppState,
    serving: &Serving,
    pipeline: &Pipeline,
    user: &str,
    prepared: &mut Prepared,
    path: &mut ServingPath,
) {
    let names = serving.list_names(pipeline, user, prepared);
    if names.is_empty() {
        return;
    }
    let keys: Vec<String> = names.iter().map(|(_, key)| key.clone()).collect();
    let deadline = Duration::from_millis(pipeline.config.features_ms);
    match tokio::time::timeout(deadline, state.features.store.get_blobs(&keys)).await {
        Ok(Ok(read)) => serving.accept_lists(prepared, names.into_iter().map(|(s, _)| s).zip(read)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "precomputed lists unavailable");
            fallback(path, "lists_unavailable");
        }
        Err(_) => fallback(path, "lists_timeout"),
    }
}

async fn cascade(
    state: &AppState,
    pipeline: &Arc<Pipeline>,
    user: &str,
    exclude: &[String],
    given: Option<&[String]>,
    now: i64,
) -> Outcome {
    let rec = &state.recommender;
    let mut path = ServingPath::default();
    let history = rec.live.history(user);
    let current = rec.current();
    let serving = rec.serving_bundle();
    if current.as_ref().is_some_and(|c| !c.has_rankers()) {
        fallback(&mut path, "ranker_missing");
        if serving.as_ref().zip(current.as_ref()).is_some_and(|(s, c)| !Arc::ptr_eq(s, c)) {
            fallback(&mut path, "previous_version");
        }
    }
    let Some(serving) = serving else {
        fallback(&mut path, "no_bundle");
        let prepared = Arc::new(Prepared { now_ms: now, ..Prepared::default() });
        return Outcome {
            serving: None,
            ranked: Vec::new(),
            ranked_by: "popularity",
            prepared,
            sources: Vec::new(),
            path,
        };
    };
    let mut prepared = serving.prepare(Some(user), &history, exclude, now, pipeline);
    if given.is_none() {
        read_lists(state, &serving, pipeline, user, &mut prepared, &mut path).await;
    }
    let prepared = Arc::new(prepared);
    if given.is_none() && pipeline.config.sources.contains_key("als") && serving.bundle.als_index.is_none() {
        fallback(&mut path, "index_missing");
    }

    // Retrieval (or the client's list for /v1/rank).
    let started = Instant::now();
    let (candidates, sources) = match given {
        Some(items) => {
            let candidates: Vec<_> = items
                .iter()
                .filter_map(|id| serving.bundle.items.get(id))
                .enumerate()
                .map(|(r, item)| cascade_engine::candidates::Candidate {
                    item,
                    source: usize::MAX,
                    hits: vec![cascade_engine::candidates::Hit { source: usize::MAX, score: 0.0, rank: r }],
                })
                .collect();
            (candidates, Vec::new())
        }
        None => {
            let (s, p, pl) = (serving.clone(), prepared.clone(), pipeline.clone());
            let deadline = Duration::from_millis(pipeline.config.retrieval_ms);
            match rec.stage(Stage::Retrieval, deadline, move || Some(s.retrieve(&p, &pl))).await {
                Ran::Done(out) => out,
                ran @ (Ran::Failed | Ran::Late) => {
                    let reason = if matches!(ran, Ran::Late) { "retrieval_timeout" } else { "retrieval_failed" };
                    fallback(&mut path, reason);
                    return Outcome {
                        serving: Some(serving),
                        ranked: Vec::new(),
                        ranked_by: "popularity",
                        prepared,
                        sources: Vec::new(),
                        path,
                    };
                }
            }
        }
    };
    path.stages_ms.insert("retrieval".into(), started.elapsed().as_secs_f64() * 1e3);
    path.cold_start = prepared.cold;
    if !serving.has_rankers() {
        let ranked = serving::retrieval_order(candidates);
        return Outcome { serving: Some(serving), ranked, ranked_by: "retrieval", prepared, sources, path };
    }

    // One batched read of the ranker's online features.
    let started = Instant::now();
    let ids: Vec<String> = candidates.iter().map(|c| serving.item_id(c.item).to_string()).collect();
    let deadline = Duration::from_millis(pipeline.config.features_ms);
    let (delay, fail) = (rec.faults.delay(Stage::Features), rec.faults.fails(Stage::Features));
    let (features, s, u) = (state.features.clone(), serving.clone(), user.to_string());
    // On the blocking pool: the embedded store reads under a lock, and a read stuck behind it
    // must not hold a runtime thread past the deadline.
    let handle = tokio::runtime::Handle::current();
    let read = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            if fail {
                return Err("injected failure".to_string());
            }
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            read_aggregates(&features, &s, &u, &ids, now).await
        })
    });
    let aggregates = match tokio::time::timeout(deadline, read).await {
        Ok(Ok(Ok(a))) => Some(a),
        Ok(failed) => {
            let error = failed.map_or_else(|panicked| panicked.to_string(), |read| read.err().unwrap_or_default());
            tracing::warn!(%error, "ranker features unavailable");
            fallback(&mut path, "features_unavailable");
            None
        }
        Err(_) => {
            fallback(&mut path, "features_timeout");
            None
        }
    };
    metrics::histogram!("cascade_stage_duration_seconds", "stage" => "features")
        .record(started.elapsed().as_secs_f64());
    path.stages_ms.insert("features".into(), started.elapsed().as_secs_f64() * 1e3);
    let Some(aggregates) = aggregates else {
        let ranked = serving::retrieval_order(candidates);
        return Outcome { serving: Some(serving), ranked, ranked_by: "retrieval", prepared, sources, path };
    };

    // Light then heavy ranking.
    let started = Instant::now();
    let keep = if given.is_some() { Some(usize::MAX) } else { pipeline.config.light_keep };
    let (s, p, live) = (serving.clone(), prepared.clone(), rec.live.clone());
    // Shared with the stage: the fallback below needs them if the stage does not answer.
    let candidates = Arc::new(candidates);
    let kept = candidates.clone();
    let deadline = Duration::from_millis(pipeline.config.ranking_ms);
    let ranked = match rec.stage(Stage::Ranking, deadline, move || s.rank(&p, &kept, &aggregates, &live, keep)).await {
        Ran::Done(ranked) => (ranked, "heavy"),
        ran @ (Ran::Failed | Ran::Late) => {
            fallback(&mut path, if matches!(ran, Ran::Late) { "ranker_timeout" } else { "ranker_failed" });
            (serving::retrieval_order(Arc::unwrap_or_clone(candidates)), "retrieval")
        }
    };
    path.stages_ms.insert("ranking".into(), started.elapsed().as_secs_f64() * 1e3);
    Outcome { serving: Some(serving), ranked: ranked.0, ranked_by: ranked.1, prepared, sources, path }
}

/// Per item: whether it passes the request's attribute filters (every one, when there are none).
fn passing(live: &Live, filters: &BTreeMap<String, Vec<String>>, ids: &[&str]) -> Vec<bool> {
    if filters.is_empty() {
        return vec![true; ids.len()];
    }
    live.with_items(ids, |_, item| {
        item.is_some_and(|it| {
            filters.iter().all(|(name, wanted)| {
                it.facts.attributes.get(name).is_some_and(|have| have.iter().any(|v| wanted.contains(v)))
            })
        })
    })
}

fn trace(serving: &Serving, r: &RankedItem, position: usize, reasons: usize, sources: &[String]) -> ItemTrace {
    ItemTrace {
        hits: r
            .candidate
            .hits
            .iter()
            .map(|h| SourceHit {
                source: sources.get(h.source).cloned().unwrap_or_else(|| "request".into()),
                score: f64::from(h.score),
                rank: h.rank,
            })
            .collect(),
        light_score: r.light,
        heavy_score: r.heavy,
        probability: r.probability,
        ranked_position: Some(position),
        reasons: serving
            .reasons(r, reasons)
            .into_iter()
            .map(|(feature, value, contribution)| Reason { feature, value, contribution })
            .collect(),
        rules: Vec::new(),
    }
}

#[utoipa::path(post, path = "/v1/recommendations", tag = "recommendations",
    request_body = RecommendationRequest,
    responses(
        (status = 200, description = "Items best first, with the serving path and a request id", body = RecommendationResponse),
        (status = 400, description = "Malformed body, or an invalid request (`invalid_recommendation_request`, naming the field), or an unknown pipeline (`unknown_pipeline`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn post_recommendations(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RecommendationResponse>, ApiError> {
    let request: RecommendationRequest = parse(body, "recommendation")?;
    let rec = state.recommender.clone();
    let pipeline = rec.pipeline(request.pipeline.as_deref())?;
    if request.user.is_empty() {
        return Err(invalid("user", "must not be empty"));
    }
    let k = request.k.unwrap_or(pipeline.config.k);
    if k == 0 || k > pipeline.config.max_k {
        return Err(invalid(
            "k",
            format!("must be within 1..={} (pipelines.{}.max_k)", pipeline.config.max_k, pipeline.name),
        ));
    }
    if let Some(name) = request.filters.iter().find(|(_, v)| v.is_empty()).map(|(n, _)| n) {
        return Err(invalid(&format!("filters.{name}"), "list at least one value"));
    }
    let now = request_time(&request.context)?;
    let request_id = rec.request_id();
    let started = Instant::now();
    let mut out = cascade(&state, &pipeline, &request.user, &request.exclude, None, now).await;

    // Ranked list → request filters → rules and exploration.
    let mut ranked: Vec<(String, f64)> = Vec::new();
    let mut ranked_index: Vec<usize> = Vec::new();
    if let Some(serving) = &out.serving {
        let ids: Vec<&str> = out.ranked.iter().map(|r| serving.item_id(r.item)).collect();
        let keep = passing(&rec.live, &request.filters, &ids);
        for (j, r) in out.ranked.iter().enumerate().filter(|(j, _)| keep[*j]) {
            ranked.push((ids[j].to_string(), r.score));
            ranked_index.push(j);
        }
    }
    if out.ranked_by == "popularity" || (ranked.is_empty() && out.serving.is_none()) {
        let popular = rec.live.most_popular(pipeline.config.candidates);
        let total = popular.first().map_or(1.0, |p| p.1 as f64);
        for (id, n) in &popular {
            ranked.push((id.clone(), *n as f64 / total));
        }
        if ranked.is_empty() {
            out.ranked_by = "static";
            let n = pipeline.config.fallback_items.len().max(1) as f64;
            ranked.extend(
                pipeline.config.fallback_items.iter().enumerate().map(|(r, id)| (id.clone(), 1.0 - r as f64 / n)),
            );
        }
        let ids: Vec<&str> = ranked.iter().map(|r| r.0.as_str()).collect();
        let mut keep = passing(&rec.live, &request.filters, &ids).into_iter();
        ranked.retain(|_| keep.next().unwrap_or(false));
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(rec.requests.load(Ordering::Relaxed) ^ now as u64);
    let finished = serving::finish(&pipeline, &ranked, &out.prepared, k, &rec.live, &mut rng);
    out.path.ranked_by = out.ranked_by.to_string();
    out.path.sources.clone_from(&out.sources);
    if !request.explain {
        out.path.stages_ms.clear();
    } else {
        out.path.stages_ms.insert("total".into(), started.elapsed().as_secs_f64() * 1e3);
    }
    let slots = pipeline.config.exploration.slots(k);
    let version = out.serving.as_ref().map(|s| s.version());
    let digest_rows: Vec<&[f64]> =
        out.ranked.iter().map(|r| r.features.values()).filter(|f| !f.is_empty()).take(k).collect();
    let digest = (!digest_rows.is_empty()).then(|| serving::feature_digest(&digest_rows));
    let mut items = Vec::with_capacity(finished.shown.len());
    let mut impressions = Vec::with_capacity(finished.shown.len());
    for (position, shown) in finished.shown.iter().enumerate() {
        let ranked_item = shown.ranked.and_then(|c| ranked_index.get(c)).map(|&j| &out.ranked[j]);
        let source = ranked_item.and_then(|r| out.sources.get(r.candidate.source).cloned());
        let explain = match (request.explain, ranked_item, &out.serving) {
            (true, Some(r), Some(serving)) => {
                let mut t = trace(serving, r, shown.ranked.unwrap_or(0), pipeline.config.explain_reasons, &out.sources);
                t.rules.clone_from(&shown.rules);
                Some(t)
            }
            (true, _, _) => {
                Some(ItemTrace { rules: shown.rules.clone(), ranked_position: shown.ranked, ..ItemTrace::default() })
            }
            _ => None,
        };
        let mut fields = vec![
            ("explored".to_string(), Value::Bool(shown.explored)),
            ("k".to_string(), Value::Int(k as i64)),
            ("pipeline".to_string(), Value::String(pipeline.name.clone())),
            ("position".to_string(), Value::Int(position as i64)),
            ("propensity".to_string(), Value::Float(shown.propensity)),
            ("ranked_by".to_string(), Value::String(out.ranked_by.to_string())),
            ("request_id".to_string(), Value::String(request_id.clone())),
            ("score".to_string(), Value::Float(shown.score)),
            ("slots".to_string(), Value::Int(slots as i64)),
            ("tail".to_string(), Value::Int(pipeline.config.exploration.tail as i64)),
        ];
        if let Some(r) = shown.greedy_rank {
            fields.push(("greedy_rank".to_string(), Value::Int(r as i64)));
        }
        if let Some(v) = version {
            fields.push(("model_version".to_string(), Value::Int(v as i64)));
        }
        if let Some(d) = &digest {
            fields.push(("feature_digest".to_string(), Value::String(d.clone())));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        impressions.push(Record::Event(Event {
            id: None,
            event_type: IMPRESSION.to_string(),
            ts: Timestamp(now),
            user: Some(request.user.clone()),
            item: Some(shown.id.clone()),
            fields,
        }));
        items.push(RecommendedItem {
            id: shown.id.clone(),
            score: shown.score,
            position,
            source,
            explored: shown.explored,
            propensity: shown.propensity,
            explain,
        });
    }
    rec.log_impressions(impressions);
    metrics::counter!("cascade_recommendations_total", "pipeline" => pipeline.name.clone(), "ranked_by" => out.ranked_by).increment(1);
    Ok(Json(RecommendationResponse {
        request_id,
        pipeline: pipeline.name.clone(),
        model_version: version,
        items,
        path: out.path,
        removed: if request.explain {
            finished.removed.into_iter().map(|(id, rule)| RemovedItem { id, rule: rule.to_string() }).collect()
        } else {
            Vec::new()
        },
        notes: finished.notes,
    }))
}

#[utoipa::path(post, path = "/v1/rank", tag = "recommendations",
    request_body = RankRequest,
    responses(
        (status = 200, description = "The given items, best first (unknown ones last, in their given order)", body = RecommendationResponse),
        (status = 400, description = "Malformed body or an invalid request (`invalid_recommendation_request`)", body = cascade_api::ErrorResponse),
    )
)]
pub async fn post_rank(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RecommendationResponse>, ApiError> {
    let request: RankRequest = parse(body, "rank")?;
    let rec = state.recommender.clone();
    let pipeline = rec.pipeline(request.pipeline.as_deref())?;
    if request.user.is_empty() {
        return Err(invalid("user", "must not be empty"));
    }
    if request.items.is_empty() || request.items.len() > pipeline.config.candidates {
        return Err(invalid(
            "items",
            format!("give 1..={} items (pipelines.{}.candidates)", pipeline.config.candidates, pipeline.name),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = request.items.iter().find(|i| !seen.insert(i.as_str())) {
        return Err(invalid("items", format!("`{dup}` is listed twice")));
    }
    let now = request_time(&request.context)?;
    let request_id = rec.request_id();
    let out = cascade(&state, &pipeline, &request.user, &[], Some(&request.items), now).await;
    let mut items = Vec::with_capacity(request.items.len());
    let mut placed = HashSet::new();
    if let Some(serving) = &out.serving {
        for (position, r) in out.ranked.iter().enumerate() {
            let id = serving.item_id(r.item).to_string();
            placed.insert(id.clone());
            let explain =
                request.explain.then(|| trace(serving, r, position, pipeline.config.explain_reasons, &out.sources));
            items.push(RecommendedItem {
                id,
                score: r.score,
                position,
                source: None,
                explored: false,
                propensity: 1.0,
                explain,
            });
        }
    }
    for id in request.items.iter().filter(|i| !placed.contains(*i)) {
        let position = items.len();
        items.push(RecommendedItem {
            id: id.clone(),
            score: 0.0,
            position,
            source: None,
            explored: false,
            propensity: 1.0,
            explain: None,
        });
    }
    let mut path = out.path;
    path.ranked_by = if out.serving.is_some() { out.ranked_by.to_string() } else { "request".into() };
    if !request.explain {
        path.stages_ms.clear();
    }
    Ok(Json(RecommendationResponse {
        request_id,
        pipeline: pipeline.name.clone(),
        model_version: out.serving.as_ref().map(|s| s.version()),
        items,
        path,
        removed: Vec::new(),
        notes: Vec::new(),
    }))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct SimilarQuery {
    /// How many items (default 10, at most 100).
    k: Option<usize>,
}

#[utoipa::path(get, path = "/v1/items/{id}/similar", tag = "recommendations",
    params(("id" = String, Path, description = "Item id"), SimilarQuery),
    responses(
        (status = 200, description = "Items like this one: co-interaction neighbours, then attribute look-alikes", body = SimilarResponse),
        (status = 400, description = "`k` out of range", body = cascade_api::ErrorResponse),
        (status = 404, description = "No model or catalogue record knows the item", body = cascade_api::ErrorResponse),
    )
)]
pub async fn get_similar(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<SimilarQuery>,
) -> Result<Json<SimilarResponse>, ApiError> {
    let k = query.k.unwrap_or(10);
    if !(1..=100).contains(&k) {
        return Err(invalid("k", "must be within 1..=100"));
    }
    let rec = &state.recommender;
    let not_found =
        || ApiError::new(ErrorCode::ItemNotFound, format!("no model or catalogue record knows item `{id}`"));
    let Some(serving) = rec.current() else {
        return Err(not_found());
    };
    let bundle = &serving.bundle;
    let Some(index) = bundle.items.get(&id) else { return Err(not_found()) };
    let mut out: Vec<SimilarItem> = Vec::new();
    let mut taken: HashSet<u32> = [index].into();
    let mut push = |item: u32, score: f32, source: &str, out: &mut Vec<SimilarItem>| {
        if taken.insert(item) {
            out.push(SimilarItem {
                id: bundle.items.id(item).to_string(),
                score: f64::from(score),
                source: source.into(),
            });
        }
    };
    // Twice k from each, so that unavailable items can be dropped and still leave k.
    if let Some(AnyModel::ItemKnn(knn)) = bundle.models.get("itemknn").map(|m| &**m) {
        let (items, sims) = knn.neighbours(index);
        let mut pairs: Vec<(u32, f32)> = items.iter().copied().zip(sims.iter().copied()).collect();
        pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (item, sim) in pairs.into_iter().filter(|p| p.1 > 0.0).take(2 * k) {
            push(item, sim, "itemknn", &mut out);
        }
    }
    if let Some(content) = bundle.models.get("content") {
        for (item, score) in content.retriever().recommend(u32::MAX, (&[index], &[1.0]), 2 * k, true) {
            if score > 0.0 {
                push(item, score, "content", &mut out);
            }
        }
    }
    let ids: Vec<&str> = out.iter().map(|s| s.id.as_str()).collect();
    let available = rec.live.with_items(&ids, |_, item| item.is_none_or(|it| it.facts.available));
    let mut j = 0;
    out.retain(|_| {
        j += 1;
        available[j - 1]
    });
    out.truncate(k);
    Ok(Json(SimilarResponse { item: id, model_version: Some(serving.version()), items: out }))
}

/// Keeps [`Live`] up with the log: replays it from the start, then follows it.
pub(crate) async fn follow_log(store: Arc<Store>, live: Arc<Live>, poll: Duration) {
    loop {
        let next = live.next_offset();
        let reader = store.clone();
        let batch = tokio::task::spawn_blocking(move || {
            reader.read_from(next).take(5_000).collect::<cascade_store::Result<Vec<(u64, Record)>>>()
        })
        .await;
        match batch {
            Ok(Ok(batch)) if !batch.is_empty() => {
                let full = batch.len() == 5_000;
                let live = live.clone();
                let _ = tokio::task::spawn_blocking(move || live.apply(&batch)).await;
                if full {
                    continue;
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "serving: reading the log failed"),
            Err(e) => tracing::error!(error = %e, "serving: reading the log panicked"),
        }
        tokio::time::sleep(poll).await;
    }
}

/// Every `interval`, computes the pipelines' `precomputed` sources for the `max_users` most
/// recently active users of the live view with the bundle in service, into the online store
/// (Redis: shared by every replica), where they live for three intervals.
pub(crate) async fn precompute(
    recommender: Arc<Recommender>,
    store: Arc<cascade_features::OnlineStore>,
    interval: Duration,
    max_users: usize,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // For the bundle that serves: the current one, or the previous one while the current
        // one's rankers are missing (requests read the lists of the version serving them).
        let Some(serving) = recommender.serving_bundle() else { continue };
        let mut jobs: BTreeMap<String, usize> = BTreeMap::new();
        for pipeline in recommender.pipelines.values() {
            for source in &pipeline.config.precomputed {
                let n =
                    pipeline.config.sources.get(source).copied().unwrap_or(0) * cascade_engine::candidates::OVERFETCH;
                let at = jobs.entry(source.clone()).or_default();
                *at = (*at).max(n);
            }
        }
        if jobs.is_empty() {
            return;
        }
        let live = recommender.live.clone();
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let users = live.recent_users(max_users);
            jobs.iter().map(|(source, &n)| (source.clone(), serving.precompute(source, &users, n))).collect::<Vec<_>>()
        })
        .await;
        match done {
            Ok(done) => {
                for (source, lists) in done {
                    match store.put_blobs(&lists, interval * 3).await {
                        Ok(()) => {
                            metrics::gauge!("cascade_precomputed_users", "source" => source).set(lists.len() as f64)
                        }
                        Err(e) => tracing::error!(%source, error = %e, "precomputed lists could not be stored"),
                    }
                }
                metrics::histogram!("cascade_precompute_duration_seconds").record(started.elapsed().as_secs_f64());
            }
            Err(e) => tracing::error!(error = %e, "precomputing sources panicked"),
        }
    }
}

/// Looks for a newer bundle every `interval` and swaps it in.
pub(crate) async fn watch_registry(recommender: Arc<Recommender>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = recommender.clone();
        match tokio::task::spawn_blocking(move || r.reload()).await {
            Ok(Err(e)) => {
                tracing::error!(error = %e, "hot reload: the new bundle could not be loaded; the old one serves")
            }
            Err(e) => tracing::error!(error = %e, "hot reload panicked"),
            Ok(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_engine::live::LiveConfig;

    #[test]
    fn not_caught_up_until_the_live_view_reads_the_log_as_it_was_at_start() {
        let live = Arc::new(Live::new(LiveConfig::default()));
        let rec = Recommender::new(live.clone(), BTreeMap::new(), "default".into(), PathBuf::new(), Arc::default());
        assert_eq!(rec.catching_up(), None, "an empty log at start: ready at once");
        rec.catch_up_to(3);
        assert_eq!(rec.catching_up(), Some((0, 3)));
        let event = |i: u64| {
            let at = Timestamp(i as i64);
            (
                i,
                Record::Event(Event {
                    id: None,
                    event_type: "click".into(),
                    ts: at,
                    user: Some("u".into()),
                    item: Some("i".into()),
                    fields: Vec::new(),
                }),
            )
        };
        live.apply(&[event(0), event(1)]);
        assert_eq!(rec.catching_up(), Some((2, 3)));
        live.apply(&[event(2), event(3)]);
        assert_eq!(rec.catching_up(), None, "records written since start do not hold readiness back");
    }
}
