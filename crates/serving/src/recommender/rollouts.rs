//! The rollout controller inside the recommender: routing a request to an arm, recording each
//! arm's window, the rounds that judge the windows and move the aliases, and shadow scoring.
//! The rules themselves (strategies, guardrails, steps) are in [`crate::rollout`].

use super::outcomes::{Join, RolloutId};
use super::{Recommender, Serving, cascade};
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::rollout::{self, Arm, ArmWindow, Decision, Latencies, Strategy};
use cascade_api::{PipelineRollout, RolloutPhase, RolloutState, ShadowSummary, WindowRecord};
use cascade_registry::{Actor, CHALLENGER, CHAMPION, RECOMMENDER};
use cascade_store::{AuditLog, AuditRecord};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the rollouts' state is kept (in the data directory).
pub const ROLLOUTS_FILE: &str = "rollouts.json";

/// Which bundle (and pipeline configuration) serves one request.
pub(super) struct Route {
    pub arm: Arm,
    /// The challenger's bundle; `None` for the champion (with its fallbacks).
    pub serving: Option<Arc<Serving>>,
    pub pipeline: Arc<Pipeline>,
}

/// A request the challenger scores off the request path.
#[derive(Debug)]
pub struct ShadowJob {
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) request_id: String,
    pub(super) user: String,
    pub(super) exclude: Vec<String>,
    pub(super) k: usize,
    pub(super) now: i64,
    /// The champion's ranked top k (ids and scores), before rules and exploration.
    pub(super) champion: Vec<(String, f64)>,
}

#[derive(Debug, Default)]
struct ShadowTotals {
    scored: u64,
    dropped: u64,
    failed: u64,
    overlap: f64,
    rbo: f64,
    score_diff: f64,
    score_pairs: u64,
    latency: Latencies,
}

impl ShadowTotals {
    fn summary(&self) -> ShadowSummary {
        let mean = |sum: f64, n: u64| (n > 0).then(|| sum / n as f64);
        ShadowSummary {
            scored: self.scored,
            dropped: self.dropped,
            failed: self.failed,
            mean_overlap_at_k: mean(self.overlap, self.scored),
            mean_rbo: mean(self.rbo, self.scored),
            mean_abs_score_diff: mean(self.score_diff, self.score_pairs),
            p50_latency_ms: self.latency.quantile(0.5),
            p99_latency_ms: self.latency.quantile(0.99),
        }
    }
}

/// One pipeline's rollout in memory: its state and the window in progress.
#[derive(Debug, Default)]
pub(super) struct Runtime {
    /// The pipeline's name, shared by the impressions the join keeps.
    pub(super) name: Arc<str>,
    pub(super) state: Option<RolloutState>,
    pub(super) champion: ArmWindow,
    pub(super) challenger: ArmWindow,
    window_started_ms: i64,
    shadow: ShadowTotals,
}

impl Runtime {
    /// The rollout running, if one is.
    pub(super) fn running(&self) -> Option<RolloutId> {
        let s = self.state.as_ref().filter(|s| s.phase == RolloutPhase::Running)?;
        Some(RolloutId { started_ms: s.started_ms, challenger: s.challenger })
    }

    /// The arm of the running rollout that bundle `version` serves, if any.
    pub(super) fn arm_of(&self, version: Option<u64>) -> Option<(Arm, RolloutId)> {
        let id = self.running()?;
        let state = self.state.as_ref()?;
        match version? {
            v if v == state.challenger => Some((Arm::Challenger, id)),
            v if Some(v) == state.champion => Some((Arm::Champion, id)),
            _ => None,
        }
    }

    /// The arm's window in progress.
    pub(super) fn window(&mut self, arm: Arm) -> &mut ArmWindow {
        match arm {
            Arm::Champion => &mut self.champion,
            Arm::Challenger => &mut self.challenger,
        }
    }
}

/// Every pipeline's rollout (those with a strategy), each under its own lock: a request takes
/// only its pipeline's, for a few instructions. The join of outcomes takes its own lock, then a
/// pipeline's; nothing takes them the other way round.
#[derive(Debug, Default)]
pub(super) struct Rollouts {
    pub(super) pipelines: BTreeMap<String, Mutex<Runtime>>,
    file: Option<PathBuf>,
    shadow: Mutex<Option<tokio::sync::mpsc::Sender<ShadowJob>>>,
    pub(super) join: Mutex<Join>,
}

