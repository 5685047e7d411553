//! Exploration: after the heavy ranker has ordered the candidates, a share of the slate goes to
//! items from just below the greedy cut, and every shown item carries its inclusion propensity.
//!
//! A recommender trained only on what it chose to show learns nothing about the rest, so its
//! errors about the tail never get corrected. Exploring a bounded share of slots buys that
//! evidence at a known cost, and the propensities make the resulting logs usable for item-level
//! off-policy evaluation (`cascade_eval::offpolicy`), which weights a shown item by the ratio of
//! its target to its logging inclusion probability.
//!
//! The explored tail starts at rank `k - m` (the `m` greedy positions the explored items
//! displace) because the items around the cut are the ones the ranker is least sure it ordered
//! right; spending exploration deeper down mostly confirms that bad items are bad.
//!
//! ```
//! use cascade_serving::explore::{ExplorationConfig, Method, explore};
//! use rand::SeedableRng;
//!
//! let config = ExplorationConfig { share: 0.2, method: Method::EpsilonGreedy, tail: 5, ..Default::default() };
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let picks = explore(&config, 30, 10, &|_| (0.0, 0.0), &mut rng);
//! // Ten slots: the top 8 in rank order around 2 items explored from ranks 8..13 (each with
//! // inclusion probability 2/5), then the other 20 ranked items as backups.
//! assert_eq!(picks.len(), 30);
//! let explored: Vec<_> = picks[..10].iter().filter(|p| p.explored).collect();
//! assert_eq!(explored.len(), 2);
//! assert!(explored.iter().all(|p| (8..13).contains(&p.index) && p.propensity == 0.4));
//! ```

// The split of the ranked list, its exact inclusion probabilities and the slot count are
// off-policy evaluation's, so what serving logs and what a target policy is scored with agree.
pub use cascade_eval::offpolicy::epsilon_greedy_inclusion;
use cascade_eval::offpolicy::{ExplorationPlan as Plan, explored_slots};
use rand::Rng;
use rand::seq::index;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// How the explored tail items are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Sample every tail item's engagement rate from its Beta posterior and explore the highest
    /// samples: items with little evidence get tried, items with evidence of being poor stop
    /// costing slots. Propensities are Monte Carlo estimates.
    Thompson,
    /// Uniformly without replacement from the tail. Ignores engagement, so its propensities are
    /// exact; the name is kept because that is what the scheme is known as, although nothing
    /// here flips an epsilon-weighted coin.
    EpsilonGreedy,
}

/// How much of the slate is explored, and how; a config section (unknown keys are errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExplorationConfig {
    /// Share of the k slots given to exploration (default 0.1). The slot count is
    /// `round(share * k)` (halves away from zero), so it is deterministic per k rather than a
    /// coin flip per request: a fixed cost is easier to reason about, and the propensities do not
    /// need to average over the slot count. A share too small for a given k explores nothing at
    /// that k; `share = 0` never explores; at most k slots.
    pub share: f64,
    /// Default Thompson: it stops spending slots on items already shown to be poor.
    pub method: Method,
    /// Ranked positions explored: `[k - m, k - m + tail)` (default 50), cut at the end of the
    /// list. A tail shorter than the slot count caps the explored slots at `tail`.
    pub tail: usize,
    /// Beta prior of an item's engagement rate (default 1, 1: uniform). Uniform assumes nothing
    /// about which event counts as an outcome (click rates and purchase rates differ a
    /// hundredfold), and its optimism about unseen items is what sends exploration to them
    /// first; an item leaves that state after a few dozen impressions. A deployment that knows
    /// its base rate p can set alpha = 1, beta = (1 - p) / p to be optimistic for less long.
    pub prior_alpha: f64,
    pub prior_beta: f64,
    /// Thompson: extra independent posterior samplings used to estimate the explored items'
    /// propensities (default 64). The standard error of a propensity p is about
    /// sqrt(p(1-p)/65) at the default, and the cost is `tail × (draws + 1)` Beta samples per
    /// request.
    pub propensity_draws: usize,
}

