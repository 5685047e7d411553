//! Rollouts: how a pipeline moves from the `champion` bundle to the `challenger`, watched by
//! guardrails that move it back on their own.
//!
//! `[pipelines.<name>.rollout]` declares a strategy:
//! - `canary`: a hashed, stable share of units (GrowthBook's hash of the rollout seed and the
//!   user id, so the units of a small step stay in every larger one) is served by the
//!   challenger, ramping through `steps` (per cent). A step ends when it has lasted `min_dwell`
//!   and the challenger served `min_requests` in it; after the last step (100) the challenger
//!   becomes champion.
//! - `champion_challenger`: the challenger serves `share` per cent continuously; nothing is
//!   promoted automatically.
//! - `blue_green`: the whole pipeline switches to the challenger (its bundle, and the pipeline
//!   `challenger_pipeline` names, if any) at once; after `min_dwell` and `min_requests` the
//!   challenger becomes champion; a rollback switches everything back at once.
//! - `shadow`: the champion answers every request; a sampled copy is scored by the challenger off
//!   the request path and the two lists compared (see `Shadow`).
//!
//! Every `window` the challenger's requests of that window are checked against the
//! guardrails: p99 latency, error rate, fallback rate, and on the outcomes joined to its
//! impressions (`recommender::outcomes`: counted by arrival, labels for calibration once
//! final) its CTR relative to the champion's in the same window (`ctr_ratio`) and the
//! expected calibration error of its served probabilities (`ece`). A guardrail past its bound
//! (`max`, or `min`) in `windows` consecutive windows that each had `min_requests` retires the
//! challenger (its alias is deleted, with the reason), counts
//! `cascade_rollbacks_total{pipeline,guardrail}` and writes the audit record. The state of each
//! pipeline's rollout (with each arm's outcome totals, which [`compare`] tests) is kept in
//! `DATA_DIR/rollouts.json`, so a restart resumes at the step it was at.

use cascade_api::{ArmComparison, ArmOutcomes, RolloutPhase, RolloutState, WindowRecord, WindowSummary};
use cascade_eval::metrics::CalibrationBins;
use cascade_eval::stats::two_proportions;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `[pipelines.<name>.rollout] strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The champion serves everything; a challenger waits for a person.
    #[default]
    None,
    Shadow,
    Canary,
    ChampionChallenger,
    BlueGreen,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Shadow => "shadow",
            Strategy::Canary => "canary",
            Strategy::ChampionChallenger => "champion_challenger",
            Strategy::BlueGreen => "blue_green",
        }
    }
}

/// One guardrail: the challenger's value per window must stay at most `max`, or at least `min`
/// (exactly one of them is given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// A window with a smaller sample is not judged: challenger requests (for `ctr_ratio`,
    /// impressions on each arm; for `ece`, labelled challenger impressions).
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Consecutive windows past the bound before the rollback.
    #[serde(default = "default_windows")]
    pub windows: u32,
}

impl Guardrail {
    /// A guardrail bounding the value from above.
    pub fn max(max: f64, min_requests: u64, windows: u32) -> Guardrail {
        Guardrail { max: Some(max), min: None, min_requests, windows }
    }

    /// A guardrail bounding the value from below.
    pub fn min(min: f64, min_requests: u64, windows: u32) -> Guardrail {
        Guardrail { max: None, min: Some(min), min_requests, windows }
    }

    /// How `value` crosses the bound (`>` or `<`, and the bound), if it does.
    fn crossed(&self, value: f64) -> Option<(&'static str, f64)> {
        match (self.max, self.min) {
            (Some(max), _) if value > max => Some((">", max)),
            (_, Some(min)) if value < min => Some(("<", min)),
            _ => None,
        }
    }
}

fn default_min_requests() -> u64 {
    100
}

fn default_windows() -> u32 {
    3
}

/// `[pipelines.<name>.rollout.guardrails]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Guardrails {
    /// The challenger's p99 request latency (ms).
    pub p99_latency_ms: Option<Guardrail>,
    /// Share of the challenger's requests where retrieval or ranking failed.
    pub error_rate: Option<Guardrail>,
    /// Share of the challenger's requests served with any fallback.
    pub fallback_rate: Option<Guardrail>,
    /// The challenger's CTR (clicked impressions / impressions) over the champion's in the same
    /// window; usually with `min`. (Absent ones are not written: a pipeline's resolved
    /// configuration, which starts compare and audit, stays as it was without them.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctr_ratio: Option<Guardrail>,
    /// Expected calibration error of the challenger's served probabilities (heavy-ranked
    /// impressions) against their outcomes, once their attribution window has ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ece: Option<Guardrail>,
}

