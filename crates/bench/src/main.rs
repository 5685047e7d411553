//! `cascade-bench`: workload benchmarks printing Cascade beside a baseline from the same run, the
//! open-loop HTTP load generator, and the request mixes it sends.
//!
//! A binary of its own, so that the shipped `cascade` carries neither a Redis client nor a load
//! generator. It uses Cascade's crates directly (log, feature engine) and starts the `cascade`
//! binary where a benchmark needs a server process.
//!
//! Timings on shared machines vary between runs; ratios measured together do not. So every
//! benchmark here runs its baseline in the same process, on the same data, one after the other.

mod features_online;
mod features_pit;
mod idle;
mod loadgen;
mod project;
mod requests;
mod switch;

use anyhow::{Context, Result, bail, ensure};
use cascade_core::Record;
use cascade_store::FsyncPolicy;
use cascade_store::{Store, StoreOptions};
use cascade_testkit::{WorldConfig, event_json, events_iter};
use clap::Parser;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The allocator `cascade` ships with, so that the Cascade code these benchmarks run in-process
// (the embedded log, the feature engine) is measured as it runs in the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cascade-bench",
    version,
    about = "Cascade's benchmarks and load generator: each prints Cascade beside a baseline measured in the same run.",
    long_about = "Cascade's benchmarks and load generator, each printing Cascade beside a baseline measured in the\n\
        same run (timings on a shared machine vary between runs; ratios measured together do not).\n\n\
        Build it beside the server: `cargo build --release -p cascade-cli -p cascade-bench` puts\n\
        target/release/cascade and target/release/cascade-bench side by side. Figures and how they\n\
        were taken: docs/benchmarks.md."
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum BenchCommand {
    /// Durable ingestion: embedded bulk appends, HTTP POST /v1/events against a `cascade serve`
    /// child process, and pipelined XADD of the same events into Redis Streams.
    ///
    /// The child is the `cascade` binary next to this executable (`cargo build --release -p
    /// cascade-cli` leaves it in target/release), or the one --cascade / CASCADE_BIN names. It
    /// serves a fresh project in a temporary directory, on a free port, with the log's fsync
    /// policy set by --fsync.
    Ingest(IngestArgs),
    /// Open-loop HTTP load against a running `cascade serve`: latency percentiles per offered rate.
    ///
    /// Run it in its own process against a server started separately. For each of --rates it sends
    /// requests on a fixed schedule, one every 1/rate seconds, whatever the server does: that is
    /// an open loop, like independent users who do not wait for each other. (A closed loop, where
    /// each connection waits for its answer before sending again, lets a stalled server slow the
    /// client down, so the stall shows up as a slightly lower rate with flat latencies.)
    ///
    /// Every latency is timed from the request's scheduled send time, not from when it actually
    /// left: a request that waited for a stalled server or a free connection reports that wait,
    /// as its user would have felt it. Timing from the actual send would omit exactly the stalls a
    /// benchmark is meant to find (coordinated omission).
    ///
    /// Each rate runs --warmup unmeasured, then --duration measured, and prints offered and achieved
    /// rate, p50/p90/p99/p99.9/max latency, and non-2xx answers, transport errors and timeouts
    /// (none of which count as latencies). "lag p99" is how late requests left after their scheduled
    /// time: high when every connection was busy, or when the generator itself was short of CPU.
    ///
    /// "cold %" and "cands" say which path served: the share of answers with `path.cold_start`
    /// true, and the mean `path.candidates`, read from 1 in 10 of the measured 2xx answers (after
    /// their latency is taken; only the `path` object is decoded). "-" when the answers do not carry
    /// the field (health checks, a server that does not report it). A warm mix whose cold % is not
    /// near zero is not measuring the full cascade: build one with `cascade-bench requests --warm`.
    ///
    /// Last comes the highest rate meeting --slo-ms.
    ///
    /// Example: cascade-bench load --url http://127.0.0.1:8080/v1/recommendations --body-file
    /// warm.ndjson --rates 100,200,500,1000 --duration 20s --warmup 3s --connections 64
    Load(loadgen::LoadArgs),
    /// Slow-loris pressure: --connections held open with half a request line sent (reopened
    /// whenever the server closes one) while the liveness probe and a recommendation are timed
    /// on fresh connections every --every.
    ///
    /// Raise the descriptor limit first (`ulimit -n 30000`, for this and for the server).
    ///
    /// Example: cascade-bench idle --addr 127.0.0.1:8080 --connections 20000 --hold 30s
    Idle(idle::IdleArgs),
    /// Write a request mix for `load --body-file` from a project's event log: --warm users (whose
    /// history reaches the cold-start threshold) or --uniform users (all of them).
    ///
    /// The server serves a user from the cold-start sources (popularity, trending, content: about
    /// 100 candidates, no personal retrieval, a cheaper request) while their history holds fewer
    /// than the pipeline's `min_history` distinct items. The history is the user's events of the
    /// `[train] interactions` types that name an item, so that is what --warm counts, reading the
    /// log read-only (`cascade serve` may be running). Users of the bundle's users.json are not
    /// warm in this sense: the models saw them, however briefly.
    ///
    /// Both mixes print the share of cold starts among the users drawn; `load` then shows the share
    /// the server actually reported ("cold %").
    ///
    /// Example: cascade-bench requests --config cascade.toml --warm --out warm.ndjson, then
    /// cascade-bench load --url http://127.0.0.1:8080/v1/recommendations --body-file warm.ndjson
    Requests(requests::RequestsArgs),
    /// How long an alias move takes to reach users: while recommendations flow at --rate, the
    /// `champion` alias alternates between two --versions, --moves times by the admin API (the
    /// server reloads before answering) and --moves times by writing the registry as `cascade
    /// models alias set` does (noticed within `serving.reload_interval`); per path, the time from
    /// the move to the first response, of a request sent after it, served by the new version.
    ///
    /// Example: cascade-bench switch --url http://127.0.0.1:8080 --data-dir data --versions 1,2
    Switch(switch::SwitchArgs),
    /// The online feature store: update throughput and the latency of reading 50 features for 1
    /// entity and for a ranker's batch of 500, embedded and Redis, on a synthetic log.
    FeaturesOnline(features_online::OnlineArgs),
    /// The point-in-time join of label rows against precomputed feature tables (Parquet) on
    /// synthetic data: --generate the tables, then join them (timed). Compare with Feast:
    /// crates/features/benches/feast_pit.py (docs/benchmarks.md).
    FeaturesPit(features_pit::BenchPitArgs),
    /// The replay training-set build (all 50 features of `features-online`, on its synthetic log)
    /// and the online state's memory per million entities.
    FeaturesReplay(features_pit::BenchReplayArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        BenchCommand::Ingest(args) => ingest(&args),
        BenchCommand::Load(args) => loadgen::run(&args),
        BenchCommand::Idle(args) => idle::run(&args),
        BenchCommand::Requests(args) => requests::run(&args),
        BenchCommand::Switch(args) => switch::run(&args),
        BenchCommand::FeaturesOnline(args) => features_online::run(&args),
        BenchCommand::FeaturesPit(args) => features_pit::run(&args),
        BenchCommand::FeaturesReplay(args) => features_pit::replay(&args),
    }
}

