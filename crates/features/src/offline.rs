//! The offline store's event files: `ROOT/day=YYYY-MM-DD/part-{first:020}-{last:020}.parquet`,
//! where first..=last are the log offsets the file covers (its rows are the events of that day
//! among them, sorted by event time then offset), and `ROOT/_next_offset`, the next log offset
//! to export. A file whose range lies inside another file's range of the same day is a leftover
//! of an interrupted compaction and is removed; so an interruption at any point loses or
//! duplicates nothing.
//!
//! `cascade features export` runs [`export`] (and [`compact`]) once; `cascade serve` runs
//! [`maintain`] every `features_store.offline_export_interval`.

use crate::{FeatureError, Result};
use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cascade_core::{Event, Record, Timestamp};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const NEXT: &str = "_next_offset";
const DAY_MS: i64 = 86_400_000;

pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("offset", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("type", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, true),
        Field::new("user", DataType::Utf8, true),
        Field::new("item", DataType::Utf8, true),
        // The event's declared fields as a JSON object (types differ per event type).
        Field::new("fields", DataType::Utf8, false),
    ]))
}

fn day_dir(root: &Path, ts: i64) -> PathBuf {
    let t = Timestamp(ts.div_euclid(DAY_MS) * DAY_MS).to_string();
    root.join(format!("day={}", &t[..10]))
}

fn write(path: &Path, batch: &RecordBatch) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
    let file = std::fs::File::create(&tmp).map_err(FeatureError::io(&tmp))?;
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    std::fs::rename(&tmp, path).map_err(FeatureError::io(&path))?;
    Ok(())
}

fn batch(events: &[(u64, Event)]) -> Result<RecordBatch> {
    let (mut off, mut ty, mut id, mut user, mut item, mut fields) = (
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    for (o, e) in events {
        off.append_value(*o as i64);
        ty.append_value(&e.event_type);
        id.append_option(e.id.as_deref());
        user.append_option(e.user.as_deref());
        item.append_option(e.item.as_deref());
        let obj: serde_json::Map<String, serde_json::Value> =
            e.fields.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
        fields.append_value(serde_json::Value::Object(obj).to_string());
    }
    let ts: TimestampMillisecondArray = events.iter().map(|(_, e)| Some(e.ts.0)).collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(off.finish()),
        Arc::new(ts.with_timezone("UTC")),
        Arc::new(ty.finish()),
        Arc::new(id.finish()),
        Arc::new(user.finish()),
        Arc::new(item.finish()),
        Arc::new(fields.finish()),
    ];
    Ok(RecordBatch::try_new(schema(), cols)?)
}

/// The name under which the offline export holds back log retention ([`cascade_store::Store::retain_from`]).
pub const RETENTION_CONSUMER: &str = "offline-export";

/// The next log offset to export, as recorded under `root` (0 before the first export).
fn next_offset(root: &Path) -> Result<u64> {
    let next_path = root.join(NEXT);
    match std::fs::read_to_string(&next_path) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| FeatureError::Corrupt { path: next_path.clone(), reason: format!("not an offset: {s:?}") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(FeatureError::io(&next_path)(e)),
    }
}

/// Tells the store not to delete log records the export has not written yet. Call it when a
/// process that exports starts, before its first retention pass; [`export`] renews it.
pub fn hold_retention(store: &cascade_store::Store, root: &Path) -> Result<()> {
    store.retain_from(RETENTION_CONSUMER, next_offset(root)?);
    Ok(())
}