impl Guardrails {
    fn each(&self) -> impl Iterator<Item = (&'static str, &Guardrail)> {
        [
            ("p99_latency_ms", &self.p99_latency_ms),
            ("error_rate", &self.error_rate),
            ("fallback_rate", &self.fallback_rate),
            ("ctr_ratio", &self.ctr_ratio),
            ("ece", &self.ece),
        ]
        .into_iter()
        .filter_map(|(name, g)| g.as_ref().map(|g| (name, g)))
    }
}

/// `[pipelines.<name>.rollout]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    pub strategy: Strategy,
    /// `canary`: the challenger's share of units per step, per cent, increasing, ending at 100.
    pub steps: Vec<f64>,
    /// `canary`, `blue_green`: the least time a step lasts.
    #[serde(with = "cascade_core::config::duration_str")]
    pub min_dwell: Duration,
    /// `canary`, `blue_green`: the least challenger requests a step serves.
    pub min_requests: u64,
    /// `champion_challenger`: the challenger's share of units, per cent.
    pub share: f64,
    /// `shadow`: the share of requests the challenger also scores (0 to 1).
    pub shadow_sample: f64,
    /// `shadow`: requests waiting for the challenger; beyond it copies are dropped and counted.
    pub shadow_queue: usize,
    /// The pipeline whose configuration the challenger's requests are served with (default:
    /// this one): a rollout of a pipeline change, with or without a new bundle.
    pub challenger_pipeline: Option<String>,
    /// How often the guardrails are evaluated, each on that window's requests.
    #[serde(with = "cascade_core::config::duration_str")]
    pub window: Duration,
    pub guardrails: Guardrails,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            strategy: Strategy::None,
            steps: vec![1.0, 5.0, 25.0, 50.0, 100.0],
            min_dwell: Duration::from_secs(600),
            min_requests: 1000,
            share: 50.0,
            shadow_sample: 0.1,
            shadow_queue: 256,
            challenger_pipeline: None,
            window: Duration::from_secs(60),
            guardrails: Guardrails::default(),
        }
    }
}

impl RolloutConfig {
    /// Why the section is wrong (the key and the reason), if it is.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.steps.is_empty()
            || self.steps.iter().any(|s| !(*s > 0.0 && *s <= 100.0))
            || self.steps.windows(2).any(|w| w[0] >= w[1])
            || self.steps.last() != Some(&100.0)
        {
            return Some(("steps", "per cent shares, increasing, each in (0, 100], ending at 100".into()));
        }
        if !(0.0..=100.0).contains(&self.share) {
            return Some(("share", "a per cent share in [0, 100]".into()));
        }
        if !(0.0..=1.0).contains(&self.shadow_sample) {
            return Some(("shadow_sample", "a share of requests in [0, 1]".into()));
        }
        if self.window.is_zero() {
            return Some(("window", "must be longer than 0s".into()));
        }
        for (name, g) in self.guardrails.each() {
            let bound = match (g.max, g.min) {
                (Some(b), None) | (None, Some(b)) => b,
                _ => return Some(("guardrails", format!("`{name}`: give exactly one of max and min"))),
            };
            if !bound.is_finite() || bound < 0.0 || g.windows == 0 {
                return Some(("guardrails", format!("`{name}`: the bound must be a number ≥ 0 and windows ≥ 1")));
            }
        }
        None
    }

    /// The challenger's share of units (0 to 1) at `step`.
    pub fn share_at(&self, step: usize) -> f64 {
        match self.strategy {
            Strategy::None | Strategy::Shadow => 0.0,
            Strategy::Canary => self.steps.get(step).copied().unwrap_or(100.0) / 100.0,
            Strategy::ChampionChallenger => self.share / 100.0,
            Strategy::BlueGreen => 1.0,
        }
    }
}

