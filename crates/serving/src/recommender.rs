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

mod outcomes;
mod rollouts;

pub use rollouts::{ROLLOUT_TICK, ROLLOUTS_FILE, ShadowJob};

use crate::error::{Error, Result};
use crate::live::Live;
use crate::pipeline::{self as serving, Pipeline, Prepared, RankedItem, Serving};
use crate::rollout::Arm;
use cascade_api::schema::{
    MAX_CONTEXT_KEY_BYTES, MAX_CONTEXT_KEYS, MAX_EXCLUDE, MAX_FILTER_VALUES, MAX_FILTERS, MAX_VALUE_BYTES,
};
use cascade_api::{
    ItemTrace, RankRequest, Reason, RecommendationRequest, RecommendationResponse, RecommendedItem, RemovedItem,
    ServingPath, SimilarItem, SimilarResponse, SourceHit,
};
use cascade_bundle::{Candidate, Hit, LoadedBundle};
use cascade_core::{Clock, Horizon, Impression, Record, Timestamp};
use cascade_features::OnlineStore;
use cascade_models::AnyModel;
use cascade_registry::{Actor, CHALLENGER, CHAMPION, RECOMMENDER, Registry};
use parking_lot::{Mutex, RwLock};
use rand::SeedableRng;
use rollouts::{Rollouts, Route};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Faults to inject into stages: chaos testing of the fallbacks in a running server. Only in
/// builds with the `testing` feature: production requests never consult it.
#[cfg(feature = "testing")]
#[derive(Debug, Default)]
pub struct Faults {
    stall: Mutex<std::collections::HashMap<Stage, Duration>>,
    fail: Mutex<HashSet<Stage>>,
    /// Only this bundle version is faulty (a bad challenger); `None`: every version.
    version: Mutex<Option<u64>>,
}

#[cfg(feature = "testing")]
impl Faults {
    /// Every run of `stage` first sleeps `delay` (a stalled dependency).
    pub fn stall(&self, stage: Stage, delay: Duration) {
        self.stall.lock().insert(stage, delay);
    }

    /// Every run of `stage` fails (a panicking or erroring dependency).
    pub fn fail(&self, stage: Stage) {
        self.fail.lock().insert(stage);
    }

    /// The faults apply to bundle `version` only (a slow or failing challenger).
    pub fn only_for(&self, version: u64) {
        *self.version.lock() = Some(version);
    }

    pub fn clear(&self) {
        self.stall.lock().clear();
        self.fail.lock().clear();
        self.version.lock().take();
    }

    fn applies(&self, version: Option<u64>) -> bool {
        self.version.lock().is_none_or(|v| Some(v) == version)
    }

    fn delay(&self, stage: Stage, version: Option<u64>) -> Option<Duration> {
        self.stall.lock().get(&stage).copied().filter(|_| self.applies(version))
    }

    fn fails(&self, stage: Stage, version: Option<u64>) -> bool {
        self.fail.lock().contains(&stage) && self.applies(version)
    }
}

/// What [`Recommender::new`] needs besides the pipelines.
#[derive(Debug)]
pub struct RecommenderParts {
    /// Serving's view of the log (histories, item facts, engagement).
    pub live: Arc<Live>,
    /// The online feature store: the rankers' aggregates and the precomputed lists.
    pub features: Arc<OnlineStore>,
    /// The model registry's directory (`DATA_DIR/registry`: alias moves serving makes go to
    /// the audit log of the directory it sits in).
    pub registry: PathBuf,
    /// Requests without `context.time` are served at this clock's now.
    pub clock: Arc<dyn Clock>,
    /// A `context.time` past it is refused: the response's impressions would be dated there
    /// and refused by the log. The node passes the log's own (`log.max_event_ahead`).
    pub horizon: Horizon,
}

