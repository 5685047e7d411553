//! `cascade-bench features-pit` (was `cascade features bench-pit`): the point-in-time join of
//! label rows against precomputed feature tables ([`cascade_features::as_of_join`]), on synthetic
//! Parquet tables that Feast's local offline store reads too (`crates/features/benches/feast_pit.py`
//! runs it on the same files and compares the values).
//!
//! `cascade-bench features-replay` (was `cascade features bench-replay`) is here too: the replay
//! training-set build over `features-online`'s synthetic log, and the online state's memory.
//!
//! `--generate` writes DIR/view_V.parquet (`user_id`, `event_timestamp`, `f_V_0..`), sorted by
//! event time as a table appended over time would be, DIR/entity_df.parquet (`row_id`, `user_id`,
//! `event_timestamp`) and DIR/meta.json. Feature rows are at whole seconds and label rows at
//! x.500 s, so Feast's `≤ T` and our `< T` pick the same rows and no TTL boundary ties.
//! Without `--generate`: joins, reports the time, and writes DIR/cascade_out.parquet.

use anyhow::{Context, Result};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct BenchPitArgs {
    /// Directory of the tables (written with --generate, read otherwise).
    #[arg(long)]
    dir: PathBuf,
    /// Write the synthetic tables and entity rows instead of joining.
    #[arg(long)]
    generate: bool,
    #[arg(long, default_value_t = 1_000_000)]
    labels: usize,
    /// Feature rows over all views.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    #[arg(long, default_value_t = 10)]
    views: usize,
    /// Features over all views.
    #[arg(long, default_value_t = 50)]
    features: usize,
    #[arg(long, default_value_t = 100_000)]
    entities: u64,
    /// Days the rows and labels span.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Each view's TTL in hours (0: unbounded).
    #[arg(long, default_value_t = 96)]
    ttl_hours: i64,
}

const START: i64 = 1_767_225_600_000; // 2026-01-01

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn write(path: &Path, batch: &RecordBatch) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(1 << 20)).build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(())
}

fn read(path: &Path) -> Result<RecordBatch> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(1 << 20).build()?;
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    let schema = batches.first().map(|b| b.schema()).context("empty table")?;
    Ok(arrow_select::concat::concat_batches(&schema, &batches)?)
}

fn per_view(args: &BenchPitArgs, v: usize) -> usize {
    args.features / args.views + usize::from(v < args.features % args.views)
}

