//! The one tree-ensemble representation behind every tree model Cascade scores: the forests we
//! train, and LightGBM and XGBoost models we import. Each node keeps the split rule of the library
//! that made it (`<=` in doubles for LightGBM and ours, `<` in `f32` for XGBoost), so imported
//! models score exactly as they do in their own library.

use crate::error::{Error, Result};
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

/// LightGBM's `kZeroThreshold` (a C `float`, hence the cast): values this close to zero count
/// as zero for `Missing::Zero`.
const ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

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
    /// loaded file cannot make prediction loop or index out of bounds. A violation is an
    /// [`Error::Format`] about the `tree`.
    pub fn validate(&self) -> Result<()> {
        self.check_structure().map_err(|reason| Error::format("tree", reason))
    }

    /// [`Tree::validate`]'s checks, with the bare reason (importers prefix their own context).
    pub(crate) fn check_structure(&self) -> Result<(), String> {
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
    ///
    /// Same results as [`Forest::predict_raw`] per row, faster: the forest is first copied into a
    /// compact layout (24-byte nodes, categories as bitsets), then scored tree by tree over blocks
    /// of rows so each tree's nodes stay in cache while a block passes through.
    pub fn predict_raw_batch(&self, values: &[f64]) -> Vec<f64> {
        let n = self.n_features().max(1);
        let flat = Flat::new(self);
        let mut out = vec![self.base_score; values.len() / n];
        const BLOCK: usize = 64;
        for (rows, scores) in values.chunks(BLOCK * n).zip(out.chunks_mut(BLOCK)) {
            flat.add_scores(rows, n, scores);
        }
        out
    }

    /// Total split gain per feature.
    pub fn gain_importance(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.n_features()];
        for node in self.trees.iter().flat_map(|t| &t.nodes) {
            out[node.feature as usize] += node.gain;
        }
        out
    }

    /// Checks every tree and that splits only read features the forest declares. A violation is
    /// an [`Error::Format`] about the `forest`.
    pub fn validate(&self) -> Result<()> {
        self.check_structure().map_err(|reason| Error::format("forest", reason))
    }

    /// [`Forest::validate`]'s checks, with the bare reason (importers prefix their own context).
    pub(crate) fn check_structure(&self) -> Result<(), String> {
        for (i, tree) in self.trees.iter().enumerate() {
            tree.check_structure().map_err(|e| format!("tree {i}: {e}"))?;
            if let Some(f) = tree.max_feature()
                && f as usize >= self.n_features()
            {
                return Err(format!("tree {i} splits on feature {f}, but the model has {}", self.n_features()));
            }
        }
        Ok(())
    }
}

/// What a [`FlatNode`] compares (see [`Node::goes_left`]; the two must agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `Split::Le` with `Missing::NaN`.
    LeNaN,
    LeAsZero,
    LeZero,
    Lt,
    /// `Split::In` with the categories as a bitset: `cats[start..start + len]` words.
    InBits,
    /// `Split::In` with categories too large for a bitset: sorted ids `cat_ids[start..start + len]`.
    InList,
}

/// A node of the compact scoring layout: 24 bytes, children global (`< 0` is `!leaf`).
#[derive(Debug, Clone, Copy)]
struct FlatNode {
    /// The threshold, or for categorical splits `start` in the low and `len` in the high 32 bits.
    threshold: f64,
    feature: u32,
    children: [Child; 2],
    op: Op,
    default_left: bool,
}

/// All trees of a forest in one compact layout, for batch scoring.
#[derive(Debug)]
struct Flat {
    nodes: Vec<FlatNode>,
    leaves: Vec<f64>,
    /// Per tree, the root (a node index, or `!leaf` for a tree without splits).
    roots: Vec<Child>,
    cats: Vec<u64>,
    cat_ids: Vec<u32>,
}

/// Categorical splits whose largest id is below this are bitsets (at most 64 words).
const BITSET_LIMIT: u32 = 4096;

