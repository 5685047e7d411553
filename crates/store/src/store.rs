//! The store facade: idempotent appends to the log, and the catalogue derived from it.

use crate::catalogue::Catalogue;
use crate::codec;
use crate::error::Result;
use crate::log::{CommitHook, EncodedBatch, Log, LogOptions, LogReader, LogStats, Ticket, records_of};
use crate::quarantine::{Quarantine, QuarantineRule};
use cascade_core::{Clock, Horizon, ItemRecord, Record, SystemClock, Timestamp, UserRecord};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What became of one record of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored at this offset.
    Written(u64),
    /// Its id was seen before: not stored again; the first copy has this offset.
    Duplicate(u64),
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub log: LogOptions,
    /// Appends dated past it are refused ([`crate::Error::TimeAhead`]).
    pub horizon: Horizon,
    /// The clock the horizon is measured from.
    pub clock: Arc<dyn Clock>,
    /// Closed segments older than this may be deleted (zero: never by age).
    pub retention: Duration,
    /// Closed segments may be deleted while the log is larger than this (zero: no limit).
    pub retention_bytes: u64,
}

impl From<&crate::config::LogConfig> for StoreOptions {
    fn from(c: &crate::config::LogConfig) -> Self {
        StoreOptions {
            log: c.into(),
            horizon: c.horizon(),
            clock: Arc::new(SystemClock),
            retention: c.retention,
            retention_bytes: c.retention_bytes,
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        (&crate::config::LogConfig::default()).into()
    }
}

/// Remembers the idempotency keys of the retained log.
///
/// Keys are kept as 128-bit hashes (two independently seeded SipHash-1-3 values): 24 bytes per
/// key instead of the key itself, with a collision probability that is negligible at any log size
/// (about 10^-20 at a billion keys). The map is rebuilt from the log at open, so the random seeds
/// need not be stable across restarts.
#[derive(Debug, Default)]
struct Dedupe {
    seen: HashMap<u128, u64>,
    seeds: (RandomState, RandomState),
}

impl Dedupe {
    fn key(&self, id: &str) -> u128 {
        (u128::from(self.seeds.0.hash_one(id)) << 64) | u128::from(self.seeds.1.hash_one(id))
    }
}

/// The event log plus what is derived from it, in one data directory:
/// `DIR/log/*.seg` and `DIR/catalogue.snapshot`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Held for the store's lifetime: one writing process per data directory. `None` when
    /// opened read-only.
    _lock: Option<std::fs::File>,
    log: Log,
    dedupe: Mutex<Dedupe>,
    catalogue: Arc<RwLock<Catalogue>>,
    /// The `applied_through` of the last snapshot written; retention keeps everything above it.
    snapshot_offset: Mutex<u64>,
    /// Offsets from which named consumers of the log (the feature state's checkpoint) still need
    /// it to recover; retention deletes nothing at or above the lowest.
    consumer_floors: Mutex<HashMap<String, u64>>,
    options: StoreOptions,
    read_only: bool,
    /// Records every reader skips (`DIR/quarantine.json`).
    quarantine: RwLock<Arc<Quarantine>>,
}

/// What [`Store::quarantine`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineReport {
    pub rule: QuarantineRule,
    /// Retained records the rules now hide (this rule and earlier ones).
    pub hidden: u64,
}

impl Store {
    /// Opens the store, recovering the log and rebuilding the dedupe index and catalogue.
    pub fn open(dir: impl Into<PathBuf>, options: StoreOptions) -> Result<Store> {
        Self::open_mode(dir.into(), options, false)
    }

    /// Opens the store for reading only, beside the process that writes it (`cascade serve`):
    /// no lock, no recovery, nothing written; the log and catalogue as of now. Appends fail.
    /// For training, evaluation and inspection while the server runs.
    pub fn open_read_only(dir: impl Into<PathBuf>, options: StoreOptions) -> Result<Store> {
        Self::open_mode(dir.into(), options, true)
    }

