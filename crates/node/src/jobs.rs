//! Jobs: training, evaluation and precomputation inside `cascade serve`, submitted over HTTP
//! (`POST /v1/jobs`) and run by the node's [`JobRunner`].
//!
//! Jobs run one at a time, in the order submitted, on one thread of their own: offline work is
//! CPU-heavy and must not take the request threads, and two at once would only slow both. A
//! project trains one bundle at a time: a `train` job is refused (409) while another is queued
//! or running, or while `cascade train` holds the registry's [`TrainLock`] (which the job's
//! training then holds in turn, so `cascade train` beside it fails before it trains).
//!
//! Every job is recorded in `DATA_DIR/jobs/{id}.json` (replaced whole at each change of state,
//! and about once a second while it logs progress), so `GET /v1/jobs/{id}` answers after a
//! restart; a job that was queued or running when the server died is reported `failed`,
//! "interrupted by a restart", by the next start. Memory keeps the jobs queued or running and
//! the latest finished ones; the directory keeps the latest 1,000 records. Submission and
//! completion are appended to the audit log (`job.submit`, `job.finish`) under the submitter's
//! name.

use cascade_api::{Job, JobKind, JobLogLine, JobProgress, JobRequest, JobState, ModelJobParams};
use cascade_core::{Clock, Config, Timestamp};
use cascade_server::{JobQueue, JobRefused};
use cascade_serving::Recommender;
use cascade_store::{AuditLog, AuditRecord, Store};
use cascade_training::{TrainConfig, TrainLock, TrainOptions};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The job records' directory, in the data directory.
pub const JOBS_DIR: &str = "jobs";
/// The format of a job record; a record of another format is skipped (with a warning).
const RECORD_FORMAT: u32 = 1;
/// Finished jobs kept in memory (older ones are read from their record).
const KEEP_IN_MEMORY: usize = 100;
/// Job records kept on disk; older ones are deleted as new jobs finish.
const KEEP_ON_DISK: usize = 1_000;
/// Jobs that may wait; past it, a submission is refused.
const MAX_QUEUED: usize = 16;
/// Lines of a job's log kept (the latest).
const LOG_LINES: usize = 200;
/// How often a running job's record is rewritten while it logs progress.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// `k` of a training or evaluation job that names none (as `cascade train` and `evaluate`).
const DEFAULT_K: usize = 10;
/// The share of the latest interactions an `evaluate` job holds out (`cascade evaluate`'s
/// default).
const EVALUATE_TEST_FRACTION: f64 = 0.1;
/// How long lists precomputed by a job live when the `precompute` schedule is off.
const ON_DEMAND_PRECOMPUTE_TTL: Duration = Duration::from_secs(30 * 60);

/// Why the job runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("the job records in {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl JobsError {
    pub fn kind(&self) -> cascade_core::ErrorKind {
        match self {
            JobsError::Io { .. } => cascade_core::ErrorKind::Unavailable,
        }
    }
}

/// What jobs run on: the node's parts and configuration.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub store: Arc<Store>,
    pub recommender: Arc<Recommender>,
    pub train: TrainConfig,
    /// `[train] interactions`: the event types read as training rows, with their weights.
    pub interactions: BTreeMap<String, f32>,
    /// The project configuration's hash, recorded in the manifests of bundles jobs train.
    pub config_hash: String,
    pub clock: Arc<dyn Clock>,
    /// How long lists a `precompute` job writes live, and for how many recent users.
    pub precompute_ttl: Duration,
    pub precompute_users: usize,
    /// The node's runtime, for the asynchronous work of a job (precomputation's writes).
    pub runtime: tokio::runtime::Handle,
}

