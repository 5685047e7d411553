//! Content-based retrieval from item attributes.
//!
//! Each item is a bag of weighted tokens (the caller maps catalogue attributes to tokens, e.g.
//! `("genre:comedy", 1.0)`, `("creator:ava", 1.0)`, `("title:night", 1.0)`). An item's vector is
//! `weight × idf(token)` (smoothed `ln((1 + n) / (1 + df)) + 1`, or 1 without idf), L2-normalised.
//! A user's profile is the weighted mean of their items' vectors (history values are the
//! weights, so callers can weigh recent items more, see [`recency_weights`]); the score of an
//! item is the cosine between profile and item vector. Items need no interactions, so brand-new
//! items ([`ContentBased::add_item`]) are scored like any other.

use std::collections::HashMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::Retriever;
use crate::error::{Error, Result};
use crate::io::{ArrayRef, Decoded, Persist, read_model, write_model};

/// Hyper-parameters of [`ContentBased`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentParams {
    /// Multiply token weights by their inverse document frequency over the catalogue.
    pub idf: bool,
}

impl Default for ContentParams {
    fn default() -> Self {
        ContentParams { idf: true }
    }
}

/// Weights for `n` history items ordered oldest first: the newest weighs 1 and the weight halves
/// every `half_life` items back.
pub fn recency_weights(n: usize, half_life: f32) -> Vec<f32> {
    (0..n).map(|pos| 0.5f32.powf((n - 1 - pos) as f32 / half_life.max(f32::MIN_POSITIVE))).collect()
}

/// A fitted content model: vocabulary, idf and the sparse unit item vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentBased {
    params: ContentParams,
    vocab: Vec<String>,
    index: HashMap<String, u32>,
    /// Documents the idf was computed from, and per-token document frequency.
    n_docs: usize,
    df: Vec<u32>,
    indptr: Vec<usize>,
    tokens: Vec<u32>,
    weights: Vec<f32>,
    /// The item vectors again as fixed-width rows, when they are narrow (see [`Padded`]).
    padded: Option<Padded>,
}

/// The item vectors again as fixed-width rows (derived, not persisted): every item's tokens and
/// weights padded to `width` with a token that the profile holds at 0, so scoring the catalogue
/// is one branch-free loop instead of a slice per item. Built when every item has at most
/// [`Padded::MAX_WIDTH`] tokens and the vocabulary fits in u16.
#[derive(Debug, Clone, PartialEq)]
struct Padded {
    width: usize,
    tokens: Vec<u16>,
    weights: Vec<f32>,
}

impl Padded {
    const MAX_WIDTH: usize = 8;
}

