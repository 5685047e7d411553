//! What each aggregation, window, TTL, lateness rule and status means, on small hand-made logs.

use crate::{features, item, play, tx};
use cascade_core::{Config, Record, Timestamp, Value};
use cascade_features::{
    Engine, Entities, EntityKey, FeatureError, FeatureSet, FeatureValue, LabelRow, Status, training_set,
};

const S: i64 = 1000;
const MIN: i64 = 60 * S;
const H: i64 = 60 * MIN;

fn engine(toml: &str, log: &[Record]) -> Engine {
    let mut e = Engine::new(features(toml));
    for (i, r) in log.iter().enumerate() {
        e.apply(i as u64, r);
    }
    e
}

fn read(e: &Engine, view: &str, key: &str, at: i64) -> Vec<FeatureValue> {
    e.read(view, &EntityKey::from(key), Timestamp(at)).unwrap()
}

fn value(e: &Engine, view: &str, key: &str, at: i64, feature: usize) -> Option<Value> {
    read(e, view, key, at)[feature].value.clone()
}

const USER_TX: &str = r#"
[features.user_tx]
entity = "user"
events = ["transaction"]
ttl = "1day"
allowed_lateness = "5m"
[features.user_tx.features]
n_1h = { agg = "count", window = "1h", tile = "1m", ttl = "2h" }
"#;

#[test]
fn sliding_windows_expire_at_read_time_without_writes() {
    let e = engine(USER_TX, &[tx(10 * H + 30 * S, "u", 5.0, None, "c")]);
    let n = |at| value(&e, "user_tx", "u", at, 0);
    assert_eq!(n(10 * H + 30 * S), Some(Value::Int(1)), "a read at the event's own time sees it");
    // The window as of a read at instant a covers the 60 one-minute tiles up to a's tile: the
    // event's tile [10:00, 10:01) is the oldest one until 10:59:59.999 and gone from 11:00.
    assert_eq!(n(11 * H - 1), Some(Value::Int(1)));
    assert_eq!(n(11 * H), Some(Value::Int(0)));
    let v = &read(&e, "user_tx", "u", 11 * H)[0];
    assert_eq!(v.status, Status::Present, "an empty window of a count is a real zero");
    assert_eq!(v.event_time, Some(Timestamp(10 * H + 30 * S)));
    assert_eq!(v.age, Some(std::time::Duration::from_millis((59 * MIN + 30 * S) as u64)));
}

#[test]
fn lateness_applies_late_events_within_it_and_counts_the_rest() {
    let toml = r#"
[features.u]
entity = "user"
events = ["transaction"]
allowed_lateness = "5m"
[features.u.features]
n = { agg = "count" }
w = { agg = "count", window = "10m", tile = "1m" }
"#;
    let log = [tx(60 * MIN, "u", 1.0, None, "c"), tx(56 * MIN, "u", 1.0, None, "c"), tx(54 * MIN, "v", 1.0, None, "c")];
    let e = engine(toml, &log);
    // 56 min is 4 min late (applied, into its own tile); 54 min is 6 min late: dropped.
    assert_eq!(value(&e, "u", "u", 60 * MIN, 0), Some(Value::Int(2)));
    assert_eq!(value(&e, "u", "u", 60 * MIN, 1), Some(Value::Int(2)));
    assert_eq!(value(&e, "u", "u", 66 * MIN, 1), Some(Value::Int(1)), "the late one leaves the window first");
    assert_eq!(read(&e, "u", "v", 60 * MIN)[0].status, Status::NotFound);
    let stats = e.stats("u").unwrap();
    assert_eq!((stats.late_dropped, stats.entities, stats.watermark), (1, 1, Some(Timestamp(60 * MIN))));
}

