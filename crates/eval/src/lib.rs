//! Offline evaluation for Cascade's recommenders, implementing the exact benchmark protocol of
//! `shared/bench/PROTOCOL.md` (§1 split, §2 top-K metrics) so that Rust models can be compared
//! number for number with the Python reference baselines in `shared/bench/RESULTS.md`.
//!
//! - [`protocol`]: the global temporal [`Split`] (loaded from the committed split files, cut from
//!   an event log with [`Split::temporal`], or its [`Split::validation`] slice), seen-item
//!   exclusion ([`top_k_excluding_seen`], [`recommend_all`]) and [`evaluate`] → [`Report`].
//! - [`metrics`]: the metric definitions themselves (NDCG, recall, HR, MRR, MAP, coverage,
//!   novelty, ROC-AUC, PR-AUC as average precision, ECE).
//! - [`offpolicy`]: the IPS and SNIPS estimators over logged slates, and the exact inclusion
//!   probabilities of slot exploration ([`offpolicy::epsilon_greedy_inclusion`]), which serving
//!   logs and target policies are scored with.
//! - [`policy`]: off-policy evaluation of a serving policy on the impressions and outcome events
//!   of the log (attribution of outcomes, target policies, the estimates).
//! - [`stats`]: two arms' rates compared (the two-proportion z-test and its interval).
//!
//! A most-popular baseline, end to end:
//!
//! ```
//! use cascade_eval::{Row, Split, evaluate, recommend_all};
//!
//! let row = |user: &str, item: &str, ts| Row { user: user.into(), item: item.into(), rating: 5.0, ts };
//! let rows = vec![
//!     row("1", "a", 1), row("2", "a", 2), row("2", "b", 3), row("3", "c", 4),
//!     row("1", "b", 9), row("3", "a", 10),
//! ];
//! // The last floor(0.3 · 6 + 0.5) = 2 rows (by time) are test.
//! let split = Split::temporal(rows, 0.3)?;
//! assert_eq!(split.eval_users().len(), 2);
//!
//! // Score every item by its number of train users; seen items are excluded, ties go to the
//! // smaller item id.
//! let pop: Vec<f32> = split.item_users().iter().map(|&n| n as f32).collect();
//! let recs = recommend_all(&split, 10, |_user, scores| scores.copy_from_slice(&pop));
//! let report = evaluate(&split, 10, &recs)?;
//! // User 1 (has a) gets [b, c] and hits b; user 3 (has c) gets [a, b] and hits a: all rank 1.
//! assert_eq!((report.hr, report.mrr, report.ndcg), (1.0, 1.0, 1.0));
//! # Ok::<(), cascade_eval::Error>(())
//! ```

pub mod error;
pub mod metrics;
pub mod offpolicy;
pub mod policy;
pub mod protocol;
pub mod stats;

pub use cascade_core::ErrorKind;
pub use error::{Error, Result};
pub use protocol::{
    Report, Row, Split, SplitStats, TEST_FRACTION, compare_ids, evaluate, read_tsv, recommend_all, top_k_excluding_seen,
};
