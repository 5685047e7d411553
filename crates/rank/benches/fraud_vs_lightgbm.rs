//! cascade-rank's GBDT vs LightGBM 4.7.0 on the vehicle-insurance fraud task
//! (`shared/bench/PROTOCOL.md` section 5), both in the same run.
//!
//! ```text
//! cargo bench -p cascade-rank --bench fraud_vs_lightgbm -- [--repeats 3] [--python PATH]
//! ```
//!
//! `benches/lightgbm_peer.py` (run with `--python`, default `$CASCADE_BENCH_PYTHON`, else
//! `/work/venv/bin/python`) prepares `shared/bench/bench_fraud.py`'s data exactly (time split by
//! accident year; 24 text columns as codes of their sorted training values, declared categorical;
//! 6 numeric columns) and runs LightGBM on it. Both libraries, 1 thread, the same parameters
//! (learning rate 0.05, 31 leaves, min_data_in_leaf 50, feature_fraction 0.8, lambda_l2 1,
//! cat_smooth 10, seed 42):
//! 1. rounds by early stopping on validation AUC with 100 rounds patience (fit: 1994 + 1995
//!    Jan-Jun, validation: 1995 Jul-Dec), `max(20, best)`; ours trains 2,000 rounds and scans
//!    the validation AUC of each prefix, which is the same rule;
//! 2. refit on all of train with that round count, timed (median of `--repeats`); LightGBM's
//!    time excludes its Dataset construction (as bench_fraud.py; shown apart), ours includes
//!    binning;
//! 3. ROC-AUC and PR-AUC on test from `cascade_eval::metrics` for both; batch rows/s; single-row
//!    latency p50/p99 over every test row × `--repeats` (ours: `Forest::predict` in process;
//!    LightGBM: `Booster.predict` on a 1-row numpy array).

use std::path::PathBuf;
use std::time::Instant;

mod common;

use cascade_eval::metrics::{pr_auc, roc_auc};
use cascade_rank::gbdt::{Dataset, Params, train};
use common::{json_number, median, peer, percentile, read_f64};

