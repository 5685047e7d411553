//! The online store's behaviour, one suite run against both backends (embedded and Redis): every
//! value a batch read serves equals the in-memory engine's on the same log, windows expire at
//! read time, a batch read is one Redis round trip, batches resume exactly after a reopen, expiry
//! sweeps change no value, and bad input is refused.
//!
//! Redis: `CASCADE_TEST_REDIS_URL` or redis://127.0.0.1:6379 (`.ci/run` starts one). Each run
//! uses its own key prefix and deletes it afterwards. No Redis is a failure, not a skip.

use crate::checkpoint::{DEFS, workload};
use crate::{features, same, tx};
use cascade_core::{Record, Timestamp, Value};
use cascade_features::FeaturesBackend;
use cascade_features::{
    Engine, Entities, FeatureError, FeatureSet, FeatureValue, LoggedVector, OnlineStore, Status, audit,
};
use serde_json::json;
use std::path::PathBuf;

const EXTRA: &str = r#"
[features.pair]
entity = ["user", "item"]
events = ["play"]
ttl = "3h"
[features.pair.features]
plays = { agg = "count" }
recent = { agg = "last_n", field = "item", n = 2 }

[features.user_short]
entity = "user"
events = ["transaction"]
ttl = "1h"
[features.user_short.features]
n = { agg = "count", ttl = "10m" }
total = { agg = "count" }

[features.request]
source = "request"
[features.request.features]
hour = { agg = "hour_of_day" }
"#;

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;

pub(crate) fn set() -> FeatureSet {
    features(&format!("{DEFS}{EXTRA}"))
}

/// Where a suite's store lives, so it can be opened again.
enum Target {
    Embedded(PathBuf),
    Redis { url: String, prefix: String },
}

impl Target {
    async fn open(&self, set: FeatureSet) -> OnlineStore {
        match self {
            Target::Embedded(dir) => OnlineStore::embedded(dir, set).unwrap(),
            Target::Redis { url, prefix } => OnlineStore::redis(url, prefix, set).await.unwrap(),
        }
    }
}

/// Rows with every key part the views need: users, items and devices of the workload.
pub(crate) fn rows(n: usize) -> Vec<Entities> {
    (0..n)
        .map(|i| {
            Entities::user(format!("u{}", (i * 7) % 160))
                .with_item(format!("i{}", i % 45))
                .with_field("device", Value::String(format!("d{}", i % 23)))
        })
        .collect()
}

/// What the in-memory engine serves for every feature of every row.
fn expected(engine: &Engine, set: &FeatureSet, rows: &[Entities], at: i64) -> Vec<Vec<FeatureValue>> {
    rows.iter()
        .map(|row| {
            set.views().iter().flat_map(|v| engine.read_row(&v.name, row, Timestamp(at)).unwrap()).collect::<Vec<_>>()
        })
        .collect()
}

pub(crate) async fn assert_serves_engine(store: &OnlineStore, engine: &Engine, rows: &[Entities], at: i64, ctx: &str) {
    let set = store.features();
    let got = store.read(&set.all(), rows, Timestamp(at)).await.unwrap();
    let want = expected(engine, set, rows, at);
    let names: Vec<String> = set.columns(&set.all()).iter().map(|c| c.name()).collect();
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        for (c, (g, w)) in g.iter().zip(w).enumerate() {
            assert!(same(g, w), "{ctx}: row {r} {} at {at}: store {g:?}, engine {w:?}", names[c]);
        }
    }
}

