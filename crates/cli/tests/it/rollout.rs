//! Rollouts end to end: a challenger bundle on a canary, judged by guardrails while requests
//! flow. A slow one and an erroring one are retired automatically, a good one ramps to 100% and
//! becomes champion; shadow scoring compares lists without serving the challenger.

use crate::ok;
use crate::serving::InProcess;
use cascade_core::Config;
use cascade_serving::Stage;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A project with two bundles: v1 champion, v2 trained but not promoted.
fn two_bundles(root: &Path) {
    ok(root, &["init", "."]);
    ok(root, &["generate", "--users", "300", "--items", "400", "--events", "30000", "--json"]);
    ok(root, &["train", "--no-tune", "--json"]);
    // The second waits for a person whatever the gate says: each test moves the aliases itself.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"))
        .current_dir(root)
        .args(["train", "--no-tune", "--json"])
        .env("CASCADE__TRAIN__PROMOTE", "manual")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((manifest["version"].as_u64(), &manifest["gate"]["promoted_to"]), (Some(2), &Value::Null));
}

fn with_rollout(rollout: &str) -> impl FnOnce(&mut Config) {
    let table: toml::Table =
        toml::from_str(&format!("retrieval_ms = 5000\nfeatures_ms = 5000\nranking_ms = 5000\n[rollout]\n{rollout}"))
            .unwrap();
    move |config: &mut Config| {
        config.pipelines.insert("default".into(), table);
    }
}

/// Requests from 200 users on four connections, round after round, until stopped.
fn drive(server: &InProcess, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4u64)
        .map(|c| {
            let (url, stop) = (server.url.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = c * 50;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = json!({"user": format!("u{}", n % 200)});
                    let _ = client.post(format!("{url}/v1/recommendations")).json(&body).send().await;
                }
            })
        })
        .collect()
}

pub(crate) fn audit(root: &Path, action: &str) -> Vec<Value> {
    let out = ok(root, &["audit", "--action", action, "--json"]);
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

pub(crate) fn challenger(root: &Path) -> Option<u64> {
    let aliases: Value = serde_json::from_str(&ok(root, &["models", "alias", "list", "--json"])).unwrap();
    aliases["challenger"].as_u64()
}

/// Waits (up to a minute: a debug build on a busy machine) until `done`.
pub(crate) async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn bad_challengers_are_rolled_back_and_a_good_one_is_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_bundles(root);
    let rollout = r#"
        strategy = "canary"
        steps = [50, 100]
        min_dwell = "0s"
        min_requests = 20
        window = "1s"
        [rollout.guardrails]
        p99_latency_ms = { max = 250.0, min_requests = 3, windows = 2 }
        error_rate = { max = 0.05, min_requests = 3, windows = 2 }
    "#;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = InProcess::start_with(root, with_rollout(rollout)).await;
        let faults = server.recommender.faults();
        let stop = Arc::new(AtomicBool::new(false));
        let load = drive(&server, &stop);

        // A slow challenger: every retrieval of v2 stalls 400 ms.
        faults.only_for(2);
        faults.stall(Stage::Retrieval, Duration::from_millis(400));
        ok(root, &["models", "alias", "set", "challenger", "2", "--why", "slow"]);
        until("a request served by the challenger", || server.recommender.challenger_version() == Some(2)).await;
        until("the slow challenger rolled back", || challenger(root).is_none()).await;
        let rollback = &audit(root, "rollout.rollback")[0];
        let why = rollback["why"].as_str().unwrap();
        assert!(why.starts_with("guardrail p99_latency_ms:") && why.ends_with("for 2 windows"), "{why}");
        let moved = &audit(root, "alias.delete")[0];
        assert_eq!(
            (moved["target"].as_str(), moved["who"].as_str()),
            (Some("recommender@challenger"), Some("cascade:rollout"))
        );

        // An erroring challenger: every retrieval of v2 fails.
        faults.clear();
        faults.only_for(2);
        faults.fail(Stage::Retrieval);
        ok(root, &["models", "alias", "set", "challenger", "2", "--why", "erroring"]);
        until("the erroring challenger rolled back", || audit(root, "rollout.rollback").len() == 2).await;
        let why = audit(root, "rollout.rollback")[0]["why"].as_str().unwrap().to_string();
        assert!(why.starts_with("guardrail error_rate:"), "{why}");
        assert_eq!(challenger(root), None);
        let (_, r) = server.post("/v1/recommendations", &json!({"user": "u7"})).await;
        assert_eq!(r["model_version"], 1, "the champion still serves");

        // A good challenger ramps 50% → 100% and becomes champion.
        faults.clear();
        ok(root, &["models", "alias", "set", "challenger", "2", "--why", "good"]);
        until("the good challenger promoted", || server.recommender.version() == Some(2)).await;
        let promote = &audit(root, "rollout.promote")[0];
        assert_eq!((promote["before"].as_u64(), promote["after"].as_u64()), (Some(1), Some(2)));
        assert!(!audit(root, "rollout.step").is_empty(), "it went through the 50% step");
        assert_eq!(challenger(root), None);
        let (_, r) = server.post("/v1/recommendations", &json!({"user": "u7"})).await;
        assert_eq!((r["model_version"].as_u64(), r["path"]["arm"].as_str()), (Some(2), Some("champion")));
        let (_, metrics) = server.get("/metrics").await;
        for guardrail in ["p99_latency_ms", "error_rate"] {
            let counted = metrics.lines().any(|l| {
                l.starts_with("cascade_rollbacks_total{")
                    && l.contains(&format!("guardrail=\"{guardrail}\""))
                    && l.contains("pipeline=\"default\"")
                    && l.ends_with(" 1")
            });
            assert!(
                counted,
                "{guardrail}: {}",
                metrics.lines().filter(|l| l.contains("rollbacks")).collect::<Vec<_>>().join("\n")
            );
        }
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        server.stop().await;
    });
    // The rollout's state was persisted beside the log; `cascade rollout status` reads it.
    let state: Value = serde_json::from_slice(&std::fs::read(root.join("data/rollouts.json")).unwrap()).unwrap();
    assert_eq!(state["default"]["phase"], "promoted");
    let status = ok(root, &["rollout", "status"]);
    assert!(status.starts_with("default: canary of v2 against champion v1 — promoted"), "{status}");
    assert!(status.contains("every step passed its guardrails") && status.contains("challenger"), "{status}");
}

