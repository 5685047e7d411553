//! Bayesian personalised ranking (Rendle et al. 2009) trained by SGD, following implicit 0.7.3's
//! CPU `BayesianPersonalizedRanking`:
//!
//! - factors have one extra column: the item bias in the item matrix, a constant 1 in the user
//!   matrix, so `user · item` is the full score (handy for an inner-product ANN index);
//! - one epoch = `nnz` samples; a sample draws a stored interaction `(u, i)` uniformly and a
//!   negative item `j` ([`NegativeSampling::Uniform`] over the catalogue, or
//!   [`NegativeSampling::Popularity`]: the item of another uniformly drawn interaction, which is
//!   what implicit does); with `verify_negatives` a `j` the user has is skipped;
//! - `z = 1 / (1 + exp(x_u · (y_i − y_j)))`, then
//!   `x_u += lr (z (y_i − y_j) − reg x_u)`, `y_i += lr (z x_u − reg y_i)`,
//!   `y_j += lr (−z x_u − reg y_j)`, biases `b_i += lr (z − reg b_i)`, `b_j += lr (−z − reg b_j)`;
//! - initial factors uniform in `[−0.5, 0.5) / factors`, zero rows for users and items without
//!   interactions.
//!
//! With `threads = 1` training is deterministic for a seed. With more threads, each thread runs
//! its share of the samples on the shared factors without locks (Hogwild; every value is read and
//! written as a relaxed atomic, so it is safe Rust) and results vary slightly between runs.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use cascade_core::Csr;
use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Retriever;
use crate::als::{check_csr, score_all};
use crate::error::{Error, Result};
use crate::io::{Decoded, Persist, read_model, write_factor_model};
use crate::linalg::dot;

/// How negative items are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSampling {
    /// Uniformly over the catalogue.
    Uniform,
    /// Proportionally to item popularity (implicit 0.7.3's sampler).
    Popularity,
}

/// Hyper-parameters of [`Bpr`]. Defaults are implicit 0.7.3's, except the negative sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BprParams {
    /// Latent dimension, not counting the bias column.
    pub factors: usize,
    pub learning_rate: f32,
    pub regularization: f32,
    /// Epochs, each of `nnz` samples.
    pub iterations: usize,
    pub negative_sampling: NegativeSampling,
    /// Skip samples whose negative item the user actually has.
    pub verify_negatives: bool,
    /// Worker threads; 1 = deterministic, 0 = rayon's pool size.
    pub threads: usize,
    pub seed: u64,
}

impl Default for BprParams {
    fn default() -> Self {
        BprParams {
            factors: 100,
            learning_rate: 0.01,
            regularization: 0.01,
            iterations: 100,
            negative_sampling: NegativeSampling::Uniform,
            verify_negatives: true,
            threads: 0,
            seed: 42,
        }
    }
}

/// Per-epoch training statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BprEpoch {
    /// Samples whose positive already outscored the negative (`z < 0.5`) before the update.
    pub correct: u64,
    /// Samples skipped because the negative was one of the user's items.
    pub skipped: u64,
    pub samples: u64,
}

impl BprEpoch {
    /// Share of the used samples ranked correctly: a running estimate of the training AUC.
    pub fn accuracy(&self) -> f64 {
        let used = self.samples - self.skipped;
        if used == 0 { 0.0 } else { self.correct as f64 / used as f64 }
    }
}

/// A fitted BPR model (`factors + 1` columns per row, see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Bpr {
    params: BprParams,
    n_users: usize,
    n_items: usize,
    user_factors: Vec<f32>,
    item_factors: Vec<f32>,
}

fn load_row(src: &[AtomicU32], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(s.load(Relaxed));
    }
}

fn store_row(src: &[f32], dst: &[AtomicU32]) {
    for (s, d) in src.iter().zip(dst) {
        d.store(s.to_bits(), Relaxed);
    }
}

struct Shared<'a> {
    m: &'a Csr,
    /// `(user, item)` of every stored interaction, packed so a draw costs one cache miss.
    pairs: &'a [(u32, u32)],
    /// Bit `u · n_items + i` is set when user `u` has item `i` (only for small matrices).
    seen: Option<&'a [u64]>,
    users: &'a [AtomicU32],
    items: &'a [AtomicU32],
    dim: usize,
    params: &'a BprParams,
}

/// Seen-pair bitmaps up to this many bits (8 MiB); larger matrices use a binary search in the
/// user's row instead.
const MAX_BITMAP_BITS: usize = 1 << 26;

fn seen_bitmap(m: &Csr) -> Option<Vec<u64>> {
    let bits = m.rows.checked_mul(m.cols)?;
    if bits > MAX_BITMAP_BITS {
        return None;
    }
    let mut v = vec![0u64; bits.div_ceil(64)];
    for u in 0..m.rows {
        for &i in m.row(u).0 {
            let b = u * m.cols + i as usize;
            v[b / 64] |= 1 << (b % 64);
        }
    }
    Some(v)
}

