//! Gradients of the training objectives and the validation metrics, as LightGBM defines them.

use super::{Dataset, Params, Task};
use rayon::prelude::*;

/// The largest lambdarank label (LightGBM's default label gain has 31 entries).
pub(crate) const MAX_LABEL: f64 = 30.0;

/// LightGBM's kEpsilon, clamping probabilities in the base score and the log-loss.
const EPS: f64 = 1e-15;

/// The gain of relevance label `l`: `2^l - 1`.
#[inline]
fn label_gain(l: f64) -> f64 {
    (l as i32 as f64).exp2() - 1.0
}

/// The DCG discount of 0-based rank `i`: `1 / log2(i + 2)`.
#[inline]
fn discount(i: usize) -> f64 {
    1.0 / ((i + 2) as f64).log2()
}

/// The best DCG at `k` a group with these labels can reach.
fn max_dcg(labels: &[f64], k: usize) -> f64 {
    let mut sorted = labels.to_vec();
    sorted.sort_unstable_by(|a, b| b.total_cmp(a));
    sorted.iter().take(k).enumerate().map(|(i, &l)| label_gain(l) * discount(i)).sum()
}

/// Row indices `0..scores.len()` by score, best first; ties keep row order (a stable sort, as
/// LightGBM's).
fn by_score(scores: &[f64], order: &mut Vec<usize>) {
    order.clear();
    order.extend(0..scores.len());
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
}

/// Computes gradients and hessians of the training objective at the current scores.
#[derive(Debug)]
pub(crate) struct Gradients<'a> {
    task: Task,
    labels: &'a [f64],
    weights: Option<&'a [f64]>,
    bounds: Vec<usize>,
    inverse_max_dcg: Vec<f64>,
    truncation: usize,
    /// `discount(i)` for every rank of the largest group, and `label_gain(l)` for every label:
    /// the pair loop would otherwise spend most of its time in `log2` and `exp2`.
    discounts: Vec<f64>,
    gains: [f64; MAX_LABEL as usize + 1],
}

