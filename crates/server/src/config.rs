//! `[server]`: where the HTTP API listens and the limits of one request (typed here; core keeps
//! the raw, layered section).

use cascade_core::config::{Config, ConfigError, Section};
use serde::{Deserialize, Serialize};

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

impl Section for ServerConfig {
    const NAME: &'static str = "server";

    fn check(&self, _: &Config) -> Result<(), ConfigError> {
        if self.max_batch_events == 0 {
            return Err(ConfigError::invalid("server.max_batch_events".into(), "must be at least 1"));
        }
        Ok(())
    }
}

impl ServerConfig {
    /// `[server]` of `config`, typed and checked (errors name `server.<key>`).
    pub fn from_config(config: &Config) -> Result<ServerConfig, ConfigError> {
        config.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_store::{FsyncPolicy, LogConfig};

    #[test]
    fn template_is_the_defaults() {
        let template = Config::from_toml(cascade_core::config::TEMPLATE, "template").unwrap();
        assert_eq!(ServerConfig::from_config(&template).unwrap(), ServerConfig::default());
        let empty = Config::from_toml("", "empty").unwrap();
        assert_eq!(ServerConfig::from_config(&empty).unwrap(), ServerConfig::default());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let config = Config::from_toml("[server]\naddr = \"x:1\"\nmax_batch = 5\n", "cascade.toml").unwrap();
        let err = ServerConfig::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("cascade.toml") && err.contains("line 3") && err.contains("max_batch"), "{err}");
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
        let server = ServerConfig::from_config(&c).unwrap();
        assert_eq!(server.addr, "0.0.0.0:9000");
        assert_eq!(server.max_batch_events, 7);
        assert_eq!(LogConfig::from_config(&c).unwrap().fsync, FsyncPolicy::Interval);
    }

    #[test]
    fn bad_env_override_names_the_variable() {
        let env = [("CASCADE__SERVER__MAX_BATCH_EVENTS".to_string(), "many".to_string())];
        let err = Config::load("", "f", env).and_then(|c| ServerConfig::from_config(&c)).unwrap_err().to_string();
        assert!(err.contains("CASCADE__SERVER__MAX_BATCH_EVENTS"), "{err}");
        let env = [("CASCADE__SERVER__COLOUR".to_string(), "red".to_string())];
        let err = Config::load("", "f", env).and_then(|c| ServerConfig::from_config(&c)).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn max_batch_events_is_checked() {
        let config = Config::from_toml("[server]\nmax_batch_events = 0\n", "f").unwrap();
        assert!(ServerConfig::from_config(&config).unwrap_err().to_string().contains("server.max_batch_events"));
    }
}
