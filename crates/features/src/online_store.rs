//! The online store: where the online engine's per-key state lives between log records and reads.
//!
//! Two backends, chosen by `[features_store] backend`, run the same state code
//! ([`crate::state::EntityState::apply`]) and the same read ([`crate::state::read_view`]):
//!
//! - **embedded** (default): the [`OnlineEngine`] in the server process behind a lock, checkpointed
//!   to `data_dir/features.checkpoint` with the log offset it reflects.
//! - **redis**: each key's aggregation *state* (sessions, tiles, lists — not values) is one Redis
//!   string `{prefix}:{view}:{key}`; beside it `{prefix}#meta` holds the definitions' fingerprint,
//!   the next log offset and every view's admission (watermark, counters), and a sorted set
//!   `{prefix}#z:{view}` indexes keys by newest event time for expiry. A batch of records is
//!   applied with one `MGET` of the touched keys and one script (`EVALSHA`) that writes their new
//!   states together with the meta, so the states and the offset they reflect never disagree
//!   (a crash between batches resumes exactly). The script writes only if the meta is still the
//!   one this process last wrote or read: a Redis that restarted empty, lost the meta, was
//!   restored from an older snapshot, or applied a write whose answer timed out is noticed before
//!   anything is written over it, and the store resumes from the offset Redis holds (or rebuilds
//!   from offset 0), so no record is lost or applied twice. Windows are evaluated at read time,
//!   so values expire without writes, exactly as embedded.
//!
//! A read of any features of any set of entities is one round trip with Redis: a single `MGET` of
//! the meta (for the watermarks) and every distinct (view, key) the rows need.
//!
//! One writer per store: the server that tails the log. Any number of readers.
//!
//! **Availability.** The connection is a [`redis::aio::ConnectionManager`]: a dropped connection
//! is re-established in the background with exponential backoff, and an operation that met a
//! dropped connection is tried once more on the new one. Every operation is bounded by
//! `redis_timeout`. The store keeps whether Redis is up (the last operation answered or failed):
//! it logs the change (up → down with the error, down → up with how long it was down, a repeat
//! at most once a minute), and while Redis is down an operation fails at once with
//! [`FeatureError::RedisDown`] except one a second (and every [`OnlineStore::probe`]), which finds
//! out when it is back.
//!
//! **Catching up.** After a start ([`OnlineStore::catch_up_to`] the log's end) or a rebuild, reads
//! answer [`FeatureError::CatchingUp`] until the state has applied the log that far: values
//! computed from part of the log would otherwise be served as present.

use crate::codec;
use crate::config::{FeaturesBackend, FeaturesStoreConfig};
use crate::def::{FeatureSet, Selection};
use crate::engine::{Admission, ViewStats};
use crate::error::{FeatureError, Result};
use crate::key::{Entities, EntityKey, KeySource};
use crate::online::OnlineEngine;
use crate::resolve::FieldRef;
use crate::state::{EntityState, NONE, Source, read_view};
use crate::{FeatureValue, Status};
use cascade_core::features::ViewSource;
use cascade_core::{ErrorKind, Record, Timestamp};
use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// While Redis is down, at most one operation per this interval is tried (the others fail at
/// once): enough to notice it is back, without every request waiting out a timeout.
const RETRY_WHILE_DOWN: Duration = Duration::from_secs(1);
/// While Redis stays down, the outage is logged again at most this often.
const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The feature tail's write: the batch's states, their expiry index and the meta, only if the
/// meta is still `ARGV[1]` (empty: none). Returns the meta stored afterwards (`ARGV[2]` when it
/// wrote), so a mismatch tells the caller what Redis holds instead.
/// KEYS: meta, then (state, zset) per key; ARGV: expected meta, new meta, then (state, score,
/// member) per key.
static APPLY: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then
  return cur
end
for i = 1, (#KEYS - 1) / 2 do
  redis.call('SET', KEYS[2 * i], ARGV[3 * i])
  redis.call('ZADD', KEYS[2 * i + 1], ARGV[3 * i + 1], ARGV[3 * i + 2])
end
redis.call('SET', KEYS[1], ARGV[2])
return ARGV[2]
",
    )
});

/// A batch read with what an audit needs to recompute it offline.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// One `Vec` per row, in the selection's column order.
    pub values: Vec<Vec<FeatureValue>>,
    /// Per column: the instant its view answered as of (`max(at, view watermark)`).
    pub read_at: Vec<Timestamp>,
    /// The log offset the state reflected: records below it were applied, none at or above.
    pub offset: u64,
}

/// Feature state that is updated from the log and read by serving; see the module docs.
#[derive(Debug)]
pub struct OnlineStore {
    set: FeatureSet,
    backend: Backend,
    /// Reads answer [`FeatureError::CatchingUp`] while [`OnlineStore::next_offset`] is below it.
    target: Arc<AtomicU64>,
    /// `[features_store] ready_requires_online_store`.
    holds_readiness: bool,
}

#[derive(Debug)]
enum Backend {
    Embedded(Embedded),
    Redis(Box<Redis>),
}

/// Blobs (see [`OnlineStore::put_blobs`]) by name, with their expiry.
type Blobs = HashMap<String, (Arc<[u8]>, Instant)>;

#[derive(Debug)]
struct Embedded {
    online: RwLock<OnlineEngine>,
    blobs: RwLock<Blobs>,
    /// The offset of the last checkpoint written (or loaded): the log must keep what follows it.
    checkpointed: AtomicU64,
}

