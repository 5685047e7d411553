//! Off-policy evaluation of a serving policy on the impressions serving logged (`cascade
//! evaluate --policy`).
//!
//! The log holds one `impression` event per shown item ([`cascade_core::Impression`]), with the
//! probability the serving policy had of showing it (its propensity), and outcome events
//! (clicks, plays, ...). This module reads both from log records ([`LogEvents::read`]), joins
//! outcomes to impressions ([`attribute`]), works out the probability a target policy would
//! have shown each logged item ([`Target`]) and hands both to [`crate::offpolicy`]'s IPS and
//! SNIPS estimators ([`evaluate`]).
//!
//! Conventions:
//! - A request is one response: the impressions sharing a `request_id`.
//! - An outcome counts for the impression of the request its `fields.request_id` names (same
//!   item), whatever its time; otherwise for the latest impression of the same user and item
//!   with `ts` in `(outcome.ts - window, outcome.ts]`. Each outcome counts at most once.
//! - An impression's reward is the sum of the weights of the outcomes attributed to it (two
//!   clicks count twice); a weight is the type's `[train] interactions` weight, or 1 for an
//!   outcome type named explicitly that is not listed there ([`outcome_weights`]).
//! - `greedy_rank` is read as the item's position in the list exploration worked on (after the
//!   filtering rules). `n_ranked` (that list's length) is not logged; see `Slate`.

use crate::error::{Error, Result};
use crate::offpolicy::{Estimate, LoggedItem, epsilon_greedy_inclusion, explored_slots, ips, snips};
use cascade_core::config::EntityKind;
use cascade_core::{Config, IMPRESSION, Impression, ImpressionError, Record, Timestamp, Value};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

/// The policy being evaluated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The policy that logged the impressions.
    Logged,
    /// The ranker's top k, no exploration.
    Greedy,
    /// Epsilon-greedy exploration with this share of the k slots and the logged tail.
    Epsilon(f64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Logged => f.write_str("logged"),
            Target::Greedy => f.write_str("greedy"),
            Target::Epsilon(share) => write!(f, "epsilon:{share}"),
        }
    }
}

/// `logged`, `greedy` or `epsilon:<share>` with the share within 0..=1.
impl FromStr for Target {
    type Err = Error;

    fn from_str(text: &str) -> Result<Target> {
        let invalid = |reason| Error::InvalidTarget { text: text.to_string(), reason };
        match text {
            "logged" => Ok(Target::Logged),
            "greedy" => Ok(Target::Greedy),
            _ => {
                let share = text
                    .strip_prefix("epsilon:")
                    .ok_or_else(|| invalid("expected logged, greedy or epsilon:<share>, e.g. epsilon:0.1"))?;
                match share.parse::<f64>() {
                    Ok(s) if (0.0..=1.0).contains(&s) => Ok(Target::Epsilon(s)),
                    _ => Err(invalid("the share of explored slots must be a number within 0..=1")),
                }
            }
        }
    }
}

/// One outcome event (click, play, purchase, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub user: Option<String>,
    pub item: String,
    pub ts: Timestamp,
    /// `fields.request_id`, when the project declared it and the client sent it.
    pub request_id: Option<String>,
    /// The type's weight.
    pub reward: f64,
}

/// How an outcome found its impression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    RequestId,
    Window,
}

/// For every outcome, the impression (index into `impressions`) it counts for, and how.
///
/// First the impression of the same item in the request the outcome's `request_id` names, at
/// any time: the client said which response it came from, and its clock need not agree with
/// the server's. Otherwise (no request_id, or one naming no impression of that item) the
/// latest impression of the same user and item with `ts` in `(outcome.ts - window_ms,
/// outcome.ts]`, ties going to the one logged last. An outcome maps to at most one impression;
/// an impression can collect several outcomes. The rule is [`Attribution::find`]'s, which
/// serving's rollouts also join outcomes with as they arrive.
pub fn attribute(impressions: &[Impression], outcomes: &[Outcome], window_ms: i64) -> Vec<Option<(usize, Via)>> {
    let mut index = Attribution::new(window_ms);
    for (i, imp) in impressions.iter().enumerate() {
        index.insert(imp.request_id.as_str(), imp.user.as_str(), imp.item.as_str(), imp.ts, i);
    }
    outcomes.iter().map(|o| index.find(o.request_id.as_deref(), o.user.as_deref(), &o.item, o.ts)).collect()
}

/// Impressions indexed the way outcomes find them (the rule of [`attribute`]): by request id
/// and item, and by user and item in time order. `S` is the string the index holds (`&str` over
/// impressions kept elsewhere, `Arc<str>` for an index that outlives its input); `K` is what the
/// caller knows an impression by. An index can be kept up to date as impressions arrive and
/// leave ([`Attribution::remove`]), so it also serves a stream.
#[derive(Debug)]
pub struct Attribution<S, K> {
    window_ms: i64,
    /// request id → (item, impression), in insertion order.
    by_request: HashMap<S, Vec<(S, K)>>,
    /// user → item → (ts, impression), by ts, ties in insertion order (a deque: a stream
    /// removes the oldest, at the front).
    by_pair: HashMap<S, HashMap<S, VecDeque<(Timestamp, K)>>>,
}

