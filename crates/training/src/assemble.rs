//! `cascade train`'s bundle: every configured retriever tuned, measured on the held-out latest
//! interactions and refit on all of them, the ANN index over the ALS factors, the trending
//! model, the rankers, and the id maps — committed to the registry as one immutable version.

use crate::config::{FeatureScale, TrainConfig};
use crate::dataset::LogData;
use crate::error::{Error, Result};
use crate::lock::TrainLock;
use crate::ranking::{self, Catalogue, RankingParams};
use crate::retrieval::{self, Evaluation, ModelKind, matrix, report_metrics};
use cascade_bundle::{ItemTokens, SourceKind, artifacts};
use cascade_eval::Split;
use cascade_models::{AnyModel, Persist as _, Popularity};
use cascade_registry::{
    Actor, BundleWriter, CHAMPION, GatePolicy, Manifest, ManifestDraft, ModelEntry, RECOMMENDER, Registry, Trial, judge,
};
use serde_json::json;

/// How `cascade train` trains.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Grid-search each retriever on the validation slice (else its base parameters).
    pub tune: bool,
    /// List length K of the offline metrics and of the tuning objective (NDCG@K).
    pub k: usize,
    /// Who trains, for the alias history and the audit log (`cli:USER`, `key:NAME`).
    pub who: String,
}

/// The whole cascade measured on the held-out latest interactions.
#[derive(Debug, Clone)]
pub struct CascadeSummary {
    pub ndcg: f64,
    /// The best retriever alone on the same users, and its name.
    pub best_retriever: (String, f64),
    pub ece: Option<f64>,
}

/// What a training run produced.
#[derive(Debug)]
pub struct Trained {
    pub manifest: Manifest,
    /// Each retriever on the held-out latest interactions (empty when there was too little data).
    pub evaluations: Vec<Evaluation>,
    /// The cascade on the same interactions, when the rankers were trained.
    pub cascade: Option<CascadeSummary>,
    /// Why the bundle has no rankers, when it has none though they were asked for.
    pub rankers_skipped: Option<String>,
}

