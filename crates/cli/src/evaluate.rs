//! `cascade evaluate`: retrieval models under the global temporal protocol.

use crate::project::Project;
use anyhow::{Context, Result, bail};
use cascade_bundle::attribute_tokens;
use cascade_eval::{Report, Split};
use cascade_training::ranking::{self, CascadeEvaluation, Catalogue, RankingParams};
use cascade_training::retrieval::{self as training, Evaluation, ModelKind, report_metrics};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    cascade evaluate --train ml/train.tsv.gz --test ml/test.tsv.gz --models pop,als --json\n  \
    cascade evaluate --train ml/train.tsv.gz --test ml/test.tsv.gz --movielens ml-100k   # adds content\n  \
    cascade evaluate --config shop/cascade.toml --test-fraction 0.1")]
pub struct EvaluateArgs {
    /// Training rows: gzip'd (or plain) TSV `user item rating ts`, no header.
    #[arg(long, requires = "test")]
    train: Option<PathBuf>,
    /// Held-out rows, same format.
    #[arg(long, requires = "train")]
    test: Option<PathBuf>,
    /// Without --train/--test: hold out this share of the project's most recent interactions.
    #[arg(long, default_value_t = 0.1, conflicts_with = "cut")]
    test_fraction: f64,
    /// Without --train/--test: train on interactions before this time (RFC 3339), test on the rest.
    #[arg(long)]
    cut: Option<String>,
    /// Comma-separated models: pop, itemknn, als, bpr, content, and `cascade` (the retrievers'
    /// candidates → light ranker → GBDT LambdaMART → top K) [default: the project's, or all].
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// List length K.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Skip the grid search on the validation slice; use each model's base parameters.
    #[arg(long)]
    no_tune: bool,
    /// A MovieLens 100K/1M directory whose item attributes feed the content model.
    #[arg(long)]
    movielens: Option<PathBuf>,
    /// Cascade settings as JSON, laid over the defaults, e.g. `{"periods": 4, "light_keep": 150}`
    /// (keys: quotas, candidates, light_keep, recent, periods, grid, light, calibration, seed).
    #[arg(long, value_name = "JSON")]
    cascade_params: Option<String>,
    /// One JSON object per model on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    off_policy: crate::policy::PolicyArgs,
}

pub fn run(config: Option<&Path>, args: &EvaluateArgs) -> Result<()> {
    if args.off_policy.policy.is_some() {
        return crate::policy::run(config, &args.off_policy, args.json);
    }
    let (split, weighted, catalogue, default_models, unit_ms) = match (&args.train, &args.test) {
        (Some(train), Some(test)) => {
            let split = Split::load(train, test).with_context(|| format!("reading {}", train.display()))?;
            let catalogue = args.movielens.as_deref().map(movielens_catalogue).transpose()?;
            // The reference protocol: every interaction counts once; timestamps are in seconds.
            (split, false, catalogue, Vec::new(), 1000)
        }
        _ => {
            let project = Project::load(config)?;
            let data = project.training_data()?;
            if data.rows.is_empty() {
                bail!("no interactions in the event log (event types in [train] interactions)");
            }
            let split = match &args.cut {
                Some(cut) => {
                    let cut = cascade_core::Timestamp::parse_rfc3339(cut).map_err(|e| anyhow::anyhow!("--cut: {e}"))?;
                    let (train, test) = data.rows.into_iter().partition(|r| r.ts < cut.millis());
                    Split::from_rows(train, test)
                }
                None => Split::temporal(data.rows, args.test_fraction)?,
            };
            let catalogue = Catalogue { tokens: data.tokens, released_at: data.released_at };
            (split, true, Some(catalogue), project.train()?.models, 1)
        }
    };
    let names: Vec<String> = if !args.models.is_empty() {
        args.models.clone()
    } else if !default_models.is_empty() {
        default_models
    } else {
        ModelKind::ALL.iter().map(|m| m.name().to_string()).collect()
    };
    if !args.json {
        eprintln!(
            "{} train rows, {} test rows, {} users, {} catalogue items, {} evaluation users",
            split.train_rows().len(),
            split.test_rows().len(),
            split.n_users(),
            split.n_items(),
            split.eval_users().len()
        );
    }
    let mut results = Vec::new();
    for name in &names {
        if name == "cascade" {
            let catalogue = catalogue.clone().unwrap_or_default();
            let params = cascade_params(args.cascade_params.as_deref(), args.k)?;
            let quiet = args.json;
            let progress = |msg: &str| {
                if !quiet {
                    eprintln!("cascade: {msg} ...");
                }
            };
            let retrieval = ranking::retrieval_params(&split, &catalogue, &params, !args.no_tune, &progress)?;
            let eval = ranking::evaluate(&split, &catalogue, &params, &retrieval, unit_ms, &progress)?;
            if args.json {
                println!("{}", serde_json::to_string(&cascade_json(&eval, args.k))?);
            } else {
                print_cascade(&eval, args.k);
            }
            continue;
        }
        let kind = ModelKind::parse(name)?;
        if kind == ModelKind::Content && catalogue.is_none() {
            eprintln!("skipping content: it needs item attributes (pass --movielens DIR with split files)");
            continue;
        }
        if !args.json {
            eprintln!(
                "{name}: {} ...",
                if args.no_tune { "fitting" } else { "tuning on the validation slice, fitting" }
            );
        }
        let tokens = catalogue.as_ref().map(|c| &c.tokens);
        let eval = training::evaluate(kind, &split, weighted, args.k, !args.no_tune, tokens)?;
        if args.json {
            println!("{}", serde_json::to_string(&eval.to_json(args.k))?);
        }
        results.push(eval);
    }
    if !args.json {
        print_table(&results, args.k);
    }
    Ok(())
}