impl Rollouts {
    /// The runtimes of `pipelines` that declare a rollout, with the state persisted in
    /// `data_dir` (none: not persisted).
    pub fn new(pipelines: &BTreeMap<String, Arc<Pipeline>>, data_dir: Option<PathBuf>, now_ms: i64) -> Rollouts {
        let file = data_dir.map(|d| d.join(ROLLOUTS_FILE));
        let mut saved: BTreeMap<String, RolloutState> = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| match serde_json::from_slice(&bytes) {
                Ok(states) => Some(states),
                Err(e) => {
                    tracing::error!(error = %e, "the rollouts' state does not parse: rollouts start over");
                    None
                }
            })
            .unwrap_or_default();
        let pipelines = pipelines
            .values()
            .filter(|p| p.config.rollout.strategy != Strategy::None)
            .map(|p| {
                let runtime = Runtime {
                    name: p.name.as_str().into(),
                    state: saved.remove(&p.name),
                    window_started_ms: now_ms,
                    ..Runtime::default()
                };
                (p.name.clone(), Mutex::new(runtime))
            })
            .collect();
        Rollouts { pipelines, file, shadow: Mutex::new(None), join: Mutex::new(Join::default()) }
    }

    fn save(&self) {
        let Some(file) = &self.file else { return };
        let states: BTreeMap<&String, RolloutState> =
            self.pipelines.iter().filter_map(|(name, rt)| rt.lock().state.clone().map(|s| (name, s))).collect();
        let bytes = serde_json::to_vec_pretty(&states).expect("rollout states serialise");
        if let Err(e) = cascade_store::files::write_atomic(file, &bytes, false) {
            tracing::error!(error = %e, path = %file.display(), "the rollouts' state cannot be saved");
        }
    }
}

/// Rank-biased overlap of two top-k lists (p = 0.9), extrapolated to the lists' depth
/// (Webber et al. 2010, eq. 32 for equal depths): 1 for identical lists, 0 for disjoint ones.
pub(crate) fn rbo(a: &[&str], b: &[&str], p: f64) -> f64 {
    let k = a.len().min(b.len());
    if k == 0 {
        return if a.is_empty() && b.is_empty() { 1.0 } else { 0.0 };
    }
    let (mut seen_a, mut seen_b) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    let (mut overlap, mut sum) = (0usize, 0.0);
    for d in 1..=k {
        let (x, y) = (a[d - 1], b[d - 1]);
        if x == y {
            overlap += 1;
        } else {
            overlap += usize::from(seen_b.contains(x)) + usize::from(seen_a.contains(y));
        }
        seen_a.insert(x);
        seen_b.insert(y);
        sum += overlap as f64 / d as f64 * p.powi(d as i32);
    }
    overlap as f64 / k as f64 * p.powi(k as i32) + (1.0 - p) / p * sum
}

impl Recommender {
    /// The arm that serves `unit` on `pipeline`: the challenger when a running rollout's share
    /// takes the unit, else the champion.
    pub(super) fn route(&self, pipeline: &Arc<Pipeline>, unit: &str) -> Route {
        let champion = || Route { arm: Arm::Champion, serving: None, pipeline: pipeline.clone() };
        let Some(runtime) = self.rollouts.pipelines.get(&pipeline.name) else { return champion() };
        let green = pipeline.config.rollout.challenger_pipeline.as_ref().and_then(|p| self.pipelines.get(p));
        let (phase, version, share, strategy) = match &runtime.lock().state {
            Some(s) => (s.phase, s.challenger, s.share, pipeline.config.rollout.strategy),
            None => return champion(),
        };
        // A blue-green rollout that completed keeps serving the green configuration with the
        // bundle it promoted; when the champion moves away (a rollback), both switch back at once.
        if phase == RolloutPhase::Promoted && strategy == Strategy::BlueGreen && self.version() == Some(version) {
            return Route { arm: Arm::Champion, serving: None, pipeline: green.unwrap_or(pipeline).clone() };
        }
        let Some(challenger) = self.challenger().filter(|c| c.version() == version) else { return champion() };
        if phase != RolloutPhase::Running || !rollout::in_share(&pipeline.name, version, unit, share) {
            return champion();
        }
        Route { arm: Arm::Challenger, serving: Some(challenger), pipeline: green.unwrap_or(pipeline).clone() }
    }

