//! The ranking stages of the cascade (light ranker → heavy GBDT → calibration) and the
//! learning-to-rank data they learn from, built by our own pipeline.
//!
//! For a cut time `T` (a [`Split`]: history before, held-out interactions after), every evaluation
//! user gets candidates from every retriever fitted on the history (each source's quota, deduped,
//! at most [`RankingParams::candidates`]); each candidate is labelled 1 when the user interacts
//! with it after `T`, and described by:
//!
//! - per source, its score and its rank among the candidates (every source scores every
//!   candidate, not only those it proposed);
//! - item-kNN similarity to the user's most recent items (taste drifts; the whole history is
//!   already in the other scores);
//! - user × item affinity: the share of the user's history that shares an attribute (genre,
//!   artist) with the item, and the strongest such share;
//! - item age (since its first interaction) and release age;
//! - user and item aggregates — counts over 1, 7 and 30 days and lifetime, time since last, a
//!   decayed count — computed by the feature engine's point-in-time replay
//!   ([`cascade_features::training_set`]) as of just before `T`, the same code that serves them
//!   online.
//!
//! Training uses several cut times (the split's validation slice, and its validation slice in
//! turn) so the rankers see more users than one period holds. The light ranker (logistic
//! regression over the cheap features: retrieval scores and ranks, item popularity) keeps the
//! best [`RankingParams::light_keep`] candidates per user; the heavy ranker (LambdaMART) is
//! trained on exactly those, the distribution it sees when serving. Its configuration and number
//! of trees are picked on a 20% user holdout by the final lists' NDCG@K, then it is refit on all
//! users; its scores are calibrated on the holdout into probabilities of a hit.

use crate::error::{Error, Result};
use crate::retrieval::{self as training, ModelKind};
use cascade_bundle::{
    CandidateInputs, Fill, Generator, ItemTokens, Layout, Lists, OVERFETCH, Rankers, Request, ServingParams,
    SourceKind, TokenProfile, affinity, aggregate_value, aggregate_views, is_cheap, rank_desc, recent_items,
};
use cascade_core::{Config, Event, Record, Timestamp};
use cascade_eval::metrics::{ece, ndcg_at_k};
use cascade_eval::{Report, Split};
use cascade_features::{Entities, FeatureSet, LabelRow};
use cascade_models::{AnyModel, Popularity, Retriever};
use cascade_rank::calibration::{Calibrator, Method};
use cascade_rank::gbdt::{self, Dataset, Task};
use cascade_rank::linear::{self, LinearParams};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

const DAY_MS: i64 = 86_400_000;

/// Item facts beyond interactions: attribute tokens (for affinities and the content model) and
/// release times (ms).
#[derive(Debug, Default, Clone)]
pub struct Catalogue {
    pub tokens: ItemTokens,
    pub released_at: HashMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankingParams {
    /// Candidates each retriever proposes (it is asked in this order; duplicates are dropped).
    pub quotas: BTreeMap<String, usize>,
    /// Most candidates per user.
    pub candidates: usize,
    /// Candidates the light ranker passes to the heavy one.
    pub light_keep: usize,
    /// The user's most recent items the recency similarity looks at.
    pub recent: usize,
    /// Users with fewer interactions get the cold-start sources only, as in serving
    /// (`pipelines.<p>.min_history`).
    pub min_history: usize,
    /// How candidate sets are filled from the sources (recorded for serving).
    pub fill: Fill,
    /// Training periods: 1 is the validation slice; each more adds the period before it.
    pub periods: usize,
    /// Share of the history each training period holds out as its labels.
    pub period_fraction: f64,
    /// Most users per training period (a seeded sample beyond it): learning-to-rank rows cost a
    /// scoring of the catalogue per user, and a few tens of thousands of users teach a ranker
    /// as much as a million.
    pub max_users: usize,
    /// Describe candidates relative to the request: every per-candidate feature but the ranks
    /// becomes its percentile among the request's candidates (`_pct`, 0 = highest); user
    /// features stay absolute. Absolute counts, ages and model scores change scale between
    /// periods (a quiet month, a refit model), so a ranker trained on one period misreads the
    /// next; positions within the request do not drift.
    pub relative: bool,
    /// Also keep those features as they are, beside their percentiles (`[train]
    /// ranker_features = "both"`): counts and scores carry what a position cannot, and the GBDT
    /// picks; on MovieLens it ranks worse than percentiles alone. Without `relative`, the only
    /// form.
    pub absolute: bool,
    /// Heavy-ranker configurations tried (each with early stopping on the holdout).
    pub grid: Vec<gbdt::Params>,
    pub light: LinearParams,
    pub calibration: Method,
    /// Ranking list length K (the NDCG@K that picks the heavy ranker).
    pub k: usize,
    pub seed: u64,
}

impl Default for RankingParams {
    fn default() -> Self {
        // The same mix serving's pipelines start from.
        let quotas = cascade_bundle::default_quotas();
        let heavy = |learning_rate: f64, num_leaves: usize, min_data_in_leaf: usize| gbdt::Params {
            objective: Task::LambdaRank,
            num_iterations: 500,
            learning_rate,
            num_leaves,
            min_data_in_leaf,
            feature_fraction: 0.8,
            lambda_l2: 1.0,
            early_stopping_rounds: Some(30),
            eval_at: 10,
            ..gbdt::Params::default()
        };
        RankingParams {
            quotas,
            candidates: 500,
            light_keep: 100,
            recent: 10,
            min_history: 5,
            fill: Fill::default(),
            periods: 2,
            period_fraction: 0.1,
            max_users: 20_000,
            relative: true,
            absolute: false,
            grid: vec![heavy(0.05, 31, 50), heavy(0.05, 15, 100), heavy(0.03, 63, 50)],
            light: LinearParams::default(),
            calibration: Method::Isotonic,
            k: 10,
            seed: 42,
        }
    }
}

/// The retrievers of one period, in feature order.
pub struct Retrievers {
    pub models: Vec<(String, AnyModel)>,
}

impl std::fmt::Debug for Retrievers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.models.iter().map(|(n, _)| n)).finish()
    }
}

