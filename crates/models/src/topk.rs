//! Deterministic top-k selection: best score first, equal scores by smaller item index.

use std::cmp::Ordering;

/// Orders `(item, score)` best first: higher score, then smaller index (`-0.0 == 0.0`; callers
/// drop NaN before sorting).
#[inline]
pub fn rank_order(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(a.0.cmp(&b.0))
}

/// The `k` best items of `scores` (index = item), best first; equal scores are ordered by
/// smaller item index. Items in `exclude` (any order, duplicates allowed) and NaN scores are
/// skipped. Returns fewer than `k` items only when fewer remain.
pub fn top_k(scores: &[f32], k: usize, exclude: &[u32]) -> Vec<(u32, f32)> {
    if k == 0 || scores.is_empty() {
        return Vec::new();
    }
    let sorted;
    let exclude = if exclude.is_sorted() {
        exclude
    } else {
        let mut v = exclude.to_vec();
        v.sort_unstable();
        sorted = v;
        &sorted[..]
    };
    if k > 128 {
        return top_k_large(scores, k, exclude);
    }
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    let mut ex = 0;
    for (i, &s) in scores.iter().enumerate() {
        let i = i as u32;
        while ex < exclude.len() && exclude[ex] < i {
            ex += 1;
        }
        if ex < exclude.len() && exclude[ex] == i {
            continue;
        }
        if s.is_nan() {
            continue;
        }
        if best.len() == k && s <= best[k - 1].1 {
            // Items come in increasing index order, so an equal score never beats a kept one.
            continue;
        }
        let pos = best.partition_point(|e| e.1 >= s);
        best.insert(pos, (i, s));
        best.truncate(k);
    }
    best
}

fn top_k_large(scores: &[f32], k: usize, exclude: &[u32]) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = scores
        .iter()
        .enumerate()
        .filter(|(i, s)| !s.is_nan() && exclude.binary_search(&(*i as u32)).is_err())
        .map(|(i, &s)| (i as u32, s))
        .collect();
    if all.len() > k {
        all.select_nth_unstable_by(k - 1, rank_order);
        all.truncate(k);
    }
    all.sort_unstable_by(rank_order);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(scores: &[f32], k: usize, exclude: &[u32]) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = scores
            .iter()
            .enumerate()
            .filter(|(i, s)| !s.is_nan() && !exclude.contains(&(*i as u32)))
            .map(|(i, &s)| (i as u32, s))
            .collect();
        all.sort_by(rank_order);
        all.truncate(k);
        all
    }

    #[test]
    fn ties_go_to_the_smaller_index_and_excluded_items_are_skipped() {
        let s = [1.0, 3.0, 3.0, f32::NAN, 2.0, 3.0];
        assert_eq!(top_k(&s, 3, &[]), vec![(1, 3.0), (2, 3.0), (5, 3.0)]);
        assert_eq!(top_k(&s, 3, &[2, 1]), vec![(5, 3.0), (4, 2.0), (0, 1.0)]);
        assert_eq!(top_k(&s, 10, &[0, 1, 2, 4, 5]), vec![]);
    }

    proptest! {
        #[test]
        fn matches_a_full_sort(scores in proptest::collection::vec(0u8..6, 0..300), k in 0usize..200,
                               exclude in proptest::collection::vec(0u32..300, 0..20)) {
            let scores: Vec<f32> = scores.into_iter().map(f32::from).collect();
            prop_assert_eq!(top_k(&scores, k, &exclude), naive(&scores, k, &exclude));
        }
    }
}
