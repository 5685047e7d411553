//! Candidate sources backed by trained models.

#[cfg(test)]
use crate::candidates::Lists;
use crate::candidates::{CandidateSource, Request};
use cascade_ann::{Filter, Hnsw, IdSet};
use cascade_models::{Als, AnyModel, top_k};
use std::sync::Arc;

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
        let ones = vec![1f32; request.history.len()];
        let user = request.user.unwrap_or(u32::MAX);
        let best = self.model.retriever().recommend(user, (request.history, &ones), n, true);
        best.into_iter().filter(|(item, _)| !request.excludes(*item)).collect()
    }
}

/// A source whose per-user lists are computed on a schedule (heavy sources: scoring the whole
/// catalogue per request would cost milliseconds) and kept in the online store; the request
/// carries the user's list when there is one ([`Request::with_lists`]), and a user without one
/// is served by the source itself at request time. Lists are filtered by the request's history
/// and exclusions, so items seen since the list was computed never come back.
pub struct PrecomputedSource {
    inner: Box<dyn CandidateSource>,
}

impl std::fmt::Debug for PrecomputedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrecomputedSource").field("source", &self.inner.name()).finish_non_exhaustive()
    }
}

impl PrecomputedSource {
    pub fn new(inner: Box<dyn CandidateSource>) -> Self {
        PrecomputedSource { inner }
    }
}

impl CandidateSource for PrecomputedSource {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn candidates(&self, request: &Request<'_>, n: usize) -> Vec<(u32, f32)> {
        match request.list(self.inner.name()) {
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

/// A source that proposes the list the request carries for it, and nothing without one:
/// training computes every source's list for a user from the period's models and asks the same
/// [`Generator`](crate::Generator) serving uses to fill the candidates from them.
#[derive(Debug)]
pub struct ListSource {
    name: String,
}

impl ListSource {
    pub fn new(name: impl Into<String>) -> Self {
        ListSource { name: name.into() }
    }
}

impl CandidateSource for ListSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn candidates(&self, request: &Request<'_>, n: usize) -> Vec<(u32, f32)> {
        let list = request.list(&self.name).unwrap_or_default();
        list.iter().copied().filter(|&(i, _)| !request.excludes(i)).take(n).collect()
    }
}

/// Format version of an encoded list ([`encode_list`]).
const LIST_FORMAT: u8 = 1;

/// A precomputed list as the online store keeps it: a format byte, then (item index, score)
/// pairs as little-endian u32 and f32.
pub fn encode_list(list: &[(u32, f32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 * list.len());
    out.push(LIST_FORMAT);
    for &(item, score) in list {
        out.extend_from_slice(&item.to_le_bytes());
        out.extend_from_slice(&score.to_le_bytes());
    }
    out
}

/// The list [`encode_list`] wrote, or `None` for bytes of another format or a torn length.
pub fn decode_list(bytes: &[u8]) -> Option<Vec<(u32, f32)>> {
    let (&format, pairs) = bytes.split_first()?;
    if format != LIST_FORMAT || pairs.len() % 8 != 0 {
        return None;
    }
    let word = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    Some(
        pairs.chunks_exact(8).map(|c| (u32::from_le_bytes(word(&c[..4])), f32::from_le_bytes(word(&c[4..])))).collect(),
    )
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
        let source = PrecomputedSource::new(Box::new(RetrieverSource::new("pop", model.clone())));
        // Computed ahead: user 0's list as the source gave it then, through the store's encoding.
        let ahead = RetrieverSource::new("pop", model).candidates(&Request::new(Some(0), &[], &[]), 6);
        let lists: Lists = [("pop".to_string(), decode_list(&encode_list(&ahead)).unwrap())].into();
        // Item 4 seen since, item 2 excluded by the request: both filtered out.
        let got = source.candidates(&Request::new(Some(0), &[4], &[2]).with_lists(&lists), 3);
        let expected: Vec<(u32, f32)> = ahead.iter().copied().filter(|(i, _)| *i != 4 && *i != 2).take(3).collect();
        assert_eq!(got, expected);
        // A request without a list is served by the source itself.
        let live = source.candidates(&Request::new(Some(1), &[5], &[]), 2);
        assert_eq!(live.iter().map(|c| c.0).collect::<Vec<_>>(), [4, 1]);
        assert_eq!(source.name(), "pop");
    }

    #[test]
    fn encoded_lists_round_trip_and_refuse_other_bytes() {
        let list = vec![(0, 1.5), (u32::MAX, -0.0), (7, f32::MIN_POSITIVE)];
        let bytes = encode_list(&list);
        assert_eq!(bytes.len(), 1 + 8 * 3);
        assert_eq!(decode_list(&bytes), Some(list));
        assert_eq!(decode_list(&encode_list(&[])), Some(Vec::new()));
        assert_eq!(decode_list(&bytes[..bytes.len() - 1]), None, "torn");
        assert_eq!(decode_list(&[]), None);
        let mut other = bytes;
        other[0] = 2;
        assert_eq!(decode_list(&other), None, "another format");
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