/// Half-life of the trending source, in days.
const TRENDING_HALF_LIFE_DAYS: f64 = 7.0;

impl Retrievers {
    /// Fits every source named in `quotas` on `split`'s history: the collaborative models with
    /// `params` (tuned elsewhere), popularity, trending (popularity decayed with a 7-day
    /// half-life) and content (when the catalogue has tokens).
    pub fn fit(
        split: &Split,
        params: &HashMap<ModelKind, Json>,
        quotas: &BTreeMap<String, usize>,
        catalogue: &Catalogue,
        unit_ms: i64,
    ) -> Result<Retrievers> {
        let m = training::matrix(split, false);
        let mut models = Vec::new();
        for name in quotas.keys() {
            let model = match SourceKind::parse(name) {
                Some(SourceKind::Trending) => {
                    let train = split.train();
                    let rows: Vec<(u32, u32, i64)> = split
                        .train_rows()
                        .iter()
                        .filter_map(|r| Some((train.users.get(&r.user)?, train.items.get(&r.item)?, r.ts)))
                        .collect();
                    let now = rows.iter().map(|r| r.2).max().unwrap_or(0);
                    let half_life = TRENDING_HALF_LIFE_DAYS * DAY_MS as f64 / unit_ms as f64;
                    AnyModel::Popularity(Popularity::fit_decayed_rows(m.cols, &rows, now, half_life)?)
                }
                Some(SourceKind::Content) if catalogue.tokens.is_empty() => continue,
                _ => {
                    let kind = ModelKind::parse(name)?;
                    let p = params.get(&kind).cloned().unwrap_or_else(|| kind.base_params());
                    training::fit(kind, &p, split, &m, Some(&catalogue.tokens))?
                }
            };
            models.push((name.clone(), model));
        }
        Ok(Retrievers { models })
    }
}

/// Candidates of many users with their features and labels, one group per user.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// Per group: the split's user index, and how many held-out items the user has (IDCG).
    pub users: Vec<u32>,
    pub n_truth: Vec<usize>,
    pub group_sizes: Vec<usize>,
    /// Per row: the candidate's item index, its label, its features (row-major).
    pub items: Vec<u32>,
    pub labels: Vec<f64>,
    pub values: Vec<f64>,
    pub n_features: usize,
}

impl Block {
    fn row(&self, r: usize) -> &[f64] {
        &self.values[r * self.n_features..(r + 1) * self.n_features]
    }

    fn group_starts(&self) -> Vec<usize> {
        let mut s = Vec::with_capacity(self.group_sizes.len() + 1);
        s.push(0);
        for g in &self.group_sizes {
            s.push(s.last().unwrap() + g);
        }
        s
    }

    fn append(&mut self, other: Block) {
        self.n_features = other.n_features;
        self.users.extend(other.users);
        self.n_truth.extend(other.n_truth);
        self.group_sizes.extend(other.group_sizes);
        self.items.extend(other.items);
        self.labels.extend(other.labels);
        self.values.extend(other.values);
    }

    /// The groups `keep` selects, rows in order.
    fn select_groups(&self, keep: &[bool]) -> Block {
        let starts = self.group_starts();
        let mut out = Block { n_features: self.n_features, ..Block::default() };
        for (g, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            out.users.push(self.users[g]);
            out.n_truth.push(self.n_truth[g]);
            out.group_sizes.push(self.group_sizes[g]);
            for r in starts[g]..starts[g + 1] {
                out.items.push(self.items[r]);
                out.labels.push(self.labels[r]);
                out.values.extend_from_slice(self.row(r));
            }
        }
        out
    }

    /// Per group, its `keep` best rows by `scores`, best first.
    fn top_per_group(&self, scores: &[f64], keep: usize) -> (Block, Vec<f64>) {
        let starts = self.group_starts();
        let mut out = Block { n_features: self.n_features, ..Block::default() };
        let mut kept_scores = Vec::new();
        for g in 0..self.group_sizes.len() {
            let order = rank_desc(&scores[starts[g]..starts[g + 1]]);
            let take = order.len().min(keep);
            out.users.push(self.users[g]);
            out.n_truth.push(self.n_truth[g]);
            out.group_sizes.push(take);
            for &i in &order[..take] {
                let r = starts[g] + i;
                out.items.push(self.items[r]);
                out.labels.push(self.labels[r]);
                out.values.extend_from_slice(self.row(r));
                kept_scores.push(scores[r]);
            }
        }
        (out, kept_scores)
    }

    fn dataset(&self, names: &[String]) -> Result<Dataset> {
        Ok(Dataset::new(self.values.clone(), self.n_features, self.labels.clone())?
            .with_groups(self.group_sizes.clone())?
            .with_feature_names(names.to_vec())?)
    }

