use crate::*;
use cascade_core::{Config, Schema, Value};
use std::sync::OnceLock;

const DAY: i64 = 86_400_000;
const HOUR: i64 = 3_600_000;

/// The small world of seed 7, shared by the read-only tests.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| World::generate(&WorldConfig::small(7)))
}

fn schema() -> Schema {
    Schema::from_config(&Config::default())
}

/// `(user, item)` indices of every event.
fn pairs(w: &World) -> Vec<(usize, usize)> {
    w.events
        .iter()
        .map(|e| {
            let u = w.user_index(e.user.as_deref().expect("user")).expect("known user");
            let i = w.item_index(e.item.as_deref().expect("item")).expect("known item");
            (u, i)
        })
        .collect()
}

fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = xs.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    assert!(n > 0, "mean of nothing");
    sum / n as f64
}

/// Share of the total held by the largest tenth of `counts`.
fn top_decile_share(mut counts: Vec<usize>) -> f64 {
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let top: usize = counts[..counts.len().div_ceil(10)].iter().sum();
    top as f64 / counts.iter().sum::<usize>() as f64
}

#[test]
fn configs() {
    let d = WorldConfig::default();
    assert_eq!((d.seed, d.users, d.items, d.events, d.days), (42, 1000, 2000, 100_000, 60));
    assert_eq!(d.start.to_string(), "2024-01-01T00:00:00.000Z");
    assert_eq!(d.end().to_string(), "2024-03-01T00:00:00.000Z");
    let s = WorldConfig::small(3);
    assert_eq!((s.seed, s.users, s.items, s.events), (3, 100, 200, 5_000));
}

#[test]
fn same_seed_same_world_other_seed_other_world() {
    let cfg = WorldConfig::small(7);
    assert_eq!(&World::generate(&cfg), world());
    let other = World::generate(&WorldConfig::small(8));
    assert_ne!(other.events, world().events);
    assert_ne!(other.items, world().items);
    assert_ne!(other.user_taste, world().user_taste);
}

#[test]
fn stream_yields_the_world_events() {
    let cfg = WorldConfig::small(7);
    let stream = events_iter(&cfg);
    assert_eq!(stream.len(), cfg.events);
    assert_eq!(stream.world().items, world().items);
    assert_eq!(stream.world().users, world().users);
    assert!(stream.world().events.is_empty());
    let events: Vec<Event> = stream.collect();
    assert_eq!(events, world().events);
    assert_eq!(World::catalogue(&cfg).items, world().items);
}

#[test]
fn stream_holds_about_an_hour_of_events() {
    let cfg = WorldConfig { events: 20_000, ..WorldConfig::small(5) };
    let mut stream = events_iter(&cfg);
    assert_eq!(stream.by_ref().count(), 20_000);
    let per_hour = 20_000 / (24 * 30);
    assert!(stream.max_pending() > 0);
    assert!(stream.max_pending() < 5 * per_hour, "held {} events back", stream.max_pending());
}

#[test]
fn everything_validates_against_the_default_schema() {
    let w = world();
    let schema = schema();
    for e in &w.events {
        // Through text, as the CLI writes NDJSON.
        let line = serde_json::to_string(&event_json(e)).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(schema.validate_event(&parsed).as_ref(), Ok(e), "{line}");
    }
    for item in &w.items {
        assert_eq!(schema.validate_item(&item.id, &item_json(item), Timestamp(0)).as_ref(), Ok(item));
    }
    for user in &w.users {
        assert_eq!(schema.validate_user(&user.id, &user_json(user), Timestamp(0)).as_ref(), Ok(user));
    }
}

#[test]
fn json_shapes() {
    let w = world();
    let rating = w.events.iter().find(|e| e.event_type == "rating").unwrap();
    let j = event_json(rating);
    assert_eq!(j["type"], "rating");
    assert_eq!(j["id"], serde_json::json!(rating.id.clone().unwrap()));
    assert!(j["ts"].as_str().unwrap().ends_with('Z'));
    assert!((1.0..=5.0).contains(&j["fields"]["value"].as_f64().unwrap()));
    let like = w.events.iter().find(|e| e.event_type == "like").unwrap();
    assert!(event_json(like).get("fields").is_none());
    let item = item_json(&w.items[0]);
    let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["attributes", "available", "created_at", "updated_at"]);
    assert!(item["attributes"]["title"].is_string());
    let user = user_json(&w.users[0]);
    assert_eq!(user.as_object().unwrap().keys().collect::<Vec<_>>(), ["attributes", "updated_at"]);
}

