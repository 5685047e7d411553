//! Binary encoding of log records.
//!
//! A small hand-written format rather than a serde format: the bytes on disk are a contract that
//! must not change when a Rust type gains a field, and this keeps that contract in one page.
//! Integers are little-endian; lengths are LEB128 varints; strings are UTF-8.
//!
//! record  := tag:u8 body
//! event   := 1 opt_str(id) str(type) i64(ts) opt_str(user) opt_str(item) fields
//! item    := 2 str(id) fields(attributes) u8(available) opt_i64(created_at) u8(deleted) i64(updated_at)
//! user    := 3 str(id) fields(attributes) i64(updated_at)
//! fields  := varint(n) (str(name) value)*
//! value   := 0 u8 | 1 i64 | 2 f64 | 3 str | 4 i64 | 5 varint(n) str*

use cascade_core::{Event, ItemRecord, Record, Timestamp, UserRecord, Value};

pub fn encode(record: &Record, out: &mut Vec<u8>) {
    match record {
        Record::Event(e) => {
            out.push(1);
            opt_str(out, e.id.as_deref());
            str(out, &e.event_type);
            out.extend_from_slice(&e.ts.0.to_le_bytes());
            opt_str(out, e.user.as_deref());
            opt_str(out, e.item.as_deref());
            fields(out, &e.fields);
        }
        Record::Item(i) => {
            out.push(2);
            str(out, &i.id);
            fields(out, &i.attributes);
            out.push(u8::from(i.available));
            match i.created_at {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    out.extend_from_slice(&t.0.to_le_bytes());
                }
            }
            out.push(u8::from(i.deleted));
            out.extend_from_slice(&i.updated_at.0.to_le_bytes());
        }
        Record::User(u) => {
            out.push(3);
            str(out, &u.id);
            fields(out, &u.attributes);
            out.extend_from_slice(&u.updated_at.0.to_le_bytes());
        }
    }
}

/// Decodes one record occupying all of `buf`.
pub fn decode(buf: &[u8]) -> Result<Record, String> {
    let mut r = Reader { buf, pos: 0 };
    let record = match r.u8()? {
        1 => Record::Event(Event {
            id: r.opt_str()?,
            event_type: r.str()?,
            ts: Timestamp(r.i64()?),
            user: r.opt_str()?,
            item: r.opt_str()?,
            fields: r.fields()?,
        }),
        2 => Record::Item(ItemRecord {
            id: r.str()?,
            attributes: r.fields()?,
            available: r.u8()? != 0,
            created_at: match r.u8()? {
                0 => None,
                _ => Some(Timestamp(r.i64()?)),
            },
            deleted: r.u8()? != 0,
            updated_at: Timestamp(r.i64()?),
        }),
        3 => Record::User(UserRecord { id: r.str()?, attributes: r.fields()?, updated_at: Timestamp(r.i64()?) }),
        tag => return Err(format!("unknown record tag {tag}")),
    };
    if r.pos != buf.len() {
        return Err(format!("{} trailing bytes after record", buf.len() - r.pos));
    }
    Ok(record)
}

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn str(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            str(out, s);
        }
    }
}

fn fields(out: &mut Vec<u8>, fields: &[(String, Value)]) {
    varint(out, fields.len() as u64);
    for (name, value) in fields {
        str(out, name);
        match value {
            Value::Bool(b) => out.extend_from_slice(&[0, u8::from(*b)]),
            Value::Int(i) => {
                out.push(1);
                out.extend_from_slice(&i.to_le_bytes());
            }
            Value::Float(f) => {
                out.push(2);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Value::String(s) => {
                out.push(3);
                str(out, s);
            }
            Value::Timestamp(t) => {
                out.push(4);
                out.extend_from_slice(&t.0.to_le_bytes());
            }
            Value::StringList(l) => {
                out.push(5);
                varint(out, l.len() as u64);
                for s in l {
                    str(out, s);
                }
            }
        }
    }
}

pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("record truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn str(&mut self) -> Result<String, String> {
        let n = self.varint()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8".to_string())
    }

    fn opt_str(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.str().map(Some),
        }
    }

    fn fields(&mut self) -> Result<Vec<(String, Value)>, String> {
        let n = self.varint()? as usize;
        let mut out = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let name = self.str()?;
            let value = match self.u8()? {
                0 => Value::Bool(self.u8()? != 0),
                1 => Value::Int(self.i64()?),
                2 => Value::Float(f64::from_bits(self.i64()? as u64)),
                3 => Value::String(self.str()?),
                4 => Value::Timestamp(Timestamp(self.i64()?)),
                5 => {
                    let m = self.varint()? as usize;
                    let mut l = Vec::with_capacity(m.min(1024));
                    for _ in 0..m {
                        l.push(self.str()?);
                    }
                    Value::StringList(l)
                }
                tag => return Err(format!("unknown value tag {tag}")),
            };
            out.push((name, value));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_filter("NaN != NaN", |f| !f.is_nan()).prop_map(Value::Float),
            ".{0,20}".prop_map(Value::String),
            any::<i64>().prop_map(|t| Value::Timestamp(Timestamp(t))),
            proptest::collection::vec(".{0,8}", 0..5).prop_map(Value::StringList),
        ]
    }

    fn arb_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
        proptest::collection::vec(("[a-z_]{1,10}", arb_value()), 0..6)
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                proptest::option::of(".{1,30}"),
                "[a-z]{1,10}",
                any::<i64>(),
                proptest::option::of(".{1,12}"),
                proptest::option::of(".{1,12}"),
                arb_fields()
            )
                .prop_map(|(id, event_type, ts, user, item, fields)| Record::Event(Event {
                    id,
                    event_type,
                    ts: Timestamp(ts),
                    user,
                    item,
                    fields
                })),
            (".{1,12}", arb_fields(), any::<bool>(), proptest::option::of(any::<i64>()), any::<bool>(), any::<i64>())
                .prop_map(|(id, attributes, available, created, deleted, updated)| Record::Item(ItemRecord {
                    id,
                    attributes,
                    available,
                    created_at: created.map(Timestamp),
                    deleted,
                    updated_at: Timestamp(updated)
                })),
            (".{1,12}", arb_fields(), any::<i64>()).prop_map(|(id, attributes, t)| Record::User(UserRecord {
                id,
                attributes,
                updated_at: Timestamp(t)
            })),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(record in arb_record()) {
            let mut buf = Vec::new();
            encode(&record, &mut buf);
            prop_assert_eq!(decode(&buf), Ok(record));
        }

        #[test]
        fn truncation_is_an_error_not_a_panic(record in arb_record(), cut in 0usize..1000) {
            let mut buf = Vec::new();
            encode(&record, &mut buf);
            let cut = cut % buf.len();
            prop_assert!(decode(&buf[..cut]).is_err());
        }
    }
}
