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

#[test]
fn purge_removes_exactly_the_quarantined_rows() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { horizon: cascade_core::Horizon::UNBOUNDED, ..StoreOptions::default() };
    let store = Store::open(dir.path(), options).unwrap();
    let root = dir.path().join("offline").join("events");
    let (day, far) = (1_700_000_000_000, 253_402_300_799_000); // 2023-11-14, 9999-12-31
    store.append_blocking(&[play(day, "u1", "i1", None), play(far, "u1", "i2", None)]).unwrap();
    store.append_blocking(&[play(day + 1_000, "u1", "i3", None), play(day + 5_000, "u2", "i1", None)]).unwrap();
    assert_eq!(offline::export(&store, &root).unwrap().0, 4);
    // Quarantine what is dated after day + 2 s among offsets 0..4: offsets 1 and 3.
    let report = store.quarantine(cascade_core::Timestamp(day + 2_000)).unwrap();
    let removed = offline::purge(&root, report.rule.below_offset, cascade_core::Timestamp(day + 2_000)).unwrap();
    assert_eq!(removed, 2);
    assert!(!root.join("day=9999-12-31").exists(), "a day left empty is removed");
    let parts = offline::parts(&root.join("day=2023-11-14")).unwrap();
    let rows: usize = parts.iter().flat_map(|(_, _, p)| offline::read(p).unwrap()).map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);
    assert_eq!(offline::purge(&root, report.rule.below_offset, cascade_core::Timestamp(day + 2_000)).unwrap(), 0);
    // Later events are exported as usual; the hidden ones are not exported again.
    store.append_blocking(&[play(day + 9_000, "u3", "i1", None)]).unwrap();
    assert_eq!(offline::export(&store, &root).unwrap().0, 1);
}
