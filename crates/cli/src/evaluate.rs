//! `cascade evaluate`: retrieval models under the global temporal protocol.

use crate::project::Project;
use anyhow::{Context, Result, bail};
use cascade_engine::training::{self, Evaluation, ItemTokens, ModelKind, attribute_tokens};
use cascade_eval::Split;
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
    /// Comma-separated models: pop, itemknn, als, bpr, content [default: the project's, or all].
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
    /// One JSON object per model on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(config: Option<&Path>, args: &EvaluateArgs) -> Result<()> {
    let (split, weighted, tokens, default_models) = match (&args.train, &args.test) {
        (Some(train), Some(test)) => {
            let split = Split::load(train, test).with_context(|| format!("reading {}", train.display()))?;
            let tokens = args.movielens.as_deref().map(movielens_tokens).transpose()?;
            // The reference protocol: every interaction counts once.
            (split, false, tokens, Vec::new())
        }
        _ => {
            let project = Project::load(config)?;
            let data = crate::dataset::from_log(&project)?;
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
            (split, true, Some(data.tokens), project.config.train.models)
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
        let kind = ModelKind::parse(name)?;
        if kind == ModelKind::Content && tokens.is_none() {
            eprintln!("skipping content: it needs item attributes (pass --movielens DIR with split files)");
            continue;
        }
        if !args.json {
            eprintln!(
                "{name}: {} ...",
                if args.no_tune { "fitting" } else { "tuning on the validation slice, fitting" }
            );
        }
        let eval = training::evaluate(kind, &split, weighted, args.k, !args.no_tune, tokens.as_ref())?;
        if args.json {
            println!("{}", serde_json::to_string(&to_json(&eval, args.k))?);
        }
        results.push(eval);
    }
    if !args.json {
        print_table(&results, args.k);
    }
    Ok(())
}

/// The `--json` object of one model (keys named for K, e.g. `ndcg_at_10`).
pub fn to_json(e: &Evaluation, k: usize) -> serde_json::Value {
    let r = &e.report;
    json!({
        "model": e.kind.name(),
        "params": e.params,
        format!("ndcg_at_{k}"): r.ndcg,
        format!("recall_at_{k}"): r.recall,
        format!("hr_at_{k}"): r.hr,
        format!("mrr_at_{k}"): r.mrr,
        format!("map_at_{k}"): r.map,
        format!("coverage_at_{k}"): r.coverage,
        "novelty": r.novelty,
        "train_seconds": e.train_seconds,
        "score_seconds": e.score_seconds,
        "eval_users": r.eval_users,
        "validation": e.trials.iter().map(|t| json!({"params": t.params, format!("ndcg_at_{k}"): t.ndcg})).collect::<Vec<_>>(),
    })
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

/// Item attribute tokens from a MovieLens directory's item file.
fn movielens_tokens(dir: &Path) -> Result<ItemTokens> {
    let schema = cascade_core::Schema::from_config(&cascade_core::Config::default());
    let mut tokens = ItemTokens::new();
    for record in
        crate::import::read(&crate::import::Source::MovieLens(dir.to_path_buf()), &schema, cascade_core::Timestamp(0))?
    {
        match record {
            Ok(cascade_core::Record::Item(item)) => {
                tokens.insert(item.id.clone(), attribute_tokens(&item.attributes));
            }
            // Items come first; the rest of the file is not needed.
            Ok(_) => break,
            Err(e) => bail!("{e}"),
        }
    }
    Ok(tokens)
}
