//! The one tree-ensemble representation behind every tree model Cascade scores: the forests we
//! train, and LightGBM and XGBoost models we import. Each node keeps the split rule of the library
//! that made it (`<=` in doubles for LightGBM and ours, `<` in `f32` for XGBoost), so imported
//! models score exactly as they do in their own library.

use serde::{Deserialize, Serialize};

/// Which way a node sends a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Split {
    /// Left when `x <= threshold`, compared in `f64` (LightGBM's numerical split, and ours).
    Le { threshold: f64 },
    /// Left when `(x as f32) < threshold`, compared in `f32` (XGBoost's numerical split).
    Lt { threshold: f32 },
    /// Left when `x`, truncated to an integer, is one of `categories` (sorted ascending).
    /// Negative values go right; NaN follows [`Node::default_left`].
    In { categories: Vec<u32> },
}

/// What a node does with a missing value (NaN), and which values count as missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// NaN is read as 0.0 and compared like any value (LightGBM `missing_type=None`).
    AsZero,
    /// NaN goes the node's default way (ours, XGBoost, LightGBM `missing_type=NaN`).
    NaN,
    /// NaN and (near-)zero go the default way (LightGBM `missing_type=Zero`).
    Zero,
}

/// A child reference: `>= 0` is a node index, `< 0` is the leaf `!child`.
pub type Child = i32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u32,
    pub split: Split,
    pub missing: Missing,
    pub default_left: bool,
    pub left: Child,
    pub right: Child,
    /// The split's gain (loss reduction), summed per feature for gain importance.
    pub gain: f64,
    /// The weight of training data through this node (row count or hessian sum); TreeSHAP uses it.
    pub cover: f64,
}

/// LightGBM's `kZeroThreshold`: values this close to zero count as zero for `Missing::Zero`.
const ZERO_THRESHOLD: f64 = 1e-35;

impl Node {
    /// True when `x` (this node's feature value) goes left.
    #[inline]
    pub fn goes_left(&self, x: f64) -> bool {
        match &self.split {
            Split::Le { threshold } => {
                let x = match self.missing {
                    Missing::AsZero if x.is_nan() => 0.0,
                    Missing::NaN if x.is_nan() => return self.default_left,
                    Missing::Zero if x.is_nan() || x.abs() <= ZERO_THRESHOLD => return self.default_left,
                    _ => x,
                };
                x <= *threshold
            }
            Split::Lt { threshold } => {
                if x.is_nan() {
                    return self.default_left;
                }
                (x as f32) < *threshold
            }
            Split::In { categories } => {
                if x.is_nan() {
                    return self.default_left;
                }
                if x < 0.0 {
                    return false;
                }
                // Truncation as LightGBM's `static_cast<int>`; values past u32 are no category.
                let c = x as u64;
                u32::try_from(c).is_ok_and(|c| categories.binary_search(&c).is_ok())
            }
        }
    }
}

/// One regression tree. A tree that never split has no nodes and one leaf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
    pub leaves: Vec<f64>,
    /// Training weight per leaf, as [`Node::cover`].
    pub leaf_cover: Vec<f64>,
}

impl Tree {
    /// A tree of one leaf.
    pub fn constant(value: f64, cover: f64) -> Tree {
        Tree { nodes: Vec::new(), leaves: vec![value], leaf_cover: vec![cover] }
    }

    /// The leaf `row` lands in.
    #[inline]
    pub fn leaf(&self, row: &[f64]) -> usize {
        if self.nodes.is_empty() {
            return 0;
        }
        let mut at: Child = 0;
        while at >= 0 {
            let node = &self.nodes[at as usize];
            at = if node.goes_left(row[node.feature as usize]) { node.left } else { node.right };
        }
        !at as usize
    }

    #[inline]
    pub fn predict(&self, row: &[f64]) -> f64 {
        self.leaves[self.leaf(row)]
    }

    /// The largest feature index a split reads, if any.
    pub fn max_feature(&self) -> Option<u32> {
        self.nodes.iter().map(|n| n.feature).max()
    }

    /// Checks that every child reference is in range and every node is reachable once, so a
    /// loaded file cannot make prediction loop or index out of bounds.
    pub fn validate(&self) -> Result<(), String> {
        if self.leaves.len() != self.leaf_cover.len() {
            return Err(format!("{} leaves but {} leaf covers", self.leaves.len(), self.leaf_cover.len()));
        }
        if self.nodes.is_empty() {
            return if self.leaves.len() == 1 {
                Ok(())
            } else {
                Err("a tree without splits must have one leaf".into())
            };
        }
        if self.leaves.len() != self.nodes.len() + 1 {
            return Err(format!(
                "{} splits need {} leaves, found {}",
                self.nodes.len(),
                self.nodes.len() + 1,
                self.leaves.len()
            ));
        }
        let mut seen_node = vec![false; self.nodes.len()];
        let mut seen_leaf = vec![false; self.leaves.len()];
        seen_node[0] = true;
        for node in &self.nodes {
            for child in [node.left, node.right] {
                let seen =
                    if child >= 0 { seen_node.get_mut(child as usize) } else { seen_leaf.get_mut(!child as usize) };
                match seen {
                    Some(s) if !*s => *s = true,
                    Some(_) => return Err(format!("child {child} is referenced twice")),
                    None => return Err(format!("child {child} is out of range")),
                }
            }
            if let Split::In { categories } = &node.split
                && !categories.is_sorted()
            {
                return Err("categories of a split must be sorted".into());
            }
        }
        Ok(())
    }
}

