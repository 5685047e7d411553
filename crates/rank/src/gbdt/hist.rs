//! Gradient histograms and the best split of a leaf from its histogram.

use super::Params;
use super::bins::{Binned, Mapper};
use rayon::prelude::*;
use std::ops::{AddAssign, Sub, SubAssign};

/// Gradient sum, hessian sum and row count of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sums {
    pub(crate) g: f64,
    pub(crate) h: f64,
    pub(crate) n: u32,
}

impl AddAssign for Sums {
    #[inline]
    fn add_assign(&mut self, o: Sums) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }
}

impl SubAssign for Sums {
    #[inline]
    fn sub_assign(&mut self, o: Sums) {
        self.g -= o.g;
        self.h -= o.h;
        self.n -= o.n;
    }
}

impl Sub for Sums {
    type Output = Sums;
    #[inline]
    fn sub(mut self, o: Sums) -> Sums {
        self -= o;
        self
    }
}

/// The split rules and regularisation taken from [`Params`].
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) l1: f64,
    pub(crate) l2: f64,
    pub(crate) min_data: u32,
    pub(crate) min_hess: f64,
    pub(crate) min_gain: f64,
    pub(crate) cat_smooth: f64,
    pub(crate) cat_l2: f64,
    pub(crate) max_cat_threshold: usize,
    pub(crate) max_cat_to_onehot: usize,
    pub(crate) min_data_per_group: u32,
}

impl Rules {
    pub(crate) fn new(p: &Params) -> Rules {
        let clamp = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
        Rules {
            l1: p.lambda_l1,
            l2: p.lambda_l2,
            min_data: clamp(p.min_data_in_leaf),
            min_hess: p.min_sum_hessian_in_leaf,
            min_gain: p.min_gain_to_split,
            cat_smooth: p.cat_smooth,
            cat_l2: p.cat_l2,
            max_cat_threshold: p.max_cat_threshold,
            max_cat_to_onehot: p.max_cat_to_onehot,
            min_data_per_group: clamp(p.min_data_per_group),
        }
    }
}

#[inline]
fn threshold_l1(g: f64, l1: f64) -> f64 {
    if l1 == 0.0 { g } else { g.signum() * (g.abs() - l1).max(0.0) }
}

/// The loss reduction a leaf with these sums achieves: `T(G)² / (H + λ2)`.
#[inline]
pub(crate) fn leaf_gain(s: Sums, l1: f64, l2: f64) -> f64 {
    let d = s.h + l2;
    if d <= 0.0 {
        return 0.0;
    }
    let t = threshold_l1(s.g, l1);
    t * t / d
}

/// The optimal leaf value `-T(G) / (H + λ2)`, before shrinkage.
#[inline]
pub(crate) fn leaf_output(s: Sums, l1: f64, l2: f64) -> f64 {
    let d = s.h + l2;
    if d <= 0.0 { 0.0 } else { -threshold_l1(s.g, l1) / d }
}

/// Which rows of a split go left, in bin space.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    /// Left when `bin <= bin_threshold`; the NaN bin (if any) goes left when `default_left`.
    Numeric { bin: u8, nan_bin: Option<u8>, default_left: bool },
    /// Left when the bin is one of `left` (sorted).
    Categorical { left: Vec<u8> },
}

/// The best split found for a leaf.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    /// Loss reduction over not splitting.
    pub(crate) gain: f64,
    pub(crate) feature: usize,
    pub(crate) rule: Rule,
    pub(crate) left: Sums,
    pub(crate) right: Sums,
}

/// Fills the histograms of the `used` features for rows `rows`, whose gradient / hessian pairs
/// in the same order are `ordered` (gathered once so each feature pass reads them sequentially).
pub(crate) fn build(binned: &Binned, used: &[bool], rows: &[u32], ordered: &[(f64, f64)], out: &mut [Sums]) {
    debug_assert_eq!(rows.len(), ordered.len());
    let mut parts = Vec::with_capacity(used.len());
    let mut rest = out;
    for (f, &u) in used.iter().enumerate() {
        let (part, tail) = rest.split_at_mut(binned.offsets[f + 1] - binned.offsets[f]);
        rest = tail;
        if u {
            parts.push((f, part));
        }
    }
    parts.into_par_iter().for_each(|(f, hist)| build_one(&binned.cols[f], rows, ordered, hist));
}