#[test]
fn events_are_ordered_numbered_and_possible() {
    let w = world();
    let cfg = &w.config;
    assert_eq!(w.events.len(), cfg.events);
    for (n, e) in w.events.iter().enumerate() {
        assert_eq!(e.id.as_deref(), Some(format!("e{n}").as_str()));
        assert!(cfg.start <= e.ts && e.ts < cfg.end(), "{e:?} outside the window");
    }
    assert!(w.events.windows(2).all(|p| p[0].ts <= p[1].ts), "events out of order");
    for (e, (_, i)) in w.events.iter().zip(pairs(w)) {
        assert!(e.ts >= w.item_released_at[i], "{e:?} before the release of i{i}");
        assert!(w.item_unavailable_from[i].is_none_or(|c| e.ts < c), "{e:?} after i{i} churned");
    }
    let records: Vec<Record> = w.records().collect();
    assert_eq!(records.len(), w.items.len() + w.users.len() + w.events.len());
    assert!(matches!(records[0], Record::Item(_)));
    assert!(matches!(records[w.items.len()], Record::User(_)));
    assert_eq!(records.last(), Some(&Record::Event(w.events.last().unwrap().clone())));
}

#[test]
fn catalogue_has_genres_creators_freshness_churn_and_prices() {
    let w = World::catalogue(&WorldConfig::default());
    let cfg = &w.config;
    assert_eq!(w.items.len(), 2000);
    assert_eq!(w.genre_names.len(), 18);
    let (mut before, mut inside, mut churned, mut priced) = (0, 0, 0, 0);
    let mut creator_size = vec![0usize; cfg.creators];
    for (n, item) in w.items.iter().enumerate() {
        assert_eq!(item.id, format!("i{n}"));
        let genres = &w.item_genre_sets[n];
        assert!((1..=3).contains(&genres.len()) && w.item_genres[n] == genres[0]);
        let names: Vec<String> = genres.iter().map(|&g| w.genre_names[g].clone()).collect();
        assert_eq!(
            item.attributes.iter().find(|(k, _)| k == "genres").map(|(_, v)| v),
            Some(&Value::StringList(names))
        );
        let mut dedup = genres.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), genres.len(), "duplicate genre in {genres:?}");
        creator_size[w.item_creator[n]] += 1;
        let released = w.item_released_at[n];
        assert_eq!(item.created_at, Some(released));
        if released < cfg.start {
            before += 1;
        } else {
            assert!(released < cfg.end());
            inside += 1;
        }
        match w.item_unavailable_from[n] {
            Some(at) => {
                churned += 1;
                assert!(!item.available && item.updated_at == at && at > released && at > cfg.start && at < cfg.end());
            }
            None => assert!(item.available && item.updated_at == released),
        }
        priced += usize::from(w.item_price[n].is_some());
    }
    assert!((1000..1400).contains(&before), "{before} released before the window");
    assert!((600..1000).contains(&inside), "{inside} released inside the window");
    assert!((20..120).contains(&churned), "{churned} churned");
    assert!((600..1000).contains(&priced), "{priced} priced");
    creator_size.sort_unstable();
    let median = creator_size[creator_size.len() / 2].max(1);
    assert!(creator_size[creator_size.len() - 1] > 10 * median, "creator sizes are not heavy-tailed");

    // Item vectors sit near their primary genre's centroid.
    let own = mean((0..w.items.len()).map(|i| f64::from(dot(&w.item_vec[i], &w.genre_vec[w.item_genres[i]]))));
    let other =
        mean((0..w.items.len()).map(|i| f64::from(dot(&w.item_vec[i], &w.genre_vec[(w.item_genres[i] + 1) % 18]))));
    assert!(own > 0.5 && own > other + 0.3, "own genre {own:.2}, another {other:.2}");

    for (n, user) in w.users.iter().enumerate() {
        assert_eq!(user.id, format!("u{n}"));
        assert!((1..=3).contains(&w.user_fav_genres[n].len()));
        assert!((1..=3).contains(&w.user_fav_creators[n].len()));
        assert!(w.user_activity[n] >= 1.0);
        assert!((dot(&w.user_taste[n], &w.user_taste[n]) - 1.0).abs() < 1e-4);
    }
    let with_age = w.users.iter().filter(|u| u.attributes.iter().any(|(k, _)| k == "age")).count();
    assert!((800..1000).contains(&with_age));
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn popularity_and_activity_are_heavy_tailed() {
    let w = world();
    let mut items = vec![0usize; w.items.len()];
    let mut users = vec![0usize; w.users.len()];
    for (u, i) in pairs(w) {
        items[i] += 1;
        users[u] += 1;
    }
    let item_share = top_decile_share(items);
    let user_share = top_decile_share(users);
    assert!(item_share > 0.4, "top 10% of items got {item_share:.2} of the events");
    assert!(user_share > 0.3, "top 10% of users made {user_share:.2} of the events");
}

