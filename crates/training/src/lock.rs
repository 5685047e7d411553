//! One training at a time per project: an exclusive lock on `REGISTRY/TRAIN.lock`, held by
//! [`train_bundle`](crate::train_bundle) for the whole run, whoever runs it (`cascade train`, a
//! server's `train` job). A second trainer fails at once with [`Error::TrainingRunning`] rather
//! than racing the first for the champion alias.
//!
//! The lock is the operating system's (`flock` on Unix): it ends with the file handle, so a
//! trainer that crashes or is killed never leaves the project locked.

use crate::error::{Error, Result};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

/// The lock file in the registry's root directory.
pub const TRAIN_LOCK_FILE: &str = "TRAIN.lock";

/// The held training lock of one registry; released when dropped.
#[derive(Debug)]
pub struct TrainLock {
    _file: File,
    path: PathBuf,
}

impl TrainLock {
    /// Takes the training lock of the registry at `registry_root`, or fails at once with
    /// [`Error::TrainingRunning`] when another trainer holds it (in this process or another).
    pub fn acquire(registry_root: &Path) -> Result<TrainLock> {
        let path = registry_root.join(TRAIN_LOCK_FILE);
        let io = |e: std::io::Error| Error::Lock { path: path.clone(), source: e };
        std::fs::create_dir_all(registry_root).map_err(io)?;
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(TrainLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(Error::TrainingRunning { path }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Whether another trainer holds the lock of the registry at `registry_root` right now
    /// (taken and released at once: an answer for a quick refusal, not a reservation).
    pub fn is_held(registry_root: &Path) -> Result<bool> {
        match TrainLock::acquire(registry_root) {
            Ok(_) => Ok(false),
            Err(Error::TrainingRunning { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_trainer_fails_at_once_until_the_first_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let first = TrainLock::acquire(dir.path()).unwrap();
        assert!(TrainLock::is_held(dir.path()).unwrap());
        let err = TrainLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.kind(), cascade_core::ErrorKind::Conflict);
        let message = err.to_string();
        assert!(message.contains("another training is running") && message.contains("TRAIN.lock"), "{message}");
        drop(first);
        assert!(!TrainLock::is_held(dir.path()).unwrap());
        let again = TrainLock::acquire(dir.path()).unwrap();
        assert_eq!(again.path(), dir.path().join(TRAIN_LOCK_FILE));
    }
}
