//! Exact metric definitions (`shared/bench/PROTOCOL.md` §2 and §5).
//!
//! **Ranking metrics** work on one user's *hits*: `hits[r - 1]` says whether the item at rank `r`
//! of the user's list is in the user's ground truth. Only the first `k` entries count (a longer
//! slice is cut, a shorter one is a short list: missing ranks are misses). `n_truth` is the size of
//! the user's ground-truth *set*, including items that cannot be recommended. With `h_r ∈ {0, 1}`:
//!
//! | metric | definition |
//! |---|---|
//! | [`hr_at_k`] | 1 if any `h_r = 1` for `r ≤ K`, else 0 |
//! | [`recall_at_k`] | `Σ h_r / n_truth` — **not** capped: a user with 30 truth items reaches at most 10/30 |
//! | [`ndcg_at_k`] | `Σ_r h_r / log2(r + 1)  ÷  Σ_{r=1..min(K, n_truth)} 1 / log2(r + 1)` |
//! | [`mrr_at_k`] | `1 / (first hit rank)`, 0 without a hit |
//! | [`map_at_k`] | AP@K = `Σ_r P@r · h_r / min(K, n_truth)` with `P@r = (Σ_{j ≤ r} h_j) / r` |
//!
//! Every ranking metric is 0 when `n_truth = 0` or `k = 0` (the protocol never evaluates a user
//! without truth; the value is defined so that callers need no special case).
//!
//! **Catalogue metrics** work on all users' lists: [`coverage_at_k`] and [`novelty`].
//!
//! **Classification metrics** work on scores and binary labels: [`roc_auc`], [`pr_auc`] (average
//! precision as scikit-learn defines it) and [`ece`]; [`CalibrationBins`] is the streaming,
//! equal-width ECE. They return `None` where the metric is undefined. Scores are ordered by
//! [`f64::total_cmp`] (a NaN sorts above `+inf`); ties are exact `==` equality.

use std::collections::HashSet;

/// The number of bins of the expected calibration error in reports.
pub const ECE_BINS: usize = 10;

/// `hits[r] = ranked[r] ∈ truth` for the first `k` ranks. `sorted_truth` must be sorted ascending
/// (it is binary-searched).
pub fn hits<T: Ord>(ranked: &[T], sorted_truth: &[T], k: usize) -> Vec<bool> {
    debug_assert!(sorted_truth.windows(2).all(|w| w[0] <= w[1]), "truth must be sorted");
    ranked.iter().take(k).map(|x| sorted_truth.binary_search(x).is_ok()).collect()
}

fn top(hits: &[bool], k: usize) -> &[bool] {
    &hits[..hits.len().min(k)]
}

/// `1 / log2(rank + 1)` for a 1-based rank.
fn discount(rank: usize) -> f64 {
    1.0 / ((rank + 1) as f64).log2()
}

/// Normalised discounted cumulative gain at `k` (binary gains; see the module table).
pub fn ndcg_at_k(hits: &[bool], n_truth: usize, k: usize) -> f64 {
    if n_truth == 0 || k == 0 {
        return 0.0;
    }
    let dcg: f64 = top(hits, k).iter().enumerate().filter(|&(_, &h)| h).map(|(i, _)| discount(i + 1)).sum();
    let idcg: f64 = (1..=k.min(n_truth)).map(discount).sum();
    dcg / idcg
}

/// Hits in the first `k` ranks divided by `n_truth` (not capped at `k`).
pub fn recall_at_k(hits: &[bool], n_truth: usize, k: usize) -> f64 {
    if n_truth == 0 {
        return 0.0;
    }
    top(hits, k).iter().filter(|&&h| h).count() as f64 / n_truth as f64
}

/// Hit rate: 1 if any of the first `k` ranks is a hit, else 0.
pub fn hr_at_k(hits: &[bool], k: usize) -> f64 {
    if top(hits, k).contains(&true) { 1.0 } else { 0.0 }
}

