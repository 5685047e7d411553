//! Cascade's rankers.
//!
//! - [`tree`]: the one tree-ensemble representation ([`Forest`]) that our trained models and
//!   imported LightGBM / XGBoost models share.
//! - [`gbdt`]: training forests (LambdaMART over query groups, binary log-loss).
//! - [`import`]: LightGBM text and XGBoost JSON models read into a [`Forest`].
//! - [`shap`]: TreeSHAP explanations of a forest's predictions.
//! - [`linear`]: the light ranker.
//! - [`calibration`]: Platt scaling and isotonic regression.
//! - [`io`]: the rankers' versioned file format ([`Artifact`]).

pub mod calibration;
pub mod error;
pub mod gbdt;
pub mod import;
pub mod io;
pub mod linear;
pub mod shap;
pub mod tree;

pub use error::{Error, Result};
pub use io::Artifact;
pub use tree::{Forest, Missing, Node, Objective, Split, Tree};