impl<'a> Gradients<'a> {
    pub(crate) fn new(params: &Params, data: &'a Dataset) -> Gradients<'a> {
        let bounds = data.group_bounds().unwrap_or_default();
        let truncation = params.lambdarank_truncation_level;
        let inverse_max_dcg = bounds
            .windows(2)
            .map(|w| {
                let m = max_dcg(&data.labels[w[0]..w[1]], truncation);
                if m > 0.0 { 1.0 / m } else { 0.0 }
            })
            .collect();
        let largest = bounds.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        Gradients {
            task: params.objective,
            labels: &data.labels,
            weights: data.weights.as_deref(),
            bounds,
            inverse_max_dcg,
            truncation,
            discounts: (0..largest).map(discount).collect(),
            gains: std::array::from_fn(|l| label_gain(l as f64)),
        }
    }

    /// Binary: the log-odds of the (weighted) label mean (LightGBM's boost_from_average).
    /// Lambdarank: 0, since only score differences within a group matter.
    pub(crate) fn base_score(&self) -> f64 {
        match self.task {
            Task::Binary => {
                let (sum_y, sum_w) = match self.weights {
                    Some(w) => self.labels.iter().zip(w).fold((0.0, 0.0), |(y, s), (&l, &w)| (y + l * w, s + w)),
                    None => (self.labels.iter().sum(), self.labels.len() as f64),
                };
                let p = (sum_y / sum_w).clamp(EPS, 1.0 - EPS);
                (p / (1.0 - p)).ln()
            }
            Task::LambdaRank => 0.0,
        }
    }

    pub(crate) fn compute(&self, scores: &[f64], g: &mut [f64], h: &mut [f64]) {
        match self.task {
            Task::Binary => {
                g.par_iter_mut().zip(h.par_iter_mut()).enumerate().with_min_len(4096).for_each(|(i, (g, h))| {
                    let p = 1.0 / (1.0 + (-scores[i]).exp());
                    let w = self.weights.map_or(1.0, |w| w[i]);
                    *g = (p - self.labels[i]) * w;
                    *h = p * (1.0 - p) * w;
                });
            }
            Task::LambdaRank => {
                let mut parts = Vec::with_capacity(self.bounds.len());
                let (mut g_rest, mut h_rest) = (g, h);
                for (q, w) in self.bounds.windows(2).enumerate() {
                    let (gq, gt) = g_rest.split_at_mut(w[1] - w[0]);
                    let (hq, ht) = h_rest.split_at_mut(w[1] - w[0]);
                    g_rest = gt;
                    h_rest = ht;
                    parts.push((q, gq, hq));
                }
                parts.into_par_iter().with_min_len(16).for_each_init(Vec::new, |order, (q, gq, hq)| {
                    let (a, b) = (self.bounds[q], self.bounds[q + 1]);
                    self.lambdas(&self.labels[a..b], &scores[a..b], self.inverse_max_dcg[q], order, gq, hq);
                    if let Some(w) = self.weights {
                        for (i, (g, h)) in gq.iter_mut().zip(hq.iter_mut()).enumerate() {
                            *g *= w[a + i];
                            *h *= w[a + i];
                        }
                    }
                });
            }
        }
    }

    /// LambdaMART gradients of one query group: for each pair with different labels and one item
    /// in the current top `truncation`, the RankNet gradient weighted by the |ΔNDCG| of swapping
    /// them, divided by `0.01 + |score difference|`; the group's lambdas are then scaled by
    /// `log2(1 + Σ) / Σ` (LightGBM's `lambdarank_norm`).
    fn lambdas(
        &self,
        labels: &[f64],
        scores: &[f64],
        inverse_max_dcg: f64,
        order: &mut Vec<usize>,
        g: &mut [f64],
        h: &mut [f64],
    ) {
        g.fill(0.0);
        h.fill(0.0);
        let n = labels.len();
        if n < 2 || inverse_max_dcg == 0.0 {
            return;
        }
        by_score(scores, order);
        let best_score = scores[order[0]];
        let worst_score = scores[order[n - 1]];
        let normalise = best_score != worst_score;
        let mut sum_lambdas = 0.0;
        for i in 0..(n - 1).min(self.truncation) {
            let a = order[i];
            let la = labels[a];
            let (gain_a, disc_a) = (self.gains[la as usize], self.discounts[i]);
            for (j, &b) in order.iter().enumerate().skip(i + 1) {
                let lb = labels[b];
                if la == lb {
                    continue;
                }
                let (gain_b, disc_b) = (self.gains[lb as usize], self.discounts[j]);
                let (high, low, high_gain, low_gain, high_disc, low_disc) = if la > lb {
                    (a, b, gain_a, gain_b, disc_a, disc_b)
                } else {
                    (b, a, gain_b, gain_a, disc_b, disc_a)
                };
                let delta_score = scores[high] - scores[low];
                let mut delta_ndcg = (high_gain - low_gain) * (high_disc - low_disc).abs() * inverse_max_dcg;
                if normalise {
                    delta_ndcg /= 0.01 + delta_score.abs();
                }
                // The probability that the pair is ordered wrongly.
                let p = 1.0 / (1.0 + delta_score.exp());
                let lambda = -p * delta_ndcg;
                let hessian = p * (1.0 - p) * delta_ndcg;
                g[low] -= lambda;
                h[low] += hessian;
                g[high] += lambda;
                h[high] += hessian;
                sum_lambdas -= 2.0 * lambda;
            }
        }
        if sum_lambdas > 0.0 {
            let factor = (1.0 + sum_lambdas).log2() / sum_lambdas;
            for (g, h) in g.iter_mut().zip(h.iter_mut()) {
                *g *= factor;
                *h *= factor;
            }
        }
    }
}

/// The validation metric: binary log-loss, or NDCG@k averaged over query groups (a group without
/// any relevant item scores 1, as in LightGBM).
#[derive(Debug)]
pub(crate) struct Metric<'a> {
    task: Task,
    labels: &'a [f64],
    weights: Option<&'a [f64]>,
    bounds: Vec<usize>,
    inverse_max_dcg: Vec<f64>,
    k: usize,
}

