//! Alternating least squares for implicit feedback (Hu, Koren & Volinsky 2008) with the
//! conjugate-gradient solver of Takács et al., matching implicit 0.7.3's CPU
//! `AlternatingLeastSquares(use_cg=True)`:
//!
//! - confidence `c_ui = alpha · value` (implicit multiplies the input matrix by `alpha`); the
//!   preference is 1 where `c_ui > 0`; a negative value means "disliked" with confidence `|c_ui|`;
//!   missing entries have confidence 1 and preference 0;
//! - user step: `x_u = (YᵀY + Σ_i (|c_ui| − 1) y_i y_iᵀ + λI)⁻¹ Σ_{c_ui>0} c_ui y_i`, solved
//!   approximately by `cg_steps` CG iterations warm-started from the previous `x_u`; the
//!   regularisation `λ` is **not** scaled by the number of interactions (verified against
//!   implicit 0.7.3's compiled solver); users without interactions get a zero vector;
//! - the item step is the same with users and items swapped; one iteration = users then items;
//! - initial factors uniform in `[0, 0.01)` (seeded), like implicit.
//!
//! `YᵀY + λI` is computed once per half-iteration. Entries whose `|c| − 1` is exactly zero (e.g.
//! binary input with `alpha = 1`) contribute nothing to the CG matrix–vector products and are
//! skipped there, which gives the same result as implicit without its wasted dot/axpy pairs.

use std::io::{Read, Write};
use std::sync::OnceLock;

use cascade_core::Csr;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Retriever;
use crate::error::{Error, Result};
use crate::io::{Decoded, Persist, read_model, write_factor_model};
use crate::linalg::{axpy, dot, gram, symv, xpby};

/// Hyper-parameters of [`Als`]. Defaults are implicit 0.7.3's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlsParams {
    /// Latent dimension.
    pub factors: usize,
    /// `λ`, added to the diagonal as is (not scaled by the number of interactions).
    pub regularization: f32,
    /// Confidence multiplier: `c = alpha · value`.
    pub alpha: f32,
    /// Alternations (each one user step and one item step).
    pub iterations: usize,
    /// Conjugate-gradient steps per least-squares solve.
    pub cg_steps: usize,
    /// Seed of the initial factors.
    pub seed: u64,
}

impl Default for AlsParams {
    fn default() -> Self {
        AlsParams { factors: 100, regularization: 0.01, alpha: 1.0, iterations: 15, cg_steps: 3, seed: 42 }
    }
}

impl AlsParams {
    fn validate(&self) -> Result<()> {
        if self.factors == 0 {
            return Err(Error::InvalidParams("factors must be at least 1".into()));
        }
        if !(self.regularization.is_finite() && self.regularization >= 0.0) {
            return Err(Error::InvalidParams(format!("regularization must be >= 0, got {}", self.regularization)));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::InvalidParams(format!("alpha must be > 0, got {}", self.alpha)));
        }
        if self.cg_steps == 0 {
            return Err(Error::InvalidParams("cg_steps must be at least 1".into()));
        }
        Ok(())
    }
}

/// A fitted implicit-feedback ALS model: row-major user and item factor matrices; the score of
/// `(u, i)` is their dot product.
#[derive(Debug, Clone)]
pub struct Als {
    params: AlsParams,
    n_users: usize,
    n_items: usize,
    user_factors: Vec<f32>,
    item_factors: Vec<f32>,
    /// `YᵀY + λI` for folding in unknown users, computed on first use.
    item_gram: OnceLock<Vec<f32>>,
}

impl PartialEq for Als {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
            && self.n_users == other.n_users
            && self.n_items == other.n_items
            && self.user_factors == other.user_factors
            && self.item_factors == other.item_factors
    }
}

/// One orientation of the confidence matrix: all entries (for the right-hand side) and the
/// entries whose `|c| − 1` is not zero (for the CG products).
struct Side {
    indptr: Vec<usize>,
    indices: Vec<u32>,
    conf: Vec<f32>,
    w_indptr: Vec<usize>,
    w_indices: Vec<u32>,
    w: Vec<f32>,
}

impl Side {
    fn new(m: &Csr) -> Side {
        let mut w_indptr = Vec::with_capacity(m.rows + 1);
        w_indptr.push(0);
        let mut w_indices = Vec::new();
        let mut w = Vec::new();
        for r in 0..m.rows {
            let (idx, conf) = m.row(r);
            for (&i, &c) in idx.iter().zip(conf) {
                let wv = c.abs() - 1.0;
                if wv != 0.0 {
                    w_indices.push(i);
                    w.push(wv);
                }
            }
            w_indptr.push(w_indices.len());
        }
        Side { indptr: m.indptr.clone(), indices: m.indices.clone(), conf: m.values.clone(), w_indptr, w_indices, w }
    }

