//! Popularity on the committed benchmark splits must reproduce RESULTS.md's `pop` rows exactly.
//! Runs only when `CASCADE_SHARED_DATA` points at `shared/data` (CI must not depend on it).

use std::path::PathBuf;

use cascade_eval::{Report, Split, evaluate, recommend_all};

/// The reference figures (`shared/bench/results/recsys_*.json`, model `pop`).
struct Want {
    dir: &'static str,
    ndcg: f64,
    recall: f64,
    hr: f64,
    mrr: f64,
    coverage: f64,
    eval_users: usize,
    eval_test_interactions: usize,
    unseen_test_rows: usize,
}

const ML_100K: Want = Want {
    dir: "ml-100k/split",
    ndcg: 0.14965130313536185,
    recall: 0.06043433021361145,
    hr: 0.4666666666666667,
    mrr: 0.2556305114638448,
    coverage: 0.04825901038485034,
    eval_users: 90,
    eval_test_interactions: 2886,
    unseen_test_rows: 128,
};

const ML_1M_U1TO2998: Want = Want {
    dir: "ml-1m/split-u1to2998",
    ndcg: 0.24971868437813408,
    recall: 0.040987162094079814,
    hr: 0.6593220338983051,
    mrr: 0.4031624966370727,
    coverage: 0.033193863319386334,
    eval_users: 590,
    eval_test_interactions: 47690,
    unseen_test_rows: 63,
};

fn split_dir(want: &Want) -> Option<PathBuf> {
    let Some(root) = std::env::var_os("CASCADE_SHARED_DATA") else {
        println!("skipped: set CASCADE_SHARED_DATA to shared/data to check against the Python reference");
        return None;
    };
    let dir = PathBuf::from(root).join(want.dir);
    if !dir.join("train.tsv.gz").exists() {
        println!("skipped: {} has no split files", dir.display());
        return None;
    }
    Some(dir)
}

fn popularity(split: &Split) -> Report {
    let counts: Vec<f32> = split.item_users().iter().map(|&n| n as f32).collect();
    let recs = recommend_all(split, 10, |_, scores| scores.copy_from_slice(&counts));
    evaluate(split, 10, &recs).unwrap()
}

fn check(want: &Want) {
    let Some(dir) = split_dir(want) else { return };
    let split = Split::load(&dir.join("train.tsv.gz"), &dir.join("test.tsv.gz")).unwrap();
    let st = split.stats();
    assert_eq!(
        (st.eval_users, st.eval_test_interactions, st.test_rows_item_not_in_train),
        (want.eval_users, want.eval_test_interactions, want.unseen_test_rows)
    );
    let r = popularity(&split);
    println!("{}: {r:?}", want.dir);
    assert_eq!(format!("{:.4}", r.ndcg), format!("{:.4}", want.ndcg));
    for (got, exp) in [(r.ndcg, want.ndcg), (r.recall, want.recall), (r.hr, want.hr), (r.mrr, want.mrr)] {
        assert!((got - exp).abs() < 1e-9, "{got} != {exp}");
    }
    assert!((r.coverage - want.coverage).abs() < 1e-12);
    assert_eq!(r.eval_users, want.eval_users);
}

#[test]
fn popularity_matches_the_reference_on_ml_100k() {
    check(&ML_100K);
}

#[test]
fn popularity_matches_the_reference_on_ml_1m_u1to2998() {
    check(&ML_1M_U1TO2998);
}

#[test]
fn validation_slice_has_the_reference_shape_on_ml_100k() {
    let Some(dir) = split_dir(&ML_100K) else { return };
    let split = Split::load(&dir.join("train.tsv.gz"), &dir.join("test.tsv.gz")).unwrap();
    let v = split.validation();
    // floor(0.1 · 90,000 + 0.5) = 9,000 validation rows.
    assert_eq!((v.stats().train_rows, v.stats().test_rows), (81_000, 9_000));
    assert_eq!(&split.train_rows()[..81_000], v.train_rows());
}

#[test]
fn temporal_split_of_u_data_reproduces_the_committed_ml_100k_split() {
    let Some(dir) = split_dir(&ML_100K) else { return };
    let committed = Split::load(&dir.join("train.tsv.gz"), &dir.join("test.tsv.gz")).unwrap();
    let rows = cascade_eval::read_tsv(&dir.join("../u.data")).unwrap();
    let cut = Split::temporal(rows, cascade_eval::TEST_FRACTION).unwrap();
    assert_eq!(cut.train_rows(), committed.train_rows());
    assert_eq!(cut.test_rows(), committed.test_rows());
    assert_eq!(cut.stats(), committed.stats());
}