fn generate(args: &BenchPitArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let span_s = args.days * 86_400;
    let per_entity = (args.rows / args.views).div_ceil(args.entities as usize).max(1);
    let slot = span_s / per_entity as i64;
    for v in 0..args.views {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((v as u64 + 1) * 0x2545_f491));
        let n = args.rows / args.views;
        // Entity e's rows: one per slot of the span, at a random whole second in it (distinct, so
        // no ties for Feast to break), then all rows in event-time order.
        let mut rows: Vec<(i64, i64)> = (0..n)
            .map(|r| {
                let (e, j) = ((r % args.entities as usize) as i64, (r / args.entities as usize) as i64);
                (START + (j * slot + (rng.next() % slot as u64) as i64) * 1000, e)
            })
            .collect();
        rows.sort_unstable();
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| Some(r.0)).collect::<TimestampMillisecondArray>().with_timezone("UTC")),
        ];
        let mut fields =
            vec![Field::new("user_id", DataType::Int64, false), Field::new("event_timestamp", ts_type(), false)];
        for f in 0..per_view(args, v) {
            fields.push(Field::new(format!("f_{v}_{f}"), DataType::Float64, false));
            cols.push(Arc::new((0..n).map(|_| (rng.next() % 1_000_000) as f64 / 1000.0).collect::<Float64Array>()));
        }
        write(
            &args.dir.join(format!("view_{v}.parquet")),
            &RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?,
        )?;
    }
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // 5% of label rows are for entities no table has.
    let unknown = (args.entities / 20).max(1);
    let labels: Vec<(i64, i64)> = (0..args.labels)
        .map(|_| {
            ((rng.next() % (args.entities + unknown)) as i64, START + (rng.next() % span_s as u64) as i64 * 1000 + 500)
        })
        .collect();
    let schema = Schema::new(vec![
        Field::new("row_id", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new((0..args.labels as i64).collect::<Int64Array>()),
        Arc::new(labels.iter().map(|l| l.0).collect::<Int64Array>()),
        Arc::new(labels.iter().map(|l| Some(l.1)).collect::<TimestampMillisecondArray>().with_timezone("UTC")),
    ];
    write(&args.dir.join("entity_df.parquet"), &RecordBatch::try_new(Arc::new(schema), cols)?)?;
    let meta = serde_json::json!({
        "views": args.views,
        "features": (0..args.views).map(|v| (0..per_view(args, v)).map(|f| format!("f_{v}_{f}")).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "ttl_seconds": args.ttl_hours * 3600,
        "labels": args.labels, "rows": args.rows, "entities": args.entities,
    });
    std::fs::write(args.dir.join("meta.json"), meta.to_string())?;
    println!("wrote {} views ({} rows), {} label rows to {}", args.views, args.rows, args.labels, args.dir.display());
    Ok(())
}

fn i64s(b: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let c = b.column_by_name(name).with_context(|| format!("no column {name}"))?;
    if let Some(a) = c.as_any().downcast_ref::<Int64Array>() {
        return Ok(a.values().to_vec());
    }
    let a = arrow_cast_ts(c).with_context(|| format!("{name}: not int64 or timestamp(ms)"))?;
    Ok(a.values().to_vec())
}

fn arrow_cast_ts(c: &ArrayRef) -> Option<&TimestampMillisecondArray> {
    c.as_any().downcast_ref::<TimestampMillisecondArray>()
}

/// One view: read, join, gather its feature columns for every label row.
fn join_view(path: &Path, label_keys: &[u64], label_ts: &[i64], ttl_ms: i64) -> Result<Vec<(Field, ArrayRef)>> {
    let table = read(path)?;
    let keys: Vec<u64> = i64s(&table, "user_id")?.into_iter().map(|k| k as u64).collect();
    let ts = i64s(&table, "event_timestamp")?;
    let joined = cascade_features::as_of_join(label_keys, label_ts, &keys, &ts, ttl_ms);
    let idx: UInt32Array = joined.into_iter().collect();
    let mut out = Vec::new();
    for (i, f) in table.schema().fields().iter().enumerate() {
        if f.name() != "user_id" && f.name() != "event_timestamp" {
            let col = arrow_select::take::take(table.column(i), &idx, None)?;
            out.push((Field::new(f.name(), f.data_type().clone(), true), col));
        }
    }
    Ok(out)
}

fn join(args: &BenchPitArgs) -> Result<()> {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(args.dir.join("meta.json"))?)?;
    let views = meta["views"].as_u64().context("meta.json: views")? as usize;
    let ttl_ms = meta["ttl_seconds"].as_i64().context("meta.json: ttl_seconds")? * 1000;
    let started = Instant::now();
    let labels = read(&args.dir.join("entity_df.parquet"))?;
    let label_keys: Vec<u64> = i64s(&labels, "user_id")?.into_iter().map(|k| k as u64).collect();
    let label_ts = i64s(&labels, "event_timestamp")?;
    // Views split over the machine's cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(views.max(1));
    let results: Vec<Result<Vec<(Field, ArrayRef)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (keys, ts, dir) = (&label_keys, &label_ts, &args.dir);
                s.spawn(move || {
                    (t..views)
                        .step_by(threads)
                        .map(|v| join_view(&dir.join(format!("view_{v}.parquet")), keys, ts, ttl_ms).map(|c| (v, c)))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join thread"))
            .map(|r| r.map(|v| v.into_iter().flat_map(|x| x.1).collect()))
            .collect()
    });
    let mut fields = vec![labels.schema().field(0).clone()];
    let mut cols: Vec<ArrayRef> = vec![labels.column(0).clone()];
    for r in results {
        for (f, c) in r? {
            fields.push(f);
            cols.push(c);
        }
    }
    let out = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
    let elapsed = started.elapsed();
    let present = out.columns()[1..].iter().map(|c| c.len() - c.null_count()).sum::<usize>();
    println!(
        "as-of join: {} label rows x {} features ({} views): {:.3} s ({} values present)",
        out.num_rows(),
        out.num_columns() - 1,
        views,
        elapsed.as_secs_f64(),
        present
    );
    write(&args.dir.join("cascade_out.parquet"), &out)?;
    Ok(())
}

pub fn run(args: &BenchPitArgs) -> Result<()> {
    if args.generate { generate(args) } else { join(args) }
}

/// `cascade-bench features-replay` (was `cascade features bench-replay`).
#[derive(Debug, clap::Args)]
pub struct BenchReplayArgs {
    /// Events of the synthetic log (`features-online`'s, over 7 days).
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    #[arg(long, default_value_t = 50_000)]
    items: u64,
    /// Label rows (a random user × item at a random time of the log's span).
    #[arg(long, default_value_t = 100_000)]
    labels: usize,
    /// Instead of the training set: apply the log to an online engine and report its memory.
    #[arg(long)]
    online: bool,
}

/// Resident set size of this process (Linux), in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .map_or(0, |kb: u64| kb * 1024)
}

