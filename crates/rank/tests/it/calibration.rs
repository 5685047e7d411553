//! Tests of `cascade_rank::calibration`.

use cascade_eval::metrics::ece;
use cascade_rank::calibration::{Calibrator, Method};
use cascade_rank::{Artifact, Error};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn isotonic_points(c: &Calibrator) -> (&[f64], &[f64]) {
    match c {
        Calibrator::Isotonic { x, y } => (x, y),
        other => panic!("not isotonic: {other:?}"),
    }
}

/// The least weighted squared error of any non-decreasing function of the score, by brute force:
/// the optimum is constant on consecutive blocks of the distinct scores, at each block's weighted
/// mean, and any partition whose block means do not decrease is feasible, so the minimum over all
/// `2^(m-1)` partitions of the `m` distinct scores is the optimum of the quadratic programme.
fn brute_force_isotonic_sse(scores: &[f64], labels: &[bool], weights: &[f64]) -> f64 {
    let mut distinct: Vec<f64> = scores.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let m = distinct.len();
    // Per distinct score: Σw, Σw·y, Σw·y².
    let mut sums = vec![(0.0, 0.0, 0.0); m];
    for ((&s, &l), &w) in scores.iter().zip(labels).zip(weights) {
        let k = distinct.iter().position(|&d| d == s).unwrap();
        let y = f64::from(u8::from(l));
        sums[k].0 += w;
        sums[k].1 += w * y;
        sums[k].2 += w * y * y;
    }
    let mut best = f64::INFINITY;
    for cuts in 0u32..1 << (m - 1) {
        let (mut sse, mut prev_mean, mut feasible) = (0.0, f64::NEG_INFINITY, true);
        let mut start = 0;
        for end in 1..=m {
            if end < m && cuts & (1 << (end - 1)) == 0 {
                continue;
            }
            let (w, wy, wyy) = sums[start..end].iter().fold((0.0, 0.0, 0.0), |a, s| (a.0 + s.0, a.1 + s.1, a.2 + s.2));
            let mean = wy / w;
            if mean < prev_mean - 1e-12 {
                feasible = false;
                break;
            }
            sse += wyy - wy * wy / w;
            prev_mean = mean;
            start = end;
        }
        if feasible {
            best = best.min(sse);
        }
    }
    best
}

proptest! {
    /// Small random data with many tied scores: the fit is monotone, gives tied scores one value,
    /// and its in-sample weighted squared error is the brute-force optimum.
    #[test]
    fn isotonic_is_the_least_squares_monotone_fit(
        rows in prop::collection::vec((0u8..8, any::<bool>(), 1u8..4), 1..12),
    ) {
        let scores: Vec<f64> = rows.iter().map(|r| f64::from(r.0) * 0.5 - 1.0).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r.1).collect();
        let weights: Vec<f64> = rows.iter().map(|r| f64::from(r.2)).collect();
        let c = Calibrator::fit_weighted(Method::Isotonic, &scores, &labels, Some(&weights)).unwrap();
        let (x, y) = isotonic_points(&c);
        prop_assert!(x.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(y.windows(2).all(|w| w[0] <= w[1]));
        let grid: Vec<f64> = (0..=100).map(|k| -2.0 + f64::from(k) * 0.05).collect();
        prop_assert!(grid.windows(2).all(|g| c.apply(g[0]) <= c.apply(g[1])));
        let sse: f64 = scores.iter().zip(&labels).zip(&weights)
            .map(|((&s, &l), &w)| w * (c.apply(s) - f64::from(u8::from(l))).powi(2))
            .sum();
        let best = brute_force_isotonic_sse(&scores, &labels, &weights);
        prop_assert!((sse - best).abs() < 1e-9, "PAV {sse} vs brute force {best}");
    }
}

#[test]
fn isotonic_pools_ties_interpolates_and_clips() {
    // Scores 1, 2, 2, 3 with labels 0, 1, 0, 1: the tie at 2 pools to 0.5, already monotone.
    let c = Calibrator::fit(Method::Isotonic, &[2.0, 1.0, 3.0, 2.0], &[true, false, true, false]).unwrap();
    assert_eq!(isotonic_points(&c), (&[1.0, 2.0, 3.0][..], &[0.0, 0.5, 1.0][..]));
    assert_eq!(c.apply(1.5), 0.25);
    assert_eq!(c.apply(-10.0), 0.0);
    assert_eq!(c.apply(10.0), 1.0);
    assert!(c.apply(f64::NAN).is_nan());
    // A violator pools into one block, which keeps both ends as points.
    let c = Calibrator::fit(Method::Isotonic, &[1.0, 2.0, 3.0], &[false, true, false]).unwrap();
    assert_eq!(isotonic_points(&c), (&[1.0, 2.0, 3.0][..], &[0.0, 0.5, 0.5][..]));
}