impl<S, K> Attribution<S, K>
where
    S: Borrow<str> + Eq + Hash + Clone,
    K: Copy + PartialEq,
{
    /// An empty index attributing by (user, item) within `window_ms` (0: by request id only).
    pub fn new(window_ms: i64) -> Self {
        Attribution { window_ms, by_request: HashMap::new(), by_pair: HashMap::new() }
    }

    /// Indexes one impression.
    pub fn insert(&mut self, request: S, user: S, item: S, ts: Timestamp, key: K) {
        self.by_request.entry(request).or_default().push((item.clone(), key));
        let list = self.by_pair.entry(user).or_default().entry(item).or_default();
        let at = list.partition_point(|(t, _)| *t <= ts);
        list.insert(at, (ts, key));
    }

    /// The impression an outcome on `item` at `ts` counts for (see [`attribute`]), and how.
    pub fn find(&self, request: Option<&str>, user: Option<&str>, item: &str, ts: Timestamp) -> Option<(K, Via)> {
        let named = request
            .and_then(|r| self.by_request.get(r))
            .and_then(|items| items.iter().find(|(i, _)| i.borrow() == item).map(|(_, k)| *k));
        if let Some(k) = named {
            return Some((k, Via::RequestId));
        }
        let list = self.by_pair.get(user?)?.get(item)?;
        let &(at, k) = list.get(list.partition_point(|(t, _)| *t <= ts).checked_sub(1)?)?;
        (at.0 > ts.0.saturating_sub(self.window_ms)).then_some((k, Via::Window))
    }

    /// The impressions of one request, in insertion order.
    pub fn request(&self, request: &str) -> impl Iterator<Item = K> + '_ {
        self.by_request.get(request).into_iter().flatten().map(|(_, k)| *k)
    }

    /// Whether an impression of `request` is indexed.
    pub fn has_request(&self, request: &str) -> bool {
        self.by_request.contains_key(request)
    }

    /// Forgets one impression (as inserted).
    pub fn remove(&mut self, request: &str, user: &str, item: &str, key: K) {
        if let Some(items) = self.by_request.get_mut(request) {
            items.retain(|(_, k)| *k != key);
            if items.is_empty() {
                self.by_request.remove(request);
            }
        }
        if let Some(by_item) = self.by_pair.get_mut(user) {
            if let Some(list) = by_item.get_mut(item) {
                if let Some(at) = list.iter().position(|(_, k)| *k == key) {
                    list.remove(at);
                }
                if list.is_empty() {
                    by_item.remove(item);
                }
            }
            if by_item.is_empty() {
                self.by_pair.remove(user);
            }
        }
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_request.is_empty()
    }
}

/// What one request's impressions say about the ranked list its logger explored.
///
/// `n_ranked` is not logged. It only matters for ranks inside an exploration tail that the list
/// ends in (the tail is cut there, so each of its items is more likely to be explored), and the
/// logged propensity of an epsilon-greedy explored item, `m / |tail|`, gives the logged tail's
/// length exactly. So:
/// - the logger explores (m > 0) but explored nothing here: the list held at most k items
///   (every policy shows all of them), n_ranked = k;
/// - an epsilon-greedy logger's explored item with propensity `m / t`, `t < tail`: the list
///   ended inside the tail, n_ranked = k - m + t (exact);
/// - otherwise (the tail was full, the logger does not explore, or its propensities are
///   Thompson's Monte Carlo estimates, which say nothing about the tail's length):
///   n_ranked = max(greedy_rank + 1, k + tail), i.e. the list is assumed to reach past every
///   tail window; exact whenever the list held at least k + tail items.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Slate {
    k: usize,
    tail: usize,
    /// Ranks below this were shown greedily (k - m when the request explored, else k).
    cut: usize,
    n_ranked: usize,
    /// The logger could show ranks [0, logged_end).
    logged_end: usize,
    /// The shown greedy items are not exactly ranks 0..cut: rules removed, skipped or displaced
    /// ranked items, and the ranks of explored items may be off by what they removed.
    reshaped: bool,
}

/// The logged tail length `t` an epsilon-greedy propensity `m / t` reveals, if it is one.
fn tail_length(m: usize, tail: usize, propensity: f64) -> Option<usize> {
    if m == 0 || !(propensity > 0.0 && propensity <= 1.0) {
        return None;
    }
    let t = (m as f64 / propensity).round();
    // Serving computes the propensity as `m as f64 / t as f64`, so a genuine one matches exactly.
    (t >= m as f64 && t <= tail as f64 && m as f64 / t == propensity).then_some(t as usize)
}

