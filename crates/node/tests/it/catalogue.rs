use crate::TestServer;
use serde_json::{Value, json};

#[tokio::test]
async fn item_upsert_read_and_delete() {
    let s = TestServer::start().await;
    let (status, body) = s
        .put(
            "/v1/items/song-1",
            &json!({"attributes": {"title": "Blue", "genres": ["jazz"], "released_at": "1959-08-17T00:00:00Z"}}),
        )
        .await;
    assert_eq!(status, 400, "1959 is before the epoch: {body}");
    assert_eq!(body["error"]["code"], "invalid_item");
    let (status, body) = s
        .put("/v1/items/song-1", &json!({"attributes": {"title": "Blue", "genres": ["jazz"]}, "available": false}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offset"], 0);
    let (status, text) = s.get("/v1/items/song-1").await;
    assert_eq!(status, 200);
    let item: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(item["attributes"], json!({"title": "Blue", "genres": ["jazz"]}));
    assert_eq!(item["available"], false);
    // A second upsert replaces the record.
    s.put("/v1/items/song-1", &json!({"attributes": {"title": "Kind of Blue"}})).await;
    let item: Value = serde_json::from_str(&s.get("/v1/items/song-1").await.1).unwrap();
    assert_eq!(item["attributes"], json!({"title": "Kind of Blue"}));
    assert_eq!(item["available"], true);
    s.put("/v1/items/song-1", &json!({"attributes": {"title": "Kind of Blue"}, "deleted": true})).await;
    let (status, text) = s.get("/v1/items/song-1").await;
    assert_eq!(status, 404);
    assert!(text.contains("item_not_found"));
    s.stop().await;
}

#[tokio::test]
async fn invalid_catalogue_bodies_name_fields() {
    let s = TestServer::start().await;
    let (status, body) = s.put("/v1/items/x", &json!({"attributes": {"genres": "jazz"}, "colour": 1})).await;
    assert_eq!(status, 400);
    let fields: Vec<&str> =
        body["error"]["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["colour", "attributes.genres", "attributes.title"]);
    let (status, body) = s.put("/v1/users/u1", &json!({"attributes": {"age": "old"}})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_user")));
    assert_eq!(s.log_len(), 0);
    s.stop().await;
}

#[tokio::test]
async fn users_round_trip_and_survive_restart() {
    let s = TestServer::start().await;
    let (status, _) = s.put("/v1/users/u1", &json!({"attributes": {"age": 31, "country": "NO"}})).await;
    assert_eq!(status, 200);
    let (status, text) = s.get("/v1/users/u1").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["attributes"], json!({"age": 31, "country": "NO"}));
    assert_eq!(s.get("/v1/users/nobody").await.0, 404);
    let dir = s.stop().await;
    // Graceful shutdown released the directory; a new process sees the user.
    let store = cascade_store::Store::open(dir.path(), cascade_store::StoreOptions::default()).unwrap();
    assert_eq!(store.user("u1").unwrap().attributes.len(), 2);
}
