//! Off-policy evaluation of slate policies from logged requests: item-level IPS and SNIPS.
//!
//! A new ranking or exploration configuration can be judged on traffic the current one logged,
//! without an A/B test, provided every logged item carries the probability the logging policy
//! had of showing it (the serving cascade's exploration stage records it) and the candidate
//! policy's probability of showing the same item in the same request. The item-level model
//! assumes an item's reward depends on the item and the request, not on what else is on the
//! slate or where; under it, re-weighting each shown item by `target / logging` makes the
//! logged rewards unbiased for the target's expected reward per request.
//!
//! ```
//! use cascade_eval::offpolicy::{LoggedItem, ips, snips};
//!
//! let item = |reward, logging_propensity, target_propensity| LoggedItem { reward, logging_propensity, target_propensity };
//! // Slates of 2 from items a, b, c. The logger always shows a, plus b or c at random; the
//! // evaluated policy would always show a and b.
//! let requests = vec![
//!     vec![item(0.0, 1.0, 1.0), item(1.0, 0.5, 1.0)], // a, b
//!     vec![item(1.0, 1.0, 1.0), item(1.0, 0.5, 0.0)], // a, c
//!     vec![item(1.0, 1.0, 1.0), item(0.0, 0.5, 1.0)], // a, b
//! ];
//! let estimate = ips(&requests, None)?;
//! assert_eq!(estimate.value, (2.0 + 1.0 + 1.0) / 3.0);
//! // b came up in 2 requests of 3 where it is expected in 1.5, so the weights sum to 7 over 6
//! // shown items; SNIPS divides that excess out.
//! assert!((snips(&requests, None)?.value - 4.0 / 3.0 * 6.0 / 7.0).abs() < 1e-12);
//! # Ok::<(), cascade_eval::Error>(())
//! ```

use crate::error::{Error, Result};

/// One shown item of a logged request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoggedItem {
    pub reward: f64,
    /// Probability that the logging policy put this item in this request's slate: in (0, 1].
    pub logging_propensity: f64,
    /// Probability that the evaluated policy would put it there: in [0, 1].
    pub target_propensity: f64,
}

/// An estimate of the target policy's expected total reward per request.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub value: f64,
    /// Standard error from the spread across requests (requests are the independent units;
    /// items of one request share a user and a context). NaN with fewer than two requests.
    pub std_error: f64,
    pub requests: usize,
    pub items: usize,
    /// Kish's `(Σw)² / Σw²` over all items: how many equally weighted items would be as
    /// informative. Far below `items`, a few heavily weighted items decide the estimate and the
    /// standard error itself is unreliable. 0 when every weight is 0.
    pub effective_sample_size: f64,
    /// Items whose weight `target / logging` exceeded the clip and was cut to it.
    pub clipped: usize,
}

/// Expected total reward per request under the target policy: the mean over requests of
/// `Σ reward · w` over the request's shown items, with `w = min(target / logging, clip)`.
///
/// Unbiased without a clip (as long as the target only shows items the logger could show);
/// a clip trades a downward bias for bounded variance when some logging propensities are tiny.
///
/// Errors (`Error::InvalidRecommendations`, naming the request and item index): a logging
/// propensity outside (0, 1] — an item shown with probability 0 means the log, not the policy,
/// is wrong — a target propensity outside [0, 1], a non-finite reward, a clip that is not
/// positive, or no request at all.
pub fn ips(requests: &[Vec<LoggedItem>], clip: Option<f64>) -> Result<Estimate> {
    let w = Weighted::new(requests, clip)?;
    let n = requests.len() as f64;
    let value = w.sum_y / n;
    Ok(w.estimate(value, standard_error(w.per_request.iter().map(|r| r.y), value)))
}