#[test]
fn canary_shares_are_stable_per_user_and_shadow_never_serves_the_challenger() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_bundles(root);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Canary at a fixed first step: each user always gets the same arm.
    rt.block_on(async {
        let rollout = "strategy = \"canary\"\nsteps = [30, 100]\nmin_dwell = \"1h\"\n";
        let server = InProcess::start_with(root, with_rollout(rollout)).await;
        ok(root, &["models", "alias", "set", "challenger", "2"]);
        until("the canary started", || {
            server.recommender.rollouts()[0].state.as_ref().is_some_and(|s| s.challenger == 2)
        })
        .await;
        let mut arms = std::collections::BTreeMap::new();
        for round in 0..2 {
            for u in 0..100 {
                let (status, r) = server.post("/v1/recommendations", &json!({"user": format!("u{u}")})).await;
                assert_eq!(status, 200);
                let served = (r["model_version"].as_u64().unwrap(), r["path"]["arm"].as_str().unwrap().to_string());
                if round == 0 {
                    arms.insert(u, served);
                } else {
                    assert_eq!(arms[&u], served, "u{u} changed arms");
                }
            }
        }
        let on_challenger = arms.values().filter(|(v, arm)| *v == 2 && arm == "challenger").count();
        assert!((15..=45).contains(&on_challenger), "{on_challenger} of 100 users on a 30% canary");
        assert!(arms.values().all(|(v, arm)| (*v == 2) == (arm == "challenger")));
        let started = server.recommender.rollouts()[0].state.clone().unwrap();
        server.stop().await;
        // A restart resumes the same rollout where it was, and users keep their arms.
        let server = InProcess::start_with(root, with_rollout(rollout)).await;
        until("the challenger reloaded", || server.recommender.challenger_version() == Some(2)).await;
        let resumed = server.recommender.rollouts()[0].state.clone().unwrap();
        assert_eq!(
            (resumed.started_ms, resumed.challenger_since, resumed.step),
            (started.started_ms, started.challenger_since, started.step)
        );
        for u in 0..20 {
            let (_, r) = server.post("/v1/recommendations", &json!({"user": format!("u{u}")})).await;
            assert_eq!(arms[&u].1, r["path"]["arm"].as_str().unwrap(), "u{u} after the restart");
        }
        server.stop().await;
    });
    // Shadow: the champion answers everything; the challenger's lists are compared.
    rt.block_on(async {
        let rollout = "strategy = \"shadow\"\nshadow_sample = 1.0\n";
        let server = InProcess::start_with(root, with_rollout(rollout)).await;
        until("the shadow rollout started", || {
            server.recommender.rollouts()[0].state.as_ref().is_some_and(|s| s.strategy == "shadow")
        })
        .await;
        for u in 0..60 {
            let (_, r) = server.post("/v1/recommendations", &json!({"user": format!("u{u}")})).await;
            assert_eq!((r["model_version"].as_u64(), r["path"]["arm"].as_str()), (Some(1), Some("champion")));
        }
        until("shadow scores", || server.recommender.rollouts()[0].shadow.as_ref().is_some_and(|s| s.scored >= 30))
            .await;
        let shadow = server.recommender.rollouts()[0].shadow.clone().unwrap();
        let (overlap, rbo) = (shadow.mean_overlap_at_k.unwrap(), shadow.mean_rbo.unwrap());
        assert!((0.0..=1.0).contains(&overlap) && (0.0..=1.0).contains(&rbo), "{shadow:?}");
        // Two trainings of one log share most of their top lists.
        assert!(overlap > 0.2, "{shadow:?}");
        assert!(shadow.p99_latency_ms.is_some());
        // A judged window saves the comparison for `cascade rollout status`.
        until("a judged shadow window", || {
            server.recommender.rollouts()[0].state.as_ref().is_some_and(|s| s.shadow.is_some())
        })
        .await;
        let status = ok(root, &["rollout", "status"]);
        assert!(status.contains("default: shadow of v2") && status.contains("shadow: "), "{status}");
        let (_, metrics) = server.get("/metrics").await;
        assert!(metrics.contains("cascade_shadow_rbo"), "shadow metrics exported");
        server.stop().await;
    });
}

