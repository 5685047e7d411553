//! The global temporal top-K protocol (`shared/bench/PROTOCOL.md` §1–2, reference code
//! `shared/bench/common.py`).
//!
//! - A [`Split`] holds train and test rows. Train becomes an implicit-feedback
//!   [`Interactions`] matrix (every row a positive with value 1.0, repeated pairs count once);
//!   catalogue = train items, users = train users. **Dense indices follow ascending id order**
//!   ([`compare_ids`]: numerically when both ids are integers), as the reference's `Encoded` does,
//!   so "ties by smaller item index" means "ties by smaller item id".
//! - Evaluation users = train users with at least one test row, in ascending index (= id) order.
//!   A user's ground truth = the *set* of items of their test rows, including items absent from
//!   train: they cannot be recommended and cost recall.
//! - A model recommends, per evaluation user, distinct catalogue items the user does not have in
//!   train, best first ([`top_k_excluding_seen`], [`recommend_all`]); [`evaluate`] checks that and
//!   averages the [`metrics`] over users with equal weight.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use cascade_core::interactions::{Csr, IdMap, Interactions};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::metrics;

/// The test fraction of the protocol (and of its validation slice).
pub const TEST_FRACTION: f64 = 0.1;

/// One rating / interaction with its original ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub user: String,
    pub item: String,
    pub rating: f32,
    /// Seconds since the epoch in the MovieLens files; any monotone unit works.
    pub ts: i64,
}

/// Orders ids as the reference does with integer ids: two ids that both parse as `i64` compare as
/// numbers ("9" < "10"); an integer id sorts before any other id; other ids compare bytewise.
/// Numerically equal spellings ("7", "007") fall back to bytewise order, so this is a total order.
pub fn compare_ids(a: &str, b: &str) -> Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// An id with its integer value parsed once, ordered as [`compare_ids`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdKey<'a>(Option<i64>, &'a str);

impl<'a> IdKey<'a> {
    fn new(id: &'a str) -> Self {
        IdKey(id.parse().ok(), id)
    }
}

impl Ord for IdKey<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0, other.0) {
            (Some(x), Some(y)) => x.cmp(&y).then_with(|| self.1.cmp(other.1)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => self.1.cmp(other.1),
        }
    }
}

impl PartialOrd for IdKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Sorts rows by `(ts, user, item)` (ids by [`compare_ids`]), stably, as `temporal_split` does.
fn sort_rows(rows: Vec<Row>) -> Vec<Row> {
    let mut order: Vec<(i64, IdKey<'_>, IdKey<'_>, usize)> =
        rows.iter().enumerate().map(|(n, r)| (r.ts, IdKey::new(&r.user), IdKey::new(&r.item), n)).collect();
    // The row number as last key makes the unstable sort stable.
    order.sort_unstable();
    let perm: Vec<usize> = order.into_iter().map(|(.., n)| n).collect();
    let mut slots: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
    perm.into_iter().map(|n| slots[n].take().expect("a permutation")).collect()
}

/// `floor(fraction · n + 0.5)`, in `f64` exactly as the reference computes it.
fn n_test(n: usize, fraction: f64) -> usize {
    (fraction * n as f64 + 0.5).floor() as usize
}

/// Counts describing a split, as in `stats.json` / RESULTS.md §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitStats {
    pub train_rows: usize,
    pub test_rows: usize,
    /// Distinct train users (matrix rows).
    pub train_users: usize,
    /// Distinct train items (the catalogue, matrix columns).
    pub train_items: usize,
    /// Distinct users with a test row (including cold-start users).
    pub test_users: usize,
    pub eval_users: usize,
    /// Σ over evaluation users of |ground truth| (distinct test items).
    pub eval_test_interactions: usize,
    /// Test rows (of any user) whose item is not in the catalogue.
    pub test_rows_item_not_in_train: usize,
    /// `ts` of the first test row (the cut), if any.
    pub first_test_ts: Option<i64>,
    /// `ts` of the last train row, if any.
    pub last_train_ts: Option<i64>,
}