impl Slate {
    /// `tails_known`: the logger's propensities are epsilon-greedy's (see [`Slate`]).
    fn new(items: &[&Impression], tails_known: bool) -> Slate {
        let first = items[0];
        let (k, tail) = (first.k, first.tail);
        let m = first.slots.min(tail).min(k);
        let greedy = k - m;
        let max_rank = items.iter().filter_map(|i| i.greedy_rank).max();
        let assumed = max_rank.map_or(0, |r| r + 1).max(k.saturating_add(tail));
        let explored = items.iter().find(|i| i.explored).map(|i| i.propensity);
        let n_ranked = match explored {
            None if m > 0 => k,
            None => assumed,
            Some(p) => match tails_known.then(|| tail_length(m, tail, p)).flatten() {
                Some(t) if t < tail => greedy + t,
                _ => assumed,
            },
        };
        let (cut, logged_end) = match explored {
            Some(_) => (greedy, n_ranked.min(greedy.saturating_add(tail))),
            None => (k, n_ranked.min(k)),
        };
        let greedy_ranks: HashSet<usize> = items.iter().filter(|i| !i.explored).filter_map(|i| i.greedy_rank).collect();
        let reshaped = max_rank.is_some_and(|max| (0..cut.min(max + 1)).any(|r| !greedy_ranks.contains(&r)));
        Slate { k, tail, cut, n_ranked, logged_end, reshaped }
    }
}

impl Target {
    /// The target's probability of showing ranked position `rank` of this request's list.
    fn inclusion(self, rank: usize, slate: &Slate) -> f64 {
        match self {
            Target::Logged => unreachable!("the logged policy's propensities are read from the log"),
            Target::Greedy => f64::from(u8::from(rank < slate.k.min(slate.n_ranked))),
            Target::Epsilon(share) => {
                let slots = explored_slots(share, slate.k);
                epsilon_greedy_inclusion(rank, slate.n_ranked, slate.k, slots, slate.tail)
            }
        }
    }

    /// The target's probability of showing a logged item.
    ///
    /// Items a rule pinned (no `greedy_rank`) and items the logger showed unexplored below its
    /// greedy cut (backups that rules pulled in after skipping slate items) get 1 under every
    /// target: serving logs them with propensity 1, treating a rule-filled slot like a greedy
    /// one, and the target would meet the same rules.
    fn propensity(self, imp: &Impression, slate: &Slate) -> f64 {
        match (self, imp.greedy_rank) {
            (Target::Logged, _) => imp.propensity,
            (_, None) => 1.0,
            (_, Some(rank)) if !imp.explored && rank >= slate.cut => 1.0,
            (_, Some(rank)) => self.inclusion(rank, slate),
        }
    }

    /// The target's expected number of shown items at ranks the logger never shows in this
    /// request, and its expected slate size.
    fn unsupported(self, slate: &Slate) -> (f64, f64) {
        if self == Target::Logged {
            return (0.0, 0.0);
        }
        // Every target's inclusion is 0 from rank k + tail on.
        let end = slate.n_ranked.min(slate.k.saturating_add(slate.tail));
        let outside = (slate.logged_end..end).map(|r| self.inclusion(r, slate)).sum();
        (outside, slate.n_ranked.min(slate.k) as f64)
    }
}

/// What [`evaluate`] needs besides the events.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub target: Target,
    pub window_ms: i64,
    pub clip: Option<f64>,
    pub pipeline: Option<String>,
}

/// A mean over requests with its standard error (NaN with fewer than two requests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mean {
    pub value: f64,
    pub std_error: f64,
}

/// The result of [`evaluate`].
#[derive(Debug)]
pub struct Evaluation {
    pub requests: usize,
    pub impressions: usize,
    /// Outcome events read, and how those counting for the evaluated requests were attributed.
    pub outcomes: usize,
    pub by_request_id: usize,
    pub by_window: usize,
    /// Outcomes that match no impression at all (with `Options::pipeline`, those matching another
    /// pipeline's impressions are neither attributed nor counted here).
    pub unattributed: usize,
    /// The logging policy's mean reward per request, as observed.
    pub logged: Mean,
    pub ips: Estimate,
    /// SNIPS, or why it has no value (every weight 0).
    pub snips: Result<Estimate>,
    /// Share of the target's expected slate at ranks the logger never showed: rewards there are
    /// missing from both estimates, which are biased low by about that share of the value.
    pub unsupported_share: f64,
    /// Requests whose greedy items are not exactly the top ranks (see `Slate::reshaped`).
    pub reshaped: usize,
}

