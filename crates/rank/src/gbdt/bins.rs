//! Feature binning: every feature value becomes a one-byte bin index once, before training, so
//! histograms are small arrays indexed by bin and a split is a bin boundary.

use super::{Dataset, Params, Rng};
use rayon::prelude::*;
use std::collections::HashMap;

/// How one feature's values map to bins.
#[derive(Debug, Clone)]
pub(crate) enum Mapper {
    /// Value bin `b` holds `uppers[b - 1] < x <= uppers[b]`; the last upper bound is `f64::MAX`.
    /// NaN has the bin after the value bins when the training data has NaN.
    Numeric { uppers: Vec<f64>, nan_bin: Option<u8> },
    /// Bin `b < cats.len()` is category `cats[b]` (most frequent first); bin `cats.len()` holds
    /// everything else: rare categories, negative values and NaN. It always goes right.
    Categorical { cats: Vec<u32>, lookup: HashMap<u32, u8> },
}

impl Mapper {
    pub(crate) fn n_bins(&self) -> usize {
        match self {
            Mapper::Numeric { uppers, nan_bin } => uppers.len() + usize::from(nan_bin.is_some()),
            Mapper::Categorical { cats, .. } => cats.len() + 1,
        }
    }

    pub(crate) fn bin(&self, x: f64) -> u8 {
        match self {
            Mapper::Numeric { uppers, nan_bin } => {
                if x.is_nan() {
                    // A NaN bin exists whenever the data has NaN; this fallback only serves callers
                    // binning other data.
                    return nan_bin.unwrap_or((uppers.len() - 1) as u8);
                }
                uppers.partition_point(|&u| u < x).min(uppers.len() - 1) as u8
            }
            Mapper::Categorical { cats, lookup } => {
                let other = cats.len() as u8;
                match category(x) {
                    Some(c) => lookup.get(&c).copied().unwrap_or(other),
                    None => other,
                }
            }
        }
    }
}

/// The category id scoring reads from `x` (truncation), or `None` for missing / out of range.
fn category(x: f64) -> Option<u32> {
    if (0.0..4_294_967_296.0).contains(&x) { Some(x as u32) } else { None }
}

/// The binned training matrix, column-major (`cols[feature][row]`), so building a feature's
/// histogram reads one compact byte array.
#[derive(Debug)]
pub(crate) struct Binned {
    pub(crate) mappers: Vec<Mapper>,
    /// `offsets[f]..offsets[f + 1]` is feature `f`'s range in a leaf histogram.
    pub(crate) offsets: Vec<usize>,
    pub(crate) cols: Vec<Vec<u8>>,
}

impl Binned {
    pub(crate) fn new(data: &Dataset, params: &Params) -> Binned {
        let n = data.n_rows;
        let nf = data.n_features;
        let sample = if n > params.bin_construct_sample_cnt {
            Some(Rng::new(params.seed, 3).sample(n, params.bin_construct_sample_cnt))
        } else {
            None
        };
        let (mappers, cols): (Vec<Mapper>, Vec<Vec<u8>>) = (0..nf)
            .into_par_iter()
            .map(|f| {
                let column = |r: usize| data.values[r * nf + f];
                let mapper = if data.categorical.binary_search(&f).is_ok() {
                    categorical_mapper((0..n).map(column), params.max_bin)
                } else {
                    let has_nan = (0..n).any(|r| column(r).is_nan());
                    let mut values: Vec<f64> = match &sample {
                        Some(s) => s.iter().map(|&r| column(r as usize)).filter(|v| !v.is_nan()).collect(),
                        None => (0..n).map(column).filter(|v| !v.is_nan()).collect(),
                    };
                    let max_bins = if has_nan { params.max_bin - 1 } else { params.max_bin }.max(1);
                    let uppers = numeric_bounds(&mut values, max_bins);
                    let nan_bin = has_nan.then_some(uppers.len() as u8);
                    Mapper::Numeric { uppers, nan_bin }
                };
                let col = (0..n).map(|r| mapper.bin(column(r))).collect();
                (mapper, col)
            })
            .unzip();
        let mut offsets = Vec::with_capacity(nf + 1);
        offsets.push(0);
        for m in &mappers {
            offsets.push(offsets.last().copied().unwrap_or(0) + m.n_bins());
        }
        Binned { mappers, offsets, cols }
    }

    pub(crate) fn total_bins(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }
}

/// A threshold `t` with `a <= t < b` (the midpoint where representable).
fn between(a: f64, b: f64) -> f64 {
    let m = a / 2.0 + b / 2.0;
    if m >= a && m < b { m } else { a }
}

