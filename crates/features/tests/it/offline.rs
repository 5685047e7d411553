//! The offline store holds back log retention until its events are written.

use crate::play;
use cascade_features::offline;
use cascade_store::{Store, StoreOptions};

#[test]
fn retention_keeps_what_the_export_has_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions { retention_bytes: 1, ..StoreOptions::default() };
    options.log.segment_bytes = 4096;
    let store = Store::open(dir.path(), options).unwrap();
    let root = dir.path().join("offline").join("events");
    offline::hold_retention(&store, &root).unwrap();
    for i in 0..200 {
        store.append_blocking(&[play(1_700_000_000_000 + i, "u1", "i1", None)]).unwrap();
    }
    // Nothing exported yet: retention may delete nothing, however small its budget.
    store.maintain().unwrap();
    assert_eq!(store.log_stats().unwrap().first_offset, 0);
    let (rows, _) = offline::export(&store, &root).unwrap();
    assert_eq!(rows, 200);
    for i in 0..200 {
        store.append_blocking(&[play(1_700_000_100_000 + i, "u1", "i1", None)]).unwrap();
    }
    // Now only what the export has written may go; the 200 new events stay for the next export.
    store.maintain().unwrap();
    let first = store.log_stats().unwrap().first_offset;
    assert!(first > 0 && first <= 200, "retention stopped at the export position, got {first}");
    assert_eq!(offline::export(&store, &root).unwrap().0, 200, "no event was lost to retention");
}
