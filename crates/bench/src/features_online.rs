//! `cascade-bench features-online` (was `cascade features bench`): the online feature store's
//! update throughput and the latency of reading 50 features for 1 entity and for a ranker's batch
//! of 500, embedded and in Redis, on a synthetic log. Needs no project: everything is synthetic
//! and in a temporary directory.

use anyhow::Result;
use cascade_core::{Config, Event, Record, Timestamp, Value};
use cascade_features::{Entities, FeatureSet, OnlineStore};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct OnlineArgs {
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    #[arg(long, default_value_t = 5_000)]
    items: u64,
    /// Events of the synthetic log (spread over 7 days).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Timed reads per case.
    #[arg(long, default_value_t = 2_000)]
    reads: usize,
    /// Redis for the Redis backend (a unique key prefix is used and deleted afterwards).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Embedded only.
    #[arg(long)]
    no_redis: bool,
}

const DAY: i64 = 86_400_000;
const START: i64 = 1_767_225_600_000; // 2026-01-01

/// Two views (user, item) of 25 features each: windowed counts per event type, sums, mean,
/// extremes, distinct count, last, last-N, time since, decayed count, ratio.
pub fn definitions() -> String {
    let mut t = String::new();
    for (view, entity, other) in [("user_f", "user", "item"), ("item_f", "item", "user")] {
        let _ = write!(
            t,
            "[features.{view}]\nentity = \"{entity}\"\nevents = [\"click\", \"play\", \"purchase\"]\nttl = \"30days\"\n[features.{view}.features]\n"
        );
        for (w, tile) in [("1h", "1m"), ("6h", "10m"), ("24h", "1h"), ("7days", "1day")] {
            let n = w.replace("days", "d");
            let _ = writeln!(t, "n_{n} = {{ agg = \"count\", window = \"{w}\", tile = \"{tile}\" }}");
        }
        for ty in ["click", "play", "purchase"] {
            for (w, tile) in [("1h", "1m"), ("24h", "1h"), ("7days", "1day")] {
                let n = w.replace("days", "d");
                let _ = writeln!(
                    t,
                    "{ty}_{n} = {{ agg = \"count\", events = [\"{ty}\"], window = \"{w}\", tile = \"{tile}\" }}"
                );
            }
        }
        for (w, tile) in [("1h", "1m"), ("24h", "1h"), ("7days", "1day")] {
            let n = w.replace("days", "d");
            let _ =
                writeln!(t, "spend_{n} = {{ agg = \"sum\", field = \"price\", window = \"{w}\", tile = \"{tile}\" }}");
        }
        let _ = writeln!(t, "price_mean = {{ agg = \"mean\", field = \"price\" }}");
        let _ = writeln!(t, "price_max_24h = {{ agg = \"max\", field = \"price\", window = \"24h\", tile = \"1h\" }}");
        let _ = writeln!(t, "price_min = {{ agg = \"min\", field = \"price\" }}");
        let _ = writeln!(
            t,
            "distinct_24h = {{ agg = \"distinct_count\", field = \"{other}\", window = \"24h\", tile = \"1h\", max_distinct = 100 }}"
        );
        let _ = writeln!(t, "last_other = {{ agg = \"last\", field = \"{other}\" }}");
        let _ = writeln!(t, "recent = {{ agg = \"last_n\", field = \"{other}\", n = 10 }}");
        let _ = writeln!(t, "since = {{ agg = \"time_since_last\" }}");
        let _ = writeln!(t, "decayed = {{ agg = \"decayed_count\", half_life = \"1h\" }}");
        let _ =
            writeln!(t, "buy_share = {{ agg = \"ratio\", numerator = \"purchase_24h\", denominator = \"n_24h\" }}\n");
    }
    t
}

/// The synthetic log: `events` click/play/purchase events of `users` users on `items` items over
/// 7 days from 2026-01-01, generated as it is consumed (`features-replay` reads it too).
pub fn log_iter(users: u64, items: u64, events: usize) -> impl Iterator<Item = (u64, Record)> + use<> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let step = 7 * DAY / events.max(1) as i64;
    (0..events).map(move |i| {
        let r = next();
        let (event_type, fields) = match r % 10 {
            0 => ("purchase", vec![("price".to_string(), Value::Float(((r >> 40) % 10_000) as f64 / 100.0))]),
            1..=3 => ("play", vec![]),
            _ => ("click", vec![]),
        };
        let e = Event {
            id: None,
            event_type: event_type.into(),
            ts: Timestamp(START + i as i64 * step),
            user: Some(format!("u{}", (r >> 8) % users)),
            item: Some(format!("i{}", (r >> 24) % items)),
            fields,
        };
        (i as u64, Record::Event(e))
    })
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

async fn measure(name: &str, store: &OnlineStore, log: &[(u64, Record)], args: &OnlineArgs) -> Result<Vec<String>> {
    let started = Instant::now();
    for batch in log.chunks(1000) {
        store.apply(batch).await?;
    }
    let apply = started.elapsed();
    let set = store.features();
    let all = set.all();
    let at = Timestamp(START + 7 * DAY);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut rows = Vec::new();
    for batch in [1usize, 500] {
        let mut times = Vec::with_capacity(args.reads);
        for i in 0..args.reads + args.reads / 10 {
            let user = format!("u{}", rnd(args.users));
            let entities: Vec<Entities> =
                (0..batch).map(|_| Entities::user(user.clone()).with_item(format!("i{}", rnd(args.items)))).collect();
            let t = Instant::now();
            let v = store.read(&all, &entities, at).await?;
            let took = t.elapsed();
            std::hint::black_box(v);
            if i >= args.reads / 10 {
                times.push(took); // after a 10% warm-up
            }
        }
        times.sort();
        rows.push(format!(
            "| {name} | {} × {batch} | {} | {} | {:.0} |",
            all.len(),
            us(quantile(&times, 0.5)),
            us(quantile(&times, 0.99)),
            log.len() as f64 / apply.as_secs_f64()
        ));
    }
    Ok(rows)
}

pub fn run(args: &OnlineArgs) -> Result<()> {
    let config = Config::from_toml(&definitions(), "bench")?;
    let set = FeatureSet::from_config(&config)?;
    let log: Vec<(u64, Record)> = log_iter(args.users, args.items, args.events).collect();
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut out = vec![
        format!(
            "{} events, {} users, {} items, 50 features (2 views); read as of the end of the log",
            args.events, args.users, args.items
        ),
        "| backend | features × entities | p50 | p99 | updates/s |".to_string(),
        "|---|---|---:|---:|---:|".to_string(),
    ];
    runtime.block_on(async {
        let embedded = OnlineStore::embedded(dir.path(), set.clone())?;
        out.extend(measure("embedded", &embedded, &log, args).await?);
        if !args.no_redis {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
            let prefix = format!("cascade-bench:{}:{nanos}", std::process::id());
            let redis = OnlineStore::redis(&args.redis, &prefix, set.clone()).await?;
            let result = measure("redis", &redis, &log, args).await;
            redis.clear().await?;
            out.extend(result?);
        }
        anyhow::Ok(())
    })?;
    for line in out {
        println!("{line}");
    }
    Ok(())
}
