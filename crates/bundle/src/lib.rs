//! The train/serve contract of Cascade: everything one side writes and the other reads.
//!
//! Training ([`cascade-training`]) writes a bundle; serving ([`cascade-serving`]) loads it. The two
//! never depend on each other: they meet here, so that what serving computes for a request is what
//! training computed for the same user — by the same code, not by a copy:
//!
//! - [`artifacts`]: the bundle's file names;
//! - [`Generator`] and the model-backed sources: the candidates of a request, with quotas,
//!   the fill, dedupe and the cold-start rule ([`LoadedBundle::generator_with`] builds the one
//!   both sides use);
//! - [`Layout`]: the ranker's feature rows ([`Layout::assemble`]), and the item-attribute
//!   [`attribute_tokens`] the affinity features and the content model read;
//! - [`Rankers`] with [`ServingParams`]: the trained ranking stages and every parameter serving
//!   must reuse, recorded at training time;
//! - [`LoadedBundle`]: a bundle's models, id maps and ANN index, loaded.
//!
//! ```
//! use cascade_bundle::{CandidateSource, Generator, Request, SourceSpec};
//!
//! struct Fixed(&'static str, Vec<(u32, f32)>);
//! impl CandidateSource for Fixed {
//!     fn name(&self) -> &str { self.0 }
//!     fn candidates(&self, req: &Request<'_>, n: usize) -> Vec<(u32, f32)> {
//!         self.1.iter().copied().filter(|(i, _)| !req.excludes(*i)).take(n).collect()
//!     }
//! }
//! let generator = Generator::new(vec![
//!     SourceSpec::warm(Box::new(Fixed("als", vec![(1, 0.9), (2, 0.8)])), 2),
//!     SourceSpec::cold(Box::new(Fixed("pop", vec![(2, 50.0), (3, 40.0)])), 2),
//! ]);
//! let history = [7, 8, 9, 10, 11];
//! let out = generator.generate(&Request::new(Some(0), &history, &[]), 10);
//! assert_eq!(out.iter().map(|c| c.item).collect::<Vec<_>>(), [1, 2]);
//! ```

pub mod artifacts;
mod candidates;
mod error;
mod layout;
mod loaded;
mod rankers;
mod source;
mod sources;
mod tokens;

pub use candidates::{
    Audience, Candidate, CandidateSource, Fill, Generator, Hit, Lists, OVERFETCH, Request, SourceSpec, audience_of,
};
pub use error::{Error, Result};
pub use layout::{
    CandidateInputs, Layout, TokenProfile, affinity, aggregate_value, aggregate_views, is_cheap, percentiles,
    rank_desc, recent_items,
};
pub use loaded::LoadedBundle;
pub use rankers::{Rankers, ServingParams};
pub use source::{SourceKind, default_quotas};
pub use sources::{AnnSource, ListSource, PrecomputedSource, RetrieverSource, decode_list, encode_list};
pub use tokens::{ItemTokens, attribute_tokens};