/// A train/test split with everything the protocol derives from it. See the module docs.
#[derive(Debug, Clone)]
pub struct Split {
    train: Interactions,
    train_rows: Vec<Row>,
    test_rows: Vec<Row>,
    eval_users: Vec<u32>,
    /// Per user index: distinct truth item ids in [`compare_ids`] order (empty if not evaluated).
    truth: Vec<Vec<String>>,
    /// Per user index: the truth items that are in the catalogue, as sorted item indices.
    truth_items: Vec<Vec<u32>>,
    /// Per item index: distinct train users who have the item.
    item_users: Vec<u32>,
    stats: SplitStats,
}

impl Split {
    /// Reads a committed split: gzip'd (by a `.gz` extension; plain text otherwise) TSV files
    /// without header, columns `user item rating ts`. Row order is kept. Blank lines are skipped.
    pub fn load(train: &Path, test: &Path) -> Result<Split> {
        Ok(Split::from_rows(read_tsv(train)?, read_tsv(test)?))
    }

    /// A split from given train and test rows, in the given order (no re-sorting, no cut).
    pub fn from_rows(train_rows: Vec<Row>, test_rows: Vec<Row>) -> Split {
        let mut users: Vec<IdKey<'_>> = train_rows.iter().map(|r| IdKey::new(&r.user)).collect();
        users.sort_unstable();
        users.dedup();
        let mut items: Vec<IdKey<'_>> = train_rows.iter().map(|r| IdKey::new(&r.item)).collect();
        items.sort_unstable();
        items.dedup();
        let mut user_map = IdMap::new();
        for u in &users {
            user_map.get_or_insert(u.1);
        }
        let mut item_map = IdMap::new();
        for i in &items {
            item_map.get_or_insert(i.1);
        }
        let (n_users, n_items) = (user_map.len(), item_map.len());

        let triplets = train_rows
            .iter()
            .map(|r| {
                let u = user_map.get(&r.user).expect("a train user");
                let i = item_map.get(&r.item).expect("a train item");
                (u, i, 1.0)
            })
            .collect();
        let mut matrix = Csr::from_triplets(n_users, n_items, triplets);
        // Implicit and binary: a repeated (user, item) pair is one interaction.
        matrix.values.fill(1.0);
        let mut item_users = vec![0u32; n_items];
        for &i in &matrix.indices {
            item_users[i as usize] += 1;
        }

        let mut truth: Vec<Vec<String>> = vec![Vec::new(); n_users];
        let mut test_users = HashSet::new();
        let mut test_rows_item_not_in_train = 0;
        for r in &test_rows {
            test_users.insert(r.user.as_str());
            if item_map.get(&r.item).is_none() {
                test_rows_item_not_in_train += 1;
            }
            if let Some(u) = user_map.get(&r.user) {
                truth[u as usize].push(r.item.clone());
            }
        }
        let mut truth_items: Vec<Vec<u32>> = vec![Vec::new(); n_users];
        let mut eval_users = Vec::new();
        let mut eval_test_interactions = 0;
        for (u, t) in truth.iter_mut().enumerate() {
            if t.is_empty() {
                continue;
            }
            t.sort_unstable_by(|a, b| compare_ids(a, b));
            t.dedup();
            let mut idx: Vec<u32> = t.iter().filter_map(|id| item_map.get(id)).collect();
            idx.sort_unstable();
            truth_items[u] = idx;
            eval_test_interactions += t.len();
            eval_users.push(u32::try_from(u).expect("fewer than 2^32 users"));
        }

        let stats = SplitStats {
            train_rows: train_rows.len(),
            test_rows: test_rows.len(),
            train_users: n_users,
            train_items: n_items,
            test_users: test_users.len(),
            eval_users: eval_users.len(),
            eval_test_interactions,
            test_rows_item_not_in_train,
            first_test_ts: test_rows.first().map(|r| r.ts),
            last_train_ts: train_rows.last().map(|r| r.ts),
        };
        Split {
            train: Interactions { users: user_map, items: item_map, matrix },
            train_rows,
            test_rows,
            eval_users,
            truth,
            truth_items,
            item_users,
            stats,
        }
    }

