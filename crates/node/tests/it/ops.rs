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

/// The parts of an error answer a client matches on: status, content type, code, detail fields.
async fn error_of(r: reqwest::Response) -> (u16, String, String, Vec<String>) {
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let body: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("not JSON ({content_type}): {e}"));
    let code = body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {body}")).to_string();
    let fields = body["error"]["details"]
        .as_array()
        .map(|d| d.iter().map(|p| p["field"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    (status, content_type, code, fields)
}

/// Query strings and path segments the extractors cannot read answer in the JSON error shape
/// (axum's own rejections are `text/plain`), naming the parameter.
#[tokio::test]
async fn bad_query_and_path_parameters_are_json_errors() {
    let s = TestServer::start().await;
    let get = |path: &str| s.client.get(format!("{}{path}", s.url)).send();
    let json = "application/json".to_string();
    assert_eq!(
        error_of(get("/v1/items/x/similar?k=abc").await.unwrap()).await,
        (400, json.clone(), "invalid_request".into(), vec!["k".to_string()])
    );
    assert_eq!(
        error_of(get("/v1/items/x/similar?k=-1").await.unwrap()).await,
        (400, json.clone(), "invalid_request".into(), vec!["k".to_string()])
    );
    // A segment that is not UTF-8 once percent-decoded.
    for path in ["/v1/items/%FF", "/v1/users/%FF", "/v1/items/%FF/similar"] {
        assert_eq!(
            error_of(get(path).await.unwrap()).await,
            (400, json.clone(), "invalid_request".into(), vec!["id".to_string()]),
            "{path}"
        );
    }
    s.stop().await;
}

/// Unknown routes and wrong methods answer in the JSON error shape; a 405 keeps its `allow`.
#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let s = TestServer::start().await;
    let json = "application/json".to_string();
    let r = s.client.get(format!("{}/v1/nothing-here", s.url)).send().await.unwrap();
    assert_eq!(error_of(r).await, (404, json.clone(), "not_found".into(), vec![]));
    let r = s.client.delete(format!("{}/v1/items/i1", s.url)).send().await.unwrap();
    let mut allow: Vec<&str> = r.headers()["allow"].to_str().unwrap().split(',').collect();
    allow.sort_unstable();
    assert_eq!(allow, ["GET", "HEAD", "PUT"]);
    assert_eq!(error_of(r).await, (405, json.clone(), "method_not_allowed".into(), vec![]));
    let r = s.client.get(format!("{}/v1/events", s.url)).send().await.unwrap();
    assert_eq!(error_of(r).await, (405, json, "method_not_allowed".into(), vec![]));
    s.stop().await;
}

/// What the document promises about numbers holds: `5.0` is the integer 5 (JSON Schema's view)
/// wherever an integer is documented, and a fraction is still refused.
#[tokio::test]
async fn integral_numbers_are_accepted_where_integers_are_documented() {
    let s = TestServer::start().await;
    let batch = json!([{"id": 7.0, "type": "like", "ts": 1000.0, "user": 1.0, "item": "i"}]);
    let (status, body) = s.post_events(&batch).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.put("/v1/users/u1", &json!({"updated_at": 5000.0})).await;
    assert_eq!((status, body["updated_at"].as_str()), (200, Some("1970-01-01T00:00:05.000Z")), "{body}");
    let (status, body) = s.post_events(&json!([{"type": "like", "ts": 1000.5, "user": "u", "item": "i"}])).await;
    assert_eq!((status, body["error"]["details"][0]["field"].as_str()), (400, Some("ts")), "{body}");
    s.stop().await;
}
