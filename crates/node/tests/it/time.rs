//! Time can no longer be poisoned: records and request times past the horizon
//! (`log.max_event_ahead`) are refused with `time_ahead`, empty batches with `empty_batch`, and a
//! log that already holds such records is recovered by `rebuild_features` with a quarantine.

use crate::{TestServer, now_ms};
use cascade_core::{Config, Event, Horizon, Record, Timestamp, Value as V};
use cascade_store::{Store, StoreOptions};
use serde_json::{Value, json};
use std::time::Duration;

const DEFS: &str = r#"
[features.user_tx]
entity = "user"
events = ["transaction"]
ttl = "1day"
allowed_lateness = "3h"
[features.user_tx.features]
tx_1h = { agg = "count", window = "1h", tile = "1m" }
"#;
const Y9999: &str = "9999-12-31T23:59:59Z";

fn tx(ts: &Value, user: &str) -> Value {
    json!({"type": "transaction", "ts": ts, "user": user, "fields": {"amount": 1.0, "currency": "EUR"}})
}

/// `user`'s `tx_1h` once the feature tail has applied `count` of its transactions, or the last
/// value read (the tail polls every 50 ms; bounded by reads, not by time).
async fn tx_1h(s: &TestServer, user: &str, count: i64) -> Value {
    let body = json!({"entities": [{"user": user}], "features": ["user_tx:tx_1h"]});
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, got) = s.post_raw("/v1/features", "application/json", body.to_string()).await;
        assert_eq!(status, 200, "{got}");
        last = got["results"][0]["values"][0]["value"].clone();
        if last == count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    last
}

fn config() -> Config {
    Config::from_toml(DEFS, "test.toml").unwrap()
}

#[tokio::test]
async fn an_event_dated_9999_is_refused_and_windowed_features_keep_counting_real_ones() {
    let s = TestServer::with_config(config()).await;
    let t = now_ms();
    let (status, got) = s.post_events(&json!([tx(&json!(t - 1_000), "u1"), tx(&json!(Y9999), "u1")])).await;
    assert_eq!((status, got["error"]["code"].as_str()), (400, Some("time_ahead")), "{got}");
    let detail = &got["error"]["details"][0];
    assert_eq!((&detail["index"], &detail["field"]), (&json!(1), &json!("ts")), "{got}");
    let reason = detail["reason"].as_str().unwrap();
    assert!(
        reason.contains("years past the server clock") && reason.contains("log.max_event_ahead = 1day"),
        "{reason}"
    );
    // Schema problems come first: the same batch with an invalid event is `invalid_events`.
    let bad = json!([tx(&json!(Y9999), "u1"), {"type": "transaction", "ts": t, "user": "u1"}]);
    let (status, got) = s.post_events(&bad).await;
    assert_eq!((status, got["error"]["code"].as_str()), (400, Some("invalid_events")), "{got}");
    assert_eq!(s.log_len(), 0, "nothing of a refused batch is written");

    let real = json!([tx(&json!(t - 60_000), "u1"), tx(&json!(t - 1_000), "u1")]);
    assert_eq!(s.post_events(&real).await.0, 200);
    assert_eq!(tx_1h(&s, "u1", 2).await, json!(2), "the watermark did not move to 9999");

    // After a restart too (the state is rebuilt from the checkpoint and the log).
    let dir = s.stop().await;
    let s = TestServer::with_dir(config(), dir).await;
    assert_eq!(s.post_events(&json!([tx(&json!(now_ms()), "u1")])).await.0, 200);
    assert_eq!(tx_1h(&s, "u1", 3).await, json!(3));
    s.stop().await;
}