impl JobContext {
    /// The context of a node over `store` configured by `config` (`[train]` and `[serving]`
    /// typed here).
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        recommender: Arc<Recommender>,
        clock: Arc<dyn Clock>,
        config_hash: String,
    ) -> Result<JobContext, cascade_core::ConfigError> {
        let serving = cascade_serving::ServingConfig::from_config(config)?;
        // Lists live three intervals, as the schedule's do.
        let precompute_ttl = if serving.precompute_interval.is_zero() {
            ON_DEMAND_PRECOMPUTE_TTL
        } else {
            serving.precompute_interval * 3
        };
        Ok(JobContext {
            store,
            recommender,
            train: TrainConfig::from_config(config)?,
            interactions: config.interactions()?,
            config_hash,
            clock,
            precompute_ttl,
            precompute_users: serving.precompute_users,
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

/// A job record on disk.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    format: u32,
    job: Job,
}

#[derive(Debug, Default)]
struct State {
    /// Queued, running and the latest finished jobs, by id (ids sort by submission).
    jobs: BTreeMap<String, Job>,
    queue: VecDeque<(String, JobRequest)>,
    /// The number in the latest id minted.
    last_id: u64,
    /// When the running job's record was last written.
    persisted_at: Option<Instant>,
    stopped: bool,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    ctx: JobContext,
    audit: AuditLog,
    state: Mutex<State>,
    wake: Condvar,
}

/// The node's job runner (see the module's documentation).
#[derive(Debug)]
pub struct JobRunner {
    shared: Arc<Shared>,
}

impl JobRunner {
    /// Reads the job records in `DATA_DIR/jobs` (failing those a restart interrupted) and starts
    /// the thread that runs jobs.
    pub fn start(ctx: JobContext) -> Result<JobRunner, JobsError> {
        let dir = ctx.store.dir().join(JOBS_DIR);
        let audit = AuditLog::new(ctx.store.dir());
        let shared = Arc::new(Shared { dir, ctx, audit, state: Mutex::new(State::default()), wake: Condvar::new() });
        shared.recover()?;
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("cascade-jobs".into())
            .spawn(move || worker.work())
            .map_err(|e| JobsError::Io { path: shared.dir.clone(), source: e })?;
        Ok(JobRunner { shared })
    }

    /// Stops taking jobs: the queued ones fail ("the server stopped before the job ran"); the
    /// one running carries on while the process lives (a restart reports it interrupted).
    pub fn stop(&self) {
        let shared = &self.shared;
        let now = shared.ctx.clock.now();
        let stopped: Vec<Job> = {
            let mut state = shared.state.lock();
            state.stopped = true;
            let queued: Vec<String> = state.queue.drain(..).map(|(id, _)| id).collect();
            queued.iter().filter_map(|id| state.jobs.get(id).cloned()).collect()
        };
        shared.wake.notify_all();
        metrics::gauge!("cascade_jobs_queued").set(0.0);
        for mut job in stopped {
            fail(&mut job, now, "the server stopped before the job ran");
            shared.finished(&job);
            shared.state.lock().jobs.insert(job.id.clone(), job);
        }
    }
}

/// Marks `job` failed at `now` because `why`.
fn fail(job: &mut Job, now: Timestamp, why: &str) {
    job.state = JobState::Failed;
    job.finished_at = Some(now.to_string());
    job.error = Some(why.to_string());
    job.progress.message = format!("failed: {why}");
    push_line(&mut job.log, now, format!("failed: {why}"));
}

fn push_line(log: &mut Vec<JobLogLine>, at: Timestamp, message: String) {
    log.push(JobLogLine { at: at.to_string(), message });
    if log.len() > LOG_LINES {
        log.drain(..log.len() - LOG_LINES);
    }
}

/// The steps of a job of `kind` ([`JobProgress::total`]).
fn steps(kind: JobKind, ctx: &JobContext) -> u32 {
    match kind {
        // Reading the log, training and committing, putting the bundle into service.
        JobKind::Train => 3,
        JobKind::Evaluate => 1 + u32::try_from(ctx.train.models.len()).unwrap_or(u32::MAX - 1),
        JobKind::Precompute => 1,
    }
}

/// The parameters a request runs with, defaults filled in.
fn params_of(request: &JobRequest) -> Value {
    match request {
        JobRequest::Train { params } | JobRequest::Evaluate { params } => {
            json!({"no_tune": params.no_tune, "k": params.k.unwrap_or(DEFAULT_K)})
        }
        JobRequest::Precompute { .. } => json!({}),
    }
}

fn count(kind: JobKind, state: JobState) {
    metrics::counter!("cascade_jobs_total", "kind" => kind.as_str(), "state" => state.as_str()).increment(1);
}

impl Shared {
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn write(&self, job: &Job) -> std::io::Result<()> {
        let stored = Stored { format: RECORD_FORMAT, job: job.clone() };
        let bytes = serde_json::to_vec_pretty(&stored).map_err(std::io::Error::other)?;
        cascade_store::files::write_atomic(&self.path(&job.id), &bytes, false)
    }

    /// Writes `job`'s record; a failure is logged (the job carries on in memory).
    fn persist(&self, job: &Job) {
        if let Err(e) = self.write(job) {
            tracing::error!(job = %job.id, path = %self.path(&job.id).display(), error = %e, "cannot write the job record");
        }
    }

    fn read(&self, id: &str) -> std::io::Result<Option<Job>> {
        let path = self.path(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        if stored.format != RECORD_FORMAT {
            return Err(std::io::Error::other(format!("record format {} is not {RECORD_FORMAT}", stored.format)));
        }
        Ok(Some(stored.job))
    }

    /// The ids of the records on disk, oldest first.
    fn ids_on_disk(&self) -> std::io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json").filter(|id| cascade_api::schema::is_job_id(id)) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Loads the latest records into memory; a job a restart interrupted is failed.
    fn recover(&self) -> Result<(), JobsError> {
        let io = |e: std::io::Error| JobsError::Io { path: self.dir.clone(), source: e };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let ids = self.ids_on_disk().map_err(io)?;
        let now = self.ctx.clock.now();
        let mut state = self.state.lock();
        state.last_id = ids.last().and_then(|id| u64::from_str_radix(&id[4..], 16).ok()).unwrap_or(0);
        let mut interrupted = Vec::new();
        for id in &ids {
            let mut job = match self.read(id) {
                Ok(Some(job)) if job.id == *id => job,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(path = %self.path(id).display(), error = %e, "skipping a job record that cannot be read");
                    continue;
                }
            };
            if !job.state.is_finished() {
                fail(&mut job, now, "interrupted by a restart");
                interrupted.push(job.clone());
            }
            state.jobs.insert(job.id.clone(), job);
            if state.jobs.len() > KEEP_IN_MEMORY {
                state.jobs.pop_first();
            }
        }
        drop(state);
        for job in &interrupted {
            tracing::warn!(job = %job.id, kind = job.kind.as_str(), "a job was interrupted by a restart");
            self.finished(job);
        }
        Ok(())
    }

    /// Records a finished job: its record, the audit log, the metrics, the records' retention.
    fn finished(&self, job: &Job) {
        self.persist(job);
        count(job.kind, job.state);
        let mut after = json!({"kind": job.kind, "state": job.state});
        if let Some(error) = &job.error {
            after["error"] = json!(error);
        }
        if let Some(version) = job.result.as_ref().and_then(|r| r.get("version")) {
            after["version"] = version.clone();
        }
        let record = AuditRecord::new(self.ctx.clock.now(), job.who.clone(), "job.finish", job.id.clone())
            .change(Value::Null, after);
        if let Err(e) = self.audit.append(&record) {
            tracing::error!(job = %job.id, error = %e, "cannot append the job's end to the audit log");
        }
        if let Err(e) = self.prune_disk() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot delete old job records");
        }
    }

    /// Deletes the oldest finished records beyond [`KEEP_ON_DISK`].
    fn prune_disk(&self) -> std::io::Result<()> {
        let ids = self.ids_on_disk()?;
        let excess = ids.len().saturating_sub(KEEP_ON_DISK);
        let live: Vec<String> = {
            let state = self.state.lock();
            state.jobs.values().filter(|j| !j.state.is_finished()).map(|j| j.id.clone()).collect()
        };
        for id in ids.iter().filter(|id| !live.contains(id)).take(excess) {
            std::fs::remove_file(self.path(id))?;
        }
        Ok(())
    }

    /// Runs queued jobs, one at a time, until the runner stops.
    fn work(&self) {
        loop {
            let (id, request) = {
                let mut state = self.state.lock();
                loop {
                    if state.stopped {
                        return;
                    }
                    if let Some(next) = state.queue.pop_front() {
                        metrics::gauge!("cascade_jobs_queued").set(state.queue.len() as f64);
                        break next;
                    }
                    self.wake.wait(&mut state);
                }
            };
            self.run(&id, request);
        }
    }

    fn run(&self, id: &str, request: JobRequest) {
        let kind = request.kind();
        let Some(who) = self.update(id, |job, now| {
            job.state = JobState::Running;
            job.started_at = Some(now.to_string());
            job.progress.message = "started".into();
            push_line(&mut job.log, now, "started".into());
        }) else {
            return;
        };
        count(kind, JobState::Running);
        metrics::gauge!("cascade_jobs_running").set(1.0);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match request {
            JobRequest::Train { params } => self.train(id, &params, who),
            JobRequest::Evaluate { params } => self.evaluate(id, &params),
            JobRequest::Precompute { .. } => self.precompute(id),
        }));
        let outcome = outcome.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(format!("the job panicked: {what}"))
        });
        metrics::gauge!("cascade_jobs_running").set(0.0);
        let Some(mut job) = self.state.lock().jobs.get(id).cloned() else { return };
        let now = self.ctx.clock.now();
        match outcome {
            Ok(result) => {
                job.state = JobState::Succeeded;
                job.finished_at = Some(now.to_string());
                job.progress.done = job.progress.total;
                job.progress.message = "succeeded".into();
                push_line(&mut job.log, now, "succeeded".into());
                job.result = Some(result);
            }
            Err(why) => {
                tracing::error!(job = %job.id, kind = kind.as_str(), error = %why, "job failed");
                fail(&mut job, now, &why);
            }
        }
        // Recorded and audited before anyone reads it as finished.
        self.finished(&job);
        let mut state = self.state.lock();
        state.persisted_at = None;
        state.jobs.insert(job.id.clone(), job);
        let finished: Vec<String> =
            state.jobs.values().filter(|j| j.state.is_finished()).map(|j| j.id.clone()).collect();
        for old in finished.iter().take(finished.len().saturating_sub(KEEP_IN_MEMORY)) {
            state.jobs.remove(old);
        }
    }

    /// Applies `change` to job `id` in memory and writes its record; returns who submitted it
    /// (`None`: the job is not in memory).
    fn update(&self, id: &str, change: impl FnOnce(&mut Job, Timestamp)) -> Option<String> {
        let now = self.ctx.clock.now();
        let job = {
            let mut state = self.state.lock();
            let job = state.jobs.get_mut(id)?;
            change(job, now);
            let job = job.clone();
            state.persisted_at = Some(Instant::now());
            job
        };
        self.persist(&job);
        Some(job.who)
    }

    /// A progress line of job `id` (and its step, when one is done); the record is rewritten at
    /// most every [`PERSIST_EVERY`].
    fn note(&self, id: &str, done: Option<u32>, message: &str) {
        let now = self.ctx.clock.now();
        let job = {
            let mut state = self.state.lock();
            let due = state.persisted_at.is_none_or(|t| t.elapsed() >= PERSIST_EVERY);
            let Some(job) = state.jobs.get_mut(id) else { return };
            if let Some(done) = done {
                job.progress.done = done.min(job.progress.total);
            }
            job.progress.message = message.to_string();
            push_line(&mut job.log, now, message.to_string());
            let job = due.then(|| job.clone());
            if due {
                state.persisted_at = Some(Instant::now());
            }
            job
        };
        if let Some(job) = job {
            self.persist(&job);
        }
    }

    /// The training rows in the node's own store.
    fn read_log(&self, id: &str) -> Result<cascade_training::dataset::LogData, String> {
        let store = &self.ctx.store;
        self.note(id, Some(0), "reading the event log");
        let source = format!("log:{}", store.dir().display());
        let data = cascade_training::dataset::from_log(store, &self.ctx.interactions, source)
            .map_err(|e| format!("reading the event log: {e}"))?;
        self.note(id, Some(1), &format!("{} interactions read", data.rows.len()));
        Ok(data)
    }

    fn train(&self, id: &str, params: &ModelJobParams, who: String) -> Result<Value, String> {
        let data = self.read_log(id)?;
        let ctx = &self.ctx;
        let registry = cascade_registry::Registry::open(ctx.store.dir().join("registry"))
            .map_err(|e| e.to_string())?
            .with_audit_in(ctx.store.dir());
        let k = params.k.unwrap_or(DEFAULT_K);
        let options = TrainOptions { tune: !params.no_tune, k, who };
        let progress = |message: &str| self.note(id, None, message);
        let trained =
            cascade_training::train_bundle(&registry, &ctx.train, ctx.config_hash.clone(), data, &options, &progress)
                .map_err(|e| e.to_string())?;
        let manifest = &trained.manifest;
        self.note(id, Some(2), &format!("bundle v{} committed", manifest.version));
        if let Some(why) = &trained.rankers_skipped {
            self.note(id, None, &format!("warning: the rankers are not trained: {why}"));
        }
        // Into service now rather than at the next registry watch, when the gate moved an alias.
        let served = match ctx.recommender.reload() {
            Ok(Some(version)) => format!("serving champion v{version}"),
            Ok(None) => "no champion to serve yet".to_string(),
            Err(e) => format!("the bundles could not be reloaded; the ones loaded before serve: {e}"),
        };
        self.note(id, Some(3), &served);
        Ok(json!({
            "version": manifest.version,
            "gate": manifest.draft.gate,
            "metrics": manifest.draft.metrics,
            "data": manifest.draft.data,
            "rankers_skipped": trained.rankers_skipped,
        }))
    }

    fn evaluate(&self, id: &str, params: &ModelJobParams) -> Result<Value, String> {
        let data = self.read_log(id)?;
        let k = params.k.unwrap_or(DEFAULT_K);
        let done = std::cell::Cell::new(1);
        let progress = |model: &str| {
            self.note(id, Some(done.get()), &format!("{model}: evaluating"));
            done.set(done.get() + 1);
        };
        let models = &self.ctx.train.models;
        let evaluations = cascade_training::retrieval::evaluate_log(
            data,
            models,
            EVALUATE_TEST_FRACTION,
            k,
            !params.no_tune,
            &progress,
        )
        .map_err(|e| e.to_string())?;
        Ok(json!({
            "k": k,
            "test_fraction": EVALUATE_TEST_FRACTION,
            "models": evaluations.iter().map(|e| e.to_json(k)).collect::<Vec<_>>(),
        }))
    }

    fn precompute(&self, id: &str) -> Result<Value, String> {
        let ctx = &self.ctx;
        self.note(id, Some(0), &format!("precomputing for up to {} recent users", ctx.precompute_users));
        let counts = ctx
            .runtime
            .block_on(ctx.recommender.precompute(ctx.precompute_ttl, ctx.precompute_users))
            .map_err(|e| e.to_string())?;
        Ok(json!({ "users": counts }))
    }
}