/// Exports the events after the last export; returns (events, files written).
pub fn export(store: &cascade_store::Store, root: &Path) -> Result<(usize, usize)> {
    std::fs::create_dir_all(root).map_err(FeatureError::io(&root))?;
    let next_path = root.join(NEXT);
    let next = next_offset(root)?;
    store.retain_from(RETENTION_CONSUMER, next);
    let retained = store.log_stats()?.first_offset;
    if next < retained {
        // Only possible when the export was off or not running while retention ran.
        tracing::warn!(
            from = next,
            to = retained,
            "offline store: these log records were deleted by retention before export"
        );
    }
    let first = next.max(retained);
    let mut days: BTreeMap<PathBuf, Vec<(u64, Event)>> = BTreeMap::new();
    let mut end = first;
    for entry in store.read_from(first) {
        let (offset, record) = entry?;
        end = offset + 1;
        if let Record::Event(e) = record {
            days.entry(day_dir(root, e.ts.0)).or_default().push((offset, e));
        }
    }
    if end == first {
        return Ok((0, 0));
    }
    let (mut rows, mut files) = (0, 0);
    for (dir, mut events) in days {
        events.sort_by_key(|(o, e)| (e.ts, *o));
        std::fs::create_dir_all(&dir).map_err(FeatureError::io(&dir))?;
        write(&dir.join(format!("part-{first:020}-{:020}.parquet", end - 1)), &batch(&events)?)?;
        rows += events.len();
        files += 1;
    }
    // Files first, then the offset: a crash in between re-exports the same range under the
    // same names, overwriting, so nothing is duplicated.
    let tmp = root.join(format!("{NEXT}.tmp"));
    std::fs::write(&tmp, end.to_string()).map_err(FeatureError::io(&tmp))?;
    std::fs::rename(&tmp, &next_path).map_err(FeatureError::io(&next_path))?;
    store.retain_from(RETENTION_CONSUMER, end);
    Ok((rows, files))
}

/// The parts of one day as (first, last, path), leftovers of an interrupted compaction
/// (ranges inside another part's range) removed.
pub fn parts(dir: &Path) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(FeatureError::io(&dir))? {
        let path = entry.map_err(FeatureError::io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Some(range) = name.strip_prefix("part-").and_then(|n| n.strip_suffix(".parquet")) else { continue };
        let Some((a, b)) = range.split_once('-') else { continue };
        if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
            parts.push((a, b, path));
        }
    }
    parts.sort();
    let covered: Vec<(u64, u64)> = parts.iter().map(|p| (p.0, p.1)).collect();
    let mut kept = Vec::new();
    for (a, b, path) in parts {
        if covered.iter().any(|&(x, y)| (x, y) != (a, b) && x <= a && b <= y) {
            std::fs::remove_file(&path).map_err(FeatureError::io(&path))?;
        } else {
            kept.push((a, b, path));
        }
    }
    Ok(kept)
}

pub fn read(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path).map_err(FeatureError::io(&path))?;
    Ok(ParquetRecordBatchReaderBuilder::try_new(file)?.build()?.collect::<Result<_, _>>()?)
}

/// Removes the rows of events stored below `below` and dated after `after` (what a quarantine
/// rule of the store hides, `Store::quarantine`), rewriting each day that held some as one part
/// (like [`compact`]; an interruption leaves either the old parts or the new one, and running it
/// again finishes the job). Only days from `after`'s on are read. Returns the rows removed.
pub fn purge(root: &Path, below: u64, after: Timestamp) -> Result<usize> {
    let first_day = day_dir(root, after.0);
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(0) };
    let mut removed = 0;
    for entry in entries {
        let dir = entry.map_err(FeatureError::io(root))?.path();
        // `day=YYYY-MM-DD` sorts by date: earlier days hold nothing dated after `after`.
        if !dir.is_dir() || dir.file_name() < first_day.file_name() {
            continue;
        }
        let (parts, all) = read_day(&dir)?;
        let (off, ts) = offsets_and_times(&all);
        let keep: arrow_array::BooleanArray =
            (0..all.num_rows()).map(|i| Some(!(off.value(i) < below as i64 && ts.value(i) > after.0))).collect();
        let kept = arrow_select::filter::filter_record_batch(&all, &keep)?;
        if kept.num_rows() == all.num_rows() {
            continue;
        }
        removed += all.num_rows() - kept.num_rows();
        let mut merged = None;
        if kept.num_rows() > 0 {
            let path = merged_path(&dir, &parts);
            write(&path, &kept)?;
            merged = Some(path);
        }
        for (_, _, p) in parts.iter().filter(|(_, _, p)| Some(p) != merged.as_ref()) {
            std::fs::remove_file(p).map_err(FeatureError::io(&p))?;
        }
        if merged.is_none() {
            std::fs::remove_dir(&dir).map_err(FeatureError::io(&dir))?;
        }
    }
    Ok(removed)
}

