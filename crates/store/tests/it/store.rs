use crate::{event, item};
use cascade_core::Value;
use cascade_store::{Outcome, Store, StoreOptions};
use std::io::Write;

#[test]
fn duplicate_ids_are_stored_once_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let out = store
        .append_blocking(&[event(Some("a"), 1), event(Some("b"), 2), event(Some("a"), 3), event(None, 4)])
        .unwrap();
    assert_eq!(out, [Outcome::Written(0), Outcome::Written(1), Outcome::Duplicate(0), Outcome::Written(2)]);
    let out = store.append_blocking(&[event(Some("b"), 9), event(Some("c"), 9)]).unwrap();
    assert_eq!(out, [Outcome::Duplicate(1), Outcome::Written(3)]);
    store.close().unwrap();
    drop(store);
    // The index is rebuilt from the log on open.
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.append_blocking(&[event(Some("c"), 1)]).unwrap(), [Outcome::Duplicate(3)]);
    assert_eq!(store.append_blocking(&[event(Some("a"), 1)]).unwrap(), [Outcome::Duplicate(0)]);
    assert_eq!(store.read_from(0).count(), 4);
}

#[test]
fn catalogue_keeps_latest_record_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.append_blocking(&[item("i1", "First", false), item("i2", "Gone soon", false)]).unwrap();
        store.append_blocking(&[item("i1", "Second", false), item("i2", "Gone soon", true)]).unwrap();
        let i1 = store.item("i1").unwrap();
        assert_eq!(i1.attributes, [("title".to_string(), Value::String("Second".into()))]);
        assert!(store.item("i2").is_none(), "deleted items read as absent");
        // Dropped without close(): no snapshot, the catalogue must come back from the log alone.
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.item("i1").unwrap().attributes[0].1, Value::String("Second".into()));
    assert!(store.item("i2").is_none());
    assert_eq!(store.catalogue_counts(), (1, 0));
    assert_eq!(store.items().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["i1"]);
}

#[test]
fn snapshot_preserves_catalogue_when_retention_deletes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions { retention_bytes: 1, ..StoreOptions::default() };
    options.log.segment_bytes = 4096;
    {
        let store = Store::open(dir.path(), options.clone()).unwrap();
        store.append_blocking(&[item("old", "Kept by the snapshot", false)]).unwrap();
        for i in 0..300 {
            store.append_blocking(&[event(Some(&format!("e{i}")), i)]).unwrap();
        }
        store.maintain().unwrap();
        let stats = store.log_stats().unwrap();
        assert!(stats.first_offset > 0, "retention should have deleted the oldest segments: {stats:?}");
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), options).unwrap();
    assert!(store.log_stats().unwrap().first_offset > 0);
    assert_eq!(store.item("old").unwrap().attributes[0].1, Value::String("Kept by the snapshot".into()));
    // The retained tail is still deduplicated.
    assert_eq!(store.append_blocking(&[event(Some("e299"), 0)]).unwrap(), [Outcome::Duplicate(300)]);
}

#[test]
fn retention_keeps_what_a_consumer_still_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions { retention_bytes: 1, ..StoreOptions::default() };
    options.log.segment_bytes = 4096;
    let store = Store::open(dir.path(), options).unwrap();
    for i in 0..300 {
        store.append_blocking(&[event(Some(&format!("e{i}")), i)]).unwrap();
    }
    store.retain_from("features", 120);
    store.maintain().unwrap();
    let first = store.log_stats().unwrap().first_offset;
    assert!(first > 0 && first <= 120, "retention deleted up to the consumer's floor only: first = {first}");
    assert_eq!(store.read_from(120).next().unwrap().unwrap().0, 120);
    // The consumer moves on; retention follows.
    store.retain_from("features", 300);
    store.maintain().unwrap();
    assert!(store.log_stats().unwrap().first_offset > 120);
}

#[tokio::test]
async fn async_append_and_concurrent_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.append(&[event(Some("same"), 1), event(None, 2)]).await.unwrap() })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        let out = t.await.unwrap();
        written += out.iter().filter(|o| matches!(o, Outcome::Written(_))).count();
    }
    // One copy of "same" plus eight id-less events.
    assert_eq!(written, 9);
    assert_eq!(store.read_from(0).count(), 9);
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, cascade_store::Error::Locked(_)), "{err}");
    drop(store);
    Store::open(dir.path(), StoreOptions::default()).unwrap();
}

#[test]
fn read_only_opens_beside_the_writer_and_sees_what_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), StoreOptions::default()).unwrap();
    writer.append_blocking(&[item("i1", "One", false), event(Some("a"), 1), event(Some("b"), 2)]).unwrap();
    let reader = Store::open_read_only(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(reader.read_from(0).count(), 3);
    assert_eq!(reader.item("i1").unwrap().attributes[0].1, Value::String("One".into()));
    assert!(reader.append_blocking(&[event(Some("c"), 3)]).is_err(), "a read-only store refuses appends");
    // A write in flight (a torn tail) is invisible to the reader and left for the writer.
    let seg = std::fs::read_dir(dir.path().join("log")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&[99, 0, 0, 0, 1]).unwrap();
    let reader = Store::open_read_only(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(reader.read_from(0).count(), 3);
    reader.close().unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len + 5, "the reader wrote nothing");
    assert!(!dir.path().join("catalogue.snapshot").exists(), "nor a snapshot");
}
