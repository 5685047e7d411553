//! `cascade evaluate --policy`: off-policy evaluation of a serving policy on the impressions
//! `cascade serve` logged.
//!
//! The log holds one `impression` event per shown item, with the probability the serving policy
//! had of showing it (its propensity), and outcome events (clicks, plays, ...). This module joins
//! outcomes to impressions ([`attribute`]), works out the probability a target policy would have
//! shown each logged item ([`Target`]) and hands both to `cascade_eval::offpolicy`'s IPS and
//! SNIPS estimators ([`evaluate`]). Everything but [`run`] is pure, over events already read.
//!
//! Conventions (also in `--help`):
//! - A request is one response: the impressions sharing a `request_id`.
//! - An outcome counts for the impression of the request its `fields.request_id` names (same
//!   item), whatever its time; otherwise for the latest impression of the same user and item
//!   with `ts` in `(outcome.ts - window, outcome.ts]`. Each outcome counts at most once.
//! - An impression's reward is the sum of the weights of the outcomes attributed to it (two
//!   clicks count twice); a weight is the type's `[train] interactions` weight, or 1 for a type
//!   `--outcomes` names that is not listed there.
//! - `greedy_rank` is read as the item's position in the list exploration worked on (after the
//!   filtering rules). `n_ranked` (that list's length) is not logged; see [`Slate`].

use crate::project::Project;
use anyhow::{Result, bail};
use cascade_core::config::{IMPRESSION, ServingConfig};
use cascade_core::{Event, Record, Value};
use cascade_eval::offpolicy::{Estimate, LoggedItem, ips, snips};
use cascade_serving::explore::{ExplorationConfig, epsilon_greedy_inclusion};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

/// The flags of `cascade evaluate --policy`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Off-policy evaluation (--policy)")]
pub struct PolicyArgs {
    /// Off-policy evaluation of a serving policy on logged impressions: logged | greedy | epsilon:<share>
    ///
    /// Off-policy evaluation answers "what would another serving policy have earned?" from the
    /// impressions `cascade serve` logged (serving.log_impressions = true), without an A/B test.
    /// Each logged impression carries the probability the serving policy had of showing that item
    /// in that request (its propensity: 1 for the greedy top of the slate, m/|tail| for an item
    /// explored from the tail). Weighting each shown item's reward by the ratio
    /// target propensity / logged propensity makes the logged rewards an unbiased estimate of the
    /// target's reward per request: that is IPS (inverse propensity scoring). SNIPS
    /// (self-normalised IPS) divides by the mean weight: a small bias for much less variance,
    /// usually the one to read; trust IPS instead when the target shows fewer items per request
    /// than the logger. Both assume an item's reward does not depend on the rest of the slate or
    /// on its position, and both can only credit items the logger sometimes showed: a target that
    /// would show items the logger never explored is estimated low (reported as the share of the
    /// target's slate outside the logged support).
    ///
    /// Targets (m = explored slots, tail = the logged exploration.tail):
    ///   logged            the serving policy itself: IPS equals the observed mean reward per
    ///                     request (a sanity check of the log and the join)
    ///   greedy            no exploration: the ranker's top k
    ///   epsilon:<share>   epsilon-greedy with m = round(share * k) slots drawn uniformly from
    ///                     ranks [k - m, k - m + tail), as exploration.method = "epsilon_greedy"
    ///
    /// Rewards: outcome events (--outcomes) count for the impression of the response named by
    /// their fields.request_id (same item), else for the latest impression of the same user and
    /// item within --attribution-window before them, at most once each; an impression's reward
    /// is the sum of its outcomes' weights.
    ///
    /// Read with the standard errors: the 95% interval is value ± 1.96 standard errors, and an
    /// effective sample size (ESS) far below the impressions means a few heavily weighted items
    /// decide the estimate (try --clip). With --json: one JSON object.
    ///
    /// Examples:
    ///   cascade evaluate --policy logged                 # must match the served mean
    ///   cascade evaluate --policy greedy --json          # what exploration costs
    ///   cascade evaluate --policy epsilon:0.05 --pipeline home --outcomes click,purchase
    #[arg(
        long,
        value_name = "TARGET",
        value_parser = parse_target,
        verbatim_doc_comment,
        conflicts_with_all = ["train", "test", "cut", "models"],
    )]
    pub policy: Option<Target>,
    /// An outcome without fields.request_id counts for the latest impression of the same user
    /// and item this long before it ("0s": only request_id matches).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_window)]
    pub attribution_window: AttributionWindow,
    /// Cap every weight target/logged at this value: bounded variance for a downward bias.
    #[arg(long, value_name = "WEIGHT", requires = "policy")]
    pub clip: Option<f64>,
    /// Comma-separated outcome event types [default: the [train] interactions types]. Each is
    /// weighted as in [train] interactions, or 1 when not listed there.
    #[arg(long, value_name = "TYPES", value_delimiter = ',', requires = "policy")]
    pub outcomes: Vec<String>,
    /// Only the requests served by this pipeline [default: all].
    #[arg(long, value_name = "NAME", requires = "policy")]
    pub pipeline: Option<String>,
}

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
pub fn parse_target(text: &str) -> Result<Target, String> {
    match text {
        "logged" => Ok(Target::Logged),
        "greedy" => Ok(Target::Greedy),
        _ => {
            let share = text
                .strip_prefix("epsilon:")
                .ok_or_else(|| format!("`{text}`: expected logged, greedy or epsilon:<share>, e.g. epsilon:0.1"))?;
            match share.parse::<f64>() {
                Ok(s) if (0.0..=1.0).contains(&s) => Ok(Target::Epsilon(s)),
                _ => Err(format!("`{text}`: the share of explored slots must be a number within 0..=1")),
            }
        }
    }
}

