//! The names of a bundle's files: written by training, read by serving.

/// Dense user index → user id, as a JSON array (the rows of every collaborative model).
pub const USERS: &str = "users.json";
/// Dense item index → item id, as a JSON array (the columns of every model).
pub const ITEMS: &str = "items.json";
/// The ANN index over the ALS item factors.
pub const ALS_INDEX: &str = "als.hnsw";
/// The light ranker (logistic regression).
pub const LIGHT_RANKER: &str = "light.rank";
/// The heavy ranker (GBDT).
pub const HEAVY_RANKER: &str = "heavy.rank";
/// The calibration of the heavy ranker's scores into probabilities.
pub const CALIBRATOR: &str = "calibrator.rank";
/// The rankers' feature list, the light ranker's columns and every parameter serving reuses.
pub const RANKING: &str = "ranking.json";
/// Every artifact of the rankers.
pub const RANKERS: [&str; 4] = [LIGHT_RANKER, HEAVY_RANKER, CALIBRATOR, RANKING];

/// The artifact of a retrieval model named `name` (`als.model`, `pop.model`, ...).
pub fn model(name: &str) -> String {
    format!("{name}{MODEL_SUFFIX}")
}

/// What every retrieval model's artifact name ends with.
pub const MODEL_SUFFIX: &str = ".model";