/// The suite. `target` must hold no state yet.
async fn behaves(target: Target) {
    let set = set();
    let log = workload(900);
    let store = target.open(set.clone()).await;
    assert_eq!(store.next_offset(), 0);
    let mut engine = Engine::new(set.clone());

    // Unknown keys: not_found with the default, for every backend.
    let unknown = store.read(&set.select(&["user:n_10m", "user:last_card"]).unwrap(), &rows(1), Timestamp(0)).await;
    let unknown = unknown.unwrap();
    assert_eq!(unknown[0][0].status, Status::NotFound);
    assert_eq!(unknown[0][1].status, Status::NotFound);

    blobs_round_trip(&store).await;

    // Apply in uneven batches, comparing with the in-memory engine along the way, and log some
    // served vectors for the audit at the end.
    let (first, rest) = log.split_at(600);
    let mut offset = 0u64;
    let mut served: Vec<LoggedVector> = Vec::new();
    for (i, chunk) in first.chunks(37).enumerate() {
        let batch: Vec<(u64, Record)> = chunk.iter().enumerate().map(|(j, r)| (offset + j as u64, r.clone())).collect();
        for (o, r) in &batch {
            engine.apply(*o, r);
        }
        offset += batch.len() as u64;
        store.apply(&batch).await.unwrap();
        if i % 5 == 4 {
            let wm = store.stats().await.unwrap()[0].1.watermark.unwrap().0;
            assert_serves_engine(&store, &engine, &rows(40), wm, "while applying").await;
            let (rows, at) = (rows(40), Timestamp(wm + 7 * MIN));
            let read = store.read_served(&set.all(), &rows, at).await.unwrap();
            assert_eq!(read.offset, offset);
            let columns = set.columns(&set.all());
            served.extend((0..rows.len()).map(|r| LoggedVector::new(&columns, &rows, &read, r, at)));
        }
    }
    assert_eq!(store.next_offset(), 600);

    // Later reads with no writes: windows empty out, TTLs pass, keys expire.
    let rows = rows(160);
    let wm = store.stats().await.unwrap()[0].1.watermark.unwrap().0;
    for later in [0, 7 * MIN, 31 * MIN, 2 * H + 1, 26 * H] {
        assert_serves_engine(&store, &engine, &rows, wm + later, "reading later").await;
    }

    // One explicit window expiring without a write: a transaction of a fresh user.
    let t = wm + 1;
    let tx_at = [(offset, tx(t, "fresh", 3.0, Some("dx"), "cx"))];
    engine.apply(offset, &tx_at[0].1);
    store.apply(&tx_at).await.unwrap();
    offset += 1;
    let fresh = [Entities::user("fresh").with_item("i0").with_field("device", Value::String("dx".into()))];
    let n10 = set.select(&["user:n_10m"]).unwrap();
    let now = &store.read(&n10, &fresh, Timestamp(t)).await.unwrap()[0][0];
    assert_eq!((now.value.clone(), now.status), (Some(Value::Int(1)), Status::Present));
    let later = &store.read(&n10, &fresh, Timestamp(t + 11 * MIN)).await.unwrap()[0][0];
    assert_eq!((later.value.clone(), later.status), (Some(Value::Int(0)), Status::Present));
    assert_eq!(later.age, Some(std::time::Duration::from_millis((11 * MIN) as u64)));
    let short = set.select(&["user_short:n", "user_short:total"]).unwrap();
    let stale = &store.read(&short, &fresh, Timestamp(t + 11 * MIN)).await.unwrap()[0];
    assert_eq!((stale[0].value.clone(), stale[0].status), (Some(Value::Int(0)), Status::StaleOutsideTtl));
    assert_eq!((stale[1].value.clone(), stale[1].status), (Some(Value::Int(1)), Status::Present));
    let gone = &store.read(&n10, &fresh, Timestamp(t + 2 * H + 1)).await.unwrap()[0][0];
    assert_eq!(gone.status, Status::NotFound, "idle for longer than every TTL of its view");

    // A batch read of every feature of many entities is one round trip (Redis) or none.
    let before = store.round_trips();
    store.read(&set.all(), &rows, Timestamp(wm)).await.unwrap();
    let one = u64::from(store.backend() == FeaturesBackend::Redis);
    assert_eq!(store.round_trips() - before, one, "round trips of one batch read");

    // Counters: the same records dropped as late, stale reads counted.
    let stats = store.stats().await.unwrap();
    for (view, s) in &stats {
        let e = engine.stats(view).unwrap();
        assert_eq!(
            (s.late_dropped, s.missing_key, s.watermark),
            (e.late_dropped, e.missing_key, e.watermark),
            "{view}"
        );
    }
    assert!(stats.iter().map(|(_, s)| s.late_dropped).sum::<u64>() > 0, "the workload has late records");
    assert!(stats.iter().find(|(v, _)| v == "user_short").unwrap().1.stale_reads > 0);

    // Bad input: an offset gap, a row without a key part.
    let gap = store.apply(&[(offset + 5, tx(t, "u1", 1.0, None, "c"))]).await.unwrap_err();
    assert!(matches!(gap, FeatureError::OffsetGap { .. }), "{gap}");
    let no_device = [Entities::user("u1"), Entities::user("u2")];
    let err = store.read(&set.select(&["user", "device"]).unwrap(), &no_device, Timestamp(t)).await.unwrap_err();
    assert!(err.to_string().contains("entities[0]") && err.to_string().contains("`device`"), "{err}");

    // Reopen: the state resumes where it was (embedded from its checkpoint, Redis as stored).
    store.checkpoint().await.unwrap();
    assert_eq!(store.retention_floor(), offset);
    drop(store);
    let store = target.open(set.clone()).await;
    assert_eq!(store.next_offset(), offset);
    assert_serves_engine(&store, &engine, &rows, t, "after reopening").await;
    let batch: Vec<(u64, Record)> = rest.iter().enumerate().map(|(i, r)| (offset + i as u64, r.clone())).collect();
    for (o, r) in &batch {
        engine.apply(*o, r);
    }
    store.apply(&batch).await.unwrap();
    offset += batch.len() as u64;
    assert_serves_engine(&store, &engine, &rows, t + 5 * MIN, "after the rest").await;

    // Expiry: a record far later moves the watermarks; the sweep drops keys and no value changes.
    let far = [(offset, tx(t + 30 * H, "late_user", 1.0, Some("d0"), "c0"))];
    engine.apply(offset, &far[0].1);
    store.apply(&far).await.unwrap();
    let held = |s: &[(String, cascade_features::ViewStats)]| s.iter().map(|(_, v)| v.entities).sum::<usize>();
    let before = held(&store.stats().await.unwrap());
    let swept = store.checkpoint().await.unwrap();
    assert!(swept > 0, "keys idle for longer than their TTLs are swept");
    assert_eq!(held(&store.stats().await.unwrap()), before - swept);
    assert_serves_engine(&store, &engine, &rows, t + 30 * H, "after the sweep").await;

    // The audit recomputes every served vector from the log prefix its state reflected: the
    // later records (some of them late, with earlier event times) change nothing.
    let mut full = log[..600].to_vec();
    full.push(tx_at[0].1.clone());
    full.extend(rest.iter().cloned());
    full.push(far[0].1.clone());
    let replay = || full.iter().cloned().enumerate().map(|(i, r)| Ok((i as u64, r)));
    let report = audit(&set, &served, replay).unwrap();
    assert_eq!(report.values, served.len() * set.all().len());
    assert!(report.mismatches.is_empty(), "{:?}", &report.mismatches[..report.mismatches.len().min(3)]);
    // A vector that was served wrong is caught.
    let hit = served.iter().position(|v| v.values[0].status == Status::Present).expect("a present value");
    served[hit].values[0].value = json!(12345.5);
    let report = audit(&set, &served, replay).unwrap();
    assert_eq!(report.mismatches.len(), 1);
    assert_eq!((report.mismatches[0].vector, report.mismatches[0].feature.as_str()), (hit, "device:users"));

    // What a reader yields when the store's quarantine hid records: gaps inside the range read
    // and a hidden tail move the state to the range's end; offsets outside it are refused.
    let next = store.next_offset();
    let record = tx(t + 30 * H, "after_gap", 1.0, Some("d0"), "c0");
    let outside = store.apply_through(&[(next + 5, record.clone())], next + 3).await.unwrap_err();
    assert!(matches!(outside, FeatureError::OffsetGap { .. }), "{outside}");
    store.apply_through(&[(next + 1, record.clone())], next + 4).await.unwrap();
    engine.apply(next + 1, &record);
    assert_eq!(store.next_offset(), next + 4);
    store.apply_through(&[], next + 6).await.unwrap();
    assert_eq!(store.next_offset(), next + 6, "a wholly hidden range still moves the state");
    let behind = store.apply_through(&[(next + 2, record)], next + 8).await.unwrap_err();
    assert!(matches!(behind, FeatureError::OffsetGap { .. }), "{behind}");
    assert_serves_engine(&store, &engine, &rows, t + 30 * H, "after hidden records").await;

    // Other definitions: the state is not reused.
    drop(store);
    let other = features(DEFS);
    let store = target.open(other).await;
    assert_eq!(store.next_offset(), 0, "state built under other definitions starts afresh");
    store.clear().await.unwrap();
}

