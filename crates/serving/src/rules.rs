//! Business rules: the declarative constraints the serving cascade applies after the rankers.
//!
//! A rule list is written in `cascade.toml`, e.g.
//! `rules = [{ type = "exclude_seen", window = "30days" }, { type = "no_adjacent", attribute = "brand" }]`,
//! and validated once by [`Rules::new`] (errors name the rule's index and field:
//! `rules[2].max: must be at least 1`). Serving then runs two stages.
//!
//! # Stage 1: [`Rules::filter`] — which candidates may be served
//!
//! The *filtering* rules (`exclude_seen`, `exclude_unavailable`, `exclude_requested`, `blocklist`,
//! `dedupe`) run over the candidates in ranked order (best first) in two phases:
//!
//! 1. The per-item rules judge every item on its own facts. An item is removed when any of them
//!    rejects it, and is reported under the first such rule in list order.
//! 2. The `dedupe` rules, in list order, then run over the survivors: each keeps the best-ranked
//!    item of every value of its attribute. An item with several values is removed when any of
//!    them is already taken, and an item without the attribute is a group of its own.
//!
//! Deduplicating after the per-item rules, wherever `dedupe` is written in the list, means a
//! group's representative is always an item that can actually be served: a seen or unavailable
//! best item never takes its group down with it.
//!
//! # Stage 2: [`Rules::arrange`] — the final list
//!
//! The *list* rules (`max_per_window`, `no_adjacent`, `freshness`, `pin`) build at most `k`
//! positions from the filtered candidates, most preferred first. Their order in the list does not
//! matter (they are all constraints on one list), except for the order of attribution tags.
//! The construction is greedy and deterministic; for each position `p` in turn:
//!
//! - **Pins.** If a pin targets `p`, the pinned item goes there. A pinned item is placed once: it
//!   is not also placed elsewhere from the preference. Pins at or beyond `k` are ignored, unknown
//!   items and items that `exclude_unavailable`, `exclude_requested` or `blocklist` (when present)
//!   reject are skipped; each case is reported in [`Arranged::notes`]. Pins deliberately bypass
//!   `exclude_seen`, `dedupe` and the diversity rules: a sponsored or editorial placement is a
//!   contract for that slot, whereas those rules are quality heuristics for organic items. An item
//!   that cannot be delivered (unavailable), that the caller refused (requested exclusion) or that
//!   moderation blocked is a hard limit no contract overrides.
//! - **Diversity.** Otherwise the most preferred remaining candidate is taken that keeps every
//!   `max_per_window` rule (at most `max` items sharing a value of the attribute in any `window`
//!   consecutive positions) and `no_adjacent` rule (the same with `max` 1 and `window` 2). Windows
//!   see the items already placed and the pins already known for later positions, so an organic item
//!   is never placed where an upcoming pin would make it break a rule. Pins themselves may break
//!   these rules (the contract wins), but no organic item ever adds to a violation.
//! - **Freshness.** An item is fresh when `created_at` is known and `now_ms - created_at < max_age`.
//!   When the positions still open to organic items (at most the remaining candidates) are no more
//!   than the reserved slots still unfilled (fresh pins count), the most preferred *fresh*
//!   candidate that keeps the diversity rules is taken; when there is none, the most preferred
//!   candidate is taken and the reservation falls short (noted). At most one `freshness` rule.
//! - **Shortfall.** When no candidate is eligible at `p` and a pin is still pending, that pin moves
//!   up to `p` (noted). Otherwise the list ends shorter than `k` (noted): a rule is never broken to
//!   fill a position.
//!
//! Each placed item carries the rules that acted on it ([`Placed::rules`]), as stable strings:
//!
//! - `pin`: placed by a pin rule;
//! - `freshness_slot`: placed here by the freshness reservation, ahead of better-preferred
//!   candidates that were not fresh;
//! - `max_per_window:<attribute>`, `no_adjacent:<attribute>`: placed here, ahead of
//!   better-preferred candidates that this rule held back at this position.
//!
//! Cost: `O(k · n · rules · window)` attribute lookups in the worst case, for `n` candidates,
//! without allocating per check; a few hundred candidates and `k` around 100 are cheap.
//!
//! ```
//! use cascade_serving::rules::{ItemFacts, Rule, RuleContext, Rules};
//! use std::collections::{HashMap, HashSet};
//!
//! let item = |id: &str, brand: &str| ItemFacts {
//!     id: id.into(),
//!     available: true,
//!     attributes: [("brand".to_string(), vec![brand.to_string()])].into(),
//!     ..ItemFacts::default()
//! };
//! let candidates = [item("a", "x"), item("b", "x"), item("c", "y"), item("d", "y")];
//! let rules = Rules::new(vec![
//!     Rule::ExcludeRequested,
//!     Rule::NoAdjacent { attribute: "brand".into() },
//! ])
//! .unwrap();
//! let (seen, excluded) = (HashMap::new(), HashSet::from(["d".to_string()]));
//! let ctx = RuleContext { now_ms: 0, seen: &seen, excluded: &excluded };
//!
//! let filtered = rules.filter(&candidates, &ctx);
//! assert_eq!(filtered.kept, [0, 1, 2]);
//! assert_eq!(filtered.removed, [(3, "exclude_requested")]);
//!
//! let arranged = rules.arrange(&candidates, &filtered.kept, 3, &ctx, &|_| None);
//! let ids: Vec<_> = arranged.placed.iter().map(|p| p.index.unwrap()).collect();
//! assert_eq!(ids, [0, 2, 1]); // "c" moved up between the two "x" items
//! assert_eq!(arranged.placed[1].rules, ["no_adjacent:brand"]);
//! ```

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// What the rules know about one candidate (built by the serving pipeline from the catalogue).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemFacts {
    pub id: String,
    /// false when the item is unavailable or deleted.
    pub available: bool,
    /// Creation (or release) time, ms since the epoch, when known.
    pub created_at: Option<i64>,
    /// Attribute name -> its values as strings (a list attribute has several, a scalar one).
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl ItemFacts {
    fn has_value(&self, attribute: &str, value: &str) -> bool {
        self.attributes.get(attribute).is_some_and(|values| values.iter().any(|v| v == value))
    }
}

/// One rule, as written in cascade.toml: `rules = [{ type = "exclude_seen", window = "30days" }, ...]`.
///
/// Durations are humantime strings ("12h", "30days"). Unknown keys are errors, also for the
/// rules without parameters (they are read through a private mirror whose variants are all
/// structs, since serde lets unknown keys through on the unit variants of an internally tagged enum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields, from = "RawRule")]
pub enum Rule {
    /// Drop items the user interacted with within `window` before now (all of history when absent).
    /// An interaction time after `now` (clock skew) counts as within the window.
    ExcludeSeen {
        #[serde(default, with = "duration_str::optional", skip_serializing_if = "Option::is_none")]
        window: Option<Duration>,
    },
    /// Drop unavailable or deleted items.
    ExcludeUnavailable,
    /// Drop the request's `exclude` list.
    ExcludeRequested,
    /// Drop items having any of `values` for `attribute` (moderation blocklist by tag).
    Blocklist { attribute: String, values: Vec<String> },
    /// Keep only the best-ranked item of each value of `attribute` (group id). Items without the
    /// attribute are each their own group.
    Dedupe { attribute: String },
    /// At most `max` items sharing a value of `attribute` within any `window` consecutive positions.
    /// `max` must be less than `window` (otherwise the rule could never bind).
    MaxPerWindow { attribute: String, max: usize, window: usize },
    /// No two adjacent items share a value of `attribute`.
    NoAdjacent { attribute: String },
    /// Reserve `slots` of the k positions for items younger than `max_age` (when enough such
    /// candidates exist).
    Freshness {
        slots: usize,
        #[serde(with = "duration_str::required")]
        max_age: Duration,
    },
    /// Put `item` at 0-based `position` (a sponsored or editorial slot).
    Pin { item: String, position: usize },
}

