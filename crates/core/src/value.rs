//! Typed field values and the types a schema declares.

use crate::error::ErrorKind;
use crate::time::Timestamp;
use std::fmt;
use std::str::FromStr;

/// The type of an event field or catalogue attribute, as written in `cascade.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    Bool,
    Int,
    Float,
    String,
    Timestamp,
    /// A list of strings (genres, tags).
    StringList,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::String => "string",
            FieldType::Timestamp => "timestamp",
            FieldType::StringList => "string_list",
        }
    }
}

impl FromStr for FieldType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "bool" => FieldType::Bool,
            "int" => FieldType::Int,
            "float" => FieldType::Float,
            "string" => FieldType::String,
            "timestamp" => FieldType::Timestamp,
            "string_list" => FieldType::StringList,
            other => {
                return Err(format!(
                    "unknown type `{other}` (expected bool, int, float, string, timestamp or string_list, with a trailing ? when optional)"
                ));
            }
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a JSON or configuration literal is not a value of the declared type. The message is the
/// reason only (no field name): callers know which field they converted and prefix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ValueError {
    pub reason: String,
}

impl ValueError {
    pub fn new(reason: impl Into<String>) -> Self {
        ValueError { reason: reason.into() }
    }

    /// Always [`ErrorKind::Invalid`]: the value came from the caller.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
}

/// A validated value of a declared [`FieldType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Timestamp(Timestamp),
    StringList(Vec<String>),
}

impl Value {
    pub fn field_type(&self) -> FieldType {
        match self {
            Value::Bool(_) => FieldType::Bool,
            Value::Int(_) => FieldType::Int,
            Value::Float(_) => FieldType::Float,
            Value::String(_) => FieldType::String,
            Value::Timestamp(_) => FieldType::Timestamp,
            Value::StringList(_) => FieldType::StringList,
        }
    }

    /// Converts a JSON value to the declared type, or says why it cannot.
    /// Integers are accepted where a float is declared and integral numbers (`4.0`) where an int
    /// is ([`json_integer`]); nothing else is coerced.
    pub fn from_json(ty: FieldType, v: &serde_json::Value) -> Result<Value, ValueError> {
        use serde_json::Value as J;
        let mismatch = || ValueError::new(format!("expected {ty}, got {}", json_kind(v)));
        Ok(match (ty, v) {
            (FieldType::Bool, J::Bool(b)) => Value::Bool(*b),
            (FieldType::Int, J::Number(n)) => Value::Int(json_integer(n).ok_or_else(mismatch)?),
            (FieldType::Float, J::Number(n)) => Value::Float(n.as_f64().ok_or_else(mismatch)?),
            (FieldType::String, J::String(s)) => Value::String(s.clone()),
            (FieldType::Timestamp, v @ (J::String(_) | J::Number(_))) => Value::Timestamp(timestamp_from_json(v)?),
            (FieldType::StringList, J::Array(items)) => Value::StringList(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        J::String(s) => Ok(s.clone()),
                        other => {
                            Err(ValueError::new(format!("element {i}: expected string, got {}", json_kind(other))))
                        }
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(mismatch()),
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.clone()),
            Value::Timestamp(t) => J::String(t.to_string()),
            Value::StringList(l) => J::Array(l.iter().cloned().map(J::String).collect()),
        }
    }
}

/// A timestamp in JSON: an RFC 3339 string or integer milliseconds since the epoch.
pub fn timestamp_from_json(v: &serde_json::Value) -> Result<Timestamp, ValueError> {
    let reason = match v {
        serde_json::Value::String(s) => match Timestamp::parse_rfc3339(s) {
            Ok(t) => return Ok(t),
            Err(e) => format!("bad timestamp `{s}`: {e}"),
        },
        serde_json::Value::Number(n) => match json_integer(n) {
            Some(ms) if (0..=crate::time::MAX_MILLIS).contains(&ms) => return Ok(Timestamp(ms)),
            _ => format!("bad timestamp {n}: integer milliseconds since 1970 expected, between 0 and year 9999"),
        },
        other => {
            format!("bad timestamp: expected an RFC 3339 string or integer milliseconds, got {}", json_kind(other))
        }
    };
    Err(ValueError::new(reason))
}

/// A JSON number as an integer: an integer literal, or a number with no fractional part (`5.0`),
/// which JSON Schema and JavaScript clients treat as the same integer. `None` beyond `i64`.
pub fn json_integer(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // `i64::MAX as f64` rounds up to 2^63, which does not fit; the bound is exclusive.
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        serde_json::Value::Number(_) => "float",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_numbers_are_integers_and_fractions_are_not() {
        let int = |v: serde_json::Value| json_integer(v.as_number().unwrap());
        assert_eq!(int(json!(5)), Some(5));
        assert_eq!(int(json!(5.0)), Some(5));
        assert_eq!(int(json!(-3.0)), Some(-3));
        assert_eq!(int(json!(5.5)), None);
        assert_eq!(int(json!(1e300)), None);
        assert_eq!(int(json!(u64::MAX)), None);
        assert_eq!(Value::from_json(FieldType::Int, &json!(4.0)), Ok(Value::Int(4)));
        assert_eq!(timestamp_from_json(&json!(1000.0)).unwrap(), Timestamp(1000));
        assert!(timestamp_from_json(&json!(1000.5)).is_err());
    }

    #[test]
    fn converts_and_refuses() {
        assert_eq!(Value::from_json(FieldType::Float, &json!(4)), Ok(Value::Float(4.0)));
        assert_eq!(Value::from_json(FieldType::Int, &json!(4.5)), Err(ValueError::new("expected int, got float")));
        assert_eq!(
            Value::from_json(FieldType::String, &json!(3)),
            Err(ValueError::new("expected string, got integer"))
        );
        assert_eq!(
            Value::from_json(FieldType::StringList, &json!(["a", 1])),
            Err(ValueError::new("element 1: expected string, got integer"))
        );
        assert_eq!(
            Value::from_json(FieldType::Timestamp, &json!("1970-01-01T00:00:01Z")),
            Ok(Value::Timestamp(Timestamp(1000)))
        );
        let err = Value::from_json(FieldType::Timestamp, &json!(-5)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(err.to_string().starts_with("bad timestamp -5:"), "{err}");
    }
}
