use cascade_models::{Csr, Retriever};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Two user groups, each liking a random share of its own block of items; plus a few noise
/// interactions. One liked item per user is held out.
pub struct Planted {
    pub train: Csr,
    /// `(user, held-out item)`.
    pub test: Vec<(u32, u32)>,
    pub n_items: usize,
    /// Item block of each user (0 or 1) and block size.
    pub group: Vec<u32>,
    pub block: usize,
}

/// `users_a` users like block 0 (items `0..block`), `users_b` like block 1 (`block..2*block`).
pub fn planted(users_a: usize, users_b: usize, block: usize, density: f64, seed: u64) -> Planted {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_users = users_a + users_b;
    let n_items = 2 * block;
    let mut trip = Vec::new();
    let mut test = Vec::new();
    let mut group = Vec::new();
    for u in 0..n_users {
        let g = u32::from(u >= users_a);
        group.push(g);
        let base = g as usize * block;
        let mut liked: Vec<u32> = (0..block).filter(|_| rng.random_bool(density)).map(|i| (base + i) as u32).collect();
        if liked.len() < 3 {
            liked.extend([base as u32, base as u32 + 1, base as u32 + 2]);
            liked.sort_unstable();
            liked.dedup();
        }
        let held = liked.remove(rng.random_range(0..liked.len()));
        test.push((u as u32, held));
        for i in liked {
            trip.push((u as u32, i, 1.0));
        }
        // One off-block interaction of noise.
        let other = ((1 - g) as usize * block + rng.random_range(0..block)) as u32;
        trip.push((u as u32, other, 1.0));
    }
    Planted { train: Csr::from_triplets(n_users, n_items, trip), test, n_items, group, block }
}

/// Share of test pairs whose item is in the user's top-`k` (seen items excluded).
pub fn hit_rate(model: &dyn Retriever, p: &Planted, k: usize) -> f64 {
    let users: Vec<u32> = p.test.iter().map(|t| t.0).collect();
    let recs = model.recommend_all(&p.train, &users, k);
    let hits = p.test.iter().zip(&recs).filter(|((_, i), r)| r.contains(i)).count();
    hits as f64 / p.test.len() as f64
}

/// Training AUC: for every user, the share of (liked, not liked) item pairs ranked correctly.
pub fn train_auc(model: &dyn Retriever, m: &Csr) -> f64 {
    let mut total = 0.0;
    let mut scores = vec![0f32; model.n_items()];
    for u in 0..m.rows {
        let (items, vals) = m.row(u);
        model.score_user(u as u32, (items, vals), &mut scores);
        let (mut good, mut pairs) = (0u64, 0u64);
        for &i in items {
            for j in 0..m.cols as u32 {
                if items.binary_search(&j).is_err() {
                    pairs += 1;
                    good += u64::from(scores[i as usize] > scores[j as usize]);
                }
            }
        }
        total += good as f64 / pairs.max(1) as f64;
    }
    total / m.rows as f64
}

pub fn scores(model: &dyn Retriever, user: u32, history: (&[u32], &[f32])) -> Vec<f32> {
    let mut out = vec![0f32; model.n_items()];
    model.score_user(user, history, &mut out);
    out
}
