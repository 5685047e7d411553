//! A node on a Redis feature store through outages, each test with its own `redis-server` on a
//! free port (`cascade_testkit::redis_server`; skipped loudly when the binary is missing, a
//! failure under `CASCADE_REQUIRE_REDIS=1`): `/v1/features` and readiness follow Redis down and
//! back without a restart, the feature tail resumes, and readiness waits for the online feature
//! state to catch up with the log after a start.

use crate::TestServer;
use cascade_core::Config;
use cascade_features::{FeaturesBackend, FeaturesStoreConfig};
use cascade_testkit::redis_server::PrivateRedis;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DEFS: &str = r#"
[features.user_tx]
entity = "user"
events = ["transaction"]
ttl = "1day"
[features.user_tx.features]
tx_1h = { agg = "count", window = "1h", tile = "1m" }
"#;

fn config(redis: &PrivateRedis, prefix: &str, timeout: Duration, readiness: bool) -> Config {
    let mut c = Config::from_toml(DEFS, "test.toml").unwrap();
    let mut store = FeaturesStoreConfig::from_config(&c).unwrap();
    store.backend = FeaturesBackend::Redis;
    store.redis_url = redis.url();
    store.redis_prefix = prefix.into();
    store.redis_timeout = timeout;
    store.ready_requires_online_store = readiness;
    c.set(&store).unwrap();
    c
}

async fn post_transactions(s: &TestServer, n: usize) {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let batch: Vec<Value> = (0..n)
        .map(|i| {
            json!({"type": "transaction", "ts": t - 1_000 + i as i64, "user": "u1",
                   "fields": {"amount": 1.0, "currency": "EUR", "device": "d1"}})
        })
        .collect();
    assert_eq!(s.post_events(&json!(batch)).await.0, 200);
}

/// `POST /v1/features` for u1's count: the status and the body.
async fn count(s: &TestServer) -> (u16, Value) {
    let body = json!({"entities": [{"user": "u1"}], "features": ["user_tx:tx_1h"]});
    s.post_raw("/v1/features", "application/json", body.to_string()).await
}

