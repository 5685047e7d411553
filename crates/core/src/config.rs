//! The project configuration (`cascade.toml`) and its layering.
//!
//! Layers, later ones winning: built-in defaults < the file < `CASCADE__SECTION__KEY`
//! environment variables < command-line flags (applied by the caller to the resolved struct).
//! Reading the file and the process environment is left to the caller, so this module stays
//! free of I/O and every layer is testable.

use crate::value::FieldType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The documented reference configuration, written by `cascade init`.
pub const TEMPLATE: &str = include_str!("cascade.toml");

/// Environment variables with this prefix override configuration keys.
pub const ENV_PREFIX: &str = "CASCADE__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or did not fit the schema; the message names the key and line.
    #[error("{source_name}: {message}")]
    Parse { source_name: String, message: String },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// The values parsed but make no sense together.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// Always [`ErrorKind::Invalid`](crate::ErrorKind::Invalid): the configuration is the
    /// operator's input, and fixing it is the only remedy.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            ConfigError::Parse { .. } | ConfigError::Env { .. } | ConfigError::Invalid { .. } => {
                crate::ErrorKind::Invalid
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub project: ProjectConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub catalogue: CatalogueConfig,
    pub entities: EntitiesConfig,
    #[serde(default = "default_events")]
    pub events: BTreeMap<String, EventTypeConfig>,
    pub train: TrainConfig,
    /// Where online feature state lives and how it is served (`[features_store]`).
    pub features_store: FeaturesStoreConfig,
    /// Feature views by name (`[features.<view>]`); none by default. See [`crate::features`];
    /// parsed here, resolved by `cascade_features`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, crate::features::ViewConfig>,
    /// How `cascade serve` serves recommendations (`[serving]`).
    pub serving: ServingConfig,
    /// Named recommendation pipelines (`[pipelines.<name>]`): sources and quotas, deadlines,
    /// rules, exploration. Kept as tables here and validated by the engine, which owns their
    /// meaning; `default` exists even when not written.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pipelines: BTreeMap<String, toml::Table>,
}

/// `[serving]`: what `cascade serve` does beyond ingestion and features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingConfig {
    /// How often the server looks for a newer trained bundle and swaps it in ("0s" = never).
    #[serde(with = "duration_str")]
    pub reload_interval: Duration,
    /// Log every response's impressions into the event log (type `impression`).
    pub log_impressions: bool,
    /// Responses waiting to be logged; when full, impressions are dropped and counted
    /// (`impressions_dropped_total`) rather than slowing responses.
    pub impression_queue: usize,
    /// The pipeline a request without `pipeline` uses.
    pub default_pipeline: String,
    /// How often the pipelines' `precomputed` sources are computed for the most recently active
    /// users ("0s" = never: those sources are computed per request).
    #[serde(with = "duration_str")]
    pub precompute_interval: Duration,
    /// How many of the most recently active users get precomputed lists.
    pub precompute_users: usize,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            reload_interval: Duration::from_secs(10),
            log_impressions: true,
            impression_queue: 10_000,
            default_pipeline: "default".into(),
            precompute_interval: Duration::from_secs(600),
            precompute_users: 100_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            project: ProjectConfig::default(),
            server: ServerConfig::default(),
            log: LogConfig::default(),
            catalogue: CatalogueConfig::default(),
            entities: EntitiesConfig::default(),
            events: {
                let mut events = default_events();
                events.insert(IMPRESSION.to_string(), impression_event());
                events
            },
            train: TrainConfig::default(),
            features_store: FeaturesStoreConfig::default(),
            features: BTreeMap::new(),
            serving: ServingConfig::default(),
            pipelines: BTreeMap::new(),
        }
    }
}

