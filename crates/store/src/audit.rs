//! The audit log: who changed what, when, from what, to what and why — alias moves, rollouts,
//! jobs, API keys. One JSON object per line in `DATA_DIR/audit.jsonl`, appended under an
//! exclusive file lock and synced before the change is reported done, by the server and by
//! CLI commands alike (they may run at the same time).
//!
//! An entry's id is its byte offset in the file: unique, increasing, stable, and a cursor for
//! paging. A crash mid-append leaves at most one torn last line, which readers skip and the next
//! append closes off.

use crate::error::{Error, Result};
use cascade_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const AUDIT_FILE: &str = "audit.jsonl";

/// One change, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339.
    pub at: String,
    /// The API key's name (`key:NAME`), the CLI user (`cli:USER`), or Cascade itself
    /// (`cascade:JOB`, e.g. `cascade:rollout`).
    pub who: String,
    /// What kind of change: `alias.set`, `alias.rollback`, `rollout.step`, `job.submit`, ...
    pub action: String,
    /// What changed, e.g. `recommender@champion`, `key:ci`, `pipeline:home`.
    pub target: String,
    #[serde(default)]
    pub before: serde_json::Value,
    #[serde(default)]
    pub after: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl AuditRecord {
    pub fn new(at: Timestamp, who: impl Into<String>, action: impl Into<String>, target: impl Into<String>) -> Self {
        AuditRecord {
            at: at.to_string(),
            who: who.into(),
            action: action.into(),
            target: target.into(),
            before: serde_json::Value::Null,
            after: serde_json::Value::Null,
            why: None,
        }
    }

    pub fn change(mut self, before: impl Serialize, after: impl Serialize) -> Self {
        self.before = serde_json::to_value(before).unwrap_or_default();
        self.after = serde_json::to_value(after).unwrap_or_default();
        self
    }

    pub fn why(mut self, why: impl Into<String>) -> Self {
        self.why = Some(why.into());
        self
    }
}

/// One change, as read: the record and its id (byte offset in the file).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub id: u64,
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// Which entries to read: newest first, older than `before`, matching the filters.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub before: Option<u64>,
    /// Entries whose action starts with this (`alias` matches `alias.set` and `alias.rollback`).
    pub action: Option<String>,
    /// Entries whose target starts with this.
    pub target: Option<String>,
    pub limit: usize,
}

/// The audit log of a data directory.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The audit log of `data_dir` (created on the first append).
    pub fn new(data_dir: &Path) -> AuditLog {
        AuditLog { path: data_dir.join(AUDIT_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and syncs it; returns its id.
    pub fn append(&self, record: &AuditRecord) -> Result<u64> {
        let mut line = serde_json::to_vec(record).map_err(|e| Error::corrupt(&self.path, 0, e.to_string()))?;
        line.push(b'\n');
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        let io = Error::io(&self.path);
        let write = || -> std::io::Result<u64> {
            let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&self.path)?;
            f.lock()?;
            let mut end = f.seek(SeekFrom::End(0))?;
            if end > 0 {
                // A torn last line (a crash mid-append) is closed off, so this entry stands alone.
                let mut last = [0u8; 1];
                f.seek(SeekFrom::Start(end - 1))?;
                f.read_exact(&mut last)?;
                if last[0] != b'\n' {
                    f.write_all(b"\n")?;
                    end += 1;
                }
            }
            f.write_all(&line)?;
            f.sync_data()?;
            Ok(end)
        };
        write().map_err(io)
    }

    /// The entries `query` selects, newest first. Lines that do not parse (a torn last line)
    /// are skipped.
    pub fn read(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Io { path: self.path.clone(), source: e }),
        };
        let mut out = Vec::new();
        let mut start = 0usize;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let id = start as u64;
            start += line.len();
            if query.before.is_some_and(|b| id >= b) {
                break;
            }
            let Ok(record) = serde_json::from_slice::<AuditRecord>(line) else { continue };
            let keep = query.action.as_deref().is_none_or(|a| record.action.starts_with(a))
                && query.target.as_deref().is_none_or(|t| record.target.starts_with(t));
            if keep {
                out.push(AuditEntry { id, record });
            }
        }
        out.reverse();
        out.truncate(query.limit);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &str, target: &str) -> AuditRecord {
        AuditRecord::new(Timestamp(1_700_000_000_000), "cli:test", action, target).change(1, 2).why("because")
    }

    #[test]
    fn appends_reads_newest_first_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        assert!(log.read(&AuditQuery { limit: 10, ..Default::default() }).unwrap().is_empty());
        let a = log.append(&record("alias.set", "recommender@champion")).unwrap();
        let b = log.append(&record("key.create", "key:ci")).unwrap();
        let c = log.append(&record("alias.rollback", "recommender@champion")).unwrap();
        assert!(a < b && b < c);
        let all = log.read(&AuditQuery { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [c, b, a]);
        assert_eq!(all[2].record, record("alias.set", "recommender@champion"));
        let aliases = log.read(&AuditQuery { action: Some("alias".into()), limit: 10, ..Default::default() }).unwrap();
        assert_eq!(aliases.iter().map(|e| e.id).collect::<Vec<_>>(), [c, a]);
        let page = log.read(&AuditQuery { before: Some(c), limit: 1, ..Default::default() }).unwrap();
        assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [b]);
        let keys = log.read(&AuditQuery { target: Some("key:".into()), limit: 10, ..Default::default() }).unwrap();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_closed_off() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        log.append(&record("alias.set", "a")).unwrap();
        // A crash mid-append.
        let mut f = std::fs::OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(br#"{"at":"2026-01-01T00:00:00Z","who":"x","act"#).unwrap();
        drop(f);
        assert_eq!(log.read(&AuditQuery { limit: 10, ..Default::default() }).unwrap().len(), 1);
        let id = log.append(&record("alias.set", "b")).unwrap();
        let all = log.read(&AuditQuery { limit: 10, ..Default::default() }).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].id, all[0].record.target.as_str()), (id, "b"));
    }

    #[test]
    fn concurrent_appenders_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = log.clone();
                s.spawn(move || {
                    for i in 0..50 {
                        log.append(&record("job.submit", &format!("job:{t}-{i}"))).unwrap();
                    }
                });
            }
        });
        let all = log.read(&AuditQuery { limit: 1000, ..Default::default() }).unwrap();
        assert_eq!(all.len(), 200);
    }
}
