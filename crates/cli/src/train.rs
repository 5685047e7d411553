//! `cascade train` and `cascade models`: fit the project's retrieval models into a bundle.

use crate::project::Project;
use anyhow::Result;
use cascade_registry::{Manifest, Registry};
use cascade_training::{TrainOptions, train_bundle};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Skip the grid search; fit each model with its base parameters.
    #[arg(long)]
    pub no_tune: bool,
    /// List length K of the offline metrics and of the tuning objective (NDCG@K).
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Print the bundle manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// List the model bundles, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one bundle's manifest: data, parameters, search, offline metrics.
    Show { version: u64 },
}

pub fn registry(project: &Project) -> Result<Registry> {
    Ok(Registry::open(project.data_dir().join("registry"))?)
}

/// Trains every configured model and commits a bundle (see `cascade_training::train_bundle`),
/// printing progress and the offline metrics.
pub fn run(project: &Project, args: &TrainArgs) -> Result<Manifest> {
    let data = project.training_data()?;
    let registry = registry(project)?;
    // The resolved document (every section typed, defaults written), so equal configurations
    // hash alike however they were written.
    let resolved = crate::project::Resolved::of(&project.config)?;
    let config_hash = cascade_registry::sha256_hex(toml::to_string(&resolved)?.as_bytes());
    let options = TrainOptions { tune: !args.no_tune, k: args.k };
    let quiet = args.json;
    let progress = |msg: &str| {
        if !quiet {
            eprintln!("{msg}");
        }
    };
    let trained = train_bundle(&registry, &project.train()?, config_hash, data, options, &progress)?;
    if let Some(why) = &trained.rankers_skipped {
        eprintln!("warning: the rankers are not trained: {why}");
    }
    let manifest = trained.manifest;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        if trained.evaluations.is_empty() {
            println!("too little data for a held-out evaluation; models fitted with base parameters");
        } else {
            println!("offline metrics on the held-out latest interactions:");
            crate::evaluate::print_table(&trained.evaluations, args.k);
        }
        if let Some(c) = &trained.cascade {
            println!(
                "cascade on the held-out latest interactions: NDCG@{k} {:.4} (best retriever alone: {} {:.4}), ECE {}",
                c.ndcg,
                c.best_retriever.0,
                c.best_retriever.1,
                c.ece.map_or("-".into(), |e| format!("{e:.4}")),
                k = args.k
            );
        }
        println!("bundle v{} written to {}", manifest.version, registry.root().join("bundles").display());
    }
    Ok(manifest)
}

pub fn models(project: &Project, cmd: &ModelsCommand) -> Result<()> {
    let registry = registry(project)?;
    match cmd {
        ModelsCommand::List { json } => {
            let list = registry.list()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            if list.is_empty() {
                println!("no model bundles yet: run `cascade train`");
            }
            for m in list {
                let best = m
                    .draft
                    .metrics
                    .iter()
                    .filter_map(|(model, ms)| ms.get("ndcg_at_10").map(|v| (model, v)))
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(String::new(), |(model, v)| format!("best NDCG@10 {v:.4} ({model})"));
                let models: Vec<&str> = m.draft.models.iter().map(|e| e.name.as_str()).collect();
                println!(
                    "v{:<4} {}  {} rows  [{}]  {best}",
                    m.version,
                    m.created_at,
                    m.draft.data.rows,
                    models.join(", ")
                );
            }
        }
        ModelsCommand::Show { version } => {
            println!("{}", serde_json::to_string_pretty(&registry.get(*version)?.manifest)?);
        }
    }
    Ok(())
}
