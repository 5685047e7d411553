//! `cascade-bench load`: an open-loop HTTP load generator for a running `cascade serve`.
//!
//! A closed-loop client (each connection sends, waits for the answer, sends again) lets the server
//! set the pace: when the server stalls, the client stops sending, and the stall shows up as a
//! slightly lower request rate with latencies that look flat. This is coordinated omission. Here
//! requests follow a fixed schedule instead (request `i` is due at `start + i / rate`), and every
//! latency is measured from the request's *scheduled* time, so waiting for a stalled server or for
//! a free connection counts as latency, as it would for the independent users the rate stands for.
//!
//! The generator is a fixed pool of `--connections` workers. Each takes the next request index,
//! sleeps until that request is due, sends it and reads the whole answer. With every worker busy,
//! the next due request waits for one and that wait is part of its latency (reported separately as
//! the send lag). A request still unsent `--timeout` after it was due is counted as a timeout
//! without being sent, which bounds how long a rate can run over its schedule.
//!
//! What was served: one in [`SAMPLE_EVERY`] measured 2xx answers (chosen by a hash of the request
//! index, so a short body file is not sampled on the same line every time) is parsed, after its
//! latency is taken, for `path.cold_start` and `path.candidates` of a recommendation response.
//! Their share and mean show whether a request mix exercised the path it was meant to: a "warm"
//! mix answered mostly from the cold-start sources measures the cheap path, not the cascade.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The endpoint to load, e.g. http://127.0.0.1:8080/v1/recommendations.
    #[arg(long)]
    url: String,
    /// HTTP method. GET sends no body; POST needs --body-file or --users.
    #[arg(long, value_enum, ignore_case = true, default_value = "post")]
    method: HttpMethod,
    /// Request bodies: an NDJSON file, one JSON body per line, sent round-robin in file order.
    #[arg(long, conflicts_with = "users")]
    body_file: Option<PathBuf>,
    /// Instead of --body-file: generate bodies `{"user":"u<n>","k":K}`, n uniform in 0..USERS
    /// (seeded by --seed).
    #[arg(long)]
    users: Option<u64>,
    /// `k` of the generated bodies (with --users).
    #[arg(long, default_value_t = 10)]
    k: u64,
    /// Seed of the generated bodies (with --users); the same seed sends the same users.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Offered rates to run, one after the other, in requests per second: e.g. 100,200,500,1000.
    /// Each is a schedule the generator keeps whatever the server does.
    #[arg(long, value_delimiter = ',', value_parser = parse_rate, default_value = "100,200,500,1000")]
    rates: Vec<f64>,
    /// Measured time per rate (e.g. 20s, 500ms, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    duration: Duration,
    /// Unmeasured time at the start of each rate, before --duration: lets connections open and
    /// caches fill at that rate.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    warmup: Duration,
    /// Most requests in flight (and open connections). A due request finding them all busy waits,
    /// and the wait counts in its latency.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// A request not answered this long after its scheduled time counts as a timeout.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    timeout: Duration,
    /// Latency objective for the summary line: the highest rate whose p99 is at most this, with no
    /// errors, timeouts or non-2xx answers.
    #[arg(long, default_value_t = 15.0)]
    slo_ms: f64,
    /// Print the per-rate results as a JSON array on stdout (the summary line goes to stderr).
    /// Besides the table's figures each rate has `path_sampled`, `cold_start_pct` and
    /// `mean_candidates` (null when no sampled answer carried the field).
    #[arg(long)]
    json: bool,
    /// The server's process id: its resident memory and thread count are sampled before the
    /// first rate, throughout (the peak), and --settle after the last rate.
    #[arg(long)]
    watch_pid: Option<u32>,
    /// With --watch-pid: how long after the last rate to wait before the "after" sample.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    settle: Duration,
}

/// A process's resident memory (MiB) and threads, from /proc/PID/status.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct ProcessSample {
    rss_mib: f64,
    threads: u64,
}

impl ProcessSample {
    fn read(pid: u32) -> Result<ProcessSample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status (--watch-pid)"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        Ok(ProcessSample {
            rss_mib: field("VmRSS:").unwrap_or(0) as f64 / 1024.0,
            threads: field("Threads:").unwrap_or(0),
        })
    }

    fn max(self, other: ProcessSample) -> ProcessSample {
        ProcessSample { rss_mib: self.rss_mib.max(other.rss_mib), threads: self.threads.max(other.threads) }
    }
}

