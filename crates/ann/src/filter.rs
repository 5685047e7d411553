//! Which ids a search may return.

use std::fmt;

/// A set of ids as a bitset (one bit per id up to the largest one inserted).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdSet {
    words: Vec<u64>,
    len: usize,
}

impl IdSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `id`; returns whether it was new.
    pub fn insert(&mut self, id: u32) -> bool {
        let (w, bit) = (id as usize / 64, 1u64 << (id % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let new = self.words[w] & bit == 0;
        self.words[w] |= bit;
        self.len += usize::from(new);
        new
    }

    /// Removes `id`; returns whether it was present.
    pub fn remove(&mut self, id: u32) -> bool {
        let (w, bit) = (id as usize / 64, 1u64 << (id % 64));
        let present = self.words.get(w).is_some_and(|x| x & bit != 0);
        if present {
            self.words[w] &= !bit;
            self.len -= 1;
        }
        present
    }

    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        self.words.get(id as usize / 64).is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromIterator<u32> for IdSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        let mut set = IdSet::new();
        set.extend(iter);
        set
    }
}

impl Extend<u32> for IdSet {
    fn extend<I: IntoIterator<Item = u32>>(&mut self, iter: I) {
        for id in iter {
            self.insert(id);
        }
    }
}

impl fmt::Debug for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdSet").field("len", &self.len).finish()
    }
}

/// Restricts a search to the ids that are not excluded *and* satisfy the predicate.
///
/// Filtering happens during the graph search (excluded nodes are still walked through but never
/// returned), so a filtered search returns `k` results whenever `k` ids pass.
///
/// ```
/// use cascade_ann::{Filter, IdSet};
/// let seen: IdSet = [3, 5].into_iter().collect();
/// let in_stock = |id: u32| id % 2 == 1;
/// let filter = Filter::new().exclude(&seen).predicate(&in_stock);
/// assert!(filter.allows(7) && !filter.allows(5) && !filter.allows(2));
/// ```
#[derive(Clone, Copy, Default)]
pub struct Filter<'a> {
    excluded: Option<&'a IdSet>,
    predicate: Option<&'a (dyn Fn(u32) -> bool + Sync)>,
}

impl<'a> Filter<'a> {
    /// Allows every id.
    pub const fn new() -> Self {
        Filter { excluded: None, predicate: None }
    }

    /// Never return ids in `set` (e.g. items the user has already seen).
    pub const fn exclude(mut self, set: &'a IdSet) -> Self {
        self.excluded = Some(set);
        self
    }

    /// Only return ids for which `pred` is true (e.g. an attribute test).
    pub const fn predicate(mut self, pred: &'a (dyn Fn(u32) -> bool + Sync)) -> Self {
        self.predicate = Some(pred);
        self
    }

    /// Whether the filter restricts anything at all.
    pub const fn is_active(&self) -> bool {
        self.excluded.is_some() || self.predicate.is_some()
    }

    #[inline]
    pub fn allows(&self, id: u32) -> bool {
        !self.excluded.is_some_and(|s| s.contains(id)) && self.predicate.is_none_or(|p| p(id))
    }
}

impl fmt::Debug for Filter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filter")
            .field("excluded", &self.excluded)
            .field("predicate", &self.predicate.map(|_| "Fn(u32) -> bool"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_set_counts_and_grows() {
        let mut s = IdSet::new();
        assert!(s.insert(1000) && !s.insert(1000) && s.insert(0));
        assert_eq!(s.len(), 2);
        assert!(s.contains(1000) && s.contains(0) && !s.contains(999) && !s.contains(5000));
        assert!(s.remove(1000) && !s.remove(1000) && !s.remove(70_000));
        assert_eq!(s.len(), 1);
    }
}
