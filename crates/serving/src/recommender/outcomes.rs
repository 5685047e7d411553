//! Outcomes joined to the impressions of running rollouts, per arm, as both arrive in the log
//! (the node's `rollout-outcomes` consumer feeds [`Recommender::join_outcomes`]).
//!
//! Outcomes are attributed by `cascade_eval::policy::Attribution`, the rule `cascade evaluate
//! --policy` uses: by the request id the outcome names, else to the latest impression of the
//! same user and item within `serving.attribution_window`. While any rollout runs, every
//! impression read is indexed (so an outcome goes where the batch rule would put it); those of
//! a running rollout's champion or challenger version count for that arm.
//!
//! Counting is by arrival: an impression counts in the window in which it is read, an
//! outcome in the window in which it is attributed (to an impression of that window or an
//! earlier one). A window's CTR is not the CTR of its own impressions, but both arms are
//! counted the same way from the same instant (the rollout's start: impressions of an earlier
//! rollout never count), so their ratio compares like with like as long as outcomes follow
//! impressions by much less than a window. An impression's 0/1 label for calibration is only
//! final once its attribution window has passed, so the `ece` guardrail reads impressions as
//! they leave the index: it lags the traffic by the attribution window, and never sees a label
//! that could still change.
//!
//! Memory is bounded: impressions leave after the attribution window, or earliest first beyond
//! [`MAX_PENDING`] (unlabelled, counted by `cascade_rollout_pending_evicted_total`). Outcomes
//! naming a request id whose impressions are not in the log yet (the impression writer appends
//! in the background, so a fast client's click can land first) wait up to [`EARLY_GRACE`] for
//! them, then are attributed by user and item like any other.

use super::Recommender;
use crate::rollout::Arm;
use cascade_core::{Impression, Record};
use cascade_eval::policy::{Attribution, Logged, Outcome};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Most impressions waiting for outcomes (about 250 bytes each, measured as the resident size
/// of 200,000 impressions of 10-item responses).
pub const MAX_PENDING: usize = 500_000;
/// How long an outcome naming a request id not read yet waits for its impressions.
pub const EARLY_GRACE: Duration = Duration::from_secs(5);
/// Most such outcomes waiting.
const MAX_EARLY: usize = 50_000;

/// The rollout an impression counts for: its start and its challenger version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RolloutId {
    pub started_ms: i64,
    pub challenger: u64,
}

/// One impression waiting for outcomes.
#[derive(Debug)]
struct Pending {
    request: Arc<str>,
    user: Arc<str>,
    item: Arc<str>,
    /// The pipeline and arm of a running rollout it counts for, if any.
    arm: Option<(Arc<str>, Arm, RolloutId)>,
    /// The served probability, when the heavy ranker ordered the list.
    score: Option<f64>,
    clicked: bool,
    /// When it leaves (its arrival plus the attribution window, on the recommender's clock).
    leaves_ms: i64,
}

/// The join's state: impressions waiting, indexed, and outcomes that came early.
#[derive(Debug)]
pub(super) struct Join {
    /// Outcome types (`[train] interactions`); `None` until the node opens the join.
    types: Option<BTreeMap<String, f64>>,
    window_ms: i64,
    /// [`MAX_PENDING`], but for tests.
    max_pending: usize,
    /// Waiting impressions in arrival order; the front one has id `first`.
    pending: VecDeque<Pending>,
    first: u64,
    index: Attribution<Arc<str>, u64>,
    early: VecDeque<(Outcome, i64)>,
}

impl Default for Join {
    fn default() -> Self {
        Join {
            types: None,
            window_ms: 0,
            max_pending: MAX_PENDING,
            pending: VecDeque::new(),
            first: 0,
            index: Attribution::new(0),
            early: VecDeque::new(),
        }
    }
}

