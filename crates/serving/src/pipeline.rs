//! The serving cascade for one loaded bundle: retrieval → features → light ranker → heavy ranker
//! → business rules → exploration.
//!
//! Each stage is a plain function of its inputs so that the server can run it under its own
//! deadline and fall back when it is missing, slow or failing (see `cascade-server`'s
//! `recommend`). The ranker's features are built by [`Layout::assemble`], the same code that
//! builds the training rows, from inputs computed for the request's candidates only: each
//! source's score of each candidate (`Retriever::score_items`), affinities and ages from
//! [`Live`], and the `rank_item`/`rank_user` aggregates from the online feature store.

use crate::error::{Error, Result};
use crate::explore::{self, ExplorationConfig, Pick};
use crate::live::{Live, UserHistory};
use crate::rollout::RolloutConfig;
use crate::rules::{ItemFacts, Rule, RuleContext, RuleError, Rules};
use cascade_bundle::{
    Candidate, CandidateInputs, CandidateSource, Generator, Layout, Lists, LoadedBundle, Rankers, Request,
    RetrieverSource, SourceKind, TokenProfile, affinity, aggregate_value, decode_list, encode_list,
};
use cascade_core::Timestamp;
use cascade_features::{Entities, FeatureError, OnlineStore};
use cascade_models::AnyModel;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

const DAY_MS: f64 = 86_400_000.0;

/// One named pipeline, `[pipelines.<name>]` in cascade.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Retrieval sources and the candidates each may contribute, asked in this order:
    /// `als` (ANN over the ALS item factors, folded in from fresh history for users the bundle
    /// does not know), `itemknn`, `bpr`, `content`, `trending`, `pop`.
    pub sources: BTreeMap<String, usize>,
    /// Most candidates per request.
    pub candidates: usize,
    /// Candidates the light ranker passes to the heavy one (default: what training used).
    pub light_keep: Option<usize>,
    /// Users with fewer interactions are served by the cold-start sources (pop, trending,
    /// content).
    pub min_history: usize,
    /// Default and largest `k` a request may ask for.
    pub k: usize,
    pub max_k: usize,
    /// Stage deadlines (ms): a stage that has not answered by then is abandoned and the request
    /// is served by the next path (see the fallback order in docs/serving.md).
    pub retrieval_ms: u64,
    pub features_ms: u64,
    pub ranking_ms: u64,
    /// Sources served from per-user lists computed on a schedule (`serving.precompute_interval`)
    /// rather than per request: heavy ones without an index, like `bpr`. Users without a list
    /// yet are scored at request time.
    pub precomputed: Vec<String>,
    /// Business rules in order; absent: exclude seen, unavailable and requested items.
    pub rules: Option<Vec<Rule>>,
    pub exploration: ExplorationConfig,
    /// Items served when nothing else can be (no bundle, no interaction yet).
    pub fallback_items: Vec<String>,
    /// Explanations (`explain: true`) name this many of the heavy ranker's top reasons.
    pub explain_reasons: usize,
    /// How a challenger bundle is rolled out on this pipeline (see [`crate::rollout`]).
    pub rollout: RolloutConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let sources = cascade_bundle::default_quotas();
        PipelineConfig {
            sources,
            candidates: 500,
            light_keep: None,
            min_history: 5,
            k: 10,
            max_k: 100,
            retrieval_ms: 50,
            features_ms: 30,
            ranking_ms: 80,
            precomputed: vec!["bpr".into()],
            rules: None,
            exploration: ExplorationConfig::default(),
            fallback_items: Vec::new(),
            explain_reasons: 3,
            rollout: RolloutConfig::default(),
        }
    }
}

/// `config` with the rankers' aggregate views (`rank_item`, `rank_user`; see
/// [`cascade_bundle::aggregate_views`]) over its interaction types, unless it defines views of
/// those names itself.
pub fn with_ranking_views(config: &cascade_core::Config) -> Result<cascade_core::Config> {
    let mut config = config.clone();
    let interactions = config.interactions()?;
    let types: Vec<&str> = interactions.keys().map(String::as_str).collect();
    if types.is_empty() {
        return Ok(config);
    }
    let views: BTreeMap<String, cascade_core::features::ViewConfig> =
        toml::from_str(&cascade_bundle::aggregate_views(&types))
            .map_err(|e| Error::Internal(format!("the built-in ranking views do not parse: {e}")))?;
    for (name, view) in views {
        config.features.entry(name).or_insert(view);
    }
    Ok(config)
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub config: PipelineConfig,
    pub rules: Rules,
}