#[test]
fn users_favour_their_genres() {
    let w = world();
    let pairs = pairs(w);
    // Genre sets as bit masks (the small world has 12 genres).
    let mask = |genres: &[usize]| genres.iter().fold(0u64, |m, &g| m | 1 << g);
    let item_mask: Vec<u64> = w.item_genre_sets.iter().map(|g| mask(g)).collect();
    let mut item_events = vec![0usize; w.items.len()];
    let mut per_user = vec![Vec::new(); w.users.len()];
    for &(u, i) in &pairs {
        item_events[i] += 1;
        per_user[u].push(i);
    }
    let mut ratios = Vec::new();
    for (u, items) in per_user.iter().enumerate().filter(|(_, items)| items.len() >= 20) {
        let fav = mask(&w.user_fav_genres[u]);
        let hits = |i: &usize| item_mask[*i] & fav != 0;
        let share = items.iter().filter(|i| hits(i)).count() as f64 / items.len() as f64;
        let base = (0..w.items.len()).filter(hits).map(|i| item_events[i]).sum::<usize>() as f64 / pairs.len() as f64;
        ratios.push(share / base);
    }
    assert!(ratios.len() >= 20, "only {} users with 20 events", ratios.len());
    let enrichment = mean(ratios);
    assert!(enrichment >= 2.0, "favourite genres enriched only {enrichment:.2}x");
}

#[test]
fn evenings_are_busier_than_early_mornings() {
    let w = world();
    let mut by_hour = [0usize; 24];
    for e in &w.events {
        by_hour[(e.ts.millis().rem_euclid(DAY) / HOUR) as usize] += 1;
    }
    let evening: usize = by_hour[18..22].iter().sum();
    let early: usize = by_hour[3..7].iter().sum();
    assert!(evening > 4 * early, "evening {evening}, early morning {early}: {by_hour:?}");
}

#[test]
fn behaviour_follows_affinity() {
    let w = world();
    let pairs = pairs(w);
    let affinity_of = |ty: &str| {
        mean(
            w.events
                .iter()
                .zip(&pairs)
                .filter(|(e, _)| e.event_type == ty)
                .map(|(_, &(u, i))| f64::from(w.affinity(u, i))),
        )
    };
    let (like, skip) = (affinity_of("like"), affinity_of("skip"));
    assert!(like > skip + 0.1, "likes {like:.2} vs skips {skip:.2}");
    let chosen = mean(pairs.iter().map(|&(u, i)| f64::from(w.affinity(u, i))));
    let random = mean(
        (0..w.users.len())
            .flat_map(|u| (0..w.items.len()).map(move |i| (u, i)))
            .map(|(u, i)| f64::from(w.affinity(u, i))),
    );
    assert!(chosen > random + 0.2, "chosen items {chosen:.2} vs all items {random:.2}");

    let mut high = Vec::new();
    let mut low = Vec::new();
    for (e, &(u, i)) in w.events.iter().zip(&pairs) {
        if let Some(Value::Float(stars)) = e.field("value") {
            assert!((1.0..=5.0).contains(stars) && stars.fract() == 0.0, "rating {stars}");
            let a = f64::from(w.affinity(u, i));
            if *stars >= 4.0 {
                high.push(a);
            } else if *stars <= 2.0 {
                low.push(a);
            }
        }
    }
    let (high, low) = (mean(high), mean(low));
    assert!(high > low + 0.15, "4-5 stars at affinity {high:.2}, 1-2 stars at {low:.2}");
}