#[test]
fn statuses_defaults_and_staleness() {
    let toml = r#"
[features.u]
entity = "user"
events = ["transaction", "play"]
ttl = "1h"
[features.u.features]
plays = { agg = "count", events = ["play"] }
avg_10m = { agg = "mean", field = "amount", window = "10m", tile = "1m", default = -1.0 }
last_card = { agg = "last", field = "card", ttl = "20m", default = "none" }
"#;
    let e = engine(toml, &[tx(0, "u", 4.0, None, "c1")]);
    // In name order: avg_10m, last_card, plays.
    let at = |t| read(&e, "u", "u", t);
    let v = at(5 * MIN);
    assert_eq!((v[0].status, v[0].value.clone()), (Status::Present, Some(Value::Float(4.0))));
    assert_eq!((v[1].status, v[1].value.clone()), (Status::Present, Some(Value::String("c1".into()))));
    assert_eq!(
        (v[2].status, v[2].value.clone(), v[2].event_time),
        (Status::Default, Some(Value::Int(0)), None),
        "no play yet: the default, and no event time"
    );
    let v = at(30 * MIN);
    assert_eq!((v[0].status, v[0].value.clone()), (Status::Default, Some(Value::Float(-1.0))), "empty window");
    assert_eq!(v[0].event_time, Some(Timestamp(0)));
    assert_eq!((v[1].status, v[1].value.clone()), (Status::StaleOutsideTtl, Some(Value::String("none".into()))));
    assert_eq!(v[1].event_time, Some(Timestamp(0)), "a stale value still says how old it is");
    // Past the view's largest TTL the key is expired: not found.
    let v = at(61 * MIN);
    assert!(v.iter().all(|f| f.status == Status::NotFound && f.event_time.is_none()), "{v:?}");
    assert_eq!(e.stats("u").unwrap().stale_reads, 1);
    assert!(matches!(
        e.read("nope", &EntityKey::from("u"), Timestamp(0)),
        Err(FeatureError::UnknownView(v)) if v == "nope"
    ));
}

#[test]
fn expiry_restarts_a_key_and_sweeping_changes_no_value() {
    let toml = r#"
[features.u]
entity = "user"
events = ["transaction"]
ttl = "1h"
allowed_lateness = "10m"
[features.u.features]
n = { agg = "count" }
"#;
    let e =
        engine(toml, &[tx(0, "u", 1.0, None, "c"), tx(30 * MIN, "u", 1.0, None, "c"), tx(3 * H, "u", 1.0, None, "c")]);
    assert_eq!(value(&e, "u", "u", 3 * H, 0), Some(Value::Int(1)), "idle for over an hour: counted afresh");

    // The same log applied with and without sweeping after every record reads the same.
    let mut log = Vec::new();
    for i in 0..400i64 {
        // Each user is active for an hour, then never again.
        let user = format!("u{}", i / 20);
        let ts = i * 3 * MIN + if i % 5 == 0 { -8 * MIN } else { 0 };
        log.push(tx(ts.max(0), &user, 1.0, None, "c"));
    }
    let set = features(toml);
    let (mut swept, mut kept) = (Engine::new(set.clone()), Engine::new(set));
    let mut removed = 0;
    for (i, r) in log.iter().enumerate() {
        swept.apply(i as u64, r);
        kept.apply(i as u64, r);
        removed += swept.sweep();
        for u in 0..21 {
            let key = format!("u{u}");
            for at in [r.ts().0, r.ts().0 + 50 * MIN, r.ts().0 + 2 * H] {
                assert_eq!(read(&swept, "u", &key, at), read(&kept, "u", &key, at), "{key} at {at}");
            }
        }
    }
    assert!(removed > 0, "sweeping removed keys");
    assert!(swept.entity_count() < kept.entity_count());
    assert!(swept.approx_heap_bytes() < kept.approx_heap_bytes());
}

#[test]
fn decay_distinct_last_n_time_since_and_ratio() {
    let toml = r#"
[features.u]
entity = "user"
events = ["transaction", "play"]
[features.u.features]
decayed = { agg = "decayed_count", half_life = "1h", events = ["transaction"] }
cards = { agg = "distinct_count", field = "card", max_distinct = 2 }
recent = { agg = "last_n", field = "item", n = 2 }
since = { agg = "time_since_last", events = ["transaction"] }
plays = { agg = "count", events = ["play"] }
completed = { agg = "count", events = ["play"], filter = { completed = true } }
completion = { agg = "ratio", numerator = "completed", denominator = "plays" }
"#;
    let log = [
        tx(0, "u", 1.0, None, "c1"),
        tx(H, "u", 1.0, None, "c2"),
        tx(H, "u", 1.0, None, "c3"),
        play(H, "u", "i1", Some(true)),
        play(H, "u", "i2", Some(false)),
        play(H, "u", "i3", None),
        play(H - MIN, "u", "i0", Some(true)),
    ];
    let e = engine(toml, &log);
    let set = e.features().clone();
    let (_, view) = set.view("u").unwrap();
    let names: Vec<&str> = view.features.iter().map(|f| f.name.as_str()).collect();
    let get = |name: &str, at: i64| {
        let i = names.iter().position(|n| *n == name).unwrap();
        read(&e, "u", "u", at)[i].value.clone()
    };
    let decayed = |at| match get("decayed", at) {
        Some(Value::Float(x)) => x,
        other => panic!("{other:?}"),
    };
    assert!((decayed(H) - 2.5).abs() < 1e-12, "0.5 + 1 + 1");
    assert!((decayed(2 * H) - 1.25).abs() < 1e-12);
    assert_eq!(get("cards", H), Some(Value::Int(2)), "three cards, saturated at max_distinct = 2");
    assert_eq!(
        get("recent", H),
        Some(Value::StringList(vec!["i3".into(), "i2".into()])),
        "newest first; equal times ordered by log offset"
    );
    assert_eq!(get("since", H + 90 * S), Some(Value::Float(90.0)));
    assert_eq!(get("plays", H), Some(Value::Int(4)));
    assert_eq!(get("completed", H), Some(Value::Int(2)));
    assert_eq!(get("completion", H), Some(Value::Float(0.5)));
}

