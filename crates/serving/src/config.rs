//! `[serving]`: what `cascade serve` does beyond ingestion and features (typed here; core keeps
//! the raw, layered section).

use cascade_core::config::{Config, ConfigError, Section, duration_str};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[serving]`: what `cascade serve` does beyond ingestion and features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingConfig {
    /// How often the server reads where the `champion` and `challenger` aliases point and swaps
    /// the bundles in ("0s" = never; an alias moved through the server's API applies at once).
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
    /// How long after an impression an outcome of the same user and item still counts for it
    /// when it names no request id, and how long a rollout's impressions wait for outcomes
    /// (after which their label is final).
    #[serde(with = "duration_str")]
    pub attribution_window: Duration,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            reload_interval: Duration::from_secs(1),
            log_impressions: true,
            impression_queue: 10_000,
            default_pipeline: "default".into(),
            precompute_interval: Duration::from_secs(600),
            precompute_users: 100_000,
            attribution_window: Duration::from_secs(30 * 60),
        }
    }
}

impl Section for ServingConfig {
    const NAME: &'static str = "serving";

    fn check(&self, _: &Config) -> Result<(), ConfigError> {
        if self.attribution_window.is_zero() {
            return Err(ConfigError::invalid("serving.attribution_window".into(), "must be longer than 0s"));
        }
        Ok(())
    }
}

impl ServingConfig {
    /// `[serving]` of `config`, typed (errors name `serving.<key>`). That `default_pipeline`
    /// names a pipeline is checked where the pipelines are built (`Recommender::new`).
    pub fn from_config(config: &Config) -> Result<ServingConfig, ConfigError> {
        config.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_the_defaults() {
        assert_eq!(Config::check_template_defaults::<ServingConfig>(), Ok(()));
    }

    #[test]
    fn unknown_key_and_bad_duration_are_named() {
        let config = Config::from_toml("[serving]\nreload_every = \"1s\"\n", "f").unwrap();
        let err = ServingConfig::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("reload_every") && err.contains("line 2"), "{err}");
        let config = Config::from_toml("[serving]\nreload_interval = \"soon\"\n", "f").unwrap();
        let err = ServingConfig::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("soon") && err.contains("line 2"), "{err}");
        let config = Config::from_toml("[serving]\nattribution_window = \"0s\"\n", "f").unwrap();
        let err = ServingConfig::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("serving.attribution_window"), "{err}");
    }
}