#[derive(Debug, clap::Args)]
struct IngestArgs {
    /// Events per target.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per append / HTTP request / Redis pipeline.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Concurrent appenders, HTTP connections and Redis pipelines in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// fsync policy of Cascade's log for every Cascade target.
    #[arg(long, value_enum, default_value = "always")]
    fsync: Fsync,
    /// Redis to compare with, as found (its persistence settings are printed).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Also start a private redis-server with appendonly yes and appendfsync always, the
    /// durability that matches fsync = "always" (needs redis-server on PATH).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    redis_aof: bool,
    /// The `cascade` binary to start for the HTTP target [default: `cascade` in the directory of
    /// this executable].
    #[arg(long = "cascade", env = "CASCADE_BIN", value_name = "PATH")]
    cascade: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// The `cascade` binary: `explicit` (--cascade / CASCADE_BIN), else the one next to `exe`.
fn cascade_binary(explicit: Option<&Path>, exe: &Path) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let dir = exe.parent().with_context(|| format!("{} has no directory", exe.display()))?;
            dir.join(format!("cascade{}", std::env::consts::EXE_SUFFIX))
        }
    };
    ensure!(
        path.is_file(),
        "no cascade binary at {}: build it with `cargo build --release -p cascade-cli` (cascade-bench looks for it \
         in its own directory), or pass --cascade PATH (or set CASCADE_BIN)",
        path.display()
    );
    Ok(path)
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Fsync {
    Always,
    Interval,
}

