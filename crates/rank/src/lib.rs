//! Cascade's rankers.
//!
//! - [`tree`]: the one tree-ensemble representation ([`Forest`]) that our trained models and
//!   imported LightGBM / XGBoost models share.
//! - [`io`]: the rankers' versioned file format ([`Artifact`]).

pub mod error;
pub mod io;
pub mod tree;

pub use error::{Error, Result};
pub use io::Artifact;
pub use tree::{Forest, Missing, Node, Objective, Split, Tree};
