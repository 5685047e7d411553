//! cascade-rank's LambdaMART trainer and scorer vs LightGBM 4.7.0 lambdarank, in the same run.
//!
//! ```text
//! cargo bench -p cascade-rank --bench gbdt_vs_lightgbm -- [--data TRAIN.csv [--valid VALID.csv]]
//!     [--groups 500] [--items 100] [--features 50] [--iterations 100] [--leaves 31]
//!     [--learning-rate 0.1] [--min-data 20] [--repeats 3] [--python PATH]
//! ```
//!
//! Data: CSV files with header `label,group,<feature names...>`, the rows of a group contiguous,
//! empty or `nan` cells missing. Without `--valid` the last 20% of the groups of `--data` are the
//! validation set. Without `--data`, a synthetic learning-to-rank set is generated (seeded):
//! `--groups` training groups and `--groups / 2.5` validation groups of `--items` candidates with
//! `--features` features (N(0,1), 5% missing in features 10..20, a per-group shift), relevance 0..4
//! from a non-linear function of 12 features plus noise.
//!
//! Both libraries train lambdarank with the same parameters, 1 thread (LightGBM via
//! `benches/lightgbm_peer.py`, run with `--python`, default `$CASCADE_BENCH_PYTHON`, else
//! `/work/venv/bin/python`). Reported: training time (median of `--repeats`; LightGBM's Dataset
//! construction shown apart, ours includes binning) and the ratio; single-thread batch scoring
//! throughput over the validation rows (ours `Forest::predict_raw_batch`, LightGBM
//! `Booster.predict(num_threads=1)`); p50/p99 latency of scoring a block of 500 candidates (ours in
//! process, LightGBM's `predict` on 500 rows for reference); NDCG@10 on the validation groups of
//! both models, computed here with the same code (gain 2^l - 1, a group without relevant items
//! scores 1, as LightGBM).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

mod common;