    /// Mean NDCG@k over the groups of each group's rows ordered by `scores`.
    fn ndcg(&self, scores: &[f64], k: usize) -> f64 {
        let starts = self.group_starts();
        let total: f64 = (0..self.group_sizes.len())
            .map(|g| {
                let order = rank_desc(&scores[starts[g]..starts[g + 1]]);
                let hits: Vec<bool> = order.iter().take(k).map(|&i| self.labels[starts[g] + i] > 0.0).collect();
                ndcg_at_k(&hits, self.n_truth[g], k)
            })
            .sum();
        total / self.group_sizes.len().max(1) as f64
    }
}

/// Interactions enter the feature replay as events of this type.
const EVENT_TYPE: &str = "rating";

/// User and item aggregates as of just before `at` (ms), by the feature engine's point-in-time
/// replay of `split`'s history. Returns (names, per item index, per user index).
#[allow(clippy::type_complexity)]
fn aggregates(split: &Split, at: i64, unit_ms: i64) -> Result<(Vec<String>, Vec<Vec<f64>>, Vec<Vec<f64>>)> {
    let mut config = Config::default();
    config.features = toml::from_str(&aggregate_views(&[EVENT_TYPE])).expect("built-in views parse");
    let set = FeatureSet::from_config(&config)?;
    let mut rows: Vec<&cascade_eval::Row> = split.train_rows().iter().collect();
    rows.sort_by_key(|r| r.ts);
    let log = rows.iter().enumerate().map(|(offset, r)| {
        Ok((
            offset as u64,
            Record::Event(Event {
                id: None,
                event_type: EVENT_TYPE.to_string(),
                ts: Timestamp(r.ts * unit_ms),
                user: Some(r.user.clone()),
                item: Some(r.item.clone()),
                fields: Vec::new(),
            }),
        ))
    });
    let train = split.train();
    let at = Timestamp(at);
    let read = |view: &str, labels: Vec<LabelRow>| -> Result<(Vec<String>, Vec<Vec<f64>>)> {
        let selection = set.select(&[view])?;
        let ts = cascade_features::training_set(&set, &selection, log.clone(), &labels)?;
        let names = ts.columns.iter().map(|c| c.name().replace(':', ".")).collect();
        let values = ts
            .rows
            .iter()
            .map(|row| {
                row.values.iter().zip(&ts.columns).map(|(v, c)| aggregate_value(&c.feature, v.value.as_ref())).collect()
            })
            .collect();
        Ok((names, values))
    };
    let item_labels = train
        .items
        .ids()
        .iter()
        .map(|i| LabelRow { entities: Entities { item: Some(i.clone()), ..Entities::default() }, ts: at, label: None })
        .collect();
    let user_labels = train
        .users
        .ids()
        .iter()
        .map(|u| LabelRow { entities: Entities::user(u.clone()), ts: at, label: None })
        .collect();
    let (mut names, items) = read("rank_item", item_labels)?;
    let (user_names, users) = read("rank_user", user_labels)?;
    names.extend(user_names);
    Ok((names, items, users))
}

/// One user's candidates, as [`Block`] holds them.
struct Group {
    user: u32,
    n_truth: usize,
    items: Vec<u32>,
    labels: Vec<f64>,
    values: Vec<f64>,
}

