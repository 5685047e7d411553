//! TreeSHAP explanations of forest predictions: how much each feature moved a row's raw score
//! away from the forest's expected score.
//!
//! This is the polynomial-time path algorithm of Lundberg, Erion and Lee (2018), "Consistent
//! individualized feature attribution for tree ensembles", Algorithm 2. It yields the exact
//! Shapley values of the set function "expected raw score when only the features in S are known",
//! where an unknown feature's split is averaged over both children weighted by training cover
//! ([`Node::cover`], [`Tree::leaf_cover`]) and a known feature follows the node's own rule
//! ([`Node::goes_left`], so missing values and categorical splits behave as in scoring). These are
//! the values LightGBM's `pred_contrib=True` and XGBoost's `pred_contribs=True` report.
//!
//! Cost per tree is O(leaves · depth²); the recursion is as deep as the tree.

use crate::tree::{Child, Forest, Node, Tree};
use serde::Serialize;

/// A row's raw score split into an expected value and one contribution per feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The expected raw score: the forest's `base_score` plus each tree's cover-weighted mean leaf.
    pub base: f64,
    /// One SHAP value per feature; `base + Σ values` is the row's raw score.
    pub values: Vec<f64>,
}

/// One feature's part in a score, for showing why an item was ranked where it was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub feature: String,
    /// The row's value of the feature.
    pub value: f64,
    /// How much the feature moved the raw score (its SHAP value).
    pub contribution: f64,
}

/// The SHAP values of `row` (one value per feature of the forest) and the expected raw score.
///
/// # Panics
/// If `row` does not have one value per feature of the forest.
pub fn shap_values(forest: &Forest, row: &[f64]) -> Explanation {
    assert_eq!(
        row.len(),
        forest.n_features(),
        "row has {} values, the forest {} features",
        row.len(),
        forest.n_features()
    );
    let mut values = vec![0.0; forest.n_features()];
    let mut base = forest.base_score;
    let mut path = Vec::new();
    for tree in &forest.trees {
        if tree.nodes.is_empty() {
            base += tree.leaves[0];
            continue;
        }
        base += expected_value(tree, 0);
        let mut walk = Walk { tree, row, phi: &mut values, path: &mut path };
        walk.recurse(0, 0, 0, 1.0, 1.0, NO_FEATURE);
        debug_assert!(path.is_empty());
    }
    Explanation { base, values }
}

/// The `k` features that moved `row`'s raw score most, by absolute contribution (ties by feature
/// index); features that did not move it at all are no reason and are left out.
pub fn top_reasons(forest: &Forest, row: &[f64], k: usize) -> Vec<Reason> {
    let explanation = shap_values(forest, row);
    let phi = &explanation.values;
    let mut order: Vec<usize> = (0..phi.len()).filter(|&i| phi[i] != 0.0).collect();
    order.sort_by(|&a, &b| phi[b].abs().total_cmp(&phi[a].abs()).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| Reason { feature: forest.feature_names[i].clone(), value: row[i], contribution: phi[i] })
        .collect()
}

/// The feature of the path's root element, which stands for no feature.
const NO_FEATURE: u32 = u32::MAX;

/// One split feature on the path from the root to the current node.
#[derive(Debug, Clone, Copy)]
struct Element {
    feature: u32,
    /// Share of training cover that follows this feature's splits on the path (the feature unknown).
    zero: f64,
    /// 1 when the row follows this feature's splits on the path (the feature known), else 0.
    one: f64,
    /// Summed permutation weight of the subsets of path features with this element's position as
    /// their size (the weights are indexed by subset size, not by feature).
    weight: f64,
}

fn cover(tree: &Tree, child: Child) -> f64 {
    if child >= 0 { tree.nodes[child as usize].cover } else { tree.leaf_cover[!child as usize] }
}

/// The shares of a node's cover that go left and right. Normalised by the children's covers so
/// that they always sum to one (XGBoost's hessian sums need not add up exactly); a node whose
/// children have no usable cover splits evenly.
fn fractions(tree: &Tree, node: &Node) -> (f64, f64) {
    let (l, r) = (cover(tree, node.left), cover(tree, node.right));
    let total = l + r;
    if total > 0.0 && total.is_finite() && l >= 0.0 && r >= 0.0 { (l / total, r / total) } else { (0.5, 0.5) }
}

/// The tree's value averaged over training cover from `at` down: with [`fractions`], exactly the
/// expectation TreeSHAP measures contributions against, so explanations add up to the score.
fn expected_value(tree: &Tree, at: Child) -> f64 {
    if at < 0 {
        return tree.leaves[!at as usize];
    }
    let node = &tree.nodes[at as usize];
    let (fl, fr) = fractions(tree, node);
    fl * expected_value(tree, node.left) + fr * expected_value(tree, node.right)
}

