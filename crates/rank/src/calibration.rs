//! Score calibration: Platt scaling and isotonic regression.
//!
//! A ranker's score orders candidates but is rarely a probability one can threshold, blend or
//! show (a GBDT trained with LambdaMART is not even on a probability scale; a light ranker trained
//! with class balancing is biased). A [`Calibrator`] fitted on held-out (score, label) pairs maps
//! scores to probabilities without changing their order:
//!
//! - [`Method::Platt`]: a sigmoid of the score, two parameters, fine on little data, but assumes
//!   the log-odds are linear in the score.
//! - [`Method::Isotonic`]: the best non-decreasing step function, assumption-free but needs more
//!   data (thousands of rows) not to overfit.
//!
//! Both follow scikit-learn (`CalibratedClassifierCV(method="sigmoid")`,
//! `IsotonicRegression(out_of_bounds="clip")`) so a calibrator can be checked against it.

use crate::error::{Error, Result};
use crate::io::Artifact;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Which calibrator to fit; read from config as `"none"`, `"platt"` or `"isotonic"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    None,
    Platt,
    Isotonic,
}

impl FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Method> {
        match s {
            "none" => Ok(Method::None),
            "platt" => Ok(Method::Platt),
            "isotonic" => Ok(Method::Isotonic),
            _ => Err(Error::invalid("method", format!("`{s}` is not one of none, platt, isotonic"))),
        }
    }
}

/// A fitted map from score to probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum Calibrator {
    /// The score unchanged ([`Method::None`]).
    Identity,
    /// `p = 1 / (1 + exp(a·score + b))`; `a < 0` when higher scores mean positive.
    Platt { a: f64, b: f64 },
    /// Linear interpolation through the points `(x[k], y[k])`, `x` strictly increasing and `y`
    /// non-decreasing, clipped to `y[0]` / `y[last]` outside `x`'s range.
    Isotonic { x: Vec<f64>, y: Vec<f64> },
}

impl Calibrator {
    /// Fits `method` on (score, label) pairs, every pair weighing the same.
    pub fn fit(method: Method, scores: &[f64], labels: &[bool]) -> Result<Calibrator> {
        Calibrator::fit_weighted(method, scores, labels, None)
    }

    /// Fits `method` on (score, label, weight) triples; a weight of `k` is `k` copies of the
    /// pair. Rows of weight 0 are ignored. Bad input is an [`Error::Invalid`] naming the field:
    /// NaN or infinite `scores`, mismatched lengths, no rows of positive weight, or (for Platt)
    /// a single class. [`Method::None`] needs no data, so it reads none and never fails.
    pub fn fit_weighted(
        method: Method,
        scores: &[f64],
        labels: &[bool],
        weights: Option<&[f64]>,
    ) -> Result<Calibrator> {
        if method == Method::None {
            return Ok(Calibrator::Identity);
        }
        if labels.len() != scores.len() {
            return Err(Error::invalid("labels", format!("{} labels for {} scores", labels.len(), scores.len())));
        }
        if scores.is_empty() {
            return Err(Error::invalid("scores", "no rows"));
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(Error::invalid("scores", format!("row {i}: {} is not finite", scores[i])));
        }
        if let Some(w) = weights {
            if w.len() != scores.len() {
                return Err(Error::invalid("weights", format!("{} weights for {} scores", w.len(), scores.len())));
            }
            if let Some(i) = w.iter().position(|&w| !(w.is_finite() && w >= 0.0)) {
                return Err(Error::invalid("weights", format!("row {i}: {} is not finite and >= 0", w[i])));
            }
        }
        let weight = |i: usize| weights.map_or(1.0, |w| w[i]);
        let rows: Vec<(f64, bool, f64)> =
            (0..scores.len()).map(|i| (scores[i], labels[i], weight(i))).filter(|r| r.2 > 0.0).collect();
        if rows.is_empty() {
            return Err(Error::invalid("weights", "no row has positive weight"));
        }
        match method {
            Method::None => unreachable!("returned above"),
            Method::Platt => fit_platt(&rows),
            Method::Isotonic => Ok(fit_isotonic(rows)),
        }
    }

    /// The calibrated probability of `score` (the score itself for [`Calibrator::Identity`]).
    /// NaN stays NaN.
    pub fn apply(&self, score: f64) -> f64 {
        match self {
            Calibrator::Identity => score,
            Calibrator::Platt { a, b } => platt_probability(a * score + b),
            Calibrator::Isotonic { x, y } => {
                if score.is_nan() {
                    return f64::NAN;
                }
                // The first point right of `score`; as `numpy.interp`.
                let k = x.partition_point(|&xk| xk <= score);
                if k == 0 {
                    y[0]
                } else if k == x.len() {
                    y[k - 1]
                } else {
                    let t = (score - x[k - 1]) / (x[k] - x[k - 1]);
                    y[k - 1] + t * (y[k] - y[k - 1])
                }
            }
        }
    }
}

impl Calibrator {
    /// Why a loaded model is unusable, if it is.
    fn invariants(&self) -> Result<(), String> {
        match self {
            Calibrator::Identity => Ok(()),
            Calibrator::Platt { a, b } => {
                if a.is_finite() && b.is_finite() {
                    Ok(())
                } else {
                    Err(format!("Platt parameters a = {a}, b = {b} must be finite"))
                }
            }
            Calibrator::Isotonic { x, y } => {
                if x.is_empty() || x.len() != y.len() {
                    return Err(format!("isotonic needs as many y as x, at least one: {} x, {} y", x.len(), y.len()));
                }
                if let Some(k) = x.iter().chain(y).position(|v| !v.is_finite()) {
                    return Err(format!("isotonic point {} is not finite", k % x.len()));
                }
                if let Some(k) = x.windows(2).position(|w| w[0] >= w[1]) {
                    return Err(format!("isotonic x is not strictly increasing at {}", k + 1));
                }
                if let Some(k) = y.windows(2).position(|w| w[0] > w[1]) {
                    return Err(format!("isotonic y decreases at {}", k + 1));
                }
                Ok(())
            }
        }
    }
}

impl Artifact for Calibrator {
    const KIND: &'static str = "calibrator";

    fn check(&self) -> Result<()> {
        self.invariants().map_err(|reason| Error::format(Self::KIND, reason))
    }
}

/// `1 / (1 + exp(f))` without overflow.
fn platt_probability(f: f64) -> f64 {
    if f >= 0.0 {
        let e = (-f).exp();
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + f.exp())
    }
}

/// Platt's sigmoid by Newton's method with backtracking, as Lin, Lin & Weng, "A note on Platt's
/// probabilistic outputs for support vector machines" (2007), Algorithm 1: the labels are
/// replaced by Platt's smoothed targets `(N₊+1)/(N₊+2)` and `1/(N₋+2)` (weighted counts, as
/// scikit-learn), which keeps `a`, `b` finite on separable data, and the loss is evaluated in a
/// form that neither overflows nor cancels.
fn fit_platt(rows: &[(f64, bool, f64)]) -> Result<Calibrator> {
    let prior1: f64 = rows.iter().filter(|r| r.1).map(|r| r.2).sum();
    let prior0: f64 = rows.iter().filter(|r| !r.1).map(|r| r.2).sum();
    if prior1 == 0.0 || prior0 == 0.0 {
        return Err(Error::invalid("labels", "Platt scaling needs both classes"));
    }
    let hi = (prior1 + 1.0) / (prior1 + 2.0);
    let lo = 1.0 / (prior0 + 2.0);
    let target = |positive: bool| if positive { hi } else { lo };
    let loss = |a: f64, b: f64| -> f64 {
        rows.iter()
            .map(|&(s, y, w)| {
                let f = a * s + b;
                let t = target(y);
                w * if f >= 0.0 { t * f + (-f).exp().ln_1p() } else { (t - 1.0) * f + f.exp().ln_1p() }
            })
            .sum()
    };
    // Lin et al.'s ridge: keeps the 2×2 Hessian invertible when all scores are equal.
    const SIGMA: f64 = 1e-12;
    const MIN_STEP: f64 = 1e-10;
    let grad_tol = 1e-12 * (prior0 + prior1);
    let (mut a, mut b) = (0.0, ((prior0 + 1.0) / (prior1 + 1.0)).ln());
    let mut fval = loss(a, b);
    for _ in 0..100 {
        let (mut h11, mut h22, mut h21, mut g1, mut g2) = (SIGMA, SIGMA, 0.0, 0.0, 0.0);
        for &(s, y, w) in rows {
            let p = platt_probability(a * s + b);
            let d2 = w * p * (1.0 - p);
            h11 += s * s * d2;
            h22 += d2;
            h21 += s * d2;
            let d1 = w * (target(y) - p);
            g1 += s * d1;
            g2 += d1;
        }
        if g1.abs() <= grad_tol && g2.abs() <= grad_tol {
            break;
        }
        let det = h11 * h22 - h21 * h21;
        let da = -(h22 * g1 - h21 * g2) / det;
        let db = -(-h21 * g1 + h11 * g2) / det;
        let gd = g1 * da + g2 * db;
        let mut step = 1.0;
        while step >= MIN_STEP {
            let (na, nb) = (a + step * da, b + step * db);
            let nf = loss(na, nb);
            if nf <= fval + 1e-4 * step * gd {
                (a, b, fval) = (na, nb, nf);
                break;
            }
            step /= 2.0;
        }
        if step < MIN_STEP {
            // No decrease left: the optimum to floating-point precision.
            break;
        }
    }
    Ok(Calibrator::Platt { a, b })
}

/// Isotonic regression by pool-adjacent-violators. Rows with equal scores are pooled first (one
/// point, their weighted mean label), since a function of the score must give them one value.
/// Each final block keeps its first and last score as interpolation points; points inside a
/// block are flat and dropped — the same points scikit-learn keeps.
fn fit_isotonic(mut rows: Vec<(f64, bool, f64)>) -> Calibrator {
    rows.sort_by(|l, r| l.0.total_cmp(&r.0));
    struct Block {
        x_first: f64,
        x_last: f64,
        sum_wy: f64,
        sum_w: f64,
    }
    impl Block {
        fn mean(&self) -> f64 {
            self.sum_wy / self.sum_w
        }
    }
    let mut blocks: Vec<Block> = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let x = rows[i].0;
        let mut block = Block { x_first: x, x_last: x, sum_wy: 0.0, sum_w: 0.0 };
        while i < rows.len() && rows[i].0 == x {
            block.sum_wy += rows[i].2 * f64::from(u8::from(rows[i].1));
            block.sum_w += rows[i].2;
            i += 1;
        }
        // Pool while the previous block is not below this one; merging equal means too leaves
        // the same function with fewer points.
        while let Some(prev) = blocks.last() {
            if prev.mean() < block.mean() {
                break;
            }
            let prev = blocks.pop().expect("just seen");
            block = Block {
                x_first: prev.x_first,
                x_last: block.x_last,
                sum_wy: prev.sum_wy + block.sum_wy,
                sum_w: prev.sum_w + block.sum_w,
            };
        }
        blocks.push(block);
    }
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for block in &blocks {
        let v = block.mean();
        x.push(block.x_first);
        y.push(v);
        if block.x_last != block.x_first {
            x.push(block.x_last);
            y.push(v);
        }
    }
    Calibrator::Isotonic { x, y }
}
