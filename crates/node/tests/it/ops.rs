use crate::TestServer;
use serde_json::json;

#[tokio::test]
async fn health_endpoints() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/v2/health/live").await, (200, r#"{"status":"live"}"#.to_string()));
    assert_eq!(s.get("/v2/health/ready").await, (200, r#"{"status":"ready"}"#.to_string()));
    s.stop().await;
}

#[tokio::test]
async fn metrics_expose_counters_and_latency_histograms() {
    let s = TestServer::start().await;
    let batch = json!([{"type": "like", "ts": 0, "user": "u", "item": "i"}]);
    assert_eq!(s.post_events(&batch).await.0, 200);
    let (status, text) = s.get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "cascade_events_ingested_total",
        "cascade_http_requests_total{route=\"/v1/events\",method=\"POST\",status=\"200\"}",
        "cascade_http_request_duration_seconds_bucket{",
        "cascade_log_fsync_duration_seconds_bucket{",
        "cascade_log_next_offset",
        "cascade_up 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    s.stop().await;
}

/// The checked-in OpenAPI document must match the code. Regenerate with
/// `cargo run -p cascade-cli -- openapi > docs/openapi.json`.
#[test]
fn openapi_document_is_current() {
    let generated = serde_json::to_value(cascade_server::openapi()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let checked_in: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(
        generated == checked_in,
        "docs/openapi.json is stale; regenerate it with `cascade openapi > docs/openapi.json`"
    );
}
