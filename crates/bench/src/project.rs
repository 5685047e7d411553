//! The little of a Cascade project the benchmarks need, without depending on the CLI: reading a
//! `cascade.toml` as `cascade` does, and writing a fresh one.

use anyhow::{Context, Result};
use cascade_core::Config;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "cascade.toml";

/// Loads a project's configuration as `cascade` does: defaults < the file < `CASCADE__*`
/// environment variables, with a relative `project.data_dir` resolved against the file's
/// directory (not the working directory).
pub fn load_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("reading {} (pass --config FILE, or run from the project's directory)", path.display())
    })?;
    let mut config = Config::load(&text, &path.display().to_string(), std::env::vars())?;
    // Core only parses `[features]`; the feature engine resolves it, as `cascade` does on load.
    cascade_features::FeatureSet::from_config(&config).with_context(|| format!("{}: [features]", path.display()))?;
    if config.project.data_dir.is_relative() {
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        config.project.data_dir = base.join(&config.project.data_dir);
    }
    Ok(config)
}

/// Writes the documented template, as `cascade init --name NAME` does, to `dir/cascade.toml`.
pub fn write_template(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(CONFIG_FILE);
    let text = cascade_core::config::TEMPLATE.replacen("name = \"cascade\"", &format!("name = \"{name}\""), 1);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_loads_with_its_data_dir_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_template(dir.path(), "bench").unwrap();
        let config = load_config(&path).unwrap();
        assert_eq!(config.project.name, "bench");
        assert_eq!(config.project.data_dir, dir.path().join("data"));
    }
}
