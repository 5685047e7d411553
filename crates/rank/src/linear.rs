//! The light ranker: a linear model over cheap features.
//!
//! The first cut of the cascade scores every retrieval candidate (hundreds per request), so it must
//! cost a few multiply-adds per feature; the heavy GBDT then reranks the best of them. A logistic
//! regression is that model: its score is monotone in the predicted click probability, it trains
//! in seconds, and its coefficients can be read.
//!
//! Training ([`fit_logistic`]) standardises each feature with its (weighted) mean and standard
//! deviation, so one L2 strength suits features of any unit, then minimises the penalised
//! log-loss by Newton's method with a backtracking line search: the objective is strictly convex,
//! so this converges to the unique optimum in a handful of iterations, and with sums taken in
//! fixed-size chunks in a fixed order it is bitwise deterministic whatever the thread count.

use crate::error::{Error, Result};
use crate::io::Artifact;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How [`fit_logistic`] trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinearParams {
    /// L2 strength on the coefficients of the *standardised* features (the intercept is not
    /// penalised). The objective is `Σ wᵢ·logloss(yᵢ, scoreᵢ) + l2/2 · Σⱼ βⱼ²`, a sum rather than
    /// a mean, so the penalty fades as data grows — as scikit-learn's `LogisticRegression` with
    /// `C = 1/l2` after a `StandardScaler`. `0` is allowed, but on separable data the optimum is
    /// then at infinity and training stops after `max_iter` with large coefficients.
    pub l2: f64,
    /// Newton iterations at most; the solver usually needs fewer than 15.
    pub max_iter: usize,
    /// Training stops when every component of the objective's gradient is below `tol` times the
    /// total training weight, i.e. the average per-row gradient is below `tol`.
    pub tol: f64,
    /// Reweight the classes so each carries half of the total weight (on top of any row weights),
    /// as scikit-learn's `class_weight="balanced"`. With 1-5 % positives this trades calibrated
    /// probabilities for a loss that does not ignore the positives; leave it off when the score
    /// feeds a calibrator or a threshold that expects real probabilities.
    pub balanced: bool,
}

impl Default for LinearParams {
    fn default() -> LinearParams {
        LinearParams { l2: 1.0, max_iter: 100, tol: 1e-9, balanced: false }
    }
}

impl LinearParams {
    fn validate(&self) -> Result<()> {
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(Error::invalid("params.l2", format!("must be finite and >= 0, got {}", self.l2)));
        }
        if self.max_iter == 0 {
            return Err(Error::invalid("params.max_iter", "must be at least 1"));
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return Err(Error::invalid("params.tol", format!("must be finite and > 0, got {}", self.tol)));
        }
        Ok(())
    }
}

/// A trained logistic-regression light ranker.
///
/// Stored in standardised form — the score is `intercept + Σⱼ weightⱼ · (xⱼ − meanⱼ) / scaleⱼ` —
/// so a missing value (NaN) contributes exactly nothing, which is "missing reads as the training
/// mean". Features that were constant in training have weight 0 and scale 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    feature_names: Vec<String>,
    means: Vec<f64>,
    scales: Vec<f64>,
    weights: Vec<f64>,
    intercept: f64,
}

impl Linear {
    pub fn n_features(&self) -> usize {
        self.weights.len()
    }

    /// The logit of the predicted probability; ranks exactly as [`Linear::predict`] and is
    /// cheaper. Panics unless `row` holds one value per feature.
    #[inline]
    pub fn score(&self, row: &[f64]) -> f64 {
        assert_eq!(row.len(), self.n_features(), "one value per feature");
        let mut s = self.intercept;
        for (j, &x) in row.iter().enumerate() {
            let w = self.weights[j];
            // Skipping zero weights keeps an infinite value of an unused feature from making NaN.
            if w != 0.0 && !x.is_nan() {
                s += w * ((x - self.means[j]) / self.scales[j]);
            }
        }
        s
    }

    /// The predicted probability of the positive class.
    pub fn predict(&self, row: &[f64]) -> f64 {
        sigmoid(self.score(row))
    }

    /// [`Linear::score`] of each row of row-major `values`. Panics unless `values` holds whole
    /// rows.
    pub fn score_batch(&self, values: &[f64]) -> Vec<f64> {
        let n = self.n_features();
        assert!(values.len().is_multiple_of(n), "{} values are not whole rows of {n} features", values.len());
        values.chunks_exact(n).map(|row| self.score(row)).collect()
    }

    /// Each feature's coefficient in the feature's own units: the change in logit per unit of
    /// the raw feature.
    pub fn coefficients(&self) -> Vec<(String, f64)> {
        let names = self.feature_names.iter().cloned();
        names.zip(self.weights.iter().zip(&self.scales).map(|(w, s)| w / s)).collect()
    }

