//! Most-popular baselines: global counts, time-decayed counts and rankings within segments
//! (e.g. per genre).

use std::io::{Read, Write};

use cascade_core::Csr;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{ArrayRef, Decoded, Persist, read_model, write_model};
use crate::topk::rank_order;
use crate::{Retriever, top_k};

/// How the popularity scores were computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PopularityKind {
    /// Number of interactions of the item.
    Count,
    /// Sum of the interaction values of the item.
    Weighted,
    /// Each interaction counts `0.5^(age / half_life)`, `age = max(0, now - ts)` (same unit as
    /// the timestamps).
    Decayed { now: i64, half_life: f64 },
    /// Scores given by the caller.
    Custom,
}

/// Items ranked by a global score that ignores the user; equal scores rank the smaller item
/// index first. Optionally knows item → segment memberships to rank within a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Popularity {
    kind: PopularityKind,
    scores: Vec<f32>,
    /// Segment `s` holds `seg_items[seg_indptr[s]..seg_indptr[s + 1]]`, best first.
    seg_indptr: Vec<usize>,
    seg_items: Vec<u32>,
}

impl Popularity {
    /// Score = number of interactions (stored entries) per item column.
    pub fn fit(m: &Csr) -> Popularity {
        let mut scores = vec![0f32; m.cols];
        for &c in &m.indices {
            scores[c as usize] += 1.0;
        }
        Self::with_kind(PopularityKind::Count, scores)
    }

    /// Score = sum of the interaction values per item column.
    pub fn fit_weighted(m: &Csr) -> Popularity {
        let mut scores = vec![0f64; m.cols];
        for (&c, &v) in m.indices.iter().zip(&m.values) {
            scores[c as usize] += f64::from(v);
        }
        Self::with_kind(PopularityKind::Weighted, scores.into_iter().map(|s| s as f32).collect())
    }

    /// Time-decayed counts; `ts` is parallel to `m.indices` (one timestamp per stored entry).
    /// Interactions newer than `now` count 1.
    pub fn fit_decayed(m: &Csr, ts: &[i64], now: i64, half_life: f64) -> Result<Popularity> {
        if ts.len() != m.nnz() {
            return Err(Error::InvalidInput(format!("{} timestamps for {} interactions", ts.len(), m.nnz())));
        }
        Self::decayed(m.cols, m.indices.iter().copied().zip(ts.iter().copied()), now, half_life)
    }

    /// Time-decayed counts from `(user, item, ts)` rows (the user is not used).
    pub fn fit_decayed_rows(n_items: usize, rows: &[(u32, u32, i64)], now: i64, half_life: f64) -> Result<Popularity> {
        if let Some(&(_, i, _)) = rows.iter().find(|r| r.1 as usize >= n_items) {
            return Err(Error::InvalidInput(format!("item {i} outside a catalogue of {n_items}")));
        }
        Self::decayed(n_items, rows.iter().map(|&(_, i, t)| (i, t)), now, half_life)
    }

    fn decayed(n_items: usize, rows: impl Iterator<Item = (u32, i64)>, now: i64, half_life: f64) -> Result<Popularity> {
        if !(half_life.is_finite() && half_life > 0.0) {
            return Err(Error::InvalidParams(format!("half_life must be positive, got {half_life}")));
        }
        let mut scores = vec![0f64; n_items];
        let rate = std::f64::consts::LN_2 / half_life;
        for (item, t) in rows {
            let age = now.saturating_sub(t).max(0) as f64;
            scores[item as usize] += (-rate * age).exp();
        }
        let scores = scores.into_iter().map(|s| s as f32).collect();
        Ok(Self::with_kind(PopularityKind::Decayed { now, half_life }, scores))
    }

    /// Uses the given scores (one per item).
    pub fn from_scores(scores: Vec<f32>) -> Popularity {
        Self::with_kind(PopularityKind::Custom, scores)
    }

    fn with_kind(kind: PopularityKind, scores: Vec<f32>) -> Popularity {
        Popularity { kind, scores, seg_indptr: vec![0], seg_items: Vec::new() }
    }

