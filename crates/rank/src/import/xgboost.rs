//! XGBoost's JSON model format (`Booster.save_model("model.json")`, XGBoost 2 and 3).
//!
//! XGBoost scores in `f32`: features are read as `f32`, a numerical split goes left when
//! `x < split_condition` ([`Split::Lt`]), NaN goes the node's default way, and a categorical split
//! sends the categories it lists *right* (so we swap the children to get [`Split::In`]'s "listed
//! go left"). Leaf values are the `split_conditions` of leaf nodes.
//!
//! `learner_model_param.base_score` is in output space: for logistic objectives a probability,
//! whose logit (computed in `f32`, as XGBoost does) is the base margin; otherwise the margin
//! itself.

use crate::error::{Error, Result};
use crate::tree::{Child, Forest, Missing, Node, Objective, Split, Tree};
use serde_json::Value;

const WHAT: &str = "xgboost model";

fn err(reason: impl Into<String>) -> Error {
    Error::format(WHAT, reason)
}

/// Reads an XGBoost JSON model.
pub fn xgboost_json(json: &str) -> Result<Forest> {
    let value: Value = serde_json::from_str(json).map_err(|e| err(format!("invalid JSON: {e}")))?;
    from_value(&value)
}

pub(super) fn from_value(root: &Value) -> Result<Forest> {
    let learner = field(root, "learner", "")?;
    let params = field(learner, "learner_model_param", "learner")?;
    for (key, max) in [("num_class", 1), ("num_target", 1)] {
        if let Some(v) = params.get(key) {
            let n = number(v, &format!("learner.learner_model_param.{key}"))?;
            if n > max as f64 {
                return Err(err(format!(
                    "learner.learner_model_param.{key} = {n}: multi-class and multi-target models are not supported"
                )));
            }
        }
    }
    let n_features = number(field(params, "num_feature", "learner.learner_model_param")?, "num_feature")?;
    if !(0.0..=1e8).contains(&n_features) || n_features.fract() != 0.0 {
        return Err(err(format!("learner.learner_model_param.num_feature = {n_features} is not a count")));
    }
    let n_features = n_features as usize;

    let name = field(field(learner, "objective", "learner")?, "name", "learner.objective")?
        .as_str()
        .ok_or_else(|| err("learner.objective.name is not a string"))?;
    let objective = match name {
        "binary:logistic" | "reg:logistic" => Objective::Binary { sigmoid: 1.0 },
        "reg:squarederror" | "reg:absoluteerror" | "reg:pseudohubererror" | "reg:quantileerror" => {
            Objective::Regression
        }
        "rank:ndcg" | "rank:pairwise" | "rank:map" => Objective::LambdaRank,
        _ => {
            return Err(err(format!(
                "learner.objective.name = `{name}` is not supported; supported: binary:logistic, reg:logistic, \
                 reg:squarederror, reg:absoluteerror, reg:pseudohubererror, reg:quantileerror, rank:ndcg, \
                 rank:pairwise, rank:map"
            )));
        }
    };
    let base_score = base_margin(field(params, "base_score", "learner.learner_model_param")?, objective)?;

    let feature_names = match learner.get("feature_names").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => {
            if names.len() != n_features {
                return Err(err(format!("{} feature_names, but num_feature = {n_features}", names.len())));
            }
            names
                .iter()
                .map(|n| n.as_str().map(str::to_owned).ok_or_else(|| err("learner.feature_names must be strings")))
                .collect::<Result<Vec<_>>>()?
        }
        _ => (0..n_features).map(|i| format!("f{i}")).collect(),
    };

    let booster = field(learner, "gradient_booster", "learner")?;
    let model = match booster.get("name").and_then(Value::as_str) {
        Some("gbtree") => field(booster, "model", "learner.gradient_booster")?,
        Some("dart") => {
            let weights = field(booster, "weight_drop", "learner.gradient_booster")?
                .as_array()
                .ok_or_else(|| err("learner.gradient_booster.weight_drop is not an array"))?;
            if let Some(w) = weights.iter().find(|w| w.as_f64() != Some(1.0)) {
                return Err(err(format!(
                    "dart booster with tree weight {w}: weighted (dropped-out) trees are not supported"
                )));
            }
            field(field(booster, "gbtree", "learner.gradient_booster")?, "model", "learner.gradient_booster.gbtree")?
        }
        Some("gblinear") => return Err(err("gblinear models are not tree ensembles; not supported")),
        other => return Err(err(format!("learner.gradient_booster.name = {other:?} is not a tree booster"))),
    };
    if let Some(info) = model.get("tree_info").and_then(Value::as_array)
        && info.iter().any(|g| g.as_f64() != Some(0.0))
    {
        return Err(err("trees of several output groups (multi-class): not supported"));
    }
    let trees = field(model, "trees", "gradient_booster.model")?
        .as_array()
        .ok_or_else(|| err("gradient_booster.model.trees is not an array"))?
        .iter()
        .enumerate()
        .map(|(i, t)| {
            tree(t).map_err(|e| match e {
                Error::Format { reason, .. } => err(format!("tree {i}: {reason}")),
                other => other,
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let forest = Forest { feature_names, objective, base_score, trees };
    forest.check_structure().map_err(err)?;
    Ok(forest)
}

fn field<'a>(v: &'a Value, key: &str, parent: &str) -> Result<&'a Value> {
    v.get(key).ok_or_else(|| {
        if parent.is_empty() { err(format!("missing `{key}`")) } else { err(format!("missing `{parent}.{key}`")) }
    })
}

/// XGBoost writes most parameters as strings; accepts a number too.
fn number(v: &Value, what: &str) -> Result<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| err(format!("{what} = {v} is not a number")))
}

