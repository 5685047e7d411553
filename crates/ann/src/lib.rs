//! Approximate nearest-neighbour search for Cascade: our own HNSW (hierarchical navigable small
//! world graph, Malkov & Yashunin) for candidate generation over item embeddings.
//!
//! - Metrics: inner product (MIPS), cosine (vectors and queries normalised) and L2; every score
//!   is "higher is better" (L2 scores are negated squared distances).
//! - [`Hnsw::build`] inserts in parallel on the rayon pool; [`Hnsw::insert`] /
//!   [`Hnsw::insert_many`] add items later without a rebuild. Inserting takes `&mut self`;
//!   [`Hnsw::search`] takes `&self` and is safe from many threads at once, so a service that
//!   inserts while serving puts the index behind a `RwLock` (or builds a new one and swaps it).
//! - [`Hnsw::search`] takes `ef` per query and a [`Filter`] (excluded ids as an [`IdSet`] and an
//!   arbitrary predicate such as an attribute test). Filtering happens inside the graph walk:
//!   nodes that do not pass are still walked through but never returned, and the walk goes on
//!   until `ef` passing nodes are found, so `k` results come back whenever `k` ids pass (not "the
//!   top-k minus the filtered ones"); if the graph cannot reach `k` of them an exact scan fills in.
//! - [`brute_force`] / [`Hnsw::brute_force`]: exact search with the same scores, for tests and
//!   as the reference.
//! - [`Hnsw::save`] / [`Hnsw::load`]: a versioned, checksummed file whose sections are 64-byte
//!   aligned little-endian arrays (memory-mappable; `load` reads it into memory and checks it).
//!
//! Layout: vectors in one contiguous array of 64-byte aligned rows (zero padded to whole
//! 16-float blocks); layer-0 neighbour lists in one flat array of fixed `1 + 2M` slots; upper
//! layers in a second flat array. A search allocates nothing but its answer: the visited set
//! (generation-counted marks), heaps and buffers come from a per-index pool.
//!
//! Algorithm: the paper's algorithms 1, 2 and 4 (neighbour-selection heuristic) with
//! `M_max0 = 2M`. Two departures: a new node links to up to `3M/2` neighbours on layer 0
//! (the paper and hnswlib: `M`), which buys recall per `ef`; and the whole candidate list of a
//! layer, not just its best node, seeds the insertion search one layer down.
//!
//! Speed: distance kernels use AVX-512 or AVX2+FMA when the CPU has them ([`isa`]); the search
//! and insertion loops are compiled once per instruction set and chosen at run time, and the
//! rows of a node's fresh neighbours are prefetched before their distances are computed.
//! `benches/ann_vs_hnswlib.rs` compares build time, recall@10 and QPS with hnswlib on the
//! benchmark vector sets of `shared/bench` in one run:
//! `cargo bench -p cascade-ann --bench ann_vs_hnswlib` (see that file for options).
//!
//! ```
//! use cascade_ann::{Filter, Hnsw, IdSet, Metric, Params};
//! // 200 points on a circle; ids are row numbers.
//! let vectors: Vec<f32> = (0..200).flat_map(|i| {
//!     let a = i as f32 * std::f32::consts::TAU / 200.0;
//!     [a.cos(), a.sin()]
//! }).collect();
//! let mut index = Hnsw::build(&vectors, 2, &Params::new(Metric::Cosine)).unwrap();
//! let hits = index.search(&[1.0, 0.0], 3, 32, &Filter::new());
//! assert_eq!(hits[0].0, 0);
//!
//! // Never return items 0 and 1, and only even ids.
//! let seen: IdSet = [0, 1].into_iter().collect();
//! let even = |id: u32| id % 2 == 0;
//! let hits = index.search(&[1.0, 0.01], 3, 32, &Filter::new().exclude(&seen).predicate(&even));
//! assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [2, 198, 4]);
//!
//! // Add an item later, then save and load.
//! index.insert(1000, &[1.0, 0.001]).unwrap();
//! assert_eq!(index.search(&[1.0, 0.001], 1, 32, &Filter::new())[0].0, 1000);
//! let path = std::env::temp_dir().join(format!("cascade-ann-doc-{}.hnsw", std::process::id()));
//! index.save(&path).unwrap();
//! let loaded = Hnsw::load(&path).unwrap();
//! assert_eq!(loaded.search(&[0.0, 1.0], 5, 32, &Filter::new()), index.search(&[0.0, 1.0], 5, 32, &Filter::new()));
//! # std::fs::remove_file(&path).unwrap();
//! ```

mod distance;
mod error;
mod filter;
mod index;
mod io;
mod scratch;
mod simd;

pub use cascade_core::ErrorKind;
pub use error::{Error, Result};
pub use filter::{Filter, IdSet};
pub use index::{Hnsw, Metric, Params, brute_force};
pub use io::FORMAT_VERSION;
pub use simd::{Isa, isa};