/// Which bundle served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Champion,
    Challenger,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Champion => "champion",
            Arm::Challenger => "challenger",
        }
    }
}

/// Request latencies in logarithmic buckets (about 5% wide, 0.05 ms to 60 s), for a window's
/// quantiles without keeping every request.
#[derive(Debug, Clone)]
pub struct Latencies {
    counts: Vec<u64>,
}

const LAT_MIN_MS: f64 = 0.05;
const LAT_GROWTH: f64 = 1.05;
const LAT_BUCKETS: usize = 290;

impl Default for Latencies {
    fn default() -> Self {
        Latencies { counts: vec![0; LAT_BUCKETS] }
    }
}

impl Latencies {
    pub fn record(&mut self, ms: f64) {
        let i = if ms <= LAT_MIN_MS { 0 } else { ((ms / LAT_MIN_MS).ln() / LAT_GROWTH.ln()).ceil() as usize };
        self.counts[i.min(LAT_BUCKETS - 1)] += 1;
    }

    /// The `q` quantile (upper edge of its bucket: never below the true value by more than a
    /// bucket), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(LAT_MIN_MS * LAT_GROWTH.powi(i as i32));
            }
        }
        None
    }
}

/// One arm's requests in the current window, and the outcomes counted in it.
#[derive(Debug, Clone, Default)]
pub struct ArmWindow {
    pub requests: u64,
    pub errors: u64,
    pub fallbacks: u64,
    pub latency: Latencies,
    /// Impressions read and outcomes attributed in the window (by arrival).
    pub outcomes: ArmOutcomes,
    /// Heavy-ranked impressions whose label became final in the window.
    pub calibration: CalibrationBins,
}

impl ArmWindow {
    pub fn record(&mut self, ms: f64, error: bool, fallback: bool) {
        self.requests += 1;
        self.errors += u64::from(error);
        self.fallbacks += u64::from(fallback);
        self.latency.record(ms);
    }

    /// What the window shows, for the status and the guardrails.
    pub fn summary(&self) -> WindowSummary {
        let rate = |n: u64| if self.requests == 0 { None } else { Some(n as f64 / self.requests as f64) };
        let o = &self.outcomes;
        WindowSummary {
            requests: self.requests,
            p50_latency_ms: self.latency.quantile(0.5),
            p99_latency_ms: self.latency.quantile(0.99),
            error_rate: rate(self.errors),
            fallback_rate: rate(self.fallbacks),
            outcomes: o.clone(),
            ctr: (o.impressions > 0).then(|| o.clicked as f64 / o.impressions as f64),
            labelled: self.calibration.len(),
            ece: self.calibration.ece(),
        }
    }
}

/// The challenger's CTR over the champion's; `None` unless both have one and the champion's is
/// above 0.
pub fn ctr_ratio(champion: &WindowSummary, challenger: &WindowSummary) -> Option<f64> {
    match (champion.ctr, challenger.ctr) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a),
        _ => None,
    }
}

/// A guardrail's value in a window and the sample it is judged on.
fn value(champion: &WindowSummary, challenger: &WindowSummary, guardrail: &str) -> (Option<f64>, u64) {
    match guardrail {
        "p99_latency_ms" => (challenger.p99_latency_ms, challenger.requests),
        "error_rate" => (challenger.error_rate, challenger.requests),
        "fallback_rate" => (challenger.fallback_rate, challenger.requests),
        "ctr_ratio" => {
            (ctr_ratio(champion, challenger), champion.outcomes.impressions.min(challenger.outcomes.impressions))
        }
        "ece" => (challenger.ece, challenger.labelled),
        _ => (None, 0),
    }
}

/// Windows kept in a rollout's state.
const KEPT_WINDOWS: usize = 20;

