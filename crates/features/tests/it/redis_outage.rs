//! The Redis backend through outages, each test against its own `redis-server` on a free port
//! (`cascade_testkit::redis_server`; skipped loudly when the binary is missing, a failure under
//! `CASCADE_REQUIRE_REDIS=1`): a killed connection, a killed and restarted (empty) server, a
//! paused server, and writes whose answer was lost. Every test ends with the store serving what
//! the in-memory engine serves on the same log: nothing lost, nothing applied twice.

use crate::checkpoint::workload;
use crate::online_store::{assert_serves_engine, rows, set};
use cascade_core::{Record, Timestamp};
use cascade_features::{Engine, ErrorKind, FeatureError, OnlineStore};
use cascade_testkit::redis_server::PrivateRedis;
use std::future::Future;
use std::time::Duration;

/// Short, so a paused server costs the test little; the store's behaviour does not depend on it.
const TIMEOUT: Duration = Duration::from_millis(500);

/// Records `from..to` of `log` with their offsets.
fn batch(log: &[Record], from: usize, to: usize) -> Vec<(u64, Record)> {
    (from..to).map(|i| (i as u64, log[i].clone())).collect()
}

struct Fixture {
    store: OnlineStore,
    engine: Engine,
    log: Vec<Record>,
}

impl Fixture {
    /// A store on `redis` with the first `applied` records of a workload applied.
    async fn new(redis: &PrivateRedis, prefix: &str, applied: usize) -> Fixture {
        let store = OnlineStore::redis_with_timeout(&redis.url(), prefix, TIMEOUT, set()).await.unwrap();
        let mut f = Fixture { store, engine: Engine::new(set()), log: workload(400) };
        f.apply_to_engine(0, applied);
        f.store.apply(&batch(&f.log, 0, applied)).await.unwrap();
        f.assert_serves_engine("before the outage").await;
        f
    }

    fn apply_to_engine(&mut self, from: usize, to: usize) {
        for (o, r) in batch(&self.log, from, to) {
            self.engine.apply(o, &r);
        }
    }

    async fn assert_serves_engine(&self, ctx: &str) {
        let at = self.engine.stats("user").unwrap().watermark.map_or(0, |t| t.0);
        assert_serves_engine(&self.store, &self.engine, &rows(60), at, ctx).await;
    }

    async fn read(&self) -> Result<Vec<Vec<cascade_features::FeatureValue>>, FeatureError> {
        let set = self.store.features();
        self.store.read(&set.all(), &rows(5), Timestamp(0)).await
    }
}

