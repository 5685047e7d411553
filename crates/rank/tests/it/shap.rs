//! Tests of `cascade_rank::shap`: explanations add up to the score, equal exact Shapley values
//! computed by brute force, and equal LightGBM's own `pred_contrib`.

use crate::import::{LIGHTGBM, XGBOOST, expected, load};
use cascade_rank::shap::{Reason, shap_values, top_reasons};
use cascade_rank::tree::Child;
use cascade_rank::{Forest, Missing, Node, Objective, Split, Tree};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Thresholds random trees split at, and values random rows take, so rows land on thresholds.
const GRID: [f64; 7] = [-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0];

fn random_split(rng: &mut StdRng) -> Split {
    match rng.random_range(0..3) {
        0 => Split::Le { threshold: GRID[rng.random_range(0..GRID.len())] },
        1 => Split::Lt { threshold: GRID[rng.random_range(0..GRID.len())] as f32 },
        _ => {
            let categories: Vec<u32> = (0..5).filter(|_| rng.random_bool(0.5)).collect();
            Split::In { categories }
        }
    }
}

/// Grows a random subtree into `tree`; returns its reference and cover.
fn grow(rng: &mut StdRng, tree: &mut Tree, n_features: u32, depth: u32, max_depth: u32) -> (Child, f64) {
    if depth == max_depth || (depth > 0 && rng.random_bool(0.3)) {
        // Now and then a leaf no training row reached.
        let cover = if rng.random_bool(0.1) { 0.0 } else { f64::from(rng.random_range(1..20u32)) };
        tree.leaves.push(rng.random_range(-2.0..2.0));
        tree.leaf_cover.push(cover);
        return (!((tree.leaves.len() - 1) as Child), cover);
    }
    let at = tree.nodes.len();
    tree.nodes.push(Node {
        feature: rng.random_range(0..n_features),
        split: random_split(rng),
        missing: [Missing::AsZero, Missing::NaN, Missing::Zero][rng.random_range(0..3)],
        default_left: rng.random_bool(0.5),
        left: 0,
        right: 0,
        gain: 1.0,
        cover: 0.0,
    });
    let (left, l) = grow(rng, tree, n_features, depth + 1, max_depth);
    let (right, r) = grow(rng, tree, n_features, depth + 1, max_depth);
    let node = &mut tree.nodes[at];
    (node.left, node.right, node.cover) = (left, right, l + r);
    (at as Child, l + r)
}

fn random_forest(seed: u64, max_features: u32) -> Forest {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_features = rng.random_range(1..=max_features);
    let n_trees = rng.random_range(1..=4);
    let trees = (0..n_trees)
        .map(|_| {
            let mut tree = Tree { nodes: Vec::new(), leaves: Vec::new(), leaf_cover: Vec::new() };
            let max_depth = rng.random_range(0..=5);
            grow(&mut rng, &mut tree, n_features, 0, max_depth);
            tree
        })
        .collect();
    let forest = Forest {
        feature_names: (0..n_features).map(|i| format!("x{i}")).collect(),
        objective: Objective::Regression,
        base_score: rng.random_range(-1.0..1.0),
        trees,
    };
    forest.validate().unwrap();
    forest
}

fn random_row(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| match rng.random_range(0..5) {
            0 => f64::NAN,
            1 => GRID[rng.random_range(0..GRID.len())],
            2 => f64::from(rng.random_range(-1..6)),
            _ => rng.random_range(-3.0..3.0),
        })
        .collect()
}