#[tokio::test]
async fn empty_batches_and_catalogue_times_past_the_horizon_are_refused() {
    let s = TestServer::with_config(config()).await;
    for (content_type, body) in
        [("application/json", "[]"), ("application/json", ""), ("application/x-ndjson", "\n \n")]
    {
        let (status, got) = s.post_raw("/v1/events", content_type, body).await;
        assert_eq!((status, got["error"]["code"].as_str()), (400, Some("empty_batch")), "{body:?} -> {got}");
    }
    let (status, got) = s.put("/v1/items/i1", &json!({"attributes": {"title": "x"}, "updated_at": Y9999})).await;
    assert_eq!((status, got["error"]["code"].as_str()), (400, Some("time_ahead")), "{got}");
    assert_eq!(got["error"]["details"][0]["field"], "updated_at", "{got}");
    let (status, got) = s.put("/v1/items/i1", &json!({"attributes": {"title": "x"}, "created_at": Y9999})).await;
    assert_eq!((status, got["error"]["details"][0]["field"].as_str()), (400, Some("created_at")), "{got}");
    let (status, got) = s.put("/v1/users/u1", &json!({"updated_at": Y9999})).await;
    assert_eq!((status, got["error"]["code"].as_str()), (400, Some("time_ahead")), "{got}");
    assert_eq!(s.log_len(), 0);
    // Within the horizon: accepted.
    let soon = Timestamp(now_ms() + 3_600_000).to_string();
    assert_eq!(s.put("/v1/users/u1", &json!({"updated_at": soon})).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_request_time_past_the_horizon_is_refused() {
    let s = TestServer::with_config(config()).await;
    for (path, body) in [
        ("/v1/recommendations", json!({"user": "u1", "context": {"time": Y9999}})),
        ("/v1/rank", json!({"user": "u1", "items": ["a", "b"], "context": {"time": Y9999}})),
    ] {
        let (status, got) = s.post_raw(path, "application/json", body.to_string()).await;
        assert_eq!((status, got["error"]["code"].as_str()), (400, Some("time_ahead")), "{path} -> {got}");
        assert_eq!(got["error"]["details"][0]["field"], "context.time", "{got}");
    }
    let ok = json!({"user": "u1", "context": {"time": now_ms() - 1_000}});
    let (status, got) = s.post_raw("/v1/recommendations", "application/json", ok.to_string()).await;
    assert_eq!(status, 200, "{got}");
    s.stop().await;
}

fn record(ts: i64, user: &str) -> Record {
    Record::Event(Event {
        id: Some(format!("{user}-{ts}")),
        event_type: "transaction".into(),
        ts: Timestamp(ts),
        user: Some(user.into()),
        item: None,
        fields: vec![("amount".into(), V::Float(1.0)), ("currency".into(), V::String("EUR".into()))],
    })
}

#[tokio::test]
async fn a_poisoned_log_is_recovered_by_a_rebuild_with_a_quarantine() {
    // A log written before the horizon existed: a 9999 event, then real ones (dropped as late).
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms();
    {
        let options = StoreOptions { horizon: Horizon::UNBOUNDED, ..StoreOptions::default() };
        let store = Store::open(dir.path(), options).unwrap();
        let far = Timestamp::parse_rfc3339(Y9999).unwrap().0;
        store.append(&[record(far, "u1")]).await.unwrap();
        store.append(&[record(t - 120_000, "u1"), record(t - 60_000, "u1")]).await.unwrap();
        store.close().unwrap();
    }
    // A server ran on it (its feature checkpoint may hold the poisoned watermark) and accepted
    // a real event meanwhile.
    let s = TestServer::with_dir(config(), dir).await;
    assert_eq!(s.post_events(&json!([tx(&json!(t - 30_000), "u2")])).await.0, 200);
    let dir = s.stop().await;

    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let report = cascade_node::rebuild_features(&config(), &store, Some(Timestamp(t + 3_600_000))).await.unwrap();
        let q = report.quarantine.clone().unwrap();
        assert_eq!((q.rule.below_offset, q.hidden), (4, 1), "{report:?}");
        assert_eq!((report.applied, report.next_offset), (3, 4), "{report:?}");
        store.close().unwrap();
    }
    let s = TestServer::with_dir(config(), dir).await;
    assert_eq!(tx_1h(&s, "u1", 2).await, json!(2), "the real events count once the 9999 one is hidden");
    assert_eq!(tx_1h(&s, "u2", 1).await, json!(1));
    assert_eq!(s.post_events(&json!([tx(&json!(now_ms()), "u1")])).await.0, 200);
    assert_eq!(tx_1h(&s, "u1", 3).await, json!(3), "a new event after the rebuild counts too");
    s.stop().await;
}