/// Reciprocal rank of the first hit within the first `k` ranks, 0 without a hit.
pub fn mrr_at_k(hits: &[bool], k: usize) -> f64 {
    top(hits, k).iter().position(|&h| h).map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// Average precision at `k`: `Σ_{r ≤ k} P@r · h_r / min(k, n_truth)`, where `P@r` is the share of
/// hits among the first `r` ranks. The denominator `min(k, n_truth)` makes a perfect list score 1
/// even when the user has more truth items than fit in the list.
pub fn map_at_k(hits: &[bool], n_truth: usize, k: usize) -> f64 {
    if n_truth == 0 || k == 0 {
        return 0.0;
    }
    let mut found = 0usize;
    let mut sum = 0.0;
    for (i, &h) in top(hits, k).iter().enumerate() {
        if h {
            found += 1;
            sum += found as f64 / (i + 1) as f64;
        }
    }
    sum / k.min(n_truth) as f64
}

/// Catalogue coverage: the number of distinct items among the first `k` entries of all lists,
/// divided by `n_catalogue` (0 for an empty catalogue).
pub fn coverage_at_k<L: AsRef<[u32]>>(lists: &[L], k: usize, n_catalogue: usize) -> f64 {
    if n_catalogue == 0 {
        return 0.0;
    }
    let distinct: HashSet<u32> = lists.iter().flat_map(|l| l.as_ref().iter().take(k).copied()).collect();
    distinct.len() as f64 / n_catalogue as f64
}

/// Novelty: the mean self-information `−log2(pop(i) / n_users)` over every recommended slot (the
/// first `k` entries of every list, pooled; with lists of equal length this is also the mean over
/// users of the per-user mean). `item_users[i]` = the number of distinct train users who have item
/// `i` (so `pop(i) / n_users` is the share of users who know the item): an item every user has
/// scores 0 bits, an item one user in 1,024 has scores 10 bits. An item with `item_users = 0`
/// scores `+inf`. Returns 0 when there is no recommended slot.
pub fn novelty<L: AsRef<[u32]>>(lists: &[L], k: usize, item_users: &[u32], n_users: usize) -> f64 {
    let mut sum = 0.0;
    let mut slots = 0usize;
    for &i in lists.iter().flat_map(|l| l.as_ref().iter().take(k)) {
        sum += -(f64::from(item_users[i as usize]) / n_users as f64).log2();
        slots += 1;
    }
    if slots == 0 { 0.0 } else { sum / slots as f64 }
}

/// Indices of `scores` in ascending score order (stable).
fn ascending(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order
}

/// Groups of equal score in `order` (indices into `scores`), as ranges of `order`.
fn tie_groups<'a>(scores: &'a [f64], order: &'a [usize]) -> impl Iterator<Item = std::ops::Range<usize>> + 'a {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= order.len() {
            return None;
        }
        let s = scores[order[start]];
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == s {
            end += 1;
        }
        let group = start..end;
        start = end;
        Some(group)
    })
}

/// Area under the ROC curve, computed as the Mann–Whitney U statistic: the probability that a
/// random positive scores above a random negative, a tie counting one half (tied scores share
/// their average rank). Equals scikit-learn's `roc_auc_score`. `None` without a positive or
/// without a negative. Panics if the slices differ in length.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let order = ascending(scores);
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0;
    for g in tie_groups(scores, &order) {
        let avg_rank = (g.start + 1 + g.end) as f64 / 2.0;
        let pos = order[g].iter().filter(|&&i| labels[i]).count();
        rank_sum += avg_rank * pos as f64;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Area under the precision–recall curve as *average precision*, scikit-learn's
/// `average_precision_score`: walk the distinct scores from high to low, treating each as a
/// threshold (`score ≥ t` predicts positive, so tied scores enter together), and sum
/// `(R_t − R_prev) · P_t`. No interpolation. `None` without a positive (scikit-learn warns and
/// returns a meaningless value there). Panics if the slices differ in length.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 {
        return None;
    }
    let mut order = ascending(scores);
    order.reverse();
    let (mut tp, mut fp, mut ap, mut prev_recall) = (0usize, 0usize, 0.0, 0.0);
    for g in tie_groups(scores, &order) {
        let pos = order[g.clone()].iter().filter(|&&i| labels[i]).count();
        tp += pos;
        fp += g.len() - pos;
        let recall = tp as f64 / n_pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Some(ap)
}