struct Args {
    repeats: usize,
    python: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args { repeats: 3, python: common::default_python() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--repeats" => a.repeats = value().parse().expect("--repeats"),
            "--python" => a.python = value().into(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().unwrap();
    let meta = peer(&args.python, &["fraud-gen", "--out", d]);
    let nf = json_number(&meta, "n_features") as usize;
    let cat_start = meta.find("\"categorical\": [").unwrap() + 16;
    let categorical: Vec<usize> = meta[cat_start..cat_start + meta[cat_start..].find(']').unwrap()]
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    let load = |name: &str| {
        let x = read_f64(&dir.path().join(format!("{name}.x")));
        let y = read_f64(&dir.path().join(format!("{name}.y")));
        (x, y)
    };
    let dataset =
        |(x, y): (Vec<f64>, Vec<f64>)| Dataset::new(x, nf, y).unwrap().with_categorical(categorical.clone()).unwrap();
    let (fit, valid, train_set) = (dataset(load("fit")), load("valid"), dataset(load("train")));
    let (test_x, test_y) = load("test");
    let test_labels: Vec<bool> = test_y.iter().map(|&y| y > 0.5).collect();
    let valid_labels: Vec<bool> = valid.1.iter().map(|&y| y > 0.5).collect();
    println!(
        "fraud-vehicle-insurance: fit {} / valid {} / train {} / test {} rows, {nf} features ({} categorical), 1 thread",
        fit.n_rows(),
        valid_labels.len(),
        train_set.n_rows(),
        test_labels.len(),
        categorical.len()
    );

    // LightGBM first (it also warms the machine up), then ours.
    let theirs = peer(&args.python, &["fraud-run", "--dir", d, "--repeats", &args.repeats.to_string()]);
    let lgb_pred = read_f64(&dir.path().join("lgb_test.pred"));

    let params = |num_iterations: usize| Params {
        num_iterations,
        learning_rate: 0.05,
        num_leaves: 31,
        min_data_in_leaf: 50,
        feature_fraction: 0.8,
        lambda_l2: 1.0,
        cat_smooth: 10.0,
        seed: 42,
        num_threads: 1,
        ..Params::default()
    };
    // Rounds: validation AUC of every prefix of a 2,000-round model, 100 rounds patience.
    let long = train(&params(2000), &fit, None).unwrap().forest;
    let mut scores = vec![long.base_score; valid_labels.len()];
    let (mut best_it, mut best_auc) = (0, f64::NEG_INFINITY);
    for (i, tree) in long.trees.iter().enumerate() {
        for (s, row) in scores.iter_mut().zip(valid.0.chunks_exact(nf)) {
            *s += tree.predict(row);
        }
        let auc = roc_auc(&scores, &valid_labels).unwrap();
        if auc > best_auc {
            (best_it, best_auc) = (i + 1, auc);
        } else if i + 1 - best_it >= 100 {
            break;
        }
    }
    let n_rounds = best_it.max(20);
    let final_params = params(n_rounds);
    let mut times = Vec::new();
    let mut forest = None;
    for _ in 0..args.repeats {
        let t = Instant::now();
        let f = train(&final_params, &train_set, None).unwrap().forest;
        times.push(t.elapsed().as_secs_f64());
        forest = Some(f);
    }
    let forest = forest.unwrap();
    let ours_pred = forest.predict_raw_batch(&test_x);
    let mut batch = Vec::new();
    for _ in 0..args.repeats.max(3) {
        let t = Instant::now();
        std::hint::black_box(forest.predict_raw_batch(&test_x));
        batch.push(t.elapsed().as_secs_f64());
    }
    let mut lat = Vec::new();
    for _ in 0..args.repeats {
        for row in test_x.chunks_exact(nf) {
            let t = Instant::now();
            std::hint::black_box(forest.predict(std::hint::black_box(row)));
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);

    let n_test = test_labels.len() as f64;
    println!();
    println!(
        "| | rounds (valid AUC at best) | ROC-AUC | PR-AUC | train s 1t | batch rows/s 1t | 1-row p50 µs | p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| LightGBM 4.7.0 | {} ({:.4}) | {:.4} | {:.4} | {:.3} (+{:.3} Dataset) | {:.0} | {:.1} | {:.1} |",
        json_number(&theirs, "n_rounds"),
        json_number(&theirs, "valid_auc_at_best"),
        roc_auc(&lgb_pred, &test_labels).unwrap(),
        pr_auc(&lgb_pred, &test_labels).unwrap(),
        json_number(&theirs, "train_s"),
        json_number(&theirs, "construct_s"),
        json_number(&theirs, "batch_rows_per_s"),
        json_number(&theirs, "p50_us"),
        json_number(&theirs, "p99_us"),
    );
    println!(
        "| cascade-rank | {n_rounds} ({best_auc:.4}) | {:.4} | {:.4} | {:.3} | {:.0} | {:.2} | {:.2} |",
        roc_auc(&ours_pred, &test_labels).unwrap(),
        pr_auc(&ours_pred, &test_labels).unwrap(),
        median(times),
        n_test / median(batch),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    // The models differ in size (our round count comes from our validation curve): score with
    // ours cut to LightGBM's round count too, for a like-for-like scoring speed.
    let lgb_rounds = json_number(&theirs, "n_rounds") as usize;
    let mut cut = forest.clone();
    cut.trees.truncate(lgb_rounds);
    let mut batch_cut = Vec::new();
    for _ in 0..args.repeats.max(3) {
        let t = Instant::now();
        std::hint::black_box(cut.predict_raw_batch(std::hint::black_box(&test_x)));
        batch_cut.push(t.elapsed().as_secs_f64());
    }
    println!(
        "\nours cut to LightGBM's {} trees: batch {:.0} rows/s 1t (LightGBM {:.0})",
        cut.trees.len(),
        n_test / median(batch_cut),
        json_number(&theirs, "batch_rows_per_s")
    );
    let imp = forest.gain_importance();
    let mut top: Vec<(usize, f64)> = imp.iter().copied().enumerate().collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    let names_at = meta.find("\"names\": [").unwrap() + 10;
    let names: Vec<&str> = meta[names_at..names_at + meta[names_at..].find(']').unwrap()]
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .collect();
    let top: Vec<String> = top.iter().take(8).map(|&(f, g)| format!("{} {g:.0}", names[f])).collect();
    println!("\nours, top features by gain: {}", top.join(", "));
}
