//! Bulk loading into the event log: `cascade import`, and the writer pipeline that `generate`
//! and `quickstart` share.

use crate::import::{self, Source, TsUnit};
use crate::project::Project;
use anyhow::{Context, Result, bail};
use cascade_core::{Record, Schema, Timestamp};
use cascade_store::{Outcome, Store};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    source: SourceArgs,
    /// On an invalid row: `fail` checks the whole input first and writes nothing if any row is
    /// invalid; `skip` writes the valid rows and reports the others with file:line.
    #[arg(long, value_enum, default_value = "fail", global = true)]
    on_error: OnError,
    /// Records per append (one durable write each).
    #[arg(long, default_value_t = 10_000, global = true)]
    batch: usize,
    /// Print the summary as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnError {
    Fail,
    Skip,
}

#[derive(Debug, clap::Subcommand)]
enum SourceArgs {
    /// A MovieLens directory: 100K (u.data, u.item, u.user) or 1M (ratings.dat[.gz], movies.dat,
    /// users.dat). Items and users become catalogue records, ratings become `rating` events.
    Movielens { dir: PathBuf },
    /// A CSV file with a header, each row one event of --event-type.
    ///
    /// Example: cascade import csv ratings.csv --event-type rating --map user=userId,item=movieId,ts=timestamp,value=rating
    Csv {
        path: PathBuf,
        /// The event type every row becomes (declared in cascade.toml).
        #[arg(long)]
        event_type: String,
        /// event key=CSV column pairs: id, user, item, ts, and the event's field names.
        #[arg(long)]
        map: String,
        /// Unit of the ts column: seconds, millis or rfc3339.
        #[arg(long, default_value = "seconds")]
        ts_unit: String,
        #[arg(long, default_value = ",")]
        delimiter: char,
    },
    /// Newline-delimited JSON: one event per line, or `{"kind": "item"|"user", "id": ..., ...}`
    /// catalogue upserts with the body of PUT /v1/items/{id}.
    Ndjson { path: PathBuf },
}

/// What a load did, printed at the end (as JSON with --json).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub rows: u64,
    pub written: u64,
    pub duplicates: u64,
    pub skipped: u64,
    /// The first skipped rows, as `file:line: reason`.
    pub skipped_examples: Vec<String>,
    pub seconds: f64,
    pub rows_per_second: f64,
    pub next_offset: u64,
}

impl Summary {
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("serializable"));
            return;
        }
        println!(
            "{} rows in {:.2}s ({:.0} rows/s): {} written, {} duplicates (already stored), {} skipped",
            self.rows, self.seconds, self.rows_per_second, self.written, self.duplicates, self.skipped
        );
        for e in &self.skipped_examples {
            println!("  skipped {e}");
        }
        if self.skipped > self.skipped_examples.len() as u64 {
            println!("  ... and {} more", self.skipped - self.skipped_examples.len() as u64);
        }
    }
}

const MAX_EXAMPLES: usize = 20;