impl Join {
    fn get(&self, id: u64) -> Option<&Pending> {
        self.pending.get(usize::try_from(id.checked_sub(self.first)?).ok()?)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Pending> {
        self.pending.get_mut(usize::try_from(id.checked_sub(self.first)?).ok()?)
    }
}

impl Recommender {
    /// Starts joining outcomes of these types (`[train] interactions`, as
    /// `cascade_eval::policy::outcome_weights` gives them) to rollout impressions, within
    /// `attribution_window`.
    pub fn open_outcomes(&self, types: BTreeMap<String, f64>, attribution_window: Duration) {
        let mut join = self.rollouts.join.lock();
        let window_ms = i64::try_from(attribution_window.as_millis()).unwrap_or(i64::MAX);
        *join = Join { types: Some(types), window_ms, index: Attribution::new(window_ms), ..Join::default() };
    }

    /// Whether any pipeline's rollout is running (impressions are joined only then).
    fn any_rollout_running(&self) -> bool {
        self.rollouts.pipelines.values().any(|rt| rt.lock().running().is_some())
    }

    /// Reads a batch of log records: impressions join the index (those of a running rollout's
    /// arms counted in its window), outcomes are attributed and counted for their impression's
    /// arm. Then impressions past their attribution window leave, with their labels.
    pub fn join_outcomes(&self, batch: &[(u64, Record)]) {
        let now = self.clock.now().0;
        let mut join = self.rollouts.join.lock();
        let Some(types) = join.types.take() else { return };
        let running = self.any_rollout_running();
        let mut indexed = false;
        let mut last: Option<(Arc<str>, Arc<str>)> = None;
        for (_, record) in batch {
            match Logged::read(record, &types) {
                Some(Logged::Impression(imp)) if running => {
                    self.index_impression(&mut join, &imp, &mut last, now);
                    indexed = true;
                }
                Some(Logged::Outcome(outcome)) if running || !join.index.is_empty() => {
                    // The response it names comes first (the batch rule's order), even when
                    // its impressions are not in the log yet.
                    if outcome.request_id.as_deref().is_some_and(|r| !join.index.has_request(r)) {
                        if join.early.len() >= MAX_EARLY
                            && let Some((oldest, _)) = join.early.pop_front()
                        {
                            self.attribute_outcome(&mut join, &oldest);
                        }
                        join.early.push_back((outcome, now + EARLY_GRACE.as_millis() as i64));
                    } else {
                        self.attribute_outcome(&mut join, &outcome);
                    }
                }
                _ => {}
            }
        }
        if indexed && !join.early.is_empty() {
            let early = std::mem::take(&mut join.early);
            for (outcome, until) in early {
                if outcome.request_id.as_deref().is_some_and(|r| join.index.has_request(r)) {
                    self.attribute_outcome(&mut join, &outcome);
                } else {
                    join.early.push_back((outcome, until));
                }
            }
        }
        join.types = Some(types);
        self.expire(&mut join, now);
    }

    /// Lets impressions past their attribution window leave (also while the log is quiet: the
    /// rollout round calls it every tick).
    pub(super) fn expire_outcomes(&self) {
        let now = self.clock.now().0;
        let mut join = self.rollouts.join.lock();
        if join.types.is_some() {
            self.expire(&mut join, now);
        }
    }

    fn index_impression(&self, join: &mut Join, imp: &Impression, last: &mut Option<(Arc<str>, Arc<str>)>, now: i64) {
        // A response's impressions are consecutive in the log: they share their strings.
        let (request, user) = match last.as_ref() {
            Some((r, u)) if **r == *imp.request_id && **u == *imp.user => (r.clone(), u.clone()),
            _ => {
                let shared: (Arc<str>, Arc<str>) = (imp.request_id.as_str().into(), imp.user.as_str().into());
                *last = Some(shared.clone());
                shared
            }
        };
        let new_request = !join.index.has_request(&request);
        let arm = self.rollouts.pipelines.get(imp.pipeline.as_str()).and_then(|runtime| {
            let mut rt = runtime.lock();
            let (arm, id) = rt.arm_of(imp.model_version)?;
            let window = rt.window(arm);
            window.outcomes.impressions += 1;
            window.outcomes.requests += u64::from(new_request);
            Some((rt.name.clone(), arm, id))
        });
        if let Some((pipeline, arm, _)) = &arm {
            metrics::counter!("cascade_rollout_impressions_total", "pipeline" => pipeline.to_string(), "arm" => arm.name())
                .increment(1);
        }
        let item: Arc<str> = imp.item.as_str().into();
        let id = join.first + join.pending.len() as u64;
        join.index.insert(request.clone(), user.clone(), item.clone(), imp.ts, id);
        join.pending.push_back(Pending {
            request,
            user,
            item,
            arm,
            score: (imp.ranked_by == "heavy").then_some(imp.score),
            clicked: false,
            leaves_ms: now.saturating_add(join.window_ms),
        });
    }

