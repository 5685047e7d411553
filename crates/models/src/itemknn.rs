//! Item-based k-nearest-neighbours with cosine similarity, the semantics of implicit 0.7.3's
//! `CosineRecommender`.
//!
//! - Every item column of the user × item matrix is scaled to unit L2 norm (with the stored
//!   values, so a binary matrix gives binary cosine).
//! - Row `i` of the similarity matrix keeps the `k` largest `cos(i, j)` over items `j` that share
//!   a user with `i`, **including `i` itself** (similarity 1), as implicit's `all_pairs_knn` does.
//!   Equal similarities are kept by smaller item index (implicit's heap keeps an arbitrary one of
//!   a tie, so on exact ties the kept lists can differ).
//! - A user's score for item `j` is `Σ_i value(u, i) · S[i, j]` over the user's history items
//!   `i`, i.e. the similarities of `j` as a neighbour of the user's items.

use std::io::{Read, Write};

use cascade_core::Csr;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Retriever;
use crate::error::{Error, Result};
use crate::io::{ArrayRef, Decoded, Persist, read_model, write_model};
use crate::topk::{rank_order, take_top_k, with_scores};

/// Hyper-parameters of [`ItemKnn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemKnnParams {
    /// Neighbours kept per item (the item itself is one of them).
    pub k: usize,
}

impl Default for ItemKnnParams {
    /// implicit's default `K = 20`.
    fn default() -> Self {
        ItemKnnParams { k: 20 }
    }
}

/// A fitted item-kNN model: a sparse item × item similarity matrix, each row best first.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemKnn {
    params: ItemKnnParams,
    n_items: usize,
    indptr: Vec<usize>,
    neighbours: Vec<u32>,
    sims: Vec<f32>,
}

impl ItemKnn {
    /// Computes the top-`k` cosine neighbours of every item of `m` (user × item), in parallel.
    pub fn fit(m: &Csr, params: &ItemKnnParams) -> Result<ItemKnn> {
        if params.k == 0 {
            return Err(Error::InvalidParams("k must be at least 1".into()));
        }
        let n_items = m.cols;
        let mut sq = vec![0f64; n_items];
        for (&c, &v) in m.indices.iter().zip(&m.values) {
            sq[c as usize] += f64::from(v) * f64::from(v);
        }
        let inv: Vec<f32> = sq.iter().map(|&s| if s > 0.0 { (1.0 / s.sqrt()) as f32 } else { 0.0 }).collect();
        let mut normed = m.clone();
        for (v, &c) in normed.values.iter_mut().zip(&m.indices) {
            *v *= inv[c as usize];
        }
        let by_item = normed.transpose();
        let k = params.k;
        let rows: Vec<Vec<(u32, f32)>> = (0..n_items)
            .into_par_iter()
            .with_min_len(16)
            .map_init(
                || (vec![0f32; n_items], vec![false; n_items], Vec::<u32>::new()),
                |(acc, hit, touched), i| {
                    let (users, w_users) = by_item.row(i);
                    for (&u, &w1) in users.iter().zip(w_users) {
                        let (items, w_items) = normed.row(u as usize);
                        for (&j, &w2) in items.iter().zip(w_items) {
                            let j = j as usize;
                            if !hit[j] {
                                hit[j] = true;
                                touched.push(j as u32);
                            }
                            acc[j] += w2 * w1;
                        }
                    }
                    let mut row: Vec<(u32, f32)> = touched.iter().map(|&j| (j, acc[j as usize])).collect();
                    for &j in touched.iter() {
                        acc[j as usize] = 0.0;
                        hit[j as usize] = false;
                    }
                    touched.clear();
                    if row.len() > k {
                        row.select_nth_unstable_by(k - 1, rank_order);
                        row.truncate(k);
                    }
                    row.sort_unstable_by(rank_order);
                    row
                },
            )
            .collect();
        let mut indptr = Vec::with_capacity(n_items + 1);
        indptr.push(0);
        let total = rows.iter().map(Vec::len).sum();
        let mut neighbours = Vec::with_capacity(total);
        let mut sims = Vec::with_capacity(total);
        for row in rows {
            for (j, s) in row {
                neighbours.push(j);
                sims.push(s);
            }
            indptr.push(neighbours.len());
        }
        Ok(ItemKnn { params: params.clone(), n_items, indptr, neighbours, sims })
    }

    pub fn params(&self) -> &ItemKnnParams {
        &self.params
    }

