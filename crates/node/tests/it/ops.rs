use crate::TestServer;
use serde_json::json;

#[tokio::test]
async fn health_endpoints() {
    let s = TestServer::start().await;
    assert_eq!(s.get("/v2/health/live").await, (200, r#"{"status":"live"}"#.to_string()));
    assert_eq!(s.get("/v2/health/ready").await, (200, r#"{"status":"ready"}"#.to_string()));
    s.stop().await;
}

/// Every supervised job is reported, and the log consumers have run and are healthy.
#[tokio::test]
async fn jobs_report_the_supervised_work() {
    let s = TestServer::start().await;
    let batch = json!([{"type": "like", "ts": 0, "user": "u", "item": "i"}]);
    assert_eq!(s.post_events(&batch).await.0, 200);
    let mut jobs = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, body) = s.get("/v2/health/jobs").await;
        assert_eq!(status, 200);
        jobs = serde_json::from_str(&body).unwrap();
        let rounds = |name: &str| {
            jobs["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["name"] == name)
                .map_or(0, |j| j["rounds"].as_u64().unwrap())
        };
        if rounds("live-view") > 0 && rounds("feature-tail") > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let names: Vec<&str> = jobs["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    for job in ["live-view", "feature-tail", "registry-watch", "store-maintenance", "impressions"] {
        assert!(names.contains(&job), "{job} missing from {jobs}");
    }
    for job in jobs["jobs"].as_array().unwrap() {
        assert_eq!(job["ended"], false, "{job}");
        assert_eq!(job["panics"], 0, "{job}");
        if job["name"] == "live-view" || job["name"] == "feature-tail" {
            assert!(job["rounds"].as_u64().unwrap() > 0, "{job}");
            assert_eq!(job["consecutive_failures"], 0, "{job}");
        }
    }
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
