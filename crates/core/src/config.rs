//! The project configuration (`cascade.toml`) and its layering.
//!
//! Layers, later ones winning: built-in defaults < the file < `CASCADE__SECTION__KEY`
//! environment variables < command-line flags (applied by the caller to the resolved struct).
//! Reading the file and the process environment is left to the caller, so this module stays
//! free of I/O and every layer is testable.
//!
//! Core types only the sections it owns; the others are layered here as raw TOML and typed by
//! the crate that owns them through [`Section`] ([`Config::get`]), whose errors still name the
//! file's line or the environment variable.

use crate::value::FieldType;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The documented reference configuration, written by `cascade init`.
pub const TEMPLATE: &str = include_str!("cascade.toml");

/// The commented `[features]` example at the end of [`TEMPLATE`], uncommented: the tests of
/// every crate that reads feature definitions check that it parses and resolves.
pub fn template_features_example() -> String {
    let tail = TEMPLATE.split("# --- feature definitions example ---").nth(1).unwrap_or_default();
    // The prose before the first table stays commented.
    let tail = tail.find("# [features.").map_or("", |at| &tail[at..]);
    tail.lines()
        .filter_map(|l| l.strip_prefix("# ").or_else(|| (l == "#").then_some("")))
        .collect::<Vec<_>>()
        .join("\n")
}

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

/// The resolved configuration. Core types the sections it owns (`[project]`, the schema:
/// `[catalogue]`, `[entities]`, `[events]`; and `[features]`' raw views) and keeps every other
/// known section as a layered raw table, typed and checked by the crate that owns it through
/// [`Section`] (`[log]`: cascade-store, `[server]`: cascade-server, `[train]`: cascade-training,
/// `[serving]`: cascade-serving, `[features_store]`: cascade-features). `[pipelines]` stays a
/// map of tables for cascade-serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub project: ProjectConfig,
    /// `[server]`, typed by `cascade_server::ServerConfig`.
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub server: toml::Table,
    /// `[log]`, typed by `cascade_store::LogConfig`.
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub log: toml::Table,
    pub catalogue: CatalogueConfig,
    pub entities: EntitiesConfig,
    #[serde(default = "default_events")]
    pub events: BTreeMap<String, EventTypeConfig>,
    /// `[train]`, typed by `cascade_training::TrainConfig`; its `interactions` are shared
    /// vocabulary, read by [`Config::interactions`].
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub train: toml::Table,
    /// `[features_store]`, typed by `cascade_features::FeaturesStoreConfig`.
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub features_store: toml::Table,
    /// Feature views by name (`[features.<view>]`); none by default. See [`crate::features`];
    /// parsed here, resolved by `cascade_features`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, crate::features::ViewConfig>,
    /// `[serving]`, typed by `cascade_serving::ServingConfig`.
    #[serde(skip_serializing_if = "toml::Table::is_empty")]
    pub serving: toml::Table,
    /// Named recommendation pipelines (`[pipelines.<name>]`): sources and quotas, deadlines,
    /// rules, exploration. Kept as tables here and validated by the engine, which owns their
    /// meaning; `default` exists even when not written.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pipelines: BTreeMap<String, toml::Table>,
    /// Where the layers came from, so that a section's errors can name the file's line or the
    /// environment variable. Not part of the configuration's value.
    #[serde(skip)]
    origin: Origin,
}

/// The sections core keeps raw for the crate that owns them.
pub const RAW_SECTIONS: [&str; 5] = ["server", "log", "train", "features_store", "serving"];

/// A section of `cascade.toml` typed by the crate that owns it. Read it with
/// [`Config::get`] (serde's `deny_unknown_fields` names unknown keys; [`Section::check`] checks
/// values, with errors naming `section.key`), write it back with [`Config::set`].
pub trait Section: Serialize + DeserializeOwned + Default {
    /// The section's name, one of [`RAW_SECTIONS`].
    const NAME: &'static str;
    /// What serde cannot check; `config` is the whole configuration, for cross-section rules.
    fn check(&self, config: &Config) -> Result<(), ConfigError> {
        let _ = config;
        Ok(())
    }
}

