//! `cascade features training-set`: the Parquet file it writes, read back and checked value by
//! value against what point-in-time semantics demand.

use crate::{cascade, ok};
use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

const DEFS: &str = r#"
[features.user_tx]
entity = "user"
events = ["transaction"]
ttl = "1day"
[features.user_tx.features]
tx_1h = { agg = "count", window = "1h", tile = "1m" }
amount_1h = { agg = "sum", field = "amount", window = "1h", tile = "1m" }
last_device = { agg = "last", field = "device", default = "none" }
"#;

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;

fn tx(ts: i64, user: &str, amount: f64, device: &str) -> String {
    format!(
        r#"{{"type":"transaction","ts":{ts},"user":"{user}","fields":{{"amount":{amount},"currency":"EUR","device":"{device}"}}}}"#
    )
}

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["init", "."]);
    let path = dir.path().join("cascade.toml");
    let text = std::fs::read_to_string(&path).unwrap() + DEFS;
    std::fs::write(&path, text).unwrap();
    let events = [
        tx(T0 + 10 * MIN, "u1", 5.0, "d1"),
        tx(T0 + 20 * MIN, "u1", 7.5, "d2"),
        tx(T0 + 30 * MIN, "u2", 1.0, "d3"),
        tx(T0 + 90 * MIN, "u1", 2.0, "d1"),
    ];
    std::fs::write(dir.path().join("events.ndjson"), events.join("\n") + "\n").unwrap();
    ok(dir.path(), &["import", "ndjson", "events.ndjson"]);
    dir
}

fn read(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    assert_eq!(batches.len(), 1, "a small training set is one record batch");
    batches.remove(0)
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).as_any().downcast_ref::<T>().unwrap()
}

#[test]
fn training_set_from_a_labels_csv_is_point_in_time() {
    let dir = project();
    // Row 1 is at u1's second transaction's own time: it sees only the first (ts < T). Rows 2 and
    // 3 are duplicates and both appear. Row 4 is after the first two left the 1 h window.
    let labels = format!(
        "ts,user,label\n{},u1,1\n{},u1,0\n{},u1,0\n{},u1,1\n{},u9,0\n",
        T0 + 20 * MIN,
        T0 + 25 * MIN,
        T0 + 25 * MIN,
        T0 + 91 * MIN,
        T0 + 25 * MIN,
    );
    std::fs::write(dir.path().join("labels.csv"), labels).unwrap();
    ok(dir.path(), &["features", "training-set", "--labels", "labels.csv", "--out", "train.parquet"]);
    let b = read(&dir.path().join("train.parquet"));
    assert_eq!(b.num_rows(), 5, "exactly one row per label row");
    let users = col::<StringArray>(&b, "user");
    assert_eq!((0..5).map(|i| users.value(i)).collect::<Vec<_>>(), ["u1", "u1", "u1", "u1", "u9"]);
    let label = col::<Int64Array>(&b, "label");
    assert_eq!((0..5).map(|i| label.value(i)).collect::<Vec<_>>(), [1, 0, 0, 1, 0]);
    let n = col::<Int64Array>(&b, "user_tx:tx_1h");
    assert_eq!((0..5).map(|i| n.value(i)).collect::<Vec<_>>(), [1, 2, 2, 1, 0]);
    let amount = col::<Float64Array>(&b, "user_tx:amount_1h");
    assert_eq!((0..4).map(|i| amount.value(i)).collect::<Vec<_>>(), [5.0, 12.5, 12.5, 2.0]);
    let device = col::<StringArray>(&b, "user_tx:last_device");
    assert_eq!((0..5).map(|i| device.value(i)).collect::<Vec<_>>(), ["d1", "d2", "d2", "d1", "none"]);
    let status = col::<StringArray>(&b, "user_tx:tx_1h:status");
    assert_eq!((status.value(0), status.value(4)), ("present", "not_found"));
    assert!(!device.is_null(4), "the default is served for unknown users");
}

