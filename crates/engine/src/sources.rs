//! Candidate sources backed by trained models.

use crate::candidates::{CandidateSource, Request};
use cascade_ann::{Filter, Hnsw, IdSet};
use cascade_models::{Als, AnyModel, top_k};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Any [`Retriever`] as a source: scores the whole catalogue, then takes the top `n`.
/// Right for popularity, content-based and item-kNN, whose scoring is cheap.
#[derive(Debug)]
pub struct RetrieverSource {
    name: String,
    model: Arc<AnyModel>,
    /// Factor models know nothing useful about users they were not trained on.
    needs_user: bool,
    /// Models that score from the history (item-kNN, content) have nothing to say without one.
    needs_history: bool,
    /// For models whose scores do not depend on the user (popularity, trending): every item,
    /// best first (ties by smaller index, as `top_k`), so a request walks a list instead of
    /// scoring the catalogue.
    ranked: Option<Vec<(u32, f32)>>,
}

impl RetrieverSource {
    pub fn new(name: impl Into<String>, model: Arc<AnyModel>) -> Self {
        let needs_user = matches!(*model, AnyModel::Als(_) | AnyModel::Bpr(_));
        let needs_history = matches!(*model, AnyModel::ItemKnn(_) | AnyModel::Content(_));
        let ranked = matches!(*model, AnyModel::Popularity(_)).then(|| {
            let retriever = model.retriever();
            let mut scores = vec![0f32; retriever.n_items()];
            retriever.score_user(u32::MAX, (&[], &[]), &mut scores);
            top_k(&scores, scores.len(), &[])
        });
        RetrieverSource { name: name.into(), model, needs_user, needs_history, ranked }
    }
}

impl CandidateSource for RetrieverSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn candidates(&self, request: &Request<'_>, n: usize) -> Vec<(u32, f32)> {
        if (self.needs_user && request.user.is_none()) || (self.needs_history && request.history.is_empty()) {
            return Vec::new();
        }
        if let Some(ranked) = &self.ranked {
            let sorted = request.history.is_sorted();
            let seen = |i: u32| {
                if sorted { request.history.binary_search(&i).is_ok() } else { request.history.contains(&i) }
            };
            return ranked.iter().copied().filter(|&(i, _)| !seen(i) && !request.excludes(i)).take(n).collect();
        }
        let retriever = self.model.retriever();
        let mut scores = vec![0f32; retriever.n_items()];
        let ones = vec![1f32; request.history.len()];
        retriever.score_user(request.user.unwrap_or(u32::MAX), (request.history, &ones), &mut scores);
        top_k(&scores, n, request.history).into_iter().filter(|(item, _)| !request.excludes(*item)).take(n).collect()
    }
}

/// Per user (bundle index): a source's candidates computed ahead of requests, best first.
pub type UserLists = RwLock<HashMap<u32, Arc<[(u32, f32)]>>>;

/// A source whose per-user lists are computed on a schedule (heavy sources: scoring the whole
/// catalogue per request would cost milliseconds); a user without a list yet is served by the
/// source itself at request time. Lists are filtered by the request's history and exclusions,
/// so items seen since the list was computed never come back.
pub struct PrecomputedSource {
    inner: Box<dyn CandidateSource>,
    lists: Arc<UserLists>,
}

impl std::fmt::Debug for PrecomputedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrecomputedSource").field("source", &self.inner.name()).finish_non_exhaustive()
    }
}

impl PrecomputedSource {
    pub fn new(inner: Box<dyn CandidateSource>, lists: Arc<UserLists>) -> Self {
        PrecomputedSource { inner, lists }
    }
}

impl CandidateSource for PrecomputedSource {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn candidates(&self, request: &Request<'_>, n: usize) -> Vec<(u32, f32)> {
        let list = request.user.and_then(|u| self.lists.read().expect("poisoned").get(&u).cloned());
        match list {
            Some(list) => {
                let sorted = request.history.is_sorted();
                let seen = |i: u32| {
                    if sorted { request.history.binary_search(&i).is_ok() } else { request.history.contains(&i) }
                };
                list.iter().copied().filter(|&(i, _)| !seen(i) && !request.excludes(i)).take(n).collect()
            }
            None => self.inner.candidates(request, n),
        }
    }
}

/// ALS user vectors searched in an HNSW index over the item factors (inner product).
/// Users unknown to the model are folded in from their history.
#[derive(Debug)]
pub struct AnnSource {
    name: String,
    als: Arc<AnyModel>,
    index: Arc<Hnsw>,
    /// Search breadth; at least `n`.
    pub ef: usize,
}

