//! Tests of `cascade_rank::gbdt`.

use cascade_rank::gbdt::{Dataset, Params, Task, Trained, train};
use cascade_rank::{Artifact, Error, Forest, Missing, Split};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Rows of `nf` uniform(-1, 1) features with a label drawn from `P(y = 1) = sigmoid(logit(x))`.
fn binary_data(n: usize, nf: usize, seed: u64, logit: impl Fn(&[f64]) -> f64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f64> = (0..n * nf).map(|_| rng.random_range(-1.0..1.0)).collect();
    let labels = values.chunks(nf).map(|x| f64::from(rng.random::<f64>() < sigmoid(logit(x)))).collect();
    (values, labels)
}

fn auc(scores: &[f64], labels: &[f64]) -> f64 {
    let labels: Vec<bool> = labels.iter().map(|&l| l > 0.5).collect();
    cascade_eval::metrics::roc_auc(scores, &labels).unwrap()
}

fn log_loss(p: &[f64], labels: &[f64]) -> f64 {
    p.iter().zip(labels).map(|(&p, &y)| -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())).sum::<f64>() / p.len() as f64
}

fn predict_all(forest: &Forest, values: &[f64]) -> Vec<f64> {
    values.chunks(forest.n_features()).map(|r| forest.predict(r)).collect()
}

fn logit(x: &[f64]) -> f64 {
    3.0 * x[0] - 2.0 * x[1] + 4.0 * x[2] * x[3]
}

#[test]
fn binary_reaches_high_auc_and_beats_a_constant() {
    let (xt, yt) = binary_data(6000, 6, 1, logit);
    let (xv, yv) = binary_data(3000, 6, 2, logit);
    let data = Dataset::new(xt, 6, yt.clone()).unwrap();
    let params = Params { num_iterations: 150, learning_rate: 0.1, ..Params::default() };
    let Trained { forest, best_iteration, history } = train(&params, &data, None).unwrap();
    assert_eq!((best_iteration, forest.trees.len()), (150, 150));
    assert!(history.is_empty());
    let mean = yt.iter().sum::<f64>() / yt.len() as f64;
    assert!((forest.base_score - (mean / (1.0 - mean)).ln()).abs() < 1e-12, "base score is the log-odds of the mean");
    let p = predict_all(&forest, &xv);
    // The Bayes AUC of this generator is about 0.87.
    let a = auc(&p, &yv);
    assert!(a > 0.83, "AUC {a}");
    let constant = log_loss(&vec![mean; yv.len()], &yv);
    let ours = log_loss(&p, &yv);
    assert!(ours < constant - 0.1, "log-loss {ours} vs constant {constant}");
    // Gain importance: the noise features 4 and 5 matter least.
    let imp = forest.gain_importance();
    assert!(imp[..4].iter().all(|&g| g > imp[4].max(imp[5])), "{imp:?}");
    // Covers: the root holds every row's hessian; a node's cover is its children's sum.
    let base = sigmoid(forest.base_score);
    let root = &forest.trees[0].nodes[0];
    assert!((root.cover - 6000.0 * base * (1.0 - base)).abs() < 1e-6);
    assert!((forest.trees[0].leaf_cover.iter().sum::<f64>() - root.cover).abs() < 1e-9);
}

/// Query groups of `n_items` with features uniform(0, 1) and relevance 0..=3 from a known function.
fn ranking_data(groups: usize, n_items: usize, nf: usize, seed: u64) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let values: Vec<f64> = (0..groups * n_items * nf).map(|_| rng.random::<f64>()).collect();
    let labels = values
        .chunks(nf)
        .map(|x| {
            let r = 2.0 * x[0] + x[1] - x[2] + 0.3 * rng.random::<f64>();
            (r * 1.6).clamp(0.0, 3.0).floor()
        })
        .collect();
    Dataset::new(values, nf, labels).unwrap().with_groups(vec![n_items; groups]).unwrap()
}