impl Flat {
    fn new(forest: &Forest) -> Flat {
        let n_nodes = forest.trees.iter().map(|t| t.nodes.len()).sum();
        let n_leaves = forest.trees.iter().map(|t| t.leaves.len()).sum();
        let mut flat = Flat {
            nodes: Vec::with_capacity(n_nodes),
            leaves: Vec::with_capacity(n_leaves),
            roots: Vec::with_capacity(forest.trees.len()),
            cats: Vec::new(),
            cat_ids: Vec::new(),
        };
        for tree in &forest.trees {
            let (node_base, leaf_base) = (flat.nodes.len() as Child, flat.leaves.len() as Child);
            let global = |c: Child| if c >= 0 { c + node_base } else { !(!c + leaf_base) };
            flat.roots.push(if tree.nodes.is_empty() { !leaf_base } else { node_base });
            flat.leaves.extend_from_slice(&tree.leaves);
            for node in &tree.nodes {
                let (op, threshold) = match (&node.split, node.missing) {
                    (Split::Le { threshold }, Missing::NaN) => (Op::LeNaN, *threshold),
                    (Split::Le { threshold }, Missing::AsZero) => (Op::LeAsZero, *threshold),
                    (Split::Le { threshold }, Missing::Zero) => (Op::LeZero, *threshold),
                    (Split::Lt { threshold }, _) => (Op::Lt, f64::from(*threshold)),
                    (Split::In { categories }, _) => {
                        let max = categories.last().copied().unwrap_or(0);
                        if max < BITSET_LIMIT {
                            let start = flat.cats.len();
                            let words = max as usize / 64 + 1;
                            flat.cats.resize(start + words, 0);
                            for &c in categories {
                                flat.cats[start + c as usize / 64] |= 1 << (c % 64);
                            }
                            (Op::InBits, f64::from_bits((words as u64) << 32 | start as u64))
                        } else {
                            let start = flat.cat_ids.len();
                            flat.cat_ids.extend_from_slice(categories);
                            (Op::InList, f64::from_bits((categories.len() as u64) << 32 | start as u64))
                        }
                    }
                };
                flat.nodes.push(FlatNode {
                    threshold,
                    feature: node.feature,
                    children: [global(node.left), global(node.right)],
                    op,
                    default_left: node.default_left,
                });
            }
        }
        flat
    }

    #[inline(always)]
    fn goes_left(&self, node: &FlatNode, x: f64) -> bool {
        match node.op {
            // NaN compares false, so `x <= t` alone is right for NaN going right.
            Op::LeNaN => (x <= node.threshold) | (x.is_nan() & node.default_left),
            Op::LeAsZero => (if x.is_nan() { 0.0 } else { x }) <= node.threshold,
            Op::LeZero => {
                if x.is_nan() || x.abs() <= ZERO_THRESHOLD {
                    node.default_left
                } else {
                    x <= node.threshold
                }
            }
            Op::Lt => {
                if x.is_nan() {
                    node.default_left
                } else {
                    f64::from(x as f32) < node.threshold
                }
            }
            Op::InBits | Op::InList => {
                if x.is_nan() {
                    return node.default_left;
                }
                if x < 0.0 {
                    return false;
                }
                let Ok(c) = u32::try_from(x as u64) else { return false };
                let bits = node.threshold.to_bits();
                let (start, len) = ((bits & 0xFFFF_FFFF) as usize, (bits >> 32) as usize);
                if node.op == Op::InBits {
                    let word = c as usize / 64;
                    word < len && self.cats[start + word] >> (c % 64) & 1 == 1
                } else {
                    self.cat_ids[start..start + len].binary_search(&c).is_ok()
                }
            }
        }
    }

