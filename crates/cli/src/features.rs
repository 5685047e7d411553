//! `cascade features ...`: point-in-time training sets from the event log, written as Parquet.

use crate::project::Project;
use anyhow::{Context, Result, bail};
use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cascade_core::{FieldType, Record, Timestamp, Value};
use cascade_features::{Entities, FeatureSet, LabelRow, Status, TrainingSet, training_set};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, clap::Subcommand)]
pub enum FeaturesCommand {
    /// Build a point-in-time correct training set by replaying the event log through the same
    /// aggregation code as serving, and write it as Parquet: one row per label row, each feature
    /// computed from events strictly before the row's time.
    TrainingSet(TrainingSetArgs),
    /// Land the log's events in the offline store: Parquet files partitioned by UTC day under
    /// DATA_DIR/offline/events/day=YYYY-MM-DD/, incrementally from where the last export stopped.
    Export(ExportArgs),
    /// Recompute the served feature vectors that `cascade serve` logged
    /// (features_store.vector_log_sample_rate) by replaying exactly the log prefix each one's
    /// state reflected, and report every value that differs. Exits non-zero on any mismatch.
    Audit(AuditArgs),
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The served-vector log [default: DATA_DIR/feature_vectors.ndjson].
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Mismatches to print in full.
    #[arg(long, default_value_t = 10)]
    show: usize,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Then merge each day's files into one (rows in event-time order).
    #[arg(long)]
    compact: bool,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("labels_from").required(true).args(["labels", "label_event"]))]
pub struct TrainingSetArgs {
    /// CSV of label rows with a header: `ts` (RFC 3339 or integer milliseconds), optional `user`,
    /// `item` and `label`, and any other columns as key parts or request context (`device`, ...).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Use every event of this type in the log as a label row at its time (its user, item and
    /// fields as the entities).
    #[arg(long)]
    label_event: Option<String>,
    /// With --label-event: the event field to use as the label (default: the label is `true`).
    #[arg(long, requires = "label_event")]
    label_field: Option<String>,
    /// Features as `view:feature` or `view` (comma-separated; default: every feature).
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// The Parquet file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(config: Option<&Path>, cmd: &FeaturesCommand) -> Result<()> {
    let project = &Project::load(config)?;
    match cmd {
        FeaturesCommand::TrainingSet(args) => training_set_cmd(project, args),
        FeaturesCommand::Audit(args) => audit_cmd(project, args),
        FeaturesCommand::Export(args) => {
            let root = project.data_dir().join("offline").join("events");
            let store = crate::open_store(project)?;
            let (rows, files) = offline::export(&store, &root)?;
            drop(store);
            println!("exported {rows} events into {files} files under {}", root.display());
            if args.compact {
                let (days, merged) = offline::compact(&root)?;
                println!("compacted {merged} files in {days} days");
            }
            Ok(())
        }
    }
}

fn training_set_cmd(project: &Project, args: &TrainingSetArgs) -> Result<()> {
    let set = FeatureSet::from_config(&project.config)?;
    if set.views().is_empty() {
        bail!("no features are defined: add [features.<view>] tables to {}", project.config_path.display());
    }
    let selection = if args.features.is_empty() { set.all() } else { set.select(&args.features)? };
    let store = crate::open_store(project)?;
    let labels = match (&args.labels, &args.label_event) {
        (Some(path), _) => read_labels_csv(path, &project.config)?,
        (None, Some(event_type)) => {
            if !project.config.events.contains_key(event_type) {
                bail!("--label-event: `{event_type}` is not a declared event type");
            }
            labels_from_events(&store, event_type, args.label_field.as_deref())?
        }
        (None, None) => bail!("pass --labels FILE or --label-event TYPE"),
    };
    let started = std::time::Instant::now();
    let ts = training_set(&set, &selection, store.read_from(0), &labels)?;
    drop(store);
    let context: Vec<String> = labels
        .iter()
        .flat_map(|l| l.entities.fields.iter().map(|(n, _)| n.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    write_parquet(&args.out, &ts, &context)?;
    let late: u64 = ts.late_dropped.iter().map(|(_, n)| n).sum();
    eprintln!(
        "wrote {} rows × {} features to {} in {:.2?} ({late} late records dropped)",
        ts.rows.len(),
        ts.columns.len(),
        args.out.display(),
        started.elapsed()
    );
    Ok(())
}

fn audit_cmd(project: &Project, args: &AuditArgs) -> Result<()> {
    let path = args.vectors.clone().unwrap_or_else(|| project.data_dir().join(cascade_server::VECTOR_LOG_FILE));
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut vectors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: cascade_features::LoggedVector =
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), n + 1))?;
        vectors.push(v);
    }
    let set = FeatureSet::from_config(&project.config)?;
    let store = crate::open_store(project)?;
    let report = cascade_features::audit(&set, &vectors, || store.read_from(0))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "audited {} vectors: {} values compared, {} mismatches, {} skipped (features no longer defined)",
            report.vectors,
            report.values,
            report.mismatches.len(),
            report.skipped
        );
        for m in report.mismatches.iter().take(args.show) {
            println!(
                "  vector {} {}: served {} ({:?}), recomputed {} ({:?})",
                m.vector, m.feature, m.online.value, m.online.status, m.offline.value, m.offline.status
            );
        }
    }
    if !report.mismatches.is_empty() {
        bail!("{} of {} values differ from their offline recomputation", report.mismatches.len(), report.values);
    }
    Ok(())
}

