//! What stands before the handlers: API keys and scopes, media types, duplicate keys, CORS,
//! read timeouts and the connection cap.

use crate::TestServer;
use cascade_core::Config;
use cascade_server::Scope;
use cascade_server::keys::KeyStore;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOW: &str = "2026-12-05T10:00:00Z";

fn event(id: &str) -> Value {
    json!({"id": id, "type": "click", "ts": "2024-05-01T12:00:00Z", "user": "u1", "item": "i1"})
}

fn config(server: &str) -> Config {
    Config::from_toml(&format!("[server]\n{server}\n"), "test").unwrap()
}

async fn send(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut r = s.client.request(method, format!("{}{path}", s.url));
    if let Some(key) = key {
        r = r.bearer_auth(key);
    }
    if let Some(body) = body {
        r = r.json(body);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls until the server answers `path` without a key with `status` (keys reload within a
/// second of a change).
async fn until_status(s: &TestServer, path: &str, status: u16) {
    for _ in 0..100 {
        if s.get(path).await.0 == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never answered {status}");
}

#[tokio::test]
async fn keys_gate_every_route_by_scope_and_take_effect_while_serving() {
    let s = TestServer::start().await;
    // No key file: authentication is off (the node refuses non-loopback addresses then).
    assert_eq!(s.post_events(&json!([event("a")])).await.0, 200);

    let keys = KeyStore::new(s.dir.path());
    let (ingest, _) = keys.create("etl", &[Scope::Ingest], NOW).unwrap();
    let (serve, _) = keys.create("web", &[Scope::Serve], NOW).unwrap();
    let (admin, _) = keys.create("ops", &[Scope::Admin], NOW).unwrap();
    until_status(&s, "/v1/items/i1", 401).await;

    use reqwest::Method as M;
    let (status, body) = send(&s, M::POST, "/v1/events", None, Some(&json!([event("b")]))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let r = s.client.get(format!("{}/v1/items/i1", s.url)).send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, body) = send(&s, M::POST, "/v1/events", Some("csk_000000000000_nope"), Some(&json!([]))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");

    // Each scope opens its routes only.
    let (status, body) = send(&s, M::POST, "/v1/events", Some(&ingest), Some(&json!([event("c")]))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(&s, M::GET, "/v1/items/i1", Some(&ingest), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`etl` lacks the `read` scope"), "{body}");
    let rec = json!({"user": "u1", "k": 3});
    assert_eq!(send(&s, M::POST, "/v1/recommendations", Some(&serve), Some(&rec)).await.0, 200);
    assert_eq!(send(&s, M::POST, "/v1/recommendations", Some(&ingest), Some(&rec)).await.0, 403);
    let user = json!({"attributes": {"age": 30}});
    assert_eq!(send(&s, M::PUT, "/v1/users/u9", Some(&serve), Some(&user)).await.0, 403);
    assert_eq!(send(&s, M::PUT, "/v1/users/u9", Some(&admin), Some(&user)).await.0, 200);
    assert_eq!(send(&s, M::GET, "/v1/users/u9", Some(&admin), None).await.0, 200);

    // Health, metrics and the document stay open by default.
    for path in ["/v2/health/live", "/v2/health/ready", "/metrics", "/openapi.json"] {
        assert_eq!(s.get(path).await.0, 200, "{path}");
    }

    // Revoked: refused within a second or so.
    keys.revoke("etl", NOW).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if send(&s, M::POST, "/v1/events", Some(&ingest), Some(&json!([event("d")]))).await.0 == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "a revoked key keeps working");
    s.stop().await;
}

#[tokio::test]
async fn health_and_metrics_can_require_a_key() {
    let s = TestServer::with_config(config("open_health = false\nopen_metrics = false")).await;
    let (token, _) = KeyStore::new(s.dir.path()).create("probe", &[Scope::Read], NOW).unwrap();
    until_status(&s, "/v2/health/live", 401).await;
    assert_eq!(s.get("/metrics").await.0, 401);
    // Any valid key will do for them, whatever its scope.
    for path in ["/v2/health/live", "/metrics"] {
        assert_eq!(send(&s, reqwest::Method::GET, path, Some(&token), None).await.0, 200, "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn json_routes_need_json_without_duplicate_keys() {
    let s = TestServer::start().await;
    let rec = json!({"user": "u1", "k": 3}).to_string();
    for path in ["/v1/recommendations", "/v1/rank", "/v1/features", "/v1/events"] {
        for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
            let (status, body) = s.post_raw(path, content_type, rec.clone()).await;
            assert_eq!((status, body["error"]["code"].as_str()), (415, Some("unsupported_media_type")), "{path}");
        }
    }
    // No content type at all (a browser's typeless blob) is refused too.
    let r = s.client.post(format!("{}/v1/recommendations", s.url)).body(rec).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let r = s.client.put(format!("{}/v1/items/i1", s.url)).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415);

    // `"type":"purchase","type":"click"` is not quietly a click.
    let dup = r#"[{"id":"x","type":"purchase","type":"click","ts":"2024-05-01T12:00:00Z","user":"u1","item":"i1"}]"#;
    let (status, body) = s.post_raw("/v1/events", "application/json", dup).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("malformed_json")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("duplicate key `type`"), "{body}");
    let (status, _) = s.post_raw("/v1/events", "application/x-ndjson", dup.trim_matches(['[', ']'])).await;
    assert_eq!(status, 400);
    let (status, body) = s.post_raw("/v1/recommendations", "application/json", r#"{"user":"a","user":"b"}"#).await;
    assert_eq!(status, 400, "{body}");
    let r = s
        .client
        .put(format!("{}/v1/items/i1", s.url))
        .header("content-type", "application/json")
        .body(r#"{"attributes":{"title":"a","title":"b"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(s.log_len(), 0, "nothing refused was written");
    s.stop().await;
}

#[tokio::test]
async fn cors_is_off_by_default_and_answers_configured_origins() {
    let s = TestServer::start().await;
    let r = s.client.get(format!("{}/v2/health/live", s.url)).header("origin", "https://evil.example").send().await;
    assert!(r.unwrap().headers().get("access-control-allow-origin").is_none());
    s.stop().await;

    let s = TestServer::with_config(config("cors_origins = [\"https://app.example.com\"]")).await;
    let preflight = |origin: &'static str| {
        s.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/recommendations", s.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let r = preflight("https://app.example.com").await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    s.stop().await;
}

#[tokio::test]
async fn slow_headers_and_bodies_are_cut_off() {
    let s = TestServer::with_config(config("header_read_timeout = \"300ms\"\nbody_read_timeout = \"300ms\"")).await;
    let addr = s.url.trim_start_matches("http://").to_string();

    // Half a request line, then silence: the server closes the connection.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /v2/hea").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a connection that never finishes its headers is never closed");

    // Headers, then a body that never completes: 408 in the JSON error shape.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");

    // A live request is unaffected.
    assert_eq!(s.get("/v2/health/live").await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_gets_one_request_and_a_second_to_send_it() {
    let s = TestServer::with_config(config("max_connections = 2")).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    // Two idle keep-alive connections take both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    // A client that sends its request at once is served as usual, on a connection closed after it.
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let r = fresh.get(format!("{}/v2/health/live", s.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the liveness probe answers past the cap");
    let r = fresh.get(format!("{}/v1/items/i1", s.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404, "a request past the cap is served");
    assert_eq!(r.headers()["connection"], "close");
    // One that sends nothing is cut within about a second; the held ones stay open meanwhile.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let cut = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    assert!(cut.is_ok(), "an idle connection past the cap is never closed");
    let mut c = held.pop().unwrap();
    c.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = c.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "a connection within the cap keeps serving"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_node_refuses_to_listen_beyond_loopback_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(cascade_store::Store::open(dir.path(), Default::default()).unwrap());
    let config = Config::default();
    let start = || cascade_node::Node::start(&config, store.clone(), std::sync::Arc::new(cascade_core::SystemClock));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = start().await.unwrap().serve(listener, std::future::pending()).await.unwrap_err();
    assert!(matches!(err, cascade_node::Error::Insecure(_)), "{err}");
    assert!(err.to_string().contains("--insecure"), "{err}");

    // With a key it serves (and stops when told).
    KeyStore::new(dir.path()).create("ops", &[Scope::Admin], NOW).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let node = start().await.unwrap();
    node.serve(listener, async {}).await.unwrap();
}

#[tokio::test]
async fn what_a_request_names_is_bounded_like_ingestion() {
    let s = TestServer::start().await;
    let long = "u".repeat(100_000);
    let many: Vec<String> = (0..1_001).map(|i| format!("i{i}")).collect();
    let cases = [
        ("/v1/recommendations", json!({"user": long}), "user"),
        ("/v1/recommendations", json!({"user": "a\u{7}b"}), "user"),
        ("/v1/recommendations", json!({"user": "u1", "exclude": many}), "exclude"),
        ("/v1/recommendations", json!({"user": "u1", "exclude": ["ok", ""]}), "exclude[1]"),
        ("/v1/recommendations", json!({"user": "u1", "context": {"page": {"nested": 1}}}), "context.page"),
        ("/v1/recommendations", json!({"user": "u1", "context": {"page": "p".repeat(300)}}), "context.page"),
        ("/v1/recommendations", json!({"user": "u1", "filters": {"genres": ["g".repeat(300)]}}), "filters.genres"),
        ("/v1/rank", json!({"user": "u1", "items": ["a", "b\n"]}), "items[1]"),
        ("/v1/rank", json!({"user": long, "items": ["a"]}), "user"),
    ];
    for (path, body, field) in cases {
        let (status, r) = s.post_raw(path, "application/json", body.to_string()).await;
        assert_eq!(status, 400, "{path} {field}: {r}");
        assert_eq!(r["error"]["details"][0]["field"], field, "{r}");
    }
    let (status, r) = s.get(&format!("/v1/items/{}/similar", "x".repeat(300))).await;
    assert_eq!(status, 400, "{r}");
    let features = json!({"entities": [{"user": long}], "features": ["v"]});
    let (status, r) = s.post_raw("/v1/features", "application/json", features.to_string()).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(s.log_len(), 0, "no impression of a refused request is written");
    s.stop().await;
}
