//! The online engine: the [`Engine`] fed from the event log in offset order, checkpointed with the
//! offset it reflects so a restart (or a SIGKILL) resumes exactly where the state left off.

use crate::FeatureValue;
use crate::codec;
use crate::def::FeatureSet;
use crate::engine::{Engine, ViewStats};
use crate::error::{FeatureError, Result};
use crate::key::{Entities, EntityKey};
use cascade_core::{Record, Timestamp};
use cascade_store::Store;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The checkpoint's file name in the data directory.
pub const CHECKPOINT_FILE: &str = "features.checkpoint";

/// An [`Engine`] that knows which log offset it has applied through, and persists both together.
#[derive(Debug)]
pub struct OnlineEngine {
    engine: Engine,
    next_offset: u64,
    dir: PathBuf,
    /// Whether the checkpoint's offset was checked against the log's end.
    verified: bool,
}

impl OnlineEngine {
    /// Opens the state kept in `data_dir`: the checkpoint when there is one for these
    /// definitions, otherwise empty at offset 0 (the log is replayed from its start). A
    /// checkpoint that does not read back (checksum, unknown format version) is an error rather
    /// than silently rebuilt.
    pub fn open(data_dir: impl Into<PathBuf>, set: FeatureSet) -> Result<OnlineEngine> {
        let dir = data_dir.into();
        let path = dir.join(CHECKPOINT_FILE);
        let fresh = |set: FeatureSet| OnlineEngine {
            engine: Engine::new(set),
            next_offset: 0,
            dir: dir.clone(),
            verified: false,
        };
        let buf = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fresh(set)),
            Err(e) => return Err(FeatureError::Io { path, source: e }),
        };
        let corrupt = |reason: String| FeatureError::Corrupt { path: path.clone(), reason };
        let header = codec::header(&buf).map_err(corrupt)?;
        if header.fingerprint != set.fingerprint() {
            tracing::info!(path = %path.display(), "feature definitions changed; rebuilding feature state from the log");
            return Ok(fresh(set));
        }
        let views = codec::decode(&buf, set.views()).map_err(corrupt)?;
        let mut engine = Engine::new(set);
        engine.views = views;
        tracing::debug!(offset = header.next_offset, keys = engine.entity_count(), "feature state loaded");
        Ok(OnlineEngine { engine, next_offset: header.next_offset, dir, verified: false })
    }

    /// The offset of the next record to apply: everything below it is in the state.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Forgets all state and starts again from offset 0 (the checkpoint file is left alone until
    /// the next [`OnlineEngine::checkpoint`]).
    pub fn reset(&mut self) {
        self.engine = Engine::new(self.engine.features().clone());
        self.next_offset = 0;
    }

    /// Moves past records the store's quarantine hid (never backwards): everything below
    /// `offset` is then in the state.
    pub fn skip_to(&mut self, offset: u64) {
        self.next_offset = self.next_offset.max(offset);
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Applies the record at `offset`, which must be [`OnlineEngine::next_offset`].
    pub fn apply(&mut self, offset: u64, record: &Record) -> Result<()> {
        if offset != self.next_offset {
            return Err(FeatureError::OffsetGap { expected: self.next_offset, got: offset });
        }
        self.engine.apply(offset, record);
        self.next_offset = offset + 1;
        Ok(())
    }

    /// Applies records read from the log (as [`Store::read_from`] yields them, skipping what the
    /// quarantine hides) from [`OnlineEngine::next_offset`] on. Returns how many were applied.
    pub fn catch_up<I>(&mut self, records: I) -> Result<usize>
    where
        I: IntoIterator<Item = cascade_store::Result<(u64, Record)>>,
    {
        let mut n = 0;
        for entry in records {
            let (offset, record) = entry?;
            // A reader skips the records the store's quarantine hides: move past them.
            self.skip_to(offset);
            self.apply(offset, &record)?;
            n += 1;
        }
        Ok(n)
    }

    /// Applies at most `max` committed records of `store`'s log. The first call checks that the
    /// checkpoint is not ahead of the log (possible only after losing an unsynced log tail) and
    /// rebuilds from the start if it is.
    pub fn catch_up_store(&mut self, store: &Store, max: usize) -> Result<usize> {
        if !self.verified {
            let end = store.log_stats()?.next_offset;
            if self.next_offset > end {
                tracing::warn!(state = self.next_offset, log = end, "feature state is ahead of the log; rebuilding");
                self.engine = Engine::new(self.engine.features().clone());
                self.next_offset = 0;
            }
            self.verified = true;
        }
        let mut reader = store.read_from(self.next_offset);
        let n = self.catch_up(reader.by_ref().take(max))?;
        // Past hidden records the reader passed over after the last one it yielded.
        self.skip_to(reader.position());
        Ok(n)
    }

    /// Sweeps expired keys, then writes the state and its offset atomically (temporary file,
    /// fsync, rename, fsync of the directory): after a crash the checkpoint is the old one or the
    /// new one, never a mixture.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.engine.sweep();
        let (buf, _) = self.encode_checkpoint();
        write_atomically(&self.dir, CHECKPOINT_FILE, &buf)
    }

    /// Drops state no read or record can see any more.
    pub fn sweep(&mut self) {
        self.engine.sweep();
    }

    /// The checkpoint's bytes and the offset they cover, for [`OnlineEngine::write_checkpoint`].
    /// Split from the write so that a server encodes under a read lock (reads go on) and writes
    /// with no lock at all.
    pub fn encode_checkpoint(&self) -> (Vec<u8>, u64) {
        (codec::encode(&self.engine.views, self.engine.features().fingerprint(), self.next_offset), self.next_offset)
    }

    /// Writes checkpoint bytes atomically into `data_dir`.
    pub fn write_checkpoint(data_dir: &Path, bytes: &[u8]) -> Result<()> {
        write_atomically(data_dir, CHECKPOINT_FILE, bytes)
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn read(&self, view: &str, key: &EntityKey, at: Timestamp) -> Result<Vec<FeatureValue>> {
        self.engine.read(view, key, at)
    }

    pub fn read_row(&self, view: &str, row: &Entities, at: Timestamp) -> Result<Vec<FeatureValue>> {
        self.engine.read_row(view, row, at)
    }

    pub fn stats(&self, view: &str) -> Result<ViewStats> {
        self.engine.stats(view)
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(dir).map_err(FeatureError::io(dir))?;
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(FeatureError::io(&tmp))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(FeatureError::io(&tmp))?;
    fs::rename(&tmp, &path).map_err(FeatureError::io(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(FeatureError::io(dir))?;
    Ok(())
}
