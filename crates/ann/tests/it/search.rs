use cascade_ann::{Filter, Hnsw, IdSet, Metric, Params, brute_force};
use proptest::prelude::*;

use crate::{gaussian, metric_strategy, recall};

const DIM: usize = 16;

fn params(metric: Metric, seed: u64) -> Params {
    Params::new(metric).m(16).ef_construction(100).seed(seed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    /// Recall floor: ≥ 0.95 recall@10 at ef = 64 on 1,000-2,000 random 16-d vectors, every metric.
    #[test]
    fn recall_at_10_beats_the_floor(seed in any::<u64>(), n in 1000usize..2000, metric in metric_strategy()) {
        let data = gaussian(seed, n, DIM);
        let queries = gaussian(seed ^ 1, 30, DIM);
        let index = Hnsw::build(&data, DIM, &params(metric, seed)).unwrap();
        prop_assert_eq!(index.len(), n);
        let r = recall(&index, &data, &queries, 10, 64, &Filter::new());
        prop_assert!(r >= 0.95, "recall@10 {} < 0.95 ({:?}, n {})", r, metric, n);
    }

    /// Filters: excluded ids and failing predicates never come back, `k` results come back when
    /// `k` ids pass, and recall against brute force with the same filter stays ≥ 0.9.
    #[test]
    fn filtered_search_respects_the_filter_and_keeps_recall(
        seed in any::<u64>(),
        excluded_share in 0.0f64..0.6,
        modulus in 2u32..5,
    ) {
        let n = 1200;
        let data = gaussian(seed, n, DIM);
        let queries = gaussian(seed ^ 2, 20, DIM);
        let index = Hnsw::build(&data, DIM, &params(Metric::InnerProduct, seed)).unwrap();
        let excluded: IdSet = (0..n as u32).filter(|i| (i.wrapping_mul(2654435761) % 1000) as f64 / 1000.0 < excluded_share).collect();
        let pred = move |id: u32| !id.is_multiple_of(modulus);
        let filter = Filter::new().exclude(&excluded).predicate(&pred);
        let allowed = (0..n as u32).filter(|&i| filter.allows(i)).count();
        for q in queries.chunks_exact(DIM) {
            let found = index.search(q, 10, 64, &filter);
            prop_assert_eq!(found.len(), allowed.min(10));
            prop_assert!(found.iter().all(|&(id, _)| !excluded.contains(id) && pred(id)));
            prop_assert!(found.windows(2).all(|w| w[0].1 >= w[1].1), "not best first");
        }
        let r = recall(&index, &data, &queries, 10, 64, &filter);
        prop_assert!(r >= 0.9, "filtered recall@10 {} < 0.9", r);
    }

    /// Items inserted after the build (one by one and in a batch) are found, and recall over the
    /// whole set stays ≥ 0.95.
    #[test]
    fn inserts_after_build_keep_recall(seed in any::<u64>(), metric in metric_strategy()) {
        let (n0, n1, n2) = (600, 300, 300);
        let data = gaussian(seed, n0 + n1 + n2, DIM);
        let mut index = Hnsw::build(&data[..n0 * DIM], DIM, &params(metric, seed)).unwrap();
        for i in n0..n0 + n1 {
            index.insert(i as u32, &data[i * DIM..(i + 1) * DIM]).unwrap();
        }
        let batch: Vec<u32> = (n0 + n1..n0 + n1 + n2).map(|i| i as u32).collect();
        index.insert_many(&batch, &data[(n0 + n1) * DIM..]).unwrap();
        prop_assert_eq!(index.len(), n0 + n1 + n2);
        let queries = gaussian(seed ^ 3, 30, DIM);
        let r = recall(&index, &data, &queries, 10, 64, &Filter::new());
        prop_assert!(r >= 0.95, "recall@10 after inserts {} < 0.95", r);
        if metric != Metric::InnerProduct {
            // under L2 and cosine every stored vector is its own nearest neighbour: inserted
            // items are found by their own vector (the search is approximate: ≥ 95% of them)
            let inserted: Vec<usize> = (n0..n0 + n1 + n2).collect();
            let found = inserted
                .iter()
                .filter(|&&i| index.search(&data[i * DIM..(i + 1) * DIM], 1, 32, &Filter::new())[0].0 == i as u32)
                .count();
            prop_assert!(found * 100 >= inserted.len() * 95, "{} of {} inserted items found", found, inserted.len());
        }
    }

    /// With ef above the index size the search is exhaustive, so ids and scores equal brute
    /// force's exactly (ties aside) for every metric.
    #[test]
    fn exhaustive_search_equals_brute_force(seed in any::<u64>(), n in 20usize..150, metric in metric_strategy()) {
        let dim = 7; // not a multiple of the 16-float block: exercises the padding
        let data = gaussian(seed, n, dim);
        let index = Hnsw::build(&data, dim, &params(metric, seed)).unwrap();
        for q in gaussian(seed ^ 4, 10, dim).chunks_exact(dim) {
            let exact = brute_force(metric, dim, &data, q, 10, &Filter::new());
            let found = index.search(q, 10, n + 10, &Filter::new());
            prop_assert_eq!(found.len(), exact.len());
            for (f, e) in found.iter().zip(&exact) {
                prop_assert_eq!(f.1, e.1, "scores differ: {:?} vs {:?}", found, exact);
            }
            prop_assert_eq!(index.brute_force(q, 10, &Filter::new()), exact);
        }
    }
}

#[test]
fn scores_follow_the_metric() {
    let data = [1.0, 0.0, 0.0, 2.0, -3.0, 0.0];
    let q = [2.0, 1.0];
    let search = |metric| {
        let index = Hnsw::build(&data, 2, &Params::new(metric)).unwrap();
        index.search(&q, 3, 10, &Filter::new())
    };
    // inner product: q·x = 2, 2, -6
    assert_eq!(search(Metric::InnerProduct), vec![(0, 2.0), (1, 2.0), (2, -6.0)]);
    // cosine: 2/√5, 1/√5, -2/√5
    let cos = search(Metric::Cosine);
    assert_eq!(cos.iter().map(|h| h.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert!((cos[0].1 - 2.0 / 5f32.sqrt()).abs() < 1e-6 && (cos[2].1 + 2.0 / 5f32.sqrt()).abs() < 1e-6);
    // L2: -‖q - x‖² = -2, -5, -26
    assert_eq!(search(Metric::L2), vec![(0, -2.0), (1, -5.0), (2, -26.0)]);
}

#[test]
fn a_very_selective_filter_still_returns_every_allowed_id() {
    let n = 1500;
    let data = gaussian(9, n, DIM);
    let index = Hnsw::build(&data, DIM, &params(Metric::L2, 9)).unwrap();
    let allowed = [3u32, 700, 1499, 42];
    let pred = |id: u32| allowed.contains(&id);
    let filter = Filter::new().predicate(&pred);
    let found = index.search(&data[..DIM], 10, 16, &filter);
    let mut ids: Vec<u32> = found.iter().map(|h| h.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [3, 42, 700, 1499]);
    assert_eq!(found, brute_force(Metric::L2, DIM, &data, &data[..DIM], 10, &filter));
    // everything excluded: nothing comes back
    let all: IdSet = (0..n as u32).collect();
    assert!(index.search(&data[..DIM], 10, 16, &Filter::new().exclude(&all)).is_empty());
}

#[test]
fn caller_ids_are_kept_and_searches_run_concurrently() {
    let data = gaussian(5, 800, DIM);
    let ids: Vec<u32> = (0..800).map(|i| 1_000_000 + i * 3).collect();
    let mut index = Hnsw::new(DIM, &params(Metric::Cosine, 5)).unwrap();
    index.insert_many(&ids, &data).unwrap();
    assert!(index.contains(1_000_003) && !index.contains(1_000_001));
    let v = index.vector(1_000_003).unwrap();
    assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5, "stored normalised under cosine");
    let queries = gaussian(6, 40, DIM);
    let sequential: Vec<_> = queries.chunks_exact(DIM).map(|q| index.search(q, 5, 40, &Filter::new())).collect();
    assert!(sequential.iter().flatten().all(|(id, _)| ids.contains(id)));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    queries.chunks_exact(DIM).map(|q| index.search(q, 5, 40, &Filter::new())).collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), sequential);
        }
    });
}