#[derive(Debug, Serialize)]
struct Row {
    target: String,
    durability: String,
    events: usize,
    seconds: f64,
    events_per_second: f64,
    batch_p50_ms: f64,
    batch_p99_ms: f64,
}

impl Row {
    fn new(target: &str, durability: &str, events: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Row {
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        Row {
            target: target.into(),
            durability: durability.into(),
            events,
            seconds: elapsed.as_secs_f64(),
            events_per_second: events as f64 / elapsed.as_secs_f64(),
            batch_p50_ms: pct(0.50),
            batch_p99_ms: pct(0.99),
        }
    }
}

fn ingest(args: &IngestArgs) -> Result<()> {
    // Before the minutes of work that precede the HTTP target.
    let cascade = cascade_binary(args.cascade.as_deref(), &std::env::current_exe().context("locating cascade-bench")?)?;
    let fsync = match args.fsync {
        Fsync::Always => FsyncPolicy::Always,
        Fsync::Interval => FsyncPolicy::Interval,
    };
    let fsync_name = format!("fsync={}", if fsync == FsyncPolicy::Always { "always" } else { "interval(100ms)" });
    eprintln!("generating {} events ...", args.events);
    let cfg = WorldConfig { events: args.events, ..WorldConfig::default() };
    let events: Vec<Record> = events_iter(&cfg).map(Record::Event).collect();
    let batches: Vec<Vec<Record>> = events.chunks(args.batch.max(1)).map(<[Record]>::to_vec).collect();
    drop(events);
    let mut rows = Vec::new();

    eprintln!("cascade bulk ...");
    rows.push(bench_bulk(&batches, args.concurrency, fsync, &fsync_name)?);

    let bodies: Arc<Vec<WireBatch>> = Arc::new(
        batches
            .iter()
            .map(|b| {
                let mut ndjson = Vec::new();
                let mut fields = Vec::with_capacity(b.len());
                for r in b {
                    let Record::Event(e) = r else { continue };
                    let j = event_json(e);
                    serde_json::to_writer(&mut ndjson, &j).expect("serializable");
                    ndjson.push(b'\n');
                    fields.push(redis_fields(&j));
                }
                WireBatch { ndjson: bytes::Bytes::from(ndjson), xadd_fields: fields }
            })
            .collect(),
    );
    drop(batches);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    eprintln!("cascade HTTP ...");
    rows.push(runtime.block_on(bench_http(&cascade, bodies.clone(), args.concurrency, fsync, &fsync_name))?);

    eprintln!("redis XADD ...");
    match runtime.block_on(bench_redis(&args.redis, bodies.clone(), args.concurrency, None)) {
        Ok(row) => rows.push(row),
        Err(e) => eprintln!("skipping redis at {}: {e:#}", args.redis),
    }
    if args.redis_aof {
        match PrivateRedis::start() {
            Ok(private) => {
                eprintln!("redis XADD (private, AOF fsync always) ...");
                rows.push(runtime.block_on(bench_redis(&private.url, bodies, args.concurrency, Some("aof")))?);
            }
            Err(e) => eprintln!("skipping the AOF redis: {e:#}"),
        }
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "ingest: {} events, batches of {}, concurrency {}, {} cores",
        args.events,
        args.batch,
        args.concurrency,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("{:<44} {:<34} {:>12} {:>11} {:>11}", "target", "durability", "events/s", "batch p50", "batch p99");
    for r in &rows {
        println!(
            "{:<44} {:<34} {:>12.0} {:>9.2}ms {:>9.2}ms",
            r.target, r.durability, r.events_per_second, r.batch_p50_ms, r.batch_p99_ms
        );
    }
    let (ours, theirs): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| r.target.starts_with("cascade"));
    for o in &ours {
        for t in &theirs {
            println!("{} / {}: {:.2}x events/s", o.target, t.target, o.events_per_second / t.events_per_second);
        }
    }
    Ok(())
}

/// Embedded appends from `concurrency` threads, as `cascade import` does.
fn bench_bulk(batches: &[Vec<Record>], concurrency: usize, fsync: FsyncPolicy, durability: &str) -> Result<Row> {
    let dir = tempfile::tempdir()?;
    let mut options = StoreOptions::default();
    options.log.fsync = fsync;
    let store = Arc::new(Store::open(dir.path(), options)?);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let latencies = Mutex::new(Vec::with_capacity(batches.len()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency.max(1) {
            s.spawn(|| -> Result<()> {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { return Ok(()) };
                    let t = Instant::now();
                    store.append_blocking(batch)?;
                    latencies.lock().expect("poisoned").push(t.elapsed());
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let events: usize = batches.iter().map(Vec::len).sum();
    let stored = store.log_stats()?.next_offset as usize;
    if stored != events {
        bail!("bulk: {stored} events stored, {events} sent");
    }
    store.close()?;
    Ok(Row::new("cascade bulk (embedded log)", durability, events, elapsed, latencies.into_inner().expect("poisoned")))
}

/// A `cascade serve` child on a fresh project and a free port; killed on drop.
struct ServerProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start(cascade: &Path, fsync: FsyncPolicy) -> Result<ServerProcess> {
        let dir = tempfile::tempdir()?;
        let config = project::write_template(dir.path(), "bench")?;
        let policy = if fsync == FsyncPolicy::Always { "always" } else { "interval" };
        let mut child = Command::new(cascade)
            .args(["--log", "warn", "serve", "--addr", "127.0.0.1:0", "--config"])
            .arg(&config)
            .env("CASCADE__LOG__FSYNC", policy)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} serve", cascade.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let Some(line) = lines.next() else { bail!("cascade serve exited before listening") };
            let line = line?;
            if let Some(rest) = line.strip_prefix("cascade serving on ") {
                break rest.split_whitespace().next().unwrap_or_default().to_string();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(ServerProcess { child, url, _dir: dir })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One batch in the two wire forms: an NDJSON body, and XADD field/value pairs per event.
struct WireBatch {
    /// Shared between tasks without copying.
    ndjson: bytes::Bytes,
    xadd_fields: Vec<Vec<(String, String)>>,
}

async fn bench_http(
    cascade: &Path,
    bodies: Arc<Vec<WireBatch>>,
    concurrency: usize,
    fsync: FsyncPolicy,
    durability: &str,
) -> Result<Row> {
    let server = ServerProcess::start(cascade, fsync)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let url = format!("{}/v1/events", server.url);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, url, next, bodies) = (client.clone(), url.clone(), next.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut accepted = 0u64;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(batch) = bodies.get(i) else { break };
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(batch.ndjson.clone())
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default());
                }
                let v: serde_json::Value = r.json().await?;
                accepted += v["accepted"].as_u64().unwrap_or(0);
                latencies.push(t.elapsed());
            }
            Ok((latencies, accepted))
        }));
    }
    let (mut latencies, mut accepted) = (Vec::new(), 0);
    for t in tasks {
        let (l, a) = t.await??;
        latencies.extend(l);
        accepted += a;
    }
    let elapsed = started.elapsed();
    let events: usize = bodies.iter().map(|b| b.xadd_fields.len()).sum();
    if accepted as usize != events {
        bail!("HTTP: {accepted} events accepted, {events} sent");
    }
    drop(server);
    Ok(Row::new("cascade HTTP (separate process, NDJSON)", durability, events, elapsed, latencies))
}