/// Labels drawn from `1 / (1 + exp(A·s + B))` with A = -1.5, B = 0.5 and s ~ U(-4, 4). With
/// n = 100 000 the maximum-likelihood estimates' standard errors are 0.009 (A) and 0.011 (B)
/// (the square roots of the diagonal of the inverse Fisher information `n·E[p(1-p)·(s,1)ᵀ(s,1)]`);
/// Platt's target smoothing shifts them by O(1/n). The 0.05 tolerance is over 4 standard errors.
#[test]
fn platt_recovers_a_known_sigmoid() {
    let (a, b) = (-1.5, 0.5);
    let mut rng = StdRng::seed_from_u64(7);
    let scores: Vec<f64> = (0..100_000).map(|_| rng.random_range(-4.0..4.0)).collect();
    let labels: Vec<bool> = scores.iter().map(|s| rng.random::<f64>() < 1.0 / (1.0 + (a * s + b).exp())).collect();
    let Calibrator::Platt { a: fa, b: fb } = Calibrator::fit(Method::Platt, &scores, &labels).unwrap() else {
        panic!("not Platt");
    };
    assert!((fa - a).abs() < 0.05 && (fb - b).abs() < 0.05, "fitted a = {fa}, b = {fb}");
}

/// Overconfident, shifted probabilities (`logit q = 2.5·logit p + 1`): both calibrators, fitted on
/// one half, bring the other half's ECE down from ~0.2 to sampling noise.
#[test]
fn calibration_lowers_ece_out_of_sample() {
    let mut rng = StdRng::seed_from_u64(11);
    let n = 40_000;
    let truth: Vec<f64> = (0..n).map(|_| sigmoid(rng.random_range(-4.0..1.0))).collect();
    let labels: Vec<bool> = truth.iter().map(|&p| rng.random::<f64>() < p).collect();
    let miscalibrated: Vec<f64> = truth.iter().map(|&p| sigmoid(2.5 * logit(p) + 1.0)).collect();
    let (fit, test) = (0..n / 2, n / 2..n);
    let before = ece(&miscalibrated[test.clone()], &labels[test.clone()], 10).unwrap();
    assert!(before > 0.1, "not miscalibrated enough: ECE {before}");

    // Platt sees the log-odds, in which the miscalibration is exactly a sigmoid's.
    let logits: Vec<f64> = miscalibrated.iter().map(|&q| logit(q)).collect();
    let platt = Calibrator::fit(Method::Platt, &logits[fit.clone()], &labels[fit.clone()]).unwrap();
    let isotonic = Calibrator::fit(Method::Isotonic, &miscalibrated[fit.clone()], &labels[fit]).unwrap();
    let platt_probs: Vec<f64> = logits[test.clone()].iter().map(|&s| platt.apply(s)).collect();
    let isotonic_probs: Vec<f64> = miscalibrated[test.clone()].iter().map(|&s| isotonic.apply(s)).collect();
    let after_platt = ece(&platt_probs, &labels[test.clone()], 10).unwrap();
    let after_isotonic = ece(&isotonic_probs, &labels[test], 10).unwrap();
    assert!(
        after_platt < 0.02 && after_isotonic < 0.02,
        "ECE {before} -> {after_platt} (Platt), {after_isotonic} (isotonic)"
    );
}

fn fixture(name: &str) -> Vec<Vec<f64>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/calibration").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().skip(1).map(|line| line.split(',').map(|v| v.parse().unwrap()).collect()).collect()
}

/// scikit-learn 1.9.1 on 300 tied, miscalibrated scores (fixtures/calibration/
/// make_calibration_fixture.py). Isotonic is exact arithmetic in both, so 1e-6 is loose; for
/// Platt we solve to a ~1e-12 gradient while scikit-learn's L-BFGS stops at gtol 1e-6, hence 1e-4.
#[test]
fn agrees_with_scikit_learn() {
    let data = fixture("data.csv");
    let scores: Vec<f64> = data.iter().map(|r| r[0]).collect();
    let labels: Vec<bool> = data.iter().map(|r| r[1] == 1.0).collect();
    let platt = Calibrator::fit(Method::Platt, &scores, &labels).unwrap();
    let isotonic = Calibrator::fit(Method::Isotonic, &scores, &labels).unwrap();

    let expected = &fixture("platt.csv")[0];
    let Calibrator::Platt { a, b } = platt else { panic!("not Platt") };
    assert!((a - expected[0]).abs() < 1e-4 && (b - expected[1]).abs() < 1e-4, "a = {a}, b = {b} vs {expected:?}");

    let grid = fixture("grid.csv");
    assert!(grid.len() > 300);
    for row in &grid {
        let (s, want_platt, want_isotonic) = (row[0], row[1], row[2]);
        assert!((platt.apply(s) - want_platt).abs() < 1e-4, "Platt at {s}: {} vs {want_platt}", platt.apply(s));
        let got = isotonic.apply(s);
        assert!((got - want_isotonic).abs() < 1e-6, "isotonic at {s}: {got} vs {want_isotonic}");
    }
}