    /// The intercept in the features' own units: the logit when every feature is 0.
    pub fn intercept(&self) -> f64 {
        let shift: f64 = (0..self.n_features()).map(|j| self.weights[j] / self.scales[j] * self.means[j]).sum();
        self.intercept - shift
    }
}

impl Linear {
    /// Why a loaded model is unusable, if it is.
    fn invariants(&self) -> Result<(), String> {
        let n = self.weights.len();
        if n == 0 {
            return Err("a linear model needs at least one feature".into());
        }
        for (what, len) in
            [("feature_names", self.feature_names.len()), ("means", self.means.len()), ("scales", self.scales.len())]
        {
            if len != n {
                return Err(format!("{len} {what} for {n} weights"));
            }
        }
        let finite = |what: &str, v: &[f64]| match v.iter().position(|x| !x.is_finite()) {
            Some(j) => Err(format!("{what}[{j}] is {}", v[j])),
            None => Ok(()),
        };
        finite("means", &self.means)?;
        finite("scales", &self.scales)?;
        finite("weights", &self.weights)?;
        finite("intercept", &[self.intercept])?;
        if let Some(j) = self.scales.iter().position(|&s| s <= 0.0) {
            return Err(format!("scales[{j}] is {}, must be > 0", self.scales[j]));
        }
        Ok(())
    }
}

impl Artifact for Linear {
    const KIND: &'static str = "linear";

    fn check(&self) -> Result<()> {
        self.invariants().map_err(|reason| Error::format(Self::KIND, reason))
    }
}

/// Trains a logistic regression on row-major `values` (`labels.len()` rows of `n_features`).
///
/// - `labels` are 0 or 1; both classes must carry positive weight.
/// - `weights` (optional, one per row, finite and >= 0) scale each row's loss; a row of weight
///   `k` is the same as `k` copies of it. They also weight the standardisation.
/// - NaN values are missing and read as the feature's mean over its non-missing training rows
///   (infinite values are refused); a feature's scale is its standard deviation over those rows.
///   Features constant over them (or all missing) get weight 0.
///
/// Every bad input is an [`Error::Invalid`] naming the field.
pub fn fit_logistic(
    values: &[f64],
    n_features: usize,
    labels: &[f64],
    weights: Option<&[f64]>,
    feature_names: Vec<String>,
    params: &LinearParams,
) -> Result<Linear> {
    params.validate()?;
    let p = n_features;
    if p == 0 {
        return Err(Error::invalid("n_features", "must be at least 1"));
    }
    if feature_names.len() != p {
        return Err(Error::invalid("feature_names", format!("{} names for {p} features", feature_names.len())));
    }
    let n = labels.len();
    if n == 0 {
        return Err(Error::invalid("labels", "no rows"));
    }
    if values.len() != n * p {
        return Err(Error::invalid(
            "values",
            format!("{} values, expected {n} rows × {p} features = {}", values.len(), n * p),
        ));
    }
    if let Some(i) = labels.iter().position(|&y| y != 0.0 && y != 1.0) {
        return Err(Error::invalid("labels", format!("row {i}: {} is not 0 or 1", labels[i])));
    }
    if let Some(w) = weights {
        if w.len() != n {
            return Err(Error::invalid("weights", format!("{} weights for {n} rows", w.len())));
        }
        if let Some(i) = w.iter().position(|&w| !(w.is_finite() && w >= 0.0)) {
            return Err(Error::invalid("weights", format!("row {i}: {} is not finite and >= 0", w[i])));
        }
    }
    if let Some(k) = values.iter().position(|x| x.is_infinite()) {
        let name = &feature_names[k % p];
        return Err(Error::invalid("values", format!("row {}, feature `{name}`: {}", k / p, values[k])));
    }
    let row_weight = |i: usize| weights.map_or(1.0, |w| w[i]);

    let mut class_weight = [0.0; 2];
    for (i, &y) in labels.iter().enumerate() {
        class_weight[usize::from(y == 1.0)] += row_weight(i);
    }
    if !(class_weight[0] > 0.0 && class_weight[1] > 0.0) {
        return Err(Error::invalid(
            "labels",
            format!("both classes need positive weight, got {} (0) and {} (1)", class_weight[0], class_weight[1]),
        ));
    }
    let total = class_weight[0] + class_weight[1];
    let factor =
        if params.balanced { [total / (2.0 * class_weight[0]), total / (2.0 * class_weight[1])] } else { [1.0, 1.0] };
    let w: Vec<f64> = (0..n).map(|i| row_weight(i) * factor[usize::from(labels[i] == 1.0)]).collect();

    let (means, scales) = standardisation(values, p, &row_weight);
    let active: Vec<usize> = (0..p).filter(|&j| scales[j] > 0.0).collect();
    let scales: Vec<f64> = scales.into_iter().map(|s| if s > 0.0 { s } else { 1.0 }).collect();

    let problem = Problem { values, p, labels, w: &w, means: &means, scales: &scales, active: &active, l2: params.l2 };
    let base_rate = w.iter().zip(labels).map(|(w, y)| w * y).sum::<f64>() / w.iter().sum::<f64>();
    let theta = problem.newton((base_rate / (1.0 - base_rate)).ln(), params.max_iter, params.tol * total);

    let mut coef = vec![0.0; p];
    for (k, &j) in active.iter().enumerate() {
        coef[j] = theta[k + 1];
    }
    Ok(Linear { feature_names, means, scales, weights: coef, intercept: theta[0] })
}