/// Upper bounds of at most `max_bins` bins with about equal counts: every distinct value gets its
/// own bin when they fit, otherwise bins are cut greedily at quantiles and a value that alone
/// fills a bin's share starts a new bin, so heavy values are not merged with their neighbours.
pub(crate) fn numeric_bounds(values: &mut [f64], max_bins: usize) -> Vec<f64> {
    values.sort_unstable_by(f64::total_cmp);
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for &v in values.iter() {
        match distinct.last_mut() {
            Some((last, c)) if *last == v => *c += 1,
            _ => distinct.push((v, 1)),
        }
    }
    let mut uppers = Vec::new();
    if distinct.len() <= max_bins {
        for w in distinct.windows(2) {
            uppers.push(between(w[0].0, w[1].0));
        }
    } else {
        let mut remaining = values.len() as f64;
        let mut bins_left = max_bins as f64;
        let mut target = remaining / bins_left;
        let mut acc = 0usize;
        for i in 0..distinct.len() - 1 {
            acc += distinct[i].1;
            let next = distinct[i + 1].1 as f64;
            if uppers.len() + 1 >= max_bins {
                break;
            }
            if acc as f64 >= target || next >= target {
                uppers.push(between(distinct[i].0, distinct[i + 1].0));
                remaining -= acc as f64;
                bins_left -= 1.0;
                target = remaining / bins_left.max(1.0);
                acc = 0;
            }
        }
    }
    uppers.push(f64::MAX);
    uppers
}

/// Categories by frequency (ties by id), at most `max_bin - 1` of them; the rest share the
/// "other" bin with missing values.
fn categorical_mapper(values: impl Iterator<Item = f64>, max_bin: usize) -> Mapper {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for c in values.filter_map(category) {
        *counts.entry(c).or_default() += 1;
    }
    let mut by_count: Vec<(u32, usize)> = counts.into_iter().collect();
    by_count.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_count.truncate(max_bin - 1);
    let cats: Vec<u32> = by_count.iter().map(|&(c, _)| c).collect();
    let lookup = cats.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
    Mapper::Categorical { cats, lookup }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_distinct_values_get_a_bin_each_with_midpoint_bounds() {
        let mut v = vec![3.0, 1.0, 2.0, 1.0, 3.0];
        assert_eq!(numeric_bounds(&mut v, 255), vec![1.5, 2.5, f64::MAX]);
    }

    #[test]
    fn many_values_are_cut_into_at_most_max_bins_near_quantiles() {
        let mut v: Vec<f64> = (0..10_000).map(|i| f64::from(i % 1000)).collect();
        let uppers = numeric_bounds(&mut v, 10);
        assert_eq!(uppers.len(), 10);
        let m = Mapper::Numeric { uppers, nan_bin: None };
        let mut counts = [0usize; 10];
        for i in 0..1000 {
            counts[m.bin(f64::from(i)) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (80..=120).contains(&c)), "{counts:?}");
    }

    #[test]
    fn a_heavy_value_gets_its_own_bin() {
        let mut v: Vec<f64> = (0..1000).map(f64::from).collect();
        v.extend(std::iter::repeat_n(500.5, 5000));
        let uppers = numeric_bounds(&mut v, 8);
        let m = Mapper::Numeric { uppers, nan_bin: None };
        let heavy = m.bin(500.5);
        assert_ne!(m.bin(500.0), heavy);
        assert_ne!(m.bin(501.0), heavy);
    }

    #[test]
    fn bin_matches_threshold_semantics() {
        let m = Mapper::Numeric { uppers: vec![1.5, 2.5, f64::MAX], nan_bin: Some(3) };
        assert_eq!(m.bin(1.5), 0, "x <= upper goes to that bin");
        assert_eq!(m.bin(1.6), 1);
        assert_eq!(m.bin(1e300), 2);
        assert_eq!(m.bin(f64::NAN), 3);
    }

    #[test]
    fn categories_keep_the_frequent_ones() {
        let m = categorical_mapper([5.0, 5.0, 5.0, 2.0, 2.0, 9.0, -1.0, f64::NAN].into_iter(), 3);
        let Mapper::Categorical { cats, .. } = &m else { panic!() };
        assert_eq!(cats, &[5, 2]);
        assert_eq!(m.bin(5.7), 0);
        assert_eq!(m.bin(9.0), 2, "rare category goes to other");
        assert_eq!(m.bin(-3.0), 2);
        assert_eq!(m.bin(f64::NAN), 2);
    }
}
