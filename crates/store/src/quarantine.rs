//! Quarantine: records already in the log that every reader skips.
//!
//! The log is append-only, so records that should never have been accepted (dated in year 9999,
//! before the time horizon existed) cannot be removed. A quarantine rule hides them instead:
//! "records stored below offset N (the log's end when the rule was made) dated after T". Every
//! reader of the store ([`crate::Store::read_from`]: the feature state, the live view, training
//! data, the offline export, replays) and the catalogue and idempotency index skip them; offsets
//! stay as they are, so positions and checkpoints keep their meaning. Records stored later are
//! never hidden by an earlier rule. The rules live in `DIR/quarantine.json`, written atomically.

use crate::error::{Error, Result};
use cascade_core::{Record, Timestamp};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const QUARANTINE_FILE: &str = "quarantine.json";
const FORMAT: u32 = 1;

/// The quarantine rules of a data directory (none: nothing hidden).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    format: u32,
    pub rules: Vec<QuarantineRule>,
}

/// Records stored below `below_offset` and dated after `after_ms` are hidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineRule {
    pub below_offset: u64,
    pub after_ms: i64,
    /// `after_ms` in RFC 3339, for whoever reads the file.
    pub after: String,
}

impl QuarantineRule {
    pub fn new(below_offset: u64, after: Timestamp) -> QuarantineRule {
        QuarantineRule { below_offset, after_ms: after.0, after: after.to_string() }
    }
}

impl Quarantine {
    /// The rules in `dir` (none when the file does not exist). A file of an unknown format is
    /// refused rather than misread.
    pub fn load(dir: &Path) -> Result<Quarantine> {
        let path = dir.join(QUARANTINE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Quarantine::default()),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let q: Quarantine = serde_json::from_str(&text).map_err(|e| Error::corrupt(&path, 0, e.to_string()))?;
        if q.format != FORMAT {
            return Err(Error::corrupt(&path, 0, format!("quarantine format {}, this build reads {FORMAT}", q.format)));
        }
        Ok(q)
    }

    /// Writes the rules atomically (temporary file, fsync, rename, fsync of the directory).
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(QUARANTINE_FILE);
        let text = serde_json::to_string_pretty(&Quarantine { format: FORMAT, rules: self.rules.clone() })
            .map_err(|e| Error::Quarantine(e.to_string()))?;
        crate::files::write_atomic(&path, text.as_bytes(), false).map_err(Error::io(&path))
    }

    pub(crate) fn with(&self, rule: QuarantineRule) -> Quarantine {
        let mut rules = self.rules.clone();
        rules.push(rule);
        Quarantine { format: FORMAT, rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the record stored at `offset` is hidden.
    pub fn hides(&self, offset: u64, record: &Record) -> bool {
        !self.rules.is_empty() && self.hides_time(offset, record.latest_time())
    }

    /// Whether a record stored at `offset` whose latest time is `latest` is hidden.
    pub fn hides_time(&self, offset: u64, latest: Timestamp) -> bool {
        self.rules.iter().any(|r| offset < r.below_offset && latest.0 > r.after_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_hides_only_what_was_stored_before_it_and_dated_after_its_time() {
        let q = Quarantine::default().with(QuarantineRule::new(10, Timestamp(1_000)));
        assert!(q.hides_time(9, Timestamp(1_001)));
        assert!(!q.hides_time(9, Timestamp(1_000)), "at the time itself: kept");
        assert!(!q.hides_time(10, Timestamp(i64::MAX)), "stored after the rule: kept");
        assert!(!Quarantine::default().hides_time(0, Timestamp(i64::MAX)));
    }

    #[test]
    fn rules_survive_a_save_and_unknown_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Quarantine::load(dir.path()).unwrap().is_empty());
        let q = Quarantine::default().with(QuarantineRule::new(7, Timestamp(5)));
        q.save(dir.path()).unwrap();
        assert_eq!(Quarantine::load(dir.path()).unwrap(), q);
        std::fs::write(dir.path().join(QUARANTINE_FILE), r#"{"format":9,"rules":[]}"#).unwrap();
        let err = Quarantine::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("quarantine format 9"), "{err}");
    }
}
