//! The HNSW graph: construction (parallel and incremental) and filtered search.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::Release};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::distance::{Block, LANES, blocks_for, normalize, to_blocks, to_blocks_scaled, unit_scale};
use crate::filter::Filter;
use crate::scratch::{Cand, Scratch};
use crate::simd::{Kernel, Task, dispatch, prefetch};
use crate::{Error, Result};

/// Highest layer a node can be placed on.
pub(crate) const MAX_LEVEL: usize = 16;
/// Largest supported `M`.
pub(crate) const MAX_M: usize = 256;
/// `entry` when the index is empty.
const NO_ENTRY: u64 = u64::MAX;

/// How similarity is measured. Every score is "higher is better".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Maximum inner product: score = `q · x`.
    InnerProduct,
    /// Cosine similarity: vectors and queries are normalised to unit length (a zero vector stays
    /// zero), score = `q̂ · x̂`.
    Cosine,
    /// Euclidean: score = `-‖q - x‖²` (the negated squared distance).
    L2,
}

impl Metric {
    pub(crate) fn code(self) -> u32 {
        match self {
            Metric::InnerProduct => 1,
            Metric::Cosine => 2,
            Metric::L2 => 3,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Metric> {
        match code {
            1 => Some(Metric::InnerProduct),
            2 => Some(Metric::Cosine),
            3 => Some(Metric::L2),
            _ => None,
        }
    }
}

/// Construction parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub metric: Metric,
    /// Neighbours per node on the upper layers (twice as many on layer 0). Default 16.
    pub m: usize,
    /// Size of the candidate list while inserting. Default 200.
    pub ef_construction: usize,
    /// Seeds the level assignment: node `i` (in insertion order) gets the same level for the same
    /// seed, however many threads build the index.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params { metric: Metric::InnerProduct, m: 16, ef_construction: 200, seed: 100 }
    }
}

impl Params {
    pub fn new(metric: Metric) -> Self {
        Params { metric, ..Params::default() }
    }

    pub fn m(mut self, m: usize) -> Self {
        self.m = m;
        self
    }

    pub fn ef_construction(mut self, ef: usize) -> Self {
        self.ef_construction = ef;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(2..=MAX_M).contains(&self.m) {
            return Err(Error::InvalidParams(format!("m must be in 2..={MAX_M}, got {}", self.m)));
        }
        if self.ef_construction == 0 {
            return Err(Error::InvalidParams("ef_construction must be at least 1".into()));
        }
        Ok(())
    }
}

/// A Hierarchical Navigable Small World graph (Malkov & Yashunin, 2016/2018).
///
/// Layout: all vectors in one contiguous array of 64-byte aligned rows (zero padded to a multiple
/// of 16 floats); layer 0 neighbour lists in one flat array of fixed-size slots
/// (`count, id, id, ...`, `2·M + 1` words per node); the upper layers in a second flat array with
/// a per-node offset. Internally nodes are numbered densely in insertion order; searches and
/// filters speak the caller's `u32` ids.
///
/// Concurrency: [`Hnsw::search`] takes `&self` and may run on many threads at once. Inserting
/// takes `&mut self` ([`Hnsw::insert`], [`Hnsw::insert_many`]); a service that inserts while
/// serving wraps the index in a `RwLock` (inserts are short) or builds a new one and swaps it.
/// [`Hnsw::build`] and [`Hnsw::insert_many`] insert in parallel on the rayon pool.
pub struct Hnsw {
    pub(crate) metric: Metric,
    pub(crate) dim: usize,
    /// Blocks per row.
    pub(crate) bpr: usize,
    pub(crate) m: usize,
    pub(crate) m0: usize,
    pub(crate) ef_construction: usize,
    pub(crate) seed: u64,
    pub(crate) vectors: Vec<Block>,
    /// Caller id of each node.
    pub(crate) labels: Vec<u32>,
    /// Caller id → node.
    pub(crate) ids: HashMap<u32, u32>,
    pub(crate) levels: Vec<u8>,
    /// Layer 0: `m0 + 1` words per node.
    pub(crate) links0: Vec<AtomicU32>,
    /// Start of each node's upper-layer slots in `upper` (`m + 1` words per layer above 0).
    pub(crate) upper_offsets: Vec<u32>,
    pub(crate) upper: Vec<AtomicU32>,
    /// `max_level << 32 | node`, or `NO_ENTRY`.
    pub(crate) entry: AtomicU64,
    pub(crate) locks: Vec<Mutex<()>>,
    entry_lock: Mutex<()>,
    pool: Mutex<Vec<Scratch>>,
}

