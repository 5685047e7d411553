//! Cascade's model registry: versioned, immutable model bundles.
//!
//! A bundle is a directory `ROOT/bundles/{version:06}/` holding the artifacts a training run wrote
//! and a `manifest.json` that says what they are: format version, creation time, the training
//! data's time range and hash, the configuration hash, the code version, each model's parameters,
//! the hyper-parameter search and the offline metrics. Bundles are written into a staging
//! directory and renamed into place under a lock, so a reader never sees a half-written bundle and
//! two trainers never get the same version.
//!
//! ```
//! use cascade_registry::{ManifestDraft, ModelEntry, Registry};
//! let dir = std::env::temp_dir().join(format!("cascade-registry-doc-{}", std::process::id()));
//! let registry = Registry::open(&dir).unwrap();
//! let mut bundle = registry.begin().unwrap();
//! bundle.add_artifact("pop.json", b"{\"counts\": [3, 1]}").unwrap();
//! let mut draft = ManifestDraft::default();
//! draft.models.push(ModelEntry { name: "pop".into(), kind: "popularity".into(),
//!     params: serde_json::json!({}), artifacts: vec!["pop.json".into()] });
//! let manifest = bundle.commit(draft).unwrap();
//! assert_eq!(manifest.version, 1);
//! assert_eq!(registry.list().unwrap().len(), 1);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod aliases;
mod gate;

pub use aliases::{Actor, AliasMove, CHALLENGER, CHAMPION, MoveKind, RECOMMENDER, alias_problem};
pub use gate::{GatePolicy, GateVerdict, Promote, judge, served_metric};

use cascade_core::{ErrorKind, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Bumped whenever the manifest or bundle layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("no model bundle version {0}")]
    NotFound(u64),
    #[error("invalid artifact name `{0}`: use letters, digits, '.', '-' and '_'")]
    BadName(String),
    #[error("invalid alias `{alias}`: {reason}")]
    BadAlias { alias: String, reason: String },
    #[error("model family `{family}` has no alias `{alias}`")]
    NoAlias { family: String, alias: String },
    #[error("alias `{alias}` of `{family}` has no earlier version to roll back to")]
    NoPrevious { family: String, alias: String },
    #[error("bundle version {version} belongs to model family `{family}`, not `{wanted}`")]
    WrongFamily { version: u64, family: String, wanted: String },
    #[error("the alias moved, but the audit log could not be written: {0}")]
    Audit(String),
}

impl Error {
    /// What a caller can do about it (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) | Error::NoAlias { .. } => ErrorKind::NotFound,
            Error::BadName(_) | Error::BadAlias { .. } | Error::WrongFamily { .. } => ErrorKind::Invalid,
            Error::NoPrevious { .. } => ErrorKind::Conflict,
            Error::Audit(_) => ErrorKind::Internal,
            // The file system failed, or a bundle does not match its manifest (or the manifest
            // the build): the registry's state, not the request.
            Error::Io { .. } | Error::Corrupt { .. } => ErrorKind::Internal,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Where the training data came from and which part of it was used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// e.g. `log:/path/to/data` or `split:train.tsv.gz`.
    pub source: String,
    pub rows: u64,
    /// Event-time range of the training rows (RFC 3339), when known.
    pub first_ts: Option<String>,
    pub last_ts: Option<String>,
    /// SHA-256 of the training rows in a canonical form (see [`DataHasher`]).
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Name used by the serving pipeline, e.g. `als`.
    pub name: String,
    /// The model family, e.g. `als`, `item_knn`, `popularity`.
    pub kind: String,
    pub params: serde_json::Value,
    /// Artifact files of this model, relative to the bundle directory.
    pub artifacts: Vec<String>,
}

/// One point of a hyper-parameter search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub model: String,
    pub params: serde_json::Value,
    /// The tuned metric (e.g. NDCG@10 on the validation slice).
    pub metric: String,
    pub value: f64,
    pub chosen: bool,
}

/// What the trainer fills in; [`BundleWriter::commit`] adds version, time and checksums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestDraft {
    /// The model family the bundle belongs to: its aliases are the family's
    /// ([`RECOMMENDER`] for what `cascade train` writes).
    #[serde(default = "recommender")]
    pub family: String,
    pub data: DataInfo,
    pub config_hash: String,
    pub models: Vec<ModelEntry>,
    /// Offline metrics per model name, e.g. `{"als": {"ndcg_at_10": 0.27}}`.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    pub search: Vec<Trial>,
    /// The promotion gate's verdict against the champion when the bundle was trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateVerdict>,
}

fn recommender() -> String {
    RECOMMENDER.to_string()
}

impl Default for ManifestDraft {
    fn default() -> Self {
        ManifestDraft {
            family: recommender(),
            data: DataInfo::default(),
            config_hash: String::new(),
            models: Vec::new(),
            metrics: BTreeMap::new(),
            search: Vec::new(),
            gate: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub bytes: u64,
    pub crc32c: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub version: u64,
    /// Wall-clock creation time, RFC 3339.
    pub created_at: String,
    /// `cascade` version that trained the bundle.
    pub code_version: String,
    #[serde(flatten)]
    pub draft: ManifestDraft,
    pub artifacts: Vec<Artifact>,
}

/// A committed bundle: its manifest and directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

impl Bundle {
    /// The path of an artifact, after checking it is listed and intact.
    pub fn artifact(&self, name: &str) -> Result<PathBuf> {
        let entry = self
            .manifest
            .artifacts
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| Error::Corrupt { path: self.dir.clone(), reason: format!("no artifact `{name}`") })?;
        let path = self.dir.join(name);
        let bytes = fs::read(&path).map_err(io(&path))?;
        if bytes.len() as u64 != entry.bytes || crc32c::crc32c(&bytes) != entry.crc32c {
            return Err(Error::Corrupt { path, reason: "artifact does not match its manifest checksum".into() });
        }
        Ok(path)
    }
}

/// The registry rooted at a directory (by default `DATA_DIR/registry`).
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    audit: Option<cascade_store::AuditLog>,
}

