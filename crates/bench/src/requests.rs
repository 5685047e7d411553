//! `cascade-bench requests`: request mixes for `cascade-bench load --body-file`, drawn from a
//! project's event log.
//!
//! A serving benchmark's "warm" mix has to be warm the way the server decides it. A request is
//! served by the cold-start sources (popularity, trending, content: about 100 candidates, no
//! personal retrieval) when its user's history holds fewer than the pipeline's `min_history`
//! distinct items; only the others take the full cascade. Drawing "warm" users from the bundle's
//! `users.json` (everyone the models saw, however briefly) gave a mix where most requests took
//! the cold-start path, so its latencies described the cheap path. Here the history is counted as
//! the server's live view builds it: events of the `[train] interactions` types that name both a
//! user and an item, counted as distinct items. (The live view keeps each user's latest 500
//! interactions; counting over the whole log differs only for a user whose latest 500 repeat
//! fewer than `min_history` items.)

use crate::loadgen::splitmix64;
use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("mix").required(true).args(["warm", "uniform"]))]
pub struct RequestsArgs {
    /// The project's configuration file [default: ./cascade.toml]. Its data directory (relative
    /// to the file) holds the event log, which is only read: `cascade serve` may be running.
    #[arg(long, env = "CASCADE_CONFIG")]
    config: Option<PathBuf>,
    /// Draw users whose history has at least --min-history distinct items: every request takes
    /// the full cascade (personal retrieval, ranking), the heavier case.
    #[arg(long)]
    warm: bool,
    /// Draw users uniformly from every user the log names (events of any type, user records),
    /// whatever their history; how many of the drawn are cold starts is printed.
    #[arg(long)]
    uniform: bool,
    /// The cold-start threshold: a user with fewer distinct items among their interaction events
    /// is served by the cold-start sources [default: the project's `[pipelines.default]
    /// min_history`, else 5, the serving default].
    #[arg(long)]
    min_history: Option<usize>,
    /// Request bodies to write (users are drawn with replacement; `load` sends them round-robin).
    #[arg(long, default_value_t = 65_536)]
    count: usize,
    /// `k` of every body.
    #[arg(long, default_value_t = 10)]
    k: u64,
    /// Seed of the draw: the same log, flags and seed write the same file.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The NDJSON file to write, one body `{"user": "...", "k": K}` per line.
    #[arg(long)]
    out: PathBuf,
}

/// Which users a mix draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Warm,
    Uniform,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Warm => "warm",
            Mix::Uniform => "uniform",
        }
    }
}

/// What the serving default calls a short history (`PipelineConfig::min_history`).
const DEFAULT_MIN_HISTORY: usize = 5;

