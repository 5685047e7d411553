//! The resolved form of the `[features.<view>]` tables: [`resolve`] checks every definition
//! against the declared events and catalogue attributes and turns it into the [`ResolvedView`]s
//! the engine runs, or names the first definition that makes no sense
//! (`features.user_tx.features.tx_1h: ...`).
//!
//! `cascade-core` parses and layers the raw tables ([`cascade_core::features`]); what they mean
//! is decided here.

use cascade_core::config::{Config, ConfigError, EntityKind, EventTypeConfig, FieldSpec, is_identifier};
use cascade_core::features::{Aggregation, ConfigValue, FeatureConfig, ViewConfig, ViewSource, Window};
use cascade_core::{FieldType, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most tiles one sliding window may have (memory per key and feature is bounded by it).
pub const MAX_TILES: u64 = 10_000;
/// Largest `n` of a `last_n` feature.
pub const MAX_LAST_N: usize = 1_000;
/// Distinct values a `distinct_count` feature tracks per key unless `max_distinct` says otherwise.
pub const DEFAULT_MAX_DISTINCT: usize = 1_000;
/// Largest `max_distinct`.
pub const MAX_DISTINCT: usize = 100_000;

/// What a key part or an aggregated field refers to in a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldRef {
    /// The record's user (an event's `user`, a user record's id).
    User,
    /// The record's item (an event's `item`, an item record's id).
    Item,
    /// A declared event field, catalogue attribute or request context field.
    Field(String),
}

impl FieldRef {
    fn parse(name: &str) -> FieldRef {
        match name {
            "user" => FieldRef::User,
            "item" => FieldRef::Item,
            other => FieldRef::Field(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            FieldRef::User => "user",
            FieldRef::Item => "item",
            FieldRef::Field(f) => f,
        }
    }
}

/// A sliding window of `tiles` tiles of `tile_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub tile_ms: i64,
    pub tiles: i64,
}

/// An aggregation with its parameters resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggSpec {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    DistinctCount {
        max_distinct: usize,
    },
    Last,
    LastN {
        n: usize,
    },
    TimeSinceLast,
    DecayedCount {
        half_life_ms: i64,
    },
    /// Indices of the operands among the view's features.
    Ratio {
        numerator: usize,
        denominator: usize,
    },
    HourOfDay,
    DayOfWeek,
    Context,
}

impl AggSpec {
    /// Whether the feature keeps per-key state (ratio and request features are computed at read).
    pub fn is_stateful(&self) -> bool {
        !matches!(self, AggSpec::Ratio { .. } | AggSpec::HourOfDay | AggSpec::DayOfWeek | AggSpec::Context)
    }
}

/// A validated feature.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedFeature {
    pub name: String,
    pub agg: AggSpec,
    /// The aggregated field (`None` for count, time_since_last, decayed_count, ratio, time features).
    pub field: Option<FieldRef>,
    /// Event types this feature reads (events views; a subset of the view's).
    pub events: Vec<String>,
    /// Conditions on top of the view's filter.
    pub filter: Vec<(String, Value)>,
    /// `None`: lifetime.
    pub window: Option<Tiling>,
    /// Milliseconds; 0 = unbounded.
    pub ttl_ms: i64,
    /// Served when there is no fresh value; `None` is null.
    pub default: Option<Value>,
    /// The type of the feature's values.
    pub ty: FieldType,
}

/// A validated view.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedView {
    pub name: String,
    pub version: u32,
    pub source: ViewSource,
    /// Key parts in order (empty for request views).
    pub key: Vec<FieldRef>,
    /// Source event types (events views).
    pub events: Vec<String>,
    pub filter: Vec<(String, Value)>,
    pub allowed_lateness_ms: i64,
    /// A key's records separated by a longer gap in event time belong to separate lifetimes:
    /// reads see the newest one, a key idle for longer is forgotten and its next record starts it
    /// afresh. `max(largest TTL, allowed lateness)`, or `None` (kept forever) when any stateful
    /// feature has an unbounded TTL.
    pub expire_after_ms: Option<i64>,
    pub features: Vec<ResolvedFeature>,
}

