//! The ranker's feature rows: which columns, how each is computed, and the user and item
//! aggregates behind them. Training fills them for every period's candidates and serving for a
//! request's, both with [`Layout::assemble`].

use crate::artifacts::RANKING;
use crate::error::{Error, Result};
use cascade_core::Value;

/// Indices of `scores` best first; ties keep the earlier index (the retrieval order).
pub fn rank_desc(scores: &[f64]) -> Vec<usize> {
    let mut keyed: Vec<(i64, usize)> = scores.iter().enumerate().map(|(i, &s)| (!total_key(s), i)).collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// `x`'s position in [`f64::total_cmp`]'s order as an integer: sorting plain integers is
/// several times faster than sorting indices through a comparator (a few thousand sorts a
/// request).
fn total_key(x: f64) -> i64 {
    let bits = x.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// The feature-engine views behind the user and item aggregates (`rank_item`, `rank_user`), over
/// events of `event_types`, as `[features]` TOML. Training replays interactions as events of one
/// type; serving defines the same views over the project's interaction types, so the online
/// values count the same events.
pub fn aggregate_views(event_types: &[&str]) -> String {
    let events = event_types.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", ");
    let windows = r#"n = { agg = "count" }
n_1d = { agg = "count", window = "1d", tile = "1h" }
n_7d = { agg = "count", window = "7days", tile = "6h" }
n_30d = { agg = "count", window = "30days", tile = "1d" }
since_last = { agg = "time_since_last" }"#;
    format!(
        r#"
[rank_item]
entity = "item"
events = [{events}]
allowed_lateness = "3650days"
[rank_item.features]
{windows}
decayed_7d = {{ agg = "decayed_count", half_life = "7days" }}

[rank_user]
entity = "user"
events = [{events}]
allowed_lateness = "3650days"
[rank_user.features]
{windows}
"#
    )
}

/// An aggregate's value as a ranker feature (offline from the replay, online from the store):
/// numbers as they are, `time_since_last` in days, no value as NaN.
pub fn aggregate_value(feature: &str, value: Option<&Value>) -> f64 {
    let x = match value {
        Some(Value::Int(i)) => *i as f64,
        Some(Value::Float(f)) => *f,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        _ => f64::NAN,
    };
    if feature == "since_last" { x / 86_400.0 } else { x }
}

/// Features that are cheap at serving time: the light ranker reads only these.
pub fn is_cheap(name: &str) -> bool {
    name.contains("_score") || name.ends_with("_rank") || name.starts_with("rank_item.")
}

/// Replaces each value by its position among the values, highest first, scaled to [0, 1] (ties
/// share the first position; NaN stays NaN).
pub fn percentiles(values: &mut [f64]) {
    let rows: Vec<usize> = rank_desc(values).into_iter().filter(|&r| !values[r].is_nan()).collect();
    let scale = rows.len().saturating_sub(1).max(1) as f64;
    let mut out = Vec::with_capacity(rows.len());
    let mut at = 0;
    for (j, &r) in rows.iter().enumerate() {
        if j > 0 && values[r] != values[rows[j - 1]] {
            at = j;
        }
        out.push(at as f64 / scale);
    }
    for (&r, p) in rows.iter().zip(out) {
        values[r] = p;
    }
}

/// The ranker's feature vector: which columns, in which order, under which names. Built by
/// training and recovered from a bundle's feature list by serving, so that both fill the same
/// columns with [`Layout::assemble`].
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Retrieval sources, each with a score and a rank column.
    pub sources: Vec<String>,
    /// Whether item-kNN similarity to the user's recent items is a column.
    pub recent_knn: bool,
    /// `rank_item.*` and `rank_user.*` aggregates, as `view.feature`.
    pub item_aggs: Vec<String>,
    pub user_aggs: Vec<String>,
    /// The values a row is built from, before scaling: each source's score and rank, the
    /// recency similarity, the item facts, the item's and the user's aggregates.
    pub base: Vec<String>,
    /// Per column: the base value it holds, and whether as a within-request percentile (see
    /// `relative` (training's `RankingParams`)).
    pub columns: Vec<(usize, bool)>,
    pub names: Vec<String>,
}

