//! Cascade's vocabulary: event time, typed values, the event and catalogue model, the schema
//! that validates input, and the project configuration.
//!
//! Invariant: nothing here does I/O. Callers read files, the environment and the network and hand
//! the bytes in.
//!
//! ```
//! use cascade_core::{Config, Schema};
//! let schema = Schema::from_config(&Config::default());
//! let event = schema
//!     .validate_event(&serde_json::json!({
//!         "type": "play", "ts": "2024-05-01T12:00:00Z", "user": "u1", "item": "song-9",
//!         "fields": {"completed": true}
//!     }))
//!     .unwrap();
//! assert_eq!(event.event_type, "play");
//! ```

pub mod config;
pub mod event;
pub mod features;
pub mod interactions;
pub mod schema;
pub mod time;
pub mod value;

pub use config::{Config, ConfigError, FsyncPolicy};
pub use event::{Event, ItemRecord, Record, UserRecord};
pub use features::{ResolvedFeature, ResolvedView, ViewConfig};
pub use interactions::{Csr, IdMap, Interactions};
pub use schema::{FieldError, Schema};
pub use time::Timestamp;
pub use value::{FieldType, Value};
