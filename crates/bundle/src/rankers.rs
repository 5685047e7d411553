//! The trained ranking stages and the parameters serving reuses from training.

use crate::artifacts::{CALIBRATOR, HEAVY_RANKER, LIGHT_RANKER, RANKING};
use crate::candidates::Fill;
use crate::error::{Error, Result};
use cascade_rank::calibration::Calibrator;
use cascade_rank::linear::Linear;
use cascade_rank::{Artifact, Forest};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use std::path::{Path, PathBuf};

/// What serving must do exactly as training did, recorded in `ranking.json` when the rankers are
/// trained and read back with them: serving never takes these from its own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServingParams {
    /// Candidates the light ranker passes to the heavy one.
    pub light_keep: usize,
    /// The user's most recent items the recency similarity (`recent_knn_score`) looks at.
    pub recent: usize,
    /// How the candidate sets the rankers learned from were filled from the sources.
    pub fill: Fill,
}

/// Bundles written before `recent` was recorded were all trained with 10.
const RECENT_BEFORE_RECORDED: usize = 10;

/// The trained ranking stages.
#[derive(Debug, Clone)]
pub struct Rankers {
    pub feature_names: Vec<String>,
    /// Columns of the feature vector the light ranker reads.
    pub light_features: Vec<usize>,
    pub light: Linear,
    pub heavy: Forest,
    pub calibrator: Calibrator,
    pub params: ServingParams,
    /// What training saw and chose, for the bundle manifest.
    pub report: Json,
}

impl Rankers {
    /// Light ranker scores of `rows` (row-major, every feature column).
    pub fn light_scores(&self, rows: &[f64]) -> Vec<f64> {
        let n = self.feature_names.len().max(1);
        let mut cols = Vec::with_capacity(rows.len() / n * self.light_features.len());
        for row in rows.chunks_exact(n) {
            cols.extend(self.light_features.iter().map(|&c| row[c]));
        }
        self.light.score_batch(&cols)
    }

    /// Writes the three models and `ranking.json` (feature list, the light ranker's columns,
    /// the serving parameters, what training saw and chose) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.light.save_file(&dir.join(LIGHT_RANKER))?;
        self.heavy.save_file(&dir.join(HEAVY_RANKER))?;
        self.calibrator.save_file(&dir.join(CALIBRATOR))?;
        let meta = json!({
            "features": self.feature_names,
            "light_features": self.light_features,
            "light_keep": self.params.light_keep,
            "recent": self.params.recent,
            "fill": self.params.fill,
            "report": self.report,
        });
        let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::artifact(RANKING, e))?;
        std::fs::write(dir.join(RANKING), bytes).map_err(|e| Error::artifact(RANKING, e))
    }

    /// Reads what [`Rankers::save`] wrote; `path` maps an artifact name to its file.
    pub fn load(path: impl Fn(&str) -> PathBuf) -> Result<Rankers> {
        #[derive(Deserialize)]
        struct Meta {
            features: Vec<String>,
            light_features: Vec<usize>,
            light_keep: usize,
            #[serde(default = "recent_before_recorded")]
            recent: usize,
            /// Bundles written before it was recorded were trained on in-order sets.
            #[serde(default)]
            fill: Fill,
            report: Json,
        }
        fn recent_before_recorded() -> usize {
            RECENT_BEFORE_RECORDED
        }
        let file = path(RANKING);
        let meta: Meta = serde_json::from_slice(&std::fs::read(&file).map_err(|e| Error::artifact(RANKING, e))?)
            .map_err(|e| Error::artifact(RANKING, e))?;
        let light = Linear::load_file(&path(LIGHT_RANKER))?;
        let heavy = Forest::load_file(&path(HEAVY_RANKER))?;
        let calibrator = Calibrator::load_file(&path(CALIBRATOR))?;
        if heavy.n_features() != meta.features.len()
            || light.n_features() != meta.light_features.len()
            || meta.light_features.iter().any(|&c| c >= meta.features.len())
        {
            return Err(Error::artifact(RANKING, "the models do not match the feature list"));
        }
        Ok(Rankers {
            feature_names: meta.features,
            light_features: meta.light_features,
            light,
            heavy,
            calibrator,
            params: ServingParams { light_keep: meta.light_keep, recent: meta.recent, fill: meta.fill },
            report: meta.report,
        })
    }
}
