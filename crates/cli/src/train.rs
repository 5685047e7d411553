//! `cascade train` and `cascade models`: fit the project's retrieval models into a bundle.

use crate::project::Project;
use anyhow::{Result, bail};
use cascade_engine::training::{self, ModelKind, matrix};
use cascade_eval::Split;
use cascade_registry::{Manifest, ManifestDraft, ModelEntry, Registry, Trial};

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

/// Trains every configured model and commits a bundle. Offline metrics are measured on the
/// most recent `validation_fraction` of interactions (models fitted on the rest); the bundled
/// models are then refit on all interactions.
pub fn run(project: &Project, args: &TrainArgs) -> Result<Manifest> {
    let data = crate::dataset::from_log(project)?;
    if data.rows.is_empty() {
        bail!("no interactions in the event log: import or generate data first (event types in [train] interactions)");
    }
    let train = &project.config.train;
    let holdout = Split::temporal(data.rows.clone(), train.validation_fraction)?;
    let full = Split::temporal(data.rows, 0.0)?;
    let full_matrix = matrix(&full, true);
    let registry = registry(project)?;
    let mut bundle = registry.begin()?;
    let mut draft = ManifestDraft {
        data: data.info,
        config_hash: cascade_registry::sha256_hex(toml::to_string(&project.config)?.as_bytes()),
        ..ManifestDraft::default()
    };
    let measurable = !holdout.eval_users().is_empty();
    if !args.json {
        eprintln!(
            "{} interactions, {} users, {} items; holding out the latest {:.0}% ({} evaluation users)",
            full.train_rows().len(),
            full.n_users(),
            full.n_items(),
            train.validation_fraction * 100.0,
            holdout.eval_users().len()
        );
    }
    let mut evaluations = Vec::new();
    for name in &train.models {
        let kind = ModelKind::parse(name)?;
        if !args.json {
            eprintln!("{name} ...");
        }
        let params = if measurable {
            let eval = training::evaluate(kind, &holdout, true, args.k, !args.no_tune, Some(&data.tokens))?;
            let metrics = draft.metrics.entry(name.clone()).or_default();
            for (metric, value) in [
                ("ndcg", eval.report.ndcg),
                ("recall", eval.report.recall),
                ("hr", eval.report.hr),
                ("mrr", eval.report.mrr),
                ("map", eval.report.map),
                ("coverage", eval.report.coverage),
            ] {
                metrics.insert(format!("{metric}_at_{}", args.k), value);
            }
            metrics.insert("novelty".into(), eval.report.novelty);
            draft.search.extend(eval.trials.iter().map(|t| Trial {
                model: name.clone(),
                params: t.params.clone(),
                metric: format!("ndcg_at_{} (validation)", args.k),
                value: t.ndcg,
                chosen: t.params == eval.params,
            }));
            let params = eval.params.clone();
            evaluations.push(eval);
            params
        } else {
            kind.base_params()
        };
        let model = training::fit(kind, &params, &full, &full_matrix, Some(&data.tokens))?;
        let mut bytes = Vec::new();
        model.save(&mut bytes)?;
        let artifact = format!("{name}.model");
        bundle.add_artifact(&artifact, &bytes)?;
        draft.models.push(ModelEntry { name: name.clone(), kind: name.clone(), params, artifacts: vec![artifact] });
    }
    // Index → id maps of the bundled models' rows and columns.
    bundle.add_artifact("users.json", &serde_json::to_vec(full.train().users.ids())?)?;
    bundle.add_artifact("items.json", &serde_json::to_vec(full.train().items.ids())?)?;
    let manifest = bundle.commit(draft)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        if measurable {
            println!("offline metrics on the held-out latest interactions:");
            crate::evaluate::print_table(&evaluations, args.k);
        } else {
            println!("too little data for a held-out evaluation; models fitted with base parameters");
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
