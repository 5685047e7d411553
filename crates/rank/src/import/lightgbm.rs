//! LightGBM's text model format (`Booster.save_model`, version v3/v4).
//!
//! A header of `key=value` lines, then one `Tree=N` block per tree, then `end of trees` and
//! sections (importances, parameters) that scoring does not need. Leaf values already include the
//! learning rate and the initial score, so the forest's `base_score` is 0.
//!
//! Split rules follow LightGBM's `Tree::NumericalDecision` / `Tree::CategoricalDecision`:
//! - numerical: missing type None reads NaN as 0 ([`Missing::AsZero`]), Zero sends NaN and zero
//!   the default way ([`Missing::Zero`]), NaN sends NaN the default way ([`Missing::NaN`]); then
//!   `x <= threshold` goes left. LightGBM's predictor first reads values within `kZeroThreshold`
//!   (1e-35 as `f32`) of zero as 0.0; thresholds are moved so that this needs no rule of its own
//!   (see [`read_as_zero`]);
//! - categorical: NaN and negative values go right, other values go left when their truncated
//!   value is in the split's bitset.

use crate::error::{Error, Result};
use crate::tree::{Child, Forest, Missing, Node, Objective, Split, Tree};
use std::collections::HashMap;
use std::str::FromStr;

const WHAT: &str = "lightgbm model";

fn err(reason: impl Into<String>) -> Error {
    Error::format(WHAT, reason)
}

/// Reads a LightGBM text model (the output of `Booster.save_model` / `model_to_string`).
pub fn lightgbm_text(text: &str) -> Result<Forest> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    match lines.by_ref().find(|(_, l)| !l.trim().is_empty()) {
        Some((_, l)) if l.trim_start_matches('\u{feff}').trim() == "tree" => {}
        Some((n, _)) => return Err(err(format!("line {n}: expected `tree`, the first line of a LightGBM model"))),
        None => return Err(err("empty input")),
    }

    let mut header = Block::default();
    let mut trees: Vec<Block> = Vec::new();
    let mut ended = false;
    for (n, line) in lines.by_ref() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "end of trees" {
            ended = true;
            break;
        }
        if let Some(index) = line.strip_prefix("Tree=") {
            if index.parse::<usize>().ok() != Some(trees.len()) {
                return Err(err(format!("line {n}: `{line}` out of order, expected Tree={}", trees.len())));
            }
            trees.push(Block { start: n, ..Block::default() });
            continue;
        }
        let block = trees.last_mut().unwrap_or(&mut header);
        match line.split_once('=') {
            Some((key, value)) => {
                block.keys.insert(key.trim(), (n, value.trim()));
            }
            None if trees.is_empty() && line == "average_output" => {
                return Err(err(format!(
                    "line {n}: `average_output`: random-forest models average their trees, which we do not score"
                )));
            }
            // Flags we do not know change nothing we read; keys we need are checked below.
            None => {}
        }
    }
    if !ended {
        return Err(err("truncated: no `end of trees` line"));
    }

    for key in ["num_class", "num_tree_per_iteration"] {
        if let Some(k) = header.opt::<u32>(key)?
            && k != 1
        {
            let n = header.keys[key].0;
            return Err(err(format!("line {n}: `{key}={k}`: multiclass models are not supported")));
        }
    }
    let objective = objective(&header)?;
    let max_feature_idx: usize = header.get("max_feature_idx")?;
    let n_features = max_feature_idx + 1;
    let feature_names = match header.keys.get("feature_names") {
        Some(&(n, names)) => {
            let names: Vec<String> = names.split_whitespace().map(str::to_owned).collect();
            if names.len() != n_features {
                return Err(err(format!(
                    "line {n}: {} feature names, but max_feature_idx={max_feature_idx}",
                    names.len()
                )));
            }
            names
        }
        None => (0..n_features).map(|i| format!("Column_{i}")).collect(),
    };

    let trees = trees.iter().map(tree).collect::<Result<Vec<_>>>()?;
    let forest = Forest { feature_names, objective, base_score: 0.0, trees };
    forest.check_structure().map_err(err)?;
    Ok(forest)
}