impl fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hnsw")
            .field("metric", &self.metric)
            .field("dim", &self.dim)
            .field("len", &self.len())
            .field("m", &self.m)
            .field("ef_construction", &self.ef_construction)
            .field("max_level", &self.entry_point().map(|(_, l)| l))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// SplitMix64: a well-mixed 64-bit hash of `x`.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The layer of the `node`-th inserted node: `floor(-ln(u) / ln(M))`, `u` uniform in (0, 1].
pub(crate) fn level_for(seed: u64, node: u32, m: usize) -> u8 {
    let bits = splitmix(splitmix(seed) ^ u64::from(node)) >> 11; // 53 random bits
    let u = (bits as f64 + 1.0) / (1u64 << 53) as f64;
    let level = (-u.ln() / (m as f64).ln()).floor();
    level.min(MAX_LEVEL as f64) as u8
}

impl Hnsw {
    /// An empty index for `dim`-dimensional vectors.
    pub fn new(dim: usize, params: &Params) -> Result<Hnsw> {
        params.validate()?;
        if dim == 0 {
            return Err(Error::InvalidParams("dim must be at least 1".into()));
        }
        Ok(Hnsw {
            metric: params.metric,
            dim,
            bpr: blocks_for(dim),
            m: params.m,
            m0: 2 * params.m,
            ef_construction: params.ef_construction,
            seed: params.seed,
            vectors: Vec::new(),
            labels: Vec::new(),
            ids: HashMap::new(),
            levels: Vec::new(),
            links0: Vec::new(),
            upper_offsets: Vec::new(),
            upper: Vec::new(),
            entry: AtomicU64::new(NO_ENTRY),
            locks: Vec::new(),
            entry_lock: Mutex::new(()),
            pool: Mutex::new(Vec::new()),
        })
    }

