//! Jobs over HTTP: training, evaluation and precomputation inside the server, one training at a
//! time, the admin scope, the audit log, and job records across a restart.

use crate::TestServer;
use cascade_core::{Config, Record};
use cascade_server::Scope;
use cascade_server::keys::KeyStore;
use cascade_store::{AuditLog, AuditQuery};
use cascade_testkit::{World, WorldConfig, events_iter};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Retrievers only, no rankers: the jobs are what is tested here, not the models.
fn config() -> Config {
    Config::from_toml("[train]\nmodels = [\"pop\", \"itemknn\", \"als\"]\nrankers = false\n", "test").unwrap()
}

/// A small synthetic world, written straight into the server's store.
async fn fill(server: &TestServer) {
    let world = WorldConfig { seed: 11, users: 150, items: 200, events: 6_000, days: 30, ..WorldConfig::default() };
    let catalogue = World::catalogue(&world);
    let records: Vec<Record> = catalogue
        .items
        .iter()
        .cloned()
        .map(Record::Item)
        .chain(catalogue.users.iter().cloned().map(Record::User))
        .chain(events_iter(&world).map(Record::Event))
        .collect();
    for batch in records.chunks(2_000) {
        server.store.append(batch).await.unwrap();
    }
}

async fn submit(server: &TestServer, key: Option<&str>, body: &Value) -> (u16, Option<String>, Value) {
    let mut request = server.client.post(format!("{}/v1/jobs", server.url)).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), location, r.json().await.unwrap())
}