/// Trains every model of `config` on `data` and commits a bundle to `registry`. Offline metrics
/// are measured on the most recent `validation_fraction` of interactions (models fitted on the
/// rest); the bundled models are then refit on all interactions. `config_hash` identifies the
/// project configuration in the manifest; `progress` hears what is being done.
///
/// The whole run holds the registry's [`TrainLock`]: while another trainer holds it, this fails
/// at once with [`Error::TrainingRunning`].
pub fn train_bundle(
    registry: &Registry,
    config: &TrainConfig,
    config_hash: String,
    data: LogData,
    options: &TrainOptions,
    progress: &dyn Fn(&str),
) -> Result<Trained> {
    let _lock = TrainLock::acquire(registry.root())?;
    if data.rows.is_empty() {
        return Err(Error::NoData(
            "no interactions in the event log: import or generate data first (event types in [train] interactions)"
                .into(),
        ));
    }
    let holdout = Split::temporal(data.rows.clone(), config.validation_fraction)?;
    let full = Split::temporal(data.rows, 0.0)?;
    let full_matrix = matrix(&full, true);
    let mut bundle = registry.begin()?;
    let mut draft = ManifestDraft { data: data.info, config_hash, ..ManifestDraft::default() };
    let measurable = !holdout.eval_users().is_empty();
    progress(&format!(
        "{} interactions, {} users, {} items; holding out the latest {:.0}% ({} evaluation users)",
        full.train_rows().len(),
        full.n_users(),
        full.n_items(),
        config.validation_fraction * 100.0,
        holdout.eval_users().len()
    ));
    let mut evaluations = Vec::new();
    for name in &config.models {
        let kind = ModelKind::parse(name)?;
        progress(&format!("{name} ..."));
        let params = if measurable {
            let eval = retrieval::evaluate(kind, &holdout, true, options.k, options.tune, Some(&data.tokens))?;
            draft.metrics.entry(name.clone()).or_default().extend(report_metrics(&eval.report, options.k));
            draft.search.extend(eval.trials.iter().map(|t| Trial {
                model: name.clone(),
                params: t.params.clone(),
                metric: format!("ndcg_at_{} (validation)", options.k),
                value: t.ndcg,
                chosen: t.params == eval.params,
            }));
            let params = eval.params.clone();
            evaluations.push(eval);
            params
        } else {
            kind.base_params()
        };
        let model = retrieval::fit(kind, &params, &full, &full_matrix, Some(&data.tokens))?;
        let mut bytes = Vec::new();
        model.save(&mut bytes)?;
        let artifact = artifacts::model(name);
        bundle.add_artifact(&artifact, &bytes)?;
        let mut names = vec![artifact];
        if let AnyModel::Als(als) = &model {
            // ALS candidates are served by nearest-neighbour search over the item factors.
            let started = std::time::Instant::now();
            let params = cascade_ann::Params::new(cascade_ann::Metric::InnerProduct);
            let index = cascade_ann::Hnsw::build(als.item_factors(), als.factors(), &params)?;
            let tmp = tempfile::NamedTempFile::new().map_err(|e| io("a temporary file", &e))?;
            index.save(tmp.path())?;
            let bytes = std::fs::read(tmp.path()).map_err(|e| io("the ANN index", &e))?;
            bundle.add_artifact(artifacts::ALS_INDEX, &bytes)?;
            names.push(artifacts::ALS_INDEX.to_string());
            progress(&format!("als: HNSW index over {} items in {:.2}s", index.len(), started.elapsed().as_secs_f64()));
        }
        draft.models.push(ModelEntry { name: name.clone(), kind: name.clone(), params, artifacts: names });
    }
    // Trending is decayed popularity: trained whenever popularity is.
    if config.models.iter().any(|m| m == SourceKind::Pop.name()) {
        let (entry, bytes) = trending(&full, &data.tokens)?;
        bundle.add_artifact(&entry.artifacts[0], &bytes)?;
        draft.models.push(entry);
    }
    let (mut cascade, mut rankers_skipped) = (None, None);
    if config.rankers {
        if measurable {
            // The retrievers are useful without rankers: a ranker that cannot be trained (say, no
            // evaluation user has a held-out item among its candidates) is reported, not fatal.
            let catalogue = Catalogue { tokens: data.tokens.clone(), released_at: data.released_at };
            match rankers(&mut bundle, &mut draft, &holdout, &full, &catalogue, &evaluations, config, options, progress)
            {
                Ok(summary) => cascade = Some(summary),
                Err(e) => rankers_skipped = Some(e.to_string()),
            }
        } else {
            rankers_skipped = Some("too little data for a held-out period".into());
        }
    }
    // Index → id maps of the bundled models' rows and columns.
    let ids = |ids: &[String]| serde_json::to_vec(ids).expect("a list of strings serialises");
    bundle.add_artifact(artifacts::USERS, &ids(full.train().users.ids()))?;
    bundle.add_artifact(artifacts::ITEMS, &ids(full.train().items.ids()))?;
    let champion = match registry.alias(RECOMMENDER, CHAMPION)? {
        Some(v) => Some(registry.get(v)?.manifest),
        None => None,
    };
    let policy = GatePolicy {
        metric: format!("ndcg_at_{}", options.k),
        tolerance: config.promotion_tolerance,
        ece_tolerance: config.promotion_ece_tolerance,
        promote: config.promote,
    };
    let verdict = judge(&draft, champion.as_ref(), &policy);
    progress(&format!("promotion gate: {}", verdict.reason));
    draft.gate = Some(verdict.clone());
    let manifest = bundle.commit(draft)?;
    if let Some(alias) = &verdict.promoted_to {
        let actor = Actor::new(options.who.clone(), Some(format!("promotion gate: {}", verdict.reason)));
        registry.set_alias(RECOMMENDER, alias, manifest.version, &actor)?;
    }
    if config.keep_bundles > 0 {
        let deleted = registry.prune(config.keep_bundles)?;
        if !deleted.is_empty() {
            progress(&format!("retention: deleted bundles {deleted:?} (train.keep_bundles = {})", config.keep_bundles));
        }
    }
    Ok(Trained { manifest, evaluations, cascade, rankers_skipped })
}

fn io(what: &str, e: &std::io::Error) -> Error {
    Error::Bundle(cascade_bundle::Error::Artifact { artifact: what.to_string(), message: e.to_string() })
}

/// Whether the source `name` is one of `models` (trending comes with pop).
fn trained_source(name: &str, models: &[&str]) -> bool {
    let pop = SourceKind::Pop.name();
    models.contains(&name) || (SourceKind::parse(name) == Some(SourceKind::Trending) && models.contains(&pop))
}

