//! `POST /v1/features` end to end: events in through `/v1/events`, applied by the server's tail
//! task, served with value, event time, age and status; bad requests refused with stable codes;
//! freshness on `/metrics`. Served from both backends.

use crate::{TestServer, now_ms};
use cascade_core::Config;
use cascade_features::{FeaturesBackend, FeaturesStoreConfig};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DEFS: &str = r#"
[features.user_tx]
entity = "user"
events = ["transaction"]
ttl = "1day"
allowed_lateness = "3h"
[features.user_tx.features]
tx_1h = { agg = "count", window = "1h", tile = "1m", ttl = "1h" }
amount_1h = { agg = "sum", field = "amount", window = "1h", tile = "1m" }
last_device = { agg = "last", field = "device", default = "none" }

[features.device]
entity = "device"
events = ["transaction"]
ttl = "1day"
[features.device.features]
users_1h = { agg = "distinct_count", field = "user", window = "1h", tile = "1m" }

[features.request]
source = "request"
[features.request.features]
weekday = { agg = "day_of_week" }
"#;

fn tx(ts: i64, user: &str, amount: f64, device: &str) -> Value {
    json!({"type": "transaction", "ts": ts, "user": user,
           "fields": {"amount": amount, "currency": "EUR", "device": device}})
}

async fn read(s: &TestServer, body: &Value) -> (u16, Value) {
    s.post_raw("/v1/features", "application/json", body.to_string()).await
}