/// The serving side of a node: the bundle in service, the previous one, the pipelines, the live
/// view of the log and the impression queue.
pub struct Recommender {
    pub live: Arc<Live>,
    features: Arc<OnlineStore>,
    current: RwLock<Option<Arc<Serving>>>,
    /// The version served before the current one, kept while it has rankers: the fallback when
    /// the current one's rankers are missing.
    previous: RwLock<Option<Arc<Serving>>>,
    /// The bundle the `challenger` alias points to (when it is not the champion): what rollouts
    /// send their share of traffic to.
    challenger: RwLock<Option<Arc<Serving>>>,
    pipelines: BTreeMap<String, Arc<Pipeline>>,
    default_pipeline: String,
    registry: PathBuf,
    impressions: Mutex<Option<tokio::sync::mpsc::Sender<Vec<Record>>>>,
    clock: Arc<dyn Clock>,
    horizon: Horizon,
    #[cfg(feature = "testing")]
    faults: Faults,
    requests: AtomicU64,
    started_ms: i64,
    /// Each pipeline's rollout: state, windows, shadow totals.
    rollouts: Rollouts,
    /// The log's end when the node started: until the live view has read that far, histories
    /// (and so `exclude_seen`) are incomplete and the node is not ready.
    catch_up_to: AtomicU64,
}

impl std::fmt::Debug for Recommender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recommender").field("version", &self.version()).finish_non_exhaustive()
    }
}

/// The outcome of one stage under its deadline.
enum Ran<T> {
    Done(T),
    Failed,
    Late,
}