impl ContentBased {
    /// Builds item vectors for `items[i]` = the tokens of item `i`. Duplicate tokens within an
    /// item add up; tokens with a non-positive total weight are dropped.
    pub fn fit(items: &[Vec<(String, f32)>], params: &ContentParams) -> Result<ContentBased> {
        let mut model = ContentBased {
            params: params.clone(),
            vocab: Vec::new(),
            index: HashMap::new(),
            n_docs: items.len(),
            df: Vec::new(),
            indptr: vec![0],
            tokens: Vec::new(),
            weights: Vec::new(),
            padded: None,
        };
        let mut bags = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some((t, w)) = item.iter().find(|(_, w)| !w.is_finite()) {
                return Err(Error::InvalidInput(format!("item {i}: token `{t}` has weight {w}")));
            }
            let bag = model.bag(item, true);
            for &(t, _) in &bag {
                model.df[t as usize] += 1;
            }
            bags.push(bag);
        }
        for bag in bags {
            model.push_item(bag);
        }
        model.padded = model.build_padded();
        Ok(model)
    }

    /// Token ids and summed positive weights of `item`, sorted by token id; with `grow`, unknown
    /// tokens join the vocabulary, otherwise they are dropped.
    fn bag(&mut self, item: &[(String, f32)], grow: bool) -> Vec<(u32, f32)> {
        let mut bag: Vec<(u32, f32)> = Vec::with_capacity(item.len());
        for (t, w) in item {
            let id = match self.index.get(t) {
                Some(&id) => id,
                None if grow => {
                    let id = self.vocab.len() as u32;
                    self.vocab.push(t.clone());
                    self.index.insert(t.clone(), id);
                    self.df.push(0);
                    id
                }
                None => continue,
            };
            bag.push((id, *w));
        }
        bag.sort_unstable_by_key(|e| e.0);
        let mut merged: Vec<(u32, f32)> = Vec::with_capacity(bag.len());
        for (t, w) in bag {
            match merged.last_mut() {
                Some(last) if last.0 == t => last.1 += w,
                _ => merged.push((t, w)),
            }
        }
        merged.retain(|e| e.1 > 0.0);
        merged
    }

    fn idf(&self, token: u32) -> f32 {
        if !self.params.idf {
            return 1.0;
        }
        let df = self.df.get(token as usize).copied().unwrap_or(0);
        (((1 + self.n_docs) as f64 / (1 + df) as f64).ln() + 1.0) as f32
    }

    fn push_item(&mut self, bag: Vec<(u32, f32)>) -> u32 {
        let weighted: Vec<(u32, f32)> = bag.into_iter().map(|(t, w)| (t, w * self.idf(t))).collect();
        let norm = weighted.iter().map(|e| f64::from(e.1) * f64::from(e.1)).sum::<f64>().sqrt();
        for (t, w) in weighted {
            self.tokens.push(t);
            self.weights.push(if norm > 0.0 { (f64::from(w) / norm) as f32 } else { 0.0 });
        }
        self.indptr.push(self.tokens.len());
        (self.indptr.len() - 2) as u32
    }

    /// Adds a brand-new item (cold start) and returns its index. The idf stays that of the
    /// fitted catalogue; tokens never seen there are ignored (they could not match any profile).
    pub fn add_item(&mut self, tokens: &[(String, f32)]) -> u32 {
        let bag = self.bag(tokens, false);
        let item = self.push_item(bag);
        self.padded = self.build_padded();
        item
    }

    fn build_padded(&self) -> Option<Padded> {
        let width = self.indptr.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0).max(1);
        let pad = u16::try_from(self.vocab.len()).ok()?;
        if width > Padded::MAX_WIDTH {
            return None;
        }
        let n = self.indptr.len() - 1;
        let mut tokens = vec![pad; n * width];
        let mut weights = vec![0f32; n * width];
        for (i, span) in self.indptr.windows(2).enumerate() {
            for (j, k) in (span[0]..span[1]).enumerate() {
                tokens[i * width + j] = self.tokens[k] as u16;
                weights[i * width + j] = self.weights[k];
            }
        }
        Some(Padded { width, tokens, weights })
    }

    pub fn params(&self) -> &ContentParams {
        &self.params
    }

    pub fn vocabulary(&self) -> &[String] {
        &self.vocab
    }

    /// The unit vector of `item`: token ids (into [`ContentBased::vocabulary`]) and weights.
    pub fn item_vector(&self, item: u32) -> (&[u32], &[f32]) {
        let i = item as usize;
        if i + 1 >= self.indptr.len() {
            return (&[], &[]);
        }
        let span = self.indptr[i]..self.indptr[i + 1];
        (&self.tokens[span.clone()], &self.weights[span])
    }

    /// The user profile (dense over the vocabulary): `Σ w_i v_i / Σ w_i` over the history.
    pub fn profile(&self, history: (&[u32], &[f32])) -> Vec<f32> {
        let mut p = vec![0f32; self.vocab.len()];
        let mut total = 0f32;
        for (&i, &w) in history.0.iter().zip(history.1) {
            let (t, v) = self.item_vector(i);
            if t.is_empty() {
                continue;
            }
            total += w;
            for (&t, &v) in t.iter().zip(v) {
                p[t as usize] += w * v;
            }
        }
        if total != 0.0 {
            for x in &mut p {
                *x /= total;
            }
        }
        p
    }

    /// Cosine of `profile` with every item vector, each item's terms summed in the order
    /// [`ContentBased::cosine`] sums them (padded rows when the model has them).
    pub fn score_profile(&self, profile: &[f32], out: &mut [f32]) {
        let inv = inverse_norm(profile);
        if let Some(padded) = &self.padded
            && profile.len() == self.vocab.len()
        {
            // The padding token reads the extra 0 at the end; adding 0 changes no sum.
            let mut p = profile.to_vec();
            p.push(0.0);
            let w = padded.width;
            let rows = padded.tokens.chunks_exact(w).zip(padded.weights.chunks_exact(w));
            let mut o = out.iter_mut();
            for ((t, v), o) in rows.zip(&mut o) {
                let s: f32 = t.iter().zip(v).map(|(&t, &v)| p[usize::from(t)] * v).sum();
                *o = s * inv;
            }
            o.for_each(|x| *x = 0.0);
            return;
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.cosine(profile, inv, i as u32);
        }
    }

    fn cosine(&self, profile: &[f32], inv_norm: f32, item: u32) -> f32 {
        let (t, v) = self.item_vector(item);
        let s: f32 = t.iter().zip(v).map(|(&t, &v)| profile[t as usize] * v).sum();
        s * inv_norm
    }

    pub(crate) fn from_decoded(mut d: Decoded) -> Result<ContentBased> {
        #[derive(Deserialize)]
        struct Meta {
            n_items: usize,
            n_docs: usize,
            nnz: usize,
            vocab: Vec<String>,
        }
        let params: ContentParams = d.params()?;
        let m: Meta = d.meta()?;
        let df = d.u32("df", m.vocab.len())?;
        let indptr = d.indptr("indptr", m.n_items + 1, m.nnz)?;
        let tokens = d.u32("tokens", m.nnz)?;
        let weights = d.f32("weights", m.nnz)?;
        if tokens.iter().any(|&t| t as usize >= m.vocab.len()) {
            return Err(Error::Format("token outside the vocabulary".into()));
        }
        let index = m.vocab.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut model =
            ContentBased { params, vocab: m.vocab, index, n_docs: m.n_docs, df, indptr, tokens, weights, padded: None };
        model.padded = model.build_padded();
        Ok(model)
    }
}

