//! Importers for models trained elsewhere: LightGBM text models and XGBoost JSON models.
//!
//! Both read into a [`Forest`] whose nodes keep the source library's split rule, so an imported
//! model scores exactly as the library does (the fixtures under `fixtures/` check this to 1e-6).
//! What we cannot score exactly (multiclass, random-forest averaging, linear trees, DART weights,
//! `gblinear`) is refused with [`Error::Format`](crate::Error::Format) rather than approximated.

mod lightgbm;
mod xgboost;

use crate::error::{Error, Result};
use crate::tree::Forest;
use std::path::Path;

pub use lightgbm::lightgbm_text;
pub use xgboost::xgboost_json;

/// Reads a LightGBM text model or an XGBoost JSON model, telling them apart by content: LightGBM
/// text starts with `tree`, XGBoost JSON is an object with a `learner`.
pub fn load_file(path: &Path) -> Result<Forest> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let what = path.display().to_string();
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::format(&what, "not a text model (save XGBoost models as JSON, LightGBM models as text)"))?;
    let head = text.trim_start_matches('\u{feff}').trim_start();
    if head.starts_with("tree") {
        return lightgbm_text(text);
    }
    if head.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(head).map_err(|e| Error::format(&what, format!("invalid JSON: {e}")))?;
        if value.get("learner").is_some() {
            return xgboost::from_value(&value);
        }
        return Err(Error::format(&what, "a JSON object without `learner` is not an XGBoost model"));
    }
    Err(Error::format(&what, "neither a LightGBM text model (`tree` first) nor an XGBoost JSON model"))
}
