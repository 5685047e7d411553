//! The latest item and user records, derived from the log.
//!
//! The catalogue is a pure function of the log: replaying the log from the start rebuilds it.
//! Because retention may delete old segments, the catalogue is also snapshotted (with the offset
//! it reflects); startup loads the snapshot and replays only what follows it, and retention never
//! deletes a segment the latest snapshot does not cover.

use crate::codec;
use crate::error::{Error, Result};
use cascade_core::{ItemRecord, Record, Timestamp, UserRecord};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

const SNAPSHOT_MAGIC: &[u8; 8] = b"CASCCAT\0";
const SNAPSHOT_VERSION: u32 = 1;
pub const SNAPSHOT_FILE: &str = "catalogue.snapshot";

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Catalogue {
    /// Records with the offset that wrote them; the highest offset wins.
    items: HashMap<String, (u64, ItemRecord)>,
    users: HashMap<String, (u64, UserRecord)>,
    /// Every offset below this has been applied.
    pub applied_through: u64,
}

impl Catalogue {
    /// Applies a record written at `offset`. Out-of-order application is safe: an older write
    /// never replaces a newer one.
    pub fn apply(&mut self, offset: u64, record: &Record) {
        match record {
            Record::Item(item) => upsert(&mut self.items, offset, &item.id, item),
            Record::User(user) => upsert(&mut self.users, offset, &user.id, user),
            Record::Event(_) => {}
        }
    }

    /// Forgets the records `hidden(offset, latest time)` says are quarantined; returns how many.
    /// A replay of the retained log then restores each one's latest visible version.
    pub fn forget(&mut self, hidden: impl Fn(u64, Timestamp) -> bool) -> usize {
        let before = self.items.len() + self.users.len();
        self.items.retain(|_, (o, r)| !hidden(*o, r.created_at.map_or(r.updated_at, |c| c.max(r.updated_at))));
        self.users.retain(|_, (o, r)| !hidden(*o, r.updated_at));
        before - self.items.len() - self.users.len()
    }

    /// The live item, or `None` if unknown or deleted.
    pub fn item(&self, id: &str) -> Option<&ItemRecord> {
        self.items.get(id).map(|(_, r)| r).filter(|r| !r.deleted)
    }

    pub fn user(&self, id: &str) -> Option<&UserRecord> {
        self.users.get(id).map(|(_, r)| r)
    }

    /// Every live item, in no particular order.
    pub fn items(&self) -> impl Iterator<Item = &ItemRecord> {
        self.items.values().map(|(_, r)| r).filter(|r| !r.deleted)
    }

    pub fn item_count(&self) -> usize {
        self.items.values().filter(|(_, r)| !r.deleted).count()
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Writes the snapshot atomically (temp file, fsync, rename, fsync dir).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut buf = Vec::with_capacity(64 + 64 * (self.items.len() + self.users.len()));
        buf.extend_from_slice(SNAPSHOT_MAGIC);
        buf.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        buf.extend_from_slice(&self.applied_through.to_le_bytes());
        let mut entry = Vec::new();
        let records = self
            .items
            .values()
            .map(|(o, r)| (*o, Record::Item(r.clone())))
            .chain(self.users.values().map(|(o, r)| (*o, Record::User(r.clone()))));
        for (offset, record) in records {
            entry.clear();
            codec::encode(&record, &mut entry);
            buf.extend_from_slice(&offset.to_le_bytes());
            buf.extend_from_slice(&(entry.len() as u32).to_le_bytes());
            buf.extend_from_slice(&entry);
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let path = dir.join(SNAPSHOT_FILE);
        let mut f = File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(&buf).and_then(|()| f.sync_all()).map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io(dir))?;
        Ok(())
    }

    /// Loads the snapshot in `dir`, or an empty catalogue if there is none.
    pub fn load(dir: &Path) -> Result<Catalogue> {
        let path = dir.join(SNAPSHOT_FILE);
        let buf = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalogue::default()),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let bad = |reason: &str| Error::corrupt(&path, 0, reason);
        if buf.len() < 24 || &buf[..8] != SNAPSHOT_MAGIC {
            return Err(bad("not a catalogue snapshot"));
        }
        let (body, crc) = buf.split_at(buf.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
            return Err(bad("checksum mismatch"));
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != SNAPSHOT_VERSION {
            return Err(bad(&format!("snapshot format version {version}, this build reads {SNAPSHOT_VERSION}")));
        }
        let mut catalogue = Catalogue {
            applied_through: u64::from_le_bytes(body[12..20].try_into().expect("8 bytes")),
            ..Default::default()
        };
        let mut pos = 20;
        while pos < body.len() {
            let head = body.get(pos..pos + 12).ok_or_else(|| bad("truncated entry"))?;
            let offset = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
            let bytes = body.get(pos + 12..pos + 12 + len).ok_or_else(|| bad("truncated entry"))?;
            let record = codec::decode(bytes).map_err(|e| bad(&e))?;
            catalogue.apply(offset, &record);
            pos += 12 + len;
        }
        Ok(catalogue)
    }
}

fn upsert<R: Clone>(map: &mut HashMap<String, (u64, R)>, offset: u64, id: &str, record: &R) {
    match map.get_mut(id) {
        Some((existing, _)) if *existing >= offset => {}
        Some(slot) => *slot = (offset, record.clone()),
        None => {
            map.insert(id.to_string(), (offset, record.clone()));
        }
    }
}
