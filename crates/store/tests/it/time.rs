//! The time horizon on appends, and quarantining records already in the log.

use crate::{event, item};
use cascade_core::{ErrorKind, Horizon, ItemRecord, ManualClock, Record, Timestamp, Value};
use cascade_store::{Error, Outcome, QUARANTINE_FILE, Store, StoreOptions};
use std::sync::Arc;

const NOW: i64 = 1_764_950_400_000; // 2025-12-05T16:00:00Z
const DAY: i64 = 86_400_000;
const Y9999: i64 = 253_402_300_799_000; // 9999-12-31T23:59:59Z

fn options(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions { clock: clock.clone(), ..StoreOptions::default() }
}

/// Options of a store written before the horizon existed: anything goes.
fn unbounded() -> StoreOptions {
    StoreOptions { horizon: Horizon::UNBOUNDED, ..StoreOptions::default() }
}

fn titled(id: &str, title: &str, updated_at: i64) -> Record {
    Record::Item(ItemRecord {
        id: id.into(),
        attributes: vec![("title".into(), Value::String(title.into()))],
        available: true,
        created_at: None,
        deleted: false,
        updated_at: Timestamp(updated_at),
    })
}

#[test]
fn an_append_dated_past_the_horizon_is_refused_whole_naming_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(NOW)));
    let store = Store::open(dir.path(), options(&clock)).unwrap();
    let batch = [event(Some("ok"), NOW), event(Some("late"), Y9999), titled("i", "t", NOW + 2 * DAY)];
    let err = store.append_blocking(&batch).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let Error::TimeAhead(problems) = &err else { panic!("{err}") };
    let named: Vec<(usize, &str)> = problems.iter().map(|(i, e)| (*i, e.field.as_str())).collect();
    assert_eq!(named, [(1, "ts"), (2, "updated_at")]);
    let text = err.to_string();
    assert!(text.contains("record 1 `ts`") && text.contains("log.max_event_ahead = 1day"), "{text}");
    assert_eq!(store.read_from(0).count(), 0, "nothing of the batch is written");
    // Its valid part alone is, and the bound moves with the clock.
    assert_eq!(store.append_blocking(&batch[..1]).unwrap(), [Outcome::Written(0)]);
    clock.set(Timestamp(NOW + DAY + 1));
    assert_eq!(store.append_blocking(&batch[2..]).unwrap(), [Outcome::Written(1)]);
}

#[test]
fn a_quarantine_hides_old_poisoned_records_from_every_reader_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let cutoff = Timestamp(NOW + DAY);
    {
        // A log written before the horizon existed.
        let store = Store::open(dir.path(), unbounded()).unwrap();
        store.append_blocking(&[titled("i1", "good", NOW), event(Some("a"), NOW)]).unwrap();
        store.append_blocking(&[event(Some("poison"), Y9999), titled("i1", "poisoned", Y9999)]).unwrap();
        store.append_blocking(&[event(Some("b"), NOW + 1)]).unwrap();
        assert_eq!(store.item("i1").unwrap().updated_at, Timestamp(Y9999));
        store.close().unwrap(); // the snapshot now holds the poisoned item
    }
    let store = Store::open(dir.path(), unbounded()).unwrap();
    let report = store.quarantine(cutoff).unwrap();
    assert_eq!((report.rule.below_offset, report.hidden), (5, 2));
    let offsets: Vec<u64> = store.read_from(0).map(|e| e.unwrap().0).collect();
    assert_eq!(offsets, [0, 1, 4], "hidden records are skipped, offsets are kept");
    let mut reader = store.read_from(2);
    assert_eq!(reader.next().unwrap().unwrap().0, 4);
    assert_eq!(reader.position(), 5);
    assert_eq!(store.item("i1").unwrap().attributes[0].1, Value::String("good".into()));
    // The hidden event's id is forgotten: a corrected copy is stored; later records never hide.
    assert_eq!(store.append_blocking(&[event(Some("poison"), NOW + 2)]).unwrap(), [Outcome::Written(5)]);
    assert_eq!(store.append_blocking(&[event(Some("a"), NOW)]).unwrap(), [Outcome::Duplicate(1)]);
    store.close().unwrap();
    drop(store);

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.read_from(0).map(|e| e.unwrap().0).collect::<Vec<_>>(), [0, 1, 4, 5]);
    assert_eq!(store.item("i1").unwrap().attributes[0].1, Value::String("good".into()));
    assert_eq!(store.quarantined().rules.len(), 1);
    let readonly = Store::open_read_only(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(readonly.read_from(0).count(), 4);
    assert!(matches!(readonly.quarantine(cutoff), Err(Error::Quarantine(_))));
}

#[test]
fn a_snapshot_taken_before_the_rule_was_written_is_corrected_at_open() {
    // The process stopped between writing the rule and the corrected snapshot.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), unbounded()).unwrap();
        store.append_blocking(&[titled("i1", "good", NOW), item("i2", "other", false)]).unwrap();
        store.append_blocking(&[titled("i1", "poisoned", Y9999)]).unwrap();
        store.close().unwrap();
    }
    let rule = format!(r#"{{"format":1,"rules":[{{"below_offset":3,"after_ms":{},"after":"x"}}]}}"#, NOW + DAY);
    std::fs::write(dir.path().join(QUARANTINE_FILE), rule).unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.item("i1").unwrap().attributes[0].1, Value::String("good".into()));
    assert_eq!(store.catalogue_counts(), (2, 0));
}