#[inline]
fn has(sh: &Shared<'_>, u: u32, i: u32) -> bool {
    match sh.seen {
        Some(bits) => {
            let b = u as usize * sh.m.cols + i as usize;
            bits[b / 64] >> (b % 64) & 1 == 1
        }
        None => sh.m.row(u as usize).0.binary_search(&i).is_ok(),
    }
}

/// Samples drawn per batch: all draws and negative checks of a batch happen first, so their
/// (independent, cache-missing) memory reads overlap, then the SGD updates run in draw order.
const BATCH: usize = 32;

fn run_samples(sh: &Shared<'_>, rng: &mut SmallRng, samples: u64) -> BprEpoch {
    let d = sh.dim;
    let f = d - 1;
    let nnz = sh.pairs.len();
    let n_items = sh.m.cols;
    let (lr, reg) = (sh.params.learning_rate, sh.params.regularization);
    let mut ub = vec![0f32; d];
    let mut lb = vec![0f32; d];
    let mut nb = vec![0f32; d];
    let mut stats = BprEpoch { samples, ..BprEpoch::default() };
    let mut batch = [(0usize, 0usize, 0usize); BATCH];
    let mut left = samples;
    while left > 0 {
        let n = (left as usize).min(BATCH);
        left -= n as u64;
        let mut kept = 0;
        for _ in 0..n {
            let (u, pos) = sh.pairs[rng.random_range(0..nnz)];
            let neg = match sh.params.negative_sampling {
                NegativeSampling::Uniform => rng.random_range(0..n_items) as u32,
                NegativeSampling::Popularity => sh.pairs[rng.random_range(0..nnz)].1,
            };
            if neg == pos || (sh.params.verify_negatives && has(sh, u, neg)) {
                stats.skipped += 1;
                continue;
            }
            batch[kept] = (u as usize, pos as usize, neg as usize);
            kept += 1;
        }
        for &(u, pos, neg) in &batch[..kept] {
            let (urow, lrow, nrow) =
                (&sh.users[u * d..(u + 1) * d], &sh.items[pos * d..(pos + 1) * d], &sh.items[neg * d..(neg + 1) * d]);
            load_row(urow, &mut ub);
            load_row(lrow, &mut lb);
            load_row(nrow, &mut nb);
            let score = dot(&ub, &lb) - dot(&ub, &nb);
            let z = 1.0 / (1.0 + score.exp());
            if z < 0.5 {
                stats.correct += 1;
            }
            for j in 0..f {
                let (uj, lj, nj) = (ub[j], lb[j], nb[j]);
                ub[j] = uj + lr * (z * (lj - nj) - reg * uj);
                lb[j] = lj + lr * (z * uj - reg * lj);
                nb[j] = nj + lr * (-z * uj - reg * nj);
            }
            lb[f] += lr * (z - reg * lb[f]);
            nb[f] += lr * (-z - reg * nb[f]);
            store_row(&ub[..f], &urow[..f]);
            store_row(&lb, lrow);
            store_row(&nb, nrow);
        }
    }
    stats
}

impl Bpr {
    /// Fits the model on `m` (user × item; any stored entry is a positive, values are ignored).
    pub fn fit(m: &Csr, params: &BprParams) -> Result<Bpr> {
        Self::fit_with(m, params, |_, _| {})
    }

