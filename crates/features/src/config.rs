//! `[features_store]`: the online feature store (typed here; core keeps the raw, layered
//! section).

use cascade_core::config::{Config, ConfigError, Section, duration_str};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    /// The longest one Redis operation may take, waiting for a reconnection included, before the
    /// store answers "unavailable" (also each connection attempt's timeout): a paused or
    /// unreachable Redis costs a request at most this.
    #[serde(with = "duration_str")]
    pub redis_timeout: Duration,
    /// Whether `GET /v2/health/ready` answers 503 while the online store is down (Redis) or still
    /// catching up with the log after a start or a rebuild (both backends).
    pub ready_requires_online_store: bool,
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
            redis_timeout: Duration::from_secs(2),
            ready_requires_online_store: true,
            poll_interval_ms: 50,
            checkpoint_interval: Duration::from_secs(30),
            max_entities_per_request: 1000,
            vector_log_sample_rate: 0.0,
            offline_export_interval: Duration::from_secs(300),
        }
    }
}

impl Section for FeaturesStoreConfig {
    const NAME: &'static str = "features_store";

    fn check(&self, _: &Config) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| Err(ConfigError::invalid(format!("features_store.{key}"), message));
        if self.poll_interval_ms == 0 {
            return invalid("poll_interval_ms", "must be at least 1");
        }
        if self.redis_timeout.is_zero() {
            return invalid("redis_timeout", "must be positive, e.g. \"2s\"");
        }
        if self.checkpoint_interval.is_zero() {
            return invalid("checkpoint_interval", "must be positive, e.g. \"30s\"");
        }
        if self.max_entities_per_request == 0 {
            return invalid("max_entities_per_request", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.vector_log_sample_rate) {
            return invalid("vector_log_sample_rate", "must be in [0, 1]");
        }
        if self.redis_prefix.is_empty()
            || !self.redis_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
        {
            return invalid("redis_prefix", "letters, digits and _ - . : only, not empty");
        }
        if self.backend == FeaturesBackend::Redis
            && !(self.redis_url.starts_with("redis://") || self.redis_url.starts_with("unix://"))
        {
            return invalid("redis_url", "must start with redis:// or unix://");
        }
        Ok(())
    }
}

impl FeaturesStoreConfig {
    /// `[features_store]` of `config`, typed and checked (errors name `features_store.<key>`).
    pub fn from_config(config: &Config) -> Result<FeaturesStoreConfig, ConfigError> {
        config.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<FeaturesStoreConfig, ConfigError> {
        FeaturesStoreConfig::from_config(&Config::from_toml(text, "f")?)
    }

    #[test]
    fn template_is_the_defaults() {
        assert_eq!(Config::check_template_defaults::<FeaturesStoreConfig>(), Ok(()));
    }

    #[test]
    fn features_store_section() {
        let c = load("[features_store]\nbackend = \"redis\"\nredis_url = \"redis://10.0.0.1:6380\"\n").unwrap();
        assert_eq!(c.backend, FeaturesBackend::Redis);
        assert_eq!(c.redis_url, "redis://10.0.0.1:6380");
        let err = load("[features_store]\nbackend = \"memcached\"\n").unwrap_err().to_string();
        assert!(err.contains("memcached") && err.contains("line 2"), "{err}");
        let err = load("[features_store]\nredis_prefix = \"a b\"\n").unwrap_err().to_string();
        assert!(err.contains("features_store.redis_prefix"), "{err}");
        let err = load("[features_store]\nredis_timeout = \"0s\"\n").unwrap_err().to_string();
        assert!(err.contains("features_store.redis_timeout"), "{err}");
        let c = load("[features_store]\nredis_timeout = \"250ms\"\nready_requires_online_store = false\n").unwrap();
        assert_eq!((c.redis_timeout, c.ready_requires_online_store), (Duration::from_millis(250), false));
        let env = [("CASCADE__FEATURES_STORE__BACKEND".to_string(), "redis".to_string())];
        let config = Config::load("", "f", env).unwrap();
        assert_eq!(FeaturesStoreConfig::from_config(&config).unwrap().backend, FeaturesBackend::Redis);
    }
}
