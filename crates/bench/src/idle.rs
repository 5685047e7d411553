//! `cascade-bench idle`: many idle or half-sent connections held against a server while its
//! liveness probe and a recommendation are timed on fresh connections.
//!
//! Each held connection sends half a request line and then nothing, as a slow-loris client
//! would; when the server closes one, it is opened again, so the pressure stays at
//! `--connections` for the whole `--hold`. The report says how long the probes took, how many
//! failed, and how often the server cut a held connection.

use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// The server, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Idle connections to hold (raise `ulimit -n` above this first).
    #[arg(long, default_value_t = 20_000)]
    connections: u32,
    /// How long to hold them while probing.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    hold: Duration,
    /// Time between probes (each probe: one liveness check and one recommendation).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    every: Duration,
    /// The recommendation request's body.
    #[arg(long, default_value = r#"{"user":"u1","k":10}"#)]
    body: String,
    /// `Authorization: Bearer` token for the recommendation, when the project has keys.
    #[arg(long, env = "CASCADE_BENCH_KEY")]
    key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Probe {
    route: &'static str,
    sent: u64,
    ok: u64,
    failed: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_failure: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    connections: u32,
    hold_s: f64,
    /// Held connections open when the probing started.
    opened: u64,
    /// Connects that failed (the client's or the server's descriptors ran out, or refused).
    connect_failures: u64,
    /// Held connections the server closed (each was opened again).
    closed_by_server: u64,
    probes: Vec<Probe>,
}

pub fn run(args: &IdleArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let report = runtime.block_on(measure(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "held {} idle connections for {:.0} s: {} open at the start, {} connects failed, {} closed by the server (reopened)",
        report.connections, report.hold_s, report.opened, report.connect_failures, report.closed_by_server
    );
    println!(
        "{:<28} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8}",
        "probe", "sent", "ok", "failed", "p50 ms", "p99 ms", "max ms"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for p in &report.probes {
        println!(
            "{:<28} {:>6} {:>6} {:>7} {:>8} {:>8} {:>8}",
            p.route,
            p.sent,
            p.ok,
            p.failed,
            ms(p.p50_ms),
            ms(p.p99_ms),
            ms(p.max_ms)
        );
        if let Some(e) = &p.first_failure {
            println!("  first failure: {e}");
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    connect_failures: AtomicU64,
    closed_by_server: AtomicU64,
}

async fn measure(args: &IdleArgs) -> Result<Report> {
    let addr: std::net::SocketAddr = tokio::net::lookup_host(&args.addr)
        .await
        .with_context(|| format!("resolving {}", args.addr))?
        .next()
        .context("no address")?;
    let counters = Arc::new(Counters::default());
    let deadline = Instant::now() + args.hold + Duration::from_secs(60);
    // Open them gradually (a few hundred at a time) so the accept backlog is not the test.
    let mut holders = Vec::with_capacity(args.connections as usize);
    for i in 0..args.connections {
        holders.push(tokio::spawn(hold(addr, counters.clone(), deadline)));
        if i % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let opened = counters.open.load(Ordering::Relaxed);
    eprintln!("{opened} of {} held connections open; probing for {:?}", args.connections, args.hold);

    let client =
        reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).timeout(Duration::from_secs(10)).build()?;
    let live = format!("http://{addr}/v2/health/live");
    let rec = format!("http://{addr}/v1/recommendations");
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut failures: [(u64, Option<String>); 2] = [(0, None), (0, None)];
    let end = Instant::now() + args.hold;
    while Instant::now() < end {
        for (slot, request) in [client.get(&live), {
            let mut r = client.post(&rec).header("content-type", "application/json").body(args.body.clone());
            if let Some(key) = &args.key {
                r = r.bearer_auth(key);
            }
            r
        }]
        .into_iter()
        .enumerate()
        {
            let started = Instant::now();
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    let _ = r.bytes().await;
                    times[slot].push(started.elapsed().as_secs_f64() * 1e3);
                }
                Ok(r) => {
                    failures[slot].0 += 1;
                    failures[slot].1.get_or_insert_with(|| format!("status {}", r.status()));
                }
                Err(e) => {
                    failures[slot].0 += 1;
                    failures[slot].1.get_or_insert_with(|| format!("{:#}", anyhow::Error::new(e)));
                }
            }
        }
        tokio::time::sleep(args.every).await;
    }
    for h in holders {
        h.abort();
    }
    let probes = ["GET /v2/health/live", "POST /v1/recommendations"]
        .into_iter()
        .zip(times.iter_mut().zip(failures))
        .map(|(route, (t, (failed, first_failure)))| {
            t.sort_by(f64::total_cmp);
            let q = |p: f64| (!t.is_empty()).then(|| t[((t.len() - 1) as f64 * p).round() as usize]);
            Probe {
                route,
                sent: t.len() as u64 + failed,
                ok: t.len() as u64,
                failed,
                p50_ms: q(0.5),
                p99_ms: q(0.99),
                max_ms: t.last().copied(),
                first_failure,
            }
        })
        .collect();
    Ok(Report {
        connections: args.connections,
        hold_s: args.hold.as_secs_f64(),
        opened,
        connect_failures: counters.connect_failures.load(Ordering::Relaxed),
        closed_by_server: counters.closed_by_server.load(Ordering::Relaxed),
        probes,
    })
}

/// Holds one connection with half a request line sent, reopening it whenever the server closes
/// it, until `deadline` (or until aborted).
async fn hold(addr: std::net::SocketAddr, counters: Arc<Counters>, deadline: Instant) {
    while Instant::now() < deadline {
        let mut stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        counters.open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.write_all(b"GET /v2/health/li").await;
        let mut buf = [0u8; 1024];
        // Whatever the server sends (an error, or nothing), it ends with a close.
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        counters.open.fetch_sub(1, Ordering::Relaxed);
        counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
    }
}
