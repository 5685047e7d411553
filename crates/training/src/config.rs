//! `[train]`: how `cascade train` turns the log into training data and which models it fits
//! (typed here; core keeps the raw, layered section and reads its `interactions`, which both
//! halves share, with [`Config::interactions`]).

use cascade_core::config::{Config, ConfigError, Section, default_interactions};
pub use cascade_registry::Promote;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How `cascade train` turns the log into training data and which retrieval models it fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Event types that count as implicit positive interactions, with their weight.
    pub interactions: BTreeMap<String, f32>,
    /// Share of the most recent interactions held out to tune and evaluate models.
    pub validation_fraction: f64,
    /// Retrieval models to fit: any of pop, itemknn, als, bpr, content.
    pub models: Vec<String>,
    /// Also train the cascade's rankers (light ranker, GBDT LambdaMART, calibration) on
    /// candidates from those models.
    pub rankers: bool,
    /// Most users per ranker training period (a seeded sample beyond it).
    pub ranker_users: usize,
    /// How the rankers see per-candidate features: as within-request percentiles, as they are,
    /// or both (twice the columns).
    pub ranker_features: FeatureScale,
    /// Where a bundle that passes the promotion gate goes.
    pub promote: Promote,
    /// How much worse than the champion's offline metric a new bundle may be and still pass.
    pub promotion_tolerance: f64,
    /// How much higher than the champion's the cascade's calibration error (ECE) may be.
    pub promotion_ece_tolerance: f64,
    /// Bundles kept besides those an alias or its history names (0: every bundle).
    pub keep_bundles: usize,
}

/// `[train] ranker_features`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureScale {
    /// Positions among the request's candidates (`_pct`): they do not drift between periods.
    #[default]
    Relative,
    Absolute,
    Both,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            interactions: default_interactions(),
            validation_fraction: 0.1,
            models: ["pop", "itemknn", "als", "bpr", "content"].into_iter().map(String::from).collect(),
            rankers: true,
            ranker_users: 20_000,
            ranker_features: FeatureScale::Relative,
            promote: Promote::Challenger,
            promotion_tolerance: 0.005,
            promotion_ece_tolerance: 0.02,
            keep_bundles: 20,
        }
    }
}

impl Section for TrainConfig {
    const NAME: &'static str = "train";

    fn check(&self, config: &Config) -> Result<(), ConfigError> {
        // The interactions' own rules (declared event types, positive weights) are core's, as
        // serving reads them too.
        config.interactions()?;
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(ConfigError::invalid("train.validation_fraction".into(), "must be in [0, 1)"));
        }
        for (key, v) in [
            ("train.promotion_tolerance", self.promotion_tolerance),
            ("train.promotion_ece_tolerance", self.promotion_ece_tolerance),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(ConfigError::invalid(key.into(), "must be a number ≥ 0"));
            }
        }
        for model in &self.models {
            if !["pop", "itemknn", "als", "bpr", "content"].contains(&model.as_str()) {
                return Err(ConfigError::invalid(
                    "train.models".into(),
                    "known models: pop, itemknn, als, bpr, content",
                ));
            }
        }
        Ok(())
    }
}

impl TrainConfig {
    /// `[train]` of `config`, typed and checked (errors name `train.<key>`).
    pub fn from_config(config: &Config) -> Result<TrainConfig, ConfigError> {
        config.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<TrainConfig, ConfigError> {
        TrainConfig::from_config(&Config::from_toml(text, "f")?)
    }

    #[test]
    fn template_is_the_defaults() {
        assert_eq!(Config::check_template_defaults::<TrainConfig>(), Ok(()));
    }

    #[test]
    fn values_are_checked_and_keys_named() {
        let err = load("[train]\nvalidation_fraction = 1.5\n").unwrap_err().to_string();
        assert!(err.contains("train.validation_fraction"), "{err}");
        let err = load("[train]\nmodels = [\"svd\"]\n").unwrap_err().to_string();
        assert!(err.contains("train.models"), "{err}");
        let err = load("[train]\nranker_feature = \"both\"\n").unwrap_err().to_string();
        assert!(err.contains("ranker_feature") && err.contains("line 2"), "{err}");
        assert_eq!(load("[train]\nranker_features = \"both\"\n").unwrap().ranker_features, FeatureScale::Both);
    }
}