/// `--attribution-window`: as written, and in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributionWindow {
    pub text: String,
    pub ms: i64,
}

/// A duration in the configuration's syntax ("90s", "1h", "2days").
pub fn parse_window(text: &str) -> Result<AttributionWindow, String> {
    // Parsed by the configuration's own duration field, so the flag accepts exactly what
    // cascade.toml does (humantime) without another dependency.
    let doc = format!("reload_interval = {}", toml::Value::String(text.to_string()));
    let config: ServingConfig = toml::from_str(&doc).map_err(|e| e.message().trim().to_string())?;
    let ms = i64::try_from(config.reload_interval.as_millis()).unwrap_or(i64::MAX);
    Ok(AttributionWindow { text: text.to_string(), ms })
}

/// One logged impression: a shown item of a served request.
#[derive(Debug, Clone, PartialEq)]
pub struct Impression {
    pub request_id: String,
    pub user: String,
    pub item: String,
    /// The request's time (ms).
    pub ts: i64,
    pub pipeline: String,
    /// The logging policy's probability of showing this item in this request.
    pub propensity: f64,
    pub explored: bool,
    /// Position in the ranked list before exploration; `None` for an item a rule pinned.
    pub greedy_rank: Option<usize>,
    pub k: usize,
    /// Explored slots the pipeline asks for at this k (before the caps of the tail and k).
    pub slots: usize,
    pub tail: usize,
}

impl Impression {
    /// Reads an `impression` event; the reason names the first field that is missing or wrong.
    pub fn from_event(e: &Event) -> Result<Impression, String> {
        let text = |name: &str| match e.field(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(format!("fields.{name}: missing or not a string")),
        };
        let count = |name: &str| match e.field(name) {
            Some(Value::Int(n)) if *n >= 0 => Ok(Some(*n as usize)),
            None => Ok(None),
            _ => Err(format!("fields.{name}: not a non-negative integer")),
        };
        let required = |name: &str| count(name)?.ok_or_else(|| format!("fields.{name}: missing"));
        let propensity = match e.field("propensity") {
            Some(Value::Float(p)) => *p,
            Some(Value::Int(p)) => *p as f64,
            _ => return Err("fields.propensity: missing or not a number".into()),
        };
        let explored = match e.field("explored") {
            Some(Value::Bool(b)) => *b,
            _ => return Err("fields.explored: missing or not a bool".into()),
        };
        Ok(Impression {
            request_id: text("request_id")?,
            user: e.user.clone().ok_or("no user")?,
            item: e.item.clone().ok_or("no item")?,
            ts: e.ts.0,
            pipeline: text("pipeline")?,
            propensity,
            explored,
            greedy_rank: count("greedy_rank")?,
            k: required("k")?,
            slots: required("slots")?,
            tail: required("tail")?,
        })
    }
}