/// The base margin from `base_score`, which XGBoost 3 writes as `"[5E-1]"` and 2 as `"5E-1"`.
fn base_margin(v: &Value, objective: Objective) -> Result<f64> {
    let text = match v {
        Value::String(s) => s.trim(),
        _ => return margin(number(v, "base_score")? as f32, objective),
    };
    let inner = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    if inner.contains(',') {
        return Err(err(format!("base_score = {text}: several intercepts (multi-target) are not supported")));
    }
    let score: f32 = inner.trim().parse().map_err(|_| err(format!("base_score = {text} is not a number")))?;
    margin(score, objective)
}

fn margin(score: f32, objective: Objective) -> Result<f64> {
    match objective {
        Objective::Binary { .. } => {
            if !(score > 0.0 && score < 1.0) {
                return Err(err(format!("base_score = {score} is not a probability, as binary:logistic needs")));
            }
            // In f32, as XGBoost's `ProbToMargin`.
            Ok(f64::from(-(1.0f32 / score - 1.0f32).ln()))
        }
        Objective::LambdaRank | Objective::Regression => Ok(f64::from(score)),
    }
}

fn array<'a>(tree: &'a Value, key: &str) -> Result<&'a Vec<Value>> {
    tree.get(key).and_then(Value::as_array).ok_or_else(|| err(format!("missing array `{key}`")))
}

