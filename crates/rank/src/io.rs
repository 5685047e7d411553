//! The rankers' file format: small models, so one readable JSON document behind a fixed header.
//!
//! ```text
//! magic    8 bytes  "CSCDRANK"
//! version  u32 LE   FORMAT_VERSION
//! body     JSON     {"kind": "forest" | "linear" | "calibrator" | ..., "model": {...}}
//! ```
//!
//! Readers refuse other magics, versions and kinds, and validate what they read (a forest's child
//! references and feature indices), so a corrupt file fails to load instead of mis-scoring.

use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"CSCDRANK";
pub const FORMAT_VERSION: u32 = 1;

/// A model stored in the rankers' format.
pub trait Artifact: Serialize + DeserializeOwned {
    /// The `kind` written in the file.
    const KIND: &'static str;

    /// Checks invariants after loading; a violation is an [`Error::Format`] naming `KIND`.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    fn save(&self, w: &mut dyn Write) -> Result<()> {
        #[derive(Serialize)]
        struct Body<'a, T> {
            kind: &'a str,
            model: &'a T,
        }
        let io = |source| Error::Io { path: "<writer>".into(), source };
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes()).map_err(io)?;
        serde_json::to_writer(&mut *w, &Body { kind: Self::KIND, model: self })
            .map_err(|e| Error::format(Self::KIND, e.to_string()))?;
        w.flush().map_err(io)
    }

    fn load(r: &mut dyn Read) -> Result<Self> {
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).map_err(|source| Error::Io { path: "<reader>".into(), source })?;
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(Error::format(Self::KIND, "not a Cascade ranker file (bad magic)"));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(Error::format(
                Self::KIND,
                format!("format version {version}, this build reads {FORMAT_VERSION}"),
            ));
        }
        let body: serde_json::Value =
            serde_json::from_slice(&bytes[12..]).map_err(|e| Error::format(Self::KIND, e.to_string()))?;
        let kind = body.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != Self::KIND {
            return Err(Error::format(Self::KIND, format!("the file holds a `{kind}`")));
        }
        let model = body.get("model").cloned().unwrap_or_default();
        let model: Self = serde_json::from_value(model).map_err(|e| Error::format(Self::KIND, e.to_string()))?;
        model.check()?;
        Ok(model)
    }

    fn save_file(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        self.save(&mut w)?;
        w.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)
    }

    fn load_file(path: &Path) -> Result<Self> {
        let mut f = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::load(&mut f)
    }
}

impl Artifact for crate::tree::Forest {
    const KIND: &'static str = "forest";

    fn check(&self) -> Result<()> {
        self.validate()
    }
}