/// Reads until the tail task has applied `count` transactions of `u1` (it polls every 50 ms).
async fn wait_for(s: &TestServer, count: i64) -> Value {
    let body = json!({"entities": [{"user": "u1", "fields": {"device": "d1"}}, {"user": "u2", "fields": {"device": "d2"}},
                                   {"user": "nobody", "fields": {"device": "d9"}}],
                      "features": ["user_tx", "device:users_1h", "request:weekday"]});
    for _ in 0..200 {
        let (status, got) = read(s, &body).await;
        assert_eq!(status, 200, "{got}");
        if got["results"][0]["values"][2]["value"] == count {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the feature state never caught up with the log");
}

async fn serves_features(config: Config) {
    let s = TestServer::with_config(config.clone()).await;
    let t = now_ms();
    // u2's only transaction is two hours old: its 1 h count is stale; log order keeps it admitted.
    let batch = json!([
        tx(t - 2 * 3_600_000, "u2", 9.0, "d2"),
        tx(t - 60_000, "u1", 10.0, "d1"),
        tx(t - 1_000, "u1", 2.5, "d1"),
    ]);
    assert_eq!(s.post_events(&batch).await.0, 200);
    let got = wait_for(&s, 2).await;

    assert_eq!(
        got["features"],
        json!(["user_tx:amount_1h", "user_tx:last_device", "user_tx:tx_1h", "device:users_1h", "request:weekday"])
    );
    let u1 = &got["results"][0]["values"];
    assert_eq!((&u1[0]["value"], &u1[0]["status"]), (&json!(12.5), &json!("present")));
    assert_eq!((&u1[1]["value"], &u1[2]["value"], &u1[3]["value"]), (&json!("d1"), &json!(2), &json!(1)));
    let age = u1[2]["age_ms"].as_u64().unwrap();
    assert!((1_000..60_000).contains(&age), "age of the newest transaction: {age}");
    assert!(u1[2]["event_time"].as_str().unwrap().ends_with('Z'));
    let u2 = &got["results"][1]["values"];
    assert_eq!((&u2[2]["value"], &u2[2]["status"]), (&json!(0), &json!("stale_outside_ttl")));
    let nobody = &got["results"][2]["values"];
    assert_eq!((&nobody[1]["value"], &nobody[1]["status"]), (&json!("none"), &json!("not_found")));
    assert!(nobody[1].get("age_ms").is_none());
    assert_eq!(nobody[4]["status"], "present", "request features need no state");

    // Freshness on /metrics (the recorder is shared by every server of this test process, so
    // only the names are checked, not the lag values).
    let (_, metrics) = s.get("/metrics").await;
    for needle in [
        "cascade_feature_value_age_seconds_bucket{view=\"user_tx\",le=\"60\"}",
        "cascade_feature_engine_lag_events ",
        "cascade_feature_engine_lag_seconds ",
        "cascade_feature_stale_reads_total{view=\"user_tx\"}",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // Bad requests: stable codes, the field named.
    let cases = [
        (
            json!({"entities": [{"user": "u1"}], "features": ["user_tx:tx_1h", "user_tx:nope"]}),
            400,
            "unknown_feature",
            "features[1]",
        ),
        (json!({"entities": [{"user": "u1"}], "features": ["nothing"]}), 400, "unknown_feature", "features[0]"),
        (json!({"entities": [], "features": ["user_tx"]}), 400, "invalid_feature_request", "entities"),
        (json!({"entities": [{"user": "u1"}], "features": []}), 400, "invalid_feature_request", "features"),
        (
            json!({"entities": [{"user": "u1"}, {"item": "i"}], "features": ["user_tx"]}),
            400,
            "invalid_feature_request",
            "entities[1].user",
        ),
        (
            json!({"entities": [{"user": "u1"}], "features": ["device"]}),
            400,
            "invalid_feature_request",
            "entities[0].device",
        ),
        (
            json!({"entities": [{"user": "u1", "fields": {"device": [1]}}], "features": ["device"]}),
            400,
            "invalid_feature_request",
            "entities[0].fields.device",
        ),
    ];
    for (body, status, code, field) in cases {
        let (got_status, got) = read(&s, &body).await;
        assert_eq!((got_status, got["error"]["code"].as_str().unwrap()), (status, code), "{body} -> {got}");
        assert_eq!(got["error"]["details"][0]["field"], field, "{body} -> {got}");
    }
    let (status, got) = read(&s, &json!({"entities": [{"user": "u1"}], "feature": ["user_tx"]})).await;
    assert_eq!((status, got["error"]["code"].as_str()), (400, Some("malformed_json")), "{got}");
    assert!(got["error"]["message"].as_str().unwrap().contains("feature"), "{got}");
    let features_store = FeaturesStoreConfig::from_config(&config).unwrap();
    let many: Vec<Value> =
        (0..features_store.max_entities_per_request + 1).map(|i| json!({"user": format!("u{i}")})).collect();
    let (status, got) = read(&s, &json!({"entities": many, "features": ["user_tx"]})).await;
    assert_eq!((status, got["error"]["code"].as_str()), (413, Some("batch_too_large")), "{got}");

    let dir = s.stop().await;
    if features_store.backend == FeaturesBackend::Embedded {
        assert!(dir.path().join(cascade_features::CHECKPOINT_FILE).exists(), "checkpointed at shutdown");
    }
}

fn config() -> Config {
    let mut c = Config::from_toml(DEFS, "test.toml").unwrap();
    let mut features_store = FeaturesStoreConfig::from_config(&c).unwrap();
    features_store.max_entities_per_request = 50;
    c.set(&features_store).unwrap();
    c
}

#[tokio::test]
async fn serves_features_from_the_embedded_store() {
    serves_features(config()).await;
}

#[tokio::test]
async fn serves_features_from_redis() {
    let url = std::env::var("CASCADE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("cascade-test:server:{}:{nanos}", std::process::id());
    let mut c = config();
    let mut features_store = FeaturesStoreConfig::from_config(&c).unwrap();
    features_store.backend = FeaturesBackend::Redis;
    features_store.redis_url = url.clone();
    features_store.redis_prefix = prefix.clone();
    c.set(&features_store).unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let con = match client.get_connection_with_timeout(Duration::from_secs(2)) {
        Ok(con) => con,
        // CI (`.ci/run`) starts Redis and sets CASCADE_REQUIRE_REDIS=1: there, no Redis is a failure.
        Err(e) if std::env::var("CASCADE_REQUIRE_REDIS").is_ok_and(|v| !v.is_empty() && v != "0") => {
            panic!(
                "Redis is not reachable at {url} ({e}); start redis-server (bash .ci/run does) or set CASCADE_TEST_REDIS_URL"
            )
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: Redis is not reachable at {url} ({e}); set CASCADE_REQUIRE_REDIS=1 to make this a failure"
            );
            return;
        }
    };
    let _cleanup = Cleanup { con, prefix };
    serves_features(c).await;
}

/// Deletes the test's Redis keys, also when the test panics.
struct Cleanup {
    con: redis::Connection,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pattern in [format!("{}:*", self.prefix), format!("{}#*", self.prefix)] {
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg(&pattern).query(&mut self.con).unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut self.con);
            }
        }
    }
}