impl Retriever for ContentBased {
    fn name(&self) -> &'static str {
        "content"
    }

    fn n_items(&self) -> usize {
        self.indptr.len() - 1
    }

    /// History values are the item weights of the profile.
    fn score_user(&self, _user: u32, history: (&[u32], &[f32]), out: &mut [f32]) {
        let p = self.profile(history);
        self.score_profile(&p, out);
    }

    fn score_items(&self, _user: u32, history: (&[u32], &[f32]), items: &[u32], out: &mut [f32]) {
        let p = self.profile(history);
        let inv = inverse_norm(&p);
        for (o, &i) in out.iter_mut().zip(items) {
            *o = self.cosine(&p, inv, i);
        }
    }
}

fn inverse_norm(profile: &[f32]) -> f32 {
    let norm = profile.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 { 1.0 / norm } else { 0.0 }
}

impl Persist for ContentBased {
    const KIND: &'static str = "content";

    fn save(&self, w: &mut dyn Write) -> Result<()> {
        let params = serde_json::to_value(&self.params).map_err(|e| Error::Format(e.to_string()))?;
        let meta = serde_json::json!({
            "n_items": self.indptr.len() - 1,
            "n_docs": self.n_docs,
            "nnz": self.tokens.len(),
            "vocab": self.vocab,
        });
        let indptr: Vec<u64> = self.indptr.iter().map(|&x| x as u64).collect();
        write_model(
            w,
            Self::KIND,
            params,
            meta,
            &[
                ("df", ArrayRef::U32(&self.df)),
                ("indptr", ArrayRef::U64(&indptr)),
                ("tokens", ArrayRef::U32(&self.tokens)),
                ("weights", ArrayRef::F32(&self.weights)),
            ],
        )
    }

    fn load(r: &mut dyn Read) -> Result<Self> {
        Self::from_decoded(read_model(r, Some(Self::KIND))?)
    }
}