    /// Attributes one outcome and counts it for its impression's arm.
    fn attribute_outcome(&self, join: &mut Join, outcome: &Outcome) {
        let found = join.index.find(outcome.request_id.as_deref(), outcome.user.as_deref(), &outcome.item, outcome.ts);
        let Some((id, _)) = found else { return };
        let Some(p) = join.get(id) else { return };
        let Some((pipeline, arm, rollout)) = p.arm.clone() else { return };
        let first_click = !p.clicked;
        // The response converts with its first clicked item.
        let converts = first_click && !join.index.request(&p.request).any(|k| join.get(k).is_some_and(|s| s.clicked));
        if let Some(p) = join.get_mut(id) {
            p.clicked = true;
        }
        let Some(runtime) = self.rollouts.pipelines.get(&*pipeline) else { return };
        let mut rt = runtime.lock();
        if rt.running() != Some(rollout) {
            return;
        }
        let o = &mut rt.window(arm).outcomes;
        o.outcomes += 1;
        o.clicked += u64::from(first_click);
        o.converted += u64::from(converts);
        drop(rt);
        metrics::counter!("cascade_rollout_outcomes_total", "pipeline" => pipeline.to_string(), "arm" => arm.name())
            .increment(1);
    }

    /// Impressions past their attribution window leave; a running rollout's heavy-ranked ones
    /// give their final label to its arm's calibration. Beyond [`MAX_PENDING`] the oldest
    /// leave early, unlabelled. Early outcomes whose response never came within their grace
    /// are attributed by user and item, if they can be.
    fn expire(&self, join: &mut Join, now: i64) {
        while join.early.front().is_some_and(|(_, until)| *until <= now) {
            if let Some((outcome, _)) = join.early.pop_front() {
                self.attribute_outcome(join, &outcome);
            }
        }
        let mut evicted = 0u64;
        while let Some(front) = join.pending.front() {
            let due = front.leaves_ms <= now;
            if !due && join.pending.len() <= join.max_pending {
                break;
            }
            let id = join.first;
            join.first += 1;
            let Some(p) = join.pending.pop_front() else { break };
            join.index.remove(&p.request, &p.user, &p.item, id);
            if !due {
                evicted += 1;
                continue;
            }
            let (Some((pipeline, arm, rollout)), Some(score)) = (&p.arm, p.score) else { continue };
            if let Some(runtime) = self.rollouts.pipelines.get(&**pipeline) {
                let mut rt = runtime.lock();
                if rt.running() == Some(*rollout) {
                    rt.window(*arm).calibration.add(score, p.clicked);
                }
            }
        }
        if evicted > 0 {
            metrics::counter!("cascade_rollout_pending_evicted_total").increment(evicted);
        }
        metrics::gauge!("cascade_rollout_pending_impressions").set(join.pending.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{Live, LiveConfig};
    use crate::pipeline::Pipeline;
    use crate::{RecommenderParts, rollout};
    use cascade_api::ArmOutcomes;
    use cascade_core::{Event, Horizon, ManualClock, Timestamp, Value};
    use std::path::Path;

    const T0: i64 = 1_700_000_000_000;

    /// A recommender whose `default` pipeline runs a champion–challenger rollout of v2 against
    /// v1 (its state read back from the data directory), joining clicks within 60 s.
    async fn recommender(dir: &Path, clock: Arc<ManualClock>) -> Recommender {
        let mut state = rollout::start(
            "default",
            &rollout::RolloutConfig { strategy: rollout::Strategy::ChampionChallenger, ..Default::default() },
            2,
            "t".into(),
            Some(1),
            T0,
        );
        state.champion_outcomes = ArmOutcomes { requests: 10, converted: 1, ..ArmOutcomes::default() };
        let states = BTreeMap::from([("default".to_string(), state)]);
        std::fs::write(dir.join(super::super::ROLLOUTS_FILE), serde_json::to_vec(&states).unwrap()).unwrap();
        let config = cascade_core::Config::default();
        let set = cascade_features::FeatureSet::from_config(&config).unwrap();
        let store = cascade_features::FeaturesStoreConfig::from_config(&config).unwrap();
        let features = Arc::new(cascade_features::OnlineStore::open(&store, dir, set).await.unwrap());
        let parts = RecommenderParts {
            live: Arc::new(Live::new(LiveConfig::default())),
            features,
            registry: dir.join("registry"),
            clock,
            horizon: Horizon::default(),
        };
        let table: toml::Table = toml::from_str("[rollout]\nstrategy = \"champion_challenger\"\n").unwrap();
        let pipelines = Pipeline::from_tables(&BTreeMap::from([("default".to_string(), table)])).unwrap();
        let rec = Recommender::new(parts, pipelines, "default".into()).unwrap();
        rec.open_outcomes(BTreeMap::from([("click".to_string(), 1.0)]), Duration::from_secs(60));
        rec
    }

    fn shown(request: &str, user: &str, item: &str, version: u64, score: f64) -> (u64, Record) {
        let imp = Impression {
            request_id: request.into(),
            user: user.into(),
            item: item.into(),
            ts: Timestamp(T0 + 1_000),
            pipeline: "default".into(),
            position: 0,
            score,
            propensity: 1.0,
            explored: false,
            greedy_rank: Some(0),
            k: 10,
            slots: 0,
            tail: 0,
            ranked_by: "heavy".into(),
            model_version: Some(version),
            feature_digest: None,
        };
        (0, Record::Event(imp.to_event()))
    }

    fn click(user: &str, item: &str, request: Option<&str>) -> (u64, Record) {
        let fields = request.map(|r| ("request_id".to_string(), Value::String(r.into()))).into_iter().collect();
        let event = Event {
            id: None,
            event_type: "click".into(),
            ts: Timestamp(T0 + 5_000),
            user: Some(user.into()),
            item: Some(item.into()),
            fields,
        };
        (0, Record::Event(event))
    }

    fn windows(rec: &Recommender) -> (ArmOutcomes, ArmOutcomes) {
        let rt = rec.rollouts.pipelines["default"].lock();
        (rt.champion.outcomes.clone(), rt.challenger.outcomes.clone())
    }

    #[tokio::test]
    async fn outcomes_count_for_their_impressions_arm_and_labels_come_when_the_window_passes() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp(T0)));
        let rec = recommender(dir.path(), clock.clone()).await;
        rec.join_outcomes(&[
            shown("r1", "u1", "a", 1, 0.8),
            shown("r1", "u1", "b", 1, 0.2),
            shown("r2", "u2", "a", 2, 0.6),
            shown("r2", "u2", "c", 2, 0.3),
            // Another version (a fallback bundle): indexed, counted for no arm.
            shown("r3", "u3", "a", 9, 0.5),
            // By request id; a second click on the same response converts it only once.
            click("u1", "b", Some("r1")),
            click("u1", "a", Some("r1")),
            click("u1", "a", Some("r1")),
            // By (user, item) within the window.
            click("u2", "c", None),
            click("u3", "a", None),
            // Names a response not read yet: it waits for it.
            click("u4", "d", Some("r4")),
            // Names a response that never comes: after the grace, by (user, item).
            click("u2", "a", Some("r-lost")),
            // Follows nothing.
            click("u5", "z", None),
        ]);
        let (champion, challenger) = windows(&rec);
        let o = |requests, converted, impressions, clicked, outcomes| ArmOutcomes {
            requests,
            converted,
            impressions,
            clicked,
            outcomes,
        };
        assert_eq!(champion, o(1, 1, 2, 2, 3));
        assert_eq!(challenger, o(1, 1, 2, 1, 1));
        // The early click finds its response when the impression writer gets to it.
        clock.advance(Duration::from_secs(2));
        rec.join_outcomes(&[shown("r4", "u4", "d", 2, 0.9)]);
        assert_eq!(windows(&rec).1, o(2, 2, 3, 2, 2));