#[tokio::test]
async fn embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    behaves(Target::Embedded(dir.path().to_path_buf())).await;
}

/// Deletes the test's keys even when the suite panics.
struct Cleanup {
    url: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(mut con) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) else { return };
        for pattern in [format!("{}:*", self.prefix), format!("{}#*", self.prefix)] {
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg(&pattern).query(&mut con).unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut con);
            }
        }
    }
}

/// Blobs: what was put is read back byte for byte in one round trip, a name put again holds the
/// newer bytes, names never put and blobs past their TTL read as `None`.
async fn blobs_round_trip(store: &OnlineStore) {
    let names = |ns: &[&str]| ns.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let long = std::time::Duration::from_secs(60);
    let entries = vec![("lists:1:bpr:u1".to_string(), vec![1, 2, 3]), ("lists:1:bpr:u2".to_string(), vec![0; 2400])];
    store.put_blobs(&entries, long).await.unwrap();
    let trips = store.round_trips();
    let got = store.get_blobs(&names(&["lists:1:bpr:u2", "nothing", "lists:1:bpr:u1"])).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].as_deref(), Some(&[0u8; 2400][..]));
    assert_eq!(got[1], None);
    assert_eq!(got[2].as_deref(), Some(&[1u8, 2, 3][..]));
    if store.backend() == FeaturesBackend::Redis {
        assert_eq!(store.round_trips(), trips + 1, "one MGET");
    }
    store.put_blobs(&[("lists:1:bpr:u1".to_string(), vec![9])], long).await.unwrap();
    store.put_blobs(&[("short".to_string(), vec![7])], std::time::Duration::from_millis(30)).await.unwrap();
    let got = store.get_blobs(&names(&["lists:1:bpr:u1", "short"])).await.unwrap();
    assert_eq!(got[0].as_deref(), Some(&[9u8][..]));
    assert_eq!(got[1].as_deref(), Some(&[7u8][..]));
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    let got = store.get_blobs(&names(&["lists:1:bpr:u1", "short"])).await.unwrap();
    assert_eq!(got[0].as_deref(), Some(&[9u8][..]));
    assert_eq!(got[1], None, "expired");
    assert!(store.get_blobs(&[]).await.unwrap().is_empty());
}

