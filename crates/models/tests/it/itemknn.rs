use cascade_models::{Csr, ItemKnn, ItemKnnParams, Retriever};

use crate::common::{hit_rate, planted, scores};

/// Users × items:
/// u0: i0 i1 / u1: i0 i1 i2 / u2: i1 i2 — item columns i0 = (1,1,0), i1 = (1,1,1), i2 = (0,1,1).
fn three_by_three() -> Csr {
    let ones = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2)];
    Csr::from_triplets(3, 3, ones.iter().map(|&(u, i)| (u, i, 1.0)).collect())
}

#[test]
fn cosine_values_equal_hand_computed_ones() {
    let knn = ItemKnn::fit(&three_by_three(), &ItemKnnParams { k: 3 }).unwrap();
    let c01 = 2.0 / (2f32.sqrt() * 3f32.sqrt()); // 0.8165
    let c02 = 1.0 / 2.0;
    let c12 = 2.0 / (3f32.sqrt() * 2f32.sqrt());
    let want = [[1.0, c01, c02], [c01, 1.0, c12], [c02, c12, 1.0]];
    let sim = knn.similarity_matrix();
    for (i, want_row) in want.iter().enumerate() {
        let (cols, vals) = sim.row(i);
        assert_eq!(cols, &[0, 1, 2]);
        for (j, (v, w)) in vals.iter().zip(want_row).enumerate() {
            assert!((v - w).abs() < 1e-6, "S[{i},{j}] = {v}, want {w}");
        }
    }
    // Neighbour lists are best first (the item itself, similarity 1, is one of them).
    assert_eq!(knn.neighbours(0).0, &[0, 1, 2]);
    // User 0 (i0, i1): score_j = S[0, j] + S[1, j] — implicit gives [1.8165, 1.8165, 1.3165].
    let s = scores(&knn, 0, three_by_three().row(0));
    for (a, b) in s.iter().zip([1.0 + c01, c01 + 1.0, c02 + c12]) {
        assert!((a - b).abs() < 1e-6);
    }
    let recs = knn.recommend(0, three_by_three().row(0), 5, true);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].0, 2);
    assert!((recs[0].1 - (c02 + c12)).abs() < 1e-6);
}

#[test]
fn top_k_keeps_the_k_best_including_the_item_itself() {
    let knn = ItemKnn::fit(&three_by_three(), &ItemKnnParams { k: 2 }).unwrap();
    let c = 2.0 / 6f32.sqrt();
    let (ids, sims) = knn.neighbours(0);
    assert_eq!(ids, &[0, 1]);
    assert!((sims[0] - 1.0).abs() < 1e-6 && (sims[1] - c).abs() < 1e-6);
    // i1's two other neighbours tie at 0.8165: the smaller index (i0) is kept.
    assert_eq!(knn.neighbours(1).0, &[1, 0]);
    assert_eq!(knn.neighbours(2).0, &[2, 1]);
    // User 0 (i0, i1): i2 is nobody's kept neighbour any more.
    assert_eq!(scores(&knn, 0, three_by_three().row(0))[2], 0.0);
    assert!(ItemKnn::fit(&three_by_three(), &ItemKnnParams { k: 0 }).is_err());
}

#[test]
fn recovers_planted_blocks() {
    let p = planted(30, 30, 15, 0.5, 8);
    let knn = ItemKnn::fit(&p.train, &ItemKnnParams { k: 10 }).unwrap();
    assert!(hit_rate(&knn, &p, 5) > 0.5);
    assert!(knn.neighbours(0).1.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn recommendations_from_the_reached_items_equal_a_full_scoring() {
    // Short histories reach fewer items than asked for: the zeros then follow by index, as a
    // selection over the whole catalogue orders them.
    let p = planted(30, 30, 40, 0.3, 3);
    let knn = ItemKnn::fit(&p.train, &ItemKnnParams { k: 5 }).unwrap();
    for u in 0..p.train.rows as u32 {
        let history = p.train.row(u as usize);
        for (k, exclude_seen) in [(3, true), (25, true), (70, false), (200, true)] {
            let full = cascade_models::top_k(&scores(&knn, u, history), k, if exclude_seen { history.0 } else { &[] });
            assert_eq!(knn.recommend(u, history, k, exclude_seen), full, "user {u}, k {k}");
        }
    }
    // The reused buffer is left clean: an empty history scores nothing but zeros.
    let empty = knn.recommend(0, (&[], &[]), 4, true);
    assert_eq!(empty, vec![(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0)]);
}
