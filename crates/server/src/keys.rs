//! API keys: named bearer tokens with scopes, stored hashed in the project's data directory.
//!
//! A key reads `csk_<id>_<secret>`: `id` (12 hex digits) finds the record, and the SHA-256 of the
//! whole token is compared with the stored digest in constant time. The token itself is shown
//! once, when created, and never stored or logged. Secrets are 256 random bits, so a plain
//! digest is enough: there is nothing to brute-force that a slow hash would protect.
//!
//! Authentication is on once the project has a key file (`cascade keys create` writes it), and
//! stays on when every key is revoked: revoking the last key must not reopen the API.

use parking_lot::RwLock;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use subtle::ConstantTimeEq;

/// The key file in the data directory.
pub const KEYS_FILE: &str = "keys.json";

const PREFIX: &str = "csk_";

/// What a key may do. `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Write events, items and users.
    Ingest,
    /// Recommendations, re-ranking, similar items, online features.
    Serve,
    /// Read catalogue records (items, users and their attributes).
    Read,
    /// Everything, including administrative routes.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Serve, Scope::Read, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Serve => "serve",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope `{s}`: one of ingest, serve, read, admin"))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One key as stored: never the token, only its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; a revoked key authenticates nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl KeyRecord {
    pub fn active(&self) -> bool {
        self.revoked_at.is_none()
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|&s| s == scope || s == Scope::Admin)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a key file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid key name `{0}`: use 1 to 64 letters, digits, `-`, `_` or `.`")]
    InvalidName(String),
    #[error("give at least one scope (ingest, serve, read, admin)")]
    NoScope,
    #[error("an active key is already named `{0}`; revoke it first or pick another name")]
    NameTaken(String),
    #[error("no active key has the name or id `{0}`")]
    NotFound(String),
}

impl KeyError {
    pub fn kind(&self) -> cascade_core::ErrorKind {
        use cascade_core::ErrorKind;
        match self {
            KeyError::Io { .. } => ErrorKind::Unavailable,
            KeyError::Corrupt { .. } => ErrorKind::Internal,
            KeyError::InvalidName(_) | KeyError::NoScope => ErrorKind::Invalid,
            KeyError::NameTaken(_) => ErrorKind::Conflict,
            KeyError::NotFound(_) => ErrorKind::NotFound,
        }
    }
}

/// The keys of one project's data directory, as the CLI edits them.
#[derive(Debug)]
pub struct KeyStore {
    path: PathBuf,
}

impl KeyStore {
    pub fn new(data_dir: &Path) -> KeyStore {
        KeyStore { path: data_dir.join(KEYS_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key, revoked ones included, oldest first; none when there is no key file.
    pub fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        Ok(read(&self.path)?.map(|f| f.keys).unwrap_or_default())
    }

    /// Creates a key and returns its token (shown once: only its digest is kept) and record.
    pub fn create(&self, name: &str, scopes: &[Scope], now: &str) -> Result<(String, KeyRecord), KeyError> {
        let valid = (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(KeyError::InvalidName(name.to_string()));
        }
        if scopes.is_empty() {
            return Err(KeyError::NoScope);
        }
        let mut file = read(&self.path)?.unwrap_or(KeyFile { version: 1, keys: Vec::new() });
        if file.keys.iter().any(|k| k.active() && k.name == name) {
            return Err(KeyError::NameTaken(name.to_string()));
        }
        let mut random = [0u8; 38];
        rand::rng().fill_bytes(&mut random);
        let id = hex(&random[..6]);
        let token = format!("{PREFIX}{id}_{}", hex(&random[6..]));
        let mut scopes = scopes.to_vec();
        scopes.sort_unstable();
        scopes.dedup();
        let record = KeyRecord {
            id,
            name: name.to_string(),
            scopes,
            sha256: hex(&Sha256::digest(token.as_bytes())),
            created_at: now.to_string(),
            revoked_at: None,
        };
        file.keys.push(record.clone());
        write(&self.path, &file)?;
        Ok((token, record))
    }

    /// Revokes the active key with this name or id.
    pub fn revoke(&self, name_or_id: &str, now: &str) -> Result<KeyRecord, KeyError> {
        let mut file = read(&self.path)?.ok_or_else(|| KeyError::NotFound(name_or_id.to_string()))?;
        let key = file
            .keys
            .iter_mut()
            .find(|k| k.active() && (k.name == name_or_id || k.id == name_or_id))
            .ok_or_else(|| KeyError::NotFound(name_or_id.to_string()))?;
        key.revoked_at = Some(now.to_string());
        let revoked = key.clone();
        write(&self.path, &file)?;
        Ok(revoked)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn read(path: &Path) -> Result<Option<KeyFile>, KeyError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KeyError::Io { path: path.to_path_buf(), source }),
    };
    let file: KeyFile = serde_json::from_slice(&text)
        .map_err(|e| KeyError::Corrupt { path: path.to_path_buf(), reason: e.to_string() })?;
    if file.version != 1 {
        let reason = format!("version {} (this build reads version 1)", file.version);
        return Err(KeyError::Corrupt { path: path.to_path_buf(), reason });
    }
    Ok(Some(file))
}

/// Replaces the file whole (temporary file, fsync, rename, directory fsync), readable by the
/// owner only: a crash leaves the old keys or the new ones, never half a file.
fn write(path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    let text = serde_json::to_vec_pretty(file).expect("key records serialize");
    cascade_store::files::write_atomic(path, &text, true)
        .map_err(|source| KeyError::Io { path: path.to_path_buf(), source })
}

/// Who a request authenticated as, for handlers (and the audit log) to read from the request's
/// extensions. `None` as name: authentication is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not a key of this project, or revoked.
    Unknown,
    /// A valid key without the scope.
    Scope { name: String, needs: Scope },
}