/// The ranking parameters of a training run: the default quotas of the sources the project
/// trains, the configured feature scale and user sample.
pub fn ranking_params(config: &TrainConfig, k: usize) -> RankingParams {
    let models: Vec<&str> = config.models.iter().map(String::as_str).collect();
    let defaults = RankingParams::default();
    let quotas = defaults
        .quotas
        .iter()
        .filter(|(name, _)| trained_source(name, &models))
        .map(|(n, q)| (n.clone(), *q))
        .collect();
    let scale = config.ranker_features;
    RankingParams {
        quotas,
        k,
        max_users: config.ranker_users,
        relative: scale != FeatureScale::Absolute,
        absolute: scale != FeatureScale::Relative,
        ..defaults
    }
}

/// Trains the cascade's rankers on candidates from the configured retrievers (with the
/// parameters their tuning chose): once on the periods before the held-out one, to measure the
/// whole cascade there, then on the latest periods for the bundle.
#[expect(clippy::too_many_arguments, reason = "one call site, every argument a different part of the run")]
fn rankers(
    bundle: &mut BundleWriter,
    draft: &mut ManifestDraft,
    holdout: &Split,
    full: &Split,
    catalogue: &Catalogue,
    evaluations: &[Evaluation],
    config: &TrainConfig,
    options: &TrainOptions,
    progress: &dyn Fn(&str),
) -> Result<CascadeSummary> {
    let mut params = ranking_params(config, options.k);
    // Only the retrievers that were trained.
    let trained: Vec<&str> = evaluations.iter().map(|e| e.kind.name()).collect();
    params
        .quotas
        .retain(|name, _| trained.contains(&name.as_str()) || (name == "trending" && trained.contains(&"pop")));
    let retrieval = evaluations.iter().map(|e| (e.kind, e.params.clone())).collect();
    let progress = |msg: &str| progress(&format!("rankers: {msg} ..."));
    // Log timestamps are milliseconds.
    let eval = ranking::evaluate(holdout, catalogue, &params, &retrieval, 1, &progress)?;
    let rankers = ranking::train(full, catalogue, &params, &retrieval, 1, &progress)?;
    // Nothing goes into the bundle until both trainings succeeded.
    let dir = tempfile::tempdir().map_err(|e| io("a temporary directory", &e))?;
    rankers.save(dir.path())?;
    let metrics = draft.metrics.entry("cascade".into()).or_default();
    let r = &eval.report;
    metrics.extend(report_metrics(r, options.k));
    metrics.insert("candidate_recall".into(), eval.candidate_recall);
    if let Some(ece) = eval.ece {
        metrics.insert("ece".into(), ece);
    }
    for name in artifacts::RANKERS {
        let bytes = std::fs::read(dir.path().join(name)).map_err(|e| io(name, &e))?;
        bundle.add_artifact(name, &bytes)?;
    }
    draft.models.push(ModelEntry {
        name: "light".into(),
        kind: "logistic".into(),
        params: serde_json::to_value(&params.light).expect("parameters serialise"),
        artifacts: vec![artifacts::LIGHT_RANKER.into()],
    });
    draft.models.push(ModelEntry {
        name: "heavy".into(),
        kind: "gbdt_lambdarank".into(),
        params: json!({
            "gbdt": rankers.report["heavy"]["params"],
            "candidates": params.candidates,
            "quotas": params.quotas,
            "light_keep": params.light_keep,
            "recent": params.recent,
            "periods": params.periods,
            "calibration": params.calibration,
            "features": rankers.feature_names,
            "feature_views": rankers.report["feature_views"],
        }),
        artifacts: vec![artifacts::HEAVY_RANKER.into(), artifacts::CALIBRATOR.into(), artifacts::RANKING.into()],
    });
    Ok(CascadeSummary { ndcg: r.ndcg, best_retriever: eval.retrieval.clone(), ece: eval.ece })
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
        name: SourceKind::Trending.name().into(),
        kind: "popularity_decayed".into(),
        params: json!({"half_life_days": TRENDING_HALF_LIFE_DAYS, "segments": genres.ids()}),
        artifacts: vec![artifacts::model(SourceKind::Trending.name())],
    };
    Ok((entry, bytes))
}