/// Builds the candidates, features and labels of `users` (some of `split`'s evaluation users), as
/// of the end of its history. `unit_ms` is the length of one unit of the rows' timestamps in milliseconds.
pub fn build_block(
    split: &Split,
    users: &[u32],
    retrievers: &Retrievers,
    catalogue: &Catalogue,
    params: &RankingParams,
    unit_ms: i64,
) -> Result<(Vec<String>, Block)> {
    let train = split.train();
    let n_items = train.items.len();
    let last = split.train_rows().iter().map(|r| r.ts).max().unwrap_or(0);
    // Features are read as of just after the newest history row: everything before the cut.
    let at = last * unit_ms + 1;
    // The replay reads a label at T as of T - 1 ms (nothing at T may leak into it); labels at
    // `at + 1` read as of `at`, the instant the ages above are measured at and a request at
    // `at` reads the online store at. The held-out rows are not in this replay.
    let (agg_names, item_aggs, user_aggs) = aggregates(split, at + 1, unit_ms)?;
    let m = training::matrix(split, false);

    // Time-ordered histories, for the recency similarity.
    let mut recent: Vec<Vec<(i64, u32)>> = vec![Vec::new(); train.users.len()];
    let mut first_seen = vec![i64::MAX; n_items];
    for r in split.train_rows() {
        if let (Some(u), Some(i)) = (train.users.get(&r.user), train.items.get(&r.item)) {
            recent[u as usize].push((r.ts, i));
            first_seen[i as usize] = first_seen[i as usize].min(r.ts);
        }
    }
    // Item attribute tokens as small integer ids, for the affinity features.
    let mut vocab: HashMap<&str, u32> = HashMap::new();
    let item_tokens: Vec<Vec<u32>> = train
        .items
        .ids()
        .iter()
        .map(|id| {
            let mut t: Vec<u32> = catalogue
                .tokens
                .get(id)
                .into_iter()
                .flatten()
                .filter(|(tok, _)| !tok.starts_with("title:"))
                .map(|(tok, _)| {
                    let next = vocab.len() as u32;
                    *vocab.entry(tok.as_str()).or_insert(next)
                })
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        })
        .collect();
    let released: Vec<f64> = train
        .items
        .ids()
        .iter()
        .map(|id| catalogue.released_at.get(id).map_or(f64::NAN, |&r| (at - r) as f64 / (365.25 * DAY_MS as f64)))
        .collect();
    let knn = retrievers.models.iter().find_map(|(_, m)| match m {
        AnyModel::ItemKnn(k) => Some(k),
        _ => None,
    });

    let (item_agg_names, user_agg_names): (Vec<String>, Vec<String>) =
        agg_names.into_iter().partition(|n| n.starts_with("rank_item."));
    let sources: Vec<String> = retrievers.models.iter().map(|(n, _)| n.clone()).collect();
    let layout = Layout::new(sources, knn.is_some(), item_agg_names, user_agg_names, params.absolute, params.relative);
    let names = layout.names.clone();
    let n_features = names.len();
    let quota_of = |name: &str| params.quotas.get(name).copied().unwrap_or(0);
    let mut generator = Generator::over_lists(
        retrievers.models.iter().map(|(name, _)| (name, params.quotas.get(name).unwrap_or(&0))),
        params.min_history,
    );
    generator.fill = params.fill;

    let groups: Vec<Option<Group>> = users
        .par_iter()
        .map_init(
            || vec![vec![0f32; n_items]; retrievers.models.len() + 1],
            |scores, &u| {
                let history = if (u as usize) < m.rows { m.row(u as usize) } else { (&[][..], &[][..]) };
                for ((_, model), out) in retrievers.models.iter().zip(scores.iter_mut()) {
                    model.retriever().score_user(u, history, out);
                }
                // Candidates: each source's best unseen items, filled and deduped by the
                // generator serving uses, with the same quotas, audiences and cold-start rule.
                let mut lists = Lists::new();
                for ((name, _), s) in retrievers.models.iter().zip(scores.iter()) {
                    lists.insert(name.clone(), cascade_models::top_k(s, quota_of(name) * OVERFETCH, history.0));
                }
                let request = Request::new(Some(u), history.0, history.0).with_lists(&lists);
                let chosen: Vec<u32> =
                    generator.generate(&request, params.candidates).into_iter().map(|c| c.item).collect();
                if chosen.is_empty() {
                    return None;
                }
                // Recency: item-kNN from the user's last few items only.
                let recent_scores = knn.map(|knn| {
                    let mut h = recent[u as usize].clone();
                    h.sort_unstable();
                    let sorted = recent_items(h.iter().map(|e| e.1), params.recent);
                    let ones = vec![1f32; sorted.len()];
                    let out = scores.last_mut().expect("scratch row");
                    knn.score_user(u, (&sorted, &ones), out);
                    out.clone()
                });
                // The user's attribute profile: share of history per token.
                let profile =
                    TokenProfile::count(history.0.iter().flat_map(|&i| item_tokens[i as usize].iter().copied()));
                let hist_len = history.0.len().max(1) as f64;

                let inputs = CandidateInputs {
                    source_scores: scores
                        .iter()
                        .take(retrievers.models.len())
                        .map(|s| chosen.iter().map(|&i| f64::from(s[i as usize])).collect())
                        .collect(),
                    recent: recent_scores
                        .map(|rs| chosen.iter().map(|&i| f64::from(rs[i as usize])).collect())
                        .unwrap_or_default(),
                    affinity: chosen.iter().map(|&i| affinity(&profile, &item_tokens[i as usize], hist_len)).collect(),
                    item_age_days: chosen
                        .iter()
                        .map(|&i| {
                            let first = first_seen[i as usize];
                            if first == i64::MAX { f64::NAN } else { (at - first * unit_ms) as f64 / DAY_MS as f64 }
                        })
                        .collect(),
                    release_age_years: chosen.iter().map(|&i| released[i as usize]).collect(),
                    item_aggs: chosen.iter().map(|&i| item_aggs[i as usize].as_slice()).collect(),
                    user_aggs: &user_aggs[u as usize],
                };
                let values = layout.assemble(&inputs);
                let truth = split.truth_items(u);
                let labels = chosen.iter().map(|i| f64::from(u8::from(truth.binary_search(i).is_ok()))).collect();
                Some(Group { user: u, n_truth: split.truth(u).len(), items: chosen, labels, values })
            },
        )
        .collect();

    let mut block = Block { n_features, ..Block::default() };
    for group in groups.into_iter().flatten() {
        block.users.push(group.user);
        block.n_truth.push(group.n_truth);
        block.group_sizes.push(group.items.len());
        block.items.extend(group.items);
        block.labels.extend(group.labels);
        block.values.extend(group.values);
    }
    Ok((names, block))
}

fn columns(block: &Block, cols: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(block.labels.len() * cols.len());
    for r in 0..block.labels.len() {
        let row = block.row(r);
        out.extend(cols.iter().map(|&c| row[c]));
    }
    out
}

/// Light ranker scores of every row.
pub fn light_scores(rankers: &Rankers, block: &Block) -> Vec<f64> {
    rankers.light_scores(&block.values)
}

/// The full cascade over a block: light ranker → its best `light_keep` → heavy ranker.
/// Returns the kept rows (best first per group) and their heavy raw scores.
pub fn rank(rankers: &Rankers, block: &Block) -> (Block, Vec<f64>) {
    let (kept, _) = block.top_per_group(&light_scores(rankers, block), rankers.params.light_keep);
    let heavy = rankers.heavy.predict_raw_batch(&kept.values);
    kept.top_per_group(&heavy, usize::MAX)
}