    /// The global temporal split of PROTOCOL §1: sort by `(ts, user, item)` ascending (stable; ids
    /// by [`compare_ids`]), then the last `floor(test_fraction · N + 0.5)` rows are test.
    /// The protocol uses [`TEST_FRACTION`].
    pub fn temporal(rows: Vec<Row>, test_fraction: f64) -> Result<Split> {
        if !(0.0..=1.0).contains(&test_fraction) {
            return Err(Error::InvalidFraction(test_fraction));
        }
        Ok(Split::cut(rows, test_fraction))
    }

    fn cut(rows: Vec<Row>, test_fraction: f64) -> Split {
        let mut train = sort_rows(rows);
        let test = train.split_off(train.len() - n_test(train.len(), test_fraction));
        Split::from_rows(train, test)
    }

    /// The validation slice for tuning: the temporal rule applied to the train rows
    /// ([`TEST_FRACTION`]), i.e. train = the first rows of train, test = the last
    /// `floor(0.1 · N_train + 0.5)`. Like the reference, the train rows are (stably) re-sorted by
    /// `(ts, user, item)` first, which changes nothing for rows already in that order.
    pub fn validation(&self) -> Split {
        Split::cut(self.train_rows.clone(), TEST_FRACTION)
    }

    /// The binary user × item train matrix with its id maps (indices in ascending id order).
    pub fn train(&self) -> &Interactions {
        &self.train
    }

    /// Train rows in split order (with timestamps and ratings, for models that want them).
    pub fn train_rows(&self) -> &[Row] {
        &self.train_rows
    }

    pub fn test_rows(&self) -> &[Row] {
        &self.test_rows
    }

    /// Number of train users (matrix rows).
    pub fn n_users(&self) -> usize {
        self.train.users.len()
    }

    /// Catalogue size (matrix columns).
    pub fn n_items(&self) -> usize {
        self.train.items.len()
    }

    /// User indices of the evaluation users, ascending. [`evaluate`] wants one list per entry, in
    /// this order.
    pub fn eval_users(&self) -> &[u32] {
        &self.eval_users
    }

    /// The ground truth of user index `user`: distinct test item ids, including items not in the
    /// catalogue; empty for a user without test rows. Panics if `user` is out of range.
    pub fn truth(&self, user: u32) -> &[String] {
        &self.truth[user as usize]
    }

    /// The ground-truth items of `user` that are in the catalogue, as sorted item indices.
    pub fn truth_items(&self, user: u32) -> &[u32] {
        &self.truth_items[user as usize]
    }

    /// The sorted item indices `user` has in train (to exclude from recommendations).
    pub fn seen(&self, user: u32) -> &[u32] {
        self.train.matrix.row(user as usize).0
    }

    /// Per item index: the number of distinct train users who have it (popularity for novelty).
    pub fn item_users(&self) -> &[u32] {
        &self.item_users
    }

    pub fn stats(&self) -> SplitStats {
        self.stats
    }
}

/// Reads rows from a TSV file without header, columns `user item rating ts` (gzip'd if the name
/// ends in `.gz`), in file order; blank lines are skipped. MovieLens-100k's `u.data` has this shape.
pub fn read_tsv(path: &Path) -> Result<Vec<Row>> {
    let file = File::open(path).map_err(Error::io(path))?;
    let mut reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(Error::io(path))? == 0 {
            break;
        }
        line_no += 1;
        let line = std::str::from_utf8(&buf).map_err(|e| Error::malformed(path, line_no, e.to_string()))?;
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        rows.push(parse_row(line).map_err(|reason| Error::malformed(path, line_no, reason))?);
    }
    Ok(rows)
}

