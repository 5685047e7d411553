//! Leaf-wise growth of one tree on binned data.

use super::Params;
use super::bins::{Binned, Mapper};
use super::hist::{self, Candidate, Rule, Rules, Sums};
use crate::tree::{Child, Missing, Node, Split, Tree};

/// A leaf while the tree grows: its rows are `indices[begin..begin + count]`.
#[derive(Debug)]
struct Leaf {
    begin: usize,
    count: usize,
    sums: Sums,
    depth: usize,
    /// Kept only while the leaf may still be split (its children's histograms derive from it).
    hist: Option<Vec<Sums>>,
    best: Option<Candidate>,
}

/// Grows trees, reusing its buffers from tree to tree.
#[derive(Debug)]
pub(crate) struct Learner<'a> {
    binned: &'a Binned,
    rules: Rules,
    num_leaves: usize,
    max_depth: Option<usize>,
    learning_rate: f64,
    /// The rows of the current tree, grouped by leaf (a permutation of the bag).
    indices: Vec<u32>,
    /// Leaf ranges of the last tree grown, by leaf id.
    ranges: Vec<(usize, usize)>,
    scratch: Vec<u32>,
    ordered: Vec<(f64, f64)>,
    pool: Vec<Vec<Sums>>,
}

impl<'a> Learner<'a> {
    pub(crate) fn new(binned: &'a Binned, params: &Params) -> Learner<'a> {
        Learner {
            binned,
            rules: Rules::new(params),
            num_leaves: params.num_leaves,
            max_depth: params.max_depth,
            learning_rate: params.learning_rate,
            indices: Vec::new(),
            ranges: Vec::new(),
            scratch: Vec::new(),
            ordered: Vec::new(),
            pool: Vec::new(),
        }
    }

    fn take_hist(&mut self) -> Vec<Sums> {
        self.pool.pop().unwrap_or_else(|| vec![Sums::default(); self.binned.total_bins()])
    }

    /// The histogram of rows `indices[begin..begin + count]`.
    fn histogram(&mut self, begin: usize, count: usize, g: &[f64], h: &[f64], used: &[bool]) -> Vec<Sums> {
        let mut out = self.take_hist();
        let rows = &self.indices[begin..begin + count];
        self.ordered.clear();
        self.ordered.extend(rows.iter().map(|&r| (g[r as usize], h[r as usize])));
        hist::build(self.binned, used, rows, &self.ordered, &mut out);
        out
    }

    fn can_split(&self, leaf: &Leaf) -> bool {
        self.max_depth.is_none_or(|d| leaf.depth < d)
            && leaf.count >= 2 * self.rules.min_data as usize
            && leaf.sums.h >= 2.0 * self.rules.min_hess
    }

    /// Finds the leaf's best split, or drops its histogram when it cannot split.
    fn search(&mut self, leaf: &mut Leaf, used: &[bool]) {
        leaf.best = match &leaf.hist {
            Some(hist) if self.can_split(leaf) => hist::best_split(self.binned, used, hist, leaf.sums, &self.rules),
            _ => None,
        };
        if leaf.best.is_none()
            && let Some(h) = leaf.hist.take()
        {
            self.pool.push(h);
        }
    }

    /// Grows a tree on the rows `bag` with gradients `g` and hessians `h`, splitting only on
    /// `used` features. `None` when the root cannot split.
    pub(crate) fn grow(&mut self, bag: &[u32], g: &[f64], h: &[f64], used: &[bool]) -> Option<Tree> {
        self.indices.clear();
        self.indices.extend_from_slice(bag);
        let mut root_sums = Sums::default();
        for &r in bag {
            root_sums += Sums { g: g[r as usize], h: h[r as usize], n: 1 };
        }
        let hist = self.histogram(0, bag.len(), g, h, used);
        let mut root = Leaf { begin: 0, count: bag.len(), sums: root_sums, depth: 0, hist: Some(hist), best: None };
        self.search(&mut root, used);
        let mut leaves = vec![root];
        let mut nodes: Vec<Node> = Vec::new();
        // Where each leaf hangs: (node, is_left); the root has no parent.
        let mut parent: Vec<Option<(usize, bool)>> = vec![None];

        while leaves.len() < self.num_leaves {
            let mut pick: Option<(usize, f64)> = None;
            for (i, leaf) in leaves.iter().enumerate() {
                if let Some(c) = &leaf.best
                    && pick.is_none_or(|(_, g)| c.gain > g)
                {
                    pick = Some((i, c.gain));
                }
            }
            let Some((l, _)) = pick else { break };
            let cand = leaves[l].best.take().expect("picked leaf has a split");
            let (begin, count) = (leaves[l].begin, leaves[l].count);
            let n_left = self.partition(begin, count, &cand);
            debug_assert_eq!(n_left, cand.left.n as usize);

            let r = leaves.len();
            let node = nodes.len();
            if let Some((p, is_left)) = parent[l] {
                if is_left {
                    nodes[p].left = node as Child;
                } else {
                    nodes[p].right = node as Child;
                }
            }
            nodes.push(self.node(&cand, l, r));
            parent[l] = Some((node, true));
            parent.push(Some((node, false)));

            // Histogram of the smaller child from its rows, the larger one by subtraction.
            let mut parent_hist = leaves[l].hist.take().expect("a splittable leaf keeps its histogram");
            let n_right = count - n_left;
            let (small_begin, small_count) =
                if n_left <= n_right { (begin, n_left) } else { (begin + n_left, n_right) };
            let small = self.histogram(small_begin, small_count, g, h, used);
            for f in (0..used.len()).filter(|&f| used[f]) {
                let range = self.binned.offsets[f]..self.binned.offsets[f + 1];
                for (p, s) in parent_hist[range.clone()].iter_mut().zip(&small[range]) {
                    *p -= *s;
                }
            }
            let (left_hist, right_hist) = if n_left <= n_right { (small, parent_hist) } else { (parent_hist, small) };
            let depth = leaves[l].depth + 1;
            let mut left = Leaf { begin, count: n_left, sums: cand.left, depth, hist: Some(left_hist), best: None };
            let mut right = Leaf {
                begin: begin + n_left,
                count: n_right,
                sums: cand.right,
                depth,
                hist: Some(right_hist),
                best: None,
            };
            self.search(&mut left, used);
            self.search(&mut right, used);
            leaves[l] = left;
            leaves.push(right);
        }
        for leaf in &mut leaves {
            if let Some(h) = leaf.hist.take() {
                self.pool.push(h);
            }
        }
        if nodes.is_empty() {
            return None;
        }

        // Leaf values and covers from exact sums over each leaf's rows (the histogram totals carry
        // subtraction round-off).
        self.ranges = leaves.iter().map(|l| (l.begin, l.count)).collect();
        let mut values = Vec::with_capacity(leaves.len());
        let mut covers = Vec::with_capacity(leaves.len());
        for &(begin, count) in &self.ranges {
            let mut s = Sums::default();
            for &r in &self.indices[begin..begin + count] {
                s += Sums { g: g[r as usize], h: h[r as usize], n: 1 };
            }
            values.push(hist::leaf_output(s, self.rules.l1, self.rules.l2) * self.learning_rate);
            covers.push(s.h);
        }
        // A node's cover is the sum of its children's; children always come after their parent.
        for i in (0..nodes.len()).rev() {
            let cover = |c: Child| if c >= 0 { nodes[c as usize].cover } else { covers[!c as usize] };
            nodes[i].cover = cover(nodes[i].left) + cover(nodes[i].right);
        }
        Some(Tree { nodes, leaves: values, leaf_cover: covers })
    }

    /// Adds each leaf's value to the scores of the rows the last tree put in it.
    pub(crate) fn add_leaf_values(&self, values: &[f64], scores: &mut [f64]) {
        for (&(begin, count), &v) in self.ranges.iter().zip(values) {
            for &r in &self.indices[begin..begin + count] {
                scores[r as usize] += v;
            }
        }
    }

    /// Stable partition of `indices[begin..begin + count]` by the candidate's rule; returns the
    /// number of rows going left.
    fn partition(&mut self, begin: usize, count: usize, cand: &Candidate) -> usize {
        let col = &self.binned.cols[cand.feature];
        let mut goes_left = [false; 256];
        match &cand.rule {
            Rule::Numeric { bin, nan_bin, default_left } => {
                goes_left[..=*bin as usize].fill(true);
                if let Some(nb) = nan_bin {
                    goes_left[*nb as usize] = *default_left;
                }
            }
            Rule::Categorical { left } => {
                for &b in left {
                    goes_left[b as usize] = true;
                }
            }
        }
        let rows = &mut self.indices[begin..begin + count];
        self.scratch.clear();
        let mut n_left = 0;
        for i in 0..rows.len() {
            let r = rows[i];
            if goes_left[col[r as usize] as usize] {
                rows[n_left] = r;
                n_left += 1;
            } else {
                self.scratch.push(r);
            }
        }
        rows[n_left..].copy_from_slice(&self.scratch);
        n_left
    }

    /// The tree node of a split of leaf `l` into leaves `l` (left) and `r` (right).
    fn node(&self, cand: &Candidate, l: usize, r: usize) -> Node {
        let (split, default_left) = match (&cand.rule, &self.binned.mappers[cand.feature]) {
            (Rule::Numeric { bin, default_left, .. }, Mapper::Numeric { uppers, .. }) => {
                (Split::Le { threshold: uppers[*bin as usize] }, *default_left)
            }
            (Rule::Categorical { left }, Mapper::Categorical { cats, .. }) => {
                let mut categories: Vec<u32> = left.iter().map(|&b| cats[b as usize]).collect();
                categories.sort_unstable();
                (Split::In { categories }, false)
            }
            _ => unreachable!("a split rule always matches its feature's mapper"),
        };
        Node {
            feature: cand.feature as u32,
            split,
            missing: Missing::NaN,
            default_left,
            left: !(l as Child),
            right: !(r as Child),
            gain: cand.gain,
            cover: 0.0,
        }
    }
}