impl Rule {
    /// The rule's `type` as written in the configuration ("exclude_seen", "pin", ...).
    pub fn name(&self) -> &'static str {
        match self {
            Rule::ExcludeSeen { .. } => "exclude_seen",
            Rule::ExcludeUnavailable => "exclude_unavailable",
            Rule::ExcludeRequested => "exclude_requested",
            Rule::Blocklist { .. } => "blocklist",
            Rule::Dedupe { .. } => "dedupe",
            Rule::MaxPerWindow { .. } => "max_per_window",
            Rule::NoAdjacent { .. } => "no_adjacent",
            Rule::Freshness { .. } => "freshness",
            Rule::Pin { .. } => "pin",
        }
    }
}

/// [`Rule`] as read from the configuration (see there).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawRule {
    ExcludeSeen {
        #[serde(default, with = "duration_str::optional")]
        window: Option<Duration>,
    },
    ExcludeUnavailable {},
    ExcludeRequested {},
    Blocklist {
        attribute: String,
        values: Vec<String>,
    },
    Dedupe {
        attribute: String,
    },
    MaxPerWindow {
        attribute: String,
        max: usize,
        window: usize,
    },
    NoAdjacent {
        attribute: String,
    },
    Freshness {
        slots: usize,
        #[serde(with = "duration_str::required")]
        max_age: Duration,
    },
    Pin {
        item: String,
        position: usize,
    },
}

impl From<RawRule> for Rule {
    fn from(raw: RawRule) -> Rule {
        match raw {
            RawRule::ExcludeSeen { window } => Rule::ExcludeSeen { window },
            RawRule::ExcludeUnavailable {} => Rule::ExcludeUnavailable,
            RawRule::ExcludeRequested {} => Rule::ExcludeRequested,
            RawRule::Blocklist { attribute, values } => Rule::Blocklist { attribute, values },
            RawRule::Dedupe { attribute } => Rule::Dedupe { attribute },
            RawRule::MaxPerWindow { attribute, max, window } => Rule::MaxPerWindow { attribute, max, window },
            RawRule::NoAdjacent { attribute } => Rule::NoAdjacent { attribute },
            RawRule::Freshness { slots, max_age } => Rule::Freshness { slots, max_age },
            RawRule::Pin { item, position } => Rule::Pin { item, position },
        }
    }
}

/// The request-side facts rules read.
#[derive(Debug, Clone, Copy)]
pub struct RuleContext<'a> {
    pub now_ms: i64,
    /// Item id -> the user's latest interaction time with it (ms).
    pub seen: &'a HashMap<String, i64>,
    /// The request's exclude list.
    pub excluded: &'a HashSet<String>,
}

/// A rule list that [`Rules::new`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// `rules[index].field` is invalid.
    #[error("rules[{index}].{field}: {message}")]
    Invalid { index: usize, field: &'static str, message: String },
}

impl RuleError {
    fn invalid(index: usize, field: &'static str, message: impl Into<String>) -> Self {
        RuleError::Invalid { index, field, message: message.into() }
    }
}

/// The outcome of [`Rules::filter`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Indices into the candidates, in their (ranked) order.
    pub kept: Vec<usize>,
    /// Each removed index, ascending, with the name of the rule that removed it.
    pub removed: Vec<(usize, &'static str)>,
}

/// The outcome of [`Rules::arrange`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arranged {
    /// The final list, in position order.
    pub placed: Vec<Placed>,
    /// What did not go as configured: skipped or moved pins, a short list, an unmet freshness
    /// reservation (e.g. "pin i9 skipped: unknown item"). For logs and debugging, not for parsing.
    pub notes: Vec<String>,
}

/// One position of the final list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placed {
    /// Index into `candidates`, or None for a pinned item from `lookup` (then `pinned` holds its facts).
    pub index: Option<usize>,
    pub pinned: Option<ItemFacts>,
    /// What acted on this item: "pin", "freshness_slot", "max_per_window:<attribute>",
    /// "no_adjacent:<attribute>" (see the module documentation).
    pub rules: Vec<String>,
}

/// A validated, ordered rule list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    rules: Vec<Rule>,
    /// The values of each `blocklist` rule as a set, by rule index (empty for other rules).
    blocked: Vec<HashSet<String>>,
}