fn redis_fields(event: &serde_json::Value) -> Vec<(String, String)> {
    let obj = event.as_object().expect("event object");
    obj.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            )
        })
        .collect()
}

async fn bench_redis(url: &str, batches: Arc<Vec<WireBatch>>, concurrency: usize, label: Option<&str>) -> Result<Row> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await.context("connecting")?;
    let appendonly: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(&mut con).await?;
    let appendfsync: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendfsync").query_async(&mut con).await?;
    let durability = format!(
        "appendonly={} appendfsync={}",
        appendonly.get(1).map_or("?", String::as_str),
        appendfsync.get(1).map_or("?", String::as_str)
    );
    let key = format!("cascade-bench-{}", std::process::id());
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut con).await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (mut con, next, batches, key) = (con.clone(), next.clone(), batches.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(batch) = batches.get(i) else { break };
                let t = Instant::now();
                let mut pipe = redis::pipe();
                for fields in &batch.xadd_fields {
                    let cmd = pipe.cmd("XADD").arg(&key).arg("*");
                    for (k, v) in fields {
                        cmd.arg(k).arg(v);
                    }
                    cmd.ignore();
                }
                let () = pipe.query_async(&mut con).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = started.elapsed();
    let events: usize = batches.iter().map(|b| b.xadd_fields.len()).sum();
    let stored: usize = redis::cmd("XLEN").arg(&key).query_async(&mut con).await?;
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut con).await?;
    if stored != events {
        bail!("redis: {stored} entries, {events} sent");
    }
    let target = match label {
        Some(_) => "redis XADD pipelined (private, AOF)",
        None => "redis XADD pipelined (local server)",
    };
    Ok(Row::new(target, &durability, events, elapsed, latencies))
}