/// The file's text and the environment overrides applied to it.
#[derive(Debug, Clone, Default)]
struct Origin {
    source_name: String,
    text: String,
    env: Vec<(String, String)>,
}

impl PartialEq for Origin {
    /// Two configurations are equal when their values are, wherever they came from.
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            project: ProjectConfig::default(),
            server: toml::Table::new(),
            log: toml::Table::new(),
            catalogue: CatalogueConfig::default(),
            entities: EntitiesConfig::default(),
            events: {
                let mut events = default_events();
                events.insert(IMPRESSION.to_string(), impression_event());
                events
            },
            train: toml::Table::new(),
            features_store: toml::Table::new(),
            features: BTreeMap::new(),
            serving: toml::Table::new(),
            pipelines: BTreeMap::new(),
            origin: Origin::default(),
        }
    }
}

/// `[train] interactions` when not written: the event types that count as implicit positive
/// interactions, with their weight. Both halves read them ([`Config::interactions`]).
pub fn default_interactions() -> BTreeMap<String, f32> {
    [("click", 1.0), ("like", 2.0), ("play", 1.0), ("purchase", 3.0), ("rating", 1.0)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
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

/// `#[serde(with = "cascade_core::config::duration_str")]`: a `Duration` written as "30s", "12h".
pub mod duration_str {
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
        // The parse of the file first, so that errors in the file point at its lines.
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
        config.origin = Origin { source_name: source_name.to_string(), text: text.to_string(), env: overrides };
        config.events.entry(IMPRESSION.to_string()).or_insert_with(impression_event);
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names and cross-field rules of the sections core owns, and
    /// `[train] interactions` (the shared vocabulary of which events count). The other raw
    /// sections are checked by their crates ([`Section`]); `[features]` and `[pipelines]` are
    /// only parsed here; their engines resolve them (`cascade_features::FeatureSet::from_config`,
    /// `cascade_serving::pipeline::Pipeline::from_tables`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| Err(ConfigError::Invalid { key, message: message.to_string() });
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
        self.interactions()?;
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
        // `[features]` is resolved (events, fields, windows, ratios) by the feature engine,
        // `cascade_features::FeatureSet::from_config`, not here: core checks only what it owns.
        Ok(())
    }

    /// `[train] interactions`: the event types that count as implicit positive interactions,
    /// with their weights ([`default_interactions`] when not written). Training and serving both
    /// read them; each must be a declared event type with a positive weight.
    pub fn interactions(&self) -> Result<BTreeMap<String, f32>, ConfigError> {
        let Some(raw) = self.train.get("interactions") else {
            return Ok(default_interactions());
        };
        let interactions = BTreeMap::<String, f32>::deserialize(raw.clone())
            .map_err(|e| self.section_error::<TrainInteractions>("train", &e))?;
        for (event, weight) in &interactions {
            if !self.events.contains_key(event) {
                return Err(ConfigError::invalid(format!("train.interactions.{event}"), "not a declared event type"));
            }
            if !(weight.is_finite() && *weight > 0.0) {
                return Err(ConfigError::invalid(format!("train.interactions.{event}"), "weights must be positive"));
            }
        }
        Ok(interactions)
    }

    /// The raw, layered table of section `name` (one of [`RAW_SECTIONS`]).
    pub fn raw_section(&self, name: &str) -> Option<&toml::Table> {
        Some(match name {
            "server" => &self.server,
            "log" => &self.log,
            "train" => &self.train,
            "features_store" => &self.features_store,
            "serving" => &self.serving,
            _ => return None,
        })
    }

    fn raw_section_mut(&mut self, name: &str) -> Option<&mut toml::Table> {
        Some(match name {
            "server" => &mut self.server,
            "log" => &mut self.log,
            "train" => &mut self.train,
            "features_store" => &mut self.features_store,
            "serving" => &mut self.serving,
            _ => return None,
        })
    }

    /// Types section `name` (a missing section or key takes `T`'s default). Errors name the key,
    /// and the file's line or the environment variable it came from.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        let raw = self.raw_section(name).ok_or_else(|| ConfigError::invalid(name.to_string(), "not a section"))?;
        if raw.is_empty() {
            return Ok(T::default());
        }
        T::deserialize(toml::Value::Table(raw.clone())).map_err(|e| self.section_error::<T>(name, &e))
    }

    /// Whether section `S` reads as its default from [`TEMPLATE`] and from an empty file: the
    /// template shows every key at its default, so changing one means changing the other. The
    /// crate that owns a section runs this in its tests.
    pub fn check_template_defaults<S: Section + PartialEq + std::fmt::Debug>() -> Result<(), String> {
        for (name, text) in [("the template", TEMPLATE), ("an empty file", "")] {
            let read = Config::from_toml(text, name).and_then(|c| c.get::<S>()).map_err(|e| e.to_string())?;
            if read != S::default() {
                return Err(format!("[{}] from {name} is {read:?}, not the default {:?}", S::NAME, S::default()));
            }
        }
        Ok(())
    }

    /// The section `S` owns, typed and checked.
    pub fn get<S: Section>(&self) -> Result<S, ConfigError> {
        let section: S = self.section(S::NAME)?;
        section.check(self)?;
        Ok(section)
    }

    /// Replaces section `S` with `section` (every key written, defaults included).
    pub fn set<S: Section>(&mut self, section: &S) -> Result<(), ConfigError> {
        let table = toml::Table::try_from(section)
            .map_err(|e| ConfigError::invalid(S::NAME.to_string(), &format!("does not serialize: {e}")))?;
        *self.raw_section_mut(S::NAME).ok_or_else(|| ConfigError::invalid(S::NAME.to_string(), "not a section"))? =
            table;
        Ok(())
    }

    /// Explains why section `name` did not type: the file's own error (with its line) when the
    /// file alone is wrong, else the environment variable whose override broke it, else the
    /// error itself, naming the section.
    fn section_error<T: DeserializeOwned>(&self, name: &str, error: &toml::de::Error) -> ConfigError {
        let origin = &self.origin;
        if let Ok(doc) = toml::de::Deserializer::parse(&origin.text)
            && let Err(e) =
                serde::de::DeserializeSeed::deserialize(OneSection::<T> { name, ty: std::marker::PhantomData }, doc)
        {
            return ConfigError::Parse { source_name: origin.source_name.clone(), message: e.to_string() };
        }
        if let Ok(mut table) = toml::from_str::<toml::Table>(&origin.text) {
            for (var, value) in &origin.env {
                if apply_override(&mut table, var, value).is_err() {
                    break;
                }
                if let Some(section) = table.get(name)
                    && let Err(e) = T::deserialize(section.clone())
                {
                    return ConfigError::Env { var: var.clone(), message: e.to_string() };
                }
            }
        }
        ConfigError::Invalid { key: name.to_string(), message: error.to_string().trim().to_string() }
    }
}

