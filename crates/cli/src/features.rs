//! `cascade features ...`: the flags, label rows from a CSV file or the log's events, and
//! printing. The training set is `cascade_features::training_set`, its Parquet file
//! `cascade_features::training_set_parquet`.

use crate::project::Project;
use anyhow::{Context, Result, bail};
use cascade_core::{FieldType, Record, Timestamp, Value};
use cascade_features::{Entities, FeatureSet, LabelRow, training_set, training_set_parquet};
use std::path::{Path, PathBuf};

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
    /// Rebuild the online feature state (embedded checkpoint or Redis) from the event log. With
    /// --exclude-after, first quarantine the records stored so far that are dated after that
    /// time (an event in year 9999 accepted before the time horizon existed): every reader of
    /// the log (features, serving, training, the offline export) skips them from then on, and
    /// they are removed from the offline store. Stop `cascade serve` first; start it after.
    Rebuild(RebuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Quarantine records stored so far dated after this time (RFC 3339 or integer ms), e.g.
    /// the time the bad records were noticed.
    #[arg(long, value_parser = parse_ts)]
    exclude_after: Option<Timestamp>,
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
        FeaturesCommand::Rebuild(args) => rebuild_cmd(project, args),
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

fn rebuild_cmd(project: &Project, args: &RebuildArgs) -> Result<()> {
    // Writable: refused (the directory is locked) while `cascade serve` runs.
    let store = crate::open_store(project)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(cascade_node::rebuild_features(&project.config, &store, args.exclude_after))?;
    store.close()?;
    if let Some(q) = &report.quarantine {
        println!(
            "quarantined records stored below offset {} dated after {}: {} retained records are now hidden \
             (rules in {})",
            q.rule.below_offset,
            q.rule.after,
            q.hidden,
            project.data_dir().join(cascade_store::QUARANTINE_FILE).display()
        );
        println!("removed {} rows from the offline store", report.offline_rows_removed);
    }
    println!("rebuilt the feature state from {} log records (through offset {})", report.applied, report.next_offset);
    Ok(())
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
    training_set_parquet::write(&args.out, &ts, &training_set_parquet::context_columns(&ts))?;
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

pub use cascade_features::offline;