/// Validates every `[features.*]` definition against the declared events and attributes and
/// returns the resolved views in name order. The error names the view or feature and the reason.
pub fn resolve(config: &Config) -> Result<Vec<ResolvedView>, ConfigError> {
    config.features.iter().map(|(name, view)| resolve_view(config, name, view)).collect()
}

fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid { key: key.into(), message: message.into() })
}

fn millis(key: &str, what: &str, d: Duration) -> Result<i64, ConfigError> {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return err(key, format!("{what} must be a whole number of milliseconds"));
    }
    i64::try_from(d.as_millis()).or_else(|_| err(key, format!("{what} is too long")))
}

fn resolve_view(config: &Config, name: &str, view: &ViewConfig) -> Result<ResolvedView, ConfigError> {
    let vkey = format!("features.{name}");
    if !is_identifier(name) {
        return err(vkey, "view names are lowercase letters, digits and _");
    }
    if view.version == 0 {
        return err(format!("{vkey}.version"), "must be at least 1");
    }
    let ttl_ms = millis(&vkey, "ttl", view.ttl)?;
    let allowed_lateness_ms = millis(&vkey, "allowed_lateness", view.allowed_lateness)?;
    let source = Source { config };
    let (key, events, filter) = match view.source {
        ViewSource::Events => {
            if view.events.is_empty() {
                return err(vkey, "an events view needs `events` (the event types it reads)");
            }
            for e in &view.events {
                source.event(&vkey, e)?;
            }
            if view.entity.0.is_empty() {
                return err(vkey, "an events view needs `entity` (e.g. \"user\", [\"user\", \"item\"], \"device\")");
            }
            let mut key = Vec::new();
            for part in &view.entity.0 {
                let ty = source.field_type(&format!("{vkey}.entity"), part, &view.events)?;
                if !matches!(ty, FieldType::String | FieldType::Int | FieldType::Bool) {
                    return err(
                        format!("{vkey}.entity"),
                        format!("`{part}` is a {ty}; keys are strings, ints or bools"),
                    );
                }
                if key.contains(&FieldRef::parse(part)) {
                    return err(format!("{vkey}.entity"), format!("`{part}` appears twice"));
                }
                key.push(FieldRef::parse(part));
            }
            let filter = source.filter(&format!("{vkey}.filter"), &view.filter, &view.events)?;
            (key, view.events.clone(), filter)
        }
        ViewSource::Item | ViewSource::User => {
            let own = if view.source == ViewSource::Item { "item" } else { "user" };
            if !view.events.is_empty() || !view.filter.is_empty() {
                return err(vkey, format!("a {own} catalogue view takes no `events` or `filter`"));
            }
            if !(view.entity.0.is_empty() || view.entity.0 == [own]) {
                return err(format!("{vkey}.entity"), format!("a {own} catalogue view is keyed by the {own} id"));
            }
            (vec![FieldRef::parse(own)], Vec::new(), Vec::new())
        }
        ViewSource::Request => {
            if !view.events.is_empty() || !view.filter.is_empty() || !view.entity.0.is_empty() {
                return err(vkey, "a request view takes no `entity`, `events` or `filter`");
            }
            (Vec::new(), Vec::new(), Vec::new())
        }
    };
    if view.features.is_empty() {
        return err(format!("{vkey}.features"), "the view declares no features");
    }
    let index: BTreeMap<&str, usize> = view.features.keys().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut features = Vec::with_capacity(view.features.len());
    for (fname, f) in &view.features {
        let fkey = format!("{vkey}.features.{fname}");
        features.push(resolve_feature(&source, view, &fkey, fname, f, ttl_ms, &events)?);
    }
    // Ratios: operands and types are known only once every feature is resolved.
    for (i, (fname, f)) in view.features.iter().enumerate() {
        if f.agg != Aggregation::Ratio {
            continue;
        }
        let fkey = format!("{vkey}.features.{fname}");
        let operand = |which: &str, name: &Option<String>| -> Result<usize, ConfigError> {
            let Some(name) = name else { return err(&fkey, format!("a ratio needs `{which}`")) };
            let Some(&j) = index.get(name.as_str()) else {
                return err(&fkey, format!("{which} `{name}` is not a feature of this view"));
            };
            let op = &features[j];
            if j == i || matches!(op.agg, AggSpec::Ratio { .. }) {
                return err(&fkey, format!("{which} `{name}` is a ratio; operands are plain aggregates"));
            }
            if !matches!(op.ty, FieldType::Int | FieldType::Float) {
                return err(&fkey, format!("{which} `{name}` is a {}, not a number", op.ty));
            }
            Ok(j)
        };
        let numerator = operand("numerator", &f.numerator)?;
        let denominator = operand("denominator", &f.denominator)?;
        features[i].agg = AggSpec::Ratio { numerator, denominator };
    }
    let expire_after_ms = if view.source == ViewSource::Request {
        None
    } else {
        let ttls: Vec<i64> = features.iter().filter(|f| f.agg.is_stateful()).map(|f| f.ttl_ms).collect();
        if ttls.contains(&0) { None } else { ttls.iter().copied().max().map(|t| t.max(allowed_lateness_ms)) }
    };
    Ok(ResolvedView {
        name: name.to_string(),
        version: view.version,
        source: view.source,
        key,
        events,
        filter,
        allowed_lateness_ms,
        expire_after_ms,
        features,
    })
}