/// A CSV cell as a value: the type the project declares for an event field of that name, else a
/// string.
fn cell_value(config: &cascade_core::Config, column: &str, cell: &str) -> Value {
    let declared = config.events.values().find_map(|e| e.fields.get(column)).map(|s| s.ty);
    match declared {
        Some(FieldType::Int) => cell.parse().map(Value::Int).unwrap_or_else(|_| Value::String(cell.into())),
        Some(FieldType::Float) => cell.parse().map(Value::Float).unwrap_or_else(|_| Value::String(cell.into())),
        Some(FieldType::Bool) => cell.parse().map(Value::Bool).unwrap_or_else(|_| Value::String(cell.into())),
        _ => Value::String(cell.to_string()),
    }
}

fn parse_ts(cell: &str) -> Result<Timestamp, String> {
    if !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return cell.parse().map(Timestamp).map_err(|e| format!("{e}"));
    }
    Timestamp::parse_rfc3339(cell).map_err(str::to_string)
}

/// Labels: ints, floats and bools when the cell reads as one, else strings; empty is null.
fn label_value(cell: &str) -> Option<Value> {
    if cell.is_empty() {
        return None;
    }
    Some(if let Ok(i) = cell.parse() {
        Value::Int(i)
    } else if let Ok(f) = cell.parse() {
        Value::Float(f)
    } else if let Ok(b) = cell.parse() {
        Value::Bool(b)
    } else {
        Value::String(cell.to_string())
    })
}

fn read_labels_csv(path: &Path, config: &cascade_core::Config) -> Result<Vec<LabelRow>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers().with_context(|| format!("{}: header", path.display()))?.clone();
    let ts_col =
        headers.iter().position(|h| h == "ts").with_context(|| format!("{}: no `ts` column", path.display()))?;
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let line = n + 2;
        let record = record.with_context(|| format!("{}:{line}", path.display()))?;
        let ts = parse_ts(record.get(ts_col).unwrap_or(""))
            .map_err(|e| anyhow::anyhow!("{}:{line}: ts: {e}", path.display()))?;
        let mut row = LabelRow { entities: Entities::default(), ts, label: None };
        for (h, cell) in headers.iter().zip(record.iter()) {
            match h {
                "ts" => {}
                "user" if !cell.is_empty() => row.entities.user = Some(cell.to_string()),
                "item" if !cell.is_empty() => row.entities.item = Some(cell.to_string()),
                "label" => row.label = label_value(cell),
                _ if cell.is_empty() => {}
                other => row.entities.fields.push((other.to_string(), cell_value(config, other, cell))),
            }
        }
        rows.push(row);
    }
    Ok(rows)
}

fn labels_from_events(store: &cascade_store::Store, event_type: &str, field: Option<&str>) -> Result<Vec<LabelRow>> {
    let mut rows = Vec::new();
    for entry in store.read_from(0) {
        let (_, record) = entry?;
        let Record::Event(e) = record else { continue };
        if e.event_type != event_type {
            continue;
        }
        let label = match field {
            Some(f) => e.field(f).cloned(),
            None => Some(Value::Bool(true)),
        };
        rows.push(LabelRow { entities: Entities { user: e.user, item: e.item, fields: e.fields }, ts: e.ts, label });
    }
    Ok(rows)
}

fn data_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::Bool => DataType::Boolean,
        FieldType::Int => DataType::Int64,
        FieldType::Float => DataType::Float64,
        FieldType::String => DataType::Utf8,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        FieldType::StringList => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    }
}