    /// Builds an index over `vectors` (row-major, `dim` floats per row); row `i` gets id `i`.
    /// Inserts in parallel on the rayon pool.
    pub fn build(vectors: &[f32], dim: usize, params: &Params) -> Result<Hnsw> {
        let mut index = Hnsw::new(dim, params)?;
        if !vectors.len().is_multiple_of(dim) {
            return Err(Error::InvalidParams(format!("{} floats are not whole rows of {dim}", vectors.len())));
        }
        let n = vectors.len() / dim;
        if n > u32::MAX as usize {
            return Err(Error::Full(u32::MAX as usize));
        }
        let ids: Vec<u32> = (0..n as u32).collect();
        index.insert_many(&ids, vectors)?;
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The parameters the index was built with.
    pub fn params(&self) -> Params {
        Params { metric: self.metric, m: self.m, ef_construction: self.ef_construction, seed: self.seed }
    }

    pub fn contains(&self, id: u32) -> bool {
        self.ids.contains_key(&id)
    }

    /// The stored vector of `id` (normalised under cosine).
    pub fn vector(&self, id: u32) -> Option<Vec<f32>> {
        let node = *self.ids.get(&id)?;
        Some(self.row(node).iter().flat_map(|b| b.0).take(self.dim).collect())
    }

    /// Adds one vector without rebuilding. Errors on a duplicate id, a wrong dimension or a
    /// non-finite component; the index is unchanged then.
    pub fn insert(&mut self, id: u32, vector: &[f32]) -> Result<()> {
        self.insert_many(&[id], vector)
    }

    /// Adds `ids.len()` vectors (`vectors` row-major) in parallel. All are validated first: on
    /// an error nothing is inserted.
    pub fn insert_many(&mut self, ids: &[u32], vectors: &[f32]) -> Result<()> {
        if vectors.len() != ids.len() * self.dim {
            if ids.len() == 1 {
                return Err(Error::DimensionMismatch { expected: self.dim, found: vectors.len() });
            }
            let (n, f) = (ids.len(), vectors.len());
            return Err(Error::InvalidParams(format!(
                "{n} ids need {} floats of dimension {}, got {f}",
                n * self.dim,
                self.dim
            )));
        }
        let first = self.len();
        if first + ids.len() > u32::MAX as usize {
            return Err(Error::Full(u32::MAX as usize));
        }
        let mut fresh = std::collections::HashSet::with_capacity(ids.len());
        for (&id, row) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            if self.ids.contains_key(&id) || !fresh.insert(id) {
                return Err(Error::DuplicateId(id));
            }
            if row.iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite { id });
            }
        }
        drop(fresh);
        self.reserve(ids.len());
        let mut row = Vec::with_capacity(self.dim);
        let mut blocks = Vec::with_capacity(self.bpr);
        for (&id, v) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            row.clear();
            row.extend_from_slice(v);
            if self.metric == Metric::Cosine {
                normalize(&mut row);
            }
            to_blocks(&row, &mut blocks);
            self.push_node(id, &blocks);
        }
        self.link_nodes(first as u32..self.len() as u32);
        Ok(())
    }

    fn reserve(&mut self, extra: usize) {
        self.vectors.reserve(extra * self.bpr);
        self.labels.reserve(extra);
        self.ids.reserve(extra);
        self.levels.reserve(extra);
        self.links0.reserve(extra * (self.m0 + 1));
        self.upper_offsets.reserve(extra);
        self.locks.reserve(extra);
    }

    /// Appends a node with no links.
    fn push_node(&mut self, id: u32, blocks: &[Block]) {
        let node = self.labels.len() as u32;
        let level = level_for(self.seed, node, self.m);
        self.vectors.extend_from_slice(blocks);
        self.labels.push(id);
        self.ids.insert(id, node);
        self.levels.push(level);
        self.links0.extend((0..=self.m0).map(|_| AtomicU32::new(0)));
        self.upper_offsets.push(self.upper.len() as u32);
        self.upper.extend((0..usize::from(level) * (self.m + 1)).map(|_| AtomicU32::new(0)));
        self.locks.push(Mutex::new(()));
    }

    /// Links the (already stored) nodes in `range` into the graph, in parallel when there are
    /// many. The highest node goes first when the index is empty, so the entry point is on the
    /// top layer from the start.
    fn link_nodes(&self, range: std::ops::Range<u32>) {
        if range.is_empty() {
            return;
        }
        let mut first = None;
        if self.entry_point().is_none() {
            let top = range.clone().max_by_key(|&i| (self.levels[i as usize], Reverse(i))).unwrap_or(range.start);
            self.with_scratch(|s| dispatch(InsertTask { index: self, node: top, scratch: s }));
            first = Some(top);
        }
        let threads = rayon::current_num_threads().min(range.len() / 64).max(1);
        let next = AtomicUsize::new(range.start as usize);
        let work = || {
            self.with_scratch(|s| {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= range.end as usize {
                        break;
                    }
                    if Some(i as u32) != first {
                        dispatch(InsertTask { index: self, node: i as u32, scratch: s });
                    }
                }
            })
        };
        if threads == 1 {
            work();
        } else {
            rayon::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|_| work());
                }
            });
        }
    }

    fn with_scratch<R>(&self, f: impl FnOnce(&mut Scratch) -> R) -> R {
        let mut s = lock(&self.pool).pop().unwrap_or_default();
        let out = f(&mut s);
        lock(&self.pool).push(s);
        out
    }

    /// `(node, max_level)` of the entry point.
    pub(crate) fn entry_point(&self) -> Option<(u32, usize)> {
        let e = self.entry.load(std::sync::atomic::Ordering::Acquire);
        (e != NO_ENTRY).then_some((e as u32, (e >> 32) as usize))
    }

    #[inline(always)]
    pub(crate) fn row(&self, node: u32) -> &[Block] {
        let start = node as usize * self.bpr;
        &self.vectors[start..start + self.bpr]
    }

    /// The slot of `node` on `level`: `[count, id...]`.
    #[inline(always)]
    fn slot(&self, node: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            let w = self.m0 + 1;
            &self.links0[node as usize * w..(node as usize + 1) * w]
        } else {
            let w = self.m + 1;
            let start = self.upper_offsets[node as usize] as usize + (level - 1) * w;
            &self.upper[start..start + w]
        }
    }

    /// How many neighbours a new node picks on layer 0, whose lists hold `m0 = 2·M`. The paper
    /// and hnswlib pick `M` and leave the rest of the list to reverse links; picking `3M/2` gave
    /// markedly higher recall at the same `ef` (gauss-200k: 0.938 vs 0.906 at ef = 512) for about
    /// 20% more build time, while `2M` added little recall for another 20%.
    #[inline(always)]
    fn m0_new(&self) -> usize {
        (self.m + self.m0) / 2
    }

    #[inline(always)]
    fn dist<K: Kernel>(&self, k: K, a: &[Block], b: &[Block]) -> f32 {
        k.distance(self.metric == Metric::L2, a, b)
    }

    /// Greedy walk on one layer towards `q` (the layer search with ef = 1).
    #[inline(always)]
    fn greedy<K: Kernel>(&self, k: K, q: &[Block], mut cur: Cand, level: usize) -> Cand {
        loop {
            let slot = self.slot(cur.id, level);
            let count = (slot[0].load(Relaxed) as usize).min(slot.len() - 1);
            let mut moved = false;
            for link in &slot[1..=count] {
                let v = link.load(Relaxed);
                let d = self.dist(k, q, self.row(v));
                if d < cur.d {
                    cur = Cand { d, id: v };
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Best-first search of one layer from `s.entries`; leaves the best `ef` nodes that pass
    /// `allow` in `s.results`. Nodes that do not pass are still expanded, and the search only
    /// stops once `ef` passing nodes are found and no candidate can improve them.
    #[inline(always)]
    fn search_layer<K: Kernel>(
        &self,
        k: K,
        q: &[Block],
        level: usize,
        ef: usize,
        s: &mut Scratch,
        allow: &impl Fn(u32) -> bool,
    ) {
        s.visited.begin(self.len());
        s.candidates.clear();
        s.results.clear();
        for &e in &s.entries {
            if s.visited.insert(e.id) {
                s.candidates.push(Reverse(e));
                if allow(e.id) {
                    s.results.push(e);
                }
            }
        }
        while s.results.len() > ef {
            s.results.pop();
        }
        let mut bound = match s.results.peek() {
            Some(worst) if s.results.len() >= ef => worst.d,
            _ => f32::INFINITY,
        };
        while let Some(Reverse(c)) = s.candidates.pop() {
            if c.d > bound {
                break;
            }
            if let Some(Reverse(next)) = s.candidates.peek() {
                prefetch(&self.slot(next.id, level)[0]);
            }
            let slot = self.slot(c.id, level);
            let count = (slot[0].load(Relaxed) as usize).min(slot.len() - 1);
            s.fresh.clear();
            for link in &slot[1..=count] {
                let v = link.load(Relaxed);
                if s.visited.insert(v) {
                    for block in self.row(v) {
                        prefetch(block);
                    }
                    s.fresh.push(v);
                }
            }
            for &v in &s.fresh {
                let d = self.dist(k, q, self.row(v));
                if d < bound {
                    s.candidates.push(Reverse(Cand { d, id: v }));
                    if allow(v) {
                        if s.results.len() < ef {
                            s.results.push(Cand { d, id: v });
                        } else if let Some(mut worst) = s.results.peek_mut() {
                            // Replacing the top sifts once instead of a push and a pop.
                            *worst = Cand { d, id: v };
                        }
                        if s.results.len() >= ef {
                            bound = s.results.peek().map_or(f32::INFINITY, |w| w.d);
                        }
                    }
                }
            }
        }
    }

    /// The neighbour-selection heuristic of the paper (algorithm 4, without extending or keeping
    /// pruned candidates): walking `sorted` from the closest, keep a candidate only if it is
    /// closer to the base than to every candidate kept so far, up to `m`.
    #[inline(always)]
    fn select<K: Kernel>(&self, k: K, sorted: &[Cand], m: usize, out: &mut Vec<Cand>) {
        out.clear();
        if sorted.len() <= m {
            out.extend_from_slice(sorted);
            return;
        }
        // Plain loops on purpose: a closure passed to an iterator adaptor may be compiled outside
        // the dispatching `#[target_feature]` function, where the kernel cannot be inlined.
        for &e in sorted {
            if out.len() >= m {
                break;
            }
            let row = self.row(e.id);
            let mut keep = true;
            for r in out.iter() {
                if self.dist(k, row, self.row(r.id)) < e.d {
                    keep = false;
                    break;
                }
            }
            if keep {
                out.push(e);
            }
        }
    }

    /// Adds `new` (distances relative to `node`) to `node`'s list on `level`, pruning with the
    /// heuristic when the list would overflow.
    #[inline(always)]
    fn add_links<K: Kernel>(&self, k: K, node: u32, level: usize, new: &[Cand], s: &mut Scratch) {
        let slot = self.slot(node, level);
        let cap = slot.len() - 1;
        let _guard = lock(&self.locks[node as usize]);
        let count = (slot[0].load(Relaxed) as usize).min(cap);
        let existing = |v: u32| slot[1..=count].iter().any(|l| l.load(Relaxed) == v);
        s.pool.clear();
        s.pool.extend(new.iter().filter(|c| c.id != node && !existing(c.id)));
        if s.pool.is_empty() {
            return;
        }
        if count + s.pool.len() <= cap {
            for (i, c) in s.pool.iter().enumerate() {
                slot[1 + count + i].store(c.id, Relaxed);
            }
            slot[0].store((count + s.pool.len()) as u32, Release);
            return;
        }
        let base = self.row(node);
        for link in &slot[1..=count] {
            let v = link.load(Relaxed);
            s.pool.push(Cand { d: self.dist(k, base, self.row(v)), id: v });
        }
        s.pool.sort_unstable();
        s.pool.dedup_by_key(|c| c.id);
        let mut pruned = std::mem::take(&mut s.pruned);
        self.select(k, &s.pool, cap, &mut pruned);
        for (i, c) in pruned.iter().enumerate() {
            slot[1 + i].store(c.id, Relaxed);
        }
        slot[0].store(pruned.len() as u32, Release);
        s.pruned = pruned;
    }

    /// Links the stored node `node` into the graph (the paper's algorithm 1). Safe to run on
    /// several nodes at once: lists are only written under their node's lock, and readers see
    /// either the old or the new count of a list whose entries are always valid node ids.
    #[inline(always)]
    fn insert_node<K: Kernel>(&self, k: K, node: u32, s: &mut Scratch) {
        let level = usize::from(self.levels[node as usize]);
        let Some((ep, max_level)) = self.entry_point() else {
            let _g = lock(&self.entry_lock);
            if self.entry_point().is_none() {
                self.entry.store((level as u64) << 32 | u64::from(node), Release);
                return;
            }
            drop(_g);
            return self.insert_node(k, node, s);
        };
        let q = self.row(node);
        let mut cur = Cand { d: self.dist(k, q, self.row(ep)), id: ep };
        for l in (level + 1..=max_level).rev() {
            cur = self.greedy(k, q, cur, l);
        }
        s.entries.clear();
        s.entries.push(cur);
        let mut selected = std::mem::take(&mut s.selected);
        for l in (0..=level.min(max_level)).rev() {
            self.search_layer(k, q, l, self.ef_construction.max(self.m), s, &|v| v != node);
            s.drain_sorted();
            self.select(k, &s.found, if l == 0 { self.m0_new() } else { self.m }, &mut selected);
            self.add_links(k, node, l, &selected, s);
            for c in &selected {
                self.add_links(k, c.id, l, &[Cand { d: c.d, id: node }], s);
            }
            std::mem::swap(&mut s.entries, &mut s.found);
        }
        s.selected = selected;
        if level > max_level {
            let _g = lock(&self.entry_lock);
            if self.entry_point().is_none_or(|(_, top)| level > top) {
                self.entry.store((level as u64) << 32 | u64::from(node), Release);
            }
        }
    }

    /// Prepares `s.query` from a caller's query.
    fn load_query(&self, query: &[f32], s: &mut Scratch) {
        assert_eq!(query.len(), self.dim, "query has {} dimensions, the index has {}", query.len(), self.dim);
        let scale = if self.metric == Metric::Cosine { unit_scale(query) } else { 1.0 };
        to_blocks_scaled(query, scale, &mut s.query);
    }

    /// The `k` best ids for `query` among those `filter` allows, best first, with their scores
    /// (see [`Metric`]). `ef` (raised to `k` if smaller) trades speed for recall. When fewer than
    /// `k` allowed nodes are reachable in the graph, the answer is completed by an exact scan,
    /// so a filtered search returns `min(k, allowed ids)` results.
    ///
    /// # Panics
    /// If `query.len() != self.dim()`.
    pub fn search(&self, query: &[f32], k: usize, ef: usize, filter: &Filter<'_>) -> Vec<(u32, f32)> {
        if k == 0 || self.is_empty() {
            assert_eq!(query.len(), self.dim, "query has {} dimensions, the index has {}", query.len(), self.dim);
            return Vec::new();
        }
        let found = self.search_graph(query, k, ef, filter);
        if found.len() < k && filter.is_active() {
            return self.brute_force(query, k, filter);
        }
        found
    }

    /// The graph search alone, without the exact-scan completion.
    fn search_graph(&self, query: &[f32], k: usize, ef: usize, filter: &Filter<'_>) -> Vec<(u32, f32)> {
        self.with_scratch(|s| {
            self.load_query(query, s);
            dispatch(SearchTask { index: self, ef: ef.max(k), filter, scratch: s });
            s.drain_sorted();
            s.found.iter().take(k).map(|c| (self.labels[c.id as usize], -c.d)).collect()
        })
    }

    /// Exact search over the index's vectors (same scores as [`Hnsw::search`]).
    ///
    /// # Panics
    /// If `query.len() != self.dim()`.
    pub fn brute_force(&self, query: &[f32], k: usize, filter: &Filter<'_>) -> Vec<(u32, f32)> {
        self.with_scratch(|s| {
            self.load_query(query, s);
            let query = std::mem::take(&mut s.query);
            let out = dispatch(ScanTask {
                rows: self.vectors.chunks_exact(self.bpr).enumerate().map(|(i, r)| (self.labels[i], r)),
                query: &query,
                l2: self.metric == Metric::L2,
                k,
                filter,
            });
            s.query = query;
            out
        })
    }
}

/// One insertion, dispatched to the best kernels.
struct InsertTask<'a> {
    index: &'a Hnsw,
    node: u32,
    scratch: &'a mut Scratch,
}

impl Task for InsertTask<'_> {
    type Output = ();
    #[inline(always)]
    fn run<K: Kernel>(self, k: K) {
        self.index.insert_node(k, self.node, self.scratch);
    }
}

/// One search (upper layers greedily, then layer 0 with `ef`); results stay in the scratch.
struct SearchTask<'a> {
    index: &'a Hnsw,
    ef: usize,
    filter: &'a Filter<'a>,
    scratch: &'a mut Scratch,
}