/// One outcome event (click, play, purchase, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub user: Option<String>,
    pub item: String,
    pub ts: i64,
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
/// an impression can collect several outcomes.
pub fn attribute(impressions: &[Impression], outcomes: &[Outcome], window_ms: i64) -> Vec<Option<(usize, Via)>> {
    let mut by_request: HashMap<(&str, &str), usize> = HashMap::new();
    let mut by_pair: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, imp) in impressions.iter().enumerate() {
        by_request.entry((imp.request_id.as_str(), imp.item.as_str())).or_insert(i);
        by_pair.entry((imp.user.as_str(), imp.item.as_str())).or_default().push(i);
    }
    for list in by_pair.values_mut() {
        list.sort_by_key(|&i| (impressions[i].ts, i));
    }
    outcomes
        .iter()
        .map(|o| {
            if let Some(&i) = o.request_id.as_deref().and_then(|r| by_request.get(&(r, o.item.as_str()))) {
                return Some((i, Via::RequestId));
            }
            let list = by_pair.get(&(o.user.as_deref()?, o.item.as_str()))?;
            let &i = list[..list.partition_point(|&i| impressions[i].ts <= o.ts)].last()?;
            (impressions[i].ts > o.ts.saturating_sub(window_ms)).then_some((i, Via::Window))
        })
        .collect()
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
                let slots = ExplorationConfig { share, ..ExplorationConfig::default() }.slots(slate.k);
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
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub requests: usize,
    pub impressions: usize,
    /// Outcome events read, and how those counting for the evaluated requests were attributed.
    pub outcomes: usize,
    pub by_request_id: usize,
    pub by_window: usize,
    /// Outcomes that match no impression at all (with --pipeline, those matching another
    /// pipeline's impressions are neither attributed nor counted here).
    pub unattributed: usize,
    /// The logging policy's mean reward per request, as observed.
    pub logged: Mean,
    pub ips: Estimate,
    /// SNIPS, or why it has no value (every weight 0).
    pub snips: Result<Estimate, String>,
    /// Share of the target's expected slate at ranks the logger never showed: rewards there are
    /// missing from both estimates, which are biased low by about that share of the value.
    pub unsupported_share: f64,
    /// Requests whose greedy items are not exactly the top ranks (see `Slate::reshaped`).
    pub reshaped: usize,
}