impl ConfigError {
    /// [`ConfigError::Invalid`]: `key` (e.g. `train.models`) parsed but its value is wrong.
    pub fn invalid(key: String, message: &str) -> ConfigError {
        ConfigError::Invalid { key, message: message.to_string() }
    }
}

/// Deserializes one top-level key of a document as `T`, ignoring the others, so that the
/// document's deserializer reports errors with their lines.
struct OneSection<'a, T> {
    name: &'a str,
    ty: std::marker::PhantomData<T>,
}

impl<'de, T: DeserializeOwned> serde::de::DeserializeSeed<'de> for OneSection<'_, T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned> serde::de::Visitor<'de> for OneSection<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a TOML document")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                map.next_value::<T>()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// `[train]` seen only for its `interactions` (other keys are the training crate's).
#[derive(Deserialize)]
struct TrainInteractions {
    #[allow(dead_code)]
    interactions: Option<BTreeMap<String, f32>>,
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
    fn the_documented_reference_is_the_template() {
        // docs/config.md shows the whole template; a key added to one must be added to both.
        let doc = include_str!("../../../docs/config.md");
        let block = doc.split("## Reference\n\n```toml\n").nth(1).and_then(|rest| rest.split("\n```").next());
        assert_eq!(
            block,
            Some(TEMPLATE.trim_end()),
            "copy crates/core/src/cascade.toml into docs/config.md's Reference"
        );
    }