fn resolve_feature(
    source: &Source<'_>,
    view: &ViewConfig,
    fkey: &str,
    fname: &str,
    f: &FeatureConfig,
    view_ttl_ms: i64,
    view_events: &[String],
) -> Result<ResolvedFeature, ConfigError> {
    use Aggregation as A;
    if !is_identifier(fname) {
        return err(fkey, "feature names are lowercase letters, digits and _");
    }
    let agg = f.agg;
    let allowed = match view.source {
        ViewSource::Events => !matches!(agg, A::HourOfDay | A::DayOfWeek | A::Context),
        ViewSource::Item | ViewSource::User => agg == A::Last,
        ViewSource::Request => matches!(agg, A::HourOfDay | A::DayOfWeek | A::Context),
    };
    if !allowed {
        let hint = match view.source {
            ViewSource::Events => "hour_of_day, day_of_week and context belong in a view with source = \"request\"",
            ViewSource::Item | ViewSource::User => "catalogue views hold attributes: use agg = \"last\"",
            ViewSource::Request => "request views hold hour_of_day, day_of_week and context features",
        };
        return err(fkey, format!("`{}` is not available here ({hint})", agg.name()));
    }
    let refuse = |present: bool, what: &str| -> Result<(), ConfigError> {
        if present { err(fkey, format!("`{what}` does not apply to {}", agg.name())) } else { Ok(()) }
    };
    refuse(f.n.is_some() && agg != A::LastN, "n")?;
    refuse(f.half_life.is_some() && agg != A::DecayedCount, "half_life")?;
    refuse(f.max_distinct.is_some() && agg != A::DistinctCount, "max_distinct")?;
    refuse((f.numerator.is_some() || f.denominator.is_some()) && agg != A::Ratio, "numerator/denominator")?;
    refuse(f.ty.is_some() && agg != A::Context, "type")?;

    // Event types and filter.
    let events: Vec<String> = match (&f.events, view.source) {
        (None, ViewSource::Events) => {
            // The view's event types that carry every field the feature reads.
            let mut names: Vec<&str> = f.filter.keys().map(String::as_str).collect();
            names.extend(f.field.as_deref());
            let carrying: Vec<String> = view_events
                .iter()
                .filter(|e| {
                    let decl = &source.config.events[e.as_str()];
                    names.iter().all(|n| match *n {
                        "user" => decl.entities.contains(&EntityKind::User),
                        "item" => decl.entities.contains(&EntityKind::Item),
                        field => decl.fields.contains_key(field),
                    })
                })
                .cloned()
                .collect();
            if carrying.is_empty() { view_events.to_vec() } else { carrying }
        }
        (None, _) => view_events.to_vec(),
        (Some(list), ViewSource::Events) => {
            if list.is_empty() {
                return err(fkey, "`events` is empty");
            }
            for e in list {
                source.event(fkey, e)?;
                if !view_events.contains(e) {
                    return err(fkey, format!("event type `{e}` is not among the view's events"));
                }
            }
            list.clone()
        }
        (Some(_), _) => return err(fkey, "`events` applies to events views only"),
    };
    if agg == A::Ratio || view.source != ViewSource::Events {
        refuse(f.events.is_some(), "events")?;
        refuse(!f.filter.is_empty(), "filter")?;
    }
    let filter = source.filter(&format!("{fkey}.filter"), &f.filter, &events)?;

    // The aggregated field.
    let needs_field =
        matches!(agg, A::Sum | A::Mean | A::Min | A::Max | A::DistinctCount | A::Last | A::LastN | A::Context);
    let (field, field_ty) = match (&f.field, needs_field) {
        (None, true) => return err(fkey, format!("{} needs `field`", agg.name())),
        (Some(_), false) => return err(fkey, format!("{} takes no `field`", agg.name())),
        (None, false) => (None, None),
        (Some(name), true) => {
            let ty = match view.source {
                ViewSource::Events => source.field_type(fkey, name, &events)?,
                ViewSource::Item | ViewSource::User => source.attribute_type(fkey, view.source, name)?,
                ViewSource::Request => {
                    if !is_identifier(name) {
                        return err(fkey, "context field names are lowercase letters, digits and _");
                    }
                    let t = f.ty.as_deref().unwrap_or("string");
                    t.parse::<FieldType>().or_else(|e| err(fkey, e))?
                }
            };
            (Some(FieldRef::parse(name)), Some(ty))
        }
    };
    let numeric = matches!(field_ty, Some(FieldType::Int | FieldType::Float));
    if matches!(agg, A::Sum | A::Mean | A::Min | A::Max) && !numeric {
        return err(
            fkey,
            format!("{} needs a numeric field; `{}` is a {}", agg.name(), name_or(&f.field), ty_or(field_ty)),
        );
    }
    if matches!(agg, A::DistinctCount | A::LastN)
        && !matches!(field_ty, Some(FieldType::String | FieldType::Int | FieldType::Bool))
    {
        return err(
            fkey,
            format!(
                "{} needs a string, int or bool field; `{}` is a {}",
                agg.name(),
                name_or(&f.field),
                ty_or(field_ty)
            ),
        );
    }

    // Window.
    let window = match f.window {
        Window::Lifetime => {
            refuse(f.tile.is_some(), "tile (a lifetime aggregate has no tiles)")?;
            None
        }
        Window::Sliding(w) => {
            if !matches!(agg, A::Count | A::Sum | A::Mean | A::Min | A::Max | A::DistinctCount | A::Last | A::LastN) {
                return err(fkey, format!("{} takes no window", agg.name()));
            }
            let Some(tile) = f.tile else {
                return err(
                    fkey,
                    "a sliding window needs `tile`, its resolution (e.g. window = \"1h\", tile = \"1m\")",
                );
            };
            let (w_ms, t_ms) = (millis(fkey, "window", w)?, millis(fkey, "tile", tile)?);
            if t_ms == 0 || w_ms == 0 {
                return err(fkey, "window and tile must be positive");
            }
            if w_ms % t_ms != 0 {
                return err(
                    fkey,
                    format!(
                        "window {} is not a multiple of tile {}",
                        humantime::format_duration(w),
                        humantime::format_duration(tile)
                    ),
                );
            }
            if (w_ms / t_ms) as u64 > MAX_TILES {
                return err(fkey, format!("window has {} tiles; at most {MAX_TILES}", w_ms / t_ms));
            }
            Some(Tiling { tile_ms: t_ms, tiles: w_ms / t_ms })
        }
    };

    let spec = match agg {
        A::Count => AggSpec::Count,
        A::Sum => AggSpec::Sum,
        A::Mean => AggSpec::Mean,
        A::Min => AggSpec::Min,
        A::Max => AggSpec::Max,
        A::DistinctCount => {
            let max_distinct = f.max_distinct.unwrap_or(DEFAULT_MAX_DISTINCT);
            if !(1..=MAX_DISTINCT).contains(&max_distinct) {
                return err(fkey, format!("max_distinct must be between 1 and {MAX_DISTINCT}"));
            }
            AggSpec::DistinctCount { max_distinct }
        }
        A::Last => AggSpec::Last,
        A::LastN => {
            let Some(n) = f.n else { return err(fkey, "last_n needs `n`, how many values to keep") };
            if !(1..=MAX_LAST_N).contains(&n) {
                return err(fkey, format!("n must be between 1 and {MAX_LAST_N}"));
            }
            AggSpec::LastN { n }
        }
        A::TimeSinceLast => AggSpec::TimeSinceLast,
        A::DecayedCount => {
            let Some(h) = f.half_life else { return err(fkey, "decayed_count needs `half_life` (e.g. \"1h\")") };
            let half_life_ms = millis(fkey, "half_life", h)?;
            if half_life_ms == 0 {
                return err(fkey, "half_life must be positive");
            }
            AggSpec::DecayedCount { half_life_ms }
        }
        // Operands are resolved once every feature of the view is known.
        A::Ratio => AggSpec::Ratio { numerator: usize::MAX, denominator: usize::MAX },
        A::HourOfDay => AggSpec::HourOfDay,
        A::DayOfWeek => AggSpec::DayOfWeek,
        A::Context => AggSpec::Context,
    };
    let ty = match agg {
        A::Count | A::DistinctCount | A::HourOfDay | A::DayOfWeek => FieldType::Int,
        A::Sum | A::Mean | A::Min | A::Max | A::TimeSinceLast | A::DecayedCount | A::Ratio => FieldType::Float,
        A::Last | A::Context => field_ty.expect("checked above"),
        A::LastN => FieldType::StringList,
    };
    let ttl_ms = match f.ttl {
        Some(t) => millis(fkey, "ttl", t)?,
        None => view_ttl_ms,
    };
    if view.source == ViewSource::Request {
        refuse(f.ttl.is_some(), "ttl")?;
    }
    let default = match &f.default {
        Some(v) => Some(v.to_value(ty).or_else(|e| err(format!("{fkey}.default"), e.reason))?),
        None => match agg {
            A::Count | A::DistinctCount => Some(Value::Int(0)),
            A::Sum | A::DecayedCount => Some(Value::Float(0.0)),
            _ => None,
        },
    };
    Ok(ResolvedFeature { name: fname.to_string(), agg: spec, field, events, filter, window, ttl_ms, default, ty })
}

