//! Recommendations before any model is trained: the fallbacks that need no bundle, and request
//! validation.

use crate::TestServer;
use cascade_core::Config;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn ids(r: &Value) -> Vec<&str> {
    r["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn without_a_bundle_popularity_then_static_items_serve() {
    let mut config = Config::default();
    config.pipelines.insert("default".into(), toml::from_str("fallback_items = [\"s1\", \"s2\"]\nk = 2").unwrap());
    let server = TestServer::with_config(config).await;
    let (status, r) = server.post_raw("/v1/recommendations", "application/json", r#"{"user": "u1"}"#).await;
    assert_eq!(status, 200, "{r}");
    // Nothing in the log yet: the configured static items.
    assert_eq!(r["path"]["ranked_by"], "static");
    assert_eq!(r["path"]["fallbacks"], json!(["no_bundle"]));
    assert_eq!(ids(&r), ["s1", "s2"]);
    assert!(r["model_version"].is_null());

    // Interactions arrive: the most interacted items serve, unseen ones only.
    let mut events = Vec::new();
    for (n, (user, item)) in
        [("a", "i1"), ("b", "i1"), ("c", "i1"), ("a", "i2"), ("b", "i2"), ("u1", "i3"), ("a", "i3"), ("b", "i4")]
            .into_iter()
            .enumerate()
    {
        events.push(json!({"type": "click", "ts": 1_000 + n as i64, "user": user, "item": item}));
    }
    let (status, _) = server.post_events(&Value::Array(events)).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let (_, r) = server.post_raw("/v1/recommendations", "application/json", r#"{"user": "u1"}"#).await;
        if r["path"]["ranked_by"] == "popularity" || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r["path"]["ranked_by"], "popularity", "{r}");
    assert_eq!(ids(&r), ["i1", "i2"], "most interacted first; u1's own i3 is excluded");

    // Bad requests are refused with the field named.
    for (body, field) in
        [(r#"{"user": "u1", "k": 0}"#, "k"), (r#"{"user": "u1", "filters": {"genres": []}}"#, "filters.genres")]
    {
        let (status, r) = server.post_raw("/v1/recommendations", "application/json", body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(r["error"]["code"], "invalid_recommendation_request");
        assert_eq!(r["error"]["details"][0]["field"], field, "{r}");
    }
    server.stop().await;
}