#[test]
fn composite_and_field_keys() {
    let toml = r#"
[features.pair]
entity = ["user", "item"]
events = ["play"]
[features.pair.features]
n = { agg = "count" }

[features.device]
entity = "device"
events = ["transaction"]
[features.device.features]
users = { agg = "distinct_count", field = "user" }
"#;
    let log = [
        play(1, "u1", "i1", None),
        play(2, "u1", "i1", None),
        play(3, "u1", "i2", None),
        tx(4, "u1", 1.0, Some("d"), "c"),
        tx(5, "u2", 1.0, Some("d"), "c"),
        tx(6, "u3", 1.0, None, "c"),
    ];
    let e = engine(toml, &log);
    let row = Entities::user("u1").with_item("i1").with_field("device", Value::String("d".into()));
    assert_eq!(e.read_row("pair", &row, Timestamp(10)).unwrap()[0].value, Some(Value::Int(2)));
    assert_eq!(e.read("pair", &EntityKey::new(&["u1", "i2"]), Timestamp(10)).unwrap()[0].value, Some(Value::Int(1)));
    assert_eq!(e.read_row("device", &row, Timestamp(10)).unwrap()[0].value, Some(Value::Int(2)));
    assert_eq!(e.stats("device").unwrap().missing_key, 1, "a transaction without a device");
    let err = e.read_row("pair", &Entities::user("u1"), Timestamp(10)).unwrap_err();
    assert!(err.to_string().contains("no `item`"), "{err}");
}

#[test]
fn catalogue_attributes_and_request_features_are_point_in_time() {
    let toml = r#"
[features.item_static]
source = "item"
[features.item_static.features]
price = { agg = "last", field = "price", default = 0.0 }

[features.request]
source = "request"
[features.request.features]
hour = { agg = "hour_of_day" }
weekday = { agg = "day_of_week" }
device = { agg = "context", field = "device", default = "unknown" }
"#;
    let log = [item(10, "i1", Some(9.5), false), item(20, "i1", None, false), item(30, "i1", Some(3.0), true)];
    let set = features(toml);
    let labels: Vec<LabelRow> = [15, 20, 21, 31]
        .into_iter()
        .map(|t| LabelRow { entities: Entities::default().with_item("i1"), ts: Timestamp(t), label: None })
        .collect();
    let rows = training_set(
        &set,
        &set.select(&["item_static"]).unwrap(),
        log.iter().cloned().enumerate().map(|(i, r)| Ok((i as u64, r))),
        &labels,
    )
    .unwrap();
    let prices: Vec<(Status, Option<Value>)> =
        rows.rows.iter().map(|r| (r.values[0].status, r.values[0].value.clone())).collect();
    assert_eq!(
        prices,
        [
            (Status::Present, Some(Value::Float(9.5))),
            (Status::Present, Some(Value::Float(9.5))), // the upsert at 20 is not before 20
            (Status::Default, Some(Value::Float(0.0))), // the upsert at 20 has no price
            (Status::Default, Some(Value::Float(0.0))), // deleted
        ]
    );

    // 2024-05-01T13:20:00Z is a Wednesday (0 = Monday).
    let at = Timestamp::parse_rfc3339("2024-05-01T13:20:00Z").unwrap();
    let e = Engine::new(set.clone());
    let row = Entities::user("u").with_field("device", Value::String("ios".into()));
    let v = e.read_row("request", &row, at).unwrap();
    let got: Vec<Option<Value>> = v.iter().map(|f| f.value.clone()).collect();
    // Name order: device, hour, weekday.
    assert_eq!(got, [Some(Value::String("ios".into())), Some(Value::Int(13)), Some(Value::Int(2))]);
    let v = e.read_row("request", &Entities::user("u"), at).unwrap();
    assert_eq!((v[0].status, v[0].value.clone()), (Status::Default, Some(Value::String("unknown".into()))));
    // Offline, the same row at T + 1 ms gives the same values.
    let label = LabelRow { entities: row, ts: Timestamp(at.0 + 1), label: None };
    let rows = training_set(&set, &set.select(&["request"]).unwrap(), std::iter::empty(), &[label]).unwrap();
    let offline: Vec<Option<Value>> = rows.rows[0].values.iter().map(|f| f.value.clone()).collect();
    assert_eq!(offline, got);
}