struct Redis {
    client: redis::Client,
    manager: ConnectionManagerConfig,
    /// Replaced by a fresh manager when Redis has not answered for several timeouts: a
    /// connection whose peer vanished without a reset (a network partition) is never reported
    /// dropped, only timed out, and the manager reconnects on drops only.
    con: RwLock<ConnectionManager>,
    timeout: Duration,
    link: Link,
    prefix: String,
    writer: tokio::sync::Mutex<Writer>,
    next_offset: AtomicU64,
    /// Shared with [`OnlineStore::target`]: a rebuild raises it.
    target: Arc<AtomicU64>,
    /// Stale reads per view served by this process.
    stale: Vec<AtomicU64>,
    round_trips: AtomicU64,
}

/// What the writer knows of `{prefix}#meta`.
#[derive(Debug, Clone, Default)]
struct Writer {
    /// The admission per view, equal to what the meta holds.
    admission: Vec<Admission>,
    /// The meta's bytes as this process last wrote or read them (empty: there is none).
    meta: Vec<u8>,
}

/// Whether Redis answers, from the outcome of every operation.
#[derive(Debug)]
struct Link {
    up: AtomicBool,
    reconnects: AtomicU64,
    state: Mutex<LinkState>,
}

#[derive(Debug)]
struct LinkState {
    down_since: Option<Instant>,
    last_error: String,
    /// The last operation tried while down.
    last_tried: Instant,
    last_logged: Instant,
    /// When the connection manager was last replaced (see [`Redis::con`]).
    replaced: Option<Instant>,
}

impl Link {
    fn new() -> Link {
        let now = Instant::now();
        Link {
            up: AtomicBool::new(true),
            reconnects: AtomicU64::new(0),
            state: Mutex::new(LinkState {
                down_since: None,
                last_error: String::new(),
                last_tried: now,
                last_logged: now,
                replaced: None,
            }),
        }
    }

    /// Whether an operation may be tried now: always while up, or when `force`d; while down, one
    /// per [`RETRY_WHILE_DOWN`].
    fn admit(&self, force: bool) -> Result<()> {
        if self.up.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut s = self.state.lock();
        let Some(since) = s.down_since else { return Ok(()) };
        if force || s.last_tried.elapsed() >= RETRY_WHILE_DOWN {
            s.last_tried = Instant::now();
            return Ok(());
        }
        Err(FeatureError::RedisDown { down_for: since.elapsed(), reason: s.last_error.clone() })
    }

    fn answered(&self, prefix: &str) {
        if self.up.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.state.lock();
        if let Some(since) = s.down_since.take() {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
            self.up.store(true, Ordering::Release);
            s.replaced = None;
            let down_for = humantime::format_duration(Duration::from_millis(since.elapsed().as_millis() as u64));
            tracing::info!(prefix, %down_for, "the redis feature store answers again");
        }
    }