fn name_or(f: &Option<String>) -> &str {
    f.as_deref().unwrap_or("?")
}

fn ty_or(t: Option<FieldType>) -> String {
    t.map_or_else(|| "?".to_string(), |t| t.to_string())
}

/// Lookups into the declared events and catalogue attributes.
struct Source<'a> {
    config: &'a Config,
}

impl<'a> Source<'a> {
    fn event(&self, key: &str, name: &str) -> Result<&'a EventTypeConfig, ConfigError> {
        self.config.events.get(name).map_or_else(
            || {
                let declared: Vec<&str> = self.config.events.keys().map(String::as_str).collect();
                err(key, format!("unknown event type `{name}` (declared: {})", declared.join(", ")))
            },
            Ok,
        )
    }

    /// The type of `name` (`user`, `item` or a field) on every one of `events`; it must be present
    /// on all of them with one type.
    fn field_type(&self, key: &str, name: &str, events: &[String]) -> Result<FieldType, ConfigError> {
        let mut found: Option<(FieldType, &str)> = None;
        for e in events {
            let decl = self.event(key, e)?;
            let ty = match name {
                "user" | "item" => {
                    let kind = if name == "user" { EntityKind::User } else { EntityKind::Item };
                    if !decl.entities.contains(&kind) {
                        return err(key, format!("event type `{e}` carries no {name}"));
                    }
                    FieldType::String
                }
                field => match decl.fields.get(field) {
                    Some(FieldSpec { ty, .. }) => *ty,
                    None => {
                        let declared: Vec<&str> = decl.fields.keys().map(String::as_str).collect();
                        let declared = if declared.is_empty() { "none".to_string() } else { declared.join(", ") };
                        return err(
                            key,
                            format!("unknown field `{field}` of event type `{e}` (declared: user, item, {declared})"),
                        );
                    }
                },
            };
            match found {
                Some((t, other)) if t != ty => {
                    return err(key, format!("field `{name}` is a {t} on `{other}` but a {ty} on `{e}`"));
                }
                _ => found = Some((ty, e)),
            }
        }
        found.map(|(t, _)| t).map_or_else(|| err(key, "no event types"), Ok)
    }

    fn attribute_type(&self, key: &str, source: ViewSource, name: &str) -> Result<FieldType, ConfigError> {
        let (kind, attrs) = match source {
            ViewSource::Item => ("item", &self.config.entities.item.attributes),
            _ => ("user", &self.config.entities.user.attributes),
        };
        attrs.get(name).map(|s| s.ty).map_or_else(
            || {
                let declared: Vec<&str> = attrs.keys().map(String::as_str).collect();
                err(key, format!("unknown {kind} attribute `{name}` (declared: {})", declared.join(", ")))
            },
            Ok,
        )
    }

    fn filter(
        &self,
        key: &str,
        filter: &BTreeMap<String, ConfigValue>,
        events: &[String],
    ) -> Result<Vec<(String, Value)>, ConfigError> {
        let mut out = Vec::with_capacity(filter.len());
        for (field, literal) in filter {
            let fkey = format!("{key}.{field}");
            if field == "user" || field == "item" {
                return err(fkey, "filters compare event fields; key the view by user or item instead");
            }
            let ty = self.field_type(&fkey, field, events)?;
            if matches!(ty, FieldType::StringList) {
                return err(fkey, "string_list fields cannot be filtered on");
            }
            out.push((field.clone(), literal.to_value(ty).or_else(|e| err(&fkey, e.reason))?));
        }
        Ok(out)
    }
}

