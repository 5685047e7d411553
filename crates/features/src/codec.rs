//! The checkpoint format: the whole engine state with the log offset it reflects, in one
//! checksummed, format-versioned file.
//!
//! ```text
//! "CASCFEAT" | format version u32 | definitions fingerprint u32 | next log offset u64 | views u32
//! per view:   watermark i64 | late_dropped u64 | missing_key u64 | stale_reads u64 | keys u64
//!   per key (sorted):  key str | newest session | earlier sessions u32 | each earlier session
//!   session:           min_ts i64 | max_ts i64 | per feature: last_ts i64 | accumulator
//! crc32c u32 of everything before it
//! ```
//! Integers are little-endian, floats their IEEE bits (so a recovered state is bit-identical),
//! strings a u32 length and UTF-8 bytes.

use crate::engine::{Admission, ViewState};
use crate::key::EntityKey;
use crate::resolve::ResolvedView;
use crate::state::{Acc, EntityState, FeatState, Session, Tile};
use cascade_core::{Timestamp, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) const MAGIC: &[u8; 8] = b"CASCFEAT";
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) struct Header {
    pub(crate) fingerprint: u32,
    pub(crate) next_offset: u64,
}

pub(crate) fn encode(views: &[ViewState], fingerprint: u32, next_offset: u64) -> Vec<u8> {
    let mut w = Vec::with_capacity(64 + views.iter().map(|v| v.entities.len() * 64).sum::<usize>());
    w.extend_from_slice(MAGIC);
    put_u32(&mut w, FORMAT_VERSION);
    put_u32(&mut w, fingerprint);
    put_u64(&mut w, next_offset);
    put_u32(&mut w, views.len() as u32);
    for vs in views {
        let a = vs.admission;
        put_i64(&mut w, a.watermark);
        put_u64(&mut w, a.late_dropped);
        put_u64(&mut w, a.missing_key);
        put_u64(&mut w, vs.stale_reads.load(Ordering::Relaxed));
        put_u64(&mut w, vs.entities.len() as u64);
        let mut keys: Vec<&EntityKey> = vs.entities.keys().collect();
        keys.sort_unstable();
        for key in keys {
            let s = &vs.entities[key];
            put_str(&mut w, key.as_str());
            put_session(&mut w, &s.newest);
            put_u32(&mut w, s.older.len() as u32);
            for older in &s.older {
                put_session(&mut w, older);
            }
        }
    }
    let crc = crc32c::crc32c(&w);
    put_u32(&mut w, crc);
    w
}

