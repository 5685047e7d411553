//! Shared by the examples: reads a committed split (shared/bench/PROTOCOL.md §1) and computes the
//! §2 top-10 metrics.

use std::collections::{HashMap, HashSet};
use std::process::Command;

use cascade_models::Csr;

pub const DEFAULT_SPLIT: &str = "/work/shared/data/ml-1m/split-u1to2998";

/// `(user, item)` pairs of a gzip'd `user \t item \t rating \t ts` file (via the `gzip` tool).
pub fn read_pairs(path: &str) -> Vec<(u64, u64)> {
    let out = Command::new("gzip").args(["-dc", path]).output().expect("run gzip");
    assert!(out.status.success(), "gzip -dc {path} failed");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.split('\t');
            let u = f.next().and_then(|x| x.parse().ok()).expect("user id");
            let i = f.next().and_then(|x| x.parse().ok()).expect("item id");
            (u, i)
        })
        .collect()
}

/// The binary train matrix (dense ids = ranks of the sorted distinct original ids, as
/// shared/bench/common.py), the original item id of every column, the evaluation users and
/// their test items (original ids, including items absent from train).
pub struct Split {
    pub train: Csr,
    pub items: Vec<u64>,
    pub eval_users: Vec<u32>,
    pub truth: HashMap<u32, HashSet<u64>>,
}

pub fn load(train_path: &str, test_path: &str) -> Split {
    let train = read_pairs(train_path);
    let test = read_pairs(test_path);
    let dense = |ids: &mut Vec<u64>| {
        ids.sort_unstable();
        ids.dedup();
        ids.iter().enumerate().map(|(i, &x)| (x, i as u32)).collect::<HashMap<u64, u32>>()
    };
    let mut users: Vec<u64> = train.iter().map(|p| p.0).collect();
    let mut items: Vec<u64> = train.iter().map(|p| p.1).collect();
    let uidx = dense(&mut users);
    let iidx = dense(&mut items);
    let triplets = train.iter().map(|&(u, i)| (uidx[&u], iidx[&i], 1.0)).collect();
    let mut m = Csr::from_triplets(users.len(), items.len(), triplets);
    m.values.iter_mut().for_each(|v| *v = 1.0);
    let mut truth: HashMap<u32, HashSet<u64>> = HashMap::new();
    for &(u, i) in &test {
        if let Some(&du) = uidx.get(&u) {
            truth.entry(du).or_default().insert(i);
        }
    }
    let mut eval_users: Vec<u32> = truth.keys().copied().collect();
    eval_users.sort_unstable();
    Split { train: m, items, eval_users, truth }
}

impl Split {
    /// `(NDCG@10, HR@10)` of top-10 lists (dense item ids) for `eval_users`, in order.
    pub fn ndcg_hr(&self, recs: &[Vec<u32>]) -> (f64, f64) {
        let disc: Vec<f64> = (1..=10).map(|r| 1.0 / ((r + 1) as f64).log2()).collect();
        let (mut ndcg, mut hr) = (0.0, 0.0);
        for (u, list) in self.eval_users.iter().zip(recs) {
            let rel = &self.truth[u];
            let dcg: f64 = list
                .iter()
                .take(10)
                .enumerate()
                .filter(|(_, i)| rel.contains(&self.items[**i as usize]))
                .map(|(r, _)| disc[r])
                .sum();
            if dcg > 0.0 {
                hr += 1.0;
                ndcg += dcg / disc[..rel.len().min(10)].iter().sum::<f64>();
            }
        }
        let n = self.eval_users.len() as f64;
        (ndcg / n, hr / n)
    }
}