#[test]
fn one_output_row_per_label_row_with_duplicates_and_ties() {
    let set = features(USER_TX);
    let log: Vec<Record> = (0..5).map(|i| tx(i * MIN, "u", 1.0, None, "c")).collect();
    let label =
        |t: i64, user: &str| LabelRow { entities: Entities::user(user), ts: Timestamp(t), label: Some(Value::Int(t)) };
    // Out of order, duplicated, tied with events, and an unknown user.
    let labels = [label(3 * MIN, "u"), label(0, "u"), label(3 * MIN, "u"), label(3 * MIN + 1, "u"), label(MIN, "x")];
    let out =
        training_set(&set, &set.all(), log.into_iter().enumerate().map(|(i, r)| Ok((i as u64, r))), &labels).unwrap();
    assert_eq!(out.rows.len(), labels.len());
    let got: Vec<(Option<Value>, Status, Option<Value>)> =
        out.rows.iter().map(|r| (r.label.clone(), r.values[0].status, r.values[0].value.clone())).collect();
    assert_eq!(
        got,
        [
            (Some(Value::Int(3 * MIN)), Status::Present, Some(Value::Int(3))),
            (Some(Value::Int(0)), Status::NotFound, Some(Value::Int(0))),
            (Some(Value::Int(3 * MIN)), Status::Present, Some(Value::Int(3))),
            (Some(Value::Int(3 * MIN + 1)), Status::Present, Some(Value::Int(4))),
            (Some(Value::Int(MIN)), Status::NotFound, Some(Value::Int(0))),
        ]
    );
    assert_eq!(out.columns[0].name(), "user_tx:n_1h");
}

#[test]
fn invalid_definitions_are_refused_with_the_feature_name() {
    let text = "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nn = { agg = \"count\" }\nr = { agg = \"ratio\", numerator = \"n\", denominator = \"nn\" }";
    // Core parses the tables; the feature engine resolves them and names what makes no sense.
    let config = Config::from_toml(text, "t").unwrap();
    let err = FeatureSet::from_config(&config).unwrap_err().to_string();
    assert!(err.contains("features.v.features.r") && err.contains("denominator `nn` is not a feature"), "{err}");
    // Definitions changed after loading are checked again when compiled.
    let mut config = Config::from_toml(&text.replace("\"nn\"", "\"n\""), "t").unwrap();
    FeatureSet::from_config(&config).unwrap();
    let ratio = config.features.get_mut("v").unwrap().features.get_mut("r").unwrap();
    ratio.numerator = Some("r".into());
    let err = FeatureSet::from_config(&config).unwrap_err();
    assert!(err.to_string().contains("features.v.features.r: numerator `r` is a ratio"), "{err}");
    assert_eq!(err.kind(), cascade_features::ErrorKind::Invalid);
}

#[test]
fn memory_is_bounded_per_entity_and_measured() {
    let set = features(crate::checkpoint::DEFS);
    let mut e = Engine::new(set.clone());
    // 100 users, each with every window full, every cap reached.
    let mut offset = 0;
    for minute in 0..40i64 {
        for u in 0..100 {
            for k in 0..3i64 {
                let ts = minute * MIN + k * 20 * S;
                let card = format!("card{}", (minute * 3 + k) % 17);
                e.apply(offset, &tx(ts, &format!("user{u:03}"), 1.0, Some("dev0001"), &card));
                e.apply(offset + 1, &play(ts, &format!("user{u:03}"), &format!("item{:04}", minute), None));
                offset += 2;
            }
        }
    }
    let users = e.stats("user").unwrap().entities;
    assert_eq!(users, 100);
    let bound = set.max_bytes_per_entity("user", 7, 8).unwrap();
    let device_bound = set.max_bytes_per_entity("device", 7, 8).unwrap();
    let measured = e.approx_heap_bytes();
    eprintln!("memory: {} bytes per user measured, bound {bound}", measured / users);
    assert!(measured <= users * bound + device_bound, "measured {measured} > bound {bound} × {users}");
    assert!(measured * 4 > users * bound, "the bound is not wildly above a saturated state: {measured} vs {bound}");
    assert_eq!(set.max_bytes_per_entity("nope", 1, 1).unwrap_err().to_string(), "unknown feature view `nope`");
}
