//! Gradient-boosted trees: histogram-based training for LambdaMART and binary log-loss.
//!
//! The trainer follows LightGBM's design (our own code, written from its documentation and papers):
//! - every feature is cut into at most `max_bin` bins once, from quantiles of a row sample
//!   ([`bins`]); NaN gets a bin of its own so each split learns where missing values go, and
//!   categorical features get one bin per frequent category;
//! - trees grow leaf-wise: the leaf whose best split gains most is split next, up to `num_leaves`;
//! - a leaf's gradient histogram is built only for the smaller child of a split, the larger one is
//!   the parent's histogram minus it ([`hist`]);
//! - histograms and split searches run in parallel over features, each feature summed in a fixed
//!   row order, so a model depends on `seed` only, never on the thread count.
//!
//! Trees come out in the shared [`Forest`] representation: numerical splits are `x <= threshold`
//! with `threshold` the upper bound of a bin in data units, so scoring raw values reproduces the
//! binned decisions made in training exactly.

mod bins;
mod grow;
mod hist;
mod objective;

use crate::error::{Error, Result};
use crate::tree::{Forest, Objective};
use serde::{Deserialize, Serialize};

/// Training (or validation) data: a row-major matrix of `f64` features with labels, and
/// optionally query groups, weights, feature names and the list of categorical features.
///
/// NaN is a missing value. A categorical feature holds category ids: non-negative integers
/// (fractions are truncated, as scoring does); negative values count as missing.
#[derive(Clone)]
pub struct Dataset {
    values: Vec<f64>,
    n_rows: usize,
    n_features: usize,
    labels: Vec<f64>,
    groups: Option<Vec<usize>>,
    names: Option<Vec<String>>,
    categorical: Vec<usize>,
    weights: Option<Vec<f64>>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The matrix can be millions of values: show its shape, not its contents.
        f.debug_struct("Dataset")
            .field("n_rows", &self.n_rows)
            .field("n_features", &self.n_features)
            .field("n_groups", &self.groups.as_ref().map(Vec::len))
            .field("categorical", &self.categorical)
            .field("weighted", &self.weights.is_some())
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// `values` holds `labels.len()` rows of `n_features` values each. Values are finite or NaN.
    pub fn new(values: Vec<f64>, n_features: usize, labels: Vec<f64>) -> Result<Dataset> {
        if n_features == 0 {
            return Err(Error::invalid("values", "n_features must be at least 1"));
        }
        if !values.len().is_multiple_of(n_features) {
            return Err(Error::invalid(
                "values",
                format!("{} values do not make whole rows of {n_features} features", values.len()),
            ));
        }
        let n_rows = values.len() / n_features;
        if n_rows == 0 {
            return Err(Error::invalid("values", "must hold at least one row"));
        }
        if n_rows >= u32::MAX as usize {
            return Err(Error::invalid("values", "at most 4294967294 rows are supported"));
        }
        if let Some(i) = values.iter().position(|v| v.is_infinite()) {
            return Err(Error::invalid(
                "values",
                format!("row {} feature {} is infinite (use NaN for missing)", i / n_features, i % n_features),
            ));
        }
        if labels.len() != n_rows {
            return Err(Error::invalid("labels", format!("{} labels for {n_rows} rows", labels.len())));
        }
        if let Some(i) = labels.iter().position(|l| !l.is_finite()) {
            return Err(Error::invalid("labels", format!("label of row {i} is not finite")));
        }
        Ok(Dataset {
            values,
            n_rows,
            n_features,
            labels,
            groups: None,
            names: None,
            categorical: Vec::new(),
            weights: None,
        })
    }

    /// Query group sizes in row order (the rows of a group are contiguous); needed by lambdarank.
    pub fn with_groups(mut self, sizes: Vec<usize>) -> Result<Dataset> {
        if sizes.contains(&0) {
            return Err(Error::invalid("groups", "a group size is 0"));
        }
        let total = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
        if total != Some(self.n_rows) {
            return Err(Error::invalid(
                "groups",
                format!(
                    "group sizes sum to {}, not to the {} rows",
                    total.map_or("overflow".into(), |t| t.to_string()),
                    self.n_rows
                ),
            ));
        }
        self.groups = Some(sizes);
        Ok(self)
    }

    pub fn with_feature_names(mut self, names: Vec<String>) -> Result<Dataset> {
        if names.len() != self.n_features {
            return Err(Error::invalid(
                "feature_names",
                format!("{} names for {} features", names.len(), self.n_features),
            ));
        }
        self.names = Some(names);
        Ok(self)
    }

    /// Indices of the features to treat as categorical.
    pub fn with_categorical(mut self, mut features: Vec<usize>) -> Result<Dataset> {
        if let Some(&f) = features.iter().find(|&&f| f >= self.n_features) {
            return Err(Error::invalid(
                "categorical",
                format!("feature {f} does not exist ({} features)", self.n_features),
            ));
        }
        features.sort_unstable();
        features.dedup();
        self.categorical = features;
        Ok(self)
    }

