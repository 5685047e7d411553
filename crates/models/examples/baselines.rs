//! Every model of the crate on a committed split, with the settings chosen for it in
//! shared/bench/RESULTS.md, printing train time and the PROTOCOL.md §2 NDCG@10 / HR@10 (to set
//! beside the Python reference table).
//!
//! ```text
//! cargo run --release -p cascade-models --example baselines -- [SPLIT_DIR]
//! ```

use std::time::Instant;

use cascade_models::{Als, AlsParams, Bpr, BprParams, ItemKnn, ItemKnnParams, NegativeSampling, Popularity, Retriever};

#[path = "split/mod.rs"]
mod split;

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| split::DEFAULT_SPLIT.to_string());
    let data = split::load(&format!("{dir}/train.tsv.gz"), &format!("{dir}/test.tsv.gz"));
    let m = &data.train;
    println!("{dir}: {} users x {} items, {} eval users", m.rows, m.cols, data.eval_users.len());
    let report = |name: &str, fit: &dyn Fn() -> Box<dyn Retriever>| {
        let t = Instant::now();
        let model = fit();
        let train_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let recs = model.recommend_all(m, &data.eval_users, 10);
        let score_s = t.elapsed().as_secs_f64();
        let (ndcg, hr) = data.ndcg_hr(&recs);
        println!("{name:<34} NDCG@10 {ndcg:.4}  HR@10 {hr:.4}  train {train_s:.3} s  score {score_s:.3} s");
    };
    report("pop", &|| Box::new(Popularity::fit(m)));
    report("itemknn K=100", &|| Box::new(ItemKnn::fit(m, &ItemKnnParams { k: 100 }).unwrap()));
    let als = AlsParams { factors: 64, regularization: 30.0, alpha: 1.0, ..AlsParams::default() };
    report("als reg=30 alpha=1", &|| Box::new(Als::fit(m, &als).unwrap()));
    let bpr =
        BprParams { factors: 64, learning_rate: 0.01, regularization: 0.01, iterations: 100, ..BprParams::default() };
    report("bpr lr=0.01 (uniform negatives)", &|| Box::new(Bpr::fit(m, &bpr).unwrap()));
    let implicit_like = BprParams { negative_sampling: NegativeSampling::Popularity, ..bpr };
    report("bpr lr=0.01 (popularity negatives)", &|| Box::new(Bpr::fit(m, &implicit_like).unwrap()));
}
