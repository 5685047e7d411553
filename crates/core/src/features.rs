//! Feature definitions: the raw `[features.<view>]` tables of `cascade.toml`, as
//! [`Config`](crate::Config) parses and layers them.
//!
//! A **view** groups features that share one entity key, one set of source records, one allowed
//! lateness and one state per key. Views are TOML tables keyed by name (`[features.user_tx]`)
//! rather than an array of tables: like `[events.<type>]` a duplicate name is then a TOML error,
//! and every key has a stable path an environment variable can override
//! (`CASCADE__FEATURES__USER_TX__TTL=7days`), which an array index would not give.
//!
//! ```toml
//! [features.user_tx]
//! entity = "user"                    # or "item", ["user", "item"], or an event field: "device"
//! events = ["transaction"]
//! ttl = "30days"                     # values older than this are served as stale defaults
//! allowed_lateness = "5m"
//!
//! [features.user_tx.features]
//! tx_1h = { agg = "count", window = "1h", tile = "1m" }
//! amount_24h = { agg = "sum", field = "amount", window = "24h", tile = "10m" }
//! ```
//!
//! Only their shape is checked here (serde: unknown keys, bad durations and windows, named by
//! line). What they mean — events, fields and attributes that exist, windows that tile, ratios
//! over features of the view — is resolved by the feature engine (`cascade_features::resolve`),
//! which names the first definition that makes no sense (`features.user_tx.features.tx_1h: ...`).

use crate::time::Timestamp;
use crate::value::{FieldType, Value, ValueError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::time::Duration;

/// Allowed lateness of a view that does not declare one.
pub const DEFAULT_ALLOWED_LATENESS: Duration = Duration::from_secs(300);

/// One `[features.<view>]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// Where the view's records come from: events (default), item or user catalogue records, or
    /// the request itself (context features).
    #[serde(default, skip_serializing_if = "ViewSource::is_events")]
    pub source: ViewSource,
    /// The entity key: `"user"`, `"item"`, an event field (`"device"`), or a list of them for a
    /// composite key (`["user", "item"]`). Events views only.
    #[serde(default, skip_serializing_if = "EntitySpec::is_empty")]
    pub entity: EntitySpec,
    /// Source event types. Events views only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Only events whose fields equal all of these enter the view.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, ConfigValue>,
    /// Default TTL of the view's features ("0s": unbounded).
    #[serde(default, with = "crate::config::duration_str")]
    pub ttl: Duration,
    /// Records older than the newest one the view has seen minus this are counted and dropped.
    #[serde(default = "default_lateness", with = "crate::config::duration_str")]
    pub allowed_lateness: Duration,
    /// Bumped when the meaning of the view changes; recorded with training sets and checkpoints.
    #[serde(default = "one")]
    pub version: u32,
    #[serde(default)]
    pub features: BTreeMap<String, FeatureConfig>,
}

fn default_lateness() -> Duration {
    DEFAULT_ALLOWED_LATENESS
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewSource {
    #[default]
    Events,
    /// Item catalogue records (attributes as of each upsert's `updated_at`).
    Item,
    /// User catalogue records.
    User,
    /// The request (or label row) itself: time of day, day of week, context fields.
    Request,
}

impl ViewSource {
    fn is_events(&self) -> bool {
        *self == ViewSource::Events
    }
}

/// An entity key written as one name or a list of names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntitySpec(pub Vec<String>);

impl EntitySpec {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for EntitySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for EntitySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => EntitySpec(vec![s]),
            OneOrMany::Many(v) => EntitySpec(v),
        })
    }
}

/// One feature of a view (`name = { agg = ..., ... }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    pub agg: Aggregation,
    /// The field aggregated: an event field, `"user"` or `"item"`; for catalogue views an attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Narrows the view's event types for this feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Further field = value conditions, on top of the view's filter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, ConfigValue>,
    /// `"lifetime"` (default) or a sliding window length such as `"1h"`.
    #[serde(default, skip_serializing_if = "Window::is_lifetime")]
    pub window: Window,
    /// The resolution of a sliding window; the window must be a whole number of tiles.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub tile: Option<Duration>,
    /// Overrides the view's TTL.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub ttl: Option<Duration>,
    /// Served when there is no fresh value (absent: 0 for counts and sums, null otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<ConfigValue>,
    /// `last_n`: how many values to keep, most recent first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// `decayed_count`: the half-life of an event's weight.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub half_life: Option<Duration>,
    /// `distinct_count`: distinct values tracked per key (the count saturates there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_distinct: Option<usize>,
    /// `ratio`: features of the same view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<String>,
    /// `context`: the type of the request field (default string).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    DistinctCount,
    Last,
    LastN,
    TimeSinceLast,
    DecayedCount,
    Ratio,
    HourOfDay,
    DayOfWeek,
    Context,
}

