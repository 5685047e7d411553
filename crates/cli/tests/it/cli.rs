//! Projects, import, generate, train, evaluate, candidates and serve, as a user drives them.

use crate::{cascade, ok};

use std::io::{BufRead, BufReader};
use std::process::Command;

#[test]
fn init_config_layers_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", ".", "--name", "shop"]);
    assert!(!cascade(dir.path(), &["init", "."]).status.success(), "init refuses to overwrite");
    let shown = ok(dir.path(), &["config"]);
    assert!(shown.contains("name = \"shop\"") && shown.contains("addr = \"127.0.0.1:8080\""), "{shown}");
    let out = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .current_dir(dir.path())
        .arg("config")
        .env("CASCADE__SERVER__ADDR", "0.0.0.0:9999")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("addr = \"0.0.0.0:9999\""));
    std::fs::write(dir.path().join("bad.toml"), "[server]\naddr = \"x\"\n\n[log]\nfsync = \"sometimes\"\n").unwrap();
    let out = cascade(dir.path(), &["--config", "bad.toml", "config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml") && err.contains("line 5") && err.contains("sometimes"), "{err}");
    // `[features]` parses in core but is resolved by the feature engine when the project loads:
    // every command refuses a view that makes no sense, naming the key.
    std::fs::write(
        dir.path().join("bad_features.toml"),
        "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nc = { agg = \"count\" }\nr = { agg = \"ratio\", numerator = \"c\", denominator = \"nope\" }\n",
    )
    .unwrap();
    let out = cascade(dir.path(), &["--config", "bad_features.toml", "config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad_features.toml")
            && err.contains("features.v.features.r:")
            && err.contains("denominator `nope` is not a feature"),
        "{err}"
    );
}

#[test]
fn generate_to_file_then_import_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    let args = ["generate", "--users", "50", "--items", "80", "--events", "3000", "--out", "world.ndjson", "--json"];
    ok(dir.path(), &args);
    let lines = std::fs::read_to_string(dir.path().join("world.ndjson")).unwrap().lines().count();
    assert_eq!(lines, 80 + 50 + 3000);
    let first: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["import", "--json", "ndjson", "world.ndjson"])).unwrap();
    assert_eq!((first["rows"].as_u64(), first["written"].as_u64()), (Some(3130), Some(3130)));
    // Events carry ids, so importing again stores no event twice; catalogue upserts are
    // last-writer-wins records and are written again.
    let again: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["import", "--json", "ndjson", "world.ndjson"])).unwrap();
    assert_eq!((again["written"].as_u64(), again["duplicates"].as_u64()), (Some(130), Some(3000)));
}

#[test]
fn import_csv_fail_writes_nothing_and_skip_reports_lines() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    std::fs::write(
        dir.path().join("r.csv"),
        "uid,mid,stars,when\n1,10,4,1700000000\n2,11,x,1700000001\n3,12,5,1700000002\n",
    )
    .unwrap();
    let map = "user=uid,item=mid,value=stars,ts=when";
    let out = cascade(dir.path(), &["import", "csv", "r.csv", "--event-type", "rating", "--map", map]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("r.csv:3") && err.contains("nothing was written"), "{err}");
    let out = ok(
        dir.path(),
        &["import", "--on-error", "skip", "--json", "csv", "r.csv", "--event-type", "rating", "--map", map],
    );
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["written"], 2);
    assert_eq!(summary["skipped"], 1);
    assert!(summary["skipped_examples"][0].as_str().unwrap().contains("r.csv:3"), "{summary}");
    assert_eq!(summary["next_offset"], 2, "the failed run wrote nothing");
}