/// NDCG@k with gain 2^l - 1, averaged over groups (1 for a group without relevant items).
fn mean_ndcg(labels: &[f64], scores: &[f64], n_items: usize, k: usize) -> f64 {
    let dcg = |order: &[usize], labels: &[f64]| -> f64 {
        order.iter().take(k).enumerate().map(|(i, &r)| (labels[r].exp2() - 1.0) / ((i + 2) as f64).log2()).sum()
    };
    let groups = labels.len() / n_items;
    let mut total = 0.0;
    for q in 0..groups {
        let (l, s) = (&labels[q * n_items..(q + 1) * n_items], &scores[q * n_items..(q + 1) * n_items]);
        let mut by_score: Vec<usize> = (0..n_items).collect();
        by_score.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let mut ideal: Vec<usize> = (0..n_items).collect();
        ideal.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        let best = dcg(&ideal, l);
        total += if best > 0.0 { dcg(&by_score, l) / best } else { 1.0 };
    }
    total / groups as f64
}

#[test]
fn lambdarank_raises_ndcg_over_a_random_order() {
    let nf = 5;
    let (n_items, train_set, valid) = (40, ranking_data(150, 40, nf, 3), ranking_data(100, 40, nf, 4));
    let params = Params {
        objective: Task::LambdaRank,
        num_iterations: 60,
        learning_rate: 0.1,
        num_leaves: 15,
        early_stopping_rounds: Some(20),
        ..Params::default()
    };
    let trained = train(&params, &train_set, Some(&valid)).unwrap();
    assert_eq!(trained.forest.objective, cascade_rank::Objective::LambdaRank);
    assert_eq!(trained.forest.base_score, 0.0);
    // Regenerate the validation matrix to score it (Dataset keeps its values private).
    let mut rng = StdRng::seed_from_u64(4);
    let values: Vec<f64> = (0..100 * n_items * nf).map(|_| rng.random::<f64>()).collect();
    let labels: Vec<f64> = values
        .chunks(nf)
        .map(|x| ((2.0 * x[0] + x[1] - x[2] + 0.3 * rng.random::<f64>()) * 1.6).clamp(0.0, 3.0).floor())
        .collect();
    let scores = trained.forest.predict_raw_batch(&values);
    let random: Vec<f64> = (0..labels.len()).map(|_| rng.random::<f64>()).collect();
    let (ours, baseline) = (mean_ndcg(&labels, &scores, n_items, 10), mean_ndcg(&labels, &random, n_items, 10));
    assert!(ours > baseline + 0.3 && ours > 0.85, "NDCG@10 {ours} vs random {baseline}");
    // The reported validation history is the same metric.
    let at_best = trained.history[trained.best_iteration - 1];
    assert!((at_best - ours).abs() < 1e-9, "history {at_best} vs recomputed {ours}");
}

#[test]
fn missing_values_are_learned_with_a_default_direction() {
    // Feature 0 is NaN exactly for the positives; feature 1 is noise.
    let mut rng = StdRng::seed_from_u64(5);
    let n = 2000;
    let labels: Vec<f64> = (0..n).map(|_| f64::from(rng.random::<f64>() < 0.3)).collect();
    let values: Vec<f64> = labels
        .iter()
        .flat_map(|&y| [if y > 0.5 { f64::NAN } else { rng.random_range(0.0..10.0) }, rng.random::<f64>()])
        .collect();
    let data = Dataset::new(values, 2, labels).unwrap();
    let params = Params { num_iterations: 30, learning_rate: 0.3, ..Params::default() };
    let forest = train(&params, &data, None).unwrap().forest;
    let root = &forest.trees[0].nodes[0];
    assert_eq!(root.feature, 0);
    assert_eq!(root.missing, Missing::NaN);
    let Split::Le { threshold } = root.split else { panic!("numeric split expected") };
    assert!(threshold >= 10.0 || root.default_left, "either all values left of NaN, or NaN left");
    assert!(forest.predict(&[f64::NAN, 0.5]) > 0.95);
    assert!(forest.predict(&[3.0, 0.5]) < 0.05);
    assert!(forest.predict(&[9.9, 0.5]) < 0.05);
}