    fn row(&self, r: usize) -> Row<'_> {
        let a = self.indptr[r]..self.indptr[r + 1];
        let b = self.w_indptr[r]..self.w_indptr[r + 1];
        Row { idx: &self.indices[a.clone()], conf: &self.conf[a], w_idx: &self.w_indices[b.clone()], w: &self.w[b] }
    }
}

/// One user's (or item's) entries.
struct Row<'a> {
    idx: &'a [u32],
    conf: &'a [f32],
    w_idx: &'a [u32],
    w: &'a [f32],
}

struct Scratch {
    r: Vec<f32>,
    p: Vec<f32>,
    ap: Vec<f32>,
}

impl Scratch {
    fn new(k: usize) -> Scratch {
        Scratch { r: vec![0.0; k], p: vec![0.0; k], ap: vec![0.0; k] }
    }
}

/// `cg_steps` conjugate-gradient steps on `(A0 + Σ w_i y_i y_iᵀ) x = Σ_{c_i > 0} c_i y_i`,
/// starting from `x` (implicit's `_least_squares_cg` for one row).
fn solve_row(x: &mut [f32], a0: &[f32], y: &[f32], k: usize, row: &Row<'_>, cg_steps: usize, s: &mut Scratch) {
    if row.idx.is_empty() {
        x.fill(0.0);
        return;
    }
    let Scratch { r, p, ap } = s;
    // r = b − A x
    symv(a0, k, x, r);
    for v in r.iter_mut() {
        *v = -*v;
    }
    let row_of = |i: u32| &y[i as usize * k..(i as usize + 1) * k];
    for (&i, &c) in row.idx.iter().zip(row.conf) {
        let yi = row_of(i);
        let (mut coef, wv) = if c > 0.0 { (c, c - 1.0) } else { (0.0, -c - 1.0) };
        if wv != 0.0 {
            coef -= wv * dot(yi, x);
        }
        if coef != 0.0 {
            axpy(coef, yi, r);
        }
    }
    p.copy_from_slice(r);
    let mut rsold = dot(r, r);
    if rsold < 1e-20 {
        return;
    }
    for _ in 0..cg_steps {
        // ap = A p without forming A
        symv(a0, k, p, ap);
        for (&i, &wv) in row.w_idx.iter().zip(row.w) {
            let yi = row_of(i);
            axpy(wv * dot(yi, p), yi, ap);
        }
        let alpha = rsold / dot(p, ap);
        axpy(alpha, p, x);
        axpy(-alpha, ap, r);
        let rsnew = dot(r, r);
        if rsnew < 1e-20 {
            break;
        }
        xpby(r, rsnew / rsold, p);
        rsold = rsnew;
    }
}

/// `YᵀY + λI`.
fn regularized_gram(y: &[f32], k: usize, reg: f32) -> Vec<f32> {
    let mut a0 = gram(y, k);
    for d in 0..k {
        a0[d * k + d] += reg;
    }
    a0
}

/// Updates every row of `x` against the fixed `y`, in parallel.
fn half_step(x: &mut [f32], y: &[f32], k: usize, side: &Side, reg: f32, cg_steps: usize) {
    let a0 = regularized_gram(y, k, reg);
    x.par_chunks_mut(k)
        .enumerate()
        .with_min_len(8)
        .for_each_init(|| Scratch::new(k), |s, (u, xu)| solve_row(xu, &a0, y, k, &side.row(u), cg_steps, s));
}

impl Als {
    /// Fits the model on `m` (user × item; values are multiplied by `alpha` to give confidences).
    pub fn fit(m: &Csr, params: &AlsParams) -> Result<Als> {
        Self::fit_with(m, params, |_, _| {})
    }