impl AnnSource {
    pub fn new(name: impl Into<String>, als: Arc<AnyModel>, index: Arc<Hnsw>) -> Option<Self> {
        matches!(*als, AnyModel::Als(_)).then(|| AnnSource { name: name.into(), als, index, ef: 128 })
    }

    fn als(&self) -> &Als {
        match &*self.als {
            AnyModel::Als(a) => a,
            _ => unreachable!("checked in new"),
        }
    }
}

impl CandidateSource for AnnSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn candidates(&self, request: &Request<'_>, n: usize) -> Vec<(u32, f32)> {
        let als = self.als();
        let query = match request.user {
            Some(u) if (u as usize) < als.n_users() => als.user_vector(u).to_vec(),
            _ if !request.history.is_empty() => als.fold_in((request.history, &vec![1f32; request.history.len()])),
            _ => return Vec::new(),
        };
        let seen: IdSet = request.history.iter().copied().collect();
        let blocked = |item: u32| !request.excludes(item);
        let filter = Filter::new().exclude(&seen).predicate(&blocked);
        self.index.search(&query, n, self.ef.max(n), &filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_core::Csr;
    use cascade_models::{ContentBased, ContentParams, Popularity};

    #[test]
    fn precomputed_lists_serve_known_users_filtered_and_others_at_request_time() {
        let m = Csr::from_triplets(3, 6, vec![(0, 4, 1.0), (1, 4, 1.0), (0, 1, 1.0), (2, 5, 1.0), (2, 2, 1.0)]);
        let model = Arc::new(AnyModel::Popularity(Popularity::fit(&m)));
        let lists: Arc<UserLists> = Arc::default();
        let source = PrecomputedSource::new(Box::new(RetrieverSource::new("pop", model.clone())), lists.clone());
        // Computed ahead: user 0's list as the source gave it then.
        let ahead = RetrieverSource::new("pop", model).candidates(&Request::new(Some(0), &[], &[]), 6);
        lists.write().unwrap().insert(0, ahead.clone().into());
        // Item 4 seen since, item 2 excluded by the request: both filtered out.
        let got = source.candidates(&Request::new(Some(0), &[4], &[2]), 3);
        let expected: Vec<(u32, f32)> = ahead.iter().copied().filter(|(i, _)| *i != 4 && *i != 2).take(3).collect();
        assert_eq!(got, expected);
        // A user without a list is served by the source itself.
        let live = source.candidates(&Request::new(Some(1), &[5], &[]), 2);
        assert_eq!(live.iter().map(|c| c.0).collect::<Vec<_>>(), [4, 1]);
        assert_eq!(source.name(), "pop");
    }

    #[test]
    fn history_based_sources_stay_silent_without_history() {
        let tokens: Vec<Vec<(String, f32)>> = (0..4).map(|i| vec![(format!("g{}", i % 2), 1.0)]).collect();
        let content = Arc::new(AnyModel::Content(ContentBased::fit(&tokens, &ContentParams::default()).unwrap()));
        let source = RetrieverSource::new("content", content);
        assert!(source.candidates(&Request::new(None, &[], &[]), 3).is_empty());
        // Same genre as the history first, the history itself and excluded items never.
        let got = source.candidates(&Request::new(None, &[0], &[1]), 3);
        assert_eq!(got[0].0, 2);
        assert!(got.iter().all(|(i, _)| *i != 0 && *i != 1));
        let m = Csr::from_triplets(2, 4, vec![(0, 3, 1.0), (1, 3, 1.0), (1, 2, 1.0)]);
        let pop = RetrieverSource::new("pop", Arc::new(AnyModel::Popularity(Popularity::fit(&m))));
        assert_eq!(pop.candidates(&Request::new(None, &[], &[]), 2).iter().map(|c| c.0).collect::<Vec<_>>(), [3, 2]);
        // The precomputed order equals scoring the catalogue: ties by smaller index, history
        // (sorted or not) and exclusions left out.
        let m = Csr::from_triplets(3, 6, vec![(0, 4, 1.0), (1, 4, 1.0), (0, 1, 1.0), (2, 5, 1.0), (2, 2, 1.0)]);
        let model = Arc::new(AnyModel::Popularity(Popularity::fit(&m)));
        let pop = RetrieverSource::new("pop", model.clone());
        for history in [&[5u32, 0][..], &[0, 5]] {
            let got = pop.candidates(&Request::new(Some(0), history, &[2]), 10);
            let mut scores = vec![0f32; 6];
            model.retriever().score_user(0, (&[], &[]), &mut scores);
            let expected: Vec<(u32, f32)> = top_k(&scores, 10, history).into_iter().filter(|(i, _)| *i != 2).collect();
            assert_eq!(got, expected);
            assert_eq!(got.iter().map(|c| c.0).collect::<Vec<_>>(), [4, 1, 3]);
        }
    }
}