/// Trains the light and heavy rankers and the calibrator on `block` (several periods'
/// groups).
pub fn train_rankers(names: &[String], block: &Block, params: &RankingParams) -> Result<Rankers> {
    if block.group_sizes.is_empty() || !block.labels.iter().any(|&l| l > 0.0) {
        return Err(Error::NoData("no training user has a held-out interaction among its candidates".into()));
    }
    let started = Instant::now();
    let light_features: Vec<usize> = (0..names.len()).filter(|&c| is_cheap(&names[c])).collect();
    let light_names: Vec<String> = light_features.iter().map(|&c| names[c].clone()).collect();
    let light_values = columns(block, &light_features);
    let light =
        linear::fit_logistic(&light_values, light_features.len(), &block.labels, None, light_names, &params.light)?;
    let light_scores = light.score_batch(&light_values);
    let (heavy_block, _) = block.top_per_group(&light_scores, params.light_keep);

    // A user-level holdout picks the configuration, the number of trees and the calibration.
    let mut order: Vec<usize> = (0..heavy_block.group_sizes.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(params.seed));
    let mut hold = vec![false; order.len()];
    for &g in order.iter().take((order.len() / 5).max(1)) {
        hold[g] = true;
    }
    let fit_part = heavy_block.select_groups(&hold.iter().map(|h| !h).collect::<Vec<_>>());
    let hold_part = heavy_block.select_groups(&hold);
    let (fit_data, hold_data) = (fit_part.dataset(names)?, hold_part.dataset(names)?);
    let mut trials = Vec::new();
    let mut best: Option<(f64, gbdt::Params, usize, Vec<f64>)> = None;
    for point in &params.grid {
        let trained = gbdt::train(point, &fit_data, Some(&hold_data))?;
        let scores = trained.forest.predict_raw_batch(&hold_part.values);
        let ndcg = hold_part.ndcg(&scores, params.k);
        trials.push(json!({"params": point, "best_iteration": trained.best_iteration, format!("holdout_ndcg_at_{}", params.k): ndcg}));
        if best.as_ref().is_none_or(|b| ndcg > b.0) {
            best = Some((ndcg, point.clone(), trained.best_iteration, scores));
        }
    }
    let (holdout_ndcg, mut chosen, rounds, hold_scores) =
        best.ok_or_else(|| Error::NoData("the heavy-ranker grid is empty".into()))?;
    let hold_labels: Vec<bool> = hold_part.labels.iter().map(|&l| l > 0.0).collect();
    let calibrator = Calibrator::fit(params.calibration, &hold_scores, &hold_labels)?;
    chosen.num_iterations = rounds.max(1);
    chosen.early_stopping_rounds = None;
    let heavy = gbdt::train(&chosen, &heavy_block.dataset(names)?, None)?.forest;
    let light_ndcg = hold_part.ndcg(&light.score_batch(&columns(&hold_part, &light_features)), params.k);
    let gain = heavy.gain_importance();
    let mut importance: Vec<(String, f64)> = names.iter().cloned().zip(gain).collect();
    importance.sort_by(|a, b| b.1.total_cmp(&a.1));
    let views: BTreeMap<String, cascade_core::features::ViewConfig> =
        toml::from_str(&aggregate_views(&[EVENT_TYPE])).expect("built-in views parse");
    let report = json!({
        "features": names,
        "feature_views": views.iter().map(|(n, v)| (n.clone(), json!({"version": v.version}))).collect::<serde_json::Map<_, _>>(),
        "train_groups": block.group_sizes.len(),
        "train_rows": block.labels.len(),
        "train_positives": block.labels.iter().filter(|&&l| l > 0.0).count(),
        "heavy_rows": heavy_block.labels.len(),
        "light": {"features": light_features.iter().map(|&c| &names[c]).collect::<Vec<_>>(), format!("holdout_ndcg_at_{}", params.k): light_ndcg},
        "heavy": {"params": chosen, "trees": heavy.trees.len(), format!("holdout_ndcg_at_{}", params.k): holdout_ndcg, "grid": trials},
        "calibration": params.calibration,
        "gain_importance": importance.iter().take(15).map(|(n, g)| json!([n, g])).collect::<Vec<_>>(),
        "train_seconds": started.elapsed().as_secs_f64(),
    });
    Ok(Rankers {
        feature_names: names.to_vec(),
        light_features,
        light,
        heavy,
        calibrator,
        params: ServingParams { light_keep: params.light_keep, recent: params.recent, fill: params.fill },
        report,
    })
}

/// At most `max` of `users`, a seeded sample in ascending order.
fn sample_users(users: &[u32], max: usize, seed: u64) -> Vec<u32> {
    if users.len() <= max {
        return users.to_vec();
    }
    let mut sample = users.to_vec();
    sample.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    sample.truncate(max);
    sample.sort_unstable();
    sample
}

/// The training periods before `split`'s cut: the last `fraction` of its history held out, then
/// the last `fraction` of what precedes that, ... (`n` of them; with 0.1, the validation slice
/// and its own validation slice).
pub fn periods(split: &Split, n: usize, fraction: f64) -> Vec<Split> {
    let mut out: Vec<Split> = Vec::new();
    for _ in 0..n {
        let prev = out.last().unwrap_or(split);
        let Ok(next) = Split::temporal(prev.train_rows().to_vec(), fraction) else { break };
        if next.eval_users().is_empty() {
            break;
        }
        out.push(next);
    }
    out
}

/// The result of evaluating the cascade under the protocol.
#[derive(Debug, Clone)]
pub struct CascadeEvaluation {
    pub report: Report,
    /// The best single retriever's NDCG@K on the same users, and its name.
    pub retrieval: (String, f64),
    /// Share of held-out items among the candidates (mean over users).
    pub candidate_recall: f64,
    /// ECE of the calibrated heavy scores on the ranked candidates.
    pub ece: Option<f64>,
    pub train_seconds: f64,
    pub score_seconds: f64,
    pub rankers: Rankers,
    pub retrieval_params: HashMap<ModelKind, Json>,
}

