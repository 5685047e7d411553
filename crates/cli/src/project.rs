//! Finding, reading and writing a project's `cascade.toml`.

use anyhow::{Context, Result, bail};
use cascade_core::Config;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "cascade.toml";

/// A loaded project: its resolved configuration and where the file lives.
#[derive(Debug, Clone)]
pub struct Project {
    pub config: Config,
    pub config_path: PathBuf,
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
        if config.project.data_dir.is_relative() {
            let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            config.project.data_dir = base.join(&config.project.data_dir);
        }
        Ok(Project { config, config_path: path })
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.project.data_dir
    }

    /// The interactions of `[train] interactions` and item tokens, read from the event log as it
    /// stands (read-only: usable beside `cascade serve`).
    pub fn training_data(&self) -> Result<cascade_training::dataset::LogData> {
        let store = crate::open_store_read_only(self)?;
        let data = cascade_training::dataset::from_log(
            &store,
            &self.config.train.interactions,
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