/// Merges every day with more than one part into one part; returns (days compacted, parts merged).
pub fn compact(root: &Path) -> Result<(usize, usize)> {
    compact_where(root, |_, parts| parts > 1)
}

/// Parts a day still receiving events may collect before [`maintain`] compacts it anyway.
pub const MAX_PARTS_TODAY: usize = 32;

/// One round of the continuous offline store (`cascade serve`, every
/// `features_store.offline_export_interval`): [`export`] the new events, then compact every day
/// before `now`'s UTC day that has more than one part, and `now`'s day once it has more than
/// [`MAX_PARTS_TODAY`] — so the day still being written is not rewritten on every round.
/// Returns (events exported, parts merged).
pub fn maintain(store: &cascade_store::Store, root: &Path, now: Timestamp) -> Result<(usize, usize)> {
    let (rows, _) = export(store, root)?;
    let today = day_dir(root, now.0);
    let (_, merged) = compact_where(root, |dir, parts| parts > if dir == today { MAX_PARTS_TODAY } else { 1 })?;
    Ok((rows, merged))
}

/// A part file of a day: the first and last log offsets it holds, and its path.
type Part = (u64, u64, PathBuf);

/// A day directory's parts and all their rows, in part order.
fn read_day(dir: &Path) -> Result<(Vec<Part>, RecordBatch)> {
    let parts = parts(dir)?;
    let mut batches = Vec::new();
    for (_, _, p) in &parts {
        batches.extend(read(p)?);
    }
    let all = arrow_select::concat::concat_batches(&schema(), &batches)?;
    Ok((parts, all))
}

/// The offset and event time columns of the offline schema.
fn offsets_and_times(batch: &RecordBatch) -> (&Int64Array, &TimestampMillisecondArray) {
    let off = batch.column(0).as_any().downcast_ref::<Int64Array>().expect("offset column");
    let ts = batch.column(1).as_any().downcast_ref::<TimestampMillisecondArray>().expect("ts column");
    (off, ts)
}

/// The one part replacing `parts`: named by the offsets they span.
fn merged_path(dir: &Path, parts: &[Part]) -> PathBuf {
    let (first, last) = (parts.iter().map(|p| p.0).min().unwrap_or(0), parts.iter().map(|p| p.1).max().unwrap_or(0));
    dir.join(format!("part-{first:020}-{last:020}.parquet"))
}

fn compact_where(root: &Path, due: impl Fn(&Path, usize) -> bool) -> Result<(usize, usize)> {
    let (mut days, mut merged) = (0, 0);
    let Ok(entries) = std::fs::read_dir(root) else { return Ok((0, 0)) };
    for entry in entries {
        let dir = entry.map_err(FeatureError::io(root))?.path();
        if !dir.is_dir() {
            continue;
        }
        if !due(&dir, parts(&dir)?.len()) {
            continue;
        }
        let (parts, all) = read_day(&dir)?;
        let (off, ts) = offsets_and_times(&all);
        let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
        order.sort_by_key(|&i| (ts.value(i as usize), off.value(i as usize)));
        let sorted = arrow_select::take::take_record_batch(&all, &UInt32Array::from(order))?;
        write(&merged_path(&dir, &parts), &sorted)?;
        for (_, _, p) in &parts {
            std::fs::remove_file(p).map_err(FeatureError::io(&p))?;
        }
        days += 1;
        merged += parts.len();
    }
    Ok((days, merged))
}