impl Default for ExplorationConfig {
    fn default() -> Self {
        ExplorationConfig {
            share: 0.1,
            method: Method::Thompson,
            tail: 50,
            prior_alpha: 1.0,
            prior_beta: 1.0,
            propensity_draws: 64,
        }
    }
}

/// A configuration value that cannot be used, named by its key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("exploration.{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl ExplorationConfig {
    /// Checks what serde cannot: ranges and combinations. [`explore`] relies on it for the
    /// priors (a Beta distribution needs positive, finite parameters).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason: String| Err(ConfigError { field, reason });
        if !(0.0..=1.0).contains(&self.share) {
            return fail("share", format!("{} is not within 0..=1", self.share));
        }
        if self.share > 0.0 && self.tail == 0 {
            return fail("tail", format!("0 leaves nothing to explore while share is {}", self.share));
        }
        for (field, value) in [("prior_alpha", self.prior_alpha), ("prior_beta", self.prior_beta)] {
            if !(value > 0.0 && value.is_finite()) {
                return fail(field, format!("{value} is not a positive finite number"));
            }
        }
        if self.method == Method::Thompson && self.propensity_draws == 0 {
            return fail("propensity_draws", "0 leaves Thompson propensities unestimated".into());
        }
        Ok(())
    }

    /// Explored slots out of `k` before any per-request cap (see [`ExplorationConfig::share`]).
    pub fn slots(&self, k: usize) -> usize {
        explored_slots(self.share, k)
    }
}

/// One position of the preference order [`explore`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Into the ranked list (0 = the ranker's best).
    pub index: usize,
    /// Probability that this item is in the slate given the ranked list; see [`explore`] for
    /// backups.
    pub propensity: f64,
    pub explored: bool,
}

/// Builds one request's preference order from the ranked list (`n_ranked` candidates, index 0
/// the best).
///
/// The first `min(k, n_ranked)` picks are the slate: the greedy top `k - m` in rank order, with
/// the `m` explored items at uniformly random positions among the k, so that an explored item's
/// feedback is not confounded with always sitting at the bottom of the slate (position bias).
/// Then every remaining ranked index, in rank order, as backups for business rules that skip
/// slate items.
///
/// Propensities:
/// - greedy items: exactly 1.
/// - epsilon-greedy explored items: exactly `m / |tail|` ([`epsilon_greedy_inclusion`]).
/// - Thompson explored items: `(c + 1) / (propensity_draws + 1)`, where c counts the extra
///   independent samplings in which the item is among the top m and the 1 is the sampling that
///   actually picked it. Counting the actual draw keeps the propensity positive (an IPS weight
///   is never infinite) and costs almost no bias where it matters: with D extra draws and true
///   probability p, `E[1{picked} / propensity] = 1 - (1 - p)^(D + 1)`, so the IPS weight is
///   unbiased up to that factor, which is within 1% of 1 once p >= 4.6 / (D + 1) (7% at D = 64).
/// - backups: 1.0, and `explored: false`. A backup is shown only when business rules skip slate
///   items, and which items those rules skip is not randomised by this policy; its true
///   probability of being shown depends on the rules and is not known here. 1.0 treats a
///   rule-filled slot like a greedy one, which keeps IPS weights bounded; the bias is confined to
///   requests where rules skipped something. A caller that needs exact propensities for such
///   slots must re-simulate exploration and rules together.
///
/// `engagement(index)` returns an item's `(impressions, outcomes)`; Thompson's posterior is
/// `Beta(prior_alpha + outcomes, prior_beta + max(impressions - outcomes, 0))`, with negative or
/// non-finite counts read as none, since a corrupt counter must not take the request down.
/// Epsilon-greedy never calls it.
///
/// Nothing is explored, and no randomness consumed, when `m = 0` or `n_ranked <= k`.
///
/// # Panics
/// On a Thompson config whose priors [`ExplorationConfig::validate`] would reject.
pub fn explore<R: Rng + ?Sized>(
    config: &ExplorationConfig,
    n_ranked: usize,
    k: usize,
    engagement: &dyn Fn(usize) -> (f64, f64),
    rng: &mut R,
) -> Vec<Pick> {
    let plan = Plan::new(n_ranked, k, config.slots(k), config.tail);
    let m = plan.explored;
    let tail_len = plan.tail_len();
    // (offset in the tail, propensity)
    let explored: Vec<(usize, f64)> = match (m, config.method) {
        (0, _) => Vec::new(),
        (_, Method::EpsilonGreedy) => {
            let propensity = m as f64 / tail_len as f64;
            index::sample(rng, tail_len, m).into_iter().map(|offset| (offset, propensity)).collect()
        }
        (_, Method::Thompson) => thompson(config, plan, engagement, rng),
    };

    let slate_len = plan.greedy + m;
    let mut slate: Vec<Option<Pick>> = vec![None; slate_len];
    let mut taken = vec![false; tail_len];
    if m > 0 {
        // `index::sample` returns positions fully shuffled, so each explored item lands at a
        // uniformly random position whatever order `explored` is in.
        for (&(offset, propensity), position) in explored.iter().zip(index::sample(rng, slate_len, m)) {
            slate[position] = Some(Pick { index: plan.greedy + offset, propensity, explored: true });
            taken[offset] = true;
        }
    }
    let mut greedy = 0..plan.greedy;
    let mut picks = Vec::with_capacity(n_ranked);
    for pick in slate {
        picks.push(pick.unwrap_or_else(|| Pick {
            index: greedy.next().expect("the slate has exactly `greedy` free positions"),
            propensity: 1.0,
            explored: false,
        }));
    }
    let backups = (plan.greedy..n_ranked).filter(|&i| !(i < plan.tail_end && taken[i - plan.greedy]));
    picks.extend(backups.map(|index| Pick { index, propensity: 1.0, explored: false }));
    picks
}