/// Checks magic, checksum and version, and reads the header.
pub(crate) fn header(buf: &[u8]) -> Result<Header, String> {
    if buf.len() < 32 || &buf[..8] != MAGIC {
        return Err("not a feature checkpoint".into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader { buf: body, pos: 8 };
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(format!("checkpoint format version {version}, this build reads {FORMAT_VERSION}"));
    }
    Ok(Header { fingerprint: r.u32()?, next_offset: r.u64()? })
}

/// Decodes the views of a checkpoint whose header checked out.
pub(crate) fn decode(buf: &[u8], defs: &[ResolvedView]) -> Result<Vec<ViewState>, String> {
    let body = &buf[..buf.len() - 4];
    let mut r = Reader { buf: body, pos: 8 + 4 + 4 + 8 };
    let n = r.u32()? as usize;
    if n != defs.len() {
        return Err(format!("{n} views, the definitions have {}", defs.len()));
    }
    let mut views = Vec::with_capacity(n);
    for def in defs {
        let admission = Admission { watermark: r.i64()?, late_dropped: r.u64()?, missing_key: r.u64()? };
        let stale_reads = AtomicU64::new(r.u64()?);
        let keys = r.u64()? as usize;
        let mut entities = HashMap::with_capacity(keys.min(body.len() / 8));
        for _ in 0..keys {
            let key = EntityKey::from_encoded(r.str()?.into());
            let newest = r.session(def)?;
            let n = r.len(16)?;
            let older = (0..n).map(|_| r.session(def)).collect::<Result<_, _>>()?;
            entities.insert(key, EntityState { newest, older });
        }
        views.push(ViewState { admission, stale_reads, entities });
    }
    if r.pos != body.len() {
        return Err("trailing bytes".into());
    }
    Ok(views)
}

/// Format version of one key's state and of the meta record as the Redis backend stores them.
pub(crate) const STATE_VERSION: u8 = 1;

/// One key's state on its own (the Redis backend's value): version byte, newest session,
/// earlier sessions u32, each earlier session. No checksum: Redis is trusted storage.
pub(crate) fn encode_state(s: &EntityState) -> Vec<u8> {
    let mut w = Vec::with_capacity(64);
    w.push(STATE_VERSION);
    put_session(&mut w, &s.newest);
    put_u32(&mut w, s.older.len() as u32);
    for older in &s.older {
        put_session(&mut w, older);
    }
    w
}

pub(crate) fn decode_state(buf: &[u8], def: &ResolvedView) -> Result<EntityState, String> {
    match buf.first() {
        Some(&STATE_VERSION) => {}
        Some(v) => return Err(format!("state format version {v}, this build reads {STATE_VERSION}")),
        None => return Err("empty state".into()),
    }
    let mut r = Reader { buf, pos: 1 };
    let newest = r.session(def)?;
    let n = r.len(16)?;
    let older = (0..n).map(|_| r.session(def)).collect::<Result<_, _>>()?;
    if r.pos != buf.len() {
        return Err("trailing bytes".into());
    }
    Ok(EntityState { newest, older })
}

/// What the Redis backend keeps beside the states: the definitions' fingerprint, the next log
/// offset and every view's admission, written in the same transaction as the states.
pub(crate) fn encode_meta(fingerprint: u32, next_offset: u64, admissions: &[Admission]) -> Vec<u8> {
    let mut w = Vec::with_capacity(17 + admissions.len() * 24);
    w.push(STATE_VERSION);
    put_u32(&mut w, fingerprint);
    put_u64(&mut w, next_offset);
    put_u32(&mut w, admissions.len() as u32);
    for a in admissions {
        put_i64(&mut w, a.watermark);
        put_u64(&mut w, a.late_dropped);
        put_u64(&mut w, a.missing_key);
    }
    w
}

pub(crate) fn decode_meta(buf: &[u8]) -> Result<(u32, u64, Vec<Admission>), String> {
    if buf.first() != Some(&STATE_VERSION) {
        return Err("unknown feature meta format".into());
    }
    let mut r = Reader { buf, pos: 1 };
    let fingerprint = r.u32()?;
    let next_offset = r.u64()?;
    let n = r.len(24)?;
    let admissions = (0..n)
        .map(|_| Ok(Admission { watermark: r.i64()?, late_dropped: r.u64()?, missing_key: r.u64()? }))
        .collect::<Result<_, String>>()?;
    Ok((fingerprint, next_offset, admissions))
}

fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}
fn put_i64(w: &mut Vec<u8>, v: i64) {
    w.extend_from_slice(&v.to_le_bytes());
}
fn put_f64(w: &mut Vec<u8>, v: f64) {
    w.extend_from_slice(&v.to_bits().to_le_bytes());
}
fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u32(w, s.len() as u32);
    w.extend_from_slice(s.as_bytes());
}

fn put_session(w: &mut Vec<u8>, s: &Session) {
    put_i64(w, s.min_ts);
    put_i64(w, s.max_ts);
    for f in s.feats.iter() {
        put_i64(w, f.last_ts);
        put_acc(w, &f.acc);
    }
}

fn put_acc(w: &mut Vec<u8>, acc: &Acc) {
    match acc {
        Acc::None => w.push(0),
        Acc::Scalar { count, sum } => {
            w.push(1);
            put_u64(w, *count);
            put_f64(w, *sum);
        }
        Acc::Extreme(x) => {
            w.push(2);
            w.push(u8::from(x.is_some()));
            put_f64(w, x.unwrap_or(0.0));
        }
        Acc::Tiles(tiles) => {
            w.push(3);
            put_u32(w, tiles.len() as u32);
            for t in tiles {
                put_i64(w, t.idx);
                put_u64(w, t.count);
                put_f64(w, t.val);
            }
        }
        Acc::Distinct(map) => {
            w.push(4);
            put_u32(w, map.len() as u32);
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable();
            for (k, m) in entries {
                put_str(w, k);
                put_i64(w, *m);
            }
        }
        Acc::Last(cur) => {
            w.push(5);
            match cur.as_deref() {
                None => w.push(0),
                Some((ts, seq, v)) => {
                    w.push(1);
                    put_i64(w, *ts);
                    put_u64(w, *seq);
                    put_value(w, v.as_ref());
                }
            }
        }
        Acc::LastN(list) => {
            w.push(6);
            put_u32(w, list.len() as u32);
            for (ts, seq, v) in list {
                put_i64(w, *ts);
                put_u64(w, *seq);
                put_str(w, v);
            }
        }
        Acc::Decayed { s, t_ref } => {
            w.push(7);
            put_f64(w, *s);
            put_i64(w, *t_ref);
        }
    }
}