    /// Like [`Als::fit`], calling `on_iteration(iteration, &model)` after every alternation
    /// (e.g. to log [`Als::loss`]).
    pub fn fit_with(m: &Csr, params: &AlsParams, mut on_iteration: impl FnMut(usize, &Als)) -> Result<Als> {
        params.validate()?;
        check_csr(m)?;
        let k = params.factors;
        let mut cui = m.clone();
        if params.alpha != 1.0 {
            for v in &mut cui.values {
                *v *= params.alpha;
            }
        }
        let ciu = cui.transpose();
        let users = Side::new(&cui);
        let items = Side::new(&ciu);
        drop((cui, ciu));

        let mut rng = StdRng::seed_from_u64(params.seed);
        let mut init = |n: usize| (0..n * k).map(|_| rng.random::<f32>() * 0.01).collect::<Vec<f32>>();
        let user_factors = init(m.rows);
        let item_factors = init(m.cols);
        let mut model = Als {
            params: params.clone(),
            n_users: m.rows,
            n_items: m.cols,
            user_factors,
            item_factors,
            item_gram: OnceLock::new(),
        };
        for it in 0..params.iterations {
            half_step(&mut model.user_factors, &model.item_factors, k, &users, params.regularization, params.cg_steps);
            half_step(&mut model.item_factors, &model.user_factors, k, &items, params.regularization, params.cg_steps);
            on_iteration(it, &model);
        }
        Ok(model)
    }

    /// Builds a model from factor matrices (row-major, `factors` columns).
    pub fn from_factors(params: AlsParams, user_factors: Vec<f32>, item_factors: Vec<f32>) -> Result<Als> {
        params.validate()?;
        let k = params.factors;
        if !user_factors.len().is_multiple_of(k) || !item_factors.len().is_multiple_of(k) {
            return Err(Error::InvalidInput(format!("factor matrices are not multiples of {k} columns")));
        }
        Ok(Als {
            n_users: user_factors.len() / k,
            n_items: item_factors.len() / k,
            params,
            user_factors,
            item_factors,
            item_gram: OnceLock::new(),
        })
    }

    pub fn params(&self) -> &AlsParams {
        &self.params
    }

    /// Latent dimension (columns of both factor matrices).
    pub fn factors(&self) -> usize {
        self.params.factors
    }

    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// Row-major `n_users × factors`.
    pub fn user_factors(&self) -> &[f32] {
        &self.user_factors
    }

    /// Row-major `n_items × factors`.
    pub fn item_factors(&self) -> &[f32] {
        &self.item_factors
    }

    pub fn user_vector(&self, user: u32) -> &[f32] {
        let k = self.params.factors;
        &self.user_factors[user as usize * k..(user as usize + 1) * k]
    }

    pub fn item_vector(&self, item: u32) -> &[f32] {
        let k = self.params.factors;
        &self.item_factors[item as usize * k..(item as usize + 1) * k]
    }

    /// Solves the user least-squares problem for `history` (items, raw values; the model's
    /// `alpha` is applied) against the item factors with `cg_steps` CG steps from `start` (zero
    /// if `None`). With `cg_steps >= factors` this is the exact solution up to rounding.
    pub fn solve_user(&self, history: (&[u32], &[f32]), cg_steps: usize, start: Option<&[f32]>) -> Vec<f32> {
        let k = self.params.factors;
        let a0 = self.item_gram.get_or_init(|| regularized_gram(&self.item_factors, k, self.params.regularization));
        let mut idx = Vec::with_capacity(history.0.len());
        let mut conf = Vec::with_capacity(history.0.len());
        let mut w_idx = Vec::new();
        let mut w = Vec::new();
        for (&i, &v) in history.0.iter().zip(history.1) {
            if (i as usize) < self.n_items {
                let c = v * self.params.alpha;
                idx.push(i);
                conf.push(c);
                if c.abs() - 1.0 != 0.0 {
                    w_idx.push(i);
                    w.push(c.abs() - 1.0);
                }
            }
        }
        let row = Row { idx: &idx, conf: &conf, w_idx: &w_idx, w: &w };
        let mut x = match start {
            Some(s) if s.len() == k => s.to_vec(),
            _ => vec![0.0; k],
        };
        solve_row(&mut x, a0, &self.item_factors, k, &row, cg_steps, &mut Scratch::new(k));
        x
    }

    /// The factor vector of a user unknown at training time (exact solve; see
    /// [`Als::solve_user`]).
    pub fn fold_in(&self, history: (&[u32], &[f32])) -> Vec<f32> {
        self.solve_user(history, self.params.factors.max(3), None)
    }

