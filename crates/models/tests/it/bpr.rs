use cascade_models::{Bpr, BprParams, NegativeSampling, Retriever};

use crate::common::{planted, scores, train_auc};

fn params() -> BprParams {
    BprParams {
        factors: 8,
        learning_rate: 0.05,
        regularization: 0.01,
        iterations: 60,
        negative_sampling: NegativeSampling::Uniform,
        verify_negatives: true,
        threads: 1,
        seed: 11,
    }
}

#[test]
fn ranks_planted_positives_above_negatives() {
    let p = planted(30, 30, 15, 0.5, 5);
    let mut last = None;
    let model = Bpr::fit_with(&p.train, &params(), |_, e| last = Some(e)).unwrap();
    let auc = train_auc(&model, &p.train);
    assert!(auc > 0.9, "train AUC {auc}");
    let last = last.unwrap();
    assert_eq!(last.samples, p.train.nnz() as u64);
    assert!(last.accuracy() > 0.8, "{last:?}");
    // The factor matrices carry the bias column: users end in 1, score = dot product.
    let d = model.dim();
    assert_eq!(d, 9);
    assert!(model.user_factors().chunks_exact(d).all(|u| u[d - 1] == 1.0));
    let s = scores(&model, 3, p.train.row(3));
    let dot: f32 = model.user_vector(3).iter().zip(model.item_vector(5)).map(|(a, b)| a * b).sum();
    assert!((s[5] - dot).abs() < 1e-6);
}

#[test]
fn one_thread_is_deterministic_and_hogwild_and_popularity_sampling_also_learn() {
    let p = planted(20, 20, 12, 0.5, 6);
    let a = Bpr::fit(&p.train, &params()).unwrap();
    let b = Bpr::fit(&p.train, &params()).unwrap();
    assert_eq!(a, b);
    let hogwild = Bpr::fit(&p.train, &BprParams { threads: 2, ..params() }).unwrap();
    assert!(train_auc(&hogwild, &p.train) > 0.9);
    let pop = BprParams { negative_sampling: NegativeSampling::Popularity, iterations: 100, ..params() };
    let implicit_like = Bpr::fit(&p.train, &pop).unwrap();
    assert!(train_auc(&implicit_like, &p.train) > 0.85);
}

#[test]
fn unknown_users_get_item_biases() {
    let p = planted(5, 5, 6, 0.5, 7);
    let model = Bpr::fit(&p.train, &BprParams { iterations: 5, ..params() }).unwrap();
    let s = scores(&model, 999, (&[], &[]));
    for (i, v) in s.iter().enumerate() {
        assert_eq!(*v, model.item_vector(i as u32)[model.dim() - 1]);
    }
    assert_eq!(model.n_items(), 12);
}