async fn get(server: &TestServer, key: Option<&str>, path: &str) -> (u16, Value) {
    let mut request = server.client.get(format!("{}{path}", server.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Polls job `id` until it has finished (a generous bound, so a slow machine only waits longer).
async fn finished(server: &TestServer, key: Option<&str>, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, job) = get(server, key, &format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{job}");
        if job["state"] == "succeeded" || job["state"] == "failed" {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn audit(server: &TestServer, action: &str) -> Vec<cascade_store::AuditEntry> {
    let query = AuditQuery { action: Some(action.into()), limit: 100, ..Default::default() };
    AuditLog::new(server.store.dir()).read(&query).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_evaluate_and_precompute_run_as_jobs_one_training_at_a_time() {
    let server = TestServer::with_config(config()).await;
    fill(&server).await;

    // Holding the registry's lock keeps the training job from committing its bundle, so it is
    // certainly still running when the second training is submitted.
    let registry = server.store.dir().join("registry");
    std::fs::create_dir_all(&registry).unwrap();
    let held = std::fs::File::create(registry.join("LOCK")).unwrap();
    held.lock().unwrap();

    let (status, location, train) = submit(&server, None, &json!({"kind": "train", "params": {"no_tune": true}})).await;
    assert_eq!(status, 202, "{train}");
    let id = train["id"].as_str().unwrap().to_string();
    assert!(cascade_api::schema::is_job_id(&id), "{id}");
    assert_eq!(location.as_deref(), Some(format!("/v1/jobs/{id}").as_str()));
    assert_eq!((train["kind"].as_str(), train["state"].as_str()), (Some("train"), Some("queued")));
    assert_eq!(train["params"], json!({"no_tune": true, "k": 10}));
    assert_eq!(train["who"], "anonymous");

    let (status, _, refused) = submit(&server, None, &json!({"kind": "train"})).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "conflict");
    assert!(refused["error"]["message"].as_str().unwrap().contains(&id), "{refused}");
    // Other kinds queue behind it.
    let (status, _, evaluate) = submit(&server, None, &json!({"kind": "evaluate", "params": {"no_tune": true}})).await;
    assert_eq!(status, 202, "{evaluate}");
    // Once the job has judged its bundle it waits for the registry, holding the training lock:
    // `cascade train` (train_bundle, which takes the same lock) fails now.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, job) = get(&server, None, &format!("/v1/jobs/{id}")).await;
        if job["progress"]["message"].as_str().unwrap_or_default().starts_with("promotion gate:") {
            break;
        }
        assert!(job["state"] == "queued" || job["state"] == "running", "{job}");
        assert!(Instant::now() < deadline, "the job did not reach its commit: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let beside = cascade_training::TrainLock::acquire(&registry).unwrap_err();
    assert!(matches!(beside, cascade_training::Error::TrainingRunning { .. }), "{beside}");
    drop(held);

    let train = finished(&server, None, &id).await;
    assert_eq!(train["state"], "succeeded", "{train}");
    let result = &train["result"];
    assert_eq!(result["version"], 1, "{result}");
    assert_eq!(result["gate"]["passed"], true, "{result}");
    assert_eq!(result["gate"]["promoted_to"], "champion", "the first bundle becomes champion: {result}");
    assert!(result["metrics"]["als"]["ndcg_at_10"].as_f64().is_some(), "{result}");
    assert!(registry.join("bundles/000001/manifest.json").exists());
    assert_eq!(train["progress"]["done"], train["progress"]["total"]);
    let log: Vec<&str> = train["log"].as_array().unwrap().iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert!(log.iter().any(|l| l.starts_with("promotion gate:")), "{log:?}");
    assert!(train["started_at"].is_string() && train["finished_at"].is_string());

    let evaluate = finished(&server, None, evaluate["id"].as_str().unwrap()).await;
    assert_eq!(evaluate["state"], "succeeded", "{evaluate}");
    let models: Vec<&str> =
        evaluate["result"]["models"].as_array().unwrap().iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["pop", "itemknn", "als"]);
    assert!(evaluate["result"]["models"][0]["ndcg_at_10"].as_f64().is_some());

    let (status, _, precompute) = submit(&server, None, &json!({"kind": "precompute"})).await;
    assert_eq!(status, 202, "{precompute}");
    let precompute = finished(&server, None, precompute["id"].as_str().unwrap()).await;
    assert_eq!(precompute["state"], "succeeded", "{precompute}");
    assert!(precompute["result"].get("users").is_some(), "{precompute}");

    // The list: newest first, without logs.
    let (status, list) = get(&server, None, "/v1/jobs?limit=2").await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = list["jobs"].as_array().unwrap().iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["precompute", "evaluate"]);
    assert!(list["jobs"][0].get("log").is_none());

    // Every job is audited, submitted and finished.
    let submitted = audit(&server, "job.submit");
    assert_eq!(submitted.len(), 3, "the refused training is not a job");
    assert!(submitted.iter().all(|e| e.record.who == "anonymous"));
    assert_eq!(submitted[2].record.target, id);
    assert_eq!(submitted[2].record.after["kind"], "train");
    let ends = audit(&server, "job.finish");
    assert_eq!(ends.len(), 3);
    let train_end = ends.iter().find(|e| e.record.target == id).unwrap();
    assert_eq!(train_end.record.after["state"], "succeeded");
    assert_eq!(train_end.record.after["version"], 1);
    server.stop().await;
}

#[tokio::test]
async fn job_requests_are_checked_and_unknown_jobs_are_not_found() {
    let server = TestServer::with_config(config()).await;
    for (body, code, field) in [
        ("{\"kind\": \"retrain\"}", "malformed_json", None),
        ("{\"kind\": \"precompute\", \"params\": {\"k\": 5}}", "malformed_json", None),
        ("not json", "malformed_json", None),
        ("{\"kind\": \"train\", \"params\": {\"k\": 0}}", "invalid_request", Some("params.k")),
        ("{\"kind\": \"evaluate\", \"params\": {\"k\": 101}}", "invalid_request", Some("params.k")),
    ] {
        let (status, r) = server.post_raw("/v1/jobs", "application/json", body).await;
        assert_eq!(status, 400, "{body}: {r}");
        assert_eq!(r["error"]["code"], code, "{body}: {r}");
        if let Some(field) = field {
            assert_eq!(r["error"]["details"][0]["field"], field, "{r}");
        }
    }
    for id in ["job_000000000001", "nope", "job_..%2F..%2Fkeys"] {
        let (status, r) = get(&server, None, &format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 404, "{id}: {r}");
        assert_eq!(r["error"]["code"], "not_found");
    }
    let (status, r) = get(&server, None, "/v1/jobs?limit=0").await;
    assert_eq!((status, r["error"]["details"][0]["field"].as_str()), (400, Some("limit")), "{r}");
    let (status, r) = get(&server, None, "/v1/jobs").await;
    assert_eq!((status, r), (200, json!({"jobs": []})));
    // A training with no interactions fails, and says why.
    let (_, _, job) = submit(&server, None, &json!({"kind": "train"})).await;
    let job = finished(&server, None, job["id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "failed");
    assert!(job["error"].as_str().unwrap().contains("no interactions"), "{job}");
    server.stop().await;
}

#[tokio::test]
async fn jobs_need_the_admin_scope_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyStore::new(dir.path());
    let now = "2026-12-05T10:00:00Z";
    let (admin, _) = keys.create("ops", &[Scope::Admin], now).unwrap();
    let (reader, _) = keys.create("dash", &[Scope::Read, Scope::Serve, Scope::Ingest], now).unwrap();
    let server = TestServer::with_dir(config(), dir).await;
    let body = json!({"kind": "precompute"});

    let (status, _, r) = submit(&server, None, &body).await;
    assert_eq!((status, r["error"]["code"].as_str()), (401, Some("unauthorized")), "{r}");
    let (status, _, r) = submit(&server, Some(&reader), &body).await;
    assert_eq!((status, r["error"]["code"].as_str()), (403, Some("forbidden")), "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("admin"), "{r}");
    let (status, _) = get(&server, Some(&reader), "/v1/jobs").await;
    assert_eq!(status, 403);

    let (status, _, job) = submit(&server, Some(&admin), &body).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["who"], "key:ops");
    let id = job["id"].as_str().unwrap();
    let (status, _) = get(&server, Some(&reader), &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 403);
    let job = finished(&server, Some(&admin), id).await;
    assert_eq!(job["state"], "succeeded", "{job}");

    for action in ["job.submit", "job.finish"] {
        let entries = audit(&server, action);
        assert_eq!(entries.len(), 1, "{action}");
        assert_eq!((entries[0].record.who.as_str(), entries[0].record.target.as_str()), ("key:ops", id));
    }
    server.stop().await;
}

#[tokio::test]
async fn a_training_outside_the_server_refuses_a_train_job() {
    let server = TestServer::with_config(config()).await;
    // What `cascade train` holds for its whole run.
    let lock = cascade_training::TrainLock::acquire(&server.store.dir().join("registry")).unwrap();
    let (status, _, r) = submit(&server, None, &json!({"kind": "train"})).await;
    assert_eq!(status, 409, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("cascade train"), "{r}");
    drop(lock);
    let (status, _, r) = submit(&server, None, &json!({"kind": "precompute"})).await;
    assert_eq!(status, 202, "{r}");
    finished(&server, None, r["id"].as_str().unwrap()).await;
    server.stop().await;
}

#[tokio::test]
async fn job_records_survive_a_restart_and_interrupted_jobs_fail() {
    let server = TestServer::with_config(config()).await;
    let (_, _, job) = submit(&server, None, &json!({"kind": "precompute"})).await;
    let id = job["id"].as_str().unwrap().to_string();
    let done = finished(&server, None, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let dir = server.stop().await;

    // A job the server was running when it died: its record still says so.
    let jobs = dir.path().join(cascade_node::JOBS_DIR);
    let mut record: Value = serde_json::from_slice(&std::fs::read(jobs.join(format!("{id}.json"))).unwrap()).unwrap();
    let interrupted = "job_0fffffffffff";
    record["job"]["id"] = json!(interrupted);
    record["job"]["kind"] = json!("train");
    record["job"]["state"] = json!("running");
    for key in ["finished_at", "result"] {
        record["job"].as_object_mut().unwrap().remove(key);
    }
    std::fs::write(jobs.join(format!("{interrupted}.json")), record.to_string()).unwrap();

    let server = TestServer::with_dir(config(), dir).await;
    let (status, again) = get(&server, None, &format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(again, done, "the record read back is the job as it finished");
    let (status, job) = get(&server, None, &format!("/v1/jobs/{interrupted}")).await;
    assert_eq!(status, 200);
    assert_eq!((job["state"].as_str(), job["error"].as_str()), (Some("failed"), Some("interrupted by a restart")));
    let (_, list) = get(&server, None, "/v1/jobs").await;
    let ids: Vec<&str> = list["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [interrupted, id.as_str()]);
    let ends = audit(&server, "job.finish");
    assert_eq!(ends[0].record.target, interrupted);
    assert_eq!(ends[0].record.after["state"], "failed");
    // A new job's id follows the ones already used.
    let (_, _, next) = submit(&server, None, &json!({"kind": "precompute"})).await;
    assert!(next["id"].as_str().unwrap() > interrupted, "{next}");
    finished(&server, None, next["id"].as_str().unwrap()).await;
    server.stop().await;
}