/// The expected value of the tree below `at` when only the features in `known` are known:
/// known features follow the split, unknown ones average both sides by cover.
fn conditional(tree: &Tree, row: &[f64], known: u32, at: Child) -> f64 {
    if at < 0 {
        return tree.leaves[!at as usize];
    }
    let node = &tree.nodes[at as usize];
    if known >> node.feature & 1 == 1 {
        let next = if node.goes_left(row[node.feature as usize]) { node.left } else { node.right };
        return conditional(tree, row, known, next);
    }
    let cover = |c: Child| if c >= 0 { tree.nodes[c as usize].cover } else { tree.leaf_cover[!c as usize] };
    let (l, r) = (cover(node.left), cover(node.right));
    let (fl, fr) = if l + r > 0.0 { (l / (l + r), r / (l + r)) } else { (0.5, 0.5) };
    fl * conditional(tree, row, known, node.left) + fr * conditional(tree, row, known, node.right)
}

/// Exact Shapley values by enumerating every subset of features.
fn brute_force(forest: &Forest, row: &[f64]) -> (f64, Vec<f64>) {
    let m = forest.n_features();
    let value = |known: u32| {
        forest.base_score
            + forest
                .trees
                .iter()
                .map(|t| if t.nodes.is_empty() { t.leaves[0] } else { conditional(t, row, known, 0) })
                .sum::<f64>()
    };
    let factorial = |n: usize| (1..=n).map(|k| k as f64).product::<f64>();
    let mut phi = vec![0.0; m];
    for (i, p) in phi.iter_mut().enumerate() {
        for s in 0u32..1 << m {
            if s >> i & 1 == 1 {
                continue;
            }
            let size = s.count_ones() as usize;
            let weight = factorial(size) * factorial(m - size - 1) / factorial(m);
            *p += weight * (value(s | 1 << i) - value(s));
        }
    }
    (value(0), phi)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn explanations_add_up_to_the_raw_score(forest_seed in any::<u64>(), row_seed in any::<u64>()) {
        let forest = random_forest(forest_seed, 12);
        let row = random_row(row_seed, forest.n_features());
        let e = shap_values(&forest, &row);
        let total = e.base + e.values.iter().sum::<f64>();
        prop_assert!((total - forest.predict_raw(&row)).abs() <= 1e-6, "{total} vs {}", forest.predict_raw(&row));
        prop_assert!(e.values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn explanations_are_exact_shapley_values(forest_seed in any::<u64>(), row_seed in any::<u64>()) {
        let forest = random_forest(forest_seed, 6);
        let row = random_row(row_seed, forest.n_features());
        let e = shap_values(&forest, &row);
        let (base, phi) = brute_force(&forest, &row);
        prop_assert!((e.base - base).abs() <= 1e-9, "base {} vs {base}", e.base);
        for (i, (ours, exact)) in e.values.iter().zip(&phi).enumerate() {
            prop_assert!((ours - exact).abs() <= 1e-9, "feature {i}: {ours} vs {exact}");
        }
    }
}

#[test]
fn a_feature_split_twice_on_a_path_is_counted_once() {
    // x0 <= 0 then x0 <= 1 again below: the path must fold both splits into one element.
    let node = |threshold, left, right, cover| Node {
        feature: 0,
        split: Split::Le { threshold },
        missing: Missing::NaN,
        default_left: true,
        left,
        right,
        gain: 1.0,
        cover,
    };
    let tree = Tree {
        nodes: vec![node(1.0, 1, !2, 10.0), node(0.0, !0, !1, 6.0)],
        leaves: vec![1.0, 2.0, 4.0],
        leaf_cover: vec![3.0, 3.0, 4.0],
    };
    let forest = Forest {
        feature_names: vec!["a".into()],
        objective: Objective::Regression,
        base_score: 0.0,
        trees: vec![tree],
    };
    for x in [-1.0, 0.5, 3.0, f64::NAN] {
        let e = shap_values(&forest, &[x]);
        assert!((e.base - 2.5).abs() < 1e-12, "(3·1 + 3·2 + 4·4) / 10");
        assert!((e.values[0] - (forest.predict_raw(&[x]) - 2.5)).abs() < 1e-12, "one feature takes it all");
    }
}

/// XGBoost's own TreeSHAP runs in `f32`, so it agrees to about 1e-7 rather than exactly.
#[test]
fn explanations_match_lightgbm_and_xgboost_pred_contrib() {
    for name in LIGHTGBM.iter().chain(XGBOOST) {
        let forest = load(name);
        let n = forest.n_features();
        let want = expected(name, n);
        let mut worst = 0.0f64;
        for (row, contrib) in want.rows.iter().zip(&want.contrib) {
            assert_eq!(contrib.len(), n + 1);
            let e = shap_values(&forest, row);
            assert!((e.base - contrib[n]).abs() <= 1e-6, "{name} {row:?}: base {} vs {}", e.base, contrib[n]);
            for (i, (ours, theirs)) in e.values.iter().zip(contrib).enumerate() {
                assert!((ours - theirs).abs() <= 1e-6, "{name} {row:?}: feature {i}: {ours} vs {theirs}");
                worst = worst.max((ours - theirs).abs());
            }
        }
        eprintln!("{name}: worst SHAP difference {worst:e}");
    }
}

#[test]
fn explanations_of_imported_models_add_up() {
    for name in LIGHTGBM.iter().chain(XGBOOST) {
        let forest = load(name);
        for row in expected(name, forest.n_features()).rows {
            let e = shap_values(&forest, &row);
            let total = e.base + e.values.iter().sum::<f64>();
            assert!((total - forest.predict_raw(&row)).abs() <= 1e-6, "{name} {row:?}");
        }
    }
}

fn stump(feature: u32, low: f64, high: f64) -> Tree {
    Tree {
        nodes: vec![Node {
            feature,
            split: Split::Le { threshold: 0.0 },
            missing: Missing::NaN,
            default_left: true,
            left: !0,
            right: !1,
            gain: 1.0,
            cover: 2.0,
        }],
        leaves: vec![low, high],
        leaf_cover: vec![1.0, 1.0],
    }
}

#[test]
fn top_reasons_rank_by_absolute_contribution_then_feature() {
    let forest = Forest {
        feature_names: ["price", "age", "clicks", "unused", "recency"].map(String::from).to_vec(),
        objective: Objective::Binary { sigmoid: 1.0 },
        base_score: 0.1,
        // Each stump's feature contributes ±half its leaf gap.
        trees: vec![stump(0, -1.0, 1.0), stump(1, -0.2, 0.2), stump(2, 3.0, -3.0), stump(4, 1.0, -1.0)],
    };
    let row = [5.0, -1.0, 2.0, 7.0, 1.0];
    let reasons = top_reasons(&forest, &row, 10);
    let names: Vec<&str> = reasons.iter().map(|r| r.feature.as_str()).collect();
    // clicks -3; price +1 and recency -1 tie, price has the lower index; age -0.2; unused is 0.
    assert_eq!(names, ["clicks", "price", "recency", "age"]);
    assert_eq!(reasons[0], Reason { feature: "clicks".into(), value: 2.0, contribution: -3.0 });
    assert_eq!(reasons[1].contribution, 1.0);
    assert_eq!(reasons[2].contribution, -1.0);
    assert!((reasons[3].contribution + 0.2).abs() < 1e-12);
    assert_eq!(reasons[3].value, -1.0);
    assert_eq!(top_reasons(&forest, &row, 2).len(), 2);
    assert!(top_reasons(&forest, &row, 0).is_empty());
}

#[test]
fn top_reasons_of_an_imported_model_use_its_feature_names() {
    let forest = load("lgb_binary");
    let row = &expected("lgb_binary", forest.n_features()).rows[0];
    let reasons = top_reasons(&forest, row, 3);
    assert_eq!(reasons.len(), 3);
    assert!(reasons.windows(2).all(|w| w[0].contribution.abs() >= w[1].contribution.abs()));
    for r in &reasons {
        let i = forest.feature_names.iter().position(|n| *n == r.feature).unwrap();
        assert_eq!(r.value.to_bits(), row[i].to_bits());
    }
}
