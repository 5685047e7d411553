//! Rollouts end to end: a challenger bundle on a canary, judged by guardrails while requests
//! flow. A slow one and an erroring one are retired automatically, a good one ramps to 100% and
//! becomes champion; shadow scoring compares lists without serving the challenger.

use crate::ok;
use crate::serving::InProcess;
use cascade_core::Config;
use cascade_serving::Stage;
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
    let out = crate::cascade(root, &["train", "--no-tune", "--json"]);
    assert!(out.status.success());
    let _ = out;
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

fn audit(root: &Path, action: &str) -> Vec<Value> {
    let out = ok(root, &["audit", "--action", action, "--json"]);
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

fn challenger(root: &Path) -> Option<u64> {
    let aliases: Value = serde_json::from_str(&ok(root, &["models", "alias", "list", "--json"])).unwrap();
    aliases["challenger"].as_u64()
}

/// Waits (up to a minute: a debug build on a busy machine) until `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
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
    // The rollout's state was persisted beside the log.
    let state: Value = serde_json::from_slice(&std::fs::read(root.join("data/rollouts.json")).unwrap()).unwrap();
    assert_eq!(state["default"]["phase"], "promoted");
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
        let (_, metrics) = server.get("/metrics").await;
        assert!(metrics.contains("cascade_shadow_rbo"), "shadow metrics exported");
        server.stop().await;
    });
}