impl Pipeline {
    /// Validates `config`; errors name the field as `pipelines.<name>.<field>`.
    pub fn new(name: &str, config: PipelineConfig) -> Result<Pipeline> {
        let field = |f: &str, why: &str| Error::config(format!("pipelines.{name}.{f}"), why);
        if let Some(s) = config.sources.keys().find(|s| SourceKind::parse(s).is_none()) {
            return Err(field(&format!("sources.{s}"), &format!("unknown source (known: {})", SourceKind::names())));
        }
        let als = SourceKind::Als.name();
        if let Some(s) = config.precomputed.iter().find(|s| !config.sources.contains_key(*s) || *s == als) {
            return Err(field(
                &format!("precomputed.{s}"),
                "must be one of the pipeline's sources other than als (which the ANN index serves)",
            ));
        }
        if config.candidates == 0 {
            return Err(field("candidates", "must be at least 1"));
        }
        if config.k == 0 || config.k > config.max_k {
            return Err(field("k", &format!("must be within 1..={}", config.max_k)));
        }
        for (f, v) in [
            ("retrieval_ms", config.retrieval_ms),
            ("features_ms", config.features_ms),
            ("ranking_ms", config.ranking_ms),
        ] {
            if v == 0 {
                return Err(field(f, "must be at least 1"));
            }
        }
        config.exploration.validate().map_err(|e| field("exploration", &e.to_string()))?;
        if let Some((key, why)) = config.rollout.problem() {
            return Err(field(&format!("rollout.{key}"), &why));
        }
        let rules = config.rules.clone().unwrap_or_else(|| {
            vec![Rule::ExcludeSeen { window: None }, Rule::ExcludeUnavailable, Rule::ExcludeRequested]
        });
        let rules = Rules::new(rules).map_err(|e| match e {
            RuleError::Invalid { index, field, message } => {
                Error::config(format!("pipelines.{name}.rules[{index}].{field}"), message)
            }
        })?;
        Ok(Pipeline { name: name.to_string(), config, rules })
    }

    /// Every pipeline of a config's `[pipelines]` table; `default` exists even when not written.
    pub fn from_tables(tables: &BTreeMap<String, toml::Table>) -> Result<BTreeMap<String, Arc<Pipeline>>> {
        let mut out = BTreeMap::new();
        for (name, table) in tables {
            let config: PipelineConfig =
                table.clone().try_into().map_err(|e| Error::config(format!("pipelines.{name}"), e.to_string()))?;
            out.insert(name.clone(), Arc::new(Pipeline::new(name, config)?));
        }
        if !out.contains_key("default") {
            out.insert("default".into(), Arc::new(Pipeline::new("default", PipelineConfig::default())?));
        }
        for p in out.values() {
            if let Some(other) = &p.config.rollout.challenger_pipeline
                && !out.contains_key(other)
            {
                return Err(Error::config(
                    format!("pipelines.{}.rollout.challenger_pipeline", p.name),
                    format!("no pipeline `{other}` is configured"),
                ));
            }
        }
        Ok(out)
    }
}

/// A request after the user is resolved against the bundle and [`Live`].
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The user's index in the bundle (its models' user vectors), when the bundle knows it.
    pub user: Option<u32>,
    /// Bundle indices of the user's recent items, sorted, distinct: the history models score from.
    pub history: Vec<u32>,
    /// The user's latest `recent` distinct items, sorted (the recency similarity).
    pub recent: Vec<u32>,
    /// Item id → latest interaction (ms), for `exclude_seen`.
    pub seen: HashMap<String, i64>,
    /// Items (ids) of the history, for the affinity profile (all of them, known to the bundle or
    /// not).
    pub history_items: Vec<Arc<str>>,
    /// Sorted bundle indices retrieval must not propose: the history and the request's exclude.
    pub exclude: Vec<u32>,
    pub excluded_ids: HashSet<String>,
    pub now_ms: i64,
    pub cold: bool,
    /// The user's lists of the pipeline's precomputed sources, read from the online store.
    pub lists: Lists,
}