/// Parameters of each collaborative retriever named in `params.quotas`: tuned on `split`'s
/// validation slice (the retrieval grids), or their base parameters.
pub fn retrieval_params(
    split: &Split,
    catalogue: &Catalogue,
    params: &RankingParams,
    tune: bool,
    progress: &dyn Fn(&str),
) -> Result<HashMap<ModelKind, Json>> {
    let mut out = HashMap::new();
    for name in params.quotas.keys() {
        if let Ok(kind) = ModelKind::parse(name)
            && !(kind == ModelKind::Content && catalogue.tokens.is_empty())
        {
            let p = if tune {
                progress(&format!("tuning {name} on the validation slice"));
                training::tune(kind, &split.validation(), false, params.k, Some(&catalogue.tokens))?.0
            } else {
                kind.base_params()
            };
            out.insert(kind, p);
        }
    }
    Ok(out)
}

/// Trains the rankers on `params.periods` periods before the end of `split`'s history (its
/// validation slice, and so on back): retrievers fitted on each period's history, their
/// candidates labelled by the period's held-out interactions.
pub fn train(
    split: &Split,
    catalogue: &Catalogue,
    params: &RankingParams,
    retrieval_params: &HashMap<ModelKind, Json>,
    unit_ms: i64,
    progress: &dyn Fn(&str),
) -> Result<Rankers> {
    let mut block = Block::default();
    let mut names = Vec::new();
    for (i, period) in periods(split, params.periods, params.period_fraction).iter().enumerate() {
        let users = sample_users(period.eval_users(), params.max_users, params.seed);
        progress(&format!(
            "period {}: retrieval, candidates and features ({} of {} users)",
            i + 1,
            users.len(),
            period.eval_users().len()
        ));
        let retrievers = Retrievers::fit(period, retrieval_params, &params.quotas, catalogue, unit_ms)?;
        let (n, b) = build_block(period, &users, &retrievers, catalogue, params, unit_ms)?;
        names = n;
        block.append(b);
    }
    progress("training the light and heavy rankers");
    train_rankers(&names, &block, params)
}

