//! The index file: a versioned, checksummed, memory-mappable layout.
//!
//! ```text
//! offset  size  field (all integers little-endian)
//!      0     8  magic "CSCDHNSW"
//!      8     4  format version (1)
//!     12     4  header length (256)
//!     16     4  metric (1 inner product, 2 cosine, 3 L2)
//!     20     4  dim
//!     24     4  row stride in floats (dim rounded up to a multiple of 16)
//!     28     4  M
//!     32     4  M0 (layer-0 list capacity, 2·M)
//!     36     4  ef_construction
//!     40     8  seed
//!     48     8  n (nodes)
//!     56     4  entry node (u32::MAX when empty)
//!     60     4  max level
//!     64     8  file length
//!     72     4  crc32c of bytes [256, file length)
//!     76    52  reserved (zero)
//!    128    96  section table: 6 × (offset u64, length u64) in the order below
//!    224    28  reserved (zero)
//!    252     4  crc32c of bytes [0, 252)
//! ```
//!
//! Sections, each starting at a multiple of 64 bytes (zero padding in between):
//! 1. vectors: n × stride f32 (64-byte aligned rows);
//! 2. labels: n u32 (caller id of each node);
//! 3. levels: n u8;
//! 4. layer 0: n × (M0 + 1) u32, per node `count, ids...`;
//! 5. upper offsets: n u32, start of each node's slots in section 6;
//! 6. upper layers: per node, level × (M + 1) u32.
//!
//! `load` checks both checksums, the version, every length and offset, and the graph itself
//! (ids in range, counts within capacity, offsets consistent, unique labels, finite vectors), so
//! a damaged file is refused with a reason instead of misread.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::distance::{Block, LANES};
use crate::index::{Hnsw, MAX_LEVEL, MAX_M, Metric, level_for};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CSCDHNSW";
/// The index file format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 256;
const SECTIONS: usize = 6;

fn align64(x: u64) -> u64 {
    x.div_ceil(64) * 64
}

/// Section lengths in bytes for the given shape.
fn section_lens(n: u64, stride: u64, m0: u64, upper_len: u64) -> [u64; SECTIONS] {
    [n * stride * 4, n * 4, n, n * (m0 + 1) * 4, n * 4, upper_len * 4]
}

/// `(offset, length)` of each section and the file length.
fn layout(lens: [u64; SECTIONS]) -> ([(u64, u64); SECTIONS], u64) {
    let mut out = [(0, 0); SECTIONS];
    let mut at = HEADER_LEN as u64;
    for (slot, len) in out.iter_mut().zip(lens) {
        at = align64(at);
        *slot = (at, len);
        at += len;
    }
    (out, at)
}

/// Writes bytes and keeps the running checksum of everything after the header.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
    written: u64,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.written += bytes.len() as u64;
        self.inner.write_all(bytes)
    }

    fn pad_to(&mut self, offset: u64) -> std::io::Result<()> {
        let pad = (offset - self.written) as usize;
        self.put(&[0u8; 64][..pad])
    }

    fn put_u32s(&mut self, words: impl Iterator<Item = u32>) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(4096);
        for w in words {
            buf.extend_from_slice(&w.to_le_bytes());
            if buf.len() >= 4096 {
                self.put(&buf)?;
                buf.clear();
            }
        }
        self.put(&buf)
    }
}