    /// Counts one request of `arm` in its pipeline's window.
    pub(super) fn record_arm(&self, pipeline: &str, arm: Arm, ms: f64, fallbacks: &[String]) {
        let Some(runtime) = self.rollouts.pipelines.get(pipeline) else { return };
        let error = fallbacks.iter().any(|f| f == "retrieval_failed" || f == "ranker_failed");
        runtime.lock().window(arm).record(ms, error, !fallbacks.is_empty());
        metrics::counter!("cascade_rollout_requests_total", "pipeline" => pipeline.to_string(), "arm" => arm.name())
            .increment(1);
    }

    /// Whether any pipeline declares a rollout (the node then runs the controller).
    pub fn has_rollouts(&self) -> bool {
        !self.rollouts.pipelines.is_empty()
    }

    /// The shadow queue's capacity, when a pipeline rolls out by shadow.
    pub fn shadow_queue(&self) -> Option<usize> {
        self.pipelines
            .values()
            .filter(|p| p.config.rollout.strategy == Strategy::Shadow)
            .map(|p| p.config.rollout.shadow_queue)
            .max()
    }

    /// Opens the shadow queue: the node drains the receiver into [`Recommender::shadow`].
    pub fn open_shadow(&self, capacity: usize) -> tokio::sync::mpsc::Receiver<ShadowJob> {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        *self.rollouts.shadow.lock() = Some(tx);
        rx
    }

    /// Closes the shadow queue: the consumer ends once it has drained it.
    pub fn close_shadow(&self) {
        self.rollouts.shadow.lock().take();
    }

    /// Queues a sampled copy of a champion request for the challenger (built by `job` only
    /// when sampled), never waiting.
    pub(super) fn maybe_shadow(&self, pipeline: &Arc<Pipeline>, job: impl FnOnce() -> ShadowJob) {
        let config = &pipeline.config.rollout;
        if config.strategy != Strategy::Shadow || self.challenger().is_none() {
            return;
        }
        let Some(runtime) = self.rollouts.pipelines.get(&pipeline.name) else { return };
        if !runtime.lock().state.as_ref().is_some_and(|s| s.phase == RolloutPhase::Running) {
            return;
        }
        if rand::random::<f64>() >= config.shadow_sample {
            return;
        }
        let sent = self.rollouts.shadow.lock().as_ref().map(|tx| tx.try_send(job()).is_ok());
        if sent == Some(false) {
            runtime.lock().shadow.dropped += 1;
            metrics::counter!("cascade_shadow_dropped_total", "pipeline" => pipeline.name.clone()).increment(1);
        }
    }

    /// Scores a shadow copy with the challenger and compares its top k with the champion's:
    /// overlap@k, rank-biased overlap, score differences, latency.
    pub async fn shadow(&self, job: ShadowJob) {
        let Some(challenger) = self.challenger() else { return };
        let name = job.pipeline.name.clone();
        let config = job.pipeline.config.rollout.challenger_pipeline.as_ref().and_then(|p| self.pipelines.get(p));
        let pipeline = config.unwrap_or(&job.pipeline).clone();
        let route = Route { arm: Arm::Challenger, serving: Some(challenger), pipeline: pipeline.clone() };
        let started = std::time::Instant::now();
        let out = cascade(self, &route, &job.user, &job.exclude, None, job.now).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let Some(runtime) = self.rollouts.pipelines.get(&name) else { return };
        let failed = out.serving.is_none() || out.ranked.is_empty();
        let theirs: Vec<(&str, f64)> = out
            .serving
            .as_ref()
            .map(|s| out.ranked.iter().take(job.k).map(|r| (s.item_id(r.item), r.score)).collect())
            .unwrap_or_default();
        let mine: Vec<&str> = job.champion.iter().map(|(id, _)| id.as_str()).collect();
        let other: Vec<&str> = theirs.iter().map(|(id, _)| *id).collect();
        let overlap = if mine.is_empty() {
            0.0
        } else {
            mine.iter().filter(|id| other.contains(id)).count() as f64 / mine.len() as f64
        };
        let rbo = rbo(&mine, &other, 0.9);
        let diffs: Vec<f64> = job
            .champion
            .iter()
            .filter_map(|(id, score)| theirs.iter().find(|(o, _)| o == id).map(|(_, s)| (score - s).abs()))
            .collect();
        {
            let mut rt = runtime.lock();
            rt.challenger.record(ms, failed, !out.path.fallbacks.is_empty());
            let totals = &mut rt.shadow;
            if failed {
                totals.failed += 1;
            } else {
                totals.scored += 1;
                totals.overlap += overlap;
                totals.rbo += rbo;
                totals.score_diff += diffs.iter().sum::<f64>();
                totals.score_pairs += diffs.len() as u64;
                totals.latency.record(ms);
            }
        }
        metrics::histogram!("cascade_shadow_overlap", "pipeline" => name.clone()).record(overlap);
        metrics::histogram!("cascade_shadow_rbo", "pipeline" => name.clone()).record(rbo);
        metrics::histogram!("cascade_shadow_duration_seconds", "pipeline" => name.clone()).record(ms / 1e3);
        tracing::debug!(
            target: "cascade::shadow",
            request_id = %job.request_id,
            pipeline = %name,
            challenger = out.serving.as_ref().map(|s| s.version()),
            overlap,
            rbo,
            ms,
            "shadow scored"
        );
    }