#[cfg(unix)]
#[test]
fn serve_ingests_and_sigterm_flushes() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    let server = crate::serve(dir.path(), &[]);
    let url = server.url.clone();
    let body = r#"[{"id":"a","type":"like","ts":"2024-01-01T00:00:00Z","user":"u","item":"i"}]"#;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{url}/v1/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    // Training reads the log beside the running server (read-only, no lock).
    let manifest: serde_json::Value = serde_json::from_str(&ok(dir.path(), &["train", "--no-tune", "--json"])).unwrap();
    assert_eq!(manifest["data"]["rows"], 1, "the served event is in the training data");
    let rest = server.stop();
    assert!(rest.iter().any(|l| l.contains("flushed")), "{rest:?}");
    // The data directory is released and holds the event.
    let summary: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["generate", "--users", "1", "--items", "1", "--events", "0", "--json"]))
            .unwrap();
    assert_eq!(summary["next_offset"], 3, "one event from HTTP plus one item and one user");
}

#[test]
fn quickstart_without_serving() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["quickstart", "--dir", "qs", "--no-serve"]);
    assert!(out.contains("[1/4]") && out.contains("103000 written"), "{out}");
    assert!(out.contains("bundle v1") && out.contains("als"), "{out}");
    // It served: a sample recommendation through the whole cascade, with its trace.
    assert!(out.contains("ranked by heavy") && out.contains("because") && out.contains("  1. i"), "{out}");
    assert!(dir.path().join("qs/cascade.toml").exists());
    // Running it again reuses the project, stores no event twice and trains a second bundle
    // (retrievers only this time: the rankers were trained above, and this is about reuse).
    let again = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .current_dir(dir.path())
        .args(["quickstart", "--dir", "qs", "--no-serve"])
        .env("CASCADE__TRAIN__RANKERS", "false")
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let out = String::from_utf8(again.stdout).unwrap();
    assert!(out.contains("reusing") && out.contains("100000 duplicates") && out.contains("bundle v2"), "{out}");
    // v2 has no rankers, so the previous version's cascade served the sample.
    assert!(out.contains("ranked by heavy"), "{out}");
}

