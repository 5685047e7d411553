//! `cascade candidates`: the first stage of a recommendation, from a trained bundle, explained.

use crate::project::Project;
use anyhow::{Context, Result};
use cascade_bundle::{LoadedBundle, Request};
use cascade_core::Record;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct CandidatesArgs {
    /// The user to generate candidates for (its history is read from the event log).
    #[arg(long)]
    user: String,
    /// Most candidates in total.
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// Quota of each source.
    #[arg(long, default_value_t = 50)]
    per_source: usize,
    /// Bundle version [default: the latest].
    #[arg(long)]
    bundle: Option<u64>,
    #[arg(long)]
    json: bool,
}

pub fn run(project: &Project, args: &CandidatesArgs) -> Result<()> {
    let registry = crate::train::registry(project)?;
    let bundle = match args.bundle {
        Some(v) => registry.get(v)?,
        None => registry.latest()?.context("no model bundle yet: run `cascade train`")?,
    };
    let loaded = LoadedBundle::load(&bundle)?;
    let history = user_history(project, &args.user, &loaded)?;
    let generator = loaded.generator(args.per_source);
    let user = loaded.users.get(&args.user);
    let request = Request::new(user, &history, &[]);
    let candidates = generator.generate(&request, args.n);
    if args.json {
        let out: Vec<_> = candidates
            .iter()
            .map(|c| {
                json!({
                    "item": loaded.items.id(c.item),
                    "source": generator.source_name(c.source),
                    "hits": c.hits.iter().map(|h| json!({
                        "source": generator.source_name(h.source), "rank": h.rank, "score": h.score,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"user": args.user, "bundle": loaded.version,
            "cold": generator.is_cold(&request), "history": history.len(), "candidates": out}))?
        );
        return Ok(());
    }
    println!(
        "user {} ({} interactions, {}), bundle v{}: {} candidates",
        args.user,
        history.len(),
        if generator.is_cold(&request) { "cold start" } else { "warm" },
        loaded.version,
        candidates.len()
    );
    for (pos, c) in candidates.iter().enumerate() {
        let hits: Vec<String> = c
            .hits
            .iter()
            .map(|h| format!("{}#{} ({:.3})", generator.source_name(h.source), h.rank + 1, h.score))
            .collect();
        println!("{:>4}  {:<12} {}", pos + 1, loaded.items.id(c.item), hits.join("  "));
    }
    Ok(())
}

/// The user's interactions in the log, as bundle item indices, oldest first (items the bundle
/// does not know are skipped).
fn user_history(project: &Project, user: &str, bundle: &LoadedBundle) -> Result<Vec<u32>> {
    let store = crate::open_store_read_only(project)?;
    let weights = &project.config.interactions()?;
    let mut history = Vec::new();
    for entry in store.read_from(store.log_stats()?.first_offset) {
        let (_, record) = entry?;
        let Record::Event(e) = record else { continue };
        if e.user.as_deref() == Some(user)
            && weights.contains_key(&e.event_type)
            && let Some(item) = e.item.as_deref().and_then(|i| bundle.items.get(i))
        {
            history.push(item);
        }
    }
    store.close()?;
    if history.is_empty() && bundle.users.get(user).is_none() {
        eprintln!("user `{user}` has no interactions: serving cold-start candidates");
    }
    // Keep each item once, at its most recent position: sources read the order as recency.
    let mut seen = std::collections::HashSet::new();
    let mut recent_last: Vec<u32> = history.into_iter().rev().filter(|i| seen.insert(*i)).collect();
    recent_last.reverse();
    Ok(recent_last)
}