/// Off-policy evaluation of `options.target` on logged impressions and outcome events.
pub fn evaluate(impressions: &[Impression], outcomes: &[Outcome], options: &Options) -> Result<Evaluation> {
    if impressions.is_empty() {
        return Err(Error::NoImpressions);
    }
    // Attribution sees every impression, so an outcome of another pipeline's response is never
    // pinned on the evaluated one's.
    let links = attribute(impressions, outcomes, options.window_ms);
    let mut rewards = vec![0.0; impressions.len()];
    for (link, outcome) in links.iter().zip(outcomes) {
        if let Some((i, _)) = link {
            rewards[*i] += outcome.reward;
        }
    }

    let mut request_of: HashMap<&str, usize> = HashMap::new();
    let mut requests: Vec<Vec<usize>> = Vec::new();
    let mut request_index = Vec::with_capacity(impressions.len());
    for (i, imp) in impressions.iter().enumerate() {
        let r = *request_of.entry(imp.request_id.as_str()).or_insert_with(|| {
            requests.push(Vec::new());
            requests.len() - 1
        });
        requests[r].push(i);
        request_index.push(r);
    }
    let selected: Vec<bool> = requests
        .iter()
        .map(|items| options.pipeline.as_ref().is_none_or(|p| impressions[items[0]].pipeline == *p))
        .collect();
    if !selected.contains(&true) {
        let logged: BTreeSet<&str> = impressions.iter().map(|i| i.pipeline.as_str()).collect();
        return Err(Error::NoPipelineImpressions {
            pipeline: options.pipeline.clone().unwrap_or_default(),
            logged: logged.into_iter().map(String::from).collect(),
        });
    }

    // A pipeline whose explored propensities are all epsilon-greedy's `m / t` reveals its tails.
    let mut tails_known: HashMap<&str, bool> = HashMap::new();
    for imp in impressions {
        let known = tails_known.entry(imp.pipeline.as_str()).or_insert(true);
        if imp.explored {
            *known &= tail_length(imp.slots.min(imp.tail).min(imp.k), imp.tail, imp.propensity).is_some();
        }
    }

    let (mut logged_items, mut outside, mut target_total, mut reshaped, mut shown) = (Vec::new(), 0.0, 0.0, 0, 0);
    let mut logged_sums = Vec::new();
    for (items, _) in requests.iter().zip(&selected).filter(|(_, s)| **s) {
        let imps: Vec<&Impression> = items.iter().map(|&i| &impressions[i]).collect();
        let slate = Slate::new(&imps, tails_known[imps[0].pipeline.as_str()]);
        reshaped += usize::from(slate.reshaped);
        let (o, t) = options.target.unsupported(&slate);
        outside += o;
        target_total += t;
        shown += items.len();
        logged_sums.push(items.iter().map(|&i| rewards[i]).sum::<f64>());
        logged_items.push(
            items
                .iter()
                .map(|&i| LoggedItem {
                    reward: rewards[i],
                    logging_propensity: impressions[i].propensity,
                    target_propensity: options.target.propensity(&impressions[i], &slate),
                })
                .collect::<Vec<_>>(),
        );
    }
    let (mut by_request_id, mut by_window, mut unattributed) = (0, 0, 0);
    for link in &links {
        match link {
            Some((i, via)) if selected[request_index[*i]] => match via {
                Via::RequestId => by_request_id += 1,
                Via::Window => by_window += 1,
            },
            Some(_) => {}
            None => unattributed += 1,
        }
    }

    let ips = ips(&logged_items, options.clip)?;
    let snips = snips(&logged_items, options.clip);
    Ok(Evaluation {
        requests: logged_items.len(),
        impressions: shown,
        outcomes: outcomes.len(),
        by_request_id,
        by_window,
        unattributed,
        logged: mean(&logged_sums),
        ips,
        snips,
        unsupported_share: if target_total > 0.0 { outside / target_total } else { 0.0 },
        reshaped,
    })
}

fn mean(xs: &[f64]) -> Mean {
    let n = xs.len() as f64;
    let value = xs.iter().sum::<f64>() / n;
    let std_error = if xs.len() < 2 {
        f64::NAN
    } else {
        (xs.iter().map(|x| (x - value) * (x - value)).sum::<f64>() / (n - 1.0) / n).sqrt()
    };
    Mean { value, std_error }
}

/// Impressions and outcome events read from the log.
#[derive(Debug, Default)]
pub struct LogEvents {
    pub impressions: Vec<Impression>,
    pub outcomes: Vec<Outcome>,
    /// Impression events without the fields serving logs, skipped.
    pub skipped: usize,
    /// The first of those: its log offset and what is wrong with it.
    pub first_skip: Option<(u64, ImpressionError)>,
}

impl LogEvents {
    /// Reads `(offset, record)` pairs in log order: every impression event, and every event of a
    /// type in `weights` (see [`outcome_weights`]) that names an item, as an outcome with its
    /// type's weight. Other records are ignored; the first error of `records` is returned.
    pub fn read<E>(
        records: impl IntoIterator<Item = std::result::Result<(u64, Record), E>>,
        weights: &BTreeMap<String, f64>,
    ) -> std::result::Result<LogEvents, E> {
        let mut out = LogEvents::default();
        for entry in records {
            let (offset, record) = entry?;
            out.push(offset, &record, weights);
        }
        Ok(out)
    }

    fn push(&mut self, offset: u64, record: &Record, weights: &BTreeMap<String, f64>) {
        match Logged::read(record, weights) {
            Some(Logged::Impression(imp)) => self.impressions.push(imp),
            Some(Logged::Broken(reason)) => {
                self.skipped += 1;
                self.first_skip.get_or_insert((offset, reason));
            }
            Some(Logged::Outcome(outcome)) => self.outcomes.push(outcome),
            None => {}
        }
    }
}

/// What one log record is to attribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Logged {
    Impression(Impression),
    /// An impression event without the fields serving logs.
    Broken(ImpressionError),
    Outcome(Outcome),
}

impl Logged {
    /// Reads a record: an impression event, or an event of a type in `weights` (see
    /// [`outcome_weights`]) that names an item, as an outcome with its type's weight and its
    /// `fields.request_id` when it is a string. `None` for anything else.
    pub fn read(record: &Record, weights: &BTreeMap<String, f64>) -> Option<Logged> {
        let Record::Event(e) = record else { return None };
        if e.event_type == IMPRESSION {
            return Some(match Impression::from_event(e) {
                Ok(imp) => Logged::Impression(imp),
                Err(reason) => Logged::Broken(reason),
            });
        }
        let (Some(&reward), Some(item)) = (weights.get(&e.event_type), &e.item) else { return None };
        let request_id = match e.field("request_id") {
            Some(Value::String(r)) => Some(r.clone()),
            _ => None,
        };
        Some(Logged::Outcome(Outcome { user: e.user.clone(), item: item.clone(), ts: e.ts, request_id, reward }))
    }
}