    /// Per-row weights (non-negative), multiplied into gradients, hessians and the metric.
    pub fn with_weights(mut self, weights: Vec<f64>) -> Result<Dataset> {
        if weights.len() != self.n_rows {
            return Err(Error::invalid("weights", format!("{} weights for {} rows", weights.len(), self.n_rows)));
        }
        if let Some(i) = weights.iter().position(|w| !w.is_finite() || *w < 0.0) {
            return Err(Error::invalid("weights", format!("weight of row {i} is negative or not finite")));
        }
        self.weights = Some(weights);
        Ok(self)
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    fn row(&self, r: usize) -> &[f64] {
        &self.values[r * self.n_features..(r + 1) * self.n_features]
    }

    /// Start offsets of the query groups, plus `n_rows` at the end.
    fn group_bounds(&self) -> Option<Vec<usize>> {
        self.groups.as_ref().map(|sizes| {
            let mut bounds = Vec::with_capacity(sizes.len() + 1);
            bounds.push(0);
            let mut at = 0;
            for s in sizes {
                at += s;
                bounds.push(at);
            }
            bounds
        })
    }
}

/// The learning task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Binary log-loss on labels 0 / 1.
    #[default]
    Binary,
    /// LambdaMART over query groups on integer relevance labels 0..=30 (gain `2^l - 1`).
    LambdaRank,
}

/// Training parameters. Names and defaults are LightGBM's, so settings carry over; the
/// exceptions are `objective` (LightGBM defaults to regression) and `eval_at` (one cut-off; LightGBM
/// evaluates 1..=5), which is 10 here as in our ranking benchmarks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub objective: Task,
    pub num_iterations: usize,
    pub learning_rate: f64,
    pub num_leaves: usize,
    pub max_depth: Option<usize>,
    pub min_data_in_leaf: usize,
    pub min_sum_hessian_in_leaf: f64,
    pub lambda_l1: f64,
    pub lambda_l2: f64,
    pub min_gain_to_split: f64,
    /// Share of features each tree may split on, sampled per tree.
    pub feature_fraction: f64,
    /// Share of rows each tree is grown on, resampled every `bagging_freq` trees (0: no bagging).
    pub bagging_fraction: f64,
    pub bagging_freq: usize,
    /// Bins per feature, 2..=255 (a bin index is one byte; NaN gets a bin beyond these).
    pub max_bin: usize,
    /// Rows sampled to find the bin bounds.
    pub bin_construct_sample_cnt: usize,
    /// Stop after this many rounds without improvement on the validation set.
    pub early_stopping_rounds: Option<usize>,
    /// The NDCG cut-off of the lambdarank validation metric.
    pub eval_at: usize,
    /// Lambdarank: only pairs with one item in the current top this-many get a gradient.
    pub lambdarank_truncation_level: usize,
    /// Categorical splits: added to the hessian sum when ordering categories.
    pub cat_smooth: f64,
    /// Categorical splits (sorted, many-category case): extra L2 regularisation.
    pub cat_l2: f64,
    /// Categorical splits: at most this many categories on the left side.
    pub max_cat_threshold: usize,
    /// Categorical features with at most this many categories split one category against the rest.
    pub max_cat_to_onehot: usize,
    /// Categorical splits: rows per group of categories added to a side between two evaluations.
    pub min_data_per_group: usize,
    pub seed: u64,
    /// Threads for training; 0 uses the current rayon pool. The model does not depend on it.
    pub num_threads: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            objective: Task::Binary,
            num_iterations: 100,
            learning_rate: 0.1,
            num_leaves: 31,
            max_depth: None,
            min_data_in_leaf: 20,
            min_sum_hessian_in_leaf: 1e-3,
            lambda_l1: 0.0,
            lambda_l2: 0.0,
            min_gain_to_split: 0.0,
            feature_fraction: 1.0,
            bagging_fraction: 1.0,
            bagging_freq: 0,
            max_bin: 255,
            bin_construct_sample_cnt: 200_000,
            early_stopping_rounds: None,
            eval_at: 10,
            lambdarank_truncation_level: 30,
            cat_smooth: 10.0,
            cat_l2: 10.0,
            max_cat_threshold: 32,
            max_cat_to_onehot: 4,
            min_data_per_group: 100,
            seed: 0,
            num_threads: 0,
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<()> {
        fn bad(field: &str, reason: &str) -> Result<()> {
            Err(Error::invalid(format!("params.{field}"), reason))
        }
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        let fraction = |x: f64| x.is_finite() && x > 0.0 && x <= 1.0;
        if self.num_iterations == 0 {
            return bad("num_iterations", "must be at least 1");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", "must be positive and finite");
        }
        if self.num_leaves < 2 {
            return bad("num_leaves", "must be at least 2");
        }
        if self.num_leaves > 1 << 17 {
            return bad("num_leaves", "must be at most 131072");
        }
        if self.max_depth == Some(0) {
            return bad("max_depth", "must be at least 1 (or unset for no limit)");
        }
        if self.min_data_in_leaf == 0 {
            return bad("min_data_in_leaf", "must be at least 1");
        }
        for (name, v) in [
            ("min_sum_hessian_in_leaf", self.min_sum_hessian_in_leaf),
            ("lambda_l1", self.lambda_l1),
            ("lambda_l2", self.lambda_l2),
            ("min_gain_to_split", self.min_gain_to_split),
            ("cat_smooth", self.cat_smooth),
            ("cat_l2", self.cat_l2),
        ] {
            if !non_negative(v) {
                return bad(name, "must be non-negative and finite");
            }
        }
        if !fraction(self.feature_fraction) {
            return bad("feature_fraction", "must be in (0, 1]");
        }
        if !fraction(self.bagging_fraction) {
            return bad("bagging_fraction", "must be in (0, 1]");
        }
        if !(2..=255).contains(&self.max_bin) {
            return bad("max_bin", "must be in 2..=255");
        }
        if self.bin_construct_sample_cnt == 0 {
            return bad("bin_construct_sample_cnt", "must be at least 1");
        }
        if self.early_stopping_rounds == Some(0) {
            return bad("early_stopping_rounds", "must be at least 1 (or unset)");
        }
        if self.eval_at == 0 {
            return bad("eval_at", "must be at least 1");
        }
        if self.lambdarank_truncation_level == 0 {
            return bad("lambdarank_truncation_level", "must be at least 1");
        }
        for (name, v) in [
            ("max_cat_threshold", self.max_cat_threshold),
            ("max_cat_to_onehot", self.max_cat_to_onehot),
            ("min_data_per_group", self.min_data_per_group),
        ] {
            if v == 0 {
                return bad(name, "must be at least 1");
            }
        }
        Ok(())
    }
}