#[test]
fn event_types_are_mixed_realistically() {
    let w = world();
    let count = |ty: &str| w.events.iter().filter(|e| e.event_type == ty).count();
    let views = count("view");
    for ty in ["click", "play", "skip", "like", "purchase", "rating"] {
        let n = count(ty);
        assert!(n > 0 && n < views, "{ty}: {n}, views {views}");
    }
    assert!(views * 3 > w.events.len(), "views are the most common event");
    assert!(count("purchase") < count("click"));
    assert_eq!(count("transaction"), 0);
    for (e, (_, i)) in w.events.iter().zip(pairs(w)) {
        if e.event_type == "purchase" {
            assert_eq!(e.field("price"), w.item_price[i].map(Value::Float).as_ref(), "{e:?}");
        }
        if e.event_type == "view" {
            assert!(matches!(e.field("surface"), Some(Value::String(_))));
        }
    }
}

#[test]
fn sessions_are_bursts_separated_by_hours() {
    let w = world();
    let mut last = vec![None; w.users.len()];
    let mut gaps = Vec::new();
    for (e, (u, _)) in w.events.iter().zip(pairs(w)) {
        if let Some(prev) = last[u].replace(e.ts.millis()) {
            gaps.push(e.ts.millis() - prev);
        }
    }
    let share = |f: &dyn Fn(i64) -> bool| gaps.iter().filter(|g| f(**g)).count() as f64 / gaps.len() as f64;
    let within = share(&|g| g < 10 * 60_000);
    let apart = share(&|g| g > 3 * HOUR);
    assert!(within > 0.5, "{within:.2} of gaps under 10 minutes");
    assert!(apart > 0.1, "{apart:.2} of gaps over 3 hours");
}

#[test]
fn new_items_find_an_audience() {
    let w = world();
    let start = w.config.start;
    let mut first_week = 0;
    for (e, (_, i)) in w.events.iter().zip(pairs(w)) {
        let released = w.item_released_at[i];
        if released >= start && e.ts.millis() - released.millis() < 7 * DAY {
            first_week += 1;
        }
    }
    assert!(first_week > 100, "only {first_week} events on items in their first week");
}

#[test]
fn degenerate_configs() {
    let base = WorldConfig { events: 300, ..WorldConfig::small(1) };
    for cfg in [
        WorldConfig { users: 0, ..base },
        WorldConfig { items: 0, ..base },
        WorldConfig { days: 0, ..base },
        WorldConfig { events: 0, ..base },
    ] {
        let w = World::generate(&cfg);
        assert!(w.events.is_empty(), "{cfg:?}");
        assert_eq!(events_iter(&cfg).len(), 0);
    }
    let tiny = WorldConfig { users: 1, items: 1, days: 1, genres: 0, creators: 0, latent_dim: 0, ..base };
    let w = World::generate(&tiny);
    assert_eq!(w.events.len(), 300);
    assert!(w.events.iter().all(|e| e.user.as_deref() == Some("u0") && e.item.as_deref() == Some("i0")));
    assert!(w.events.windows(2).all(|p| p[0].ts <= p[1].ts));
}

#[test]
fn ids_parse() {
    let w = world();
    assert_eq!(w.user_index("u7"), Some(7));
    assert_eq!(w.item_index("i199"), Some(199));
    for bad in ["i200", "u007", "u", "x1", "u-1", "i1 "] {
        assert_eq!(w.user_index(bad).or(w.item_index(bad)), None, "{bad}");
    }
}

/// `cargo test --release -p cascade-testkit -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run in release mode"]
fn ten_million_events_stream() {
    let cfg = WorldConfig { events: 10_000_000, ..WorldConfig::default() };
    let started = std::time::Instant::now();
    let mut stream = events_iter(&cfg);
    let mut last = Timestamp(0);
    let mut n = 0usize;
    for e in stream.by_ref() {
        assert!(e.ts >= last);
        last = e.ts;
        n += 1;
    }
    assert_eq!(n, cfg.events);
    eprintln!("{n} events in {:?}, at most {} pending", started.elapsed(), stream.max_pending());
}
