//! The model file format shared by every model (one page).
//!
//! ```text
//! magic    8 bytes  "CSCDMODL"
//! version  u32 LE   FORMAT_VERSION
//! hlen     u32 LE   length of the header
//! header   hlen bytes of JSON: {"kind": "als", "params": {...}, "meta": {...},
//!                               "arrays": [{"name": "user_factors", "dtype": "f32", "len": 123}, ...]}
//! arrays   the raw little-endian values of each declared array, in the declared order
//! ```
//!
//! Readers refuse other magics and versions rather than misread them, and check every array's
//! length against the shapes in the header.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"CSCDMODL";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const MAX_HEADER: usize = 64 << 20;

/// A typed view of one array to write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ArrayRef<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
    U64(&'a [u64]),
}

#[derive(Debug, Serialize, Deserialize)]
struct ArrayDecl {
    name: String,
    dtype: String,
    len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    kind: String,
    params: Value,
    #[serde(default)]
    meta: Value,
    arrays: Vec<ArrayDecl>,
}

/// Owned arrays read back from a file.
#[derive(Debug)]
pub(crate) enum Array {
    F32(Vec<f32>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

/// A decoded model file: its kind, params, metadata and arrays by name.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub kind: String,
    pub params: Value,
    pub meta: Value,
    arrays: HashMap<String, Array>,
}

impl Decoded {
    pub fn params<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        serde_json::from_value(self.params.clone()).map_err(|e| Error::Format(format!("{} params: {e}", self.kind)))
    }

    pub fn meta<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        serde_json::from_value(self.meta.clone()).map_err(|e| Error::Format(format!("{} metadata: {e}", self.kind)))
    }

    fn take(&mut self, name: &str) -> Result<Array> {
        self.arrays.remove(name).ok_or_else(|| Error::Format(format!("{}: missing array `{name}`", self.kind)))
    }

    pub fn f32(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        match self.take(name)? {
            Array::F32(v) if v.len() == len => Ok(v),
            Array::F32(v) => Err(Error::Format(format!("array `{name}` has {} values, expected {len}", v.len()))),
            _ => Err(Error::Format(format!("array `{name}` is not f32"))),
        }
    }

    pub fn u32(&mut self, name: &str, len: usize) -> Result<Vec<u32>> {
        match self.take(name)? {
            Array::U32(v) if v.len() == len => Ok(v),
            Array::U32(v) => Err(Error::Format(format!("array `{name}` has {} values, expected {len}", v.len()))),
            _ => Err(Error::Format(format!("array `{name}` is not u32"))),
        }
    }

    /// A `u64` array read as `usize` offsets (`indptr`), checked to be monotone and to end at
    /// `end`.
    pub fn indptr(&mut self, name: &str, len: usize, end: usize) -> Result<Vec<usize>> {
        let v = match self.take(name)? {
            Array::U64(v) if v.len() == len => v,
            Array::U64(v) => {
                return Err(Error::Format(format!("array `{name}` has {} values, expected {len}", v.len())));
            }
            _ => return Err(Error::Format(format!("array `{name}` is not u64"))),
        };
        let out: Vec<usize> = v.into_iter().map(|x| usize::try_from(x).unwrap_or(usize::MAX)).collect();
        if out.first() != Some(&0) || out.last() != Some(&end) || !out.is_sorted() {
            return Err(Error::Format(format!("array `{name}` is not a valid offset table")));
        }
        Ok(out)
    }
}

/// Writes a matrix-factorisation model (ALS, BPR): parameters, sizes and the two row-major
/// factor matrices, under the names their `from_decoded` reads.
pub(crate) fn write_factor_model(
    w: &mut dyn Write,
    kind: &str,
    params: &impl Serialize,
    (n_users, n_items): (usize, usize),
    user_factors: &[f32],
    item_factors: &[f32],
) -> Result<()> {
    let params = serde_json::to_value(params).map_err(|e| Error::Format(e.to_string()))?;
    let meta = serde_json::json!({ "n_users": n_users, "n_items": n_items });
    write_model(
        w,
        kind,
        params,
        meta,
        &[("user_factors", ArrayRef::F32(user_factors)), ("item_factors", ArrayRef::F32(item_factors))],
    )
}