/// Thompson's choice of `plan.explored` tail items and their Monte Carlo propensities.
fn thompson<R: Rng + ?Sized>(
    config: &ExplorationConfig,
    plan: Plan,
    engagement: &dyn Fn(usize) -> (f64, f64),
    rng: &mut R,
) -> Vec<(usize, f64)> {
    let count = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
    let posteriors: Vec<Beta<f64>> = (plan.greedy..plan.tail_end)
        .map(|index| {
            let (impressions, outcomes) = engagement(index);
            let outcomes = count(outcomes);
            let failures = count(count(impressions) - outcomes);
            Beta::new(config.prior_alpha + outcomes, config.prior_beta + failures)
                .expect("ExplorationConfig::validate keeps the priors positive and finite")
        })
        .collect();
    let m = plan.explored;
    let mut draw = vec![(0.0, 0); posteriors.len()];
    sample_top(&posteriors, m, &mut draw, rng);
    let picked: Vec<usize> = draw[..m].iter().map(|&(_, offset)| offset).collect();
    let mut hits = vec![0usize; posteriors.len()];
    for &offset in &picked {
        hits[offset] += 1;
    }
    for _ in 0..config.propensity_draws {
        sample_top(&posteriors, m, &mut draw, rng);
        for &(_, offset) in &draw[..m] {
            hits[offset] += 1;
        }
    }
    let draws = (config.propensity_draws + 1) as f64;
    picked.into_iter().map(|offset| (offset, hits[offset] as f64 / draws)).collect()
}