        // Labels are final once the attribution window has passed: none before.
        assert!(rec.rollouts.pipelines["default"].lock().challenger.calibration.is_empty());
        clock.advance(Duration::from_secs(60));
        rec.expire_outcomes();
        assert_eq!(windows(&rec).1, o(2, 2, 3, 3, 3), "the lost response's click found u2's a");
        {
            let rt = rec.rollouts.pipelines["default"].lock();
            assert_eq!((rt.champion.calibration.len(), rt.challenger.calibration.len()), (2, 3));
            // Champion: 0.8 and 0.2, both clicked → |1 − 0.8| / 2 + |1 − 0.2| / 2.
            assert!((rt.champion.calibration.ece().unwrap() - 0.5).abs() < 1e-12);
            // Challenger: 0.6, 0.3 and 0.9, all clicked.
            let expected = (0.4 + 0.7 + 0.1) / 3.0;
            assert!((rt.challenger.calibration.ece().unwrap() - expected).abs() < 1e-12);
        }
        let join = rec.rollouts.join.lock();
        assert!(join.pending.is_empty() && join.index.is_empty() && join.early.is_empty(), "{join:?}");
        drop(join);
        // A click after its impression left is attributed to nothing.
        rec.join_outcomes(&[click("u1", "b", Some("r1"))]);
        assert_eq!(windows(&rec).0, o(1, 1, 2, 2, 3));