pub(crate) fn write_model(
    w: &mut dyn Write,
    kind: &str,
    params: Value,
    meta: Value,
    arrays: &[(&str, ArrayRef<'_>)],
) -> Result<()> {
    let decls = arrays
        .iter()
        .map(|(name, a)| {
            let (dtype, len) = match a {
                ArrayRef::F32(v) => ("f32", v.len()),
                ArrayRef::U32(v) => ("u32", v.len()),
                ArrayRef::U64(v) => ("u64", v.len()),
            };
            ArrayDecl { name: (*name).to_string(), dtype: dtype.to_string(), len: len as u64 }
        })
        .collect();
    let header = Header { kind: kind.to_string(), params, meta, arrays: decls };
    let json = serde_json::to_vec(&header).map_err(|e| Error::Format(format!("cannot encode header: {e}")))?;
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    w.write_all(&u32::try_from(json.len()).map_err(|_| Error::Format("header too large".into()))?.to_le_bytes())?;
    w.write_all(&json)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for (_, a) in arrays {
        match a {
            ArrayRef::F32(v) => write_chunked(w, &mut buf, v, |x, b| b.extend_from_slice(&x.to_le_bytes()))?,
            ArrayRef::U32(v) => write_chunked(w, &mut buf, v, |x, b| b.extend_from_slice(&x.to_le_bytes()))?,
            ArrayRef::U64(v) => write_chunked(w, &mut buf, v, |x, b| b.extend_from_slice(&x.to_le_bytes()))?,
        }
    }
    w.flush()?;
    Ok(())
}

fn write_chunked<T: Copy>(w: &mut dyn Write, buf: &mut Vec<u8>, v: &[T], put: impl Fn(T, &mut Vec<u8>)) -> Result<()> {
    for chunk in v.chunks(8192) {
        buf.clear();
        for &x in chunk {
            put(x, buf);
        }
        w.write_all(buf)?;
    }
    Ok(())
}

fn read_exact_or_format(r: &mut dyn Read, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Format("file is truncated".into())
        } else {
            Error::Stream(e)
        }
    })
}

fn read_array<const N: usize, T>(r: &mut dyn Read, len: u64, from: fn([u8; N]) -> T) -> Result<Vec<T>> {
    let len = usize::try_from(len).map_err(|_| Error::Format("array too large".into()))?;
    // Grow as bytes actually arrive, so a corrupt length cannot allocate unbounded memory.
    let mut out = Vec::with_capacity(len.min(1 << 20));
    let mut buf = vec![0u8; 8192 * N];
    let mut left = len;
    while left > 0 {
        let n = left.min(8192);
        let bytes = &mut buf[..n * N];
        read_exact_or_format(r, bytes)?;
        out.extend(bytes.chunks_exact(N).map(|c| from(c.try_into().expect("N bytes"))));
        left -= n;
    }
    Ok(out)
}

/// Reads a model file; `kind` (if given) must match the file's kind.
pub(crate) fn read_model(r: &mut dyn Read, kind: Option<&str>) -> Result<Decoded> {
    let mut magic = [0u8; 8];
    read_exact_or_format(r, &mut magic)?;
    if &magic != MAGIC {
        return Err(Error::Format("not a Cascade model file (bad magic)".into()));
    }
    let mut word = [0u8; 4];
    read_exact_or_format(r, &mut word)?;
    let version = u32::from_le_bytes(word);
    if version != FORMAT_VERSION {
        return Err(Error::Version { found: version, supported: FORMAT_VERSION });
    }
    read_exact_or_format(r, &mut word)?;
    let hlen = u32::from_le_bytes(word) as usize;
    if hlen > MAX_HEADER {
        return Err(Error::Format(format!("header of {hlen} bytes is implausibly large")));
    }
    let mut json = vec![0u8; hlen];
    read_exact_or_format(r, &mut json)?;
    let header: Header = serde_json::from_slice(&json).map_err(|e| Error::Format(format!("bad header: {e}")))?;
    if let Some(want) = kind
        && header.kind != want
    {
        return Err(Error::Format(format!("file holds a `{}` model, expected `{want}`", header.kind)));
    }
    let mut arrays = HashMap::new();
    for d in &header.arrays {
        let a = match d.dtype.as_str() {
            "f32" => Array::F32(read_array(r, d.len, f32::from_le_bytes)?),
            "u32" => Array::U32(read_array(r, d.len, u32::from_le_bytes)?),
            "u64" => Array::U64(read_array(r, d.len, u64::from_le_bytes)?),
            other => return Err(Error::Format(format!("array `{}` has unknown dtype `{other}`", d.name))),
        };
        arrays.insert(d.name.clone(), a);
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra)? != 0 {
        return Err(Error::Format("trailing bytes after the last array".into()));
    }
    Ok(Decoded { kind: header.kind, params: header.params, meta: header.meta, arrays })
}

/// Saving and loading a model as one self-describing, versioned file (layout in the [`io`](self)
/// module docs).
pub trait Persist: Sized {
    /// The `kind` recorded in the file header.
    const KIND: &'static str;

    /// Writes the model to a stream.
    fn save(&self, w: &mut dyn Write) -> Result<()>;

    /// Reads a model written by [`Persist::save`]; refuses other kinds and format versions.
    fn load(r: &mut dyn Read) -> Result<Self>;

    /// Writes the model to a file (created or truncated).
    fn save_file(&self, path: &Path) -> Result<()> {
        let file = File::create(path).map_err(Error::io(path))?;
        let mut w = BufWriter::new(file);
        self.save(&mut w).map_err(|e| with_path(e, path))?;
        w.into_inner().map_err(|e| Error::io(path)(e.into_error()))?.sync_all().map_err(Error::io(path))
    }

    /// Reads a model file.
    fn load_file(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(Error::io(path))?;
        Self::load(&mut BufReader::new(file)).map_err(|e| with_path(e, path))
    }
}

pub(crate) fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Stream(source) => Error::Io { path: path.to_path_buf(), source },
        Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
        other => other,
    }
}
