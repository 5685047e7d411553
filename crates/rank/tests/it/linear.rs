//! Tests of `cascade_rank::linear`.

use cascade_rank::io::{FORMAT_VERSION, MAGIC};
use cascade_rank::linear::{Linear, LinearParams, fit_logistic};
use cascade_rank::{Artifact, Error};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn normal(rng: &mut StdRng, mean: f64, sd: f64) -> f64 {
    // Box–Muller; `1 - u` keeps the logarithm's argument in (0, 1].
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    mean + sd * (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn names(p: usize) -> Vec<String> {
    (0..p).map(|j| format!("f{j}")).collect()
}

/// Rows of `features` (each column drawn by its closure) and labels drawn from the logistic model
/// with `intercept` and `coefs` in the features' own units.
fn logistic_data(
    rng: &mut StdRng,
    n: usize,
    features: &[&dyn Fn(&mut StdRng) -> f64],
    intercept: f64,
    coefs: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut values = Vec::with_capacity(n * features.len());
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let row: Vec<f64> = features.iter().map(|f| f(rng)).collect();
        let z = intercept + row.iter().zip(coefs).map(|(x, c)| if x.is_nan() { 0.0 } else { x * c }).sum::<f64>();
        labels.push(f64::from(u8::from(rng.random::<f64>() < sigmoid(z))));
        values.extend(row);
    }
    (values, labels)
}

/// Weighted mean and population standard deviation of column `j` over its non-NaN values: the
/// standardisation `fit_logistic` documents.
fn column_stats(values: &[f64], p: usize, j: usize, weights: &[f64]) -> (f64, f64) {
    let col = || values.chunks_exact(p).map(move |r| r[j]).zip(weights).filter(|(x, _)| !x.is_nan());
    let w: f64 = col().map(|(_, w)| w).sum();
    let mean = col().map(|(x, w)| w * x).sum::<f64>() / w;
    let var = col().map(|(x, w)| w * (x - mean) * (x - mean)).sum::<f64>() / w;
    (mean, var.sqrt())
}

/// 100 000 rows, ~9 % positives, features on very different scales (one binary). In standardised
/// units the maximum-likelihood standard errors are about `1/√(n·E[p(1-p)]) ≈ 0.013`; the
/// default `l2 = 1` biases them by about `β/(n·E[p(1-p)]) < 1e-3`. So each coefficient, measured
/// in units of its feature's standard deviation, must be within 0.07 (> 5 standard errors), and
/// so must the logit at the feature means (the intercept is only meaningful there).
#[test]
fn recovers_known_coefficients() {
    let mut rng = StdRng::seed_from_u64(1);
    let features: [&dyn Fn(&mut StdRng) -> f64; 4] =
        [&|r| normal(r, 0.0, 1.0), &|r| r.random_range(0.0..10.0), &|r| normal(r, 100.0, 20.0), &|r| {
            f64::from(u8::from(r.random::<f64>() < 0.3))
        }];
    let (intercept, coefs) = (-3.8, [0.8, -0.3, 0.02, 1.0]);
    let (values, labels) = logistic_data(&mut rng, 100_000, &features, intercept, &coefs);
    let rate = labels.iter().sum::<f64>() / labels.len() as f64;
    assert!((0.05..0.15).contains(&rate), "positive rate {rate}");

    let model = fit_logistic(&values, 4, &labels, None, names(4), &LinearParams::default()).unwrap();
    let ones = vec![1.0; labels.len()];
    let mut logit_at_mean = (model.intercept(), intercept);
    for (j, (name, c)) in model.coefficients().into_iter().enumerate() {
        assert_eq!(name, format!("f{j}"));
        let (mean, sd) = column_stats(&values, 4, j, &ones);
        assert!((c - coefs[j]).abs() * sd < 0.07, "{name}: {c} vs {}", coefs[j]);
        logit_at_mean.0 += c * mean;
        logit_at_mean.1 += coefs[j] * mean;
    }
    assert!((logit_at_mean.0 - logit_at_mean.1).abs() < 0.07, "logit at the means {logit_at_mean:?}");
}

/// The documented objective in the features' own units: `Σ wᵢ·logloss + l2/2 · Σ (cⱼ·sdⱼ)²`,
/// missing values read as the column mean.
fn objective(values: &[f64], p: usize, labels: &[f64], w: &[f64], l2: f64, theta: &[f64], stats: &[(f64, f64)]) -> f64 {
    let mut loss = 0.0;
    for ((row, &y), &w) in values.chunks_exact(p).zip(labels).zip(w) {
        let z = theta[0]
            + row.iter().enumerate().map(|(j, &x)| theta[j + 1] * if x.is_nan() { stats[j].0 } else { x }).sum::<f64>();
        let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
        loss += w * (softplus - y * z);
    }
    loss + 0.5 * l2 * (0..p).map(|j| (theta[j + 1] * stats[j].1).powi(2)).sum::<f64>()
}

/// Central finite differences of the penalised loss, in the features' own units, vanish at the
/// fitted model — independently of how the solver parametrises it. Each direction is scaled to
/// one standard deviation of its feature (one unit for the intercept) and the derivative divided
/// by the total weight, so "0" means below 1e-6 where a 0.1-sd nudge gives > 1e-3.
#[test]
fn gradient_vanishes_at_the_solution() {
    let mut rng = StdRng::seed_from_u64(2);
    let features: [&dyn Fn(&mut StdRng) -> f64; 4] = [
        &|r| normal(r, 0.0, 1.0),
        &|r| if r.random::<f64>() < 0.2 { f64::NAN } else { normal(r, 5.0, 2.0) },
        &|_| 3.0,
        &|r| normal(r, 100.0, 20.0),
    ];
    let (values, labels) = logistic_data(&mut rng, 2000, &features, -1.0, &[1.0, 0.3, 0.0, -0.02]);
    let weights: Vec<f64> = (0..labels.len()).map(|_| rng.random_range(0.5..2.0)).collect();
    let total: f64 = weights.iter().sum();
    for l2 in [1.0, 50.0] {
        let params = LinearParams { l2, ..LinearParams::default() };
        let model = fit_logistic(&values, 4, &labels, Some(&weights), names(4), &params).unwrap();
        let stats: Vec<(f64, f64)> = (0..4).map(|j| column_stats(&values, 4, j, &weights)).collect();
        let mut theta = vec![model.intercept()];
        theta.extend(model.coefficients().iter().map(|c| c.1));
        assert_eq!(theta[3], 0.0, "the constant feature has weight 0");

        let derivative = |theta: &[f64], k: usize| {
            let unit = if k == 0 { 1.0 } else { 1.0 / stats[k - 1].1 };
            let h = 1e-4;
            let (mut plus, mut minus) = (theta.to_vec(), theta.to_vec());
            plus[k] += h * unit;
            minus[k] -= h * unit;
            let f = |t: &[f64]| objective(&values, 4, &labels, &weights, l2, t, &stats);
            (f(&plus) - f(&minus)) / (2.0 * h) / total
        };
        for k in [0, 1, 2, 4] {
            let g = derivative(&theta, k);
            assert!(g.abs() < 1e-6, "l2 = {l2}: d/dθ{k} = {g}");
            let mut nudged = theta.clone();
            nudged[k] += 0.1 * if k == 0 { 1.0 } else { 1.0 / stats[k - 1].1 };
            assert!(derivative(&nudged, k).abs() > 1e-3, "l2 = {l2}: θ{k} is not identified");
        }
    }
}

#[test]
fn missing_values_read_as_the_mean_and_constant_features_are_ignored() {
    let mut rng = StdRng::seed_from_u64(3);
    let features: [&dyn Fn(&mut StdRng) -> f64; 4] = [
        &|r| normal(r, 0.0, 1.0),
        &|r| if r.random::<f64>() < 0.3 { f64::NAN } else { normal(r, 2.0, 1.0) },
        &|_| 7.5,
        &|_| f64::NAN,
    ];
    let (values, labels) = logistic_data(&mut rng, 5000, &features, -2.0, &[1.0, 0.5, 0.0, 0.0]);
    let model = fit_logistic(&values, 4, &labels, None, names(4), &LinearParams::default()).unwrap();
    let coefs = model.coefficients();
    assert!(coefs[0].1 > 0.5 && coefs[1].1 > 0.2, "{coefs:?}");
    assert_eq!((coefs[2].1, coefs[3].1), (0.0, 0.0));

    let (mean1, _) = column_stats(&values, 4, 1, &vec![1.0; labels.len()]);
    let imputed = model.score(&[0.4, mean1, 7.5, 1.0]);
    assert!((model.score(&[0.4, f64::NAN, 7.5, f64::NAN]) - imputed).abs() < 1e-12);
    // A constant feature's value, whatever it is at serving time, changes nothing.
    assert_eq!(model.score(&[0.4, mean1, -1e9, 1.0]), imputed);
    assert_eq!(model.score(&[0.4, mean1, f64::INFINITY, 1.0]), imputed);
}

#[test]
fn scoring_paths_agree() {
    let mut rng = StdRng::seed_from_u64(4);
    let features: [&dyn Fn(&mut StdRng) -> f64; 3] =
        [&|r| normal(r, 1.0, 3.0), &|r| r.random_range(-5.0..5.0), &|r| normal(r, 50.0, 10.0)];
    let (values, labels) = logistic_data(&mut rng, 3000, &features, -1.5, &[0.4, -0.2, 0.05]);
    let model = fit_logistic(&values, 3, &labels, None, names(3), &LinearParams::default()).unwrap();
    assert_eq!(model.n_features(), 3);
    let batch = model.score_batch(&values[..30]);
    assert_eq!(batch.len(), 10);
    for (row, &s) in values.chunks_exact(3).zip(&batch) {
        assert_eq!(model.score(row), s);
        assert_eq!(model.predict(row), sigmoid(s));
        let by_hand = model.intercept() + row.iter().zip(model.coefficients()).map(|(x, c)| x * c.1).sum::<f64>();
        assert!((by_hand - s).abs() < 1e-9, "{by_hand} vs {s}");
    }
}

#[test]
fn weights_equal_duplicated_rows() {
    let mut rng = StdRng::seed_from_u64(5);
    let features: [&dyn Fn(&mut StdRng) -> f64; 3] =
        [&|r| normal(r, 0.0, 1.0), &|r| if r.random::<f64>() < 0.1 { f64::NAN } else { normal(r, 10.0, 4.0) }, &|r| {
            f64::from(u8::from(r.random::<f64>() < 0.5))
        }];
    let (values, labels) = logistic_data(&mut rng, 600, &features, -2.5, &[1.0, 0.1, 0.7]);
    let weights: Vec<f64> = (0..labels.len()).map(|_| f64::from(rng.random_range(0u8..4))).collect();
    let (mut dup_values, mut dup_labels) = (Vec::new(), Vec::new());
    for (i, &w) in weights.iter().enumerate() {
        for _ in 0..w as usize {
            dup_values.extend_from_slice(&values[i * 3..(i + 1) * 3]);
            dup_labels.push(labels[i]);
        }
    }
    for balanced in [false, true] {
        let params = LinearParams { balanced, ..LinearParams::default() };
        let weighted = fit_logistic(&values, 3, &labels, Some(&weights), names(3), &params).unwrap();
        let duplicated = fit_logistic(&dup_values, 3, &dup_labels, None, names(3), &params).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
        assert!(close(weighted.intercept(), duplicated.intercept()), "balanced = {balanced}");
        for (a, b) in weighted.coefficients().iter().zip(duplicated.coefficients()) {
            assert!(close(a.1, b.1), "balanced = {balanced}: {a:?} vs {b:?}");
        }
    }
}

/// With `balanced`, each class carries half the weight, so at the optimum (where the intercept's
/// gradient is 0) the class-weighted mean prediction is exactly one half.
#[test]
fn balanced_weighs_the_classes_equally() {
    let mut rng = StdRng::seed_from_u64(6);
    let features: [&dyn Fn(&mut StdRng) -> f64; 2] = [&|r| normal(r, 0.0, 1.0), &|r| normal(r, 0.0, 1.0)];
    let (values, labels) = logistic_data(&mut rng, 20_000, &features, -4.0, &[1.0, -0.5]);
    let positives = labels.iter().sum::<f64>();
    assert!(positives / (labels.len() as f64) < 0.05);
    let params = LinearParams { balanced: true, ..LinearParams::default() };
    let model = fit_logistic(&values, 2, &labels, None, names(2), &params).unwrap();
    let negatives = labels.len() as f64 - positives;
    let mean: f64 = values
        .chunks_exact(2)
        .zip(&labels)
        .map(|(row, &y)| model.predict(row) / if y == 1.0 { positives } else { negatives })
        .sum::<f64>()
        / 2.0;
    assert!((mean - 0.5).abs() < 1e-8, "{mean}");
}

#[test]
fn training_is_deterministic() {
    let mut rng = StdRng::seed_from_u64(7);
    let features: [&dyn Fn(&mut StdRng) -> f64; 3] =
        [&|r| normal(r, 0.0, 1.0), &|r| normal(r, 3.0, 2.0), &|r| r.random_range(0.0..1.0)];
    // More rows than one parallel chunk, so the chunked sums are exercised.
    let (values, labels) = logistic_data(&mut rng, 30_000, &features, -3.0, &[0.5, 0.2, 1.0]);
    let fit = || fit_logistic(&values, 3, &labels, None, names(3), &LinearParams::default()).unwrap();
    let (a, b) = (fit(), fit());
    assert_eq!(a, b);
    let bits = |m: &Linear| m.coefficients().iter().map(|c| c.1.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn save_load_round_trip() {
    let mut rng = StdRng::seed_from_u64(8);
    let features: [&dyn Fn(&mut StdRng) -> f64; 3] = [&|r| normal(r, 0.0, 1.0), &|_| 1.0, &|r| normal(r, 3.0, 2.0)];
    let (values, labels) = logistic_data(&mut rng, 1000, &features, -1.0, &[0.5, 0.0, 0.2]);
    let model = fit_logistic(&values, 3, &labels, None, names(3), &LinearParams::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("light.cscd");
    model.save_file(&path).unwrap();
    let loaded = Linear::load_file(&path).unwrap();
    // Floats are written and read back exactly (serde_json's `float_roundtrip`), so the loaded
    // model is the same model, bit for bit.
    assert_eq!(loaded.n_features(), model.n_features());
    assert_eq!(loaded.intercept().to_bits(), model.intercept().to_bits());
    assert_eq!(loaded.coefficients(), model.coefficients());
    let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(loaded.score_batch(&values)), bits(model.score_batch(&values)));
}

#[test]
fn load_refuses_invalid_models() {
    let file = |model: &str| {
        let mut bytes = MAGIC.to_vec();
        bytes.extend(FORMAT_VERSION.to_le_bytes());
        bytes.extend(format!(r#"{{"kind":"linear","model":{model}}}"#).into_bytes());
        Linear::load(&mut &bytes[..])
    };
    let ok = r#"{"feature_names":["a"],"means":[0.0],"scales":[1.0],"weights":[2.0],"intercept":-1.0}"#;
    assert_eq!(file(ok).unwrap().score(&[1.0]), 1.0);
    for bad in [
        r#"{"feature_names":[],"means":[],"scales":[],"weights":[],"intercept":0.0}"#,
        r#"{"feature_names":["a","b"],"means":[0.0],"scales":[1.0],"weights":[2.0],"intercept":0.0}"#,
        r#"{"feature_names":["a"],"means":[0.0],"scales":[0.0],"weights":[2.0],"intercept":0.0}"#,
        r#"{"feature_names":["a"],"means":[0.0],"scales":[1.0],"weights":[2.0],"intercept":null}"#,
        r#"{"feature_names":["a"],"means":[0.0],"scales":[1.0],"weights":[2.0],"intercept":0.0,"x":1}"#,
    ] {
        assert!(matches!(file(bad), Err(Error::Format { .. })), "{bad} loaded");
    }
}

#[test]
fn params_read_from_config() {
    let params: LinearParams = serde_json::from_str(r#"{"l2": 0.5, "balanced": true}"#).unwrap();
    assert_eq!(params, LinearParams { l2: 0.5, balanced: true, ..LinearParams::default() });
    assert_eq!(LinearParams::default().l2, 1.0);
    assert!(serde_json::from_str::<LinearParams>(r#"{"l1": 0.5}"#).is_err());
}

#[test]
fn bad_input_names_the_field() {
    let values = [0.0, 1.0, 2.0, 3.0];
    let labels = [0.0, 1.0];
    let fit =
        |values: &[f64], p: usize, labels: &[f64], weights: Option<&[f64]>, params: &LinearParams| match fit_logistic(
            values,
            p,
            labels,
            weights,
            names(p),
            params,
        ) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Error::Invalid, got {other:?}"),
        };
    let default = LinearParams::default();
    assert_eq!(fit(&values, 2, &[0.0, 2.0], None, &default), "labels");
    assert_eq!(fit(&values, 2, &[0.0, f64::NAN], None, &default), "labels");
    assert_eq!(fit(&values, 2, &[1.0, 1.0], None, &default), "labels");
    assert_eq!(fit(&values, 2, &[], None, &default), "labels");
    assert_eq!(fit(&values[..3], 2, &labels, None, &default), "values");
    assert_eq!(fit(&[0.0, f64::INFINITY, 2.0, 3.0], 2, &labels, None, &default), "values");
    assert_eq!(fit(&[], 0, &labels, None, &default), "n_features");
    assert_eq!(fit(&values, 2, &labels, Some(&[1.0]), &default), "weights");
    assert_eq!(fit(&values, 2, &labels, Some(&[1.0, -1.0]), &default), "weights");
    assert_eq!(fit(&values, 2, &labels, Some(&[1.0, 0.0]), &default), "labels");
    assert_eq!(fit(&values, 2, &labels, None, &LinearParams { l2: -1.0, ..default }), "params.l2");
    assert_eq!(fit(&values, 2, &labels, None, &LinearParams { max_iter: 0, ..default }), "params.max_iter");
    assert_eq!(fit(&values, 2, &labels, None, &LinearParams { tol: f64::NAN, ..default }), "params.tol");
    match fit_logistic(&values, 2, &labels, None, names(3), &default) {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "feature_names"),
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}
