//! Item attributes as tokens: what the content model is trained on and what serving's
//! affinity features read, computed by one function on both sides.

use std::collections::HashMap;

/// Item attribute tokens by item id, for the content model.
pub type ItemTokens = HashMap<String, Vec<(String, f32)>>;

/// Tokens of an item's attributes for the content model: list attributes give one token per
/// element (`genres:jazz`), text with spaces gives lowercase word tokens (`title:blue`) at half
/// weight, other strings one categorical token (`creator:c7`). Numbers and times are skipped.
pub fn attribute_tokens(attributes: &[(String, cascade_core::Value)]) -> Vec<(String, f32)> {
    let mut out = Vec::new();
    for (name, value) in attributes {
        match value {
            cascade_core::Value::StringList(list) => out.extend(list.iter().map(|v| (format!("{name}:{v}"), 1.0))),
            cascade_core::Value::String(s) if s.contains(' ') => out.extend(
                s.split(|c: char| !c.is_alphanumeric())
                    .filter(|w| w.len() > 2)
                    .map(|w| (format!("{name}:{}", w.to_lowercase()), 0.5)),
            ),
            cascade_core::Value::String(s) => out.push((format!("{name}:{s}"), 1.0)),
            _ => {}
        }
    }
    out
}