impl Registry {
    pub fn open(root: impl Into<PathBuf>) -> Result<Registry> {
        let root = root.into();
        let bundles = root.join("bundles");
        fs::create_dir_all(&bundles).map_err(io(&bundles))?;
        Ok(Registry { root, audit: None })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts a bundle in a private staging directory.
    pub fn begin(&self) -> Result<BundleWriter> {
        let staging = self.root.join("staging");
        fs::create_dir_all(&staging).map_err(io(&staging))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let dir = staging.join(format!("{}-{nanos}", std::process::id()));
        fs::create_dir(&dir).map_err(io(&dir))?;
        Ok(BundleWriter { registry: self.clone(), dir, artifacts: Vec::new(), committed: false })
    }

    fn versions(&self) -> Result<Vec<u64>> {
        let bundles = self.root.join("bundles");
        let mut out = Vec::new();
        for entry in fs::read_dir(&bundles).map_err(io(&bundles))? {
            let name = entry.map_err(io(&bundles))?.file_name();
            if let Ok(v) = name.to_string_lossy().parse::<u64>() {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Every bundle's manifest, oldest first.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        self.versions()?.into_iter().map(|v| self.get(v).map(|b| b.manifest)).collect()
    }

    fn bundle_dir(&self, version: u64) -> PathBuf {
        self.root.join("bundles").join(format!("{version:06}"))
    }

    pub fn get(&self, version: u64) -> Result<Bundle> {
        let dir = self.bundle_dir(version);
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(version)),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| Error::Corrupt { path: path.clone(), reason: e.to_string() })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::Corrupt {
                path,
                reason: format!("bundle format {}, this build reads {FORMAT_VERSION}", manifest.format_version),
            });
        }
        Ok(Bundle { manifest, dir })
    }

    pub fn latest(&self) -> Result<Option<Bundle>> {
        self.versions()?.last().map(|&v| self.get(v)).transpose()
    }
}

/// A bundle being written. Dropped without [`BundleWriter::commit`], it leaves nothing behind.
#[derive(Debug)]
pub struct BundleWriter {
    registry: Registry,
    dir: PathBuf,
    artifacts: Vec<Artifact>,
    committed: bool,
}

impl BundleWriter {
    /// Writes an artifact file into the bundle.
    pub fn add_artifact(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name != MANIFEST
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid {
            return Err(Error::BadName(name.to_string()));
        }
        let path = self.dir.join(name);
        let mut f = File::create(&path).map_err(io(&path))?;
        f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io(&path))?;
        self.artifacts.retain(|a| a.name != name);
        self.artifacts.push(Artifact {
            name: name.to_string(),
            bytes: bytes.len() as u64,
            crc32c: crc32c::crc32c(bytes),
        });
        Ok(())
    }

    /// Assigns the next version, writes the manifest and moves the bundle into place atomically.
    pub fn commit(mut self, draft: ManifestDraft) -> Result<Manifest> {
        for model in &draft.models {
            for a in &model.artifacts {
                if !self.artifacts.iter().any(|x| &x.name == a) {
                    return Err(Error::Corrupt {
                        path: self.dir.clone(),
                        reason: format!("model `{}` lists artifact `{a}` that was never added", model.name),
                    });
                }
            }
        }
        let lock_path = self.registry.root.join("LOCK");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let version = self.registry.versions()?.last().copied().unwrap_or(0) + 1;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            version,
            created_at: Timestamp::now().to_string(),
            code_version: env!("CARGO_PKG_VERSION").to_string(),
            draft,
            artifacts: self.artifacts.clone(),
        };
        let path = self.dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        let mut f = File::create(&path).map_err(io(&path))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        let bundles = self.registry.root.join("bundles");
        let target = bundles.join(format!("{version:06}"));
        fs::rename(&self.dir, &target).map_err(io(&target))?;
        File::open(&bundles).and_then(|d| d.sync_all()).map_err(io(&bundles))?;
        self.committed = true;
        Ok(manifest)
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Hashes training data in a canonical, order-sensitive form, for lineage.
#[derive(Debug, Default, Clone)]
pub struct DataHasher {
    hasher: sha2::Sha256,
    rows: u64,
}

impl DataHasher {
    /// Adds one row: its fields are hashed length-prefixed, so ("ab","c") ≠ ("a","bc").
    pub fn row(&mut self, fields: &[&[u8]]) {
        for f in fields {
            self.hasher.update((f.len() as u64).to_le_bytes());
            self.hasher.update(f);
        }
        self.rows += 1;
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Lowercase hex SHA-256.
    pub fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

/// Lowercase hex SHA-256 of bytes (e.g. a configuration file).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
