use crate::event;
use cascade_store::FsyncPolicy;
use cascade_store::{Log, LogOptions};
use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions { segment_bytes, fsync: FsyncPolicy::Always, fsync_interval: Duration::from_millis(10) }
}

fn read_all(log: &Log, from: u64) -> Vec<(u64, cascade_core::Record)> {
    log.read_from(from).collect::<Result<_, _>>().unwrap()
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn appends_are_read_back_in_order_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..100).map(|i| event(Some(&format!("e{i}")), i)).collect();
    {
        let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(log.append_blocking(&records[..40]).unwrap(), 0);
        assert_eq!(log.append_blocking(&records[40..]).unwrap(), 40);
        log.close().unwrap();
    }
    let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(log.committed(), 100);
    let got = read_all(&log, 0);
    assert_eq!(got.iter().map(|(o, _)| *o).collect::<Vec<_>>(), (0..100).collect::<Vec<_>>());
    assert_eq!(got.into_iter().map(|(_, r)| r).collect::<Vec<_>>(), records);
    // From the middle of a frame.
    let tail = read_all(&log, 57);
    assert_eq!(tail.len(), 43);
    assert_eq!(tail[0].1, records[57]);
    assert_eq!(log.append_blocking(&records[..1]).unwrap(), 100);
}

#[test]
fn torn_tail_is_truncated_and_appending_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
        log.append_blocking(&[event(None, 1), event(None, 2)]).unwrap();
        log.append_blocking(&[event(None, 3)]).unwrap();
        log.close().unwrap();
    }
    let seg = last_segment(dir.path());
    let good_len = std::fs::metadata(&seg).unwrap().len();
    // A frame header promising more bytes than follow: a write torn by a crash.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]).unwrap();
    drop(f);
    let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len);
    assert_eq!(log.committed(), 3);
    assert_eq!(log.append_blocking(&[event(None, 4)]).unwrap(), 3);
    assert_eq!(read_all(&log, 0).len(), 4);
}

#[test]
fn corrupt_last_frame_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
        log.append_blocking(&[event(None, 1)]).unwrap();
        log.append_blocking(&[event(None, 2), event(None, 3), event(None, 4)]).unwrap();
        log.close().unwrap();
    }
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff; // flip a bit inside the last frame: its checksum fails
    std::fs::write(&seg, &bytes).unwrap();
    let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
    // The three-record batch is gone as a unit; the first batch stands.
    assert_eq!(log.committed(), 1);
    assert_eq!(read_all(&log, 0).len(), 1);
}

#[test]
fn segments_rotate_and_readers_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts(4096)).unwrap();
    for i in 0..200 {
        log.append_blocking(&[event(Some(&format!("id-{i}")), i)]).unwrap();
    }
    let stats = log.stats().unwrap();
    assert!(stats.segments > 3, "{stats:?}");
    assert_eq!(stats.next_offset, 200);
    let got = read_all(&log, 0);
    assert_eq!(got.len(), 200);
    assert!(got.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
    assert_eq!(read_all(&log, 150).len(), 50);
    log.close().unwrap();
    let log = Log::open(dir.path(), opts(4096)).unwrap();
    assert_eq!(log.committed(), 200);
    assert_eq!(read_all(&log, 0).len(), 200);
}

#[test]
fn retention_deletes_only_closed_segments_below_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts(4096)).unwrap();
    for i in 0..300 {
        log.append_blocking(&[event(None, i)]).unwrap();
    }
    let before = log.stats().unwrap();
    // Floor 0 protects everything.
    assert_eq!(log.apply_retention(0, Duration::ZERO, 1).unwrap(), 0);
    let deleted = log.apply_retention(150, Duration::ZERO, 1).unwrap();
    assert!(deleted > 0);
    let after = log.stats().unwrap();
    assert!(after.first_offset > 0 && after.first_offset <= 150, "{after:?}");
    assert_eq!(after.segments, before.segments - deleted);
    let err = log.read_from(0).next().unwrap().unwrap_err();
    assert!(matches!(err, cascade_store::Error::OffsetNotRetained { .. }), "{err}");
    assert_eq!(read_all(&log, after.first_offset).len() as u64, 300 - after.first_offset);
}