/// Samples `pid` every 100 ms on its own thread until dropped; the peak so far.
struct Watcher {
    peak: Arc<std::sync::Mutex<ProcessSample>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Watcher {
    fn start(pid: u32) -> Watcher {
        let (peak, stop) = (
            Arc::new(std::sync::Mutex::new(ProcessSample::default())),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(now) = ProcessSample::read(pid) {
                    let mut peak = p.lock().unwrap();
                    *peak = peak.max(now);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Watcher { peak, stop }
    }

    fn peak(&self) -> ProcessSample {
        *self.peak.lock().unwrap()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HttpMethod {
    Get,
    Post,
}

/// One rate's results. Latencies (ms, from the scheduled send time) are over the 2xx answers to
/// requests scheduled in the measured window; `None` when there were none.
#[derive(Debug, Clone, Serialize)]
struct RateReport {
    offered_rps: f64,
    /// 2xx answers completed inside the measured window, per second of it.
    achieved_rps: f64,
    /// Requests scheduled in the measured window.
    scheduled: u64,
    ok: u64,
    non_2xx: u64,
    /// Transport errors other than timeouts (refused, reset, malformed answers).
    errors: u64,
    timeouts: u64,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p99_ms: Option<f64>,
    p99_9_ms: Option<f64>,
    max_ms: Option<f64>,
    /// 99th percentile of how late requests left after their scheduled time: high when every
    /// connection was busy (or the generator itself was short of CPU).
    send_lag_p99_ms: f64,
    /// The first transport error's message, to say why `errors` is not zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
    /// The first non-2xx status, to say why `non_2xx` is not zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_non_2xx: Option<u16>,
    /// Measured 2xx answers parsed for their serving path (about 1 in [`SAMPLE_EVERY`]).
    path_sampled: u64,
    /// Percent of the sampled answers carrying `path.cold_start` that have it `true`.
    cold_start_pct: Option<f64>,
    /// Mean `path.candidates` over the sampled answers carrying it.
    mean_candidates: Option<f64>,
    meets_slo: bool,
}

impl RateReport {
    fn clean(&self) -> bool {
        self.ok > 0 && self.non_2xx == 0 && self.errors == 0 && self.timeouts == 0
    }
}

pub fn run(args: &LoadArgs) -> Result<()> {
    let plan = Plan::from_args(args)?;
    eprintln!(
        "open loop: {} {}, {} connections, per rate {} warmup + {} measured, bodies: {}; \
         cold % and cands from 1 in {SAMPLE_EVERY} answers",
        plan.method,
        plan.url,
        plan.connections,
        fmt_duration(plan.warmup),
        fmt_duration(plan.duration),
        plan.bodies.describe
    );
    if !args.json {
        println!(
            "{:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8} {:>8} {:>7} {:>6}",
            "offered/s",
            "achieved/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "ok",
            "non-2xx",
            "errors",
            "timeouts",
            "lag p99",
            "cold %",
            "cands"
        );
    }
    let before = args.watch_pid.map(ProcessSample::read).transpose()?;
    let watcher = args.watch_pid.map(Watcher::start);
    let mut reports = measure(plan, &args.rates, |r| {
        if let Some(e) = &r.first_error {
            eprintln!("at {}/s, first error: {e}", fmt_rate(r.offered_rps));
        }
        if let Some(status) = r.first_non_2xx {
            eprintln!("at {}/s, first non-2xx status: {status}", fmt_rate(r.offered_rps));
        }
        if !args.json {
            println!("{}", table_row(r));
        }
    })?;
    for r in &mut reports {
        r.meets_slo = r.clean() && r.p99_ms.is_some_and(|p| p <= args.slo_ms);
    }
    let best = reports.iter().filter(|r| r.meets_slo).map(|r| r.offered_rps).max_by(f64::total_cmp);
    let summary = format!(
        "highest rate with p99 <= {} ms and no errors: {}",
        args.slo_ms,
        best.map_or_else(|| "none".to_string(), |r| format!("{} req/s", fmt_rate(r)))
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    if let (Some(pid), Some(before), Some(watcher)) = (args.watch_pid, before, watcher) {
        let peak = watcher.peak();
        eprintln!("waiting {} for the server to settle ...", fmt_duration(args.settle));
        std::thread::sleep(args.settle);
        let after = ProcessSample::read(pid)?;
        let line = format!(
            "server pid {pid}: RSS {:.0} MiB before, {:.0} MiB peak, {:.0} MiB {} after; threads {} before, {} peak, {} after",
            before.rss_mib,
            peak.rss_mib,
            after.rss_mib,
            fmt_duration(args.settle),
            before.threads,
            peak.threads,
            after.threads
        );
        if args.json { eprintln!("{line}") } else { println!("{line}") }
    }
    Ok(())
}

/// Everything a run needs, resolved and validated from the flags.
#[derive(Debug)]
struct Plan {
    url: reqwest::Url,
    method: reqwest::Method,
    bodies: Bodies,
    connections: u32,
    warmup: Duration,
    duration: Duration,
    timeout: Duration,
}

impl Plan {
    fn from_args(args: &LoadArgs) -> Result<Plan> {
        let url = reqwest::Url::parse(&args.url).with_context(|| format!("--url {}", args.url))?;
        ensure!(url.scheme() == "http", "--url: only http:// is supported (cascade-bench is built without TLS)");
        ensure!(!args.duration.is_zero(), "--duration must be more than zero");
        ensure!(!args.timeout.is_zero(), "--timeout must be more than zero");
        let bodies = match (args.method, &args.body_file, args.users) {
            (HttpMethod::Get, None, None) => Bodies::none(),
            (HttpMethod::Get, _, _) => bail!("--method GET sends no body: drop --body-file / --users"),
            (HttpMethod::Post, Some(path), _) => Bodies::from_ndjson_file(path)?,
            (HttpMethod::Post, None, Some(users)) => Bodies::generated(users, args.k, args.seed)?,
            (HttpMethod::Post, None, None) => bail!("--method POST needs --body-file FILE or --users N"),
        };
        let method = match args.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Post => reqwest::Method::POST,
        };
        Ok(Plan {
            url,
            method,
            bodies,
            connections: args.connections,
            warmup: args.warmup,
            duration: args.duration,
            timeout: args.timeout,
        })
    }
}

/// Pre-serialised request bodies, sent round-robin: request `i` carries body `i % len`. Each is
/// a slice of one shared buffer, so handing one to a request only bumps a reference count.
#[derive(Debug, Clone)]
struct Bodies {
    all: Arc<[Bytes]>,
    describe: String,
}

/// How many bodies `--users` pre-generates: enough that users do not visibly repeat in order.
const GENERATED_BODIES: usize = 1 << 16;

impl Bodies {
    fn none() -> Bodies {
        Bodies { all: Arc::new([]), describe: "none".into() }
    }

    fn from_ndjson_file(path: &Path) -> Result<Bodies> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut bodies = Bodies::from_ndjson(&Bytes::from(text)).with_context(|| path.display().to_string())?;
        bodies.describe = format!("{} from {}", bodies.all.len(), path.display());
        Ok(bodies)
    }

    /// One JSON body per non-blank line; every line must parse.
    fn from_ndjson(text: &Bytes) -> Result<Bodies> {
        let mut all = Vec::new();
        let mut start = 0;
        for (n, line) in text.split(|&b| b == b'\n').enumerate() {
            let end = start + line.len();
            let trimmed = line.trim_ascii();
            if !trimmed.is_empty() {
                serde_json::from_slice::<serde::de::IgnoredAny>(trimmed)
                    .with_context(|| format!("line {}: not a JSON body", n + 1))?;
                let offset = start + (trimmed.as_ptr() as usize - line.as_ptr() as usize);
                all.push(text.slice(offset..offset + trimmed.len()));
            }
            start = end + 1;
        }
        ensure!(!all.is_empty(), "no bodies: the file has no non-blank line");
        let describe = format!("{} from NDJSON", all.len());
        Ok(Bodies { all: all.into(), describe })
    }

    /// `{"user":"u<n>","k":K}` with n drawn uniformly from 0..users by a seeded generator.
    fn generated(users: u64, k: u64, seed: u64) -> Result<Bodies> {
        ensure!(users > 0, "--users must be at least 1");
        let mut state = seed;
        let mut buf = String::with_capacity(GENERATED_BODIES * 24);
        let mut ends = Vec::with_capacity(GENERATED_BODIES);
        for _ in 0..GENERATED_BODIES {
            let user = ((u128::from(splitmix64(&mut state)) * u128::from(users)) >> 64) as u64;
            write!(buf, r#"{{"user":"u{user}","k":{k}}}"#).expect("writing to a String");
            ends.push(buf.len());
        }
        let buf = Bytes::from(buf);
        let mut start = 0;
        let all: Arc<[Bytes]> = ends
            .into_iter()
            .map(|end| {
                let body = buf.slice(start..end);
                start = end;
                body
            })
            .collect();
        let describe = format!("{GENERATED_BODIES} generated over {users} users, k={k}, seed {seed}");
        Ok(Bodies { all, describe })
    }

    fn get(&self, i: u64) -> Option<&Bytes> {
        if self.all.is_empty() { None } else { self.all.get((i % self.all.len() as u64) as usize) }
    }
}

/// SplitMix64: a tiny, well-mixed seeded generator (no dependency for one uniform draw).
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// When request `i` is due, counted from the rate's start. Computed from `i` rather than by adding
/// intervals, so rounding never accumulates.
fn schedule_offset(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// `(first_measured, total)`: requests `0..total` are due before `warmup + duration`; those from
/// `first_measured` on are due inside the measured window.
fn schedule_bounds(rate: f64, warmup: Duration, duration: Duration) -> (u64, u64) {
    let due_before = |t: Duration| (rate * t.as_secs_f64()).ceil() as u64;
    (due_before(warmup), due_before(warmup + duration))
}

/// Tokio's timer rounds a deadline up to its next 1 ms tick and parks in whole milliseconds, so a
/// worker sleeping until a request is due wakes up to ~2 ms late, and that would be added to every
/// latency (measured against /v2/health/live at 200 req/s: p50 2.2 ms with no slack, 1.2 ms with
/// 1 ms, 0.5 ms with 2 ms). Workers wake this much early instead, and a request sent early is timed
/// from when it actually left, never from its later scheduled time, so waking early hides nothing;
/// the schedule, and so the offered rate, only shifts by at most this much.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Time between starting a rate and its first scheduled request, for the workers to get going.
const START_LEAD: Duration = Duration::from_millis(20);

/// One rate in progress, shared by its workers.
#[derive(Debug)]
struct RateRun {
    client: reqwest::Client,
    plan: Arc<Plan>,
    rate: f64,
    start: Instant,
    first_measured: u64,
    total: u64,
    next: AtomicU64,
}

/// One in this many measured 2xx answers is parsed for its serving path.
pub const SAMPLE_EVERY: u64 = 10;

/// Whether request `i`'s answer is parsed: a hash of the index rather than `i % SAMPLE_EVERY`, so
/// that with a body file whose length shares a factor with it the sample still covers every line.
fn sampled(i: u64) -> bool {
    let mut state = i;
    splitmix64(&mut state).is_multiple_of(SAMPLE_EVERY)
}

/// The part of a recommendation response the report reads; serde skips everything else without
/// building it, cheaper than a `serde_json::Value` of the whole answer.
#[derive(Debug, Deserialize)]
struct SampledResponse {
    path: Option<SampledPath>,
}

#[derive(Debug, Deserialize)]
struct SampledPath {
    cold_start: Option<bool>,
    candidates: Option<u64>,
}

/// Counts of what the sampled answers said about their serving path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PathTally {
    /// Answers parsed (whatever they held).
    sampled: u64,
    /// Of those, how many carry `path.cold_start`, and how many have it `true`.
    cold_known: u64,
    cold: u64,
    /// Of those, how many carry `path.candidates`, and their sum.
    candidates_known: u64,
    candidates_sum: u64,
}

impl PathTally {
    /// Reads one answer's body. Bodies that are not JSON objects (a health check's `ok`) or have
    /// no `path` count as sampled and add nothing else.
    fn observe(&mut self, body: &[u8]) {
        self.sampled += 1;
        let Ok(SampledResponse { path: Some(path) }) = serde_json::from_slice::<SampledResponse>(body) else {
            return;
        };
        if let Some(cold) = path.cold_start {
            self.cold_known += 1;
            self.cold += u64::from(cold);
        }
        if let Some(n) = path.candidates {
            self.candidates_known += 1;
            self.candidates_sum += n;
        }
    }

    fn merge(&mut self, other: PathTally) {
        self.sampled += other.sampled;
        self.cold_known += other.cold_known;
        self.cold += other.cold;
        self.candidates_known += other.candidates_known;
        self.candidates_sum += other.candidates_sum;
    }

    fn cold_start_pct(&self) -> Option<f64> {
        (self.cold_known > 0).then(|| 100.0 * self.cold as f64 / self.cold_known as f64)
    }

    fn mean_candidates(&self) -> Option<f64> {
        (self.candidates_known > 0).then(|| self.candidates_sum as f64 / self.candidates_known as f64)
    }
}

/// What one worker saw. Merged once the rate is over, so workers share nothing but the counter.
#[derive(Debug, Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    lags_ns: Vec<u64>,
    ok_in_window: u64,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    timeouts: u64,
    first_error: Option<String>,
    first_non_2xx: Option<u16>,
    paths: PathTally,
}

async fn worker(run: Arc<RateRun>) -> Tally {
    let mut tally = Tally::default();
    let window_start = run.start + run.plan.warmup;
    let window_end = window_start + run.plan.duration;
    loop {
        let i = run.next.fetch_add(1, Ordering::Relaxed);
        if i >= run.total {
            return tally;
        }
        let scheduled = run.start + schedule_offset(i, run.rate);
        tokio::time::sleep_until(scheduled.checked_sub(TIMER_SLACK).unwrap_or(scheduled)).await;
        let sent = Instant::now();
        let deadline = scheduled + run.plan.timeout;
        // A request that waited past its deadline for a connection is not sent: it has already
        // failed, and sending it would only prolong the backlog.
        let outcome = match deadline.checked_duration_since(sent) {
            Some(left) if !left.is_zero() => send(&run, i, left).await.map(Some),
            _ => Ok(None),
        };
        let done = Instant::now();
        let success = matches!(&outcome, Ok(Some((status, _))) if status.is_success());
        if success && done >= window_start && done < window_end {
            tally.ok_in_window += 1;
        }
        if i < run.first_measured {
            continue;
        }
        tally.lags_ns.push(nanos(sent.saturating_duration_since(scheduled)));
        match outcome {
            Ok(Some((_, body))) if success => {
                tally.ok += 1;
                tally.latencies_ns.push(nanos(done - sent.min(scheduled)));
                // After the latency is taken: parsing is the generator's time, not the server's.
                if sampled(i) {
                    tally.paths.observe(&body);
                }
            }
            Ok(Some((status, _))) => {
                tally.non_2xx += 1;
                tally.first_non_2xx.get_or_insert(status.as_u16());
            }
            Ok(None) => tally.timeouts += 1,
            Err(e) if e.is_timeout() => tally.timeouts += 1,
            Err(e) => {
                tally.errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(format!("{:#}", anyhow::Error::new(e)));
                }
            }
        }
    }
}

/// Sends request `i` and reads its whole answer (so the connection goes back to the pool, and the
/// latency covers the body, as a client would see it).
async fn send(run: &RateRun, i: u64, timeout: Duration) -> reqwest::Result<(reqwest::StatusCode, Bytes)> {
    let mut request = run.client.request(run.plan.method.clone(), run.plan.url.clone()).timeout(timeout);
    if let Some(body) = run.plan.bodies.get(i) {
        request = request
            .header(reqwest::header::CONTENT_TYPE, reqwest::header::HeaderValue::from_static("application/json"))
            .body(body.clone());
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    Ok((status, body))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs every rate in turn on one runtime and connection pool, calling `on_rate` as each ends.
///
/// The runtime is tokio's current-thread one, measured against the multi-threaded one (2 workers)
/// on `/v2/health/live` of a `cascade serve` sharing the same 2-core machine (dev builds, other
/// builds running): generator CPU per request 81 vs 105 us at 2,000 req/s and 42-51 vs 50-56 us at
/// 8,000 req/s, with the same p50 and an equal or lower p99 (the extra thread competes with the
/// server). The multi-threaded runtime has the higher ceiling: offered 30,000 req/s, the server
/// achieved ~17,000 with it and ~13,500 with one thread, where the generator itself is the limit.
/// Serving benchmarks run well below that, so the cheaper generator wins; beyond ~10,000 req/s on
/// such a machine, run the generator elsewhere.
fn measure(plan: Plan, rates: &[f64], mut on_rate: impl FnMut(&RateReport)) -> Result<Vec<RateReport>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(plan.connections as usize)
        .build()?;
    let plan = Arc::new(plan);
    let mut reports = Vec::with_capacity(rates.len());
    for &rate in rates {
        ensure!(rate.is_finite() && rate > 0.0, "rate {rate} must be a positive number of requests per second");
        eprintln!("{}/s ...", fmt_rate(rate));
        let report = runtime.block_on(measure_rate(client.clone(), plan.clone(), rate))?;
        on_rate(&report);
        reports.push(report);
    }
    Ok(reports)
}

async fn measure_rate(client: reqwest::Client, plan: Arc<Plan>, rate: f64) -> Result<RateReport> {
    let (first_measured, total) = schedule_bounds(rate, plan.warmup, plan.duration);
    let workers = u64::from(plan.connections).min(total.max(1));
    let duration = plan.duration;
    let run = Arc::new(RateRun {
        client,
        plan,
        rate,
        start: Instant::now() + START_LEAD,
        first_measured,
        total,
        next: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..workers).map(|_| tokio::spawn(worker(run.clone()))).collect();
    let mut tallies = Vec::with_capacity(handles.len());
    for handle in handles {
        tallies.push(handle.await.context("a load worker panicked")?);
    }
    Ok(summarise(rate, duration, total - first_measured, tallies))
}

fn summarise(rate: f64, duration: Duration, scheduled: u64, tallies: Vec<Tally>) -> RateReport {
    let mut all = Tally::default();
    for t in tallies {
        all.latencies_ns.extend(t.latencies_ns);
        all.lags_ns.extend(t.lags_ns);
        all.ok_in_window += t.ok_in_window;
        all.ok += t.ok;
        all.non_2xx += t.non_2xx;
        all.errors += t.errors;
        all.timeouts += t.timeouts;
        all.first_error = all.first_error.or(t.first_error);
        all.first_non_2xx = all.first_non_2xx.or(t.first_non_2xx);
        all.paths.merge(t.paths);
    }
    all.latencies_ns.sort_unstable();
    all.lags_ns.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    let pct = |per_mille: u64| percentile(&all.latencies_ns, per_mille).map(ms);
    RateReport {
        offered_rps: rate,
        achieved_rps: all.ok_in_window as f64 / duration.as_secs_f64(),
        scheduled,
        ok: all.ok,
        non_2xx: all.non_2xx,
        errors: all.errors,
        timeouts: all.timeouts,
        p50_ms: pct(500),
        p90_ms: pct(900),
        p99_ms: pct(990),
        p99_9_ms: pct(999),
        max_ms: all.latencies_ns.last().copied().map(ms),
        send_lag_p99_ms: percentile(&all.lags_ns, 990).map_or(0.0, ms),
        first_error: all.first_error,
        first_non_2xx: all.first_non_2xx,
        path_sampled: all.paths.sampled,
        cold_start_pct: all.paths.cold_start_pct(),
        mean_candidates: all.paths.mean_candidates(),
        meets_slo: false,
    }
}

/// Nearest-rank percentile of sorted data: the smallest value with at least `per_mille`/1000 of
/// the data at or below it. Exact (no interpolation, no histogram buckets); integer arithmetic so
/// p99.9 of 1000 values is the 999th, not the 1000th by floating-point rounding.
fn percentile(sorted: &[u64], per_mille: u64) -> Option<u64> {
    let n = sorted.len() as u64;
    let rank = (n * per_mille).div_ceil(1000).clamp(1, n.max(1));
    sorted.get(rank as usize - 1).copied()
}

fn table_row(r: &RateReport) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    let one = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    format!(
        "{:>10} {:>10.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8} {:>8.2} {:>7} {:>6}",
        fmt_rate(r.offered_rps),
        r.achieved_rps,
        ms(r.p50_ms),
        ms(r.p90_ms),
        ms(r.p99_ms),
        ms(r.p99_9_ms),
        ms(r.max_ms),
        r.ok,
        r.non_2xx,
        r.errors,
        r.timeouts,
        r.send_lag_p99_ms,
        one(r.cold_start_pct),
        one(r.mean_candidates)
    )
}

fn fmt_rate(rate: f64) -> String {
    if rate.fract() == 0.0 { format!("{rate:.0}") } else { format!("{rate}") }
}

fn fmt_duration(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("`{s}` is not a positive rate in requests per second")),
    }
}

/// `20s`, `500ms`, `1.5s`, `2m`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let bad = || format!("`{s}` is not a duration (e.g. 20s, 500ms, 2m)");
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::BTreeSet;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(extra: &[&str]) -> Result<LoadArgs, clap::Error> {
        let base = ["load", "--url", "http://127.0.0.1:1/x"];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.load)
    }

