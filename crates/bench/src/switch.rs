//! `cascade-bench switch`: how long an alias move takes to reach users. While recommendations
//! flow at a steady rate, the `champion` alias moves back and forth between two versions, by the
//! admin API (the server reloads before it answers) and by writing the registry directly as
//! `cascade models alias set` does (the server notices within `serving.reload_interval`); for
//! each move, the time from the move to the first response of a request sent after it that the
//! new version served.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

#[derive(Debug, clap::Args)]
pub struct SwitchArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The project's data directory (for the CLI-style moves: the registry is written directly).
    #[arg(long)]
    data_dir: PathBuf,
    /// The two versions the alias alternates between.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    versions: Vec<u64>,
    /// Moves per path (API and CLI).
    #[arg(long, default_value_t = 10)]
    moves: usize,
    /// Recommendation requests per second while moving.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Request bodies, one JSON per line (default: users u1..u1000).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// An `admin` API key, when the project has keys (also used for the recommendations).
    #[arg(long, env = "CASCADE_BENCH_KEY")]
    key: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PathReport {
    path: &'static str,
    moves: usize,
    p50_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    rate: u32,
    paths: Vec<PathReport>,
    requests: u64,
    /// Non-2xx answers and transport errors, by status (`error` for the latter).
    failed: std::collections::BTreeMap<String, u64>,
    /// Of them, those sent within a second after a move.
    failed_near_a_move: u64,
}

/// Responses seen: (when it was sent, when it came back, the version that served it).
type Seen = Arc<Mutex<Vec<(Instant, Instant, Option<u64>)>>>;

pub fn run(args: &SwitchArgs) -> Result<()> {
    if args.versions.len() != 2 || args.versions[0] == args.versions[1] {
        bail!("--versions: give two different versions");
    }
    let bodies: Vec<String> = match &args.body_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("{}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
        None => (1..=1000).map(|u| format!(r#"{{"user":"u{u}","k":10}}"#)).collect(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(measure(args, Arc::new(bodies)))
}

async fn measure(args: &SwitchArgs, bodies: Arc<Vec<String>>) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let seen: Seen = Arc::default();
    let failed: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let (client, seen, failed, stop) = (client.clone(), seen.clone(), failed.clone(), stop.clone());
        let (url, key, every) =
            (format!("{}/v1/recommendations", args.url), args.key.clone(), 1.0 / f64::from(args.rate));
        tokio::spawn(async move {
            let start = Instant::now();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let due = start + Duration::from_secs_f64(every * n as f64);
                tokio::time::sleep_until(due.into()).await;
                let body = bodies[n % bodies.len()].clone();
                n += 1;
                let (client, seen, failed, url, key) =
                    (client.clone(), seen.clone(), failed.clone(), url.clone(), key.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let mut req = client.post(&url).header("content-type", "application/json").body(body);
                    if let Some(key) = &key {
                        req = req.bearer_auth(key);
                    }
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().await.unwrap_or_default();
                            seen.lock().await.push((sent, Instant::now(), v["model_version"].as_u64()));
                        }
                        Ok(r) => failed.lock().await.push((sent, r.status().as_u16().to_string())),
                        Err(_) => failed.lock().await.push((sent, "error".into())),
                    }
                });
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let registry = cascade_registry::Registry::open(args.data_dir.join("registry"))?.with_audit_in(&args.data_dir);
    let mut paths = Vec::new();
    let mut moves = Vec::new();
    let mut turn = 0usize;
    for path in ["api", "cli"] {
        let mut took = Vec::with_capacity(args.moves);
        for _ in 0..args.moves {
            turn += 1;
            let target = args.versions[turn % 2];
            let moved = Instant::now();
            moves.push(moved);
            match path {
                "api" => {
                    let mut req = client
                        .put(format!("{}/v1/models/recommender/aliases/champion", args.url))
                        .json(&serde_json::json!({"version": target, "why": "cascade-bench switch"}));
                    if let Some(key) = &args.key {
                        req = req.bearer_auth(key);
                    }
                    let r = req.send().await?;
                    if !r.status().is_success() {
                        bail!("PUT alias: {} {}", r.status(), r.text().await.unwrap_or_default());
                    }
                }
                _ => {
                    let actor = cascade_registry::Actor::new("cli:cascade-bench", Some("cascade-bench switch".into()));
                    let registry = registry.clone();
                    tokio::task::spawn_blocking(move || registry.set_alias("recommender", "champion", target, &actor))
                        .await??;
                }
            }
            let deadline = moved + Duration::from_secs(30);
            let first = loop {
                let hit = seen
                    .lock()
                    .await
                    .iter()
                    .filter(|(sent, _, v)| *sent >= moved && *v == Some(target))
                    .map(|(_, back, _)| *back)
                    .min();
                if let Some(back) = hit {
                    break back;
                }
                if Instant::now() > deadline {
                    bail!("version {target} did not serve within 30 s of the move");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            took.push(first.duration_since(moved).as_secs_f64() * 1e3);
            // Let the move settle before the next one.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let mut sorted = took.clone();
        sorted.sort_by(f64::total_cmp);
        paths.push(PathReport {
            path,
            moves: took.len(),
            p50_ms: sorted[sorted.len() / 2],
            max_ms: *sorted.last().unwrap_or(&0.0),
            mean_ms: took.iter().sum::<f64>() / took.len().max(1) as f64,
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    driver.await?;
    let failed = failed.lock().await;
    let mut by_status = std::collections::BTreeMap::new();
    for (_, status) in failed.iter() {
        *by_status.entry(status.clone()).or_insert(0) += 1;
    }
    let near = |t: &Instant| moves.iter().any(|m| *t >= *m && t.duration_since(*m) < Duration::from_secs(1));
    let report = Report {
        rate: args.rate,
        paths,
        requests: seen.lock().await.len() as u64,
        failed: by_status,
        failed_near_a_move: failed.iter().filter(|(t, _)| near(t)).count() as u64,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("alias move → first response served by the new version, at {} req/s:", report.rate);
        println!("{:<6} {:>6} {:>10} {:>10} {:>10}", "path", "moves", "p50 ms", "mean ms", "max ms");
        for p in &report.paths {
            println!("{:<6} {:>6} {:>10.1} {:>10.1} {:>10.1}", p.path, p.moves, p.p50_ms, p.mean_ms, p.max_ms);
        }
        println!(
            "{} requests answered; not answered 2xx: {:?}, of which {} sent within 1 s after a move",
            report.requests, report.failed, report.failed_near_a_move
        );
    }
    Ok(())
}