    /// Like [`Bpr::fit`], calling `on_epoch(epoch, stats)` after every epoch.
    pub fn fit_with(m: &Csr, params: &BprParams, mut on_epoch: impl FnMut(usize, BprEpoch)) -> Result<Bpr> {
        if params.factors == 0 {
            return Err(Error::InvalidParams("factors must be at least 1".into()));
        }
        if !(params.learning_rate.is_finite() && params.learning_rate > 0.0) {
            return Err(Error::InvalidParams(format!("learning_rate must be > 0, got {}", params.learning_rate)));
        }
        if !(params.regularization.is_finite() && params.regularization >= 0.0) {
            return Err(Error::InvalidParams(format!("regularization must be >= 0, got {}", params.regularization)));
        }
        check_csr(m)?;
        if m.indptr.windows(2).any(|w| !m.indices[w[0]..w[1]].is_sorted()) {
            return Err(Error::InvalidInput("CSR rows must have sorted column indices".into()));
        }
        let (f, d) = (params.factors, params.factors + 1);
        let mut rng = StdRng::seed_from_u64(params.seed);
        let mut item_counts = vec![0u32; m.cols];
        for &c in &m.indices {
            item_counts[c as usize] += 1;
        }
        let mut init = |n: usize, keep: &dyn Fn(usize) -> bool| -> Vec<f32> {
            let mut v: Vec<f32> = (0..n * d).map(|_| (rng.random::<f32>() - 0.5) / f as f32).collect();
            for (r, row) in v.chunks_exact_mut(d).enumerate() {
                if !keep(r) {
                    row.fill(0.0);
                }
            }
            v
        };
        let mut item_factors = init(m.cols, &|i| item_counts[i] > 0);
        let mut user_factors = init(m.rows, &|u| m.indptr[u + 1] > m.indptr[u]);
        for row in user_factors.chunks_exact_mut(d) {
            row[f] = 1.0;
        }

        let nnz = m.nnz();
        if nnz > 0 && m.cols > 0 {
            let mut pairs = Vec::with_capacity(nnz);
            for u in 0..m.rows {
                pairs.extend(m.row(u).0.iter().map(|&i| (u as u32, i)));
            }
            let to_atomic = |v: &[f32]| v.iter().map(|x| AtomicU32::new(x.to_bits())).collect::<Vec<_>>();
            let users = to_atomic(&user_factors);
            let items = to_atomic(&item_factors);
            let threads = if params.threads == 0 { rayon::current_num_threads() } else { params.threads }.max(1);
            let mut rngs: Vec<SmallRng> = (0..threads).map(|_| SmallRng::seed_from_u64(rng.random())).collect();
            let seen = if params.verify_negatives { seen_bitmap(m) } else { None };
            let sh = Shared { m, pairs: &pairs, seen: seen.as_deref(), users: &users, items: &items, dim: d, params };
            for epoch in 0..params.iterations {
                let per = nnz as u64 / threads as u64;
                let extra = nnz as u64 % threads as u64;
                let stats = if threads == 1 {
                    run_samples(&sh, &mut rngs[0], nnz as u64)
                } else {
                    rngs.par_iter_mut()
                        .enumerate()
                        .map(|(t, r)| run_samples(&sh, r, per + u64::from((t as u64) < extra)))
                        .reduce(BprEpoch::default, |a, b| BprEpoch {
                            correct: a.correct + b.correct,
                            skipped: a.skipped + b.skipped,
                            samples: a.samples + b.samples,
                        })
                };
                on_epoch(epoch, stats);
            }
            let from_atomic = |v: &[AtomicU32]| v.iter().map(|x| f32::from_bits(x.load(Relaxed))).collect::<Vec<_>>();
            user_factors = from_atomic(&users);
            item_factors = from_atomic(&items);
        }
        Ok(Bpr { params: params.clone(), n_users: m.rows, n_items: m.cols, user_factors, item_factors })
    }

    pub fn params(&self) -> &BprParams {
        &self.params
    }

    /// Columns of both factor matrices: `factors + 1` (last = 1 for users, bias for items).
    pub fn dim(&self) -> usize {
        self.params.factors + 1
    }

    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// Row-major `n_users × dim()`.
    pub fn user_factors(&self) -> &[f32] {
        &self.user_factors
    }

    /// Row-major `n_items × dim()`.
    pub fn item_factors(&self) -> &[f32] {
        &self.item_factors
    }

    pub fn user_vector(&self, user: u32) -> &[f32] {
        let d = self.dim();
        &self.user_factors[user as usize * d..(user as usize + 1) * d]
    }

    pub fn item_vector(&self, item: u32) -> &[f32] {
        let d = self.dim();
        &self.item_factors[item as usize * d..(item as usize + 1) * d]
    }

    pub(crate) fn from_decoded(mut d: Decoded) -> Result<Bpr> {
        #[derive(Deserialize)]
        struct Meta {
            n_users: usize,
            n_items: usize,
        }
        let params: BprParams = d.params()?;
        let m: Meta = d.meta()?;
        let dim = params.factors + 1;
        let user_factors = d.f32("user_factors", m.n_users * dim)?;
        let item_factors = d.f32("item_factors", m.n_items * dim)?;
        Ok(Bpr { params, n_users: m.n_users, n_items: m.n_items, user_factors, item_factors })
    }
}

impl Retriever for Bpr {
    fn name(&self) -> &'static str {
        "bpr"
    }

    fn n_items(&self) -> usize {
        self.n_items
    }

    /// Unknown users get the item biases only (a user vector of zeros and the constant 1).
    fn score_user(&self, user: u32, _history: (&[u32], &[f32]), out: &mut [f32]) {
        let d = self.dim();
        if (user as usize) < self.n_users {
            score_all(&self.item_factors, d, self.user_vector(user), out);
        } else {
            for (o, y) in out.iter_mut().zip(self.item_factors.chunks_exact(d)) {
                *o = y[d - 1];
            }
        }
    }

    fn score_items(&self, user: u32, _history: (&[u32], &[f32]), items: &[u32], out: &mut [f32]) {
        let d = self.dim();
        if (user as usize) < self.n_users {
            crate::als::score_some(&self.item_factors, d, self.user_vector(user), items, out);
        } else {
            for (o, &i) in out.iter_mut().zip(items) {
                *o = self.item_factors.get(i as usize * d + d - 1).copied().unwrap_or(0.0);
            }
        }
    }
}

impl Persist for Bpr {
    const KIND: &'static str = "bpr";

    fn save(&self, w: &mut dyn Write) -> Result<()> {
        let sizes = (self.n_users, self.n_items);
        write_factor_model(w, Self::KIND, &self.params, sizes, &self.user_factors, &self.item_factors)
    }

    fn load(r: &mut dyn Read) -> Result<Self> {
        Self::from_decoded(read_model(r, Some(Self::KIND))?)
    }
}