/// What a window's evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Stay (the step needs more time or requests, or the strategy never promotes).
    Hold,
    /// To the next step, with this share.
    Step { step: usize, share: f64 },
    /// The challenger becomes champion.
    Promote,
    /// The challenger is retired: a guardrail held for its windows.
    Rollback { guardrail: String, reason: String },
}

/// A rollout of `challenger` (its alias set at `since`) on `pipeline`, at its first step.
pub fn start(
    pipeline: &str,
    config: &RolloutConfig,
    challenger: u64,
    since: String,
    champion: Option<u64>,
    now_ms: i64,
) -> RolloutState {
    RolloutState {
        pipeline: pipeline.into(),
        strategy: config.strategy.name().into(),
        challenger,
        challenger_since: since,
        champion,
        phase: RolloutPhase::Running,
        step: 0,
        share: config.share_at(0),
        step_started_ms: now_ms,
        step_requests: 0,
        breaches: BTreeMap::new(),
        started_ms: now_ms,
        finished_ms: None,
        reason: None,
        windows: Vec::new(),
        shadow: None,
        champion_outcomes: ArmOutcomes::default(),
        challenger_outcomes: ArmOutcomes::default(),
    }
}

/// Judges one window of the challenger (and the champion, for the record) and moves the
/// state: guardrails first, then the step.
pub fn evaluate(
    this: &mut RolloutState,
    config: &RolloutConfig,
    champion: WindowSummary,
    challenger: WindowSummary,
    now_ms: i64,
) -> Decision {
    let mut crossed = Vec::new();
    let mut decision = Decision::Hold;
    // A window too small for a guardrail to judge is neither a breach nor a clean window for it,
    // and does not count towards the step: a step advances only on judged traffic.
    let mut judged = true;
    for (name, g) in config.guardrails.each() {
        let (value, sample) = value(&champion, &challenger, name);
        // No value (no CTR on the champion, no labelled impression) cannot be judged either.
        let Some(v) = value.filter(|_| sample >= g.min_requests) else {
            judged = false;
            continue;
        };
        match g.crossed(v) {
            Some((op, bound)) => {
                crossed.push(name.to_string());
                let n = this.breaches.entry(name.to_string()).or_default();
                *n += 1;
                if *n >= g.windows && decision == Decision::Hold {
                    let unit = if name == "p99_latency_ms" { " ms" } else { "" };
                    let reason = format!("guardrail {name}: {v:.4}{unit} {op} {bound}{unit} for {} windows", g.windows);
                    decision = Decision::Rollback { guardrail: name.to_string(), reason };
                }
            }
            None => {
                this.breaches.remove(name);
            }
        }
    }
    if judged {
        this.step_requests += challenger.requests;
    }
    add(&mut this.champion_outcomes, &champion.outcomes);
    add(&mut this.challenger_outcomes, &challenger.outcomes);
    let ratio = ctr_ratio(&champion, &challenger);
    this.windows.push(WindowRecord {
        ended_ms: now_ms,
        champion,
        challenger,
        crossed: crossed.clone(),
        ctr_ratio: ratio,
    });
    if this.windows.len() > KEPT_WINDOWS {
        this.windows.remove(0);
    }
    if decision != Decision::Hold {
        return decision;
    }
    let ramps = matches!(config.strategy, Strategy::Canary | Strategy::BlueGreen);
    let dwelt = now_ms - this.step_started_ms >= config.min_dwell.as_millis() as i64;
    // A step with a guardrail crossed (not yet for long enough) does not move on.
    if !ramps || !dwelt || this.step_requests < config.min_requests || !crossed.is_empty() {
        return Decision::Hold;
    }
    let last = if config.strategy == Strategy::Canary { config.steps.len() - 1 } else { 0 };
    if this.step >= last {
        return Decision::Promote;
    }
    Decision::Step { step: this.step + 1, share: config.share_at(this.step + 1) }
}