impl Hnsw {
    /// Writes the index to `path` (through a temporary file in the same directory that is synced
    /// and renamed, so `path` is never left half-written).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        self.write_file(&tmp).map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(Error::io(path))?;
        Ok(())
    }

    fn write_file(&self, path: &Path) -> std::io::Result<()> {
        let n = self.len() as u64;
        let stride = (self.bpr * LANES) as u64;
        let lens = section_lens(n, stride, self.m0 as u64, self.upper.len() as u64);
        let (sections, file_len) = layout(lens);
        let mut file = File::create(path)?;
        let mut w = CrcWriter { inner: BufWriter::with_capacity(1 << 20, &mut file), crc: 0, written: 0 };
        w.inner.write_all(&[0u8; HEADER_LEN])?;
        w.written = HEADER_LEN as u64;
        w.pad_to(sections[0].0)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in self.vectors.chunks(1024) {
            buf.clear();
            for f in chunk.iter().flat_map(|b| b.0) {
                buf.extend_from_slice(&f.to_le_bytes());
            }
            w.put(&buf)?;
        }
        w.pad_to(sections[1].0)?;
        w.put_u32s(self.labels.iter().copied())?;
        w.pad_to(sections[2].0)?;
        w.put(&self.levels)?;
        w.pad_to(sections[3].0)?;
        w.put_u32s(self.links0.iter().map(|a| a.load(Relaxed)))?;
        w.pad_to(sections[4].0)?;
        w.put_u32s(self.upper_offsets.iter().copied())?;
        w.pad_to(sections[5].0)?;
        w.put_u32s(self.upper.iter().map(|a| a.load(Relaxed)))?;
        debug_assert_eq!(w.written, file_len);
        let body_crc = w.crc;
        w.inner.flush()?;
        drop(w);

        let (entry, max_level) = self.entry_point().map_or((u32::MAX, 0), |(e, l)| (e, l as u32));
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        let mut put32 = |at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put32(8, FORMAT_VERSION);
        put32(12, HEADER_LEN as u32);
        put32(16, self.metric.code());
        put32(20, self.dim as u32);
        put32(24, stride as u32);
        put32(28, self.m as u32);
        put32(32, self.m0 as u32);
        put32(36, self.ef_construction as u32);
        put32(56, entry);
        put32(60, max_level);
        put32(72, body_crc);
        h[40..48].copy_from_slice(&self.seed.to_le_bytes());
        h[48..56].copy_from_slice(&n.to_le_bytes());
        h[64..72].copy_from_slice(&file_len.to_le_bytes());
        for (i, (off, len)) in sections.iter().enumerate() {
            h[128 + 16 * i..136 + 16 * i].copy_from_slice(&off.to_le_bytes());
            h[136 + 16 * i..144 + 16 * i].copy_from_slice(&len.to_le_bytes());
        }
        let crc = crc32c::crc32c(&h[..252]);
        h[252..256].copy_from_slice(&crc.to_le_bytes());
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&h)?;
        file.sync_all()
    }

    /// Reads an index written by [`Hnsw::save`] into memory, refusing damaged files.
    pub fn load(path: impl AsRef<Path>) -> Result<Hnsw> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        Self::from_bytes(&bytes).map_err(|e| match e {
            Parse::Corrupt(reason) => Error::corrupt(path, reason),
            Parse::Version(found) => {
                Error::UnsupportedVersion { path: path.to_path_buf(), found, supported: FORMAT_VERSION }
            }
        })
    }

    fn from_bytes(b: &[u8]) -> Result<Hnsw, Parse> {
        let bad = |reason: String| Err(Parse::Corrupt(reason));
        if b.len() < HEADER_LEN {
            return bad(format!("{} bytes is shorter than the {HEADER_LEN}-byte header (truncated?)", b.len()));
        }
        if &b[0..8] != MAGIC {
            return bad("wrong magic number (not a Cascade HNSW index)".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        if crc32c::crc32c(&b[..252]) != u32_at(252) {
            return bad("header checksum mismatch".into());
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(Parse::Version(version));
        }
        let file_len = u64_at(64);
        if b.len() as u64 != file_len {
            return bad(format!("file is {} bytes, the header says {file_len} (truncated or extended)", b.len()));
        }
        if crc32c::crc32c(&b[HEADER_LEN..]) != u32_at(72) {
            return bad("body checksum mismatch".into());
        }
        let Some(metric) = Metric::from_code(u32_at(16)) else {
            return bad(format!("unknown metric code {}", u32_at(16)));
        };
        let (dim, stride, m, m0, efc) =
            (u32_at(20) as usize, u32_at(24) as usize, u32_at(28) as usize, u32_at(32) as usize, u32_at(36) as usize);
        let (seed, n, entry, max_level) = (u64_at(40), u64_at(48), u32_at(56), u32_at(60) as usize);
        if dim == 0 || stride != dim.div_ceil(LANES) * LANES || !(2..=MAX_M).contains(&m) || m0 != 2 * m || efc == 0 {
            return bad(format!("invalid parameters dim {dim}, stride {stride}, M {m}, M0 {m0}, ef {efc}"));
        }
        if n > u64::from(u32::MAX) || n * stride as u64 * 4 > file_len {
            return bad(format!("node count {n} does not fit the file"));
        }
        let table: Vec<(u64, u64)> = (0..SECTIONS).map(|i| (u64_at(128 + 16 * i), u64_at(136 + 16 * i))).collect();
        let upper_len = table[5].1 / 4;
        let (expected, expected_len) = layout(section_lens(n, stride as u64, m0 as u64, upper_len));
        if table != expected || expected_len != file_len || !table[5].1.is_multiple_of(4) {
            return bad("section table does not match the header".into());
        }
        let n = n as usize;
        let section = |i: usize| &b[expected[i].0 as usize..(expected[i].0 + expected[i].1) as usize];
        let words = |i: usize| section(i).chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()));

        let vectors: Vec<Block> = section(0)
            .chunks_exact(4 * LANES)
            .map(|c| {
                let mut block = Block::default();
                for (x, f) in block.0.iter_mut().zip(c.chunks_exact(4)) {
                    *x = f32::from_le_bytes(f.try_into().unwrap_or_default());
                }
                block
            })
            .collect();
        if vectors.iter().any(|blk| blk.0.iter().any(|x| !x.is_finite())) {
            return bad("a vector has a non-finite component".into());
        }
        let labels: Vec<u32> = words(1).collect();
        let mut ids = HashMap::with_capacity(n);
        for (node, &id) in labels.iter().enumerate() {
            if ids.insert(id, node as u32).is_some() {
                return bad(format!("id {id} appears twice"));
            }
        }
        let levels = section(2).to_vec();
        let links0: Vec<u32> = words(3).collect();
        let upper_offsets: Vec<u32> = words(4).collect();
        let upper: Vec<u32> = words(5).collect();

        // The graph must be well formed: every read during search is then in bounds.
        let mut at = 0usize;
        for (node, (&level, &off)) in levels.iter().zip(&upper_offsets).enumerate() {
            let level = usize::from(level);
            if level > MAX_LEVEL || off as usize != at {
                return bad(format!("node {node}: bad level {level} or upper offset {off}"));
            }
            at += level * (m + 1);
        }
        if at != upper.len() {
            return bad("upper layer section length does not match the levels".into());
        }
        let check_slot = |slot: &[u32]| {
            let count = slot[0] as usize;
            count < slot.len() && slot[1..=count].iter().all(|&v| (v as usize) < n)
        };
        if !links0.chunks_exact(m0 + 1).all(check_slot)
            || (!upper.is_empty() && !upper.chunks_exact(m + 1).all(check_slot))
        {
            return bad("a neighbour list is over capacity or points outside the index".into());
        }
        // A link on layer l must lead to a node that exists on layer l.
        for (node, (&level, &off)) in levels.iter().zip(&upper_offsets).enumerate() {
            for l in 1..=usize::from(level) {
                let slot = &upper[off as usize + (l - 1) * (m + 1)..][..m + 1];
                if slot[1..=slot[0] as usize].iter().any(|&v| usize::from(levels[v as usize]) < l) {
                    return bad(format!("node {node}: a layer-{l} link leads to a node below layer {l}"));
                }
            }
        }
        let entry_ok = if n == 0 {
            entry == u32::MAX
        } else {
            (entry as usize) < n && usize::from(levels[entry as usize]) == max_level
        };
        if !entry_ok {
            return bad(format!("invalid entry point {entry} (max level {max_level})"));
        }
        // Levels are a function of the seed; a mismatch means the file was tampered with.
        if levels.iter().enumerate().any(|(i, &l)| l != level_for(seed, i as u32, m)) {
            return bad("node levels do not match the seed".into());
        }

        let params = crate::Params { metric, m, ef_construction: efc, seed };
        let mut index = Hnsw::new(dim, &params).map_err(|e| Parse::Corrupt(e.to_string()))?;
        index.vectors = vectors;
        index.labels = labels;
        index.ids = ids;
        index.levels = levels;
        index.links0 = links0.into_iter().map(AtomicU32::new).collect();
        index.upper_offsets = upper_offsets;
        index.upper = upper.into_iter().map(AtomicU32::new).collect();
        index.locks = (0..n).map(|_| Mutex::new(())).collect();
        index.entry = AtomicU64::new(if n == 0 { u64::MAX } else { (max_level as u64) << 32 | u64::from(entry) });
        Ok(index)
    }
}

enum Parse {
    Corrupt(String),
    Version(u32),
}