/// The per-candidate inputs of one request, each `Vec` one value per candidate.
#[derive(Debug, Clone, Default)]
pub struct CandidateInputs<'a> {
    /// Per source (in layout order), its score of every candidate.
    pub source_scores: Vec<Vec<f64>>,
    /// Item-kNN score from the user's most recent items (empty when the layout has none).
    pub recent: Vec<f64>,
    /// (strongest, summed) share of the user's history sharing an attribute token with the item.
    pub affinity: Vec<(f64, f64)>,
    pub item_age_days: Vec<f64>,
    pub release_age_years: Vec<f64>,
    /// Per candidate, its `item_aggs` values.
    pub item_aggs: Vec<&'a [f64]>,
    /// The user's `user_aggs` values.
    pub user_aggs: &'a [f64],
}

const ITEM_FACTS: [&str; 4] = ["genre_share_max", "genre_share_sum", "item_age_days", "release_age_years"];

/// Whether a base value may be scaled within the request: ranks are positions already, and user
/// features are one value per request.
fn scalable(base: &str) -> bool {
    !base.ends_with("_rank") && !base.starts_with("rank_user.")
}

impl Layout {
    /// The layout of these inputs: scalable values as they are (`absolute`), as within-request
    /// percentiles (`relative`, named `_pct`), or both; at least one of the two.
    pub fn new(
        sources: Vec<String>,
        recent_knn: bool,
        item_aggs: Vec<String>,
        user_aggs: Vec<String>,
        absolute: bool,
        relative: bool,
    ) -> Layout {
        let mut base: Vec<String> = Vec::new();
        for source in &sources {
            base.push(format!("{source}_score"));
            base.push(format!("{source}_rank"));
        }
        if recent_knn {
            base.push("recent_knn_score".into());
        }
        base.extend(ITEM_FACTS.map(String::from));
        base.extend(item_aggs.iter().cloned());
        base.extend(user_aggs.iter().cloned());
        let mut columns = Vec::new();
        for (b, name) in base.iter().enumerate() {
            if !scalable(name) || absolute || !relative {
                columns.push((b, false));
            }
            if scalable(name) && relative {
                columns.push((b, true));
            }
        }
        let names =
            columns.iter().map(|&(b, pct)| if pct { format!("{}_pct", base[b]) } else { base[b].clone() }).collect();
        Layout { sources, recent_knn, item_aggs, user_aggs, base, columns, names }
    }

    /// The layout that produced `names` (a bundle's feature list), or why there is none.
    pub fn parse(names: &[String]) -> Result<Layout> {
        let relative = names.iter().any(|n| n.ends_with("_pct"));
        let absolute = !relative || names.iter().any(|n| !n.ends_with("_pct") && scalable(n));
        let base = |n: &str| n.strip_suffix("_pct").unwrap_or(n).to_string();
        let sources: Vec<String> = names.iter().filter_map(|n| n.strip_suffix("_rank").map(String::from)).collect();
        let recent_knn = names.iter().any(|n| base(n) == "recent_knn_score");
        let mut item_aggs: Vec<String> =
            names.iter().map(|n| base(n)).filter(|n| n.starts_with("rank_item.")).collect();
        item_aggs.dedup();
        let user_aggs = names.iter().map(|n| base(n)).filter(|n| n.starts_with("rank_user.")).collect();
        let layout = Layout::new(sources, recent_knn, item_aggs, user_aggs, absolute, relative);
        if layout.names != names {
            return Err(Error::artifact(
                RANKING,
                format!(
                    "the rankers' feature list is not one this version computes: {names:?} (expected {:?})",
                    layout.names
                ),
            ));
        }
        Ok(layout)
    }