/// The challenger against the champion, per request (see [`ArmComparison`]).
pub fn compare(champion: ArmOutcomes, challenger: ArmOutcomes) -> ArmComparison {
    let rate = |o: &ArmOutcomes| (o.requests > 0).then(|| o.converted.min(o.requests) as f64 / o.requests as f64);
    let test = two_proportions(champion.converted, champion.requests, challenger.converted, challenger.requests);
    ArmComparison {
        champion_rate: rate(&champion),
        challenger_rate: rate(&challenger),
        difference: test.map(|t| t.difference),
        ci95_low: test.map(|t| t.ci95.0),
        ci95_high: test.map(|t| t.ci95.1),
        p_value: test.map(|t| t.p_value),
        relative_lift: test.and_then(|t| t.relative_lift),
        champion,
        challenger,
    }
}

/// Adds a window's counts to a total.
pub fn add(total: &mut ArmOutcomes, window: &ArmOutcomes) {
    total.requests += window.requests;
    total.converted += window.converted;
    total.impressions += window.impressions;
    total.clicked += window.clicked;
    total.outcomes += window.outcomes;
}

/// Applies a decision to the state (the caller moves the aliases).
pub fn apply(this: &mut RolloutState, decision: &Decision, now_ms: i64) {
    match decision {
        Decision::Hold => {}
        Decision::Step { step, share } => {
            this.step = *step;
            this.share = *share;
            this.step_started_ms = now_ms;
            this.step_requests = 0;
        }
        Decision::Promote => {
            this.phase = RolloutPhase::Promoted;
            this.share = 1.0;
            this.finished_ms = Some(now_ms);
            this.reason = Some("every step passed its guardrails".into());
        }
        Decision::Rollback { reason, .. } => {
            this.phase = RolloutPhase::RolledBack;
            this.share = 0.0;
            this.finished_ms = Some(now_ms);
            this.reason = Some(reason.clone());
        }
    }
}