/// A synthetic world with planted tastes: the trained models must beat popularity, and the
/// bundle must say what it was trained on.
#[test]
fn train_bundles_models_with_lineage_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    ok(dir.path(), &["generate", "--users", "300", "--items", "400", "--events", "30000", "--json"]);
    let manifest: serde_json::Value = serde_json::from_str(&ok(dir.path(), &["train", "--json"])).unwrap();
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["format_version"], 1);
    assert!(manifest["data"]["rows"].as_u64().unwrap() > 1000);
    assert_eq!(manifest["data"]["hash"].as_str().unwrap().len(), 64);
    assert!(manifest["data"]["first_ts"].as_str().unwrap().starts_with("2024-01"));
    let names: Vec<&str> = manifest["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pop", "itemknn", "als", "bpr", "content", "trending", "light", "heavy"]);
    // The rankers: trained on the retrievers' candidates, measured on the held-out period, and
    // recorded with their feature list (and the feature views' versions) and parameters.
    let heavy = &manifest["models"][7];
    assert_eq!(heavy["kind"], "gbdt_lambdarank");
    let features: Vec<&str> =
        heavy["params"]["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(features.contains(&"als_rank") && features.contains(&"rank_item.n_7d_pct"), "{features:?}");
    assert_eq!(heavy["params"]["feature_views"]["rank_item"]["version"], 1);
    assert!(heavy["params"]["gbdt"]["num_iterations"].as_u64().unwrap() >= 1);
    let cascade_ndcg = manifest["metrics"]["cascade"]["ndcg_at_10"].as_f64().unwrap();
    assert!(cascade_ndcg > 0.0, "{cascade_ndcg}");
    let ece = manifest["metrics"]["cascade"]["ece"].as_f64().unwrap();
    assert!((0.0..0.5).contains(&ece), "{ece}");
    assert!(manifest["models"][2]["artifacts"].as_array().unwrap().iter().any(|a| a == "als.hnsw"));
    let ndcg = |m: &str| manifest["metrics"][m]["ndcg_at_10"].as_f64().unwrap();
    assert!(ndcg("als") > ndcg("pop"), "als {} vs pop {}", ndcg("als"), ndcg("pop"));
    assert!(ndcg("itemknn") > ndcg("pop"), "itemknn {} vs pop {}", ndcg("itemknn"), ndcg("pop"));
    let als_trials = manifest["search"].as_array().unwrap().iter().filter(|t| t["model"] == "als").count();
    assert_eq!(als_trials, 10, "the ALS grid is recorded");
    let list = ok(dir.path(), &["models", "list"]);
    assert!(list.contains("v1") && list.contains("@champion") && list.contains("NDCG@10"), "{list}");
    // The first bundle passed the gate with no champion to beat, and became champion.
    assert_eq!(manifest["gate"]["promoted_to"], "champion", "{}", manifest["gate"]);
    let shown: serde_json::Value = serde_json::from_str(&ok(dir.path(), &["models", "show", "1"])).unwrap();
    assert_eq!(shown, manifest);
    assert!(!cascade(dir.path(), &["models", "show", "7"]).status.success());
    let by_alias: serde_json::Value = serde_json::from_str(&ok(dir.path(), &["models", "show", "champion"])).unwrap();
    assert_eq!(by_alias, manifest);
    // Aliases from the CLI: a move, its history, a refused rollback and name, the audit log.
    ok(dir.path(), &["models", "alias", "set", "staging", "1", "--why", "smoke test"]);
    let aliases: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["models", "alias", "list", "--json"])).unwrap();
    assert_eq!(aliases, serde_json::json!({"champion": 1, "staging": 1}));
    let history: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["models", "alias", "history", "--json"])).unwrap();
    let moves = history.as_array().unwrap();
    assert_eq!(moves.len(), 2);
    assert_eq!((moves[1]["alias"].as_str(), moves[1]["to"].as_u64()), (Some("staging"), Some(1)));
    assert!(moves[0]["who"].as_str().unwrap().starts_with("cli:"), "{}", moves[0]);
    let refused = cascade(dir.path(), &["models", "rollback"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no earlier version"), "{refused:?}");
    let refused = cascade(dir.path(), &["models", "alias", "set", "latest", "1"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("reserved"), "{refused:?}");
    ok(dir.path(), &["models", "alias", "delete", "staging"]);
    let audit: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["audit", "--action", "alias", "--json"])).unwrap();
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["alias.delete", "alias.set", "alias.set"]);
    assert_eq!(audit[1]["why"], "smoke test");
    // Candidates for a user with history come from the warm sources, with attribution.
    let c: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["candidates", "--user", "u3", "--n", "20", "--json"])).unwrap();
    assert_eq!(c["cold"], false);
    let sources: std::collections::HashSet<&str> =
        c["candidates"].as_array().unwrap().iter().map(|x| x["source"].as_str().unwrap()).collect();
    assert!(sources.contains("als") && sources.contains("itemknn"), "{sources:?}");
    assert_eq!(c["candidates"].as_array().unwrap().len(), 20);
    let cold: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["candidates", "--user", "stranger", "--json"])).unwrap();
    assert_eq!(cold["cold"], true);
    assert!(cold["candidates"].as_array().unwrap().iter().all(|x| x["source"] == "pop" || x["source"] == "trending"));
    // Offline evaluation on the project's own log, cut by time.
    let out =
        ok(dir.path(), &["evaluate", "--cut", "2024-02-20T00:00:00Z", "--models", "pop,als", "--no-tune", "--json"]);
    assert_eq!(out.lines().count(), 2);
    let out = ok(dir.path(), &["evaluate", "--test-fraction", "0.1", "--models", "cascade", "--no-tune", "--json"]);
    let cascade: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cascade["model"], "cascade");
    for key in
        ["ndcg_at_10", "recall_at_10", "hr_at_10", "mrr_at_10", "map_at_10", "coverage_at_10", "candidate_recall"]
    {
        assert!(cascade[key].as_f64().is_some(), "{key} in {cascade}");
    }
    // The bundle's model files load and describe the same catalogue.
    let bundle = dir.path().join("data/registry/bundles/000001");
    let items: Vec<String> = serde_json::from_slice(&std::fs::read(bundle.join("items.json")).unwrap()).unwrap();
    let model = cascade_models::AnyModel::load_file(&bundle.join("als.model")).unwrap();
    assert_eq!(cascade_models::Retriever::n_items(model.retriever()), items.len());
    let registry = cascade_registry::Registry::open(dir.path().join("data/registry")).unwrap();
    let loaded = cascade_bundle::LoadedBundle::load(&registry.get(1).unwrap()).unwrap();
    let rankers = loaded.rankers.expect("the bundle has rankers");
    assert_eq!(rankers.heavy.n_features(), features.len());
    // A corrupted ranker artifact is refused, not half-loaded.
    std::fs::write(bundle.join("heavy.rank"), b"CSCDRANK").unwrap();
    assert!(cascade_bundle::LoadedBundle::load(&registry.get(1).unwrap()).is_err());
}