fn parse_row(line: &str) -> std::result::Result<Row, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [user, item, rating, ts] = fields[..] else {
        return Err(format!("expected 4 tab-separated fields (user, item, rating, ts), found {}", fields.len()));
    };
    if user.is_empty() || item.is_empty() {
        return Err("empty user or item id".into());
    }
    let rating = rating.trim().parse::<f32>().map_err(|e| format!("rating {rating:?}: {e}"))?;
    let ts = ts.trim().parse::<i64>().map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    Ok(Row { user: user.to_string(), item: item.to_string(), rating, ts })
}

/// A candidate ordered best first: higher score, then smaller index; NaN ranks below everything.
#[derive(Debug, Clone, Copy)]
struct Cand(f32, u32);

impl Ord for Cand {
    /// `Less` = ranks earlier.
    fn cmp(&self, other: &Self) -> Ordering {
        let by_score = match (self.0.is_nan(), other.0.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => other.0.partial_cmp(&self.0).expect("not NaN"),
        };
        by_score.then(self.1.cmp(&other.1))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Cand {}

/// The `k` best item indices by `scores` (one score per catalogue item), skipping `seen` (sorted
/// ascending, as a CSR row is), best first. Deterministic: higher score first, equal scores by
/// **smaller item index** (= smaller item id for a [`Split`]'s matrix), `-0.0 == 0.0`, NaN below
/// every number. Shorter than `k` only if fewer than `k` items are unseen. O(n log k).
pub fn top_k_excluding_seen(scores: &[f32], seen: &[u32], k: usize) -> Vec<u32> {
    debug_assert!(seen.windows(2).all(|w| w[0] < w[1]), "seen must be sorted and unique");
    if k == 0 {
        return Vec::new();
    }
    let mut heap: BinaryHeap<Cand> = BinaryHeap::with_capacity(k + 1);
    let mut seen = seen.iter().peekable();
    for (i, &s) in scores.iter().enumerate() {
        let i = u32::try_from(i).expect("fewer than 2^32 items");
        while seen.next_if(|&&x| x < i).is_some() {}
        if seen.next_if_eq(&&i).is_some() {
            continue;
        }
        let c = Cand(s, i);
        if heap.len() < k {
            heap.push(c);
        } else if let Some(mut worst) = heap.peek_mut()
            && c < *worst
        {
            *worst = c;
        }
    }
    heap.into_sorted_vec().into_iter().map(|c| c.1).collect()
}

/// Top-`k` lists for every evaluation user of `split`, in [`Split::eval_users`] order, scored in
/// parallel (rayon). `score(user, buf)` fills `buf` (one slot per catalogue item, zeroed before
/// each call) with the user's scores; seen items are excluded and ties broken as in
/// [`top_k_excluding_seen`].
pub fn recommend_all<F>(split: &Split, k: usize, score: F) -> Vec<Vec<u32>>
where
    F: Fn(u32, &mut [f32]) + Sync,
{
    let n = split.n_items();
    split
        .eval_users()
        .par_iter()
        .map_init(
            || vec![0f32; n],
            |buf, &u| {
                buf.fill(0.0);
                score(u, buf);
                top_k_excluding_seen(buf, split.seen(u), k)
            },
        )
        .collect()
}

/// Averaged top-`k` metrics over the evaluation users (equal weight per user).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub k: usize,
    pub ndcg: f64,
    pub recall: f64,
    pub hr: f64,
    pub mrr: f64,
    pub map: f64,
    /// Distinct recommended items / catalogue size.
    pub coverage: f64,
    /// Mean self-information in bits of the recommended items ([`metrics::novelty`]), with
    /// popularity = distinct train users of the item over train users.
    pub novelty: f64,
    pub eval_users: usize,
}

/// Evaluates one list per evaluation user (`recs[j]` belongs to `split.eval_users()[j]`): item
/// indices into `split.train().items`, best first. Only the first `k` entries count (longer lists
/// are cut, as the reference does; shorter lists simply have fewer chances). The evaluated prefix
/// must hold distinct catalogue items the user does not have in train; otherwise this returns
/// [`Error::InvalidRecommendations`] naming the user and item.
pub fn evaluate<L: AsRef<[u32]>>(split: &Split, k: usize, recs: &[L]) -> Result<Report> {
    let users = split.eval_users();
    if users.is_empty() {
        return Err(Error::NoEvalUsers);
    }
    if recs.len() != users.len() {
        return Err(Error::InvalidRecommendations(format!(
            "{} lists for {} evaluation users",
            recs.len(),
            users.len()
        )));
    }
    let ids = &split.train;
    let mut sums = [0.0f64; 5];
    let mut distinct = HashSet::new();
    for (&u, list) in users.iter().zip(recs) {
        let list = &list.as_ref()[..list.as_ref().len().min(k)];
        let seen = split.seen(u);
        distinct.clear();
        for &i in list {
            let bad = if i as usize >= split.n_items() {
                "is not a catalogue index"
            } else if !distinct.insert(i) {
                "is recommended twice"
            } else if seen.binary_search(&i).is_ok() {
                "is already in the user's train history"
            } else {
                continue;
            };
            let item = if (i as usize) < split.n_items() { ids.items.id(i).to_string() } else { format!("#{i}") };
            return Err(Error::InvalidRecommendations(format!(
                "item {item} (index {i}) {bad} for user {}",
                ids.users.id(u)
            )));
        }
        let hits = metrics::hits(list, split.truth_items(u), k);
        let n_truth = split.truth(u).len();
        sums[0] += metrics::ndcg_at_k(&hits, n_truth, k);
        sums[1] += metrics::recall_at_k(&hits, n_truth, k);
        sums[2] += metrics::hr_at_k(&hits, k);
        sums[3] += metrics::mrr_at_k(&hits, k);
        sums[4] += metrics::map_at_k(&hits, n_truth, k);
    }
    let n = users.len() as f64;
    Ok(Report {
        k,
        ndcg: sums[0] / n,
        recall: sums[1] / n,
        hr: sums[2] / n,
        mrr: sums[3] / n,
        map: sums[4] / n,
        coverage: metrics::coverage_at_k(recs, k, split.n_items()),
        novelty: metrics::novelty(recs, k, split.item_users(), split.n_users()),
        eval_users: users.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, item: &str, ts: i64) -> Row {
        Row { user: user.into(), item: item.into(), rating: 4.0, ts }
    }

    /// Train: user 1 {10, 20}, 2 {10, 30, 9}, 3 {10, 20, 40}, 4 {30, 9}.
    /// Test: user 1 {30, 40, 99}, 2 {20}, 3 {50}, 5 {10} (cold start, not evaluated).
    fn tiny() -> (Vec<Row>, Vec<Row>) {
        let train = [
            ("1", "10"),
            ("2", "10"),
            ("3", "10"),
            ("1", "20"),
            ("2", "30"),
            ("2", "9"),
            ("3", "20"),
            ("3", "40"),
            ("4", "30"),
            ("4", "9"),
        ];
        let test = [("1", "30"), ("1", "40"), ("1", "99"), ("2", "20"), ("3", "50"), ("5", "10")];
        let train = train.iter().enumerate().map(|(t, (u, i))| row(u, i, t as i64 + 1)).collect();
        let test = test.iter().enumerate().map(|(t, (u, i))| row(u, i, t as i64 + 100)).collect();
        (train, test)
    }

    /// Popularity as the reference: score = train count, ties by smaller item index (= id).
    fn pop_recs(split: &Split, k: usize) -> Vec<Vec<u32>> {
        let counts: Vec<f32> = split.item_users().iter().map(|&c| c as f32).collect();
        recommend_all(split, k, |_, buf| buf.copy_from_slice(&counts))
    }

    #[test]
    fn ids_compare_numerically_when_both_are_integers() {
        assert_eq!(compare_ids("9", "10"), Ordering::Less);
        assert_eq!(compare_ids("-1", "0"), Ordering::Less);
        assert_eq!(compare_ids("10", "a"), Ordering::Less);
        assert_eq!(compare_ids("b", "a"), Ordering::Greater);
        assert_eq!(compare_ids("007", "7"), Ordering::Less);
        assert_eq!(compare_ids("7", "7"), Ordering::Equal);
    }

    #[test]
    fn split_indexes_by_id_and_derives_truth() {
        let (train, test) = tiny();
        let s = Split::from_rows(train, test);
        assert_eq!(s.train().items.ids(), ["9", "10", "20", "30", "40"]);
        assert_eq!(s.train().users.ids(), ["1", "2", "3", "4"]);
        assert_eq!(s.eval_users(), [0, 1, 2]);
        assert_eq!(s.truth(0), ["30", "40", "99"]);
        assert_eq!(s.truth_items(0), [3, 4]);
        assert_eq!(s.truth(2), ["50"]);
        assert!(s.truth_items(2).is_empty() && s.truth(3).is_empty());
        assert_eq!(s.seen(1), [0, 1, 3]);
        assert_eq!(s.item_users(), [2, 3, 2, 2, 1]);
        let st = s.stats();
        assert_eq!((st.train_rows, st.test_rows, st.train_users, st.train_items), (10, 6, 4, 5));
        assert_eq!(
            (st.test_users, st.eval_users, st.eval_test_interactions, st.test_rows_item_not_in_train),
            (4, 3, 5, 2)
        );
        assert_eq!((st.first_test_ts, st.last_train_ts), (Some(100), Some(10)));
        assert_eq!(s.train().matrix.nnz(), 10);
    }

    #[test]
    fn popularity_on_the_tiny_split_by_hand() {
        let (train, test) = tiny();
        let s = Split::from_rows(train, test);
        // Counts: 10 → 3; 9, 20, 30 → 2; 40 → 1. Order: 10, 9, 20, 30, 40 (ties by id, numerically:
        // a string order would put "9" last).
        let recs = pop_recs(&s, 2);
        let ids = |l: &Vec<u32>| l.iter().map(|&i| s.train().items.id(i).to_string()).collect::<Vec<_>>();
        // user 1 (seen 10, 20) → [9, 30]; user 2 (seen 10, 30, 9) → [20, 40]; user 3 (seen 10, 20, 40) → [9, 30].
        assert_eq!(recs.iter().map(ids).collect::<Vec<_>>(), [["9", "30"], ["20", "40"], ["9", "30"]]);
        let r = evaluate(&s, 2, &recs).unwrap();
        // user 1: truth {30, 40, 99}, hits [0, 1]:
        //   NDCG = (1/log2 3) / (1 + 1/log2 3) = 0.6309297535714575 / 1.6309297535714575 = 0.38685280723454163,
        //   recall 1/3, HR 1, MRR 1/2, AP = P@2 / min(2, 3) = (1/2) / 2 = 1/4.
        // user 2: truth {20}, hits [1, 0]: NDCG 1, recall 1, HR 1, MRR 1, AP = 1 / min(2, 1) = 1.
        // user 3: truth {50} (not in train), no hit: all 0.
        let u1_ndcg = 0.6309297535714575 / 1.6309297535714575;
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} != {b}");
        close(r.ndcg, (u1_ndcg + 1.0) / 3.0);
        close(r.recall, (1.0 / 3.0 + 1.0) / 3.0);
        close(r.hr, 2.0 / 3.0);
        close(r.mrr, (0.5 + 1.0) / 3.0);
        close(r.map, (0.25 + 1.0) / 3.0);
        // Distinct {9, 30, 20, 40} of 5 items.
        close(r.coverage, 0.8);
        // 4 users; 9, 20, 30 known by 2 → 1 bit, 40 by 1 → 2 bits. Slots: 1+1, 1+2, 1+1 = 7 bits / 6.
        close(r.novelty, 7.0 / 6.0);
        assert_eq!((r.k, r.eval_users), (2, 3));
    }

    #[test]
    fn evaluate_refuses_broken_lists() {
        let (train, test) = tiny();
        let s = Split::from_rows(train, test);
        let ok = vec![vec![0u32], vec![2], vec![0]];
        assert!(evaluate(&s, 2, &ok).is_ok());
        let err = |recs: Vec<Vec<u32>>| evaluate(&s, 2, &recs).unwrap_err().to_string();
        assert!(err(vec![vec![0], vec![2]]).contains("2 lists for 3"));
        // Item "10" (index 1) is in user 1's train history.
        assert!(
            err(vec![vec![1], vec![2], vec![0]])
                .contains("item 10 (index 1) is already in the user's train history for user 1")
        );
        assert!(err(vec![vec![0, 0], vec![2], vec![0]]).contains("twice"));
        assert!(err(vec![vec![7], vec![2], vec![0]]).contains("#7"));
        // Beyond k nothing is checked or counted.
        assert!(evaluate(&s, 1, &[vec![0u32, 1], vec![2], vec![0]]).is_ok());
        let empty = Split::from_rows(vec![row("1", "1", 1)], vec![]);
        assert!(matches!(evaluate::<Vec<u32>>(&empty, 10, &[]), Err(Error::NoEvalUsers)));
    }

    #[test]
    fn temporal_sorts_by_ts_user_item_with_numeric_ids_and_cuts() {
        let (train, test) = tiny();
        let mut all: Vec<Row> = test.into_iter().chain(train).collect();
        all.reverse();
        // 16 rows, floor(0.375 · 16 + 0.5) = 6 test rows: exactly the tiny test set.
        let s = Split::temporal(all, 0.375).unwrap();
        let (train, test) = tiny();
        assert_eq!((s.train_rows(), s.test_rows()), (&train[..], &test[..]));

        // Equal ts: users 9 < 10 numerically, so user 10's row is the last one and goes to test;
        // for user 9, items 2 < 10.
        let rows = vec![row("10", "1", 5), row("9", "10", 5), row("9", "2", 5), row("x", "1", 1)];
        let s = Split::temporal(rows, 0.25).unwrap();
        let order: Vec<(&str, &str)> =
            s.train_rows().iter().chain(s.test_rows()).map(|r| (r.user.as_str(), r.item.as_str())).collect();
        assert_eq!(order, [("x", "1"), ("9", "2"), ("9", "10"), ("10", "1")]);
        assert_eq!(s.test_rows().len(), 1);
        // floor(0.1 · 4 + 0.5) = 0; floor(0.1 · 5 + 0.5) = 1 (half rounds up).
        assert_eq!((n_test(4, 0.1), n_test(5, 0.1), n_test(15, 0.1), n_test(90_000, 0.1)), (0, 1, 2, 9_000));
        assert!(matches!(Split::temporal(vec![], 1.5), Err(Error::InvalidFraction(_))));
        assert!(matches!(Split::temporal(vec![], f64::NAN), Err(Error::InvalidFraction(_))));
    }

    #[test]
    fn validation_cuts_the_train_rows() {
        let (train, test) = tiny();
        let s = Split::from_rows(train.clone(), test);
        let v = s.validation();
        // floor(0.1 · 10 + 0.5) = 1: the last train row (user 4, item 9) is validation test.
        assert_eq!(v.train_rows(), &train[..9]);
        assert_eq!(v.test_rows(), &train[9..]);
        assert_eq!(v.train().users.ids(), ["1", "2", "3", "4"]);
        assert_eq!(v.eval_users(), [3]);
        assert_eq!(v.truth(3), ["9"]);
        assert_eq!(v.truth_items(3), [0]);
    }

    #[test]
    fn repeated_pairs_are_one_binary_interaction() {
        let s = Split::from_rows(vec![row("1", "a", 1), row("1", "a", 2), row("2", "a", 3)], vec![row("1", "b", 4)]);
        assert_eq!(s.train().matrix.values, [1.0, 1.0]);
        assert_eq!(s.item_users(), [2]);
        assert_eq!(s.truth_items(0), Vec::<u32>::new());
    }

    #[test]
    fn top_k_skips_seen_and_breaks_ties_by_index() {
        let scores = [0.5, 0.9, 0.5, f32::NAN, 0.9, -0.0, 0.0, 0.7];
        assert_eq!(top_k_excluding_seen(&scores, &[], 4), [1, 4, 7, 0]);
        assert_eq!(top_k_excluding_seen(&scores, &[1, 7], 3), [4, 0, 2]);
        // -0.0 == 0.0 (tie by index), NaN last, short when the catalogue runs out.
        assert_eq!(top_k_excluding_seen(&scores, &[0, 1, 2, 4, 7], 10), [5, 6, 3]);
        assert!(top_k_excluding_seen(&scores, &[], 0).is_empty());
        assert_eq!(top_k_excluding_seen(&[1.0; 5], &[0, 4], 2), [1, 2]);
    }

    #[test]
    fn load_reads_gzip_tsv_and_names_bad_lines() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let gz = |name: &str, text: &str| {
            let path = dir.path().join(name);
            let mut enc = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast());
            enc.write_all(text.as_bytes()).unwrap();
            enc.finish().unwrap();
            path
        };
        let train = gz("train.tsv.gz", "1\t10\t4\t100\n2\t10\t3\t101\r\n\n1\t20\t5\t102\n");
        let test = gz("test.tsv.gz", "2\t20\t4\t200");
        let s = Split::load(&train, &test).unwrap();
        assert_eq!(s.train_rows().len(), 3);
        assert_eq!(s.train_rows()[1], Row { user: "2".into(), item: "10".into(), rating: 3.0, ts: 101 });
        assert_eq!(s.truth(1), ["20"]);