/// Trains the rankers on `params.periods` periods before the cut, and evaluates the whole cascade (retrieval → light → heavy → top K) on
/// `split`'s held-out rows.
pub fn evaluate(
    split: &Split,
    catalogue: &Catalogue,
    params: &RankingParams,
    retrieval_params: &HashMap<ModelKind, Json>,
    unit_ms: i64,
    progress: &dyn Fn(&str),
) -> Result<CascadeEvaluation> {
    let started = Instant::now();
    let rankers = train(split, catalogue, params, retrieval_params, unit_ms, progress)?;
    let names = rankers.feature_names.clone();
    let train_seconds = started.elapsed().as_secs_f64();

    progress("scoring the held-out period");
    let retrievers = Retrievers::fit(split, retrieval_params, &params.quotas, catalogue, unit_ms)?;
    let (_, block) = build_block(split, split.eval_users(), &retrievers, catalogue, params, unit_ms)?;
    let scoring = Instant::now();
    let (ranked, scores) = rank(&rankers, &block);
    let score_seconds = scoring.elapsed().as_secs_f64();
    let starts = ranked.group_starts();
    let mut lists: HashMap<u32, Vec<u32>> = HashMap::new();
    for (g, &u) in ranked.users.iter().enumerate() {
        lists.insert(u, ranked.items[starts[g]..starts[g + 1]].iter().take(params.k).copied().collect());
    }
    let recs: Vec<Vec<u32>> = split.eval_users().iter().map(|u| lists.remove(u).unwrap_or_default()).collect();
    let report = cascade_eval::evaluate(split, params.k, &recs)?;

    // Beside it: each retriever alone on the same candidates' users (its rank feature orders them).
    let block_starts = block.group_starts();
    let mut best_retrieval = (String::new(), f64::MIN);
    for (name, _) in &retrievers.models {
        let Some(col) = names.iter().position(|n| *n == format!("{name}_rank")) else { continue };
        let scores: Vec<f64> = (0..block.labels.len()).map(|r| -block.row(r)[col]).collect();
        // Over every evaluation user, as the protocol counts them: users without candidates score 0.
        let ndcg =
            block.ndcg(&scores, params.k) * block.group_sizes.len() as f64 / split.eval_users().len().max(1) as f64;
        if ndcg > best_retrieval.1 {
            best_retrieval = (name.clone(), ndcg);
        }
    }
    let candidate_recall = (0..block.group_sizes.len())
        .map(|g| {
            let hits = block.labels[block_starts[g]..block_starts[g + 1]].iter().filter(|&&l| l > 0.0).count();
            hits as f64 / block.n_truth[g].max(1) as f64
        })
        .sum::<f64>()
        / split.eval_users().len().max(1) as f64;
    let probabilities: Vec<f64> = scores.iter().map(|&s| rankers.calibrator.apply(s)).collect();
    let labels: Vec<bool> = ranked.labels.iter().map(|&l| l > 0.0).collect();
    Ok(CascadeEvaluation {
        report,
        retrieval: best_retrieval,
        candidate_recall,
        ece: ece(&probabilities, &labels, 10),
        train_seconds,
        score_seconds,
        rankers,
        retrieval_params: retrieval_params.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_bundle::percentiles;
    use cascade_eval::Row;
    use rand::Rng;
    use std::collections::HashSet;

    /// Users drift: 12 interactions in one genre, then 6 in another, and their future is in the
    /// second. Whole-history retrievers mix both tastes; recency and affinity features see the
    /// drift.
    fn drifting() -> (Split, Catalogue) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (genres, per_genre) = (6u32, 40u32);
        let mut rows = Vec::new();
        for u in 0..240u32 {
            let old = u % genres;
            let new = (old + 1 + (u / genres) % (genres - 1)) % genres;
            let mut seen = HashSet::new();
            let mut push = |genre: u32, ts: i64, rng: &mut rand::rngs::StdRng| loop {
                let item = genre * per_genre + rng.random_range(0..per_genre);
                if seen.insert(item) {
                    rows.push(Row { user: format!("u{u}"), item: format!("i{item}"), rating: 1.0, ts });
                    break;
                }
            };
            for _ in 0..12 {
                push(old, rng.random_range(0..1_000_000), &mut rng);
            }
            for _ in 0..6 {
                push(new, rng.random_range(1_000_000..2_000_000), &mut rng);
            }
            for _ in 0..4 {
                push(new, rng.random_range(2_000_000..3_000_000), &mut rng);
            }
        }
        let tokens = (0..genres * per_genre)
            .map(|i| (format!("i{i}"), vec![(format!("genres:g{}", i / per_genre), 1.0)]))
            .collect();
        let test = rows.iter().filter(|r| r.ts >= 2_000_000).count() as f64 / rows.len() as f64;
        (Split::temporal(rows, test).unwrap(), Catalogue { tokens, released_at: HashMap::new() })
    }

    fn small_params() -> RankingParams {
        let quotas = [("als", 20), ("itemknn", 20), ("pop", 10), ("trending", 10)]
            .into_iter()
            .map(|(n, q)| (n.to_string(), q))
            .collect();
        let mut p = RankingParams { quotas, candidates: 50, light_keep: 30, ..RankingParams::default() };
        for g in &mut p.grid {
            g.min_data_in_leaf = 20;
        }
        p
    }

    fn retrieval_params() -> HashMap<ModelKind, Json> {
        let mut p = HashMap::new();
        p.insert(ModelKind::Als, json!({"factors": 16, "iterations": 10, "regularization": 1.0, "alpha": 1.0}));
        p.insert(ModelKind::ItemKnn, json!({"k": 20}));
        p
    }

    #[test]
    fn blocks_hold_unseen_candidates_true_labels_and_features_as_of_the_cut() {
        let (split, catalogue) = drifting();
        // Absolute values, to compare with counts.
        let params = RankingParams { relative: false, ..small_params() };
        let retrievers = Retrievers::fit(&split, &retrieval_params(), &params.quotas, &catalogue, 1).unwrap();
        let (names, block) = build_block(&split, split.eval_users(), &retrievers, &catalogue, &params, 1).unwrap();
        assert_eq!(names.len(), block.n_features);
        assert_eq!(block.group_sizes.len(), split.eval_users().len());
        let col = |name: &str| names.iter().position(|n| n == name).unwrap_or_else(|| panic!("no feature {name}"));
        let (item_n, user_n) = (col("rank_item.n"), col("rank_user.n"));
        let train = split.train();
        let mut item_counts = vec![0.0; train.items.len()];
        for r in split.train_rows() {
            item_counts[train.items.get(&r.item).unwrap() as usize] += 1.0;
        }
        let starts = block.group_starts();
        for (g, &u) in block.users.iter().enumerate() {
            let rows = starts[g]..starts[g + 1];
            assert!(rows.len() <= params.candidates);
            let items = &block.items[rows.clone()];
            let mut distinct = items.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), items.len(), "candidates are deduplicated");
            for r in rows {
                let item = block.items[r];
                assert!(split.seen(u).binary_search(&item).is_err(), "seen items are never candidates");
                let truth = split.truth_items(u).contains(&item);
                assert_eq!(block.labels[r] > 0.0, truth);
                // The feature engine's aggregates count exactly the history before the cut.
                assert_eq!(block.row(r)[item_n], item_counts[item as usize]);
                assert_eq!(block.row(r)[user_n], split.seen(u).len() as f64);
            }
        }
    }

    #[test]
    fn the_cascade_beats_its_best_retriever_when_tastes_drift() {
        let (split, catalogue) = drifting();
        let params = small_params();
        let rp = retrieval_params();
        let rankers = train(&split, &catalogue, &params, &rp, 1, &|_| {}).unwrap();
        let names = rankers.feature_names.clone();
        let retrievers = Retrievers::fit(&split, &rp, &params.quotas, &catalogue, 1).unwrap();
        let (_, block) = build_block(&split, split.eval_users(), &retrievers, &catalogue, &params, 1).unwrap();
        let (ranked, scores) = rank(&rankers, &block);
        let cascade = ranked.ndcg(&scores, 10);
        for source in ["als", "itemknn"] {
            let col = names.iter().position(|n| *n == format!("{source}_rank")).unwrap();
            let by_source: Vec<f64> = (0..block.labels.len()).map(|r| -block.row(r)[col]).collect();
            let alone = block.ndcg(&by_source, 10);
            assert!(cascade > alone + 0.05, "cascade {cascade:.4} vs {source} {alone:.4}");
        }
        // Calibrated scores are probabilities.
        let p: Vec<f64> = scores.iter().map(|&s| rankers.calibrator.apply(s)).collect();
        assert!(p.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn percentiles_rank_within_the_group_highest_first() {
        // Ties share the first position; NaN stays NaN.
        let mut col = vec![5.0, f64::NAN, 7.0, 5.0, 1.0];
        percentiles(&mut col);
        assert_eq!(col[0], 1.0 / 3.0);
        assert!(col[1].is_nan());
        assert_eq!([col[2], col[3], col[4]], [0.0, 1.0 / 3.0, 1.0]);
    }

    proptest::proptest! {
        #[test]
        fn integer_keys_order_as_total_cmp(values in proptest::collection::vec(
            proptest::prop_oneof![-3i8..3i8, proptest::strategy::Just(100i8)], 0..60)) {
            // Few distinct values (ties), ±0, NaN and infinities among them.
            let special = [f64::NAN, -0.0, f64::INFINITY, f64::NEG_INFINITY];
            let xs: Vec<f64> = values.iter().map(|&v| if v == 100 { special[values.len() % 4] } else { f64::from(v) * 0.5 }).collect();
            let mut by_cmp: Vec<usize> = (0..xs.len()).collect();
            by_cmp.sort_by(|&a, &b| xs[b].total_cmp(&xs[a]).then(a.cmp(&b)));
            proptest::prop_assert_eq!(rank_desc(&xs), by_cmp);
            // Percentiles: position of the first equal value among the non-NaN, highest first.
            let mut got = xs.clone();
            percentiles(&mut got);
            let finite: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
            let scale = finite.len().saturating_sub(1).max(1) as f64;
            for (x, p) in xs.iter().zip(&got) {
                if x.is_nan() {
                    proptest::prop_assert!(p.is_nan());
                } else {
                    let above = finite.iter().filter(|&&y| y > *x).count();
                    proptest::prop_assert_eq!(*p, above as f64 / scale);
                }
            }
        }
    }

    #[test]
    fn layouts_hold_values_as_they_are_as_percentiles_or_both_and_parse_back() {
        let layout = |absolute, relative| {
            Layout::new(
                vec!["als".into()],
                true,
                vec!["rank_item.n".into()],
                vec!["rank_user.n".into()],
                absolute,
                relative,
            )
        };
        let inputs = CandidateInputs {
            source_scores: vec![vec![0.5, 0.9, 0.1]],
            recent: vec![0.2, 0.0, 0.4],
            affinity: vec![(0.1, 0.3), (0.2, 0.2), (0.0, 0.0)],
            item_age_days: vec![1.0, 3.0, 2.0],
            release_age_years: vec![f64::NAN, 1.0, 2.0],
            item_aggs: vec![&[10.0], &[30.0], &[20.0]],
            user_aggs: &[4.0],
        };
        let both = layout(true, true);
        assert_eq!(both.names.len(), 2 * 7 + 2, "{:?}", both.names);
        let values = both.assemble(&inputs);
        let col = |name: &str| {
            let c = both.names.iter().position(|n| n == name).unwrap_or_else(|| panic!("no {name}"));
            (0..3).map(|r| values[r * both.names.len() + c]).collect::<Vec<f64>>()
        };
        assert_eq!(col("als_score"), [0.5, 0.9, 0.1]);
        assert_eq!(col("als_score_pct"), [0.5, 0.0, 1.0]);
        assert_eq!(col("als_rank"), [1.0, 0.0, 2.0]);
        assert_eq!(col("rank_item.n"), [10.0, 30.0, 20.0]);
        assert_eq!(col("rank_item.n_pct"), [1.0, 0.0, 0.5]);
        assert_eq!(col("rank_user.n"), [4.0; 3]);
        assert!(col("release_age_years_pct")[0].is_nan());
        // Each variant's rows are the matching columns of the combined one.
        for (absolute, relative) in [(true, false), (false, true)] {
            let l = layout(absolute, relative);
            assert!(l.names.iter().all(|n| both.names.contains(n)));
            assert_eq!(l.names.iter().any(|n| n.ends_with("_pct")), relative);
            assert_eq!(l.names.contains(&"als_score".to_string()), absolute);
            let v = l.assemble(&inputs);
            for (c, name) in l.names.iter().enumerate() {
                let want = col(name);
                let got: Vec<f64> = (0..3).map(|r| v[r * l.names.len() + c]).collect();
                assert!(got.iter().zip(&want).all(|(a, b)| a == b || a.is_nan() && b.is_nan()), "{name}");
            }
        }
        for (absolute, relative) in [(true, true), (true, false), (false, true)] {
            let l = layout(absolute, relative);
            assert_eq!(Layout::parse(&l.names).unwrap(), l);
        }
        assert!(Layout::parse(&["als_rank".into(), "mystery".into()]).is_err());
    }

    #[test]
    fn training_users_are_a_seeded_sorted_sample() {
        let users: Vec<u32> = (0..100).map(|u| u * 3).collect();
        assert_eq!(sample_users(&users, 500, 1), users);
        let a = sample_users(&users, 10, 1);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a.iter().all(|u| users.contains(u)));
        assert_eq!(a, sample_users(&users, 10, 1));
        assert_ne!(a, sample_users(&users, 10, 2));
    }

    #[test]
    fn periods_step_back_through_validation_slices() {
        let (split, _) = drifting();
        let ps = periods(&split, 2, 0.1);
        assert_eq!(ps.len(), 2);
        let end = |s: &Split| s.train_rows().iter().map(|r| r.ts).max().unwrap();
        assert!(end(&ps[1]) < end(&ps[0]) && end(&ps[0]) < end(&split));
    }
}