#[test]
fn evaluate_split_files_as_json() {
    let dir = tempfile::tempdir().unwrap();
    // Two taste groups; each user's last item is held out.
    let (mut train, mut test) = (String::new(), String::new());
    let mut ts = 0;
    for u in 0..30 {
        for j in 0..6 {
            ts += 1;
            let item = (u % 2) * 10 + (u + j) % 10;
            let line = format!("{u}\t{item}\t5\t{ts}\n");
            if j < 5 { train.push_str(&line) } else { test.push_str(&line) }
        }
    }
    std::fs::write(dir.path().join("train.tsv"), train).unwrap();
    std::fs::write(dir.path().join("test.tsv"), test).unwrap();
    let out = ok(
        dir.path(),
        &["evaluate", "--train", "train.tsv", "--test", "test.tsv", "--models", "pop,itemknn", "--no-tune", "--json"],
    );
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for key in [
        "model",
        "params",
        "ndcg_at_10",
        "recall_at_10",
        "hr_at_10",
        "mrr_at_10",
        "coverage_at_10",
        "train_seconds",
        "score_seconds",
        "eval_users",
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
    }
    assert_eq!(rows[0]["eval_users"], 30);
    assert!(rows[1]["ndcg_at_10"].as_f64().unwrap() > rows[0]["ndcg_at_10"].as_f64().unwrap());
    let bad = cascade(dir.path(), &["evaluate", "--train", "train.tsv", "--test", "test.tsv", "--models", "svd"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown model `svd`"));
}

/// The README's first command as a user runs it: `cascade quickstart`, no flags. It must keep
/// serving after printing its sample (it once shut itself down 0.1 s later), answer a
/// recommendation seconds later, and stop cleanly on Ctrl-C (SIGINT).
#[test]
fn the_readme_quickstart_keeps_serving_until_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    // A free port, given the way a user overrides any key: the environment (no flags).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .current_dir(dir.path())
        .arg("quickstart")
        .env("CASCADE__SERVER__ADDR", &addr)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let user = loop {
        let Some(Ok(line)) = stdout.next() else {
            let _ = child.kill();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
            panic!("quickstart ended before serving:\n{}\n{err}", printed.join("\n"));
        };
        printed.push(line.clone());
        if let Some(rest) = line.split("\\\"user\\\": \\\"").nth(1).or_else(|| line.split("\"user\": \"").nth(1))
            && line.contains("try: curl")
        {
            break rest.split(['\\', '"']).next().unwrap().to_string();
        }
    };
    assert!(printed.iter().any(|l| l.contains("ranked by heavy")), "{printed:?}");
    assert!(
        printed.iter().any(|l| l.contains("Ctrl-C to stop"))
            || stdout.next().is_some_and(|l| l.is_ok_and(|l| l.contains("Ctrl-C")))
    );
    // Seconds later, the server still answers.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, body) = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/v1/recommendations"))
            .json(&serde_json::json!({"user": user, "k": 5}))
            .send()
            .await
            .expect("the quickstart server still answers");
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 5, "{body}");
    // Ctrl-C: a clean stop, the log flushed.
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("stopped; the event log is flushed and synced"), "{err}");
}

