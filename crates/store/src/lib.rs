//! Cascade's storage: the embedded event log (checksummed, group-committed segment files) and the
//! catalogue state derived from it.
//!
//! Invariants:
//! - an acknowledged append is on disk (synced under `fsync = "always"`), and survives a crash;
//! - offsets are dense and monotone, and a batch is stored whole or not at all;
//! - a record with a client id seen before in the retained log is not stored again;
//! - the catalogue equals the replay of the log, and never lags behind an acknowledgement.
//!
//! ```
//! use cascade_core::{Event, Record, Timestamp};
//! use cascade_store::{Outcome, Store, StoreOptions};
//! let dir = std::env::temp_dir().join(format!("cascade-doc-{}", std::process::id()));
//! let store = Store::open(&dir, StoreOptions::default()).unwrap();
//! let event = Record::Event(Event {
//!     id: Some("e1".into()), event_type: "click".into(), ts: Timestamp(0),
//!     user: Some("u".into()), item: Some("i".into()), fields: vec![],
//! });
//! assert_eq!(store.append_blocking(&[event.clone()]).unwrap(), [Outcome::Written(0)]);
//! assert_eq!(store.append_blocking(&[event]).unwrap(), [Outcome::Duplicate(0)]);
//! store.close().unwrap();
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

pub mod audit;
mod catalogue;
mod codec;
pub mod config;
mod error;
pub mod files;
pub mod log;
mod quarantine;
mod store;

pub use audit::{AuditEntry, AuditLog, AuditQuery, AuditRecord};
pub use cascade_core::ErrorKind;
pub use catalogue::Catalogue;
pub use config::{FsyncPolicy, LogConfig};
pub use error::{Error, Result};
pub use log::{Log, LogOptions, LogReader, LogStats};
pub use quarantine::{QUARANTINE_FILE, Quarantine, QuarantineRule};
pub use store::{Outcome, QuarantineReport, Store, StoreOptions};