fn put_value(w: &mut Vec<u8>, v: Option<&Value>) {
    match v {
        None => w.push(0),
        Some(Value::Bool(b)) => {
            w.push(1);
            w.push(u8::from(*b));
        }
        Some(Value::Int(i)) => {
            w.push(2);
            put_i64(w, *i);
        }
        Some(Value::Float(f)) => {
            w.push(3);
            put_f64(w, *f);
        }
        Some(Value::String(s)) => {
            w.push(4);
            put_str(w, s);
        }
        Some(Value::Timestamp(t)) => {
            w.push(5);
            put_i64(w, t.0);
        }
        Some(Value::StringList(l)) => {
            w.push(6);
            put_u32(w, l.len() as u32);
            for s in l {
                put_str(w, s);
            }
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "invalid UTF-8".to_string())
    }
    /// A length that cannot exceed what is left of the buffer (guards allocations).
    fn len(&mut self, min_item: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.buf.len() - self.pos {
            return Err("length beyond the end".into());
        }
        Ok(n)
    }

    fn session(&mut self, def: &ResolvedView) -> Result<Session, String> {
        let mut s = Session::new(def);
        s.min_ts = self.i64()?;
        s.max_ts = self.i64()?;
        for (f, st) in def.features.iter().zip(s.feats.iter_mut()) {
            let last_ts = self.i64()?;
            let acc = self.acc()?;
            if std::mem::discriminant(&acc) != std::mem::discriminant(&st.acc) {
                return Err(format!("state of feature `{}:{}` has the wrong shape", def.name, f.name));
            }
            *st = FeatState { last_ts, acc };
        }
        Ok(s)
    }

    fn acc(&mut self) -> Result<Acc, String> {
        Ok(match self.u8()? {
            0 => Acc::None,
            1 => Acc::Scalar { count: self.u64()?, sum: self.f64()? },
            2 => {
                let some = self.u8()? == 1;
                let x = self.f64()?;
                Acc::Extreme(some.then_some(x))
            }
            3 => {
                let n = self.len(24)?;
                let mut tiles = VecDeque::with_capacity(n);
                for _ in 0..n {
                    tiles.push_back(Tile { idx: self.i64()?, count: self.u64()?, val: self.f64()? });
                }
                Acc::Tiles(tiles)
            }
            4 => {
                let n = self.len(12)?;
                let mut map = HashMap::with_capacity(n);
                for _ in 0..n {
                    let k: Box<str> = self.str()?.into();
                    map.insert(k, self.i64()?);
                }
                Acc::Distinct(map)
            }
            5 => match self.u8()? {
                0 => Acc::Last(None),
                _ => {
                    let (ts, seq) = (self.i64()?, self.u64()?);
                    Acc::Last(Some(Box::new((ts, seq, self.value()?))))
                }
            },
            6 => {
                let n = self.len(20)?;
                let mut list = VecDeque::with_capacity(n);
                for _ in 0..n {
                    let (ts, seq) = (self.i64()?, self.u64()?);
                    list.push_back((ts, seq, self.str()?.into()));
                }
                Acc::LastN(list)
            }
            7 => Acc::Decayed { s: self.f64()?, t_ref: self.i64()? },
            t => return Err(format!("unknown accumulator tag {t}")),
        })
    }

    fn value(&mut self) -> Result<Option<Value>, String> {
        Ok(Some(match self.u8()? {
            0 => return Ok(None),
            1 => Value::Bool(self.u8()? == 1),
            2 => Value::Int(self.i64()?),
            3 => Value::Float(self.f64()?),
            4 => Value::String(self.str()?.to_string()),
            5 => Value::Timestamp(Timestamp(self.i64()?)),
            6 => {
                let n = self.len(4)?;
                Value::StringList((0..n).map(|_| self.str().map(str::to_string)).collect::<Result<_, _>>()?)
            }
            t => return Err(format!("unknown value tag {t}")),
        }))
    }
}
