use crate::TestServer;
use serde_json::{Value, json};

fn play(id: &str, user: &str) -> Value {
    json!({"id": id, "type": "play", "ts": "2024-05-01T12:00:00Z", "user": user, "item": "song-1", "fields": {"completed": true}})
}

fn details(body: &Value) -> Vec<(u64, String, String)> {
    body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["index"].as_u64().unwrap(),
                d["field"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn accepts_json_array_and_ndjson() {
    let s = TestServer::start().await;
    let (status, body) = s.post_events(&json!([play("a", "u1"), play("b", "u2")])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"accepted": 2, "duplicates": [], "first_offset": 0, "last_offset": 1}));
    let ndjson = format!(
        "{}\n\n{}\n",
        play("c", "u1"),
        json!({"type": "rating", "ts": 1714564800000i64, "user": "u1", "item": "m", "fields": {"value": 4.5}})
    );
    let (status, body) = s.post_raw("/v1/events", "application/x-ndjson", ndjson).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(s.log_len(), 4);
    s.stop().await;
}

#[tokio::test]
async fn duplicate_id_is_stored_once_and_reported() {
    let s = TestServer::start().await;
    assert_eq!(s.post_events(&json!([play("dup", "u1")])).await.0, 200);
    let (status, body) = s.post_events(&json!([play("new", "u1"), play("dup", "u1")])).await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["duplicates"], json!([{"index": 1, "id": "dup", "offset": 0}]));
    assert_eq!(s.log_len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn malformed_json_is_refused() {
    let s = TestServer::start().await;
    let (status, body) = s.post_raw("/v1/events", "application/json", "[{\"type\": \"play\",").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_json");
    let (status, body) =
        s.post_raw("/v1/events", "application/x-ndjson", format!("{}\n{{oops\n", play("a", "u"))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "malformed_json");
    assert!(body["error"]["message"].as_str().unwrap().contains("line 2"), "{body}");
    let (status, body) = s.post_raw("/v1/events", "text/csv", "a,b").await;
    assert_eq!((status, body["error"]["code"].as_str()), (415, Some("unsupported_media_type")));
    assert_eq!(s.log_len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn one_invalid_event_refuses_the_whole_batch() {
    let s = TestServer::start().await;
    let batch = json!([
        play("ok-1", "u1"),
        {"type": "teleport", "ts": "2024-05-01T12:00:00Z", "user": "u1"},
        {"type": "rating", "ts": "2024-05-01T12:00:00Z", "user": "u1", "item": "m"},
        {"type": "play", "ts": "2024-05-01T12:00:00Z", "user": "u1", "item": "s", "fields": {"completed": true, "volume": 11}},
        {"type": "play", "ts": "2024-05-01T12:00:00Z", "user": "u1", "item": "s", "fields": {"duration_ms": "long"}},
        {"type": "play", "ts": "2024-13-01T00:00:00Z", "user": "u1", "item": "s"},
        {"type": "play", "ts": "2024-05-01T12:00:00Z", "user": "u1", "item": "s", "colour": "red"},
        play("ok-2", "u2"),
    ]);
    let (status, body) = s.post_events(&batch).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_events");
    let d = details(&body);
    let where_: Vec<(u64, &str)> = d.iter().map(|(i, f, _)| (*i, f.as_str())).collect();
    assert_eq!(
        where_,
        [(1, "type"), (2, "fields.value"), (3, "fields.volume"), (4, "fields.duration_ms"), (5, "ts"), (6, "colour")]
    );
    assert!(d[0].2.contains("unknown event type `teleport`"));
    assert!(d[1].2.contains("required"));
    assert!(d[2].2.contains("unknown field"));
    assert!(d[3].2.contains("expected int, got string"));
    assert!(d[4].2.contains("bad timestamp"));
    assert!(body["error"]["message"].as_str().unwrap().contains("6 of 8"));
    assert_eq!(s.log_len(), 0, "nothing of a refused batch is written");
    s.stop().await;
}

#[tokio::test]
async fn oversize_batches_and_bodies_get_413() {
    let mut config = cascade_core::Config::default();
    let mut server = cascade_server::ServerConfig::from_config(&config).unwrap();
    server.max_batch_events = 3;
    server.max_body_bytes = 2048;
    config.set(&server).unwrap();
    let s = TestServer::with_config(config).await;
    let four: Vec<Value> = (0..4).map(|i| play(&format!("e{i}"), "u")).collect();
    let (status, body) = s.post_events(&Value::Array(four)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("batch_too_large")));
    let big = json!([{"type": "play", "ts": 0, "user": "u", "item": "x".repeat(4000)}]);
    let (status, body) = s.post_events(&big).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("payload_too_large")));
    assert_eq!(s.log_len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn concurrent_clients_all_land() {
    let s = TestServer::start().await;
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (client, url) = (s.client.clone(), s.url.clone());
        tasks.push(tokio::spawn(async move {
            for b in 0..5 {
                let batch: Vec<Value> = (0..20).map(|i| play(&format!("c{c}-b{b}-{i}"), "u")).collect();
                let r = client.post(format!("{url}/v1/events")).json(&batch).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.log_len(), 800);
    s.stop().await;
}
