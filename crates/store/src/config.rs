//! `[log]`: how the event log writes, syncs and retains (typed here; core keeps the raw,
//! layered section).

use cascade_core::config::{Config, ConfigError, Section, duration_str};
use serde::{Deserialize, Serialize};
use std::time::Duration;

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
    /// Records dated more than this past the clock are refused (zero: no bound); see
    /// [`cascade_core::Horizon`].
    #[serde(with = "duration_str")]
    pub max_event_ahead: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 128 << 20,
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 100,
            retention: Duration::ZERO,
            retention_bytes: 0,
            max_event_ahead: cascade_core::Horizon::default().max_ahead(),
        }
    }
}

impl Section for LogConfig {
    const NAME: &'static str = "log";

    fn check(&self, _: &Config) -> Result<(), ConfigError> {
        if self.segment_bytes < 4096 {
            return Err(ConfigError::invalid("log.segment_bytes".into(), "must be at least 4096"));
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "log.fsync_interval_ms".into(),
                "must be at least 1 with fsync = \"interval\"",
            ));
        }
        Ok(())
    }
}

impl LogConfig {
    /// The time horizon every append is held to (`max_event_ahead`).
    pub fn horizon(&self) -> cascade_core::Horizon {
        cascade_core::Horizon::new(self.max_event_ahead)
    }

    /// `[log]` of `config`, typed and checked (errors name `log.<key>`).
    pub fn from_config(config: &Config) -> Result<LogConfig, ConfigError> {
        config.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_the_defaults() {
        assert_eq!(Config::check_template_defaults::<LogConfig>(), Ok(()));
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let config = Config::from_toml("[log]\n\nsegment_bytes = \"big\"\n", "f.toml").unwrap();
        let err = LogConfig::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("segment_bytes"), "{err}");
    }

    #[test]
    fn values_are_checked() {
        let config = Config::from_toml("[log]\nsegment_bytes = 10\n", "f").unwrap();
        assert!(LogConfig::from_config(&config).unwrap_err().to_string().contains("log.segment_bytes"));
        let config = Config::from_toml("[log]\nfsync = \"interval\"\nfsync_interval_ms = 0\n", "f").unwrap();
        assert!(LogConfig::from_config(&config).unwrap_err().to_string().contains("log.fsync_interval_ms"));
    }

    #[test]
    fn max_event_ahead_is_a_duration_and_zero_lifts_the_bound() {
        let config = Config::from_toml("[log]\nmax_event_ahead = \"2h\"\n", "f").unwrap();
        assert_eq!(LogConfig::from_config(&config).unwrap().max_event_ahead, Duration::from_secs(7200));
        let config = Config::from_toml("[log]\nmax_event_ahead = \"0s\"\n", "f").unwrap();
        assert_eq!(LogConfig::from_config(&config).unwrap().horizon(), cascade_core::Horizon::UNBOUNDED);
        let config = Config::from_toml("[log]\nmax_event_ahead = 3\n", "f").unwrap();
        assert!(LogConfig::from_config(&config).unwrap_err().to_string().contains("max_event_ahead"));
    }
}