pub fn run(args: &RequestsArgs) -> Result<()> {
    let mix = if args.warm { Mix::Warm } else { Mix::Uniform };
    ensure!(args.count > 0, "--count must be at least 1");
    let config_path = args.config.clone().unwrap_or_else(|| PathBuf::from(crate::project::CONFIG_FILE));
    let config = crate::project::load_config(&config_path)?;
    let min_history = match args.min_history {
        Some(n) => n,
        None => configured_min_history(&config)?,
    };
    let interactions: BTreeSet<String> = config.interactions()?.keys().cloned().collect();
    let data_dir = &config.project.data_dir;
    let store = cascade_store::Store::open_read_only(
        data_dir,
        cascade_store::StoreOptions::from(&cascade_store::LogConfig::from_config(&config)?),
    )
    .with_context(|| format!("reading the event log in {}", data_dir.display()))?;
    let records = store.read_from(0).map(|entry| entry.map(|(_, record)| record).map_err(anyhow::Error::from));
    let users = histories(records, &interactions)?;
    drop(store);

    let pool = eligible(&users, mix, min_history);
    let types = interactions.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
    let warm_users = eligible(&users, Mix::Warm, min_history).len();
    eprintln!(
        "{} users in the log; {warm_users} ({:.1}%) with at least {min_history} distinct items among their \
         {types} events",
        users.len(),
        percent(warm_users, users.len())
    );
    if pool.is_empty() {
        match mix {
            Mix::Warm => bail!(
                "no user has at least {min_history} distinct interacted items: lower --min-history, or import or \
                 generate interactions first"
            ),
            Mix::Uniform => bail!("the log names no user: import or generate data first"),
        }
    }
    let drawn = draw(&pool, args.count, args.seed);
    write_bodies(&args.out, &drawn, args.k)?;
    let cold = drawn.iter().filter(|(_, n)| *n < min_history).count();
    eprintln!(
        "wrote {} {} bodies (k = {}, seed {}, {} distinct users) to {}: {:.1}% of them are cold starts \
         (fewer than {min_history})",
        drawn.len(),
        mix.name(),
        args.k,
        args.seed,
        drawn.iter().map(|(u, _)| u).collect::<BTreeSet<_>>().len(),
        args.out.display(),
        percent(cold, drawn.len())
    );
    Ok(())
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

/// `[pipelines.default] min_history` when the project sets it, else the serving default.
fn configured_min_history(config: &cascade_core::Config) -> Result<usize> {
    let Some(value) = config.pipelines.get("default").and_then(|p| p.get("min_history")) else {
        return Ok(DEFAULT_MIN_HISTORY);
    };
    value
        .as_integer()
        .and_then(|n| usize::try_from(n).ok())
        .with_context(|| format!("pipelines.default.min_history: `{value}` is not a count"))
}

/// Every user the log names, sorted by id, with the number of distinct items among their events
/// of the `interactions` types (events naming both a user and an item, as the live view counts).
fn histories(
    records: impl Iterator<Item = Result<cascade_core::Record>>,
    interactions: &BTreeSet<String>,
) -> Result<Vec<(String, usize)>> {
    use cascade_core::Record;
    // Items as small integers: a history is a list of them, deduplicated once at the end.
    let mut item_ids: HashMap<String, u32> = HashMap::new();
    let mut users: HashMap<String, Vec<u32>> = HashMap::new();
    for record in records {
        match record? {
            Record::Event(e) => {
                let Some(user) = e.user else { continue };
                let history = users.entry(user).or_default();
                if let Some(item) = e.item
                    && interactions.contains(&e.event_type)
                {
                    let next = item_ids.len() as u32;
                    history.push(*item_ids.entry(item).or_insert(next));
                }
            }
            Record::User(u) => {
                users.entry(u.id).or_default();
            }
            Record::Item(_) => {}
        }
    }
    let mut out: Vec<(String, usize)> = users
        .into_iter()
        .map(|(user, mut items)| {
            items.sort_unstable();
            items.dedup();
            (user, items.len())
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The users a mix draws from, in the order given (sorted by id, so the draw is reproducible).
fn eligible(users: &[(String, usize)], mix: Mix, min_history: usize) -> Vec<(&str, usize)> {
    users.iter().filter(|(_, n)| mix == Mix::Uniform || *n >= min_history).map(|(u, n)| (u.as_str(), *n)).collect()
}

/// `count` draws from `pool`, uniform and with replacement, by a generator seeded with `seed`.
fn draw<T: Copy>(pool: &[T], count: usize, seed: u64) -> Vec<T> {
    if pool.is_empty() {
        return Vec::new();
    }
    let mut state = seed;
    (0..count)
        .map(|_| {
            // Lemire's multiply-shift: uniform enough for any pool far below 2^64.
            let i = ((u128::from(splitmix64(&mut state)) * pool.len() as u128) >> 64) as usize;
            pool[i]
        })
        .collect()
}

#[derive(Serialize)]
struct Body<'a> {
    user: &'a str,
    k: u64,
}

fn bodies_ndjson(drawn: &[(&str, usize)], k: u64) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(drawn.len() * 32);
    for (user, _) in drawn {
        serde_json::to_writer(&mut out, &Body { user, k })?;
        out.push(b'\n');
    }
    Ok(out)
}

fn write_bodies(path: &Path, drawn: &[(&str, usize)], k: u64) -> Result<()> {
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&bodies_ndjson(drawn, k)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::{Config, Event, Record, Timestamp, UserRecord};

    fn users() -> Vec<(String, usize)> {
        [("a", 0), ("b", 4), ("c", 5), ("d", 12), ("e", 1), ("f", 7)].iter().map(|(u, n)| (u.to_string(), *n)).collect()
    }

    #[test]
    fn warm_takes_users_at_or_above_the_threshold_and_uniform_takes_everyone() {
        let users = users();
        fn names(pool: Vec<(&str, usize)>) -> Vec<&str> {
            pool.into_iter().map(|(u, _)| u).collect()
        }
        assert_eq!(names(eligible(&users, Mix::Warm, 5)), ["c", "d", "f"]);
        assert_eq!(names(eligible(&users, Mix::Warm, 8)), ["d"]);
        assert_eq!(names(eligible(&users, Mix::Warm, 0)), ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(names(eligible(&users, Mix::Uniform, 5)), ["a", "b", "c", "d", "e", "f"]);
    }

    #[test]
    fn draws_are_seeded_uniform_and_from_the_pool() {
        let users = users();
        let pool = eligible(&users, Mix::Warm, 5);
        let a = draw(&pool, 3000, 7);
        assert_eq!(a.len(), 3000);
        assert_eq!(a, draw(&pool, 3000, 7), "same seed, same draw");
        assert_ne!(a, draw(&pool, 3000, 8), "another seed, another draw");
        assert!(a.iter().all(|(_, n)| *n >= 5), "a warm draw has no cold user");
        for (user, _) in &pool {
            let hits = a.iter().filter(|(u, _)| u == user).count();
            assert!((850..1150).contains(&hits), "{user}: {hits} of 3000, expected ~1000");
        }
        let uniform = draw(&eligible(&users, Mix::Uniform, 5), 6000, 1);
        let cold = uniform.iter().filter(|(_, n)| *n < 5).count();
        assert!((2700..3300).contains(&cold), "half the users are cold: {cold} of 6000");
        assert!(draw::<(&str, usize)>(&[], 10, 1).is_empty());
    }

    #[test]
    fn bodies_are_one_json_object_per_line() {
        let text = bodies_ndjson(&[("u1", 5), ("we\"ird", 9)], 20).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), "{\"user\":\"u1\",\"k\":20}\n{\"user\":\"we\\\"ird\",\"k\":20}\n");
    }

    fn event(ty: &str, user: Option<&str>, item: Option<&str>) -> Result<Record> {
        Ok(Record::Event(Event {
            id: None,
            event_type: ty.into(),
            ts: Timestamp(0),
            user: user.map(Into::into),
            item: item.map(Into::into),
            fields: vec![],
        }))
    }

    #[test]
    fn histories_count_distinct_items_of_interaction_events() {
        let interactions: BTreeSet<String> = ["click".to_string(), "play".to_string()].into();
        let log = vec![
            event("click", Some("u1"), Some("i1")),
            event("click", Some("u1"), Some("i1")), // the same item again
            event("play", Some("u1"), Some("i2")),
            event("impression", Some("u1"), Some("i3")), // not an interaction type
            event("click", Some("u2"), None),            // no item: no history, but a user
            event("click", None, Some("i9")),            // no user
            Ok(Record::User(UserRecord { id: "u3".into(), attributes: vec![], updated_at: Timestamp(0) })),
            event("play", Some("u0"), Some("i1")),
        ];
        let got = histories(log.into_iter(), &interactions).unwrap();
        let want: Vec<(String, usize)> =
            [("u0", 1), ("u1", 2), ("u2", 0), ("u3", 0)].iter().map(|(u, n)| (u.to_string(), *n)).collect();
        assert_eq!(got, want);
        let broken = vec![event("click", Some("u1"), Some("i1")), Err(anyhow::anyhow!("torn record"))];
        assert!(histories(broken.into_iter(), &interactions).is_err());
    }

    #[test]
    fn the_threshold_defaults_to_the_default_pipelines() {
        assert_eq!(configured_min_history(&Config::default()).unwrap(), 5);
        let c = Config::from_toml("[pipelines.default]\nmin_history = 3\n", "t").unwrap();
        assert_eq!(configured_min_history(&c).unwrap(), 3);
        let c = Config::from_toml("[pipelines.default]\nmin_history = \"many\"\n", "t").unwrap();
        assert!(configured_min_history(&c).is_err());
    }
}