/// The `key=value` lines of the header or of one tree, with their line numbers.
#[derive(Default)]
struct Block<'a> {
    /// Line of `Tree=N` (0 for the header).
    start: usize,
    keys: HashMap<&'a str, (usize, &'a str)>,
}

impl<'a> Block<'a> {
    fn where_(&self) -> String {
        if self.start == 0 { "header".to_owned() } else { format!("tree at line {}", self.start) }
    }

    fn raw(&self, key: &str) -> Result<(usize, &'a str)> {
        self.keys.get(key).copied().ok_or_else(|| err(format!("{}: missing `{key}`", self.where_())))
    }

    fn get<T: FromStr>(&self, key: &str) -> Result<T> {
        let (n, value) = self.raw(key)?;
        value.parse().map_err(|_| err(format!("line {n}: `{key}={value}` is not a valid value")))
    }

    fn opt<T: FromStr>(&self, key: &str) -> Result<Option<T>> {
        if self.keys.contains_key(key) { self.get(key).map(Some) } else { Ok(None) }
    }

    /// A whitespace-separated list of exactly `len` values.
    fn list<T: FromStr>(&self, key: &str, len: usize) -> Result<Vec<T>> {
        let (n, value) = self.raw(key)?;
        let out = value
            .split_whitespace()
            .map(|v| v.parse().map_err(|_| err(format!("line {n}: `{key}`: `{v}` is not a valid value"))))
            .collect::<Result<Vec<T>>>()?;
        if out.len() != len {
            return Err(err(format!("line {n}: `{key}` has {} values, expected {len}", out.len())));
        }
        Ok(out)
    }

    /// `key`'s list, or `fallback`'s when `key` is absent.
    fn list_or<T: FromStr>(&self, key: &str, fallback: &str, len: usize) -> Result<Vec<T>> {
        if self.keys.contains_key(key) { self.list(key, len) } else { self.list(fallback, len) }
    }
}

fn objective(header: &Block) -> Result<Objective> {
    // A model trained with a custom objective has no `objective=` line, and LightGBM returns its
    // raw score.
    let Some(&(n, line)) = header.keys.get("objective") else {
        return Ok(Objective::Regression);
    };
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or("");
    let options: Vec<&str> = words.collect();
    let unsupported = |why: &str| {
        Err(err(format!(
            "line {n}: `objective={line}`: {why}; supported: binary, lambdarank, rank_xendcg, regression, \
             regression_l1, huber, fair, quantile, mape"
        )))
    };
    match name {
        "binary" => {
            let sigmoid = options
                .iter()
                .find_map(|o| o.strip_prefix("sigmoid:"))
                .map_or(Ok(1.0), |s| s.parse::<f64>())
                .map_err(|_| err(format!("line {n}: `objective={line}`: bad sigmoid")))?;
            Ok(Objective::Binary { sigmoid })
        }
        "lambdarank" | "rank_xendcg" => Ok(Objective::LambdaRank),
        "regression" if options.contains(&"sqrt") => unsupported("`sqrt` squares the output, which we do not apply"),
        "regression" | "regression_l1" | "huber" | "fair" | "quantile" | "mape" => Ok(Objective::Regression),
        "multiclass" | "multiclassova" => unsupported("multiclass models are not supported"),
        _ => unsupported("this objective's output transform is not supported"),
    }
}

/// LightGBM's `kZeroThreshold` (a `float`): its predictor reads any feature value within this of
/// zero as exactly 0.0 before it reaches a tree.
const ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

/// The threshold that makes `x <= threshold` decide as LightGBM's `0.0 <= t` for every `x` it
/// reads as zero (`|x| <= ZERO_THRESHOLD`), and as `x <= t` for every other `x`. LightGBM often
/// splits at exactly `±kZeroThreshold`, so without this a value there would go the wrong way.
fn read_as_zero(t: f64) -> f64 {
    if t >= 0.0 {
        t.max(ZERO_THRESHOLD)
    } else if t >= -ZERO_THRESHOLD {
        (-ZERO_THRESHOLD).next_down()
    } else {
        t
    }
}

