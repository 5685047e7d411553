//! Checkpoints: round trip, refusal of damaged or unknown files, rebuild on changed definitions.

use crate::{features, play, tx};
use cascade_core::{Record, Timestamp};
use cascade_features::{CHECKPOINT_FILE, Entities, FeatureError, OnlineEngine};
use cascade_store::{Store, StoreOptions};

pub const DEFS: &str = r#"
[features.user]
entity = "user"
events = ["transaction", "play"]
ttl = "2h"
allowed_lateness = "1m"
[features.user.features]
n_10m = { agg = "count", window = "10m", tile = "1m" }
amount = { agg = "sum", field = "amount", events = ["transaction"] }
max_5m = { agg = "max", field = "amount", window = "5m", tile = "30s" }
cards = { agg = "distinct_count", field = "card", window = "30m", tile = "1m", max_distinct = 4 }
last_card = { agg = "last", field = "card" }
recent = { agg = "last_n", field = "item", n = 3 }
decayed = { agg = "decayed_count", half_life = "10m" }
since = { agg = "time_since_last" }
share = { agg = "ratio", numerator = "n_10m", denominator = "decayed" }

[features.device]
entity = "device"
events = ["transaction"]
ttl = "30m"
[features.device.features]
users = { agg = "distinct_count", field = "user", window = "10m", tile = "1m" }
"#;

/// A deterministic log: users, devices, cards and items drawn from a simple generator, times
/// mostly increasing with some records late (a few beyond the allowed lateness).
pub fn workload(n: usize) -> Vec<Record> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let r = next();
            let jitter = match r % 10 {
                0 => -(((r >> 8) % 120_000) as i64),
                1 => -(((r >> 8) % 15_000) as i64),
                _ => 0,
            };
            let ts = (i as i64 * 2_000 + jitter).max(0);
            let user = format!("u{}", (r >> 16) % 150);
            if (r >> 24) % 3 == 0 {
                play(ts, &user, &format!("i{}", (r >> 32) % 40), None)
            } else {
                let device = ((r >> 40) % 5 != 0).then(|| format!("d{}", (r >> 44) % 20));
                let amount = ((r >> 48) % 500) as f64 / 4.0;
                tx(ts, &user, amount, device.as_deref(), &format!("c{}", (r >> 56) % 9))
            }
        })
        .collect()
}

pub fn rows() -> Vec<Entities> {
    let mut rows = Vec::new();
    for u in 0..151 {
        rows.push(
            Entities::user(format!("u{u}")).with_field("device", cascade_core::Value::String(format!("d{}", u % 21))),
        );
    }
    rows
}

/// Every view for every row at several instants, from two engines: must be identical.
pub fn assert_same_reads(a: &OnlineEngine, b: &OnlineEngine, end: i64) {
    for at in [0, end - 60_000, end, end + 5 * 60_000, end + 40 * 60_000, end + 3 * 3_600_000] {
        for row in rows() {
            for view in ["user", "device"] {
                let (x, y) =
                    (a.read_row(view, &row, Timestamp(at)).unwrap(), b.read_row(view, &row, Timestamp(at)).unwrap());
                assert_eq!(x, y, "{view} {row:?} at {at}");
            }
        }
    }
    for view in ["user", "device"] {
        let (x, y) = (a.stats(view).unwrap(), b.stats(view).unwrap());
        assert_eq!((x.late_dropped, x.missing_key, x.watermark), (y.late_dropped, y.missing_key, y.watermark));
    }
}

#[test]
fn checkpoint_round_trips_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let log = workload(3000);
    let mut a = OnlineEngine::open(dir.path(), features(DEFS)).unwrap();
    for (i, r) in log[..1700].iter().enumerate() {
        a.apply(i as u64, r).unwrap();
    }
    a.checkpoint().unwrap();
    let mut b = OnlineEngine::open(dir.path(), features(DEFS)).unwrap();
    assert_eq!(b.next_offset(), 1700);
    for (i, r) in log.iter().enumerate().skip(1700) {
        a.apply(i as u64, r).unwrap();
        b.apply(i as u64, r).unwrap();
    }
    let end = log.iter().map(|r| r.ts().0).max().unwrap();
    assert_same_reads(&a, &b, end);
    assert!(a.stats("user").unwrap().late_dropped > 0, "the workload has records beyond the lateness");
    assert!(a.stats("device").unwrap().missing_key > 0, "and transactions without a device");
    // Applying out of order is refused.
    assert!(matches!(b.apply(5, &log[0]), Err(FeatureError::OffsetGap { expected: 3000, got: 5 })));
}

#[test]
fn damaged_or_unknown_checkpoints_are_refused_and_new_definitions_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = OnlineEngine::open(dir.path(), features(DEFS)).unwrap();
    for (i, r) in workload(200).iter().enumerate() {
        e.apply(i as u64, r).unwrap();
    }
    e.checkpoint().unwrap();
    let path = dir.path().join(CHECKPOINT_FILE);
    let good = std::fs::read(&path).unwrap();

    let mut bad = good.clone();
    bad[40] ^= 0x55;
    std::fs::write(&path, &bad).unwrap();
    let err = OnlineEngine::open(dir.path(), features(DEFS)).unwrap_err();
    assert!(matches!(err, FeatureError::Corrupt { .. }) && err.to_string().contains("checksum"), "{err}");

    // A format version this build does not know, with a valid checksum.
    let mut future = good.clone();
    future[8..12].copy_from_slice(&99u32.to_le_bytes());
    let body = future.len() - 4;
    let crc = crc32c::crc32c(&future[..body]);
    future[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &future).unwrap();
    let err = OnlineEngine::open(dir.path(), features(DEFS)).unwrap_err().to_string();
    assert!(err.contains("format version 99"), "{err}");

    std::fs::write(&path, &good).unwrap();
    assert_eq!(OnlineEngine::open(dir.path(), features(DEFS)).unwrap().next_offset(), 200);
    let changed = DEFS.replace("n = 3", "n = 4");
    assert_eq!(OnlineEngine::open(dir.path(), features(&changed)).unwrap().next_offset(), 0, "rebuilt from the log");
}

#[test]
fn catches_up_from_the_store_and_rebuilds_when_ahead_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.append_blocking(&workload(500)).unwrap();
    let mut e = OnlineEngine::open(dir.path(), features(DEFS)).unwrap();
    assert_eq!(e.catch_up_store(&store, 120).unwrap(), 120);
    assert_eq!(e.catch_up_store(&store, usize::MAX).unwrap(), 380);
    assert_eq!(e.catch_up_store(&store, usize::MAX).unwrap(), 0);
    e.checkpoint().unwrap();
    store.close().unwrap();
    drop(store);

    // The same checkpoint over a shorter log (as after losing an unsynced tail): rebuilt.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join(CHECKPOINT_FILE), other.path().join(CHECKPOINT_FILE)).unwrap();
    let store = Store::open(other.path(), StoreOptions::default()).unwrap();
    store.append_blocking(&workload(100)).unwrap();
    let mut e = OnlineEngine::open(other.path(), features(DEFS)).unwrap();
    assert_eq!(e.next_offset(), 500);
    assert_eq!(e.catch_up_store(&store, usize::MAX).unwrap(), 100);
    assert_eq!(e.next_offset(), 100);
}
