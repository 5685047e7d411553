//! `cascade train` and `cascade models`: fit the project's retrieval models into a bundle.

use crate::project::Project;
use anyhow::Result;
use cascade_registry::{Actor, CHAMPION, Manifest, RECOMMENDER, Registry};
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
    /// List the model bundles, oldest first, with the aliases pointing at each.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one bundle's manifest (a version, or an alias such as `champion`): data,
    /// parameters, search, offline metrics, the promotion gate's verdict.
    Show {
        /// A version number or an alias.
        bundle: String,
        #[command(flatten)]
        family: FamilyArg,
    },
    /// Aliases: named pointers (champion, challenger, ...) from a model family to a version.
    /// Serving answers with `champion`; rollouts send their share to `challenger`.
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Move an alias (champion by default) back to the version it held before, one step along
    /// its history. A running server serves it within a second.
    Rollback {
        #[arg(long, default_value = CHAMPION)]
        alias: String,
        #[command(flatten)]
        family: FamilyArg,
        /// Why (kept in the alias history and the audit log).
        #[arg(long)]
        why: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct FamilyArg {
    /// The model family (`recommender`: what `cascade train` writes).
    #[arg(long, default_value = RECOMMENDER)]
    pub family: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum AliasCommand {
    /// Point an alias at a bundle version (names: letters, digits, '_', '-'; `latest` and
    /// `v<digits>` are reserved). Every move is kept in the alias history and the audit log.
    Set {
        /// The alias, e.g. `champion`, `challenger`, `staging`.
        alias: String,
        /// The bundle version it points to from now on (`cascade models list`).
        version: u64,
        #[command(flatten)]
        family: FamilyArg,
        /// Why (kept in the alias history and the audit log).
        #[arg(long)]
        why: Option<String>,
    },
    /// Remove an alias (its history stays).
    Delete {
        /// The alias to remove.
        alias: String,
        #[command(flatten)]
        family: FamilyArg,
        #[arg(long)]
        why: Option<String>,
    },
    /// The family's aliases and the versions they point to.
    List {
        #[command(flatten)]
        family: FamilyArg,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every move of the family's aliases (or of one), oldest first: who, when, from, to, why.
    History {
        /// Only this alias's moves (default: every alias of the family).
        alias: Option<String>,
        #[command(flatten)]
        family: FamilyArg,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The project's registry, writing alias moves to its audit log.
pub fn registry(project: &Project) -> Result<Registry> {
    Ok(Registry::open(project.data_dir().join("registry"))?.with_audit(project.audit()))
}

/// Trains every configured model and commits a bundle (see `cascade_training::train_bundle`),
/// printing progress and the offline metrics.
pub fn run(project: &Project, args: &TrainArgs) -> Result<Manifest> {
    let data = project.training_data()?;
    let registry = registry(project)?;
    let config_hash = project.config_hash.clone();
    let options = TrainOptions { tune: !args.no_tune, k: args.k, who: project.who() };
    let quiet = args.json;
    let progress = |msg: &str| {
        if !quiet {
            eprintln!("{msg}");
        }
    };
    let trained = train_bundle(&registry, &project.train()?, config_hash, data, &options, &progress)?;
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
        if let Some(gate) = &manifest.draft.gate {
            match &gate.promoted_to {
                Some(alias) => {
                    println!("promotion gate passed ({}): v{} is now {alias}", gate.reason, manifest.version)
                }
                None if gate.passed => println!(
                    "promotion gate passed ({}); train.promote = \"manual\": `cascade models alias set champion {}` to serve it",
                    gate.reason, manifest.version
                ),
                None => println!("promotion gate held v{}: {}", manifest.version, gate.reason),
            }
        }
    }
    Ok(manifest)
}

pub fn models(project: &Project, cmd: &ModelsCommand) -> Result<()> {
    let registry = registry(project)?;
    let actor = |why: &Option<String>| Actor::new(project.who(), why.clone());
    match cmd {
        ModelsCommand::List { json } => {
            let list = registry.list()?;
            let aliases = registry.aliases(RECOMMENDER)?;
            if *json {
                let out: Vec<serde_json::Value> = list
                    .iter()
                    .map(|m| {
                        let mut v = serde_json::to_value(m).expect("manifests serialise");
                        v["aliases"] = names_of(&aliases, m.version).into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            if list.is_empty() {
                println!("no model bundles yet: run `cascade train`");
            }
            for m in list {
                let served = cascade_registry::served_metric(&m.draft.metrics, "ndcg_at_10")
                    .map_or(String::new(), |(model, v)| format!("NDCG@10 {v:.4} ({model})"));
                let models: Vec<&str> = m.draft.models.iter().map(|e| e.name.as_str()).collect();
                let names = names_of(&aliases, m.version);
                let names = if names.is_empty() { String::new() } else { format!("@{}  ", names.join(" @")) };
                println!(
                    "v{:<4} {names}{}  {} rows  [{}]  {served}",
                    m.version,
                    m.created_at,
                    m.draft.data.rows,
                    models.join(", ")
                );
            }
        }
        ModelsCommand::Show { bundle, family } => {
            let version = match bundle.parse::<u64>() {
                Ok(v) => v,
                Err(_) => registry.resolve(&family.family, bundle)?.manifest.version,
            };
            println!("{}", serde_json::to_string_pretty(&registry.get(version)?.manifest)?);
        }
        ModelsCommand::Rollback { alias, family, why } => {
            let m = registry.rollback_alias(&family.family, alias, &actor(why))?;
            println!("{}@{alias}: v{} → v{}", family.family, show(m.from), show(m.to));
        }
        ModelsCommand::Alias(AliasCommand::Set { alias, version, family, why }) => {
            let m = registry.set_alias(&family.family, alias, *version, &actor(why))?;
            println!("{}@{alias}: {} → v{version}", family.family, m.from.map_or("-".into(), |v| format!("v{v}")));
        }
        ModelsCommand::Alias(AliasCommand::Delete { alias, family, why }) => {
            let m = registry.delete_alias(&family.family, alias, &actor(why))?;
            println!("{}@{alias}: deleted (was v{})", family.family, show(m.from));
        }
        ModelsCommand::Alias(AliasCommand::List { family, json }) => {
            let aliases = registry.aliases(&family.family)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&aliases)?);
            } else if aliases.is_empty() {
                println!("`{}` has no aliases yet: `cascade train` makes its first bundle champion", family.family);
            } else {
                for (alias, version) in aliases {
                    println!("{alias:<24} v{version}");
                }
            }
        }
        ModelsCommand::Alias(AliasCommand::History { alias, family, json }) => {
            let history = registry.alias_history(&family.family, alias.as_deref())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&history)?);
                return Ok(());
            }
            for m in history {
                let from = m.from.map_or("-".into(), |v| format!("v{v}"));
                let to = m.to.map_or("-".into(), |v| format!("v{v}"));
                let kind = serde_json::to_value(m.kind)?;
                println!(
                    "{}  {:<12} {:<9} {from:>5} → {to:<5} {:<20} {}",
                    m.at,
                    m.alias,
                    kind.as_str().unwrap_or_default(),
                    m.who,
                    m.why.unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

fn show(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn names_of(aliases: &std::collections::BTreeMap<String, u64>, version: u64) -> Vec<String> {
    aliases.iter().filter(|(_, v)| **v == version).map(|(a, _)| a.clone()).collect()
}