impl JobQueue for JobRunner {
    fn submit(&self, request: JobRequest, who: &str) -> Result<Job, JobRefused> {
        let shared = &self.shared;
        let kind = request.kind();
        let mut state = shared.state.lock();
        if state.stopped {
            return Err(JobRefused::Unavailable("the server is stopping; submit the job again once it runs".into()));
        }
        if kind == JobKind::Train {
            if let Some(job) = state.jobs.values().find(|j| j.kind == JobKind::Train && !j.state.is_finished()) {
                return Err(JobRefused::Conflict(format!(
                    "training job {} is {}: a project trains one bundle at a time",
                    job.id,
                    job.state.as_str()
                )));
            }
            let registry = shared.ctx.store.dir().join("registry");
            match TrainLock::is_held(&registry) {
                Ok(false) => {}
                Ok(true) => {
                    return Err(JobRefused::Conflict(format!(
                        "a training is running beside the server (`cascade train` holds {}): a project trains one bundle at a time",
                        registry.join(cascade_training::TRAIN_LOCK_FILE).display()
                    )));
                }
                Err(e) => return Err(JobRefused::Unavailable(e.to_string())),
            }
        }
        if state.queue.len() >= MAX_QUEUED {
            return Err(JobRefused::Conflict(format!(
                "{MAX_QUEUED} jobs are queued already; submit again once some have run"
            )));
        }
        let now = shared.ctx.clock.now();
        let number = state.last_id.saturating_add(1).max(u64::try_from(now.0).unwrap_or(0));
        let id = format!("job_{number:012x}");
        let mut job = Job {
            id: id.clone(),
            kind,
            state: JobState::Queued,
            params: params_of(&request),
            who: who.to_string(),
            submitted_at: now.to_string(),
            started_at: None,
            finished_at: None,
            progress: JobProgress { done: 0, total: steps(kind, &shared.ctx), message: "queued".into() },
            log: Vec::new(),
            result: None,
            error: None,
        };
        push_line(&mut job.log, now, format!("queued by {who}"));
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            tracing::error!(job = %id, error = %e, "cannot {what}");
            JobRefused::Unavailable(format!("cannot {what}: {e}"))
        };
        shared.write(&job).map_err(|e| unavailable("write the job record", &e))?;
        let record = AuditRecord::new(now, who, "job.submit", id.clone())
            .change(Value::Null, json!({"kind": kind, "params": job.params}));
        if let Err(e) = shared.audit.append(&record) {
            // Not audited, not run.
            let _ = std::fs::remove_file(shared.path(&id));
            return Err(unavailable("append the job to the audit log", &e));
        }
        state.last_id = number;
        state.jobs.insert(id.clone(), job.clone());
        state.queue.push_back((id, request));
        metrics::gauge!("cascade_jobs_queued").set(state.queue.len() as f64);
        drop(state);
        count(kind, JobState::Queued);
        shared.wake.notify_one();
        Ok(job)
    }

    fn get(&self, id: &str) -> Result<Option<Job>, JobRefused> {
        if !cascade_api::schema::is_job_id(id) {
            return Ok(None);
        }
        if let Some(job) = self.shared.state.lock().jobs.get(id) {
            return Ok(Some(job.clone()));
        }
        self.shared.read(id).map_err(|e| {
            JobRefused::Unavailable(format!("the job record {} cannot be read: {e}", self.shared.path(id).display()))
        })
    }

    fn list(&self, limit: usize) -> Vec<Job> {
        let state = self.shared.state.lock();
        state.jobs.values().rev().take(limit).map(|job| Job { log: Vec::new(), ..job.clone() }).collect()
    }
}