#[test]
fn training_set_from_label_events_and_bad_input() {
    let dir = project();
    ok(
        dir.path(),
        &[
            "features",
            "training-set",
            "--label-event",
            "transaction",
            "--features",
            "user_tx:tx_1h",
            "--out",
            "ev.parquet",
        ],
    );
    let b = read(&dir.path().join("ev.parquet"));
    assert_eq!(b.num_rows(), 4, "one row per transaction");
    assert_eq!(
        b.num_columns(),
        3 + 3 + 1 + 2,
        "ts, user, item, the events' amount/currency/device, label, one feature"
    );
    let n = col::<Int64Array>(&b, "user_tx:tx_1h");
    // Each transaction sees only the user's earlier ones within the hour.
    assert_eq!((0..4).map(|i| n.value(i)).collect::<Vec<_>>(), [0, 1, 0, 0]);
    assert!(col::<BooleanArray>(&b, "label").value(0));

    let out = cascade(
        dir.path(),
        &[
            "features",
            "training-set",
            "--label-event",
            "transaction",
            "--features",
            "user_tx:nope",
            "--out",
            "x.parquet",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("user_tx:nope"), "{err}");
    let out = cascade(dir.path(), &["features", "training-set", "--out", "x.parquet"]);
    assert!(!out.status.success(), "labels are required");
}

/// Every (offset, ts) in a day directory's Parquet files, and how many files it has.
fn day(dir: &Path) -> (Vec<(i64, i64)>, usize) {
    let mut rows = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("parquet") {
            continue;
        }
        files += 1;
        let b = read(&path);
        let (o, ts) = (col::<Int64Array>(&b, "offset"), b.column_by_name("ts").unwrap());
        let ts = ts.as_any().downcast_ref::<arrow_array::TimestampMillisecondArray>().unwrap();
        rows.extend((0..b.num_rows()).map(|i| (o.value(i), ts.value(i))));
    }
    (rows, files)
}

#[test]
fn export_lands_events_by_day_incrementally_and_compacts() {
    let dir = project();
    let root = dir.path().join("data/offline/events");
    let out = ok(dir.path(), &["features", "export"]);
    assert!(out.contains("exported 4 events into 1 files"), "{out}");
    let day_dir = root.join("day=2023-11-14");
    assert_eq!(
        day(&day_dir),
        (vec![(0, T0 + 10 * MIN), (1, T0 + 20 * MIN), (2, T0 + 30 * MIN), (3, T0 + 90 * MIN)], 1)
    );
    // Nothing new: nothing written. New events on two days: one more file each.
    assert!(ok(dir.path(), &["features", "export"]).contains("exported 0 events"));
    let more = [tx(T0 + 5 * MIN, "u3", 1.0, "d1"), tx(T0 + 4 * 3_600_000, "u3", 2.0, "d1")];
    std::fs::write(dir.path().join("more.ndjson"), more.join("\n") + "\n").unwrap();
    ok(dir.path(), &["import", "ndjson", "more.ndjson"]);
    assert!(ok(dir.path(), &["features", "export"]).contains("exported 2 events into 2 files"));
    assert_eq!(day(&day_dir).1, 2);
    assert_eq!(day(&root.join("day=2023-11-15")).0, vec![(5, T0 + 4 * 3_600_000)]);
    // Compaction: one file per day, every event once, in event-time order.
    let saved = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&day_dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, saved.path().join(p.file_name().unwrap())).unwrap();
    }
    let out = ok(dir.path(), &["features", "export", "--compact"]);
    assert!(out.contains("compacted 2 files in 1 days"), "{out}");
    let (rows, files) = day(&day_dir);
    assert_eq!(files, 1);
    assert_eq!(
        rows,
        vec![(4, T0 + 5 * MIN), (0, T0 + 10 * MIN), (1, T0 + 20 * MIN), (2, T0 + 30 * MIN), (3, T0 + 90 * MIN)]
    );
    assert!(day_dir.join("part-00000000000000000000-00000000000000000005.parquet").exists());
    // A compaction interrupted before it removed the parts it merged: the next run drops them.
    for e in std::fs::read_dir(saved.path()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, day_dir.join(p.file_name().unwrap())).unwrap();
    }
    assert_eq!(day(&day_dir).1, 3);
    ok(dir.path(), &["features", "export", "--compact"]);
    assert_eq!(day(&day_dir), (rows, 1));
}