#[inline]
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^z)` without overflow.
#[inline]
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Each feature's weighted mean and standard deviation over its non-missing rows; scale 0 marks
/// a feature with no spread (constant or all missing).
fn standardisation(values: &[f64], p: usize, row_weight: &dyn Fn(usize) -> f64) -> (Vec<f64>, Vec<f64>) {
    let mut sum_w = vec![0.0; p];
    let mut sum_wx = vec![0.0; p];
    for (i, row) in values.chunks_exact(p).enumerate() {
        let w = row_weight(i);
        for (j, &x) in row.iter().enumerate() {
            if !x.is_nan() && w > 0.0 {
                sum_w[j] += w;
                sum_wx[j] += w * x;
            }
        }
    }
    let means: Vec<f64> = (0..p).map(|j| if sum_w[j] > 0.0 { sum_wx[j] / sum_w[j] } else { 0.0 }).collect();
    // Two passes: the variance from centred values does not cancel catastrophically.
    let mut sum_wd2 = vec![0.0; p];
    for (i, row) in values.chunks_exact(p).enumerate() {
        let w = row_weight(i);
        for (j, &x) in row.iter().enumerate() {
            if !x.is_nan() && w > 0.0 {
                sum_wd2[j] += w * (x - means[j]) * (x - means[j]);
            }
        }
    }
    let scales = (0..p)
        .map(|j| {
            let sd = if sum_w[j] > 0.0 { (sum_wd2[j] / sum_w[j]).sqrt() } else { 0.0 };
            // A constant column's centred values are rounding noise around its mean.
            if sd > 1e-12 * means[j].abs() { sd } else { 0.0 }
        })
        .collect();
    (means, scales)
}

/// Rows per chunk of the parallel sums. Fixed, so the summation order (and so every bit of the
/// result) does not depend on the number of threads.
const CHUNK_ROWS: usize = 4096;

/// The penalised log-loss over standardised active features; parameters are
/// `θ = [intercept, β over active features]`.
struct Problem<'a> {
    values: &'a [f64],
    p: usize,
    labels: &'a [f64],
    w: &'a [f64],
    means: &'a [f64],
    scales: &'a [f64],
    active: &'a [usize],
    l2: f64,
}

/// Per-chunk sums: loss, gradient, and the upper triangle of the Hessian (row-major `d × d`).
struct Sums {
    loss: f64,
    grad: Vec<f64>,
    hess: Vec<f64>,
}

impl Problem<'_> {
    fn dim(&self) -> usize {
        self.active.len() + 1
    }

    /// Row `i`'s standardised active features, with a leading 1 for the intercept.
    #[inline]
    fn design_row(&self, i: usize, z: &mut [f64]) {
        let row = &self.values[i * self.p..(i + 1) * self.p];
        z[0] = 1.0;
        for (k, &j) in self.active.iter().enumerate() {
            let x = row[j];
            z[k + 1] = if x.is_nan() { 0.0 } else { (x - self.means[j]) / self.scales[j] };
        }
    }

    fn penalty(&self, theta: &[f64]) -> f64 {
        0.5 * self.l2 * theta[1..].iter().map(|b| b * b).sum::<f64>()
    }

    /// Sums over the rows of `chunk`, computing the Hessian only if asked.
    fn chunk_sums(&self, chunk: usize, theta: &[f64], with_derivatives: bool) -> Sums {
        let d = self.dim();
        let (mut grad, mut hess) = if with_derivatives { (vec![0.0; d], vec![0.0; d * d]) } else { (vec![], vec![]) };
        let mut loss = 0.0;
        let mut z = vec![0.0; d];
        let rows = chunk * CHUNK_ROWS..((chunk + 1) * CHUNK_ROWS).min(self.labels.len());
        for i in rows {
            let w = self.w[i];
            if w == 0.0 {
                continue;
            }
            self.design_row(i, &mut z);
            let eta: f64 = z.iter().zip(theta).map(|(z, t)| z * t).sum();
            let y = self.labels[i];
            loss += w * (softplus(eta) - y * eta);
            if with_derivatives {
                let prob = sigmoid(eta);
                let r = w * (prob - y);
                let h = w * prob * (1.0 - prob);
                for a in 0..d {
                    grad[a] += r * z[a];
                    let hz = h * z[a];
                    for b in a..d {
                        hess[a * d + b] += hz * z[b];
                    }
                }
            }
        }
        Sums { loss, grad, hess }
    }

    /// The objective, and with `with_derivatives` its gradient and full Hessian, summed chunk by
    /// chunk in order.
    fn evaluate(&self, theta: &[f64], with_derivatives: bool) -> Sums {
        let chunks = self.labels.len().div_ceil(CHUNK_ROWS);
        let parts: Vec<Sums> =
            (0..chunks).into_par_iter().map(|c| self.chunk_sums(c, theta, with_derivatives)).collect();
        let d = self.dim();
        let mut total = Sums {
            loss: self.penalty(theta),
            grad: if with_derivatives { vec![0.0; d] } else { vec![] },
            hess: if with_derivatives { vec![0.0; d * d] } else { vec![] },
        };
        for part in &parts {
            total.loss += part.loss;
            total.grad.iter_mut().zip(&part.grad).for_each(|(t, g)| *t += g);
            total.hess.iter_mut().zip(&part.hess).for_each(|(t, h)| *t += h);
        }
        if with_derivatives {
            for (a, t) in theta.iter().enumerate().skip(1) {
                total.grad[a] += self.l2 * t;
                total.hess[a * d + a] += self.l2;
            }
            for a in 0..d {
                for b in 0..a {
                    total.hess[a * d + b] = total.hess[b * d + a];
                }
            }
        }
        total
    }

    /// Newton's method with an Armijo backtracking line search from `β = 0` and the given
    /// intercept. Stops at `max|gradient| <= grad_tol`, after `max_iter` steps, or when no step
    /// decreases the objective any more (the optimum to floating-point precision).
    fn newton(&self, intercept: f64, max_iter: usize, grad_tol: f64) -> Vec<f64> {
        let d = self.dim();
        let mut theta = vec![0.0; d];
        theta[0] = intercept;
        for _ in 0..max_iter {
            let Sums { loss, grad, hess } = self.evaluate(&theta, true);
            if grad.iter().all(|g| g.abs() <= grad_tol) {
                break;
            }
            let step = solve_damped(&hess, &grad, d);
            let slope: f64 = grad.iter().zip(&step).map(|(g, s)| g * s).sum();
            let mut t = 1.0;
            let mut moved = false;
            while t >= 1e-10 {
                let candidate: Vec<f64> = theta.iter().zip(&step).map(|(x, s)| x - t * s).collect();
                if self.evaluate(&candidate, false).loss <= loss - 1e-4 * t * slope {
                    theta = candidate;
                    moved = true;
                    break;
                }
                t *= 0.5;
            }
            if !moved {
                break;
            }
        }
        theta
    }
}

/// Solves `H x = g` for symmetric positive (semi-)definite `H` by Cholesky; if `H` is singular
/// (possible only with `l2 = 0` and collinear features) a growing ridge is added until it
/// factors, which still gives a descent direction.
fn solve_damped(h: &[f64], g: &[f64], d: usize) -> Vec<f64> {
    let trace = (0..d).map(|a| h[a * d + a]).sum::<f64>() / d as f64;
    let mut ridge = 0.0;
    for _ in 0..40 {
        if let Some(x) = cholesky_solve(h, g, d, ridge) {
            return x;
        }
        ridge = if ridge == 0.0 { 1e-12 * trace.max(f64::MIN_POSITIVE) } else { ridge * 10.0 };
    }
    // Unreachable for finite input; steepest descent is still a descent direction.
    g.to_vec()
}

fn cholesky_solve(h: &[f64], g: &[f64], d: usize, ridge: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for a in 0..d {
        for b in 0..=a {
            let mut s = h[a * d + b] + if a == b { ridge } else { 0.0 };
            for k in 0..b {
                s -= l[a * d + k] * l[b * d + k];
            }
            if a == b {
                if s.is_nan() || s <= 0.0 || s.is_infinite() {
                    return None;
                }
                l[a * d + a] = s.sqrt();
            } else {
                l[a * d + b] = s / l[b * d + b];
            }
        }
    }
    let mut y = vec![0.0; d];
    for a in 0..d {
        let s: f64 = (0..a).map(|k| l[a * d + k] * y[k]).sum();
        y[a] = (g[a] - s) / l[a * d + a];
    }
    let mut x = vec![0.0; d];
    for a in (0..d).rev() {
        let s: f64 = (a + 1..d).map(|k| l[k * d + a] * x[k]).sum();
        x[a] = (y[a] - s) / l[a * d + a];
    }
    Some(x)
}
