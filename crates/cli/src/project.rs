//! Finding, reading and writing a project's `cascade.toml`.

use anyhow::{Context, Result, bail};
use cascade_core::Config;
use cascade_core::config::{CatalogueConfig, EntitiesConfig, EventTypeConfig, ProjectConfig};
use cascade_features::FeaturesStoreConfig;
use cascade_server::ServerConfig;
use cascade_serving::ServingConfig;
use cascade_store::LogConfig;
use cascade_training::TrainConfig;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "cascade.toml";

/// A loaded project: its resolved configuration and where the file lives.
#[derive(Debug, Clone)]
pub struct Project {
    pub config: Config,
    pub config_path: PathBuf,
    /// SHA-256 of the resolved configuration as loaded (file and environment, before any flag),
    /// recorded in the manifest of every bundle trained, by `cascade train` or a server's `train`
    /// job: equal configurations hash alike however they were written.
    pub config_hash: String,
}

impl Project {
    /// Loads `--config FILE`, or `./cascade.toml`. Layers: defaults < file < `CASCADE__*`
    /// environment. A relative `data_dir` is resolved against the file's directory.
    pub fn load(explicit: Option<&Path>) -> Result<Project> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let p = PathBuf::from(CONFIG_FILE);
                if !p.exists() {
                    bail!("no {CONFIG_FILE} in this directory: run `cascade init` or pass --config FILE");
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut config = Config::load(&text, &path.display().to_string(), std::env::vars())?;
        // `[pipelines]` is typed and validated here, where every command loads the project, so a
        // wrong key is named before anything runs (serving builds the same pipelines again).
        cascade_serving::pipeline::Pipeline::from_tables(&config.pipelines)
            .with_context(|| format!("{}: [pipelines]", path.display()))?;
        // Likewise `[features]`: core only parses the views, the feature engine resolves them
        // (the node and training resolve them again, with the ranking views added).
        cascade_features::FeatureSet::from_config(&config)
            .with_context(|| format!("{}: [features]", path.display()))?;
        // And every section a crate owns: core keeps them raw, each crate types and checks its own.
        // Their errors name the file (and line) or the variable, and the key, themselves.
        Resolved::of(&config)?;
        if config.project.data_dir.is_relative() {
            let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            config.project.data_dir = base.join(&config.project.data_dir);
        }
        let config_hash = cascade_registry::sha256_hex(toml::to_string(&Resolved::of(&config)?)?.as_bytes());
        Ok(Project { config, config_path: path, config_hash })
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.project.data_dir
    }

    /// The project's audit log (alias moves, API keys, ...).
    pub fn audit(&self) -> cascade_store::AuditLog {
        cascade_store::AuditLog::new(self.data_dir())
    }

    /// Who runs this command, for alias histories and the audit log: `cli:` and the login name.
    pub fn who(&self) -> String {
        let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into());
        format!("cli:{user}")
    }

    /// `[train]`, typed (checked at load).
    pub fn train(&self) -> Result<TrainConfig> {
        Ok(TrainConfig::from_config(&self.config)?)
    }

    /// `[log]`, typed (checked at load).
    pub fn log(&self) -> Result<LogConfig> {
        Ok(LogConfig::from_config(&self.config)?)
    }

    /// `[server]`, typed (checked at load).
    pub fn server(&self) -> Result<ServerConfig> {
        Ok(ServerConfig::from_config(&self.config)?)
    }

    /// Sets `[server] addr` (the `--addr` flags: the last layer).
    pub fn set_addr(&mut self, addr: &str) -> Result<()> {
        let mut server = self.server()?;
        server.addr = addr.to_string();
        self.config.set(&server)?;
        Ok(())
    }

    /// The interactions of `[train] interactions` and item tokens, read from the event log as it
    /// stands (read-only: usable beside `cascade serve`).
    pub fn training_data(&self) -> Result<cascade_training::dataset::LogData> {
        let store = crate::open_store_read_only(self)?;
        let data = cascade_training::dataset::from_log(
            &store,
            &self.config.interactions()?,
            format!("log:{}", self.data_dir().display()),
        )?;
        store.close()?;
        Ok(data)
    }
}

/// Writes the documented template to `dir/cascade.toml` (refusing to overwrite unless `force`).
pub fn init(dir: &Path, name: Option<&str>, force: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(CONFIG_FILE);
    if path.exists() && !force {
        bail!("{} already exists (pass --force to overwrite)", path.display());
    }
    let mut text = cascade_core::config::TEMPLATE.to_string();
    if let Some(name) = name {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            bail!("--name: use letters, digits, - and _ only");
        }
        text = text.replacen("name = \"cascade\"", &format!("name = \"{name}\""), 1);
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The resolved configuration as one document: core's sections and every crate's typed section,
/// defaults included, in the order `cascade.toml` documents them. `cascade config` prints it
/// and `cascade train` hashes it into the bundle's manifest.
#[derive(Debug, Serialize)]
pub struct Resolved<'a> {
    project: &'a ProjectConfig,
    server: ServerConfig,
    log: LogConfig,
    catalogue: &'a CatalogueConfig,
    entities: &'a EntitiesConfig,
    events: &'a BTreeMap<String, EventTypeConfig>,
    train: TrainConfig,
    features_store: FeaturesStoreConfig,
    #[serde(skip_serializing_if = "is_empty")]
    features: &'a BTreeMap<String, cascade_core::ViewConfig>,
    serving: ServingConfig,
    #[serde(skip_serializing_if = "is_empty")]
    pipelines: &'a BTreeMap<String, toml::Table>,
}

fn is_empty<V>(map: &&BTreeMap<String, V>) -> bool {
    map.is_empty()
}

impl<'a> Resolved<'a> {
    /// Types and checks every section (errors name `section.key`).
    pub fn of(config: &'a Config) -> Result<Resolved<'a>, cascade_core::ConfigError> {
        Ok(Resolved {
            project: &config.project,
            server: ServerConfig::from_config(config)?,
            log: LogConfig::from_config(config)?,
            catalogue: &config.catalogue,
            entities: &config.entities,
            events: &config.events,
            train: TrainConfig::from_config(config)?,
            features_store: FeaturesStoreConfig::from_config(config)?,
            features: &config.features,
            serving: ServingConfig::from_config(config)?,
            pipelines: &config.pipelines,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_resolves_to_the_defaults() {
        let template = Config::from_toml(cascade_core::config::TEMPLATE, "template").unwrap();
        let empty = Config::from_toml("", "empty").unwrap();
        let shown = toml::to_string_pretty(&Resolved::of(&template).unwrap()).unwrap();
        assert_eq!(shown, toml::to_string_pretty(&Resolved::of(&empty).unwrap()).unwrap());
        for section in ["[project]", "[server]", "[log]", "[train]", "[features_store]", "[serving]"] {
            assert!(shown.contains(section), "{section} in\n{shown}");
        }
    }

    #[test]
    fn load_refuses_any_bad_section_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        for (text, key) in [
            ("[train]\nmodels = [\"svd\"]\n", "train.models"),
            ("[log]\nsegment_bytes = 1\n", "log.segment_bytes"),
            ("[server]\nmax_batch_events = 0\n", "server.max_batch_events"),
            ("[features_store]\npoll_interval_ms = 0\n", "features_store.poll_interval_ms"),
            ("[serving]\nreload = \"1s\"\n", "reload"),
        ] {
            let path = dir.path().join("cascade.toml");
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", Project::load(Some(path.as_path())).unwrap_err());
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