#[test]
fn served_vectors_are_logged_and_audited_with_zero_mismatches() {
    let dir = project();
    let server = crate::serve(dir.path(), &[("CASCADE__FEATURES_STORE__VECTOR_LOG_SAMPLE_RATE", "1.0")]);
    let url = server.url.clone();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let post = |path: &'static str, body: String| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let r = client.post(format!("{url}{path}")).header("content-type", "application/json").body(body);
                let r = r.send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.json::<serde_json::Value>().await.unwrap()
            }
        };
        post("/v1/events", format!("[{}, {}]", tx(now - 60_000, "u1", 4.0, "d1"), tx(now - 30_000, "u2", 1.0, "d2")))
            .await;
        let read = r#"{"entities": [{"user": "u1"}, {"user": "u2"}, {"user": "u3"}], "features": ["user_tx"]}"#;
        // Until the server has applied both, then twice more around a late event (event time
        // before the reads): the audit must recompute what the state had, not what came later.
        for _ in 0..200 {
            let got = post("/v1/features", read.to_string()).await;
            if got["results"][1]["values"][2]["value"] == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        post("/v1/features", read.to_string()).await;
        post("/v1/events", format!("[{}]", tx(now - 20_000, "u1", 8.0, "d9"))).await;
        post("/v1/features", read.to_string()).await;
    });
    server.stop();

    let log = dir.path().join("data/feature_vectors.ndjson");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.lines().count() >= 9, "every served vector is logged at rate 1:\n{logged}");
    let out = ok(dir.path(), &["features", "audit"]);
    assert!(out.contains("0 mismatches") && out.contains("0 skipped"), "{out}");

    // A vector served wrong is reported, and the command fails.
    let first: serde_json::Value = serde_json::from_str(logged.lines().next().unwrap()).unwrap();
    let mut tampered = first.clone();
    tampered["values"][2]["value"] = serde_json::json!(99);
    std::fs::write(dir.path().join("bad.ndjson"), format!("{first}\n{tampered}\n")).unwrap();
    let out = cascade(dir.path(), &["features", "audit", "--vectors", "bad.ndjson"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 mismatches") && stdout.contains("vector 1 user_tx:tx_1h"), "{stdout}");
}

/// Polls `check` every 50 ms for up to 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn serve_lands_events_in_the_offline_store_continuously() {
    let dir = project();
    let server = crate::serve(dir.path(), &[("CASCADE__FEATURES_STORE__OFFLINE_EXPORT_INTERVAL", "100ms")]);
    let url = server.url.clone();
    let root = dir.path().join("data/offline/events");
    let old_day = root.join("day=2023-11-14");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let post = |body: String| {
        rt.block_on(async {
            let r = reqwest::Client::new().post(format!("{url}/v1/events")).header("content-type", "application/json");
            assert_eq!(r.body(body).send().await.unwrap().status(), 200);
        })
    };
    // (parts, rows) of a day; None while a compaction removes a file under the reader.
    let count = |dir: &Path| -> Option<(usize, usize)> {
        let (mut parts, mut rows) = (0, 0);
        for entry in std::fs::read_dir(dir).ok()? {
            let path = entry.ok()?.path();
            if path.extension() == Some("parquet".as_ref()) {
                let file = std::fs::File::open(&path).ok()?;
                let meta = ParquetRecordBatchReaderBuilder::try_new(file).ok()?;
                parts += 1;
                rows += meta.metadata().file_metadata().num_rows() as usize;
            }
        }
        Some((parts, rows))
    };
    // The imported events are exported without any command.
    eventually("the imported events", || count(&old_day) == Some((1, 4)));
    // Posted events land in their own day's file.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    post(format!("[{}, {}]", tx(now - 60_000, "u1", 4.0, "d1"), tx(now - 30_000, "u2", 1.0, "d2")));
    let days = |root: &Path| -> Vec<std::path::PathBuf> {
        let mut d: Vec<_> =
            std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        d.sort();
        d
    };
    eventually("the posted events", || days(&root).iter().map(|d| day(d).0.len()).sum::<usize>() == 6);
    let today = days(&root).into_iter().find(|d| *d != old_day).expect("a second day");
    let mut got = day(&today).0;
    got.sort();
    assert_eq!(got, vec![(4, now - 60_000), (5, now - 30_000)]);
    // A late event for an earlier day adds a part there, which the next round compacts away.
    post(format!("[{}]", tx(T0 + 40 * MIN, "u3", 3.0, "d4")));
    eventually("the late event, compacted", || count(&old_day) == Some((1, 5)));
    assert_eq!(
        day(&old_day).0,
        vec![(0, T0 + 10 * MIN), (1, T0 + 20 * MIN), (2, T0 + 30 * MIN), (6, T0 + 40 * MIN), (3, T0 + 90 * MIN)]
    );
    server.stop();
    // The CLI export continues where the server stopped: nothing is exported twice.
    assert!(ok(dir.path(), &["features", "export"]).contains("exported 0 events"));
}