    /// Records a failure; returns how long Redis has been down.
    fn failed(&self, prefix: &str, error: &str) -> Duration {
        let mut s = self.state.lock();
        let now = Instant::now();
        s.last_error = error.to_string();
        s.last_tried = now;
        match s.down_since {
            None => {
                s.down_since = Some(now);
                s.last_logged = now;
                self.up.store(false, Ordering::Release);
                tracing::warn!(
                    prefix,
                    error,
                    "the redis feature store is down: feature reads answer unavailable until it is back"
                );
                Duration::ZERO
            }
            Some(since) => {
                if s.last_logged.elapsed() >= REPEAT_LOG_EVERY {
                    s.last_logged = now;
                    let down_for = humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()));
                    tracing::warn!(prefix, error, %down_for, "the redis feature store is still down");
                }
                since.elapsed()
            }
        }
    }

    fn down(&self) -> Option<String> {
        if self.up.load(Ordering::Acquire) {
            return None;
        }
        let s = self.state.lock();
        let since = s.down_since?;
        let down_for = humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()));
        Some(format!("redis has not answered for {down_for}: {}", s.last_error))
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl OnlineStore {
    /// Opens the backend `config` chooses. `data_dir` holds the embedded checkpoint.
    pub async fn open(config: &FeaturesStoreConfig, data_dir: impl Into<PathBuf>, set: FeatureSet) -> Result<Self> {
        let mut store = match config.backend {
            FeaturesBackend::Embedded => OnlineStore::embedded(data_dir, set),
            FeaturesBackend::Redis => {
                OnlineStore::redis_with_timeout(&config.redis_url, &config.redis_prefix, config.redis_timeout, set)
                    .await
            }
        }?;
        store.holds_readiness = config.ready_requires_online_store;
        Ok(store)
    }

    /// The embedded backend, resuming from the checkpoint in `data_dir` when there is one.
    pub fn embedded(data_dir: impl Into<PathBuf>, set: FeatureSet) -> Result<Self> {
        let online = OnlineEngine::open(data_dir, set.clone())?;
        let checkpointed = AtomicU64::new(online.next_offset());
        let embedded = Embedded { online: RwLock::new(online), blobs: RwLock::default(), checkpointed };
        Ok(OnlineStore { set, backend: Backend::Embedded(embedded), target: Arc::default(), holds_readiness: true })
    }

    /// The Redis backend at `url`, every key under `prefix`. Resumes from the state there when it
    /// was built under the same definitions; otherwise clears the prefix and starts from offset 0.
    pub async fn redis(url: &str, prefix: &str, set: FeatureSet) -> Result<Self> {
        let timeout = FeaturesStoreConfig::default().redis_timeout;
        OnlineStore::redis_with_timeout(url, prefix, timeout, set).await
    }

    /// [`OnlineStore::redis`] with every operation (and connection attempt) bounded by `timeout`.
    pub async fn redis_with_timeout(url: &str, prefix: &str, timeout: Duration, set: FeatureSet) -> Result<Self> {
        let client = redis::Client::open(url)?;
        // Reconnection: attempts 100 ms, 200 ms, ... apart (jittered, at most 2 s), six per round;
        // an operation after a failed round starts another. Operations wait for it within their
        // own timeout (`Redis::run`).
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(6);
        let con = ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())?;
        let views = set.views().len();
        let target = Arc::new(AtomicU64::new(0));
        let r = Redis {
            client,
            manager,
            con: RwLock::new(con),
            timeout,
            link: Link::new(),
            prefix: prefix.to_string(),
            writer: tokio::sync::Mutex::new(Writer { admission: vec![Admission::default(); views], meta: Vec::new() }),
            next_offset: AtomicU64::new(0),
            target: target.clone(),
            stale: (0..views).map(|_| AtomicU64::new(0)).collect(),
            round_trips: AtomicU64::new(0),
        };
        // The first operation connects: an unreachable Redis is an error here, after `timeout`.
        let meta: Option<Vec<u8>> = r.cmd(redis::cmd("GET").arg(r.meta_key())).await?;
        let resumed = match meta.as_deref().map(codec::decode_meta) {
            Some(Ok((fp, next, adm))) if fp == set.fingerprint() && adm.len() == views => Some((next, adm)),
            Some(Err(e)) => {
                tracing::warn!(prefix, error = %e, "unreadable feature meta in redis; rebuilding from the log");
                None
            }
            Some(Ok(_)) => {
                tracing::info!(prefix, "feature definitions changed; rebuilding the redis feature state from the log");
                None
            }
            None => None,
        };
        match resumed {
            Some((next, adm)) => {
                r.next_offset.store(next, Ordering::Relaxed);
                *r.writer.lock().await = Writer { admission: adm, meta: meta.unwrap_or_default() };
            }
            None => r.clear().await?,
        }
        Ok(OnlineStore { set, backend: Backend::Redis(Box::new(r)), target, holds_readiness: true })
    }

    /// Reads answer [`FeatureError::CatchingUp`] until the state has applied every log record
    /// below `offset` (the node passes the log's end at its start). Never lowers the target.
    pub fn catch_up_to(&self, offset: u64) {
        self.target.fetch_max(offset, Ordering::AcqRel);
    }

    /// `Some((at, to))` while the state is catching up: it is at offset `at` and serves again at
    /// `to` (see [`OnlineStore::catch_up_to`]; a Redis rebuild raises `to` to where it was).
    pub fn catching_up(&self) -> Option<(u64, u64)> {
        let to = self.target.load(Ordering::Acquire);
        let at = self.next_offset();
        (at < to).then_some((at, to))
    }

    /// `None` while the store answers; otherwise why not (Redis has not answered since a failure,
    /// with the error). The embedded store is always up.
    pub fn down(&self) -> Option<String> {
        match &self.backend {
            Backend::Embedded(_) => None,
            Backend::Redis(r) => r.link.down(),
        }
    }

    /// How many times Redis answered again after having failed (0 for embedded).
    pub fn reconnects(&self) -> u64 {
        match &self.backend {
            Backend::Embedded(_) => 0,
            Backend::Redis(r) => r.link.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Whether readiness waits for this store (`[features_store] ready_requires_online_store`).
    pub fn holds_readiness(&self) -> bool {
        self.holds_readiness
    }

    /// Asks Redis for the meta whatever the store believes (also while it is down), which tells
    /// whether Redis answers and whether it still holds this process's state; when it does not
    /// (it restarted empty, say), the store resumes from what Redis holds or rebuilds from offset
    /// 0, and returns [`FeatureError::StateMoved`]. Run it periodically: with no requests and no
    /// new records nothing else would notice Redis coming back or losing its data. Embedded:
    /// nothing to do.
    pub async fn probe(&self) -> Result<()> {
        match &self.backend {
            Backend::Embedded(_) => Ok(()),
            Backend::Redis(r) => r.verify(&self.set, true).await,
        }
    }

    pub fn backend(&self) -> FeaturesBackend {
        match self.backend {
            Backend::Embedded(_) => FeaturesBackend::Embedded,
            Backend::Redis(_) => FeaturesBackend::Redis,
        }
    }

    pub fn features(&self) -> &FeatureSet {
        &self.set
    }

    /// The offset of the next log record to apply: everything below it is in the state.
    pub fn next_offset(&self) -> u64 {
        match &self.backend {
            Backend::Embedded(e) => e.online.read().next_offset(),
            Backend::Redis(r) => r.next_offset.load(Ordering::Relaxed),
        }
    }

    /// The lowest log offset a restart needs: log retention must keep everything from here on.
    pub fn retention_floor(&self) -> u64 {
        match &self.backend {
            Backend::Embedded(e) => e.checkpointed.load(Ordering::Relaxed),
            Backend::Redis(r) => r.next_offset.load(Ordering::Relaxed),
        }
    }

    /// Redis commands sent so far (0 for embedded): a read costs one.
    pub fn round_trips(&self) -> u64 {
        match &self.backend {
            Backend::Embedded(_) => 0,
            Backend::Redis(r) => r.round_trips.load(Ordering::Relaxed),
        }
    }

    /// Starts over from offset 0 when the state is ahead of the log (possible only after the log
    /// lost an unsynced tail). Returns whether it did.
    pub async fn reset_if_ahead(&self, log_end: u64) -> Result<bool> {
        if self.next_offset() <= log_end {
            return Ok(false);
        }
        tracing::warn!(state = self.next_offset(), log = log_end, "feature state is ahead of the log; rebuilding");
        match &self.backend {
            Backend::Embedded(e) => {
                e.online.write().reset();
                e.checkpointed.store(0, Ordering::Relaxed);
            }
            Backend::Redis(r) => {
                let mut w = r.writer.lock().await;
                r.clear().await?;
                *w = Writer { admission: vec![Admission::default(); self.set.views().len()], meta: Vec::new() };
                r.next_offset.store(0, Ordering::Relaxed);
            }
        }
        Ok(true)
    }

    /// Applies log records in offset order; the first must be at [`OnlineStore::next_offset`]
    /// and the rest follow without gaps. With Redis the batch is applied atomically (all of it
    /// or none).
    pub async fn apply(&self, records: &[(u64, Record)]) -> Result<()> {
        let first = self.next_offset();
        if let Some(i) = records.iter().enumerate().position(|(i, (o, _))| *o != first + i as u64) {
            return Err(FeatureError::OffsetGap { expected: first + i as u64, got: records[i].0 });
        }
        self.apply_through(records, first + records.len() as u64).await
    }

    /// Applies what a reader of the log yielded from [`OnlineStore::next_offset`] up to
    /// `through` (exclusive; the reader's position): records the store's quarantine hides are
    /// absent, so offsets may skip inside that range, and the state moves to `through` even when
    /// the last records (or all of them) were hidden. Offsets outside the range, or out of
    /// order, are an error.
    pub async fn apply_through(&self, records: &[(u64, Record)], through: u64) -> Result<()> {
        match &self.backend {
            Backend::Embedded(e) => {
                let mut online = e.online.write();
                check_range(online.next_offset(), records, through)?;
                for (offset, record) in records {
                    online.skip_to(*offset);
                    online.apply(*offset, record)?;
                }
                online.skip_to(through);
                Ok(())
            }
            Backend::Redis(r) => r.apply(&self.set, records, through).await,
        }
    }

    /// The selected features for each row, as of `at` (per view, as of `max(at, watermark)`): one
    /// `Vec` per row, in the selection's column order. A row lacking a key part a selected view
    /// needs is an error naming the row.
    pub async fn read(
        &self,
        selection: &Selection,
        rows: &[Entities],
        at: Timestamp,
    ) -> Result<Vec<Vec<FeatureValue>>> {
        Ok(self.read_served(selection, rows, at).await?.values)
    }

    /// [`OnlineStore::read`], also returning the instant each column was read as of and the log
    /// offset the state reflected, read consistently with the values (for logging served
    /// vectors and auditing them with [`crate::audit`]).
    ///
    /// While the state catches up ([`OnlineStore::catching_up`]) this is
    /// [`FeatureError::CatchingUp`], not values computed from part of the log.
    pub async fn read_served(&self, selection: &Selection, rows: &[Entities], at: Timestamp) -> Result<Served> {
        let plan = ReadPlan::new(&self.set, selection, rows)?;
        if let Some((at, to)) = self.catching_up() {
            return Err(FeatureError::CatchingUp { at, to });
        }
        let (values, times, offset) = match &self.backend {
            Backend::Embedded(e) => {
                let online = e.online.read();
                let engine = online.engine();
                let times: Vec<i64> =
                    plan.views.iter().map(|(vi, _)| at.0.max(engine.views[*vi].admission.watermark)).collect();
                let values = plan.assemble(
                    &self.set,
                    selection.len(),
                    rows,
                    &times,
                    |pi, row| {
                        let key = plan.keys[pi][row].as_ref()?;
                        engine.views[plan.views[pi].0].entities.get(key)
                    },
                    |vi, n| {
                        engine.views[vi].stale_reads.fetch_add(n, Ordering::Relaxed);
                    },
                );
                (values, times, online.next_offset())
            }
            Backend::Redis(r) => r.read(&self.set, &plan, selection.len(), rows, at).await?,
        };
        let mut read_at = vec![at; selection.len()];
        for ((_, cols), t) in plan.views.iter().zip(&times) {
            for &(col, _) in cols {
                read_at[col] = Timestamp(*t);
            }
        }
        Ok(Served { values, read_at, offset })
    }

    /// Sweeps keys no read or record can see any more (values do not change) and, embedded,
    /// writes the checkpoint. Returns the keys swept.
    pub async fn checkpoint(&self) -> Result<usize> {
        match &self.backend {
            Backend::Embedded(e) => {
                // Sweep under the write lock (it mutates), encode under a read lock (reads go on
                // while a large state is encoded), write with no lock.
                let swept = {
                    let mut online = e.online.write();
                    let before = online.engine().entity_count();
                    online.sweep();
                    before - online.engine().entity_count()
                };
                let (bytes, offset, dir) = {
                    let online = e.online.read();
                    let (bytes, offset) = online.encode_checkpoint();
                    (bytes, offset, online.data_dir().to_path_buf())
                };
                OnlineEngine::write_checkpoint(&dir, &bytes)?;
                e.checkpointed.store(offset, Ordering::Relaxed);
                Ok(swept)
            }
            Backend::Redis(r) => r.sweep(&self.set).await,
        }
    }

    /// Counters and size of every view, in definition order.
    pub async fn stats(&self) -> Result<Vec<(String, ViewStats)>> {
        match &self.backend {
            Backend::Embedded(e) => {
                let online = e.online.read();
                self.set.views().iter().map(|v| Ok((v.name.clone(), online.stats(&v.name)?))).collect()
            }
            Backend::Redis(r) => {
                let adm = r.writer.lock().await.admission.clone();
                let mut pipe = redis::pipe();
                for v in self.set.views() {
                    pipe.zcard(r.zset_key(&v.name));
                }
                let counts: Vec<usize> = r.query(&pipe).await?;
                Ok(self
                    .set
                    .views()
                    .iter()
                    .enumerate()
                    .map(|(vi, v)| {
                        let a = adm[vi];
                        let stats = ViewStats {
                            entities: counts[vi],
                            watermark: (a.watermark != NONE).then_some(Timestamp(a.watermark)),
                            late_dropped: a.late_dropped,
                            missing_key: a.missing_key,
                            stale_reads: r.stale[vi].load(Ordering::Relaxed),
                        };
                        (v.name.clone(), stats)
                    })
                    .collect())
            }
        }
    }

    /// Keeps `entries` (name, bytes) beside the feature state for `ttl`, replacing values of the
    /// same names: data serving derives ahead of requests, like precomputed candidate lists. On
    /// Redis every replica reads what one wrote (`{prefix}#blob:{name}`, pipelined `SET ... PX`);
    /// embedded they live in this process's memory (derived data: recomputed, not checkpointed).
    pub async fn put_blobs(&self, entries: &[(String, Vec<u8>)], ttl: Duration) -> Result<()> {
        match &self.backend {
            Backend::Embedded(e) => {
                let now = Instant::now();
                e.blobs.write().retain(|_, (_, expires)| *expires > now);
                // In chunks: a request reading its lists waits for one chunk, not a whole job.
                for chunk in entries.chunks(1000) {
                    let mut blobs = e.blobs.write();
                    for (name, bytes) in chunk {
                        blobs.insert(name.clone(), (bytes.as_slice().into(), now + ttl));
                    }
                }
                Ok(())
            }
            Backend::Redis(r) => {
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                for chunk in entries.chunks(1000) {
                    let mut pipe = redis::pipe();
                    for (name, bytes) in chunk {
                        pipe.cmd("SET").arg(r.blob_key(name)).arg(bytes).arg("PX").arg(ms).ignore();
                    }
                    r.query::<()>(&pipe).await?;
                }
                Ok(())
            }
        }
    }

    /// The blobs of `names` ([`OnlineStore::put_blobs`]), `None` where there is none or it
    /// expired; one round trip on Redis.
    pub async fn get_blobs(&self, names: &[String]) -> Result<Vec<Option<Arc<[u8]>>>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        match &self.backend {
            Backend::Embedded(e) => {
                let now = Instant::now();
                let blobs = e.blobs.read();
                Ok(names
                    .iter()
                    .map(|n| blobs.get(n).filter(|(_, expires)| *expires > now).map(|(b, _)| b.clone()))
                    .collect())
            }
            Backend::Redis(r) => {
                let mut mget = redis::cmd("MGET");
                for name in names {
                    mget.arg(r.blob_key(name));
                }
                let values: Vec<Option<Vec<u8>>> = r.cmd(&mget).await?;
                Ok(values.into_iter().map(|v| v.map(Arc::from)).collect())
            }
        }
    }

    /// Deletes every key of the store (Redis: everything under the prefix; embedded: the state in
    /// memory, not the checkpoint file) and starts again from offset 0.
    pub async fn clear(&self) -> Result<()> {
        match &self.backend {
            Backend::Embedded(e) => {
                e.online.write().reset();
                Ok(())
            }
            Backend::Redis(r) => {
                let mut w = r.writer.lock().await;
                r.clear().await?;
                *w = Writer { admission: vec![Admission::default(); self.set.views().len()], meta: Vec::new() };
                r.next_offset.store(0, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

/// Checks that `records` lie in `[next, through)` in increasing offset order (gaps allowed:
/// records the store's quarantine hides).
fn check_range(next: u64, records: &[(u64, Record)], through: u64) -> Result<()> {
    let mut expected = next;
    for (offset, _) in records {
        if *offset < expected || *offset >= through {
            return Err(FeatureError::OffsetGap { expected, got: *offset });
        }
        expected = offset + 1;
    }
    if through < expected {
        return Err(FeatureError::OffsetGap { expected, got: through });
    }
    Ok(())
}

/// Which views a read touches and each row's key in each of them.
struct ReadPlan {
    /// (view index, [(column, feature index)]) per view with a selected feature.
    views: Vec<(usize, Vec<(usize, usize)>)>,
    /// `keys[i][row]`: the row's key in `views[i]` (`None` for request views).
    keys: Vec<Vec<Option<EntityKey>>>,
}

impl ReadPlan {
    fn new(set: &FeatureSet, selection: &Selection, rows: &[Entities]) -> Result<ReadPlan> {
        let mut views: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
        for (col, &(vi, fi)) in selection.columns.iter().enumerate() {
            match views.iter_mut().find(|(v, _)| *v == vi) {
                Some((_, cols)) => cols.push((col, fi)),
                None => views.push((vi, vec![(col, fi)])),
            }
        }
        let mut keys = Vec::with_capacity(views.len());
        for &(vi, _) in &views {
            let def = &set.views()[vi];
            if def.source == ViewSource::Request {
                keys.push(vec![None; rows.len()]);
                continue;
            }
            let mut ks = Vec::with_capacity(rows.len());
            for (row, r) in rows.iter().enumerate() {
                let key = r.key(&def.key).map_err(|missing| FeatureError::RowMissingKey {
                    row,
                    view: def.name.clone(),
                    key: def.key.iter().map(FieldRef::name).collect::<Vec<_>>().join(" × "),
                    missing: missing.name().to_string(),
                })?;
                ks.push(Some(key));
            }
            keys.push(ks);
        }
        Ok(ReadPlan { views, keys })
    }

    /// Every row's values from the states `state(plan view, row)` read as of `times[plan view]`;
    /// `stale(view, n)` is told how many selected values of a view were stale.
    fn assemble<'s>(
        &self,
        set: &FeatureSet,
        columns: usize,
        rows: &[Entities],
        times: &[i64],
        state: impl Fn(usize, usize) -> Option<&'s EntityState>,
        stale: impl Fn(usize, u64),
    ) -> Vec<Vec<FeatureValue>> {
        let mut stale_counts = vec![0u64; set.views().len()];
        // Rows sharing a key (a ranker's batch: one user, many items) share a view's values:
        // they depend on the request row only for request views, which have no key.
        let mut cache: Vec<HashMap<&EntityKey, Vec<FeatureValue>>> = vec![HashMap::new(); self.views.len()];
        let out = rows
            .iter()
            .enumerate()
            .map(|(row, entities)| {
                let mut values: Vec<Option<FeatureValue>> = vec![None; columns];
                for (pi, (vi, cols)) in self.views.iter().enumerate() {
                    let def = &set.views()[*vi];
                    let fresh;
                    let all = match &self.keys[pi][row] {
                        Some(key) => cache[pi]
                            .entry(key)
                            .or_insert_with(|| read_view(def, state(pi, row), times[pi], Some(entities))),
                        None => {
                            fresh = read_view(def, state(pi, row), times[pi], Some(entities));
                            &fresh
                        }
                    };
                    for &(col, fi) in cols {
                        if all[fi].status == Status::StaleOutsideTtl {
                            stale_counts[*vi] += 1;
                        }
                        values[col] = Some(all[fi].clone());
                    }
                }
                values.into_iter().map(|v| v.expect("every column filled")).collect()
            })
            .collect();
        for (vi, n) in stale_counts.into_iter().enumerate() {
            if n > 0 {
                stale(vi, n);
            }
        }
        out
    }
}

impl Redis {
    fn meta_key(&self) -> String {
        format!("{}#meta", self.prefix)
    }

    fn blob_key(&self, name: &str) -> String {
        format!("{}#blob:{name}", self.prefix)
    }

    fn zset_key(&self, view: &str) -> String {
        format!("{}#z:{view}", self.prefix)
    }

    fn state_key(&self, view: &str, key: &EntityKey) -> String {
        format!("{}:{view}:{}", self.prefix, key.as_str())
    }

    /// Runs one operation: refused at once while Redis is down (unless `force`d or due for a
    /// try, see [`Link::admit`]), bounded by the timeout, tried once more after a dropped
    /// connection (every operation here is idempotent, the apply script included: it writes only
    /// over the meta it expects), and its outcome recorded in the link state.
    async fn run<T, F, Fut>(&self, force: bool, op: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        self.link.admit(force)?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut retried = false;
        loop {
            let con = self.con.read().clone();
            match tokio::time::timeout_at(deadline, op(con)).await {
                Ok(Ok(value)) => {
                    self.link.answered(&self.prefix);
                    return Ok(value);
                }
                // The connection's own response timeout (the same length) may fire first.
                Ok(Err(e)) if e.is_timeout() => return Err(self.timed_out()),
                Err(_) => return Err(self.timed_out()),
                Ok(Err(e)) => {
                    let dropped = e.is_connection_dropped();
                    let e = FeatureError::Redis(e);
                    if e.kind() != ErrorKind::Unavailable {
                        // Redis answered (with an error we caused): it is up.
                        self.link.answered(&self.prefix);
                        return Err(e);
                    }
                    if dropped && !retried {
                        // The manager is reconnecting; the retry waits for the new connection.
                        retried = true;
                        continue;
                    }
                    self.link.failed(&self.prefix, &e.to_string());
                    return Err(e);
                }
            }
        }
    }

    fn timed_out(&self) -> FeatureError {
        let e = FeatureError::RedisTimeout(self.timeout);
        let down_for = self.link.failed(&self.prefix, &e.to_string());
        self.replace_if_stuck(down_for);
        e
    }

    /// Swaps in a new connection manager once Redis has not answered for three timeouts (at most
    /// once per three timeouts): see [`Redis::con`].
    fn replace_if_stuck(&self, down_for: Duration) {
        let stuck = self.timeout * 3;
        if down_for < stuck {
            return;
        }
        {
            let mut s = self.link.state.lock();
            if s.replaced.is_some_and(|at| at.elapsed() < stuck) {
                return;
            }
            s.replaced = Some(Instant::now());
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.manager.clone()) {
            Ok(con) => {
                tracing::info!(prefix = self.prefix, "redis feature store: opening a new connection");
                *self.con.write() = con;
            }
            Err(e) => tracing::warn!(prefix = self.prefix, error = %e, "redis feature store: no new connection"),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T> {
        self.run(false, |mut con| async move { pipe.query_async(&mut con).await }).await
    }

    async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.run(false, |mut con| async move { cmd.query_async(&mut con).await }).await
    }

    /// The meta as Redis holds it (empty: none), tried even while the store believes it down
    /// when `force`d.
    async fn get_meta(&self, force: bool) -> Result<Vec<u8>> {
        let key = self.meta_key();
        let key = key.as_str();
        let meta: Option<Vec<u8>> =
            self.run(force, |mut con| async move { redis::cmd("GET").arg(key).query_async(&mut con).await }).await?;
        Ok(meta.unwrap_or_default())
    }

    /// Checks that Redis still holds the meta this process last wrote or read; see
    /// [`OnlineStore::probe`].
    async fn verify(&self, set: &FeatureSet, force: bool) -> Result<()> {
        let mut w = self.writer.lock().await;
        let current = self.get_meta(force).await?;
        if current == w.meta {
            return Ok(());
        }
        Err(self.adopt(set, &mut w, current).await?)
    }

    /// Redis holds `current` as the meta, not what this process last wrote: continue from the
    /// state Redis holds when it is one of these definitions' (consistent with its offset: meta
    /// and states are written together), otherwise clear the prefix and rebuild from offset 0.
    /// Reads wait ([`FeatureError::CatchingUp`]) until the state is back where it was. Returns
    /// the error that reports it.
    async fn adopt(&self, set: &FeatureSet, w: &mut Writer, current: Vec<u8>) -> Result<FeatureError> {
        let expected = self.next_offset.load(Ordering::Acquire);
        let views = set.views().len();
        let decoded = (!current.is_empty()).then(|| codec::decode_meta(&current));
        let (found, why) = match decoded {
            Some(Ok((fp, next, adm))) if fp == set.fingerprint() && adm.len() == views => {
                *w = Writer { admission: adm, meta: current };
                self.next_offset.store(next, Ordering::Release);
                let why = if next > expected {
                    "a write whose answer was lost was applied"
                } else {
                    "redis was restored from an older snapshot"
                };
                (next, why)
            }
            other => {
                self.clear().await?;
                *w = Writer { admission: vec![Admission::default(); views], meta: Vec::new() };
                self.next_offset.store(0, Ordering::Release);
                let why = match other {
                    None => "redis lost it: restarted empty, flushed, or evicted the meta; rebuilding from the log",
                    Some(_) => "another build's state or an unreadable meta; rebuilding from the log",
                };
                (0, why)
            }
        };
        self.target.fetch_max(expected, Ordering::AcqRel);
        tracing::warn!(prefix = self.prefix, expected, found, why, "the redis feature state moved");
        Ok(FeatureError::StateMoved { expected, found, why })
    }

    /// Deletes every key under the prefix.
    async fn clear(&self) -> Result<()> {
        for pattern in [format!("{}:*", self.prefix), format!("{}#*", self.prefix)] {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) =
                    self.cmd(redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000)).await?;
                if !keys.is_empty() {
                    self.cmd::<()>(redis::cmd("DEL").arg(&keys)).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    async fn apply(&self, set: &FeatureSet, records: &[(u64, Record)], through: u64) -> Result<()> {
        let mut w = self.writer.lock().await;
        let first = self.next_offset.load(Ordering::Relaxed);
        check_range(first, records, through)?;
        if through == first {
            return Ok(());
        }
        // Admission in log order, exactly as the embedded engine does it, on a copy that only
        // replaces the writer's once the batch is stored.
        let views = set.views();
        let mut adm = w.admission.clone();
        let mut slots: HashMap<(usize, EntityKey), usize> = HashMap::new();
        let mut slot_keys: Vec<(usize, EntityKey)> = Vec::new();
        // (record, view, slot, event time, horizon)
        let mut steps: Vec<(usize, usize, usize, i64, i64)> = Vec::new();
        for (ri, (_, record)) in records.iter().enumerate() {
            for (vi, view) in views.iter().enumerate() {
                let Some((key, _, ts)) = adm[vi].admit(view, record) else { continue };
                let horizon = adm[vi].watermark.saturating_sub(view.allowed_lateness_ms);
                let slot = *slots.entry((vi, key)).or_insert_with_key(|k| {
                    slot_keys.push(k.clone());
                    slot_keys.len() - 1
                });
                steps.push((ri, vi, slot, ts, horizon));
            }
        }
        let mut states: Vec<Option<EntityState>> = if slot_keys.is_empty() {
            Vec::new()
        } else {
            let mut mget = redis::cmd("MGET");
            for (vi, key) in &slot_keys {
                mget.arg(self.state_key(&views[*vi].name, key));
            }
            let raw: Vec<Option<Vec<u8>>> = self.cmd(&mget).await?;
            raw.iter()
                .zip(&slot_keys)
                .map(|(b, (vi, key))| b.as_deref().map(|b| self.decode(b, views, *vi, key)).transpose())
                .collect::<Result<_>>()?
        };
        for &(ri, vi, slot, ts, horizon) in &steps {
            let (offset, record) = &records[ri];
            let view = &views[vi];
            states[slot].get_or_insert_with(|| EntityState::new(view)).apply(
                view,
                Source::of(record),
                ts,
                *offset,
                horizon,
            );
        }
        let next = through;
        let meta = codec::encode_meta(set.fingerprint(), next, &adm);
        let mut script = APPLY.prepare_invoke();
        script.key(self.meta_key()).arg(&w.meta).arg(&meta);
        for ((vi, key), state) in slot_keys.iter().zip(&states) {
            let state = state.as_ref().expect("every touched key was applied to");
            let name = &views[*vi].name;
            script.key(self.state_key(name, key)).key(self.zset_key(name));
            script.arg(codec::encode_state(state)).arg(state.max_ts()).arg(key.as_str());
        }
        let script = &script;
        let stored: Vec<u8> = self.run(false, |mut con| async move { script.invoke_async(&mut con).await }).await?;
        // Not what was written (the states read above may belong to another state too): resume
        // from what Redis holds; the consumer offers the records from there.
        if stored != meta {
            return Err(self.adopt(set, &mut w, stored).await?);
        }
        *w = Writer { admission: adm, meta };
        self.next_offset.store(next, Ordering::Release);
        Ok(())
    }

    fn decode(
        &self,
        buf: &[u8],
        views: &[crate::resolve::ResolvedView],
        vi: usize,
        key: &EntityKey,
    ) -> Result<EntityState> {
        codec::decode_state(buf, &views[vi]).map_err(|reason| FeatureError::Corrupt {
            path: PathBuf::from(format!("redis:{}", self.state_key(&views[vi].name, key))),
            reason,
        })
    }

    async fn read(
        &self,
        set: &FeatureSet,
        plan: &ReadPlan,
        columns: usize,
        rows: &[Entities],
        at: Timestamp,
    ) -> Result<(Vec<Vec<FeatureValue>>, Vec<i64>, u64)> {
        let views = set.views();
        // Before the read: Redis's meta is at least this far unless the state moved (the writer
        // raises it only after Redis stored the batch).
        let applied = self.next_offset.load(Ordering::Acquire);
        // One MGET: the meta (watermarks), then every distinct (view, key) the rows need.
        let mut mget = redis::cmd("MGET");
        mget.arg(self.meta_key());
        let mut distinct: HashMap<(usize, &EntityKey), usize> = HashMap::new();
        let mut order: Vec<(usize, &EntityKey)> = Vec::new();
        let mut index: Vec<Vec<Option<usize>>> = Vec::with_capacity(plan.views.len());
        for (pi, (vi, _)) in plan.views.iter().enumerate() {
            index.push(
                plan.keys[pi]
                    .iter()
                    .map(|k| {
                        let k = k.as_ref()?;
                        Some(*distinct.entry((*vi, k)).or_insert_with(|| {
                            mget.arg(self.state_key(&views[*vi].name, k));
                            order.push((*vi, k));
                            order.len() - 1
                        }))
                    })
                    .collect(),
            );
        }
        let raw: Vec<Option<Vec<u8>>> = self.cmd(&mget).await?;
        let (watermarks, offset): (Vec<i64>, u64) = match raw.first().and_then(Option::as_deref) {
            Some(b) => match codec::decode_meta(b) {
                Ok((fp, next, _)) if fp == set.fingerprint() && next < applied => {
                    return Err(self.moved(set, applied).await);
                }
                Ok((fp, next, adm)) if fp == set.fingerprint() && adm.len() == views.len() => {
                    (adm.iter().map(|a| a.watermark).collect(), next)
                }
                // Another build's state: nothing in it applies to these definitions.
                _ => {
                    let times = vec![at.0; plan.views.len()];
                    return Ok((plan.assemble(set, columns, rows, &times, |_, _| None, |_, _| {}), times, 0));
                }
            },
            None if applied > 0 => return Err(self.moved(set, applied).await),
            None => (vec![NONE; views.len()], 0),
        };
        let states: Vec<Option<EntityState>> = raw[1..]
            .iter()
            .zip(&order)
            .map(|(b, (vi, key))| b.as_deref().map(|b| self.decode(b, views, *vi, key)).transpose())
            .collect::<Result<_>>()?;
        let times: Vec<i64> = plan.views.iter().map(|(vi, _)| at.0.max(watermarks[*vi])).collect();
        let values = plan.assemble(
            set,
            columns,
            rows,
            &times,
            |pi, row| index[pi][row].and_then(|i| states[i].as_ref()),
            |vi, n| {
                self.stale[vi].fetch_add(n, Ordering::Relaxed);
            },
        );
        Ok((values, times, offset))
    }

    /// A read found Redis behind what this process applied (`applied`): have the writer's view
    /// checked (and the state resumed or rebuilt), and answer unavailable meanwhile.
    async fn moved(&self, set: &FeatureSet, applied: u64) -> FeatureError {
        match self.verify(set, false).await {
            Err(e) => e,
            // Raced with a rebuild that already happened: reads wait for it.
            Ok(()) => FeatureError::CatchingUp {
                at: self.next_offset.load(Ordering::Acquire),
                to: self.target.load(Ordering::Acquire).max(applied),
            },
        }
    }

    /// Drops keys more than `expire_after + allowed_lateness` behind their view's watermark, as
    /// [`crate::Engine::sweep`] does: no read or admissible record can see them any more.
    async fn sweep(&self, set: &FeatureSet) -> Result<usize> {
        let w = self.writer.lock().await;
        let admission = &w.admission;
        let mut removed = 0;
        for (vi, view) in set.views().iter().enumerate() {
            let (Some(expire), wm) = (view.expire_after_ms, admission[vi].watermark) else { continue };
            if wm == NONE {
                continue;
            }
            let cutoff = wm.saturating_sub(view.allowed_lateness_ms).saturating_sub(expire);
            let zkey = self.zset_key(&view.name);
            let gone: Vec<String> =
                self.cmd(redis::cmd("ZRANGEBYSCORE").arg(&zkey).arg("-inf").arg(format!("({cutoff}"))).await?;
            if gone.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            let keys: Vec<String> =
                gone.iter().map(|k| self.state_key(&view.name, &EntityKey::from_encoded(k.as_str().into()))).collect();
            pipe.del(&keys).ignore();
            pipe.zrem(&zkey, &gone).ignore();
            self.query::<()>(&pipe).await?;
            removed += gone.len();
        }
        Ok(removed)
    }
}
