//! The impression: one shown item of a served response, as serving logs it and as off-policy
//! evaluation, monitoring and experiment analysis read it back. One type, one field table.

use crate::{Event, Timestamp, Value};

/// The event type impressions are logged as (always declared, see `Config`).
pub const IMPRESSION: &str = "impression";

/// One shown item of a served request.
#[derive(Debug, Clone, PartialEq)]
pub struct Impression {
    pub request_id: String,
    pub user: String,
    pub item: String,
    /// The request's instant (its `context.time`, or when it was served).
    pub ts: Timestamp,
    pub pipeline: String,
    /// 0-based position in the response.
    pub position: usize,
    /// The score shown with the item (a calibrated probability when the rankers served).
    pub score: f64,
    /// The logging policy's probability of showing this item in this request.
    pub propensity: f64,
    pub explored: bool,
    /// Position in the ranked list before exploration; `None` for an item a rule pinned.
    pub greedy_rank: Option<usize>,
    /// The response's length asked for.
    pub k: usize,
    /// Explored slots the pipeline asks for at this k (before the caps of the tail and k).
    pub slots: usize,
    /// The ranked tail exploration draws from.
    pub tail: usize,
    /// What ordered the list: `heavy`, `retrieval`, `popularity` or `static`.
    pub ranked_by: String,
    /// The bundle version that served, when one did.
    pub model_version: Option<u64>,
    /// A digest of the ranker's feature rows, for audits.
    pub feature_digest: Option<String>,
}

/// The impression event's fields and their types (`?` = optional), the schema every project
/// declares for [`IMPRESSION`].
pub const FIELDS: [(&str, &str); 13] = [
    ("request_id", "string"),
    ("position", "int"),
    ("score", "float"),
    ("propensity", "float"),
    ("explored", "bool"),
    ("model_version", "int?"),
    ("pipeline", "string"),
    ("ranked_by", "string"),
    ("greedy_rank", "int?"),
    ("slots", "int"),
    ("tail", "int"),
    ("k", "int"),
    ("feature_digest", "string?"),
];

fn int(n: usize) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Impression {
    /// The impression as the event serving appends to the log (fields sorted by name).
    pub fn to_event(&self) -> Event {
        let mut fields = vec![
            ("explored".to_string(), Value::Bool(self.explored)),
            ("k".to_string(), int(self.k)),
            ("pipeline".to_string(), Value::String(self.pipeline.clone())),
            ("position".to_string(), int(self.position)),
            ("propensity".to_string(), Value::Float(self.propensity)),
            ("ranked_by".to_string(), Value::String(self.ranked_by.clone())),
            ("request_id".to_string(), Value::String(self.request_id.clone())),
            ("score".to_string(), Value::Float(self.score)),
            ("slots".to_string(), int(self.slots)),
            ("tail".to_string(), int(self.tail)),
        ];
        if let Some(r) = self.greedy_rank {
            fields.push(("greedy_rank".to_string(), int(r)));
        }
        if let Some(v) = self.model_version {
            fields.push(("model_version".to_string(), Value::Int(i64::try_from(v).unwrap_or(i64::MAX))));
        }
        if let Some(d) = &self.feature_digest {
            fields.push(("feature_digest".to_string(), Value::String(d.clone())));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Event {
            id: None,
            event_type: IMPRESSION.to_string(),
            ts: self.ts,
            user: Some(self.user.clone()),
            item: Some(self.item.clone()),
            fields,
        }
    }

    /// Reads an impression event; the reason names the first field that is missing or wrong.
    pub fn from_event(e: &Event) -> Result<Impression, ImpressionError> {
        let bad = |field: &str, reason: &str| ImpressionError { field: field.to_string(), reason: reason.to_string() };
        if e.event_type != IMPRESSION {
            return Err(bad("type", "not an impression"));
        }
        let text = |name: &str| match e.field(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(bad(&format!("fields.{name}"), "missing or not a string")),
        };
        let count = |name: &str| match e.field(name) {
            Some(Value::Int(n)) if *n >= 0 => Ok(Some(*n as usize)),
            None => Ok(None),
            _ => Err(bad(&format!("fields.{name}"), "not a non-negative integer")),
        };
        let required = |name: &str| count(name)?.ok_or_else(|| bad(&format!("fields.{name}"), "missing"));
        let number = |name: &str| match e.field(name) {
            Some(Value::Float(p)) => Ok(*p),
            Some(Value::Int(p)) => Ok(*p as f64),
            _ => Err(bad(&format!("fields.{name}"), "missing or not a number")),
        };
        let explored = match e.field("explored") {
            Some(Value::Bool(b)) => *b,
            _ => return Err(bad("fields.explored", "missing or not a bool")),
        };
        let feature_digest = match e.field("feature_digest") {
            Some(Value::String(s)) => Some(s.clone()),
            None => None,
            Some(_) => return Err(bad("fields.feature_digest", "not a string")),
        };
        Ok(Impression {
            request_id: text("request_id")?,
            user: e.user.clone().ok_or_else(|| bad("user", "missing"))?,
            item: e.item.clone().ok_or_else(|| bad("item", "missing"))?,
            ts: e.ts,
            pipeline: text("pipeline")?,
            position: count("position")?.unwrap_or(0),
            score: number("score").unwrap_or(0.0),
            propensity: number("propensity")?,
            explored,
            greedy_rank: count("greedy_rank")?,
            k: required("k")?,
            slots: required("slots")?,
            tail: required("tail")?,
            ranked_by: text("ranked_by").unwrap_or_default(),
            model_version: count("model_version")?.map(|v| v as u64),
            feature_digest,
        })
    }
}

/// Why an event is not a readable impression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ImpressionError {
    pub field: String,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(greedy_rank: Option<usize>, model_version: Option<u64>, digest: Option<&str>) -> Impression {
        Impression {
            request_id: "19a-7".into(),
            user: "u1".into(),
            item: "i9".into(),
            ts: Timestamp(1_700_000_000_123),
            pipeline: "default".into(),
            position: 3,
            score: 0.25,
            propensity: 0.5,
            explored: true,
            greedy_rank,
            k: 10,
            slots: 1,
            tail: 20,
            ranked_by: "heavy".into(),
            model_version,
            feature_digest: digest.map(String::from),
        }
    }

    #[test]
    fn an_impression_survives_its_event_form() {
        for imp in [sample(Some(7), Some(4), Some("ab12")), sample(None, None, None)] {
            let event = imp.to_event();
            assert_eq!(event.event_type, IMPRESSION);
            assert!(event.fields.windows(2).all(|w| w[0].0 < w[1].0), "fields sorted by name");
            assert_eq!(Impression::from_event(&event).unwrap(), imp);
        }
    }

    #[test]
    fn every_field_written_is_declared() {
        let event = sample(Some(1), Some(2), Some("d")).to_event();
        for (name, _) in &event.fields {
            assert!(FIELDS.iter().any(|(f, _)| f == name), "{name} is not in FIELDS");
        }
        assert_eq!(event.fields.len(), FIELDS.len());
    }

    #[test]
    fn a_broken_impression_names_its_field() {
        let mut event = sample(None, None, None).to_event();
        event.fields.retain(|(n, _)| n != "propensity");
        assert_eq!(Impression::from_event(&event).unwrap_err().field, "fields.propensity");
        let mut event = sample(None, None, None).to_event();
        event.event_type = "click".into();
        assert_eq!(Impression::from_event(&event).unwrap_err().field, "type");
    }
}