fn tree(block: &Block) -> Result<Tree> {
    let at = block.where_();
    if let Some(linear) = block.opt::<u8>("is_linear")?
        && linear != 0
    {
        let n = block.keys["is_linear"].0;
        return Err(err(format!("line {n}: `is_linear={linear}`: linear trees are not supported")));
    }
    let num_leaves: usize = block.get("num_leaves")?;
    if num_leaves == 0 {
        return Err(err(format!("{at}: num_leaves=0")));
    }
    if num_leaves == 1 {
        let value = block.list::<f64>("leaf_value", 1)?[0];
        // LightGBM leaves `leaf_count` empty on single-leaf trees at times; the cover of a lone
        // leaf only ever divides by itself, so any positive value will do.
        let cover = match block.raw("leaf_count") {
            Ok((_, v)) if !v.trim().is_empty() => block.list::<f64>("leaf_count", 1)?[0],
            _ => 1.0,
        };
        return Ok(Tree::constant(value, cover));
    }
    let n_nodes = num_leaves - 1;
    let features: Vec<u32> = block.list("split_feature", n_nodes)?;
    let gains: Vec<f64> = block.list("split_gain", n_nodes)?;
    let thresholds: Vec<f64> = block.list("threshold", n_nodes)?;
    let decision_types: Vec<u8> = block.list("decision_type", n_nodes)?;
    let lefts: Vec<Child> = block.list("left_child", n_nodes)?;
    let rights: Vec<Child> = block.list("right_child", n_nodes)?;
    let leaves: Vec<f64> = block.list("leaf_value", num_leaves)?;
    // LightGBM's own TreeSHAP weighs by data counts; fall back to hessian sums if counts are absent.
    let leaf_cover: Vec<f64> = block.list_or("leaf_count", "leaf_weight", num_leaves)?;
    let node_cover: Vec<f64> = block.list_or("internal_count", "internal_weight", n_nodes)?;

    let num_cat: usize = block.opt("num_cat")?.unwrap_or(0);
    let cat_sets = if num_cat > 0 {
        let bounds: Vec<usize> = block.list("cat_boundaries", num_cat + 1)?;
        if bounds[0] != 0 || !bounds.is_sorted() {
            return Err(err(format!("line {}: `cat_boundaries` must rise from 0", block.keys["cat_boundaries"].0)));
        }
        let words: &[u32] = &block.list("cat_threshold", bounds[num_cat])?;
        bounds
            .windows(2)
            .map(|w| {
                // Bit `b` of the set's word `i` is category 32·i + b.
                words[w[0]..w[1]]
                    .iter()
                    .zip(0u32..)
                    .flat_map(|(&word, i)| (0..32u32).filter(move |b| word >> b & 1 == 1).map(move |b| 32 * i + b))
                    .collect::<Vec<u32>>()
            })
            .collect()
    } else {
        Vec::new()
    };

    let mut nodes = Vec::with_capacity(n_nodes);
    for i in 0..n_nodes {
        let dt = decision_types[i];
        let default_left = dt & 2 != 0;
        let missing = match (dt >> 2) & 3 {
            0 => Missing::AsZero,
            1 => Missing::Zero,
            2 => Missing::NaN,
            _ => {
                let n = block.keys["decision_type"].0;
                return Err(err(format!("line {n}: `decision_type` {dt} of node {i} has an unknown missing type")));
            }
        };
        let (split, missing, default_left) = if dt & 1 != 0 {
            let t = thresholds[i];
            let categories =
                (t >= 0.0 && t.fract() == 0.0).then(|| cat_sets.get(t as usize)).flatten().ok_or_else(|| {
                    let n = block.keys["threshold"].0;
                    err(format!("line {n}: node {i} is categorical but its threshold {t} names no category set"))
                })?;
            // LightGBM sends NaN right on categorical splits whatever the missing type.
            (Split::In { categories: categories.clone() }, Missing::NaN, false)
        } else {
            (Split::Le { threshold: read_as_zero(thresholds[i]) }, missing, default_left)
        };
        nodes.push(Node {
            feature: features[i],
            split,
            missing,
            default_left,
            left: lefts[i],
            right: rights[i],
            gain: gains[i],
            cover: node_cover[i],
        });
    }
    let tree = Tree { nodes, leaves, leaf_cover };
    tree.check_structure().map_err(|e| err(format!("{at}: {e}")))?;
    Ok(tree)
}
