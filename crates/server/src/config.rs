//! `[server]`: where the HTTP API listens and the limits of one request (typed here; core keeps
//! the raw, layered section).

use cascade_core::config::{Config, ConfigError, Section, duration_str};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[server]`: the listener, request limits, authentication's open routes, overload protection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub addr: String,
    pub max_batch_events: usize,
    pub max_body_bytes: usize,
    /// Whether `/v2/health/*` answers without an API key when the project has keys.
    pub open_health: bool,
    /// Whether `/metrics` answers without an API key when the project has keys.
    pub open_metrics: bool,
    /// Origins allowed to call the API from a browser (CORS); empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Longest a request may take from its headers to its answer; past it, 503 `timeout`.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Longest a connection may take to send a request's headers, idle keep-alive included.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// Longest a request's body may take to arrive; past it, 408 `request_timeout`.
    #[serde(with = "duration_str")]
    pub body_read_timeout: Duration,
    /// Open connections served fully; past it, a connection must send its request's headers
    /// within a second and is closed after one request.
    pub max_connections: usize,
    /// Threads for blocking work (the cascade's stages, the feature state's checkpoints).
    pub blocking_threads: usize,
    /// Requests of each class executing at once.
    pub in_flight: InFlight,
    /// Requests of each class waiting for a slot; past it, 503 `overloaded` at once.
    pub max_queued: usize,
    /// Longest a request waits for a slot before 503 `overloaded`.
    #[serde(with = "duration_str")]
    pub queue_timeout: Duration,
}

/// Per route class, how many requests execute at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InFlight {
    /// `POST /v1/events`, `PUT /v1/items/{id}`, `PUT /v1/users/{id}`.
    pub ingest: usize,
    /// Recommendations, re-ranking, similar items, online features; 0: twice the CPU cores
    /// ([`InFlight::serve_slots`]).
    pub serve: usize,
    /// Catalogue reads.
    pub read: usize,
    /// Administrative routes (`/v1/jobs`).
    pub admin: usize,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight { ingest: 32, serve: 0, read: 64, admin: 8 }
    }
}

impl InFlight {
    /// Slots for the serve class. The cascade's stages are CPU-bound: more requests at once than
    /// about two per core only lengthen every one of them (measured in docs/benchmarks.md:
    /// at three times capacity, 32 slots gave a p99 of 237 ms to the requests served, 4 slots on
    /// 2 cores 12 ms, at 95% of the throughput).
    pub fn serve_slots(&self) -> usize {
        if self.serve > 0 {
            return self.serve;
        }
        2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "127.0.0.1:8080".into(),
            max_batch_events: 10_000,
            max_body_bytes: 16 << 20,
            open_health: true,
            open_metrics: true,
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 4096,
            blocking_threads: 64,
            in_flight: InFlight::default(),
            max_queued: 1024,
            queue_timeout: Duration::from_millis(5),
        }
    }
}

impl Section for ServerConfig {
    const NAME: &'static str = "server";

    fn check(&self, _: &Config) -> Result<(), ConfigError> {
        let positive = [
            ("max_batch_events", self.max_batch_events),
            ("max_body_bytes", self.max_body_bytes),
            ("max_connections", self.max_connections),
            ("blocking_threads", self.blocking_threads),
            ("in_flight.ingest", self.in_flight.ingest),
            ("in_flight.read", self.in_flight.read),
            ("in_flight.admin", self.in_flight.admin),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::invalid(format!("server.{key}"), "must be at least 1"));
        }
        let timeouts = [
            ("request_timeout", self.request_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
        ];
        if let Some((key, _)) = timeouts.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::invalid(format!("server.{key}"), "must be longer than 0s"));
        }
        for origin in &self.cors_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && axum::http::HeaderValue::from_str(origin).is_ok());
            if !ok {
                return Err(ConfigError::invalid(
                    "server.cors_origins".into(),
                    &format!("`{origin}` is not an origin (scheme://host[:port], no path) or `*`"),
                ));
            }
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
        assert_eq!(Config::check_template_defaults::<ServerConfig>(), Ok(()));
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
    fn limits_are_checked() {
        for (text, key) in [
            ("max_batch_events = 0", "server.max_batch_events"),
            ("in_flight = { read = 0 }", "server.in_flight.read"),
            ("request_timeout = \"0s\"", "server.request_timeout"),
            ("cors_origins = [\"example.com\"]", "server.cors_origins"),
            ("cors_origins = [\"https://example.com/\"]", "server.cors_origins"),
        ] {
            let config = Config::from_toml(&format!("[server]\n{text}\n"), "f").unwrap();
            let err = ServerConfig::from_config(&config).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let config =
            Config::from_toml("[server]\ncors_origins = [\"https://app.example.com:8443\", \"*\"]\n", "f").unwrap();
        assert_eq!(ServerConfig::from_config(&config).unwrap().cors_origins.len(), 2);
    }
}