struct Walk<'a> {
    tree: &'a Tree,
    row: &'a [f64],
    phi: &'a mut [f64],
    /// The paths of every node on the way down, each a segment after its parent's.
    path: &'a mut Vec<Element>,
}

impl Walk<'_> {
    /// Visits `at`, reached from the path `path[from..from + len]` through a split on `feature`
    /// that lets the given shares of cover (`zero`) and of the row (`one`) through.
    fn recurse(&mut self, at: Child, from: usize, len: usize, zero: f64, one: f64, feature: u32) {
        let start = self.path.len();
        self.path.extend_from_within(from..from + len);
        extend(self.path, start, zero, one, feature);
        if at < 0 {
            let value = self.tree.leaves[!at as usize];
            let seg = &self.path[start..];
            for i in 1..seg.len() {
                let e = seg[i];
                self.phi[e.feature as usize] += unwound_sum(seg, i) * (e.one - e.zero) * value;
            }
        } else {
            let node = &self.tree.nodes[at as usize];
            let (fl, fr) = fractions(self.tree, node);
            let (hot, cold, f_hot, f_cold) = if node.goes_left(self.row[node.feature as usize]) {
                (node.left, node.right, fl, fr)
            } else {
                (node.right, node.left, fr, fl)
            };
            // A feature split on again below: its earlier element is folded into this one.
            let (mut zero, mut one) = (1.0, 1.0);
            if let Some(k) = self.path[start + 1..].iter().position(|e| e.feature == node.feature) {
                let k = k + 1;
                (zero, one) = (self.path[start + k].zero, self.path[start + k].one);
                unwind(self.path, start, k);
            }
            let len = self.path.len() - start;
            // A branch neither the row nor any cover reaches adds nothing (and its weights would
            // divide by zero when unwound).
            for (child, share, one) in [(hot, f_hot, one), (cold, f_cold, 0.0)] {
                if zero * share > 0.0 || one > 0.0 {
                    self.recurse(child, start, len, zero * share, one, node.feature);
                }
            }
        }
        self.path.truncate(start);
    }
}

/// Appends a feature to the path `path[start..]`, updating the subset-size weights: each subset
/// of the new path either leaves the feature out (share `zero`) or takes it in (share `one`), and
/// the Shapley permutation weight of a subset of size s among d features is s!(d−s)!/(d+1)!.
fn extend(path: &mut Vec<Element>, start: usize, zero: f64, one: f64, feature: u32) {
    let l = path.len() - start;
    path.push(Element { feature, zero, one, weight: if l == 0 { 1.0 } else { 0.0 } });
    let seg = &mut path[start..];
    let n = (l + 1) as f64;
    for i in (0..l).rev() {
        seg[i + 1].weight += one * seg[i].weight * (i + 1) as f64 / n;
        seg[i].weight = zero * seg[i].weight * (l - i) as f64 / n;
    }
}

/// Removes element `k` from the path `path[start..]`, inverting [`extend`] for its shares.
fn unwind(path: &mut Vec<Element>, start: usize, k: usize) {
    let seg = &mut path[start..];
    let l = seg.len() - 1;
    let Element { zero, one, .. } = seg[k];
    let n = (l + 1) as f64;
    let mut rest = seg[l].weight;
    for j in (0..l).rev() {
        if one != 0.0 {
            let w = rest * n / (one * (j + 1) as f64);
            rest = seg[j].weight - zero * w * (l - j) as f64 / n;
            seg[j].weight = w;
        } else {
            seg[j].weight = seg[j].weight * n / (zero * (l - j) as f64);
        }
    }
    for j in k..l {
        seg[j].feature = seg[j + 1].feature;
        seg[j].zero = seg[j + 1].zero;
        seg[j].one = seg[j + 1].one;
    }
    path.pop();
}

/// The total weight of the path without element `k`, as [`unwind`] would leave it.
fn unwound_sum(seg: &[Element], k: usize) -> f64 {
    let l = seg.len() - 1;
    let Element { zero, one, .. } = seg[k];
    let n = (l + 1) as f64;
    let mut total = 0.0;
    let mut rest = seg[l].weight;
    for j in (0..l).rev() {
        if one != 0.0 {
            let w = rest * n / (one * (j + 1) as f64);
            total += w;
            rest = seg[j].weight - zero * w * (l - j) as f64 / n;
        } else {
            total += seg[j].weight * n / (zero * (l - j) as f64);
        }
    }
    total
}