use cascade_rank::gbdt::{Dataset, Params, Task, train};
use common::{json_number, median, peer, percentile, read_f64};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Args {
    data: Option<PathBuf>,
    valid: Option<PathBuf>,
    groups: usize,
    items: usize,
    features: usize,
    iterations: usize,
    leaves: usize,
    learning_rate: f64,
    min_data: usize,
    repeats: usize,
    python: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        data: None,
        valid: None,
        groups: 500,
        items: 100,
        features: 50,
        iterations: 100,
        leaves: 31,
        learning_rate: 0.1,
        min_data: 20,
        repeats: 3,
        python: common::default_python(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = Some(value().into()),
            "--valid" => a.valid = Some(value().into()),
            "--groups" => a.groups = value().parse().expect("--groups"),
            "--items" => a.items = value().parse().expect("--items"),
            "--features" => a.features = value().parse().expect("--features"),
            "--iterations" => a.iterations = value().parse().expect("--iterations"),
            "--leaves" => a.leaves = value().parse().expect("--leaves"),
            "--learning-rate" => a.learning_rate = value().parse().expect("--learning-rate"),
            "--min-data" => a.min_data = value().parse().expect("--min-data"),
            "--repeats" => a.repeats = value().parse().expect("--repeats"),
            "--python" => a.python = value().into(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A learning-to-rank table: row-major features, labels, group sizes.
#[derive(Clone)]
struct Table {
    names: Vec<String>,
    x: Vec<f64>,
    y: Vec<f64>,
    sizes: Vec<usize>,
}

impl Table {
    fn nf(&self) -> usize {
        self.names.len()
    }

    fn dataset(&self) -> Dataset {
        Dataset::new(self.x.clone(), self.nf(), self.y.clone())
            .unwrap()
            .with_groups(self.sizes.clone())
            .unwrap()
            .with_feature_names(self.names.clone())
            .unwrap()
    }

    /// Groups `from..to` as a table of their own.
    fn groups(&self, from: usize, to: usize) -> Table {
        let start: usize = self.sizes[..from].iter().sum();
        let end: usize = self.sizes[..to].iter().sum();
        let nf = self.nf();
        Table {
            names: self.names.clone(),
            x: self.x[start * nf..end * nf].to_vec(),
            y: self.y[start..end].to_vec(),
            sizes: self.sizes[from..to].to_vec(),
        }
    }

    fn read_csv(path: &Path) -> Table {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        assert!(header.len() > 2 && header[0] == "label" && header[1] == "group", "header must be label,group,...");
        let names: Vec<String> = header[2..].iter().map(|s| s.to_string()).collect();
        let (mut x, mut y, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
        let mut last_group: Option<String> = None;
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), header.len(), "ragged row {line}");
            y.push(cells[0].trim().parse::<f64>().expect("label"));
            if last_group.as_deref() == Some(cells[1]) {
                *sizes.last_mut().unwrap() += 1;
            } else {
                sizes.push(1);
                last_group = Some(cells[1].to_string());
            }
            x.extend(cells[2..].iter().map(|c| c.trim().parse::<f64>().unwrap_or(f64::NAN)));
        }
        Table { names, x, y, sizes }
    }

    fn write_csv(&self, path: &Path) {
        let mut out = String::from("label,group,");
        out.push_str(&self.names.join(","));
        out.push('\n');
        let nf = self.nf();
        let mut row = 0;
        for (g, &size) in self.sizes.iter().enumerate() {
            for _ in 0..size {
                write!(out, "{},{g}", self.y[row]).unwrap();
                for &v in &self.x[row * nf..(row + 1) * nf] {
                    if v.is_nan() {
                        out.push(',');
                    } else {
                        write!(out, ",{v}").unwrap();
                    }
                }
                out.push('\n');
                row += 1;
            }
        }
        std::fs::write(path, out).expect("write csv");
    }
}

fn synthetic(groups: usize, items: usize, nf: usize, seed: u64) -> Table {
    assert!(nf >= 20, "the synthetic set needs at least 20 features");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut normal = move || {
        // Box-Muller: rand_distr is not a dependency of this crate.
        let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut raw = Vec::new();
    for _ in 0..groups {
        let shift = normal();
        for _ in 0..items {
            let row: Vec<f64> = (0..nf).map(|j| normal() + if j < 3 { 0.5 * shift } else { 0.0 }).collect();
            let r = 1.2 * row[0] + 0.8 * row[1] - 0.6 * row[2]
                + 0.7 * row[3] * row[4]
                + (2.0 * row[5]).sin()
                + 0.5 * row[6].abs()
                + 0.4 * row[7].max(0.0)
                - 0.3 * row[8] * row[9]
                + 0.3 * row[10]
                + 0.2 * row[11]
                + 0.8 * normal();
            raw.push(r);
            x.extend(
                row.iter()
                    .enumerate()
                    .map(|(j, &v)| if (10..20).contains(&j) && normal() > 1.645 { f64::NAN } else { v }),
            );
        }
    }
    // Relevance by global quantiles: 50% 0, 25% 1, 15% 2, 7% 3, 3% 4.
    let mut sorted = raw.clone();
    sorted.sort_by(f64::total_cmp);
    let cut = |q: f64| sorted[(q * (sorted.len() - 1) as f64) as usize];
    let cuts = [cut(0.5), cut(0.75), cut(0.9), cut(0.97)];
    y.extend(raw.iter().map(|&r| cuts.iter().filter(|&&c| r > c).count() as f64));
    Table { names: (0..nf).map(|j| format!("f{j}")).collect(), x, y, sizes: vec![items; groups] }
}

/// Mean NDCG@k over groups, LightGBM's definition.
fn ndcg(y: &[f64], scores: &[f64], sizes: &[usize], k: usize) -> f64 {
    let gain = |l: f64| l.exp2() - 1.0;
    let disc = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let (mut total, mut at) = (0.0, 0);
    for &n in sizes {
        let (l, s) = (&y[at..at + n], &scores[at..at + n]);
        at += n;
        let mut ideal = l.to_vec();
        ideal.sort_by(|a, b| b.total_cmp(a));
        let best: f64 = ideal.iter().take(k).enumerate().map(|(i, &l)| gain(l) * disc(i)).sum();
        if best <= 0.0 {
            total += 1.0;
            continue;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        total += order.iter().take(k).enumerate().map(|(i, &r)| gain(l[r]) * disc(i)).sum::<f64>() / best;
    }
    total / sizes.len() as f64
}

fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().expect("tempdir");
    let (train_t, valid_t, source) = match (&args.data, &args.valid) {
        (Some(d), Some(v)) => (Table::read_csv(d), Table::read_csv(v), format!("{} / {}", d.display(), v.display())),
        (Some(d), None) => {
            let all = Table::read_csv(d);
            let cut = all.sizes.len() * 4 / 5;
            (
                all.groups(0, cut),
                all.groups(cut, all.sizes.len()),
                format!("{} (last 20% groups as valid)", d.display()),
            )
        }
        (None, _) => (
            synthetic(args.groups, args.items, args.features, 1),
            synthetic((args.groups * 2 / 5).max(1), args.items, args.features, 2),
            format!("synthetic {} groups × {} items × {} features", args.groups, args.items, args.features),
        ),
    };
    let (train_csv, valid_csv) = (dir.path().join("train.csv"), dir.path().join("valid.csv"));
    train_t.write_csv(&train_csv);
    valid_t.write_csv(&valid_csv);
    let nf = train_t.nf();
    println!(
        "{source}: train {} rows / {} groups, valid {} rows / {} groups, {nf} features; lambdarank {} iterations, \
         {} leaves, lr {}, min_data_in_leaf {}, 1 thread",
        train_t.y.len(),
        train_t.sizes.len(),
        valid_t.y.len(),
        valid_t.sizes.len(),
        args.iterations,
        args.leaves,
        args.learning_rate,
        args.min_data
    );

    let params = Params {
        objective: Task::LambdaRank,
        num_iterations: args.iterations,
        learning_rate: args.learning_rate,
        num_leaves: args.leaves,
        min_data_in_leaf: args.min_data,
        eval_at: 10,
        num_threads: 1,
        seed: 42,
        ..Params::default()
    };
    let peer_params = format!(
        r#"{{"num_iterations": {}, "learning_rate": {}, "num_leaves": {}, "min_data_in_leaf": {}, "max_bin": {}, "lambdarank_truncation_level": {}, "eval_at": 10}}"#,
        params.num_iterations,
        params.learning_rate,
        params.num_leaves,
        params.min_data_in_leaf,
        params.max_bin,
        params.lambdarank_truncation_level
    );
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    let (train_path, valid_path, out_path) = (path(&train_csv), path(&valid_csv), path(dir.path()));
    let repeats = args.repeats.to_string();
    let theirs = peer(
        &args.python,
        &[
            "rank-run",
            "--train",
            &train_path,
            "--valid",
            &valid_path,
            "--params",
            &peer_params,
            "--repeats",
            &repeats,
            "--out",
            &out_path,
        ],
    );
    let lgb_pred = read_f64(&dir.path().join("lgb_valid.pred"));

    let (train_set, mut times, mut forest) = (train_t.dataset(), Vec::new(), None);
    for _ in 0..args.repeats {
        let t = Instant::now();
        let f = train(&params, &train_set, None).unwrap().forest;
        times.push(t.elapsed().as_secs_f64());
        forest = Some(f);
    }
    let forest = forest.unwrap();
    let ours_pred = forest.predict_raw_batch(&valid_t.x);
    let mut batch = Vec::new();
    for _ in 0..args.repeats.max(3) {
        let t = Instant::now();
        std::hint::black_box(forest.predict_raw_batch(std::hint::black_box(&valid_t.x)));
        batch.push(t.elapsed().as_secs_f64());
    }
    let blocks: Vec<&[f64]> = valid_t.x.chunks_exact(500 * nf).collect();
    let mut lat = Vec::new();
    for i in 0..blocks.len().max(1000) {
        let t = Instant::now();
        std::hint::black_box(forest.predict_raw_batch(std::hint::black_box(blocks[i % blocks.len()])));
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);

    let n_valid = valid_t.y.len() as f64;
    let (ours_train, lgb_train) = (median(times), json_number(&theirs, "train_s"));
    let lgb_construct = json_number(&theirs, "construct_s");
    println!();
    println!("| | trees | train s 1t | batch rows/s 1t | 500-row block p50 µs | p99 µs | NDCG@10 valid |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| LightGBM 4.7.0 | {} | {lgb_train:.3} (+{lgb_construct:.3} Dataset) | {:.0} | {:.0} | {:.0} | {:.4} |",
        json_number(&theirs, "trees"),
        json_number(&theirs, "batch_rows_per_s"),
        json_number(&theirs, "p50_us"),
        json_number(&theirs, "p99_us"),
        ndcg(&valid_t.y, &lgb_pred, &valid_t.sizes, 10),
    );
    println!(
        "| cascade-rank | {} | {ours_train:.3} | {:.0} | {:.0} | {:.0} | {:.4} |",
        forest.trees.len(),
        n_valid / median(batch),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        ndcg(&valid_t.y, &ours_pred, &valid_t.sizes, 10),
    );
    println!(
        "\ntraining time ours / LightGBM: {:.2}× (train only), {:.2}× (LightGBM incl. Dataset construction)",
        ours_train / lgb_train,
        ours_train / (lgb_train + lgb_construct)
    );
}