/// How `cascade train` turns the log into training data and which retrieval models it fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Event types that count as implicit positive interactions, with their weight.
    pub interactions: BTreeMap<String, f32>,
    /// Share of the most recent interactions held out to tune and evaluate models.
    pub validation_fraction: f64,
    /// Retrieval models to fit: any of pop, itemknn, als, bpr, content.
    pub models: Vec<String>,
    /// Also train the cascade's rankers (light ranker, GBDT LambdaMART, calibration) on
    /// candidates from those models.
    pub rankers: bool,
    /// Most users per ranker training period (a seeded sample beyond it).
    pub ranker_users: usize,
    /// How the rankers see per-candidate features: as within-request percentiles, as they are,
    /// or both (twice the columns).
    pub ranker_features: FeatureScale,
}

/// `[train] ranker_features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureScale {
    /// Positions among the request's candidates (`_pct`): they do not drift between periods.
    #[default]
    Relative,
    Absolute,
    Both,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            interactions: [("click", 1.0), ("like", 2.0), ("play", 1.0), ("purchase", 3.0), ("rating", 1.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            validation_fraction: 0.1,
            models: ["pop", "itemknn", "als", "bpr", "content"].into_iter().map(String::from).collect(),
            rankers: true,
            ranker_users: 20_000,
            ranker_features: FeatureScale::Relative,
        }
    }
}

/// Which online store keeps the feature state that `cascade serve` updates from the log and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeaturesBackend {
    /// In the server process, checkpointed to `data_dir/features.checkpoint` with its log offset.
    Embedded,
    /// Per-entity aggregation state in Redis (windows still evaluated at read time).
    Redis,
}

/// `[features_store]`: the online feature store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeaturesStoreConfig {
    pub backend: FeaturesBackend,
    /// Used with `backend = "redis"`.
    pub redis_url: String,
    /// Every Redis key of this project starts with it; one writer (server) per prefix.
    pub redis_prefix: String,
    /// How often the server looks for new log records to apply.
    pub poll_interval_ms: u64,
    /// How often the embedded state is checkpointed (and expired keys swept, both backends).
    #[serde(with = "duration_str")]
    pub checkpoint_interval: Duration,
    /// Most entities one `POST /v1/features` may ask for; more get 413.
    pub max_entities_per_request: usize,
    /// Share of `POST /v1/features` requests whose served vectors are logged to
    /// `data_dir/feature_vectors.ndjson` for `cascade features audit` (0 = off, 1 = all).
    pub vector_log_sample_rate: f64,
    /// How often `cascade serve` lands new events in the offline store (the day-partitioned
    /// Parquet files of `cascade features export`, compacted); zero disables it.
    #[serde(with = "duration_str")]
    pub offline_export_interval: Duration,
}