    /// Adds segment memberships: `item_segments[i]` lists the segments (dense ids) of item `i`
    /// (an item may be in several or none). Replaces earlier segments.
    pub fn with_segments(mut self, item_segments: &[Vec<u32>]) -> Result<Popularity> {
        if item_segments.len() != self.scores.len() {
            return Err(Error::InvalidInput(format!(
                "segments for {} items, model has {}",
                item_segments.len(),
                self.scores.len()
            )));
        }
        let n_seg = item_segments.iter().flatten().map(|&s| s as usize + 1).max().unwrap_or(0);
        let mut lists: Vec<Vec<(u32, f32)>> = vec![Vec::new(); n_seg];
        for (item, segs) in item_segments.iter().enumerate() {
            let mut segs = segs.clone();
            segs.sort_unstable();
            segs.dedup();
            for s in segs {
                lists[s as usize].push((item as u32, self.scores[item]));
            }
        }
        self.seg_indptr = Vec::with_capacity(n_seg + 1);
        self.seg_indptr.push(0);
        self.seg_items.clear();
        for mut l in lists {
            l.sort_unstable_by(rank_order);
            self.seg_items.extend(l.iter().map(|e| e.0));
            self.seg_indptr.push(self.seg_items.len());
        }
        Ok(self)
    }

    pub fn kind(&self) -> &PopularityKind {
        &self.kind
    }

    /// One score per item.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Every item, best first (ties by smaller index).
    pub fn ranked(&self) -> Vec<u32> {
        top_k(&self.scores, self.scores.len(), &[]).into_iter().map(|e| e.0).collect()
    }

    pub fn n_segments(&self) -> usize {
        self.seg_indptr.len() - 1
    }

    /// The items of `segment`, best first; empty for an unknown segment.
    pub fn segment(&self, segment: u32) -> &[u32] {
        let s = segment as usize;
        if s + 1 >= self.seg_indptr.len() {
            return &[];
        }
        &self.seg_items[self.seg_indptr[s]..self.seg_indptr[s + 1]]
    }

    /// The `k` best items of `segment` that are not in `exclude` (any order).
    pub fn recommend_in_segment(&self, segment: u32, k: usize, exclude: &[u32]) -> Vec<(u32, f32)> {
        let mut ex = exclude.to_vec();
        ex.sort_unstable();
        self.segment(segment)
            .iter()
            .filter(|i| ex.binary_search(i).is_err())
            .take(k)
            .map(|&i| (i, self.scores[i as usize]))
            .collect()
    }

    pub(crate) fn from_decoded(mut d: Decoded) -> Result<Popularity> {
        #[derive(Deserialize)]
        struct Meta {
            n_items: usize,
            n_segments: usize,
            n_segment_items: usize,
        }
        let kind: PopularityKind = d.params()?;
        let m: Meta = d.meta()?;
        let scores = d.f32("scores", m.n_items)?;
        let seg_indptr = d.indptr("segment_indptr", m.n_segments + 1, m.n_segment_items)?;
        let seg_items = d.u32("segment_items", m.n_segment_items)?;
        if seg_items.iter().any(|&i| i as usize >= m.n_items) {
            return Err(Error::Format("segment item outside the catalogue".into()));
        }
        Ok(Popularity { kind, scores, seg_indptr, seg_items })
    }
}

impl Retriever for Popularity {
    fn name(&self) -> &'static str {
        "popularity"
    }

    fn n_items(&self) -> usize {
        self.scores.len()
    }

    fn score_user(&self, _user: u32, _history: (&[u32], &[f32]), out: &mut [f32]) {
        out.copy_from_slice(&self.scores);
    }

    fn score_items(&self, _user: u32, _history: (&[u32], &[f32]), items: &[u32], out: &mut [f32]) {
        for (o, &i) in out.iter_mut().zip(items) {
            *o = self.scores.get(i as usize).copied().unwrap_or(0.0);
        }
    }
}

impl Persist for Popularity {
    const KIND: &'static str = "popularity";

    fn save(&self, w: &mut dyn Write) -> Result<()> {
        let params = serde_json::to_value(&self.kind).map_err(|e| Error::Format(e.to_string()))?;
        let meta = serde_json::json!({
            "n_items": self.scores.len(),
            "n_segments": self.n_segments(),
            "n_segment_items": self.seg_items.len(),
        });
        let indptr: Vec<u64> = self.seg_indptr.iter().map(|&x| x as u64).collect();
        write_model(
            w,
            Self::KIND,
            params,
            meta,
            &[
                ("scores", ArrayRef::F32(&self.scores)),
                ("segment_indptr", ArrayRef::U64(&indptr)),
                ("segment_items", ArrayRef::U32(&self.seg_items)),
            ],
        )
    }

    fn load(r: &mut dyn Read) -> Result<Self> {
        Self::from_decoded(read_model(r, Some(Self::KIND))?)
    }
}