/// A redis-server on a free port with AOF and `appendfsync always`, in a temp dir; killed on drop.
struct PrivateRedis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> Result<PrivateRedis> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let url = format!("redis://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(PrivateRedis { child, url, _dir: dir })
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cascade_binary_is_looked_for_beside_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("cascade-bench");
        let err = cascade_binary(None, &exe).unwrap_err().to_string();
        assert!(err.contains("cargo build --release -p cascade-cli"), "{err}");
        assert!(err.contains(&dir.path().join("cascade").display().to_string()), "{err}");
        let beside = dir.path().join(format!("cascade{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&beside, "").unwrap();
        assert_eq!(cascade_binary(None, &exe).unwrap(), beside);
        // An explicit path wins, and must exist.
        let other = dir.path().join("elsewhere");
        assert!(cascade_binary(Some(&other), &exe).unwrap_err().to_string().contains("--cascade PATH"));
        std::fs::write(&other, "").unwrap();
        assert_eq!(cascade_binary(Some(&other), &exe).unwrap(), other);
    }

    #[test]
    fn the_command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["cascade-bench", "requests", "--warm", "--out", "w.ndjson"]).unwrap();
        assert!(matches!(cli.command, BenchCommand::Requests(_)));
        // A mix is required, and only one.
        assert!(Cli::try_parse_from(["cascade-bench", "requests", "--out", "w.ndjson"]).is_err());
        assert!(Cli::try_parse_from(["cascade-bench", "requests", "--warm", "--uniform", "--out", "w"]).is_err());
        let cli = Cli::try_parse_from(["cascade-bench", "features-pit", "--generate", "--dir", "/tmp/p"]).unwrap();
        assert!(matches!(cli.command, BenchCommand::FeaturesPit(_)));
    }
}