    /// Adds every tree's leaf value to `scores`, one score per row of `rows` (`n` columns).
    fn add_scores(&self, rows: &[f64], n: usize, scores: &mut [f64]) {
        for &root in &self.roots {
            if root < 0 {
                let v = self.leaves[!root as usize];
                scores.iter_mut().for_each(|s| *s += v);
                continue;
            }
            // LANES rows walk the tree in lock step: their node loads overlap, and the loop exit
            // (a mispredicted branch per walk) is paid once per LANES rows.
            const LANES: usize = 4;
            let mut quads = rows.chunks_exact(LANES * n);
            let mut quad_scores = scores.chunks_exact_mut(LANES);
            for (quad, s) in (&mut quads).zip(&mut quad_scores) {
                let mut at = [root; LANES];
                while at.iter().any(|&a| a >= 0) {
                    for k in 0..LANES {
                        if at[k] >= 0 {
                            let node = &self.nodes[at[k] as usize];
                            let x = quad[k * n + node.feature as usize];
                            at[k] = node.children[usize::from(!self.goes_left(node, x))];
                        }
                    }
                }
                for k in 0..LANES {
                    s[k] += self.leaves[!at[k] as usize];
                }
            }
            for (row, score) in quads.remainder().chunks_exact(n).zip(quad_scores.into_remainder()) {
                let mut at = root;
                while at >= 0 {
                    let node = &self.nodes[at as usize];
                    at = node.children[usize::from(!self.goes_left(node, row[node.feature as usize]))];
                }
                *score += self.leaves[!at as usize];
            }
        }
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
    fn batch_scoring_matches_single_rows_for_every_split_kind() {
        let mut trees = vec![
            stump(Split::Le { threshold: 0.5 }, Missing::NaN, true),
            stump(Split::Le { threshold: 0.5 }, Missing::NaN, false),
            stump(Split::Le { threshold: -0.5 }, Missing::AsZero, false),
            stump(Split::Le { threshold: 0.5 }, Missing::Zero, false),
            stump(Split::Lt { threshold: 0.1f32 }, Missing::NaN, true),
            stump(Split::In { categories: vec![1, 4, 70, 200] }, Missing::NaN, true),
            stump(Split::In { categories: vec![3, 5_000_000] }, Missing::NaN, false),
            Tree::constant(0.25, 1.0),
        ];
        // A deeper tree: the root's right child is a node.
        let mut deep = stump(Split::Le { threshold: 0.0 }, Missing::NaN, false);
        deep.nodes[0].right = 1;
        deep.nodes.push(Node { left: !1, right: !2, ..deep.nodes[0].clone() });
        deep.nodes[1].split = Split::Le { threshold: 2.0 };
        deep.leaves.push(3.0);
        deep.leaf_cover.push(1.0);
        trees.push(deep);
        for (i, t) in trees.iter_mut().enumerate() {
            for (j, v) in t.leaves.iter_mut().enumerate() {
                *v += (i * 10 + j) as f64 * 0.01;
            }
        }
        let forest =
            Forest { feature_names: vec!["x".into()], objective: Objective::Regression, base_score: 0.5, trees };
        let xs = [
            f64::NAN,
            0.0,
            -0.0,
            1e-36,
            0.09,
            0.1,
            0.5,
            0.6,
            -0.5,
            -1.0,
            1.0,
            3.0,
            4.0,
            4.9,
            70.0,
            200.0,
            201.0,
            5_000_000.0,
            5e9,
            3.0,
            2.0,
            -3.0,
        ];
        let single: Vec<f64> = xs.iter().map(|&x| forest.predict_raw(&[x])).collect();
        let batch = forest.predict_raw_batch(&xs);
        assert_eq!(single.len(), batch.len());
        for (x, (a, b)) in xs.iter().zip(single.iter().zip(&batch)) {
            assert_eq!(a.to_bits(), b.to_bits(), "x = {x}");
        }
        let many: Vec<f64> = (0..1000).map(|i| f64::from(i) * 0.37 - 50.0).collect();
        let single: Vec<f64> = many.iter().map(|&x| forest.predict_raw(&[x])).collect();
        assert_eq!(single, forest.predict_raw_batch(&many));
    }

    #[test]
    fn validate_rejects_cycles_and_bad_children() {
        let mut t = stump(Split::Le { threshold: 0.0 }, Missing::NaN, false);
        assert!(t.validate().is_ok());
        t.nodes[0].right = 0;
        let err = t.validate().unwrap_err();
        assert_eq!(err.to_string(), "tree: child 0 is referenced twice", "a child pointing back at the root");
        assert_eq!(err.kind(), cascade_core::ErrorKind::Internal);
        let mut t = stump(Split::Le { threshold: 0.0 }, Missing::NaN, false);
        t.nodes[0].left = !5;
        assert!(t.validate().is_err());
    }
}