/// Whether a record's field value satisfies a filter literal (ints and floats compare as numbers).
pub fn filter_matches(actual: Option<&Value>, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Some(Value::Int(a)), Value::Float(b)) => (*a as f64) == *b,
        (Some(Value::Float(a)), Value::Int(b)) => *a == (*b as f64),
        (Some(a), b) => a == b,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::config::template_features_example;

    fn load(features: &str) -> Config {
        Config::from_toml(features, "cascade.toml").unwrap_or_else(|e| panic!("{e}\n{features}"))
    }

    #[test]
    fn the_template_example_resolves() {
        let text = template_features_example();
        let views = resolve(&load(&text)).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
        assert!(names.contains(&"user_tx") && names.contains(&"request"), "{names:?}");
        let tx = views.iter().find(|v| v.name == "user_tx").unwrap();
        let count = tx.features.iter().find(|f| f.name == "tx_1h").unwrap();
        assert_eq!(count.window, Some(Tiling { tile_ms: 60_000, tiles: 60 }));
        assert_eq!(count.default, Some(Value::Int(0)));
    }

    #[test]
    fn resolves_keys_filters_ratios_and_expiry() {
        let c = load(
            r#"
[features.pair]
entity = ["user", "item"]
events = ["play", "skip"]
ttl = "1h"
allowed_lateness = "2h"
[features.pair.features]
plays = { agg = "count", events = ["play"], filter = { completed = true } }
skips = { agg = "count", events = ["skip"], ttl = "10m" }
skip_rate = { agg = "ratio", numerator = "skips", denominator = "plays" }
recent = { agg = "last_n", field = "item", n = 5, window = "1h", tile = "1m" }

[features.device]
entity = "device"
events = ["transaction"]
ttl = "0s"
[features.device.features]
cards = { agg = "distinct_count", field = "card", max_distinct = 50 }
"#,
        );
        let views = resolve(&c).unwrap();
        let device = &views[0];
        assert_eq!(device.key, [FieldRef::Field("device".into())]);
        assert_eq!(device.expire_after_ms, None, "ttl 0 keeps keys forever");
        let pair = &views[1];
        assert_eq!(pair.key, [FieldRef::User, FieldRef::Item]);
        assert_eq!(pair.expire_after_ms, Some(7_200_000), "expiry is at least the allowed lateness");
        let plays = &pair.features[0];
        assert_eq!(plays.name, "plays");
        assert_eq!(plays.filter, [("completed".to_string(), Value::Bool(true))]);
        let rate = pair.features.iter().find(|f| f.name == "skip_rate").unwrap();
        assert_eq!(rate.agg, AggSpec::Ratio { numerator: 3, denominator: 0 });
        assert_eq!(rate.ty, FieldType::Float);
    }

    #[test]
    fn invalid_definitions_name_the_feature_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[features.v]\nentity = \"user\"\nevents = [\"teleport\"]\n[features.v.features]\nc = { agg = \"count\" }",
                "features.v",
                "unknown event type `teleport`",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\ns = { agg = \"sum\", field = \"amount\" }",
                "features.v.features.s",
                "unknown field `amount` of event type `play`",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nc = { agg = \"count\", window = \"1h\", tile = \"7m\" }",
                "features.v.features.c",
                "window 1h is not a multiple of tile 7m",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nc = { agg = \"count\", window = \"1h\" }",
                "features.v.features.c",
                "needs `tile`",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nc = { agg = \"count\" }\nr = { agg = \"ratio\", numerator = \"c\", denominator = \"nope\" }",
                "features.v.features.r",
                "denominator `nope` is not a feature",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"transaction\"]\n[features.v.features]\nm = { agg = \"mean\", field = \"currency\" }",
                "features.v.features.m",
                "needs a numeric field; `currency` is a string",
            ),
            (
                "[features.v]\nentity = \"ip\"\nevents = [\"transaction\", \"play\"]\n[features.v.features]\nc = { agg = \"count\" }",
                "features.v.entity",
                "unknown field `ip` of event type `play`",
            ),
            (
                "[features.v]\nentity = \"item\"\nevents = [\"transaction\"]\n[features.v.features]\nc = { agg = \"count\" }",
                "features.v.entity",
                "event type `transaction` carries no item",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\nfilter = { completed = \"yes\" }\n[features.v.features]\nc = { agg = \"count\" }",
                "features.v.filter.completed",
                "expected bool, got string",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nc = { agg = \"count\", default = \"none\" }",
                "features.v.features.c.default",
                "expected int, got string",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nd = { agg = \"decayed_count\" }",
                "features.v.features.d",
                "needs `half_life`",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nl = { agg = \"last_n\", field = \"item\", n = 0 }",
                "features.v.features.l",
                "n must be between 1",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nt = { agg = \"time_since_last\", window = \"1h\", tile = \"1m\" }",
                "features.v.features.t",
                "time_since_last takes no window",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nh = { agg = \"hour_of_day\" }",
                "features.v.features.h",
                "source = \"request\"",
            ),
            (
                "[features.v]\nsource = \"item\"\n[features.v.features]\np = { agg = \"last\", field = \"colour\" }",
                "features.v.features.p",
                "unknown item attribute `colour`",
            ),
            (
                "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nc = { agg = \"count\", events = [\"click\"] }",
                "features.v.features.c",
                "`click` is not among the view's events",
            ),
            (
                "[features.V]\nentity = \"user\"\nevents = [\"play\"]\n[features.V.features]\nc = { agg = \"count\" }",
                "features.V",
                "view names",
            ),
            ("[features.v]\nentity = \"user\"\nevents = [\"play\"]\n", "features.v.features", "declares no features"),
        ];
        for (text, key, reason) in cases {
            // The raw tables parse (core checks only their shape); resolving them is refused.
            let e = resolve(&load(text)).expect_err(text).to_string();
            assert!(
                e.contains(&format!("{key}:")) && e.contains(reason),
                "{text}\n=> {e}\n(expected {key}: ...{reason})"
            );
        }
    }

    #[test]
    fn filter_compares_numbers_across_int_and_float() {
        assert!(filter_matches(Some(&Value::Int(3)), &Value::Float(3.0)));
        assert!(!filter_matches(Some(&Value::String("a".into())), &Value::String("b".into())));
        assert!(!filter_matches(None, &Value::Bool(true)));
    }
}