    /// The rows of one request's candidates (row-major, `names.len()` columns): every source's
    /// score and its rank among the candidates, the item facts and aggregates, and the user's
    /// aggregates, each as it is or as a within-request percentile, or both.
    pub fn assemble(&self, inputs: &CandidateInputs<'_>) -> Vec<f64> {
        let n_base = self.base.len();
        let n = inputs.affinity.len();
        let mut base = vec![0f64; n * n_base];
        let mut col = 0;
        for cand in &inputs.source_scores {
            let order = rank_desc(cand);
            for (rank, &r) in order.iter().enumerate() {
                base[r * n_base + col] = cand[r];
                base[r * n_base + col + 1] = rank as f64;
            }
            col += 2;
        }
        for r in 0..n {
            let row = &mut base[r * n_base..(r + 1) * n_base];
            let mut c = col;
            if self.recent_knn {
                row[c] = inputs.recent[r];
                c += 1;
            }
            let (max, sum) = inputs.affinity[r];
            row[c..c + 4].copy_from_slice(&[max, sum, inputs.item_age_days[r], inputs.release_age_years[r]]);
            c += 4;
            let ia = inputs.item_aggs[r];
            row[c..c + ia.len()].copy_from_slice(ia);
            c += ia.len();
            let ua = inputs.user_aggs;
            row[c..c + ua.len()].copy_from_slice(ua);
        }
        let mut pct = vec![f64::NAN; n];
        let n_features = self.columns.len();
        let mut values = vec![0f64; n * n_features];
        for (c, &(b, relative)) in self.columns.iter().enumerate() {
            if relative {
                for (r, p) in pct.iter_mut().enumerate() {
                    *p = base[r * n_base + b];
                }
                percentiles(&mut pct);
            }
            for r in 0..n {
                values[r * n_features + c] = if relative { pct[r] } else { base[r * n_base + b] };
            }
        }
        values
    }
}

/// A history's attribute-token counts, sorted by token: looked up by bisection, a few hundred
/// candidates × a few tokens per request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenProfile(Vec<(u32, f64)>);

impl TokenProfile {
    /// Counts every token of `tokens` (repeats count again).
    pub fn count(tokens: impl IntoIterator<Item = u32>) -> TokenProfile {
        let mut all: Vec<u32> = tokens.into_iter().collect();
        all.sort_unstable();
        let mut counts: Vec<(u32, f64)> = Vec::new();
        for t in all {
            match counts.last_mut() {
                Some((last, n)) if *last == t => *n += 1.0,
                _ => counts.push((t, 1.0)),
            }
        }
        TokenProfile(counts)
    }

    fn get(&self, token: u32) -> f64 {
        self.0.binary_search_by_key(&token, |e| e.0).map_or(0.0, |at| self.0[at].1)
    }
}

/// The (strongest, summed) share of a history of `hist_len` items, whose attribute-token counts
/// are `profile`, sharing each of `tokens`.
pub fn affinity(profile: &TokenProfile, tokens: &[u32], hist_len: f64) -> (f64, f64) {
    // Counts are whole numbers, so their sum is exact in any order: training and serving number
    // tokens differently, and a sum of shares in their two orders would differ in the last bits,
    // enough to split a tie and move a percentile.
    let (mut max, mut sum) = (0f64, 0f64);
    for &t in tokens {
        let count = profile.get(t);
        max = max.max(count);
        sum += count;
    }
    (max / hist_len, sum / hist_len)
}

/// The `n` most recent distinct items of a history given oldest first, sorted by index: what the
/// recency similarity (`recent_knn_score`) scores from, in training and serving alike.
pub fn recent_items(history: impl DoubleEndedIterator<Item = u32>, n: usize) -> Vec<u32> {
    let mut recent: Vec<u32> = Vec::with_capacity(n);
    for item in history.rev() {
        if recent.len() == n {
            break;
        }
        if !recent.contains(&item) {
            recent.push(item);
        }
    }
    recent.sort_unstable();
    recent
}
