//! Per-search working memory, reused across searches through a pool in the index.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::distance::Block;

/// A node and its distance to the current query (lower is closer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    pub(crate) d: f32,
    pub(crate) id: u32,
}

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cand {
    #[inline(always)]
    fn cmp(&self, other: &Self) -> Ordering {
        self.d.total_cmp(&other.d).then(self.id.cmp(&other.id))
    }
}

/// A visited set over node indices that is cleared in O(1): a node is visited when its mark
/// equals the current generation; starting a search bumps the generation.
#[derive(Debug, Default)]
pub(crate) struct Visited {
    marks: Vec<u16>,
    generation: u16,
}

impl Visited {
    /// Starts a new search over `n` nodes.
    #[inline]
    pub(crate) fn begin(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `id` visited; returns whether it was new.
    #[inline(always)]
    pub(crate) fn insert(&mut self, id: u32) -> bool {
        let mark = &mut self.marks[id as usize];
        let new = *mark != self.generation;
        *mark = self.generation;
        new
    }
}

/// Everything one search or insertion needs, kept between calls so that searching allocates
/// nothing once the buffers have grown.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) visited: Visited,
    /// Nodes to expand, closest first.
    pub(crate) candidates: BinaryHeap<Reverse<Cand>>,
    /// The best `ef` nodes found, farthest on top.
    pub(crate) results: BinaryHeap<Cand>,
    /// Unvisited neighbours of the node being expanded.
    pub(crate) fresh: Vec<u32>,
    /// Entry points of the next layer search.
    pub(crate) entries: Vec<Cand>,
    /// Layer search results, closest first.
    pub(crate) found: Vec<Cand>,
    /// Neighbours chosen for a new node.
    pub(crate) selected: Vec<Cand>,
    /// Candidate pool and choice when a full neighbour list is pruned.
    pub(crate) pool: Vec<Cand>,
    pub(crate) pruned: Vec<Cand>,
    /// The query, zero padded to whole blocks (normalised for cosine).
    pub(crate) query: Vec<Block>,
}

impl Scratch {
    /// Moves the results into `found`, closest first.
    pub(crate) fn drain_sorted(&mut self) {
        self.found.clear();
        self.found.extend(self.results.drain());
        self.found.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visited_resets_by_generation_and_survives_wraparound() {
        let mut v = Visited::default();
        for _ in 0..70_000 {
            v.begin(10);
            assert!(v.insert(3));
            assert!(!v.insert(3));
            assert!(v.insert(9));
        }
        v.begin(20);
        assert!(v.insert(19) && v.insert(3));
    }
}