impl Recommender {
    /// A recommender over `pipelines` (which must hold `default_pipeline`), serving nothing until
    /// [`Recommender::reload`] finds a bundle.
    pub fn new(
        parts: RecommenderParts,
        pipelines: BTreeMap<String, Arc<Pipeline>>,
        default_pipeline: String,
    ) -> Result<Recommender> {
        if !pipelines.contains_key(&default_pipeline) {
            return Err(Error::config(
                "serving.default_pipeline",
                format!("no pipeline `{default_pipeline}` is configured"),
            ));
        }
        let started_ms = parts.clock.now().0;
        let data_dir = parts.registry.parent().filter(|d| !d.as_os_str().is_empty()).map(|d| d.to_path_buf());
        let rollouts = Rollouts::new(&pipelines, data_dir, started_ms);
        Ok(Recommender {
            rollouts,
            live: parts.live,
            features: parts.features,
            current: RwLock::new(None),
            previous: RwLock::new(None),
            challenger: RwLock::new(None),
            pipelines,
            default_pipeline,
            registry: parts.registry,
            impressions: Mutex::new(None),
            clock: parts.clock,
            horizon: parts.horizon,
            #[cfg(feature = "testing")]
            faults: Faults::default(),
            requests: AtomicU64::new(0),
            started_ms,
            catch_up_to: AtomicU64::new(0),
        })
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

    /// The online feature store it reads (which answers unavailable while it catches up, see
    /// [`OnlineStore::catching_up`]).
    pub fn features(&self) -> &Arc<OnlineStore> {
        &self.features
    }

    /// The faults injected into this recommender's stages.
    #[cfg(feature = "testing")]
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn version(&self) -> Option<u64> {
        self.current().map(|s| s.version())
    }

    fn current(&self) -> Option<Arc<Serving>> {
        self.current.read().clone()
    }

    fn previous(&self) -> Option<Arc<Serving>> {
        self.previous.read().clone()
    }

    fn challenger(&self) -> Option<Arc<Serving>> {
        self.challenger.read().clone()
    }

    /// The version the `challenger` alias points to, when it is loaded.
    pub fn challenger_version(&self) -> Option<u64> {
        self.challenger().map(|s| s.version())
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
        let old = self.current.write().replace(serving);
        if let Some(old) = old.filter(|o| o.has_rankers()) {
            *self.previous.write() = Some(old);
        }
        metrics::gauge!("cascade_model_version").set(version as f64);
        tracing::info!(version, rankers, problem = ?problem, "bundle in service");
    }

    /// The registry, writing alias moves to the audit log of the data directory it sits in.
    fn registry(&self) -> Result<Option<Registry>> {
        if !self.registry.join("bundles").exists() {
            return Ok(None);
        }
        let data_dir = self.registry.parent().unwrap_or(&self.registry);
        Ok(Some(Registry::open(&self.registry)?.with_audit_in(data_dir)))
    }

    /// The model registry serving reads its aliases from (created if missing), writing alias
    /// moves to the audit log: for the admin API's alias moves.
    pub fn model_registry(&self) -> Result<Registry> {
        let data_dir = self.registry.parent().unwrap_or(&self.registry);
        Ok(Registry::open(&self.registry)?.with_audit_in(data_dir))
    }

    /// A loaded bundle: the one in memory when it is that version (the champion, challenger or
    /// previous), else read from the registry.
    fn load(&self, registry: &Registry, version: u64) -> Result<Arc<Serving>> {
        let in_memory = [self.current(), self.challenger(), self.previous()];
        if let Some(s) = in_memory.into_iter().flatten().find(|s| s.version() == version) {
            return Ok(s);
        }
        let loaded = LoadedBundle::load(&registry.get(version)?)?;
        Ok(Arc::new(Serving::new(Arc::new(loaded))))
    }

    /// Puts the bundles the `champion` and `challenger` aliases point to into service when they
    /// moved (forward or back). A registry from before aliases gets its newest bundle as
    /// champion. Returns the champion version now in service.
    pub fn reload(&self) -> Result<Option<u64>> {
        let Some(registry) = self.registry()? else { return Ok(self.version()) };
        let champion = match registry.alias(RECOMMENDER, CHAMPION)? {
            Some(v) => v,
            None => {
                let Some(latest) = registry.latest()? else { return Ok(self.version()) };
                if !registry.alias_history(RECOMMENDER, Some(CHAMPION))?.is_empty() {
                    // Deleted on purpose: keep serving what is in memory until one is set.
                    return Ok(self.version());
                }
                let why = "no champion yet: the newest bundle (a registry from before aliases)";
                let actor = Actor::new("cascade:registry-watch", Some(why.into()));
                registry.set_alias(RECOMMENDER, CHAMPION, latest.manifest.version, &actor)?;
                latest.manifest.version
            }
        };
        let challenger = registry.alias(RECOMMENDER, CHALLENGER)?.filter(|&v| v != champion);
        // The champion first: a promoted challenger is still in memory to take from, and a
        // challenger that cannot be loaded never holds the champion back.
        if self.version() != Some(champion) {
            let serving = self.load(&registry, champion)?;
            // A bundle without rankers, and no earlier one in memory (a fresh start): the newest
            // earlier bundle with rankers becomes the fallback, as it would have after a reload.
            if !serving.has_rankers() && self.previous().is_none() && self.current().is_none_or(|c| !c.has_rankers()) {
                let earlier = registry.list()?;
                let with_rankers = earlier
                    .iter()
                    .rev()
                    .filter(|m| m.version < champion)
                    .find(|m| m.artifacts.iter().any(|a| a.name == cascade_bundle::artifacts::RANKING));
                if let Some(m) = with_rankers {
                    match registry.get(m.version).map_err(Error::from).and_then(|b| Ok(LoadedBundle::load(&b)?)) {
                        Ok(previous) => {
                            *self.previous.write() = Some(Arc::new(Serving::new(Arc::new(previous))));
                        }
                        Err(e) => {
                            tracing::warn!(version = m.version, error = %e, "the fallback bundle cannot be loaded");
                        }
                    }
                }
            }
            self.install(serving);
        }
        match challenger {
            Some(v) if self.challenger().is_none_or(|c| c.version() != v) => {
                let loaded = self.load(&registry, v)?;
                tracing::info!(version = v, rankers = loaded.has_rankers(), "challenger loaded");
                *self.challenger.write() = Some(loaded);
            }
            Some(_) => {}
            None => {
                if let Some(old) = self.challenger.write().take() {
                    tracing::info!(version = old.version(), "challenger retired");
                }
            }
        }
        Ok(self.version())
    }

    /// Opens the impression queue (at most `capacity` responses' impressions waiting): the
    /// returned receiver is drained into the log by the node's impression writer. Without it,
    /// impressions are not logged.
    pub fn open_impressions(&self, capacity: usize) -> tokio::sync::mpsc::Receiver<Vec<Record>> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Record>>(capacity.max(1));
        *self.impressions.lock() = Some(tx);
        rx
    }

