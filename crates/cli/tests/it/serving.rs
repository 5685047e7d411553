//! The serving cascade end to end: a project trained by the `cascade` binary, served in-process
//! (so faults can be injected into its stages), driven over HTTP.

use crate::ok;
use cascade_core::{Config, Record};
use cascade_serving::{Recommender, Stage};
use cascade_store::{Store, StoreOptions};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct InProcess {
    pub url: String,
    pub recommender: Arc<Recommender>,
    client: reqwest::Client,
    pub store: Arc<Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<cascade_node::Result<()>>,
}

impl InProcess {
    pub async fn start(dir: &Path) -> InProcess {
        Self::start_with(dir, |_| {}).await
    }

    pub async fn start_with(dir: &Path, adjust: impl FnOnce(&mut Config)) -> InProcess {
        let text = std::fs::read_to_string(dir.join("cascade.toml")).unwrap();
        let mut config = Config::from_toml(&text, "cascade.toml").unwrap();
        config.project.data_dir = dir.join("data");
        let mut serving = cascade_serving::ServingConfig::from_config(&config).unwrap();
        serving.reload_interval = Duration::from_millis(200);
        serving.precompute_interval = Duration::from_millis(300);
        config.set(&serving).unwrap();
        // These tests are about serving, not shedding: a slot for every client they run at once,
        // however slow a debug build on a busy machine is.
        let mut server = cascade_server::ServerConfig::from_config(&config).unwrap();
        server.in_flight.serve = 64;
        server.queue_timeout = Duration::from_secs(5);
        config.set(&server).unwrap();
        adjust(&mut config);
        let log = cascade_store::LogConfig::from_config(&config).unwrap();
        // A server stopped just before (a restart) lets go of the directory once its last
        // background task has ended.
        let deadline = Instant::now() + Duration::from_secs(30);
        let store = loop {
            match Store::open(dir.join("data"), StoreOptions::from(&log)) {
                Err(cascade_store::Error::Locked(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                opened => break Arc::new(opened.unwrap()),
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let node =
            cascade_node::Node::start(&config, store.clone(), Arc::new(cascade_core::SystemClock)).await.unwrap();
        let recommender = node.recommender().clone();
        let task = tokio::spawn(async move {
            node.serve(listener, async move {
                let _ = rx.await;
            })
            .await
        });
        InProcess { url, recommender, client: reqwest::Client::new(), store, shutdown: Some(tx), task }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.client.post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(format!("{}{path}", self.url)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn ids(response: &Value) -> Vec<String> {
    response["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

/// Items a user interacted with (the default `[train] interactions`), from the log.
fn history(store: &Store, user: &str) -> Vec<String> {
    store
        .read_from(0)
        .filter_map(Result::ok)
        .filter_map(|(_, r)| match r {
            Record::Event(e)
                if e.user.as_deref() == Some(user)
                    && ["click", "like", "play", "purchase", "rating"].contains(&e.event_type.as_str()) =>
            {
                e.item
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_cascade_serves_explains_falls_back_logs_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ok(root, &["init", "."]);
    ok(root, &["generate", "--users", "300", "--items", "400", "--events", "30000", "--json"]);
    ok(root, &["train", "--no-tune", "--json"]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = InProcess::start(root).await;
        let faults = server.recommender.faults();
        // The live view of the log replays in the background; wait for u3's history.
        let seen = history(&server.store, "u3");
        assert!(seen.len() >= 5);
        let body = json!({"user": "u3", "k": 10, "explain": true, "context": {"device": "mobile"}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let response = loop {
            // Ready: the live view and the online feature state have caught up with the log
            // (before, the rankers' feature reads answer unavailable and the cascade falls back).
            let ready = server.get("/v2/health/ready").await.0 == 200;
            let (status, r) = server.post("/v1/recommendations", &body).await;
            assert_eq!(status, 200, "{r}");
            if (ready && !r["path"]["cold_start"].as_bool().unwrap()) || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        // The full cascade served a warm user: 10 unseen, distinct items with a trace.
        assert_eq!(response["model_version"], 1);
        assert_eq!(response["path"]["ranked_by"], "heavy", "{response}");
        assert_eq!(response["path"]["cold_start"], false);
        assert!(response["path"]["fallbacks"].is_null(), "{response}");
        let served = ids(&response);
        assert_eq!(served.len(), 10);
        let distinct: std::collections::HashSet<&String> = served.iter().collect();
        assert_eq!(distinct.len(), 10);
        assert!(served.iter().all(|i| !seen.contains(i)), "seen items are excluded");
        let sources: Vec<&str> =
            response["path"]["sources"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert!(sources.contains(&"als") && sources.contains(&"itemknn"), "{sources:?}");
        let first = &response["items"][0];
        let trace = &first["explain"];
        assert!(!trace["hits"].as_array().unwrap().is_empty(), "{first}");
        assert!(trace["heavy_score"].is_f64() && trace["light_score"].is_f64(), "{first}");
        let p = trace["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(!trace["reasons"].as_array().unwrap().is_empty(), "TreeSHAP reasons: {first}");
        let request_id = response["request_id"].as_str().unwrap().to_string();
        // Greedy items are shown with propensity 1; an explored one with less.
        for item in response["items"].as_array().unwrap() {
            let p = item["propensity"].as_f64().unwrap();
            assert!(p > 0.0 && p <= 1.0);
            assert_eq!(item["explored"].as_bool().unwrap(), p < 1.0, "{item}");
        }

        // The heavy source (bpr) is precomputed on its schedule for the recently active users.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, metrics) = server.get("/metrics").await;
            let users = metrics
                .lines()
                .find_map(|l| l.strip_prefix("cascade_precomputed_users{source=\"bpr\"} "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if users >= 100.0 {
                break;
            }
            assert!(Instant::now() < deadline, "bpr lists were not precomputed: {users}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, again) = server.post("/v1/recommendations", &json!({"user": "u3", "k": 10})).await;
        assert!(ids(&again).iter().all(|i| !seen.contains(i)), "precomputed lists respect the history");
        assert_eq!(again["path"]["ranked_by"], "heavy");

        // An unknown user is a cold-start user, not an error.
        let (status, cold) = server.post("/v1/recommendations", &json!({"user": "stranger-1"})).await;
        assert_eq!(status, 200, "{cold}");
        assert_eq!(cold["path"]["cold_start"], true);
        assert_eq!(ids(&cold).len(), 10);

        // Exclusions and filters are honoured.
        let exclude: Vec<String> = served[..3].to_vec();
        let (_, r) = server.post("/v1/recommendations", &json!({"user": "u3", "exclude": exclude})).await;
        assert!(ids(&r).iter().all(|i| !exclude.contains(i)));

        // Bad requests: 400 with a stable code naming the field.
        for (body, code, field) in [
            (json!({"user": "u3", "k": 0}), "invalid_recommendation_request", "k"),
            (json!({"user": "u3", "k": 1000}), "invalid_recommendation_request", "k"),
            (json!({"user": ""}), "invalid_recommendation_request", "user"),
            (json!({"user": "u3", "pipeline": "nope"}), "unknown_pipeline", "pipeline"),
            (json!({"user": "u3", "context": {"time": "yesterday"}}), "invalid_recommendation_request", "context.time"),
        ] {
            let (status, r) = server.post("/v1/recommendations", &body).await;
            assert_eq!(status, 400, "{body}: {r}");
            assert_eq!(r["error"]["code"], code);
            assert_eq!(r["error"]["details"][0]["field"], field);
        }
        let (status, r) = server.post("/v1/recommendations", &json!({"usr": "u3"})).await;
        assert_eq!((status, r["error"]["code"].as_str()), (400, Some("malformed_json")));

        // Re-ranking a client's list: the same items, reordered; unknown ones last.
        let mut given: Vec<String> = served.iter().rev().cloned().collect();
        given.push("not-an-item".into());
        let (status, ranked) = server.post("/v1/rank", &json!({"user": "u3", "items": given})).await;
        assert_eq!(status, 200, "{ranked}");
        let order = ids(&ranked);
        assert_eq!(order.len(), given.len());
        assert_eq!(order.last().unwrap(), "not-an-item");
        let mut sorted = order.clone();
        sorted.sort();
        let mut expected = given.clone();
        expected.sort();
        assert_eq!(sorted, expected);
        let scores: Vec<f64> =
            ranked["items"].as_array().unwrap()[..10].iter().map(|i| i["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");

        // Similar items.
        let (status, similar) = server.get(&format!("/v1/items/{}/similar?k=5", served[0])).await;
        assert_eq!(status, 200, "{similar}");
        let similar: Value = serde_json::from_str(&similar).unwrap();
        assert_eq!(similar["items"].as_array().unwrap().len(), 5);
        assert!(similar["items"].as_array().unwrap().iter().all(|i| i["id"] != served[0].as_str()));
        let (status, missing) = server.get("/v1/items/no-such-item/similar").await;
        assert_eq!(status, 404, "{missing}");

        // Impressions reach the log through the queue, one event per shown item.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logged: Vec<cascade_core::Event> = server
                .store
                .read_from(0)
                .filter_map(Result::ok)
                .filter_map(|(_, r)| match r {
                    Record::Event(e)
                        if e.event_type == "impression"
                            && e.field("request_id") == Some(&cascade_core::Value::String(request_id.clone())) =>
                    {
                        Some(e)
                    }
                    _ => None,
                })
                .collect();
            if logged.len() == 10 {
                let items: Vec<String> = logged.iter().map(|e| e.item.clone().unwrap()).collect();
                assert_eq!(items, served);
                assert_eq!(logged[0].field("model_version"), Some(&cascade_core::Value::Int(1)));
                assert!(logged[0].field("feature_digest").is_some());
                break;
            }
            assert!(Instant::now() < deadline, "impressions not logged: {}", logged.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Fallbacks: each failure injected, each answered within the deadline by the next path.
        let stall = Duration::from_secs(2);
        for (stage, stall_it, reason, ranked_by) in [
            (Stage::Ranking, true, "ranker_timeout", "retrieval"),
            (Stage::Ranking, false, "ranker_failed", "retrieval"),
            (Stage::Features, true, "features_timeout", "retrieval"),
            (Stage::Features, false, "features_unavailable", "retrieval"),
            (Stage::Retrieval, true, "retrieval_timeout", "popularity"),
            (Stage::Retrieval, false, "retrieval_failed", "popularity"),
        ] {
            faults.clear();
            if stall_it {
                faults.stall(stage, stall);
            } else {
                faults.fail(stage);
            }
            let started = Instant::now();
            let (status, r) = server.post("/v1/recommendations", &json!({"user": "u3"})).await;
            assert_eq!(status, 200, "{r}");
            assert!(started.elapsed() < stall, "{reason}: answered before the stalled stage would have");
            assert_eq!(r["path"]["fallbacks"], json!([reason]), "{r}");
            assert_eq!(r["path"]["ranked_by"], ranked_by, "{r}");
            assert_eq!(ids(&r).len(), 10, "{reason}: still a full list");
            assert!(ids(&r).iter().all(|i| !seen.contains(i)), "{reason}: rules still apply");
        }
        faults.clear();
        let (_, metrics) = server.get("/metrics").await;
        for reason in ["ranker_timeout", "features_unavailable", "retrieval_timeout"] {
            assert!(metrics.contains(&format!("cascade_fallback_total{{reason=\"{reason}\"}}")), "{reason}");
        }
        assert!(metrics.contains("cascade_stage_duration_seconds_bucket{stage=\"ranking\""));

        // Hot reload under load: a new bundle is trained beside the running server and picked up
        // while requests keep coming; none fails.
        let stop = Arc::new(AtomicBool::new(false));
        let (served_ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut load = Vec::new();
        for c in 0..4 {
            let (url, stop, served_ok, failed) = (server.url.clone(), stop.clone(), served_ok.clone(), failed.clone());
            load.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut versions = std::collections::BTreeSet::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = json!({"user": format!("u{}", (c * 37 + n) % 300)});
                    match client.post(format!("{url}/v1/recommendations")).json(&body).send().await {
                        Ok(r) if r.status() == 200 => {
                            let r: Value = r.json().await.unwrap();
                            versions.insert(r["model_version"].as_u64().unwrap());
                            served_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                versions
            }));
        }
        let root_owned = root.to_path_buf();
        let trained =
            tokio::task::spawn_blocking(move || ok(&root_owned, &["train", "--no-tune", "--json"])).await.unwrap();
        // The new bundle went through the promotion gate (to challenger, or held): serving still
        // answers with the champion until a person moves the alias.
        let trained: Value = serde_json::from_str(&trained).unwrap();
        assert_eq!(trained["version"], 2);
        assert_ne!(trained["gate"]["promoted_to"], "champion", "{}", trained["gate"]);
        let (_, r) = server.post("/v1/recommendations", &json!({"user": "u3"})).await;
        assert_eq!(r["model_version"], 1);
        ok(root, &["models", "alias", "set", "champion", "2", "--why", "reviewed"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, r) = server.post("/v1/recommendations", &json!({"user": "u3"})).await;
            if r["model_version"] == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "v2 was not picked up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        let mut versions = std::collections::BTreeSet::new();
        for task in load {
            versions.extend(task.await.unwrap());
        }
        assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed during the reload");
        assert!(served_ok.load(Ordering::Relaxed) > 10);
        assert!(versions.contains(&2), "{versions:?}");

        // A bundle without rankers: the previous version's cascade keeps serving.
        let root_owned = root.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
                .current_dir(&root_owned)
                .args(["train", "--no-tune", "--json"])
                .env("CASCADE__TRAIN__RANKERS", "false")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        })
        .await
        .unwrap();
        // Whatever the gate said, a person makes it champion.
        ok(root, &["models", "alias", "set", "champion", "3"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, r) = server.post("/v1/recommendations", &json!({"user": "u3"})).await;
            if r["path"]["fallbacks"] == json!(["ranker_missing", "previous_version"]) {
                assert_eq!(r["model_version"], 2, "{r}");
                assert_eq!(r["path"]["ranked_by"], "heavy");
                break;
            }
            assert!(Instant::now() < deadline, "v3 without rankers was not handled: {r}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.stop().await;

        // The same cascade with the ranker's aggregates in Redis (the real one; `.ci/run` starts
        // it and sets CASCADE_REQUIRE_REDIS=1, elsewhere its absence skips this part).
        let url = std::env::var("CASCADE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut con =
            match redis::Client::open(url.as_str()).unwrap().get_connection_with_timeout(Duration::from_secs(2)) {
                Ok(con) => con,
                Err(e) if std::env::var("CASCADE_REQUIRE_REDIS").is_ok_and(|v| !v.is_empty() && v != "0") => {
                    panic!("Redis is not reachable at {url} ({e}); start redis-server or set CASCADE_TEST_REDIS_URL")
                }
                Err(e) => {
                    eprintln!("SKIPPED the Redis part: Redis is not reachable at {url} ({e})");
                    return;
                }
            };
        let prefix = format!("cascade-test:serving:{}", std::process::id());
        let (u, p) = (url.clone(), prefix.clone());
        let server = InProcess::start_with(root, move |c| {
            let mut features_store = cascade_features::FeaturesStoreConfig::from_config(c).unwrap();
            features_store.backend = cascade_features::FeaturesBackend::Redis;
            features_store.redis_url = u;
            features_store.redis_prefix = p;
            c.set(&features_store).unwrap();
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let r = loop {
            let (status, r) = server.post("/v1/recommendations", &json!({"user": "u3"})).await;
            assert_eq!(status, 200, "{r}");
            let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut con).unwrap();
            if r["path"]["ranked_by"] == "heavy" && !r["path"]["cold_start"].as_bool().unwrap() && keys.len() > 100 {
                break r;
            }
            assert!(Instant::now() < deadline, "the Redis-backed cascade did not serve: {r}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // v3 (no rankers) is the latest; after the restart v2's cascade serves, its features from Redis.
        assert_eq!(r["path"]["fallbacks"], json!(["ranker_missing", "previous_version"]), "{r}");
        assert_eq!(r["model_version"], 2);

        // bpr's lists are precomputed for v2, the version serving, into Redis; requests read
        // them from there: a list planted in Redis is what the bpr source proposes.
        let list_key = format!("{prefix}#blob:lists:2:bpr:u3");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stored = loop {
            let stored: Option<Vec<u8>> = redis::cmd("GET").arg(&list_key).query(&mut con).unwrap();
            if let Some(stored) = stored {
                break stored;
            }
            assert!(Instant::now() < deadline, "no precomputed bpr list for u3 in Redis");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let stored = cascade_bundle::decode_list(&stored).expect("a list in the current format");
        assert!(!stored.is_empty());
        let catalogue: Vec<String> = serde_json::from_str(
            &std::fs::read_to_string(root.join("data/registry/bundles/000002/items.json")).unwrap(),
        )
        .unwrap();
        let (_, before) = server.post("/v1/recommendations", &json!({"user": "u3", "k": 20})).await;
        let planted: Vec<String> = ids(&before).into_iter().rev().collect();
        let list: Vec<(u32, f32)> = planted
            .iter()
            .enumerate()
            .map(|(r, id)| (catalogue.iter().position(|c| c == id).unwrap() as u32, 1.0 - r as f32 / 100.0))
            .collect();
        let _: () = redis::cmd("SET")
            .arg(&list_key)
            .arg(cascade_bundle::encode_list(&list))
            .arg("PX")
            .arg(60_000)
            .query(&mut con)
            .unwrap();
        let (_, after) = server.post("/v1/recommendations", &json!({"user": "u3", "k": 20, "explain": true})).await;
        let mut bpr_hits = 0;
        for item in after["items"].as_array().unwrap() {
            for hit in item["explain"]["hits"].as_array().unwrap().iter().filter(|h| h["source"] == "bpr") {
                bpr_hits += 1;
                let rank = hit["rank"].as_u64().unwrap() as usize;
                assert_eq!(planted[rank], item["id"].as_str().unwrap(), "bpr proposes the planted list in order");
            }
        }
        assert!(bpr_hits > 0, "the planted list's items were shown: {after}");
        server.stop().await;
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut con).unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query(&mut con).unwrap();
        }
    });
}