/// Expected calibration error with `bins` equal-count bins: sort by score ascending (stable, so
/// tied scores keep input order and may straddle a bin edge), split the `n` rows into `bins`
/// consecutive bins whose sizes differ by at most one — the first `n % bins` bins hold one row
/// more (as `numpy.array_split`) — and sum `|b| / n · |mean(label) − mean(score)|` over the
/// non-empty bins (with `n < bins` some bins are empty). Scores should be probabilities.
/// `None` for no rows or `bins = 0`. Reports use [`ECE_BINS`]. Panics if the slices differ in
/// length.
pub fn ece(scores: &[f64], labels: &[bool], bins: usize) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let n = scores.len();
    if n == 0 || bins == 0 {
        return None;
    }
    let order = ascending(scores);
    let (base, extra) = (n / bins, n % bins);
    let mut start = 0;
    let mut total = 0.0;
    for b in 0..bins {
        let len = base + usize::from(b < extra);
        if len == 0 {
            continue;
        }
        let bin = &order[start..start + len];
        start += len;
        let mean_score = bin.iter().map(|&i| scores[i]).sum::<f64>() / len as f64;
        let mean_label = bin.iter().filter(|&&i| labels[i]).count() as f64 / len as f64;
        total += len as f64 / n as f64 * (mean_label - mean_score).abs();
    }
    Some(total)
}

/// Calibration counted as scores and labels stream in: [`ECE_BINS`] equal-width bins over
/// [0, 1] (a score `s` falls in bin `min(floor(10 s), 9)`; scores outside [0, 1] are clamped),
/// each holding its count, score sum and positives, so memory is constant. Its
/// [`CalibrationBins::ece`] is the usual equal-width ECE, `Σ_b |b| / n · |mean(label) −
/// mean(score)|` over the non-empty bins — unlike [`ece`], whose bins hold equal numbers of rows
/// and need every score at once.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CalibrationBins {
    count: [u64; ECE_BINS],
    scores: [f64; ECE_BINS],
    positives: [u64; ECE_BINS],
}