/// Self-normalised IPS: IPS divided by the mean weight per shown item,
/// `V = IPS · Σ n_i / Σ w` (n_i the request's shown items, sums over all requests and items).
///
/// Why this normalisation: under the logging policy the expected weight of a request,
/// `E[Σ_j w_j] = Σ_j P_target(j)`, is the target's expected slate size. Assuming the target
/// fills as many slots as the logger did (and stays within the logger's support), that is
/// `n_i`, so `Σw / Σn` is a mean with known expectation 1; dividing by it cancels the noise the
/// weights put into both, as classic SNIPS divides by the mean weight. It equals IPS exactly
/// when every weight is 1, is invariant to scaling all weights, and partly undoes the
/// downward bias of clipping. It is a ratio estimator: consistent, biased by O(1/requests).
/// A target that shows fewer items than the logger (or items the logger never could) breaks
/// the assumption; use IPS there.
///
/// The standard error is the delta method's for `Ȳ · n̄ / W̄` over requests (Y, W, n per
/// request); with unit weights it equals IPS's.
///
/// Errors: those of [`ips`], and every weight being 0 (the ratio is 0/0; IPS is 0 then).
pub fn snips(requests: &[Vec<LoggedItem>], clip: Option<f64>) -> Result<Estimate> {
    let w = Weighted::new(requests, clip)?;
    if w.sum_w <= 0.0 {
        return Err(Error::InvalidRecommendations(
            "every logged item has target weight 0, so SNIPS is 0/0 (IPS is 0)".into(),
        ));
    }
    let n = requests.len() as f64;
    let ips = w.sum_y / n;
    // Written as IPS times a factor that is exactly 1.0 for unit weights, so SNIPS equals IPS
    // bit for bit there.
    let value = ips * (w.items as f64 / w.sum_w);
    let (mean_w, mean_n) = (w.sum_w / n, w.items as f64 / n);
    // Influence of each request on V = Ȳ n̄ / W̄ (gradient (n̄/W̄, -V/W̄, V/n̄)); their mean is 0.
    let influence = w
        .per_request
        .iter()
        .map(|r| mean_n / mean_w * r.y - value / mean_w * r.w + value / mean_n * r.n as f64 - value);
    Ok(w.estimate(value, standard_error(influence, 0.0)))
}

/// One request's weighted reward, weight and shown items.
#[derive(Debug, Clone, Copy)]
struct RequestSums {
    y: f64,
    w: f64,
    n: usize,
}

/// The checked, weighted log both estimators start from.
#[derive(Debug)]
struct Weighted {
    per_request: Vec<RequestSums>,
    sum_y: f64,
    sum_w: f64,
    sum_w2: f64,
    items: usize,
    clipped: usize,
}

impl Weighted {
    fn new(requests: &[Vec<LoggedItem>], clip: Option<f64>) -> Result<Weighted> {
        let invalid = |reason: String| Err(Error::InvalidRecommendations(reason));
        if let Some(c) = clip
            && (c.is_nan() || c <= 0.0)
        {
            return invalid(format!("clip {c} is not positive"));
        }
        if requests.is_empty() {
            return invalid("no logged request to estimate from".into());
        }
        let mut out = Weighted {
            per_request: Vec::with_capacity(requests.len()),
            sum_y: 0.0,
            sum_w: 0.0,
            sum_w2: 0.0,
            items: 0,
            clipped: 0,
        };
        for (r, items) in requests.iter().enumerate() {
            let mut sums = RequestSums { y: 0.0, w: 0.0, n: items.len() };
            for (i, item) in items.iter().enumerate() {
                let at = || format!("request {r}, item {i}");
                if !(item.logging_propensity > 0.0 && item.logging_propensity <= 1.0) {
                    return invalid(format!(
                        "{}: logging_propensity {} is not within (0, 1]",
                        at(),
                        item.logging_propensity
                    ));
                }
                if !(0.0..=1.0).contains(&item.target_propensity) {
                    return invalid(format!(
                        "{}: target_propensity {} is not within [0, 1]",
                        at(),
                        item.target_propensity
                    ));
                }
                if !item.reward.is_finite() {
                    return invalid(format!("{}: reward {} is not finite", at(), item.reward));
                }
                let mut weight = item.target_propensity / item.logging_propensity;
                if let Some(c) = clip
                    && weight > c
                {
                    weight = c;
                    out.clipped += 1;
                }
                sums.y += item.reward * weight;
                sums.w += weight;
                out.sum_w2 += weight * weight;
            }
            out.sum_y += sums.y;
            out.sum_w += sums.w;
            out.items += sums.n;
            out.per_request.push(sums);
        }
        Ok(out)
    }

    fn estimate(&self, value: f64, std_error: f64) -> Estimate {
        let effective_sample_size = if self.sum_w2 > 0.0 { self.sum_w * self.sum_w / self.sum_w2 } else { 0.0 };
        Estimate {
            value,
            std_error,
            requests: self.per_request.len(),
            items: self.items,
            effective_sample_size,
            clipped: self.clipped,
        }
    }
}

