//! Integration tests of cascade-ann: recall against brute force, filters, incremental inserts,
//! metrics and the file format. Sizes are small so the suite stays fast in a debug build.

mod file;
mod search;

use cascade_ann::{Filter, Hnsw, Metric, brute_force};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` vectors of `dim` standard normals (Box-Muller), row-major.
pub fn gaussian(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n * dim)
        .map(|_| {
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            let v: f64 = rng.random();
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Mean recall@k of the index against brute force with the same filter.
pub fn recall(index: &Hnsw, data: &[f32], queries: &[f32], k: usize, ef: usize, filter: &Filter<'_>) -> f64 {
    let dim = index.dim();
    let mut hits = 0;
    let mut total = 0;
    for q in queries.chunks_exact(dim) {
        let exact = brute_force(index.metric(), dim, data, q, k, filter);
        let found = index.search(q, k, ef, filter);
        hits += found.iter().filter(|(id, _)| exact.iter().any(|(e, _)| e == id)).count();
        total += exact.len();
    }
    hits as f64 / total.max(1) as f64
}

pub fn metric_strategy() -> impl proptest::strategy::Strategy<Value = Metric> {
    proptest::sample::select(vec![Metric::InnerProduct, Metric::Cosine, Metric::L2])
}
