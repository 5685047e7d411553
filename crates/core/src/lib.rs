//! Cascade's vocabulary: event time, typed values, the event and catalogue model, the schema
//! that validates input, and the project configuration.
//!
//! Invariant: nothing here does I/O. Callers read files, the environment and the network and hand
//! the bytes in. (Reading the system clock, [`SystemClock`], is the one concession.)
//!
//! Also the vocabulary the other crates share for failure ([`ErrorKind`]: every crate's `Error`
//! has a `kind()`) and for the time ([`Clock`]).
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

pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod features;
pub mod hashing;
pub mod horizon;
pub mod impression;
pub mod interactions;
pub mod schema;
pub mod time;
pub mod value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Config, ConfigError, Section};
pub use error::ErrorKind;
pub use event::{Event, ItemRecord, Record, UserRecord};
pub use features::ViewConfig;
pub use horizon::Horizon;
pub use impression::{IMPRESSION, Impression, ImpressionError};
pub use interactions::{Csr, IdMap, Interactions};
pub use schema::{FieldError, Schema};
pub use time::Timestamp;
pub use value::{FieldType, Value, ValueError};