fn ints(tree: &Value, key: &str, len: usize) -> Result<Vec<i64>> {
    let a = array(tree, key)?;
    if a.len() != len {
        return Err(err(format!("`{key}` has {} entries, expected {len}", a.len())));
    }
    a.iter()
        .map(|v| match v {
            Value::Bool(b) => Some(i64::from(*b)),
            _ => v.as_i64(),
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| err(format!("`{key}` holds a non-integer")))
}

fn floats(tree: &Value, key: &str, len: usize) -> Result<Vec<f64>> {
    let a = array(tree, key)?;
    if a.len() != len {
        return Err(err(format!("`{key}` has {} entries, expected {len}", a.len())));
    }
    a.iter().map(Value::as_f64).collect::<Option<Vec<_>>>().ok_or_else(|| err(format!("`{key}` holds a non-number")))
}

/// The `f32` XGBoost stored, from the shortest decimal it printed.
fn f32_value(x: f64) -> f64 {
    f64::from(x as f32)
}

fn tree(t: &Value) -> Result<Tree> {
    if let Some(size) = t.get("tree_param").and_then(|p| p.get("size_leaf_vector"))
        && number(size, "size_leaf_vector")? > 1.0
    {
        return Err(err("vector leaves (multi-target trees) are not supported"));
    }
    let n = array(t, "left_children")?.len();
    if n == 0 {
        return Err(err("no nodes"));
    }
    let lefts = ints(t, "left_children", n)?;
    let rights = ints(t, "right_children", n)?;
    let features = ints(t, "split_indices", n)?;
    let conditions = floats(t, "split_conditions", n)?;
    let default_left = ints(t, "default_left", n)?;
    let hessians = floats(t, "sum_hessian", n)?;
    let gains = floats(t, "loss_changes", n)?;
    let split_type = if t.get("split_type").is_some() { ints(t, "split_type", n)? } else { vec![0; n] };

    // Categorical splits: node `categories_nodes[k]` lists `categories[segments[k]..][..sizes[k]]`.
    let mut categories: Vec<Option<Vec<u32>>> = vec![None; n];
    if split_type.iter().any(|&s| s != 0) {
        let nodes = array(t, "categories_nodes")?;
        let k = nodes.len();
        let nodes = ints(t, "categories_nodes", k)?;
        let segments = ints(t, "categories_segments", k)?;
        let sizes = ints(t, "categories_sizes", k)?;
        let all = array(t, "categories")?;
        let all = ints(t, "categories", all.len())?;
        for ((&node, &start), &size) in nodes.iter().zip(&segments).zip(&sizes) {
            let cats = usize::try_from(start)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(s, len)| all.get(s..s.checked_add(len)?))
                .ok_or_else(|| err(format!("category segment {start}+{size} is out of range")))?;
            let mut cats = cats
                .iter()
                .map(|&c| u32::try_from(c).map_err(|_| err(format!("category {c} is not a category"))))
                .collect::<Result<Vec<u32>>>()?;
            cats.sort_unstable();
            cats.dedup();
            let slot = usize::try_from(node)
                .ok()
                .and_then(|i| categories.get_mut(i))
                .ok_or_else(|| err(format!("categories_nodes names node {node}, out of range")))?;
            *slot = Some(cats);
        }
    }

    if lefts[0] == -1 {
        return Ok(Tree::constant(f32_value(conditions[0]), hessians[0]));
    }

    // Renumber: XGBoost mixes splits and leaves in one array (and may keep deleted nodes); ours
    // keeps them apart. Walk from the root so unreachable nodes are dropped and cycles caught.
    let mut out = Tree { nodes: Vec::new(), leaves: Vec::new(), leaf_cover: Vec::new() };
    let mut seen = vec![false; n];
    // (xgboost node, slot in `out.nodes` to point at it: (parent, is_left)).
    let mut stack: Vec<(usize, Option<(usize, bool)>)> = vec![(0, None)];
    while let Some((id, parent)) = stack.pop() {
        if std::mem::replace(&mut seen[id], true) {
            return Err(err(format!("node {id} is reached twice")));
        }
        let child: Child = if lefts[id] == -1 {
            out.leaves.push(f32_value(conditions[id]));
            out.leaf_cover.push(hessians[id]);
            !((out.leaves.len() - 1) as Child)
        } else {
            let feature = u32::try_from(features[id])
                .map_err(|_| err(format!("node {id} splits on feature {}", features[id])))?;
            let (l, r) = (child_index(lefts[id], n, id)?, child_index(rights[id], n, id)?);
            let (split, default_left, first, second) = if split_type[id] != 0 {
                let cats =
                    categories[id].take().ok_or_else(|| err(format!("categorical node {id} has no categories")))?;
                // XGBoost sends listed categories right: swap, so they go left as `Split::In` says.
                (Split::In { categories: cats }, default_left[id] == 0, r, l)
            } else {
                (Split::Lt { threshold: conditions[id] as f32 }, default_left[id] != 0, l, r)
            };
            out.nodes.push(Node {
                feature,
                split,
                missing: Missing::NaN,
                default_left,
                left: 0,
                right: 0,
                gain: gains[id],
                cover: hessians[id],
            });
            let me = out.nodes.len() - 1;
            stack.push((second, Some((me, false))));
            stack.push((first, Some((me, true))));
            me as Child
        };
        if let Some((p, is_left)) = parent {
            if is_left {
                out.nodes[p].left = child;
            } else {
                out.nodes[p].right = child;
            }
        }
    }
    out.check_structure().map_err(err)?;
    Ok(out)
}

fn child_index(c: i64, n: usize, parent: usize) -> Result<usize> {
    usize::try_from(c)
        .ok()
        .filter(|&c| c < n && c != 0)
        .ok_or_else(|| err(format!("node {parent} has child {c}, out of range 1..{n}")))
}