/// A trained model.
#[derive(Debug, Clone)]
pub struct Trained {
    /// With early stopping, cut to `best_iteration` trees.
    pub forest: Forest,
    /// The number of trees of the best validation score (1-based, as LightGBM's); without early
    /// stopping, the number of trees trained.
    pub best_iteration: usize,
    /// The validation metric after each tree (log-loss for binary, NDCG@`eval_at` for
    /// lambdarank); empty without a validation set.
    pub history: Vec<f64>,
}

/// Trains a forest on `train`, evaluating on `valid` after each tree when given.
pub fn train(params: &Params, train: &Dataset, valid: Option<&Dataset>) -> Result<Trained> {
    params.validate()?;
    check_data(params, train, "")?;
    if let Some(v) = valid {
        check_data(params, v, "valid.")?;
        if v.n_features != train.n_features {
            return Err(Error::invalid(
                "valid.values",
                format!("{} features, the training data has {}", v.n_features, train.n_features),
            ));
        }
    }
    if params.num_threads > 0 {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(params.num_threads)
            .build()
            .map_err(|e| Error::invalid("params.num_threads", e.to_string()))?;
        pool.install(|| boost(params, train, valid))
    } else {
        boost(params, train, valid)
    }
}

fn check_data(params: &Params, data: &Dataset, prefix: &str) -> Result<()> {
    let field = |f: &str| format!("{prefix}{f}");
    match params.objective {
        Task::Binary => {
            if let Some(i) = data.labels.iter().position(|&l| l != 0.0 && l != 1.0) {
                return Err(Error::invalid(
                    field("labels"),
                    format!("binary labels must be 0 or 1, row {i} has {}", data.labels[i]),
                ));
            }
        }
        Task::LambdaRank => {
            if data.groups.is_none() {
                return Err(Error::invalid(field("groups"), "lambdarank needs query groups (Dataset::with_groups)"));
            }
            if let Some(i) =
                data.labels.iter().position(|&l| !(0.0..=objective::MAX_LABEL).contains(&l) || l.fract() != 0.0)
            {
                return Err(Error::invalid(
                    field("labels"),
                    format!("lambdarank labels must be integers in 0..=30, row {i} has {}", data.labels[i]),
                ));
            }
        }
    }
    if let Some(w) = &data.weights
        && w.iter().sum::<f64>() <= 0.0
    {
        return Err(Error::invalid(field("weights"), "weights sum to 0"));
    }
    Ok(())
}

/// SplitMix64: a tiny generator whose output is fixed by this code, so seeded models stay the
/// same across dependency upgrades.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }

    /// `k` distinct values of `0..n`, ascending (partial Fisher-Yates).
    pub(crate) fn sample(&mut self, n: usize, k: usize) -> Vec<u32> {
        let mut all: Vec<u32> = (0..n as u32).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k);
        all.sort_unstable();
        all
    }
}