impl Rules {
    /// Validates the list: attribute and item names are not empty, a blocklist lists a value,
    /// `max` and `window` are at least 1 and `max < window` (a window no longer than `max` never
    /// binds, so it is refused as a likely slip), durations and `slots` are positive, at most one
    /// `freshness` rule, no two pins share a position or an item.
    pub fn new(rules: Vec<Rule>) -> Result<Rules, RuleError> {
        let mut blocked = Vec::with_capacity(rules.len());
        let mut pin_positions = HashMap::new();
        let mut pin_items = HashMap::new();
        let mut freshness = None;
        for (index, rule) in rules.iter().enumerate() {
            let invalid = |field, message: String| RuleError::invalid(index, field, message);
            let attribute_named = |attribute: &str| {
                if attribute.is_empty() { Err(invalid("attribute", "must not be empty".into())) } else { Ok(()) }
            };
            let mut set = HashSet::new();
            match rule {
                Rule::ExcludeSeen { window: Some(window) } if window.is_zero() => {
                    return Err(invalid("window", "must be positive (leave it out to exclude all of history)".into()));
                }
                Rule::ExcludeSeen { .. } | Rule::ExcludeUnavailable | Rule::ExcludeRequested => {}
                Rule::Blocklist { attribute, values } => {
                    attribute_named(attribute)?;
                    if values.is_empty() {
                        return Err(invalid("values", "must list at least one value".into()));
                    }
                    set = values.iter().cloned().collect();
                }
                Rule::Dedupe { attribute } | Rule::NoAdjacent { attribute } => attribute_named(attribute)?,
                Rule::MaxPerWindow { attribute, max, window } => {
                    attribute_named(attribute)?;
                    if *max == 0 {
                        return Err(invalid("max", "must be at least 1".into()));
                    }
                    if *window == 0 {
                        return Err(invalid("window", "must be at least 1".into()));
                    }
                    if max >= window {
                        return Err(invalid(
                            "max",
                            format!("must be less than window ({window}); otherwise the rule never binds"),
                        ));
                    }
                }
                Rule::Freshness { slots, max_age } => {
                    if *slots == 0 {
                        return Err(invalid("slots", "must be at least 1".into()));
                    }
                    if max_age.is_zero() {
                        return Err(invalid("max_age", "must be positive".into()));
                    }
                    if let Some(first) = freshness {
                        return Err(invalid(
                            "type",
                            format!("only one freshness rule is allowed (rules[{first}] is one)"),
                        ));
                    }
                    freshness = Some(index);
                }
                Rule::Pin { item, position } => {
                    if item.is_empty() {
                        return Err(invalid("item", "must not be empty".into()));
                    }
                    if let Some(first) = pin_positions.insert(*position, index) {
                        return Err(invalid(
                            "position",
                            format!("position {position} is already pinned by rules[{first}]"),
                        ));
                    }
                    if let Some(first) = pin_items.insert(item.as_str(), index) {
                        return Err(invalid("item", format!("`{item}` is already pinned by rules[{first}]")));
                    }
                }
            }
            blocked.push(set);
        }
        Ok(Rules { rules, blocked })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The filtering rules (exclude_seen, exclude_unavailable, exclude_requested, blocklist,
    /// dedupe) over candidates in ranked order (best first): the kept indices in order, and for
    /// each removed index the name of the rule that removed it (see the module documentation for
    /// the two phases).
    pub fn filter<F: Borrow<ItemFacts>>(&self, candidates: &[F], ctx: &RuleContext<'_>) -> Filtered {
        let mut removed_by: Vec<Option<&'static str>> = candidates
            .iter()
            .map(Borrow::borrow)
            .map(|item| (0..self.rules.len()).find(|&r| self.rejects(r, item, ctx)).map(|r| self.rules[r].name()))
            .collect();
        for rule in &self.rules {
            let Rule::Dedupe { attribute } = rule else { continue };
            let mut taken: HashSet<&str> = HashSet::new();
            for (item, removed) in candidates.iter().map(Borrow::borrow).zip(&mut removed_by) {
                if removed.is_some() {
                    continue;
                }
                let values = item.attributes.get(attribute).map_or(&[][..], Vec::as_slice);
                if values.iter().any(|v| taken.contains(v.as_str())) {
                    *removed = Some(rule.name());
                } else {
                    taken.extend(values.iter().map(String::as_str));
                }
            }
        }
        let mut filtered = Filtered::default();
        for (index, removed) in removed_by.into_iter().enumerate() {
            match removed {
                None => filtered.kept.push(index),
                Some(name) => filtered.removed.push((index, name)),
            }
        }
        filtered
    }

    /// Whether the per-item rule at `rule` rejects `item` (false for the other rules).
    fn rejects(&self, rule: usize, item: &ItemFacts, ctx: &RuleContext<'_>) -> bool {
        match &self.rules[rule] {
            Rule::ExcludeSeen { window } => ctx.seen.get(&item.id).is_some_and(|&at| match window {
                None => true,
                Some(window) => ctx.now_ms.saturating_sub(at) < millis(*window),
            }),
            Rule::ExcludeUnavailable => !item.available,
            Rule::ExcludeRequested => ctx.excluded.contains(&item.id),
            Rule::Blocklist { attribute, .. } => item
                .attributes
                .get(attribute)
                .is_some_and(|values| values.iter().any(|v| self.blocked[rule].contains(v))),
            _ => false,
        }
    }

    /// The first rule that refuses a pinned item: pins answer only to availability, the
    /// request's exclusions and the blocklists.
    fn pin_rejection(&self, item: &ItemFacts, ctx: &RuleContext<'_>) -> Option<&'static str> {
        (0..self.rules.len())
            .filter(|&r| {
                matches!(self.rules[r], Rule::ExcludeUnavailable | Rule::ExcludeRequested | Rule::Blocklist { .. })
            })
            .find(|&r| self.rejects(r, item, ctx))
            .map(|r| self.rules[r].name())
    }

    /// The list rules (max_per_window, no_adjacent, freshness, pin) building the final list of at
    /// most `k` positions from `preference` (indices into `candidates`, most preferred first;
    /// already filtered). Pinned items not among `candidates` are looked up with `lookup` (None:
    /// the pin is skipped and noted). See the module documentation for the construction.
    ///
    /// Indices out of range and repeated items in `preference` are ignored: no item is placed twice.
    pub fn arrange<F: Borrow<ItemFacts>>(
        &self,
        candidates: &[F],
        preference: &[usize],
        k: usize,
        ctx: &RuleContext<'_>,
        lookup: &dyn Fn(&str) -> Option<ItemFacts>,
    ) -> Arranged {
        let mut notes = Vec::new();

        // Resolve the pins that will be placed, by target position.
        let mut fetched = Vec::new();
        let mut pins: Vec<(usize, Source)> = Vec::new();
        for rule in &self.rules {
            let Rule::Pin { item, position } = rule else { continue };
            if *position >= k {
                notes.push(format!("pin {item} ignored: position {position} is beyond the list (k = {k})"));
                continue;
            }
            let source = match candidates.iter().position(|c| c.borrow().id == *item) {
                Some(index) => Source::Candidate(index),
                None => match lookup(item) {
                    Some(facts) => {
                        fetched.push(facts);
                        Source::Fetched(fetched.len() - 1)
                    }
                    None => {
                        notes.push(format!("pin {item} skipped: unknown item"));
                        continue;
                    }
                },
            };
            let items = Items { candidates, fetched: &fetched };
            if let Some(rule) = self.pin_rejection(items.get(source), ctx) {
                notes.push(format!("pin {item} skipped: removed by {rule}"));
                continue;
            }
            pins.push((*position, source));
        }
        pins.sort_by_key(|&(position, _)| position);
        let items = Items { candidates, fetched: &fetched };

        // The organic candidates: preference order, each item once, pinned items left to their pin.
        let mut ids: HashSet<&str> = pins.iter().map(|&(_, source)| items.get(source).id.as_str()).collect();
        debug_assert!(preference.iter().all(|&i| i < candidates.len()), "preference indexes candidates");
        let pool: Vec<usize> = preference
            .iter()
            .copied()
            .filter(|&i| candidates.get(i).is_some_and(|c| ids.insert(&c.borrow().id)))
            .collect();

        let spreads: Vec<Spread<'_>> = self
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::MaxPerWindow { attribute, max, window } => {
                    Some(Spread { name: r.name(), attribute, max: *max, window: *window })
                }
                Rule::NoAdjacent { attribute } => Some(Spread { name: r.name(), attribute, max: 1, window: 2 }),
                _ => None,
            })
            .collect();
        let freshness = self.rules.iter().find_map(|r| match r {
            Rule::Freshness { slots, max_age } => Some((*slots, millis(*max_age))),
            _ => None,
        });
        let is_fresh = |item: &ItemFacts| {
            freshness.is_some_and(|(_, age)| item.created_at.is_some_and(|at| ctx.now_ms.saturating_sub(at) < age))
        };

        let mut placed: Vec<(Source, Vec<String>)> = Vec::new();
        let mut used = vec![false; pool.len()];
        let mut remaining = pool.len();
        let mut next_pin = 0;
        let mut fresh_placed = 0;
        // Candidates passed over at the current position: (pool position, spread that blocked it).
        let mut blocked: Vec<(usize, usize)> = Vec::new();
        while placed.len() < k {
            let p = placed.len();
            if pins.get(next_pin).is_some_and(|&(target, _)| target == p) {
                let source = pins[next_pin].1;
                next_pin += 1;
                fresh_placed += usize::from(is_fresh(items.get(source)));
                placed.push((source, vec!["pin".to_string()]));
                continue;
            }
            let pending = &pins[next_pin..];
            let reserve = freshness.is_some_and(|(slots, _)| {
                let fresh_pending = pending.iter().filter(|&&(_, s)| is_fresh(items.get(s))).count();
                let need = slots.min(k).saturating_sub(fresh_placed + fresh_pending);
                let open = (k - p).saturating_sub(pending.len()).min(remaining);
                need > 0 && open <= need
            });
            let at = |q: usize| {
                if q < p {
                    Some(items.get(placed[q].0))
                } else {
                    pending.binary_search_by_key(&q, |&(target, _)| target).ok().map(|i| items.get(pending[i].1))
                }
            };
            let end = pending.last().map_or(p + 1, |&(target, _)| target + 1);

            blocked.clear();
            let mut best = None;
            let mut chosen = None;
            for (pos, &index) in pool.iter().enumerate() {
                if used[pos] {
                    continue;
                }
                let item = candidates[index].borrow();
                if let Some(s) = spreads.iter().position(|s| s.breaks(item, p, end, &at)) {
                    blocked.push((pos, s));
                    continue;
                }
                best = best.or(Some(pos));
                if !reserve || is_fresh(item) {
                    chosen = Some(pos);
                    break;
                }
            }

            let Some(pos) = chosen.or(best) else {
                let reason = if remaining == 0 {
                    "the candidates ran out".to_string()
                } else {
                    let mut rules: Vec<usize> = blocked.iter().map(|&(_, s)| s).collect();
                    rules.sort_unstable();
                    rules.dedup();
                    let tags: Vec<String> = rules.iter().map(|&s| spreads[s].tag()).collect();
                    format!("each of the {remaining} remaining candidates breaks {}", tags.join(" or "))
                };
                if let Some(&(target, source)) = pins.get(next_pin) {
                    notes.push(format!("pin {} placed at {p} instead of {target}: {reason}", items.get(source).id));
                    next_pin += 1;
                    fresh_placed += usize::from(is_fresh(items.get(source)));
                    placed.push((source, vec!["pin".to_string()]));
                    continue;
                }
                notes.push(format!("list ends at {p} of {k} positions: {reason}"));
                break;
            };
            let mut tags: Vec<String> = (0..spreads.len())
                .filter(|&s| blocked.iter().any(|&(before, by)| by == s && before < pos))
                .map(|s| spreads[s].tag())
                .collect();
            if best != Some(pos) {
                tags.push("freshness_slot".to_string());
            }
            used[pos] = true;
            remaining -= 1;
            fresh_placed += usize::from(is_fresh(candidates[pool[pos]].borrow()));
            placed.push((Source::Candidate(pool[pos]), tags));
        }

        if let Some((slots, _)) = freshness {
            let target = slots.min(k);
            if fresh_placed < target {
                notes.push(format!(
                    "freshness: {fresh_placed} of {target} reserved slots hold fresh items (not enough eligible fresh candidates)"
                ));
            }
        }

        let placed = placed
            .into_iter()
            .map(|(source, rules)| match source {
                Source::Candidate(index) => Placed { index: Some(index), pinned: None, rules },
                Source::Fetched(i) => Placed { index: None, pinned: Some(fetched[i].clone()), rules },
            })
            .collect();
        Arranged { placed, notes }
    }
}

/// Where an item placed by [`Rules::arrange`] comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Candidate(usize),
    /// A pinned item returned by `lookup`.
    Fetched(usize),
}

