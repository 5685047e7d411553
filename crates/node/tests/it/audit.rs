//! The audit log of pipeline configuration: each start compares `[pipelines]` with the last.

use crate::TestServer;
use cascade_core::Config;
use cascade_store::{AuditLog, AuditQuery};

fn config(k: usize) -> Config {
    Config::from_toml(&format!("[pipelines.home]\nk = {k}\n"), "cascade.toml").unwrap()
}

fn pipeline_entries(dir: &std::path::Path) -> Vec<(String, String, serde_json::Value, serde_json::Value)> {
    let query = AuditQuery { action: Some("pipeline".into()), limit: 100, ..Default::default() };
    let mut out: Vec<_> = AuditLog::new(dir)
        .read(&query)
        .unwrap()
        .into_iter()
        .map(|e| (e.record.action, e.record.target, e.record.before, e.record.after))
        .collect();
    out.reverse();
    out
}

#[tokio::test]
async fn pipeline_changes_between_starts_are_audited() {
    let s = TestServer::with_config(config(10)).await;
    let dir = s.stop().await;
    let first = pipeline_entries(dir.path());
    let created: Vec<&str> = first.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(created, ["pipeline:default", "pipeline:home"]);
    assert!(first.iter().all(|e| e.0 == "pipeline.create" && e.2.is_null()));

    // The same configuration again: nothing new.
    let s = TestServer::with_dir(config(10), dir).await;
    let dir = s.stop().await;
    assert_eq!(pipeline_entries(dir.path()).len(), 2);

    // A changed `k`: one entry with the configuration before and after.
    let s = TestServer::with_dir(config(20), dir).await;
    let dir = s.stop().await;
    let entries = pipeline_entries(dir.path());
    assert_eq!(entries.len(), 3);
    let (action, target, before, after) = &entries[2];
    assert_eq!((action.as_str(), target.as_str()), ("pipeline.change", "pipeline:home"));
    assert_eq!((before["k"].as_u64(), after["k"].as_u64()), (Some(10), Some(20)));

    // A pipeline removed.
    let s = TestServer::with_dir(Config::default(), dir).await;
    let dir = s.stop().await;
    let entries = pipeline_entries(dir.path());
    assert_eq!((entries[3].0.as_str(), entries[3].1.as_str()), ("pipeline.delete", "pipeline:home"));
}
