//! Entity keys, and where their parts come from: an event, a catalogue record, or a request row.

use crate::resolve::FieldRef;
use cascade_core::{Event, Value};
use std::borrow::Cow;
use std::fmt;

/// Separates the parts of a composite key (`["user", "item"]`). A part that contains it, or the
/// escape character, is escaped, so distinct part lists never share a key.
const SEP: char = '\u{1f}';
const ESC: char = '\u{1b}';

/// The key of one entity of a view: one part (`"u42"`) or several joined (`user × item`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey(Box<str>);

impl EntityKey {
    /// A key from its parts, in the order the view declares them.
    pub fn new<S: AsRef<str>>(parts: &[S]) -> EntityKey {
        match parts {
            [one] => EntityKey(one.as_ref().into()),
            many => {
                let mut s = String::new();
                for (i, p) in many.iter().enumerate() {
                    if i > 0 {
                        s.push(SEP);
                    }
                    push_escaped(&mut s, p.as_ref());
                }
                EntityKey(s.into())
            }
        }
    }

    /// The encoded key (single-part keys are the part itself).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_encoded(s: Box<str>) -> EntityKey {
        EntityKey(s)
    }

    /// Heap bytes held by the key.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

fn push_escaped(s: &mut String, part: &str) {
    for c in part.chars() {
        if c == SEP || c == ESC {
            s.push(ESC);
        }
        s.push(c);
    }
}

impl From<&str> for EntityKey {
    fn from(s: &str) -> Self {
        EntityKey(s.into())
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut escaped = false;
        for c in self.0.chars() {
            match (escaped, c) {
                (false, ESC) => escaped = true,
                (false, SEP) => f.write_str(" × ")?,
                _ => {
                    escaped = false;
                    write!(f, "{c}")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityKey({self})")
    }
}

/// The entities and context of a request or a label row: what a view's key and request features
/// are computed from, exactly as they are from an event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entities {
    pub user: Option<String>,
    pub item: Option<String>,
    /// Other key parts (`device`, `card`) and request context, by name.
    pub fields: Vec<(String, Value)>,
}

impl Entities {
    pub fn user(user: impl Into<String>) -> Entities {
        Entities { user: Some(user.into()), ..Entities::default() }
    }

    pub fn with_item(mut self, item: impl Into<String>) -> Entities {
        self.item = Some(item.into());
        self
    }

    pub fn with_field(mut self, name: impl Into<String>, value: Value) -> Entities {
        self.fields.push((name.into(), value));
        self
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// A value a key part or a `distinct_count` / `last_n` entry is made of: strings, ints and bools.
pub(crate) fn value_str(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Int(i) => Some(Cow::Owned(i.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Float(_) | Value::Timestamp(_) | Value::StringList(_) => None,
    }
}

/// Something key parts can be read from.
pub(crate) trait KeySource {
    fn user(&self) -> Option<&str>;
    fn item(&self) -> Option<&str>;
    fn field(&self, name: &str) -> Option<&Value>;

    fn part(&self, part: &FieldRef) -> Option<Cow<'_, str>> {
        match part {
            FieldRef::User => self.user().map(Cow::Borrowed),
            FieldRef::Item => self.item().map(Cow::Borrowed),
            FieldRef::Field(f) => self.field(f).and_then(value_str),
        }
    }

    /// The key these parts make, or the first part that is missing.
    fn key(&self, parts: &[FieldRef]) -> Result<EntityKey, FieldRef> {
        let mut found = Vec::with_capacity(parts.len());
        for p in parts {
            found.push(self.part(p).ok_or_else(|| p.clone())?);
        }
        Ok(EntityKey::new(&found))
    }
}

impl KeySource for Event {
    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    fn item(&self) -> Option<&str> {
        self.item.as_deref()
    }
    fn field(&self, name: &str) -> Option<&Value> {
        Event::field(self, name)
    }
}

impl KeySource for Entities {
    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    fn item(&self) -> Option<&str> {
        self.item.as_deref()
    }
    fn field(&self, name: &str) -> Option<&Value> {
        Entities::field(self, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_never_collide() {
        let a = EntityKey::new(&["a\u{1f}b", "c"]);
        let b = EntityKey::new(&["a", "b\u{1f}c"]);
        let c = EntityKey::new(&["a", "b", "c"]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
        assert_eq!(EntityKey::new(&["u1"]), EntityKey::from("u1"));
        assert_eq!(EntityKey::new(&["u1", "i2"]).to_string(), "u1 × i2");
    }

    #[test]
    fn keys_from_rows() {
        let row = Entities::user("u").with_field("card", Value::Int(7));
        assert_eq!(row.key(&[FieldRef::User, FieldRef::Field("card".into())]), Ok(EntityKey::new(&["u", "7"])));
        assert_eq!(row.key(&[FieldRef::Item]), Err(FieldRef::Item));
    }
}