#[test]
fn the_admin_api_moves_aliases_serves_them_at_once_and_audits_who() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_bundles(root);
    let token = |name: &str, scope: &str| -> String {
        let out = ok(root, &["keys", "create", "--name", name, "--scope", scope, "--json"]);
        serde_json::from_str::<Value>(&out).unwrap()["token"].as_str().unwrap().to_string()
    };
    let (admin, app) = (token("ops", "admin"), token("app", "serve"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = InProcess::start(root).await;
        let client = reqwest::Client::new();
        let call = |method: Method, path: &str, token: &str, body: Option<Value>| {
            let mut req = client.request(method, format!("{}{path}", server.url)).bearer_auth(token);
            if let Some(body) = body {
                req = req.json(&body);
            }
            async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        // Admin routes need the admin scope.
        let (status, body) = call(Method::GET, "/v1/models", &app, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
        let (status, _) =
            client.get(format!("{}/v1/audit", server.url)).send().await.map(|r| (r.status().as_u16(), ())).unwrap();
        assert_eq!(status, 401);
        let (status, models) = call(Method::GET, "/v1/models", &admin, None).await;
        assert_eq!(status, 200);
        let models = models["models"].as_array().unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!(models[0]["aliases"], json!(["champion"]));
        assert_eq!(models[0]["gate"]["promoted_to"], "champion");

        // A move answers after the recommender reloaded: the next request is served by it.
        let recommend = |token: String| {
            let (client, url) = (client.clone(), server.url.clone());
            async move {
                let r =
                    client.post(format!("{url}/v1/recommendations")).bearer_auth(token).json(&json!({"user": "u3"}));
                r.send().await.unwrap().json::<Value>().await.unwrap()["model_version"].as_u64()
            }
        };
        assert_eq!(recommend(app.clone()).await, Some(1));
        let body = json!({"version": 2, "why": "canary looked fine"});
        let (status, moved) = call(Method::PUT, "/v1/models/recommender/aliases/champion", &admin, Some(body)).await;
        assert_eq!(status, 200, "{moved}");
        assert_eq!(
            (moved["from"].as_u64(), moved["to"].as_u64(), moved["who"].as_str()),
            (Some(1), Some(2), Some("key:ops"))
        );
        assert_eq!(recommend(app.clone()).await, Some(2));
        // One step back, over HTTP.
        let (status, back) = call(
            Method::POST,
            "/v1/models/recommender/aliases/champion/rollback",
            &admin,
            Some(json!({"why": "ctr dropped"})),
        )
        .await;
        assert_eq!((status, back["to"].as_u64(), back["kind"].as_str()), (200, Some(1), Some("rollback")));
        assert_eq!(recommend(app.clone()).await, Some(1));
        let (status, history) =
            call(Method::GET, "/v1/models/recommender/aliases/champion/history", &admin, None).await;
        assert_eq!(status, 200);
        let whys: Vec<&str> = history["moves"].as_array().unwrap().iter().filter_map(|m| m["why"].as_str()).collect();
        assert_eq!(whys[1..], ["canary looked fine", "ctr dropped"]);

        // Refusals name the problem and change nothing.
        let refusals = [
            (Method::PUT, "/v1/models/recommender/aliases/latest", Some(json!({"version": 1})), 400, "invalid_request"),
            (Method::PUT, "/v1/models/recommender/aliases/v2", Some(json!({"version": 1})), 400, "invalid_request"),
            (Method::PUT, "/v1/models/recommender/aliases/champion", Some(json!({"version": 9})), 404, "not_found"),
            (Method::PUT, "/v1/models/fraud/aliases/champion", Some(json!({"version": 1})), 404, "not_found"),
            (
                Method::PUT,
                "/v1/models/recommender/aliases/x",
                Some(json!({"version": 1, "why": "w".repeat(1001)})),
                400,
                "invalid_request",
            ),
            (Method::PUT, "/v1/models/recommender/aliases/x", Some(json!({"version": "1"})), 400, "malformed_json"),
            (Method::POST, "/v1/models/recommender/aliases/champion/rollback", None, 409, "conflict"),
            (Method::DELETE, "/v1/models/recommender/aliases/nope", None, 404, "not_found"),
            (Method::GET, "/v1/models/recommender/aliases/nope/history", None, 404, "not_found"),
            (Method::GET, "/v1/audit?limit=0", None, 400, "invalid_request"),
        ];
        for (method, path, body, status, code) in refusals {
            let (got, answer) = call(method.clone(), path, &admin, body).await;
            assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{method} {path}: {answer}");
        }
        let (_, aliases) = call(Method::GET, "/v1/models/recommender/aliases", &admin, None).await;
        assert_eq!(aliases["aliases"], json!({"champion": 1}));

        // The audit log names the key; pages follow `next_before`.
        let (_, page) = call(Method::GET, "/v1/audit?action=alias&limit=2", &admin, None).await;
        let entries = page["entries"].as_array().unwrap();
        assert_eq!(
            (entries[0]["action"].as_str(), entries[0]["who"].as_str()),
            (Some("alias.rollback"), Some("key:ops"))
        );
        let next = page["next_before"].as_u64().unwrap();
        let (_, older) =
            call(Method::GET, &format!("/v1/audit?action=alias&limit=10&before={next}"), &admin, None).await;
        let older = older["entries"].as_array().unwrap();
        assert!(older.iter().all(|e| e["id"].as_u64().unwrap() < next));
        assert_eq!(older.last().unwrap()["why"], "promotion gate: no champion yet");
        let (_, keys) = call(Method::GET, "/v1/audit?action=key", &admin, None).await;
        assert_eq!(keys["entries"].as_array().unwrap().len(), 2, "key creations are audited");
        let (status, rollouts) = call(Method::GET, "/v1/rollouts", &admin, None).await;
        assert_eq!((status, rollouts["rollouts"][0]["strategy"].as_str()), (200, Some("none")));
        server.stop().await;
    });
}

#[test]
fn blue_green_switches_bundle_and_pipeline_together_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    two_bundles(root);
    let blue_green = |config: &mut Config| {
        with_rollout(
            "strategy = \"blue_green\"\nmin_dwell = \"0s\"\nmin_requests = 20\nwindow = \"1s\"\nchallenger_pipeline = \"green\"\n",
        )(config);
        config.pipelines.insert("green".into(), toml::from_str("k = 3\nmax_k = 3").unwrap());
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = InProcess::start_with(root, blue_green).await;
        let served = |r: &Value| {
            (
                r["model_version"].as_u64().unwrap(),
                r["path"]["arm"].as_str().unwrap().to_string(),
                r["items"].as_array().unwrap().len(),
            )
        };
        let (_, r) = server.post("/v1/recommendations", &json!({"user": "u1", "k": 10})).await;
        assert_eq!(served(&r), (1, "champion".into(), 10));
        ok(root, &["models", "alias", "set", "challenger", "2"]);
        until("green serving everyone", || {
            server.recommender.rollouts()[0].state.as_ref().is_some_and(|s| s.challenger == 2)
        })
        .await;
        // Every user at once, with the green pipeline's configuration (k = 3).
        let mut on_green = 0;
        let stop = Arc::new(AtomicBool::new(false));
        let load = drive(&server, &stop);
        for u in 0..30 {
            let (_, r) = server.post("/v1/recommendations", &json!({"user": format!("u{u}")})).await;
            if server.recommender.challenger_version() == Some(2) {
                assert_eq!((r["path"]["arm"].as_str(), r["items"].as_array().unwrap().len()), (Some("challenger"), 3));
                on_green += 1;
            }
        }
        assert!(on_green > 0);
        until("promoted", || server.recommender.version() == Some(2)).await;
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        // The switch stays: the promoted bundle with the green configuration.
        let (_, r) = server.post("/v1/recommendations", &json!({"user": "u1"})).await;
        assert_eq!(served(&r), (2, "champion".into(), 3));
        // And one rollback switches both back at once.
        ok(root, &["models", "rollback", "--why", "blue again"]);
        until("blue again", || server.recommender.version() == Some(1)).await;
        let (_, r) = server.post("/v1/recommendations", &json!({"user": "u1", "k": 10})).await;
        assert_eq!(served(&r), (1, "champion".into(), 10));
        server.stop().await;
    });
}
