//! Rollouts judged on outcomes, end to end: a synthetic world whose users click the shown items
//! they truly like (their latent taste, from `cascade-testkit`), a good champion and a
//! challenger that shows only the most popular items. The challenger's CTR falls below the
//! champion's: its `ctr_ratio` guardrail retires it, and a champion–challenger comparison
//! shows the difference with its interval.

use crate::ok;
use crate::rollout::{audit, challenger, until};
use crate::serving::InProcess;
use cascade_core::Config;
use cascade_testkit::{World, WorldConfig};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A project with two bundles (v1 champion, v2 trained after it) over the world `cascade
/// generate` draws with seed 42, whose clicks may name the response they came from; and that
/// world's ground truth.
fn project(root: &Path) -> World {
    ok(root, &["init", "."]);
    let path = root.join("cascade.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let click = "fields = { position = \"int?\", surface = \"string?\" }";
    let with_request_id = "fields = { position = \"int?\", surface = \"string?\", request_id = \"string?\" }";
    assert!(config.contains(&format!("[events.click]\nentities = [\"user\", \"item\"]\n{click}")));
    std::fs::write(&path, config.replacen(click, with_request_id, 1)).unwrap();
    ok(root, &["generate", "--users", "300", "--items", "400", "--events", "30000", "--json"]);
    ok(root, &["train", "--no-tune", "--json"]);
    ok(root, &["train", "--no-tune", "--json"]);
    World::catalogue(&WorldConfig { seed: 42, users: 300, items: 400, events: 30_000, ..WorldConfig::default() })
}

/// A user likes an item when their true affinity (taste · item vector) is above 0.5: about 59
/// of the 400 items per user.
fn likes(world: &World, user: &str, item: &str) -> bool {
    match (world.user_index(user), world.item_index(item)) {
        (Some(u), Some(i)) => world.affinity(u, i) > 0.5,
        _ => false,
    }
}

/// `default` rolls out with `rollout`, its challenger served by `popular` (the 10 most popular
/// items, ranked); neither excludes what a user has clicked, so a user's tastes stay what the
/// lists are judged on. Outcomes wait 3 s for their impressions' labels.
fn with_rollout(rollout: &str) -> impl FnOnce(&mut Config) {
    let rules = "rules = [{ type = \"exclude_unavailable\" }, { type = \"exclude_requested\" }]\n";
    let deadlines = "retrieval_ms = 5000\nfeatures_ms = 5000\nranking_ms = 5000\n";
    let default: toml::Table =
        toml::from_str(&format!("{deadlines}{rules}[rollout]\nchallenger_pipeline = \"popular\"\n{rollout}")).unwrap();
    let popular: toml::Table =
        toml::from_str(&format!("{deadlines}{rules}sources = {{ pop = 10 }}\nprecomputed = []\n")).unwrap();
    move |config: &mut Config| {
        config.pipelines.insert("default".into(), default);
        config.pipelines.insert("popular".into(), popular);
        let mut serving = cascade_serving::ServingConfig::from_config(config).unwrap();
        serving.attribution_window = Duration::from_secs(3);
        config.set(&serving).unwrap();
    }
}

/// Requests from 200 users on four connections until stopped; after each response the user
/// clicks the shown items they like, naming the response. Counts the clicks sent.
fn drive(
    server: &InProcess,
    world: &Arc<World>,
    stop: &Arc<AtomicBool>,
    clicks: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4u64)
        .map(|c| {
            let (url, world, stop, clicks) = (server.url.clone(), world.clone(), stop.clone(), clicks.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = c * 50;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let user = format!("u{}", n % 200);
                    let Ok(r) =
                        client.post(format!("{url}/v1/recommendations")).json(&json!({"user": user})).send().await
                    else {
                        continue;
                    };
                    let Ok(response) = r.json::<Value>().await else { continue };
                    let Some(items) = response["items"].as_array() else { continue };
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
                    let events: Vec<Value> = items
                        .iter()
                        .filter_map(|i| i["id"].as_str())
                        .filter(|item| likes(&world, &user, item))
                        .map(|item| {
                            json!({"type": "click", "ts": now as i64, "user": user, "item": item,
                                   "fields": {"request_id": response["request_id"]}})
                        })
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    let sent = client.post(format!("{url}/v1/events")).json(&events).send().await;
                    if sent.is_ok_and(|r| r.status().is_success()) {
                        clicks.fetch_add(events.len() as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

#[test]
fn a_challenger_users_click_less_is_rolled_back_by_ctr_and_compared_with_an_interval() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let world = Arc::new(project(root));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // Champion–challenger: both arms serve half the users; their outcomes are compared.
    rt.block_on(async {
        let rollout = "strategy = \"champion_challenger\"\nshare = 50\nwindow = \"1s\"\n";
        let server = InProcess::start_with(root, with_rollout(rollout)).await;
        ok(root, &["models", "alias", "set", "challenger", "2", "--why", "popular items only"]);
        let (stop, clicks) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let load = drive(&server, &world, &stop, &clicks);
        let compared = || server.recommender.rollouts()[0].comparison.clone();
        until("300 requests on each arm", || {
            compared().is_some_and(|c| c.champion.requests >= 300 && c.challenger.requests >= 300)
        })
        .await;
        until("labels of the champion's impressions final", || {
            let state = server.recommender.rollouts()[0].state.clone().unwrap();
            state.windows.iter().any(|w| w.champion.ece.is_some())
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        let (_, body) = server.get("/v1/rollouts").await;
        let rollouts: Value = serde_json::from_str(&body).unwrap();
        let c = &rollouts["rollouts"][0]["comparison"];
        let number = |key: &str| c[key].as_f64().unwrap_or_else(|| panic!("{key} in {c}"));
        let (champion, challenger) = (number("champion_rate"), number("challenger_rate"));
        let (difference, low, high) = (number("difference"), number("ci95_low"), number("ci95_high"));
        assert!((difference - (challenger - champion)).abs() < 1e-12);
        assert!(low < difference && difference < high, "{c}");
        // Users shown only popular items find fewer they like: clearly, not by chance.
        assert!(high < 0.0 && number("p_value") < 0.001 && number("relative_lift") < -0.1, "{c}");
        let count = |arm: &str, key: &str| c[arm][key].as_u64().unwrap();
        for arm in ["champion", "challenger"] {
            assert!(count(arm, "converted") <= count(arm, "requests"), "{c}");
            assert!(0 < count(arm, "clicked") && count(arm, "clicked") <= count(arm, "impressions"), "{c}");
        }
        // No click is counted twice: at most every click sent is attributed.
        let attributed = count("champion", "outcomes") + count("challenger", "outcomes");
        assert!(attributed <= clicks.load(Ordering::Relaxed), "{attributed} attributed of {clicks:?} sent");
        let state = &rollouts["rollouts"][0]["state"];
        assert_eq!(state["phase"], "running", "champion_challenger never ends on its own");
        let windows = state["windows"].as_array().unwrap();
        assert!(windows.iter().any(|w| w["champion"]["ctr"].as_f64().is_some() && w["ctr_ratio"].as_f64().is_some()));
        let labelled = windows.iter().find(|w| w["champion"]["ece"].is_number()).unwrap();
        assert!(labelled["champion"]["labelled"].as_u64() > Some(0), "{labelled}");
        server.stop().await;
        // The totals of the judged windows are saved with the state.
        let status = ok(root, &["rollout", "status"]);
        assert!(status.contains("outcomes per request: champion") && status.contains("95% CI"), "{status}");
    });

    // A canary held at 50%: the same challenger is retired by its CTR against the champion's.
    rt.block_on(async {
        let rollout = r#"
            strategy = "canary"
            steps = [50, 100]
            min_dwell = "1h"
            window = "2s"
            [rollout.guardrails]
            ctr_ratio = { min = 0.8, min_requests = 100, windows = 3 }
        "#;
        let server = InProcess::start_with(root, with_rollout(rollout)).await;
        until("the canary started", || {
            server.recommender.rollouts()[0].state.as_ref().is_some_and(|s| s.strategy == "canary")
        })
        .await;
        let (stop, clicks) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let load = drive(&server, &world, &stop, &clicks);
        until("the challenger rolled back", || challenger(root).is_none()).await;
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await.unwrap();
        }
        let rollback = &audit(root, "rollout.rollback")[0];
        let why = rollback["why"].as_str().unwrap();
        assert!(why.starts_with("guardrail ctr_ratio:") && why.ends_with("< 0.8 for 3 windows"), "{why}");
        assert_eq!((rollback["before"].as_u64(), rollback["after"].as_u64()), (Some(2), Some(1)));
        // Retired within its configured windows: the last three judged windows crossed it.
        let state = server.recommender.rollouts()[0].state.clone().unwrap();
        let judged: Vec<_> = state
            .windows
            .iter()
            .filter(|w| {
                let sample = w.champion.outcomes.impressions.min(w.challenger.outcomes.impressions);
                w.ctr_ratio.is_some() && sample >= 100
            })
            .collect();
        assert!(judged.len() >= 3);
        for w in &judged[judged.len() - 3..] {
            assert!(w.crossed.contains(&"ctr_ratio".to_string()) && w.ctr_ratio < Some(0.8), "{w:?}");
        }
        let (_, metrics) = server.get("/metrics").await;
        let counted = metrics.lines().any(|l| {
            l.starts_with("cascade_rollbacks_total{") && l.contains("guardrail=\"ctr_ratio\"") && l.ends_with(" 1")
        });
        assert!(counted, "{}", metrics.lines().filter(|l| l.contains("rollback")).collect::<Vec<_>>().join("\n"));
        assert!(metrics.contains("cascade_rollout_outcomes_total{"), "outcome metrics exported");
        server.stop().await;
    });
}