    /// Closes the impression queue: the writer ends once it has drained what is queued.
    pub fn close_impressions(&self) {
        self.impressions.lock().take();
    }

    fn log_impressions(&self, records: Vec<Record>) {
        if records.is_empty() {
            return;
        }
        let guard = self.impressions.lock();
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

    fn pipeline(&self, name: Option<&str>) -> Result<Arc<Pipeline>> {
        let name = name.unwrap_or(&self.default_pipeline);
        self.pipelines.get(name).cloned().ok_or_else(|| Error::UnknownPipeline {
            name: name.to_string(),
            configured: self.pipelines.keys().cloned().collect(),
        })
    }

    /// Runs `f` on the blocking pool under `deadline` (with the stage's injected faults in
    /// `testing` builds).
    async fn stage<T: Send + 'static>(
        &self,
        stage: Stage,
        #[cfg_attr(not(feature = "testing"), allow(unused_variables))] version: Option<u64>,
        deadline: Duration,
        f: impl FnOnce() -> Option<T> + Send + 'static,
    ) -> Ran<T> {
        #[cfg(feature = "testing")]
        let f = {
            let (delay, fail) = (self.faults.delay(stage, version), self.faults.fails(stage, version));
            move || {
                if let Some(d) = delay {
                    std::thread::sleep(d);
                }
                if fail { None } else { f() }
            }
        };
        let started = Instant::now();
        // Under overload a stage can wait in the blocking pool's queue past its deadline; by
        // then the request has moved on, so the work is skipped rather than done for nobody.
        let task = tokio::task::spawn_blocking(move || if started.elapsed() < deadline { f() } else { None });
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

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidRequest { field: field.to_string(), reason: reason.into() }
}

/// The ingestion rule for ids, for an id a request names.
fn check_id(field: &str, id: &str) -> Result<()> {
    cascade_core::schema::id_problem(id).map_or(Ok(()), |reason| Err(invalid(field, reason)))
}

/// Bounds on what a request may carry: whatever is logged with its impressions (the user id,
/// the context) or held while it is served (exclude, filters) is bounded, so one request cannot
/// write megabytes to the log or hold megabytes of memory.
fn check_request(
    user: &str,
    exclude: &[String],
    context: &BTreeMap<String, serde_json::Value>,
    filters: &BTreeMap<String, Vec<String>>,
) -> Result<()> {
    check_id("user", user)?;
    if exclude.len() > MAX_EXCLUDE {
        return Err(invalid("exclude", format!("{} ids; at most {MAX_EXCLUDE}", exclude.len())));
    }
    for (i, id) in exclude.iter().enumerate() {
        check_id(&format!("exclude[{i}]"), id)?;
    }
    if context.len() > MAX_CONTEXT_KEYS {
        return Err(invalid("context", format!("{} keys; at most {MAX_CONTEXT_KEYS}", context.len())));
    }
    for (key, value) in context {
        if key.is_empty() || key.len() > MAX_CONTEXT_KEY_BYTES || key.chars().any(char::is_control) {
            return Err(invalid(
                "context",
                format!("a key must be 1..={MAX_CONTEXT_KEY_BYTES} bytes without control characters"),
            ));
        }
        let field = format!("context.{key}");
        match value {
            serde_json::Value::String(s) if s.len() > MAX_VALUE_BYTES => {
                return Err(invalid(&field, format!("longer than {MAX_VALUE_BYTES} bytes")));
            }
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                return Err(invalid(&field, "must be a string, number, boolean or null"));
            }
            _ => {}
        }
    }
    if filters.len() > MAX_FILTERS {
        return Err(invalid("filters", format!("{} attributes; at most {MAX_FILTERS}", filters.len())));
    }
    for (name, values) in filters {
        if values.is_empty() {
            return Err(invalid(&format!("filters.{name}"), "list at least one value"));
        }
        if values.len() > MAX_FILTER_VALUES {
            return Err(invalid(&format!("filters.{name}"), format!("at most {MAX_FILTER_VALUES} values")));
        }
        if values.iter().any(|v| v.len() > MAX_VALUE_BYTES) {
            return Err(invalid(&format!("filters.{name}"), format!("a value is longer than {MAX_VALUE_BYTES} bytes")));
        }
    }
    Ok(())
}

