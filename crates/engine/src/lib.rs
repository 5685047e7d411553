//! Cascade's pipelines: candidate generation ([`candidates`], [`sources`]), the rankers' training
//! and evaluation ([`ranking`], [`training`]), and the serving cascade over a loaded bundle
//! ([`serving`], with [`live`], [`rules`] and [`explore`]).
//!
//! ```
//! use cascade_engine::candidates::{CandidateSource, Generator, Request, SourceSpec};
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

pub mod bundle;
pub mod candidates;
pub mod explore;
pub mod live;
pub mod ranking;
pub mod rules;
pub mod serving;
pub mod sources;
pub mod training;