#[test]
fn keys_are_created_listed_revoked_and_guard_the_served_api() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    ok(root, &["init", "."]);
    // Beyond loopback without a key: refused, naming the way out.
    let out = cascade(root, &["serve", "--addr", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--insecure") && stderr.contains("cascade keys create"), "{stderr}");

    let created: serde_json::Value =
        serde_json::from_str(&ok(root, &["keys", "create", "--name", "etl", "--scope", "ingest,read", "--json"]))
            .unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["scopes"], serde_json::json!(["ingest", "read"]));
    let plain = ok(root, &["keys", "create", "--name", "web", "--scope", "serve"]);
    assert!(plain.trim().starts_with("csk_"), "the token alone on stdout: {plain}");
    let bad = cascade(root, &["keys", "create", "--name", "x", "--scope", "root"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope `root`"));

    let listed: serde_json::Value = serde_json::from_str(&ok(root, &["keys", "list", "--json"])).unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["etl", "web"]);
    assert!(!ok(root, &["keys", "list"]).contains(&token), "tokens are never listed");
    let stored = std::fs::read_to_string(root.join("data/keys.json")).unwrap();
    assert!(!stored.contains(&token), "tokens are never stored");

    let server = crate::serve(root, &[]);
    let url = server.url.clone();
    let body = r#"[{"id":"a","type":"like","ts":"2024-01-01T00:00:00Z","user":"u","item":"i"}]"#;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let post = |key: Option<&str>| {
        let mut r = reqwest::Client::new()
            .post(format!("{url}/v1/events"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            r = r.bearer_auth(key);
        }
        rt.block_on(async { r.send().await.unwrap().status().as_u16() })
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some(plain.trim())), 403, "a serve key cannot ingest");
    assert_eq!(post(Some(&token)), 200);
    ok(root, &["keys", "revoke", "etl"]);
    let refused = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        post(Some(&token)) == 401
    });
    assert!(refused, "the revoked key still ingests");
    server.stop();
}

#[test]
fn import_refuses_records_past_the_horizon_and_rebuild_quarantines_an_old_log() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    std::fs::write(
        dir.path().join("e.ndjson"),
        "{\"type\":\"like\",\"ts\":\"2024-01-01T00:00:00Z\",\"user\":\"u1\",\"item\":\"i1\",\"id\":\"good\"}\n\
         {\"type\":\"like\",\"ts\":\"9999-12-31T23:59:59Z\",\"user\":\"u1\",\"item\":\"i2\",\"id\":\"bad\"}\n",
    )
    .unwrap();
    let out = cascade(dir.path(), &["import", "ndjson", "e.ndjson"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`ts`") && err.contains("log.max_event_ahead"), "{err}");
    // A log written before the horizon existed (the bound lifted), then recovered.
    let old = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .current_dir(dir.path())
        .args(["import", "--json", "ndjson", "e.ndjson"])
        .env("CASCADE__LOG__MAX_EVENT_AHEAD", "0s")
        .output()
        .unwrap();
    assert!(old.status.success(), "{}", String::from_utf8_lossy(&old.stderr));
    let out = ok(dir.path(), &["features", "rebuild", "--exclude-after", "2030-01-01T00:00:00Z"]);
    assert!(out.contains("below offset 2") && out.contains("1 retained records are now hidden"), "{out}");
    assert!(dir.path().join("data").join("quarantine.json").exists());
    let out = ok(dir.path(), &["features", "export"]);
    assert!(out.starts_with("exported 1 events"), "only the real event is exported: {out}");
}
