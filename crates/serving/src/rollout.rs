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
//! guardrails (p99 latency, error rate, fallback rate); a guardrail crossed in `windows`
//! consecutive windows that each had `min_requests` retires the challenger (its alias is
//! deleted, with the reason), counts `cascade_rollbacks_total{pipeline,guardrail}` and writes the
//! audit record. The state of each pipeline's rollout is kept in `DATA_DIR/rollouts.json`, so a
//! restart resumes at the step it was at.

use cascade_api::{RolloutPhase, RolloutState, WindowRecord, WindowSummary};
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

/// One guardrail: the challenger's value per window must stay within `max` (or above `min`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrail {
    pub max: f64,
    /// A window with fewer challenger requests is not judged.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Consecutive windows over `max` before the rollback.
    #[serde(default = "default_windows")]
    pub windows: u32,
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
}

impl Guardrails {
    fn each(&self) -> impl Iterator<Item = (&'static str, &Guardrail)> {
        [
            ("p99_latency_ms", &self.p99_latency_ms),
            ("error_rate", &self.error_rate),
            ("fallback_rate", &self.fallback_rate),
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
            if !g.max.is_finite() || g.max < 0.0 || g.windows == 0 {
                return Some(("guardrails", format!("`{name}`: max must be a number ≥ 0 and windows ≥ 1")));
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

/// One arm's requests in the current window.
#[derive(Debug, Clone, Default)]
pub struct ArmWindow {
    pub requests: u64,
    pub errors: u64,
    pub fallbacks: u64,
    pub latency: Latencies,
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
        WindowSummary {
            requests: self.requests,
            p50_latency_ms: self.latency.quantile(0.5),
            p99_latency_ms: self.latency.quantile(0.99),
            error_rate: rate(self.errors),
            fallback_rate: rate(self.fallbacks),
        }
    }
}

fn value(w: &WindowSummary, guardrail: &str) -> Option<f64> {
    match guardrail {
        "p99_latency_ms" => w.p99_latency_ms,
        "error_rate" => w.error_rate,
        "fallback_rate" => w.fallback_rate,
        _ => None,
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
        if challenger.requests < g.min_requests {
            judged = false;
            continue;
        }
        match value(&challenger, name) {
            Some(v) if v > g.max => {
                crossed.push(name.to_string());
                let n = this.breaches.entry(name.to_string()).or_default();
                *n += 1;
                if *n >= g.windows && decision == Decision::Hold {
                    let unit = if name == "p99_latency_ms" { " ms" } else { "" };
                    let reason = format!("guardrail {name}: {v:.4}{unit} > {}{unit} for {} windows", g.max, g.windows);
                    decision = Decision::Rollback { guardrail: name.to_string(), reason };
                }
            }
            _ => {
                this.breaches.remove(name);
            }
        }
    }
    if judged {
        this.step_requests += challenger.requests;
    }
    this.windows.push(WindowRecord { ended_ms: now_ms, champion, challenger, crossed: crossed.clone() });
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
                p99_latency_ms: Some(Guardrail { max: 15.0, min_requests: 50, windows: 3 }),
                error_rate: Some(Guardrail { max: 0.01, min_requests: 50, windows: 2 }),
                fallback_rate: None,
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
