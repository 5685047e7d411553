//! Cascade's retrieval models over the user × item interaction matrix ([`Csr`]: rows are users,
//! columns items, values confidences or weights).
//!
//! | model | what it learns | reference semantics |
//! |---|---|---|
//! | [`Popularity`] | global, time-decayed or per-segment counts | `pop` baseline |
//! | [`ItemKnn`] | top-K cosine neighbours per item | implicit 0.7.3 `CosineRecommender` |
//! | [`Als`] | implicit-feedback matrix factorisation, CG solver | implicit 0.7.3 `AlternatingLeastSquares` |
//! | [`Bpr`] | pairwise-ranking matrix factorisation with item bias | implicit 0.7.3 `BayesianPersonalizedRanking` |
//! | [`ContentBased`] | tf-idf item vectors from attribute tokens | cold start for users and items |
//!
//! Every model implements [`Retriever`] (score all items for a user, then top-k with seen items
//! excluded and ties broken by the smaller item index) and [`Persist`] (one versioned file:
//! JSON header with the parameters, then little-endian binary arrays; layout in [`io`]).
//! [`AnyModel`] loads a file of any kind.
//!
//! ```
//! use cascade_core::Csr;
//! use cascade_models::{Als, AlsParams, Persist, Retriever};
//!
//! // Users 0-1 like items 0-2, users 2-3 like items 3-5.
//! let mut rows = Vec::new();
//! for u in 0..4u32 {
//!     for i in 0..3u32 {
//!         if (u, i) != (0, 2) {
//!             rows.push((u, i + 3 * (u / 2), 1.0));
//!         }
//!     }
//! }
//! let m = Csr::from_triplets(4, 6, rows);
//! let params = AlsParams { factors: 4, regularization: 0.1, iterations: 10, ..AlsParams::default() };
//! let als = Als::fit(&m, &params).unwrap();
//!
//! // User 0 has not seen item 2: it is the best unseen item.
//! let recs = als.recommend(0, m.row(0), 1, true);
//! assert_eq!(recs[0].0, 2);
//! assert_eq!(als.recommend_all(&m, &[0], 1), vec![vec![2]]);
//!
//! // Round trip through the model file format.
//! let mut bytes = Vec::new();
//! als.save(&mut bytes).unwrap();
//! assert_eq!(Als::load(&mut bytes.as_slice()).unwrap(), als);
//! ```

pub mod als;
pub mod bpr;
pub mod content;
pub mod error;
pub mod io;
pub mod itemknn;
pub mod linalg;
pub mod popularity;
mod topk;

use std::io::{Read, Write};

pub use als::{Als, AlsParams};
pub use bpr::{Bpr, BprEpoch, BprParams, NegativeSampling};
pub use cascade_core::Csr;
pub use cascade_core::ErrorKind;
pub use content::{ContentBased, ContentParams, recency_weights};
pub use error::{Error, Result};
pub use io::{FORMAT_VERSION, Persist};
pub use itemknn::{ItemKnn, ItemKnnParams};
pub use popularity::{Popularity, PopularityKind};
use rayon::prelude::*;
use topk::with_scores;
pub use topk::{rank_order, top_k};

/// A model that scores every catalogue item for a user.
///
/// `history` is the user's interactions (item indices and values, e.g. a row of the training
/// [`Csr`]); models that need it (item-kNN, content) score from it, factor models use it only
/// for users they have no vector for.
pub trait Retriever: Send + Sync {
    /// A short stable name (`"als"`, `"itemknn"`, ...).
    fn name(&self) -> &'static str;

    /// Number of items the model scores (the length `out` must have).
    fn n_items(&self) -> usize;

    /// Writes one score per item into `out` (`out.len() == n_items()`), overwriting it.
    fn score_user(&self, user: u32, history: (&[u32], &[f32]), out: &mut [f32]);

    /// Scores of `items` only, into `out` (same length), equal to what [`Retriever::score_user`]
    /// writes for them. Serving scores a few hundred candidates, not the catalogue; models with a
    /// cheap per-item score override this.
    fn score_items(&self, user: u32, history: (&[u32], &[f32]), items: &[u32], out: &mut [f32]) {
        let mut all = vec![0f32; self.n_items()];
        self.score_user(user, history, &mut all);
        for (o, &i) in out.iter_mut().zip(items) {
            *o = all.get(i as usize).copied().unwrap_or(0.0);
        }
    }

    /// The `k` best items for `user`, best first, ties by smaller item index; with
    /// `exclude_seen` the items of `history` are left out.
    fn recommend(&self, user: u32, history: (&[u32], &[f32]), k: usize, exclude_seen: bool) -> Vec<(u32, f32)> {
        with_scores(self.n_items(), |scores| {
            self.score_user(user, history, scores);
            (top_k(scores, k, if exclude_seen { history.0 } else { &[] }), false)
        })
    }

    /// Top-`k` item lists for many users in parallel, each excluding the user's row of
    /// `histories` (users beyond its rows have an empty history).
    fn recommend_all(&self, histories: &Csr, users: &[u32], k: usize) -> Vec<Vec<u32>> {
        users
            .par_iter()
            .map_init(
                || vec![0f32; self.n_items()],
                |scores, &u| {
                    let history =
                        if (u as usize) < histories.rows { histories.row(u as usize) } else { (&[][..], &[][..]) };
                    self.score_user(u, history, scores);
                    top_k(scores, k, history.0).into_iter().map(|e| e.0).collect()
                },
            )
            .collect()
    }
}

/// A model of any kind, e.g. loaded from a bundle without knowing its kind in advance.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyModel {
    Popularity(Popularity),
    ItemKnn(ItemKnn),
    Als(Als),
    Bpr(Bpr),
    Content(ContentBased),
}

impl AnyModel {
    /// Reads a model file of any kind.
    pub fn load(r: &mut dyn Read) -> Result<AnyModel> {
        let d = io::read_model(r, None)?;
        Ok(match d.kind.as_str() {
            Popularity::KIND => AnyModel::Popularity(Popularity::from_decoded(d)?),
            ItemKnn::KIND => AnyModel::ItemKnn(ItemKnn::from_decoded(d)?),
            Als::KIND => AnyModel::Als(Als::from_decoded(d)?),
            Bpr::KIND => AnyModel::Bpr(Bpr::from_decoded(d)?),
            ContentBased::KIND => AnyModel::Content(ContentBased::from_decoded(d)?),
            other => return Err(Error::Format(format!("unknown model kind `{other}`"))),
        })
    }

    /// Reads a model file of any kind from `path`.
    pub fn load_file(path: &std::path::Path) -> Result<AnyModel> {
        let file = std::fs::File::open(path).map_err(Error::io(path))?;
        Self::load(&mut std::io::BufReader::new(file)).map_err(|e| io::with_path(e, path))
    }

    pub fn save(&self, w: &mut dyn Write) -> Result<()> {
        match self {
            AnyModel::Popularity(m) => m.save(w),
            AnyModel::ItemKnn(m) => m.save(w),
            AnyModel::Als(m) => m.save(w),
            AnyModel::Bpr(m) => m.save(w),
            AnyModel::Content(m) => m.save(w),
        }
    }

    pub fn retriever(&self) -> &dyn Retriever {
        match self {
            AnyModel::Popularity(m) => m,
            AnyModel::ItemKnn(m) => m,
            AnyModel::Als(m) => m,
            AnyModel::Bpr(m) => m,
            AnyModel::Content(m) => m,
        }
    }
}