    /// implicit's training loss on `m` (raw values; `alpha` applied):
    /// `(Σ_ui c_ui (p_ui − x_u·y_i)² + λ(Σ|x_u|² + Σ|y_i|²)) / (Σ c_ui + #missing entries)`.
    pub fn loss(&self, m: &Csr) -> f64 {
        let k = self.params.factors;
        let yty = gram(&self.item_factors, k);
        let alpha = self.params.alpha;
        let rows = m.rows.min(self.n_users);
        let per_user: Vec<(f64, f64, f64)> = (0..rows)
            .into_par_iter()
            .map_init(
                || vec![0f32; k],
                |r, u| {
                    let xu = self.user_vector(u as u32);
                    symv(&yty, k, xu, r);
                    let mut loss = 0f64;
                    let mut total = 0f64;
                    let (idx, vals) = m.row(u);
                    for (&i, &v) in idx.iter().zip(vals) {
                        if i as usize >= self.n_items {
                            continue;
                        }
                        let yi = self.item_vector(i);
                        let c = v * alpha;
                        let (mut temp, cabs) = if c > 0.0 { (-2.0 * c, c) } else { (0.0, -c) };
                        temp += (cabs - 1.0) * dot(yi, xu);
                        axpy(temp, yi, r);
                        total += f64::from(cabs);
                        loss += f64::from(cabs);
                    }
                    loss += f64::from(dot(r, xu));
                    (loss, total, f64::from(dot(xu, xu)))
                },
            )
            .collect();
        let (mut loss, mut total_conf, mut user_norm) = (0f64, 0f64, 0f64);
        for (l, t, n) in per_user {
            loss += l;
            total_conf += t;
            user_norm += n;
        }
        let item_norm: f64 = self.item_factors.chunks_exact(k).map(|y| f64::from(dot(y, y))).sum();
        let loss = loss + f64::from(self.params.regularization) * (item_norm + user_norm);
        let cells = m.rows as f64 * m.cols as f64 - m.nnz() as f64;
        loss / (total_conf + cells)
    }

    pub(crate) fn from_decoded(mut d: Decoded) -> Result<Als> {
        #[derive(Deserialize)]
        struct Meta {
            n_users: usize,
            n_items: usize,
        }
        let params: AlsParams = d.params()?;
        let m: Meta = d.meta()?;
        let k = params.factors;
        let user_factors = d.f32("user_factors", m.n_users * k)?;
        let item_factors = d.f32("item_factors", m.n_items * k)?;
        Als::from_factors(params, user_factors, item_factors).map_err(|e| Error::Format(e.to_string()))
    }
}

pub(crate) fn check_csr(m: &Csr) -> Result<()> {
    if m.indptr.len() != m.rows + 1 || m.indptr.last() != Some(&m.indices.len()) || m.values.len() != m.indices.len() {
        return Err(Error::InvalidInput("malformed CSR matrix (indptr/indices/values lengths)".into()));
    }
    if m.indices.iter().any(|&c| c as usize >= m.cols) {
        return Err(Error::InvalidInput("CSR column index outside the matrix".into()));
    }
    Ok(())
}

/// `out[i] = item_i · x` for every item row of a row-major `n × k` matrix.
pub(crate) fn score_all(items: &[f32], k: usize, x: &[f32], out: &mut [f32]) {
    for (o, y) in out.iter_mut().zip(items.chunks_exact(k)) {
        *o = dot(y, x);
    }
}

impl Retriever for Als {
    fn name(&self) -> &'static str {
        "als"
    }

    fn n_items(&self) -> usize {
        self.n_items
    }

    /// Known users use their trained vector; unknown users are folded in from `history`.
    fn score_user(&self, user: u32, history: (&[u32], &[f32]), out: &mut [f32]) {
        let k = self.params.factors;
        if (user as usize) < self.n_users {
            score_all(&self.item_factors, k, self.user_vector(user), out);
        } else {
            let x = self.fold_in(history);
            score_all(&self.item_factors, k, &x, out);
        }
    }

    fn score_items(&self, user: u32, history: (&[u32], &[f32]), items: &[u32], out: &mut [f32]) {
        let k = self.params.factors;
        let folded;
        let x = if (user as usize) < self.n_users {
            self.user_vector(user)
        } else {
            folded = self.fold_in(history);
            &folded
        };
        score_some(&self.item_factors, k, x, items, out);
    }
}

/// [`score_all`] for some items (unknown ones score 0), with the same arithmetic.
pub(crate) fn score_some(factors: &[f32], k: usize, x: &[f32], items: &[u32], out: &mut [f32]) {
    for (o, &i) in out.iter_mut().zip(items) {
        let at = i as usize * k;
        *o = factors.get(at..at + k).map_or(0.0, |y| dot(y, x));
    }
}

impl Persist for Als {
    const KIND: &'static str = "als";

    fn save(&self, w: &mut dyn Write) -> Result<()> {
        let sizes = (self.n_users, self.n_items);
        write_factor_model(w, Self::KIND, &self.params, sizes, &self.user_factors, &self.item_factors)
    }

    fn load(r: &mut dyn Read) -> Result<Self> {
        Self::from_decoded(read_model(r, Some(Self::KIND))?)
    }
}