/// How raw scores become outputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Objective {
    /// Binary log-loss: the output is `1 / (1 + exp(-sigmoid · raw))`.
    Binary { sigmoid: f64 },
    /// LambdaMART over query groups: the output is the raw score.
    LambdaRank,
    /// Squared error: the output is the raw score.
    Regression,
}

impl Objective {
    #[inline]
    pub fn transform(self, raw: f64) -> f64 {
        match self {
            Objective::Binary { sigmoid } => 1.0 / (1.0 + (-sigmoid * raw).exp()),
            Objective::LambdaRank | Objective::Regression => raw,
        }
    }
}

/// An additive ensemble: `raw(x) = base_score + Σ tree(x)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    pub feature_names: Vec<String>,
    pub objective: Objective,
    pub base_score: f64,
    pub trees: Vec<Tree>,
}

impl Forest {
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    #[inline]
    pub fn predict_raw(&self, row: &[f64]) -> f64 {
        debug_assert_eq!(row.len(), self.n_features());
        self.trees.iter().fold(self.base_score, |acc, t| acc + t.predict(row))
    }

    /// The transformed output (a probability for binary models).
    #[inline]
    pub fn predict(&self, row: &[f64]) -> f64 {
        self.objective.transform(self.predict_raw(row))
    }

    /// Raw scores of every row of a row-major matrix with `n_features()` columns.
    pub fn predict_raw_batch(&self, values: &[f64]) -> Vec<f64> {
        let n = self.n_features().max(1);
        values.chunks_exact(n).map(|row| self.predict_raw(row)).collect()
    }

    /// Total split gain per feature.
    pub fn gain_importance(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.n_features()];
        for node in self.trees.iter().flat_map(|t| &t.nodes) {
            out[node.feature as usize] += node.gain;
        }
        out
    }

    /// Checks every tree and that splits only read features the forest declares.
    pub fn validate(&self) -> Result<(), String> {
        for (i, tree) in self.trees.iter().enumerate() {
            tree.validate().map_err(|e| format!("tree {i}: {e}"))?;
            if let Some(f) = tree.max_feature()
                && f as usize >= self.n_features()
            {
                return Err(format!("tree {i} splits on feature {f}, but the model has {}", self.n_features()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stump(split: Split, missing: Missing, default_left: bool) -> Tree {
        Tree {
            nodes: vec![Node { feature: 0, split, missing, default_left, left: !0, right: !1, gain: 1.0, cover: 2.0 }],
            leaves: vec![-1.0, 1.0],
            leaf_cover: vec![1.0, 1.0],
        }
    }

    #[test]
    fn le_split_reads_nan_by_missing_rule() {
        let as_zero = stump(Split::Le { threshold: 0.5 }, Missing::AsZero, false);
        assert_eq!(as_zero.predict(&[f64::NAN]), -1.0, "NaN as 0 <= 0.5 goes left");
        assert_eq!(as_zero.predict(&[0.5]), -1.0, "the threshold itself goes left");
        assert_eq!(as_zero.predict(&[0.6]), 1.0);
        let nan = stump(Split::Le { threshold: 0.5 }, Missing::NaN, false);
        assert_eq!(nan.predict(&[f64::NAN]), 1.0, "NaN goes the default (right) way");
        let zero = stump(Split::Le { threshold: 0.5 }, Missing::Zero, false);
        assert_eq!(zero.predict(&[0.0]), 1.0, "zero counts as missing");
        assert_eq!(zero.predict(&[0.1]), -1.0);
    }

    #[test]
    fn lt_split_compares_in_f32() {
        let t = stump(Split::Lt { threshold: 0.1f32 }, Missing::NaN, true);
        // 0.1f64 rounds to 0.1f32, which is not below itself.
        assert_eq!(t.predict(&[0.1]), 1.0);
        assert_eq!(t.predict(&[0.09]), -1.0);
        assert_eq!(t.predict(&[f64::NAN]), -1.0);
    }

    #[test]
    fn categorical_split_tests_membership() {
        let t = stump(Split::In { categories: vec![1, 4] }, Missing::NaN, false);
        assert_eq!(t.predict(&[4.0]), -1.0);
        assert_eq!(t.predict(&[4.7]), -1.0, "truncated to 4");
        assert_eq!(t.predict(&[2.0]), 1.0);
        assert_eq!(t.predict(&[-1.0]), 1.0);
        assert_eq!(t.predict(&[f64::NAN]), 1.0);
    }

    #[test]
    fn validate_rejects_cycles_and_bad_children() {
        let mut t = stump(Split::Le { threshold: 0.0 }, Missing::NaN, false);
        assert!(t.validate().is_ok());
        t.nodes[0].right = 0;
        assert!(t.validate().is_err(), "a child pointing back at the root");
        let mut t = stump(Split::Le { threshold: 0.0 }, Missing::NaN, false);
        t.nodes[0].left = !5;
        assert!(t.validate().is_err());
    }
}