/// One typed column from values (`None` and values of another type are null).
fn column<'a>(ty: FieldType, values: impl Iterator<Item = Option<&'a Value>>) -> ArrayRef {
    match ty {
        FieldType::Bool => {
            let mut b = BooleanBuilder::new();
            values.for_each(|v| b.append_option(if let Some(Value::Bool(x)) = v { Some(*x) } else { None }));
            Arc::new(b.finish())
        }
        FieldType::Int => {
            let mut b = Int64Builder::new();
            values.for_each(|v| b.append_option(if let Some(Value::Int(x)) = v { Some(*x) } else { None }));
            Arc::new(b.finish())
        }
        FieldType::Float => {
            let mut b = Float64Builder::new();
            values.for_each(|v| {
                b.append_option(match v {
                    Some(Value::Float(x)) => Some(*x),
                    Some(Value::Int(x)) => Some(*x as f64),
                    _ => None,
                })
            });
            Arc::new(b.finish())
        }
        FieldType::String => {
            let mut b = StringBuilder::new();
            values.for_each(|v| b.append_option(if let Some(Value::String(x)) = v { Some(x) } else { None }));
            Arc::new(b.finish())
        }
        FieldType::Timestamp => Arc::new(
            values
                .map(|v| if let Some(Value::Timestamp(t)) = v { Some(t.0) } else { None })
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        ),
        FieldType::StringList => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for v in values {
                match v {
                    Some(Value::StringList(l)) => {
                        l.iter().for_each(|s| b.values().append_value(s));
                        b.append(true);
                    }
                    _ => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// The type every label shares: int, float (ints and floats), bool, else string.
fn label_type(ts: &TrainingSet) -> FieldType {
    let types: BTreeSet<&str> =
        ts.rows.iter().filter_map(|r| r.label.as_ref()).map(|v| v.field_type().name()).collect();
    match types.iter().copied().collect::<Vec<_>>().as_slice() {
        ["int"] => FieldType::Int,
        ["float"] | ["float", "int"] => FieldType::Float,
        ["bool"] | [] => FieldType::Bool,
        _ => FieldType::String,
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Present => "present",
        Status::Default => "default",
        Status::StaleOutsideTtl => "stale_outside_ttl",
        Status::NotFound => "not_found",
    }
}

/// Columns: `ts`, `user`, `item`, each context field, `label`, then per feature `view:feature`
/// (typed) and `view:feature:status`. Rows in label order, in record batches of 64k rows.
pub fn write_parquet(path: &Path, ts: &TrainingSet, context: &[String]) -> Result<()> {
    let label_ty = label_type(ts);
    let mut fields = vec![
        Field::new("ts", data_type(FieldType::Timestamp), false),
        Field::new("user", DataType::Utf8, true),
        Field::new("item", DataType::Utf8, true),
    ];
    fields.extend(context.iter().map(|c| Field::new(c.as_str(), DataType::Utf8, true)));
    fields.push(Field::new("label", data_type(label_ty), true));
    for c in &ts.columns {
        fields.push(Field::new(c.name(), data_type(c.ty), true));
        fields.push(Field::new(format!("{}:status", c.name()), DataType::Utf8, false));
    }
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    for rows in ts.rows.chunks(64 * 1024) {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| Some(r.ts.0)).collect::<TimestampMillisecondArray>().with_timezone("UTC")),
            column(
                FieldType::String,
                rows.iter()
                    .map(|r| r.entities.user.clone().map(Value::String))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Option::as_ref),
            ),
            column(
                FieldType::String,
                rows.iter()
                    .map(|r| r.entities.item.clone().map(Value::String))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(Option::as_ref),
            ),
        ];
        for c in context {
            let strings: Vec<Option<Value>> = rows
                .iter()
                .map(|r| {
                    r.entities.field(c).map(|v| match v {
                        Value::String(s) => Value::String(s.clone()),
                        other => Value::String(other.to_json().to_string()),
                    })
                })
                .collect();
            cols.push(column(FieldType::String, strings.iter().map(Option::as_ref)));
        }
        cols.push(column(label_ty, rows.iter().map(|r| r.label.as_ref())));
        for (i, c) in ts.columns.iter().enumerate() {
            cols.push(column(c.ty, rows.iter().map(|r| r.values[i].value.as_ref())));
            let mut b = StringBuilder::new();
            rows.iter().for_each(|r| b.append_value(status_name(r.values[i].status)));
            cols.push(Arc::new(b.finish()));
        }
        writer.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
    }
    writer.close()?;
    Ok(())
}

pub use cascade_features::offline;