fn fallback(path: &mut ServingPath, reason: &str) {
    metrics::counter!("cascade_fallback_total", "reason" => reason.to_string()).increment(1);
    path.fallbacks.push(reason.to_string());
}

/// The request's instant: `context.time`, or the clock's now; a time past `horizon` is refused.
fn request_time(clock: &dyn Clock, horizon: Horizon, context: &BTreeMap<String, serde_json::Value>) -> Result<i64> {
    let now = clock.now();
    let Some(v) = context.get("time") else { return Ok(now.0) };
    // The rule every timestamp of the API follows: RFC 3339, or integer ms from 1970 to 9999.
    let t = cascade_core::value::timestamp_from_json(v).map_err(|e| invalid("context.time", e.reason))?;
    horizon.check(t, now).map_err(|reason| Error::TimeAhead { field: "context.time".into(), reason })?;
    Ok(t.0)
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

/// The user's precomputed lists (one online-store read for all of the pipeline's precomputed
/// sources, under the features deadline) into `prepared`. Without them the sources score the
/// user at request time: slower, never wrong.
async fn read_lists(
    features: &OnlineStore,
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
    match tokio::time::timeout(deadline, features.get_blobs(&keys)).await {
        Ok(Ok(read)) => serving.accept_lists(prepared, names.into_iter().map(|(s, _)| s).zip(read)),
        Ok(Err(e)) => {
            // An outage or a catch-up is logged by the store when it starts and ends, not here
            // per request; the fallback counter counts them.
            if e.kind() != cascade_core::ErrorKind::Unavailable {
                tracing::warn!(error = %e, "precomputed lists unavailable");
            }
            fallback(path, "lists_unavailable");
        }
        Err(_) => fallback(path, "lists_timeout"),
    }
}

async fn cascade(
    rec: &Recommender,
    route: &Route,
    user: &str,
    exclude: &[String],
    given: Option<&[String]>,
    now: i64,
) -> Outcome {
    let pipeline = &route.pipeline;
    let mut path = ServingPath { arm: route.arm.name().into(), ..ServingPath::default() };
    let history = rec.live.history(user);
    let current = rec.current();
    let serving = match route.arm {
        Arm::Champion => rec.serving_bundle(),
        Arm::Challenger => route.serving.clone(),
    };
    if route.arm == Arm::Champion && current.as_ref().is_some_and(|c| !c.has_rankers()) {
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
        read_lists(&rec.features, &serving, pipeline, user, &mut prepared, &mut path).await;
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
                .map(|(r, item)| Candidate {
                    item,
                    source: usize::MAX,
                    hits: vec![Hit { source: usize::MAX, score: 0.0, rank: r }],
                })
                .collect();
            (candidates, Vec::new())
        }
        None => {
            let (s, p, pl) = (serving.clone(), prepared.clone(), pipeline.clone());
            let deadline = Duration::from_millis(pipeline.config.retrieval_ms);
            match rec
                .stage(Stage::Retrieval, Some(serving.version()), deadline, move || Some(s.retrieve(&p, &pl)))
                .await
            {
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
    path.candidates = candidates.len();
    metrics::histogram!("cascade_candidates_per_request", "cold_start" => if prepared.cold { "true" } else { "false" })
        .record(candidates.len() as f64);
    if !serving.has_rankers() {
        let ranked = serving::retrieval_order(candidates);
        return Outcome { serving: Some(serving), ranked, ranked_by: "retrieval", prepared, sources, path };
    }

    // One batched read of the ranker's online features.
    let started = Instant::now();
    let ids: Vec<String> = candidates.iter().map(|c| serving.item_id(c.item).to_string()).collect();
    let deadline = Duration::from_millis(pipeline.config.features_ms);
    #[cfg(feature = "testing")]
    let (delay, fail) = {
        let version = Some(serving.version());
        (rec.faults.delay(Stage::Features, version), rec.faults.fails(Stage::Features, version))
    };
    let (features, s, u) = (rec.features.clone(), serving.clone(), user.to_string());
    // On the blocking pool: the embedded store reads under a lock, and a read stuck behind it
    // must not hold a runtime thread past the deadline.
    let handle = tokio::runtime::Handle::current();
    let read = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            #[cfg(feature = "testing")]
            {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                if fail {
                    return Err((cascade_core::ErrorKind::Internal, "injected failure".to_string()));
                }
            }
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            s.read_aggregates(&features, &u, &ids, now).await.map_err(|e| (e.kind(), e.to_string()))
        })
    });
    let aggregates = match tokio::time::timeout(deadline, read).await {
        Ok(Ok(Ok(a))) => Some(a),
        Ok(failed) => {
            let (kind, error) = failed.map_or_else(
                |panicked| (cascade_core::ErrorKind::Internal, panicked.to_string()),
                |read| read.err().unwrap_or((cascade_core::ErrorKind::Internal, String::new())),
            );
            // As for the lists: the store logs an outage or a catch-up once, not per request.
            if kind != cascade_core::ErrorKind::Unavailable {
                tracing::warn!(%error, "ranker features unavailable");
            }
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
    let ranked = match rec
        .stage(Stage::Ranking, Some(serving.version()), deadline, move || s.rank(&p, &kept, &aggregates, &live, keep))
        .await
    {
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

impl Recommender {
    /// `POST /v1/recommendations`: the user's best `k` items through the pipeline's cascade, with
    /// the serving path; the shown items' impressions are queued for the log.
    pub async fn recommend(&self, request: RecommendationRequest) -> Result<RecommendationResponse> {
        let rec = self;
        let pipeline = rec.pipeline(request.pipeline.as_deref())?;
        check_request(&request.user, &request.exclude, &request.context, &request.filters)?;
        let route = rec.route(&pipeline, &request.user);
        let name = pipeline.name.clone();
        // The arm's configuration serves (a rollout may try another pipeline's, `k` included);
        // the response and the impressions keep the pipeline the client asked for.
        let pipeline = route.pipeline.clone();
        let k = request.k.unwrap_or(pipeline.config.k);
        if k == 0 || k > pipeline.config.max_k {
            return Err(invalid(
                "k",
                format!("must be within 1..={} (pipelines.{}.max_k)", pipeline.config.max_k, pipeline.name),
            ));
        }
        let now = request_time(&*rec.clock, rec.horizon, &request.context)?;
        let request_id = rec.request_id();
        let started = Instant::now();
        let mut out = cascade(rec, &route, &request.user, &request.exclude, None, now).await;

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
                    let mut t =
                        trace(serving, r, shown.ranked.unwrap_or(0), pipeline.config.explain_reasons, &out.sources);
                    t.rules.clone_from(&shown.rules);
                    Some(t)
                }
                (true, _, _) => Some(ItemTrace {
                    rules: shown.rules.clone(),
                    ranked_position: shown.ranked,
                    ..ItemTrace::default()
                }),
                _ => None,
            };
            impressions.push(Record::Event(
                Impression {
                    request_id: request_id.clone(),
                    user: request.user.clone(),
                    item: shown.id.clone(),
                    ts: Timestamp(now),
                    pipeline: name.clone(),
                    position,
                    score: shown.score,
                    propensity: shown.propensity,
                    explored: shown.explored,
                    greedy_rank: shown.greedy_rank,
                    k,
                    slots,
                    tail: pipeline.config.exploration.tail,
                    ranked_by: out.ranked_by.to_string(),
                    model_version: version,
                    feature_digest: digest.clone(),
                }
                .to_event(),
            ));
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
        metrics::counter!("cascade_recommendations_total", "pipeline" => name.clone(), "ranked_by" => out.ranked_by)
            .increment(1);
        rec.record_arm(&name, route.arm, started.elapsed().as_secs_f64() * 1e3, &out.path.fallbacks);
        if route.arm == Arm::Champion {
            rec.maybe_shadow(&rec.pipelines[&name], || ShadowJob {
                pipeline: rec.pipelines[&name].clone(),
                request_id: request_id.clone(),
                user: request.user.clone(),
                exclude: request.exclude.clone(),
                k,
                now,
                champion: ranked.iter().take(k).cloned().collect(),
            });
        }
        Ok(RecommendationResponse {
            request_id,
            pipeline: name,
            model_version: version,
            items,
            path: out.path,
            removed: if request.explain {
                finished.removed.into_iter().map(|(id, rule)| RemovedItem { id, rule: rule.to_string() }).collect()
            } else {
                Vec::new()
            },
            notes: finished.notes,
        })
    }

    /// `POST /v1/rank`: the client's items in the order the pipeline's rankers give them (unknown
    /// items last, in their given order).
    pub async fn rank(&self, request: RankRequest) -> Result<RecommendationResponse> {
        let rec = self;
        let pipeline = rec.pipeline(request.pipeline.as_deref())?;
        check_request(&request.user, &[], &request.context, &BTreeMap::new())?;
        if request.items.is_empty() || request.items.len() > pipeline.config.candidates {
            return Err(invalid(
                "items",
                format!("give 1..={} items (pipelines.{}.candidates)", pipeline.config.candidates, pipeline.name),
            ));
        }
        for (i, id) in request.items.iter().enumerate() {
            check_id(&format!("items[{i}]"), id)?;
        }
        let mut seen = HashSet::new();
        if let Some(dup) = request.items.iter().find(|i| !seen.insert(i.as_str())) {
            return Err(invalid("items", format!("`{dup}` is listed twice")));
        }
        let now = request_time(&*rec.clock, rec.horizon, &request.context)?;
        let request_id = rec.request_id();
        let started = Instant::now();
        let route = rec.route(&pipeline, &request.user);
        let name = pipeline.name.clone();
        let pipeline = route.pipeline.clone();
        let out = cascade(rec, &route, &request.user, &[], Some(&request.items), now).await;
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
        rec.record_arm(&name, route.arm, started.elapsed().as_secs_f64() * 1e3, &path.fallbacks);
        Ok(RecommendationResponse {
            request_id,
            pipeline: name,
            model_version: out.serving.as_ref().map(|s| s.version()),
            items,
            path,
            removed: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// `GET /v1/items/{id}/similar`: items like `id` (default 10, at most 100): its item-kNN
    /// neighbours, then its content look-alikes, without unavailable items.
    pub fn similar(&self, id: String, k: Option<usize>) -> Result<SimilarResponse> {
        let k = k.unwrap_or(10);
        if !(1..=100).contains(&k) {
            return Err(invalid("k", "must be within 1..=100"));
        }
        check_id("id", &id)?;
        let rec = self;
        let not_found = || Error::ItemNotFound(id.clone());
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
        Ok(SimilarResponse { item: id, model_version: Some(serving.version()), items: out })
    }
}

impl Recommender {
    /// Computes the pipelines' `precomputed` sources for the `max_users` most recently active
    /// users of the live view with the bundle that serves, into the online store (Redis: shared
    /// by every replica), where they live for `ttl`. Returns how many lists per source, or
    /// `None` when no pipeline precomputes anything.
    pub async fn precompute(&self, ttl: Duration, max_users: usize) -> Result<Option<BTreeMap<String, usize>>> {
        let mut jobs: BTreeMap<String, usize> = BTreeMap::new();
        for pipeline in self.pipelines.values() {
            for source in &pipeline.config.precomputed {
                let n = pipeline.config.sources.get(source).copied().unwrap_or(0) * cascade_bundle::OVERFETCH;
                let at = jobs.entry(source.clone()).or_default();
                *at = (*at).max(n);
            }
        }
        if jobs.is_empty() {
            return Ok(None);
        }
        // For the bundle that serves: the current one, or the previous one while the current
        // one's rankers are missing (requests read the lists of the version serving them).
        let Some(serving) = self.serving_bundle() else { return Ok(Some(BTreeMap::new())) };
        let live = self.live.clone();
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let users = live.recent_users(max_users);
            jobs.iter().map(|(source, &n)| (source.clone(), serving.precompute(source, &users, n))).collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("precomputing sources panicked: {e}")))?;
        let mut counts = BTreeMap::new();
        for (source, lists) in done {
            self.features.put_blobs(&lists, ttl).await?;
            metrics::gauge!("cascade_precomputed_users", "source" => source.clone()).set(lists.len() as f64);
            counts.insert(source, lists.len());
        }
        metrics::histogram!("cascade_precompute_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(Some(counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveConfig;
    use cascade_core::{Config, Event, SystemClock};

    #[tokio::test]
    async fn not_caught_up_until_the_live_view_reads_the_log_as_it_was_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::default();
        let set = cascade_features::FeatureSet::from_config(&config).unwrap();
        let features = Arc::new(
            OnlineStore::open(&cascade_features::FeaturesStoreConfig::from_config(&config).unwrap(), dir.path(), set)
                .await
                .unwrap(),
        );
        let live = Arc::new(Live::new(LiveConfig::default()));
        let parts = RecommenderParts {
            live: live.clone(),
            features,
            registry: PathBuf::new(),
            clock: Arc::new(SystemClock),
            horizon: Horizon::default(),
        };
        let rec = Recommender::new(parts, Pipeline::from_tables(&BTreeMap::new()).unwrap(), "default".into()).unwrap();
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

    #[test]
    fn a_request_time_past_the_horizon_is_refused_naming_the_field() {
        let now = Timestamp(1_700_000_000_000);
        let clock = cascade_core::ManualClock::new(now);
        let context = |v: serde_json::Value| BTreeMap::from([("time".to_string(), v)]);
        let horizon = Horizon::default();
        assert_eq!(request_time(&clock, horizon, &BTreeMap::new()).unwrap(), now.0);
        let in_a_day = context(serde_json::json!(now.0 + 86_400_000));
        assert_eq!(request_time(&clock, horizon, &in_a_day).unwrap(), now.0 + 86_400_000);
        let err = request_time(&clock, horizon, &context(serde_json::json!("9999-12-31T23:59:59Z"))).unwrap_err();
        let Error::TimeAhead { field, reason } = &err else { panic!("{err}") };
        assert_eq!(field, "context.time");
        assert!(reason.contains("years past the server clock") && reason.contains("log.max_event_ahead"), "{reason}");
        assert!(request_time(&clock, Horizon::UNBOUNDED, &context(serde_json::json!(253_402_300_799_999i64))).is_ok());
    }
}