#[test]
fn categorical_split_finds_the_category_set() {
    // Category ids 0..10 (feature 0), positive exactly for categories 1, 4 and 7.
    let mut rng = StdRng::seed_from_u64(6);
    let n = 5000;
    let mut values = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.random_range(0..10u32);
        values.extend([f64::from(c), rng.random::<f64>()]);
        labels.push(f64::from([1, 4, 7].contains(&c)));
    }
    let data = Dataset::new(values, 2, labels).unwrap().with_categorical(vec![0]).unwrap();
    let params = Params { num_iterations: 30, learning_rate: 0.3, ..Params::default() };
    let forest = train(&params, &data, None).unwrap().forest;
    let root = &forest.trees[0].nodes[0];
    assert_eq!(root.feature, 0);
    assert_eq!(root.split, Split::In { categories: vec![1, 4, 7] });
    assert!(!root.default_left, "unseen categories and NaN go right, with the majority");
    assert!(forest.predict(&[4.0, 0.5]) > 0.9);
    assert!(forest.predict(&[5.0, 0.5]) < 0.1);
    assert!(forest.predict(&[f64::NAN, 0.5]) < 0.1);
}

fn bagged_params(seed: u64) -> Params {
    Params {
        num_iterations: 25,
        feature_fraction: 0.7,
        bagging_fraction: 0.6,
        bagging_freq: 2,
        seed,
        ..Params::default()
    }
}

#[test]
fn training_is_deterministic_for_a_seed_whatever_the_thread_count() {
    let (x, y) = binary_data(3000, 8, 7, logit);
    let data = Dataset::new(x, 8, y).unwrap();
    let params = bagged_params(11);
    let in_pool = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| train(&params, &data, None).unwrap().forest)
    };
    let one = in_pool(1);
    assert_eq!(one, in_pool(1), "same seed, same forest");
    assert_eq!(one, in_pool(3), "thread count does not matter");
    let via_param = train(&Params { num_threads: 2, ..params.clone() }, &data, None).unwrap().forest;
    assert_eq!(one, via_param);
    let other_seed = train(&bagged_params(12), &data, None).unwrap().forest;
    assert_ne!(one, other_seed, "bagging and feature sampling follow the seed");

    let rank = ranking_data(60, 30, 4, 8);
    let rank_params = Params { objective: Task::LambdaRank, num_iterations: 10, ..bagged_params(3) };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| train(&rank_params, &rank, None).unwrap().forest)
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn early_stopping_stops_on_noise_and_truncates_to_the_best_iteration() {
    let (x, y) = binary_data(2000, 5, 9, |_| 0.0);
    let (xv, yv) = binary_data(1000, 5, 10, |_| 0.0);
    let (data, valid) = (Dataset::new(x, 5, y).unwrap(), Dataset::new(xv, 5, yv).unwrap());
    let params = Params { num_iterations: 300, early_stopping_rounds: Some(10), ..Params::default() };
    let t = train(&params, &data, Some(&valid)).unwrap();
    assert!(t.best_iteration < 300, "stopped early");
    assert_eq!(t.forest.trees.len(), t.best_iteration);
    assert_eq!(t.history.len(), t.best_iteration + 10, "ran exactly `early_stopping_rounds` past the best");
    let best = t.history[t.best_iteration - 1];
    assert!(t.history.iter().all(|&m| m >= best), "the best iteration has the lowest log-loss");
    // Without early stopping every tree is kept, the history still recorded.
    let all = train(&Params { num_iterations: 30, ..Params::default() }, &data, Some(&valid)).unwrap();
    assert_eq!((all.best_iteration, all.forest.trees.len(), all.history.len()), (30, 30, 30));
}

#[test]
fn saved_and_loaded_forest_predicts_identically() {
    let (x, y) = binary_data(1500, 4, 12, logit);
    let mut x_nan = x;
    for v in x_nan.iter_mut().step_by(7) {
        *v = f64::NAN;
    }
    // Feature 3 as categorical ids.
    for row in x_nan.chunks_mut(4) {
        row[3] = ((row[3] + 1.0) * 4.0).floor();
    }
    let data = Dataset::new(x_nan.clone(), 4, y)
        .unwrap()
        .with_categorical(vec![3])
        .unwrap()
        .with_feature_names(vec!["a".into(), "b".into(), "c".into(), "d".into()])
        .unwrap();
    let forest = train(&Params { num_iterations: 30, ..Params::default() }, &data, None).unwrap().forest;
    assert_eq!(forest.feature_names, ["a", "b", "c", "d"]);
    let mut bytes = Vec::new();
    forest.save(&mut bytes).unwrap();
    let loaded = Forest::load(&mut bytes.as_slice()).unwrap();
    assert_eq!(loaded, forest, "bit-identical thresholds and leaf values");
    let (a, b) = (forest.predict_raw_batch(&x_nan), loaded.predict_raw_batch(&x_nan));
    assert_eq!(a, b);
    let singles: Vec<f64> = x_nan.chunks(4).map(|r| loaded.predict_raw(r)).collect();
    assert_eq!(a, singles, "batch and single-row scoring agree");
}