    /// The rollouts as they stand, per pipeline.
    pub fn rollouts(&self) -> Vec<PipelineRollout> {
        let now = self.clock.now().0;
        self.pipelines
            .values()
            .map(|p| {
                let runtime = self.rollouts.pipelines.get(&p.name).map(|rt| rt.lock());
                PipelineRollout {
                    pipeline: p.name.clone(),
                    strategy: p.config.rollout.strategy.name().into(),
                    champion: self.version(),
                    challenger: self.challenger_version(),
                    state: runtime.as_ref().and_then(|rt| rt.state.clone()),
                    current_window: runtime.as_ref().map(|rt| {
                        let (champion, challenger) = (rt.champion.summary(), rt.challenger.summary());
                        WindowRecord {
                            ended_ms: now,
                            ctr_ratio: rollout::ctr_ratio(&champion, &challenger),
                            champion,
                            challenger,
                            crossed: Vec::new(),
                        }
                    }),
                    shadow: runtime
                        .as_ref()
                        .filter(|_| p.config.rollout.strategy == Strategy::Shadow)
                        .map(|rt| rt.shadow.summary()),
                    comparison: runtime.as_ref().filter(|_| p.config.rollout.strategy != Strategy::Shadow).and_then(
                        |rt| {
                            let state = rt.state.as_ref()?;
                            let (mut champion, mut challenger) =
                                (state.champion_outcomes.clone(), state.challenger_outcomes.clone());
                            rollout::add(&mut champion, &rt.champion.outcomes);
                            rollout::add(&mut challenger, &rt.challenger.outcomes);
                            Some(rollout::compare(champion, challenger))
                        },
                    ),
                }
            })
            .collect()
    }