/// The keys a server checks requests against, reloaded when the file changes.
#[derive(Debug)]
pub struct KeyRing {
    path: PathBuf,
    state: RwLock<Loaded>,
}

#[derive(Debug, Default)]
struct Loaded {
    /// `None`: there is no key file, authentication is off.
    keys: Option<Vec<KeyRecord>>,
    stamp: Option<(SystemTime, u64)>,
}

impl KeyRing {
    /// The ring of `data_dir`'s key file (authentication off while there is none).
    pub fn open(data_dir: &Path) -> Result<KeyRing, KeyError> {
        let ring = KeyRing { path: data_dir.join(KEYS_FILE), state: RwLock::new(Loaded::default()) };
        ring.reload()?;
        Ok(ring)
    }

    /// Whether requests must carry a key.
    pub fn enabled(&self) -> bool {
        self.state.read().keys.is_some()
    }

    /// Rereads the file if it changed (size or modification time). A file that cannot be read
    /// keeps the keys already loaded: a bad edit must not open the API or lock everyone out.
    /// Returns whether the keys changed.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(m) => Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(KeyError::Io { path: self.path.clone(), source }),
        };
        if self.state.read().stamp == stamp && stamp.is_some() {
            return Ok(false);
        }
        let keys = read(&self.path)?.map(|f| f.keys);
        let mut state = self.state.write();
        // The file vanished: keep enforcing what was loaded (deleting the file while serving
        // is not how authentication is turned off; a restart without it is).
        if keys.is_none() && state.keys.is_some() {
            return Ok(false);
        }
        let changed = state.keys != keys;
        *state = Loaded { keys, stamp };
        Ok(changed)
    }

    /// The principal of a request carrying `authorization` (the header's value) that needs
    /// `scope` (`None`: any valid key).
    pub fn check(&self, authorization: Option<&[u8]>, scope: Option<Scope>) -> Result<Principal, Denied> {
        let state = self.state.read();
        let Some(keys) = &state.keys else { return Ok(Principal { name: None }) };
        let token = authorization
            .and_then(|v| v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer ")))
            .map(<[u8]>::trim_ascii)
            .ok_or(Denied::Missing)?;
        let id = token.strip_prefix(PREFIX.as_bytes()).and_then(|rest| rest.get(..12)).ok_or(Denied::Unknown)?;
        let digest = hex(&Sha256::digest(token));
        let key = keys
            .iter()
            .find(|k| k.active() && k.id.as_bytes() == id && bool::from(k.sha256.as_bytes().ct_eq(digest.as_bytes())))
            .ok_or(Denied::Unknown)?;
        if let Some(scope) = scope
            && !key.allows(scope)
        {
            return Err(Denied::Scope { name: key.name.clone(), needs: scope });
        }
        Ok(Principal { name: Some(key.name.clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-05T10:00:00Z";

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn a_created_key_authenticates_with_its_scopes_only() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::new(dir.path());
        let ring = KeyRing::open(dir.path()).unwrap();
        assert!(!ring.enabled());
        assert_eq!(ring.check(None, Some(Scope::Admin)), Ok(Principal { name: None }));

        let (token, record) = keys.create("etl", &[Scope::Ingest], NOW).unwrap();
        assert!(token.starts_with("csk_") && token.len() == 4 + 12 + 1 + 64, "{token}");
        assert!(!std::fs::read_to_string(keys.path()).unwrap().contains(&token), "the token is never stored");
        assert!(ring.reload().unwrap());
        assert!(ring.enabled());
        assert_eq!(ring.check(Some(&bearer(&token)), Some(Scope::Ingest)), Ok(Principal { name: Some("etl".into()) }));
        assert_eq!(
            ring.check(Some(&bearer(&token)), Some(Scope::Serve)),
            Err(Denied::Scope { name: "etl".into(), needs: Scope::Serve })
        );
        assert_eq!(ring.check(None, Some(Scope::Ingest)), Err(Denied::Missing));
        assert_eq!(ring.check(Some(b"Basic abc"), Some(Scope::Ingest)), Err(Denied::Missing));
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 1.., if token.ends_with('0') { "1" } else { "0" });
        assert_eq!(ring.check(Some(&bearer(&forged)), Some(Scope::Ingest)), Err(Denied::Unknown));
        assert_eq!(ring.check(Some(b"Bearer csk_"), Some(Scope::Ingest)), Err(Denied::Unknown));

        let (admin, _) = keys.create("ops", &[Scope::Admin], NOW).unwrap();
        ring.reload().unwrap();
        for scope in Scope::ALL {
            assert!(ring.check(Some(&bearer(&admin)), Some(scope)).is_ok(), "admin allows {scope}");
        }

        keys.revoke(&record.id, NOW).unwrap();
        ring.reload().unwrap();
        assert_eq!(ring.check(Some(&bearer(&token)), Some(Scope::Ingest)), Err(Denied::Unknown));
        keys.revoke("ops", NOW).unwrap();
        ring.reload().unwrap();
        assert!(ring.enabled(), "revoking every key keeps authentication on");
        assert_eq!(ring.check(None, Some(Scope::Read)), Err(Denied::Missing));
    }

    #[test]
    fn names_and_scopes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::new(dir.path());
        assert!(matches!(keys.create("a b", &[Scope::Read], NOW), Err(KeyError::InvalidName(_))));
        assert!(matches!(keys.create("", &[Scope::Read], NOW), Err(KeyError::InvalidName(_))));
        assert!(matches!(keys.create("ok", &[], NOW), Err(KeyError::NoScope)));
        keys.create("ok", &[Scope::Read, Scope::Read], NOW).unwrap();
        assert!(matches!(keys.create("ok", &[Scope::Read], NOW), Err(KeyError::NameTaken(_))));
        assert!(matches!(keys.revoke("nobody", NOW), Err(KeyError::NotFound(_))));
        assert_eq!(keys.list().unwrap()[0].scopes, vec![Scope::Read]);
        keys.revoke("ok", NOW).unwrap();
        keys.create("ok", &[Scope::Serve], NOW).unwrap();
        assert_eq!(keys.list().unwrap().len(), 2);
    }

    #[test]
    fn a_damaged_file_keeps_the_loaded_keys() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::new(dir.path());
        let (token, _) = keys.create("etl", &[Scope::Ingest], NOW).unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        std::fs::write(keys.path(), b"{ not json").unwrap();
        assert!(matches!(ring.reload(), Err(KeyError::Corrupt { .. })));
        assert!(ring.check(Some(&bearer(&token)), Some(Scope::Ingest)).is_ok());
        std::fs::remove_file(keys.path()).unwrap();
        ring.reload().unwrap();
        assert!(ring.enabled(), "a deleted file does not turn authentication off while serving");
        assert!(KeyRing::open(dir.path()).is_ok_and(|r| !r.enabled()));
    }
}