        let bad = gz("bad.tsv.gz", "1\t10\t4\t100\n1\t11\t4\n");
        let e = Split::load(&bad, &test).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{}:2: expected 4", bad.display())), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        let bad = gz("bad2.tsv.gz", "1\t10\t4\tsoon\n");
        assert!(Split::load(&bad, &test).unwrap_err().to_string().contains(":1: timestamp \"soon\""));
        let e = Split::load(&dir.path().join("missing.tsv.gz"), &test).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Internal);
        // Plain text without .gz.
        let plain = dir.path().join("plain.tsv");
        std::fs::write(&plain, "1\t10\t4\t100\n").unwrap();
        assert_eq!(Split::load(&plain, &test).unwrap().train_rows().len(), 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn top_k_matches_a_full_sort(
                scores in proptest::collection::vec(0u8..6, 0..40),
                seen_mask in proptest::collection::vec(any::<bool>(), 40),
                k in 0usize..12,
            ) {
                let scores: Vec<f32> = scores.into_iter().map(f32::from).collect();
                let seen: Vec<u32> = (0..scores.len() as u32).filter(|&i| seen_mask[i as usize]).collect();
                let mut want: Vec<u32> = (0..scores.len() as u32).filter(|i| !seen.contains(i)).collect();
                want.sort_by(|&a, &b| scores[b as usize].total_cmp(&scores[a as usize]).then(a.cmp(&b)));
                want.truncate(k);
                prop_assert_eq!(top_k_excluding_seen(&scores, &seen, k), want);
            }

            #[test]
            fn roc_auc_is_the_pairwise_win_rate(
                data in proptest::collection::vec((0u8..5, any::<bool>()), 0..30),
            ) {
                let scores: Vec<f64> = data.iter().map(|&(s, _)| f64::from(s)).collect();
                let labels: Vec<bool> = data.iter().map(|&(_, l)| l).collect();
                let (mut wins, mut pairs) = (0.0, 0.0);
                for (i, &li) in labels.iter().enumerate() {
                    for (j, &lj) in labels.iter().enumerate() {
                        if li && !lj {
                            pairs += 1.0;
                            wins += match scores[i].total_cmp(&scores[j]) {
                                Ordering::Greater => 1.0,
                                Ordering::Equal => 0.5,
                                Ordering::Less => 0.0,
                            };
                        }
                    }
                }
                let got = metrics::roc_auc(&scores, &labels);
                if pairs == 0.0 {
                    prop_assert_eq!(got, None);
                } else {
                    prop_assert!((got.unwrap() - wins / pairs).abs() < 1e-12);
                }
            }
        }
    }
}