/// Explored slots out of `k` for a share of the slate: `round(share * k)` (halves away from
/// zero), at most `k`; 0 for a share of 0 or less, or NaN (an unvalidated share must not
/// explore). Serving's exploration config and [`crate::policy::Target::Epsilon`] both count
/// slots with it.
pub fn explored_slots(share: f64, k: usize) -> usize {
    if share.is_nan() || share <= 0.0 {
        return 0;
    }
    ((share * k as f64).round() as usize).min(k)
}

/// One request's split of the ranked list under slot exploration: `[0, greedy)` is shown as
/// ranked, `explored` items come from `[greedy, tail_end)`.
///
/// The one place that decides what can be explored, so serving's exploration and
/// [`epsilon_greedy_inclusion`] cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplorationPlan {
    pub greedy: usize,
    pub explored: usize,
    pub tail_end: usize,
}

impl ExplorationPlan {
    /// The plan for `n_ranked` candidates, `k` slots of which `slots` are explored (capped at
    /// the tail and at k), from a tail of `tail` ranks starting at `k - m`.
    pub fn new(n_ranked: usize, k: usize, slots: usize, tail: usize) -> ExplorationPlan {
        let m = slots.min(tail).min(k);
        // With n <= k every ranked item is shown anyway: exploring would change nothing but the
        // order, and the propensities would all be 1.
        if n_ranked <= k || m == 0 {
            let shown = n_ranked.min(k);
            return ExplorationPlan { greedy: shown, explored: 0, tail_end: shown };
        }
        let greedy = k - m;
        // n > k and tail >= m, so the tail holds at least m items.
        ExplorationPlan { greedy, explored: m, tail_end: n_ranked.min(greedy.saturating_add(tail)) }
    }

    /// The ranks exploration draws from: `tail_end - greedy`.
    pub fn tail_len(&self) -> usize {
        self.tail_end - self.greedy
    }
}

/// The exact inclusion probability of the item at ranked position `rank` under epsilon-greedy
/// exploration with `slots` explored slots out of `k`, a tail of `tail` items and `n_ranked`
/// candidates: 1 for greedy positions, `m / |tail|` inside the tail actually explored (after the
/// caps of [`ExplorationPlan::new`]), 0 beyond it. Off-policy evaluation uses it for the target
/// propensities of a candidate configuration, which was never run and so logged none; serving
/// logs exactly this for its epsilon-greedy explored items.
pub fn epsilon_greedy_inclusion(rank: usize, n_ranked: usize, k: usize, slots: usize, tail: usize) -> f64 {
    let plan = ExplorationPlan::new(n_ranked, k, slots, tail);
    if rank < plan.greedy {
        1.0
    } else if rank < plan.tail_end {
        plan.explored as f64 / plan.tail_len() as f64
    } else {
        0.0
    }
}