/// Whether `unit` is in the challenger's share of a rollout: GrowthBook's v2 hash of the
/// rollout's seed and the unit, below the share. The seed names the pipeline and the challenger
/// version, so each rollout draws its own units, and a unit in a step stays in every larger one.
pub fn in_share(pipeline: &str, challenger: u64, unit: &str, share: f64) -> bool {
    if share <= 0.0 {
        return false;
    }
    if share >= 1.0 {
        return true;
    }
    let seed = format!("cascade-rollout:{pipeline}:{challenger}:");
    cascade_core::hashing::bucket(&seed, unit, 2).is_some_and(|b| b < share)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> RolloutConfig {
        RolloutConfig {
            strategy: Strategy::Canary,
            steps: vec![10.0, 50.0, 100.0],
            min_dwell: Duration::from_secs(60),
            min_requests: 100,
            guardrails: Guardrails {
                p99_latency_ms: Some(Guardrail::max(15.0, 50, 3)),
                error_rate: Some(Guardrail::max(0.01, 50, 2)),
                ..Guardrails::default()
            },
            ..RolloutConfig::default()
        }
    }

    fn window(requests: u64, p99: f64, errors: u64) -> WindowSummary {
        let mut w = ArmWindow::default();
        for i in 0..requests {
            w.record(if i == 0 { p99 } else { 1.0 }, i < errors, false);
        }
        let mut s = w.summary();
        s.p99_latency_ms = Some(p99);
        s
    }

    #[test]
    fn the_default_config_and_bad_ones() {
        assert_eq!(RolloutConfig::default().problem(), None);
        for steps in [vec![], vec![5.0, 1.0, 100.0], vec![5.0, 50.0], vec![0.0, 100.0], vec![50.0, 150.0]] {
            let c = RolloutConfig { steps, ..RolloutConfig::default() };
            assert_eq!(c.problem().map(|p| p.0), Some("steps"));
        }
        let c = RolloutConfig { shadow_sample: 2.0, ..RolloutConfig::default() };
        assert_eq!(c.problem().map(|p| p.0), Some("shadow_sample"));
    }

    #[test]
    fn a_healthy_canary_ramps_step_by_step_then_promotes() {
        let config = canary();
        let mut state = start("home", &config, 2, "t".into(), Some(1), 0);
        assert_eq!(state.share, 0.1);
        // Enough requests but not enough time: hold.
        assert_eq!(evaluate(&mut state, &config, window(900, 5.0, 0), window(100, 5.0, 0), 30_000), Decision::Hold);
        let d = evaluate(&mut state, &config, window(900, 5.0, 0), window(100, 5.0, 0), 60_000);
        assert_eq!(d, Decision::Step { step: 1, share: 0.5 });
        apply(&mut state, &d, 60_000);
        assert_eq!(state.step_requests, 0);
        let d = evaluate(&mut state, &config, window(500, 5.0, 0), window(500, 5.0, 0), 120_000);
        assert_eq!(d, Decision::Step { step: 2, share: 1.0 });
        apply(&mut state, &d, 120_000);
        let d = evaluate(&mut state, &config, window(0, 5.0, 0), window(1000, 5.0, 0), 180_000);
        assert_eq!(d, Decision::Promote);
        apply(&mut state, &d, 180_000);
        assert_eq!(state.phase, RolloutPhase::Promoted);
    }

    #[test]
    fn a_guardrail_rolls_back_after_its_consecutive_windows_only() {
        let config = canary();
        let mut state = start("home", &config, 2, "t".into(), Some(1), 0);
        let slow = || window(100, 18.2, 0);
        assert_eq!(evaluate(&mut state, &config, window(900, 5.0, 0), slow(), 1), Decision::Hold);
        assert_eq!(evaluate(&mut state, &config, window(900, 5.0, 0), slow(), 2), Decision::Hold);
        // A clean window resets the count.
        assert_eq!(evaluate(&mut state, &config, window(900, 5.0, 0), window(100, 5.0, 0), 3), Decision::Hold);
        assert_eq!(evaluate(&mut state, &config, window(900, 5.0, 0), slow(), 4), Decision::Hold);
        assert_eq!(evaluate(&mut state, &config, window(900, 5.0, 0), slow(), 5), Decision::Hold);
        // A window with too few requests is not judged either way, nor counted towards the step.
        let before = state.step_requests;
        assert_eq!(evaluate(&mut state, &config, window(900, 5.0, 0), window(10, 99.0, 0), 6), Decision::Hold);
        assert_eq!(state.step_requests, before);
        match evaluate(&mut state, &config, window(900, 5.0, 0), slow(), 7) {
            Decision::Rollback { guardrail, reason } => {
                assert_eq!(guardrail, "p99_latency_ms");
                assert_eq!(reason, "guardrail p99_latency_ms: 18.2000 ms > 15 ms for 3 windows");
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn an_erroring_challenger_is_caught_by_its_rate() {
        let config = canary();
        let mut state = start("home", &config, 2, "t".into(), Some(1), 0);
        assert_eq!(evaluate(&mut state, &config, window(900, 5.0, 0), window(100, 5.0, 40), 1), Decision::Hold);
        let d = evaluate(&mut state, &config, window(900, 5.0, 0), window(100, 5.0, 40), 2);
        assert!(matches!(d, Decision::Rollback { ref guardrail, .. } if guardrail == "error_rate"), "{d:?}");
    }

    /// A window of `impressions` with `clicked` of them clicked and `labelled` final labels, each
    /// served at probability `score` and clicked at rate `rate`.
    fn outcomes(impressions: u64, clicked: u64, labelled: u64, score: f64, rate: f64) -> WindowSummary {
        let mut w = ArmWindow::default();
        for _ in 0..impressions {
            w.record(5.0, false, false);
        }
        w.outcomes = ArmOutcomes { requests: impressions, converted: clicked, impressions, clicked, outcomes: clicked };
        for i in 0..labelled {
            w.calibration.add(score, (i as f64) < rate * labelled as f64);
        }
        w.summary()
    }

    fn outcome_guardrails() -> RolloutConfig {
        RolloutConfig {
            strategy: Strategy::ChampionChallenger,
            guardrails: Guardrails {
                ctr_ratio: Some(Guardrail::min(0.9, 200, 3)),
                ece: Some(Guardrail::max(0.05, 100, 2)),
                ..Guardrails::default()
            },
            ..RolloutConfig::default()
        }
    }

    #[test]
    fn a_challenger_clicked_less_than_the_champion_is_rolled_back_by_its_ctr_ratio() {
        let config = outcome_guardrails();
        let mut state = start("home", &config, 2, "t".into(), Some(1), 0);
        let champion = || outcomes(1000, 100, 0, 0.0, 0.0);
        let worse = || outcomes(1000, 71, 0, 0.0, 0.0);
        assert_eq!(evaluate(&mut state, &config, champion(), worse(), 1), Decision::Hold);
        assert!((state.windows[0].ctr_ratio.unwrap() - 0.71).abs() < 1e-12);
        assert_eq!(state.windows[0].crossed, ["ctr_ratio"]);
        // Too few impressions on either arm: not judged, the count stands.
        assert_eq!(evaluate(&mut state, &config, outcomes(150, 15, 0, 0.0, 0.0), worse(), 2), Decision::Hold);
        assert_eq!(state.breaches["ctr_ratio"], 1);
        // A champion without a click gives no ratio: not judged either.
        assert_eq!(evaluate(&mut state, &config, outcomes(1000, 0, 0, 0.0, 0.0), worse(), 3), Decision::Hold);
        assert_eq!(evaluate(&mut state, &config, champion(), worse(), 4), Decision::Hold);
        match evaluate(&mut state, &config, champion(), worse(), 5) {
            Decision::Rollback { guardrail, reason } => {
                assert_eq!(guardrail, "ctr_ratio");
                assert_eq!(reason, "guardrail ctr_ratio: 0.7100 < 0.9 for 3 windows");
            }
            d => panic!("{d:?}"),
        }
        // Totals add up every window's counts.
        assert_eq!(state.challenger_outcomes.impressions, 5_000);
        assert_eq!(state.champion_outcomes.clicked, 100 * 3 + 15);
        // As good as the champion, within the bound: never crossed.
        let mut state = start("home", &config, 2, "t".into(), Some(1), 0);
        for t in 0..10 {
            assert_eq!(evaluate(&mut state, &config, champion(), outcomes(1000, 95, 0, 0.0, 0.0), t), Decision::Hold);
        }
        assert!(state.breaches.is_empty());
    }

    #[test]
    fn a_miscalibrated_challenger_is_rolled_back_by_its_ece_once_labels_are_final() {
        let config = outcome_guardrails();
        let mut state = start("home", &config, 2, "t".into(), Some(1), 0);
        let champion = || outcomes(1000, 100, 0, 0.0, 0.0);
        // No label final yet: not judged.
        assert_eq!(evaluate(&mut state, &config, champion(), outcomes(1000, 100, 0, 0.3, 0.1), 1), Decision::Hold);
        assert!(state.breaches.is_empty());
        // Served 0.3, clicked 10%: ECE 0.2.
        let off = || outcomes(1000, 100, 500, 0.3, 0.1);
        assert_eq!(evaluate(&mut state, &config, champion(), off(), 2), Decision::Hold);
        assert!((state.windows[1].challenger.ece.unwrap() - 0.2).abs() < 1e-9);
        match evaluate(&mut state, &config, champion(), off(), 3) {
            Decision::Rollback { guardrail, reason } => {
                assert_eq!(guardrail, "ece");
                assert_eq!(reason, "guardrail ece: 0.2000 > 0.05 for 2 windows");
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn a_guardrail_has_exactly_one_bound() {
        let with = |g: Guardrail| RolloutConfig {
            guardrails: Guardrails { ctr_ratio: Some(g), ..Guardrails::default() },
            ..RolloutConfig::default()
        };
        assert_eq!(with(Guardrail::min(0.9, 100, 3)).problem(), None);
        let both = Guardrail { max: Some(2.0), ..Guardrail::min(0.9, 100, 3) };
        let neither = Guardrail { min: None, ..Guardrail::min(0.9, 100, 3) };
        for g in [both, neither] {
            let (key, why) = with(g).problem().unwrap();
            assert_eq!((key, why.as_str()), ("guardrails", "`ctr_ratio`: give exactly one of max and min"));
        }
        assert!(with(Guardrail::min(f64::NAN, 100, 3)).problem().is_some());
        assert!(with(Guardrail::min(0.9, 100, 0)).problem().is_some());
        // As written in cascade.toml.
        let parsed: Guardrails = toml::from_str(
            "ctr_ratio = { min = 0.9, min_requests = 500, windows = 3 }\nece = { max = 0.05 }\n\
             p99_latency_ms = { max = 15.0, min_requests = 100, windows = 3 }\n",
        )
        .unwrap();
        assert_eq!(parsed.ctr_ratio, Some(Guardrail::min(0.9, 500, 3)));
        assert_eq!(parsed.ece, Some(Guardrail::max(0.05, 100, 3)));
        assert_eq!(parsed.p99_latency_ms, Some(Guardrail::max(15.0, 100, 3)));
        // Written as before for a configuration without the outcome guardrails.
        let written = serde_json::to_value(Guardrails { ctr_ratio: None, ece: None, ..parsed }).unwrap();
        let before = serde_json::json!({
            "p99_latency_ms": {"max": 15.0, "min_requests": 100, "windows": 3},
            "error_rate": null,
            "fallback_rate": null,
        });
        assert_eq!(written, before);
    }

    #[test]
    fn the_comparison_is_per_request_with_its_interval() {
        let o = |requests, converted| ArmOutcomes { requests, converted, ..ArmOutcomes::default() };
        // The worked example of `cascade_eval::stats`: 120 of 1000 against 90 of 1000.
        let c = compare(o(1000, 120), o(1000, 90));
        assert_eq!((c.champion_rate, c.challenger_rate), (Some(0.12), Some(0.09)));
        assert!((c.difference.unwrap() + 0.03).abs() < 1e-12);
        assert!((c.p_value.unwrap() - 0.028_650_240_398_448_486).abs() < 1e-8);
        assert!((c.ci95_low.unwrap() + 0.056_837_912_155_757_356).abs() < 1e-12);
        assert!((c.ci95_high.unwrap() + 0.003_162_087_844_242_642).abs() < 1e-12);
        assert!((c.relative_lift.unwrap() + 0.25).abs() < 1e-12);
        // An arm without requests: counts, no statistics.
        let c = compare(o(1000, 120), o(0, 0));
        assert_eq!((c.challenger_rate, c.difference, c.p_value, c.ci95_low), (None, None, None, None));
    }

    #[test]
    fn latency_quantiles_are_within_a_bucket() {
        let mut l = Latencies::default();
        assert_eq!(l.quantile(0.99), None);
        for i in 1..=1000 {
            l.record(i as f64 / 10.0);
        }
        let p99 = l.quantile(0.99).unwrap();
        assert!((99.0..=99.0 * 1.05).contains(&p99), "{p99}");
        let p50 = l.quantile(0.5).unwrap();
        assert!((50.0..=50.0 * 1.05).contains(&p50), "{p50}");
    }

    #[test]
    fn shares_are_stable_and_nested() {
        let users: Vec<String> = (0..10_000).map(|i| format!("u{i}")).collect();
        let inside = |share: f64| users.iter().filter(|u| in_share("home", 7, u, share)).cloned().collect::<Vec<_>>();
        let (five, fifty) = (inside(0.05), inside(0.5));
        assert!(five.iter().all(|u| fifty.contains(u)), "a unit in a step stays in the larger ones");
        assert!((400..=600).contains(&five.len()), "{}", five.len());
        assert!((4_700..=5_300).contains(&fifty.len()), "{}", fifty.len());
        assert_eq!(inside(0.0).len(), 0);
        assert_eq!(inside(1.0).len(), users.len());
        // Another challenger draws other units.
        let other: Vec<_> = users.iter().filter(|u| in_share("home", 8, u, 0.05)).collect();
        assert!(other.iter().filter(|u| five.contains(u)).count() < 100);
    }
}