fn build_one(col: &[u8], rows: &[u32], ordered: &[(f64, f64)], hist: &mut [Sums]) {
    hist.fill(Sums::default());
    // Rows of a leaf are often most of the data (the root): read the column directly then.
    if rows.len() == col.len() && rows.first() == Some(&0) && rows.last() == Some(&(col.len() as u32 - 1)) {
        for (&b, &(g, h)) in col.iter().zip(ordered) {
            let s = &mut hist[b as usize];
            s.g += g;
            s.h += h;
            s.n += 1;
        }
    } else {
        for (&r, &(g, h)) in rows.iter().zip(ordered) {
            let s = &mut hist[col[r as usize] as usize];
            s.g += g;
            s.h += h;
            s.n += 1;
        }
    }
}

/// The best split over the `used` features of a leaf with histogram `hist` and totals `total`.
/// Ties go to the lower feature index, so the choice does not depend on thread scheduling.
pub(crate) fn best_split(
    binned: &Binned,
    used: &[bool],
    hist: &[Sums],
    total: Sums,
    rules: &Rules,
) -> Option<Candidate> {
    let features: Vec<usize> = (0..used.len()).filter(|&f| used[f]).collect();
    let found: Vec<Option<Candidate>> = features
        .par_iter()
        .map(|&f| {
            let h = &hist[binned.offsets[f]..binned.offsets[f + 1]];
            match &binned.mappers[f] {
                Mapper::Numeric { uppers, nan_bin } => best_numeric(f, h, uppers.len(), *nan_bin, total, rules),
                Mapper::Categorical { cats, .. } => best_categorical(f, h, cats.len(), total, rules),
            }
        })
        .collect();
    let mut best: Option<Candidate> = None;
    for c in found.into_iter().flatten() {
        if best.as_ref().is_none_or(|b| c.gain > b.gain) {
            best = Some(c);
        }
    }
    best
}

#[inline]
fn allowed(s: Sums, rules: &Rules) -> bool {
    s.n >= rules.min_data && s.h >= rules.min_hess
}

fn best_numeric(
    feature: usize,
    hist: &[Sums],
    n_values: usize,
    nan_bin: Option<u8>,
    total: Sums,
    rules: &Rules,
) -> Option<Candidate> {
    let parent = leaf_gain(total, rules.l1, rules.l2);
    let nan = nan_bin.map_or_else(Sums::default, |b| hist[b as usize]);
    let mut best: Option<(f64, usize, bool, Sums)> = None;
    let mut consider = |t: usize, left: Sums, nan_left: bool| {
        if !allowed(left, rules) {
            return;
        }
        let right = total - left;
        if !allowed(right, rules) {
            return;
        }
        let gain = leaf_gain(left, rules.l1, rules.l2) + leaf_gain(right, rules.l1, rules.l2) - parent;
        if gain > rules.min_gain && best.is_none_or(|b| gain > b.0) {
            best = Some((gain, t, nan_left, left));
        }
    };
    // NaN to the right: every bin boundary, and (with NaN) all values against NaN.
    let mut left = Sums::default();
    for (t, &s) in hist[..n_values].iter().enumerate() {
        left += s;
        if t + 1 == n_values && nan.n == 0 {
            break;
        }
        consider(t, left, false);
    }
    // NaN to the left.
    if nan.n > 0 {
        let mut left = nan;
        for (t, &s) in hist[..n_values - 1].iter().enumerate() {
            left += s;
            consider(t, left, true);
        }
    }
    let (gain, t, nan_left, left) = best?;
    let right = total - left;
    // Without NaN in training, missing values at scoring time follow the larger side.
    let default_left = if nan.n > 0 { nan_left } else { left.n >= right.n };
    Some(Candidate { gain, feature, rule: Rule::Numeric { bin: t as u8, nan_bin, default_left }, left, right })
}