    /// The kept neighbours of `item` and their similarities, best first (the item itself
    /// included when it has any interaction).
    pub fn neighbours(&self, item: u32) -> (&[u32], &[f32]) {
        let i = item as usize;
        if i >= self.n_items {
            return (&[], &[]);
        }
        let span = self.indptr[i]..self.indptr[i + 1];
        (&self.neighbours[span.clone()], &self.sims[span])
    }

    /// The similarity matrix as a CSR (`n_items × n_items`, column indices sorted per row).
    pub fn similarity_matrix(&self) -> Csr {
        let mut trip = Vec::with_capacity(self.neighbours.len());
        for i in 0..self.n_items {
            let (n, s) = self.neighbours(i as u32);
            trip.extend(n.iter().zip(s).map(|(&j, &v)| (i as u32, j, v)));
        }
        Csr::from_triplets(self.n_items, self.n_items, trip)
    }

    pub(crate) fn from_decoded(mut d: Decoded) -> Result<ItemKnn> {
        #[derive(Deserialize)]
        struct Meta {
            n_items: usize,
            nnz: usize,
        }
        let params: ItemKnnParams = d.params()?;
        let m: Meta = d.meta()?;
        let indptr = d.indptr("indptr", m.n_items + 1, m.nnz)?;
        let neighbours = d.u32("neighbours", m.nnz)?;
        let sims = d.f32("similarities", m.nnz)?;
        if neighbours.iter().any(|&j| j as usize >= m.n_items) {
            return Err(Error::Format("neighbour outside the catalogue".into()));
        }
        Ok(ItemKnn { params, n_items: m.n_items, indptr, neighbours, sims })
    }
}

impl Retriever for ItemKnn {
    fn name(&self) -> &'static str {
        "itemknn"
    }

    fn n_items(&self) -> usize {
        self.n_items
    }

    fn score_user(&self, _user: u32, history: (&[u32], &[f32]), out: &mut [f32]) {
        out.fill(0.0);
        for (&i, &w) in history.0.iter().zip(history.1) {
            let (n, s) = self.neighbours(i);
            for (&j, &v) in n.iter().zip(s) {
                out[j as usize] += v * w;
            }
        }
    }

    /// Sums in the same order as `score_user` into the thread's zeroed buffer, then selects among
    /// the items the history's neighbours reached (the rest score 0): what `score_user` and
    /// `top_k` give, without a pass over the catalogue.
    fn recommend(&self, _user: u32, history: (&[u32], &[f32]), k: usize, exclude_seen: bool) -> Vec<(u32, f32)> {
        with_scores(self.n_items, |scores| {
            let mut touched: Vec<u32> = Vec::new();
            for (&i, &w) in history.0.iter().zip(history.1) {
                let (n, s) = self.neighbours(i);
                touched.extend_from_slice(n);
                for (&j, &v) in n.iter().zip(s) {
                    scores[j as usize] += v * w;
                }
            }
            (take_top_k(scores, &touched, k, if exclude_seen { history.0 } else { &[] }), true)
        })
    }

    /// Sums in the same order as `score_user` (history order), so the values are identical.
    fn score_items(&self, _user: u32, history: (&[u32], &[f32]), items: &[u32], out: &mut [f32]) {
        out.fill(0.0);
        let position: std::collections::HashMap<u32, usize> = items.iter().enumerate().map(|(p, &i)| (i, p)).collect();
        for (&i, &w) in history.0.iter().zip(history.1) {
            let (n, s) = self.neighbours(i);
            for (j, &v) in n.iter().zip(s) {
                if let Some(&p) = position.get(j) {
                    out[p] += v * w;
                }
            }
        }
    }
}

impl Persist for ItemKnn {
    const KIND: &'static str = "itemknn";

    fn save(&self, w: &mut dyn Write) -> Result<()> {
        let params = serde_json::to_value(&self.params).map_err(|e| Error::Format(e.to_string()))?;
        let meta = serde_json::json!({ "n_items": self.n_items, "nnz": self.neighbours.len() });
        let indptr: Vec<u64> = self.indptr.iter().map(|&x| x as u64).collect();
        write_model(
            w,
            Self::KIND,
            params,
            meta,
            &[
                ("indptr", ArrayRef::U64(&indptr)),
                ("neighbours", ArrayRef::U32(&self.neighbours)),
                ("similarities", ArrayRef::F32(&self.sims)),
            ],
        )
    }

    fn load(r: &mut dyn Read) -> Result<Self> {
        Self::from_decoded(read_model(r, Some(Self::KIND))?)
    }
}
