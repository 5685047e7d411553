//! A node serving its HTTP API on a real listener: ingestion, validation, limits, catalogue, features,
//! jobs, operations.

mod audit;
mod catalogue;
mod features;
mod guard;
mod ingest;
mod jobs;
mod ops;
mod recommend;
mod redis_outage;
mod time;

use cascade_core::Config;
use cascade_store::{Store, StoreOptions};
use serde_json::Value;
use std::sync::Arc;

/// The wall clock in ms, for events the server's own clock will read as recent.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[derive(Debug)]
pub struct TestServer {
    pub url: String,
    pub store: Arc<Store>,
    pub client: reqwest::Client,
    dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<cascade_node::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> TestServer {
        Self::with_dir(config, tempfile::tempdir().unwrap()).await
    }

    /// A server over an existing data directory (a restart, or a log prepared by the test).
    pub async fn with_dir(config: Config, dir: tempfile::TempDir) -> TestServer {
        let store = Arc::new(
            Store::open(dir.path(), StoreOptions::from(&cascade_store::LogConfig::from_config(&config).unwrap()))
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (cfg, s) = (config.clone(), store.clone());
        let task = tokio::spawn(async move {
            cascade_node::run(&cfg, s, listener, async move {
                let _ = rx.await;
            })
            .await
        });
        TestServer { url, store, client: reqwest::Client::new(), dir, shutdown: Some(tx), task: Some(task) }
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_events(&self, body: &Value) -> (u16, Value) {
        self.post_raw("/v1/events", "application/json", body.to_string()).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.client.put(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(format!("{}{path}", self.url)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Records in the log, read straight from the store.
    pub fn log_len(&self) -> usize {
        self.store.read_from(0).count()
    }

    /// Shuts down gracefully; returns the data directory for reopening.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
        self.dir
    }
}