/// The Redis to test against, or `None` (with a loud message) when none answers and
/// `CASCADE_REQUIRE_REDIS` is unset. `.ci/run` starts Redis and sets `CASCADE_REQUIRE_REDIS=1`, so
/// in CI an unreachable Redis fails the test; on a bare machine `cargo test` still passes.
pub fn redis_url() -> Option<String> {
    let url = std::env::var("CASCADE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection_with_timeout(std::time::Duration::from_secs(2)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    match reachable {
        Ok(_) => Some(url),
        Err(e) if std::env::var("CASCADE_REQUIRE_REDIS").is_ok_and(|v| !v.is_empty() && v != "0") => panic!(
            "Redis is not reachable at {url} ({e}). The Redis backend tests need a server: run \
             `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no` \
             (or `bash .ci/run`, which starts one), or set CASCADE_TEST_REDIS_URL."
        ),
        Err(e) => {
            eprintln!(
                "SKIPPED: Redis is not reachable at {url} ({e}); the Redis backend was not tested. \
                 Start redis-server or set CASCADE_REQUIRE_REDIS=1 to make this a failure."
            );
            None
        }
    }
}

pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("cascade-test:{name}:{}:{nanos}", std::process::id())
}

#[tokio::test]
async fn redis_backend() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("online-store");
    let _cleanup = Cleanup { url: url.clone(), prefix: prefix.clone() };
    behaves(Target::Redis { url, prefix }).await;
}

#[tokio::test]
async fn redis_unreachable_is_an_unavailable_error() {
    let err = OnlineStore::redis("redis://127.0.0.1:1", "x", set()).await.unwrap_err();
    assert_eq!(err.kind(), cascade_features::ErrorKind::Unavailable, "{err}");
}
