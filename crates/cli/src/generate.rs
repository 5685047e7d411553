//! `cascade generate`: a seeded synthetic world into the event log or an NDJSON file.

use crate::load::{Loader, Summary, progress};
use crate::project::Project;
use anyhow::{Context, Result};
use cascade_core::Record;
use cascade_testkit::{World, WorldConfig, event_json, events_iter, item_json, user_json};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// Seed: the same seed and sizes give the same world, byte for byte.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    #[arg(long, default_value_t = 2_000)]
    pub items: usize,
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Length of the event window in days, ending at 2024-01-01 + days.
    #[arg(long, default_value_t = 60)]
    pub days: u32,
    /// Write NDJSON (catalogue upserts, then events) to this file instead of the event log;
    /// `cascade import ndjson FILE` reads it back.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl GenerateArgs {
    pub fn world_config(&self) -> WorldConfig {
        WorldConfig {
            seed: self.seed,
            users: self.users,
            items: self.items,
            events: self.events,
            days: self.days,
            ..WorldConfig::default()
        }
    }
}

pub fn run(project: &Project, args: &GenerateArgs) -> Result<()> {
    let summary = match &args.out {
        Some(path) => write_ndjson(args, path)?,
        None => into_store(project, args)?,
    };
    summary.print(args.json);
    Ok(())
}

/// Generates the world straight into the project's event log; returns what was written.
pub fn into_store(project: &Project, args: &GenerateArgs) -> Result<Summary> {
    let cfg = args.world_config();
    let store = Arc::new(crate::open_store(project)?);
    let started = Instant::now();
    let world = World::catalogue(&cfg);
    let mut loader = Loader::new(store.clone(), 10_000, progress(args.json, "generating"));
    let catalogue = world.items.iter().cloned().map(Record::Item).chain(world.users.iter().cloned().map(Record::User));
    let mut rows = 0u64;
    for record in catalogue.chain(events_iter(&cfg).map(Record::Event)) {
        loader.push(record)?;
        rows += 1;
    }
    let (written, duplicates) = loader.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let next_offset = store.log_stats()?.next_offset;
    store.close()?;
    Ok(Summary {
        rows,
        written,
        duplicates,
        seconds,
        rows_per_second: rows as f64 / seconds.max(1e-9),
        next_offset,
        ..Summary::default()
    })
}

fn write_ndjson(args: &GenerateArgs, path: &PathBuf) -> Result<Summary> {
    let cfg = args.world_config();
    let started = Instant::now();
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let world = World::catalogue(&cfg);
    let bar = progress(args.json, "generating");
    let mut rows = 0u64;
    let tagged = |kind: &str, id: &str, body: serde_json::Value| {
        let mut obj = serde_json::Map::new();
        obj.insert("kind".into(), kind.into());
        obj.insert("id".into(), id.into());
        if let serde_json::Value::Object(m) = body {
            obj.extend(m);
        }
        serde_json::Value::Object(obj)
    };
    for item in &world.items {
        serde_json::to_writer(&mut out, &tagged("item", &item.id, item_json(item)))?;
        out.write_all(b"\n")?;
        rows += 1;
    }
    for user in &world.users {
        serde_json::to_writer(&mut out, &tagged("user", &user.id, user_json(user)))?;
        out.write_all(b"\n")?;
        rows += 1;
    }
    for event in events_iter(&cfg) {
        serde_json::to_writer(&mut out, &event_json(&event))?;
        out.write_all(b"\n")?;
        rows += 1;
        if rows.is_multiple_of(10_000) {
            bar.set_position(rows);
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    Ok(Summary { rows, written: rows, seconds, rows_per_second: rows as f64 / seconds.max(1e-9), ..Summary::default() })
}