/// `object` with a report's metrics added, under the names `--json` and bundle manifests use
/// (named for K, e.g. `ndcg_at_10`).
fn with_metrics(mut object: serde_json::Value, r: &Report, k: usize) -> serde_json::Value {
    if let Some(map) = object.as_object_mut() {
        map.extend(report_metrics(r, k).into_iter().map(|(name, value)| (name, json!(value))));
    }
    object
}

pub fn print_table(results: &[Evaluation], k: usize) {
    println!(
        "{:<9} {:>8} {:>9} {:>7} {:>7} {:>9} {:>8} {:>8}  params",
        "model",
        format!("NDCG@{k}"),
        format!("Recall@{k}"),
        format!("HR@{k}"),
        format!("MRR@{k}"),
        format!("Cover@{k}"),
        "train s",
        "score s"
    );
    for e in results {
        let r = &e.report;
        println!(
            "{:<9} {:>8.4} {:>9.4} {:>7.4} {:>7.4} {:>9.4} {:>8.3} {:>8.3}  {}",
            e.kind.name(),
            r.ndcg,
            r.recall,
            r.hr,
            r.mrr,
            r.coverage,
            e.train_seconds,
            e.score_seconds,
            e.params
        );
    }
}

/// Item attribute tokens and release dates from a MovieLens directory's item file.
fn movielens_catalogue(dir: &Path) -> Result<Catalogue> {
    let schema = cascade_core::Schema::from_config(&cascade_core::Config::default());
    let mut catalogue = Catalogue::default();
    for record in
        crate::import::read(&crate::import::Source::MovieLens(dir.to_path_buf()), &schema, cascade_core::Timestamp(0))?
    {
        match record {
            Ok(cascade_core::Record::Item(item)) => {
                if let Some((_, cascade_core::Value::Timestamp(t))) =
                    item.attributes.iter().find(|(n, _)| n == "released_at")
                {
                    catalogue.released_at.insert(item.id.clone(), t.millis());
                }
                catalogue.tokens.insert(item.id.clone(), attribute_tokens(&item.attributes));
            }
            // Items come first; the rest of the file is not needed.
            Ok(_) => break,
            Err(e) => bail!("{e}"),
        }
    }
    Ok(catalogue)
}

/// The cascade's settings: the defaults, with `--cascade-params` laid over them.
fn cascade_params(json: Option<&str>, k: usize) -> Result<RankingParams> {
    let mut params = match json {
        Some(text) => {
            let over: serde_json::Value = serde_json::from_str(text).context("--cascade-params is not JSON")?;
            let base = serde_json::to_value(RankingParams::default())?;
            serde_json::from_value(training::merge(&base, &over)).context("--cascade-params")?
        }
        None => RankingParams::default(),
    };
    params.k = k;
    Ok(params)
}

/// The `--json` object of the cascade: the retrieval models' keys, plus the stages.
pub fn cascade_json(e: &CascadeEvaluation, k: usize) -> serde_json::Value {
    let r = &e.report;
    with_metrics(
        json!({
            "model": "cascade",
            "params": e.rankers.report["heavy"]["params"],
            "train_seconds": e.train_seconds,
            "score_seconds": e.score_seconds,
            "eval_users": r.eval_users,
            "ece": e.ece,
            "candidate_recall": e.candidate_recall,
            "best_retrieval": {"model": e.retrieval.0, format!("ndcg_at_{k}"): e.retrieval.1},
            "retrieval_params": e.retrieval_params.iter().map(|(k, v)| (k.name().to_string(), v.clone())).collect::<serde_json::Map<_, _>>(),
            "rankers": e.rankers.report,
        }),
        r,
        k,
    )
}

fn print_cascade(e: &CascadeEvaluation, k: usize) {
    let r = &e.report;
    println!(
        "cascade  NDCG@{k} {:.4}  Recall@{k} {:.4}  HR@{k} {:.4}  MRR@{k} {:.4}  Cover@{k} {:.4}  ({} users)",
        r.ndcg, r.recall, r.hr, r.mrr, r.coverage, r.eval_users
    );
    println!("  best retriever alone: {} NDCG@{k} {:.4}", e.retrieval.0, e.retrieval.1);
    println!(
        "  candidate recall {:.4}; ECE of calibrated scores {}",
        e.candidate_recall,
        e.ece.map_or("-".into(), |x| format!("{x:.4}"))
    );
    println!(
        "  trained in {:.1} s, ranked in {:.3} s; heavy ranker {}",
        e.train_seconds, e.score_seconds, e.rankers.report["heavy"]["params"]
    );
}