impl Aggregation {
    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Count => "count",
            Aggregation::Sum => "sum",
            Aggregation::Mean => "mean",
            Aggregation::Min => "min",
            Aggregation::Max => "max",
            Aggregation::DistinctCount => "distinct_count",
            Aggregation::Last => "last",
            Aggregation::LastN => "last_n",
            Aggregation::TimeSinceLast => "time_since_last",
            Aggregation::DecayedCount => "decayed_count",
            Aggregation::Ratio => "ratio",
            Aggregation::HourOfDay => "hour_of_day",
            Aggregation::DayOfWeek => "day_of_week",
            Aggregation::Context => "context",
        }
    }
}

/// A feature's window: all of the key's (live) history, or a sliding window in tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Window {
    #[default]
    Lifetime,
    Sliding(Duration),
}

impl Window {
    fn is_lifetime(&self) -> bool {
        *self == Window::Lifetime
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Window::Lifetime => s.serialize_str("lifetime"),
            Window::Sliding(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "lifetime" {
            return Ok(Window::Lifetime);
        }
        humantime::parse_duration(&s).map(Window::Sliding).map_err(|e| {
            serde::de::Error::custom(format!("bad window `{s}` ({e}); write \"lifetime\" or a length such as \"1h\""))
        })
    }
}

/// A literal in a filter or a default: bool, integer, float, string or list of strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<String>),
}

impl ConfigValue {
    /// The literal as a value of type `ty`; integers widen to floats, RFC 3339 strings become
    /// timestamps. Nothing else is coerced.
    pub fn to_value(&self, ty: FieldType) -> Result<Value, ValueError> {
        Ok(match (ty, self) {
            (FieldType::Bool, ConfigValue::Bool(b)) => Value::Bool(*b),
            (FieldType::Int, ConfigValue::Int(i)) => Value::Int(*i),
            (FieldType::Float, ConfigValue::Int(i)) => Value::Float(*i as f64),
            (FieldType::Float, ConfigValue::Float(f)) => Value::Float(*f),
            (FieldType::String, ConfigValue::String(s)) => Value::String(s.clone()),
            (FieldType::Timestamp, ConfigValue::String(s)) => Value::Timestamp(
                Timestamp::parse_rfc3339(s).map_err(|e| ValueError::new(format!("bad timestamp `{s}`: {e}")))?,
            ),
            (FieldType::Timestamp, ConfigValue::Int(ms)) if *ms >= 0 => Value::Timestamp(Timestamp(*ms)),
            (FieldType::StringList, ConfigValue::List(l)) => Value::StringList(l.clone()),
            _ => return Err(ValueError::new(format!("expected {ty}, got {}", self.kind()))),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            ConfigValue::Bool(_) => "bool",
            ConfigValue::Int(_) => "integer",
            ConfigValue::Float(_) => "float",
            ConfigValue::String(_) => "string",
            ConfigValue::List(_) => "list",
        }
    }
}

mod opt_duration {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => crate::config::duration_str::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        crate::config::duration_str::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, template_features_example};

    fn load(features: &str) -> Result<Config, String> {
        Config::from_toml(features, "cascade.toml").map_err(|e| e.to_string())
    }

    /// (`cascade_features::resolve`'s tests check that the example also resolves.)
    #[test]
    fn the_template_example_parses_and_round_trips() {
        let text = template_features_example();
        let config = load(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(config.features.contains_key("user_tx") && config.features.contains_key("request"));
        // Serialising and parsing again gives the same configuration (`cascade config` prints it).
        let again = toml::to_string(&config).unwrap();
        assert_eq!(load(&again).unwrap(), config, "{again}");
    }

    #[test]
    fn malformed_definitions_name_the_line() {
        // Serde-level problems name the line.
        let e = load(
            "[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nc = { agg = \"median\" }",
        )
        .unwrap_err();
        assert!(e.contains("line 5") && e.contains("median"), "{e}");
        let e = load("[features.v]\nentity = \"user\"\nevents = [\"play\"]\n[features.v.features]\nc = { agg = \"count\", window = \"soon\" }")
            .unwrap_err();
        assert!(e.contains("bad window `soon`"), "{e}");
    }

    #[test]
    fn environment_overrides_reach_views() {
        let text = "[features.v]\nentity = \"user\"\nevents = [\"play\"]\nttl = \"1h\"\n[features.v.features]\nc = { agg = \"count\" }\n";
        let env = [("CASCADE__FEATURES__V__TTL".to_string(), "7days".to_string())];
        let c = Config::load(text, "f", env).unwrap();
        assert_eq!(c.features["v"].ttl, Duration::from_secs(7 * 86_400));
    }
}