    #[test]
    fn rates_parse_from_a_comma_separated_list() {
        assert_eq!(parse(&[]).unwrap().rates, vec![100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(parse(&["--rates", "50,2.5, 1000"]).unwrap().rates, vec![50.0, 2.5, 1000.0]);
        assert_eq!(parse(&["--rates", "7"]).unwrap().rates, vec![7.0]);
        for bad in ["0", "-5", "abc", "100,,200", "inf"] {
            assert!(parse(&["--rates", bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn flags_parse() {
        let a = parse(&["--method", "GET", "--duration", "500ms", "--warmup", "0", "--connections", "3"]).unwrap();
        assert_eq!(a.method, HttpMethod::Get);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.warmup, Duration::ZERO);
        assert_eq!(a.connections, 3);
        assert_eq!(parse(&[]).unwrap().duration, Duration::from_secs(20));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse(&["--connections", "0"]).is_err());
        assert!(parse(&["--body-file", "b.ndjson", "--users", "10"]).is_err());
        // GET with a body and POST without one are refused when the plan is made.
        assert!(Plan::from_args(&parse(&["--method", "get", "--users", "10"]).unwrap()).is_err());
        assert!(Plan::from_args(&parse(&[]).unwrap()).is_err());
        assert!(Plan::from_args(&parse(&["--users", "10"]).unwrap()).is_ok());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let data: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&data, 500), Some(500));
        assert_eq!(percentile(&data, 900), Some(900));
        assert_eq!(percentile(&data, 990), Some(990));
        assert_eq!(percentile(&data, 999), Some(999));
        assert_eq!(percentile(&data, 1000), Some(1000));
        // Ten values: p99 and p99.9 are the largest; p50 the fifth.
        let ten: Vec<u64> = (1..=10).map(|v| v * 10).collect();
        assert_eq!(percentile(&ten, 500), Some(50));
        assert_eq!(percentile(&ten, 900), Some(90));
        assert_eq!(percentile(&ten, 990), Some(100));
        assert_eq!(percentile(&[7], 0), Some(7));
        assert_eq!(percentile(&[], 500), None);
    }

    #[test]
    fn schedule_is_evenly_spaced_from_the_start() {
        assert_eq!(schedule_offset(0, 100.0), Duration::ZERO);
        assert_eq!(schedule_offset(1, 100.0), Duration::from_millis(10));
        // No drift after many intervals that are not exact in binary.
        assert_eq!(schedule_offset(300_000, 3.0).as_secs_f64(), 100_000.0);
        assert_eq!(schedule_bounds(100.0, Duration::from_secs(1), Duration::from_secs(2)), (100, 300));
        assert_eq!(schedule_bounds(3.0, Duration::ZERO, Duration::from_secs(1)), (0, 3));
        // 2.5/s over 1 s: due at 0 and 0.4 s; the next (0.8 s) is too, the one at 1.2 s is not.
        assert_eq!(schedule_bounds(2.5, Duration::ZERO, Duration::from_secs(1)), (0, 3));
    }

    #[test]
    fn bodies_go_round_robin_in_file_order() {
        let b = Bodies::from_ndjson(&Bytes::from_static(b"{\"a\":1}\n\n  {\"a\":2}\r\n{\"a\":3}")).unwrap();
        let got: Vec<&[u8]> = (0..7).map(|i| b.get(i).unwrap().as_ref()).collect();
        assert_eq!(
            got,
            [&b"{\"a\":1}"[..], b"{\"a\":2}", b"{\"a\":3}", b"{\"a\":1}", b"{\"a\":2}", b"{\"a\":3}", b"{\"a\":1}"]
        );
        let err = Bodies::from_ndjson(&Bytes::from_static(b"{}\n{oops\n")).unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(Bodies::from_ndjson(&Bytes::from_static(b"\n \n")).is_err());
        assert!(Bodies::none().get(3).is_none());
    }

    #[test]
    fn generated_bodies_are_seeded_and_in_range() {
        let a = Bodies::generated(5, 20, 7).unwrap();
        assert_eq!(a.all, Bodies::generated(5, 20, 7).unwrap().all);
        assert_ne!(a.all, Bodies::generated(5, 20, 8).unwrap().all);
        let mut seen = [false; 5];
        for body in a.all.iter() {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["k"], 20);
            let user: usize = v["user"].as_str().unwrap().strip_prefix('u').unwrap().parse().unwrap();
            seen[user] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn sampled_answers_are_read_for_their_serving_path() {
        let mut t = PathTally::default();
        t.observe(
            br#"{"items":[{"id":"i1","score":0.5}],"path":{"sources":["als"],"cold_start":false,"candidates":480}}"#,
        );
        t.observe(br#"{"path":{"cold_start":true,"candidates":100,"ranked_by":"light"}}"#);
        t.observe(br#"{"path":{"cold_start":false}}"#); // before the server reported candidates
        t.observe(br#"{"items":[]}"#);
        t.observe(b"ok"); // a health check
        t.observe(br#"{"path":{"cold_start":"yes"}}"#); // not the shape we know: ignored
        let want = PathTally { sampled: 6, cold_known: 3, cold: 1, candidates_known: 2, candidates_sum: 580 };
        assert_eq!(t, want);
        assert!((t.cold_start_pct().unwrap() - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(t.mean_candidates(), Some(290.0));
        let mut none = PathTally::default();
        none.observe(b"{}");
        assert_eq!((none.cold_start_pct(), none.mean_candidates()), (None, None));
    }

    #[test]
    fn about_one_answer_in_ten_is_sampled_whatever_the_body_count() {
        let n = (0..100_000).filter(|&i| sampled(i)).count();
        assert!((9_000..11_000).contains(&n), "{n}");
        // With 10 bodies sent round-robin, every body is sampled, not just the first.
        let lines: BTreeSet<u64> = (0..1000).filter(|&i| sampled(i)).map(|i| i % 10).collect();
        assert_eq!(lines.len(), 10);
    }

    #[test]
    fn the_report_merges_every_workers_tally() {
        let worker = |lat: &[u64], cold: u64, cands: u64| Tally {
            latencies_ns: lat.to_vec(),
            lags_ns: vec![1_000_000],
            ok_in_window: lat.len() as u64,
            ok: lat.len() as u64,
            paths: PathTally { sampled: 2, cold_known: 2, cold, candidates_known: 2, candidates_sum: cands },
            ..Tally::default()
        };
        let mut failing = worker(&[], 0, 0);
        failing.paths = PathTally::default();
        failing.errors = 2;
        failing.first_error = Some("refused".into());
        let tallies = vec![worker(&[1_000_000, 3_000_000], 2, 200), worker(&[2_000_000, 4_000_000], 0, 1000), failing];
        let r = summarise(100.0, Duration::from_secs(2), 6, tallies);
        assert_eq!((r.scheduled, r.ok, r.errors, r.first_error.as_deref()), (6, 4, 2, Some("refused")));
        assert_eq!(r.achieved_rps, 2.0);
        assert_eq!((r.p50_ms, r.max_ms), (Some(2.0), Some(4.0)));
        assert_eq!((r.path_sampled, r.cold_start_pct, r.mean_candidates), (4, Some(50.0), Some(300.0)));
        assert!(!r.clean());
        let row = table_row(&r);
        assert!(row.ends_with("   50.0  300.0"), "{row}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!((json["cold_start_pct"].as_f64(), json["mean_candidates"].as_f64()), (Some(50.0), Some(300.0)));
        // No answer carried a path: dashes, and nulls in JSON.
        let r = summarise(100.0, Duration::from_secs(1), 1, vec![Tally::default()]);
        assert!(table_row(&r).ends_with("      -      -"), "{}", table_row(&r));
        assert!(serde_json::to_value(&r).unwrap()["cold_start_pct"].is_null());
    }

    /// How the test server answers.
    enum Behaviour {
        /// Every tenth request (counted over the whole run) waits `delay`; the rest answer at once.
        EveryTenthSlow { delay: Duration, count: AtomicU64 },
        /// One request at a time across all connections, each taking `each`.
        Serial { each: Duration, lock: Mutex<()> },
    }

    impl Behaviour {
        fn answer(&self) {
            match self {
                Behaviour::EveryTenthSlow { delay, count } => {
                    if count.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
                        std::thread::sleep(*delay);
                    }
                }
                Behaviour::Serial { each, lock } => {
                    let _one_at_a_time = lock.lock().unwrap();
                    std::thread::sleep(*each);
                }
            }
        }
    }

    /// A minimal HTTP/1.1 keep-alive server, a thread per connection; returns its base URL.
    fn serve(behaviour: Behaviour) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let behaviour = Arc::new(behaviour);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let behaviour = behaviour.clone();
                std::thread::spawn(move || handle(stream?, &behaviour));
            }
            std::io::Result::Ok(())
        });
        url
    }

    fn handle(mut stream: TcpStream, behaviour: &Behaviour) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let head_end = loop {
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let body_len: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + body_len {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..head_end + body_len);
            behaviour.answer();
            stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")?;
        }
    }

    fn plan(url: &str, connections: u32, warmup: Duration, duration: Duration) -> Plan {
        Plan {
            url: reqwest::Url::parse(url).unwrap(),
            method: reqwest::Method::POST,
            bodies: Bodies::generated(100, 10, 1).unwrap(),
            connections,
            warmup,
            duration,
            timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_slow_tenth_of_requests_shows_in_p99_not_p50() {
        let delay = Duration::from_millis(80);
        let url = serve(Behaviour::EveryTenthSlow { delay, count: AtomicU64::new(0) });
        let p = plan(&url, 16, Duration::from_millis(250), Duration::from_secs(2));
        let r = measure(p, &[200.0], |r| eprintln!("{}", table_row(r))).unwrap().remove(0);
        assert_eq!((r.scheduled, r.ok, r.errors, r.timeouts, r.non_2xx), (400, 400, 0, 0, 0), "{r:?}");
        // Every delayed request takes at least `delay` from when it left, and ~10% are delayed.
        assert!(r.p99_ms.unwrap() >= 80.0, "{r:?}");
        // Generous: an instant answer on localhost takes well under a millisecond.
        assert!(r.p50_ms.unwrap() < 40.0, "{r:?}");
        assert!(r.achieved_rps > 100.0, "{r:?}");
        // About 40 of the 400 answers were read; `{}` carries no serving path.
        assert!(r.path_sampled > 10 && r.cold_start_pct.is_none() && r.mean_candidates.is_none(), "{r:?}");
    }

    #[test]
    fn an_overloaded_server_shows_growing_latency_not_a_quietly_lower_rate() {
        // One request at a time, 20 ms each: at most 50 req/s.
        let url = serve(Behaviour::Serial { each: Duration::from_millis(20), lock: Mutex::new(()) });
        let p = plan(&url, 4, Duration::ZERO, Duration::from_secs(1));
        let reports = measure(p, &[20.0, 150.0], |r| eprintln!("{}", table_row(r))).unwrap();
        let (under, over) = (&reports[0], &reports[1]);
        assert_eq!((under.ok, over.ok), (20, 150), "{reports:?}");
        assert!(under.p50_ms.unwrap() < 200.0, "{under:?}");
        // A closed loop with 4 connections would report at most ~4 x 20 ms, since no connection
        // sends until its answer arrives. Timed from the schedule, the backlog shows: request i
        // of 150 waits for about i x 20 ms of service minus its i / 150 s of schedule.
        assert!(over.p50_ms.unwrap() > 300.0, "{over:?}");
        assert!(over.max_ms.unwrap() > 800.0, "{over:?}");
        assert!(over.send_lag_p99_ms > 300.0, "{over:?}");
        // And the achieved rate is reported as what the server managed, well below the offer.
        assert!(over.achieved_rps < 100.0, "{over:?}");
    }
}