/// LightGBM's count rule for a fraction of `n`: rounded, at least 1.
fn fraction_count(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction + 0.5) as usize).clamp(1, n.max(1))
}

fn boost(params: &Params, train: &Dataset, valid: Option<&Dataset>) -> Result<Trained> {
    let binned = bins::Binned::new(train, params);
    let obj = objective::Gradients::new(params, train);
    let base_score = obj.base_score();
    let n = train.n_rows;
    let mut scores = vec![base_score; n];
    let mut grad = vec![0.0; n];
    let mut hess = vec![0.0; n];
    let mut learner = grow::Learner::new(&binned, params);
    let eval = valid.map(|v| objective::Metric::new(params, v));
    let mut valid_scores = valid.map_or_else(Vec::new, |v| vec![base_score; v.n_rows]);

    let mut bag_rng = Rng::new(params.seed, 1);
    let mut feature_rng = Rng::new(params.seed, 2);
    let bagging = params.bagging_freq > 0 && params.bagging_fraction < 1.0;
    let mut bag: Vec<u32> = (0..n as u32).collect();
    let mut out_of_bag: Vec<u32> = Vec::new();
    // Only features with two bins or more can split; feature_fraction samples among those.
    let splittable: Vec<usize> = (0..train.n_features).filter(|&f| binned.mappers[f].n_bins() > 1).collect();
    let mut used = vec![false; train.n_features];

    let mut trees = Vec::new();
    let mut history = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    for it in 0..params.num_iterations {
        obj.compute(&scores, &mut grad, &mut hess);
        if bagging && it % params.bagging_freq == 0 {
            bag = bag_rng.sample(n, fraction_count(n, params.bagging_fraction));
            let mut in_bag = vec![false; n];
            for &r in &bag {
                in_bag[r as usize] = true;
            }
            out_of_bag = (0..n as u32).filter(|&r| !in_bag[r as usize]).collect();
        }
        used.fill(false);
        if params.feature_fraction < 1.0 {
            let k = fraction_count(splittable.len(), params.feature_fraction);
            for i in feature_rng.sample(splittable.len(), k) {
                used[splittable[i as usize]] = true;
            }
        } else {
            for &f in &splittable {
                used[f] = true;
            }
        }
        // As LightGBM: a tree that cannot split ends training.
        let Some(tree) = learner.grow(&bag, &grad, &hess, &used) else { break };
        learner.add_leaf_values(&tree.leaves, &mut scores);
        for &r in &out_of_bag {
            scores[r as usize] += tree.predict(train.row(r as usize));
        }
        if let (Some(v), Some(eval)) = (valid, &eval) {
            for (r, s) in valid_scores.iter_mut().enumerate() {
                *s += tree.predict(v.row(r));
            }
            let m = eval.eval(&valid_scores);
            history.push(m);
            trees.push(tree);
            if best.is_none_or(|(_, b)| eval.better(m, b)) {
                best = Some((trees.len(), m));
            } else if let (Some(rounds), Some((b, _))) = (params.early_stopping_rounds, best)
                && trees.len() - b >= rounds
            {
                break;
            }
        } else {
            trees.push(tree);
        }
    }
    let best_iteration = match (params.early_stopping_rounds, best) {
        (Some(_), Some((b, _))) => b,
        _ => trees.len(),
    };
    trees.truncate(best_iteration);
    let feature_names = train.names.clone().unwrap_or_else(|| (0..train.n_features).map(|f| format!("f{f}")).collect());
    let objective = match params.objective {
        Task::Binary => Objective::Binary { sigmoid: 1.0 },
        Task::LambdaRank => Objective::LambdaRank,
    };
    Ok(Trained { forest: Forest { feature_names, objective, base_score, trees }, best_iteration, history })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_sample_is_distinct_sorted_and_seeded() {
        let a = Rng::new(7, 1).sample(100, 30);
        assert_eq!(a.len(), 30);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, Rng::new(7, 1).sample(100, 30));
        assert_ne!(a, Rng::new(8, 1).sample(100, 30));
    }

    #[test]
    fn params_round_trip_and_reject_unknown_fields() {
        let p = Params { objective: Task::LambdaRank, max_depth: Some(6), ..Params::default() };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"lambdarank\""));
        assert_eq!(serde_json::from_str::<Params>(&json).unwrap(), p);
        let partial: Params = serde_json::from_str(r#"{"num_leaves": 63}"#).unwrap();
        assert_eq!(partial, Params { num_leaves: 63, ..Params::default() });
        assert!(serde_json::from_str::<Params>(r#"{"num_leaf": 63}"#).is_err());
    }
}
