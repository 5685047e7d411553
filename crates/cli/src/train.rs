//! `cascade train` and `cascade models`: fit the project's retrieval models into a bundle.

use crate::evaluate::report_metrics;
use crate::project::Project;
use anyhow::{Result, bail};
use cascade_core::config::FeatureScale;
use cascade_engine::ranking::{self, Catalogue, Rankers, RankingParams};
use cascade_engine::training::{self, ItemTokens, ModelKind, matrix};
use cascade_eval::Split;
use cascade_models::{Persist as _, Popularity};
use cascade_registry::{Manifest, ManifestDraft, ModelEntry, Registry, Trial};
use serde_json::json;

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
            draft.metrics.entry(name.clone()).or_default().extend(report_metrics(&eval.report, args.k));
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
        let mut artifacts = vec![artifact];
        if let cascade_models::AnyModel::Als(als) = &model {
            // ALS candidates are served by nearest-neighbour search over the item factors.
            let started = std::time::Instant::now();
            let params = cascade_ann::Params::new(cascade_ann::Metric::InnerProduct);
            let index = cascade_ann::Hnsw::build(als.item_factors(), als.factors(), &params)?;
            let tmp = tempfile::NamedTempFile::new()?;
            index.save(tmp.path())?;
            bundle.add_artifact(cascade_engine::bundle::ALS_INDEX, &std::fs::read(tmp.path())?)?;
            artifacts.push(cascade_engine::bundle::ALS_INDEX.to_string());
            if !args.json {
                eprintln!("als: HNSW index over {} items in {:.2}s", index.len(), started.elapsed().as_secs_f64());
            }
        }
        draft.models.push(ModelEntry { name: name.clone(), kind: name.clone(), params, artifacts });
    }
    if train.models.iter().any(|m| m == "pop") {
        let (entry, bytes) = trending(&full, &data.tokens)?;
        bundle.add_artifact(&entry.artifacts[0], &bytes)?;
        draft.models.push(entry);
    }
    if train.rankers {
        if measurable {
            // The retrievers are useful without rankers: a ranker that cannot be trained (say, no
            // evaluation user has a held-out item among its candidates) is reported, not fatal.
            if let Err(e) = rankers(
                &mut bundle,
                &mut draft,
                &holdout,
                &full,
                &data.tokens,
                &data.released_at,
                &evaluations,
                &project.config.train,
                args,
            ) {
                eprintln!("warning: the rankers are not trained: {e:#}");
            }
        } else if !args.json {
            eprintln!("too little data for a held-out period: the rankers are not trained");
        }
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

/// Trains the cascade's rankers on candidates from the configured retrievers (with the
/// parameters their tuning chose): once on the periods before the held-out one, to measure the
/// whole cascade there, then on the latest periods for the bundle.
#[allow(clippy::too_many_arguments)]
fn rankers(
    bundle: &mut cascade_registry::BundleWriter,
    draft: &mut ManifestDraft,
    holdout: &Split,
    full: &Split,
    tokens: &ItemTokens,
    released_at: &std::collections::HashMap<String, i64>,
    evaluations: &[training::Evaluation],
    train: &cascade_core::config::TrainConfig,
    args: &TrainArgs,
) -> Result<()> {
    let models = &evaluations.iter().map(|e| e.kind.name()).collect::<Vec<_>>();
    let defaults = RankingParams::default();
    let quotas = defaults
        .quotas
        .iter()
        .filter(|(name, _)| models.contains(&name.as_str()) || (name.as_str() == "trending" && models.contains(&"pop")))
        .map(|(n, q)| (n.clone(), *q))
        .collect();
    let scale = train.ranker_features;
    let params = RankingParams {
        quotas,
        k: args.k,
        max_users: train.ranker_users,
        relative: scale != FeatureScale::Absolute,
        absolute: scale != FeatureScale::Relative,
        ..defaults
    };
    let catalogue = Catalogue { tokens: tokens.clone(), released_at: released_at.clone() };
    let retrieval = evaluations.iter().map(|e| (e.kind, e.params.clone())).collect();
    let quiet = args.json;
    let progress = |msg: &str| {
        if !quiet {
            eprintln!("rankers: {msg} ...");
        }
    };
    // Log timestamps are milliseconds.
    let eval = ranking::evaluate(holdout, &catalogue, &params, &retrieval, 1, &progress)?;
    let rankers = ranking::train(full, &catalogue, &params, &retrieval, 1, &progress)?;
    // Nothing goes into the bundle until both trainings succeeded.
    let dir = tempfile::tempdir()?;
    rankers.save(dir.path())?;
    let metrics = draft.metrics.entry("cascade".into()).or_default();
    let r = &eval.report;
    metrics.extend(report_metrics(r, args.k));
    metrics.insert("candidate_recall".into(), eval.candidate_recall);
    if let Some(ece) = eval.ece {
        metrics.insert("ece".into(), ece);
    }
    if !quiet {
        println!(
            "cascade on the held-out latest interactions: NDCG@{k} {:.4} (best retriever alone: {} {:.4}), ECE {}",
            r.ndcg,
            eval.retrieval.0,
            eval.retrieval.1,
            eval.ece.map_or("-".into(), |e| format!("{e:.4}")),
            k = args.k
        );
    }

    for name in Rankers::ARTIFACTS {
        bundle.add_artifact(name, &std::fs::read(dir.path().join(name))?)?;
    }
    draft.models.push(ModelEntry {
        name: "light".into(),
        kind: "logistic".into(),
        params: serde_json::to_value(&params.light)?,
        artifacts: vec!["light.rank".into()],
    });
    draft.models.push(ModelEntry {
        name: "heavy".into(),
        kind: "gbdt_lambdarank".into(),
        params: json!({
            "gbdt": rankers.report["heavy"]["params"],
            "candidates": params.candidates,
            "quotas": params.quotas,
            "light_keep": params.light_keep,
            "periods": params.periods,
            "calibration": params.calibration,
            "features": rankers.feature_names,
            "feature_views": rankers.report["feature_views"],
        }),
        artifacts: vec!["heavy.rank".into(), "calibrator.rank".into(), "ranking.json".into()],
    });
    Ok(())
}

/// Days over which an interaction's weight halves in the `trending` model.
const TRENDING_HALF_LIFE_DAYS: f64 = 7.0;

/// Popularity decayed in event time (half-life [`TRENDING_HALF_LIFE_DAYS`], measured back from
/// the newest interaction), with per-genre rankings from the items' `genres` attribute.
fn trending(full: &Split, tokens: &ItemTokens) -> Result<(ModelEntry, Vec<u8>)> {
    let train = full.train();
    let rows: Vec<(u32, u32, i64)> = full
        .train_rows()
        .iter()
        .filter_map(|r| Some((train.users.get(&r.user)?, train.items.get(&r.item)?, r.ts)))
        .collect();
    let now = rows.iter().map(|r| r.2).max().unwrap_or(0);
    // Log timestamps are milliseconds.
    let half_life = TRENDING_HALF_LIFE_DAYS * 86_400_000.0;
    let mut genres = cascade_core::IdMap::new();
    let segments: Vec<Vec<u32>> = train
        .items
        .ids()
        .iter()
        .map(|id| {
            let item_tokens = tokens.get(id).map_or(&[][..], Vec::as_slice);
            item_tokens.iter().filter_map(|(t, _)| t.strip_prefix("genres:")).map(|g| genres.get_or_insert(g)).collect()
        })
        .collect();
    let model = Popularity::fit_decayed_rows(train.items.len(), &rows, now, half_life)?.with_segments(&segments)?;
    let mut bytes = Vec::new();
    model.save(&mut bytes)?;
    let entry = ModelEntry {
        name: "trending".into(),
        kind: "popularity_decayed".into(),
        params: serde_json::json!({"half_life_days": TRENDING_HALF_LIFE_DAYS, "segments": genres.ids()}),
        artifacts: vec!["trending.model".into()],
    };
    Ok((entry, bytes))
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
