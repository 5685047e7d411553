//! The `cascade-bench` binary end to end, on small inputs and without network: untimed smoke tests
//! of the benchmarks' data paths (figures: docs/benchmarks.md).

use arrow_array::{Array, Int64Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;
use std::process::Command;

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cascade-bench")).current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "cascade-bench {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn read(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[test]
fn features_pit_joins_one_row_per_label_row() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("pit");
    let d = d.to_str().unwrap();
    let small = ["--labels", "500", "--rows", "2000", "--views", "3", "--features", "7", "--entities", "50"];
    ok(dir.path(), &[&["features-pit", "--generate", "--dir", d][..], &small[..]].concat());
    let out = ok(dir.path(), &["features-pit", "--dir", d]);
    assert!(out.contains("500 label rows x 7 features (3 views)"), "{out}");
    let b = read(&dir.path().join("pit/cascade_out.parquet"));
    assert_eq!(b.num_rows(), 500);
    let ids = b.column_by_name("row_id").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    assert!((0..500).all(|i| ids.value(i) == i as i64), "label order kept");
    assert!(b.column_by_name("f_2_1").is_some() && b.column_by_name("f_0_2").is_some());
}

#[test]
fn features_online_runs_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["features-online", "--no-redis", "--events", "2000", "--reads", "20"]);
    assert!(out.contains("| embedded | 50 × 1 |") && out.contains("| embedded | 50 × 500 |"), "{out}");
}

#[test]
fn requests_draws_warm_users_from_the_projects_log() {
    use cascade_core::{Event, Record, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cascade.toml"), cascade_core::config::TEMPLATE).unwrap();
    // u0..u9: user n clicked n distinct items (and viewed an impression of another).
    let mut records = Vec::new();
    for n in 0..10 {
        let event = |ty: &str, item: String| {
            Record::Event(Event {
                id: None,
                event_type: ty.into(),
                ts: Timestamp(1_767_225_600_000 + records.len() as i64),
                user: Some(format!("u{n}")),
                item: Some(item),
                fields: vec![],
            })
        };
        let mut mine: Vec<Record> = (0..n).map(|i| event("click", format!("i{i}"))).collect();
        mine.push(event("impression", "i99".into()));
        records.extend(mine);
    }
    let store = cascade_store::Store::open(dir.path().join("data"), cascade_store::StoreOptions::default()).unwrap();
    store.append_blocking(&records).unwrap();
    store.close().unwrap();

    let run = |mix: &str, out: &str| {
        let args = ["requests", "--config", "cascade.toml", mix, "--count", "500", "--k", "7", "--out", out];
        let out =
            Command::new(env!("CARGO_BIN_EXE_cascade-bench")).current_dir(dir.path()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let said = run("--warm", "warm.ndjson");
    assert!(said.contains("10 users in the log; 5 (50.0%) with at least 5 distinct items"), "{said}");
    assert!(said.contains("0.0% of them are cold starts"), "{said}");
    let text = std::fs::read_to_string(dir.path().join("warm.ndjson")).unwrap();
    let users: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["k"], 7);
            v["user"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text.lines().count(), 500);
    assert_eq!(users, ["u5", "u6", "u7", "u8", "u9"].map(String::from).into());
    // Deterministic: the same seed writes the same file.
    run("--warm", "again.ndjson");
    assert_eq!(text, std::fs::read_to_string(dir.path().join("again.ndjson")).unwrap());
    let said = run("--uniform", "uniform.ndjson");
    assert!(said.contains("10 distinct users"), "{said}");
}