impl Task for SearchTask<'_> {
    type Output = ();
    #[inline(always)]
    fn run<K: Kernel>(self, k: K) {
        let SearchTask { index, ef, filter, scratch: s } = self;
        let Some((ep, top)) = index.entry_point() else { return };
        let q = std::mem::take(&mut s.query);
        let mut cur = Cand { d: index.dist(k, &q, index.row(ep)), id: ep };
        for l in (1..=top).rev() {
            cur = index.greedy(k, &q, cur, l);
        }
        s.entries.clear();
        s.entries.push(cur);
        if filter.is_active() {
            index.search_layer(k, &q, 0, ef, s, &|v| filter.allows(index.labels[v as usize]));
        } else {
            index.search_layer(k, &q, 0, ef, s, &|_| true);
        }
        s.query = q;
    }
}

/// Exact top-k over `(id, row)` pairs.
pub(crate) struct ScanTask<'a, I> {
    pub(crate) rows: I,
    pub(crate) query: &'a [Block],
    pub(crate) l2: bool,
    pub(crate) k: usize,
    pub(crate) filter: &'a Filter<'a>,
}

impl<'a, I: Iterator<Item = (u32, &'a [Block])>> Task for ScanTask<'a, I> {
    type Output = Vec<(u32, f32)>;
    #[inline(always)]
    fn run<K: Kernel>(self, k: K) -> Vec<(u32, f32)> {
        let mut heap = std::collections::BinaryHeap::with_capacity(self.k + 1);
        if self.k > 0 {
            for (id, row) in self.rows {
                if !self.filter.allows(id) {
                    continue;
                }
                let c = Cand { d: k.distance(self.l2, self.query, row), id };
                if heap.len() < self.k {
                    heap.push(c);
                } else if heap.peek().is_some_and(|w| c < *w) {
                    heap.pop();
                    heap.push(c);
                }
            }
        }
        heap.into_sorted_vec().into_iter().map(|c| (c.id, -c.d)).collect()
    }
}