/// The cascade's ranking stages bound to a bundle's models.
#[derive(Debug)]
struct RankingStage {
    rankers: Arc<Rankers>,
    layout: Layout,
    /// The model behind each layout source.
    sources: Vec<Arc<AnyModel>>,
    /// The aggregates as online feature references (`view:feature`): items', then the user's.
    item_refs: Vec<String>,
    user_refs: Vec<String>,
    knn: Option<Arc<AnyModel>>,
}

/// One candidate after ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedItem {
    /// Bundle item index.
    pub item: u32,
    pub candidate: Candidate,
    pub light: Option<f64>,
    pub heavy: Option<f64>,
    /// Calibrated probability of an interaction, when the heavy ranker scored it.
    pub probability: Option<f64>,
    /// The score the order follows (probability, light score, or the retrieval order's).
    pub score: f64,
    /// The heavy ranker's feature row (kept for explanations and the feature digest).
    pub features: FeatureRow,
}

/// One row of a request's feature matrix, shared by the ranked items rather than copied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureRow {
    matrix: Arc<[f64]>,
    row: usize,
    width: usize,
}

impl FeatureRow {
    pub fn values(&self) -> &[f64] {
        &self.matrix[self.row * self.width..(self.row + 1) * self.width]
    }
}

/// Which stage ordered the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankedBy {
    Heavy,
    Light,
    Retrieval,
}

/// A loaded bundle ready to serve.
#[derive(Debug)]
pub struct Serving {
    pub bundle: Arc<LoadedBundle>,
    ranking: Option<RankingStage>,
    /// Why the bundle's rankers cannot be used (none trained, a layout this version does not
    /// compute, a source model missing).
    pub ranking_problem: Option<String>,
    /// Each pipeline's generator, built on first use (sources precompute per bundle).
    generators: parking_lot::RwLock<HashMap<String, Arc<Generator>>>,
}

/// Ranker features read from the online store, per candidate and for the user.
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    pub items: Vec<Vec<f64>>,
    pub user: Vec<f64>,
}

impl Serving {
    pub fn new(bundle: Arc<LoadedBundle>) -> Serving {
        let (ranking, ranking_problem) = match &bundle.rankers {
            None => (None, Some("the bundle has no rankers".to_string())),
            Some(rankers) => match Self::ranking_stage(&bundle, rankers.clone()) {
                Ok(stage) => (Some(stage), None),
                Err(e) => (None, Some(e)),
            },
        };
        Serving { bundle, ranking, ranking_problem, generators: Default::default() }
    }