#[test]
fn identity_and_method_names() {
    let c = Calibrator::fit(Method::None, &[0.3, 2.0], &[true, false]).unwrap();
    assert_eq!(c, Calibrator::Identity);
    assert_eq!(c.apply(2.5), 2.5);
    assert_eq!(Calibrator::fit(Method::None, &[], &[]).unwrap(), Calibrator::Identity);
    assert_eq!("platt".parse::<Method>().unwrap(), Method::Platt);
    assert_eq!("isotonic".parse::<Method>().unwrap(), Method::Isotonic);
    assert_eq!("none".parse::<Method>().unwrap(), Method::None);
    assert!(matches!("Platt".parse::<Method>(), Err(Error::Invalid { field, .. }) if field == "method"));
    assert_eq!(serde_json::from_str::<Method>("\"isotonic\"").unwrap(), Method::Isotonic);
    assert_eq!(serde_json::to_string(&Method::None).unwrap(), "\"none\"");
}

#[test]
fn save_load_round_trip() {
    let scores = [0.1, 0.4, 0.35, 0.8, 0.7, 0.2];
    let labels = [false, false, true, true, true, false];
    for method in [Method::None, Method::Platt, Method::Isotonic] {
        let c = Calibrator::fit(method, &scores, &labels).unwrap();
        let mut bytes = Vec::new();
        c.save(&mut bytes).unwrap();
        assert_eq!(Calibrator::load(&mut &bytes[..]).unwrap(), c);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibrator.cscd");
    let c = Calibrator::fit(Method::Isotonic, &scores, &labels).unwrap();
    c.save_file(&path).unwrap();
    assert_eq!(Calibrator::load_file(&path).unwrap(), c);
}

#[test]
fn load_refuses_invalid_calibrators() {
    for bad in [
        Calibrator::Platt { a: f64::NAN, b: 0.0 },
        Calibrator::Isotonic { x: vec![], y: vec![] },
        Calibrator::Isotonic { x: vec![0.0, 1.0], y: vec![0.5] },
        Calibrator::Isotonic { x: vec![1.0, 0.0], y: vec![0.1, 0.2] },
        Calibrator::Isotonic { x: vec![0.0, 1.0], y: vec![0.2, 0.1] },
    ] {
        let mut bytes = Vec::new();
        bad.save(&mut bytes).unwrap();
        let err = Calibrator::load(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{bad:?} loaded");
        assert_eq!(err.kind(), cascade_core::ErrorKind::Internal);
    }
}

fn invalid_field(result: cascade_rank::Result<Calibrator>) -> String {
    match result {
        Err(Error::Invalid { field, .. }) => field,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn bad_input_names_the_field() {
    let fit = Calibrator::fit;
    assert_eq!(invalid_field(fit(Method::Platt, &[0.1, f64::NAN], &[true, false])), "scores");
    assert_eq!(invalid_field(fit(Method::Isotonic, &[0.1, f64::INFINITY], &[true, false])), "scores");
    assert_eq!(invalid_field(fit(Method::Isotonic, &[0.1, 0.2], &[true])), "labels");
    assert_eq!(invalid_field(fit(Method::Platt, &[0.1, 0.2], &[true, true])), "labels");
    assert_eq!(invalid_field(fit(Method::Isotonic, &[], &[])), "scores");
    let weighted = |w: &[f64]| Calibrator::fit_weighted(Method::Isotonic, &[0.1, 0.2], &[true, false], Some(w));
    assert_eq!(invalid_field(weighted(&[1.0])), "weights");
    assert_eq!(invalid_field(weighted(&[1.0, -1.0])), "weights");
    assert_eq!(invalid_field(weighted(&[0.0, 0.0])), "weights");
    // Isotonic regression is well defined on one class.
    assert!(fit(Method::Isotonic, &[0.1, 0.2], &[true, true]).is_ok());
}