/// Polls (every 25 ms, at most 800 times) until `done` holds for `GET path`; returns the last answer.
async fn poll(s: &TestServer, path: &str, what: &str, done: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let mut last = (0, Value::Null);
    for _ in 0..800 {
        let (status, body) = s.get(path).await;
        last = (status, serde_json::from_str(&body).unwrap_or(Value::String(body)));
        if done(last.0, &last.1) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: never happened; last answer {last:?}");
}

/// Reads u1's count until it is `n` (the feature tail applies records in the background).
async fn wait_for_count(s: &TestServer, n: i64) {
    for _ in 0..800 {
        let (status, got) = count(s).await;
        if status == 200 && got["results"][0]["values"][0]["value"] == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("u1's count never reached {n}: {:?}", count(s).await);
}

#[tokio::test]
async fn features_and_readiness_follow_redis_down_and_back_without_a_restart() {
    let Some(mut redis) =
        PrivateRedis::start("features_and_readiness_follow_redis_down_and_back_without_a_restart", redis_required())
    else {
        return;
    };
    let s = TestServer::with_config(config(&redis, "node-outage", Duration::from_millis(300), true)).await;
    post_transactions(&s, 3).await;
    wait_for_count(&s, 3).await;
    assert_eq!(s.get("/v2/health/ready").await.0, 200);

    // A killed connection: the next read is served.
    assert_eq!(redis.command(&["CLIENT", "KILL", "TYPE", "normal"]), ":1");
    let (status, got) = count(&s).await;
    assert_eq!((status, &got["results"][0]["values"][0]["value"]), (200, &json!(3)), "{got}");

    // Redis gone: readiness says so (the probe notices with no request), reads answer 503.
    redis.kill();
    let (_, health) = poll(&s, "/v2/health/ready", "readiness 503 while Redis is down", |st, _| st == 503).await;
    assert_eq!(health["status"], "unavailable", "{health}");
    let reason = health["reason"].as_str().unwrap();
    assert!(reason.contains("the online feature store is down") && reason.contains("redis"), "{reason}");
    let (status, got) = count(&s).await;
    assert_eq!((status, got["error"]["code"].as_str()), (503, Some("feature_store_unavailable")), "{got}");
    let (_, metrics) = s.get("/metrics").await;
    for needle in ["cascade_feature_store_up ", "cascade_feature_store_reconnects_total "] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // Back, empty: the state is rebuilt from the log, then the node is ready and serves it.
    redis.restart();
    poll(&s, "/v2/health/ready", "readiness 200 after Redis is back", |st, _| st == 200).await;
    let (status, got) = count(&s).await;
    assert_eq!((status, &got["results"][0]["values"][0]["value"]), (200, &json!(3)), "{got}");
    // The tail goes on with new records.
    post_transactions(&s, 1).await;
    wait_for_count(&s, 4).await;
    let (_, jobs) = s.get("/v2/health/jobs").await;
    assert!(jobs.contains("feature-store-probe"), "{jobs}");
    s.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_the_feature_state_to_catch_up_after_a_start() {
    let Some(redis) =
        PrivateRedis::start("readiness_waits_for_the_feature_state_to_catch_up_after_a_start", redis_required())
    else {
        return;
    };
    let s = TestServer::with_config(config(&redis, "node-first", Duration::from_secs(60), true)).await;
    post_transactions(&s, 5).await;
    wait_for_count(&s, 5).await;
    let dir = s.stop().await;

    // Restarted on a new prefix (an empty state to build from the log's 5 records) while Redis
    // holds writes: the tail cannot apply, and the timeout is long enough that Redis is not
    // seen down meanwhile.
    assert_eq!(redis.command(&["CLIENT", "PAUSE", "600000", "WRITE"]), "+OK");
    let s = TestServer::with_dir(config(&redis, "node-second", Duration::from_secs(60), true), dir).await;
    let (_, health) = poll(&s, "/v2/health/ready", "readiness 503 while catching up", |st, _| st == 503).await;
    assert_eq!(health["status"], "starting", "{health}");
    let reason = health["reason"].as_str().unwrap();
    assert!(reason.contains("the online feature state is at offset 0 of 5"), "{reason}");
    let (status, got) = count(&s).await;
    assert_eq!((status, got["error"]["code"].as_str()), (503, Some("feature_store_unavailable")), "{got}");
    assert!(got["error"]["message"].as_str().unwrap().contains("catching up"), "{got}");

    assert_eq!(redis.command(&["CLIENT", "UNPAUSE"]), "+OK");
    poll(&s, "/v2/health/ready", "readiness 200 once caught up", |st, _| st == 200).await;
    let (status, got) = count(&s).await;
    assert_eq!((status, &got["results"][0]["values"][0]["value"]), (200, &json!(5)), "{got}");
    s.stop().await;
}

#[tokio::test]
async fn readiness_can_be_told_to_ignore_the_online_store() {
    let Some(mut redis) = PrivateRedis::start("readiness_can_be_told_to_ignore_the_online_store", redis_required())
    else {
        return;
    };
    let s = TestServer::with_config(config(&redis, "node-ignore", Duration::from_millis(300), false)).await;
    post_transactions(&s, 1).await;
    wait_for_count(&s, 1).await;
    redis.kill();
    // Once the store knows Redis is down (reads answer 503), readiness still answers 200.
    for _ in 0..800 {
        if count(&s).await.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(count(&s).await.0, 503);
    let (status, body) = s.get("/v2/health/ready").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    s.stop().await;
}

/// `CASCADE_REQUIRE_REDIS=1` (CI) turns a missing `redis-server` from a skip into a failure.
fn redis_required() -> bool {
    std::env::var("CASCADE_REQUIRE_REDIS").is_ok_and(|v| !v.is_empty() && v != "0")
}
