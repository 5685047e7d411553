//! Request bodies: the media type a route accepts, and JSON that refuses what
//! serde_json would silently accept (duplicate keys).
//!
//! Every JSON route requires `Content-Type: application/json`: a page on another site can make a
//! browser send `text/plain` (or a typeless blob) without asking first, but never
//! `application/json`, so refusing the rest keeps cross-site forms out of every write.

use crate::error::ApiError;
use axum::http::{HeaderMap, header};
use cascade_api::ErrorCode;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// What a route's body may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Json,
    NdJson,
}

/// The body's media type among those a route accepts: `application/json` (or a `+json` type),
/// and for `ndjson` routes `application/x-ndjson` and its aliases. Anything else, or none, is 415.
pub fn media(headers: &HeaderMap, ndjson: bool) -> Result<Media, ApiError> {
    let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json = mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    match mime.as_str() {
        _ if json => Ok(Media::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" if ndjson => Ok(Media::NdJson),
        _ => {
            let accepted = if ndjson { "application/json or application/x-ndjson" } else { "application/json" };
            let sent = if mime.is_empty() { "no content type".to_string() } else { format!("content type `{mime}`") };
            Err(ApiError::new(ErrorCode::UnsupportedMediaType, format!("{sent}: send {accepted}")))
        }
    }
}

/// A JSON request body of type `T`: `application/json`, no duplicate keys at any depth. `what`
/// names the request in the error ("a recommendation request"). The guard has read the body
/// within its size and time limits.
pub fn json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8], what: &str) -> Result<T, ApiError> {
    media(headers, false)?;
    let value = value(body).map_err(|e| malformed(what, &e))?;
    serde_json::from_value(value).map_err(|e| malformed(what, &e))
}

fn malformed(what: &str, e: &serde_json::Error) -> ApiError {
    ApiError::new(ErrorCode::MalformedJson, format!("body is not {what}: {e}"))
}

/// Parses one JSON document, refusing a key that appears twice in one object (serde_json keeps
/// the last one: `{"type":"purchase","type":"click"}` would quietly be a click).
pub fn value(text: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A `serde_json::Value` seed that refuses duplicate object keys.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = serde_json::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Strict.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(serde_json::Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(Strict)?;
            out.insert(key, v);
        }
        Ok(serde_json::Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};
    use proptest::prelude::*;

    fn with_type(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(t).unwrap());
        h
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = value(br#"{"type":"purchase","type":"click"}"#).unwrap_err().to_string();
        assert!(e.contains("duplicate key `type`"), "{e}");
        let e = value(br#"[{"a":{"b":1,"b":2}}]"#).unwrap_err().to_string();
        assert!(e.contains("duplicate key `b`"), "{e}");
        assert_eq!(value(br#"{"a":{"b":1},"b":{"a":2}}"#).unwrap(), serde_json::json!({"a":{"b":1},"b":{"a":2}}));
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(value(b"{} x").is_err());
        assert!(value(b"{}  \n").is_ok());
    }

    #[test]
    fn only_json_media_types_pass() {
        assert_eq!(media(&with_type("application/json; charset=utf-8"), false).unwrap(), Media::Json);
        assert_eq!(media(&with_type("Application/JSON"), false).unwrap(), Media::Json);
        assert_eq!(media(&with_type("application/merge-patch+json"), false).unwrap(), Media::Json);
        assert_eq!(media(&with_type("application/x-ndjson"), true).unwrap(), Media::NdJson);
        for refused in
            ["text/plain", "application/x-ndjson", "multipart/form-data", "application/x-www-form-urlencoded"]
        {
            let e = media(&with_type(refused), false).unwrap_err();
            assert_eq!(e.code, ErrorCode::UnsupportedMediaType, "{refused}");
        }
        let e = media(&HeaderMap::new(), true).unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(e.message.contains("no content type"), "{}", e.message);
    }

    proptest! {
        /// Whatever serde_json parses without duplicate keys, the strict parser parses the same.
        #[test]
        fn agrees_with_serde_json_without_duplicates(v in arb_json()) {
            let text = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(value(&text).unwrap(), v);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(Into::into),
            any::<i64>().prop_map(Into::into),
            any::<u64>().prop_map(Into::into),
            (-1e12f64..1e12).prop_map(Into::into),
            ".{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