impl CalibrationBins {
    /// Counts one score with its label; a NaN score is not counted.
    pub fn add(&mut self, score: f64, label: bool) {
        if score.is_nan() {
            return;
        }
        let s = score.clamp(0.0, 1.0);
        let b = ((s * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        self.count[b] += 1;
        self.scores[b] += s;
        self.positives[b] += u64::from(label);
    }

    /// Adds another's counts.
    pub fn merge(&mut self, other: &CalibrationBins) {
        for b in 0..ECE_BINS {
            self.count[b] += other.count[b];
            self.scores[b] += other.scores[b];
            self.positives[b] += other.positives[b];
        }
    }

    /// Scores counted.
    pub fn len(&self) -> u64 {
        self.count.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The expected calibration error; `None` with nothing counted.
    pub fn ece(&self) -> Option<f64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let total = (0..ECE_BINS)
            .filter(|&b| self.count[b] > 0)
            .map(|b| {
                let c = self.count[b] as f64;
                c / n as f64 * (self.positives[b] as f64 / c - self.scores[b] / c).abs()
            })
            .sum();
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < EPS, "{a} != {b}");
    }

    fn h(bits: &str) -> Vec<bool> {
        bits.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn equal_width_calibration_by_hand() {
        let mut bins = CalibrationBins::default();
        assert_eq!(bins.ece(), None);
        // Bin 0: scores 0.05, 0.05, labels 0, 1 → |0.5 − 0.05| = 0.45, weight 2/6.
        // Bin 8: scores 0.8, 0.85, 0.89 (mean 0.84667), labels 1, 1, 0 → |2/3 − 0.84667| = 0.18,
        // weight 3/6.
        // Bin 9: score 1.0 (the top edge belongs to the last bin), label 1 → |1 − 1| = 0.
        for (s, y) in [(0.05, false), (0.05, true), (0.8, true), (0.85, true), (0.89, false), (1.0, true)] {
            bins.add(s, y);
        }
        bins.add(f64::NAN, true);
        assert_eq!(bins.len(), 6);
        let expected = 2.0 / 6.0 * 0.45 + 3.0 / 6.0 * ((0.8 + 0.85 + 0.89) / 3.0 - 2.0 / 3.0);
        close(bins.ece().unwrap(), expected);
        // Split and merged, the same.
        let (mut a, mut b) = (CalibrationBins::default(), CalibrationBins::default());
        for (i, (s, y)) in
            [(0.05, false), (0.05, true), (0.8, true), (0.85, true), (0.89, false), (1.0, true)].into_iter().enumerate()
        {
            if i % 2 == 0 { a.add(s, y) } else { b.add(s, y) }
        }
        a.merge(&b);
        close(a.ece().unwrap(), expected);
        // Perfectly calibrated within each bin: 0.
        let mut fair = CalibrationBins::default();
        for i in 0..10 {
            fair.add(0.3, i < 3);
        }
        close(fair.ece().unwrap(), 0.0);
    }

    #[test]
    fn ranking_metrics_by_hand() {
        // Hits at ranks 2 and 4 of a 4-list; the user has 3 truth items.
        let hits = h("0101");
        // DCG  = 1/log2(3) + 1/log2(5) = 0.6309297535714575 + 0.43067655807339306 = 1.0616063116448505
        // IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4) (min(4, 3) = 3 ranks) = 1 + 0.6309297535714575 + 0.5
        //      = 2.1309297535714573;  NDCG = 1.0616063116448505 / 2.1309297535714573 = 0.498190...
        close(ndcg_at_k(&hits, 3, 4), 1.0616063116448505 / 2.1309297535714573);
        // Recall = 2 hits / 3 truth items.
        close(recall_at_k(&hits, 3, 4), 2.0 / 3.0);
        close(hr_at_k(&hits, 4), 1.0);
        // First hit at rank 2.
        close(mrr_at_k(&hits, 4), 0.5);
        // AP@4 = (P@2 + P@4) / min(4, 3) = (1/2 + 2/4) / 3 = 1/3.
        close(map_at_k(&hits, 3, 4), 1.0 / 3.0);

        // Cut at k = 2: one hit at rank 2.
        // NDCG = (1/log2 3) / (1 + 1/log2 3) = 0.6309297535714575 / 1.6309297535714575.
        close(ndcg_at_k(&hits, 3, 2), 0.6309297535714575 / 1.6309297535714575);
        close(recall_at_k(&hits, 3, 2), 1.0 / 3.0);
        // AP@2 = P@2 / min(2, 3) = (1/2) / 2.
        close(map_at_k(&hits, 3, 2), 0.25);
    }

    #[test]
    fn recall_is_not_capped_and_perfect_lists_score_one() {
        // 10 hits out of 30 truth items: recall 1/3, but NDCG and AP are 1 (ideal list of length 10).
        let all = vec![true; 10];
        close(recall_at_k(&all, 30, 10), 10.0 / 30.0);
        close(ndcg_at_k(&all, 30, 10), 1.0);
        close(map_at_k(&all, 30, 10), 1.0);
        close(mrr_at_k(&all, 10), 1.0);
    }

    #[test]
    fn short_lists_and_empty_truth() {
        // A list of 1 (a hit) for a user with 2 truth items, K = 10:
        // NDCG = 1 / (1 + 1/log2 3); AP = 1 / min(10, 2) = 0.5.
        close(ndcg_at_k(&h("1"), 2, 10), 1.0 / 1.6309297535714575);
        close(map_at_k(&h("1"), 2, 10), 0.5);
        for f in [ndcg_at_k, recall_at_k, map_at_k] {
            close(f(&h("11"), 0, 10), 0.0);
            close(f(&h("11"), 2, 0), 0.0);
        }
        close(hr_at_k(&h("0000"), 4), 0.0);
        close(mrr_at_k(&h(""), 4), 0.0);
        close(hr_at_k(&h("1"), 0), 0.0);
    }

    #[test]
    fn hits_use_first_k_and_sorted_truth() {
        assert_eq!(hits(&[5u32, 3, 9, 1], &[1, 3, 7], 3), [false, true, false]);
        assert_eq!(hits::<u32>(&[], &[1], 3), Vec::<bool>::new());
    }

    #[test]
    fn coverage_and_novelty_by_hand() {
        let lists = vec![vec![1u32, 2], vec![0, 1]];
        // Distinct {0, 1, 2} over a catalogue of 10.
        close(coverage_at_k(&lists, 2, 10), 0.3);
        // k = 1: {1, 0}.
        close(coverage_at_k(&lists, 1, 10), 0.2);
        close(coverage_at_k(&lists, 2, 0), 0.0);
        // 4 users; item 0 known by 4 (0 bits), item 1 by 2 (1 bit), item 2 by 1 (2 bits).
        // Slots 1, 2, 0, 1 → (1 + 2 + 0 + 1) / 4 = 1.0.
        let pop = [4u32, 2, 1, 1];
        close(novelty(&lists, 2, &pop, 4), 1.0);
        // k = 1: slots 1, 0 → (1 + 0) / 2.
        close(novelty(&lists, 1, &pop, 4), 0.5);
        close(novelty::<Vec<u32>>(&[], 10, &pop, 4), 0.0);
    }

    #[test]
    fn roc_auc_by_hand() {
        // Ascending ranks: 0.1→1 (neg), 0.35→2 (pos), 0.4→3 (neg), 0.8→4 (pos).
        // U = (2 + 4) − 2·3/2 = 3; AUC = 3 / (2·2) = 0.75 (sklearn's doc example).
        let s = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        close(roc_auc(&s, &y).unwrap(), 0.75);
        // Ties: the three 0.5s share rank (1+2+3)/3 = 2; 0.9 has rank 4. Positives: 2 + 4 = 6;
        // U = 6 − 3 = 3; AUC = 3/4 (pair view: pos 0.5 vs two neg 0.5 = 2 × ½, pos 0.9 beats both = 2).
        close(roc_auc(&[0.5, 0.5, 0.5, 0.9], &[true, false, false, true]).unwrap(), 0.75);
        // All scores equal: every pair ties → 0.5.
        close(roc_auc(&[0.3; 5], &[true, false, true, false, false]).unwrap(), 0.5);
        // Perfectly inverted.
        close(roc_auc(&[0.9, 0.1], &[false, true]).unwrap(), 0.0);
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]), None);
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(roc_auc(&[], &[]), None);
    }

    #[test]
    fn pr_auc_by_hand() {
        // Descending: 0.8 pos (P 1, R ½) → +½·1; 0.4 neg (R unchanged) → +0;
        // 0.35 pos (P 2/3, R 1) → +½·2/3; 0.1 neg → +0. AP = ½ + ⅓ = 0.8333 (sklearn's doc example).
        let s = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        close(pr_auc(&s, &y).unwrap(), 0.5 + 1.0 / 3.0);
        // Ties enter together: 0.9 pos (P 1, R ½) → +½; the 0.5 group adds 1 pos + 2 neg
        // (P 2/4, R 1) → +½·½. AP = 0.75.
        close(pr_auc(&[0.5, 0.5, 0.5, 0.9], &[true, false, false, true]).unwrap(), 0.75);
        // All equal: one threshold, P = base rate 2/5, R = 1 → AP = 0.4.
        close(pr_auc(&[0.3; 5], &[true, false, true, false, false]).unwrap(), 0.4);
        // No negatives: AP = 1.
        close(pr_auc(&[0.2, 0.7], &[true, true]).unwrap(), 1.0);
        assert_eq!(pr_auc(&[0.1, 0.2], &[false, false]), None);
    }

    #[test]
    fn ece_by_hand() {
        // Sorted: 0.1 0.2 0.3 | 0.4 0.5 | 0.6 0.9 — 7 rows in 3 bins: 7 % 3 = 1, so sizes 3, 2, 2.
        // Labels   0   0   1  |  0   1  |  1   1
        // bin 1: |1/3 − 0.2|  = 2/15, weight 3/7 → 0.4/7
        // bin 2: |1/2 − 0.45| = 0.05, weight 2/7 → 0.1/7
        // bin 3: |1 − 0.75|   = 0.25, weight 2/7 → 0.5/7      ECE = 1/7.
        // Input shuffled to exercise the sort.
        let s = [0.9, 0.3, 0.1, 0.5, 0.2, 0.6, 0.4];
        let y = [true, true, false, true, false, true, false];
        close(ece(&s, &y, 3).unwrap(), 1.0 / 7.0);
        // One bin: 4 positives, scores sum to 3.0: |4/7 − 3/7| = 1/7.
        close(ece(&s, &y, 1).unwrap(), 1.0 / 7.0);
        // n < bins: every row its own bin: mean of |label − score|
        // sorted rows 0.1 0.2 0.3✓ 0.4 0.5✓ 0.6✓ 0.9✓: (0.1 + 0.2 + 0.7 + 0.4 + 0.5 + 0.4 + 0.1) / 7 = 2.4 / 7.
        close(ece(&s, &y, ECE_BINS).unwrap(), 2.4 / 7.0);
        // Perfectly calibrated constant: score 0.5, half positive.
        close(ece(&[0.5; 4], &[true, false, true, false], 1).unwrap(), 0.0);
        assert_eq!(ece(&[], &[], ECE_BINS), None);
        assert_eq!(ece(&[0.5], &[true], 0), None);
    }

    #[test]
    fn ece_bin_sizes_follow_array_split() {
        // 12 rows, 10 bins → sizes 2, 2, 1, 1, 1, 1, 1, 1, 1, 1. Scores i/12, labels all 1:
        // bins {0,1},{2,3},{4},...,{11}: ECE = Σ |b|/12 · (1 − mean score)
        // = mean over rows of (1 − score) = 1 − 66/144.
        let s: Vec<f64> = (0..12).map(|i| f64::from(i) / 12.0).collect();
        close(ece(&s, &[true; 12], 10).unwrap(), 1.0 - 66.0 / 144.0);
        // Labels only on odd rows: bins of 2 cancel part of the error, singletons do not.
        // bins {0,1}: |½ − 1/24|, {2,3}: |½ − 5/24|; singletons i = 4..11: |[i odd] − i/12|.
        let y: Vec<bool> = (0..12).map(|i| i % 2 == 1).collect();
        let mut want = 2.0 / 12.0 * (0.5 - 1.0 / 24.0) + 2.0 / 12.0 * (0.5 - 5.0 / 24.0);
        for i in 4..12 {
            want += 1.0 / 12.0 * (f64::from(u8::from(i % 2 == 1)) - f64::from(i) / 12.0).abs();
        }
        close(ece(&s, &y, 10).unwrap(), want);
    }
}