/// Exact top-`k` of `query` over `vectors` (row-major, `dim` floats per row, row `i` has id `i`)
/// among the ids `filter` allows, best first, scored exactly like [`Hnsw::search`].
///
/// # Panics
/// If `query.len() != dim` or `vectors.len()` is not a multiple of `dim`.
pub fn brute_force(
    metric: Metric,
    dim: usize,
    vectors: &[f32],
    query: &[f32],
    k: usize,
    filter: &Filter<'_>,
) -> Vec<(u32, f32)> {
    assert!(dim > 0 && query.len() == dim && vectors.len().is_multiple_of(dim), "dimension mismatch");
    let prepare = |v: &[f32]| {
        let mut v = v.to_vec();
        if metric == Metric::Cosine {
            normalize(&mut v);
        }
        let mut b = Vec::new();
        to_blocks(&v, &mut b);
        b
    };
    let q = prepare(query);
    let rows: Vec<Block> = vectors.chunks_exact(dim).flat_map(prepare).collect();
    let bpr = dim.div_ceil(LANES);
    dispatch(ScanTask {
        rows: rows.chunks_exact(bpr).enumerate().map(|(i, r)| (i as u32, r)),
        query: &q,
        l2: metric == Metric::L2,
        k,
        filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_geometric_and_deterministic() {
        let levels: Vec<u8> = (0..100_000).map(|i| level_for(7, i, 16)).collect();
        assert_eq!(levels, (0..100_000).map(|i| level_for(7, i, 16)).collect::<Vec<_>>());
        let above0 = levels.iter().filter(|&&l| l >= 1).count() as f64 / 1e5;
        assert!((above0 - 1.0 / 16.0).abs() < 0.005, "{above0}");
        assert_ne!(levels, (0..100_000).map(|i| level_for(8, i, 16)).collect::<Vec<_>>());
    }

    #[test]
    fn rejects_bad_input_without_changing_the_index() {
        assert!(Hnsw::new(0, &Params::default()).is_err());
        assert!(Hnsw::new(4, &Params::default().m(1)).is_err());
        let mut h = Hnsw::new(2, &Params::default()).unwrap();
        h.insert(5, &[1.0, 0.0]).unwrap();
        assert!(matches!(h.insert(5, &[0.0, 1.0]), Err(Error::DuplicateId(5))));
        assert!(matches!(h.insert(6, &[0.0]), Err(Error::DimensionMismatch { .. })));
        assert!(matches!(h.insert(7, &[f32::NAN, 0.0]), Err(Error::NonFinite { id: 7 })));
        assert!(matches!(h.insert_many(&[8, 8], &[0.0; 4]), Err(Error::DuplicateId(8))));
        assert_eq!(h.len(), 1);
        assert_eq!(h.search(&[0.0, 1.0], 5, 10, &Filter::new()), vec![(5, 0.0)]);
    }

    #[test]
    fn filtered_graph_search_keeps_exploring_until_k_pass() {
        // 2,000 points on a circle; only every 50th id passes, none near the query.
        let data: Vec<f32> = (0..2000)
            .flat_map(|i| {
                let a = i as f32 * std::f32::consts::TAU / 2000.0;
                [a.cos(), a.sin()]
            })
            .collect();
        let index = Hnsw::build(&data, 2, &Params::new(Metric::L2).ef_construction(64)).unwrap();
        let sparse = |id: u32| id % 50 == 25;
        let filter = Filter::new().predicate(&sparse);
        let found = index.search_graph(&[1.0, 0.0], 10, 10, &filter);
        assert_eq!(found.len(), 10, "the graph search alone must find k allowed ids");
        assert!(found.iter().all(|&(id, _)| sparse(id)));
        // (which side of the circle it walks is up to the graph; with ef 10 it may be only one)
    }

    #[test]
    fn empty_index_and_zero_k_return_nothing() {
        let h = Hnsw::new(3, &Params::default()).unwrap();
        assert!(h.search(&[1.0, 2.0, 3.0], 10, 10, &Filter::new()).is_empty());
        let h = Hnsw::build(&[1.0, 2.0, 3.0], 3, &Params::default()).unwrap();
        assert!(h.search(&[1.0, 2.0, 3.0], 0, 10, &Filter::new()).is_empty());
    }
}