    fn open_mode(dir: PathBuf, options: StoreOptions, read_only: bool) -> Result<Store> {
        let lock = if read_only {
            None
        } else {
            std::fs::create_dir_all(&dir).map_err(crate::Error::io(&dir))?;
            let lock_path = dir.join("LOCK");
            let lock = std::fs::File::create(&lock_path).map_err(crate::Error::io(&lock_path))?;
            lock.try_lock().map_err(|_| crate::Error::Locked(dir.clone()))?;
            Some(lock)
        };
        let catalogue = Arc::new(RwLock::new(Catalogue::default()));
        let hook_catalogue = catalogue.clone();
        let hook: CommitHook = Box::new(move |base, count, records| {
            let mut cat = hook_catalogue.write();
            for (i, bytes) in records_of(records).enumerate() {
                // Events (tag 1) are the bulk of the log and do not touch the catalogue.
                if bytes.first() != Some(&1)
                    && let Ok(record) = codec::decode(bytes)
                {
                    cat.apply(base + i as u64, &record);
                }
            }
            cat.applied_through = base + u64::from(count);
        });
        let log = if read_only {
            Log::open_read_only(dir.join("log"))?
        } else {
            Log::open_with_hook(dir.join("log"), options.log.clone(), Some(hook))?
        };

        let quarantine = Arc::new(Quarantine::load(&dir)?);
        let mut snapshot = Catalogue::load(&dir)?;
        let (first, committed) = (log.first_offset(), log.committed());
        if snapshot.applied_through > committed {
            // Only possible after losing an unsynced log tail (fsync = interval and a power loss).
            tracing::warn!(
                snapshot = snapshot.applied_through,
                log = committed,
                "catalogue snapshot is ahead of the log; rebuilding from the log"
            );
            snapshot = Catalogue::default();
        }
        let snapshot_offset = snapshot.applied_through;
        // A snapshot written before a quarantine may hold hidden records: forget them and replay
        // the whole retained log over it (a replayed older version never replaces a newer one).
        let replay_from =
            if snapshot.forget(|o, t| quarantine.hides_time(o, t)) > 0 { first } else { snapshot.applied_through };
        let mut dedupe = Dedupe::default();
        for entry in log.read_from(first).hiding(quarantine.clone()) {
            let (offset, record) = entry?;
            if let Some(id) = record.idempotency_key() {
                let key = dedupe.key(id);
                dedupe.seen.entry(key).or_insert(offset);
            }
            if offset >= replay_from {
                snapshot.apply(offset, &record);
            }
        }
        snapshot.applied_through = committed;
        *catalogue.write() = snapshot;
        tracing::debug!(dir = %dir.display(), first, next = committed, ids = dedupe.seen.len(), "store opened");
        Ok(Store {
            dir,
            _lock: lock,
            log,
            dedupe: Mutex::new(dedupe),
            catalogue,
            snapshot_offset: Mutex::new(snapshot_offset),
            consumer_floors: Mutex::new(HashMap::new()),
            options,
            read_only,
            quarantine: RwLock::new(quarantine),
        })
    }

    /// The time horizon appends are held to (`log.max_event_ahead`).
    pub fn horizon(&self) -> Horizon {
        self.options.horizon
    }

    /// The quarantine rules every reader of this store honours.
    pub fn quarantined(&self) -> Arc<Quarantine> {
        self.quarantine.read().clone()
    }