pub fn progress(json: bool, what: &str) -> ProgressBar {
    let bar = if json { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {human_pos} rows, {per_sec} [{elapsed}]")
            .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Appends records in batches from a dedicated writer thread, so reading and parsing overlap
/// with the durable writes.
pub struct Loader {
    tx: Option<SyncSender<Vec<Record>>>,
    writer: Option<JoinHandle<Result<(u64, u64)>>>,
    batch: Vec<Record>,
    batch_size: usize,
    bar: ProgressBar,
}

impl Loader {
    pub fn new(store: Arc<Store>, batch_size: usize, bar: ProgressBar) -> Loader {
        let (tx, rx) = sync_channel::<Vec<Record>>(2);
        let writer = std::thread::spawn(move || {
            let (mut written, mut duplicates) = (0, 0);
            for batch in rx {
                for outcome in store.append_blocking(&batch)? {
                    match outcome {
                        Outcome::Written(_) => written += 1,
                        Outcome::Duplicate(_) => duplicates += 1,
                    }
                }
            }
            Ok((written, duplicates))
        });
        let batch_size = batch_size.max(1);
        Loader { tx: Some(tx), writer: Some(writer), batch: Vec::with_capacity(batch_size), batch_size, bar }
    }

    pub fn push(&mut self, record: Record) -> Result<()> {
        self.batch.push(record);
        if self.batch.len() >= self.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(self.batch_size));
        self.bar.inc(batch.len() as u64);
        if self.tx.as_ref().expect("open").send(batch).is_err() {
            // The writer stopped: its error is the one to report.
            return Err(self.join().err().unwrap_or_else(|| anyhow::anyhow!("the log writer stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> Result<(u64, u64)> {
        self.tx.take();
        self.writer.take().map_or(Ok((0, 0)), |w| w.join().map_err(|_| anyhow::anyhow!("writer panicked"))?)
    }

    /// Writes what is left and returns (written, duplicates).
    pub fn finish(mut self) -> Result<(u64, u64)> {
        if !self.batch.is_empty() {
            self.flush()?;
        }
        let counts = self.join()?;
        self.bar.finish_and_clear();
        Ok(counts)
    }
}

fn source(args: &SourceArgs) -> Result<Source> {
    Ok(match args {
        SourceArgs::Movielens { dir } => Source::MovieLens(dir.clone()),
        SourceArgs::Csv { path, event_type, map, ts_unit, delimiter } => Source::Csv {
            path: path.clone(),
            event_type: event_type.clone(),
            mapping: import::parse_mapping(map).context("--map")?,
            ts_unit: ts_unit.parse::<TsUnit>().map_err(|e| anyhow::anyhow!("--ts-unit: {e}"))?,
            delimiter: u8::try_from(*delimiter).context("--delimiter must be one ASCII character")?,
        },
        SourceArgs::Ndjson { path } => Source::Ndjson(path.clone()),
    })
}

pub fn import(project: &Project, args: &ImportArgs) -> Result<()> {
    let summary =
        import_source(project, &source(&args.source)?, args.on_error == OnError::Skip, args.batch, args.json)?;
    summary.print(args.json);
    Ok(())
}

/// Imports one source into the project's store.
pub fn import_source(project: &Project, source: &Source, skip: bool, batch: usize, json: bool) -> Result<Summary> {
    let schema = Schema::from_config(&project.config);
    let now = Timestamp::now();
    if !skip {
        // Check everything before writing anything, so a failed import leaves no partial data.
        let bar = progress(json, "checking");
        let mut errors = Vec::new();
        let mut bad = 0u64;
        for row in import::read(source, &schema, now)? {
            bar.inc(1);
            if let Err(e) = row {
                bad += 1;
                if errors.len() < MAX_EXAMPLES {
                    errors.push(e.to_string());
                }
            }
        }
        bar.finish_and_clear();
        if bad > 0 {
            for e in &errors {
                eprintln!("  {e}");
            }
            bail!("{bad} invalid rows; nothing was written (pass --on-error skip to import the valid rows)");
        }
    }
    let store = Arc::new(crate::open_store(project)?);
    let started = Instant::now();
    let mut loader = Loader::new(store.clone(), batch, progress(json, "importing"));
    let mut summary = Summary::default();
    for row in import::read(source, &schema, now)? {
        summary.rows += 1;
        match row {
            Ok(record) => loader.push(record)?,
            Err(e) => {
                summary.skipped += 1;
                if summary.skipped_examples.len() < MAX_EXAMPLES {
                    summary.skipped_examples.push(e.to_string());
                }
            }
        }
    }
    (summary.written, summary.duplicates) = loader.finish()?;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.rows_per_second = summary.rows as f64 / summary.seconds.max(1e-9);
    summary.next_offset = store.log_stats()?.next_offset;
    store.close()?;
    Ok(summary)
}