#[derive(Debug, Clone, Copy)]
struct Items<'a, F> {
    candidates: &'a [F],
    fetched: &'a [ItemFacts],
}

impl<'a, F: Borrow<ItemFacts>> Items<'a, F> {
    fn get(&self, source: Source) -> &'a ItemFacts {
        match source {
            Source::Candidate(i) => self.candidates[i].borrow(),
            Source::Fetched(i) => &self.fetched[i],
        }
    }
}

/// A `max_per_window` rule, or a `no_adjacent` one as `max` 1 in windows of 2.
#[derive(Debug)]
struct Spread<'r> {
    name: &'static str,
    attribute: &'r str,
    max: usize,
    window: usize,
}

impl Spread<'_> {
    fn tag(&self) -> String {
        format!("{}:{}", self.name, self.attribute)
    }

    /// Whether placing `item` at `p` would put more than `max` items sharing one of its values in
    /// a window containing `p`. `at(q)` is the item at `q` (placed before `p`, or a pin after it);
    /// positions at or after `end` are empty.
    fn breaks<'a>(&self, item: &ItemFacts, p: usize, end: usize, at: &impl Fn(usize) -> Option<&'a ItemFacts>) -> bool {
        let Some(values) = item.attributes.get(self.attribute) else { return false };
        let span = self.window - 1;
        let lo = p.saturating_sub(span);
        let hi = p.saturating_add(span).min(end.max(p + 1) - 1);
        for (j, value) in values.iter().enumerate() {
            if values[..j].contains(value) {
                continue;
            }
            let has = |q: usize| q == p || at(q).is_some_and(|other| other.has_value(self.attribute, value));
            // Slide the windows [s, s + window) for s in lo..=p, each of which contains p.
            let mut count = (lo..=lo.saturating_add(span).min(hi)).filter(|&q| has(q)).count();
            if count > self.max {
                return true;
            }
            for s in lo + 1..=p {
                count -= usize::from(has(s - 1));
                let last = s.saturating_add(span);
                if last <= hi && has(last) {
                    count += 1;
                }
                if count > self.max {
                    return true;
                }
            }
        }
        false
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Durations as humantime strings ("30days", "12h") in TOML and JSON.
mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    fn parse<E: serde::de::Error>(text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text)
            .map_err(|e| E::custom(format!("bad duration `{text}` ({e}); write e.g. \"12h\", \"30days\"")))
    }

    pub mod required {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&humantime::format_duration(*d).to_string())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            parse(&String::deserialize(d)?)
        }
    }

    pub mod optional {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => required::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?.map(|text| parse(&text)).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_000_000;
    const DAY: i64 = 86_400_000;

    fn item(id: &str, attributes: &[(&str, &[&str])]) -> ItemFacts {
        ItemFacts {
            id: id.to_string(),
            available: true,
            created_at: None,
            attributes: attributes
                .iter()
                .map(|(name, values)| (name.to_string(), values.iter().map(|v| v.to_string()).collect()))
                .collect(),
        }
    }

    fn brand(id: &str, value: &str) -> ItemFacts {
        item(id, &[("brand", &[value])])
    }

    fn created(mut facts: ItemFacts, at: i64) -> ItemFacts {
        facts.created_at = Some(at);
        facts
    }

    #[derive(Default)]
    struct World {
        seen: HashMap<String, i64>,
        excluded: HashSet<String>,
    }

    impl World {
        fn ctx(&self) -> RuleContext<'_> {
            RuleContext { now_ms: NOW, seen: &self.seen, excluded: &self.excluded }
        }
    }

    fn filter_ids(rules: Vec<Rule>, items: &[ItemFacts], world: &World) -> (Vec<String>, Vec<String>) {
        let filtered = Rules::new(rules).unwrap().filter(items, &world.ctx());
        let kept = filtered.kept.iter().map(|&i| items[i].id.clone()).collect();
        let removed = filtered.removed.iter().map(|&(i, rule)| format!("{}:{rule}", items[i].id)).collect();
        (kept, removed)
    }

    /// Arranges all of `items` (in order) and renders each position as `id` or `id[tag,tag]`.
    fn arrange(rules: Vec<Rule>, items: &[ItemFacts], k: usize, extra: &[ItemFacts]) -> (Vec<String>, Vec<String>) {
        let world = World::default();
        let preference: Vec<usize> = (0..items.len()).collect();
        let lookup = |id: &str| extra.iter().find(|x| x.id == id).cloned();
        let arranged = Rules::new(rules).unwrap().arrange(items, &preference, k, &world.ctx(), &lookup);
        let rendered = arranged
            .placed
            .iter()
            .map(|p| {
                let id = match (p.index, &p.pinned) {
                    (Some(i), None) => items[i].id.clone(),
                    (None, Some(facts)) => facts.id.clone(),
                    other => panic!("a placed item is a candidate or a fetched pin, not {other:?}"),
                };
                if p.rules.is_empty() { id } else { format!("{id}[{}]", p.rules.join(",")) }
            })
            .collect();
        (rendered, arranged.notes)
    }

    #[test]
    fn exclude_seen_within_the_window_or_all_history() {
        let items = [item("a", &[]), item("b", &[]), item("c", &[]), item("d", &[])];
        let world = World {
            seen: [("a", NOW - 40 * DAY), ("b", NOW - 2 * DAY), ("d", NOW + 5)]
                .into_iter()
                .map(|(id, at)| (id.to_string(), at))
                .collect(),
            ..World::default()
        };
        let window = Some(Duration::from_secs(30 * 86_400));
        let (kept, removed) = filter_ids(vec![Rule::ExcludeSeen { window }], &items, &world);
        assert_eq!(kept, ["a", "c"]);
        assert_eq!(removed, ["b:exclude_seen", "d:exclude_seen"]);
        let (kept, _) = filter_ids(vec![Rule::ExcludeSeen { window: None }], &items, &world);
        assert_eq!(kept, ["c"]);
    }

    #[test]
    fn exclusions_and_blocklist_report_the_first_rule_in_list_order() {
        let mut gone = item("gone", &[("tag", &["ok"])]);
        gone.available = false;
        let items = [
            item("a", &[("tag", &["ok", "nsfw"])]),
            gone,
            item("asked", &[("tag", &["spam"])]),
            item("b", &[("tag", &["ok"])]),
            item("c", &[]),
        ];
        let world = World { excluded: HashSet::from(["asked".to_string()]), ..World::default() };
        let blocklist = Rule::Blocklist { attribute: "tag".into(), values: vec!["nsfw".into(), "spam".into()] };
        let rules = vec![blocklist.clone(), Rule::ExcludeUnavailable, Rule::ExcludeRequested];
        let (kept, removed) = filter_ids(rules, &items, &world);
        assert_eq!(kept, ["b", "c"]);
        assert_eq!(removed, ["a:blocklist", "gone:exclude_unavailable", "asked:blocklist"]);
        let rules = vec![Rule::ExcludeRequested, blocklist];
        let (_, removed) = filter_ids(rules, &items, &world);
        assert_eq!(removed, ["a:blocklist", "asked:exclude_requested"]);
    }

    #[test]
    fn dedupe_keeps_the_best_servable_item_of_each_group() {
        let mut unavailable = item("x1", &[("show", &["x"])]);
        unavailable.available = false;
        let items = [
            unavailable,
            item("x2", &[("show", &["x"])]),
            item("none1", &[]),
            item("x3", &[("show", &["x"])]),
            item("yz", &[("show", &["y", "z"])]),
            item("empty", &[("show", &[])]),
            item("z", &[("show", &["z"])]),
            item("none2", &[]),
        ];
        // Dedupe is written first, yet x2 (not the unavailable x1) represents the group.
        let rules = vec![Rule::Dedupe { attribute: "show".into() }, Rule::ExcludeUnavailable];
        let (kept, removed) = filter_ids(rules, &items, &World::default());
        assert_eq!(kept, ["x2", "none1", "yz", "empty", "none2"]);
        assert_eq!(removed, ["x1:exclude_unavailable", "x3:dedupe", "z:dedupe"]);
    }

    #[test]
    fn no_rules_keep_everything_and_the_first_k() {
        let items = [item("a", &[]), item("b", &[]), item("c", &[])];
        let (kept, removed) = filter_ids(vec![], &items, &World::default());
        assert_eq!(kept, ["a", "b", "c"]);
        assert!(removed.is_empty());
        let (placed, notes) = arrange(vec![], &items, 2, &[]);
        assert_eq!(placed, ["a", "b"]);
        assert!(notes.is_empty());
        let (placed, notes) = arrange(vec![], &items, 5, &[]);
        assert_eq!(placed, ["a", "b", "c"]);
        assert_eq!(notes, ["list ends at 3 of 5 positions: the candidates ran out"]);
    }

    #[test]
    fn max_per_window_moves_items_up_past_held_back_ones() {
        let items = [brand("a1", "a"), brand("a2", "a"), brand("a3", "a"), brand("b1", "b"), brand("a4", "a")];
        let rule = Rule::MaxPerWindow { attribute: "brand".into(), max: 2, window: 3 };
        let (placed, notes) = arrange(vec![rule], &items, 5, &[]);
        assert_eq!(placed, ["a1", "a2", "b1[max_per_window:brand]", "a3", "a4"]);
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn no_adjacent_alternates_and_stops_rather_than_break_the_rule() {
        let items = [brand("a1", "a"), brand("a2", "a"), brand("b1", "b"), brand("a3", "a"), brand("a4", "a")];
        let (placed, notes) = arrange(vec![Rule::NoAdjacent { attribute: "brand".into() }], &items, 5, &[]);
        assert_eq!(placed, ["a1", "b1[no_adjacent:brand]", "a2"]);
        assert_eq!(
            notes,
            ["list ends at 3 of 5 positions: each of the 2 remaining candidates breaks no_adjacent:brand"]
        );
    }

    #[test]
    fn list_attributes_count_for_every_value_and_items_without_it_are_free() {
        let items = [
            item("ab", &[("genre", &["a", "b"])]),
            item("b", &[("genre", &["b", "b"])]),
            item("a", &[("genre", &["a"])]),
            item("free", &[]),
            item("c", &[("genre", &["c"])]),
        ];
        let (placed, _) = arrange(vec![Rule::NoAdjacent { attribute: "genre".into() }], &items, 5, &[]);
        assert_eq!(placed, ["ab", "free[no_adjacent:genre]", "b", "a", "c"]);
    }

    #[test]
    fn freshness_reserves_the_last_open_positions() {
        let old = NOW - 30 * DAY;
        let items = [
            created(item("old1", &[]), old),
            item("unknown", &[]),
            created(item("old2", &[]), old),
            created(item("new1", &[]), NOW - DAY),
            created(item("new2", &[]), NOW - 2 * DAY),
            created(item("old3", &[]), old),
        ];
        let rule = Rule::Freshness { slots: 2, max_age: Duration::from_secs(7 * 86_400) };
        let (placed, notes) = arrange(vec![rule.clone()], &items, 3, &[]);
        assert_eq!(placed, ["old1", "new1[freshness_slot]", "new2[freshness_slot]"]);
        assert!(notes.is_empty(), "{notes:?}");
        // Fresh items ranked high enough take their slots without help.
        let (placed, _) = arrange(vec![rule.clone()], &items[2..], 3, &[]);
        assert_eq!(placed, ["old2", "new1", "new2"]);
        // Not enough fresh candidates: the best others fill the list, and the shortfall is noted.
        let few = [items[0].clone(), items[3].clone(), items[5].clone()];
        let (placed, notes) = arrange(vec![rule], &few, 3, &[]);
        assert_eq!(placed, ["old1", "new1", "old3"]);
        assert_eq!(notes, ["freshness: 1 of 2 reserved slots hold fresh items (not enough eligible fresh candidates)"]);
        // More slots than positions reserve every position.
        let many = Rule::Freshness { slots: 3, max_age: Duration::from_secs(7 * 86_400) };
        let (placed, notes) = arrange(vec![many], &few, 2, &[]);
        assert_eq!(placed, ["new1[freshness_slot]", "old1"]);
        assert_eq!(notes, ["freshness: 1 of 2 reserved slots hold fresh items (not enough eligible fresh candidates)"]);
    }

    #[test]
    fn pins_take_their_position_once_and_bypass_seen_and_dedupe() {
        let items = [item("a", &[]), item("b", &[]), item("c", &[]), item("d", &[])];
        let ad = item("ad", &[]);
        let rules = vec![
            Rule::Pin { item: "c".into(), position: 0 },
            Rule::Pin { item: "ad".into(), position: 2 },
            Rule::Pin { item: "ghost".into(), position: 3 },
            Rule::Pin { item: "b".into(), position: 9 },
        ];
        let (placed, notes) = arrange(rules, &items, 5, std::slice::from_ref(&ad));
        assert_eq!(placed, ["c[pin]", "a", "ad[pin]", "b", "d"]);
        assert_eq!(notes, ["pin ghost skipped: unknown item", "pin b ignored: position 9 is beyond the list (k = 5)"]);

        // A pinned candidate that exclude_seen or dedupe removed is still placed, from `candidates`.
        let world = World { seen: HashMap::from([("c".to_string(), NOW)]), ..World::default() };
        let rules =
            Rules::new(vec![Rule::ExcludeSeen { window: None }, Rule::Pin { item: "c".into(), position: 1 }]).unwrap();
        let filtered = rules.filter(&items, &world.ctx());
        assert_eq!(filtered.kept, [0, 1, 3]);
        let arranged = rules.arrange(&items, &filtered.kept, 3, &world.ctx(), &|_| None);
        let placed: Vec<_> = arranged.placed.iter().map(|p| (p.index, p.rules.clone())).collect();
        assert_eq!(placed, [(Some(0), vec![]), (Some(2), vec!["pin".to_string()]), (Some(1), vec![])]);
    }

    #[test]
    fn pins_still_answer_to_availability_requests_and_blocklists() {
        let mut gone = item("gone", &[]);
        gone.available = false;
        let items = [item("a", &[]), item("b", &[]), gone];
        let fetched = [item("bad", &[("tag", &["spam"])]), item("asked", &[])];
        let world = World { excluded: HashSet::from(["asked".to_string()]), ..World::default() };
        let rules = Rules::new(vec![
            Rule::ExcludeUnavailable,
            Rule::ExcludeRequested,
            Rule::Blocklist { attribute: "tag".into(), values: vec!["spam".into()] },
            Rule::Pin { item: "gone".into(), position: 0 },
            Rule::Pin { item: "bad".into(), position: 1 },
            Rule::Pin { item: "asked".into(), position: 2 },
        ])
        .unwrap();
        let lookup = |id: &str| fetched.iter().find(|x| x.id == id).cloned();
        let arranged = rules.arrange(&items, &[0, 1], 3, &world.ctx(), &lookup);
        assert_eq!(arranged.placed.iter().map(|p| p.index).collect::<Vec<_>>(), [Some(0), Some(1)]);
        assert_eq!(
            arranged.notes,
            [
                "pin gone skipped: removed by exclude_unavailable",
                "pin bad skipped: removed by blocklist",
                "pin asked skipped: removed by exclude_requested",
                "list ends at 2 of 3 positions: the candidates ran out",
            ]
        );
        // Without those rules the same pins are placed, the fetched ones with their facts.
        let rules = Rules::new(vec![Rule::Pin { item: "bad".into(), position: 1 }]).unwrap();
        let arranged = rules.arrange(&items, &[0, 1], 3, &world.ctx(), &lookup);
        assert_eq!(
            arranged.placed[1],
            Placed { index: None, pinned: Some(fetched[0].clone()), rules: vec!["pin".into()] }
        );
    }

    #[test]
    fn organic_items_make_room_for_upcoming_pins() {
        let items = [brand("x1", "x"), brand("x2", "x"), brand("y1", "y"), brand("y2", "y")];
        let ad = brand("ad", "x");
        let rules = vec![Rule::NoAdjacent { attribute: "brand".into() }, Rule::Pin { item: "ad".into(), position: 2 }];
        let (placed, notes) = arrange(rules, &items, 5, std::slice::from_ref(&ad));
        // x2 cannot go at 1 (next to x1) nor at 3 (next to the pinned x at 2).
        assert_eq!(placed, ["x1", "y1[no_adjacent:brand]", "ad[pin]", "y2[no_adjacent:brand]", "x2"]);
        assert!(notes.is_empty(), "{notes:?}");
        // Pins are contracts: two adjacent pins of one brand stay.
        let rules = vec![
            Rule::NoAdjacent { attribute: "brand".into() },
            Rule::Pin { item: "x1".into(), position: 0 },
            Rule::Pin { item: "x2".into(), position: 1 },
        ];
        let (placed, _) = arrange(rules, &items, 3, &[]);
        assert_eq!(placed, ["x1[pin]", "x2[pin]", "y1"]);
    }

    #[test]
    fn a_pin_moves_up_when_nothing_can_fill_the_positions_before_it() {
        let items = [item("a", &[]), item("b", &[])];
        let ad = item("ad", &[]);
        let rules = vec![Rule::Pin { item: "ad".into(), position: 4 }];
        let (placed, notes) = arrange(rules, &items, 6, std::slice::from_ref(&ad));
        assert_eq!(placed, ["a", "b", "ad[pin]"]);
        assert_eq!(
            notes,
            [
                "pin ad placed at 2 instead of 4: the candidates ran out",
                "list ends at 3 of 6 positions: the candidates ran out"
            ]
        );
    }

    #[test]
    fn validation_names_the_rule_and_the_field() {
        let check = |rules: Vec<Rule>, expect: &str| {
            assert_eq!(Rules::new(rules).unwrap_err().to_string(), expect);
        };
        let attr = |s: &str| s.to_string();
        check(
            vec![
                Rule::ExcludeSeen { window: None },
                Rule::ExcludeUnavailable,
                Rule::MaxPerWindow { attribute: attr("brand"), max: 0, window: 3 },
            ],
            "rules[2].max: must be at least 1",
        );
        check(
            vec![Rule::MaxPerWindow { attribute: attr("brand"), max: 3, window: 0 }],
            "rules[0].window: must be at least 1",
        );
        check(
            vec![Rule::MaxPerWindow { attribute: attr("brand"), max: 3, window: 3 }],
            "rules[0].max: must be less than window (3); otherwise the rule never binds",
        );
        check(vec![Rule::NoAdjacent { attribute: attr("") }], "rules[0].attribute: must not be empty");
        check(vec![Rule::Dedupe { attribute: attr("") }], "rules[0].attribute: must not be empty");
        check(
            vec![Rule::Blocklist { attribute: attr("tag"), values: vec![] }],
            "rules[0].values: must list at least one value",
        );
        check(
            vec![Rule::ExcludeSeen { window: Some(Duration::ZERO) }],
            "rules[0].window: must be positive (leave it out to exclude all of history)",
        );
        check(
            vec![Rule::Freshness { slots: 0, max_age: Duration::from_secs(1) }],
            "rules[0].slots: must be at least 1",
        );
        check(vec![Rule::Freshness { slots: 1, max_age: Duration::ZERO }], "rules[0].max_age: must be positive");
        check(
            vec![
                Rule::Freshness { slots: 1, max_age: Duration::from_secs(1) },
                Rule::Freshness { slots: 2, max_age: Duration::from_secs(1) },
            ],
            "rules[1].type: only one freshness rule is allowed (rules[0] is one)",
        );
        check(vec![Rule::Pin { item: attr(""), position: 0 }], "rules[0].item: must not be empty");
        check(
            vec![
                Rule::Pin { item: attr("a"), position: 1 },
                Rule::ExcludeRequested,
                Rule::Pin { item: attr("b"), position: 1 },
            ],
            "rules[2].position: position 1 is already pinned by rules[0]",
        );
        check(
            vec![Rule::Pin { item: attr("a"), position: 1 }, Rule::Pin { item: attr("a"), position: 2 }],
            "rules[1].item: `a` is already pinned by rules[0]",
        );
        let err = Rules::new(vec![Rule::NoAdjacent { attribute: attr("") }]).unwrap_err();
        assert!(matches!(err, RuleError::Invalid { index: 0, field: "attribute", .. }));
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Section {
        rules: Vec<Rule>,
    }

    #[test]
    fn rules_read_from_toml() {
        let text = r#"
            rules = [
                { type = "exclude_seen", window = "30days" },
                { type = "exclude_seen" },
                { type = "exclude_unavailable" },
                { type = "exclude_requested" },
                { type = "blocklist", attribute = "tag", values = ["nsfw"] },
                { type = "dedupe", attribute = "show" },
                { type = "max_per_window", attribute = "brand", max = 2, window = 5 },
                { type = "no_adjacent", attribute = "genre" },
                { type = "freshness", slots = 2, max_age = "7days 12h" },
                { type = "pin", item = "promo", position = 0 },
            ]
        "#;
        let section: Section = toml::from_str(text).unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(
            section.rules,
            [
                Rule::ExcludeSeen { window: Some(30 * day) },
                Rule::ExcludeSeen { window: None },
                Rule::ExcludeUnavailable,
                Rule::ExcludeRequested,
                Rule::Blocklist { attribute: "tag".into(), values: vec!["nsfw".into()] },
                Rule::Dedupe { attribute: "show".into() },
                Rule::MaxPerWindow { attribute: "brand".into(), max: 2, window: 5 },
                Rule::NoAdjacent { attribute: "genre".into() },
                Rule::Freshness { slots: 2, max_age: 7 * day + day / 2 },
                Rule::Pin { item: "promo".into(), position: 0 },
            ]
        );
        let rules = Rules::new(section.rules.clone()).unwrap();
        assert_eq!(rules.rules(), section.rules);
        // Writing and reading back gives the same rules, durations as humantime strings.
        let json = serde_json::to_string(&section).unwrap();
        assert!(json.contains(r#"{"type":"exclude_seen","window":"30days"}"#), "{json}");
        assert!(json.contains(r#"{"type":"exclude_seen"}"#), "{json}");
        assert_eq!(serde_json::from_str::<Section>(&json).unwrap(), section);
        assert_eq!(toml::from_str::<Section>(&toml::to_string(&section).unwrap()).unwrap(), section);
    }

    #[test]
    fn toml_mistakes_are_refused() {
        let parse = |text: &str| toml::from_str::<Section>(text).unwrap_err().to_string();
        assert!(parse(r#"rules = [{ type = "dedupe", attribute = "show", windw = 3 }]"#).contains("windw"));
        assert!(parse(r#"rules = [{ type = "exclude_seen", window = "30 dayz" }]"#).contains("bad duration `30 dayz`"));
        assert!(parse(r#"rules = [{ type = "shuffle" }]"#).contains("shuffle"));
        assert!(parse(r#"rules = [{ type = "exclude_unavailable", window = "1h" }]"#).contains("window"));
        assert!(parse(r#"rules = [{ type = "no_adjacent" }]"#).contains("attribute"));
    }

    // ---- properties ----

    const ATTRIBUTES: [&str; 3] = ["brand", "cat", "tag"];
    const VALUES: [&str; 3] = ["a", "b", "c"];
    const PROP_NOW: i64 = 1_000;

    fn facts(id: String) -> impl Strategy<Value = ItemFacts> {
        let values = proptest::collection::vec(proptest::sample::select(&VALUES[..]), 0..3);
        (
            proptest::bool::weighted(0.85),
            proptest::option::weighted(0.7, 900i64..1_010),
            proptest::collection::vec(proptest::option::weighted(0.8, values), ATTRIBUTES.len()),
        )
            .prop_map(move |(available, created_at, attributes)| ItemFacts {
                id: id.clone(),
                available,
                created_at,
                attributes: ATTRIBUTES
                    .iter()
                    .zip(attributes)
                    .filter_map(|(name, values)| {
                        Some((name.to_string(), values?.into_iter().map(str::to_string).collect()))
                    })
                    .collect(),
            })
    }

    fn attribute() -> impl Strategy<Value = String> {
        proptest::sample::select(&ATTRIBUTES[..]).prop_map(str::to_string)
    }

    fn rule_list(n: usize) -> impl Strategy<Value = Vec<Rule>> {
        let filters = proptest::collection::vec(
            prop_oneof![
                proptest::option::of(1u64..120)
                    .prop_map(|w| Rule::ExcludeSeen { window: w.map(Duration::from_millis) }),
                Just(Rule::ExcludeUnavailable),
                Just(Rule::ExcludeRequested),
                (attribute(), proptest::collection::vec(proptest::sample::select(&VALUES[..]), 1..3)).prop_map(
                    |(attribute, values)| Rule::Blocklist {
                        attribute,
                        values: values.into_iter().map(str::to_string).collect()
                    }
                ),
                attribute().prop_map(|attribute| Rule::Dedupe { attribute }),
            ],
            0..4,
        );
        let spreads = proptest::collection::vec(
            prop_oneof![
                (attribute(), 1usize..3, 1usize..4).prop_map(|(attribute, max, more)| Rule::MaxPerWindow {
                    attribute,
                    max,
                    window: max + more
                }),
                attribute().prop_map(|attribute| Rule::NoAdjacent { attribute }),
            ],
            0..3,
        );
        let freshness = proptest::option::of(
            (1usize..5, 1u64..80).prop_map(|(slots, ms)| Rule::Freshness { slots, max_age: Duration::from_millis(ms) }),
        );
        let mut pinnable: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
        pinnable.extend(["x0", "x1", "x2", "ghost"].map(str::to_string));
        let pins = proptest::collection::vec((0usize..14, proptest::sample::select(pinnable)), 0..4);
        (filters, spreads, freshness, pins).prop_flat_map(|(mut rules, spreads, freshness, pins)| {
            rules.extend(spreads);
            rules.extend(freshness);
            let (mut positions, mut items) = (HashSet::new(), HashSet::new());
            for (position, item) in pins {
                if positions.insert(position) && items.insert(item.clone()) {
                    rules.push(Rule::Pin { item, position });
                }
            }
            Just(rules).prop_shuffle()
        })
    }

    #[derive(Debug, Clone)]
    struct Scenario {
        candidates: Vec<ItemFacts>,
        extra: Vec<ItemFacts>,
        seen: HashMap<String, i64>,
        excluded: HashSet<String>,
        rules: Vec<Rule>,
        k: usize,
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        (0usize..25).prop_flat_map(|n| {
            let candidates: Vec<_> = (0..n).map(|i| facts(format!("i{i}"))).collect();
            let extra: Vec<_> = (0..3).map(|i| facts(format!("x{i}"))).collect();
            (
                candidates,
                extra,
                proptest::collection::vec(proptest::option::weighted(0.25, 900i64..1_010), n),
                proptest::collection::vec(proptest::bool::weighted(0.1), n + 3),
                rule_list(n),
                0usize..14,
            )
                .prop_map(|(candidates, extra, seen, excluded, rules, k)| Scenario {
                    seen: candidates.iter().zip(seen).filter_map(|(c, at)| Some((c.id.clone(), at?))).collect(),
                    excluded: candidates
                        .iter()
                        .chain(&extra)
                        .zip(excluded)
                        .filter(|(_, x)| *x)
                        .map(|(c, _)| c.id.clone())
                        .collect(),
                    candidates,
                    extra,
                    rules,
                    k,
                })
        })
    }

    /// The test's own reading of the per-item rules.
    fn oracle_rejects(rule: &Rule, item: &ItemFacts, s: &Scenario) -> bool {
        match rule {
            Rule::ExcludeSeen { window } => s
                .seen
                .get(&item.id)
                .is_some_and(|&at| window.is_none_or(|w| (PROP_NOW - at) < i64::try_from(w.as_millis()).unwrap())),
            Rule::ExcludeUnavailable => !item.available,
            Rule::ExcludeRequested => s.excluded.contains(&item.id),
            Rule::Blocklist { attribute, values } => {
                item.attributes.get(attribute).is_some_and(|vs| vs.iter().any(|v| values.contains(v)))
            }
            _ => false,
        }
    }

    fn shares(a: &ItemFacts, b: &ItemFacts, attribute: &str) -> bool {
        a.attributes.get(attribute).is_some_and(|vs| vs.iter().any(|v| b.has_value(attribute, v)))
    }

    fn check_scenario(s: &Scenario) -> Result<(), TestCaseError> {
        let rules = Rules::new(s.rules.clone()).expect("generated rules are valid");
        let ctx = RuleContext { now_ms: PROP_NOW, seen: &s.seen, excluded: &s.excluded };
        let c = &s.candidates;

        // Filtering: a partition; per-item rules and their attribution; dedupe groups.
        let filtered = rules.filter(c, &ctx);
        let mut all: Vec<usize> = filtered.kept.iter().copied().chain(filtered.removed.iter().map(|r| r.0)).collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..c.len()).collect::<Vec<_>>());
        prop_assert!(filtered.kept.is_sorted() && filtered.removed.is_sorted());
        let dedupes: Vec<&str> = s
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Dedupe { attribute } => Some(attribute.as_str()),
                _ => None,
            })
            .collect();
        let first_reject = |item: &ItemFacts| s.rules.iter().find(|r| oracle_rejects(r, item, s)).map(Rule::name);
        for &(i, name) in &filtered.removed {
            match first_reject(&c[i]) {
                Some(expected) => prop_assert_eq!(name, expected),
                None => {
                    prop_assert_eq!(name, "dedupe");
                    let beaten = (0..i)
                        .any(|j| first_reject(&c[j]).is_none() && dedupes.iter().any(|a| shares(&c[i], &c[j], a)));
                    prop_assert!(beaten, "{} removed by dedupe without a better item of its group", c[i].id);
                }
            }
        }
        for (x, &i) in filtered.kept.iter().enumerate() {
            prop_assert_eq!(first_reject(&c[i]), None);
            for &j in &filtered.kept[..x] {
                prop_assert!(!dedupes.iter().any(|a| shares(&c[i], &c[j], a)), "{} and {} share a group", i, j);
            }
        }

        // Arranging.
        let lookup = |id: &str| s.extra.iter().find(|x| x.id == id).cloned();
        let preference = &filtered.kept;
        let arranged = rules.arrange(c, preference, s.k, &ctx, &lookup);
        let placed: Vec<&ItemFacts> = arranged
            .placed
            .iter()
            .map(|p| match (p.index, &p.pinned) {
                (Some(i), None) => &c[i],
                (None, Some(facts)) => facts,
                other => panic!("bad placement {other:?}"),
            })
            .collect();
        let is_pin: Vec<bool> = arranged.placed.iter().map(|p| p.rules == ["pin"]).collect();
        prop_assert!(placed.len() <= s.k);
        let ids: HashSet<&str> = placed.iter().map(|f| f.id.as_str()).collect();
        prop_assert_eq!(ids.len(), placed.len(), "an item placed twice");
        let pin_rules: Vec<(&str, usize)> = s
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Pin { item, position } => Some((item.as_str(), *position)),
                _ => None,
            })
            .collect();
        let hard = |r: &&Rule| matches!(r, Rule::ExcludeUnavailable | Rule::ExcludeRequested | Rule::Blocklist { .. });
        for (x, (facts, p)) in placed.iter().zip(&arranged.placed).enumerate() {
            if is_pin[x] {
                prop_assert!(pin_rules.iter().any(|&(item, position)| item == facts.id && position < s.k));
                prop_assert!(!s.rules.iter().filter(hard).any(|r| oracle_rejects(r, facts, s)));
            } else {
                let index = p.index.unwrap();
                prop_assert!(preference.contains(&index));
                prop_assert!(!s.rules.iter().any(|r| oracle_rejects(r, facts, s)));
                for (y, other) in placed[..x].iter().enumerate() {
                    prop_assert!(is_pin[y] || !dedupes.iter().any(|a| shares(facts, other, a)));
                }
            }
        }

        // Pins that can be placed are placed, at their position unless one had to move up.
        let moved = arranged.notes.iter().any(|n| n.contains(" instead of "));
        let placeable = |item: &str, position: usize| {
            position < s.k
                && c.iter()
                    .find(|x| x.id == item)
                    .cloned()
                    .or_else(|| lookup(item))
                    .is_some_and(|facts| !s.rules.iter().filter(hard).any(|r| oracle_rejects(r, &facts, s)))
        };
        let mut pins_placed = 0;
        for &(item, position) in &pin_rules {
            let at = placed.iter().position(|f| f.id == item);
            if placeable(item, position) {
                pins_placed += 1;
                let at = at.expect("a placeable pin is placed");
                prop_assert!(is_pin[at]);
                prop_assert!(at == position || (moved && at < position), "pin {} at {} not {}", item, at, position);
            } else {
                prop_assert!(at.is_none_or(|at| !is_pin[at]));
            }
        }
        prop_assert_eq!(is_pin.iter().filter(|&&p| p).count(), pins_placed);

        // Windows: a rule is only ever broken by pins (when no pin moved, by pins alone).
        let spreads: Vec<(&str, usize, usize)> = s
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::MaxPerWindow { attribute, max, window } => Some((attribute.as_str(), *max, *window)),
                Rule::NoAdjacent { attribute } => Some((attribute.as_str(), 1, 2)),
                _ => None,
            })
            .collect();
        for &(attribute, max, window) in &spreads {
            for start in 0..placed.len() {
                let span = start..(start + window).min(placed.len());
                for value in VALUES {
                    let with: Vec<usize> = span.clone().filter(|&q| placed[q].has_value(attribute, value)).collect();
                    if with.len() > max {
                        let pins = with.iter().filter(|&&q| is_pin[q]).count();
                        prop_assert!(
                            pins == with.len() || (moved && pins > 0),
                            "{}={} {} times in positions {:?} (max {})",
                            attribute,
                            value,
                            with.len(),
                            span,
                            max
                        );
                    }
                }
            }
        }

        // Without diversity rules, every position is filled while candidates last, greedily.
        let mut pool_ids: HashSet<&str> =
            placed.iter().zip(&is_pin).filter(|p| *p.1).map(|p| p.0.id.as_str()).collect();
        let pool: Vec<usize> = preference.iter().copied().filter(|&i| pool_ids.insert(&c[i].id)).collect();
        let freshness = s.rules.iter().find_map(|r| match r {
            Rule::Freshness { slots, max_age } => Some((*slots, i64::try_from(max_age.as_millis()).unwrap())),
            _ => None,
        });
        if spreads.is_empty() {
            prop_assert_eq!(placed.len(), s.k.min(pins_placed + pool.len()));
            let organic: Vec<usize> =
                arranged.placed.iter().filter(|p| p.rules != ["pin"]).map(|p| p.index.unwrap()).collect();
            match freshness {
                None => {
                    prop_assert_eq!(&organic[..], &pool[..organic.len()]);
                    prop_assert!(arranged.placed.iter().all(|p| p.rules.is_empty() || p.rules == ["pin"]));
                    if pin_rules.is_empty() {
                        prop_assert_eq!(&organic[..], &preference[..s.k.min(preference.len())]);
                    }
                }
                Some((slots, max_age)) => {
                    let fresh = |f: &ItemFacts| f.created_at.is_some_and(|at| PROP_NOW - at < max_age);
                    let fresh_pins = placed.iter().zip(&is_pin).filter(|p| *p.1 && fresh(p.0)).count();
                    let fresh_pool = pool.iter().filter(|&&i| fresh(&c[i])).count();
                    let fresh_placed = placed.iter().filter(|f| fresh(f)).count();
                    let expect = slots.min(s.k).min(fresh_pins + fresh_pool.min(s.k - pins_placed));
                    prop_assert!(fresh_placed >= expect, "{} fresh items placed, expected {}", fresh_placed, expect);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_rule_holds_on_every_output(s in scenario()) {
            check_scenario(&s)?;
        }
    }
}
