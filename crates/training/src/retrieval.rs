//! Fitting, tuning and scoring retrieval models on a split — one code path for
//! `cascade evaluate` (split files) and `cascade train` (the project's event log).
//!
//! Tuning follows the reference protocol: every point of a model's grid is fitted on the
//! validation slice's history and scored by NDCG@K on its held-out rows; the best point is refit
//! on the whole training data.

use crate::error::{Error, Result};
use cascade_bundle::ItemTokens;
use cascade_core::Csr;
use cascade_eval::{Report, Split};
use cascade_models::{
    Als, AlsParams, AnyModel, Bpr, BprParams, ContentBased, ContentParams, ItemKnn, ItemKnnParams, Popularity,
};
use serde_json::{Value, json};
use std::time::Instant;

/// The retrieval models Cascade trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    Pop,
    ItemKnn,
    Als,
    Bpr,
    Content,
}

impl ModelKind {
    pub const ALL: [ModelKind; 5] =
        [ModelKind::Pop, ModelKind::ItemKnn, ModelKind::Als, ModelKind::Bpr, ModelKind::Content];

    pub fn parse(name: &str) -> Result<ModelKind> {
        Ok(match name {
            "pop" => ModelKind::Pop,
            "itemknn" => ModelKind::ItemKnn,
            "als" => ModelKind::Als,
            "bpr" => ModelKind::Bpr,
            "content" => ModelKind::Content,
            other => return Err(Error::UnknownModel(other.to_string())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Pop => "pop",
            ModelKind::ItemKnn => "itemknn",
            ModelKind::Als => "als",
            ModelKind::Bpr => "bpr",
            ModelKind::Content => "content",
        }
    }

    /// Fixed parameters, onto which a grid point is laid (the reference baselines' settings).
    pub fn base_params(self) -> Value {
        match self {
            ModelKind::Pop | ModelKind::Content => json!({}),
            ModelKind::ItemKnn => json!({"k": 50}),
            ModelKind::Als => json!({"factors": 64, "iterations": 15, "regularization": 10.0, "alpha": 1.0}),
            ModelKind::Bpr => json!({"factors": 64, "regularization": 0.01, "learning_rate": 0.01, "iterations": 100}),
        }
    }

    /// The hyper-parameter grid tuned on the validation slice (the reference baselines' grids).
    pub fn grid(self) -> Vec<Value> {
        match self {
            ModelKind::Pop | ModelKind::Content => vec![json!({})],
            ModelKind::ItemKnn => [20, 50, 100, 200].iter().map(|k| json!({"k": k})).collect(),
            ModelKind::Als => [1.0, 10.0]
                .iter()
                .flat_map(|alpha| {
                    [0.1, 1.0, 10.0, 30.0, 100.0].iter().map(move |reg| json!({"regularization": reg, "alpha": alpha}))
                })
                .collect(),
            ModelKind::Bpr => [0.01, 0.05]
                .iter()
                .flat_map(|lr| [100, 300].iter().map(move |it| json!({"learning_rate": lr, "iterations": it})))
                .collect(),
        }
    }
}

/// Lays `point` over `base` (top-level keys).
pub fn merge(base: &Value, point: &Value) -> Value {
    let mut out = base.clone();
    if let (Some(o), Some(p)) = (out.as_object_mut(), point.as_object()) {
        for (k, v) in p {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

fn typed<T: serde::de::DeserializeOwned + serde::Serialize + Default>(
    model: &'static str,
    params: &Value,
) -> Result<T> {
    // Unset fields keep the model's defaults.
    let full = merge(&serde_json::to_value(T::default()).expect("params serialise"), params);
    serde_json::from_value(full).map_err(|e| Error::Params { model, message: e.to_string() })
}

/// The training matrix of a split: binary (the implicit protocol) or weighted by each row's
/// `rating` field (e.g. per-event-type weights from the configuration), duplicates summed.
pub fn matrix(split: &Split, weighted: bool) -> Csr {
    if !weighted {
        return split.train().matrix.clone();
    }
    let train = split.train();
    let triplets = split
        .train_rows()
        .iter()
        .filter_map(|r| Some((train.users.get(&r.user)?, train.items.get(&r.item)?, r.rating)))
        .collect();
    Csr::from_triplets(train.matrix.rows, train.matrix.cols, triplets)
}

/// Fits one model with full parameters on a split's training data.
pub fn fit(
    kind: ModelKind,
    params: &Value,
    split: &Split,
    matrix: &Csr,
    content: Option<&ItemTokens>,
) -> Result<AnyModel> {
    let name = kind.name();
    Ok(match kind {
        ModelKind::Pop => AnyModel::Popularity(Popularity::fit(matrix)),
        ModelKind::ItemKnn => AnyModel::ItemKnn(ItemKnn::fit(matrix, &typed::<ItemKnnParams>(name, params)?)?),
        ModelKind::Als => AnyModel::Als(Als::fit(matrix, &typed::<AlsParams>(name, params)?)?),
        ModelKind::Bpr => AnyModel::Bpr(Bpr::fit(matrix, &typed::<BprParams>(name, params)?)?),
        ModelKind::Content => {
            let tokens = content.ok_or(Error::NoContent)?;
            let items: Vec<Vec<(String, f32)>> =
                split.train().items.ids().iter().map(|id| tokens.get(id).cloned().unwrap_or_default()).collect();
            AnyModel::Content(ContentBased::fit(&items, &typed::<ContentParams>(name, params)?)?)
        }
    })
}

/// Top-`k` lists for the split's evaluation users, scored against its held-out rows.
/// Returns the report and the scoring wall time in seconds.
pub fn score(model: &AnyModel, split: &Split, matrix: &Csr, k: usize) -> Result<(Report, f64)> {
    let started = Instant::now();
    let recs = model.retriever().recommend_all(matrix, split.eval_users(), k);
    let seconds = started.elapsed().as_secs_f64();
    Ok((cascade_eval::evaluate(split, k, &recs)?, seconds))
}

/// One grid point and its validation score.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub params: Value,
    pub ndcg: f64,
}

/// Tunes `kind` on `validation` (fit on its history, NDCG@`k` on its held-out rows). Returns the
/// chosen full parameters and every trial; ties keep the earlier grid point.
pub fn tune(
    kind: ModelKind,
    validation: &Split,
    weighted: bool,
    k: usize,
    content: Option<&ItemTokens>,
) -> Result<(Value, Vec<Trial>)> {
    let base = kind.base_params();
    let grid = kind.grid();
    if grid.len() == 1 {
        return Ok((merge(&base, &grid[0]), Vec::new()));
    }
    let m = matrix(validation, weighted);
    let mut trials = Vec::with_capacity(grid.len());
    for point in &grid {
        let params = merge(&base, point);
        let model = fit(kind, &params, validation, &m, content)?;
        let (report, _) = score(&model, validation, &m, k)?;
        trials.push(Trial { params, ndcg: report.ndcg });
    }
    let best = trials.iter().fold(&trials[0], |best, t| if t.ndcg > best.ndcg { t } else { best });
    Ok((best.params.clone(), trials))
}

/// The result of evaluating one model under the protocol.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub kind: ModelKind,
    pub params: Value,
    pub trials: Vec<Trial>,
    pub report: Report,
    pub train_seconds: f64,
    pub score_seconds: f64,
    pub model: AnyModel,
}

/// Tunes (optionally) on the split's validation slice, refits on its training data, scores on
/// its held-out rows.
pub fn evaluate(
    kind: ModelKind,
    split: &Split,
    weighted: bool,
    k: usize,
    tune_grid: bool,
    content: Option<&ItemTokens>,
) -> Result<Evaluation> {
    let (params, trials) = if tune_grid {
        tune(kind, &split.validation(), weighted, k, content)?
    } else {
        (kind.base_params(), Vec::new())
    };
    let m = matrix(split, weighted);
    let started = Instant::now();
    let model = fit(kind, &params, split, &m, content)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let (report, score_seconds) = score(&model, split, &m, k)?;
    Ok(Evaluation { kind, params, trials, report, train_seconds, score_seconds, model })
}

impl Evaluation {
    /// The JSON object of this evaluation that `cascade evaluate --json` prints and an
    /// `evaluate` job reports: the model, its parameters, timings, evaluation users, the
    /// validation trials and the metrics named for K (`ndcg_at_10`, ...).
    pub fn to_json(&self, k: usize) -> Value {
        let r = &self.report;
        let mut object = json!({
            "model": self.kind.name(),
            "params": self.params,
            "train_seconds": self.train_seconds,
            "score_seconds": self.score_seconds,
            "eval_users": r.eval_users,
            "validation": self.trials.iter().map(|t| json!({"params": t.params, format!("ndcg_at_{k}"): t.ndcg})).collect::<Vec<_>>(),
        });
        if let Some(map) = object.as_object_mut() {
            map.extend(report_metrics(r, k).into_iter().map(|(name, value)| (name, json!(value))));
        }
        object
    }
}

/// `cascade evaluate` on a project's log: each of `models` tuned (when `tune`) on the validation
/// slice, fitted on the interactions before the latest `test_fraction` and scored on those, by
/// weighted interactions with the items' attribute tokens. `progress` hears each model's name
/// once, before it is evaluated.
pub fn evaluate_log(
    data: crate::dataset::LogData,
    models: &[String],
    test_fraction: f64,
    k: usize,
    tune: bool,
    progress: &dyn Fn(&str),
) -> Result<Vec<Evaluation>> {
    if data.rows.is_empty() {
        return Err(Error::NoData(
            "no interactions in the event log: import or generate data first (event types in [train] interactions)"
                .into(),
        ));
    }
    let kinds = models.iter().map(|m| ModelKind::parse(m)).collect::<Result<Vec<_>>>()?;
    let split = Split::temporal(data.rows, test_fraction)?;
    let mut out = Vec::with_capacity(kinds.len());
    for kind in kinds {
        progress(kind.name());
        out.push(evaluate(kind, &split, true, k, tune, Some(&data.tokens))?);
    }
    Ok(out)
}

/// A report's metrics under the names manifests and `--json` use (`ndcg_at_10`, ..., `novelty`).
pub fn report_metrics(r: &Report, k: usize) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = [
        ("ndcg", r.ndcg),
        ("recall", r.recall),
        ("hr", r.hr),
        ("mrr", r.mrr),
        ("map", r.map),
        ("coverage", r.coverage),
    ]
    .into_iter()
    .map(|(metric, value)| (format!("{metric}_at_{k}"), value))
    .collect();
    out.push(("novelty".into(), r.novelty));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_bundle::attribute_tokens;
    use cascade_eval::Row;

    /// Two taste groups over a timeline; the last rows of each user are held out.
    fn planted() -> Split {
        let mut rows = Vec::new();
        let mut ts = 0;
        for round in 0..8 {
            for u in 0..40 {
                let group = u % 2;
                let item = group * 20 + (u * 7 + round * 3) % 20;
                ts += 1;
                rows.push(Row { user: format!("u{u}"), item: format!("i{item}"), rating: 1.0, ts });
            }
        }
        Split::temporal(rows, 0.2).unwrap()
    }

    #[test]
    fn grids_match_the_reference_protocol() {
        assert_eq!(ModelKind::Als.grid().len(), 10);
        assert_eq!(ModelKind::ItemKnn.grid().len(), 4);
        assert_eq!(ModelKind::Bpr.grid().len(), 4);
        assert_eq!(
            merge(&ModelKind::Als.base_params(), &json!({"alpha": 10.0}))["alpha"],
            json!(10.0),
            "a grid point overrides the base"
        );
        assert!(matches!(ModelKind::parse("svd"), Err(Error::UnknownModel(_))));
    }

    #[test]
    fn collaborative_models_beat_popularity_on_planted_tastes() {
        let split = planted();
        let pop = evaluate(ModelKind::Pop, &split, false, 5, false, None).unwrap();
        let knn = evaluate(ModelKind::ItemKnn, &split, false, 5, false, None).unwrap();
        assert!(pop.report.eval_users > 0);
        assert!(knn.report.ndcg > pop.report.ndcg + 0.05, "itemknn {} vs pop {}", knn.report.ndcg, pop.report.ndcg);
    }

    #[test]
    fn tuning_records_every_trial_and_picks_the_best() {
        let split = planted();
        let (params, trials) = tune(ModelKind::ItemKnn, &split.validation(), false, 5, None).unwrap();
        assert_eq!(trials.len(), 4);
        let best = trials.iter().map(|t| t.ndcg).fold(f64::MIN, f64::max);
        assert_eq!(trials.iter().find(|t| t.params == params).unwrap().ndcg, best);
    }

    #[test]
    fn content_needs_tokens_and_uses_them() {
        let split = planted();
        assert!(matches!(evaluate(ModelKind::Content, &split, false, 5, false, None), Err(Error::NoContent)));
        let tokens: ItemTokens = (0..40).map(|i| (format!("i{i}"), vec![(format!("genre:{}", i / 20), 1.0)])).collect();
        let content = evaluate(ModelKind::Content, &split, false, 5, false, Some(&tokens)).unwrap();
        let pop = evaluate(ModelKind::Pop, &split, false, 5, false, None).unwrap();
        assert!(content.report.recall > pop.report.recall, "{} vs {}", content.report.recall, pop.report.recall);
    }

    #[test]
    fn weighted_matrix_sums_row_weights() {
        let rows = vec![
            Row { user: "a".into(), item: "x".into(), rating: 2.0, ts: 1 },
            Row { user: "a".into(), item: "x".into(), rating: 0.5, ts: 2 },
            Row { user: "b".into(), item: "y".into(), rating: 1.0, ts: 3 },
        ];
        let split = Split::from_rows(rows, Vec::new());
        let m = matrix(&split, true);
        let a = split.train().users.get("a").unwrap() as usize;
        assert_eq!(m.row(a).1, [2.5]);
        assert_eq!(matrix(&split, false).row(a).1, [1.0]);
    }

    #[test]
    fn attribute_tokens_by_kind() {
        use cascade_core::Value;
        let t = attribute_tokens(&[
            ("genres".into(), Value::StringList(vec!["jazz".into(), "bop".into()])),
            ("title".into(), Value::String("Kind of Blue".into())),
            ("creator".into(), Value::String("miles".into())),
            ("price".into(), Value::Float(9.0)),
        ]);
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["genres:jazz", "genres:bop", "title:kind", "title:blue", "creator:miles"]);
    }
}