        // The status compares the arms per request, with the totals of windows judged before.
        let status = rec.rollouts();
        let comparison = status[0].comparison.as_ref().unwrap();
        assert_eq!((comparison.champion.requests, comparison.champion.converted), (11, 2));
        assert_eq!((comparison.challenger.requests, comparison.challenger.converted), (2, 2));
        assert_eq!(comparison.difference, Some(1.0 - 2.0 / 11.0));
        let (low, high) = (comparison.ci95_low.unwrap(), comparison.ci95_high.unwrap());
        assert!(low < comparison.difference.unwrap() && comparison.difference.unwrap() < high);
        let window = status[0].current_window.as_ref().unwrap();
        assert_eq!((window.champion.ctr, window.challenger.ctr, window.ctr_ratio), (Some(1.0), Some(1.0), Some(1.0)));
    }

    #[tokio::test]
    async fn nothing_is_kept_without_a_running_rollout_and_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp(T0)));
        let rec = recommender(dir.path(), clock.clone()).await;
        // Past the cap, the oldest impressions leave early, unlabelled.
        rec.rollouts.join.lock().max_pending = 1_000;
        let batch: Vec<_> = (0..1_010).map(|i| shown(&format!("r{i}"), "u", &format!("i{}", i % 7), 1, 0.5)).collect();
        rec.join_outcomes(&batch);
        assert_eq!(rec.rollouts.join.lock().pending.len(), 1_000);
        clock.advance(Duration::from_secs(61));
        rec.expire_outcomes();
        let labelled = rec.rollouts.pipelines["default"].lock().champion.calibration.len();
        assert_eq!(labelled, 1_000);
        // The rollout ends: impressions are no longer indexed.
        rec.rollouts.pipelines["default"].lock().state.as_mut().unwrap().phase = cascade_api::RolloutPhase::RolledBack;
        rec.join_outcomes(&[shown("x", "u", "a", 1, 0.5), click("u", "a", Some("x"))]);
        let join = rec.rollouts.join.lock();
        assert!(join.pending.is_empty() && join.early.is_empty());
    }
}