/// Off-policy evaluation of `options.target` on logged impressions and outcome events.
pub fn evaluate(impressions: &[Impression], outcomes: &[Outcome], options: &Options) -> Result<Evaluation> {
    if impressions.is_empty() {
        bail!("no impressions in the log: serve recommendations with serving.log_impressions = true first");
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
        let seen: std::collections::BTreeSet<&str> = impressions.iter().map(|i| i.pipeline.as_str()).collect();
        bail!(
            "no impressions of pipeline `{}` in the log (logged pipelines: {})",
            options.pipeline.as_deref().unwrap_or_default(),
            seen.into_iter().collect::<Vec<_>>().join(", ")
        );
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
    let snips = snips(&logged_items, options.clip).map_err(|e| e.to_string());
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

/// Impressions and outcome events of the project's log, read-only (works beside `cascade serve`).
struct LogEvents {
    impressions: Vec<Impression>,
    outcomes: Vec<Outcome>,
    skipped: usize,
    first_skip: Option<String>,
}

fn read_log(project: &Project, weights: &BTreeMap<String, f64>) -> Result<LogEvents> {
    let store = crate::open_store_read_only(project)?;
    let mut out = LogEvents { impressions: Vec::new(), outcomes: Vec::new(), skipped: 0, first_skip: None };
    for entry in store.read_from(store.log_stats()?.first_offset) {
        let (offset, record) = entry?;
        let Record::Event(e) = record else { continue };
        if e.event_type == IMPRESSION {
            match Impression::from_event(&e) {
                Ok(imp) => out.impressions.push(imp),
                Err(reason) => {
                    out.skipped += 1;
                    out.first_skip.get_or_insert_with(|| format!("offset {offset}: {reason}"));
                }
            }
        } else if let (Some(&reward), Some(item)) = (weights.get(&e.event_type), &e.item) {
            let request_id = match e.field("request_id") {
                Some(Value::String(r)) => Some(r.clone()),
                _ => None,
            };
            out.outcomes.push(Outcome { user: e.user.clone(), item: item.clone(), ts: e.ts.0, request_id, reward });
        }
    }
    store.close()?;
    Ok(out)
}

/// Outcome types and their weights: `--outcomes`, or `[train] interactions`.
fn outcome_weights(project: &Project, names: &[String]) -> Result<BTreeMap<String, f64>> {
    let interactions = &project.config.train.interactions;
    if names.is_empty() {
        return Ok(interactions.iter().map(|(t, w)| (t.clone(), f64::from(*w))).collect());
    }
    let mut weights = BTreeMap::new();
    for name in names {
        let declared = project.config.events.get(name.as_str());
        if name == IMPRESSION || declared.is_none() {
            let known: Vec<&str> =
                project.config.events.keys().map(String::as_str).filter(|t| *t != IMPRESSION).collect();
            bail!("--outcomes: `{name}` is not an outcome event type (declared: {})", known.join(", "));
        }
        if declared.is_some_and(|d| !d.entities.contains(&cascade_core::config::EntityKind::Item)) {
            bail!("--outcomes: `{name}` events carry no item, so they cannot be attributed to an impression");
        }
        weights.insert(name.clone(), interactions.get(name.as_str()).map_or(1.0, |w| f64::from(*w)));
    }
    Ok(weights)
}

/// `cascade evaluate --policy ...`.
pub fn run(config: Option<&Path>, args: &PolicyArgs, json_output: bool) -> Result<()> {
    let Some(target) = args.policy else { bail!("--policy is required for off-policy evaluation") };
    let project = Project::load(config)?;
    let weights = outcome_weights(&project, &args.outcomes)?;
    let log = read_log(&project, &weights)?;
    if log.skipped > 0 {
        eprintln!(
            "warning: skipped {} impression events without the fields serving logs (first: {})",
            log.skipped,
            log.first_skip.as_deref().unwrap_or_default()
        );
    }
    let options =
        Options { target, window_ms: args.attribution_window.ms, clip: args.clip, pipeline: args.pipeline.clone() };
    let e = evaluate(&log.impressions, &log.outcomes, &options)?;
    if json_output {
        let estimate = |x: &Estimate| {
            json!({
                "value": x.value,
                "std_error": x.std_error,
                "ci95": interval(x.value, x.std_error),
                "effective_sample_size": x.effective_sample_size,
                "clipped": x.clipped,
            })
        };
        let mut out = json!({
            "policy": target.to_string(),
            "pipeline": args.pipeline,
            "attribution_window": args.attribution_window.text,
            "clip": args.clip,
            "outcome_weights": weights,
            "requests": e.requests,
            "impressions": e.impressions,
            "skipped_impressions": log.skipped,
            "outcomes": e.outcomes,
            "attributed_by_request_id": e.by_request_id,
            "attributed_by_window": e.by_window,
            "unattributed": e.unattributed,
            "logged": {"value": e.logged.value, "std_error": e.logged.std_error, "ci95": interval(e.logged.value, e.logged.std_error)},
            "ips": estimate(&e.ips),
            "snips": e.snips.as_ref().ok().map(estimate),
            "unsupported_share": e.unsupported_share,
            "requests_reshaped_by_rules": e.reshaped,
        });
        if let (Err(reason), Some(map)) = (&e.snips, out.as_object_mut()) {
            map.insert("snips_error".into(), json!(reason));
        }
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_report(&e, target, args, &weights);
    }
    Ok(())
}

/// The 95% normal interval, `[value - 1.96 se, value + 1.96 se]`.
fn interval(value: f64, std_error: f64) -> [f64; 2] {
    [value - 1.96 * std_error, value + 1.96 * std_error]
}

fn print_report(e: &Evaluation, target: Target, args: &PolicyArgs, weights: &BTreeMap<String, f64>) {
    let weights: Vec<String> = weights.iter().map(|(t, w)| format!("{t}={w}")).collect();
    println!(
        "target `{target}` on {} requests, {} impressions ({})",
        e.requests,
        e.impressions,
        args.pipeline.as_deref().map_or("all pipelines".to_string(), |p| format!("pipeline {p}"))
    );
    println!(
        "outcomes ({}): {} events; {} attributed by request_id, {} by window ({}), {} to no impression at all",
        weights.join(", "),
        e.outcomes,
        e.by_request_id,
        e.by_window,
        args.attribution_window.text,
        e.unattributed
    );
    println!();
    println!(
        "{:<16} {:>9} {:>9} {:>21} {:>10} {:>8}",
        "reward/request", "value", "std err", "95% interval", "ESS", "clipped"
    );
    let row = |name: &str, value: f64, se: f64, rest: String| {
        let [lo, hi] = interval(value, se);
        println!("{name:<16} {value:>9.4} {se:>9.4} {:>21} {rest}", format!("[{lo:.4}, {hi:.4}]"));
    };
    row("logged (served)", e.logged.value, e.logged.std_error, String::new());
    let est = |x: &Estimate| format!("{:>10.1} {:>8}", x.effective_sample_size, x.clipped);
    row("target IPS", e.ips.value, e.ips.std_error, est(&e.ips));
    match &e.snips {
        Ok(s) => row("target SNIPS", s.value, s.std_error, est(s)),
        Err(reason) => println!("{:<16} {reason}", "target SNIPS"),
    }
    if e.unsupported_share > 1e-9 {
        println!(
            "\nwarning: {:.1}% of the target's expected slate is outside the logged support (ranks the \
             logger never showed); their rewards are missing, so both estimates are biased low",
            100.0 * e.unsupported_share
        );
    }
    if e.reshaped > 0 {
        println!(
            "note: in {} requests rules removed, skipped or displaced ranked items; target propensities \
             of their explored items assume greedy_rank counts only the items the rules kept",
            e.reshaped
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(request: &str, user: &str, item: &str, ts: i64) -> Impression {
        Impression {
            request_id: request.into(),
            user: user.into(),
            item: item.into(),
            ts,
            pipeline: "default".into(),
            propensity: 1.0,
            explored: false,
            greedy_rank: Some(0),
            k: 3,
            slots: 1,
            tail: 4,
        }
    }

    fn outcome(user: &str, item: &str, ts: i64, request: Option<&str>) -> Outcome {
        Outcome { user: Some(user.into()), item: item.into(), ts, request_id: request.map(Into::into), reward: 1.0 }
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
    fn flags_parse() {
        assert_eq!(parse_target("logged"), Ok(Target::Logged));
        assert_eq!(parse_target("greedy"), Ok(Target::Greedy));
        assert_eq!(parse_target("epsilon:0.25"), Ok(Target::Epsilon(0.25)));
        assert_eq!(Target::Epsilon(0.25).to_string(), "epsilon:0.25");
        for bad in ["epsilon:1.5", "epsilon:x", "epsilon", "thompson"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_window("1h").unwrap().ms, 3_600_000);
        assert_eq!(parse_window("90s").unwrap().ms, 90_000);
        assert_eq!(parse_window("0s").unwrap().ms, 0);
        assert!(parse_window("soon").is_err());
    }
}
