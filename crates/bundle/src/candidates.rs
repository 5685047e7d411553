//! Candidate generation: the union of several retrieval sources, each with a quota.
//!
//! Every source is asked for its quota; items are deduplicated across sources while keeping, for
//! each candidate, every source that proposed it with that source's score and rank — the ranker
//! uses them as features and the response can say where a recommendation came from. Users with a
//! short history (fewer than [`Generator::min_history`] interactions) are served by the
//! cold-start sources instead of the collaborative ones, whose estimates for them are noise.

use std::collections::{BTreeMap, HashMap};

/// Each source is asked for this many times its quota, so that items it shares with sources
/// earlier in the fill order do not leave its quota unfilled. Beyond that, overlap costs quota.
pub const OVERFETCH: usize = 2;

/// What a source needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Dense user index, when the user is known to the models.
    pub user: Option<u32>,
    /// The user's past items, most recent last.
    pub history: &'a [u32],
    /// Items that must not be proposed (seen, blocked, unavailable), sorted ascending.
    exclude: &'a [u32],
    /// Per source name: the user's list computed ahead of the request (read from the online
    /// store), which precomputed sources serve instead of scoring.
    lists: &'a Lists,
}

/// Per source name, a user's candidates computed ahead of requests, best first.
pub type Lists = BTreeMap<String, Vec<(u32, f32)>>;

static NO_LISTS: Lists = BTreeMap::new();

impl<'a> Request<'a> {
    /// `exclude` is searched by bisection, so it must be sorted ascending (debug-asserted).
    pub fn new(user: Option<u32>, history: &'a [u32], exclude: &'a [u32]) -> Self {
        debug_assert!(exclude.windows(2).all(|w| w[0] <= w[1]), "exclude must be sorted");
        Request { user, history, exclude, lists: &NO_LISTS }
    }

    /// The request with the user's precomputed `lists`.
    pub fn with_lists(self, lists: &'a Lists) -> Self {
        Request { lists, ..self }
    }

    /// The user's precomputed list of `source`, when there is one.
    pub fn list(&self, source: &str) -> Option<&'a [(u32, f32)]> {
        self.lists.get(source).map(Vec::as_slice)
    }

    pub fn excludes(&self, item: u32) -> bool {
        self.exclude.binary_search(&item).is_ok()
    }
}

/// A retrieval source: popularity, item-kNN, ALS + ANN, content-based, fresh items...
pub trait CandidateSource: Send + Sync {
    fn name(&self) -> &str;
    /// Up to `n` items for the request, best first, none of them excluded.
    fn candidates(&self, request: &Request<'_>, n: usize) -> Vec<(u32, f32)>;
}

/// When a source serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Users with enough history for collaborative signals.
    Warm,
    /// Users with little or no history.
    Cold,
    /// Everyone.
    All,
}

/// Who a source serves, by its name ([`SourceKind::audience`]; a source of another name, as
/// in tests, serves everyone). Serving's generator and training's are built by this one rule.
pub fn audience_of(source: &str) -> Audience {
    crate::SourceKind::parse(source).map_or(Audience::All, crate::SourceKind::audience)
}

pub struct SourceSpec {
    pub source: Box<dyn CandidateSource>,
    /// How many distinct new candidates this source may contribute.
    pub quota: usize,
    pub audience: Audience,
}

impl std::fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSpec")
            .field("source", &self.source.name())
            .field("quota", &self.quota)
            .field("audience", &self.audience)
            .finish()
    }
}

impl SourceSpec {
    pub fn warm(source: Box<dyn CandidateSource>, quota: usize) -> Self {
        SourceSpec { source, quota, audience: Audience::Warm }
    }

    pub fn cold(source: Box<dyn CandidateSource>, quota: usize) -> Self {
        SourceSpec { source, quota, audience: Audience::Cold }
    }

    pub fn all(source: Box<dyn CandidateSource>, quota: usize) -> Self {
        SourceSpec { source, quota, audience: Audience::All }
    }
}

/// One source's opinion of a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Index of the source in the generator.
    pub source: usize,
    pub score: f32,
    /// 0-based rank within that source's list.
    pub rank: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub item: u32,
    /// The source whose quota this candidate used: the first to propose it in the fill order.
    pub source: usize,
    /// Every source that proposed the item, in source order.
    pub hits: Vec<Hit>,
}

type SourceList = (usize, Vec<(u32, f32)>, usize);

/// How a generator fills its list from the sources' lists. The rankers learn on candidate sets
/// filled one way, so the way is recorded with them (`ServingParams::fill`) and serving fills
/// the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    /// Each source in order contributes its quota of new items before the next is asked: the
    /// mix the rankers have always been trained on (both fills measured in docs/benchmarks.md).
    #[default]
    InOrder,
    /// Every source's first new item, then every source's second, and so on: no source crowds
    /// out the others in the retrieval order itself.
    Interleaved,
}