fn invalid_field(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(e @ Error::Invalid { .. }) => {
            assert_eq!(e.kind(), cascade_core::ErrorKind::Invalid);
            let Error::Invalid { field, .. } = e else { unreachable!() };
            field
        }
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

#[test]
fn invalid_inputs_name_the_field() {
    assert_eq!(invalid_field(Dataset::new(vec![1.0; 5], 2, vec![0.0; 2])), "values");
    assert_eq!(invalid_field(Dataset::new(vec![1.0; 4], 0, vec![])), "values");
    assert_eq!(invalid_field(Dataset::new(vec![1.0, f64::INFINITY], 1, vec![0.0; 2])), "values");
    assert_eq!(invalid_field(Dataset::new(vec![1.0; 4], 2, vec![0.0; 3])), "labels");
    assert_eq!(invalid_field(Dataset::new(vec![1.0; 4], 2, vec![0.0, f64::NAN])), "labels");
    let ok = || Dataset::new(vec![1.0, 2.0, 3.0, 4.0], 1, vec![0.0, 1.0, 0.0, 1.0]).unwrap();
    assert_eq!(invalid_field(ok().with_groups(vec![2, 1])), "groups");
    assert_eq!(invalid_field(ok().with_groups(vec![4, 0])), "groups");
    assert_eq!(invalid_field(ok().with_feature_names(vec![])), "feature_names");
    assert_eq!(invalid_field(ok().with_categorical(vec![1])), "categorical");
    assert_eq!(invalid_field(ok().with_weights(vec![1.0, -1.0, 1.0, 1.0])), "weights");

    let p = Params::default();
    let bad_labels = Dataset::new(vec![1.0, 2.0], 1, vec![0.0, 2.0]).unwrap();
    assert_eq!(invalid_field(train(&p, &bad_labels, None)), "labels");
    let rank = Params { objective: Task::LambdaRank, ..Params::default() };
    assert_eq!(invalid_field(train(&rank, &ok(), None)), "groups");
    let fractional = Dataset::new(vec![1.0, 2.0], 1, vec![0.5, 1.0]).unwrap().with_groups(vec![2]).unwrap();
    assert_eq!(invalid_field(train(&rank, &fractional, None)), "labels");
    let narrow = Dataset::new(vec![1.0, 2.0], 2, vec![0.0]).unwrap();
    assert_eq!(invalid_field(train(&p, &ok(), Some(&narrow))), "valid.values");
    let bad_valid = Dataset::new(vec![1.0], 1, vec![3.0]).unwrap();
    assert_eq!(invalid_field(train(&p, &ok(), Some(&bad_valid))), "valid.labels");

    for (params, field) in [
        (Params { num_leaves: 1, ..p.clone() }, "params.num_leaves"),
        (Params { num_iterations: 0, ..p.clone() }, "params.num_iterations"),
        (Params { learning_rate: f64::NAN, ..p.clone() }, "params.learning_rate"),
        (Params { max_depth: Some(0), ..p.clone() }, "params.max_depth"),
        (Params { lambda_l2: -1.0, ..p.clone() }, "params.lambda_l2"),
        (Params { feature_fraction: 0.0, ..p.clone() }, "params.feature_fraction"),
        (Params { bagging_fraction: 1.5, ..p.clone() }, "params.bagging_fraction"),
        (Params { max_bin: 256, ..p.clone() }, "params.max_bin"),
        (Params { early_stopping_rounds: Some(0), ..p.clone() }, "params.early_stopping_rounds"),
        (Params { eval_at: 0, ..p }, "params.eval_at"),
    ] {
        assert_eq!(invalid_field(params.validate()), field);
        assert_eq!(invalid_field(train(&params, &ok(), None)), field);
    }
}

/// Brute force over the rows of each leaf of a one-tree binary model: leaf value `-G/(H+λ)·lr`,
/// leaf cover `H`, node gain from the rows on either side, all with the first-round gradients
/// `g = p - y`, `h = p(1 - p)` at the base score.
fn check_first_tree(values: &[f64], nf: usize, labels: &[f64], params: &Params) -> Result<(), TestCaseError> {
    let data = Dataset::new(values.to_vec(), nf, labels.to_vec()).unwrap();
    let forest = train(params, &data, None).unwrap().forest;
    prop_assume!(!forest.trees.is_empty());
    let tree = &forest.trees[0];
    let p = sigmoid(forest.base_score);
    let (gs, hs): (Vec<f64>, Vec<f64>) = labels.iter().map(|&y| (p - y, p * (1.0 - p))).unzip();
    let rows: Vec<&[f64]> = values.chunks(nf).collect();
    let (mut g, mut h, mut n) =
        (vec![0.0; tree.leaves.len()], vec![0.0; tree.leaves.len()], vec![0; tree.leaves.len()]);
    for (i, row) in rows.iter().enumerate() {
        let l = tree.leaf(row);
        g[l] += gs[i];
        h[l] += hs[i];
        n[l] += 1;
    }
    let l2 = params.lambda_l2;
    for l in 0..tree.leaves.len() {
        prop_assert!(n[l] >= params.min_data_in_leaf, "leaf {l} has {} rows", n[l]);
        let want = -g[l] / (h[l] + l2) * params.learning_rate;
        prop_assert!((tree.leaves[l] - want).abs() < 1e-9, "leaf {l}: {} vs {want}", tree.leaves[l]);
        prop_assert!((tree.leaf_cover[l] - h[l]).abs() < 1e-9);
    }
    let score = |g: f64, h: f64| g * g / (h + l2);
    // The leaves under each node, to get its rows' sums.
    fn leaves_under(tree: &cascade_rank::Tree, c: i32, out: &mut Vec<usize>) {
        if c < 0 {
            out.push(!c as usize);
        } else {
            leaves_under(tree, tree.nodes[c as usize].left, out);
            leaves_under(tree, tree.nodes[c as usize].right, out);
        }
    }
    for node in &tree.nodes {
        let sums = |c: i32| {
            let mut ls = Vec::new();
            leaves_under(tree, c, &mut ls);
            ls.iter().fold((0.0, 0.0), |(a, b), &l| (a + g[l], b + h[l]))
        };
        let ((gl, hl), (gr, hr)) = (sums(node.left), sums(node.right));
        let want = score(gl, hl) + score(gr, hr) - score(gl + gr, hl + hr);
        prop_assert!((node.gain - want).abs() < 1e-9 * (1.0 + want.abs()), "gain {} vs {want}", node.gain);
        prop_assert!((node.cover - (hl + hr)).abs() < 1e-9);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn leaf_values_gains_and_covers_match_brute_force(
        rows in prop::collection::vec((0u8..6, 0u8..4, any::<bool>(), any::<bool>()), 20..120),
        l2 in 0.0f64..5.0,
        min_data in 1usize..8,
        leaves in 2usize..10,
    ) {
        // Few distinct values (many ties, NaN in feature 1) so bins are exact and splits varied.
        let values: Vec<f64> =
            rows.iter().flat_map(|&(a, b, nan, _)| [f64::from(a), if nan { f64::NAN } else { f64::from(b) }]).collect();
        let labels: Vec<f64> = rows.iter().map(|&(.., y)| f64::from(y)).collect();
        prop_assume!(labels.iter().any(|&y| y > 0.5) && labels.iter().any(|&y| y < 0.5));
        let params = Params {
            num_iterations: 1,
            num_leaves: leaves,
            min_data_in_leaf: min_data,
            min_sum_hessian_in_leaf: 0.0,
            lambda_l2: l2,
            learning_rate: 0.3,
            ..Params::default()
        };
        check_first_tree(&values, 2, &labels, &params)?;
    }
}