/// Standard error of the mean of `xs` around `mean` (sample variance, n - 1).
fn standard_error(xs: impl ExactSizeIterator<Item = f64>, mean: f64) -> f64 {
    let n = xs.len();
    if n < 2 {
        return f64::NAN;
    }
    let ss: f64 = xs.map(|x| (x - mean) * (x - mean)).sum();
    (ss / (n - 1) as f64 / n as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SplitMix64: enough randomness for simulations without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// `m` distinct values of `0..n`, uniformly (partial Fisher-Yates).
        fn choose(&mut self, n: usize, m: usize) -> Vec<usize> {
            let mut all: Vec<usize> = (0..n).collect();
            for i in 0..m {
                let j = i + (self.next_u64() % (n - i) as u64) as usize;
                all.swap(i, j);
            }
            all.truncate(m);
            all
        }
    }

    fn item(reward: f64, logging_propensity: f64, target_propensity: f64) -> LoggedItem {
        LoggedItem { reward, logging_propensity, target_propensity }
    }

    /// A world of 20 items with known click rates. The logger ranks them by index (a poor
    /// ranker: the rates are scrambled) and shows the top 3 plus 2 of the other 17 uniformly,
    /// so every item has a positive logging propensity. Clicks are independent Bernoulli draws,
    /// which is the item-level model the estimators assume.
    struct World {
        rates: Vec<f64>,
        logging: Vec<f64>,
    }

    impl World {
        const ITEMS: usize = 20;

        fn new() -> World {
            let rates =
                (0..Self::ITEMS).map(|j| 0.05 + 0.4 * ((j * 7) % Self::ITEMS) as f64 / Self::ITEMS as f64).collect();
            let logging = (0..Self::ITEMS).map(|j| if j < 3 { 1.0 } else { 2.0 / 17.0 }).collect();
            World { rates, logging }
        }

        /// Items by decreasing true rate.
        fn best(&self) -> Vec<usize> {
            let mut order: Vec<usize> = (0..Self::ITEMS).collect();
            order.sort_by(|&a, &b| self.rates[b].total_cmp(&self.rates[a]));
            order
        }

        /// Target A: the true top 5, deterministically.
        fn oracle(&self) -> Vec<f64> {
            let mut target = vec![0.0; Self::ITEMS];
            for &j in &self.best()[..5] {
                target[j] = 1.0;
            }
            target
        }

        /// Target B: the true top 3 plus 2 of the next 8, uniformly.
        fn exploring_oracle(&self) -> Vec<f64> {
            let mut target = vec![0.0; Self::ITEMS];
            for (rank, &j) in self.best().iter().enumerate().take(11) {
                target[j] = if rank < 3 { 1.0 } else { 2.0 / 8.0 };
            }
            target
        }

        /// The target's true expected clicks per request.
        fn truth(&self, target: &[f64]) -> f64 {
            self.rates.iter().zip(target).map(|(p, t)| p * t).sum()
        }

        fn log(&self, target: &[f64], requests: usize, rng: &mut Rng) -> Vec<Vec<LoggedItem>> {
            (0..requests)
                .map(|_| {
                    let mut shown: Vec<usize> = (0..3).collect();
                    shown.extend(rng.choose(17, 2).into_iter().map(|j| j + 3));
                    shown
                        .into_iter()
                        .map(|j| {
                            let click = if rng.uniform() < self.rates[j] { 1.0 } else { 0.0 };
                            item(click, self.logging[j], target[j])
                        })
                        .collect()
                })
                .collect()
        }
    }

    #[test]
    fn unit_weights_give_the_mean_reward_sum() {
        let mut rng = Rng(5);
        let requests: Vec<Vec<LoggedItem>> =
            (0..50).map(|r| (0..(r % 7)).map(|_| item((rng.uniform() * 10.0).floor(), 1.0, 1.0)).collect()).collect();
        let mean = requests.iter().map(|items| items.iter().map(|i| i.reward).sum::<f64>()).sum::<f64>() / 50.0;
        let a = ips(&requests, None).unwrap();
        let b = snips(&requests, None).unwrap();
        assert_eq!(a.value, mean);
        assert_eq!(b.value, mean);
        assert!((a.std_error - b.std_error).abs() <= 1e-12 * a.std_error);
        let items = requests.iter().map(Vec::len).sum::<usize>();
        assert_eq!((a.requests, a.items, a.clipped), (50, items, 0));
        assert_eq!(a.effective_sample_size, items as f64);
    }

    #[test]
    fn standard_error_by_hand() {
        // Per-request sums 1, 2, 6: mean 3, sample variance 7, standard error sqrt(7/3).
        let requests =
            vec![vec![item(1.0, 1.0, 1.0)], vec![item(2.0, 1.0, 1.0)], vec![item(2.0, 0.5, 1.0), item(2.0, 1.0, 1.0)]];
        let e = ips(&requests, None).unwrap();
        assert_eq!(e.value, 3.0);
        assert!((e.std_error - (7.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // Weights 1, 1, 2, 1: Kish's (5)² / 7.
        assert!((e.effective_sample_size - 25.0 / 7.0).abs() < 1e-12);
        assert!(ips(&requests[..1], None).unwrap().std_error.is_nan());
    }

    /// 20 000 logged requests; each estimate must fall within 3 of its own standard errors of
    /// the analytic value (a 0.3% event per check if the estimator and its error are right).
    #[test]
    fn estimates_recover_a_different_policy() {
        let world = World::new();
        for (name, target) in [("oracle", world.oracle()), ("exploring oracle", world.exploring_oracle())] {
            let truth = world.truth(&target);
            let logged = world.log(&target, 20_000, &mut Rng(11));
            let logger_value = logged.iter().flatten().map(|i| i.reward).sum::<f64>() / 20_000.0;
            assert!(truth > logger_value + 0.2, "{name}: the target must differ from the logger to test anything");
            for (estimator, e) in [("ips", ips(&logged, None).unwrap()), ("snips", snips(&logged, None).unwrap())] {
                assert!(
                    (e.value - truth).abs() <= 3.0 * e.std_error,
                    "{name} {estimator}: {} ± {} vs truth {truth}",
                    e.value,
                    e.std_error
                );
                assert!(e.std_error < 0.05, "{name} {estimator}: standard error {}", e.std_error);
                assert!(e.effective_sample_size < e.items as f64);
            }
        }
    }

    /// The standard errors are honest: over 400 independent logs of 500 requests, the 95%
    /// interval covers the truth 95% of the time. The binomial sd of that share is 0.011, so
    /// 0.91..=0.99 allows 3.6 sd below and catches an error understated by a quarter.
    #[test]
    fn intervals_cover_the_truth() {
        let world = World::new();
        let target = world.exploring_oracle();
        let truth = world.truth(&target);
        let mut rng = Rng(23);
        let (mut ips_covered, mut snips_covered) = (0, 0);
        let reps = 400;
        for _ in 0..reps {
            let logged = world.log(&target, 500, &mut rng);
            let covers = |e: Estimate| usize::from((e.value - truth).abs() <= 1.96 * e.std_error);
            ips_covered += covers(ips(&logged, None).unwrap());
            snips_covered += covers(snips(&logged, None).unwrap());
        }
        for (name, covered) in [("ips", ips_covered), ("snips", snips_covered)] {
            let share = covered as f64 / reps as f64;
            assert!((0.91..=0.99).contains(&share), "{name}: 95% intervals cover {share}");
        }
    }

    #[test]
    fn clipping_caps_weights_and_counts_them() {
        // Weights 5, 2, 1 and, in the second request, 10 and exactly 3 (not clipped).
        let requests = vec![
            vec![item(1.0, 0.1, 0.5), item(1.0, 0.5, 1.0), item(1.0, 1.0, 1.0)],
            vec![item(2.0, 0.1, 1.0), item(1.0, 0.25, 0.75)],
        ];
        let e = ips(&requests, Some(3.0)).unwrap();
        assert_eq!(e.clipped, 2);
        assert_eq!(e.value, ((3.0 + 2.0 + 1.0) + (2.0 * 3.0 + 3.0)) / 2.0);
        let unclipped = ips(&requests, None).unwrap();
        assert_eq!(unclipped.clipped, 0);
        assert_eq!(unclipped.value, ((5.0 + 2.0 + 1.0) + (2.0 * 10.0 + 3.0)) / 2.0);
        // SNIPS: IPS times 5 items over the clipped weight total 12.
        let s = snips(&requests, Some(3.0)).unwrap();
        assert_eq!(s.clipped, 2);
        assert!((s.value - e.value * 5.0 / 12.0).abs() < 1e-12);
        for clip in [0.0, -1.0, f64::NAN] {
            let message = ips(&requests, Some(clip)).unwrap_err().to_string();
            assert!(message.contains("clip"), "{message}");
        }
    }

    #[test]
    fn invalid_logs_name_the_request_and_item() {
        let good = item(1.0, 0.5, 0.5);
        let at = |bad: LoggedItem| vec![vec![good, good], vec![good], vec![good, bad, good]];
        for (bad, field) in [
            (item(1.0, 0.0, 0.5), "logging_propensity 0 "),
            (item(1.0, -0.2, 0.5), "logging_propensity -0.2 "),
            (item(1.0, f64::NAN, 0.5), "logging_propensity NaN "),
            (item(1.0, 1.5, 0.5), "logging_propensity 1.5 "),
            (item(1.0, 0.5, -0.1), "target_propensity -0.1 "),
            (item(1.0, 0.5, f64::NAN), "target_propensity NaN "),
            (item(f64::INFINITY, 0.5, 0.5), "reward inf "),
        ] {
            for estimator in [ips, snips] {
                let err = estimator(&at(bad), None).unwrap_err();
                assert_eq!(err.kind(), crate::ErrorKind::Internal);
                let message = err.to_string();
                assert!(message.contains("request 2, item 1: ") && message.contains(field), "{message}");
            }
        }
        assert!(ips(&[], None).is_err());
        // A target that shows none of the logged items: IPS says 0, SNIPS has nothing to normalise.
        let never = vec![vec![item(1.0, 0.5, 0.0)], vec![]];
        assert_eq!(ips(&never, None).unwrap().value, 0.0);
        assert_eq!(ips(&never, None).unwrap().effective_sample_size, 0.0);
        assert!(snips(&never, None).unwrap_err().to_string().contains("0/0"));
    }

    #[test]
    fn explored_slots_round_and_cap() {
        assert_eq!(explored_slots(0.0, 10), 0);
        assert_eq!(explored_slots(0.1, 10), 1);
        assert_eq!(explored_slots(0.05, 10), 1, "halves round away from zero");
        assert_eq!(explored_slots(0.04, 10), 0, "a share too small for k explores nothing");
        assert_eq!(explored_slots(1.0, 10), 10);
        assert_eq!(explored_slots(0.3, 0), 0);
        assert_eq!(explored_slots(f64::NAN, 10), 0);
        assert_eq!(explored_slots(-0.5, 10), 0);
    }

    #[test]
    fn epsilon_greedy_inclusion_cases() {
        // k = 10, m = 3: greedy 0..7, tail 7..15 (8 items).
        assert_eq!(epsilon_greedy_inclusion(6, 30, 10, 3, 8), 1.0);
        assert_eq!(epsilon_greedy_inclusion(7, 30, 10, 3, 8), 3.0 / 8.0);
        assert_eq!(epsilon_greedy_inclusion(14, 30, 10, 3, 8), 3.0 / 8.0);
        assert_eq!(epsilon_greedy_inclusion(15, 30, 10, 3, 8), 0.0);
        // The list ends inside the tail: 7..12.
        assert_eq!(epsilon_greedy_inclusion(11, 12, 10, 3, 8), 3.0 / 5.0);
        assert_eq!(epsilon_greedy_inclusion(12, 12, 10, 3, 8), 0.0);
        // Shorter than k: everything is shown.
        assert_eq!(epsilon_greedy_inclusion(8, 9, 10, 3, 8), 1.0);
        assert_eq!(epsilon_greedy_inclusion(9, 9, 10, 3, 8), 0.0);
        // A tail of 2 caps 5 slots at 2: the top 8 stay greedy.
        assert_eq!(epsilon_greedy_inclusion(8, 30, 10, 5, 2), 1.0);
        assert_eq!(epsilon_greedy_inclusion(10, 30, 10, 5, 2), 0.0);
        // The probabilities add up to the slate size.
        let total: f64 = (0..30).map(|r| epsilon_greedy_inclusion(r, 30, 10, 3, 8)).sum();
        assert!((total - 10.0).abs() < 1e-12);
        assert_eq!(ExplorationPlan::new(12, 10, 3, 8), ExplorationPlan { greedy: 7, explored: 3, tail_end: 12 });
        assert_eq!(ExplorationPlan::new(9, 10, 3, 8).tail_len(), 0);
    }

    fn logs() -> impl Strategy<Value = Vec<Vec<(f64, f64, f64)>>> {
        let item = (-5.0f64..5.0, 0.01f64..=1.0, 0.0f64..=1.0);
        proptest::collection::vec(proptest::collection::vec(item, 0..6), 1..30)
    }

    proptest! {
        #[test]
        fn equal_propensities_make_snips_equal_ips(log in logs()) {
            let requests: Vec<Vec<LoggedItem>> =
                log.iter().map(|r| r.iter().map(|&(reward, p, _)| item(reward, p, p)).collect()).collect();
            prop_assume!(requests.iter().any(|r| !r.is_empty()));
            let (a, b) = (ips(&requests, None).unwrap(), snips(&requests, None).unwrap());
            prop_assert_eq!(a.value, b.value);
            prop_assert!((a.std_error - b.std_error).abs() <= 1e-9 * (1.0 + a.std_error) || requests.len() < 2);
        }

        #[test]
        fn snips_ignores_the_scale_of_the_weights(log in logs(), scale in 0.05f64..=1.0) {
            let requests = |s: f64| -> Vec<Vec<LoggedItem>> {
                log.iter().map(|r| r.iter().map(|&(reward, p, t)| item(reward, p, t * s)).collect()).collect()
            };
            let (full, scaled) = (requests(1.0), requests(scale));
            prop_assume!(full.iter().flatten().any(|i| i.target_propensity > 0.0));
            let (a, b) = (snips(&full, None).unwrap(), snips(&scaled, None).unwrap());
            prop_assert!((a.value - b.value).abs() <= 1e-9 * (1.0 + a.value.abs()));
            prop_assert!((a.effective_sample_size - b.effective_sample_size).abs() <= 1e-9 * a.effective_sample_size);
            let (c, d) = (ips(&full, None).unwrap(), ips(&scaled, None).unwrap());
            prop_assert!((c.value * scale - d.value).abs() <= 1e-9 * (1.0 + c.value.abs()));
        }
    }
}