impl Default for FeaturesStoreConfig {
    fn default() -> Self {
        FeaturesStoreConfig {
            backend: FeaturesBackend::Embedded,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "cascade".into(),
            poll_interval_ms: 50,
            checkpoint_interval: Duration::from_secs(30),
            max_entities_per_request: 1000,
            vector_log_sample_rate: 0.0,
            offline_export_interval: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectConfig {
    pub name: String,
    pub data_dir: PathBuf,
}

impl Default for ProjectConfig {
    fn default() -> Self {
        ProjectConfig { name: "cascade".into(), data_dir: "data".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub addr: String,
    pub max_batch_events: usize,
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { addr: "127.0.0.1:8080".into(), max_batch_events: 10_000, max_body_bytes: 16 << 20 }
    }
}

/// When appended events are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fsync before every acknowledgement (group commit shares one fsync among concurrent writers).
    Always,
    /// Acknowledge once written to the OS; fsync on a timer.
    Interval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    #[serde(with = "duration_str")]
    pub retention: Duration,
    pub retention_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 << 20,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 100,
            retention: Duration::ZERO,
            retention_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogueConfig {
    pub default_available: bool,
}

impl Default for CatalogueConfig {
    fn default() -> Self {
        CatalogueConfig { default_available: true }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntitiesConfig {
    pub user: EntityConfig,
    pub item: EntityConfig,
}

impl Default for EntitiesConfig {
    fn default() -> Self {
        let specs = |pairs: &[(&str, &str)]| -> BTreeMap<String, FieldSpec> {
            pairs.iter().map(|(k, v)| ((*k).to_string(), v.parse().unwrap())).collect()
        };
        EntitiesConfig {
            user: EntityConfig {
                attributes: specs(&[
                    ("age", "int?"),
                    ("gender", "string?"),
                    ("occupation", "string?"),
                    ("country", "string?"),
                ]),
            },
            item: EntityConfig {
                attributes: specs(&[
                    ("title", "string"),
                    ("genres", "string_list?"),
                    ("creator", "string?"),
                    ("released_at", "timestamp?"),
                    ("price", "float?"),
                ]),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityConfig {
    pub attributes: BTreeMap<String, FieldSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    User,
    Item,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeConfig {
    #[serde(default)]
    pub entities: Vec<EntityKind>,
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
}

/// A declared field: its type and whether it is required. Written `"float"` or `"float?"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldSpec {
    pub ty: FieldType,
    pub required: bool,
}

impl std::str::FromStr for FieldSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, required) = match s.strip_suffix('?') {
            Some(name) => (name, false),
            None => (s, true),
        };
        Ok(FieldSpec { ty: name.parse()?, required })
    }
}

impl TryFrom<String> for FieldSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<FieldSpec> for String {
    fn from(f: FieldSpec) -> String {
        format!("{}{}", f.ty, if f.required { "" } else { "?" })
    }
}

/// The event type `cascade serve` logs impressions as: one event per shown item. Always declared
/// (a config may declare it itself, with these fields at least).
pub use crate::impression::IMPRESSION;

fn impression_event() -> EventTypeConfig {
    EventTypeConfig {
        entities: vec![EntityKind::User, EntityKind::Item],
        fields: crate::impression::FIELDS
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.parse().expect("the impression's field types parse")))
            .collect(),
    }
}

fn default_events() -> BTreeMap<String, EventTypeConfig> {
    let both = || vec![EntityKind::User, EntityKind::Item];
    let ev = |entities: Vec<EntityKind>, fields: &[(&str, &str)]| EventTypeConfig {
        entities,
        fields: fields.iter().map(|(k, v)| ((*k).to_string(), v.parse().unwrap())).collect(),
    };
    [
        ("view", ev(both(), &[("duration_ms", "int?"), ("position", "int?"), ("surface", "string?")])),
        ("click", ev(both(), &[("position", "int?"), ("surface", "string?")])),
        ("play", ev(both(), &[("duration_ms", "int?"), ("completed", "bool?")])),
        ("skip", ev(both(), &[("after_ms", "int?")])),
        ("like", ev(both(), &[])),
        ("purchase", ev(both(), &[("price", "float?"), ("quantity", "int?")])),
        ("rating", ev(both(), &[("value", "float")])),
        (
            "transaction",
            ev(
                vec![EntityKind::User],
                &[
                    ("amount", "float"),
                    ("currency", "string"),
                    ("merchant", "string?"),
                    ("device", "string?"),
                    ("ip", "string?"),
                    ("card", "string?"),
                ],
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub(crate) mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("bad duration `{s}` ({e}); write e.g. \"0s\", \"12h\", \"30days\""))
        })
    }
}

impl Config {
    /// Parses a configuration file's text. Errors name the key and the line.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        Self::load(text, source_name, std::iter::empty())
    }

    /// Parses a file's text and applies `CASCADE__SECTION__KEY` overrides from `env`
    /// (pass the process environment; unrelated variables are ignored).
    pub fn load(
        text: &str,
        source_name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err =
            |e: toml::de::Error| ConfigError::Parse { source_name: source_name.to_string(), message: e.to_string() };
        // The typed parse first, so that errors in the file point at its lines.
        let mut config: Config = toml::from_str(text).map_err(parse_err)?;
        let overrides: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        if !overrides.is_empty() {
            let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
            for (var, value) in &overrides {
                apply_override(&mut table, var, value)?;
                config = Config::deserialize(table.clone())
                    .map_err(|e| ConfigError::Env { var: var.clone(), message: e.to_string() })?;
            }
        }
        config.events.entry(IMPRESSION.to_string()).or_insert_with(impression_event);
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names and cross-field rules of the sections core owns.
    /// `[features]` and `[pipelines]` are only parsed here; their engines resolve them
    /// (`cascade_features::FeatureSet::from_config`, `cascade_serving::pipeline::Pipeline::from_tables`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| Err(ConfigError::Invalid { key, message: message.to_string() });
        if self.server.max_batch_events == 0 {
            return invalid("server.max_batch_events".into(), "must be at least 1");
        }
        if self.log.segment_bytes < 4096 {
            return invalid("log.segment_bytes".into(), "must be at least 4096");
        }
        if self.log.fsync == FsyncPolicy::Interval && self.log.fsync_interval_ms == 0 {
            return invalid("log.fsync_interval_ms".into(), "must be at least 1 with fsync = \"interval\"");
        }
        for (name, event) in &self.events {
            if !is_identifier(name) {
                return invalid(format!("events.{name}"), "event type names are lowercase letters, digits and _");
            }
            for field in event.fields.keys() {
                if !is_identifier(field) {
                    return invalid(
                        format!("events.{name}.fields.{field}"),
                        "field names are lowercase letters, digits and _",
                    );
                }
            }
        }
        for (event, weight) in &self.train.interactions {
            if !self.events.contains_key(event) {
                return invalid(format!("train.interactions.{event}"), "not a declared event type");
            }
            if !(weight.is_finite() && *weight > 0.0) {
                return invalid(format!("train.interactions.{event}"), "weights must be positive");
            }
        }
        if !(0.0..1.0).contains(&self.train.validation_fraction) {
            return invalid("train.validation_fraction".into(), "must be in [0, 1)");
        }
        for model in &self.train.models {
            if !["pop", "itemknn", "als", "bpr", "content"].contains(&model.as_str()) {
                return invalid("train.models".into(), "known models: pop, itemknn, als, bpr, content");
            }
        }
        for (kind, entity) in [("user", &self.entities.user), ("item", &self.entities.item)] {
            for attr in entity.attributes.keys() {
                if !is_identifier(attr) {
                    return invalid(
                        format!("entities.{kind}.attributes.{attr}"),
                        "attribute names are lowercase letters, digits and _",
                    );
                }
            }
        }
        let fs = &self.features_store;
        if fs.poll_interval_ms == 0 {
            return invalid("features_store.poll_interval_ms".into(), "must be at least 1");
        }
        if fs.checkpoint_interval.is_zero() {
            return invalid("features_store.checkpoint_interval".into(), "must be positive, e.g. \"30s\"");
        }
        if fs.max_entities_per_request == 0 {
            return invalid("features_store.max_entities_per_request".into(), "must be at least 1");
        }
        if !(0.0..=1.0).contains(&fs.vector_log_sample_rate) {
            return invalid("features_store.vector_log_sample_rate".into(), "must be in [0, 1]");
        }
        if fs.redis_prefix.is_empty()
            || !fs.redis_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return invalid("features_store.redis_prefix".into(), "letters, digits and _ - . : only, not empty");
        }
        if fs.backend == FeaturesBackend::Redis
            && !(fs.redis_url.starts_with("redis://") || fs.redis_url.starts_with("unix://"))
        {
            return invalid("features_store.redis_url".into(), "must start with redis:// or unix://");
        }
        // `[features]` is resolved (events, fields, windows, ratios) by the feature engine,
        // `cascade_features::FeatureSet::from_config`, not here: core checks only what it owns.
        Ok(())
    }
}

/// The naming rule of event types, fields, attributes, feature views and features: lowercase
/// ASCII letters, digits and `_`, not starting with a digit, at most 64 bytes.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// Sets `section.key...` from `CASCADE__SECTION__KEY=value`. The value is read as a TOML value
/// when it is one (`8080`, `true`, `["user"]`) and as a plain string otherwise.
fn apply_override(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env { var: var.to_string(), message: "empty key segment".into() });
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = table;
    for seg in parents {
        let entry = cur.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(ConfigError::Env { var: var.to_string(), message: format!("`{seg}` is not a section") }),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_the_defaults() {
        assert_eq!(Config::from_toml(TEMPLATE, "template").unwrap(), Config::default());
        assert_eq!(Config::from_toml("", "empty").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err =
            Config::from_toml("[server]\naddr = \"x:1\"\nmax_batch = 5\n", "cascade.toml").unwrap_err().to_string();
        assert!(err.contains("cascade.toml") && err.contains("line 3") && err.contains("max_batch"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = Config::from_toml("[log]\n\nsegment_bytes = \"big\"\n", "f.toml").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("segment_bytes"), "{err}");
        let err = Config::from_toml("[events.x]\nfields = { a = \"decimal\" }\n", "f.toml").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("unknown type `decimal`"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let env = [
            ("CASCADE__SERVER__ADDR".to_string(), "0.0.0.0:9000".to_string()),
            ("CASCADE__LOG__FSYNC".to_string(), "interval".to_string()),
            ("CASCADE__SERVER__MAX_BATCH_EVENTS".to_string(), "7".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let c = Config::load("[server]\naddr = \"127.0.0.1:1\"\nmax_batch_events = 3\n", "f", env).unwrap();
        assert_eq!(c.server.addr, "0.0.0.0:9000");
        assert_eq!(c.server.max_batch_events, 7);
        assert_eq!(c.log.fsync, FsyncPolicy::Interval);
    }

    #[test]
    fn bad_env_override_names_the_variable() {
        let env = [("CASCADE__SERVER__MAX_BATCH_EVENTS".to_string(), "many".to_string())];
        let err = Config::load("", "f", env).unwrap_err().to_string();
        assert!(err.contains("CASCADE__SERVER__MAX_BATCH_EVENTS"), "{err}");
        let env = [("CASCADE__SERVER__COLOUR".to_string(), "red".to_string())];
        assert!(Config::load("", "f", env).unwrap_err().to_string().contains("colour"));
    }

    #[test]
    fn custom_events_replace_defaults_and_are_checked() {
        let c = Config::from_toml(
            "[events.listen]\nentities = [\"user\", \"item\"]\nfields = { seconds = \"float?\" }\n\n[train]\ninteractions = { listen = 1.0 }\n",
            "f",
        )
        .unwrap();
        // The built-in `impression` type stays: serving logs impressions whatever else is declared.
        assert_eq!(c.events.keys().collect::<Vec<_>>(), ["impression", "listen"]);
        let err = Config::from_toml("[events.Listen]\n[train]\ninteractions = {}\n", "f").unwrap_err().to_string();
        assert!(err.contains("events.Listen"), "{err}");
        let err = Config::from_toml("[train]\ninteractions = { teleport = 1.0 }\n", "f").unwrap_err().to_string();
        assert!(err.contains("train.interactions.teleport"), "{err}");
    }

    #[test]
    fn features_store_section() {
        let c =
            Config::from_toml("[features_store]\nbackend = \"redis\"\nredis_url = \"redis://10.0.0.1:6380\"\n", "f")
                .unwrap();
        assert_eq!(c.features_store.backend, FeaturesBackend::Redis);
        assert_eq!(c.features_store.redis_url, "redis://10.0.0.1:6380");
        let err = Config::from_toml("[features_store]\nbackend = \"memcached\"\n", "f").unwrap_err().to_string();
        assert!(err.contains("memcached") && err.contains("line 2"), "{err}");
        let err = Config::from_toml("[features_store]\nredis_prefix = \"a b\"\n", "f").unwrap_err().to_string();
        assert!(err.contains("features_store.redis_prefix"), "{err}");
        let env = [("CASCADE__FEATURES_STORE__BACKEND".to_string(), "redis".to_string())];
        assert_eq!(Config::load("", "f", env).unwrap().features_store.backend, FeaturesBackend::Redis);
    }
}