/// One posterior sampling: leaves the `m` highest sampled rates (ties to the better-ranked item)
/// in `draw[..m]`, in no particular order.
fn sample_top<R: Rng + ?Sized>(posteriors: &[Beta<f64>], m: usize, draw: &mut [(f64, usize)], rng: &mut R) {
    for (offset, (slot, posterior)) in draw.iter_mut().zip(posteriors).enumerate() {
        *slot = (posterior.sample(rng), offset);
    }
    let by_rate = |a: &(f64, usize), b: &(f64, usize)| -> Ordering { b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)) };
    draw.select_nth_unstable_by(m - 1, by_rate);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn config(share: f64, method: Method, tail: usize) -> ExplorationConfig {
        ExplorationConfig { share, method, tail, ..ExplorationConfig::default() }
    }

    fn no_engagement(_: usize) -> (f64, f64) {
        (0.0, 0.0)
    }

    /// Per ranked index: how often it was in the slate, and the sum of its reported propensities
    /// and of `1 / propensity` over the runs that showed it.
    fn tally(
        config: &ExplorationConfig,
        n: usize,
        k: usize,
        engagement: &dyn Fn(usize) -> (f64, f64),
        runs: usize,
    ) -> Vec<(usize, f64, Vec<f64>)> {
        let mut rng = StdRng::seed_from_u64(20240607);
        let mut out = vec![(0usize, 0.0, Vec::new()); n];
        for _ in 0..runs {
            let picks = explore(config, n, k, engagement, &mut rng);
            let mut inverse = vec![0.0; n];
            for p in &picks[..k.min(n)] {
                out[p.index].0 += 1;
                out[p.index].1 += p.propensity;
                inverse[p.index] = 1.0 / p.propensity;
            }
            for (o, x) in out.iter_mut().zip(inverse) {
                o.2.push(x);
            }
        }
        out
    }

    fn mean_sd(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt())
    }

    #[test]
    fn slots_round_and_cap() {
        let c = |share| config(share, Method::Thompson, 50);
        assert_eq!(c(0.0).slots(10), 0);
        assert_eq!(c(0.1).slots(10), 1);
        assert_eq!(c(0.05).slots(10), 1, "halves round away from zero");
        assert_eq!(c(0.04).slots(10), 0, "a share too small for k explores nothing");
        assert_eq!(c(1.0).slots(10), 10);
        assert_eq!(c(0.3).slots(0), 0);
    }

    #[test]
    fn share_zero_is_pure_greedy_and_consumes_no_randomness() {
        for method in [Method::Thompson, Method::EpsilonGreedy] {
            let mut rng = StdRng::seed_from_u64(1);
            let picks = explore(&config(0.0, method, 50), 25, 10, &no_engagement, &mut rng);
            let expected: Vec<Pick> = (0..25).map(|index| Pick { index, propensity: 1.0, explored: false }).collect();
            assert_eq!(picks, expected);
            assert_eq!(rng, StdRng::seed_from_u64(1));
        }
    }

    #[test]
    fn short_list_or_short_tail_fills_greedily() {
        for n in [0, 3, 9, 10] {
            let picks =
                explore(&config(0.5, Method::EpsilonGreedy, 50), n, 10, &no_engagement, &mut StdRng::seed_from_u64(2));
            assert!(picks.iter().enumerate().all(|(i, p)| p.index == i && p.propensity == 1.0 && !p.explored));
            assert_eq!(picks.len(), n);
        }
        // A tail of 2 caps 5 slots at 2: the top 8 stay greedy.
        let picks =
            explore(&config(0.5, Method::EpsilonGreedy, 2), 30, 10, &no_engagement, &mut StdRng::seed_from_u64(2));
        let explored: Vec<&Pick> = picks[..10].iter().filter(|p| p.explored).collect();
        assert_eq!(explored.len(), 2);
        assert!(explored.iter().all(|p| (8..10).contains(&p.index) && p.propensity == 1.0));
        assert_eq!(epsilon_greedy_inclusion(8, 30, 10, 5, 2), 1.0);
        assert_eq!(epsilon_greedy_inclusion(10, 30, 10, 5, 2), 0.0);
    }

    /// 20 000 seeded runs. Each frequency is a binomial proportion with standard error
    /// sqrt(p(1-p)/runs) (0.0034 at p = 3/8); 5 standard errors make a false failure about a
    /// one-in-a-million event per item, so the test checks the scheme, not the seed.
    #[test]
    fn epsilon_greedy_frequency_matches_exact_inclusion() {
        let runs = 20_000;
        for n in [30, 12] {
            let config = config(0.3, Method::EpsilonGreedy, 8);
            let counts = tally(&config, n, 10, &no_engagement, runs);
            for (rank, (shown, _, _)) in counts.iter().enumerate() {
                let p = epsilon_greedy_inclusion(rank, n, 10, config.slots(10), config.tail);
                let freq = *shown as f64 / runs as f64;
                let se = (p * (1.0 - p) / runs as f64).sqrt();
                assert!((freq - p).abs() <= 5.0 * se, "n {n} rank {rank}: frequency {freq} vs {p}");
            }
        }
    }

    #[test]
    fn explored_items_take_every_slate_position() {
        let config = config(0.3, Method::EpsilonGreedy, 8);
        let mut rng = StdRng::seed_from_u64(3);
        let mut at = [0usize; 10];
        for _ in 0..5_000 {
            let picks = explore(&config, 30, 10, &no_engagement, &mut rng);
            for (position, p) in picks[..10].iter().enumerate() {
                at[position] += usize::from(p.explored);
            }
        }
        // Each position holds an explored item with probability 3/10 (sd of the count ~32).
        assert!(at.iter().all(|&c| (1_300..1_700).contains(&c)), "{at:?}");
    }

    #[test]
    fn thompson_prefers_strong_posteriors() {
        // k = 10, m = 1: tail = ranks 9..19.
        let engagement = |i: usize| match i {
            12 => (1000.0, 300.0),
            15 => (1000.0, 5.0),
            _ => (1000.0, 50.0),
        };
        let config = ExplorationConfig { propensity_draws: 16, ..config(0.1, Method::Thompson, 10) };
        let runs = 2_000;
        let counts = tally(&config, 40, 10, &engagement, runs);
        let freq = |i: usize| counts[i].0 as f64 / runs as f64;
        assert!(freq(12) > 0.95, "strong item explored {}", freq(12));
        assert!(freq(15) < 0.01, "poor item explored {}", freq(15));
        assert!((19..40).all(|i| counts[i].0 == 0));
    }

    /// The Monte Carlo propensity against the frequency observed over many requests. Given the
    /// item is picked, the reported propensity is (1 + B) / (D + 1) with B ~ Binomial(D, p), so
    /// its mean is (1 + D p) / (D + 1); and `1{picked} / propensity` has mean
    /// 1 - (1 - p)^(D + 1), the near-unbiasedness of IPS claimed in `explore`'s docs. Both are
    /// checked within 5 standard errors estimated from the runs themselves.
    #[test]
    fn thompson_propensity_matches_frequency() {
        // k = 10, m = 2: greedy 0..8, tail = ranks 8..13 with graded evidence.
        let evidence = [(20.0, 4.0), (20.0, 3.0), (10.0, 1.0), (5.0, 1.0), (0.0, 0.0)];
        let engagement = |i: usize| if (8..13).contains(&i) { evidence[i - 8] } else { (0.0, 0.0) };
        let config = config(0.2, Method::Thompson, 5);
        let d = config.propensity_draws as f64;
        let runs = 4_000;
        let counts = tally(&config, 30, 10, &engagement, runs);
        for (rank, (shown, propensity_sum, inverse)) in counts.iter().enumerate().take(13).skip(8) {
            let f = *shown as f64 / runs as f64;
            assert!(f > 0.05, "rank {rank} is explored at {f}: too rare to test");
            let mean_propensity = propensity_sum / *shown as f64;
            let expected = (1.0 + d * f) / (d + 1.0);
            let se = (f * (1.0 - f) / runs as f64 * (d / (d + 1.0)).powi(2)
                + d * f * (1.0 - f) / (d + 1.0).powi(2) / *shown as f64)
                .sqrt();
            assert!((mean_propensity - expected).abs() <= 5.0 * se, "rank {rank}: {mean_propensity} vs {expected}");
            let (mean_inverse, sd) = mean_sd(inverse);
            let expected = 1.0 - (1.0 - f).powf(d + 1.0);
            assert!(
                (mean_inverse - expected).abs() <= 5.0 * sd / (runs as f64).sqrt(),
                "rank {rank}: E[1/propensity] {mean_inverse} vs {expected}"
            );
        }
    }

    #[test]
    fn fixed_seed_is_deterministic() {
        let engagement = |i: usize| (i as f64, (i % 4) as f64);
        for method in [Method::Thompson, Method::EpsilonGreedy] {
            let config = config(0.3, method, 20);
            let run = || explore(&config, 60, 20, &engagement, &mut StdRng::seed_from_u64(99));
            assert_eq!(run(), run());
        }
    }

    #[test]
    fn config_round_trips_and_defaults() {
        let config = ExplorationConfig {
            share: 0.25,
            method: Method::EpsilonGreedy,
            tail: 30,
            prior_alpha: 0.5,
            prior_beta: 19.0,
            propensity_draws: 128,
        };
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("method = \"epsilon_greedy\""), "{text}");
        assert_eq!(toml::from_str::<ExplorationConfig>(&text).unwrap(), config);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<ExplorationConfig>(&json).unwrap(), config);

        let partial: ExplorationConfig = toml::from_str("share = 0.2\nmethod = \"thompson\"").unwrap();
        assert_eq!(partial, ExplorationConfig { share: 0.2, ..ExplorationConfig::default() });
        assert!(toml::from_str::<ExplorationConfig>("shares = 0.2").is_err());
        assert!(toml::from_str::<ExplorationConfig>("method = \"ucb\"").is_err());
        ExplorationConfig::default().validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let field = |c: ExplorationConfig| c.validate().unwrap_err().field;
        let base = ExplorationConfig::default;
        assert_eq!(field(ExplorationConfig { share: 1.5, ..base() }), "share");
        assert_eq!(field(ExplorationConfig { share: -0.1, ..base() }), "share");
        assert_eq!(field(ExplorationConfig { share: f64::NAN, ..base() }), "share");
        assert_eq!(field(ExplorationConfig { tail: 0, ..base() }), "tail");
        assert_eq!(field(ExplorationConfig { prior_alpha: 0.0, ..base() }), "prior_alpha");
        assert_eq!(field(ExplorationConfig { prior_beta: f64::INFINITY, ..base() }), "prior_beta");
        assert_eq!(field(ExplorationConfig { propensity_draws: 0, ..base() }), "propensity_draws");
        // Combinations that are fine: no exploration needs no tail; epsilon-greedy needs no draws.
        ExplorationConfig { share: 0.0, tail: 0, ..base() }.validate().unwrap();
        ExplorationConfig { method: Method::EpsilonGreedy, propensity_draws: 0, ..base() }.validate().unwrap();
        let message = ExplorationConfig { share: 2.0, ..base() }.validate().unwrap_err().to_string();
        assert_eq!(message, "exploration.share: 2 is not within 0..=1");
    }

    proptest! {
        #[test]
        fn preference_order_invariants(
            n in 0usize..60,
            k in 0usize..20,
            share in 0.0f64..=1.0,
            tail in 0usize..30,
            thompson in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let method = if thompson { Method::Thompson } else { Method::EpsilonGreedy };
            let config = ExplorationConfig { share, method, tail, propensity_draws: 8, ..ExplorationConfig::default() };
            let engagement = |i: usize| ((i * 7 % 13) as f64, (i % 3) as f64);
            let picks = explore(&config, n, k, &engagement, &mut StdRng::seed_from_u64(seed));

            // A permutation of the ranked list.
            prop_assert_eq!(picks.len(), n);
            let mut seen = vec![false; n];
            for p in &picks {
                prop_assert!(!seen[p.index], "duplicate {}", p.index);
                seen[p.index] = true;
            }

            let shown = k.min(n);
            let m = if n > k { config.slots(k).min(tail) } else { 0 };
            let (slate, backups) = picks.split_at(shown);
            let greedy: Vec<usize> = slate.iter().filter(|p| !p.explored).map(|p| p.index).collect();
            prop_assert_eq!(greedy, (0..shown - m).collect::<Vec<_>>());
            prop_assert!(slate.iter().filter(|p| !p.explored).all(|p| p.propensity == 1.0));
            let tail_range = (k - m.min(k))..n.min(k - m.min(k) + tail);
            for p in slate.iter().filter(|p| p.explored) {
                prop_assert!(tail_range.contains(&p.index), "explored {} outside {:?}", p.index, tail_range);
                prop_assert!(p.propensity > 0.0 && p.propensity <= 1.0);
                if !thompson {
                    prop_assert_eq!(p.propensity, epsilon_greedy_inclusion(p.index, n, k, config.slots(k), tail));
                }
            }
            prop_assert_eq!(slate.iter().filter(|p| p.explored).count(), m);
            prop_assert!(backups.windows(2).all(|w| w[0].index < w[1].index));
            prop_assert!(backups.iter().all(|p| !p.explored && p.propensity == 1.0));
        }
    }
}