/// Repeats `op` (50 ms apart, at most 400 times) while it fails as unavailable; returns the first
/// other outcome.
async fn while_unavailable<T, Fut>(mut op: impl FnMut() -> Fut) -> Result<T, FeatureError>
where
    Fut: Future<Output = Result<T, FeatureError>>,
{
    for _ in 0..400 {
        match op().await {
            Err(e) if e.kind() == ErrorKind::Unavailable && !matches!(e, FeatureError::StateMoved { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    panic!("still unavailable after 400 tries");
}

#[tokio::test]
async fn a_killed_connection_is_reestablished_for_reads_and_writes() {
    let Some(redis) =
        PrivateRedis::start("a_killed_connection_is_reestablished_for_reads_and_writes", redis_required())
    else {
        return;
    };
    let mut f = Fixture::new(&redis, "kill", 200).await;
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert_eq!(killed, ":1", "the store's one connection was killed");
    // The next read: the dropped connection is noticed, re-established and the read retried.
    f.assert_serves_engine("the read after CLIENT KILL").await;
    assert_eq!(redis.command(&["CLIENT", "KILL", "TYPE", "normal"]), ":1");
    f.store.apply(&batch(&f.log, 200, 300)).await.expect("the write after CLIENT KILL");
    f.apply_to_engine(200, 300);
    f.assert_serves_engine("after the write").await;
    assert_eq!(f.store.down(), None, "never seen down: the retry hid the dropped connection");
}

#[tokio::test]
async fn a_restarted_empty_redis_is_noticed_and_the_state_rebuilt_from_the_log() {
    let Some(mut redis) =
        PrivateRedis::start("a_restarted_empty_redis_is_noticed_and_the_state_rebuilt_from_the_log", redis_required())
    else {
        return;
    };
    let mut f = Fixture::new(&redis, "restart", 200).await;
    redis.kill();
    let err = f.read().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let down = f.store.down().expect("the store knows Redis is down");
    assert!(down.contains("redis has not answered"), "{down}");
    // While down, operations fail at once (one a second is tried).
    let fast = f.read().await.unwrap_err();
    assert!(matches!(fast, FeatureError::RedisDown { .. }), "{fast}");

    redis.restart();
    // The tail's next batch finds the meta gone: nothing is written over the empty Redis, and the
    // store starts again from offset 0.
    let next = batch(&f.log, 200, 250);
    let moved = while_unavailable(|| f.store.apply(&next)).await.unwrap_err();
    assert!(matches!(moved, FeatureError::StateMoved { expected: 200, found: 0, .. }), "{moved}");
    assert_eq!(f.store.down(), None);
    assert_eq!(f.store.reconnects(), 1);
    assert_eq!(f.store.next_offset(), 0);
    assert_eq!(f.store.catching_up(), Some((0, 200)), "reads wait until the state is back at 200");
    let waiting = f.read().await.unwrap_err();
    assert!(matches!(waiting, FeatureError::CatchingUp { at: 0, to: 200 }), "{waiting}");

    // The tail replays from where the store now is.
    f.store.apply(&batch(&f.log, 0, 250)).await.unwrap();
    f.apply_to_engine(200, 250);
    assert_eq!(f.store.catching_up(), None);
    f.assert_serves_engine("after the rebuild").await;
}

#[tokio::test]
async fn a_probe_notices_a_restart_without_writes_and_reads_wait_for_the_rebuild() {
    let Some(mut redis) = PrivateRedis::start("a_probe_notices_a_restart_without_writes", redis_required()) else {
        return;
    };
    let f = Fixture::new(&redis, "probe", 150).await;
    redis.restart();
    // No write: a read finds the meta gone (or the probe does) and the state is rebuilt.
    let err = while_unavailable(|| f.read()).await.unwrap_err();
    assert!(matches!(err, FeatureError::StateMoved { expected: 150, found: 0, .. }), "{err}");
    assert_eq!(f.store.probe().await.map_err(|e| e.to_string()), Ok(()), "nothing moved since");
    assert_eq!(f.store.catching_up(), Some((0, 150)));
    f.store.apply(&batch(&f.log, 0, 150)).await.unwrap();
    f.assert_serves_engine("after the rebuild").await;
}

#[tokio::test]
async fn a_paused_redis_fails_fast_with_unavailable_then_recovers_without_double_applying() {
    let Some(redis) = PrivateRedis::start("a_paused_redis_fails_fast_with_unavailable", redis_required()) else {
        return;
    };
    let mut f = Fixture::new(&redis, "pause", 200).await;
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "3000", "ALL"]), "+OK");
    // A write during the pause times out; Redis may still run it when the pause ends.
    let err = f.store.apply(&batch(&f.log, 200, 250)).await.unwrap_err();
    assert!(matches!(err, FeatureError::RedisTimeout(t) if t == TIMEOUT), "{err}");
    let err = f.read().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(f.store.down().is_some());

    // Reads come back once the pause is over.
    while_unavailable(|| f.read()).await.unwrap();
    assert_eq!(f.store.down(), None);
    assert!(f.store.reconnects() >= 1);
    // The tail offers the same records again: whether or not the timed-out write ran, they are
    // applied exactly once.
    f.store.apply(&batch(&f.log, 200, 250)).await.unwrap();
    f.apply_to_engine(200, 250);
    assert_eq!(f.store.next_offset(), 250);
    f.assert_serves_engine("after the pause").await;
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_not_applied_twice() {
    let Some(redis) = PrivateRedis::start("a_write_whose_answer_was_lost_is_not_applied_twice", redis_required())
    else {
        return;
    };
    // `lost` believes it is at offset 100 while Redis got a later write: what a process sees when
    // its write ran but the answer timed out. (A second store plays the write.)
    let mut f = Fixture::new(&redis, "lost", 100).await;
    let lost = OnlineStore::redis_with_timeout(&redis.url(), "lost", TIMEOUT, set()).await.unwrap();
    assert_eq!(lost.next_offset(), 100);
    f.store.apply(&batch(&f.log, 100, 150)).await.unwrap();
    f.apply_to_engine(100, 150);

    // The same batch again: Redis already holds exactly its result, so it counts as written.
    lost.apply(&batch(&f.log, 100, 150)).await.unwrap();
    assert_eq!(lost.next_offset(), 150);
    f.store.apply(&batch(&f.log, 150, 180)).await.unwrap();
    f.apply_to_engine(150, 180);
    // A longer batch: Redis is elsewhere; the store continues from Redis's offset instead.
    let moved = lost.apply(&batch(&f.log, 150, 200)).await.unwrap_err();
    assert!(matches!(moved, FeatureError::StateMoved { expected: 150, found: 180, .. }), "{moved}");
    assert_eq!((lost.next_offset(), lost.catching_up()), (180, None));
    lost.apply(&batch(&f.log, 180, 200)).await.unwrap();
    f.apply_to_engine(180, 200);
    let at = f.engine.stats("user").unwrap().watermark.unwrap().0;
    assert_serves_engine(&lost, &f.engine, &rows(60), at, "applied once").await;
}

#[tokio::test]
async fn reads_wait_while_the_embedded_state_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = OnlineStore::embedded(dir.path(), set()).unwrap();
    let log = workload(100);
    store.catch_up_to(100);
    assert_eq!(store.catching_up(), Some((0, 100)));
    let err = store.read(&store.features().all(), &rows(3), Timestamp(0)).await.unwrap_err();
    assert!(matches!(err, FeatureError::CatchingUp { at: 0, to: 100 }), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    store.apply(&batch(&log, 0, 60)).await.unwrap();
    assert_eq!(store.catching_up(), Some((60, 100)));
    store.apply(&batch(&log, 60, 100)).await.unwrap();
    assert_eq!(store.catching_up(), None);
    store.read(&store.features().all(), &rows(3), Timestamp(0)).await.unwrap();
    store.catch_up_to(50);
    assert_eq!(store.catching_up(), None, "the target never goes down");
}

/// `CASCADE_REQUIRE_REDIS=1` (CI) turns a missing `redis-server` from a skip into a failure.
fn redis_required() -> bool {
    std::env::var("CASCADE_REQUIRE_REDIS").is_ok_and(|v| !v.is_empty() && v != "0")
}