    /// Quarantines the records stored so far that are dated after `after`: from now on every
    /// reader ([`Store::read_from`]), the catalogue and the idempotency index skip them (a
    /// corrected copy with the same id can then be stored). The rule is durable
    /// (`DIR/quarantine.json`); the log itself is not changed. State derived from the log
    /// elsewhere (the feature state, the offline store) must be rebuilt by its owner.
    /// Refused on a read-only store.
    pub fn quarantine(&self, after: Timestamp) -> Result<QuarantineReport> {
        if self.read_only {
            return Err(crate::Error::Quarantine("the store is open read-only".into()));
        }
        // Under the dedupe lock nothing is enqueued: the rule's bound is the log's end.
        let mut dedupe = self.dedupe.lock();
        let below = self.log_next_offset();
        let rule = QuarantineRule::new(below, after);
        let quarantine = Arc::new(self.quarantine.read().with(rule.clone()));
        quarantine.save(&self.dir)?;
        *self.quarantine.write() = quarantine.clone();
        // The catalogue and the idempotency index, again from the retained log without what
        // is hidden now.
        let mut catalogue = self.catalogue.write();
        catalogue.forget(|o, t| quarantine.hides_time(o, t));
        dedupe.seen.clear();
        let mut hidden = 0;
        for entry in self.log.read_from(self.log.first_offset()) {
            let (offset, record) = entry?;
            if quarantine.hides(offset, &record) {
                hidden += 1;
                continue;
            }
            if let Some(id) = record.idempotency_key() {
                let key = dedupe.key(id);
                dedupe.seen.entry(key).or_insert(offset);
            }
            catalogue.apply(offset, &record);
        }
        catalogue.save(&self.dir)?;
        *self.snapshot_offset.lock() = catalogue.applied_through;
        tracing::warn!(below, after = %after, hidden, "log records quarantined");
        Ok(QuarantineReport { rule, hidden })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends records and waits until they are durable. Records whose id was seen before (in the
    /// log or earlier in this batch) are not stored again. A batch is written as one unit.
    pub async fn append(&self, records: &[Record]) -> Result<Vec<Outcome>> {
        let (ticket, outcomes) = self.submit(records)?;
        if let Some(t) = ticket {
            t.wait().await?;
        }
        Ok(outcomes)
    }

    /// [`Store::append`] for plain threads (never call it inside an async runtime).
    pub fn append_blocking(&self, records: &[Record]) -> Result<Vec<Outcome>> {
        let (ticket, outcomes) = self.submit(records)?;
        if let Some(t) = ticket {
            t.wait_blocking()?;
        }
        Ok(outcomes)
    }

    fn submit(&self, records: &[Record]) -> Result<(Option<Ticket>, Vec<Outcome>)> {
        // Before anything else: a record dated past the horizon would move every watermark
        // derived from the log to its date, for good.
        let ahead = self.options.horizon.check_batch(records, self.options.clock.now());
        if !ahead.is_empty() {
            metrics::counter!("cascade_log_time_ahead_refused_total").increment(records.len() as u64);
            return Err(crate::Error::TimeAhead(ahead));
        }
        // Encode outside the lock so concurrent appenders encode in parallel.
        let mut batch = EncodedBatch::default();
        records.iter().for_each(|r| batch.push(r));
        let mut dedupe = self.dedupe.lock();
        let keys: Vec<Option<u128>> = records.iter().map(|r| r.idempotency_key().map(|id| dedupe.key(id))).collect();
        let mut outcomes = Vec::with_capacity(records.len());
        let mut keep = Vec::with_capacity(records.len());
        let mut batch_first: HashMap<u128, u64> = HashMap::new();
        let mut newest_duplicate = None;
        // Offsets are assigned by the log when enqueued; under the dedupe lock nobody else
        // enqueues, so the next offset is the committed-or-queued end.
        let base = self.log_next_offset();
        let mut next = base;
        for key in &keys {
            let seen = key.and_then(|k| dedupe.seen.get(&k).or_else(|| batch_first.get(&k)).copied());
            match seen {
                Some(offset) => {
                    outcomes.push(Outcome::Duplicate(offset));
                    keep.push(false);
                    newest_duplicate = newest_duplicate.max(Some(offset));
                }
                None => {
                    if let Some(k) = key {
                        batch_first.insert(*k, next);
                    }
                    outcomes.push(Outcome::Written(next));
                    keep.push(true);
                    next += 1;
                }
            }
        }
        let batch = if keep.iter().all(|&k| k) { batch } else { batch.retain(&keep) };
        // A duplicate of a record still in flight must not be acknowledged before that record
        // is durable: an empty batch queued behind it is a barrier.
        let must_wait = !batch.is_empty() || newest_duplicate.is_some_and(|o| o >= self.log.committed());
        let ticket = if must_wait { Some(self.log.enqueue(batch)?) } else { None };
        if let Some(t) = &ticket {
            debug_assert_eq!(t.base, base);
        }
        dedupe.seen.extend(batch_first);
        Ok((ticket, outcomes))
    }

    fn log_next_offset(&self) -> u64 {
        self.log.next_offset()
    }

    /// The live item `id`, or `None` if unknown or deleted.
    pub fn item(&self, id: &str) -> Option<ItemRecord> {
        self.catalogue.read().item(id).cloned()
    }

    /// Every live item, sorted by id.
    pub fn items(&self) -> Vec<ItemRecord> {
        let mut items: Vec<ItemRecord> = self.catalogue.read().items().cloned().collect();
        items.sort_by(|a, b| a.id.cmp(&b.id));
        items
    }

    pub fn user(&self, id: &str) -> Option<UserRecord> {
        self.catalogue.read().user(id).cloned()
    }

    /// (live items, users) in the catalogue.
    pub fn catalogue_counts(&self) -> (usize, usize) {
        let c = self.catalogue.read();
        (c.item_count(), c.user_count())
    }

    /// Reads acknowledged records from `offset` up to the end as of now, skipping those the
    /// quarantine hides ([`Store::quarantine`]; offsets are not renumbered).
    pub fn read_from(&self, offset: u64) -> LogReader {
        self.log.read_from(offset).hiding(self.quarantined())
    }

    pub fn log_stats(&self) -> Result<LogStats> {
        self.log.stats()
    }

    /// `None` while the store accepts writes; otherwise why not.
    pub fn failure(&self) -> Option<String> {
        self.log.failure()
    }

    /// Tells retention that `consumer` needs the log from `offset` on (e.g. the offset of the
    /// feature state's latest checkpoint); a later call replaces the consumer's floor.
    pub fn retain_from(&self, consumer: &str, offset: u64) {
        self.consumer_floors.lock().insert(consumer.to_string(), offset);
    }

    /// Snapshots the catalogue and applies retention, never deleting a record the latest snapshot
    /// or a consumer ([`Store::retain_from`]) still needs. Run it periodically and at shutdown.
    pub fn maintain(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let snapshot = self.catalogue.read().clone();
        let floor = snapshot.applied_through;
        let mut last = self.snapshot_offset.lock();
        if floor > *last {
            snapshot.save(&self.dir)?;
            *last = floor;
        }
        let consumers = self.consumer_floors.lock().values().copied().min();
        let floor = consumers.map_or(*last, |c| c.min(*last));
        let deleted = self.log.apply_retention(floor, self.options.retention, self.options.retention_bytes)?;
        if deleted > 0 {
            let first = self.log.first_offset();
            self.dedupe.lock().seen.retain(|_, offset| *offset >= first);
        }
        Ok(())
    }

    /// Flushes and syncs the log, writes a final snapshot, and stops the writer.
    pub fn close(&self) -> Result<()> {
        self.log.close()?;
        self.maintain()
    }
}