pub fn replay(args: &BenchReplayArgs) -> Result<()> {
    use cascade_core::{Config, Timestamp};
    use cascade_features::{Engine, Entities, FeatureSet, LabelRow, training_set};
    let config = Config::from_toml(&crate::features_online::definitions(), "bench")?;
    let set = FeatureSet::from_config(&config)?;
    let log = crate::features_online::log_iter(args.users, args.items, args.events);
    if args.online {
        let before = rss();
        let started = Instant::now();
        let mut engine = Engine::new(set.clone());
        for (offset, record) in log {
            engine.apply(offset, &record);
        }
        let secs = started.elapsed().as_secs_f64();
        let (entities, heap, grown) = (engine.entity_count(), engine.approx_heap_bytes(), rss().saturating_sub(before));
        let per_m = |b: usize| b as f64 / entities.max(1) as f64 * 1e6 / (1u64 << 30) as f64;
        println!(
            "online engine: {} events applied in {secs:.2} s ({:.0}/s); {entities} entities (user and item keys); \
             approx_heap_bytes {:.1} MiB = {:.2} GiB per million entities; RSS grew {:.1} MiB = {:.2} GiB per million",
            args.events,
            args.events as f64 / secs,
            heap as f64 / 1048576.0,
            per_m(heap),
            grown as f64 / 1048576.0,
            per_m(grown as usize)
        );
        for view in ["user_f", "item_f"] {
            println!("  {view}: bound max_bytes_per_entity = {} B", set.max_bytes_per_entity(view, 8, 16)?);
        }
        return Ok(());
    }
    const START: i64 = 1_767_225_600_000;
    let mut rng = Rng(0x5151_7a7a_3c3c_9d9d);
    let span = 7 * 86_400_000u64;
    let labels: Vec<LabelRow> = (0..args.labels)
        .map(|_| {
            let (u, i, t) = (rng.next() % args.users, rng.next() % args.items, rng.next() % span);
            let mut e = Entities::user(format!("u{u}"));
            e.item = Some(format!("i{i}"));
            LabelRow { entities: e, ts: Timestamp(START + t as i64), label: None }
        })
        .collect();
    let started = Instant::now();
    let ts = training_set(&set, &set.all(), log.map(Ok), &labels)?;
    let secs = started.elapsed().as_secs_f64();
    let present =
        ts.rows.iter().flat_map(|r| &r.values).filter(|v| v.status == cascade_features::Status::Present).count();
    println!(
        "replay training set: {} events (generated as consumed), {} label rows x {} features: {secs:.2} s \
         ({:.0} events/s); {present} values present",
        args.events,
        ts.rows.len(),
        ts.columns.len(),
        args.events as f64 / secs
    );
    Ok(())
}