#[derive(Debug)]
pub struct Generator {
    sources: Vec<SourceSpec>,
    /// Users with fewer interactions than this are cold.
    pub min_history: usize,
    pub fill: Fill,
}

impl Generator {
    pub fn new(sources: Vec<SourceSpec>) -> Self {
        Generator { sources, min_history: 5, fill: Fill::default() }
    }

    /// The generator over `quotas` (source → candidates it may contribute, asked in the map's
    /// order) whose sources propose the lists each request carries ([`Request::with_lists`]):
    /// training's way of asking for exactly the candidates serving would generate.
    pub fn over_lists<'a>(quotas: impl IntoIterator<Item = (&'a String, &'a usize)>, min_history: usize) -> Self {
        let sources = quotas
            .into_iter()
            .map(|(name, &quota)| SourceSpec {
                source: Box::new(crate::sources::ListSource::new(name.as_str())),
                quota,
                audience: audience_of(name),
            })
            .collect();
        Generator { sources, min_history, fill: Fill::default() }
    }

    /// Number of sources.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.source.name().to_string()).collect()
    }

    pub fn source_name(&self, index: usize) -> &str {
        self.sources[index].source.name()
    }

    /// Whether `request` is served by the cold-start sources.
    pub fn is_cold(&self, request: &Request<'_>) -> bool {
        request.user.is_none() || request.history.len() < self.min_history
    }

    /// The union of the sources' candidates, at most `limit`, deduplicated.
    ///
    /// Order, sources in configuration order: by [`Fill::InOrder`], each source's new items up to
    /// its quota, then the next source's; by [`Fill::Interleaved`], every source's first new
    /// item, then every source's second, and so on. A source that proposes an item another
    /// source already contributed adds its hit to that candidate without using its quota.
    pub fn generate(&self, request: &Request<'_>, limit: usize) -> Vec<Candidate> {
        let cold = self.is_cold(request);
        // (source index, its candidates, its quota) for the sources serving this request.
        let lists: Vec<SourceList> = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| match s.audience {
                Audience::All => true,
                Audience::Warm => !cold,
                Audience::Cold => cold,
            })
            .map(|(i, s)| (i, s.source.candidates(request, s.quota.saturating_mul(OVERFETCH)), s.quota))
            .collect();
        let mut out: Vec<Candidate> = Vec::new();
        let mut position: HashMap<u32, usize> = HashMap::new();
        let mut taken = vec![0usize; lists.len()];
        let mut cursor = vec![0usize; lists.len()];
        // New items a source contributes per turn.
        let per_turn = match self.fill {
            Fill::InOrder => usize::MAX,
            Fill::Interleaved => 1,
        };
        loop {
            let mut progressed = false;
            for (l, (source, list, quota)) in lists.iter().enumerate() {
                let mut this_turn = 0;
                while taken[l] < *quota && cursor[l] < list.len() && this_turn < per_turn && out.len() < limit {
                    let item = list[cursor[l]].0;
                    cursor[l] += 1;
                    if !position.contains_key(&item) && !request.excludes(item) {
                        position.insert(item, out.len());
                        out.push(Candidate { item, source: *source, hits: Vec::new() });
                        taken[l] += 1;
                        this_turn += 1;
                        progressed = true;
                    }
                }
            }
            if !progressed || out.len() >= limit {
                break;
            }
        }
        // Attribution: every source that proposed a chosen item, whether or not it contributed it.
        for (source, list, _) in &lists {
            for (rank, &(item, score)) in list.iter().enumerate() {
                if let Some(&p) = position.get(&item) {
                    out[p].hits.push(Hit { source: *source, score, rank });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Fixed(&'static str, Vec<(u32, f32)>);

    impl CandidateSource for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn candidates(&self, req: &Request<'_>, n: usize) -> Vec<(u32, f32)> {
            self.1.iter().copied().filter(|(i, _)| !req.excludes(*i)).take(n).collect()
        }
    }

    fn ranked(name: &'static str, items: &[u32]) -> Box<dyn CandidateSource> {
        Box::new(Fixed(name, items.iter().enumerate().map(|(r, &i)| (i, 1.0 / (r as f32 + 1.0))).collect()))
    }

    const WARM: [u32; 6] = [90, 91, 92, 93, 94, 95];

    #[test]
    fn quotas_interleaving_dedupe_and_attribution() {
        let mut g = Generator::new(vec![
            SourceSpec::warm(ranked("als", &[1, 2, 3, 4]), 3),
            SourceSpec::warm(ranked("knn", &[2, 5, 6, 7]), 2),
            SourceSpec::cold(ranked("pop", &[8, 9]), 2),
        ]);
        g.fill = Fill::Interleaved;
        let out = g.generate(&Request::new(Some(1), &WARM, &[]), 10);
        // als:1, knn:2 (2 is knn's first new item), als:3 (2 taken), knn:5, als:4.
        assert_eq!(out.iter().map(|c| c.item).collect::<Vec<_>>(), [1, 2, 3, 5, 4]);
        let two = &out[1];
        assert_eq!(two.hits, [Hit { source: 0, score: 0.5, rank: 1 }, Hit { source: 1, score: 1.0, rank: 0 }]);
        assert_eq!(g.source_name(out[3].source), "knn");
        assert_eq!(out.iter().map(|c| c.source).collect::<Vec<_>>(), [0, 1, 0, 1, 0]);
    }

    #[test]
    fn in_order_each_source_fills_its_quota_before_the_next() {
        let g = Generator::new(vec![
            SourceSpec::warm(ranked("als", &[1, 2, 3, 4]), 3),
            SourceSpec::warm(ranked("knn", &[2, 5, 6, 7]), 2),
            SourceSpec::cold(ranked("pop", &[8, 9]), 2),
        ]);
        assert_eq!(g.fill, Fill::InOrder, "the default");
        let out = g.generate(&Request::new(Some(1), &WARM, &[]), 10);
        // als: 1, 2, 3 (its quota); knn: 2 is taken, so 5 and 6.
        assert_eq!(out.iter().map(|c| c.item).collect::<Vec<_>>(), [1, 2, 3, 5, 6]);
        assert_eq!(out.iter().map(|c| c.source).collect::<Vec<_>>(), [0, 0, 0, 1, 1]);
        assert_eq!(out[1].hits, [Hit { source: 0, score: 0.5, rank: 1 }, Hit { source: 1, score: 1.0, rank: 0 }]);
        // The limit cuts the last source short.
        let out = g.generate(&Request::new(Some(1), &WARM, &[]), 4);
        assert_eq!(out.iter().map(|c| c.item).collect::<Vec<_>>(), [1, 2, 3, 5]);
    }

    #[test]
    fn short_histories_get_the_cold_sources() {
        let mut g = Generator::new(vec![
            SourceSpec::warm(ranked("als", &[1, 2]), 2),
            SourceSpec::cold(ranked("pop", &[8, 9]), 2),
            SourceSpec::all(ranked("fresh", &[7]), 1),
        ]);
        g.fill = Fill::Interleaved;
        let cold: Vec<u32> = g.generate(&Request::new(Some(1), &[90, 91], &[]), 10).iter().map(|c| c.item).collect();
        assert_eq!(cold, [8, 7, 9]);
        let anonymous: Vec<u32> = g.generate(&Request::new(None, &[], &[]), 10).iter().map(|c| c.item).collect();
        assert_eq!(anonymous, [8, 7, 9]);
        let warm: Vec<u32> = g.generate(&Request::new(Some(1), &WARM, &[]), 10).iter().map(|c| c.item).collect();
        assert_eq!(warm, [1, 7, 2]);
    }

    proptest! {
        #[test]
        fn union_invariants(
            lists in proptest::collection::vec(proptest::collection::vec(0u32..40, 0..15), 1..4),
            quotas in proptest::collection::vec(0usize..6, 4),
            mut exclude in proptest::collection::vec(0u32..40, 0..10),
            limit in 0usize..20,
        ) {
            exclude.sort_unstable();
            exclude.dedup();
            let names = ["a", "b", "c", "d"];
            let sources = lists.iter().enumerate().map(|(i, l)| {
                let mut seen = std::collections::HashSet::new();
                let l: Vec<u32> = l.iter().copied().filter(|x| seen.insert(*x)).collect();
                SourceSpec::all(ranked(names[i], &l), quotas[i])
            }).collect();
            let g = Generator::new(sources);
            let out = g.generate(&Request::new(Some(0), &WARM, &exclude), limit);
            prop_assert!(out.len() <= limit);
            let mut items: Vec<u32> = out.iter().map(|c| c.item).collect();
            prop_assert!(items.iter().all(|i| !exclude.contains(i)), "no excluded item");
            items.sort_unstable();
            items.dedup();
            prop_assert_eq!(items.len(), out.len(), "no duplicates");
            for c in &out {
                prop_assert!(!c.hits.is_empty(), "every candidate is attributed");
                for h in &c.hits {
                    let listed = lists[h.source].contains(&c.item);
                    prop_assert!(listed, "attributed to a source that proposed it");
                }
            }
            for (s, q) in quotas.iter().enumerate().take(lists.len()) {
                let contributed = out.iter().filter(|c| c.source == s).count();
                prop_assert!(contributed <= *q, "source {} contributed {} over its quota {}", s, contributed, q);
                // A source under its quota with room left contributed everything it was asked for.
                if contributed < *q && out.len() < limit {
                    let mut seen = std::collections::HashSet::new();
                    let asked: Vec<&u32> = lists[s]
                        .iter()
                        .filter(|i| seen.insert(**i) && !exclude.contains(i))
                        .take(q * OVERFETCH)
                        .collect();
                    let left_out = asked.into_iter().any(|i| !out.iter().any(|c| c.item == *i));
                    prop_assert!(!left_out, "source {} left items out under its quota", s);
                }
            }
        }
    }
}