    /// One round of the controller: starts a rollout for a new challenger, judges each window
    /// that has ended, and moves the aliases its decision calls for (then reloads, so the move
    /// serves at once). Returns whether an alias moved.
    pub fn rollout_round(&self) -> Result<bool> {
        if self.rollouts.pipelines.is_empty() {
            return Ok(false);
        }
        // Labels that became final since the last round go to the windows about to be judged.
        self.expire_outcomes();
        let Some(registry) = self.registry()? else { return Ok(false) };
        let aliases = registry.aliases(RECOMMENDER)?;
        let (challenger, champion) = (aliases.get(CHALLENGER).copied(), aliases.get(CHAMPION).copied());
        // When the challenger's alias was last set: a re-set of the same version is a new rollout.
        let since = match challenger {
            Some(v) => registry
                .alias_history(RECOMMENDER, Some(CHALLENGER))?
                .into_iter()
                .rev()
                .find(|m| m.to == Some(v))
                .map(|m| m.at)
                .unwrap_or_default(),
            None => String::new(),
        };
        let now = self.clock.now().0;
        let mut moved = false;
        let mut changed = false;
        for (name, runtime) in &self.rollouts.pipelines {
            let config = &self.pipelines[name].config.rollout;
            let mut rt = runtime.lock();
            // The same challenger under the same strategy continues (also across a restart); a
            // new challenger, a re-set alias or a changed strategy starts over.
            let current = rt
                .state
                .as_ref()
                .map(|s| (s.challenger, s.challenger_since.clone(), s.phase, s.strategy == config.strategy.name()));
            match (current, challenger.filter(|&c| Some(c) != champion)) {
                (Some((v, s, _, true)), Some(c)) if v == c && s == since => {}
                (_, Some(c)) => {
                    rt.state = Some(rollout::start(name, config, c, since.clone(), champion, now));
                    rt.champion = ArmWindow::default();
                    rt.challenger = ArmWindow::default();
                    rt.shadow = ShadowTotals::default();
                    rt.window_started_ms = now;
                    changed = true;
                    drop(rt);
                    tracing::info!(pipeline = %name, challenger = c, strategy = config.strategy.name(), "rollout started");
                    self.audit("rollout.start", name, champion, Some(c), None);
                    continue;
                }
                (Some((_, _, RolloutPhase::Running, _)), None) => {
                    let state = rt.state.as_mut().expect("matched Some");
                    state.phase = RolloutPhase::RolledBack;
                    state.finished_ms = Some(now);
                    state.reason = Some("the challenger alias was moved away".into());
                    changed = true;
                    continue;
                }
                _ => continue,
            }
            let running = rt.state.as_ref().is_some_and(|s| s.phase == RolloutPhase::Running);
            if !running || now - rt.window_started_ms < config.window.as_millis() as i64 {
                continue;
            }
            let (champ, chall) =
                (std::mem::take(&mut rt.champion).summary(), std::mem::take(&mut rt.challenger).summary());
            rt.window_started_ms = now;
            let shadow = (config.strategy == Strategy::Shadow).then(|| rt.shadow.summary());
            let state = rt.state.as_mut().expect("running");
            state.shadow = shadow;
            let decision = rollout::evaluate(state, config, champ, chall, now);
            rollout::apply(state, &decision, now);
            let version = state.challenger;
            let share = state.share;
            changed = true;
            drop(rt);
            match decision {
                Decision::Hold => {}
                Decision::Step { step, share } => {
                    tracing::info!(pipeline = %name, challenger = version, step, share, "rollout step");
                    let why = format!("step {step}: {:.0}% of units", share * 100.0);
                    self.audit("rollout.step", name, None, Some(version), Some(why));
                }
                Decision::Promote => {
                    let why = format!("rollout on `{name}` ({}) passed every step", config.strategy.name());
                    let actor = Actor::new("cascade:rollout", Some(why.clone()));
                    registry.set_alias(RECOMMENDER, CHAMPION, version, &actor)?;
                    registry.delete_alias(RECOMMENDER, CHALLENGER, &actor)?;
                    tracing::info!(pipeline = %name, version, "rollout complete: the challenger is champion");
                    self.audit("rollout.promote", name, champion, Some(version), Some(why));
                    moved = true;
                }
                Decision::Rollback { guardrail, reason } => {
                    let actor = Actor::new("cascade:rollout", Some(format!("pipeline `{name}`: {reason}")));
                    registry.delete_alias(RECOMMENDER, CHALLENGER, &actor)?;
                    metrics::counter!("cascade_rollbacks_total", "pipeline" => name.clone(), "guardrail" => guardrail.clone())
                        .increment(1);
                    tracing::warn!(pipeline = %name, challenger = version, share, %reason, "rollout rolled back");
                    self.audit("rollout.rollback", name, Some(version), champion, Some(reason));
                    moved = true;
                }
            }
        }
        if changed {
            self.rollouts.save();
        }
        if moved {
            self.reload()?;
        }
        Ok(moved)
    }

    /// Appends a rollout's change to the audit log of the registry's data directory.
    fn audit(&self, action: &str, pipeline: &str, before: Option<u64>, after: Option<u64>, why: Option<String>) {
        let data_dir = self.registry.parent().unwrap_or(&self.registry);
        let mut record = AuditRecord::new(self.clock.now(), "cascade:rollout", action, format!("pipeline:{pipeline}"))
            .change(before, after);
        record.why = why;
        if let Err(e) = AuditLog::new(data_dir).append(&record) {
            tracing::error!(error = %e, action, "the audit log cannot be written");
        }
    }
}

/// How often the node runs [`Recommender::rollout_round`].
pub const ROLLOUT_TICK: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::rbo;

    #[test]
    fn rbo_is_one_for_equal_lists_zero_for_disjoint_and_top_weighted() {
        let a = ["a", "b", "c", "d"];
        assert!((rbo(&a, &a, 0.9) - 1.0).abs() < 1e-12);
        assert_eq!(rbo(&a, &["w", "x", "y", "z"], 0.9), 0.0);
        // The same swap costs more at the top than at the bottom.
        let top = rbo(&a, &["b", "a", "c", "d"], 0.9);
        let bottom = rbo(&a, &["a", "b", "d", "c"], 0.9);
        assert!(top < bottom && bottom < 1.0, "{top} {bottom}");
    }
}