impl<'a> Metric<'a> {
    pub(crate) fn new(params: &Params, data: &'a Dataset) -> Metric<'a> {
        let bounds = data.group_bounds().unwrap_or_default();
        let k = params.eval_at;
        let inverse_max_dcg = bounds
            .windows(2)
            .map(|w| {
                let m = max_dcg(&data.labels[w[0]..w[1]], k);
                if m > 0.0 { 1.0 / m } else { 0.0 }
            })
            .collect();
        Metric {
            task: params.objective,
            labels: &data.labels,
            weights: data.weights.as_deref(),
            bounds,
            inverse_max_dcg,
            k,
        }
    }

    pub(crate) fn better(&self, new: f64, old: f64) -> bool {
        match self.task {
            Task::Binary => new < old,
            Task::LambdaRank => new > old,
        }
    }

    pub(crate) fn eval(&self, scores: &[f64]) -> f64 {
        match self.task {
            Task::Binary => {
                let (mut loss, mut sum_w) = (0.0, 0.0);
                for (i, (&s, &y)) in scores.iter().zip(self.labels).enumerate() {
                    let p = (1.0 / (1.0 + (-s).exp())).clamp(EPS, 1.0 - EPS);
                    let w = self.weights.map_or(1.0, |w| w[i]);
                    loss -= w * if y > 0.5 { p.ln() } else { (1.0 - p).ln() };
                    sum_w += w;
                }
                loss / sum_w
            }
            Task::LambdaRank => {
                let mut order = Vec::new();
                let mut total = 0.0;
                for (q, w) in self.bounds.windows(2).enumerate() {
                    total += if self.inverse_max_dcg[q] == 0.0 {
                        1.0
                    } else {
                        let (labels, scores) = (&self.labels[w[0]..w[1]], &scores[w[0]..w[1]]);
                        by_score(scores, &mut order);
                        let dcg: f64 = order
                            .iter()
                            .take(self.k)
                            .enumerate()
                            .map(|(i, &r)| label_gain(labels[r]) * discount(i))
                            .sum();
                        dcg * self.inverse_max_dcg[q]
                    };
                }
                total / (self.bounds.len() - 1).max(1) as f64
            }
        }
    }
}

/// NDCG@k of one group's scores (LightGBM's definition; 1 when no item is relevant).
#[cfg(test)]
fn ndcg(labels: &[f64], scores: &[f64], k: usize) -> f64 {
    let m = max_dcg(labels, k);
    if m <= 0.0 {
        return 1.0;
    }
    let mut order = Vec::new();
    by_score(scores, &mut order);
    order.iter().take(k).enumerate().map(|(i, &r)| label_gain(labels[r]) * discount(i)).sum::<f64>() / m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_matches_hand_computation() {
        // Labels by score order: 2, 0, 1. DCG = 3/1 + 0 + 1/2; ideal = 3 + 1/log2(3).
        let got = ndcg(&[0.0, 2.0, 1.0], &[0.5, 0.9, 0.1], 10);
        let want = (3.0 + 0.5) / (3.0 + 1.0 / 3f64.log2());
        assert!((got - want).abs() < 1e-12);
        assert_eq!(ndcg(&[0.0, 0.0], &[1.0, 2.0], 10), 1.0, "no relevant item counts as 1");
    }

    #[test]
    fn lambdas_push_relevant_items_up_and_sum_to_zero() {
        let data = Dataset::new(vec![0.0; 4], 1, vec![0.0, 1.0, 0.0, 2.0]).unwrap().with_groups(vec![4]).unwrap();
        let params = Params { objective: Task::LambdaRank, ..Params::default() };
        let obj = Gradients::new(&params, &data);
        let (mut g, mut h) = (vec![0.0; 4], vec![0.0; 4]);
        obj.compute(&[0.3, 0.2, 0.1, 0.0], &mut g, &mut h);
        assert!(g[1] < 0.0 && g[3] < 0.0, "relevant items get negative gradients (scores go up): {g:?}");
        assert!(g[0] > 0.0 && g[2] > 0.0);
        assert!(g.iter().sum::<f64>().abs() < 1e-12);
        assert!(h.iter().all(|&h| h > 0.0));
    }
}