/// Outcome types and their weights: `names` (each weighted as in `[train] interactions`, or 1
/// when not listed there), or, when `names` is empty, the `[train] interactions` types.
///
/// Errors: a name that is not a declared event type, or is the impression type
/// ([`Error::NotAnOutcome`]); a type whose events carry no item ([`Error::OutcomeWithoutItem`]).
pub fn outcome_weights(config: &Config, names: &[String]) -> Result<BTreeMap<String, f64>> {
    let interactions = &config.interactions()?;
    if names.is_empty() {
        return Ok(interactions.iter().map(|(t, w)| (t.clone(), f64::from(*w))).collect());
    }
    let mut weights = BTreeMap::new();
    for name in names {
        let declared = config.events.get(name.as_str());
        if name == IMPRESSION || declared.is_none() {
            let declared = config.events.keys().filter(|t| *t != IMPRESSION).cloned().collect();
            return Err(Error::NotAnOutcome { name: name.clone(), declared });
        }
        if declared.is_some_and(|d| !d.entities.contains(&EntityKind::Item)) {
            return Err(Error::OutcomeWithoutItem(name.clone()));
        }
        weights.insert(name.clone(), interactions.get(name.as_str()).map_or(1.0, |w| f64::from(*w)));
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(request: &str, user: &str, item: &str, ts: i64) -> Impression {
        Impression {
            request_id: request.into(),
            user: user.into(),
            item: item.into(),
            ts: Timestamp(ts),
            pipeline: "default".into(),
            position: 0,
            score: 0.0,
            propensity: 1.0,
            explored: false,
            greedy_rank: Some(0),
            k: 3,
            slots: 1,
            tail: 4,
            ranked_by: "heavy".into(),
            model_version: None,
            feature_digest: None,
        }
    }

    fn outcome(user: &str, item: &str, ts: i64, request: Option<&str>) -> Outcome {
        Outcome {
            user: Some(user.into()),
            item: item.into(),
            ts: Timestamp(ts),
            request_id: request.map(Into::into),
            reward: 1.0,
        }
    }

    #[test]
    fn request_id_match_wins_over_a_later_impression() {
        let imps = [imp("r1", "u", "a", 1_000), imp("r2", "u", "a", 2_000), imp("r2", "u", "b", 2_000)];
        let outs = [
            outcome("u", "a", 2_500, Some("r1")),
            outcome("u", "a", 2_500, None),
            // Names a request, but not one that showed this item: the window decides.
            outcome("u", "b", 2_500, Some("r1")),
            // An explicit request_id counts even from before the impression (client clocks).
            outcome("u", "a", 500, Some("r1")),
            outcome("u", "a", 10_000_000, Some("r2")),
        ];
        assert_eq!(
            attribute(&imps, &outs, 3_600_000),
            [
                Some((0, Via::RequestId)),
                Some((1, Via::Window)),
                Some((2, Via::Window)),
                Some((0, Via::RequestId)),
                Some((1, Via::RequestId)),
            ]
        );
    }

    #[test]
    fn window_bounds_are_open_below_and_closed_at_the_outcome() {
        let window = 1_000;
        let imps = [imp("r1", "u", "a", 10_000)];
        let at = |ts| attribute(&imps, &[outcome("u", "a", ts, None)], window)[0];
        assert_eq!(at(10_000), Some((0, Via::Window)), "same millisecond counts");
        assert_eq!(at(10_999), Some((0, Via::Window)));
        assert_eq!(at(11_000), None, "exactly one window later is outside (outcome.ts - window, outcome.ts]");
        assert_eq!(at(9_999), None, "an outcome before the impression is not attributed");
        assert_eq!(attribute(&imps, &[outcome("u", "a", 10_000, None)], 0)[0], None, "0s: request_id only");
        // Another user or item never matches through the window.
        assert_eq!(attribute(&imps, &[outcome("v", "a", 10_500, None)], window)[0], None);
        assert_eq!(attribute(&imps, &[outcome("u", "b", 10_500, None)], window)[0], None);
        let no_user = Outcome { user: None, ..outcome("u", "a", 10_500, None) };
        assert_eq!(attribute(&imps, &[no_user], window)[0], None);
    }

    #[test]
    fn the_latest_impression_takes_the_outcome_and_each_outcome_counts_once() {
        // Logged out of time order; ties at the same ms go to the one logged last.
        let imps = [
            imp("r3", "u", "a", 3_000),
            imp("r1", "u", "a", 1_000),
            imp("r2", "u", "a", 2_000),
            imp("r4", "u", "a", 3_000),
        ];
        let outs = [outcome("u", "a", 2_500, None), outcome("u", "a", 3_500, None), outcome("u", "a", 3_500, None)];
        let links = attribute(&imps, &outs, 60_000);
        assert_eq!(links, [Some((2, Via::Window)), Some((3, Via::Window)), Some((3, Via::Window))]);
        // Two outcomes on one impression add up; none is counted twice.
        let e = evaluate(&imps, &outs, &options(Target::Logged)).unwrap();
        assert_eq!((e.by_window, e.by_request_id, e.unattributed), (3, 0, 0));
        assert_eq!(e.logged.value, 3.0 / 4.0);
    }

    /// A stream's index (impressions arriving and leaving, owned strings) attributes as the
    /// batch rule does over the impressions still in it.
    #[test]
    fn an_index_kept_up_to_date_attributes_as_the_batch_rule() {
        use proptest::prelude::*;
        use std::sync::Arc;
        let impression = (0u8..6, 0u8..3, 0u8..4, 0i64..50)
            .prop_map(|(r, u, i, ts)| imp(&format!("r{r}"), &format!("u{u}"), &format!("i{i}"), ts * 100));
        let outcome = (proptest::option::of(0u8..7), 0u8..3, 0u8..4, 0i64..60).prop_map(|(r, u, i, ts)| {
            outcome(&format!("u{u}"), &format!("i{i}"), ts * 100, r.map(|r| format!("r{r}")).as_deref())
        });
        let cases = (
            proptest::collection::vec(impression, 0..40),
            proptest::collection::vec(any::<bool>(), 40),
            proptest::collection::vec(outcome, 1..30),
        );
        proptest!(|((imps, gone, outs) in cases)| {
            let window = 700;
            let mut index: Attribution<Arc<str>, usize> = Attribution::new(window);
            for (k, i) in imps.iter().enumerate() {
                index.insert(i.request_id.as_str().into(), i.user.as_str().into(), i.item.as_str().into(), i.ts, k);
            }
            let mut kept = Vec::new();
            for (k, i) in imps.iter().enumerate() {
                if gone[k] {
                    index.remove(&i.request_id, &i.user, &i.item, k);
                } else {
                    kept.push(k);
                }
            }
            let remaining: Vec<Impression> = kept.iter().map(|&k| imps[k].clone()).collect();
            let batch: Vec<_> = attribute(&remaining, &outs, window)
                .into_iter()
                .map(|link| link.map(|(i, via)| (kept[i], via)))
                .collect();
            let streamed: Vec<_> =
                outs.iter().map(|o| index.find(o.request_id.as_deref(), o.user.as_deref(), &o.item, o.ts)).collect();
            prop_assert_eq!(batch, streamed);
            for &k in &kept {
                index.remove(&imps[k].request_id, &imps[k].user, &imps[k].item, k);
            }
            prop_assert!(index.is_empty() && index.by_pair.is_empty(), "removing everything leaves nothing");
        });
    }

    fn options(target: Target) -> Options {
        Options { target, window_ms: 3_600_000, clip: None, pipeline: None }
    }

    /// One request shown by a k = 10 epsilon-greedy logger with m = 3 and a tail of 8: ranks
    /// 0..7 greedy, three of ranks 7..15 explored (3/8 each).
    fn request(explored: &[usize], propensity: f64) -> Vec<Impression> {
        let mut items: Vec<Impression> = (0..7)
            .map(|r| Impression {
                greedy_rank: Some(r),
                k: 10,
                slots: 3,
                tail: 8,
                ..imp("r", "u", &format!("i{r}"), 0)
            })
            .collect();
        items.extend(explored.iter().map(|&r| Impression {
            greedy_rank: Some(r),
            explored: true,
            propensity,
            k: 10,
            slots: 3,
            tail: 8,
            ..imp("r", "u", &format!("i{r}"), 0)
        }));
        items
    }

    fn targets(items: &[Impression], target: Target) -> Vec<f64> {
        let refs: Vec<&Impression> = items.iter().collect();
        let slate = Slate::new(&refs, true);
        items.iter().map(|i| target.propensity(i, &slate)).collect()
    }

    #[test]
    fn greedy_target_shows_the_top_k() {
        let items = request(&[8, 9, 13], 3.0 / 8.0);
        let mut expected = vec![1.0; 7];
        expected.extend([1.0, 1.0, 0.0]);
        assert_eq!(targets(&items, Target::Greedy), expected);
        assert_eq!(targets(&items, Target::Epsilon(0.0)), expected, "epsilon:0 is greedy");
        assert_eq!(targets(&items, Target::Logged).last(), Some(&(3.0 / 8.0)));
        // A pinned item, and an unexplored backup below the cut, count as shown by any target.
        let pinned = Impression { greedy_rank: None, ..items[0].clone() };
        let backup = Impression { greedy_rank: Some(20), ..items[0].clone() };
        let refs: Vec<&Impression> = items.iter().collect();
        let slate = Slate::new(&refs, true);
        for target in [Target::Greedy, Target::Epsilon(0.5)] {
            assert_eq!(target.propensity(&pinned, &slate), 1.0);
            assert_eq!(target.propensity(&backup, &slate), 1.0);
        }
    }

    #[test]
    fn epsilon_target_uses_round_share_k_slots_and_the_logged_tail() {
        let items = request(&[7, 10, 14], 3.0 / 8.0);
        // epsilon:0.45 → m' = round(4.5) = 5 (halves away from zero): greedy 0..5, tail 5..13.
        let t = targets(&items, Target::Epsilon(0.45));
        assert_eq!(&t[..5], &[1.0; 5]);
        assert_eq!(&t[5..], &[5.0 / 8.0, 5.0 / 8.0, 5.0 / 8.0, 5.0 / 8.0, 0.0]);
        // epsilon:0.1 → m' = 1: greedy 0..9, tail 9..17.
        let t = targets(&items, Target::Epsilon(0.1));
        assert_eq!(&t[7..], &[1.0, 1.0 / 8.0, 1.0 / 8.0]);
    }

    #[test]
    fn a_list_ending_inside_the_tail_is_read_from_the_logged_propensity() {
        // Propensity 3/5: the logged tail held 5 items, so the list had 7 + 5 = 12.
        let items = request(&[8, 9, 11], 3.0 / 5.0);
        let refs: Vec<&Impression> = items.iter().collect();
        let slate = Slate::new(&refs, true);
        assert_eq!((slate.n_ranked, slate.logged_end), (12, 12));
        // epsilon:0.1 → m' = 1: tail 9..12 (3 items).
        assert_eq!(&targets(&items, Target::Epsilon(0.1))[7..], &[1.0, 1.0 / 3.0, 1.0 / 3.0]);
        // Thompson-like propensities say nothing about the tail: the list is assumed long.
        let slate = Slate::new(&refs, false);
        assert_eq!(slate.n_ranked, 18);
        assert_eq!(tail_length(3, 8, 3.0 / 5.0), Some(5));
        assert_eq!(tail_length(1, 50, 3.0 / 65.0), None);
        assert_eq!(tail_length(3, 8, 1.0 / 5.0), None, "t = 15 is beyond the tail");
        // A logger that explores but explored nothing had at most k items: all shown by any policy.
        let short: Vec<Impression> = request(&[], 1.0).into_iter().take(4).collect();
        assert_eq!(targets(&short, Target::Epsilon(0.5)), vec![1.0; 4]);
    }

    #[test]
    fn support_and_reshaped_requests_are_reported() {
        // A logger that does not explore (slots 0) cannot credit an exploring target's tail.
        let items: Vec<Impression> = (0..10)
            .map(|r| Impression {
                greedy_rank: Some(r),
                k: 10,
                slots: 0,
                tail: 8,
                ..imp("r", "u", &format!("i{r}"), 0)
            })
            .collect();
        let e = evaluate(&items, &[], &options(Target::Epsilon(0.2))).unwrap();
        // m' = 2: ranks 8..16 each 2/8; ranks 10..16 (6 of them) were never shown: 1.5 of 10.
        assert!((e.unsupported_share - 0.15).abs() < 1e-12, "{}", e.unsupported_share);
        assert_eq!(evaluate(&items, &[], &options(Target::Greedy)).unwrap().unsupported_share, 0.0);
        assert_eq!(e.reshaped, 0);
        // Rules removed rank 3: the greedy items are 0..3 and 4..11.
        let shifted: Vec<Impression> = items
            .iter()
            .map(|i| Impression { greedy_rank: i.greedy_rank.map(|r| r + usize::from(r >= 3)), ..i.clone() })
            .collect();
        assert_eq!(evaluate(&shifted, &[], &options(Target::Greedy)).unwrap().reshaped, 1);
    }

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A k = 3 epsilon-greedy log (m = 1, tail 4: ranks 0, 1 greedy, one of 2..6 at 1/4) with
    /// click rates per rank; clicks carry the request id on even requests and rely on the window
    /// otherwise.
    #[test]
    fn estimates_recover_the_planted_values() {
        let rates = [0.3, 0.2, 0.5, 0.1, 0.05, 0.4];
        let mut rng = StdRng::seed_from_u64(7);
        let (mut imps, mut outs) = (Vec::new(), Vec::new());
        let requests = 4_000;
        for r in 0..requests {
            let (id, user, ts) = (format!("q{r}"), format!("u{}", r % 50), r as i64 * 60_000);
            let explored = 2 + rng.random_range(0..4usize);
            for rank in [0, 1, explored] {
                let item = format!("i{rank}");
                imps.push(Impression {
                    propensity: if rank < 2 { 1.0 } else { 0.25 },
                    explored: rank >= 2,
                    greedy_rank: Some(rank),
                    ..imp(&id, &user, &item, ts)
                });
                if rng.random::<f64>() < rates[rank] {
                    outs.push(outcome(&user, &item, ts + 5_000, (r % 2 == 0).then_some(id.as_str())));
                }
            }
        }
        let observed = outs.len() as f64 / requests as f64;
        let logged = evaluate(&imps, &outs, &options(Target::Logged)).unwrap();
        assert_eq!((logged.requests, logged.impressions, logged.unattributed), (requests, 3 * requests, 0));
        assert_eq!(logged.by_request_id + logged.by_window, outs.len());
        assert!(logged.by_request_id > 0 && logged.by_window > 0);
        assert!((logged.ips.value - observed).abs() < 1e-12);
        assert_eq!(logged.ips.value, logged.logged.value);
        assert_eq!(logged.snips.as_ref().unwrap().value, logged.logged.value);

        // Truths: greedy shows ranks 0..3; epsilon:0.67 (m' = 2) shows rank 0 and two of 1..5.
        let truth_greedy = 0.3 + 0.2 + 0.5;
        let truth_epsilon = 0.3 + 0.5 * (0.2 + 0.5 + 0.1 + 0.05);
        for (target, truth) in [(Target::Greedy, truth_greedy), (Target::Epsilon(0.67), truth_epsilon)] {
            let e = evaluate(&imps, &outs, &options(target)).unwrap();
            assert_eq!(e.unsupported_share, 0.0);
            for (name, x) in [("ips", &e.ips), ("snips", e.snips.as_ref().unwrap())] {
                assert!(
                    (x.value - truth).abs() <= 3.0 * x.std_error,
                    "{target} {name}: {} ± {} vs {truth}",
                    x.value,
                    x.std_error
                );
            }
        }
        // Clipping the greedy weights (4) at 2 halves what the explored rank-2 items contribute.
        let clipped = evaluate(&imps, &outs, &Options { clip: Some(2.0), ..options(Target::Greedy) }).unwrap();
        assert!(clipped.ips.clipped > 0 && clipped.ips.value < truth_greedy - 0.1);
    }

    #[test]
    fn no_impressions_or_no_pipeline_is_a_clear_error() {
        let message = evaluate(&[], &[], &options(Target::Greedy)).unwrap_err().to_string();
        assert!(message.contains("no impressions in the log") && message.contains("log_impressions"), "{message}");
        let imps = [imp("r", "u", "a", 0)];
        let other = Options { pipeline: Some("search".into()), ..options(Target::Greedy) };
        let message = evaluate(&imps, &[], &other).unwrap_err().to_string();
        assert!(message.contains("`search`") && message.contains("default"), "{message}");
    }

    #[test]
    fn targets_parse_and_print() {
        assert_eq!("logged".parse::<Target>().ok(), Some(Target::Logged));
        assert_eq!("epsilon:0.25".parse::<Target>().ok(), Some(Target::Epsilon(0.25)));
        for target in [Target::Logged, Target::Greedy, Target::Epsilon(0.05)] {
            assert_eq!(target.to_string().parse::<Target>().ok(), Some(target));
        }
        let err = "epsilon:1.5".parse::<Target>().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Invalid);
        assert_eq!(err.to_string(), "`epsilon:1.5`: the share of explored slots must be a number within 0..=1");
        assert!("thompson".parse::<Target>().unwrap_err().to_string().contains("expected logged, greedy"));
    }

    #[test]
    fn log_records_become_impressions_and_weighted_outcomes() {
        let click = |item: Option<&str>, request: Option<&str>| {
            Record::Event(cascade_core::Event {
                id: None,
                event_type: "click".into(),
                ts: Timestamp(2_000),
                user: Some("u".into()),
                item: item.map(String::from),
                fields: request.map(|r| ("request_id".to_string(), Value::String(r.into()))).into_iter().collect(),
            })
        };
        let mut broken = imp("r2", "u", "b", 1_000).to_event();
        broken.fields.retain(|(n, _)| n != "propensity");
        let records = vec![
            (3, Record::Event(imp("r1", "u", "a", 1_000).to_event())),
            (4, Record::Event(broken)),
            (5, click(Some("a"), Some("r1"))),
            (6, click(None, None)),
            (7, Record::Event(cascade_core::Event { event_type: "view".into(), ..imp("r1", "u", "a", 0).to_event() })),
        ];
        let weights = BTreeMap::from([("click".to_string(), 2.0)]);
        let log = LogEvents::read(records.into_iter().map(Ok::<_, std::convert::Infallible>), &weights).unwrap();
        assert_eq!(log.impressions, [imp("r1", "u", "a", 1_000)]);
        assert_eq!(log.outcomes, [Outcome { reward: 2.0, ..outcome("u", "a", 2_000, Some("r1")) }]);
        assert_eq!(log.skipped, 1);
        let (offset, reason) = log.first_skip.unwrap();
        assert_eq!((offset, reason.field.as_str()), (4, "fields.propensity"));
        // The first error of the records is returned.
        let failing = vec![Ok((0, click(Some("a"), None))), Err("torn frame")];
        assert_eq!(LogEvents::read(failing, &weights).unwrap_err(), "torn frame");
    }

    #[test]
    fn outcome_weights_default_to_the_interactions_and_refuse_non_outcomes() {
        let config = Config::from_toml(
            "[events.click]\nentities = [\"user\", \"item\"]\n\
             [events.signup]\nentities = [\"user\"]\n\
             [train]\ninteractions = { click = 2.0 }\n",
            "cascade.toml",
        )
        .unwrap();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let defaults = outcome_weights(&config, &[]).unwrap();
        assert_eq!(defaults, config.interactions().unwrap().iter().map(|(t, w)| (t.clone(), f64::from(*w))).collect());
        assert_eq!(outcome_weights(&config, &names(&["click"])).unwrap()["click"], 2.0);
        for bad in ["impression", "purchase"] {
            let err = outcome_weights(&config, &names(&[bad])).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Invalid);
            assert!(err.to_string().contains(&format!("`{bad}` is not an outcome event type")), "{err}");
        }
        let err = outcome_weights(&config, &names(&["signup"])).unwrap_err();
        assert!(err.to_string().contains("carry no item"), "{err}");
    }
}
