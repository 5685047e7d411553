use cascade_models::{Als, AlsParams, Csr, Popularity, Retriever};

use crate::common::{hit_rate, planted, scores};

fn params() -> AlsParams {
    AlsParams { factors: 8, regularization: 5.0, alpha: 1.0, iterations: 12, cg_steps: 3, seed: 7 }
}

#[test]
fn loss_decreases_every_iteration() {
    let p = planted(40, 20, 20, 0.5, 1);
    for alpha in [1.0, 4.0] {
        let mut losses = Vec::new();
        let model =
            Als::fit_with(&p.train, &AlsParams { alpha, ..params() }, |_, m| losses.push(m.loss(&p.train))).unwrap();
        assert_eq!(losses.len(), 12);
        for w in losses.windows(2) {
            assert!(w[1] <= w[0] * (1.0 + 1e-5), "alpha {alpha}: loss went up: {losses:?}");
        }
        assert!(losses[11] < losses[0], "alpha {alpha}: {losses:?}");
        assert_eq!(model.loss(&p.train), losses[11]);
    }
}

#[test]
fn recovers_planted_blocks_far_better_than_popularity() {
    let p = planted(40, 20, 20, 0.5, 2);
    let als = Als::fit(&p.train, &params()).unwrap();
    let pop = Popularity::fit(&p.train);
    let (hr_als, hr_pop) = (hit_rate(&als, &p, 10), hit_rate(&pop, &p, 10));
    // Popularity serves the majority block to everyone; ALS finds each user's block.
    assert!(hr_als > hr_pop + 0.2, "ALS {hr_als} vs popularity {hr_pop}");
    // Nearly every recommendation lies in the user's own block, for the minority group too.
    let users: Vec<u32> = (0..60).collect();
    let recs = als.recommend_all(&p.train, &users, 5);
    let (block, group) = (p.block, &p.group);
    let in_block = recs
        .iter()
        .enumerate()
        .map(|(u, r)| r.iter().filter(|&&i| (i as usize / block) as u32 == group[u]).count())
        .sum::<usize>();
    assert!(in_block as f64 / (60.0 * 5.0) > 0.95, "{in_block} of 300 in block");
    assert_eq!(p.n_items, als.n_items());
}

/// Solves `a x = b` for a symmetric positive definite `a` (row-major `n × n`) by Cholesky.
fn cholesky_solve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|t| l[i * n + t] * l[j * n + t]).sum();
            if i == j {
                l[i * n + i] = (a[i * n + i] - s).sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    let mut y = vec![0f64; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|t| l[i * n + t] * y[t]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0f64; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|t| l[t * n + i] * x[t]).sum::<f64>()) / l[i * n + i];
    }
    x
}

/// The exact user solution `(YᵀY + Σ (c − 1) y yᵀ + λI)⁻¹ Σ c y` with `c = alpha · value` and
/// an unscaled `λ` (implicit 0.7.3's semantics).
fn exact_user(model: &Als, items: &[u32], values: &[f32]) -> Vec<f64> {
    let (k, p) = (model.factors(), model.params());
    let y: Vec<f64> = model.item_factors().iter().map(|&v| f64::from(v)).collect();
    let mut a = vec![0f64; k * k];
    for row in y.chunks_exact(k) {
        for r in 0..k {
            for c in 0..k {
                a[r * k + c] += row[r] * row[c];
            }
        }
    }
    for d in 0..k {
        a[d * k + d] += f64::from(p.regularization);
    }
    let mut b = vec![0f64; k];
    for (&i, &v) in items.iter().zip(values) {
        let c = f64::from(v * p.alpha);
        let yi = &y[i as usize * k..(i as usize + 1) * k];
        for r in 0..k {
            b[r] += c * yi[r];
            for cc in 0..k {
                a[r * k + cc] += (c - 1.0) * yi[r] * yi[cc];
            }
        }
    }
    cholesky_solve(&a, &b)
}

#[test]
fn conjugate_gradient_matches_an_exact_cholesky_solve() {
    let p = planted(30, 30, 15, 0.5, 3);
    let model = Als::fit(&p.train, &AlsParams { factors: 6, regularization: 0.5, alpha: 5.0, ..params() }).unwrap();
    let (items, values) = p.train.row(0);
    let exact = exact_user(&model, items, values);
    let scale = exact.iter().fold(0f64, |m, v| m.max(v.abs()));

    // Enough CG steps from zero give the exact solution up to f32 rounding.
    let cg = model.solve_user((items, values), 2 * model.factors(), None);
    let err = cg.iter().zip(&exact).fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
    assert!(err < 1e-4 * scale.max(1.0), "max error {err}, scale {scale}");

    // implicit's 3 warm-started steps move the trained vector towards the exact solution.
    let start = model.user_vector(0).to_vec();
    let three = model.solve_user((items, values), 3, Some(&start));
    let dist = |x: &[f32]| x.iter().zip(&exact).map(|(a, b)| (f64::from(*a) - b).powi(2)).sum::<f64>().sqrt();
    assert!(dist(&three) <= dist(&start) + 1e-6, "{} > {}", dist(&three), dist(&start));
    assert!(dist(&three) < 0.05 * scale, "3-step error {} vs scale {scale}", dist(&three));

    // An unknown user is folded in with the exact solve.
    let unknown = scores(&model, 10_000, (items, values));
    let want: Vec<f32> = (0..model.n_items() as u32)
        .map(|i| model.item_vector(i).iter().zip(&model.fold_in((items, values))).map(|(a, b)| a * b).sum())
        .collect();
    for (a, b) in unknown.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn users_without_interactions_get_zero_vectors_and_bad_params_are_refused() {
    let m = Csr::from_triplets(3, 4, vec![(0, 1, 1.0), (2, 3, 1.0)]);
    let model = Als::fit(&m, &AlsParams { factors: 4, ..params() }).unwrap();
    assert!(model.user_vector(1).iter().all(|&v| v == 0.0));
    assert!(model.item_vector(0).iter().all(|&v| v == 0.0));
    for bad in [
        AlsParams { factors: 0, ..params() },
        AlsParams { alpha: 0.0, ..params() },
        AlsParams { regularization: -1.0, ..params() },
        AlsParams { cg_steps: 0, ..params() },
    ] {
        let err = Als::fit(&m, &bad).unwrap_err();
        assert_eq!(err.kind(), cascade_models::ErrorKind::Invalid, "{bad:?}: {err}");
    }
}

#[test]
fn same_seed_gives_the_same_model() {
    let p = planted(10, 10, 8, 0.5, 4);
    let a = Als::fit(&p.train, &params()).unwrap();
    let b = Als::fit(&p.train, &params()).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.user_factors().len(), 20 * 8);
    assert_eq!(a.item_factors().len(), 16 * 8);
}