    #[test]
    fn template_is_the_defaults() {
        // Core's own sections here; each raw section's defaults are checked against the template
        // by the crate that owns it (`*Config::from_config`), and the whole resolved document by
        // the CLI.
        let template = Config::from_toml(TEMPLATE, "template").unwrap();
        let defaults = Config::default();
        assert_eq!(template.project, defaults.project);
        assert_eq!(template.catalogue, defaults.catalogue);
        assert_eq!(template.entities, defaults.entities);
        assert_eq!(template.events, defaults.events);
        assert_eq!(template.features, defaults.features);
        assert_eq!(template.pipelines, defaults.pipelines);
        assert_eq!(template.interactions().unwrap(), default_interactions());
        for name in RAW_SECTIONS {
            assert!(!template.raw_section(name).unwrap().is_empty(), "the template documents [{name}]");
        }
        assert_eq!(Config::from_toml("", "empty").unwrap(), Config::default());
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        addr: String,
        max_batch_events: usize,
    }

    impl Section for Demo {
        const NAME: &'static str = "server";
        fn check(&self, _: &Config) -> Result<(), ConfigError> {
            if self.max_batch_events == 0 {
                return Err(ConfigError::invalid("server.max_batch_events".into(), "must be at least 1"));
            }
            Ok(())
        }
    }

    #[test]
    fn sections_are_typed_by_their_owner_with_lines_and_variables() {
        let c = Config::from_toml(
            "[server]
addr = \"x:1\"\nmax_batch = 5\n",
            "cascade.toml",
        )
        .unwrap();
        let err = c.get::<Demo>().unwrap_err().to_string();
        assert!(err.contains("cascade.toml") && err.contains("line 3") && err.contains("max_batch"), "{err}");
        let env = [
            ("CASCADE__SERVER__MAX_BATCH_EVENTS".to_string(), "7".to_string()),
            ("CASCADE__SERVER__ADDR".to_string(), "0.0.0.0:9000".to_string()),
        ];
        let mut c = Config::load("[server]\naddr = \"127.0.0.1:1\"\n", "f", env).unwrap();
        assert_eq!(c.get::<Demo>().unwrap(), Demo { addr: "0.0.0.0:9000".into(), max_batch_events: 7 });
        let env = [("CASCADE__SERVER__MAX_BATCH_EVENTS".to_string(), "many".to_string())];
        let err = Config::load("", "f", env).unwrap().get::<Demo>().unwrap_err().to_string();
        assert!(err.contains("CASCADE__SERVER__MAX_BATCH_EVENTS"), "{err}");
        let err = Config::from_toml("[server]\nmax_batch_events = 0\n", "f").unwrap().get::<Demo>().unwrap_err();
        assert!(err.to_string().contains("server.max_batch_events"), "{err}");
        c.set(&Demo { addr: "a:1".into(), max_batch_events: 2 }).unwrap();
        assert_eq!(c.get::<Demo>().unwrap().addr, "a:1");
        assert_eq!(Config::default().section::<Demo>("server").unwrap(), Demo::default());
        let err = Config::from_toml("[sever]\naddr = \"x:1\"\n", "f").unwrap_err().to_string();
        assert!(err.contains("sever"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = Config::from_toml("[events.x]\nfields = { a = \"decimal\" }\n", "f.toml").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("unknown type `decimal`"), "{err}");
        let err = Config::from_toml("[train]\n\ninteractions = { click = \"x\" }\n", "f.toml").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("interactions"), "{err}");
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
}