#[test]
fn concurrent_appenders_get_dense_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(dir.path(), opts(1 << 16)).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| log.append_blocking(&[event(None, t * 1000 + i), event(None, t)]).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut bases: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    bases.sort_unstable();
    assert_eq!(bases, (0..200).map(|i| i * 2).collect::<Vec<_>>());
    assert_eq!(read_all(&log, 0).len(), 400);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Cutting the log at any byte (a crash at any point of a write) recovers to exactly the
        /// batches that lie wholly before the cut: never part of a batch, never a reordering.
        #[test]
        fn any_cut_recovers_a_prefix_of_whole_batches(
            sizes in proptest::collection::vec(1usize..8, 1..12),
            cut_fraction in 0.0f64..1.0,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut batches = Vec::new();
            let mut file_len_after = Vec::new();
            {
                let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
                let mut ts = 0;
                for size in &sizes {
                    let batch: Vec<_> = (0..*size).map(|_| { ts += 1; event(Some(&format!("e{ts}")), ts) }).collect();
                    log.append_blocking(&batch).unwrap();
                    batches.push(batch);
                    file_len_after.push(std::fs::metadata(last_segment(dir.path())).unwrap().len());
                }
                log.close().unwrap();
            }
            let seg = last_segment(dir.path());
            let full = std::fs::metadata(&seg).unwrap().len();
            let cut = 16 + ((full - 16) as f64 * cut_fraction) as u64;
            OpenOptions::new().write(true).open(&seg).unwrap().set_len(cut).unwrap();

            let survivors = file_len_after.iter().filter(|&&len| len <= cut).count();
            let expected: Vec<_> = batches[..survivors].iter().flatten().cloned().collect();
            let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
            let got: Vec<_> = read_all(&log, 0).into_iter().map(|(_, r)| r).collect();
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(log.committed(), expected.len() as u64);
            prop_assert_eq!(log.append_blocking(&[event(None, 0)]).unwrap(), expected.len() as u64);
        }
    }
}

/// Readers record where frames start and later readers seek there: reading from any offset
/// gives the same records whether or not a reader passed that way before, across segments.
#[test]
fn readers_from_any_offset_agree_with_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts(2 << 20)).unwrap();
    // ~6 MB in frames of 50 records: several segments, many frame positions worth recording.
    let records: Vec<_> = (0..60_000).map(|i| event(Some(&format!("event-{i:08}-{}", "x".repeat(60))), i)).collect();
    for chunk in records.chunks(50) {
        log.append_blocking(chunk).unwrap();
    }
    let full = read_all(&log, 0);
    assert_eq!(full.len(), records.len());
    for from in [59_999, 0, 31_337, 12_345, 12_346, 50, 49, 45_000, 59_950, 7] {
        // The first read from here may use hints left by earlier ones; the second surely does.
        for _ in 0..2 {
            let got = read_all(&log, from);
            assert_eq!(got.len(), records.len() - from as usize, "from {from}");
            assert_eq!(got[0].0, from);
            assert_eq!(got.first().unwrap().1, records[from as usize]);
            assert_eq!(got.last().unwrap().1, *records.last().unwrap());
        }
    }
    // Reading a little at a time, as a tail does.
    let mut next = 0u64;
    let mut seen = 0usize;
    while next < records.len() as u64 {
        let batch: Vec<_> = log.read_from(next).take(777).collect::<Result<_, _>>().unwrap();
        assert_eq!(batch[0].0, next);
        assert_eq!(batch[0].1, records[next as usize]);
        seen += batch.len();
        next = batch.last().unwrap().0 + 1;
    }
    assert_eq!(seen, records.len());
}