    fn ranking_stage(bundle: &LoadedBundle, rankers: Arc<Rankers>) -> Result<RankingStage, String> {
        let layout = Layout::parse(&rankers.feature_names).map_err(|e| e.to_string())?;
        let sources = layout
            .sources
            .iter()
            .map(|s| {
                bundle
                    .models
                    .get(s)
                    .cloned()
                    .ok_or_else(|| format!("the rankers read source `{s}`, which the bundle lacks"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let knn = bundle.models.values().find(|m| matches!(***m, AnyModel::ItemKnn(_))).cloned();
        if layout.recent_knn && knn.is_none() {
            return Err("the rankers read recent_knn_score; the bundle has no item-kNN".into());
        }
        let colon = |n: &String| n.replacen('.', ":", 1);
        let item_refs = layout.item_aggs.iter().map(colon).collect();
        let user_refs = layout.user_aggs.iter().map(colon).collect();
        Ok(RankingStage { rankers, layout, sources, item_refs, user_refs, knn })
    }

    pub fn version(&self) -> u64 {
        self.bundle.version
    }

    pub fn has_rankers(&self) -> bool {
        self.ranking.is_some()
    }

    /// The online features the ranker reads: `view:feature` for items, then for the user.
    pub fn feature_refs(&self) -> (&[String], &[String]) {
        match &self.ranking {
            Some(stage) => (&stage.item_refs, &stage.user_refs),
            None => (&[], &[]),
        }
    }

    /// Resolves the user and the request's exclusions against the bundle and its history.
    pub fn prepare(
        &self,
        user: Option<&str>,
        history: &UserHistory,
        exclude: &[String],
        now_ms: i64,
        pipeline: &Pipeline,
    ) -> Prepared {
        let bundle = &self.bundle;
        let mut seen: HashMap<String, i64> = HashMap::new();
        for (ts, item) in &history.events {
            let at = seen.entry(item.to_string()).or_insert(*ts);
            *at = (*at).max(*ts);
        }
        let mut history_items: Vec<Arc<str>> = Vec::new();
        let mut known: HashSet<&str> = HashSet::new();
        for (_, item) in &history.events {
            if known.insert(item) {
                history_items.push(item.clone());
            }
        }
        let mut indices: Vec<u32> = history_items.iter().filter_map(|i| bundle.items.get(i)).collect();
        indices.sort_unstable();
        // As many as training's recency similarity looked at, chosen the way it chose them.
        let recent_n = bundle.rankers.as_ref().map_or(0, |r| r.params.recent);
        let recent = cascade_bundle::recent_items(
            history.events.iter().filter_map(|(_, item)| bundle.items.get(item)),
            recent_n,
        );
        let excluded_ids: HashSet<String> = exclude.iter().cloned().collect();
        let mut excluded: Vec<u32> = indices.clone();
        excluded.extend(exclude.iter().filter_map(|i| bundle.items.get(i)));
        excluded.sort_unstable();
        excluded.dedup();
        let user_index = user.and_then(|u| bundle.users.get(u));
        let cold = history_items.len() < pipeline.config.min_history;
        Prepared {
            user: user_index,
            history: indices,
            recent,
            seen,
            history_items,
            exclude: excluded,
            excluded_ids,
            now_ms,
            cold,
            lists: Lists::new(),
        }
    }

    /// Retrieval: the pipeline's sources (those the bundle has), their quotas, deduplicated.
    pub fn retrieve(&self, p: &Prepared, pipeline: &Pipeline) -> (Vec<Candidate>, Vec<String>) {
        let cached = self.generators.read().get(&pipeline.name).cloned();
        let generator = cached.unwrap_or_else(|| {
            let mut generator = self.bundle.generator_with(&pipeline.config.sources, &pipeline.config.precomputed);
            generator.min_history = pipeline.config.min_history;
            // Candidates filled the way the rankers' training sets were.
            generator.fill = self.bundle.rankers.as_ref().map_or_else(Default::default, |r| r.params.fill);
            let generator = Arc::new(generator);
            self.generators.write().insert(pipeline.name.clone(), generator.clone());
            generator
        });
        let request = Request::new(if p.cold { None } else { p.user }, &p.history, &p.exclude).with_lists(&p.lists);
        let candidates = generator.generate(&request, pipeline.config.candidates);
        let names = generator.source_names();
        (candidates, names)
    }

    /// The online store's name of `user`'s precomputed list of `source` for this bundle (item
    /// indices are the bundle's, so a new bundle starts without lists).
    pub fn list_name(&self, source: &str, user: &str) -> String {
        format!("lists:{}:{source}:{user}", self.bundle.version)
    }

    /// The lists a request of `user` reads: (source, name in the online store) for each of the
    /// pipeline's precomputed sources, none for users the bundle does not know or cold ones.
    pub fn list_names(&self, pipeline: &Pipeline, user: &str, p: &Prepared) -> Vec<(String, String)> {
        if p.cold || p.user.is_none() {
            return Vec::new();
        }
        pipeline.config.precomputed.iter().map(|s| (s.clone(), self.list_name(s, user))).collect()
    }

    /// Decodes lists read from the online store (`(source, bytes)`) into `p.lists`; bytes that
    /// do not decode, or name items beyond the bundle, are skipped (the source scores instead).
    pub fn accept_lists(&self, p: &mut Prepared, read: impl IntoIterator<Item = (String, Option<Arc<[u8]>>)>) {
        let n_items = self.bundle.items.len();
        for (source, bytes) in read {
            let list =
                bytes.as_deref().and_then(decode_list).filter(|l| l.iter().all(|&(i, _)| (i as usize) < n_items));
            if let Some(list) = list {
                p.lists.insert(source, list);
            }
        }
    }

    /// Computes `source`'s best `n` items for each of `users` (user id, their items most recent
    /// last), as (online store name, encoded list). Users the bundle does not know are skipped
    /// (the source has nothing ahead of time for them).
    pub fn precompute(&self, source: &str, users: &[(String, Vec<Arc<str>>)], n: usize) -> Vec<(String, Vec<u8>)> {
        let Some(model) = self.bundle.models.get(source) else { return Vec::new() };
        let retriever = RetrieverSource::new(source, model.clone());
        let mut out = Vec::with_capacity(users.len());
        for (user, items) in users {
            let Some(u) = self.bundle.users.get(user) else { continue };
            let mut history: Vec<u32> = items.iter().filter_map(|i| self.bundle.items.get(i)).collect();
            history.sort_unstable();
            history.dedup();
            let list = retriever.candidates(&Request::new(Some(u), &history, &[]), n);
            out.push((self.list_name(source, user), encode_list(&list)));
        }
        out
    }

    /// Items in the bundle's id space.
    pub fn item_id(&self, item: u32) -> &str {
        self.bundle.items.id(item)
    }

    /// Light then heavy ranking of `candidates` with their online `aggregates`; `keep` overrides
    /// the light ranker's cut. `None` when the bundle has no usable rankers.
    pub fn rank(
        &self,
        p: &Prepared,
        candidates: &[Candidate],
        aggregates: &Aggregates,
        live: &Live,
        keep: Option<usize>,
    ) -> Option<Vec<RankedItem>> {
        let stage = self.ranking.as_ref()?;
        if candidates.is_empty() {
            return Some(Vec::new());
        }
        let items: Vec<u32> = candidates.iter().map(|c| c.item).collect();
        let values = self.feature_rows(p, candidates, aggregates, live)?;
        let n_features = stage.layout.names.len();
        let rankers = &stage.rankers;
        let light = rankers.light_scores(&values);
        // The light ranker's cut in training's order (`rank_desc`: best first, ties by position).
        let mut order = cascade_bundle::rank_desc(&light);
        order.truncate(keep.unwrap_or(rankers.params.light_keep).max(1));
        let kept_values: Arc<[f64]> =
            order.iter().flat_map(|&r| &values[r * n_features..(r + 1) * n_features]).copied().collect();
        let heavy = rankers.heavy.predict_raw_batch(&kept_values);
        let mut ranked: Vec<RankedItem> = order
            .iter()
            .enumerate()
            .map(|(j, &r)| {
                let probability = rankers.calibrator.apply(heavy[j]);
                RankedItem {
                    item: items[r],
                    candidate: candidates[r].clone(),
                    light: Some(light[r]),
                    heavy: Some(heavy[j]),
                    probability: Some(probability),
                    score: heavy[j],
                    features: FeatureRow { matrix: kept_values.clone(), row: j, width: n_features },
                }
            })
            .collect();
        // Best first by the heavy score; ties keep the light order.
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        for r in &mut ranked {
            r.score = r.probability.unwrap_or(r.score);
        }
        Some(ranked)
    }

    /// Reads the ranker's aggregates at `at` (ms) from the online store: the item view for every
    /// candidate and the user view once (not once per candidate), the two reads concurrently.
    pub async fn read_aggregates(
        &self,
        features: &OnlineStore,
        user: &str,
        items: &[&str],
        at: i64,
    ) -> Result<Aggregates, FeatureError> {
        let (item_refs, user_refs) = self.feature_refs();
        let item_rows =
            items.iter().map(|i| Entities { item: Some((*i).to_string()), ..Entities::default() }).collect();
        let (items, user) = tokio::join!(
            read_values(features, item_refs, item_rows, at),
            read_values(features, user_refs, vec![Entities::user(user.to_string())], at)
        );
        Ok(Aggregates { items: items?, user: user?.pop().unwrap_or_default() })
    }

    /// The ranker's feature rows of `candidates` (row-major, the bundle's feature list): each
    /// source's score of each candidate, the recency similarity, affinities and ages from `live`,
    /// the online `aggregates` — filled by [`cascade_bundle::Layout::assemble`], the code training
    /// fills its rows with. `None` when the bundle has no usable rankers.
    pub fn feature_rows(
        &self,
        p: &Prepared,
        candidates: &[Candidate],
        aggregates: &Aggregates,
        live: &Live,
    ) -> Option<Vec<f64>> {
        let stage = self.ranking.as_ref()?;
        let items: Vec<u32> = candidates.iter().map(|c| c.item).collect();
        let user = p.user.unwrap_or(u32::MAX);
        let ones = vec![1f32; p.history.len()];
        let mut buf = vec![0f32; items.len()];
        let source_scores: Vec<Vec<f64>> = stage
            .sources
            .iter()
            .map(|m| {
                m.retriever().score_items(user, (&p.history, &ones), &items, &mut buf);
                buf.iter().map(|&x| f64::from(x)).collect()
            })
            .collect();
        let recent = match (&stage.knn, stage.layout.recent_knn) {
            (Some(knn), true) => {
                let ones = vec![1f32; p.recent.len()];
                knn.retriever().score_items(user, (&p.recent, &ones), &items, &mut buf);
                buf.iter().map(|&x| f64::from(x)).collect()
            }
            _ => Vec::new(),
        };
        // The user's attribute profile, over every distinct item of the history.
        let history_ids: Vec<&str> = p.history_items.iter().map(|s| &**s).collect();
        let mut tokens: Vec<u32> = Vec::new();
        live.with_items(&history_ids, |_, item| {
            tokens.extend_from_slice(item.map(|i| i.tokens.as_slice()).unwrap_or_default());
        });
        let profile = TokenProfile::count(tokens);
        let hist_len = p.history_items.len().max(1) as f64;
        let ids: Vec<&str> = items.iter().map(|&i| self.bundle.items.id(i)).collect();
        let now = p.now_ms;
        let facts: Vec<((f64, f64), f64, f64)> = live.with_items(&ids, |_, item| match item {
            Some(it) => (
                affinity(&profile, &it.tokens, hist_len),
                it.first_seen.map_or(f64::NAN, |f| (now - f) as f64 / DAY_MS),
                it.released_at.map_or(f64::NAN, |r| (now - r) as f64 / (365.25 * DAY_MS)),
            ),
            None => ((0.0, 0.0), f64::NAN, f64::NAN),
        });
        let missing_items = vec![f64::NAN; stage.layout.item_aggs.len()];
        let missing_user = vec![f64::NAN; stage.layout.user_aggs.len()];
        let inputs = CandidateInputs {
            source_scores,
            recent,
            affinity: facts.iter().map(|f| f.0).collect(),
            item_age_days: facts.iter().map(|f| f.1).collect(),
            release_age_years: facts.iter().map(|f| f.2).collect(),
            item_aggs: (0..items.len())
                .map(|r| aggregates.items.get(r).map_or(&missing_items[..], |v| &v[..]))
                .collect(),
            user_aggs: if aggregates.user.len() == missing_user.len() { &aggregates.user } else { &missing_user },
        };
        Some(stage.layout.assemble(&inputs))
    }

    /// The heavy ranker's strongest reasons for one ranked item: (feature, value, contribution).
    pub fn reasons(&self, item: &RankedItem, n: usize) -> Vec<(String, f64, f64)> {
        let Some(stage) = &self.ranking else { return Vec::new() };
        if item.features.values().len() != stage.layout.names.len() || n == 0 {
            return Vec::new();
        }
        cascade_rank::shap::top_reasons(&stage.rankers.heavy, item.features.values(), n)
            .into_iter()
            .map(|r| {
                let name = stage.layout.names.get(r.feature.parse::<usize>().unwrap_or(usize::MAX)).cloned();
                (name.unwrap_or(r.feature), r.value, r.contribution)
            })
            .collect()
    }
}

/// The candidates in retrieval order as a ranked list (when ranking is skipped): the generator's
/// fill order, each source's own preference within its share.
pub fn retrieval_order(candidates: Vec<Candidate>) -> Vec<RankedItem> {
    let n = candidates.len().max(1) as f64;
    candidates
        .into_iter()
        .enumerate()
        .map(|(r, c)| RankedItem {
            item: c.item,
            score: 1.0 - r as f64 / n,
            candidate: c,
            light: None,
            heavy: None,
            probability: None,
            features: FeatureRow::default(),
        })
        .collect()
}

/// An item in the response.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub id: String,
    /// Index into the ranked list, or `None` for a pinned item from outside it.
    pub ranked: Option<usize>,
    /// Position among the items the filtering rules kept: the rank exploration saw (logged as
    /// `greedy_rank`, which off-policy evaluation reads).
    pub greedy_rank: Option<usize>,
    pub score: f64,
    pub propensity: f64,
    pub explored: bool,
    /// What the rules did to it.
    pub rules: Vec<String>,
}

/// What the rules removed, and what they noted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Finished {
    pub shown: Vec<Shown>,
    pub removed: Vec<(String, &'static str)>,
    pub notes: Vec<String>,
}

/// Rules and exploration over a ranked list (items as ids): the filtering rules, then the
/// exploration policy's slate and backups, then the list rules placing at most `k`.
pub fn finish(
    pipeline: &Pipeline,
    ranked: &[(String, f64)],
    p: &Prepared,
    k: usize,
    live: &Live,
    rng: &mut impl rand::Rng,
) -> Finished {
    let ids: Vec<&str> = ranked.iter().map(|(id, _)| id.as_str()).collect();
    let facts: Vec<Arc<ItemFacts>> = live.with_items(&ids, |n, item| match item {
        Some(it) => it.facts.clone(),
        // Known to the bundle but never in the log as an item record: nothing says it is gone.
        None => Arc::new(ItemFacts { id: ids[n].to_string(), available: true, ..ItemFacts::default() }),
    });
    let ctx = RuleContext { now_ms: p.now_ms, seen: &p.seen, excluded: &p.excluded_ids };
    let filtered = pipeline.rules.filter(&facts, &ctx);
    let engagement: Vec<(f64, f64)> = live.with_items(&ids, |_, item| {
        item.map_or((0.0, 0.0), |it| (it.impressions as f64, it.interactions.min(it.impressions) as f64))
    });
    let kept = &filtered.kept;
    let picks: Vec<Pick> = explore::explore(&pipeline.config.exploration, kept.len(), k, &|j| engagement[kept[j]], rng);
    let preference: Vec<usize> = picks.iter().map(|pk| kept[pk.index]).collect();
    let by_candidate: HashMap<usize, &Pick> = picks.iter().map(|pk| (kept[pk.index], pk)).collect();
    let lookup = |id: &str| live.items(&[id]).pop().flatten().map(|it| (*it.facts).clone());
    let arranged = pipeline.rules.arrange(&facts, &preference, k, &ctx, &lookup);
    let shown = arranged
        .placed
        .into_iter()
        .map(|placed| match placed.index {
            Some(c) => {
                let pick = by_candidate.get(&c);
                Shown {
                    id: ranked[c].0.clone(),
                    ranked: Some(c),
                    greedy_rank: pick.map(|pk| pk.index),
                    score: ranked[c].1,
                    propensity: pick.map_or(1.0, |pk| pk.propensity),
                    explored: pick.is_some_and(|pk| pk.explored),
                    rules: placed.rules,
                }
            }
            None => Shown {
                id: placed.pinned.map(|f| f.id).unwrap_or_default(),
                ranked: None,
                greedy_rank: None,
                score: 0.0,
                propensity: 1.0,
                explored: false,
                rules: placed.rules,
            },
        })
        .collect();
    Finished {
        shown,
        removed: filtered.removed.iter().map(|&(c, rule)| (ranked[c].0.clone(), rule)).collect(),
        notes: arranged.notes,
    }
}

/// A short digest of the feature rows a response was ranked from, logged with the impression
/// so an audit can tell whether a recomputation saw the same inputs.
pub fn feature_digest(rows: &[&[f64]]) -> String {
    // FNV-1a over the bit patterns: stable across platforms and releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for row in rows {
        for v in *row {
            for b in v.to_bits().to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    format!("{h:016x}")
}

/// Per row, the features `refs` (`view:feature`) as ranker values.
async fn read_values(
    features: &OnlineStore,
    refs: &[String],
    rows: Vec<Entities>,
    at: i64,
) -> Result<Vec<Vec<f64>>, FeatureError> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let selection = features.features().select(refs)?;
    let values = features.read(&selection, &rows, Timestamp(at)).await?;
    let names: Vec<&str> = refs.iter().map(|r| r.split_once(':').map_or(r.as_str(), |(_, f)| f)).collect();
    Ok(values
        .iter()
        .map(|row| names.iter().zip(row).map(|(name, v)| aggregate_value(name, v.value.as_ref())).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented `[pipelines.default]` example of the config template, uncommented.
    fn template_example() -> String {
        let t = cascade_core::config::TEMPLATE;
        let start = t.find("# [pipelines.default]").expect("the template shows a pipeline");
        let end = t[start..].find("# --- feature").unwrap() + start;
        t[start..end].lines().map(|l| l.strip_prefix("# ").unwrap_or("")).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn the_template_example_is_a_valid_pipeline_with_the_defaults_it_claims() {
        let tables: BTreeMap<String, toml::Table> = toml::from_str(&template_example())
            .map(|t: toml::Table| {
                t["pipelines"]
                    .as_table()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_table().unwrap().clone()))
                    .collect()
            })
            .unwrap();
        let pipelines = Pipeline::from_tables(&tables).unwrap();
        let p = &pipelines["default"];
        let defaults = PipelineConfig::default();
        assert_eq!(p.config.sources, defaults.sources);
        assert_eq!(
            (p.config.k, p.config.max_k, p.config.candidates),
            (defaults.k, defaults.max_k, defaults.candidates)
        );
        assert_eq!(p.config.exploration, defaults.exploration);
        assert_eq!(p.rules.rules().len(), 9);
        // Without any table, `default` exists with the default rules.
        let pipelines = Pipeline::from_tables(&BTreeMap::new()).unwrap();
        assert_eq!(pipelines["default"].rules.rules().len(), 3);
    }

    #[test]
    fn invalid_pipelines_name_the_field() {
        let bad = |toml_text: &str| {
            let table: toml::Table = toml::from_str(toml_text).unwrap();
            Pipeline::from_tables(&[("home".to_string(), table)].into()).unwrap_err().to_string()
        };
        assert!(bad("k = 0").starts_with("pipelines.home.k:"), "{}", bad("k = 0"));
        assert!(bad("sources = { magic = 3 }").contains("pipelines.home.sources.magic"));
        assert!(bad("ranking_ms = 0").contains("pipelines.home.ranking_ms"));
        assert!(bad("precomputed = [\"als\"]").contains("pipelines.home.precomputed.als"));
        assert!(bad("precomputed = [\"nope\"]").contains("pipelines.home.precomputed.nope"));
        assert!(bad("colour = 1").contains("pipelines.home") && bad("colour = 1").contains("colour"));
        assert!(
            bad("[exploration]\nshare = 2.0").contains("exploration.share"),
            "{}",
            bad("[exploration]\nshare = 2.0")
        );
        let rules = bad("rules = [{ type = \"max_per_window\", attribute = \"artist\", max = 0, window = 3 }]");
        assert!(rules.contains("pipelines.home.rules[0].max"), "{rules}");
    }

    #[test]
    fn feature_digests_change_with_any_value() {
        let a = [1.0, 2.0];
        let b = [1.0, 2.000_000_1];
        assert_eq!(feature_digest(&[&a]), feature_digest(&[&a]));
        assert_ne!(feature_digest(&[&a]), feature_digest(&[&b]));
        assert_ne!(feature_digest(&[&a, &b]), feature_digest(&[&b, &a]));
    }
}