/// LightGBM's categorical split: with few categories, one category against the rest; otherwise
/// categories with enough data are sorted by `G / (H + cat_smooth)` and the best prefix from either
/// end (at most `max_cat_threshold` categories) goes left, with `cat_l2` added to the L2 penalty.
fn best_categorical(feature: usize, hist: &[Sums], n_cats: usize, total: Sums, rules: &Rules) -> Option<Candidate> {
    let parent = leaf_gain(total, rules.l1, rules.l2);
    let present: Vec<usize> = (0..n_cats).filter(|&b| hist[b].n > 0).collect();
    let mut best: Option<(f64, Vec<u8>, Sums)> = None;
    if present.len() <= rules.max_cat_to_onehot {
        for &b in &present {
            let left = hist[b];
            let right = total - left;
            if !allowed(left, rules) || !allowed(right, rules) {
                continue;
            }
            let gain = leaf_gain(left, rules.l1, rules.l2) + leaf_gain(right, rules.l1, rules.l2) - parent;
            if gain > rules.min_gain && best.as_ref().is_none_or(|b| gain > b.0) {
                best = Some((gain, vec![b as u8], left));
            }
        }
    } else {
        let l2 = rules.l2 + rules.cat_l2;
        let mut sorted: Vec<usize> =
            present.into_iter().filter(|&b| f64::from(hist[b].n) >= rules.cat_smooth).collect();
        let ctr = |b: usize| hist[b].g / (hist[b].h + rules.cat_smooth);
        sorted.sort_by(|&a, &b| ctr(a).total_cmp(&ctr(b)));
        let used = sorted.len();
        let max_num = rules.max_cat_threshold.min(used.div_ceil(2));
        for forward in [true, false] {
            let mut left = Sums::default();
            let mut group = 0u32;
            for i in 0..used.min(max_num) {
                let b = if forward { sorted[i] } else { sorted[used - 1 - i] };
                left += hist[b];
                group += hist[b].n;
                if !allowed(left, rules) {
                    continue;
                }
                let right = total - left;
                if !allowed(right, rules) || right.n < rules.min_data_per_group {
                    break;
                }
                if group < rules.min_data_per_group {
                    continue;
                }
                group = 0;
                let gain = leaf_gain(left, rules.l1, l2) + leaf_gain(right, rules.l1, l2) - parent;
                if gain > rules.min_gain && best.as_ref().is_none_or(|b| gain > b.0) {
                    let mut bins: Vec<u8> =
                        (0..=i).map(|j| if forward { sorted[j] } else { sorted[used - 1 - j] } as u8).collect();
                    bins.sort_unstable();
                    best = Some((gain, bins, left));
                }
            }
        }
    }
    let (gain, left_bins, left) = best?;
    Some(Candidate { gain, feature, rule: Rule::Categorical { left: left_bins }, left, right: total - left })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(g: f64, h: f64, n: u32) -> Sums {
        Sums { g, h, n }
    }

    fn rules() -> Rules {
        Rules::new(&Params { min_data_in_leaf: 1, min_sum_hessian_in_leaf: 0.0, ..Params::default() })
    }

    #[test]
    fn numeric_split_separates_gradient_signs_and_learns_nan_direction() {
        // bins 0,1 negative gradients, bin 2 positive, NaN bin 3 positive: NaN must go right
        // with bin 2 (the split sends bins <= 1 left).
        let hist = [s(-5.0, 5.0, 5), s(-5.0, 5.0, 5), s(5.0, 5.0, 5), s(6.0, 5.0, 5)];
        let total = hist.iter().fold(Sums::default(), |mut a, &b| {
            a += b;
            a
        });
        let c = best_numeric(0, &hist, 3, Some(3), total, &rules()).unwrap();
        assert_eq!(c.rule, Rule::Numeric { bin: 1, nan_bin: Some(3), default_left: false });
        let expected = 100.0 / 10.0 + 121.0 / 10.0 - 1.0 / 20.0;
        assert!((c.gain - expected).abs() < 1e-12);
        // NaN with the negatives: it must go left.
        let hist = [s(-5.0, 5.0, 5), s(5.0, 5.0, 5), s(5.0, 5.0, 5), s(-6.0, 5.0, 5)];
        let total = s(-1.0, 20.0, 20);
        let c = best_numeric(0, &hist, 3, Some(3), total, &rules()).unwrap();
        assert_eq!(c.rule, Rule::Numeric { bin: 0, nan_bin: Some(3), default_left: true });
    }

    #[test]
    fn categorical_split_groups_categories_by_gradient() {
        // 6 categories: 0, 2, 4 negative, 1, 3, 5 positive; "other" bin empty.
        let mut hist: Vec<Sums> =
            (0..6).map(|c| if c % 2 == 0 { s(-20.0, 20.0, 200) } else { s(20.0, 20.0, 200) }).collect();
        hist.push(Sums::default());
        let total = s(0.0, 120.0, 1200);
        let c = best_categorical(0, &hist, 6, total, &rules()).unwrap();
        let Rule::Categorical { left } = &c.rule else { panic!() };
        assert!(left == &[0, 2, 4] || left == &[1, 3, 5], "{left:?}");
    }

    #[test]
    fn regularised_leaf_output() {
        assert_eq!(leaf_output(s(-4.0, 3.0, 1), 0.0, 1.0), 1.0);
        assert_eq!(leaf_output(s(-4.0, 3.0, 1), 2.0, 1.0), 0.5);
        assert_eq!(leaf_output(s(1.0, 3.0, 1), 2.0, 1.0), 0.0);
    }
}
