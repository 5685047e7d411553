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
    let exclude = sorted(exclude);
    let exclude = &exclude[..];
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

/// [`top_k`] of `scores` where every item outside `touched` (any order, repeats allowed) scores
/// exactly 0: the same items in the same order, at the cost of the touched items rather than
/// the catalogue when no score is negative or NaN (sums of similarities; otherwise the full
/// selection runs). Leaves every score at 0, ready for the next request's sums.
pub(crate) fn take_top_k(scores: &mut [f32], touched: &[u32], k: usize, exclude: &[u32]) -> Vec<(u32, f32)> {
    // Each touched item once: its score is taken and zeroed, so a repeat reads 0 and is skipped.
    let mut taken: Vec<(u32, f32)> = Vec::new();
    for &i in touched {
        let s = std::mem::replace(&mut scores[i as usize], 0.0);
        if s != 0.0 {
            taken.push((i, s));
        }
    }
    if taken.iter().any(|&(_, s)| s < 0.0 || s.is_nan()) {
        for &(i, s) in &taken {
            scores[i as usize] = s;
        }
        let best = top_k(scores, k, exclude);
        for &(i, _) in &taken {
            scores[i as usize] = 0.0;
        }
        return best;
    }
    if k == 0 || scores.is_empty() {
        return Vec::new();
    }
    let exclude = sorted(exclude);
    let exclude = &exclude[..];
    let excluded = |i: u32| exclude.binary_search(&i).is_ok();
    // The k best by `rank_order` in a heap whose top is the worst kept: most items fail the one
    // comparison with it.
    let mut heap: std::collections::BinaryHeap<Ranked> = std::collections::BinaryHeap::with_capacity(k + 1);
    for &(i, s) in &taken {
        let candidate = Ranked(i, s);
        if heap.len() == k && heap.peek().is_some_and(|worst| candidate >= *worst) {
            continue;
        }
        if excluded(i) {
            continue;
        }
        heap.push(candidate);
        if heap.len() > k {
            heap.pop();
        }
    }
    let mut taken: Vec<(u32, f32)> = heap.into_sorted_vec().into_iter().map(|Ranked(i, s)| (i, s)).collect();
    if taken.len() < k {
        // Then the zeros by smaller index, as the full selection orders ties; fewer than k items
        // scored above 0, so a sorted copy of them is small.
        let mut positive: Vec<u32> = taken.iter().map(|&(i, _)| i).collect();
        positive.sort_unstable();
        let mut i = 0u32;
        while taken.len() < k && (i as usize) < scores.len() {
            if positive.binary_search(&i).is_err() && !excluded(i) {
                taken.push((i, 0.0));
            }
            i += 1;
        }
    }
    taken
}

/// An (item, score) ordered by [`rank_order`]: smaller is better.
#[derive(Debug, Clone, Copy)]
struct Ranked(u32, f32);

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        rank_order(&(self.0, self.1), &(other.0, other.1))
    }
}

thread_local! {
    /// Per thread: a score buffer reused across requests, and whether it is all zeros.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, bool)> = const { std::cell::RefCell::new((Vec::new(), true)) };
}

/// Runs `f` with this thread's score buffer of `n` zeros (a catalogue-sized buffer per request
/// would cost a fresh zeroed allocation, page faults included). `f` returns whether it left the
/// buffer zeroed; if not (or if it panicked), the next use zeroes it first.
pub(crate) fn with_scores<T>(n: usize, f: impl FnOnce(&mut [f32]) -> (T, bool)) -> T {
    SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (buf, clean) = &mut *guard;
        if !*clean {
            buf.fill(0.0);
        }
        buf.resize(n, 0.0);
        *clean = false;
        let (out, zeroed) = f(&mut buf[..n]);
        *clean = zeroed;
        out
    })
}

/// `exclude` in ascending order, for bisection (copied only when it is not already).
fn sorted(exclude: &[u32]) -> std::borrow::Cow<'_, [u32]> {
    if exclude.is_sorted() {
        std::borrow::Cow::Borrowed(exclude)
    } else {
        let mut v = exclude.to_vec();
        v.sort_unstable();
        std::borrow::Cow::Owned(v)
    }
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
        fn touched_selection_matches_the_full_one(cells in proptest::collection::vec((0u32..200, -1i8..4), 0..80),
                                                   n in 1usize..200, k in 0usize..60,
                                                   exclude in proptest::collection::vec(0u32..200, 0..20)) {
            // Mostly non-negative sums, sometimes a negative one (the full selection then runs).
            let mut scores = vec![0f32; n];
            let mut touched = Vec::new();
            for (i, v) in cells {
                if (i as usize) < n {
                    scores[i as usize] += f32::from(v) * 0.5;
                    touched.push(i);
                }
            }
            let full = top_k(&scores, k, &exclude);
            prop_assert_eq!(take_top_k(&mut scores, &touched, k, &exclude), full);
            prop_assert!(scores.iter().all(|&s| s == 0.0), "left zeroed");
        }

        #[test]
        fn scratch_buffers_start_zeroed(n in 1usize..500, m in 1usize..500) {
            // Left dirty: the next user still gets zeros, whatever the sizes.
            with_scores(n, |b| { b.fill(3.0); ((), false) });
            let zero = with_scores(m, |b| (b.iter().all(|&x| x == 0.0), true));
            prop_assert!(zero);
        }

        #[test]
        fn matches_a_full_sort(scores in proptest::collection::vec(0u8..6, 0..300), k in 0usize..200,
                               exclude in proptest::collection::vec(0u32..300, 0..20)) {
            let scores: Vec<f32> = scores.into_iter().map(f32::from).collect();
            prop_assert_eq!(top_k(&scores, k, &exclude), naive(&scores, k, &exclude));
        }
    }
}
